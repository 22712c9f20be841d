"""Options declared once, as table rows: ask_cli/cli.py makes each row a Typer parameter (and so a `--help` line),
ask_cli/entry.py parses the same rows on the fast path with click's rules, before Typer is imported.

Stdlib only and cheap to import: every `ask` call reads it.
"""

from __future__ import annotations

from collections import namedtuple

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on every call
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping


class Option(namedtuple("Option", ["names", "dest", "kind", "help", "check"], defaults=(None,))):
    """One option: `names` its spellings, `dest` the keyword it is passed as, `kind` bool (a flag) or str, int,
    float (takes a value, converted as click converts it), `help` its `--help` line, `check` (optional) what is
    wrong with a converted value (click's words after "Invalid value for '--name': "), None when it is fine."""

    __slots__ = ()


def between(low: float, high: float | None = None) -> Callable[[float], str | None]:
    """A `check`: the value is at least `low` and, given `high`, at most `high` (click's IntRange/FloatRange)."""

    def check(value: float) -> str | None:
        if value != value or value < low or (high is not None and value > high):
            return (
                f"{value} is not in the range {low}<=x<={high}"
                if high is not None
                else f"{value} is not in the range x>={low}"
            )
        return None

    return check


def non_empty(value: str) -> str | None:
    """A `check`: not an empty (or all blank) string."""
    return None if value.strip() else "must not be empty"


def check_values(options: Iterable[Option], values: Mapping[str, object]) -> str | None:
    """The first usage error among the given `values` (by `dest`; None: not given), one line as click says it;
    None when all pass. The one place both parsers' values are checked: `ask` calls it with either's."""
    for option in options:
        value = values.get(option.dest)
        if option.check is not None and value is not None:
            problem = option.check(value)
            if problem:
                return "Invalid value for " + " / ".join(f"'{name}'" for name in option.names) + f": {problem}"
    return None


def parse(
    argv: list[str], options: Iterable[Option], flags: Iterable[str] = (), positional: bool = True
) -> tuple[str | None, list[str], dict[str, object]] | None:
    """(the positional argument, the `flags` given, each given option's value by `dest`) when click would parse
    `argv` exactly so; None when it might not (the full CLI then parses it and says any usage error).

    Mirrors click's rules for what the rows declare: options anywhere, `--name=value`, a value option takes the
    next argument whatever it looks like, `--` ends the options, at most one positional (none unless
    `positional`). `flags` are bool options passed as a list of the names given (the tier flags)."""
    by_name = {name: option for option in options for name in option.names}
    flag_names = set(flags)
    argument: str | None = None
    given: list[str] = []
    values: dict[str, object] = {}
    args = iter(argv)
    for arg in args:
        if arg == "--":
            rest = list(args)
            if len(rest) > 1 or (rest and argument is not None):
                return None
            argument = rest[0] if rest else argument
            break
        if not arg.startswith("-") or arg == "-":
            if argument is not None:
                return None
            argument = arg
            continue
        name, inline, value = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        option = by_name.get(name)
        if name in flag_names and not inline:
            given.append(name)
        elif option is None or (option.kind is bool and inline):
            return None
        elif option.kind is bool:
            values[option.dest] = True
        else:
            raw = value if inline else next(args, None)
            if raw is None:
                return None
            try:
                values[option.dest] = option.kind(raw)
            except ValueError:
                return None
    if argument is not None and not positional:
        return None
    return argument, given, values
