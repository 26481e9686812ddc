"""Signed inbound webhooks from other systems (billing, CRM...) mapped to agent runs by a YAML file.

``SIGNOFF_INBOUND_MAPPING_PATH`` names the file; one entry per source (the ``{source}`` in
``POST /webhooks/in/{source}``)::

    billing:
      agent: renewal                       # triage | renewal
      input: {partner_id: "$.customer.odoo_id"}
      when: {"$.type": "invoice.overdue"}  # optional: run only when these paths hold these values
    crm:
      agent: triage
      input: {ticket_id: "$.ticket.id"}

Each source's secret is in ``SIGNOFF_INBOUND_SECRETS`` (JSON: ``{"billing": "..."}``). The sender signs
``"<timestamp>.<raw body>"`` with HMAC-SHA256 and sends ``X-Signoff-Timestamp`` (Unix seconds) and
``X-Signoff-Signature: sha256=<hex>``, the same scheme Signoff signs its own events with.

The path language is a tiny JSONPath subset: ``$``, ``.name``, ``['name']`` and ``[index]``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from signoff.domain import check_odoo_id
from signoff.errors import ConfigError, DataError

AGENTS = ("triage", "renewal")
#: The input each agent takes, and its type.
AGENT_INPUTS = {"triage": "ticket_id", "renewal": "partner_id"}
_STEP = re.compile(r"\.([A-Za-z_][A-Za-z0-9_-]*)|\[(\d+)\]|\['([^']*)'\]|\[\"([^\"]*)\"\]")
_MISSING = object()


def json_path(document: Any, path: str) -> Any:
    """The value at ``path`` (``$.a.b[0]['c d']``) or raise DataError naming the step that failed."""
    if not path.startswith("$"):
        raise DataError(f"a path starts with $: {path!r}")
    rest, value, pos = path[1:], document, 1
    while rest:
        m = _STEP.match(rest)
        if not m:
            raise DataError(f"unsupported path syntax at {path[pos:]!r} in {path!r}")
        name, index = m.group(1) or m.group(3) or m.group(4), m.group(2)
        if index is not None:
            if not isinstance(value, list) or int(index) >= len(value):
                raise DataError(f"{path!r}: no item {index} at {path[:pos]}")
            value = value[int(index)]
        else:
            if not isinstance(value, dict) or name not in value:
                raise DataError(f"{path!r}: no field {name!r} at {path[:pos] or '$'}")
            value = value[name]
        pos += m.end()
        rest = rest[m.end():]
    return value


@dataclass(frozen=True)
class Route:
    source: str
    agent: str
    input: dict[str, str]
    when: dict[str, Any] = field(default_factory=dict)

    def matches(self, payload: Any) -> bool:
        for path, expected in self.when.items():
            try:
                if json_path(payload, path) != expected:
                    return False
            except DataError:
                return False
        return True

    def resolve(self, payload: Any) -> dict[str, int]:
        """The agent's input from the payload: record ids as positive integers (digit strings accepted)."""
        out: dict[str, int] = {}
        for name, path in self.input.items():
            value = json_path(payload, path) if isinstance(path, str) and path.startswith("$") else path
            if isinstance(value, str) and value.strip().isdigit():
                value = int(value.strip())
            if isinstance(value, bool) or not isinstance(value, int):
                raise DataError(f"{name} from {path!r} must be a positive record id, not {value!r}")
            try:
                check_odoo_id(value, name.removesuffix("_id"))
            except ValueError as exc:
                raise DataError(f"{name} from {path!r}: {exc}") from exc
            out[name] = value
        return out


def load_mapping(path: Path | None) -> dict[str, Route]:
    """Routes by source; an empty mapping when no file is configured."""
    if path is None or str(path) in ("", "."):
        return {}
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"inbound mapping {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"inbound mapping {path}: expected source: {{agent, input}} entries")
    routes: dict[str, Route] = {}
    for source, entry in raw.items():
        if not isinstance(entry, dict) or entry.get("agent") not in AGENTS or not isinstance(entry.get("input"), dict):
            raise ConfigError(f"inbound mapping {path}: {source!r} needs agent ({' or '.join(AGENTS)}) and input")
        wanted = AGENT_INPUTS[entry["agent"]]
        if set(entry["input"]) != {wanted}:
            raise ConfigError(f"inbound mapping {path}: {source!r}: agent {entry['agent']} takes input {{{wanted}}}")
        when = entry.get("when") or {}
        if not isinstance(when, dict):
            raise ConfigError(f"inbound mapping {path}: {source!r}: when must map paths to values")
        routes[str(source)] = Route(str(source), entry["agent"], dict(entry["input"]), dict(when))
    return routes
