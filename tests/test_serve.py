"""`ask serve`, the run command: bad configs fail in one line; a fresh machine gets a real answer; it stops."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from contract import paths
from harness.processes import ChildExited, listening, stop, wait_until_answers, wait_until_refused
from harness.stack import CONFIG, ROOT, closed_port_url, free_port, stack_env


def run_ask(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ask_cli", *args], capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT
    )


def test_missing_plugin_is_named_and_exits_non_zero(tmp_path: Path) -> None:
    broken = tmp_path / "litellm-config.yaml"
    broken.write_text(CONFIG.read_text().replace("plugins.served_by.handler", "plugins.serve_by.handler"))
    result = run_ask("serve", "--config", str(broken), timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"ask: {broken}: callback 'plugins.serve_by.handler' not found (no module plugins.serve_by): "
        "fix litellm_settings.callbacks"
    ]


def test_malformed_yaml_gives_the_line(tmp_path: Path) -> None:
    broken = tmp_path / "litellm-config.yaml"
    broken.write_text("model_list:\n  - model_name: fast-9b\n    litellm_params: {model: [\n")
    result = run_ask("serve", "--config", str(broken), timeout=30)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"ask: {broken}: line ") and "not valid YAML" in line


def test_missing_config_says_how_to_point_at_one(tmp_path: Path) -> None:
    result = run_ask("serve", "--config", str(tmp_path / "nope.yaml"), timeout=30)
    assert result.returncode == 2
    assert "no such file (pass --config or set ASK_LITELLM_CONFIG)" in result.stderr


def test_master_key_is_made_once_and_private(tmp_path: Path) -> None:
    key = paths.master_key()
    assert key and key.startswith("sk-") and len(key) > 40
    assert paths.master_key() == key
    assert stat.S_IMODE(paths.key_file().stat().st_mode) == 0o600
    assert stat.S_IMODE(paths.key_file().parent.stat().st_mode) == 0o700


def test_master_key_from_the_environment_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LITELLM_MASTER_KEY", "sk-from-env")
    assert paths.master_key() == "sk-from-env"
    assert not paths.key_file().exists()


def _serve(*args: str, env: dict[str, str], **pipes: int) -> subprocess.Popen[str]:
    """`ask serve` in its own session, so a failed test's `stop` (SIGTERM first) ends it and its children."""
    cmd = [sys.executable, "-m", "ask_cli", "serve", *args]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, text=True, start_new_session=True, **pipes)  # type: ignore[call-overload]


def _stop(proc: subprocess.Popen[str]) -> None:
    stop([proc], grace_s=30)  # type: ignore[list-item]


@pytest.mark.real_model
def test_fresh_machine_gets_a_real_answer_then_stops_cleanly(tmp_path: Path) -> None:
    """What `./run` does after installing: no Ollama anywhere, the embedded model answers, the demotion is
    shown, the master key is generated 0600, and SIGTERM stops both processes."""
    proxy_port, tiny_port = free_port(), free_port()
    env = stack_env(
        tmp_path,
        OLLAMA_API_BASE=closed_port_url(),
        LLAMA_SWAP_API_BASE=closed_port_url("/v1"),
        TINY_API_BASE=f"http://127.0.0.1:{tiny_port}/v1",
    )
    del env["LITELLM_MASTER_KEY"]
    proc = _serve(
        "--port", str(proxy_port), "--ask", "Say hello.", env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        answer = proc.stdout.readline() if proc.stdout else ""  # the first line of the streamed answer
        assert answer.strip(), "no answer"
        assert listening(proxy_port) and listening(tiny_port)
        assert proc.poll() is None, "kept serving after the answer"
        key_file = tmp_path / "config" / "ask" / "master.key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        said = []  # the whole answer first: a SIGTERM while it streams is an interrupted --ask (exit 1)
        while proc.stderr and not (said and said[-1].startswith(("serving;", "ask: "))):
            said.append(proc.stderr.readline())
            assert said[-1], "ask serve closed stderr before serving"
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
        stderr = "".join(said) + (proc.stderr.read() if proc.stderr else "")
        assert code == 0, stderr[-3000:]
    finally:
        _stop(proc)
    assert "[degraded: fast-9b → tiny]" in stderr
    assert f"proxy listening on http://127.0.0.1:{proxy_port}/v1 (master key in {key_file})" in stderr
    assert f"ok    tiny: the embedded model answers at http://127.0.0.1:{tiny_port}/v1" in stderr.splitlines()
    assert any(line.startswith("down  ollama: nothing answers at ") for line in stderr.splitlines())
    assert_none_of_litellms_start_screen(stderr)
    assert key_file.read_text().strip() not in stderr  # the key is never printed
    assert "listening on" in (tmp_path / "data" / "ask" / "logs" / "embedded.log").read_text()
    assert wait_until_refused(f"http://127.0.0.1:{proxy_port}", 10)
    assert wait_until_refused(f"http://127.0.0.1:{tiny_port}", 10)


LITELLMS_START_SCREEN = ("██", "Give Feedback / Get Help", "Thank you for using LiteLLM", "Set models:")


def assert_none_of_litellms_start_screen(text: str) -> None:
    shown = [piece for piece in LITELLMS_START_SCREEN if piece in text]
    assert not shown, f"LiteLLM's start screen on the terminal: {shown}"


def _serving_until_embedded_is_up(tmp_path: Path) -> tuple[subprocess.Popen[str], int, int]:
    """`ask serve` started with no Ollama, returned as soon as the embedded model listens (proxy not yet up)."""
    proxy_port, tiny_port = free_port(), free_port()
    env = stack_env(tmp_path, OLLAMA_API_BASE=closed_port_url(), TINY_API_BASE=f"http://127.0.0.1:{tiny_port}/v1")
    proc = _serve("--port", str(proxy_port), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        listens = lambda _url, _timeout: listening(tiny_port)  # noqa: E731 - the port, not /health: still loading
        up = wait_until_answers("", 60, [("ask serve", proc)], ready=listens)  # type: ignore[list-item]
    except ChildExited:
        up = False
    if not up:
        _stop(proc)
        raise AssertionError("the embedded model never came up")
    return proc, proxy_port, tiny_port


@pytest.mark.real_model
def test_sigterm_while_starting_leaves_no_orphans(tmp_path: Path) -> None:
    """Stopped before the proxy is up (a launchd stop, a Ctrl-C): the embedded model goes too."""
    proc, proxy_port, tiny_port = _serving_until_embedded_is_up(tmp_path)
    try:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        _stop(proc)
    assert wait_until_refused(f"http://127.0.0.1:{tiny_port}", 10)
    assert wait_until_refused(f"http://127.0.0.1:{proxy_port}", 10)


@pytest.mark.real_model
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux-only")
def test_children_go_when_the_run_command_is_killed_outright(tmp_path: Path) -> None:
    proc, _proxy_port, tiny_port = _serving_until_embedded_is_up(tmp_path)
    try:
        proc.kill()
        proc.wait(timeout=10)
        gone = wait_until_refused(f"http://127.0.0.1:{tiny_port}", 10)
        assert gone, "the embedded model outlived a killed `ask serve`"
    finally:
        _stop(proc)


def test_cloud_refuses_a_config_that_routes_into_premium(tmp_path: Path) -> None:
    config = tmp_path / "litellm-config.yaml"
    config.write_text(CONFIG.read_text().replace("- think-9b: [heavy]", "- think-9b: [premium, heavy]", 1))
    (tmp_path / "litellm-config.cloud.yaml").write_text((ROOT / "litellm-config.cloud.yaml").read_text())
    env = stack_env(tmp_path, ANTHROPIC_API_KEY="sk-ant-test")
    result = run_ask("serve", "--cloud", "--config", str(config), env=env, timeout=30)

    assert result.returncode == 2
    assert [line for line in result.stderr.splitlines() if not line.startswith("cloud lane ")] == [
        f"ask: {config}: router_settings.fallbacks: 'think-9b' falls back to the premium tier 'premium'; premium is "
        "reached only by name: remove it from the chain"
    ]


def test_cloud_says_which_lanes_are_absent_and_serves(tmp_path: Path, fake_ollama: object, tiny_url: str) -> None:
    fake_ollama.reset()  # type: ignore[attr-defined]  # no fault an earlier test left
    env = stack_env(
        tmp_path,
        OLLAMA_API_BASE=fake_ollama.url,
        TINY_API_BASE=tiny_url,  # type: ignore[attr-defined]
        GROQ_API_KEY="sk-groq-test",
    )
    result = run_ask("serve", "--cloud", "--no-embedded", "--port", str(free_port()), "--ask", "hi", "--exit", env=env)

    assert result.returncode == 0, result.stderr[-2000:]
    absent = [line for line in result.stderr.splitlines() if line.startswith("cloud lane ")]
    assert absent == [
        "cloud lane cloud-free: cerebras absent, set CEREBRAS_API_KEY",
        "cloud lane cloud-free: gemini absent, set GEMINI_API_KEY",
        "cloud lane cloud-free: openrouter absent, set OPENROUTER_API_KEY",
        "cloud lane reasoning: cerebras absent, set CEREBRAS_API_KEY",
        "cloud lane premium: anthropic absent, set ANTHROPIC_API_KEY",
    ]
    assert "sk-groq-test" not in result.stderr
    derived = tmp_path / "data" / "ask" / "litellm-config.derived.yaml"
    assert stat.S_IMODE(derived.stat().st_mode) == 0o600 and "groq/llama-3.3-70b-versatile" in derived.read_text()
    assert result.stdout.startswith("Hello from qwen3.5:9b")


def test_a_secrets_file_others_can_read_stops_the_start(tmp_path: Path) -> None:
    secrets = tmp_path / "config" / "ask" / "secrets.env"
    secrets.parent.mkdir(parents=True)
    secrets.write_text("REDIS_PASSWORD=x\n")
    secrets.chmod(0o644)
    result = run_ask("serve", env=stack_env(tmp_path), timeout=30)

    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"ask: {secrets} is readable by others (-rw-r--r--): chmod 600 {secrets}"
    ]


def _against_fakes(tmp_path: Path, fake_ollama: object, tiny_url: str) -> dict[str, str]:
    """A stack whose tiers answer from the session's fake Ollama (no fault an earlier test left) and real
    embedded model; llama-swap absent."""
    fake_ollama.reset()  # type: ignore[attr-defined]
    return stack_env(
        tmp_path,
        OLLAMA_API_BASE=fake_ollama.url,  # type: ignore[attr-defined]
        TINY_API_BASE=tiny_url,
        LLAMA_SWAP_API_BASE=closed_port_url("/v1"),
    )


def test_the_start_says_where_and_which_tiers_answer_and_keeps_litellms_output_in_a_log(
    tmp_path: Path, fake_ollama: object, tiny_url: str
) -> None:
    """What a user reads at start: the address, the key's location, each tier's state, the log's path; LiteLLM's
    banner, feedback box and model list are in that 0600 log, not on the terminal; stdout is the answer only."""
    port = free_port()
    env = _against_fakes(tmp_path, fake_ollama, tiny_url)
    result = run_ask("serve", "--no-embedded", "--port", str(port), "--ask", "hi", "--exit", env=env)

    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("Hello from qwen3.5:9b")
    lines = result.stderr.splitlines()
    log = tmp_path / "data" / "ask" / "logs" / "litellm.log"
    assert f"LiteLLM's output: {log} (ask serve -v shows it here)" in lines
    assert f"proxy listening on http://127.0.0.1:{port}/v1 (master key in $LITELLM_MASTER_KEY)" in lines
    assert f"ok    tiny: the embedded model answers at {tiny_url}" in lines
    assert any(line.startswith("ok    ollama ") and line.endswith(f"answers at {fake_ollama.url}") for line in lines)  # type: ignore[attr-defined]
    assert "ok    ollama: qwen3.5:9b pulled (fast-9b, think-9b)" in lines
    assert any(line.startswith("warn  heavy: nothing answers at ") for line in lines)
    assert_none_of_litellms_start_screen(result.stderr)
    said = ("LiteLLM's output: ", "proxy listening on ", "ok    ", "warn  ", "down  ")
    assert all(line.startswith(said) for line in lines), lines  # and nothing else
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert stat.S_IMODE(log.parent.stat().st_mode) == 0o700
    text = log.read_text()
    assert "██" in text and "LiteLLM: Proxy initialized with Config, Set models:" in text
    assert "Give Feedback / Get Help" not in text  # hidden by LiteLLM's own LITELLM_DONT_SHOW_FEEDBACK_BOX


def test_verbose_shows_litellms_output_live(tmp_path: Path, fake_ollama: object, tiny_url: str) -> None:
    env = _against_fakes(tmp_path, fake_ollama, tiny_url)
    result = run_ask("serve", "-v", "--no-embedded", "--port", str(free_port()), "--ask", "hi", "--exit", env=env)

    assert result.returncode == 0, result.stderr[-2000:]
    assert "LiteLLM: Proxy initialized with Config, Set models:" in result.stderr
    assert "LiteLLM's output:" not in result.stderr
    assert result.stdout.startswith("Hello from qwen3.5:9b")  # still the answer only


def test_a_proxy_that_exits_while_starting_says_why(tmp_path: Path) -> None:
    """A plugin that fails only when LiteLLM imports it: LiteLLM's own error line reaches the terminal, not just
    "exited with code 3"."""
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "explodes.py").write_text('raise RuntimeError("explodes at import")\nhandler = None\n')
    config = _config_with(tmp_path, "    - plugins.hot_path.handler", "    - plugins.explodes.handler")
    result = run_ask(
        "serve", "--no-embedded", "--port", str(free_port()), "--config", str(config), env=stack_env(tmp_path)
    )

    assert result.returncode == 1
    log = tmp_path / "data" / "ask" / "logs" / "litellm.log"
    assert "ask: proxy exited with code " in result.stderr and f" while starting; from {log}:" in result.stderr
    assert "explodes at import" in result.stderr


@pytest.mark.parametrize(
    ("yaml_value", "env_value", "says"),
    [
        (
            "lots",
            None,
            "ram_budget.budget_gb: 'lots' is not a positive number of GB: "
            "write e.g. budget_gb: 11.5 under ram_budget: in litellm-config.yaml",
        ),
        ("null", "-3", "RAM_BUDGET_GB=-3 is not a positive number of GB: write e.g. RAM_BUDGET_GB=11.5"),
    ],
)
def test_a_budget_that_is_not_a_number_stops_the_start(
    tmp_path: Path, yaml_value: str, env_value: str | None, says: str
) -> None:
    """A budget nobody meant would let the 30B load into swap, or refuse every model: say so before starting."""
    config = tmp_path / "litellm-config.yaml"
    config.write_text(CONFIG.read_text().replace("  budget_gb: null", f"  budget_gb: {yaml_value}", 1))
    env = stack_env(tmp_path)
    env.pop("RAM_BUDGET_GB")
    if env_value is not None:
        env["RAM_BUDGET_GB"] = env_value
    result = run_ask("serve", "--config", str(config), env=env, timeout=30)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"ask: {config}: ") and line.endswith(says)


def _config_with(tmp_path: Path, old: str, new: str) -> Path:
    config = tmp_path / "litellm-config.yaml"
    text = CONFIG.read_text()
    assert old in text
    config.write_text(text.replace(old, new, 1))
    return config


@pytest.mark.parametrize(
    ("old", "new", "says"),
    [
        (
            "- coder-30b: [fast-9b, fast-3b, tiny]",
            "- coder-30b: [fast-9b, fast-4b, tiny]",
            "router_settings.fallbacks: 'fast-4b' is not a tier (model_list has coder-30b, council, embed, fast-1b,",
        ),
        (
            "      timeout: 60\n",
            "      timeout: sixty\n",
            "model_list: 'fast-9b' timeout: 'sixty' is not a number of seconds",
        ),
        (
            "    - plugins.hot_path.handler",
            "    - 42\n    - plugins.hot_path.handler",
            "litellm_settings.callbacks: 42 is not a module.attribute name",
        ),
    ],
    ids=["unknown-fallback-target", "timeout-not-a-number", "callback-not-a-string"],
)
def test_a_config_that_would_misroute_stops_the_start(tmp_path: Path, old: str, new: str, says: str) -> None:
    config = _config_with(tmp_path, old, new)
    result = run_ask("serve", "--config", str(config), env=stack_env(tmp_path), timeout=30)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"ask: {config}: {says}")


def test_an_empty_model_list_stops_the_start(tmp_path: Path) -> None:
    config = tmp_path / "litellm-config.yaml"
    config.write_text("model_list: []\n")
    result = run_ask("serve", "--config", str(config), env=stack_env(tmp_path), timeout=30)
    assert result.returncode == 2
    assert "model_list is empty" in result.stderr


def test_a_plugin_with_a_syntax_error_is_one_line(tmp_path: Path) -> None:
    """The plugin is a file next to the config (as LiteLLM finds it): its error in one line, not a traceback."""
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "broken.py").write_text("handler = (\n")
    config = _config_with(tmp_path, "    - plugins.hot_path.handler", "    - plugins.broken.handler")
    result = run_ask("serve", "--config", str(config), env=stack_env(tmp_path), timeout=30)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"ask: {config}: callback 'plugins.broken.handler': broken.py line 1: ")


@pytest.mark.parametrize("port", ["70000", "0"])
def test_a_port_out_of_range_stops_the_start(tmp_path: Path, port: str) -> None:
    result = run_ask("serve", "--port", port, env=stack_env(tmp_path), timeout=30)
    assert result.returncode == 2
    assert f"--port must be from 1 to 65535 (got {port})" in result.stderr


def test_a_busy_port_stops_the_start_before_anything_runs(tmp_path: Path) -> None:
    """Another server on the port (a first `ask serve`): said at once, nothing started, nothing left behind."""

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = run_ask("serve", "--port", str(port), env=stack_env(tmp_path), timeout=30)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"ask: 127.0.0.1:{port} is in use") and f"ask serve --port {port + 100}" in line
    assert not (tmp_path / "data" / "ask" / "logs").exists()  # no child was started


@pytest.mark.real_model
def test_the_embedded_model_killed_is_restarted_and_the_stack_keeps_serving(tmp_path: Path) -> None:
    """`tiny` dies (the OOM killer, a crash): one line, a restart after a second, `tiny` answers again through
    the same proxy; the stack never stopped. The embedded server answers only with the key ask serve gave it."""
    import httpx

    proxy_port, tiny_port = free_port(), free_port()
    env = stack_env(
        tmp_path,
        OLLAMA_API_BASE=closed_port_url(),
        LLAMA_SWAP_API_BASE=closed_port_url("/v1"),
        TINY_API_BASE=f"http://127.0.0.1:{tiny_port}/v1",
    )
    said = tmp_path / "serve.err"
    with said.open("w") as err:
        proc = _serve("--port", str(proxy_port), "--no-warm", env=env, stdout=subprocess.DEVNULL, stderr=err)
    url = f"http://127.0.0.1:{proxy_port}/v1/chat/completions"
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    headers = {"Authorization": f"Bearer {env['LITELLM_MASTER_KEY']}"}

    def tiny_answers() -> bool:
        try:
            resp = httpx.post(url, json={**body, "cache": {"no-cache": True}}, headers=headers, timeout=30)
        except httpx.HTTPError:
            return False
        return resp.status_code == 200 and resp.headers.get("x-served-by") == "tiny"

    def eventually(condition: Callable[[], bool], what: str, within_s: float = 90) -> None:
        deadline = time.monotonic() + within_s
        while not condition():
            assert proc.poll() is None, f"ask serve stopped: {said.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"{what}: {said.read_text()[-2000:]}"
            time.sleep(0.2)

    try:
        eventually(tiny_answers, "tiny never answered")
        tiny = f"http://127.0.0.1:{tiny_port}"
        assert httpx.post(f"{tiny}/v1/chat/completions", json=body, timeout=30).status_code == 401  # no key
        assert httpx.get(f"{tiny}/props", timeout=30).status_code == 401  # nor the weights' path
        pids = subprocess.run(
            ["pgrep", "-f", f"ask_cli.embedded --host 127.0.0.1 --port {tiny_port}"], capture_output=True, text=True
        ).stdout.split()
        assert len(pids) == 1, pids
        os.kill(int(pids[0]), signal.SIGKILL)
        eventually(lambda: "embedded model: answering again" in said.read_text(), "no restart")
        assert tiny_answers()
        assert proc.poll() is None
    finally:
        _stop(proc)
    text = said.read_text()
    assert "embedded model was killed by signal 9; restarting it in 1 s (its log: " in text


def test_ask_and_its_commands_find_a_proxy_on_another_port_while_it_runs(
    tmp_path: Path, fake_ollama: object, tiny_url: str
) -> None:
    """`ask serve --port P`: `ask`, `ask models` and `ask setup` use P with no ASK_PROXY_URL (they used :4000),
    from a 0600 state file that goes when the stack stops."""
    port = free_port()
    env = {k: v for k, v in _against_fakes(tmp_path, fake_ollama, tiny_url).items() if k != "ASK_PROXY_URL"}
    said = tmp_path / "serve.err"
    cmd = [sys.executable, "-m", "ask_cli", "serve", "--no-embedded", "--no-warm", "--port", str(port)]
    with said.open("w") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    state = tmp_path / "data" / "ask" / "serve.json"
    try:
        deadline = time.monotonic() + 60
        while "serving; Ctrl-C stops the stack" not in said.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, said.read_text()[-2000:]
            time.sleep(0.1)
        assert stat.S_IMODE(state.stat().st_mode) == 0o600
        answer = run_ask("-m", "fast-3b", "--no-cache", "hi", env=env, timeout=60)
        assert answer.returncode == 0 and answer.stdout.startswith("Hello from llama3.2:3b"), answer.stderr
        models = run_ask("models", env=env, timeout=60)
        assert models.returncode == 0 and "read from" not in models.stderr, models.stderr  # the proxy's view
        setup = run_ask("setup", "opencode", env=env, timeout=60)
        assert f"http://127.0.0.1:{port}/v1" in setup.stdout and ":4000" not in setup.stdout
    finally:
        stop([proc], grace_s=30)  # type: ignore[list-item]
    assert not state.exists()
    later = run_ask("-m", "fast-3b", "--no-cache", "hi", env=env, timeout=60)
    assert later.returncode == 1 and "the proxy is not running at http://127.0.0.1:4000" in later.stderr


def test_the_proxy_killed_after_the_start_is_one_line_and_the_stack_stops(
    tmp_path: Path, fake_ollama: object, tiny_url: str
) -> None:
    """A proxy killed by a signal (the OOM killer, `kill -9`) wrote nothing about why: ask serve says so in one
    line with its log's path (it printed the log's tail: LiteLLM's start screen, in colour) and exits 1."""
    port = free_port()
    env = _against_fakes(tmp_path, fake_ollama, tiny_url)
    said = tmp_path / "serve.err"
    cmd = [sys.executable, "-m", "ask_cli", "serve", "--no-embedded", "--no-warm", "--port", str(port)]
    with said.open("w") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while "serving; Ctrl-C stops the stack" not in said.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, said.read_text()[-2000:]
            time.sleep(0.1)
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        assert len(children) == 1, children  # the proxy alone (--no-embedded)
        os.kill(int(children[0]), signal.SIGKILL)
        assert proc.wait(timeout=30) == 1
    finally:
        stop([proc], grace_s=30)  # type: ignore[list-item]
    lines = said.read_text().splitlines()
    log = tmp_path / "data" / "ask" / "logs" / "litellm.log"
    end = lines[lines.index("serving; Ctrl-C stops the stack") + 1 :]
    assert end == [f"proxy was killed by signal 9 (its log: {log})", "stopping the stack"], end


def test_a_data_dir_that_cannot_be_written_is_one_line(tmp_path: Path) -> None:
    """The data dir unwritable (read-only, full, or here a file where the directory should be): one line naming
    it, exit 1, nothing started (was an OSError traceback)."""
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("")
    env = {**stack_env(tmp_path), "XDG_DATA_HOME": str(blocked)}
    result = run_ask("serve", "--no-embedded", "--port", str(free_port()), env=env, timeout=60)
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"ask: cannot write {blocked}") and "set XDG_DATA_HOME elsewhere" in line, line
