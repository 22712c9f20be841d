"""The same stack against a real Ollama, when one answers (e.g. on the user's Mac); skipped elsewhere.

Point it elsewhere with OLLAMA_API_BASE. Each Ollama tier whose tag is pulled must be served by itself,
and Ollama's own /api/ps must show the keep_alive the plugin sent.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime

import pytest

from ask_cli import stack_config
from contract import tiers as tier_model
from harness.stack import CONFIG, Proxy, closed_port_url, running_proxy

OLLAMA = os.environ.get("OLLAMA_API_BASE", "http://127.0.0.1:11434").rstrip("/")
KEEP = {"15m": 900, "5m": 300, "2m": 120, "30s": 30}


def _get(path: str) -> dict | None:
    try:
        with urllib.request.urlopen(f"{OLLAMA}{path}", timeout=2) as resp:
            return json.load(resp)
    except (urllib.error.URLError, OSError, ValueError):
        return None


pytestmark = pytest.mark.skipif(_get("/api/version") is None, reason=f"no Ollama answers at {OLLAMA}")

TIERS = [t for t in tier_model.from_config(stack_config.load(CONFIG)) if t.is_ollama]


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    with running_proxy(
        tmp_path_factory.mktemp("real-ollama"),
        OLLAMA_API_BASE=OLLAMA,
        TINY_API_BASE=closed_port_url("/v1"),
        LLAMA_SWAP_API_BASE=closed_port_url("/v1"),
    ) as proxy:
        yield proxy


@pytest.mark.parametrize("tier", TIERS, ids=[t.name for t in TIERS])
def test_pulled_tier_is_served_by_itself_and_kept_warm_as_configured(real: Proxy, tier: dict) -> None:
    tag = tier.primary.model
    pulled = {m["name"] for m in (_get("/api/tags") or {}).get("models", [])}
    if tag not in pulled and f"{tag}:latest" not in pulled:
        pytest.skip(f"{tag} is not pulled (ollama pull {tag})")
    resp = real.chat(tier.name, "Reply with one word: ok", max_tokens=16)
    assert resp.status_code == 200 and resp.headers["x-served-by"] == tier.name
    loaded = {m["name"]: m["expires_at"] for m in (_get("/api/ps") or {}).get("models", [])}
    left = (datetime.fromisoformat(loaded[tag]) - datetime.now().astimezone()).total_seconds()
    assert 0 < left <= KEEP[tier.keep_alive] + 5
