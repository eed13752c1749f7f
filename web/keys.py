"""Typed application state: one AppKey per shared object."""

from __future__ import annotations

from aiohttp import web

from cti_adapter.port import PbxConnector
from engine.service import Tierline
from web.sessions import SessionCodec, SignInThrottle

TIERLINE = web.AppKey("tierline", Tierline)
SESSIONS = web.AppKey("sessions", SessionCodec)
THROTTLE = web.AppKey("throttle", SignInThrottle)
PBX = web.AppKey("pbx", PbxConnector)
