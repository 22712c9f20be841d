"""The prompt cache: keys, TTL and pruning, file modes, WAL, migrations, policy, and failing soft."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from ask_cli import cache
from ask_cli.cache import TTL_S, PromptCache, cache_key, cacheable, should_store
from contract import paths

ROOT = Path(__file__).resolve().parent.parent
BASE = {
    "model": "fast-9b",
    "system": "be brief",
    "prompt": "classify: rates rise",
    "temperature": 0.2,
    "max_tokens": 64,
}


def rows(path: Path) -> int:
    with closing(sqlite3.connect(path)) as db:
        return db.execute("SELECT count(*) FROM answers").fetchone()[0]


def test_key_is_stable_sha256_hex() -> None:
    key = cache_key(**BASE)
    assert key == cache_key(**BASE)
    assert len(key) == 64 and all(c in "0123456789abcdef" for c in key)


@pytest.mark.parametrize(
    ("field", "other"),
    [
        ("model", "fast-3b"),
        ("system", "be verbose"),
        ("system", None),
        ("prompt", "classify: rates fall"),
        ("temperature", 0.3),
        ("temperature", None),
        ("max_tokens", 65),
        ("max_tokens", None),
    ],
)
def test_key_changes_with_every_input(field: str, other: object) -> None:
    assert cache_key(**{**BASE, field: other}) != cache_key(**BASE)


def test_key_fields_do_not_bleed_into_each_other() -> None:
    a = cache_key(model="fast-9b", system="ab", prompt="c", temperature=None, max_tokens=None)
    b = cache_key(model="fast-9b", system="a", prompt="bc", temperature=None, max_tokens=None)
    assert a != b


def test_key_ignores_what_sends_the_same_request() -> None:
    assert cache_key(**{**BASE, "temperature": 1}) == cache_key(**{**BASE, "temperature": 1.0})
    assert cache_key(**{**BASE, "system": ""}) == cache_key(**{**BASE, "system": None})


def test_roundtrip_and_default_path() -> None:
    with PromptCache() as c:
        assert c.path == paths.data_dir() / "cache.sqlite3"
        key = cache_key(**BASE)
        assert c.get(key) is None
        assert c.put(key, "markets", served_by="fast-9b", model="fast-9b", usage={"total_tokens": 12}, now=1000.0)
        hit = c.get(key, now=1001.0)
    assert hit is not None
    assert (hit.answer, hit.served_by, hit.model, hit.created, hit.usage) == (
        "markets",
        "fast-9b",
        "fast-9b",
        1000.0,
        {"total_tokens": 12},
    )
    with PromptCache() as again:  # another process later: still there
        assert again.get(key, now=1002.0) is not None


def test_put_replaces() -> None:
    with PromptCache() as c:
        c.put("k", "old", "fast-9b", "fast-9b", now=1000.0)
        c.put("k", "new", "fast-9b", "fast-9b", now=1001.0)
        hit = c.get("k", now=1002.0)
        assert hit is not None and hit.answer == "new"
    assert rows(cache.cache_path()) == 1


def test_ttl_expiry() -> None:
    with PromptCache() as c:
        c.put("k", "answer", "fast-9b", "fast-9b", now=1000.0)
        assert c.get("k", now=1000.0 + TTL_S - 1) is not None
        assert c.get("k", now=1000.0 + TTL_S) is None
    assert TTL_S == 30 * 86400


def test_ttl_uses_the_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache.time, "time", lambda: 5000.0)
    with PromptCache() as c:
        c.put("k", "answer", "fast-9b", "fast-9b")
        assert c.get("k") is not None
        monkeypatch.setattr(cache.time, "time", lambda: 5000.0 + TTL_S + 1)
        assert c.get("k") is None


def test_put_prunes_expired_rows() -> None:
    with PromptCache() as c:
        for i in range(20):
            c.put(f"old{i}", "a", "fast-9b", "fast-9b", now=1000.0)
        c.put("young", "a", "fast-9b", "fast-9b", now=1000.0 + TTL_S - 10)
        assert rows(c.path) == 21
        c.put("new", "a", "fast-9b", "fast-9b", now=1000.0 + TTL_S + 1)
        assert rows(c.path) == 2  # the 20 old rows went; `young` has 9 s left
        assert c.prune(now=1000.0 + 3 * TTL_S) == 2
        assert rows(c.path) == 0


def test_files_are_private() -> None:
    with PromptCache() as c:
        c.put("k", "answer", "fast-9b", "fast-9b")
        assert stat.S_IMODE(c.path.stat().st_mode) == 0o600
        wal = c.path.with_name(c.path.name + "-wal")
        assert wal.exists() and stat.S_IMODE(wal.stat().st_mode) == 0o600
        assert stat.S_IMODE(c.path.parent.stat().st_mode) == 0o700


def test_existing_wide_file_is_made_private() -> None:
    path = paths.private_dir(paths.data_dir()) / "cache.sqlite3"
    path.touch()
    path.chmod(0o644)
    with PromptCache():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_wal_mode_and_busy_timeout() -> None:
    with PromptCache() as c:
        assert c._db is not None
        assert c._db.execute("PRAGMA busy_timeout").fetchone()[0] == cache.BUSY_TIMEOUT_MS
        path = c.path
    with closing(sqlite3.connect(path)) as db:  # WAL is a property of the file: a fresh connection sees it
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_migrations_apply_once(monkeypatch: pytest.MonkeyPatch) -> None:
    PromptCache().close()
    PromptCache().close()
    path = cache.cache_path()
    with closing(sqlite3.connect(path)) as db:
        assert [r[0] for r in db.execute("SELECT name FROM _migrations")] == ["m001_initial"]

    calls = []

    def m002_add_note(db: sqlite3.Connection) -> None:
        calls.append(1)
        db.execute("ALTER TABLE answers ADD COLUMN note TEXT")

    monkeypatch.setattr(cache, "MIGRATIONS", [*cache.MIGRATIONS, m002_add_note])
    with PromptCache() as c:
        assert c.usable and c.put("k", "a", "fast-9b", "fast-9b")
    PromptCache().close()
    assert calls == [1]
    with closing(sqlite3.connect(path)) as db:
        assert [r[0] for r in db.execute("SELECT name FROM _migrations ORDER BY name")] == [
            "m001_initial",
            "m002_add_note",
        ]


def test_policy() -> None:
    assert cacheable("fast-9b") and cacheable("tiny")
    assert not cacheable("council")
    assert not should_store("council", "council", demoted=False)
    assert not should_store("fast-9b", "fast-3b", demoted=True)
    assert not should_store("fast-9b", None, demoted=False)  # the proxy did not say which tier answered
    assert should_store("fast-9b", "fast-9b", demoted=False)


def test_corrupt_file_is_a_miss_not_a_crash() -> None:
    path = paths.private_dir(paths.data_dir()) / "cache.sqlite3"
    path.write_bytes(os.urandom(8192))
    c = PromptCache()
    assert not c.usable
    assert c.get("k") is None
    assert c.put("k", "a", "fast-9b", "fast-9b") is False
    assert c.prune() == 0
    assert c.last_error and str(path) in c.last_error and "\n" not in c.last_error
    c.close()


def test_unopenable_path_is_a_miss_not_a_crash(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    c = PromptCache(blocker / "cache.sqlite3")
    assert c.get("k") is None and c.put("k", "a", "fast-9b", "fast-9b") is False and c.last_error


def test_disk_full_on_put_fails_soft() -> None:
    with PromptCache() as c:
        assert c.put("small", "a", "fast-9b", "fast-9b")
        assert c._db is not None
        pages = c._db.execute("PRAGMA page_count").fetchone()[0]
        c._db.execute(f"PRAGMA max_page_count = {pages}")  # SQLite's own SQLITE_FULL, as on a full disk
        assert c.put("big", "x" * 200_000, "fast-9b", "fast-9b") is False
        assert c.last_error and "full" in c.last_error
        assert c.get("small") is not None  # what was there is still served
        assert c.get("big") is None
        assert not c._db.in_transaction


def test_concurrent_processes_share_one_fresh_cache() -> None:
    code = (
        "import sys\n"
        "from ask_cli.cache import PromptCache\n"
        "n = sys.argv[1]\n"
        "with PromptCache() as c:\n"
        "    for i in range(40):\n"
        "        assert c.put(f'{n}-{i}', 'a', 'fast-9b', 'fast-9b'), c.last_error\n"
        "        assert c.get(f'{n}-{i}') is not None\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(n)], cwd=ROOT, stderr=subprocess.PIPE) for n in range(8)]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err.decode()
    assert rows(cache.cache_path()) == 8 * 40
