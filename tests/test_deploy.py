"""compose.yaml (the operators' deployment) stays in step with the settings it passes."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from signoff.config import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "compose.yaml"


def test_compose_passes_only_real_settings() -> None:
    spec = yaml.safe_load(COMPOSE.read_text())
    env = spec["services"]["signoff"]["environment"]
    names = [key.removeprefix("SIGNOFF_").lower() for key in env]
    unknown = [name for name in names if name not in Settings.model_fields]
    assert not unknown, f"compose.yaml sets settings Signoff does not have: {unknown}"
    assert {"database_url", "odoo_url", "webhook_secret", "api_token"} <= set(names)


def test_compose_env_example_names_every_required_variable() -> None:
    text = COMPOSE.read_text()
    required = set(re.findall(r"\$\{([A-Z_]+):\?", text)) | set(re.findall(r"\$\{([A-Z_]+):-", text))
    example = (ROOT / "deploy" / "compose.env.example").read_text()
    missing = sorted(name for name in required if f"\n{name}=" not in example)
    assert not missing, f"deploy/compose.env.example lacks {missing}"


def test_compose_services_and_volumes() -> None:
    spec = yaml.safe_load(COMPOSE.read_text())
    services = spec["services"]
    assert {"signoff", "db", "chroma", "odoo", "odoo-db", "llm"} <= set(services)
    assert services["odoo"]["image"].startswith("odoo:")
    used = {v.split(":")[0] for s in services.values() for v in s.get("volumes", []) if not v.startswith(".")}
    assert used <= set(spec["volumes"]), "a named volume is used but not declared"
    assert (ROOT / services["signoff"]["build"]["dockerfile"]).is_file()
