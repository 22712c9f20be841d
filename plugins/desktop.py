"""A desktop notification for a demotion: seen where no client shows a response header (llm, aider, OpenCode and
Claude Code never do).

macOS: `terminal-notifier` when installed, else `osascript` (display notification); Linux: `notify-send`. On by
default in a desktop session (macOS not over SSH; Linux with a display), `DEMOTION_NOTIFY=off` turns it off,
`on` forces it. At most one per (asked → served) pair per `DEMOTION_NOTIFY_MIN_INTERVAL_S` (300 s), as the
webhook. Run in the background with a deadline: a missing or hung notifier never blocks or fails a request, and
is said once in the log. The text names tiers and reasons only, never the prompt.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import time
from collections.abc import Callable

from contract import degraded_marker
from plugins.log import logger

log = logger("demotion")

NOTIFY_ENV = "DEMOTION_NOTIFY"
NOTIFY_INTERVAL_ENV = "DEMOTION_NOTIFY_MIN_INTERVAL_S"
TITLE = "Local LLM stack"
RUN_TIMEOUT_S = 5.0


def notifier_command(
    text: str, platform: str | None = None, which: Callable[[str], str | None] = shutil.which
) -> list[str] | None:
    """The argv that shows `text` as a notification on this platform; None when no notifier is installed."""
    platform = platform or sys.platform
    if platform == "darwin":
        if which("terminal-notifier"):
            return ["terminal-notifier", "-title", TITLE, "-message", text, "-group", "ask-demotion"]
        if which("osascript"):
            quoted = text.replace("\\", "\\\\").replace('"', '\\"')
            return ["osascript", "-e", f'display notification "{quoted}" with title "{TITLE}"']
        return None
    if which("notify-send"):
        return ["notify-send", "--app-name=ask", TITLE, text]
    return None


def desktop_session() -> bool:
    """Whether a person sees this machine's screen: a Mac not reached over SSH, a Linux box with a display."""
    environ = os.environ
    if sys.platform == "darwin":
        return not environ.get("SSH_CONNECTION")
    return bool(environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY"))


class DesktopNotice:
    """Shows a demotion on the desktop, once per (asked, served) pair per interval, in the background."""

    def __init__(self, enabled: bool, min_interval_s: float) -> None:
        self.enabled = enabled
        self.min_interval_s = min_interval_s
        self._last: dict[tuple[str, str], float] = {}  # (asked, served) → when it was last shown
        self._said_broken = False
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    def from_env(cls) -> DesktopNotice:
        setting = os.environ.get(NOTIFY_ENV, "").strip().lower()
        enabled = setting in ("on", "1", "true") or (setting not in ("off", "0", "false") and desktop_session())
        return cls(enabled, float(os.environ.get(NOTIFY_INTERVAL_ENV, "300")))

    def fire(self, requested: str, served: str, why: str) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        pair = (requested, served)
        if now - self._last.get(pair, float("-inf")) < self.min_interval_s:
            return
        self._last[pair] = now
        text = f"{degraded_marker(requested, served)} {why}"
        task = asyncio.get_running_loop().create_task(self._show(text[:240]))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _show(self, text: str) -> None:
        command = notifier_command(text)
        if command is None:
            self._broken("no notifier found (terminal-notifier, osascript or notify-send)")
            return
        try:
            quiet = asyncio.subprocess.DEVNULL
            proc = await asyncio.create_subprocess_exec(*command, stdin=quiet, stdout=quiet, stderr=quiet)
            try:
                code = await asyncio.wait_for(proc.wait(), RUN_TIMEOUT_S)
            except TimeoutError:
                proc.kill()
                self._broken(f"{command[0]} did not finish within {RUN_TIMEOUT_S:g} s")
                return
        except OSError as exc:
            self._broken(f"{command[0]}: {exc.strerror or exc}")
            return
        if code != 0:
            self._broken(f"{command[0]} exited with {code}")

    def _broken(self, why: str) -> None:
        if not self._said_broken:
            self._said_broken = True
            log.warning("desktop notification failed: %s (set %s=off to stop trying)", why, NOTIFY_ENV)
