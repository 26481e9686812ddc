"""The write actions the executor knows: how to validate, apply and read back each one.

An action the policy names but this table does not is refused (fail closed). Applying a field
update twice leaves Odoo as applying it once, so a retry after a crash is safe; :meth:`Action.is_applied`
is the read-back that reconciles an interrupted execution.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from signoff.domain import PRIORITY_NAMES
from signoff.errors import ExecutionError, InvalidDecision
from signoff.guardrails.activity_actions import ACTIVITY_ACTIONS
from signoff.integrations.odoo import OdooReader, OdooWriterPort

PRIORITY_CODES = {name: code for code, name in PRIORITY_NAMES.items()}

TICKET = "helpdesk.ticket"


class ExecutableAction(Protocol):
    """What the executor and the approval channels need of an action: field writes and creates alike.

    ``marker_id`` is the proposal id: a create action stamps it on what it creates and looks for it
    before creating (exactly once); a field write ignores it."""

    @property
    def name(self) -> str: ...

    @property
    def target_model(self) -> str: ...

    @property
    def choices(self) -> tuple[str, ...] | None: ...

    def validate(self, args: dict[str, Any], reader: OdooReader | None = None) -> dict[str, Any]: ...

    def is_applied(self, reader: OdooReader, target_id: int, args: dict[str, Any], *,
                   marker_id: str = "") -> bool: ...

    def apply(self, writer: OdooWriterPort, target_id: int, args: dict[str, Any], *,
              marker_id: str = "") -> dict[str, Any]: ...


@dataclass(frozen=True)
class Action:
    """A field write on a ticket: either a many2one set by the target record's name, or a plain value."""

    name: str
    arg: str
    """The single argument the proposal carries, e.g. ``category``."""
    field: str
    """The Odoo field written, e.g. ``category_id``."""
    relation: str | None = None
    """For a many2one: the model whose record is looked up by ``name``."""
    choices: tuple[str, ...] | None = None
    target_model: str = TICKET

    def validate(self, args: dict[str, Any], reader: OdooReader | None = None) -> dict[str, Any]:
        """Check args (the agent's or an approver's edit); return them normalised."""
        if set(args) != {self.arg}:
            unknown = sorted(set(args) - {self.arg})
            raise InvalidDecision(f"{self.name}: unknown field(s) {', '.join(unknown)} (it takes {self.arg!r} only)"
                                  if unknown else f"{self.name} takes one argument, {self.arg!r}")
        value = args[self.arg]
        if self.arg == "priority" and isinstance(value, int) and not isinstance(value, bool) \
                and str(value) in PRIORITY_NAMES:
            value = str(value)  # Odoo's own code for it, given as a number
        if not isinstance(value, str) or not value.strip():
            example = f"one of {', '.join(PRIORITY_NAMES.values())}" if self.arg == "priority" else "a name"
            raise InvalidDecision(f"{self.arg} must be text ({example}); got {value!r}")
        value = value.strip()
        if self.arg == "priority":
            value = PRIORITY_CODES.get(value.lower(), value)
        if self.choices is not None and value not in self.choices:
            raise InvalidDecision(f"{self.arg} must be one of {', '.join(self.choices)}; got {value!r}")
        if self.relation and reader is not None and not self._lookup(reader, value):
            raise InvalidDecision(f"no {self.relation} named {value!r} in Odoo")
        return {self.arg: value}

    def _lookup(self, reader: OdooReader, name: str) -> int | None:
        assert self.relation
        rows = reader.search_read(self.relation, [["name", "=", name]], ["id"], limit=1)
        return int(rows[0]["id"]) if rows else None

    def current(self, reader: OdooReader, target_id: int) -> Any:
        rows = reader.read(self.target_model, [target_id], [self.field])
        if not rows:
            raise ExecutionError(f"{self.target_model}({target_id}) not found")
        value = rows[0][self.field]
        if self.relation:
            return value[1] if value else None
        return value if value is not False else None

    def is_applied(self, reader: OdooReader, target_id: int, args: dict[str, Any], *,
                   marker_id: str = "") -> bool:
        return bool(self.current(reader, target_id) == args[self.arg])

    def apply(self, writer: OdooWriterPort, target_id: int, args: dict[str, Any], *,
              marker_id: str = "") -> dict[str, Any]:
        value: Any = args[self.arg]
        if self.relation:
            found = self._lookup(writer, value)
            if found is None:
                raise ExecutionError(f"no {self.relation} named {value!r} in Odoo")
            value = found
        writer.write(self.target_model, [target_id], {self.field: value})
        return {"model": self.target_model, "id": target_id, "field": self.field, "value": value}


_TABLE: tuple[ExecutableAction, ...] = (
    Action("ticket.set_category", "category", "category_id", relation="helpdesk.ticket.category"),
    Action("ticket.set_team", "team", "team_id", relation="helpdesk.ticket.team"),
    Action("ticket.set_priority", "priority", "priority", choices=tuple(PRIORITY_NAMES)),
    *ACTIVITY_ACTIONS,  # account.csm_followup, account.retention_offer: creates, exactly once by marker
)
ACTIONS: dict[str, ExecutableAction] = {a.name: a for a in _TABLE}


def field_reader(model: str, arg: str) -> Callable[[OdooReader, int], Any] | None:
    """How to read one field of a record by its argument name (``category`` of a ticket), via the action
    that writes it; None when no action writes it."""
    for action in ACTIONS.values():
        if isinstance(action, Action) and action.target_model == model and action.arg == arg:
            return action.current
    return None


def get_action(name: str) -> ExecutableAction:
    try:
        return ACTIONS[name]
    except KeyError:
        raise ExecutionError(f"no executor for action {name!r}; it is refused") from None
