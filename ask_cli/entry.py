"""The `ask` console script. A question is answered here, cache hit or miss, and `ask stats` run, before Typer
is imported.

Cron jobs and scripts ask all day: a call should cost little more than starting Python and the request
itself (bench/cli.py). The options are read from the rows Typer's parameters are built from
(ask_cli/options.py: `query.TIER_FLAGS`, `query.QUESTION_OPTIONS`, `telemetry.STATS_OPTIONS`); a command
line this path does not take exactly as click would (another command, --help, --version, an unknown flag, a
value that does not convert, `-mNAME`) goes to the full CLI (`ask_cli.cli`), which parses it, says the usage
error or runs the command.
"""

from __future__ import annotations

import sys

from ask_cli import query as q
from ask_cli import telemetry
from ask_cli.options import parse

# The full CLI's commands and what each is for: the one list. ask_cli/cli.py registers each under its name (and
# refuses one not listed here) and lists them in `ask --help`; on this path their names are never a question.
COMMANDS: dict[str, str] = {
    "serve": "run the stack",
    "stats": "is it paying off?",
    "models": "tiers, chains, what is loaded, the RAM budget",
    "warm": "load a tier's model now",
    "doctor": "what is wrong, and the fix",
    "setup": "point a coding assistant at the stack",
    "service": "the stack as login services",
}


def parse_question(argv: list[str]) -> tuple[str | None, list[str], dict[str, object]] | None:
    """(prompt, tier flags, `q.ask` keywords) when click would parse `argv` as the question; None otherwise."""
    if argv[:1] and argv[0] in COMMANDS:
        return None
    return parse(argv, q.QUESTION_OPTIONS, [row.flag for row in q.TIER_FLAGS])


def main() -> None:
    argv = sys.argv[1:]
    if argv[:1] == ["stats"] and (parsed := parse(argv[1:], telemetry.STATS_OPTIONS, positional=False)):
        sys.exit(telemetry.show(**parsed[2]))  # type: ignore[arg-type]
    parsed = parse_question(argv)
    if parsed is not None:
        prompt, flags, options = parsed
        sys.exit(q.ask(prompt, flags, **options))  # type: ignore[arg-type]
    from ask_cli.cli import main as full_cli
    from contract import paths

    try:
        full_cli()
    except paths.KeyFileError as exc:  # any command that reads the key (doctor, models, warm, serve): one line
        sys.stderr.write(f"ask: {exc}\n")
        sys.exit(1)
