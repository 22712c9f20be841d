"""How much memory this machine has and has free right now, and the budget rule both sides use.

The proxy's budget plugin (plugins/ram_budget.py) decides with it before loading a local model; `ask models`
and `ask doctor` show the same numbers. Linux says it in /proc/meminfo; macOS in `vm_stat` and `sysctl
hw.memsize` (run with a short timeout). 1 GB here is 10^9 bytes, as Ollama's `/api/ps` sizes are read.
Stdlib only, nothing runs on import.
"""

from __future__ import annotations

import math
import os
import re
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from types import EllipsisType
    from typing import Any

BUDGET_ENV = "RAM_BUDGET_GB"  # a number of GB: wins over the yaml's ram_budget.budget_gb
CONFIG_KEY = "ram_budget.budget_gb"
GB = 1e9
COMMAND_TIMEOUT_S = 2.0
_PAGE_SIZE = re.compile(r"page size of (\d+) bytes")
_VM_LINE = re.compile(r'^"?([A-Za-z][A-Za-z \-]*?)"?:\s+(\d+)\.?\s*$', re.MULTILINE)
_FREE_PERCENT = re.compile(r"System-wide memory free percentage:\s*(\d+(?:\.\d+)?)%")


def parse_meminfo(text: str) -> tuple[float, float]:
    """(total GB, available GB) from Linux's /proc/meminfo: `MemTotal` and `MemAvailable`, in kB (KiB).

    MemAvailable is the kernel's own estimate of what can be allocated without swapping (free pages plus the
    reclaimable page cache and slab). ValueError when either line is missing."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name in ("MemTotal", "MemAvailable"):
            values[name] = int(rest.split()[0])
    try:
        return values["MemTotal"] * 1024 / GB, values["MemAvailable"] * 1024 / GB
    except KeyError as missing:
        raise ValueError(f"/proc/meminfo has no {missing.args[0]} line") from None


def vm_stat_pages(text: str) -> tuple[int, dict[str, int]]:
    """`vm_stat`'s page size (its header line) and its counters by name (`Pages free` -> 100509)."""
    size = _PAGE_SIZE.search(text)
    if not size:
        raise ValueError("not vm_stat output: no 'page size of N bytes' header")
    return int(size.group(1)), {name.strip(): int(count) for name, count in _VM_LINE.findall(text)}


def parse_vm_stat(text: str) -> float:
    """Available GB from macOS's `vm_stat`: free + file-backed + purgeable pages, times the header's page size.

    What can be given to a model without pushing anyone's memory out, as Activity Monitor counts it (its
    "Cached Files" are file-backed + purgeable, "memory recently used by apps and now available"):
    - `Pages free` (vm_stat already leaves the speculative pages out of it; those are file read-ahead, so they
      are in `File-backed pages`, and adding `Pages speculative` again would count them twice);
    - `File-backed pages`: file cache, dropped without writing anything;
    - `Pages purgeable`: volatile caches apps have said may be discarded.
    Not `Pages inactive`: that queue holds apps' own anonymous memory too, which comes back only by
    compressing or swapping it, exactly what the budget must not cause (free + inactive + speculative +
    purgeable would also count the purgeable pages twice: they sit on the active and inactive queues). Not
    `memory_pressure`'s free percentage either: it counts everything that could be compressed as free (~88%
    free on a Mac with 9 GB of cache and 16 GB of app memory; see `parse_memory_pressure`).
    ValueError for text that is not vm_stat's."""
    page, counts = vm_stat_pages(text)
    try:
        pages = counts["Pages free"] + counts["File-backed pages"] + counts["Pages purgeable"]
    except KeyError as missing:
        raise ValueError(f"vm_stat output has no {missing.args[0]!r} line") from None
    return pages * page / GB


def parse_memsize(text: str) -> float:
    """Physical memory in GB from `sysctl hw.memsize` (`hw.memsize: 34359738368`) or `sysctl -n hw.memsize`."""
    value = text.strip().rpartition(":")[2].strip()
    if not value.isdigit():
        raise ValueError(f"not sysctl hw.memsize output: {text.strip()[:80]!r}")
    return int(value) / GB


def parse_memory_pressure(text: str) -> float | None:
    """`memory_pressure`'s "System-wide memory free percentage: NN%" as a number (88.0); None without it.

    macOS's pressure gauge (kern.memorystatus_level), not a byte count to load a model into: it treats app
    memory that could be compressed as free, so it stays high while a load would still push apps out."""
    found = _FREE_PERCENT.search(text)
    return float(found.group(1)) if found else None


def _run(*command: str) -> str | None:
    """A macOS tool's stdout, or None if it does not run (not there, fails, or takes over 2 s)."""
    import subprocess

    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout


def _meminfo() -> tuple[float, float] | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            return parse_meminfo(fh.read())
    except (OSError, ValueError, IndexError):
        return None


def total_gb() -> float | None:
    """This machine's physical memory in GB (/proc/meminfo, or `sysctl -n hw.memsize`); None if it cannot tell."""
    found = _meminfo()
    if found:
        return found[0]
    if sys.platform == "darwin" and (out := _run("sysctl", "-n", "hw.memsize")):
        try:
            return parse_memsize(out)
        except ValueError:
            return None
    return None


def available_gb() -> float | None:
    """GB that can be allocated now without swapping (MemAvailable, or `vm_stat` as `parse_vm_stat` counts it);
    None if it cannot tell."""
    found = _meminfo()
    if found:
        return found[1]
    if sys.platform == "darwin" and (out := _run("vm_stat")):
        try:
            return parse_vm_stat(out)
        except ValueError:
            return None
    return None


def budget(
    explicit_gb: float | None,
    held_gb: float,
    available: float | EllipsisType | None = ...,
    explicit_source: str = "an explicit budget",
) -> tuple[float | None, str]:
    """(GB our local models may hold together, where that number comes from).

    An explicit budget wins (`explicit_budget`; say which with `explicit_source`: "RAM_BUDGET_GB" or
    "ram_budget.budget_gb"). Else what is available now (`available`, read live when not given) plus what our
    own models hold already (`held_gb`: unloading them gives it back): "available 4.3 GB + ours 7.2 GB".
    (None, why) when the machine cannot tell."""
    if explicit_gb is not None:
        return explicit_gb, explicit_source
    free = available_gb() if available is ... else available
    if free is None:
        return None, f"cannot tell how much memory is available here: set {BUDGET_ENV} (GB)"
    return free + held_gb, f"available {free:.1f} GB + ours {held_gb:.1f} GB"


def explicit_budget(config_value: Any) -> tuple[float | None, str]:
    """(GB, source) of a budget given by hand: `RAM_BUDGET_GB` wins over the yaml's `ram_budget.budget_gb`
    (`config_value`, None when absent); (None, "") when neither is set. ValueError (one line, saying what to
    write) for a value that is not a positive number of GB."""
    raw = os.environ.get(BUDGET_ENV, "").strip()
    if raw:
        return _positive(raw, f"{BUDGET_ENV}={raw}", f"{BUDGET_ENV}=11.5"), BUDGET_ENV
    if config_value is None or config_value == "":
        return None, ""
    shown = f"{CONFIG_KEY}: {config_value!r}"
    return _positive(config_value, shown, "budget_gb: 11.5 under ram_budget: in litellm-config.yaml"), CONFIG_KEY


def _positive(value: Any, shown: str, example: str) -> float:
    problem = ValueError(f"{shown} is not a positive number of GB: write e.g. {example}")
    if isinstance(value, bool):
        raise problem
    try:
        gb = float(value)
    except (TypeError, ValueError):
        raise problem from None
    if not math.isfinite(gb) or gb <= 0:
        raise problem
    return gb
