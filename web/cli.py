"""The ``tierline`` command: serve, migrate, users, workflows, follow-up checks, simulation."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from pydantic import ValidationError

from engine.errors import TierlineError
from engine.settings import load_settings
from web.log_output import LogOutput

log = logging.getLogger("tierline")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    level = os.environ.get("TIERLINE_LOG_LEVEL", "INFO").upper()
    if not isinstance(logging.getLevelName(level), int):
        print(
            f"tierline: bad TIERLINE_LOG_LEVEL {level!r}: use DEBUG, INFO, WARNING or ERROR",
            file=sys.stderr,
        )
        return 2
    output = LogOutput(sys.stderr, level).start()
    for chatty in ("apscheduler", "alembic", "aiohttp.access"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    try:
        return _run(args)
    finally:
        output.stop()


def _run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings()
    except ValidationError as exc:
        print(f"tierline: bad configuration:\n{exc}", file=sys.stderr)
        return 2
    try:
        return args.run(settings, args)
    except TierlineError as exc:
        print(f"tierline: {exc.message}", file=sys.stderr)
        problems = exc.details.get("problems")
        for problem in problems if isinstance(problems, list) else []:
            print(f"  line {problem['line']}: {problem['message']}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    from web import cli_commands as c

    p = argparse.ArgumentParser(prog="tierline", description=__doc__)
    sub = p.add_subparsers(required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the server")
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)"
    )
    serve.add_argument("--port", type=int, default=8080, help="port to listen on (default: 8080)")
    serve.add_argument("--demo", action="store_true", help="seed a demo department if empty")
    serve.set_defaults(run=c.serve)

    sub.add_parser("migrate", help="bring the database schema up to date").set_defaults(
        run=c.migrate
    )

    user = sub.add_parser("user", help="staff accounts").add_subparsers(required=True)
    add = user.add_parser("add", help="create a user")
    add.add_argument("username")
    add.add_argument("--role", required=True, choices=["operator", "supervisor", "admin"])
    add.add_argument(
        "--tier",
        help="an operator's tier, as the workflow names it (cold, sales, key_account, support)",
    )
    add.add_argument("--extension", help="an operator's phone extension, for screen pops")
    add.add_argument("--name", default="", help="the name shown to colleagues")
    add.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    add.set_defaults(run=c.user_add)

    wf = sub.add_parser("workflow", help="workflow definitions").add_subparsers(required=True)
    validate = wf.add_parser("validate", help="check a definition file")
    validate.add_argument("file", type=Path)
    validate.set_defaults(run=c.workflow_validate)
    publish = wf.add_parser("publish", help="publish a definition file as the new version")
    publish.add_argument("file", type=Path)
    publish.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="OLD=NEW",
        help="move clients of a state the new version drops (repeat for each)",
    )
    publish.add_argument("--dry-run", action="store_true", help="check and report, publish nothing")
    publish.set_defaults(run=c.workflow_publish)

    fu = sub.add_parser("followups", help="follow-up queue").add_subparsers(required=True)
    fu.add_parser("check", help="report clients breaking the invariant").set_defaults(
        run=c.followups_check
    )

    from web.cli_import import add_import_parser

    add_import_parser(sub)

    sim = sub.add_parser("simulate", help="send PBX events").add_subparsers(required=True)
    call = sim.add_parser(
        "call",
        help="simulate an inbound call through the webhook",
        description="Ring an operator's extension through the server's signed webhook, as a "
        "PBX would: ringing, answered, hangup. Give --to-extension twice or more for a ring "
        "group: they all ring, the first answers, the others stop ringing.",
    )
    call.add_argument(
        "--from",
        dest="from_number",
        required=True,
        metavar="NUMBER",
        help="the caller's number, in any format",
    )
    call.add_argument(
        "--to-extension",
        required=True,
        action="append",
        metavar="EXT",
        help="the operator's extension to ring (repeat for a ring group)",
    )
    call.add_argument(
        "--to",
        default="7000",
        metavar="NUMBER",
        help="the number the caller dialled (default: 7000)",
    )
    call.add_argument(
        "--url", default="http://127.0.0.1:8080", help="the server (default: http://127.0.0.1:8080)"
    )
    call.add_argument(
        "--answer-after",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="ringing this long before the answer (default: 2)",
    )
    call.add_argument(
        "--hangup-after",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="then this long before the hangup: talking, or ringing with --no-answer (default: 10)",
    )
    call.add_argument(
        "--no-answer",
        action="store_true",
        help="nobody answers: it rings, then the caller hangs up",
    )
    call.set_defaults(run=c.simulate_call)
    return p


if __name__ == "__main__":
    sys.exit(main())
