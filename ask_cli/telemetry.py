"""One JSON line per `ask` call in `data_dir()/log.jsonl`, and the summary `ask` prints from it.

The log answers what the tiers are used for, how often the cache helps, how often demotion fires and where
the latency goes, with one `jq` query or `stats()`. It holds sizes and an 8-hex hash, never the prompt or the
answer: the file outlives the terminal session. Stdlib only and cheap to import: every `ask` call, cache hits
included, writes a line. Writing never raises into the caller.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from pathlib import Path

from contract import FREE_CLOUD, LOCAL, PREMIUM, paths

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the hit path
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from typing import Any

LANES = (LOCAL, FREE_CLOUD, PREMIUM)  # X-Served-Lane: where the answer was made (and what it cost)
ERROR_MAX = 200  # chars: the kind of failure, not a transcript (an error may quote the request)
NAME_MAX = 100  # chars for model names: keeps every line far below PIPE_BUF, so one write() stays whole
SINCE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
SINCE_HELP = "--since takes a number and a unit: 30m, 24h, 7d"

last_error: str | None = None  # why the last append failed, one line for the CLI's warning


def log_path() -> Path:
    """`data_dir()/log.jsonl`."""
    return paths.data_dir() / "log.jsonl"


def prompt_hash(prompt: str) -> str:
    """First 8 hex of sha256(prompt): enough to spot a repeated prompt in the log, too little to recover it."""
    return hashlib.sha256(prompt.encode("utf-8", "surrogatepass")).hexdigest()[:8]


def _short(text: str | None, limit: int) -> str | None:
    if text is None:
        return None
    one_line = " ".join(str(text).split())
    return one_line if len(one_line) <= limit else one_line[: limit - 1] + "…"


def _seconds(value: float | None, digits: int) -> float | None:
    if value is None:
        return None
    value = float(value)
    return round(value, digits) if value == value and value not in (float("inf"), float("-inf")) else None


def entry(
    *,
    model: str,
    served_by: str | None,
    prompt: str,
    response: str,
    latency_s: float,
    cache_hit: bool,
    demoted: bool,
    exit_code: int,
    tokens: int | None = None,
    ttft_s: float | None = None,
    error: str | None = None,
    now: float | None = None,
    lane: str | None = None,
) -> dict[str, Any]:
    """The log line for one call, typed as the seed's example, every key always written (null when unknown) so jq
    sees one shape. `served_by` is "" when no tier answered, null when one did but the proxy did not say which; `lane`
    is the served tier's lane (None for a cache hit or an error: nothing was made)."""
    return {
        "ts": round(time.time() if now is None else now, 2),
        "model": _short(model, NAME_MAX) or "",
        "served_by": _short(served_by, NAME_MAX),
        "prompt_hash": prompt_hash(prompt),
        "prompt_chars": len(prompt),
        "response_chars": len(response),
        "latency_s": _seconds(latency_s, 3) or 0.0,
        "cache_hit": bool(cache_hit),
        "demoted": bool(demoted),
        "exit_code": int(exit_code),
        "tokens": None if tokens is None else int(tokens),
        "ttft_s": _seconds(ttft_s, 3),
        "error": _short(error, ERROR_MAX),
        "lane": _short(lane, NAME_MAX),
    }


def record(
    *,
    model: str,
    served_by: str | None,
    prompt: str,
    response: str,
    latency_s: float,
    cache_hit: bool,
    demoted: bool,
    exit_code: int,
    tokens: int | None = None,
    ttft_s: float | None = None,
    error: str | None = None,
    now: float | None = None,
    path: Path | None = None,
    lane: str | None = None,
) -> bool:
    """Log one call (see `entry`); False, with `last_error` set, if the line could not be written."""
    return append(
        entry(
            model=model,
            served_by=served_by,
            prompt=prompt,
            response=response,
            latency_s=latency_s,
            cache_hit=cache_hit,
            demoted=demoted,
            exit_code=exit_code,
            tokens=tokens,
            ttft_s=ttft_s,
            error=error,
            now=now,
            lane=lane,
        ),
        path,
    )


def append(line: dict[str, Any], path: Path | None = None) -> bool:
    """Append one JSON line with a single O_APPEND write, so concurrent `ask` processes never interleave.

    Never raises: a full disk or an unwritable file returns False and sets `last_error`.
    """
    global last_error
    target = log_path() if path is None else Path(path)
    try:
        data = (json.dumps(line, separators=(",", ":"), allow_nan=False) + "\n").encode("utf-8")
    except (TypeError, ValueError) as exc:
        last_error = f"telemetry: entry not JSON: {exc}"
        return False
    try:
        paths.private_dir(target.parent)
        fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode) and st.st_mode & 0o077 and st.st_uid == os.geteuid():
                os.fchmod(fd, 0o600)  # made wider by something else: the log says what the user does
            written = os.write(fd, data)
        finally:
            os.close(fd)
    except OSError as exc:
        last_error = f"telemetry log {target}: {exc.strerror or exc}"
        return False
    if written != len(data):
        last_error = f"telemetry log {target}: short write ({written} of {len(data)} bytes; disk full?)"
        return False
    return True


class LogReader:
    """Iterates the log's entries, oldest first; `corrupt` counts the lines skipped (not a JSON object with a
    numeric `ts`) once iteration is done."""

    def __init__(self, since_s: float | None = None, path: Path | None = None, now: float | None = None) -> None:
        self.path = log_path() if path is None else Path(path)
        self.cutoff = None if since_s is None else (time.time() if now is None else now) - since_s
        self.corrupt = 0
        self._entries = self._read()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        return next(self._entries)

    def _read(self) -> Iterator[dict[str, Any]]:
        try:
            fh = self.path.open("rb")
        except FileNotFoundError:
            return
        with fh:
            for raw in fh:
                if not raw.strip():
                    continue
                try:
                    item = json.loads(raw)
                except ValueError:  # includes undecodable bytes
                    self.corrupt += 1
                    continue
                ts = item.get("ts") if isinstance(item, dict) else None
                if not isinstance(ts, int | float) or isinstance(ts, bool):
                    self.corrupt += 1
                    continue
                if self.cutoff is None or ts >= self.cutoff:
                    yield item


def read(since_s: float | None = None, path: Path | None = None, now: float | None = None) -> LogReader:
    """The entries of the last `since_s` seconds (all if None). A missing log is empty; other OSErrors raise."""
    return LogReader(since_s, path, now)


def parse_since(text: str) -> float:
    """`--since` value → seconds: "90s", "30m", "24h", "7d", "2w" (decimals allowed). ValueError otherwise."""
    raw = text.strip().lower()
    unit, number = raw[-1:], raw[:-1].strip()
    value = None
    if unit in SINCE_UNITS and number:
        try:
            value = float(number)
        except ValueError:
            value = None
    if value is None or not 0 < value < float("inf"):
        raise ValueError(f"{SINCE_HELP} (got {text!r})")
    return value * SINCE_UNITS[unit]


def percentile(values: list[float], p: int) -> float | None:
    """Nearest-rank percentile (an observed value, never interpolated); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-p * len(ordered) // 100))  # ceil(p/100 * n) in integers
    return ordered[rank - 1]


def _summarize(group: list[dict[str, Any]]) -> dict[str, Any]:
    calls = len(group)
    hits = sum(1 for e in group if e.get("cache_hit") is True)
    demoted = sum(1 for e in group if e.get("demoted") is True)
    errors = sum(1 for e in group if e.get("exit_code", 0) != 0)
    served: dict[str, int] = {}
    for e in group:
        said = e.get("served_by")
        name = "unknown" if said is None else said or "-"  # None: the proxy did not say; "": nothing answered
        served[name] = served.get(name, 0) + 1
    latencies, miss_latencies = [], []
    for e in group:
        latency = e.get("latency_s")
        if isinstance(latency, int | float) and not isinstance(latency, bool):
            latencies.append(latency)
            if e.get("cache_hit") is not True:
                miss_latencies.append(latency)
    tokens = [e["tokens"] for e in group if isinstance(e.get("tokens"), int) and not isinstance(e["tokens"], bool)]
    return {
        "calls": calls,
        "cache_hits": hits,
        "cache_hit_rate": hits / calls if calls else 0.0,
        "demoted": demoted,
        "demotion_rate": demoted / calls if calls else 0.0,
        "errors": errors,
        "error_rate": errors / calls if calls else 0.0,
        "served_by": dict(sorted(served.items(), key=lambda kv: (-kv[1], kv[0]))),
        "p50_s": percentile(latencies, 50),
        "p95_s": percentile(latencies, 95),
        "miss_p50_s": percentile(miss_latencies, 50),
        "miss_p95_s": percentile(miss_latencies, 95),
        "tokens": sum(tokens),
    }


def stats(entries: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Per requested model and in total: calls, served_by counts, cache hit / demotion / error (exit_code != 0)
    counts and rates over all calls, tokens, and nearest-rank p50/p95 latency over all calls (`p50_s`) and over
    cache misses only (`miss_p50_s`: what inference costs, errors included). Models ordered by calls."""
    by_model: dict[str, list[dict[str, Any]]] = {}
    everything: list[dict[str, Any]] = []
    for e in entries:
        by_model.setdefault(str(e.get("model") or "?"), []).append(e)
        everything.append(e)
    stamps = [e["ts"] for e in everything if isinstance(e.get("ts"), int | float)]
    return {
        "models": {m: _summarize(g) for m, g in sorted(by_model.items(), key=lambda kv: (-len(kv[1]), kv[0]))},
        "total": _summarize(everything),
        "lanes": lane_usage(everything),
        "first_ts": min(stamps) if stamps else None,
        "last_ts": max(stamps) if stamps else None,
    }


def lane_usage(entries: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Answers made per lane (local, free-cloud, premium) with their tokens; cache hits apart: they cost nothing.
    Lines written before lanes existed were local. Failed calls count nowhere."""
    usage = {lane: {"calls": 0, "tokens": 0} for lane in (*LANES, "cache")}
    for e in entries:
        if e.get("exit_code", 0) != 0:
            continue
        lane = "cache" if e.get("cache_hit") is True else str(e.get("lane") or LOCAL)
        row = usage.setdefault(lane, {"calls": 0, "tokens": 0})
        row["calls"] += 1
        tokens = e.get("tokens")
        row["tokens"] += tokens if isinstance(tokens, int) and not isinstance(tokens, bool) else 0
    return usage


def _pct(rate: float) -> str:
    return f"{rate * 100:.1f}%"


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


def format_table(summary: dict[str, Any]) -> str:
    """`stats()` as a fixed-width table, one row per requested model and a total row."""
    header = ("model", "calls", "cache hit", "demoted", "errors", "p50", "p95", "miss p50", "miss p95", "served by")
    rows = []
    for name, s in [*summary["models"].items(), ("total", summary["total"])]:
        served = ", ".join(f"{tier} {n}" for tier, n in s["served_by"].items())
        rows.append(
            (
                name,
                str(s["calls"]),
                _pct(s["cache_hit_rate"]),
                _pct(s["demotion_rate"]),
                _pct(s["error_rate"]),
                _secs(s["p50_s"]),
                _secs(s["p95_s"]),
                _secs(s["miss_p50_s"]),
                _secs(s["miss_p95_s"]),
                served,
            )
        )
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    left = {0, len(header) - 1}  # names left-aligned, numbers right-aligned

    def line(cells: tuple[str, ...]) -> str:
        padded = (c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))
        return "  ".join(padded).rstrip()

    rule = "  ".join("-" * w for w in widths)
    lanes = ", ".join(
        f"{lane} {u['calls']}" + (f" ({u['tokens']} tokens)" if u["tokens"] else "")
        for lane, u in summary.get("lanes", {}).items()
    )
    return "\n".join(
        [line(header), rule, *(line(r) for r in rows[:-1]), rule, line(rows[-1]), "", f"answers by lane: {lanes}"]
    )
