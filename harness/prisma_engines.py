"""LiteLLM's database layer for tests: a generated Prisma client, the schema in PostgreSQL, the proxy's environment.

LiteLLM talks to PostgreSQL through prisma-client-py, which needs Prisma's native engines. Where they are present
(`prisma py fetch`), they are used and the proxy migrates the database itself. Where they cannot be downloaded
(these machines), the stand-in kit `../shared/tools/prisma-offline` (or `$PRISMA_OFFLINE_KIT`) is used piece by
piece: its WebAssembly query engine, its schema-engine placeholder and its psql migration script. Slow, stable steps
(npm install, the Prisma CLI, the generated client) are cached in ~/.cache/local-llm-stack keyed by their inputs,
so a second run installs nothing.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from harness.postgres import Postgres, bindir
from harness.stack import ROOT

KIT_ENV = "PRISMA_OFFLINE_KIT"
BIN = Path(sys.executable).parent


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "local-llm-stack"


def native_query_engine() -> Path | None:
    """Prisma's own query engine for this platform, if prisma-client-py has one (`prisma py fetch` puts it there)."""
    from prisma import config
    from prisma.engine.utils import query_engine_name

    engine = Path(config.binary_cache_dir) / query_engine_name()
    return engine if engine.exists() else None


def kit_location() -> Path:
    """Where the prisma-offline kit should be: $PRISMA_OFFLINE_KIT, else ../shared/tools/prisma-offline."""
    configured = os.environ.get(KIT_ENV)
    return Path(configured) if configured else ROOT.parent / "shared" / "tools" / "prisma-offline"


def kit() -> Path | None:
    """The prisma-offline kit, if it is where it should be and complete."""
    candidate = kit_location()
    needed = ("bin/query-engine", "bin/schema-engine", "qeshim/package.json", "apply_migrations.sh")
    return candidate if all((candidate / name).exists() for name in needed) else None


def node_missing() -> str | None:
    """Why the Prisma CLI cannot run here (it is a Node.js program, installed with npm), or None."""
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        return f"{' and '.join(missing)} not installed (the Prisma CLI runs on Node.js; apt-get install nodejs npm)"
    return None


def unavailable() -> str | None:
    """Why the proxy cannot get a database here, or None."""
    if reason := node_missing():
        return reason
    if native_query_engine() is None and kit() is None:
        return (
            f"Prisma's engines are absent (`prisma py fetch` downloads them) and the prisma-offline kit is not at "
            f"{kit_location()} (set {KIT_ENV})"
        )
    return None


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "big") + part)
    return h.hexdigest()[:16]


def _run(cmd: list[str], log: Path, timeout: float, cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
    """Run one setup step with its output appended to `log`, which a failure quotes."""
    with log.open("ab") as out:
        out.write(f"$ {' '.join(cmd)}\n".encode())
        out.flush()
        result = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=env, timeout=timeout)
    if result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(f"{cmd[0]} exited {result.returncode}:\n{tail}")


def _publish(build: Path, final: Path) -> Path:
    """Move a finished build into place atomically: an interrupted run never leaves a half cache behind."""
    try:
        build.rename(final)
    except OSError:  # another run published it first
        shutil.rmtree(build, ignore_errors=True)
    return final


def installed_kit(source: Path, log: Path) -> Path:
    """A writable copy of the kit's bin/ and qeshim/ with its npm dependencies, cached by the kit's contents."""
    files = sorted(
        p for d in ("bin", "qeshim") for p in (source / d).rglob("*") if p.is_file() and "node_modules" not in p.parts
    )
    key = _digest(*(bytes(str(p.relative_to(source)), "utf-8") + p.read_bytes() for p in files))
    final = cache_root() / "prisma-offline" / key
    if (final / "qeshim" / "node_modules").is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f"{key}.", dir=final.parent))
    for d in ("bin", "qeshim"):
        shutil.copytree(source / d, build / d, ignore=shutil.ignore_patterns("node_modules"))
    for p in build.rglob("*"):  # the kit may be read-only; our copy must not be
        p.chmod(p.stat().st_mode | 0o200)
    _run(
        ["npm", "install", "--no-audit", "--no-fund", "--omit=dev", "--loglevel=error"], log, 300, cwd=build / "qeshim"
    )
    return _publish(build, final)


def generated_client(engine_env: dict[str, str], log: Path) -> Path:
    """`prisma generate` for LiteLLM's schema into a directory of our own (put on the proxy's PYTHONPATH).

    Not into site-packages, as LiteLLM's images do: the test leaves the venv as it found it. Generated in place
    (the client records its schema's path) and marked complete last, so an interrupted run is redone.
    """
    schema = _litellm_dir() / "proxy" / "schema.prisma"
    engine = engine_env.get("PRISMA_QUERY_ENGINE_BINARY", "native")  # the client records the engine's path too
    final = cache_root() / "prisma-client" / _digest(schema.read_bytes(), prisma_version().encode(), engine.encode())
    if (final / "complete").exists():
        return final
    shutil.rmtree(final, ignore_errors=True)
    final.mkdir(parents=True)
    marker = 'provider = "prisma-client-py"'
    text = schema.read_text()
    assert marker in text, f"no prisma-client-py generator in {schema}"
    (final / "schema.prisma").write_text(text.replace(marker, f'{marker}\n  output = "{final / "prisma"}"', 1))
    env = {**os.environ, **engine_env, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    _run([str(BIN / "prisma"), "generate", "--schema", str(final / "schema.prisma")], log, 600, cwd=final, env=env)
    (final / "complete").touch()
    return final


def prisma_version() -> str:
    import prisma

    return prisma.__version__


def _litellm_dir() -> Path:
    """LiteLLM's package directory, found without importing it (the import costs seconds)."""
    import importlib.util

    spec = importlib.util.find_spec("litellm")
    assert spec and spec.origin, "litellm is not installed"
    return Path(spec.origin).parent


def proxy_env(db: Postgres, work: Path) -> dict[str, str]:
    """Everything the proxy needs to use `db`: a generated client, the schema applied, engines and DATABASE_URL.

    With Prisma's own engines, LiteLLM applies its migrations at startup. With the kit, its apply_migrations.sh
    applies them with psql and the proxy is told not to (its migration runner needs the native schema engine).
    """
    log = work / "prisma-setup.log"
    env = {"DATABASE_URL": db.url}
    source = kit() if native_query_engine() is None else None
    if source is not None:
        installed = installed_kit(source, log)
        env.update(
            PRISMA_QUERY_ENGINE_BINARY=str(installed / "bin" / "query-engine"),
            PRISMA_SCHEMA_ENGINE_BINARY=str(installed / "bin" / "schema-engine"),
            PRISMA_BINARY_CACHE_DIR=str(cache_root() / "prisma-cli" / prisma_version()),
            DISABLE_SCHEMA_UPDATE="true",
        )
    client = generated_client(env, log)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(client), os.environ.get("PYTHONPATH")]))
    env["PATH"] = os.pathsep.join(filter(None, [str(BIN), str(bindir()), os.environ.get("PATH")]))
    if source is not None:
        _run(
            [str(source / "apply_migrations.sh")],
            log,
            600,
            env={
                **os.environ,
                "PATH": env["PATH"],
                "PGURL": db.url,
                "PY": sys.executable,
                "MIGLOG": str(work / "migrations.log"),
            },
        )
    return env
