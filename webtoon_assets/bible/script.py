"""The plain-text episode script format (see README, "Writing an episode").

    Title: The Lantern Shop
    # a comment

    SCENE lantern_shop [outfit=mira:raincoat]: Night. Rain on the windows.

    PANEL wide: mira, tomas [take=2, gutter=200, pace=pause, width=inset, aspect=square_hd, camera=low]
    Mira shoulders the door open.          <- action (any other line)
    MIRA: Hello?                           <- dialogue: SPEAKER (kind): text
    TOMAS (off): Shut the door.
    CAPTION: Three days after the storm.
    SFX: CREEAK

    PANEL close-up: mira [props=letter, bell, outfit=mira:courier]
    Mira holds up the letter; the bell rings.

A list option (``props=``, ``outfit=``) takes its values separated by commas, up to the next
``key=``; an outfit is ``character:outfit``. A scene's outfits hold for its panels; a panel's for
itself; a character's default outfit everywhere else.

The parser only shapes text into fields; every value is then checked by the pydantic
models and against the series (known characters, locations, props and outfits), with the line number.

A script whose header says ``Format: prose`` is prose (everything after the header); the
storyboard turns it into panels. ``Take: N`` in its header asks for a new conversion.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from webtoon_assets.bible.episode import LINE_KINDS, SHOTS, Episode, ProseScript
from webtoon_assets.bible.errors import BibleError
from webtoon_assets.bible.models import Series
from webtoon_assets.bible.yaml_strict import read_text
from webtoon_assets.sizes import IMAGE_SIZE_PRESETS

SCENE_RE = re.compile(r"^SCENE\s+(?P<loc>[^:\[]+?)\s*(?:\[(?P<opts>[^\]]*)\])?\s*(?::\s*(?P<desc>.*))?$")
PANEL_RE = re.compile(r"^PANEL\s+(?P<shot>[^:\[]+?)\s*(?::\s*(?P<cast>[^\[]*?))?\s*(?:\[(?P<opts>[^\]]*)\])?\s*$")
LINE_RE = re.compile(r"^(?P<who>[A-Z][A-Z0-9_ .'-]*?)\s*(?:\((?P<kind>[a-zA-Z ]+)\))?\s*:\s*(?P<text>.*)$")
HEADER_RE = re.compile(r"^(?P<key>[A-Za-z]+)\s*:\s*(?P<value>.*)$")
PANEL_OPTIONS: dict[str, tuple[str, ...] | None] = {  # None: a whole number
    "take": None, "gutter": None,
    "pace": ("rapid", "normal", "pause", "scene"),
    "width": ("full", "inset"),
    "aspect": tuple(IMAGE_SIZE_PRESETS),
    "camera": ("eye", "low", "high", "bird", "worm", "dutch"),
}
# Options whose value is a list, checked against the series: values separated by commas, up to the next key=.
LIST_OPTIONS = {"props": "prop ids or names", "outfit": "character:outfit pairs (e.g. outfit=mira:raincoat)"}
SCENE_OPTIONS = ("outfit",)


def split_options(text: str | None) -> list[tuple[str, str, str]]:
    """``[a=1, props=x, y, b=2]`` → (key, value, as written) per option; a piece with no ``=`` after a
    list option is one more of its values."""
    out: list[tuple[str, str, str]] = []
    for piece in filter(None, (o.strip() for o in (text or "").split(","))):
        key, eq, value = (x.strip() for x in piece.partition("="))
        if not eq and out and out[-1][0] in LIST_OPTIONS:
            k, v, written = out[-1]
            out[-1] = (k, f"{v},{piece}", f"{written}, {piece}")
        else:
            out.append((key, value, piece))
    return out


def parse_script(path: Path, series: Series, episode_id: str) -> Episode | ProseScript:
    """Parse and validate one script file; raise BibleError listing every problem found."""
    text = read_text(path)  # size-checked before reading; UTF-8; no control characters
    header, body = _header(text)
    if header.get("format", "panels").lower() == "prose":
        problems = [] if header.get("title") else ["title: expected a 'Title: ...' line in the header"]
        take = header.get("take", "1")
        if not take.isdigit() or int(take) < 1:
            problems.append(f"take: expected a whole number from 1, got {take!r}")
        if not body.strip():
            problems.append("expected the episode's prose after the header")
        if problems:
            raise BibleError(path, problems)
        return ProseScript(id=episode_id, series=series.id, title=header["title"], text=body.strip(),
                           take=int(take), path=str(path))
    if header.get("format", "panels").lower() != "panels":
        raise BibleError(path, [f"format: expected 'panels' or 'prose', got {header['format']!r}"])
    return parse_script_text(text, str(path), series, episode_id)


def _header(text: str) -> tuple[dict[str, str], str]:
    """Key: value lines before the first blank line that follows them; the rest is the body."""
    header: dict[str, str] = {}
    lines = text.splitlines()
    for i, raw in enumerate(lines):
        line = raw.strip()
        if line.startswith("#"):
            continue
        m = HEADER_RE.match(line)
        if m and not line.startswith(("SCENE", "PANEL")):
            header[m["key"].lower()] = m["value"].strip()
            continue
        if not line and header:
            return header, "\n".join(lines[i + 1:])
        if line:
            break
    return header, ""


def parse_script_text(text: str, where: str, series: Series, episode_id: str) -> Episode:
    """Parse and validate a script in the panel format; ``where`` names it in errors."""
    path = where
    problems: list[str] = []
    header: dict[str, str] = {}
    scenes: list[dict[str, Any]] = []
    panel: dict[str, Any] | None = None
    speakers = series.speaker_ids()
    names = {c.name.lower(): cid for cid, c in series.characters.items()}

    def character_id(token: str, lineno: int, field: str) -> str | None:
        t = token.strip()
        cid = t if t in series.characters else names.get(t.lower()) or speakers.get(t.upper())
        if cid is None:
            problems.append(
                f"line {lineno}: {field}: unknown character {t!r}; expected one of {sorted(series.characters)}"
            )
        return cid

    def outfit_choices(value: str, opt: str, lineno: int, where: str, into: dict[str, str],
                       cast: list[str] | None) -> None:
        """``mira:raincoat,juno:uniform`` into ``into``; on a panel, each character must be in its cast."""
        pairs = [v.strip() for v in value.split(",") if v.strip()]
        if not pairs:
            problems.append(f"line {lineno}: {where} option {opt!r}: outfit expects {LIST_OPTIONS['outfit']}, "
                            "several separated by commas")
        for pair in pairs:
            who, _, outfit = (x.strip() for x in pair.partition(":"))
            if pair.count(":") != 1 or not who or not outfit:
                problems.append(f"line {lineno}: {where}.outfit: expected character:outfit (e.g. mira:raincoat), got "
                                f"{pair!r}; several are separated by commas (outfit=mira:raincoat, juno:uniform)")
                continue
            cid = character_id(who, lineno, f"{where}.outfit")
            if cid is None:
                continue
            wardrobe = series.characters[cid].wardrobe()
            if outfit not in wardrobe:
                problems.append(f"line {lineno}: {where}.outfit: unknown outfit {outfit!r} for {cid}; expected one of "
                                f"{list(wardrobe)} (series.yaml characters.{cid}.outfits)")
            elif cid in into:
                problems.append(f"line {lineno}: {where}.outfit: {cid}'s outfit is given twice; expected one")
            elif cast is not None and cid not in cast:
                problems.append(f"line {lineno}: {where}.outfit: {cid} is not in the PANEL line; expected one of its "
                                f"characters {cast} (a scene's outfit=... holds for all its panels)")
            else:
                into[cid] = outfit

    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if m := SCENE_RE.match(line):
            loc = m["loc"].strip()
            if loc not in series.locations:
                problems.append(
                    f"line {lineno}: scene.location: unknown location {loc!r}; expected one of {sorted(series.locations)}"
                )
            scenes.append({"number": len(scenes) + 1, "location": loc, "description": m["desc"] or "", "panels": [],
                           "outfits": {}})
            for key, value, opt in split_options(m["opts"]):
                if key not in SCENE_OPTIONS:
                    problems.append(f"line {lineno}: scene option {opt!r}: expected one of {list(SCENE_OPTIONS)} as "
                                    "key=value (SCENE <location> [outfit=mira:raincoat]: description)")
                    continue
                outfit_choices(value, opt, lineno, "scene", scenes[-1]["outfits"], None)
            panel = None
            continue
        if line.startswith("PANEL"):
            m = PANEL_RE.match(line)
            if not scenes:
                problems.append(f"line {lineno}: panel: expected a 'SCENE <location>' line before the first PANEL")
                continue
            if m is None:
                problems.append(f"line {lineno}: panel: expected 'PANEL <shot>: <characters> [options]'")
                continue
            shot = m["shot"].strip().lower()
            if shot not in SHOTS:
                problems.append(f"line {lineno}: panel.shot: unknown shot {shot!r}; expected one of {list(SHOTS)}")
            cast = [character_id(c, lineno, "panel.characters") for c in (m["cast"] or "").split(",") if c.strip()]
            number = sum(len(s["panels"]) for s in scenes) + 1
            panel = {"id": f"p{number:02d}", "line": lineno, "shot": shot, "characters": [c for c in cast if c],
                     "action": "", "dialogue": [], "captions": [], "sfx": [], "props": [], "outfits": {}}
            for key, value, opt in split_options(m["opts"]):
                if key == "props":
                    named = [v.strip() for v in value.split(",") if v.strip()]
                    if not named:
                        problems.append(f"line {lineno}: panel option {opt!r}: props expects {LIST_OPTIONS['props']}, "
                                        "separated by commas")
                    for token in named:
                        if (pid := series.prop_id(token)) is None:
                            known = (f"expected one of {sorted(series.props)}" if series.props else
                                     "the series has none: add it under props: in series.yaml")
                            problems.append(f"line {lineno}: panel.props: unknown prop {token!r}; {known}")
                        elif pid not in panel["props"]:
                            panel["props"].append(pid)
                    continue
                if key == "outfit":
                    outfit_choices(value, opt, lineno, "panel", panel["outfits"], panel["characters"])
                    continue
                if key not in PANEL_OPTIONS:
                    problems.append(f"line {lineno}: panel option {opt!r}: expected one of "
                                    f"{[*PANEL_OPTIONS, *LIST_OPTIONS]} as key=value")
                    continue
                allowed = PANEL_OPTIONS[key]
                if (allowed is None and not value.isdigit()) or (allowed is not None and value not in allowed):
                    want = "a whole number" if allowed is None else f"one of {list(allowed)}"
                    problems.append(f"line {lineno}: panel option {opt!r}: {key} expects {want}")
                    continue
                panel[key] = value
            scenes[-1]["panels"].append(panel)
            continue
        if panel is None:
            if scenes:
                scenes[-1]["description"] = " ".join(filter(None, [scenes[-1]["description"], line]))
            elif m := HEADER_RE.match(line):
                if m["key"].lower() not in ("title", "format", "take"):
                    problems.append(f"line {lineno}: header {m['key']!r}: expected Title, Format or Take")
                header[m["key"].lower()] = m["value"].strip()
            else:
                problems.append(f"line {lineno}: expected 'Title: ...' or a 'SCENE <location>' line, got {line[:40]!r}")
            continue
        if (m := LINE_RE.match(line)) and m["who"].strip() in ("CAPTION", "SFX"):
            panel["captions" if m["who"].strip() == "CAPTION" else "sfx"].append(m["text"].strip())
        elif m and m["who"].strip() in speakers:
            who = speakers[m["who"].strip()]
            kind = (m["kind"] or "speech").strip().lower()
            if kind not in LINE_KINDS:
                problems.append(f"line {lineno}: dialogue.kind: unknown {kind!r}; expected one of {list(LINE_KINDS)}")
            elif who not in panel["characters"] and kind != "off":
                problems.append(
                    f"line {lineno}: dialogue.speaker: {m['who'].strip()} speaks in panel {panel['id']} but is not "
                    f"in its PANEL line; add them there or mark the line ({m['who'].strip()} (off): ...)"
                )
            panel["dialogue"].append({"speaker": who, "kind": kind, "text": m["text"].strip()})
        elif m and len(m["who"].strip()) > 1:
            problems.append(
                f"line {lineno}: dialogue.speaker: unknown speaker {m['who'].strip()!r}; expected one of "
                f"{sorted(series.characters)} (in capitals), CAPTION or SFX"
            )
        else:
            panel["action"] = " ".join(filter(None, [panel["action"], line]))

    if "title" not in header:
        problems.append("title: expected a 'Title: ...' line before the first SCENE")
    if not scenes:
        problems.append("scenes: expected at least one 'SCENE <location>' line with panels")
    if problems:
        raise BibleError(path, problems)
    try:
        return Episode.model_validate(
            {"id": episode_id, "series": series.id, "title": header["title"], "scenes": scenes}
        )
    except ValidationError as e:
        raise BibleError.from_validation(path, e) from e
