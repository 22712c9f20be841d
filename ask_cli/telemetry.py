"""One JSON line per `ask` call in `data_dir()/log.jsonl`, and the summary `ask` prints from it.

The log answers what the tiers are used for, how often the cache helps, how often demotion fires and where
the latency goes, with one `jq` query or `stats()`. It holds sizes and an 8-hex hash, never the prompt or the
answer: the file outlives the terminal session. Stdlib only and cheap to import: every `ask` call, cache hits
included, writes a line. Writing never raises into the caller.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import marshal
import os
import stat
import sys
import time
from operator import itemgetter
from pathlib import Path

from ask_cli.options import Option
from contract import FREE_CLOUD, LOCAL, PREMIUM, paths

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the hit path
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from typing import Any

LANES = (LOCAL, FREE_CLOUD, PREMIUM)  # X-Served-Lane: where the answer was made (and what it cost)
ERROR_MAX = 200  # chars: the kind of failure, not a transcript (an error may quote the request)
NAME_MAX = 100  # chars for model names: keeps every line far below PIPE_BUF, so one write() stays whole
SINCE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
SINCE_HELP = "--since takes a number and a unit: 30m, 24h, 7d"
READ_BLOCK = 5000  # lines per json.loads when reading the log (see `_parsed`)
READ_BYTES = 4 << 20  # bytes per read of the log (see `_lines`)
TORN_WAIT_S = 0.05  # how long a last line without its newline is watched before it is taken as torn (`_torn`)

# `ask stats`' options (ask_cli/options.py): `dest` is `show()`'s keyword.
STATS_OPTIONS: tuple[Option, ...] = (
    Option(("--since",), "since", str, "Only calls this recent. Example: --since 7d"),
    Option(("--json",), "as_json", bool, "The figures as one JSON object."),
)

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
    """Append one JSON line with a single O_APPEND write, so concurrent `ask` processes never interleave. After a
    torn last line (no newline: a crash mid-write, a full disk) the line starts with a newline, so the torn one
    is skipped as corrupt and does not swallow this one.

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
        fd = os.open(target, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode) and st.st_mode & 0o077 and st.st_uid == os.geteuid():
                os.fchmod(fd, 0o600)  # made wider by something else: the log says what the user does
            if st.st_size and stat.S_ISREG(st.st_mode) and _torn(fd, st.st_size):
                data = b"\n" + data
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


def _torn(fd: int, size: int) -> bool:
    """Whether the file's last line lacks its newline: one pread of its last byte. Not a newline can also be
    another `ask` caught mid-write (a write that crosses a page grows the file a page at a time, and a process
    can be descheduled between two), so such a byte is watched for up to `TORN_WAIT_S`: a write in progress
    grows the file (its line ends with a newline), a torn line stays as it is. Only after a crash does it wait."""
    if os.pread(fd, 1, size - 1) == b"\n":
        return False
    deadline = time.monotonic() + TORN_WAIT_S
    while time.monotonic() < deadline:
        time.sleep(0.001)
        if os.fstat(fd).st_size != size:
            return False
    return True


class LogReader:
    """Iterates the log's entries, oldest first; `corrupt` counts the lines skipped (not a JSON object with a
    finite numeric `ts`) once iteration is done. A field of the wrong type is the tally's to skip (`_partial`)."""

    def __init__(
        self,
        since_s: float | None = None,
        path: Path | None = None,
        now: float | None = None,
        span: tuple[int, int | None] = (0, None),
    ) -> None:
        self.path = log_path() if path is None else Path(path)
        self.cutoff = None if since_s is None else (time.time() if now is None else now) - since_s
        self.span = span  # the bytes [start, end) of the file to read, line-aligned; end None: to its end
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
            start, end = self.span
            fh.seek(start)
            lines = _lines(fh, None if end is None else end - start)
            while block := [raw for raw in itertools.islice(lines, READ_BLOCK) if raw.strip()]:
                items = _parsed(block)
                # json gives exactly dict, float and int (bool is not int here): a comprehension, not a loop
                # `ts - ts == 0` is False for inf and nan (json reads 1e400 as inf, and takes NaN)
                stamped = [
                    item
                    for item in items
                    if item.__class__ is dict
                    and ((ts := item.get("ts")).__class__ is float or ts.__class__ is int)
                    and ts - ts == 0
                ]
                self.corrupt += len(items) - len(stamped)  # includes a line that is not JSON (`_parsed` gave None)
                yield from stamped if self.cutoff is None else [item for item in stamped if item["ts"] >= self.cutoff]


def _lines(fh: Any, limit: int | None) -> Iterator[bytes]:
    """The lines of the next `limit` bytes (None: to the end), read a few MB at a time: splitting a big read is
    about twice as fast as iterating the file line by line."""
    carry = b""
    while limit is None or limit > 0:
        data = fh.read(READ_BYTES if limit is None else min(READ_BYTES, limit))
        if not data:
            break
        if limit is not None:
            limit -= len(data)
        *whole, carry = (carry + data).split(b"\n")
        yield from whole
    if carry:
        yield carry


def _parsed(lines: list[bytes]) -> list[Any]:
    """Each line's JSON value, None where a line is not JSON. One `json.loads` for the whole block when every line
    parses (about twice as fast as one call per line: `ask stats` over a year of cron calls); line by line else."""
    try:
        values = json.loads(b"[" + b",".join(lines) + b"]")
    except ValueError:  # includes undecodable bytes
        values = None
    if isinstance(values, list) and len(values) == len(lines):
        return values
    out: list[Any] = []
    for raw in lines:
        try:
            out.append(json.loads(raw))
        except ValueError:
            out.append(None)
    return out


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


# The fields a tally reads, and what a line without one counts as: `_rows` takes them out of each entry at once.
TALLY_FIELDS = {
    "model": "?",
    "ts": None,
    "cache_hit": False,
    "demoted": False,
    "served_by": None,
    "latency_s": None,
    "tokens": None,
    "exit_code": 0,
    "lane": None,
}
_FIELDS_OF = itemgetter(*TALLY_FIELDS)


def _rows(entries: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Each entry's `TALLY_FIELDS` as one tuple: every line `entry` writes has them all, so one C-level
    itemgetter pass takes them (a fifth the time of `.get` per field); a hand-written or older line lacking
    one sends the whole block the slow way, its defaults filled in."""
    try:
        return list(map(_FIELDS_OF, entries))
    except KeyError:
        return [tuple(e.get(name, default) for name, default in TALLY_FIELDS.items()) for e in entries]


class _Tally:
    """One group's counts, gathered in one pass over its rows (`_rows`): `ask stats` reads every line of the log."""

    __slots__ = ("calls", "demoted", "errors", "hits", "lanes", "latencies", "miss_latencies", "served", "tokens")

    def __init__(self, rows: Iterable[tuple[Any, ...]] = ()) -> None:
        """Count `rows`: one loop on local names (attribute updates per row cost twice as much)."""
        calls = hits = demoted = errors = tokens_total = 0
        served: dict[Any, int] = {}
        latencies: list[float] = []
        miss_latencies: list[float] = []
        lanes: dict[str, list[int]] = {}  # lane: [answers, tokens]
        for _model, _ts, hit, was_demoted, said, latency, tokens, exit_code, lane in rows:
            calls += 1
            hit = hit is True
            if hit:
                hits += 1
            if was_demoted is True:
                demoted += 1
            name = "unknown" if said is None else said or "-"  # None: the proxy did not say; "": nothing answered
            served[name] = served.get(name, 0) + 1
            if latency.__class__ is float or (isinstance(latency, int) and not isinstance(latency, bool)):
                latencies.append(latency)
                if not hit:
                    miss_latencies.append(latency)
            if tokens.__class__ is not int and (not isinstance(tokens, int) or isinstance(tokens, bool)):
                tokens = 0
            tokens_total += tokens
            if exit_code != 0:
                errors += 1
                continue  # a failed call made no answer in any lane
            # Lines written before lanes existed were local; a cache hit cost nothing wherever it was made.
            lane = "cache" if hit else str(lane or LOCAL)
            row = lanes.get(lane)
            if row is None:
                row = lanes[lane] = [0, 0]
            row[0] += 1
            row[1] += tokens
        self.calls, self.hits, self.demoted, self.errors, self.tokens = calls, hits, demoted, errors, tokens_total
        self.served, self.latencies, self.miss_latencies, self.lanes = served, latencies, miss_latencies, lanes

    def state(self) -> tuple[Any, ...]:
        """Its counts in types `marshal` carries (another process's half of the log)."""
        return tuple(getattr(self, name) for name in self.__slots__)

    @classmethod
    def of_state(cls, state: tuple[Any, ...]) -> _Tally:
        tally = cls()
        for name, value in zip(cls.__slots__, state, strict=True):
            setattr(tally, name, value)
        return tally

    def merge(self, other: _Tally) -> None:
        for name in ("calls", "hits", "demoted", "errors", "tokens"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name, n in other.served.items():
            self.served[name] = self.served.get(name, 0) + n
        for lane, (answers, tokens) in other.lanes.items():
            row = self.lanes.setdefault(lane, [0, 0])
            row[0] += answers
            row[1] += tokens
        self.latencies += other.latencies
        self.miss_latencies += other.miss_latencies

    def summary(self) -> dict[str, Any]:
        calls = self.calls
        self.latencies.sort()  # once: `percentile` sorts again, which costs nothing on a sorted list
        self.miss_latencies.sort()
        return {
            "calls": calls,
            "cache_hits": self.hits,
            "cache_hit_rate": self.hits / calls if calls else 0.0,
            "demoted": self.demoted,
            "demotion_rate": self.demoted / calls if calls else 0.0,
            "errors": self.errors,
            "error_rate": self.errors / calls if calls else 0.0,
            "served_by": dict(sorted(self.served.items(), key=lambda kv: (-kv[1], kv[0]))),
            "p50_s": percentile(self.latencies, 50),
            "p95_s": percentile(self.latencies, 95),
            "miss_p50_s": percentile(self.miss_latencies, 50),
            "miss_p95_s": percentile(self.miss_latencies, 95),
            "tokens": self.tokens,
        }

    def lane_usage(self) -> dict[str, dict[str, int]]:
        """Answers made per lane (local, free-cloud, premium) with their tokens; cache hits apart."""
        usage = {lane: {"calls": 0, "tokens": 0} for lane in (*LANES, "cache")}
        for lane, (answers, tokens) in self.lanes.items():
            usage[lane] = {"calls": answers, "tokens": tokens}
        return usage


def stats(entries: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Per requested model and in total: calls, served_by counts, cache hit / demotion / error (exit_code != 0)
    counts and rates over all calls, tokens, and nearest-rank p50/p95 latency over all calls (`p50_s`) and over
    cache misses only (`miss_p50_s`: what inference costs, errors included); answers per lane. Models ordered by
    calls."""
    rows = _rows(list(entries))
    by_model, first, last, corrupt = _partial(rows)
    corrupt += getattr(entries, "corrupt", 0)  # a LogReader's count is known once it has been read
    return _finish(by_model, first, last, lambda: _Tally(_sound(rows)).lane_usage(), corrupt)


def _sound(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The rows `_partial` would count (for the lanes in the order first seen)."""
    return [row for row in rows if _fits(*row)]


def _fits(model: Any, _ts: Any, _hit: Any, _demoted: Any, said: Any, latency: Any, tokens: Any, *rest: Any) -> bool:
    """Whether a row's fields are of the types `entry` writes: `_partial`'s check."""
    lane = rest[-1]
    return (
        (model.__class__ is str or model is None)
        and (said.__class__ is str or said is None)
        and (lane.__class__ is str or lane is None)
        and (tokens.__class__ is int or tokens is None)
        and ((latency.__class__ is float and latency - latency == 0) or latency.__class__ is int or latency is None)
    )


def _partial(rows: list[tuple[Any, ...]]) -> tuple[dict[str, _Tally], float | None, float | None, int]:
    """Each requested model's tally, the first and last `ts`, and how many rows were skipped as corrupt (a field
    of another type than `entry` writes: a list as `served_by`, a string as `latency_s`, an infinite latency):
    what two halves of a log can be merged from. Checked in the loop that groups the rows, class by class (a
    quarter of `ask stats`' time in this loop; per column in C, `set(map(type, ...))`, costs twice as much)."""
    corrupt = 0
    groups: dict[str, list[tuple[Any, ...]]] = {}
    for row in rows:
        name, _ts, _hit, _demoted, said, latency, tokens, _code, lane = row
        if not (
            (said.__class__ is str or said is None)
            and (lane.__class__ is str or lane is None)
            and (tokens.__class__ is int or tokens is None)
            and ((latency.__class__ is float and latency - latency == 0) or latency.__class__ is int or latency is None)
        ):
            corrupt += 1
            continue
        if name.__class__ is not str or not name:
            if name is not None and name.__class__ is not str:  # a list, a number: not a name
                corrupt += 1
                continue
            name = "?"
        group = groups.get(name)
        if group is None:
            group = groups[name] = []
        group.append(row)
    stamps = [ts for ts in map(itemgetter(1), rows) if isinstance(ts, int | float)]  # LogReader let only these by
    tallies = {name: _Tally(group) for name, group in groups.items()}
    return tallies, min(stamps, default=None), max(stamps, default=None), corrupt


def _finish(
    by_model: dict[str, _Tally],
    first: float | None,
    last: float | None,
    lanes_in_order: Callable[[], dict[str, dict[str, int]]],
    corrupt: int = 0,
) -> dict[str, Any]:
    models = {m: t.summary() for m, t in sorted(by_model.items(), key=lambda kv: (-kv[1].calls, kv[0]))}
    total = _Tally()
    for tally in by_model.values():  # their latencies sorted by now: sorting the total then merges sorted runs
        total.merge(tally)
    lanes = total.lane_usage()
    if len(lanes) > len(LANES) + 2:  # two lanes beyond ours (a yaml's own): in the order first seen, as before
        lanes = lanes_in_order()
    return {
        "models": models,
        "total": total.summary(),
        "lanes": lanes,
        "first_ts": first,
        "last_ts": last,
        "corrupt": corrupt,  # lines skipped: not JSON, no finite `ts`, or a field of the wrong type
    }


PARALLEL_BYTES = 4 << 20  # a log at least this big is read by two processes at once (`summary`)


def summary(since_s: float | None = None, path: Path | None = None, now: float | None = None) -> dict[str, Any]:
    """`stats` of the log. A big one is split at a line and its second half read by a forked child meanwhile:
    parsing the JSON is most of `ask stats`' time (bench/cli.py), and the machine has another core. Whatever goes
    wrong in the child, the parent reads that half itself."""
    target = log_path() if path is None else Path(path)
    try:
        size = target.stat().st_size
    except FileNotFoundError:
        size = 0
    if size < PARALLEL_BYTES or (os.cpu_count() or 1) < 2 or not hasattr(os, "fork"):
        return stats(read(since_s, target, now))
    with target.open("rb") as fh:
        fh.seek(size // 2)
        fh.readline()
        middle = fh.tell()
    now = time.time() if now is None else now  # both halves cut `--since` at the same instant
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the second half's tallies, marshalled into the pipe, then gone
        code = 1
        try:
            os.close(reader)
            half = LogReader(since_s, target, now, (middle, size))
            by_model, first, last, corrupt = _partial(_rows(list(half)))
            with os.fdopen(writer, "wb") as out:
                out.write(
                    marshal.dumps(({m: t.state() for m, t in by_model.items()}, first, last, corrupt + half.corrupt))
                )
            code = 0
        finally:
            os._exit(code)
    os.close(writer)
    try:
        half = LogReader(since_s, target, now, (0, middle))
        mine, first, last, corrupt = _partial(_rows(list(half)))
        corrupt += half.corrupt
        with os.fdopen(reader, "rb") as inp:
            sent = inp.read()
    finally:
        _, status = os.waitpid(pid, 0)
    if status == 0 and sent:
        states, their_first, their_last, their_corrupt = marshal.loads(sent)  # noqa: S302 - our own child's pipe
        theirs = {m: _Tally.of_state(state) for m, state in states.items()}
    else:
        half = LogReader(since_s, target, now, (middle, size))
        theirs, their_first, their_last, their_corrupt = _partial(_rows(list(half)))
        their_corrupt += half.corrupt
    for name, tally in theirs.items():
        if name in mine:
            mine[name].merge(tally)
        else:
            mine[name] = tally
    firsts = [t for t in (first, their_first) if t is not None]
    lasts = [t for t in (last, their_last) if t is not None]
    return _finish(
        mine,
        min(firsts, default=None),
        max(lasts, default=None),
        lambda: _Tally(_sound(_rows(list(read(since_s, target, now))))).lane_usage(),
        corrupt + their_corrupt,
    )


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


def show(since: str | None = None, as_json: bool = False) -> int:
    """`ask stats`: the summary printed as a table (or JSON); the exit code. Run without Typer by the fast path
    (ask_cli/entry.py): over a long log the reading is the whole cost, and Typer's import would add a fifth."""
    try:
        since_s = parse_since(since) if since else None
    except ValueError as exc:
        print(f"ask: {exc}", file=sys.stderr)
        return 2
    try:
        figures = summary(since_s)
    except OSError as exc:
        print(f"ask: cannot read {log_path()}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(json.dumps(figures, indent=2, allow_nan=False) if as_json else format_table(figures))
    return 0
