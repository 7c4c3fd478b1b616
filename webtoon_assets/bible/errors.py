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
    def from_validation(cls, path: Path | str, err: ValidationError, prefix: str = "") -> "BibleError":
        problems = []
        for e in err.errors():
            field = ".".join(str(p) for p in (prefix, *e["loc"]) if p != "")
            got = e.get("input")
            shown = "" if isinstance(got, (dict, list)) or got is None else f" (got {got!r})"
            msg = e["msg"].removeprefix("Value error, ")
            problems.append(f"{field or '<top>'}: {msg}{shown}")
        return cls(path, problems)
