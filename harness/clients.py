"""The third-party clients the tests drive, installed where they cannot disturb the project's own packages.

`llm` and aider pin versions of openai and litellm that conflict with the proxy's, so each gets its own venv;
Claude Code, OpenCode and Codex come from npm into one prefix. All live under `.clients/` (git-ignored):

    .venv/bin/python -m harness.clients install        # what .ci/run does; ~1-2 min, then cached

A test asks `binary(name)` for a client's executable: None when it is not installed, and then the test skips —
unless ASK_TEST_REQUIRE_CLIENTS=1 (set by .ci/run), where a missing client fails instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from harness.processes import ROOT

HOME = ROOT / ".clients"
REQUIRE_ENV = "ASK_TEST_REQUIRE_CLIENTS"
PYTHON_CLIENTS = {"llm": ["llm==0.36"], "aider": ["aider-chat==0.86.2"]}  # venv name → what pip installs
NODE_CLIENTS = {
    "claude": "@anthropic-ai/claude-code@2.1.332",
    "opencode": "opencode-ai@1.18.33",
    "codex": "@openai/codex@0.171.0",
}


def binary(name: str) -> Path | None:
    """The installed executable of a client (`llm`, `aider`, `claude`, `opencode`, `codex`), or None."""
    found = HOME / name / "bin" / name if name in PYTHON_CLIENTS else HOME / "node" / "node_modules" / ".bin" / name
    return found if found.exists() else None


def required() -> bool:
    return os.environ.get(REQUIRE_ENV) == "1"


def install_python(name: str) -> Path:
    venv = HOME / name
    if binary(name) is None:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-qq", "--disable-pip-version-check"]
        subprocess.run([*pip, *PYTHON_CLIENTS[name]], check=True)
    found = binary(name)
    assert found is not None, f"{name} did not install into {venv}"
    return found


def install_node() -> None:
    if all(binary(name) for name in NODE_CLIENTS):
        return
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("harness.clients: npm is not installed (apt-get install npm)")
    prefix = HOME / "node"
    prefix.mkdir(parents=True, exist_ok=True)
    cmd = [npm, "install", "--no-audit", "--no-fund", "--loglevel=error", "--prefix", str(prefix)]
    subprocess.run([*cmd, *NODE_CLIENTS.values()], check=True)


def main(argv: list[str]) -> int:
    if argv != ["install"]:
        print("usage: python -m harness.clients install", file=sys.stderr)
        return 2
    for name in PYTHON_CLIENTS:
        install_python(name)
    install_node()
    for name in [*PYTHON_CLIENTS, *NODE_CLIENTS]:
        print(f"{name}: {binary(name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
