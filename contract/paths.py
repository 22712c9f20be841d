"""Where the stack keeps its files, and the master key both the proxy and `ask` use.

Stdlib only: `ask` imports this on every call, including the cache-hit path.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

KEY_ENV = "LITELLM_MASTER_KEY"
DEMOTION_LOG_ENV = "DEMOTION_LOG"


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var)
    return Path(value) if value else Path.home() / fallback


def config_dir() -> Path:
    """`$XDG_CONFIG_HOME/ask` or `~/.config/ask`: the key file lives here."""
    return _xdg("XDG_CONFIG_HOME", ".config") / "ask"


def data_dir() -> Path:
    """`$XDG_DATA_HOME/ask` or `~/.local/share/ask`: logs and caches live here."""
    return _xdg("XDG_DATA_HOME", ".local/share") / "ask"


def demotion_log() -> Path:
    """`$DEMOTION_LOG`, else `demotions.jsonl` in the data dir: the proxy writes it, `ask` and tests read it."""
    configured = os.environ.get(DEMOTION_LOG_ENV)
    return Path(configured).expanduser() if configured else data_dir() / "demotions.jsonl"


def private_dir(path: Path) -> Path:
    """Create `path` (mode 0700) if needed; the files inside say what the user asked."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


class KeyFileError(Exception):
    """The key file exists but must not be used as it is (others can read it): one line saying the fix."""


def key_file() -> Path:
    return config_dir() / "master.key"


def serve_state() -> Path:
    """Where `ask serve` says where its proxy listens, while it runs (ask_cli/client.py `proxy_url`)."""
    return data_dir() / "serve.json"


def master_key(create: bool = True) -> str | None:
    """The proxy's master key: `LITELLM_MASTER_KEY` if set, else the 0600 key file, made once if absent.

    A random key stored where only the user can read it keeps the stack closed with zero set-up; a key file
    others can read or write is refused (KeyFileError), as `secrets.env` is: the key opens the proxy.
    """
    env = os.environ.get(KEY_ENV, "").strip()
    if env:
        return env
    path = key_file()
    try:
        with path.open(encoding="utf-8") as fh:
            mode = os.fstat(fh.fileno()).st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise KeyFileError(f"{path} is readable by others ({stat.filemode(mode)}): chmod 600 {path}")
            key = fh.read().strip()
        if key:
            return key
    except FileNotFoundError:
        pass
    if not create:
        return None
    return _write_key_file(new_key())


def ensure_key_file() -> str:
    """A key file for a process that gets no shell environment (a login service): if none exists, it holds
    `LITELLM_MASTER_KEY` when set, so the service and this shell agree, else a new random key. Returns how."""
    path = key_file()
    if path.exists() and path.read_text(encoding="utf-8").strip():
        return f"the key file {path}"
    env = os.environ.get(KEY_ENV, "").strip()
    _write_key_file(env or new_key())
    return f"the key file {path}, " + ("holding $LITELLM_MASTER_KEY" if env else "with a new key")


def new_key() -> str:
    """A fresh master key; `secrets` imported here, since every `ask` call reads this module but few make one."""
    import secrets

    return "sk-" + secrets.token_hex(32)


def _write_key_file(key: str) -> str:
    """Create the 0600 key file with `key`, unless another process made it first: then theirs."""
    path = key_file()
    private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text(encoding="utf-8").strip()
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(key + "\n")
    return key
