"""A real PostgreSQL for tests: a cluster of our own in a temp dir, on 127.0.0.1 only, started and stopped by the test.

initdb refuses to run as root, so as root the cluster belongs to the `postgres` user that Debian's package creates.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

USER = "litellm"
PASSWORD = "litellm"  # loopback only, a throwaway cluster
DATABASE = "litellm"


def bindir() -> Path | None:
    """Where initdb, pg_ctl and psql are: Debian keeps them off PATH, in /usr/lib/postgresql/<version>/bin."""
    for candidate in sorted((Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin")), key=_version, reverse=True):
        if all((candidate / tool).exists() for tool in ("initdb", "pg_ctl", "psql")):
            return candidate
    initdb = shutil.which("initdb")
    found = Path(initdb).resolve().parent if initdb else None
    return found if found and all((found / tool).exists() for tool in ("pg_ctl", "psql")) else None


def _version(pg_bin: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in pg_bin.parent.name.split(".") if part.isdigit())


def unavailable() -> str | None:
    """Why a cluster cannot be run here, or None."""
    if bindir() is None:
        return "PostgreSQL is not installed (no initdb, pg_ctl and psql; apt-get install postgresql)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no `postgres` user to own the cluster (initdb refuses root)"
    return None


class Postgres:
    """Our own cluster: data and socket in a temp dir, TCP on 127.0.0.1:port, fsync off (a test's data)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.dir: Path | None = None

    @property
    def url(self) -> str:
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{DATABASE}"

    @property
    def log_path(self) -> Path:
        assert self.dir is not None
        return self.dir / "postgres.log"

    def _as_owner(self, *cmd: str) -> list[str]:
        if os.geteuid() != 0:
            return list(cmd)
        if shutil.which("runuser"):
            return ["runuser", "-u", "postgres", "--", *cmd]
        return ["su", "postgres", "-s", "/bin/sh", "-c", subprocess.list2cmdline(cmd)]

    def _pg(self, tool: str, *args: str, timeout: float = 60) -> None:
        pg_bin = bindir()
        assert pg_bin is not None, unavailable()
        result = subprocess.run(
            self._as_owner(str(pg_bin / tool), *args), capture_output=True, text=True, timeout=timeout
        )
        if result.returncode != 0:
            raise RuntimeError(f"{tool} failed ({result.returncode}): {result.stderr or result.stdout}")

    def start(self) -> Postgres:
        self.dir = Path(tempfile.mkdtemp(prefix="llm-stack-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        data = str(self.dir / "data")
        self._pg("initdb", "-D", data, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8")
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.dir} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._pg("pg_ctl", "-D", data, "-l", str(self.log_path), "-o", options, "-w", "-t", "60", "start")
        self.psql(
            f"CREATE USER {USER} WITH PASSWORD '{PASSWORD}'",
            f"CREATE DATABASE {DATABASE} OWNER {USER}",
            user="postgres",
            database="postgres",
        )
        return self

    def stop(self) -> None:
        if self.dir is None:
            return
        if (self.dir / "data" / "postmaster.pid").exists():
            self._pg("pg_ctl", "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    def psql(self, *statements: str, user: str = USER, database: str = DATABASE) -> str:
        """Run SQL over TCP on 127.0.0.1 (the way the proxy connects) and return psql's unaligned output."""
        pg_bin = bindir()
        assert pg_bin is not None, unavailable()
        cmd = [
            str(pg_bin / "psql"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            user,
            "-d",
            database,
            "-v",
            "ON_ERROR_STOP=1",
            "-qtA",
        ]
        for statement in statements:
            cmd += ["-c", statement]
        env = {**os.environ, "PGPASSWORD": PASSWORD}
        return subprocess.run(cmd, capture_output=True, text=True, check=True, env=env, timeout=60).stdout
