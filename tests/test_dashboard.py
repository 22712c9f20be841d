"""The LiteLLM admin UI with PostgreSQL, end to end: what a user sees after a demotion.

A cluster of our own on 127.0.0.1, the proxy with the project's config and a database, a master-key login to /ui,
a normal and a demoted request found through the spend-log API with the tier that served them, and a headless
Chromium screenshot of the Logs page and of the demoted request's details, kept as test artifacts
(test-artifacts/dashboard-logs*.png, or under $ASK_TEST_ARTIFACTS).
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness import postgres, prisma_engines
from harness.fake_ollama import FakeOllama
from harness.fake_openai import FakeOpenAI
from harness.postgres import Postgres
from harness.stack import KEY, ROOT, Proxy, free_port, stack_env

REQUIRED = os.environ.get("ASK_TEST_REQUIRE_DASHBOARD") == "1"  # CI (.ci/run): a missing part fails, not skips
MISSING = postgres.unavailable() or prisma_engines.node_missing()
pytestmark = [pytest.mark.dashboard, pytest.mark.skipif(MISSING is not None and not REQUIRED, reason=str(MISSING))]

NINE_B = "qwen3.5:9b"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def artifacts_dir() -> Path:
    path = Path(os.environ.get("ASK_TEST_ARTIFACTS") or ROOT / "test-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


def cannot_run(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"ASK_TEST_REQUIRE_DASHBOARD=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def db() -> Iterator[Postgres]:
    reason = MISSING or prisma_engines.unavailable()
    if reason:
        cannot_run(reason)
    server = Postgres(free_port()).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def dashboard(
    tmp_path_factory: pytest.TempPathFactory,
    db: Postgres,
    fake_ollama: FakeOllama,
    fake_llama_swap: FakeOpenAI,
    tiny_url: str,
) -> Iterator[Proxy]:
    """The proxy with the project's config and the database; spend logs flushed every ~1-6 s instead of ~10-15."""
    tmp = tmp_path_factory.mktemp("dashboard")
    env = stack_env(
        tmp,
        OLLAMA_API_BASE=fake_ollama.url,
        TINY_API_BASE=tiny_url,
        LLAMA_SWAP_API_BASE=fake_llama_swap.url,
        PROXY_BATCH_WRITE_AT="1",
        **prisma_engines.proxy_env(db, tmp),
    )
    proxy = Proxy(env=env, port=free_port(), log_path=tmp / "proxy.log").start(timeout=240)
    try:
        deadline = time.monotonic() + 60
        while (readiness := httpx.get(f"{proxy.url}/health/readiness", timeout=10).json()).get("db") != "connected":
            assert time.monotonic() < deadline, f"the proxy never connected to PostgreSQL: {readiness}"
            time.sleep(0.5)
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture(scope="module")
def two_requests(dashboard: Proxy, fake_ollama: FakeOllama) -> dict[str, str]:
    """One normal fast-9b request and one that fast-9b fails (HTTP 500) and fast-3b serves: their call ids."""
    fake_ollama.reset()
    normal = dashboard.chat("fast-9b", "dashboard test: a normal request", max_tokens=8)
    assert normal.status_code == 200, normal.text
    assert normal.headers["x-served-by"] == "fast-9b"
    fake_ollama.set_fault(NINE_B, "http_500", times=1)
    demoted = dashboard.chat("fast-9b", "dashboard test: a demoted request", max_tokens=8)
    assert demoted.status_code == 200, demoted.text
    assert demoted.headers["x-served-by"] == "fast-3b"
    return {"normal": normal.headers["x-litellm-call-id"], "demoted": demoted.headers["x-litellm-call-id"]}


def jwt_claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def spend_log(proxy: Proxy, call_id: str, timeout: float = 60.0) -> dict[str, Any]:
    """The request's row from the spend-log API: LiteLLM writes them in batches, so wait for it."""
    deadline = time.monotonic() + timeout
    while True:
        resp = proxy.client.get("/spend/logs", params={"request_id": call_id})
        assert resp.status_code == 200, resp.text
        if rows := resp.json():
            assert len(rows) == 1, rows
            return rows[0]
        assert time.monotonic() < deadline, f"no spend log for {call_id} after {timeout} s:\n{proxy.log_tail()}"
        time.sleep(0.5)


def test_master_key_logs_in_to_the_ui(dashboard: Proxy) -> None:
    """The UI's username/password form: `admin` and the master key give a session; a wrong key does not."""
    with httpx.Client(base_url=dashboard.url, timeout=30) as browser:
        wrong = browser.post("/login", data={"username": "admin", "password": "sk-not-the-key"})
        assert wrong.status_code in (401, 403), wrong.text
        assert "token" not in wrong.cookies
        login = browser.post("/login", data={"username": "admin", "password": KEY})
        assert login.status_code == 303, login.text
        assert login.headers["location"].endswith("/ui?login=success")
        session = jwt_claims(login.cookies["token"])  # what the UI reads from the cookie
        assert session["user_role"] == "proxy_admin"
        info = browser.get("/user/info", headers={"Authorization": f"Bearer {session['key']}"})
        assert info.status_code == 200, info.text  # the UI's session key, stored in PostgreSQL, works
        ui = browser.get("/ui/", follow_redirects=True)
        assert ui.status_code == 200 and "LiteLLM Dashboard" in ui.text


def test_spend_logs_name_the_served_tier_and_the_demotion(dashboard: Proxy, two_requests: dict[str, str]) -> None:
    """What the response headers said is kept in the database: request tags from plugins/demotion.py."""
    normal = spend_log(dashboard, two_requests["normal"])
    demoted = spend_log(dashboard, two_requests["demoted"])
    assert normal["status"] == demoted["status"] == "success"
    assert (normal["model_group"], demoted["model_group"]) == ("fast-9b", "fast-3b")  # LiteLLM's own record
    assert "served-by:fast-9b" in normal["request_tags"]
    assert "demoted" not in normal["request_tags"]
    assert not any(tag.startswith("demoted-from:") for tag in normal["request_tags"])
    assert {"demoted", "demoted-from:fast-9b", "served-by:fast-3b"} <= set(demoted["request_tags"])
    assert "served-by:fast-9b" not in demoted["request_tags"]


def test_logs_page_shows_both_requests_and_the_demotion(dashboard: Proxy, two_requests: dict[str, str]) -> None:
    """Log in through the form as a user would, open Logs, open the demoted request; keep screenshots of both."""
    browser_path = chromium()
    if browser_path is None:
        cannot_run("Chromium is not installed (apt-get install chromium): no Logs page screenshot")
    if importlib.util.find_spec("playwright") is None:
        cannot_run("playwright is not installed (pip install -e '.[dev]'): no Logs page screenshot")
    from playwright.sync_api import expect, sync_playwright

    normal_id = spend_log(dashboard, two_requests["normal"])["request_id"]  # in the database, so on the page
    demoted_id = spend_log(dashboard, two_requests["demoted"])["request_id"]
    logs_png, demoted_png = artifacts_dir() / "dashboard-logs.png", artifacts_dir() / "dashboard-logs-demoted.png"
    for shot in (logs_png, demoted_png):
        shot.unlink(missing_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=browser_path,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(f"{dashboard.url}/ui/")
            page.fill("input[name=username]", "admin")
            page.fill("input[name=password]", KEY)
            page.click("button[type=submit]")
            page.wait_for_url(lambda url: "/ui" in url and "login" not in url, timeout=60_000)
            page.get_by_role("link", name="Logs").click()
            page.wait_for_url("**/ui/logs/**", timeout=60_000)
            for request_id in (normal_id, demoted_id):
                expect(page.get_by_text(request_id).first).to_be_visible(timeout=60_000)
            page.screenshot(path=str(logs_png))
            page.get_by_text(demoted_id).first.click()  # the request's details, with its tags
            for tag in ("served-by:fast-3b", "demoted-from:fast-9b"):
                expect(page.get_by_text(tag).first).to_be_visible(timeout=30_000)
            page.screenshot(path=str(demoted_png))
        finally:
            browser.close()
    for shot in (logs_png, demoted_png):
        data = shot.read_bytes()
        assert data.startswith(PNG_MAGIC), shot
        assert len(data) > 20_000, f"{shot} is only {len(data)} bytes"
