"""Strict reading of the writer's files (series.yaml, scripts, the price book).

Plain ``yaml.safe_load`` lets a second ``budget:`` silently win, expands anchors without limit
(a billion-laughs file took 7.5 GB), and forgets where each value was written. Here a file is
size-checked before it is read, control characters are refused, anchors and aliases are refused
while composing (before anything is expanded), duplicate keys are refused, and every key's line
is recorded so validation errors can point at it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from yaml.events import AliasEvent, CollectionStartEvent, ScalarEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from webtoon_assets.bible.errors import BibleError

MAX_INPUT_BYTES = 1_000_000  # a season's bible is a few kB; anything near this is a mistake or an attack
MAX_DEPTH = 32  # nesting deeper than this is no bible; it would also exhaust the parser's recursion
# C0 and C1 controls and DEL, except tab and newline; a carriage return only before a newline.
CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]|\r(?!\n)")

Lines = dict[tuple[str, ...], int]  # key path (as strings) -> 1-based line where it was written


def read_text(path: Path) -> str:
    """A file's text: refused when over MAX_INPUT_BYTES (checked before reading), not UTF-8, or
    holding control characters (each reported with its line)."""
    try:
        size = path.stat().st_size
        if size > MAX_INPUT_BYTES:
            raise BibleError(path, [f"file is {size:,} bytes; expected at most {MAX_INPUT_BYTES:,}"])
        with path.open("rb") as f:
            data = f.read(MAX_INPUT_BYTES + 1)  # bounded even if the file grew since stat
    except OSError as e:
        raise BibleError(path, [f"cannot be read ({e.strerror}); expected a readable file"]) from None
    if len(data) > MAX_INPUT_BYTES:
        raise BibleError(path, [f"file is over {MAX_INPUT_BYTES:,} bytes; expected at most that"])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BibleError(path, [f"expected UTF-8 text ({e})"]) from None
    problems = [f"line {text.count(chr(10), 0, m.start()) + 1}: control character U+{ord(m.group()):04X}; "
                "expected printable text (tabs and line breaks are fine)" for m in CONTROL_RE.finditer(text)]
    if problems:
        raise BibleError(path, problems[:20])
    return text


class _Refused(Exception):
    def __init__(self, line: int, message: str):
        super().__init__(f"line {line}: {message}")


class StrictLoader(yaml.SafeLoader):
    """A SafeLoader that refuses anchors, aliases and deep nesting as each node is composed."""

    _depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event = self.peek_event()
        line = event.start_mark.line + 1
        if isinstance(event, AliasEvent) or (isinstance(event, (ScalarEvent, CollectionStartEvent)) and event.anchor):
            raise _Refused(line, "YAML anchors and aliases ('&name', '*name') are not accepted; "
                                 "expected each value written out where it is used")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(line, f"nested more than {MAX_DEPTH} levels deep; expected a flatter file")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _walk(node: Node, path: tuple[str, ...], lines: Lines, problems: list[str]) -> None:
    """Record each key's and item's line; refuse duplicate keys, non-scalar keys and the
    inline-mapping comma trap."""
    if isinstance(node, SequenceNode):
        for i, item in enumerate(node.value):
            lines[(*path, str(i))] = item.start_mark.line + 1
            _walk(item, (*path, str(i)), lines, problems)
        return
    if not isinstance(node, MappingNode):
        return
    seen: dict[str, int] = {}
    previous: tuple[ScalarNode, Node] | None = None
    for key, value in node.value:
        line = key.start_mark.line + 1
        if not isinstance(key, ScalarNode):
            problems.append(f"line {line}: {'.'.join(path) or '<top>'}: expected a plain key, not a list or mapping")
            continue
        here = (*path, key.value)
        field = ".".join(here)
        if key.value in seen:
            problems.append(f"line {line}: {field}: duplicate key (first at line {seen[key.value]}); "
                            "expected each key once")
        seen.setdefault(key.value, line)
        lines.setdefault(here, line)
        # `{description: flour dust, oven glow}`: the comma ends the value and `oven glow` becomes a
        # key with no value. An explicit null (`~`, `null`) is not this; an empty plain value is.
        if (node.flow_style and key.style is None and isinstance(value, ScalarNode)
                and value.tag.endswith(":null") and value.value == ""):
            hint = ""
            if previous is not None and isinstance(previous[1], ScalarNode):
                hint = f', e.g. {previous[0].value}: "{previous[1].value}, {key.value}"'
            problems.append(f"line {line}: {field}: a key with no value inside {{...}}: a comma in a value "
                            f"splits it there; expected the value quoted{hint}")
        previous = (key, value)
        _walk(value, here, lines, problems)


def load_yaml(path: Path) -> tuple[Any, Lines]:
    """Parse one YAML file strictly; returns the data and the line of every key path."""
    text = read_text(path)
    loader = StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}
        lines: Lines = {}
        problems: list[str] = []
        _walk(node, (), lines, problems)
        if problems:
            raise BibleError(path, problems)
        return loader.construct_document(node), lines
    except _Refused as e:
        raise BibleError(path, [str(e)]) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        what = " ".join(filter(None, [e.context, e.problem]))
        raise BibleError(path, [f"{where}expected valid YAML ({what})"]) from None
    except yaml.YAMLError as e:
        raise BibleError(path, [f"expected valid YAML ({e})"]) from None
    finally:
        loader.dispose()
