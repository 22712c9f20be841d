"""The `ask` console script. A cache hit is answered here, before Typer or any HTTP code is imported.

Cron jobs repeat the same question all day: on a hit the whole process should cost little more than
starting Python. Anything this small parser does not recognise goes to the full CLI (`ask_cli.cli`), which
parses, validates and reports errors; this path only ever answers or steps aside.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from ask_cli.query import TIER_BY_FLAG

# The question's options that change the answer's cache key, or not at all (--no-fallback, --json).
VALUE_OPTIONS = {
    "-m": "model",
    "--model": "model",
    "-s": "system",
    "--system": "system",
    "--temperature": "temperature",
    "--max-tokens": "max_tokens",
}
PLAIN_FLAGS = {"--json", "--no-fallback"}
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


@dataclass
class Parsed:
    flags: list[str] = field(default_factory=list)
    json: bool = False
    prompt: str | None = None
    model: str | None = None
    system: str | None = None
    temperature: str | None = None
    max_tokens: str | None = None


def parse_question(argv: list[str]) -> Parsed | None:
    """The question's parts if `argv` is a plain question this path can answer, else None."""
    found = Parsed()
    args = argv[1:] if argv[:1] == ["--"] else argv
    if argv[:1] != ["--"] and args[:1] and args[0] in COMMANDS:
        return None
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in TIER_BY_FLAG:
            found.flags.append(arg)
        elif arg in PLAIN_FLAGS:
            found.json = found.json or arg == "--json"
        elif arg in VALUE_OPTIONS and i + 1 < len(args):
            setattr(found, VALUE_OPTIONS[arg], args[i + 1])
            i += 1
        elif arg.startswith("-") or found.prompt is not None:
            return None
        else:
            found.prompt = arg
        i += 1
    return found


def cached_answer(argv: list[str]) -> bool:
    """Answer from the prompt cache if this is a cacheable question already answered; False otherwise."""
    from ask_cli import query as q

    parts = parse_question(argv)
    if parts is None:
        return False
    try:
        tier = q.pick_tier(parts.flags, parts.model)
        prompt, warnings = q.read_prompt(parts.prompt)
        temperature = float(parts.temperature) if parts.temperature is not None else None
        max_tokens = int(parts.max_tokens) if parts.max_tokens is not None else None
    except (q.UsageError, ValueError):
        return False
    if warnings:
        return False  # the full CLI says them
    question = q.Question(
        model=tier, prompt=prompt, system=parts.system, temperature=temperature, max_tokens=max_tokens
    )
    return q.answer_from_cache(question, parts.json)


def main() -> None:
    if cached_answer(sys.argv[1:]):
        return
    from ask_cli.cli import main as full_cli

    full_cli()
