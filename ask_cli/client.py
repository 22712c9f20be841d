"""The proxy's chat endpoint: one HTTP/1.1 POST over a socket, its answer streamed back.

`ask` must not pay for an HTTP library: `http.client` alone costs ~20 ms of import (email.parser, ssl), as
much again as the rest of `ask` (bench/README.md, `cli.py`); one POST to the local proxy needs a status
line, headers and a chunked body. `ssl` is imported only for an https proxy.

Which tier answered is what the response headers say (`contract.Provenance.of_headers`), never guessed: when
the proxy does not say, the reply's served tier is None.
"""

from __future__ import annotations

import contextlib
import json
import os

from contract import COUNCIL_FIELD, DEFAULT_PROXY_URL, PROXY_URL_ENV, Provenance, paths

TYPE_CHECKING = False  # see ask_cli/query.py
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any


def proxy_url() -> str:
    """`ASK_PROXY_URL`, else where a running `ask serve` listens (`ask serve --port 4100`), else :4000."""
    return (os.environ.get(PROXY_URL_ENV) or listening_url() or DEFAULT_PROXY_URL).rstrip("/")


def listening_url() -> str | None:
    """The URL a running `ask serve` recorded; None when none runs (no file, or its process is gone)."""
    try:
        with open(paths.serve_state(), encoding="utf-8") as f:
            state = json.load(f)
        os.kill(int(state["pid"]), 0)
        return str(state["url"])
    except (OSError, ValueError, KeyError, TypeError):  # no file, a torn one, or its pid gone (or another user's)
        return None


def record_listening(url: str) -> None:
    """Say where this process's proxy listens (0600, replaced whole), for `proxy_url` in other shells."""
    path = paths.serve_state()
    paths.private_dir(path.parent)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump({"url": url, "pid": os.getpid()}, f)
    os.replace(temporary, path)


def forget_listening() -> None:
    """Remove the record if it is this process's (a second `ask serve` that failed leaves the first's)."""
    path = paths.serve_state()
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        if int(json.loads(path.read_text(encoding="utf-8"))["pid"]) == os.getpid():
            path.unlink()


TIMEOUT_ENV = "ASK_TIMEOUT_S"
# How long `ask` waits for the proxy's next byte, the first included. A first token can honestly be slow: a cold
# coder-30b load from disk plus the RAM budget's wait (up to 20 s) for another tier to finish fits in 120 s; a
# proxy that sends nothing for that long is hung (stopped, deadlocked), not busy.
DEFAULT_TIMEOUT_S = 120.0


def timeout_s() -> float:
    """`ASK_TIMEOUT_S` (seconds, > 0), else `DEFAULT_TIMEOUT_S`; ValueError, one line, for anything else."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise ValueError(f"{TIMEOUT_ENV} must be a number of seconds above 0 (got {raw!r})")
    return value


class ProxyUnreachable(Exception):
    """Nothing answers at the proxy's address."""


class ProxySilent(ProxyUnreachable):
    """The proxy took the request, then sent nothing for `seconds` (stopped or hung)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"the proxy sent nothing for {seconds:g} s")
        self.seconds = seconds


class ProxyError(Exception):
    """The proxy answered with an error; `message` is its own words, `headers` the response's (names lower-cased)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.headers = headers or {}


class Truncated(ProxyError):
    """The stream ended before its end marker (`data: [DONE]`): what arrived is part of an answer, not one."""

    def __init__(self) -> None:
        super().__init__(
            502, "the answer was cut off: the stream ended before its end (the proxy or its backend stopped mid-answer)"
        )


class Reply:
    """A streamed answer as it arrives: `provenance` from the headers, known before the first token; `council` the
    members' answers, when the council answered. Not a dataclass: see ask_cli/query.py."""

    __slots__ = ("council", "provenance", "text", "usage")

    def __init__(self, provenance: Provenance) -> None:
        self.provenance = provenance
        self.text = ""
        self.usage: dict[str, Any] = {}
        self.council: dict[str, Any] | None = None


def _error_message(raw: bytes) -> str:
    try:
        err = json.loads(raw).get("error", {})
        return str(err.get("message") if isinstance(err, dict) else err)
    except (ValueError, AttributeError):
        return raw.decode("utf-8", "replace").strip()[:500]


def _post(base: str, key: str, body: dict[str, Any], timeout: float) -> tuple[dict[str, str], Iterator[bytes]]:
    """POST `body` to the chat endpoint: the response's headers (names lower-cased) and its body's lines as they
    arrive. ProxyUnreachable when nothing answers, ProxyError for an HTTP error status."""
    import socket
    from urllib.parse import urlsplit

    url = urlsplit(base)
    host, https = url.hostname or "127.0.0.1", url.scheme == "https"
    data = json.dumps(body).encode("utf-8")
    head = (
        f"POST {url.path}/v1/chat/completions HTTP/1.1\r\nHost: {url.netloc}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    )
    try:
        # An ASCII name as bytes: for a str, getaddrinfo imports the idna codec first (~2 ms of every call).
        address = host.encode("ascii") if host.isascii() else host
        sock = socket.create_connection((address, url.port or (443 if https else 80)), timeout)
        if https:
            import ssl

            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(head.encode("latin-1") + data)
        stream = sock.makefile("rb")
        sock.close()  # the file keeps the connection open until it is closed
        status = stream.readline().split(None, 2)
        headers = {}
        while (line := stream.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        code = int(status[1])
    except TimeoutError:
        raise ProxySilent(timeout) from None
    except (OSError, ValueError, IndexError) as exc:
        raise ProxyUnreachable(str(exc) or type(exc).__name__) from None
    lines = _lines(stream, headers, timeout)
    if code >= 400:
        raise ProxyError(code, _error_message(b"\n".join(lines)), headers)
    return headers, lines


def _lines(stream: Any, headers: dict[str, str], timeout: float) -> Iterator[bytes]:
    """The body's lines as they arrive (chunked, Content-Length or until close); the connection closed after.
    ProxySilent when no byte comes for `timeout` seconds (the socket's timeout: each read waits afresh)."""
    with stream:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            chunks = _chunks(stream)
        elif "content-length" in headers:
            chunks = iter([stream.read(int(headers["content-length"]))])
        else:
            chunks = iter(lambda: stream.read1(65536), b"")
        rest = b""
        try:
            for chunk in chunks:
                *done, rest = (rest + chunk).split(b"\n")
                yield from done
        except TimeoutError:
            raise ProxySilent(timeout) from None
        except OSError as exc:
            raise ProxyUnreachable(f"the connection broke in the middle of the answer ({exc})") from None
        if rest:
            yield rest


def _chunks(stream: Any) -> Iterator[bytes]:
    """A chunked body's chunks: a hex size line, that many bytes, CRLF; size 0 ends it. A connection that closes
    before that is said as such, not as a parse error."""
    while True:
        try:
            size = int(stream.readline().split(b";")[0], 16)
        except TimeoutError:
            raise
        except (OSError, ValueError):
            raise ProxyUnreachable("the connection closed in the middle of the answer") from None
        if not size:
            return
        yield stream.read(size)
        stream.readline()


def stream_chat(
    base: str, key: str, body: dict[str, Any], timeout: float = DEFAULT_TIMEOUT_S
) -> tuple[Reply, Iterator[str]]:
    """A streaming completion: the reply's provenance is known from the headers before the first token. The
    pieces raise `Truncated` when the stream stops before its end marker, ProxyError on an error event,
    ProxySilent when the proxy sends nothing for `timeout` seconds (from the request on, reset by every read)."""
    headers, lines = _post(base, key, {**body, "stream": True}, timeout)
    reply = Reply(Provenance.of_headers(str(body.get("model", "")), headers))

    def pieces() -> Iterator[str]:
        with contextlib.closing(lines):
            for raw in lines:
                line = raw.strip()
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    return
                event = json.loads(data)
                if "error" in event:
                    raise ProxyError(500, _error_message(data))
                if event.get("usage"):
                    reply.usage = event["usage"]
                for choice in event.get("choices") or []:
                    delta = choice.get("delta") or {}
                    # plugins/council.py sends the members' answers under the tier's name, in the first chunk
                    council = (delta.get("provider_specific_fields") or {}).get(COUNCIL_FIELD)
                    if isinstance(council, dict):
                        reply.council = council
                    piece = delta.get("content")
                    if piece:
                        reply.text += piece
                        yield piece
        raise Truncated()  # the connection ended without `[DONE]`

    return reply, pieces()
