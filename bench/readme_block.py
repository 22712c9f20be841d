"""Generated figures in bench/README.md: each script owns one marked block and rewrites only that."""

from __future__ import annotations

from pathlib import Path

README = Path(__file__).resolve().parent / "README.md"


def write_block(name: str, block: str, readme: Path = README) -> None:
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = readme.read_text() if readme.exists() else ""
    new = f"{start}\n{block}\n{end}"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + new + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + new + "\n"
    readme.write_text(text)


def publish(name: str, out: Path, text: str, block: str, write_readme: bool) -> None:
    """Write a run's JSON to `out` and, when asked, its block into bench/README.md."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {out}")
    if write_readme:
        write_block(name, block)
        print("updated bench/README.md")
