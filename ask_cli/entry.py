"""The `ask` console script. A question is answered here, cache hit or miss, before Typer is imported.

Cron jobs and scripts ask all day: a call should cost little more than starting Python and the request
itself (bench/cli.py). The question's options are read from the tables Typer's parameters are built from
(`query.TIER_FLAGS`, `query.QUESTION_OPTIONS`); a command line this path does not take exactly as click would
(a command, --help, --version, an unknown flag, a value that does not convert, `-mNAME`) goes to the full CLI
(`ask_cli.cli`), which parses it, says the usage error or runs the command.
"""

from __future__ import annotations

import sys

from ask_cli import query as q

# The full CLI's commands and what each is for: the one list. ask_cli/cli.py registers each under its name (and
# refuses one not listed here) and lists them in `ask --help`; on this path their names are never a question.
COMMANDS: dict[str, str] = {
    "serve": "run the stack",
    "stats": "is it paying off?",
    "models": "tiers, chains, what is loaded",
    "doctor": "what is wrong, and the fix",
    "setup": "point a coding assistant at the stack",
    "service": "the stack as login services",
}
_OPTIONS = {name: option for option in q.QUESTION_OPTIONS for name in option.names}
_TIERS = {row.flag for row in q.TIER_FLAGS}


def parse_question(argv: list[str]) -> tuple[str | None, list[str], dict[str, object]] | None:
    """(prompt, tier flags, `q.ask` keywords) when click would parse `argv` as this question; None otherwise.

    Mirrors click's rules for what the tables declare: options anywhere, `--name=value`, a value option takes
    the next argument whatever it looks like, `--` ends the options, one positional (the prompt)."""
    if argv[:1] and argv[0] in COMMANDS:
        return None
    prompt: str | None = None
    flags: list[str] = []
    options: dict[str, object] = {}
    args = iter(argv)
    for arg in args:
        if arg == "--":
            rest = list(args)
            if len(rest) > 1 or (rest and prompt is not None):
                return None
            prompt = rest[0] if rest else prompt
            break
        if not arg.startswith("-") or arg == "-":
            if prompt is not None:
                return None
            prompt = arg
            continue
        name, inline, value = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        option = _OPTIONS.get(name)
        if name in _TIERS and not inline:
            flags.append(name)
        elif option is None or (option.kind is bool and inline):
            return None
        elif option.kind is bool:
            options[option.dest] = True
        else:
            raw = value if inline else next(args, None)
            if raw is None:
                return None
            try:
                options[option.dest] = option.kind(raw)
            except ValueError:
                return None
    return prompt, flags, options


def main() -> None:
    parsed = parse_question(sys.argv[1:])
    if parsed is not None:
        prompt, flags, options = parsed
        sys.exit(q.ask(prompt, flags, **options))  # type: ignore[arg-type]
    from ask_cli.cli import main as full_cli

    full_cli()
