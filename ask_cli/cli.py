"""The `ask` command line: `ask "prompt"` for an answer, `ask <command>` for everything else.

`main` dispatches: a first argument that names a command goes to the command group, anything else is a
question. (A question that is exactly a command's name: `ask -- stats`.)
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ask_cli import __version__, paths

if TYPE_CHECKING:
    from ask_cli.serve import Stack
    from ask_cli.service import Manager as ServiceManager

app = typer.Typer(
    help="A cheap local LLM tier on your own machine, served by LiteLLM.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
question_app = typer.Typer(add_completion=True, pretty_exceptions_enable=False)
COMMANDS_HELP = (
    "Commands: ask serve (run the stack), ask stats (is it paying off?), ask models (tiers, chains, "
    "what is loaded), ask doctor (what is wrong, and the fix), ask setup TOOL (coding assistants). "
    "`ask <command> --help` for their options."
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ask {__version__}")
        raise typer.Exit()


@app.callback()
def group() -> None:
    """Pick the tier explicitly; the stack makes it work and tells you when it had to fall back."""


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"ask: {message}", err=True)
    return typer.Exit(code)


@app.command()
def serve(
    config: Annotated[
        Path | None, typer.Option(help="The LiteLLM config. Example: --config ./litellm-config.yaml")
    ] = None,
    port: Annotated[int, typer.Option(help="The proxy's port on 127.0.0.1. Example: --port 4000")] = 4000,
    embedded: Annotated[
        bool, typer.Option(help="Start the embedded model (tier `tiny`). Example: --no-embedded")
    ] = True,
    cloud: Annotated[
        bool, typer.Option("--cloud", help="Add the cloud lanes whose API keys are set (litellm-config.cloud.yaml).")
    ] = False,
    ask: Annotated[
        str | None, typer.Option("--ask", help="Once ready, answer this prompt. Example: --ask 'Say hi'")
    ] = None,
    model: Annotated[str, typer.Option(help="The tier for --ask. Example: --model fast-9b")] = "fast-9b",
    exit_after: Annotated[bool, typer.Option("--exit", help="Stop after answering --ask (a smoke test).")] = False,
) -> None:
    """Start the embedded model and the LiteLLM proxy on 127.0.0.1; Ctrl-C stops both.

    Example: ask serve --ask "Say hello in five words."
    """
    from ask_cli import serve as serving
    from ask_cli.stack_config import ConfigError, default_config_path

    stack = serving.Stack(config=config or default_config_path(), port=port, embedded=embedded, cloud=cloud)
    serving.stopping_on_signals()
    try:
        stack.start()
        if ask:
            _answer(stack, model, ask)
            if exit_after:
                return
        typer.echo("serving; Ctrl-C stops the stack", err=True)
        code = stack.watch()
        if code:
            raise typer.Exit(code)
    except ConfigError as exc:
        raise fail(str(exc), 2) from None
    except RuntimeError as exc:
        raise fail(str(exc)) from None
    except serving.Stopped:
        typer.echo("stopping the stack", err=True)
    finally:
        stack.stop()


@app.command()
def stats(
    since: Annotated[str | None, typer.Option(help="Only calls this recent. Example: --since 7d")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The figures as one JSON object.")] = False,
) -> None:
    """Is the local tier paying off? Calls, served_by, cache hits, demotions, errors, latency per model.

    Example: ask stats --since 7d
    """
    import json

    from ask_cli import telemetry

    try:
        since_s = telemetry.parse_since(since) if since else None
    except ValueError as exc:
        raise fail(str(exc), 2) from None
    try:
        summary = telemetry.stats(telemetry.read(since_s))
    except OSError as exc:
        raise fail(f"cannot read {telemetry.log_path()}: {exc.strerror or exc}") from None
    typer.echo(json.dumps(summary, indent=2) if as_json else telemetry.format_table(summary))


@app.command()
def models(
    as_json: Annotated[bool, typer.Option("--json", help="The table as a JSON list.")] = False,
    config: Annotated[Path | None, typer.Option(help="The yaml if the proxy is down. Example: --config x.yaml")] = None,
) -> None:
    """Each tier: backend, tag, fallback chain, keep_alive, and whether it is loaded now and until when.

    Example: ask models
    """
    from ask_cli import models as listing

    raise typer.Exit(listing.run(as_json=as_json, config=config))


@app.command()
def doctor(
    config: Annotated[Path | None, typer.Option(help="The yaml to check. Example: --config x.yaml")] = None,
    ram_gb: Annotated[float | None, typer.Option(help="RAM to budget (default: this machine's). Example: 24")] = None,
    os_gb: Annotated[float, typer.Option(help="RAM the OS and open apps keep. Example: --os-gb 14")] = 12.0,
) -> None:
    """One line per check, with the fix for each failure: proxy and key, Ollama and its tags, the embedded
    model, llama-swap, Redis, and which models cannot be resident together in this machine's RAM.

    Example: ask doctor --ram-gb 24
    """
    from ask_cli import doctor as checks

    raise typer.Exit(checks.run(config=config, ram_gb=ram_gb, os_allowance_gb=os_gb))


@app.command()
def setup(
    tool: Annotated[str, typer.Argument(help="opencode, claude-code, continue, aider or env. Example: opencode")],
    write: Annotated[bool, typer.Option("--write", help="Write it where the tool reads it (diff, backup).")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="With --write: do not ask before writing.")] = False,
) -> None:
    """Point a coding assistant at this stack: prints its config (base URL, key reference, our tier names).

    Example: ask setup claude-code --write
    """
    from ask_cli import assistants

    raise typer.Exit(assistants.run(tool, write, yes))


service_app = typer.Typer(
    help="Keep the stack running after a reboot: launchd on a Mac, systemd --user on Linux.", no_args_is_help=True
)
app.add_typer(service_app, name="service")
ServiceNames = Annotated[list[str] | None, typer.Argument(help="proxy, ollama, redis or all (default: proxy)")]
Manager = Annotated[str | None, typer.Option("--manager", help="launchd or systemd (default: this OS's)", hidden=True)]


def _service_manager(manager: str | None) -> ServiceManager:
    from ask_cli import service

    try:
        return service.manager_for(manager)
    except service.ServiceError as exc:
        raise fail(str(exc)) from None


@service_app.command("install")
def service_install(
    names: ServiceNames = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask before writing.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show what would be written and run.")] = False,
    port: Annotated[int, typer.Option(help="The proxy's port. Example: --port 4000")] = 4000,
    config: Annotated[Path | None, typer.Option(help="The LiteLLM config. Example: --config x.yaml")] = None,
    cloud: Annotated[
        bool, typer.Option("--cloud", help="The proxy runs `ask serve --cloud` (keys: secrets.env).")
    ] = False,
    manager: Manager = None,
) -> None:
    """Write the service definitions with this machine's paths, show them, then load them.

    Example: ask service install all
    """
    from ask_cli import service
    from ask_cli.stack_config import default_config_path

    mgr = _service_manager(manager)
    try:
        chosen = service.chosen(names or [])
        rendered = [service.render(mgr, n, config or default_config_path(), port=port, cloud=cloud) for n in chosen]
    except service.ServiceError as exc:
        raise fail(str(exc), 2) from None
    typer.echo(service.preview(mgr, rendered))
    if dry_run:
        return
    if not yes:
        if not sys.stdin.isatty():
            raise fail("not a terminal: add --yes to install without a prompt (or --dry-run to only look)", 2)
        if not typer.confirm("Install?", default=False):
            raise fail("nothing installed", 1)
    try:
        if "proxy" in chosen:  # the service reads the key at start, from its 0600 file: never from the definition
            from ask_cli import secrets_file

            typer.echo(f"master key: {paths.ensure_key_file()}")
            secrets_file.ensure_private()
            typer.echo(
                "passwords and API keys (REDIS_PASSWORD, DATABASE_URL, *_API_KEY): "
                f"{secrets_file.secrets_path()} (0600), read by ask serve at start"
            )
        service.install(mgr, rendered, typer.echo)
    except service.ServiceError as exc:
        raise fail(str(exc)) from None
    if mgr.kind == "launchd":
        typer.echo(f"check with: ask service status (or launchctl print gui/$(id -u)/{rendered[0].label})")
    else:
        typer.echo("check with: ask service status; to start at boot before you log in: loginctl enable-linger")


@service_app.command("uninstall")
def service_uninstall(names: ServiceNames = None, manager: Manager = None) -> None:
    """Stop the services and remove their definitions (logs stay).

    Example: ask service uninstall all
    """
    from ask_cli import service

    mgr = _service_manager(manager)
    try:
        service.uninstall(mgr, service.chosen(names or []), typer.echo)
    except service.ServiceError as exc:
        raise fail(str(exc)) from None


@service_app.command("status")
def service_status(
    names: ServiceNames = None,
    port: Annotated[int, typer.Option(help="The proxy's port. Example: --port 4000")] = 4000,
    manager: Manager = None,
) -> None:
    """Installed, running (pid), answering, and where the logs are. Exit 1 if an installed one is not running.

    Example: ask service status all
    """
    from ask_cli import service

    mgr = _service_manager(manager)
    try:
        lines, healthy = service.status_lines(mgr, service.chosen(names or ["all"]), port=port)
    except service.ServiceError as exc:
        raise fail(str(exc), 2) from None
    typer.echo("\n".join(lines))
    raise typer.Exit(0 if healthy else 1)


@service_app.command("logs")
def service_logs(
    names: ServiceNames = None,
    lines: Annotated[int, typer.Option("-n", "--lines", help="Lines from the end. Example: -n 100")] = 50,
    follow: Annotated[bool, typer.Option("-f", "--follow", help="Keep printing new lines until Ctrl-C.")] = False,
    manager: Manager = None,
) -> None:
    """The services' log files, last lines first per service.

    Example: ask service logs proxy -n 100
    """
    from ask_cli import service

    mgr = _service_manager(manager)
    try:
        chosen = service.chosen(names or ["all"])
    except service.ServiceError as exc:
        raise fail(str(exc), 2) from None
    files = [mgr.log_dir / f"{name}.log" for name in chosen]
    for name, path in zip(chosen, files, strict=True):
        typer.echo(f"==> {path} <==" if path.exists() else f"==> {name}: no log yet at {path}")
        for line in service.tail(path, lines):
            typer.echo(line)
    if follow:
        try:
            service.follow(files)
        except KeyboardInterrupt:
            raise typer.Exit(0) from None


def _answer(stack: Stack, model: str, prompt: str) -> None:
    from ask_cli import client, paths
    from plugins.provenance import degraded_marker

    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": 64}
    try:
        reply, pieces = client.stream_chat(stack.url, paths.master_key() or "", body)
        if reply.demoted:
            typer.echo(degraded_marker(reply.requested, reply.served_by), err=True)
        for piece in pieces:
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
    except client.ProxyError as exc:
        raise fail(exc.message) from None


@question_app.command(epilog=COMMANDS_HELP)
def question(
    prompt: Annotated[str | None, typer.Argument(help='The question; stdin is appended. Example: ask "hi"')] = None,
    nine_b: Annotated[bool, typer.Option("--9b", help="fast-9b, the default. Example: ask --9b 'hi'")] = False,
    three_b: Annotated[bool, typer.Option("--3b", help="fast-3b. Example: ask --3b 'classify: ...'")] = False,
    one_b: Annotated[bool, typer.Option("--1b", help="fast-1b. Example: ask --1b 'yes or no: ...'")] = False,
    think: Annotated[bool, typer.Option("--think", help="think-9b. Example: ask --think 'why …'")] = False,
    coder: Annotated[bool, typer.Option("--coder", help="coder-30b. Example: ask --coder 'refactor ...'")] = False,
    heavy: Annotated[bool, typer.Option("--heavy", help="heavy, llama.cpp. Example: ask --heavy 'plan ...'")] = False,
    council: Annotated[bool, typer.Option("--council", help="council, uncached. Example: ask --council '…'")] = False,
    tiny: Annotated[bool, typer.Option("--tiny", help="tiny, embedded. Example: ask --tiny 'hi'")] = False,
    premium: Annotated[
        bool, typer.Option("--premium", help="premium, paid cloud (ask serve --cloud). Example: ask --premium '…'")
    ] = False,
    model: Annotated[str | None, typer.Option("-m", "--model", help="Any tier. Example: -m coder-30b")] = None,
    system: Annotated[str | None, typer.Option("-s", "--system", help="System prompt. Example: -s 'Be terse.'")] = None,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature. Example: --temperature 0")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Answer length cap. Example: --max-tokens 200")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object: answer, served_by, demoted, ...")] = False,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="A fresh answer: no cache read or written.")] = False,
    no_fallback: Annotated[bool, typer.Option("--no-fallback", help="Fail rather than demote. For cron.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Ask one tier one question; the answer streams to stdout, a demotion is said on stderr.

    Example: git diff --staged | ask "write a one-line commit message"
    """
    from ask_cli import query as q

    flags = [
        f
        for f, on in (
            ("--9b", nine_b),
            ("--3b", three_b),
            ("--1b", one_b),
            ("--think", think),
            ("--coder", coder),
            ("--heavy", heavy),
            ("--council", council),
            ("--tiny", tiny),
            ("--premium", premium),
        )
        if on
    ]
    try:
        tier = q.pick_tier(flags, model)
        text, warnings = q.read_prompt(prompt)
    except q.UsageError as exc:
        raise fail(str(exc), 2) from None
    for warning in warnings:
        typer.echo(f"ask: warning: {warning}", err=True)
    asked = q.Question(
        model=tier,
        prompt=text,
        system=system,
        temperature=temperature,
        max_tokens=max_tokens,
        fallbacks=not no_fallback,
        cached=not no_cache,
    )
    if not no_cache and q.answer_from_cache(asked, as_json):
        return

    def emit(piece: str) -> None:
        if not as_json:
            sys.stdout.write(piece)
            sys.stdout.flush()

    from ask_cli import client

    outcome = q.Outcome(exit_code=1)
    try:
        outcome = q.ask_proxy(asked, emit, lambda line: typer.echo(line, err=True))
    except q.NoKey as exc:
        outcome.error = str(exc)
    except client.ProxyUnreachable as exc:
        outcome.error = f"the proxy is not running at {client.proxy_url()} ({exc}): start it with `ask serve`"
    except client.ProxyError as exc:
        outcome.error = exc.message
    except KeyboardInterrupt:
        outcome.exit_code, outcome.error = 130, "interrupted"
    finally:
        warnings = [q.log_call(asked, outcome, cache_hit=False)]
    if outcome.exit_code == 0:
        if as_json:
            typer.echo(q.as_json(asked, outcome, cache_hit=False))
        elif outcome.answer and not outcome.answer.endswith("\n"):
            sys.stdout.write("\n")
        if not no_cache:
            warnings.append(q.store_answer(asked, outcome))
    for warning in filter(None, warnings):
        typer.echo(f"ask: warning: {warning}", err=True)
    if outcome.exit_code == 130:
        typer.echo("", err=True)
        raise typer.Exit(130)
    if outcome.exit_code:
        raise fail(outcome.error or "failed")


def main() -> None:
    """The `ask` console script."""
    first = sys.argv[1] if len(sys.argv) > 1 else None
    commands = {c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands}
    commands |= {g.name for g in app.registered_groups if g.name}
    if first == "--":
        del sys.argv[1]
    elif first in commands:
        app(prog_name="ask")
        return
    question_app(prog_name="ask")
