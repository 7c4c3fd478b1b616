"""What an endpoint accepts, declared with it in the price book (``argument_schemas``, ``accepts``),
so free-form ``arguments`` in series.yaml are checked before any spend, not by a paid 422."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

ArgType = Literal["int", "number", "string", "bool", "enum", "object"]


class ArgumentSpec(BaseModel):
    """One argument: its type, an enum's values, a number's bounds. ``int`` may be written alone."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: ArgType
    values: list[str | int | float | bool] | None = None
    min: float | None = None
    max: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        return {"type": v} if isinstance(v, str) else v

    @model_validator(mode="after")
    def _consistent(self) -> "ArgumentSpec":
        if (self.type == "enum") != (self.values is not None):
            raise ValueError("values: expected a list of values for type enum, and only for enum")
        if (self.min is not None or self.max is not None) and self.type not in ("int", "number"):
            raise ValueError("min/max: expected only on int or number")
        return self

    def problem(self, value: Any) -> str | None:
        """What is wrong with ``value``, as 'expected ...', or None."""
        if self.type == "enum":
            # exact match: 2 is not '2' (the endpoint would refuse it, maybe after charging)
            ok = any(value == v and type(value) is type(v) for v in self.values or [])
            return None if ok else f"expected one of {self.values}"
        is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = {"int": isinstance(value, int) and not isinstance(value, bool), "number": is_number,
              "string": isinstance(value, str), "bool": isinstance(value, bool),
              "object": isinstance(value, dict)}[self.type]
        wanted = {"int": "a whole number", "number": "a number", "string": "text", "bool": "true or false",
                  "object": "a mapping"}[self.type]
        if self.min is not None or self.max is not None:
            lo = "" if self.min is None else f" from {self.min:g}"
            hi = "" if self.max is None else f" to {self.max:g}"
            wanted += (lo + hi) if lo else f" up to {self.max:g}"
            ok = ok and (self.min is None or value >= self.min) and (self.max is None or value <= self.max)
        return None if ok else f"expected {wanted}"


Schema = dict[str, ArgumentSpec]


def argument_problems(endpoint: str, schema: Schema | None, arguments: dict[str, Any]) -> dict[str, str]:
    """Argument name -> what is wrong with it, for ``arguments`` sent to ``endpoint``."""
    out: dict[str, str] = {}
    for name, value in arguments.items():
        spec = (schema or {}).get(name)
        if spec is None:
            allowed = sorted(schema or {})
            out[name] = (f"{endpoint} takes no argument {name!r}; expected one of {allowed}" if allowed else
                         f"{endpoint} takes no extra arguments (none are declared for it in the price book)")
        elif (p := spec.problem(value)) is not None:
            out[name] = f"{p} for {endpoint} (got {value!r})"
    return out
