"""contract.memory: this machine's /proc/meminfo read live, Apple-silicon outputs as recorded (tests/data/macos/),
and the budget rule: an explicit budget wins, else what is available now plus what our models hold."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from contract import memory

MACOS = Path(__file__).parent / "data" / "macos"
PAGE = 16384  # the header of the recorded vm_stat: "(page size of 16384 bytes)"


@pytest.mark.skipif(not Path("/proc/meminfo").exists(), reason="Linux only")
def test_meminfo_of_this_machine_matches_what_free_and_sysconf_say() -> None:
    text = Path("/proc/meminfo").read_text()
    total, available = memory.parse_meminfo(text)
    fields = {line.split(":")[0]: int(line.split()[1]) for line in text.splitlines()}
    assert total == fields["MemTotal"] * 1024 / 1e9
    assert available == fields["MemAvailable"] * 1024 / 1e9
    assert total * 1e9 == pytest.approx(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), abs=1)
    if shutil.which("free"):
        row = next(
            line
            for line in subprocess.run(["free", "-b"], capture_output=True, text=True).stdout.splitlines()
            if line.startswith("Mem:")
        )
        free_total, free_available = int(row.split()[1]), int(row.split()[-1])
        assert free_total == pytest.approx(total * 1e9, abs=1)
        assert abs(free_available - available * 1e9) < 200e6  # read a moment apart: memory moves
    assert memory.total_gb() == total
    live = memory.available_gb()
    assert live is not None and abs(live - available) < 0.2


def test_meminfo_without_memavailable_is_an_error() -> None:
    with pytest.raises(ValueError, match="MemAvailable"):
        memory.parse_meminfo("MemTotal:       24683792 kB\nMemFree:        24144896 kB\n")


def test_recorded_vm_stat_counts_free_file_backed_and_purgeable_pages() -> None:
    text = (MACOS / "vm_stat.txt").read_text()
    page, counts = memory.vm_stat_pages(text)
    assert page == PAGE
    assert counts["Translation faults"] == 5460478806 and counts["Pages wired down"] == 129937
    # by hand from the file: free 100509 + file-backed 449963 + purgeable 26929 = 577401 pages of 16384 bytes
    assert memory.parse_vm_stat(text) == pytest.approx(577401 * 16384 / 1e9)  # 9.46 GB
    assert round(memory.parse_vm_stat(text), 2) == 9.46
    # not free + inactive + speculative + purgeable (993605 pages, 16.28 GB): inactive holds app memory too
    assert memory.parse_vm_stat(text) < 993605 * 16384 / 1e9


def test_recorded_memory_pressure_free_percentage() -> None:
    text = (MACOS / "memory_pressure.txt").read_text()
    assert memory.parse_memory_pressure(text) == 88.0
    # its gauge counts compressible app memory as free: 88% of 34.36 GB is 30.2 GB, three times vm_stat's 9.46
    assert memory.parse_memory_pressure(text) / 100 * 34359738368 / 1e9 > 3 * memory.parse_vm_stat(
        (MACOS / "vm_stat.txt").read_text()
    )
    assert memory.parse_memory_pressure("some other output") is None


def test_recorded_sysctl_hw_memsize() -> None:
    assert memory.parse_memsize((MACOS / "sysctl_hw_memsize.txt").read_text()) == 38654705664 / 1e9  # 36 GiB
    assert memory.parse_memsize("38654705664\n") == 38.654705664  # `sysctl -n hw.memsize`
    with pytest.raises(ValueError):
        memory.parse_memsize("sysctl: unknown oid 'hw.memsize'")


def test_vm_stat_of_something_else_is_an_error() -> None:
    with pytest.raises(ValueError):
        memory.parse_vm_stat("command not found: vm_stat")
    with pytest.raises(ValueError, match="File-backed pages"):
        memory.parse_vm_stat("Mach Virtual Memory Statistics: (page size of 16384 bytes)\nPages free: 3.\n")


def test_budget_explicit_wins_else_available_plus_ours() -> None:
    assert memory.budget(11.5, 7.2, 4.3, explicit_source="RAM_BUDGET_GB") == (11.5, "RAM_BUDGET_GB")
    total, source = memory.budget(None, 7.2, 4.3)
    assert total == pytest.approx(11.5) and source == "available 4.3 GB + ours 7.2 GB"
    total, why = memory.budget(None, 0.0, None)
    assert total is None and "RAM_BUDGET_GB" in why
    live, source = memory.budget(None, 1.0)  # read from this machine
    if memory.available_gb() is not None:
        assert live is not None and live > 1.0 and source.endswith("+ ours 1.0 GB")


def test_explicit_budget_env_wins_over_the_yaml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAM_BUDGET_GB", raising=False)
    assert memory.explicit_budget(None) == (None, "")
    assert memory.explicit_budget(12) == (12.0, "ram_budget.budget_gb")
    assert memory.explicit_budget("9.5") == (9.5, "ram_budget.budget_gb")
    monkeypatch.setenv("RAM_BUDGET_GB", "11.5")
    assert memory.explicit_budget(12) == (11.5, "RAM_BUDGET_GB")


@pytest.mark.parametrize("value", ["lots", "0", "-3", "nan", "inf"])
def test_an_env_budget_that_is_not_a_positive_number_says_what_to_write(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("RAM_BUDGET_GB", value)
    with pytest.raises(ValueError) as raised:
        memory.explicit_budget(None)
    message = str(raised.value)
    assert "\n" not in message and f"RAM_BUDGET_GB={value}" in message and "RAM_BUDGET_GB=11.5" in message


@pytest.mark.parametrize("value", ["lots", 0, -1, True, [12]])
def test_a_yaml_budget_that_is_not_a_positive_number_says_what_to_write(
    monkeypatch: pytest.MonkeyPatch, value: object
) -> None:
    monkeypatch.delenv("RAM_BUDGET_GB", raising=False)
    with pytest.raises(ValueError, match=r"ram_budget\.budget_gb: .* write e\.g\. budget_gb: 11\.5"):
        memory.explicit_budget(value)


def test_importing_it_runs_nothing() -> None:
    code = "import sys, contract.memory; print('subprocess' in sys.modules, 'typing' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
