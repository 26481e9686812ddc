"""Versioned prompt templates and their loader.

One file per prompt version, ``<id>.v<version>.md``, with YAML front matter (``id``, ``version``,
``description``) and the template text after it. Placeholders use :class:`string.Template` syntax
(``$labels``), so JSON braces in a prompt need no escaping.

Every prompt carries the sha256 of its text; the hash travels with each result (in
``Prediction.model_version`` and the usage record) and so into the audit trail. ``prompts.lock``
records ``id -> version -> sha256`` for every prompt file: a test fails when a prompt's text changes
without a new version. After adding a version, ``signoff llm prompts --write-lock`` records it (it
refuses to change the hash of a version already locked).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

import yaml

from signoff.errors import ConfigError

PROMPTS_DIR = Path(__file__).resolve().parent
LOCK_PATH = PROMPTS_DIR / "prompts.lock"
_FILE_RE = re.compile(r"^(?P<id>[a-z0-9_]+)\.v(?P<version>[0-9]+)\.md$")
_FRONT_RE = re.compile(r"\A---\n(?P<front>.*?)\n---\n(?P<text>.*)\Z", re.DOTALL)


@dataclass(frozen=True)
class Prompt:
    """One version of one prompt: its text and the sha256 of that text."""

    id: str
    version: int
    sha256: str
    text: str
    description: str = ""

    @property
    def ref(self) -> str:
        """``<id>.v<version>@<sha256[:12]>``: how results and audit events name the prompt."""
        return f"{self.id}.v{self.version}@{self.sha256[:12]}"

    def render(self, **values: Any) -> str:
        """The text with ``$name`` placeholders filled; a missing value raises :class:`ConfigError`."""
        try:
            return Template(self.text).substitute(**{k: str(v) for k, v in values.items()})
        except KeyError as exc:
            raise ConfigError(f"prompt {self.ref} needs a value for ${exc.args[0]}") from exc


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def parse_prompt(path: Path) -> Prompt:
    """Read one prompt file; its name must agree with its front matter."""
    m = _FILE_RE.match(path.name)
    if not m:
        raise ConfigError(f"{path.name}: prompt files are named <id>.v<version>.md")
    raw = path.read_text(encoding="utf-8")
    fm = _FRONT_RE.match(raw)
    if not fm:
        raise ConfigError(f"{path}: no YAML front matter (--- id/version --- text)")
    front = yaml.safe_load(fm["front"]) or {}
    pid, version = front.get("id"), front.get("version")
    if pid != m["id"] or version != int(m["version"]):
        raise ConfigError(f"{path.name}: front matter says {pid} v{version}, the file name says "
                          f"{m['id']} v{m['version']}")
    text = fm["text"]
    return Prompt(id=pid, version=int(version), sha256=text_sha256(text), text=text,
                  description=str(front.get("description", "")))


def all_prompts(directory: Path = PROMPTS_DIR) -> list[Prompt]:
    return sorted((parse_prompt(p) for p in directory.glob("*.v*.md")), key=lambda p: (p.id, p.version))


def load_prompt(prompt_id: str, version: int | None = None, *, directory: Path = PROMPTS_DIR) -> Prompt:
    """A prompt by id: the given version, or the highest one."""
    found = [p for p in all_prompts(directory) if p.id == prompt_id]
    if version is not None:
        found = [p for p in found if p.version == version]
    if not found:
        raise ConfigError(f"no prompt {prompt_id!r}" + (f" version {version}" if version is not None else "")
                          + f" in {directory}")
    return found[-1]


def read_lock(path: Path = LOCK_PATH) -> dict[str, dict[str, str]]:
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return {str(k): {str(v): str(h) for v, h in versions.items()} for k, versions in data.items()}


def lock_problems(directory: Path = PROMPTS_DIR, lock_path: Path = LOCK_PATH) -> list[str]:
    """Every prompt whose text does not match its locked hash, or that is not locked at all."""
    lock = read_lock(lock_path)
    problems = []
    for p in all_prompts(directory):
        locked = lock.get(p.id, {}).get(str(p.version))
        if locked is None:
            problems.append(f"{p.id} v{p.version} is not in {lock_path.name}: run `signoff llm prompts --write-lock`")
        elif locked != p.sha256:
            problems.append(f"{p.id} v{p.version} changed (sha256 {p.sha256[:12]}, locked {locked[:12]}): "
                            f"a changed prompt needs a new version file")
    return problems


def write_lock(directory: Path = PROMPTS_DIR, lock_path: Path = LOCK_PATH) -> dict[str, dict[str, str]]:
    """Add unlocked prompt versions to the lock; refuses (ConfigError) to re-hash a locked version."""
    lock = read_lock(lock_path)
    for p in all_prompts(directory):
        locked = lock.setdefault(p.id, {}).get(str(p.version))
        if locked is not None and locked != p.sha256:
            raise ConfigError(f"{p.id} v{p.version} is locked with another text: add a new version instead")
        lock[p.id][str(p.version)] = p.sha256
    lock_path.write_text(json.dumps(lock, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return lock


__all__ = ["LOCK_PATH", "PROMPTS_DIR", "Prompt", "all_prompts", "load_prompt", "lock_problems",
           "read_lock", "text_sha256", "write_lock"]
