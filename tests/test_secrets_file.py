"""~/.config/ask/secrets.env: credentials for `ask serve` when no shell gives them (a login service)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ask_cli import secrets_file


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_values_fill_only_what_the_environment_lacks(tmp_path: Path) -> None:
    path = write(
        tmp_path / "secrets.env",
        "# comment\n\nREDIS_PASSWORD=from-file\nexport GROQ_API_KEY='gk-1'\n"
        "DATABASE_URL=postgresql://u:p@h/db\nEMPTY=\n",
    )
    env = {"DATABASE_URL": "from-shell"}
    assert secrets_file.apply(env, path) == ["REDIS_PASSWORD", "GROQ_API_KEY"]
    assert env == {"DATABASE_URL": "from-shell", "REDIS_PASSWORD": "from-file", "GROQ_API_KEY": "gk-1"}


def test_no_file_is_nothing(tmp_path: Path) -> None:
    env: dict[str, str] = {}
    assert secrets_file.apply(env, tmp_path / "absent.env") == [] and env == {}


@pytest.mark.parametrize(
    ("text", "mode", "message"),
    [
        ("A=1\n", 0o644, "is readable by others (-rw-r--r--): chmod 600"),
        ("not a pair\n", 0o600, ":1: expected NAME=value"),
    ],
    ids=["readable-by-others", "malformed"],
)
def test_a_file_that_must_not_be_used_is_refused(tmp_path: Path, text: str, mode: int, message: str) -> None:
    path = write(tmp_path / "secrets.env", text, mode)
    with pytest.raises(secrets_file.SecretsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        secrets_file.apply({}, path)


def test_the_starter_file_is_private_and_holds_no_value(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    secrets_file.ensure_private()
    path = secrets_file.secrets_path()
    assert path.stat().st_mode & 0o777 == 0o600 and secrets_file.read(path) == {}
