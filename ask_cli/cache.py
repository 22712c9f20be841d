"""The prompt cache: repeated cron prompts (the hourly digest, the same headlines) answered from SQLite.

Stdlib only and cheap to import: `ask` opens this before deciding whether to reach the proxy at all. Every
failure (a corrupt file, a full disk, a lock held too long) degrades to a miss or an unstored answer, never
an exception: the cache may save time, it must never cost an answer.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import stat
import time
from pathlib import Path

from contract import COUNCIL, paths

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the hit path
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

TTL_S = 30 * 24 * 3600  # 30 days: long enough for weekly cron jobs, short enough that old models' answers age out
UNCACHEABLE = frozenset({COUNCIL})  # intentionally stochastic: a cached answer would defeat its purpose
BUSY_TIMEOUT_MS = 2000  # concurrent `ask` processes wait for each other's short writes instead of failing
CORRUPT_CODES = (11, 26)  # SQLITE_CORRUPT ("malformed"), SQLITE_NOTADB ("file is not a database")
KEY_VERSION = 1  # bump when the key's inputs change meaning, so old rows simply stop matching


def cache_path() -> Path:
    """`data_dir()/cache.sqlite3`."""
    return paths.data_dir() / "cache.sqlite3"


def cache_key(model: str, system: str | None, prompt: str, temperature: float | None, max_tokens: int | None) -> str:
    """sha256 hex of everything that changes the answer, as canonical JSON (so no field can bleed into another).

    An empty system prompt is the same request as none (neither sends a system message), and temperature 1
    is temperature 1.0.
    """
    canonical = json.dumps(
        {
            "v": KEY_VERSION,
            "model": model,
            "system": system or None,
            "prompt": prompt,
            "temperature": None if temperature is None else float(temperature),
            "max_tokens": max_tokens,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,  # pure ASCII: any str (even lone surrogates) encodes the same way everywhere
    )
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def cacheable(model: str) -> bool:
    """Whether answers for the requested tier may be looked up or stored at all (never `council`)."""
    return model not in UNCACHEABLE


def should_store(model: str, served_by: str | None, demoted: bool) -> bool:
    """Store only answers the proxy vouched for: a demoted one cached under the tier asked for would hide the
    demotion, and one whose served tier the proxy did not say (`served_by` None) would be cached as a guess."""
    return cacheable(model) and served_by is not None and not demoted


# Schema changes: append a function, never edit one that has shipped. Each runs once, in order, recorded by
# name in `_migrations`.


def m001_initial(db: sqlite3.Connection) -> None:
    db.execute(
        """CREATE TABLE answers (
            key TEXT PRIMARY KEY,
            model TEXT NOT NULL,
            served_by TEXT NOT NULL,
            answer TEXT NOT NULL,
            usage TEXT NOT NULL DEFAULT '{}',
            created REAL NOT NULL,
            expires_at REAL NOT NULL
        )"""
    )
    db.execute("CREATE INDEX answers_expires_at ON answers (expires_at)")  # pruning on every put stays cheap


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [m001_initial]


def migrate(db: sqlite3.Connection) -> list[str]:
    """Apply the migrations not yet recorded; returns their names. Safe when several processes open at once."""
    try:
        applied = {row[0] for row in db.execute("SELECT name FROM _migrations")}
    except sqlite3.OperationalError:  # a new file: no table yet
        applied = set()
    if all(m.__name__ in applied for m in MIGRATIONS):
        return []
    done = []
    db.execute("BEGIN IMMEDIATE")  # one process migrates; the others wait (busy_timeout), then see it done
    try:
        db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
        applied = {row[0] for row in db.execute("SELECT name FROM _migrations")}
        for migration in MIGRATIONS:
            if migration.__name__ not in applied:
                migration(db)
                db.execute(
                    "INSERT INTO _migrations (name, applied_at) VALUES (?, ?)", (migration.__name__, time.time())
                )
                done.append(migration.__name__)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return done


def _create_private(path: Path) -> None:
    """Make the file 0600 before SQLite opens it; SQLite then gives its -wal and -shm files the same mode."""
    paths.private_dir(path.parent)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and st.st_mode & 0o077 and st.st_uid == os.geteuid():
            os.fchmod(fd, 0o600)  # made wider by something else: the cache holds what the user asked
    finally:
        os.close(fd)


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating if needed) the cache database in WAL mode, migrated. Raises on a corrupt file."""
    _create_private(path)
    # timeout= is SQLite's busy_timeout; isolation_level=None: transactions only where this module says BEGIN.
    db = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
    try:
        if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            db.execute("PRAGMA journal_mode = WAL")  # readers never wait for a writer
        db.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: a crash can lose the last put, never corrupt
        migrate(db)
    except BaseException:
        db.close()
        raise
    return db


class CachedAnswer:
    """One cached answer, as `ask` prints it on a hit."""

    __slots__ = ("answer", "created", "model", "served_by", "usage")

    def __init__(self, answer: str, served_by: str, model: str, created: float, usage: dict[str, Any]) -> None:
        self.answer = answer
        self.served_by = served_by
        self.model = model
        self.created = created
        self.usage = usage

    def __repr__(self) -> str:
        return (
            f"CachedAnswer(served_by={self.served_by!r}, model={self.model!r}, created={self.created!r}, "
            f"answer=<{len(self.answer)} chars>)"
        )


class PromptCache:
    """The cache file. Never raises after construction: failures become misses, `put` returning False, and
    `last_error` (one line the CLI can print as its warning)."""

    def __init__(self, path: Path | None = None, ttl_s: float = TTL_S, recover: bool = False) -> None:
        """`recover`: a corrupt file is moved aside and a new one made (`notice` says so), as `ask` wants;
        otherwise it is only a miss."""
        self.path = cache_path() if path is None else Path(path)
        self.ttl_s = ttl_s
        self.last_error: str | None = None
        self.notice: str | None = None  # one line for the user: the corrupt file was moved aside
        self._db: sqlite3.Connection | None = None
        try:
            self._db = connect(self.path)
        except sqlite3.DatabaseError as exc:
            if not recover or exc.sqlite_errorcode not in CORRUPT_CODES or not self._move_aside():
                self._fail("cannot open", exc)
                return
            try:
                self._db = connect(self.path)
            except (sqlite3.Error, OSError) as again:
                self._fail("cannot open", again)
        except (sqlite3.Error, OSError) as exc:
            self._fail("cannot open", exc)

    def _move_aside(self) -> bool:
        """Rename a corrupt file (and its -wal, -shm) to `<name>.corrupt-<unix ts>`, once: otherwise every call
        would warn about it forever. Keeps it for a post-mortem; False when it cannot be moved."""
        aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
        try:
            os.replace(self.path, aside)
        except OSError:
            return False
        import contextlib

        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(OSError):
                os.replace(f"{self.path}{suffix}", f"{aside}{suffix}")
        self.notice = f"the prompt cache was corrupt; moved to {aside}, starting a new one"
        return True

    @property
    def usable(self) -> bool:
        return self._db is not None

    def _fail(self, doing: str, exc: BaseException) -> None:
        self.last_error = f"prompt cache {self.path}: {doing}: {exc}"

    def get(self, key: str, now: float | None = None) -> CachedAnswer | None:
        """The unexpired answer stored under `key`, or None (also when the cache is unreadable)."""
        if self._db is None:
            return None
        now = time.time() if now is None else now
        try:
            row = self._db.execute(
                "SELECT answer, served_by, model, created, usage FROM answers WHERE key = ? AND expires_at > ?",
                (key, now),
            ).fetchone()
        except sqlite3.Error as exc:
            self._fail("read failed", exc)
            return None
        if row is None:
            return None
        try:
            usage = json.loads(row[4])
        except ValueError:
            usage = {}
        return CachedAnswer(row[0], row[1], row[2], row[3], usage if isinstance(usage, dict) else {})

    def put(
        self,
        key: str,
        answer: str,
        served_by: str,
        model: str,
        usage: dict[str, Any] | None = None,
        now: float | None = None,
    ) -> bool:
        """Store an answer for `ttl_s`, dropping expired rows in the same transaction. False if it could not."""
        if self._db is None:
            return False
        now = time.time() if now is None else now
        try:
            usage_json = json.dumps(usage or {}, separators=(",", ":"))
        except (TypeError, ValueError):
            usage_json = "{}"
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                # With the index on expires_at this is a range scan over only the expired rows: cheap per put.
                self._db.execute("DELETE FROM answers WHERE expires_at <= ?", (now,))
                self._db.execute(
                    "INSERT OR REPLACE INTO answers (key, model, served_by, answer, usage, created, expires_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (key, model, served_by, answer, usage_json, now, now + self.ttl_s),
                )
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            self._fail("write failed", exc)
            return False
        return True

    def prune(self, now: float | None = None) -> int:
        """Delete expired rows now; returns how many (0 if the cache is unusable)."""
        if self._db is None:
            return 0
        now = time.time() if now is None else now
        try:
            return self._db.execute("DELETE FROM answers WHERE expires_at <= ?", (now,)).rowcount
        except sqlite3.Error as exc:
            self._fail("prune failed", exc)
            return 0

    def close(self) -> None:
        if self._db is not None:
            try:
                self._db.close()
            except sqlite3.Error as exc:
                self._fail("close failed", exc)
            self._db = None

    def __enter__(self) -> PromptCache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
