"""What LiteLLM logs for each answer names the tier that served it and, for a demotion, the tier asked for.

These request tags are what the UI's Logs page shows and filters on when a database is configured
(tests/test_dashboard.py checks them there); here a recording callback reads the payload every logger receives.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ask_cli import stack_config
from harness.fake_ollama import FakeOllama
from harness.stack import CONFIG, Proxy, read_jsonl, running_proxy

NO_CACHE = {"no-cache": True, "no-store": True}


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory, fake_ollama: FakeOllama, tiny_url: str) -> Iterator[Proxy]:
    tmp = tmp_path_factory.mktemp("log-tags")
    config = stack_config.load(CONFIG)
    config["litellm_settings"]["callbacks"].append("harness.log_recorder.handler")
    path = stack_config.write_private(config, tmp / "recorded.yaml")
    with running_proxy(
        tmp,
        config=path,
        OLLAMA_API_BASE=fake_ollama.url,
        TINY_API_BASE=tiny_url,
        LOG_RECORD_PATH=str(tmp / "logged.jsonl"),
    ) as proxy:
        yield proxy


def logged(proxy: Proxy, call_id: str | None) -> dict:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for line in read_jsonl(Path(proxy.env["LOG_RECORD_PATH"])):
            if line["call_id"] == call_id:
                return line
        time.sleep(0.05)
    raise AssertionError(f"nothing logged for {call_id}")


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_every_answer_is_tagged_with_its_tier_and_a_demotion_with_both(
    recorded: Proxy, fake_ollama: FakeOllama, stream: bool
) -> None:
    fake_ollama.reset()
    send = recorded.stream if stream else recorded.chat
    normal = send("fast-9b", f"tag me {stream}", cache=NO_CACHE)
    tags = logged(recorded, normal.headers.get("x-litellm-call-id"))["request_tags"]
    assert "served-by:fast-9b" in tags
    assert "demoted" not in tags and not any(t.startswith("demoted-from:") for t in tags)

    fake_ollama.set_fault("qwen3.5:9b", "http_500")
    demoted = send("fast-9b", f"demote me {stream}", cache=NO_CACHE)
    assert demoted.headers["x-served-by"] == "fast-3b"
    tags = logged(recorded, demoted.headers.get("x-litellm-call-id"))["request_tags"]
    assert {"served-by:fast-3b", "demoted", "demoted-from:fast-9b"} <= set(tags)
    assert "served-by:fast-9b" not in tags
    fake_ollama.reset()
