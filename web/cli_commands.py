"""What each ``tierline`` subcommand does."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import secrets
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import SecretStr

from engine.definitions import check_source, n_clients, publish
from engine.errors import DefinitionError, InvalidInput, Unavailable
from engine.service import Tierline
from engine.settings import Settings
from engine.users import NewUser, create_user

DEMO_COMPANY = "Tierline Demo Ltd"


def serve(settings: Settings, args: argparse.Namespace) -> int:
    from cti_adapter.factory import connector_from
    from engine import runtime_settings
    from web.app import create_app
    from web.heap import HeapKeeper, keep_heap
    from web.secrets_store import persistent_secret

    if args.demo and settings.pbx_secret is None:
        # The demo's simulator must be able to sign its events; keep the key with the data.
        settings = settings.model_copy(
            update={"pbx_secret": SecretStr(persistent_secret(settings.data_dir, "pbx.key"))}
        )
    if args.demo and not settings.company_name:
        # The call scripts say "this is {operator} from {company}": give the demo a name.
        settings = settings.model_copy(update={"company_name": DEMO_COMPANY})
    tl = Tierline.build(settings)

    async def prepare() -> web.Application:
        await tl.start(timers=False)
        if args.demo:
            from engine.demo import seed_demo

            password = os.environ.get("TIERLINE_DEMO_PASSWORD") or secrets.token_urlsafe(9)
            result = await seed_demo(tl, password)
            if result.created:
                (settings.data_dir / "demo-password.txt").write_text(password + "\n")
                print(
                    f"Demo department created: {result.clients} clients. Sign in as admin, "
                    f"supervisor, cold1, sales1, key1 or support1 with password: {password}\n"
                    f"(kept in {settings.data_dir / 'demo-password.txt'})",
                    flush=True,
                )
            else:
                print(
                    f"Demo data already present; the password is in "
                    f"{settings.data_dir / 'demo-password.txt'}",
                    flush=True,
                )
        async with tl.db.session() as session:
            pbx_overrides = await runtime_settings.load(session, runtime_settings.PBX)
        await tl.stop()
        return create_app(Tierline.build(settings), pbx=connector_from(settings, pbx_overrides))

    app = asyncio.run(prepare())
    keep_heap(app, HeapKeeper.from_settings(settings))  # the last start-up step
    print(f"Tierline on http://{args.host}:{args.port}/", flush=True)
    web.run_app(app, host=args.host, port=args.port, print=None)
    return 0


def run_async(fn: Callable[[], Coroutine[Any, Any, int]]) -> int:
    return asyncio.run(fn())


def read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise SystemExit("tierline: the passwords differ")
    return first


def migrate(settings: Settings, args: argparse.Namespace) -> int:
    async def go() -> int:
        tl = Tierline.build(settings)
        await tl.start(timers=False)
        print(f"database at {tl.db.safe_url} is up to date")
        await tl.stop()
        return 0

    return run_async(go)


def user_add(settings: Settings, args: argparse.Namespace) -> int:
    password = read_password(args.password_stdin)

    async def go() -> int:
        from engine.definitions import current_version

        tl = Tierline.build(settings)
        await tl.start(timers=False)
        try:
            async with tl.db.transaction() as session:
                tiers = tl.cache.remember(await current_version(session)).tiers
                user = await create_user(
                    session,
                    NewUser(
                        args.username, password, args.role, args.tier, args.extension, args.name
                    ),
                    tiers=tiers,
                    now=tl.clock.now(),
                )
            print(f"created {user.role} {user.username} (id {user.id})")
        finally:
            await tl.stop()
        return 0

    return run_async(go)


def workflow_validate(settings: Settings, args: argparse.Namespace) -> int:
    defn, problems = check_source(_read(args.file))
    if defn is None or problems:
        raise DefinitionError(problems)
    print(
        f"{args.file}: valid — workflow {defn.name!r}, {len(defn.states)} states, "
        f"{len(defn.transitions)} transitions, tiers {', '.join(defn.tiers)}"
    )
    return 0


def workflow_publish(settings: Settings, args: argparse.Namespace) -> int:
    mapping = {}
    for item in args.map:
        old, sep, new = item.partition("=")
        if not sep or not old or not new:
            raise InvalidInput(f"--map takes OLD=NEW, got {item!r}")
        mapping[old] = new
    source = _read(args.file)

    async def go() -> int:
        tl = Tierline.build(settings)
        await tl.start(timers=False)
        try:
            async with tl.db.transaction() as session:
                report = await publish(
                    session,
                    tl.cache,
                    source,
                    now=tl.clock.now(),
                    mapping=mapping,
                    dry_run=args.dry_run,
                )
        finally:
            await tl.stop()
        head = "dry run" if args.dry_run else f"published {report.name} version {report.version}"
        stay = "stays in its state" if report.unchanged == 1 else "stay in their states"
        print(f"{head}: {n_clients(report.unchanged)} {stay}")
        for move, n in report.moves.items():
            print(f"  {move}: {n_clients(n)}")
        return 0

    return run_async(go)


def followups_check(settings: Settings, args: argparse.Namespace) -> int:
    async def go() -> int:
        tl = Tierline.build(settings)
        await tl.start(timers=False)
        try:
            problems = await tl.check_followups()
        finally:
            await tl.stop()
        for p in problems:
            print(p)
        verb = "breaks" if len(problems) == 1 else "break"
        print(f"{n_clients(len(problems))} {verb} the follow-up invariant")
        return 1 if problems else 0

    return run_async(go)


def simulate_call(settings: Settings, args: argparse.Namespace) -> int:
    from aiohttp import ClientError

    from cti_adapter.simulate import SimulationError
    from cti_adapter.simulate import simulate_call as simulate

    # The server's own key: TIERLINE_PBX_SECRET, or the one `serve --demo` keeps in its data
    # directory. Never a new one: a key the server does not have signs nothing it accepts.
    key = settings.data_dir / "pbx.key"
    if settings.pbx_secret is not None:
        secret = settings.pbx_secret.get_secret_value()
    elif key.exists():
        secret = key.read_text().strip()
    else:
        raise InvalidInput(
            f"no PBX key at {key.resolve()}: run this where `tierline serve --demo` keeps its "
            "data, or set TIERLINE_DATA_DIR or TIERLINE_PBX_SECRET as the server has them"
        )

    async def go() -> int:
        try:
            call_id = await simulate(
                args.url,
                secret,
                args.from_number,
                args.to_extension,
                to=args.to,
                answer_after=None if args.no_answer else args.answer_after,
                hangup_after=args.hangup_after,
            )
        except SimulationError as exc:
            hint = (
                " (the key used is not the server's: run this where the server keeps its data, "
                "or set TIERLINE_PBX_SECRET as the server has it)"
                if exc.status == 401
                else ""
            )
            raise InvalidInput(f"{exc}{hint}") from None
        except (ClientError, OSError) as exc:
            raise Unavailable(
                f"cannot reach {args.url}: {exc}. Is `tierline serve` running there?"
            ) from None
        where = " and ".join(args.to_extension)
        many = "extensions" if len(args.to_extension) > 1 else "extension"
        print(f"simulated call {call_id} from {args.from_number} to {many} {where}")
        return 0

    return run_async(go)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        print(f"tierline: cannot read {path}: {exc.strerror}", file=sys.stderr)
        raise SystemExit(1) from exc
