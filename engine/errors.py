"""Every error Tierline raises on purpose.

The type tells the caller what to do::

    TierlineError
    ├── InvalidInput           fix the request and send it again (HTTP 400)
    │   ├── DefinitionError    a workflow definition is wrong; ``errors`` name the lines
    │   └── EventNotAllowed    the event is not allowed in the client's state; lists the allowed
    ├── NotFound               the thing asked for does not exist (HTTP 404)
    ├── PermissionDenied       the actor may not do this; it is audited (HTTP 403)
    ├── Conflict               someone else changed it first or it already exists (HTTP 409):
    │                          reload and decide again
    └── Unavailable            a dependency is down (database, PBX): retry later (HTTP 503)
        └── PbxUnavailable
"""

from __future__ import annotations

from dataclasses import dataclass


class TierlineError(Exception):
    status: int = 500

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_json(self) -> dict[str, object]:
        body: dict[str, object] = {"error": type(self).__name__, "message": self.message}
        body.update(self.details)
        return body


class InvalidInput(TierlineError):
    status = 400


@dataclass(frozen=True)
class DefinitionProblem:
    """One thing wrong in a workflow definition, at the line an admin must edit."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


class DefinitionError(InvalidInput):
    def __init__(self, problems: list[DefinitionProblem]) -> None:
        self.problems = sorted(problems, key=lambda p: p.line)
        text = "; ".join(str(p) for p in self.problems)
        super().__init__(
            f"the workflow definition is invalid: {text}",
            problems=[{"line": p.line, "message": p.message} for p in self.problems],
        )


class EventNotAllowed(InvalidInput):
    def __init__(self, event: str, state: str, allowed: list[str]) -> None:
        super().__init__(
            f"event {event!r} is not allowed in state {state!r}; allowed: "
            + (", ".join(sorted(allowed)) or "none"),
            event=event,
            state=state,
            allowed=sorted(allowed),
        )


class NotFound(TierlineError):
    status = 404


class PermissionDenied(TierlineError):
    status = 403


class Conflict(TierlineError):
    status = 409


class Unavailable(TierlineError):
    status = 503


class PbxUnavailable(Unavailable):
    """The PBX cannot be reached or did not answer: the call was not placed; retry later."""
