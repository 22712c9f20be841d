"""`ask service`: the rendered definitions, install/uninstall/status/logs, and the services really running.

launchd exists only on macOS, and `systemctl --user` needs a user session bus that these test machines do not
have, so install/uninstall run against a recording stub of `launchctl` / `systemctl` put first on PATH (it
records each call and keeps the loaded set in a directory). Everything else is real: the templates, plistlib,
`systemd-analyze verify` where it is installed, and the rendered programs themselves, started the way launchd
would start them (only the plist's environment) and stopped with SIGTERM.
"""

from __future__ import annotations

import json
import os
import plistlib
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from ask_cli import service
from harness.fake_ollama import FakeOllama
from harness.stack import KEY, ROOT, free_port

SECRETS = {"LITELLM_MASTER_KEY": KEY, "REDIS_PASSWORD": "redis-secret-5b1c", "OPENAI_API_KEY": "sk-openai-secret-9f"}
STUB = r'''#!{python}
"""A recording stand-in for launchctl / systemctl: this machine cannot run the real one for a user."""
import json, os, sys
from pathlib import Path
state = Path(os.environ["STUB_STATE"]); state.mkdir(exist_ok=True)
args = sys.argv[1:]
with open(state / "calls.jsonl", "a") as f:
    f.write(json.dumps([Path(sys.argv[0]).name, *args]) + "\n")
fail = os.environ.get("STUB_FAIL", "")
if fail and fail in " ".join(args):
    print("Bootstrap failed: 5: Input/output error", file=sys.stderr); sys.exit(5)
name = Path(sys.argv[0]).name
if name == "launchctl":
    verb, target = args[0], args[-1]
    label = Path(target).stem if verb == "bootstrap" else target.rsplit("/", 1)[-1]
    if verb == "bootstrap":
        (state / label).touch()
    elif verb == "bootout":
        if not (state / label).exists():
            print("Boot-out failed: 3: No such process", file=sys.stderr); sys.exit(3)
        (state / label).unlink()
    elif verb == "print":
        if not (state / label).exists():
            print(f"Could not find service \"{label}\" in domain", file=sys.stderr); sys.exit(113)
        print(f"{target} = {{\n\tstate = running\n\tpid = 4242\n}}")
else:
    args = [a for a in args if a != "--user"]
    if args[0] == "enable":
        (state / args[-1]).touch()
    elif args[0] == "disable":
        (state / args[-1]).unlink(missing_ok=True)
    elif args[0] == "show":
        on = (state / args[-1]).exists()
        print(f"LoadState={'loaded' if on else 'not-found'}\nActiveState={'active' if on else 'inactive'}\n"
              f"MainPID={4242 if on else 0}")
'''


@pytest.fixture
def machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary home with secrets in the environment, a stub `ollama`, and recording service-manager stubs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("launchctl", "systemctl"):
        (bin_dir / tool).write_text(STUB.replace("{python}", sys.executable, 1))
        (bin_dir / tool).chmod(0o755)
    (bin_dir / "ollama").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "ollama").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("STUB_STATE", str(tmp_path / "stub"))
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    return tmp_path


def calls(machine: Path) -> list[list[str]]:
    path = machine / "stub" / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def run_ask(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ask_cli", *args], input=stdin, capture_output=True, text=True, cwd=ROOT, timeout=60
    )


def rendered(kind: str, name: str, home: Path) -> service.Rendered:
    return service.render(service.manager_for(kind, home), name, ROOT / "litellm-config.yaml")


# -- the definitions --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", service.SERVICES)
def test_every_plist_parses_with_absolute_paths_and_no_secret(machine: Path, name: str) -> None:
    svc = rendered("launchd", name, machine / "home")
    plist = plistlib.loads(svc.text.encode())

    assert plist["Label"] == f"com.local-llm-stack.{name}" == svc.path.stem
    assert svc.path.parent == machine / "home" / "Library" / "LaunchAgents"
    program = plist["ProgramArguments"]
    assert all(isinstance(a, str) for a in program) and Path(program[0]).is_absolute()
    assert os.access(program[0], os.X_OK), program[0]
    assert plist["RunAtLoad"] is True and plist["KeepAlive"] == {"SuccessfulExit": False}
    for key in ("StandardOutPath", "StandardErrorPath", "WorkingDirectory"):
        assert key not in plist or Path(plist[key]).is_absolute(), key
    assert plist["StandardOutPath"] == str(machine / "home" / "Library" / "Logs" / "local-llm-stack" / f"{name}.log")
    assert not [v for v in SECRETS.values() if v in svc.text]


def test_the_proxy_service_runs_ask_serve_from_this_venv_with_the_addresses_set(
    machine: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OLLAMA_API_BASE", "http://192.168.1.100:11434")
    plist = plistlib.loads(rendered("launchd", "proxy", machine / "home").text.encode())

    assert plist["ProgramArguments"] == [
        str(Path(sys.executable).absolute()),
        "-m",
        "ask_cli",
        "serve",
        "--config",
        str(ROOT / "litellm-config.yaml"),
        "--port",
        "4000",
    ]
    assert plist["WorkingDirectory"] == str(ROOT)
    env = plist["EnvironmentVariables"]
    assert env["OLLAMA_API_BASE"] == "http://192.168.1.100:11434"
    assert env["PATH"].split(":")[0] == str(Path(sys.executable).absolute().parent)
    assert not set(env) & set(SECRETS)


def test_ollama_gets_the_environment_the_stack_expects(machine: Path) -> None:
    import yaml

    env = plistlib.loads(rendered("launchd", "ollama", machine / "home").text.encode())["EnvironmentVariables"]
    assert env["OLLAMA_HOST"].startswith("127.0.0.1:")
    config = yaml.safe_load((ROOT / "litellm-config.yaml").read_text())
    contexts = {
        m["litellm_params"]["num_ctx"]
        for m in config["model_list"]
        if m["litellm_params"]["model"].startswith("ollama") and m["model_info"].get("mode") != "embedding"
    }  # an embedding model's context is its own: Ollama caps num_ctx at the length it was trained for
    assert {int(env["OLLAMA_CONTEXT_LENGTH"])} == contexts  # Ollama's default context = what the tiers ask for
    assert int(env["OLLAMA_MAX_LOADED_MODELS"]) >= 2 and env["OLLAMA_KEEP_ALIVE"]


@pytest.mark.skipif(not Path("/usr/bin/systemd-analyze").exists(), reason="systemd-analyze is not installed")
@pytest.mark.parametrize("name", service.SERVICES)
def test_every_unit_verifies(machine: Path, name: str) -> None:
    svc = rendered("systemd", name, machine / "home")
    unit = machine / svc.label
    unit.write_text(svc.text)
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stderr
    assert not [v for v in SECRETS.values() if v in svc.text]
    assert f"append:{svc.log}" in svc.text and svc.log.is_absolute()


# -- install / uninstall / status / logs (stubbed service manager) ---------------------------------------


def test_install_shows_then_writes_then_loads_and_uninstall_undoes_it(machine: Path) -> None:
    home = machine / "home"
    agents = home / "Library" / "LaunchAgents"
    result = run_ask("service", "install", "all", "--yes", "--manager", "launchd")

    assert result.returncode == 0, result.stderr
    assert result.stdout.index("will write") < result.stdout.index("installed proxy")
    plists = sorted(p.name for p in agents.iterdir())
    assert plists == [f"com.local-llm-stack.{n}.plist" for n in ("ollama", "proxy", "redis")]
    assert {oct(p.stat().st_mode & 0o777) for p in agents.iterdir()} == {"0o600"}
    uid = os.getuid()
    boots = [c for c in calls(machine) if c[1] == "bootstrap"]
    assert boots == [
        ["launchctl", "bootstrap", f"gui/{uid}", str(agents / f"com.local-llm-stack.{n}.plist")]
        for n in service.SERVICES
    ]
    key_file = machine / "config" / "ask" / "master.key"  # conftest's XDG_CONFIG_HOME
    assert key_file.read_text().strip() == KEY and key_file.stat().st_mode & 0o777 == 0o600  # the shell's key
    assert f"master key: the key file {key_file}, holding $LITELLM_MASTER_KEY" in result.stdout

    status = run_ask("service", "status", "--manager", "launchd")
    assert status.returncode == 0 and status.stdout.count("running (pid 4242)") == 3

    gone = run_ask("service", "uninstall", "all", "--manager", "launchd")
    assert gone.returncode == 0, gone.stderr
    assert list(agents.iterdir()) == []
    assert [c[2] for c in calls(machine) if c[1] == "bootout"] == [
        f"gui/{uid}/com.local-llm-stack.{n}" for n in service.SERVICES
    ]
    after = run_ask("service", "status", "--manager", "launchd")
    assert after.returncode == 0 and after.stdout.count("not installed") == 3


def test_a_failed_load_leaves_nothing_half_installed(machine: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STUB_FAIL", "com.local-llm-stack.ollama.plist")  # the second bootstrap fails
    result = run_ask("service", "install", "proxy", "ollama", "--yes", "--manager", "launchd")

    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("ask: could not start the ollama service: launchctl bootstrap")
    assert line.endswith("Input/output error; nothing was left installed by this run")
    assert list((machine / "home" / "Library" / "LaunchAgents").iterdir()) == []
    assert not (machine / "stub" / "com.local-llm-stack.proxy").exists()  # the proxy was booted out again


def test_reinstall_replaces_a_running_service_and_shows_the_diff(machine: Path) -> None:
    assert run_ask("service", "install", "proxy", "--yes", "--manager", "launchd").returncode == 0
    again = run_ask("service", "install", "proxy", "--yes", "--port", "4001", "--manager", "launchd")

    assert again.returncode == 0, again.stderr
    assert "will replace" in again.stdout and "-    <string>4000</string>" in again.stdout
    assert [c[1] for c in calls(machine)][-2:] == ["bootout", "bootstrap"]


@pytest.mark.parametrize("args", [["--dry-run"], []], ids=["dry-run", "no-tty-no-yes"])
def test_nothing_is_written_without_consent(machine: Path, args: list[str]) -> None:
    result = run_ask("service", "install", "proxy", *args, "--manager", "launchd")

    assert "will write" in result.stdout
    assert result.returncode == (0 if args else 2)
    if not args:
        assert (
            result.stderr.strip() == "ask: not a terminal: add --yes to install without a prompt (or --dry-run "
            "to only look)"
        )
    assert not (machine / "home" / "Library" / "LaunchAgents").exists()
    assert [c for c in calls(machine) if c[1] != "print"] == []


def test_systemd_user_units_install_and_uninstall(machine: Path) -> None:
    units = machine / "config" / "systemd" / "user"  # $XDG_CONFIG_HOME/systemd/user, as systemd reads it
    result = run_ask("service", "install", "proxy", "redis", "--yes", "--manager", "systemd")

    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in units.iterdir()) == [f"local-llm-stack-{n}.service" for n in ("proxy", "redis")]
    assert ["systemctl", "--user", "enable", "--now", "local-llm-stack-redis.service"] in calls(machine)
    assert run_ask("service", "status", "proxy", "redis", "--manager", "systemd").returncode == 0
    assert run_ask("service", "uninstall", "all", "--manager", "systemd").returncode == 0
    assert list(units.iterdir()) == []
    assert calls(machine)[-1] == ["systemctl", "--user", "daemon-reload"]


def test_bad_input_is_one_line(machine: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    unknown = run_ask("service", "install", "postgres", "--yes", "--manager", "launchd")
    assert (unknown.returncode, unknown.stderr.strip()) == (
        2,
        "ask: unknown service 'postgres': choose from proxy, ollama, redis or all",
    )
    monkeypatch.setenv("PATH", "/nonexistent")
    no_ollama = subprocess.run(
        [sys.executable, "-m", "ask_cli", "service", "install", "ollama", "--yes", "--manager", "launchd"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        env={**os.environ, "PATH": str(machine / "nothing")},
    )
    assert no_ollama.returncode == 2 and no_ollama.stderr.startswith("ask: ollama not found on PATH: install it")


def test_logs_prints_the_end_of_each_log(machine: Path) -> None:
    logs = machine / "home" / "Library" / "Logs" / "local-llm-stack"
    logs.mkdir(parents=True)
    (logs / "proxy.log").write_text("".join(f"line {i}\n" for i in range(100)))
    litellm = machine / "data" / "ask" / "logs" / "litellm.log"  # what `ask serve` keeps of LiteLLM's own output
    litellm.parent.mkdir(parents=True)
    litellm.write_text("banner\nSet models:\n")
    result = run_ask("service", "logs", "proxy", "-n", "3", "--manager", "launchd")

    assert result.returncode == 0
    assert result.stdout.splitlines() == [
        f"==> {logs / 'proxy.log'} <==",
        "line 97",
        "line 98",
        "line 99",
        f"==> {litellm} <==",
        "banner",
        "Set models:",
    ]


# -- the rendered programs, started as launchd would start them ------------------------------------------


def launch(plist: dict, env_extra: dict[str, str]) -> subprocess.Popen[bytes]:
    """Only the plist's environment (plus HOME/USER, which launchd sets), its working directory, its log."""
    log = Path(plist["StandardOutPath"])
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**plist.get("EnvironmentVariables", {}), "HOME": os.environ["HOME"], "USER": "tester", **env_extra}
    out = log.open("ab")
    return subprocess.Popen(
        plist["ProgramArguments"],
        env=env,
        cwd=plist.get("WorkingDirectory"),
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def test_the_rendered_redis_service_serves_and_stops_cleanly(machine: Path) -> None:
    port = free_port()
    svc = service.render(
        service.manager_for("launchd", machine / "home"), "redis", ROOT / "litellm-config.yaml", redis_port=port
    )
    proc = launch(plistlib.loads(svc.text.encode()), {})
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    assert s.recv(16) == b"+PONG\r\n"
                    break
            except OSError:
                assert time.monotonic() < deadline, svc.log.read_text()
                time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0  # a clean stop: KeepAlive/SuccessfulExit=false leaves it stopped


def test_the_rendered_proxy_service_answers_and_stops_cleanly(
    machine: Path, monkeypatch: pytest.MonkeyPatch, tiny_url: str
) -> None:
    """The plist's command, environment and working directory are enough: the key comes from its 0600 file."""
    monkeypatch.delenv("LITELLM_MASTER_KEY")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(machine / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(machine / "data"))
    port = free_port()
    with FakeOllama() as fake:
        monkeypatch.setenv("OLLAMA_API_BASE", fake.url)
        monkeypatch.setenv("TINY_API_BASE", tiny_url)
        svc = service.render(
            service.manager_for("launchd", machine / "home"), "proxy", ROOT / "litellm-config.yaml", port=port
        )
        from contract import paths

        key = paths.master_key()
        assert key and key not in svc.text
        proc = launch(plistlib.loads(svc.text.encode()), {})
        try:
            deadline = time.monotonic() + 120
            while not service._answers(f"http://127.0.0.1:{port}/health/liveliness"):
                assert proc.poll() is None and time.monotonic() < deadline, svc.log.read_text()[-2000:]
                time.sleep(0.5)
            resp = httpx.post(
                f"http://127.0.0.1:{port}/v1/chat/completions",
                timeout=60,
                headers={"Authorization": f"Bearer {key}"},
                json={"model": "fast-9b", "messages": [{"role": "user", "content": "from launchd"}]},
            )
            assert resp.status_code == 200 and resp.headers["x-served-by"] == "fast-9b"
        finally:
            os.kill(proc.pid, signal.SIGTERM)
            code = proc.wait(timeout=30)
    assert code == 0, svc.log.read_text()[-2000:]
    assert "stopping the stack" in svc.log.read_text()


def test_the_cloud_proxy_service_keeps_its_keys_in_the_secrets_file(machine: Path) -> None:
    result = run_ask("service", "install", "proxy", "--cloud", "--yes", "--manager", "launchd")

    assert result.returncode == 0, result.stderr
    plist = plistlib.loads(
        (machine / "home" / "Library" / "LaunchAgents" / "com.local-llm-stack.proxy.plist").read_bytes()
    )
    assert plist["ProgramArguments"][-1] == "--cloud"
    secrets = machine / "config" / "ask" / "secrets.env"
    assert secrets.stat().st_mode & 0o777 == 0o600 and f"{secrets} (0600)" in result.stdout
    assert not [v for v in SECRETS.values() if v in secrets.read_text() + json.dumps(plist)]
