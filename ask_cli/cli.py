"""The `ask` command line: `ask "prompt"` for an answer, `ask <command>` for everything else.

The commands form one Typer group whose default command is the question (`DefaultGroup`): a first argument that
names a command runs it, anything else is asked. A question that is exactly a command's name: `ask -- stats`.
The commands are the ones `ask_cli.entry.COMMANDS` lists, the tier flags the rows of `ask_cli.query.TIER_FLAGS`.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup
from typer.main import get_install_completion_arguments

from ask_cli import __version__, assistants, telemetry
from ask_cli import query as q
from ask_cli.entry import COMMANDS
from ask_cli.options import Option
from contract import DEFAULT_TIER, paths

if TYPE_CHECKING:
    from ask_cli.service import Manager as ServiceManager

QUESTION = "question"  # the default command's name: never typed, `ask <anything else>` runs it


class DefaultGroup(TyperGroup):
    """A group with a default command, as click-default-group gives `llm`: when the first argument is not a
    command's name, the arguments are the question's. The group has no options of its own, so `ask --help`,
    `ask --version` and `ask --install-completion` are the question's."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        if not args or args[0] == QUESTION or args[0] not in self.commands:
            args = [QUESTION, *args]
        return super().parse_args(ctx, args)


class _AsTheProgram(typer.Context):
    @property
    def command_path(self) -> str:
        """`ask`, not `ask question`, in the usage line and in `Try 'ask --help'`."""
        return self.parent.command_path if self.parent else super().command_path


class QuestionCommand(TyperCommand):
    """The default command: usage and errors name it `ask`, and it carries the shell-completion options a root
    command would have."""

    context_class = _AsTheProgram

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params.extend(get_install_completion_arguments())


app = typer.Typer(
    cls=DefaultGroup,
    add_completion=False,
    add_help_option=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # click's plain help and errors: rich costs ~70 ms of import (bench/README.md, cli.py)
)


def command(name: str, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register one of `entry.COMMANDS` (KeyError for a name not listed there: the cache-hit path must know it)."""
    return app.command(name, short_help=COMMANDS[name], **kwargs)


def commands_epilog() -> str:
    listed = ", ".join(f"ask {name} ({about})" for name, about in COMMANDS.items())
    return f"Commands: {listed}. `ask <command> --help` for their options."


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ask {__version__}")
        raise typer.Exit()


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"ask: {message}", err=True)
    return typer.Exit(code)


def with_options(
    rows: tuple[Option, ...], tier_flags: tuple[q.TierFlag, ...] = ()
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give the command one Typer option per row of `rows` (ask_cli/options.py: the rows the fast path in
    ask_cli/entry.py parses) and of `tier_flags`, after its first parameter; it receives the others by their
    `dest` in `options` and the tier flags given as `tier_flags`. A new option is then one row."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        tiers = {f"tier{row.flag.replace('-', '_')}": row for row in tier_flags}
        options = {row.dest: row for row in rows}
        made = [
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                default=False,
                annotation=Annotated[bool, typer.Option(row.flag, help=row.help)],
            )
            for name, row in tiers.items()
        ] + [
            inspect.Parameter(
                dest,
                inspect.Parameter.KEYWORD_ONLY,
                default=False if row.kind is bool else None,
                annotation=Annotated[
                    row.kind if row.kind is bool else row.kind | None, typer.Option(*row.names, help=row.help)
                ],
            )
            for dest, row in options.items()
        ]
        own = [
            p.replace(kind=inspect.Parameter.KEYWORD_ONLY)  # Typer passes everything by name
            for p in inspect.signature(func, eval_str=True).parameters.values()
            if p.name not in ("tier_flags", "options")
        ]

        @functools.wraps(func)
        def wrapper(**kwargs: Any) -> Any:
            chosen = {dest: kwargs.pop(dest) for dest in options}
            if not tiers:
                return func(**kwargs, options=chosen)
            given = [row.flag for name, row in tiers.items() if kwargs.pop(name)]
            return func(**kwargs, tier_flags=given, options=chosen)

        wrapper.__signature__ = inspect.Signature([*own[:1], *made, *own[1:]])  # type: ignore[attr-defined]
        return wrapper

    return decorate


@command("serve")
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
    model: Annotated[str, typer.Option(help=f"The tier for --ask. Example: --model {DEFAULT_TIER}")] = DEFAULT_TIER,
    exit_after: Annotated[bool, typer.Option("--exit", help="Stop after answering --ask (a smoke test).")] = False,
    warm: Annotated[
        bool, typer.Option(help=f"Once ready, load {DEFAULT_TIER}'s model in the background. Example: --no-warm")
    ] = True,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="LiteLLM's and llama.cpp's own output here, not in their logs.")
    ] = False,
) -> None:
    """Start the embedded model and the LiteLLM proxy on 127.0.0.1; Ctrl-C stops both.

    The embedded model (tier `tiny`) listens on 127.0.0.1:11435, or where TINY_API_BASE says
    (TINY_API_BASE=http://127.0.0.1:11500/v1); a server already answering there is used as it is.
    While it runs, `ask`, `ask setup`, `ask models` and `ask doctor` find this proxy (its --port) in
    ~/.local/share/ask/serve.json, unless ASK_PROXY_URL is set.

    Example: ask serve --ask "Say hello in five words."
    """
    from ask_cli import serve as serving
    from ask_cli.stack_config import ConfigError, default_config_path

    stack = serving.Stack(
        config=config or default_config_path(),
        port=port,
        embedded=embedded,
        cloud=cloud,
        verbose=verbose,
        warm=warm and not exit_after,  # a smoke test stops at once: nothing would use the warm model
    )
    serving.stopping_on_signals()
    try:
        stack.start()
        if ask:  # a smoke test: a fresh answer, never one from a cache
            said = q.answer(q.Question(model=model, prompt=ask, max_tokens=64, cached=False), url=stack.url)
            if said.exit_code:
                raise fail(said.error or "failed")
            if exit_after:
                return
        typer.echo("serving; Ctrl-C stops the stack", err=True)
        code = stack.watch()
        if code:
            raise typer.Exit(code)
    except typer.Exit:
        raise
    except ConfigError as exc:
        raise fail(str(exc), 2) from None
    except RuntimeError as exc:
        raise fail(str(exc)) from None
    except OSError as exc:  # the data dir read-only or full: its logs, derived configs and state go there
        where = exc.filename or paths.data_dir()
        raise fail(
            f"cannot write {where} ({exc.strerror or exc}): ask serve keeps its logs and state in "
            f"{paths.data_dir()}; free space or fix its permissions, or set XDG_DATA_HOME elsewhere"
        ) from None
    except serving.Stopped:
        typer.echo("stopping the stack", err=True)
    finally:
        stack.stop()


@command("stats")
@with_options(telemetry.STATS_OPTIONS)
def stats(*, options: dict[str, Any]) -> None:
    """Is the local tier paying off? Calls, served_by, cache hits, demotions, errors, latency per model.

    Example: ask stats --since 7d
    """
    raise typer.Exit(telemetry.show(**options))


@command("models")
def models(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object: tiers, budget.")] = False,
    config: Annotated[Path | None, typer.Option(help="The yaml if the proxy is down. Example: --config x.yaml")] = None,
) -> None:
    """Each tier: backend, tag, fallback chain, keep_alive, and whether it is loaded now and until when; then the
    RAM budget: how much, from where, what is resident (busy or idle), loading and queued.

    Example: ask models
    """
    from ask_cli import models as listing

    raise typer.Exit(listing.run(as_json=as_json, config=config))


@command("doctor")
def doctor(
    config: Annotated[Path | None, typer.Option(help="The yaml to check. Example: --config x.yaml")] = None,
    ram_gb: Annotated[
        float | None, typer.Option(help="Budget this RAM instead of `ask models`' budget. Example: 24")
    ] = None,
    os_gb: Annotated[float, typer.Option(help="With --ram-gb: what the OS and apps keep. Example: --os-gb 14")] = 12.0,
) -> None:
    """One line per check, with the fix for each failure: proxy and key, Ollama and its tags, the embedded
    model, llama-swap, Redis, and which models cannot be resident together in this machine's RAM.

    Example: ask doctor --ram-gb 24
    """
    from ask_cli import doctor as checks

    raise typer.Exit(checks.run(config=config, ram_gb=ram_gb, os_allowance_gb=os_gb))


@command("warm")
def warm(
    tier: Annotated[str, typer.Argument(help=f"The tier whose model to load. Example: {DEFAULT_TIER}")],
) -> None:
    """Load a tier's model now, with one uncached one-token request through the proxy; never waits for, or
    pushes out, a busy model (the budget plugin refuses instead). Exit 1 if not warmed, 2 for an unknown tier.

    Example: ask warm coder-30b
    """
    from ask_cli import warm as warming

    raise typer.Exit(warming.run(tier))


@command("setup")
def setup(
    tool: Annotated[str, typer.Argument(help=f"{', '.join(assistants.ASSISTANTS)}. Example: opencode")],
    write: Annotated[bool, typer.Option("--write", help="Write it where the tool reads it (diff, backup).")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="With --write: do not ask before writing.")] = False,
) -> None:
    """Point a coding assistant at this stack: prints its config (base URL, key reference, our tier names).

    Example: ask setup claude-code --write
    """
    raise typer.Exit(assistants.run(tool, write, yes))


service_app = typer.Typer(
    help="Keep the stack running after a reboot: launchd on a Mac, systemd --user on Linux.", no_args_is_help=True
)
app.add_typer(service_app, name="service", short_help=COMMANDS["service"])
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
    from ask_cli.serve import CHILD_LOGS, logs_dir

    files = [mgr.log_dir / f"{name}.log" for name in chosen]
    if "proxy" in chosen:  # the service's log holds what `ask serve` says; LiteLLM's own output is beside it
        files.append(logs_dir() / CHILD_LOGS["proxy"])
        chosen = [*chosen, "LiteLLM"]
    for name, path in zip(chosen, files, strict=True):
        typer.echo(f"==> {path} <==" if path.exists() else f"==> {name}: no log yet at {path}")
        for line in service.tail(path, lines):
            typer.echo(line)
    if follow:
        try:
            service.follow(files)
        except KeyboardInterrupt:
            raise typer.Exit(0) from None


@app.command(QUESTION, cls=QuestionCommand, hidden=True, epilog=commands_epilog())
@with_options(q.QUESTION_OPTIONS, q.TIER_FLAGS)
def question(
    prompt: Annotated[str | None, typer.Argument(help='The question; stdin is appended. Example: ask "hi"')] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    *,
    tier_flags: list[str],
    options: dict[str, Any],
) -> None:
    """Ask one tier one question; the answer streams to stdout, a demotion is said on stderr.

    Example: git diff --staged | ask "write a one-line commit message"
    """
    raise typer.Exit(q.ask(prompt, tier_flags, **options))


def main() -> None:
    """The `ask` console script (after ask_cli.entry's cache-hit path)."""
    app(prog_name="ask")
