"""The RAM budget's state as the proxy's budget plugin (plugins/ram_budget.py) leaves it for `ask` to read.

The plugin decides, in the proxy, which local model may load; `ask models`, `ask doctor` and `ask`'s
waiting line (`loading coder-30b…`) say what it decided without asking the proxy: one small JSON file in
the data dir, replaced whole on every change (never half-written), 0600. Stdlib only: `ask` reads it on a
slow first token.

The file, `data_dir()/budget.json`:
    {"pid": 4242, "updated": 1764820000.5,
     "budget_gb": 11.5, "source": "RAM_BUDGET_GB",          # or "available 4.3 GB + ours 7.2 GB"
     "resident": [{"tier": "fast-9b", "model": "qwen3.5:9b", "runtime": "ollama", "gb": 7.2, "busy": 1}],
     "loading": [{"tier": "coder-30b", "model": "qwen3-coder:30b", "gb": 19.5, "since": 1764820000.1}],
     "unloading": [{"tier": "fast-9b", "model": "qwen3.5:9b", "since": 1764820000.2}],
     "queued": [{"tier": "coder-30b", "gb": 19.5, "waiting_for": ["fast-9b"], "since": 1764820000.0}]}
A tier stands for its model: fast-9b and think-9b are one Ollama model, named by the first tier that used it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from contract import paths

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on `ask`'s path
if TYPE_CHECKING:
    from typing import Any

STATE_ENV = "RAM_BUDGET_STATE"  # tests and a second stack point it elsewhere
STALE_S = 600.0  # a state not rewritten for this long is from a proxy that is gone


def state_file() -> Path:
    """`$RAM_BUDGET_STATE`, else `budget.json` in the data dir."""
    configured = os.environ.get(STATE_ENV)
    return Path(configured).expanduser() if configured else paths.data_dir() / "budget.json"


def write_state(state: dict[str, Any], path: Path | None = None) -> None:
    """Replace the state file whole (a temporary file renamed over it), 0600. Raises OSError."""
    target = state_file() if path is None else path
    paths.private_dir(target.parent)
    temporary = target.with_name(f".{target.name}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(state, out, separators=(",", ":"))
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def read_state(path: Path | None = None, now: float | None = None) -> dict[str, Any] | None:
    """The state, or None when there is none, it cannot be read, or it is stale (`STALE_S`)."""
    target = state_file() if path is None else path
    try:
        state = json.loads(target.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or not isinstance(state.get("updated"), int | float):
        return None
    if (time.time() if now is None else now) - state["updated"] > STALE_S:
        return None
    return state


def waiting_line(state: dict[str, Any] | None, tier: str, now: float | None = None) -> str | None:
    """What a request for `tier` waits for, in words for `ask`'s stderr: `waiting for fast-9b to finish…`,
    `unloading fast-9b to make room…`, `loading coder-30b (19.5 GB, 4 s)…`; None when the state says it waits
    for nothing. `now` (default: the clock) counts the seconds a load has taken."""
    if not state:
        return None
    for queued in state.get("queued") or ():
        if queued.get("tier") == tier:
            blockers = [str(name) for name in queued.get("waiting_for") or ()]
            if blockers:
                return f"waiting for {', '.join(blockers)} to finish…"
    unloading = [str(row.get("tier")) for row in state.get("unloading") or ()]
    if unloading:
        return f"unloading {', '.join(unloading)} to make room…"
    for loading in state.get("loading") or ():
        if loading.get("tier") == tier:
            details = []
            if isinstance(loading.get("gb"), int | float):
                details.append(f"{loading['gb']:.1f} GB")
            if isinstance(loading.get("since"), int | float):
                details.append(f"{max(0, int((time.time() if now is None else now) - loading['since']))} s")
            return f"loading {tier}{' (' + ', '.join(details) + ')' if details else ''}…"
    return None
