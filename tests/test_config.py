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


def test_a_mistyped_setting_is_named_not_silently_ignored() -> None:
    import os
    import subprocess
    import sys

    from signoff.config import unknown_variables

    assert unknown_variables({"SIGNOFF_DATABSE_URL": "x", "SIGNOFF_ODOO_URL": "y", "SIGNOFF_TEST_SERVE_DB": "z",
                              "OTHER": "w"}) == [
        "SIGNOFF_DATABSE_URL is not a Signoff setting (ignored); did you mean SIGNOFF_DATABASE_URL?"]
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("SIGNOFF_")}, "SIGNOFF_SWEEP_SECOND": "5",
           "SIGNOFF_DATA_DIR": "/tmp/signoff-config-test"}
    out = subprocess.run([sys.executable, "-m", "signoff.cli", "approvals", "list"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and "did you mean SIGNOFF_SWEEP_SECONDS?" in out.stderr, out.stderr


@pytest.mark.parametrize(("variable", "value", "says"), [
    ("SIGNOFF_MAX_TICKET_CHARS", "-5", "greater than or equal to 100"),
    ("SIGNOFF_EXECUTOR_MAX_ATTEMPTS", "0", "greater than or equal to 1"),
    ("SIGNOFF_ODOO_TIMEOUT", "0", "greater than 0"),
    ("SIGNOFF_INBOX_SECRET", "short", "at least 16 characters"),
])
def test_out_of_range_settings_stop_every_command_with_exit_2(variable: str, value: str, says: str,
                                                              tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {**{k: v for k, v in os.environ.items() if not k.startswith("SIGNOFF_")}, variable: value,
           "SIGNOFF_DATA_DIR": str(tmp_path), "COLUMNS": "300"}
    for command in (["approvals", "list"], ["serve", "--port", "0"]):
        out = subprocess.run([sys.executable, "-c", "from signoff.cli import main; main()", *command], env=env,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 2, (command, out.stderr)
        assert f"bad setting: {variable}" in out.stderr and says in out.stderr, out.stderr
        assert "Traceback" not in out.stderr
