"""The per-call log: the seed's fields and types, no prompt text, whole lines under 16 writers, failing soft,
reading back, the summary and `--since`."""

from __future__ import annotations

import hashlib
import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from ask_cli import telemetry
from ask_cli.telemetry import append, format_table, parse_since, percentile, read, record, stats
from contract import paths

ROOT = Path(__file__).resolve().parent.parent
# The seed's example line, verbatim: every field it names must come out with the same name and JSON type.
SEED_LINE = json.loads("""{"ts":1777978067.96,"model":"fast-9b","served_by":"fast-9b",
 "prompt_hash":"775a61d9","prompt_chars":22,"response_chars":2,
 "latency_s":0.003,"cache_hit":true,"demoted":false,"exit_code":0}""")
OPTIONAL = {
    "tokens": (int, type(None)),
    "ttft_s": (float, type(None)),
    "error": (str, type(None)),
    "lane": (str, type(None)),
}


def call(**overrides: object) -> bool:
    fields: dict = {
        "model": "fast-9b",
        "served_by": "fast-9b",
        "prompt": "p",
        "response": "r",
        "latency_s": 0.5,
        "cache_hit": False,
        "demoted": False,
        "exit_code": 0,
    }
    return record(**{**fields, **overrides})


def lines() -> list[dict]:
    return [json.loads(line) for line in telemetry.log_path().read_text().splitlines()]


def test_line_has_the_seeds_fields_and_types() -> None:
    prompt = "Summarize: rates rise."
    assert record(
        model="fast-9b",
        served_by="fast-9b",
        prompt=prompt,
        response="ok",
        latency_s=0.0031,
        cache_hit=True,
        demoted=False,
        exit_code=0,
        now=1777978067.9612,
    )
    (entry,) = lines()
    assert list(entry) == [*SEED_LINE, *OPTIONAL]  # the seed's order, then the optional fields
    for name, example in SEED_LINE.items():
        assert type(entry[name]) is type(example), name
    for name, types in OPTIONAL.items():
        assert isinstance(entry[name], types), name
    assert entry["ts"] == 1777978067.96 and entry["latency_s"] == 0.003
    assert entry["prompt_chars"] == 22 and entry["response_chars"] == 2
    assert entry["prompt_hash"] == hashlib.sha256(prompt.encode()).hexdigest()[:8]
    assert len(entry["prompt_hash"]) == 8
    assert telemetry.log_path() == paths.data_dir() / "log.jsonl"


def test_optional_fields_typed_when_known() -> None:
    assert call(tokens=42, ttft_s=0.12345, error="HTTP 500:\n  runner   died" + "x" * 500, exit_code=1, served_by="")
    (entry,) = lines()
    assert entry["tokens"] == 42 and entry["ttft_s"] == 0.123
    assert entry["error"].startswith("HTTP 500: runner died") and len(entry["error"]) == telemetry.ERROR_MAX
    assert entry["served_by"] == "" and entry["exit_code"] == 1


def test_a_tier_the_proxy_did_not_name_is_null_and_counted_as_unknown() -> None:
    assert call(served_by=None)
    (entry,) = lines()
    assert entry["served_by"] is None
    assert stats(read())["models"]["fast-9b"]["served_by"] == {"unknown": 1}


def test_never_the_prompt_or_answer_text() -> None:
    prompt = "zanzibar-quokka-7741 is my secret project name"
    answer = "marmalade-ocelot-9902 says the answer"
    assert call(prompt=prompt, response=answer)
    raw = telemetry.log_path().read_bytes()
    for text in (prompt, answer, "zanzibar", "quokka", "ocelot"):
        assert text.encode() not in raw


def test_log_is_private() -> None:
    assert call()
    assert stat.S_IMODE(telemetry.log_path().stat().st_mode) == 0o600
    assert stat.S_IMODE(telemetry.log_path().parent.stat().st_mode) == 0o700
    telemetry.log_path().chmod(0o644)
    assert call()
    assert stat.S_IMODE(telemetry.log_path().stat().st_mode) == 0o600


def test_sixteen_processes_lose_and_tear_no_line() -> None:
    code = (
        "import sys\n"
        "from ask_cli import telemetry\n"
        "w = int(sys.argv[1])\n"
        "for i in range(200):\n"
        "    assert telemetry.append({'ts': 1.0, 'writer': w, 'seq': i, 'pad': 'x' * (100 + (w * 37 + i) % 300)})\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(w)], cwd=ROOT, stderr=subprocess.PIPE) for w in range(16)
    ]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err.decode()
    got = lines()  # every line parses
    assert len(got) == 16 * 200
    assert sorted((e["writer"], e["seq"]) for e in got) == [(w, i) for w in range(16) for i in range(200)]


def test_disk_full_returns_false() -> None:
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    assert append({"ts": 1.0}, Path("/dev/full")) is False  # ENOSPC on write, as on a full disk
    assert telemetry.last_error and "No space left" in telemetry.last_error


def test_unwritable_log_returns_false(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    assert append({"ts": 1.0}, blocker / "log.jsonl") is False
    assert telemetry.last_error and str(blocker) in telemetry.last_error


def test_unserializable_entry_returns_false() -> None:
    assert append({"ts": float("nan")}) is False
    assert append({"ts": object()}) is False
    assert not telemetry.log_path().exists()


def test_read_skips_and_counts_corrupt_lines_and_filters_by_age() -> None:
    for ts in (1000.0, 2000.0, 3000.0):
        assert call(now=ts)
    with telemetry.log_path().open("ab") as fh:
        fh.write(b'{"ts": 2500, "model": "fast-9b"\n')  # torn
        fh.write(b"\xff\xfe not json\n")
        fh.write(b"[1, 2]\n")
        fh.write(b'{"model": "no ts"}\n')
        fh.write(b"\n")
    reader = read()
    assert [e["ts"] for e in reader] == [1000.0, 2000.0, 3000.0]
    assert reader.corrupt == 4
    recent = read(since_s=1500, now=3100.0)
    assert [e["ts"] for e in recent] == [2000.0, 3000.0]


def test_read_without_a_log_is_empty() -> None:
    reader = read()
    assert list(reader) == [] and reader.corrupt == 0


def test_percentile_nearest_rank() -> None:
    assert percentile([], 50) is None
    assert percentile([7.0], 95) == 7.0
    values = [float(v) for v in range(10, 0, -1)]
    assert percentile(values, 50) == 5.0 and percentile(values, 95) == 10.0
    values = [float(v) for v in range(1, 21)]
    assert percentile(values, 50) == 10.0 and percentile(values, 95) == 19.0


def hand_made_log() -> list[dict]:
    def e(
        model: str,
        served: str,
        latency: float,
        hit: bool = False,
        demoted: bool = False,
        code: int = 0,
        tokens: int | None = None,
        lane: str | None = None,
    ) -> dict:
        entry = {
            "ts": 1000.0,
            "model": model,
            "served_by": served,
            "prompt_hash": "00000000",
            "prompt_chars": 1,
            "response_chars": 1,
            "latency_s": latency,
            "cache_hit": hit,
            "demoted": demoted,
            "exit_code": code,
            "tokens": tokens,
            "ttft_s": None,
            "error": None,
        }
        return {**entry, "lane": lane} if lane else entry  # lines from before lanes existed have none

    return [
        e("fast-9b", "fast-9b", 0.002, hit=True),
        e("fast-9b", "fast-9b", 0.003, hit=True),
        e("fast-9b", "fast-9b", 1.0, tokens=10),
        e("fast-9b", "fast-9b", 2.0, tokens=20),
        e("fast-9b", "fast-3b", 3.0, demoted=True, tokens=5),
        e("fast-9b", "", 60.0, code=1),
        e("council", "council", 9.0, tokens=100),
        e("council", "council", 11.0),
        e("premium", "premium", 4.0, tokens=300, lane="premium"),
        e("fast-1b", "cloud-free", 1.5, demoted=True, tokens=40, lane="free-cloud"),
    ]


def test_stats_against_a_hand_made_log() -> None:
    for entry in hand_made_log():
        assert append(entry)
    s = stats(read())
    assert s["lanes"] == {
        "local": {"calls": 5, "tokens": 135},
        "free-cloud": {"calls": 1, "tokens": 40},
        "premium": {"calls": 1, "tokens": 300},
        "cache": {"calls": 2, "tokens": 0},
    }
    assert list(s["models"])[:2] == ["fast-9b", "council"]  # by calls
    nine = s["models"]["fast-9b"]
    assert nine["calls"] == 6
    assert nine["served_by"] == {"fast-9b": 4, "-": 1, "fast-3b": 1}
    assert (nine["cache_hits"], nine["cache_hit_rate"]) == (2, 2 / 6)
    assert (nine["demoted"], nine["demotion_rate"]) == (1, 1 / 6)
    assert (nine["errors"], nine["error_rate"]) == (1, 1 / 6)
    # all six latencies sorted: .002 .003 1 2 3 60 → p50 rank 3, p95 rank 6; misses: 1 2 3 60 → ranks 2 and 4
    assert (nine["p50_s"], nine["p95_s"]) == (1.0, 60.0)
    assert (nine["miss_p50_s"], nine["miss_p95_s"]) == (2.0, 60.0)
    assert nine["tokens"] == 35
    council = s["models"]["council"]
    assert (council["calls"], council["cache_hit_rate"], council["p50_s"], council["p95_s"]) == (2, 0.0, 9.0, 11.0)
    total = s["total"]
    assert total["calls"] == 10 and total["cache_hits"] == 2 and total["errors"] == 1 and total["tokens"] == 475
    assert total["served_by"] == {"fast-9b": 4, "council": 2, "-": 1, "cloud-free": 1, "fast-3b": 1, "premium": 1}
    # all eight: .002 .003 1 2 3 9 11 60 → p50 rank 4 = 2.0, p95 rank 8 = 60; misses (6) → rank 3 = 3.0, rank 6
    assert (total["p50_s"], total["p95_s"], total["miss_p50_s"], total["miss_p95_s"]) == (2.0, 60.0, 3.0, 60.0)
    assert (s["first_ts"], s["last_ts"]) == (1000.0, 1000.0)


def test_a_big_log_read_by_two_processes_gives_the_same_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    """`ask stats` splits a big log between two processes: same summary as one reader, corrupt lines and
    `--since` included, a model seen only in the second half counted, and the same when the child fails."""
    entries = hand_made_log()
    telemetry.log_path().parent.mkdir(parents=True)
    with telemetry.log_path().open("ab") as fh:
        for i in range(600):
            entry = {**entries[i % len(entries)], "ts": 1000.0 + i, "latency_s": 0.5 + (i * 7 % 13)}
            if i > 400:
                entry["model"] = "late-tier"  # only in the second half
            fh.write(json.dumps(entry).encode() + b"\n")
            if i % 97 == 0:
                fh.write(b'{"ts": 1, "torn"\n')
    one_reader = {since: stats(read(since_s=since, now=1700.0)) for since in (None, 300.0)}
    monkeypatch.setattr(telemetry, "PARALLEL_BYTES", 1024)
    for since, expected in one_reader.items():
        assert telemetry.summary(since_s=since, now=1700.0) == expected
    assert one_reader[None]["models"]["late-tier"]["calls"] == 199

    real_fork = telemetry.os.fork
    monkeypatch.setattr(telemetry.os, "fork", lambda: real_fork() or telemetry.os._exit(1))  # a child that dies
    assert telemetry.summary(now=1700.0) == one_reader[None]


def test_stats_of_nothing() -> None:
    s = stats([])
    assert s["models"] == {} and s["total"]["calls"] == 0 and s["total"]["p50_s"] is None
    assert "total" in format_table(s)


def test_format_table() -> None:
    table = format_table(stats(hand_made_log()))
    out = table.splitlines()
    assert out[0].split()[:2] == ["model", "calls"]
    assert out[2].split()[:6] == ["fast-9b", "6", "33.3%", "16.7%", "16.7%", "1.00s"]
    assert out[2].endswith("fast-9b 4, - 1, fast-3b 1")
    assert out[3].split()[:2] == ["council", "2"]
    assert out[-3].split()[:2] == ["total", "10"]
    assert out[-1] == (
        "answers by lane: local 5 (135 tokens), free-cloud 1 (40 tokens), premium 1 (300 tokens), cache 2"
    )
    assert len(out) == 10 and set(out[1]) == {"-", " "}
    assert out[0].index("calls") + len("calls") == out[2].index("6") + 1  # numbers right-aligned under headers


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90.0),
        ("30m", 1800.0),
        ("24h", 86400.0),
        ("7d", 604800.0),
        ("2w", 1209600.0),
        ("1.5h", 5400.0),
        (" 7D ", 604800.0),
    ],
)
def test_parse_since(text: str, seconds: float) -> None:
    assert parse_since(text) == seconds


@pytest.mark.parametrize("text", ["", "7", "d", "7y", "-1d", "0d", "nand", "infh", "seven d", "7 days"])
def test_parse_since_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"--since takes a number and a unit: 30m, 24h, 7d"):
        parse_since(text)
