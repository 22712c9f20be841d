"""What every bench script shares, so each keeps only its question: its options, a run that ends in one line
(not a traceback, nor servers left behind), the stack's start, the cache-bypass check, the markdown."""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import httpx
import yaml

from bench.readme_block import publish
from contract import tiers as tier_model
from harness.processes import Server
from harness.stack import CONFIG, Proxy, embedded_server, free_port, isolated_env
from harness.timing import Timed

RESULTS = Path(__file__).resolve().parent / "results"
Started = TypeVar("Started", Server, Proxy)


class CannotRun(RuntimeError):
    """The run cannot be done here; the message is one line saying what to do."""


class Options(argparse.ArgumentParser):
    """A script's options: --out and --write-readme for every one, counts whose default --quick lowers."""

    def __init__(self, doc: str, results: str, quick: str | None = None) -> None:
        super().__init__(description=doc.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
        self.quick_defaults: dict[str, tuple[float, float]] = {}
        self.add_argument("--out", type=Path, default=RESULTS / f"{results}.json", help="JSON results file")
        self.add_argument("--write-readme", action="store_true", help="rewrite its block in bench/README.md")
        if quick:
            self.add_argument("--quick", action="store_true", help=quick)

    def count(self, flag: str, full: float, quick: float, text: str, kind: type = int) -> None:
        """An option that defaults to `full`, or to `quick` with --quick."""
        action = self.add_argument(flag, type=kind, default=None, help=f"{text} (default {full:g}, quick {quick:g})")
        self.quick_defaults[action.dest] = (full, quick)

    def parse(self, argv: list[str]) -> argparse.Namespace:
        args = self.parse_args(argv)
        for dest, (full, quick) in self.quick_defaults.items():
            if getattr(args, dest) is None:
                setattr(args, dest, quick if getattr(args, "quick", False) else full)
        return args


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds every `with`: the servers this script started are stopped


@contextlib.contextmanager
def scratch(prog: str) -> Iterator[Path]:
    """A directory for the servers' logs and homes; a failure ends in one line on stderr.

    SIGTERM (and SIGINT, which a shell's background job ignores) unwind like Ctrl-C, so every `with` stops
    what it started. The directory is kept when a server failed: its log says why.
    """
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupt)
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-{prog}-"))
    keep = False
    try:
        yield tmp
    except CannotRun as exc:
        raise SystemExit(f"{prog}: {exc}") from None
    except (RuntimeError, httpx.HTTPError) as exc:  # a server did not start, or died
        keep = True
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SystemExit(f"{prog}: {first}; the servers' logs are in {tmp}") from None
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; every process it started is stopped", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


def serve(stop: contextlib.ExitStack, server: Started) -> Started:
    """Launch a server with its stop armed first (a Ctrl-C while it loads must not leave it running); `wait()`
    for it once the others are launched too."""
    stop.callback(server.stop)
    server.launch()
    return server


@contextlib.contextmanager
def embedded_stack(tmp: Path, *embedded_args: str, **backends: str) -> Iterator[tuple[Server, Proxy]]:
    """The real embedded model and the proxy with the project's yaml in front of it, loading at the same time,
    every backend not given at a closed port; both stopped whatever happens."""
    with contextlib.ExitStack() as stop:
        embedded = serve(stop, embedded_server(tmp / "embedded.log", free_port(), *embedded_args))
        env = isolated_env(tmp, TINY_API_BASE=f"{embedded.url}/v1", **backends)
        proxy = serve(stop, Proxy(env=env, port=free_port(), log_path=tmp / "proxy.log"))
        yield embedded.wait(60), proxy.wait()


def project_tiers() -> tier_model.Tiers:
    """The tiers litellm-config.yaml declares, as the proxy reads them."""
    return tier_model.from_config(yaml.safe_load(CONFIG.read_text()))


def cache_check(send: Callable[[str, bool], Timed], work: Callable[[], float], pause: float = 0.0) -> dict[bool, Any]:
    """A prompt twice without the no-cache body, then another twice with it: (response, backend work) each.

    Without it the second must be a cache hit (no backend work), with it both must reach the backend: a cache
    hit would time the cache, not the path under test. `pause`: a streamed answer is stored after it ends.
    """
    out: dict[bool, list[tuple[Timed, float]]] = {}
    for no_cache in (False, True):
        prompt, out[no_cache] = f"cache-check {uuid.uuid4().hex}: say hello.", []
        for _ in range(2):
            time.sleep(pause)
            before = work()
            response = send(prompt, no_cache)
            out[no_cache].append((response, work() - before))
    return out


def num(value: float | None, fmt: str = ".2f", signed: bool = False, unit: str = "") -> str:
    """A figure in a table: "-" when there is none."""
    return "-" if value is None else format(value, ("+" if signed else "") + fmt) + unit


def table(head: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    """A markdown table's lines."""
    return [f"| {' | '.join(head)} |", "|" + "---|" * len(head), *(f"| {' | '.join(map(str, r))} |" for r in rows)]


def goals_table(goals: list[dict[str, Any]]) -> list[str]:
    """The goals a run is held to: what was measured ("-": nothing) and whether it is met."""
    rows = []
    for g in goals:
        value = g["value"] if isinstance(g["value"], str) else num(g["value"], ".3f")
        rows.append([g["goal"], value, "-" if value == "-" else "yes" if g["met"] else "**no**"])
    return table(("goal", "measured", "met"), rows)


def report(name: str, args: argparse.Namespace, res: dict[str, Any], block: str, text: str | None = None) -> None:
    """Print the run's block; write its JSON to --out and, with --write-readme, the block into bench/README.md."""
    print(block)
    publish(name, args.out, text or json.dumps(res, indent=2) + "\n", block, args.write_readme)
