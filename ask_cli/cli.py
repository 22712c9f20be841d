"""The `ask` command line. This issue's surface: `ask serve`, the command that runs the stack."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ask_cli import __version__

if TYPE_CHECKING:
    from ask_cli.serve import Stack

app = typer.Typer(
    help="A cheap local LLM tier on your own machine, served by LiteLLM.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ask {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
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

    stack = serving.Stack(config=config or default_config_path(), port=port, embedded=embedded)
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
