"""Settings an admin changes while the department works: calling rules, slices, PBX.

Stored as rows (``app_settings``) over the start-up configuration. Calling rules apply at
once on this node and, through the bus, on every other; the PBX connector's settings apply
when the connector next starts. Secrets are stored, never shown back in full.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from engine.calendar import CallingPolicy
from engine.errors import InvalidInput
from engine.models import AppSetting
from engine.settings import Settings

CALLING = "calling"
PBX = "pbx"
SECRET_FIELDS = {"ami_secret"}


@dataclass(frozen=True)
class Calling:
    window: str
    workdays: str
    holidays: list[str]
    slice_times: list[str]

    def policy(self) -> CallingPolicy:
        return CallingPolicy.from_strings(
            window=self.window, workdays=self.workdays, holidays=self.holidays
        )

    def slices(self) -> list[time]:
        return [time.fromisoformat(t) for t in self.slice_times]


def calling_from(settings: Settings, stored: dict[str, Any] | None) -> Calling:
    base = Calling(
        window=settings.calling_window,
        workdays=settings.workdays,
        holidays=[d.isoformat() for d in settings.holidays],
        slice_times=[t.strftime("%H:%M") for t in settings.slice_times],
    )
    if not stored:
        return base
    return Calling(
        window=stored.get("window", base.window),
        workdays=stored.get("workdays", base.workdays),
        holidays=list(stored.get("holidays", base.holidays)),
        slice_times=list(stored.get("slice_times", base.slice_times)),
    )


def check_calling(body: dict[str, Any]) -> dict[str, Any]:
    """Validate an admin's edit; every error names its field."""
    out: dict[str, Any] = {}
    for name in ("window", "workdays"):
        if name in body:
            if not isinstance(body[name], str):
                raise InvalidInput(f"{name} must be a string", field=name)
            out[name] = body[name].strip()
    if "holidays" in body:
        try:
            out["holidays"] = sorted({date.fromisoformat(d).isoformat() for d in body["holidays"]})
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"holidays must be ISO dates: {exc}", field="holidays") from exc
    if "slice_times" in body:
        try:
            out["slice_times"] = sorted(
                time.fromisoformat(t).strftime("%H:%M") for t in body["slice_times"]
            )
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"slice_times must be HH:MM: {exc}", field="slice_times") from exc
        if len(out["slice_times"]) < 3:
            raise InvalidInput("take at least three slices a day", field="slice_times")
    try:
        CallingPolicy.from_strings(
            window=out.get("window", "09:00-20:00"),
            workdays=out.get("workdays", "mon-fri"),
            holidays=out.get("holidays", []),
        )
    except ValueError as exc:
        field = "window" if "window" in str(exc) else "workdays"
        raise InvalidInput(str(exc), field=field) from exc
    return out


def check_pbx(body: dict[str, Any], stored: dict[str, Any]) -> dict[str, Any]:
    out = dict(stored)
    for name in ("ami_host", "ami_username", "ami_secret"):
        if name in body:
            value = body[name]
            if value is not None and not isinstance(value, str):
                raise InvalidInput(f"{name} must be a string", field=name)
            if name in SECRET_FIELDS and value and set(value) == {"*"}:
                continue  # the masked value shown back: unchanged
            out[name] = value or None
    if "ami_port" in body:
        port = body["ami_port"]
        if not isinstance(port, int) or not 0 < port < 65536:
            raise InvalidInput("ami_port must be a port number", field="ami_port")
        out["ami_port"] = port
    return out


def masked(values: dict[str, Any]) -> dict[str, Any]:
    shown = dict(values)
    for name in SECRET_FIELDS:
        secret = shown.get(name)
        if secret:
            shown[name] = "********"
    return shown


async def load(session: AsyncSession, key: str) -> dict[str, Any]:
    row = await session.get(AppSetting, key)
    return dict(row.value) if row else {}


async def store(session: AsyncSession, key: str, value: dict[str, Any], now: datetime) -> None:
    row = await session.get(AppSetting, key)
    if row is None:
        session.add(AppSetting(key=key, value=value, updated_at=now))
    else:
        row.value = value
        row.updated_at = now
        session.add(row)
