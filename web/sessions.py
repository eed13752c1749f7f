"""Signed session cookies, CSRF tokens and sign-in throttling.

The cookie holds the user id, an expiry and a CSRF token, signed with HMAC-SHA256 under
the configured session secret: no session table to read on every request. It is HttpOnly
and SameSite=Lax, and Secure when served over HTTPS.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass

COOKIE = "tierline_session"
CSRF_HEADER = "X-CSRF-Token"
LIFETIME_S = 12 * 3600  # one working day


@dataclass(frozen=True)
class Session:
    user_id: int
    csrf: str
    expires: int


class SessionCodec:
    def __init__(self, secret: str) -> None:
        if len(secret) < 16:
            raise ValueError("the session secret must be at least 16 characters")
        self._key = hashlib.sha256(("tierline-session:" + secret).encode()).digest()

    def issue(self, user_id: int, now: float | None = None) -> tuple[str, Session]:
        session = Session(
            user_id=user_id,
            csrf=secrets.token_urlsafe(24),
            expires=int((now or time.time()) + LIFETIME_S),
        )
        payload = json.dumps({"u": user_id, "c": session.csrf, "e": session.expires}).encode()
        body = base64.urlsafe_b64encode(payload).decode().rstrip("=")
        return f"{body}.{self._sign(body)}", session

    def read(self, cookie: str | None, now: float | None = None) -> Session | None:
        if not cookie or "." not in cookie:
            return None
        body, sig = cookie.rsplit(".", 1)
        if not hmac.compare_digest(sig, self._sign(body)):
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
            session = Session(user_id=int(data["u"]), csrf=str(data["c"]), expires=int(data["e"]))
        except (ValueError, KeyError, TypeError):
            return None
        if session.expires < (now or time.time()):
            return None
        return session

    def _sign(self, body: str) -> str:
        mac = hmac.new(self._key, body.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")


class SignInThrottle:
    """After ``max_failures`` wrong passwords for one username (or from one address), sign-in
    is refused for ``lockout_s``; each further failure doubles the wait. In memory, per node."""

    def __init__(self, max_failures: int, lockout_s: int, capacity: int = 10_000) -> None:
        self.max_failures = max_failures
        self.lockout_s = lockout_s
        self._capacity = capacity
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def retry_after(self, keys: list[str], now: float | None = None) -> int:
        now = now or time.time()
        wait = 0.0
        for key in keys:
            count, until = self._failures.get(key, (0, 0.0))
            if count >= self.max_failures and until > now:
                wait = max(wait, until - now)
        return int(wait + 0.999)

    def failed(self, keys: list[str], now: float | None = None) -> None:
        now = now or time.time()
        for key in keys:
            count, _ = self._failures.pop(key, (0, 0.0))
            count += 1
            over = count - self.max_failures
            until = now + self.lockout_s * (2 ** min(over, 6)) if over >= 0 else 0.0
            self._failures[key] = (count, until)
            while len(self._failures) > self._capacity:
                self._failures.popitem(last=False)

    def succeeded(self, keys: list[str]) -> None:
        for key in keys:
            self._failures.pop(key, None)
