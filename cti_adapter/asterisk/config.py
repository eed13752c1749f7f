"""Settings of the Asterisk AMI connector."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from engine.settings import device_pattern

DEFAULT_DEVICE_PATTERN = r"^(?:PJSIP|SIP|IAX2|Local)/(?P<ext>[^-/@;]+)"
DEFAULT_INTERNAL_CONTEXTS = ("from-internal",)  # FreePBX's and Asterisk's sample dialplans'


@dataclass(frozen=True)
class AmiConfig:
    host: str
    port: int = 5038
    username: str = ""
    secret: str = field(default="", repr=False)
    # Extracts the operator extension (group ``ext``) from a channel name or DialString.
    device_pattern: str = DEFAULT_DEVICE_PATTERN
    reconnect_min: float = 0.5
    reconnect_max: float = 30.0
    # A refused login will not fix itself in half a second: retry slowly, loudly.
    auth_retry_delay: float = 60.0
    connect_timeout: float = 5.0
    # How long to wait for Asterisk's answer to an action (Login, Originate, Ping).
    action_timeout: float = 10.0
    # Keepalive: a half-open socket is only noticed by asking.
    ping_interval: float = 20.0
    # Asked for at Login: only call and system events leave Asterisk (no VarSet, no Cdr).
    event_mask: str = "system,call"
    originate_tech: str = "PJSIP"
    originate_context: str = "from-internal"
    originate_timeout: float = 10.0  # seconds to wait for the Originate Response
    originate_ring_timeout: float = 30.0  # how long Asterisk rings the operator first
    # Calls whose first channel starts in one of these contexts were placed by an operator
    # (desk phone or Originate): outbound. Everything else (the trunk's context) is inbound.
    internal_contexts: tuple[str, ...] = DEFAULT_INTERNAL_CONTEXTS
    # Events are queued for the consumer up to this many; beyond it the reader waits
    # (TCP back-pressure) rather than dropping a call event.
    queue_size: int = 10_000

    def __post_init__(self) -> None:
        if not self.username:
            raise ValueError("AmiConfig needs the AMI username")
        device_pattern(self.device_pattern)  # the check the settings make at start-up
        if not 0 < self.reconnect_min <= self.reconnect_max:
            raise ValueError("need 0 < reconnect_min <= reconnect_max")


def backoff_delay(attempt: int, config: AmiConfig, rng: random.Random | None = None) -> float:
    """Delay before reconnect number ``attempt`` (0-based): exponential, capped, jittered.

    Jitter is in [50 %, 100 %] of the step so that many nodes restarted together by an
    Asterisk restart do not all knock at the same instant, yet never retry at ~0 s.
    """
    step = min(config.reconnect_max, config.reconnect_min * (2 ** min(attempt, 30)))
    return step * (rng or random).uniform(0.5, 1.0)
