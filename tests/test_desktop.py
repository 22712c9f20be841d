"""A demotion shown on the desktop, where no client reads a response header (plugins/desktop.py).

The real proxy runs with a recording stand-in for `notify-send` first on its PATH and a display set, as
`ask serve` in a Linux desktop session; the macOS commands are checked as argv, as they cannot run here.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import time
from pathlib import Path

import pytest

from harness.fake_ollama import FakeOllama
from harness.stack import running_proxy
from plugins import desktop

NINE_B, THREE_B = "qwen3.5:9b", "llama3.2:3b"


def stand_in(bin_dir: Path, name: str, body: str) -> Path:
    bin_dir.mkdir(parents=True, exist_ok=True)
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def notices(log: Path, count: int, deadline_s: float = 10) -> list[str]:
    """The notices recorded, once there are `count` of them (they are shown in the background)."""
    deadline = time.monotonic() + deadline_s
    while True:
        lines = log.read_text().splitlines() if log.exists() else []
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def test_one_notice_per_demoted_pair_naming_the_tiers_and_not_the_prompt(
    tmp_path: Path, fake_ollama: FakeOllama, tiny_url: str
) -> None:
    shown = tmp_path / "notices.txt"
    bin_dir = tmp_path / "bin"
    stand_in(bin_dir, "notify-send", f'printf "%s\\n" "$*" >> "{shown}"')
    with running_proxy(
        tmp_path,
        OLLAMA_API_BASE=fake_ollama.url,
        TINY_API_BASE=tiny_url,
        PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        DISPLAY=":99",
        DEMOTION_NOTIFY="",  # unset: on, because this is a desktop session
    ) as proxy:
        fake_ollama.reset()
        fake_ollama.set_fault(NINE_B, "http_500")
        for n in range(3):
            resp = proxy.chat("fast-9b", f"a private prompt {n}")
            assert resp.status_code == 200 and resp.headers["x-served-by"] == "fast-3b"
        first = notices(shown, 1)
        fake_ollama.set_fault(THREE_B, "http_500")
        assert proxy.chat("fast-9b", "a private prompt 3").headers["x-served-by"] == "fast-1b"
        both = notices(shown, 2)
        fake_ollama.reset()
    assert len(first) == 1 and len(both) == 2, both  # the burst of three fast-9b → fast-3b is one notice
    assert both[0].startswith("--app-name=ask Local LLM stack [degraded: fast-9b → fast-3b] fast-9b: "), both[0]
    assert "[degraded: fast-9b → fast-1b]" in both[1]
    assert not any("private prompt" in line for line in both)


def test_macos_uses_terminal_notifier_when_installed_else_osascript_with_the_text_quoted() -> None:
    text = 'say "hi" \\ now'
    which_all = {"terminal-notifier": "/opt/homebrew/bin/terminal-notifier", "osascript": "/usr/bin/osascript"}
    assert desktop.notifier_command(text, "darwin", which_all.get) == [
        "terminal-notifier", "-title", desktop.TITLE, "-message", text, "-group", "ask-demotion"
    ]  # fmt: skip
    only_osascript = {"osascript": "/usr/bin/osascript"}.get
    assert desktop.notifier_command(text, "darwin", only_osascript) == [
        "osascript", "-e", f'display notification "say \\"hi\\" \\\\ now" with title "{desktop.TITLE}"'
    ]  # fmt: skip
    assert desktop.notifier_command(text, "darwin", {}.get) is None
    assert desktop.notifier_command(text, "linux", {}.get) is None


@pytest.mark.parametrize(
    ("environ", "platform", "setting", "enabled"),
    [
        ({"DISPLAY": ":0"}, "linux", "", True),
        ({"WAYLAND_DISPLAY": "wayland-0"}, "linux", "", True),
        ({}, "linux", "", False),  # a server, or cron: nobody sees a screen
        ({}, "darwin", "", True),
        ({"SSH_CONNECTION": "10.0.0.2 5 10.0.0.1 22"}, "darwin", "", False),
        ({"DISPLAY": ":0"}, "linux", "off", False),
        ({}, "linux", "on", True),
    ],
)
def test_on_in_a_desktop_session_and_one_variable_turns_it_off(
    environ: dict[str, str], platform: str, setting: str, enabled: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(desktop.sys, "platform", platform)
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "SSH_CONNECTION", desktop.NOTIFY_ENV):
        monkeypatch.delenv(name, raising=False)
    for name, value in {**environ, desktop.NOTIFY_ENV: setting}.items():
        monkeypatch.setenv(name, value)
    assert desktop.DesktopNotice.from_env().enabled is enabled


def test_a_hung_notifier_never_holds_a_request_and_is_said_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    stand_in(tmp_path, "notify-send", "sleep 60")
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(desktop.sys, "platform", "linux")
    monkeypatch.setattr(desktop, "RUN_TIMEOUT_S", 0.5)
    notice = desktop.DesktopNotice(enabled=True, min_interval_s=0)

    async def demote_twice() -> float:
        started = time.monotonic()
        notice.fire("fast-9b", "fast-3b", "fast-9b: 500")
        notice.fire("fast-9b", "fast-1b", "fast-9b: 500")
        returned = time.monotonic() - started
        while notice._tasks:
            await asyncio.sleep(0.05)
        return returned

    caplog.set_level(logging.WARNING)
    returned_after = asyncio.run(demote_twice())
    assert returned_after < desktop.RUN_TIMEOUT_S  # fire() only schedules: the request goes on at once
    said = [r.getMessage() for r in caplog.records if "desktop notification failed" in r.getMessage()]
    assert said == ["desktop notification failed: notify-send did not finish within 0.5 s (set DEMOTION_NOTIFY=off "
                    "to stop trying)"]  # fmt: skip
