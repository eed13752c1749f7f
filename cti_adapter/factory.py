"""Choose the PBX connector from configuration: Asterisk when a host is set, else the fake."""

from __future__ import annotations

import logging
from typing import Any

from cti_adapter.asterisk import AmiConfig, AmiConnector
from cti_adapter.asterisk.config import DEFAULT_INTERNAL_CONTEXTS
from cti_adapter.fake import FakePbx
from cti_adapter.port import PbxConnector

log = logging.getLogger("tierline.cti")


def connector_from(settings: Any, overrides: dict[str, Any] | None = None) -> PbxConnector:
    """``settings`` is engine.settings.Settings; ``overrides`` are an admin's run-time edits."""
    o = overrides or {}
    host = o.get("ami_host", settings.ami_host)
    if not host:
        log.info("no PBX configured: using the built-in fake PBX (tierline simulate call)")
        return FakePbx()
    secret = o.get("ami_secret") or (
        settings.ami_secret.get_secret_value() if settings.ami_secret else ""
    )
    config = AmiConfig(
        host=host,
        port=int(o.get("ami_port", settings.ami_port)),
        username=o.get("ami_username") or settings.ami_username,
        secret=secret,
        originate_tech=settings.ami_channel_tech,
        originate_context=settings.ami_context,
        internal_contexts=_operator_contexts(settings),
        **({"device_pattern": settings.ami_device_pattern} if settings.ami_device_pattern else {}),
    )
    log.info("Asterisk AMI connector: %s:%s as %s", config.host, config.port, config.username)
    return AmiConnector(config)


def _operator_contexts(settings: Any) -> tuple[str, ...]:
    """Where operators' own calls start: as configured, or else the desk phones' usual
    context and the one click-to-dial's Originate places its calls in."""
    if settings.ami_internal_contexts:
        return tuple(settings.ami_internal_contexts)
    return tuple(dict.fromkeys((*DEFAULT_INTERNAL_CONTEXTS, settings.ami_context)))
