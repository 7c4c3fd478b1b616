"""One error type for every bad input, naming the file, the field and what was expected."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError


class BibleError(ValueError):
    """A series bible or script that cannot be used. Raised before anything is generated."""

    def __init__(self, path: Path | str, problems: list[str]):
        self.path = str(path)
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{self.path}: {len(problems)} problem(s)\n{lines}")

    @classmethod
    def from_validation(cls, path: Path | str, err: ValidationError, prefix: str = "",
                        lines: dict[tuple[str, ...], int] | None = None) -> "BibleError":
        """One problem per pydantic error; with ``lines`` (key path -> line, from the strict YAML
        loader) each names the line of the closest key written in the file."""
        problems = []
        for e in err.errors():
            field = ".".join(str(p) for p in (prefix, *e["loc"]) if p != "")
            got = e.get("input")
            shown = "" if isinstance(got, (dict, list)) or got is None else f" (got {got!r})"
            msg = e["msg"].removeprefix("Value error, ")
            line = _line_of(lines or {}, tuple(str(p) for p in e["loc"]))
            problems.append(f"{f'line {line}: ' if line else ''}{field or '<top>'}: {msg}{shown}")
        return cls(path, problems)


def _line_of(lines: dict[tuple[str, ...], int], loc: tuple[str, ...]) -> int | None:
    """The line of the longest prefix of ``loc`` written in the file (a missing field: its parent)."""
    for n in range(len(loc), 0, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return None
