"""The guards a workflow definition may name, and the facts they are evaluated on.

A guard is a name, never an expression: admins edit definitions through the web, so what a
definition can ask about a client is a closed list kept here. Each guard is a boolean
attribute (or property) of :class:`ClientFacts`; the compiled state machine resolves a
transition's ``guard`` against the facts object it is bound to, by that name.
"""

from __future__ import annotations

from dataclasses import dataclass

# Guard name -> what it means, shown to admins next to the definition editor.
GUARDS: dict[str, str] = {
    "has_email": "the client has an email address (an invoice can be sent)",
    "no_email": "the client has no email address",
    "has_phone": "the client has at least one phone number",
    "open_invoice": "the client has an unpaid invoice",
    "no_open_invoice": "the client has no unpaid invoice",
    "is_key_client": "the client's segment class is 'key'",
    "is_not_key_client": "the client's segment class is not 'key'",
    "first_attempt": "no unanswered attempt has been counted in the current state yet",
    "has_owner": "the client is assigned to an operator",
}


@dataclass
class ClientFacts:
    """What the workflow may know about one client when an event is applied.

    ``state`` is the stored workflow state; the compiled machine reads and writes it through
    ``state_field="state"``. The runtime builds one of these from the client row.
    """

    state: str
    segment_class: str = "regular"
    has_email: bool = False
    has_phone: bool = True
    attempts: int = 0  # consecutive unanswered attempts in the current state
    open_invoice: bool = False
    has_owner: bool = False

    @property
    def no_email(self) -> bool:
        return not self.has_email

    @property
    def no_open_invoice(self) -> bool:
        return not self.open_invoice

    @property
    def is_key_client(self) -> bool:
        return self.segment_class == "key"

    @property
    def is_not_key_client(self) -> bool:
        return self.segment_class != "key"

    @property
    def first_attempt(self) -> bool:
        return self.attempts == 0


def guard_passes(facts: ClientFacts, guard: str | None) -> bool:
    """Evaluate one guard name (``None`` always passes) the way the machine does."""
    if guard is None:
        return True
    if guard not in GUARDS:
        raise KeyError(f"unknown guard {guard!r}")
    return bool(getattr(facts, guard))
