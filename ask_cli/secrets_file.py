"""`~/.config/ask/secrets.env`: the passwords and API keys the stack needs when no shell gives them.

A login service (`ask service`) starts `ask serve` with only the addresses in its definition; credentials
(`REDIS_PASSWORD`, `DATABASE_URL`, the cloud lanes' API keys) stay out of service files and live here instead,
one `NAME=value` per line, readable by the user alone. `ask serve` reads it at start; a name already in the
environment wins. A file others can read is refused, not used.
"""

from __future__ import annotations

import os
import stat
from collections.abc import MutableMapping
from pathlib import Path

from contract import paths


class SecretsError(Exception):
    """The file exists but must not be used as it is: one line saying why and what to do."""


def secrets_path() -> Path:
    return paths.config_dir() / "secrets.env"


def read(path: Path | None = None) -> dict[str, str]:
    """The file's NAME=value pairs ({} when there is no file). Blank lines and # comments are skipped."""
    path = path or secrets_path()
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return {}
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretsError(f"{path} is readable by others ({stat.filemode(mode)}): chmod 600 {path}")
    values: dict[str, str] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.removeprefix("export ").partition("=")
        if not sep or not name.strip().isidentifier():
            raise SecretsError(f"{path}:{number}: expected NAME=value")
        values[name.strip()] = value.strip().strip("'\"")
    return values


def apply(env: MutableMapping[str, str], path: Path | None = None) -> list[str]:
    """Add the file's values to `env` where it has none; the names added (never the values)."""
    values = read(path)
    added = [name for name, value in values.items() if value and not env.get(name)]
    env.update({name: values[name] for name in added})
    return added


def ensure_private(path: Path | None = None) -> None:
    """Create an empty 0600 file with a comment, so the user has the right place and mode to start from."""
    path = path or secrets_path()
    if path.exists():
        return
    paths.private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(
            "# NAME=value, one per line, for `ask serve` when no shell provides them (e.g. as a login service).\n"
            "# REDIS_PASSWORD=...\n# DATABASE_URL=postgresql://litellm:...@127.0.0.1:5432/litellm\n"
            "# GROQ_API_KEY=...\n"
        )
