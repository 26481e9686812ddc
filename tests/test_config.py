"""Settings: one place, every one documented in .env.example."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from signoff.config import Settings

ROOT = Path(__file__).resolve().parent.parent


def test_env_example_names_every_setting() -> None:
    text = (ROOT / ".env.example").read_text()
    missing = [name for name in Settings.model_fields if f"SIGNOFF_{name.upper()}=" not in text]
    assert not missing, f".env.example lacks {missing}"


def test_settings_read_the_environment_and_hide_secrets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SIGNOFF_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SIGNOFF_ODOO_PASSWORD", "s3cret-key")
    settings = Settings()
    assert settings.data_dir == tmp_path
    assert isinstance(settings.odoo_password, SecretStr)
    assert "s3cret-key" not in repr(settings)
    assert settings.models_path == tmp_path / "models"
