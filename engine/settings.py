"""The one settings object, loaded once at start-up and passed down.

Sources, strongest first: keyword arguments (tests, CLI flags), ``TIERLINE_*``
environment variables, the TOML file named by ``TIERLINE_CONFIG`` (or ``config_file``),
then the defaults below. Secrets only ever come from the environment or that file.
"""

from __future__ import annotations

import os
import re
from datetime import date, time
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from engine.calendar import CallingPolicy


def device_pattern(text: str) -> re.Pattern[str]:
    """A PBX channel-name pattern compiled, or ValueError saying what is wrong with it: the
    operator's extension must be a group named ext ("PJSIP/101-00000a1b" -> 101)."""
    try:
        compiled = re.compile(text)
    except re.error as exc:
        raise ValueError(f"not a regular expression: {exc}") from None
    if "ext" not in compiled.groupindex:
        raise ValueError("needs a group named ext, e.g. ^PJSIP/(?P<ext>\\d+)-")
    return compiled


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TIERLINE_", extra="forbid")

    data_dir: Path = Path("tierline-data")
    database_url: str = ""  # empty: a SQLite file in data_dir
    redis_url: str | None = None
    session_secret: SecretStr | None = None  # cookie signing key; generated into data_dir if unset
    pbx_secret: SecretStr | None = None  # HMAC key of POST /cti/events
    default_region: str = "RU"
    timezone: str = "Europe/Moscow"  # the department's own zone: slices, business days
    # Our own company, as operators name it on the phone: {company} in call scripts.
    company_name: str = ""

    # Calling windows, in each client's own time zone.
    calling_window: str = "09:00-20:00"
    workdays: str = "mon-fri"
    holidays: list[date] = Field(default_factory=list)
    slice_times: list[time] = Field(default_factory=lambda: [time(11), time(14), time(17)])

    # Follow-up dispatch.
    followup_batch: int = 500
    escalation_sweep_seconds: int = 60

    # Asterisk AMI: on when a host is set.
    ami_host: str | None = None
    ami_port: int = 5038
    ami_username: str = "tierline"
    ami_secret: SecretStr | None = None
    ami_channel_tech: str = "PJSIP"  # how Originate rings the operator: PJSIP/<extension>
    ami_context: str = "from-internal"  # the dialplan context Originate dials the client in
    # The operator's extension in a channel name ("PJSIP/101-00000a1b" -> 101): a regular
    # expression with a group named ext. None: PJSIP, SIP, IAX2 and Local channels.
    ami_device_pattern: str | None = None
    # Calls whose first channel starts in one of these contexts were placed by an operator
    # (outbound); everything else came in on a trunk. Empty: from-internal and ami_context.
    ami_internal_contexts: list[str] = Field(default_factory=list)

    # Browser pages of other origins allowed to open GET /ws (e.g. "https://crm.example.com"
    # when a proxy serves Tierline under a name other than the Host it passes on).
    trusted_origins: list[str] = Field(default_factory=list)

    # Sign-in throttling.
    login_max_failures: int = 5
    login_lockout_seconds: int = 300

    # The serving process's garbage collector (web/heap.py): freeze what a full collection
    # found alive once it is this many objects (0: never), and sweep the frozen heap for
    # dead cycles this often (0: never).
    heap_freeze_above: int = Field(default=5_000, ge=0)
    heap_sweep_seconds: float = Field(default=3600.0, ge=0)

    @field_validator("ami_device_pattern")
    @classmethod
    def _device_pattern(cls, v: str | None) -> str | None:
        # Refused at start-up, named, rather than when the connector first logs in.
        if v is not None:
            device_pattern(v)
        return v

    @field_validator("default_region")
    @classmethod
    def _region_upper(cls, v: str) -> str:
        return v.upper()

    @model_validator(mode="after")
    def _policy_is_sound(self) -> Settings:
        self.calling_policy()  # a bad window or workday list stops start-up, named
        return self

    def calling_policy(self) -> CallingPolicy:
        return CallingPolicy.from_strings(
            window=self.calling_window,
            workdays=self.workdays,
            holidays=[d.isoformat() for d in self.holidays],
        )

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'tierline.db').resolve()}"

    @property
    def is_sqlite(self) -> bool:
        return self.effective_database_url.startswith("sqlite")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_file = os.environ.get("TIERLINE_CONFIG")
        if toml_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)


def load_settings(**overrides: Any) -> Settings:
    """Read configuration once; a wrong value stops start-up with the field named."""
    return Settings(**overrides)
