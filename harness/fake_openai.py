"""A minimal OpenAI-compatible server (llama-swap / llama.cpp / a cloud API stand-in) that records bodies.

Only what the proxy calls: `POST /v1/chat/completions`, streaming (SSE) and not, and `GET /v1/models` (as
llama.cpp's server, `POST /v1/responses` is a 404); and,
standing in for Anthropic, `POST /v1/messages` in Anthropic's shape (its SSE event sequence when streaming).
`fail_with` makes every chat request answer that HTTP status with an OpenAI-shaped error. The API key each
request carried (`Authorization: Bearer` or `x-api-key`) is recorded in `keys`.

As llama-swap (its README's API list: "/running - list currently running models", "/unload - manually unload
running models"): the model last asked for stays running until `GET /unload`; `GET /running` lists it as
`{"running": [{"model": ..., "state": "ready"}]}`; `unloads` counts the unloads.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeOpenAI:
    def __init__(self, name: str = "fake-openai") -> None:
        self.name = name
        self.bodies: list[dict[str, Any]] = []
        self.keys: list[str] = []
        self.fail_with: int | None = None
        self.running: str | None = None  # llama-swap's one running model
        self.unloads = 0
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def reset(self) -> None:
        with self._lock:
            self.bodies.clear()
            self.keys.clear()
            self.fail_with = None
            self.running = None
            self.unloads = 0

    def record(self, body: dict[str, Any], key: str = "") -> None:
        with self._lock:
            self.bodies.append(body)
            self.keys.append(key)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeOpenAI

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, addr = super().get_request()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn, addr


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        fake = self.server.fake
        if self.path.rstrip("/") == "/running":
            running = [{"model": fake.running, "state": "ready"}] if fake.running else []
            self._json(200, {"running": running})
        elif self.path.rstrip("/") == "/unload":
            with fake._lock:
                fake.running, fake.unloads = None, fake.unloads + 1
            self._json(200, {"msg": "OK"})
        else:
            self._json(200, {"object": "list", "data": [{"id": fake.name, "object": "model"}]})

    def do_POST(self) -> None:
        fake = self.server.fake
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        key = self.headers.get("x-api-key") or (self.headers.get("Authorization") or "").removeprefix("Bearer ")
        if self.path.rstrip("/").endswith("/responses"):  # llama-server has no Responses API: its 404
            self._json(404, {"error": {"code": 404, "message": "File Not Found", "type": "not_found_error"}})
            return
        fake.record(body, key)
        fake.running = str(body.get("model") or fake.name)
        if fake.fail_with:
            self._json(fake.fail_with, {"error": {"message": f"{fake.name} is failing", "type": "server_error"}})
            return
        text = f"Hello from {fake.name}."
        if self.path.rstrip("/").endswith("/messages"):
            self._anthropic(body, text)
            return
        base = {"id": "chatcmpl-fake", "created": int(time.time()), "model": body.get("model", fake.name)}
        if not body.get("stream"):
            self._json(
                200,
                {
                    **base,
                    "object": "chat.completion",
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                    ],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9},
                },
            )
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        deltas = [{"role": "assistant", "content": w + " "} for w in text.split()] + [{}]
        for i, delta in enumerate(deltas):
            finish = "stop" if i == len(deltas) - 1 else None
            chunk = {
                **base,
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            self._chunk(f"data: {json.dumps(chunk)}\n\n".encode())
        self._chunk(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")

    def _anthropic(self, body: dict[str, Any], text: str) -> None:
        """Anthropic's Messages API: one message, or its SSE events (message_start ... message_stop)."""
        message = {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": body.get("model"),
            "stop_reason": None,
            "stop_sequence": None,
            "content": [],
            "usage": {"input_tokens": 5, "output_tokens": 4},
        }
        if not body.get("stream"):
            self._json(200, {**message, "content": [{"type": "text", "text": text}], "stop_reason": "end_turn"})
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        events: list[dict[str, Any]] = [
            {"type": "message_start", "message": {**message, "usage": {"input_tokens": 5, "output_tokens": 1}}},
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            *(
                {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w + " "}}
                for w in text.split()
            ),
            {"type": "content_block_stop", "index": 0},
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": 4},
            },
            {"type": "message_stop"},
        ]
        for event in events:
            self._chunk(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())
        self.wfile.write(b"0\r\n\r\n")

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
