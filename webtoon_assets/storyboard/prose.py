"""Prose episodes: a text model (or, offline, a deterministic splitter) turns prose into panels.

Both answer with the same JSON plan. It is rendered into the plain-text script format and parsed
by the same parser as a writer's script, so model output gets exactly the same validation (known
characters and locations, shots, speakers) and is rejected whole, with every problem named, if
any of it is wrong: never half-used.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from webtoon_assets.bible import BibleError, Episode, ProseScript, Series
from webtoon_assets.bible.episode import SHOTS
from webtoon_assets.bible.script import parse_script_text
from webtoon_assets.gateway import Attribution, GenerationRequest

SYSTEM = (
    "You are a webtoon storyboard artist. Split the episode into scenes and panels and answer with JSON "
    "only, no prose, matching this schema: {\"scenes\": [{\"location\": <location id>, \"description\": str, "
    "\"panels\": [{\"shot\": <shot>, \"characters\": [<character id>, left to right], \"action\": str (what is "
    "drawn, no dialogue), \"dialogue\": [{\"speaker\": <character id>, \"kind\": \"speech\"|\"thought\"|"
    "\"whisper\"|\"shout\"|\"off\", \"text\": str}], \"captions\": [str], \"sfx\": [str]}]}]}. "
    f"Shots: {', '.join(SHOTS)}. A speaker must be one of the panel's characters unless kind is \"off\". "
    "Use only the ids listed. 8 to 15 panels for a short episode."
)


class _Line(BaseModel):
    model_config = ConfigDict(extra="forbid")
    speaker: str
    kind: Literal["speech", "thought", "whisper", "shout", "off"] = "speech"
    text: str = Field(min_length=1)


class _Panel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    shot: str
    characters: list[str] = Field(default_factory=list)
    action: str = ""
    dialogue: list[_Line] = Field(default_factory=list)
    captions: list[str] = Field(default_factory=list)
    sfx: list[str] = Field(default_factory=list)


class _Scene(BaseModel):
    model_config = ConfigDict(extra="forbid")
    location: str
    description: str = ""
    panels: list[_Panel] = Field(min_length=1)


class PlanJSON(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scenes: list[_Scene] = Field(min_length=1)


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def plan_to_script(plan: PlanJSON, title: str) -> str:
    """The plan in the writer's script format (also saved, for the writer to read or adopt)."""
    out = [f"Title: {_one_line(title)}", ""]
    for scene in plan.scenes:
        out += [f"SCENE {_one_line(scene.location)}: {_one_line(scene.description)}".rstrip(": "), ""]
        for p in scene.panels:
            out.append(f"PANEL {_one_line(p.shot)}: {', '.join(_one_line(c) for c in p.characters)}".rstrip(": "))
            if p.action:
                out.append(_one_line(p.action))
            for c in p.captions:
                out.append(f"CAPTION: {_one_line(c)}")
            for d in p.dialogue:
                kind = "" if d.kind == "speech" else f" ({d.kind})"
                out.append(f"{_one_line(d.speaker).upper()}{kind}: {_one_line(d.text)}")
            for s in p.sfx:
                out.append(f"SFX: {_one_line(s)}")
            out.append("")
    return "\n".join(out)


def prose_request(series: Series, script: ProseScript) -> GenerationRequest:
    cast = "; ".join(f"{cid} ({c.name}: {c.look})" for cid, c in series.characters.items())
    places = "; ".join(f"{lid} ({loc.name}: {loc.description})" for lid, loc in series.locations.items())
    prompt = (f"Series: {series.title}. Characters (id and look): {cast}. Locations (id): {places}.\n\n"
              f"Episode '{script.title}':\n{script.text}")
    model = series.models.storyboard
    context = {"characters": {cid: c.name for cid, c in series.characters.items()},
               "locations": {lid: loc.name for lid, loc in series.locations.items()}}
    return GenerationRequest(
        endpoint=model.endpoint,
        arguments={"prompt": prompt, "system_prompt": SYSTEM, **model.arguments}, take=script.take,
        context=context, stand_in=split_prose(script.text, context),  # offline: split by rule, not by a model
        attribution=Attribution(series=series.id, episode=script.id, asset="storyboard", item="prose"),
    )


def episode_from_output(text: str, series: Series, script: ProseScript, source: str) -> tuple[Episode, str]:
    """Validate a model's answer into an Episode (and its script text), or raise BibleError."""
    where = f"{script.path} (panels from {source})"
    body = text.strip()
    fenced = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", body, re.S)
    body = fenced.group(1) if fenced else body
    try:
        plan = PlanJSON.model_validate(json.loads(body))
    except json.JSONDecodeError as e:
        raise BibleError(where, [f"expected a JSON plan from the model, got {body[:80]!r}... ({e})"]) from e
    except ValidationError as e:
        raise BibleError.from_validation(where, e, prefix="plan") from e
    script_text = plan_to_script(plan, script.title)
    return parse_script_text(script_text, where, series, script.id), script_text


# -- the offline stand-in ------------------------------------------------------------------------

QUOTE = re.compile(r"[\"“]([^\"”]+)[\"”]")


def split_prose(text: str, context: dict[str, Any]) -> str:
    """A deterministic plan from prose, without a model: a paragraph naming a location starts a
    scene; each sentence is a panel with the characters it names; quoted words are dialogue by the
    character named beside them (else a caption). Answers JSON, as a model would."""
    chars: dict[str, str] = context["characters"]
    places: dict[str, str] = context["locations"]

    def named(sentence: str, table: dict[str, str]) -> list[str]:
        low = sentence.lower()
        hits = [(low.find(n.lower()), k) for k, n in table.items() if n.lower() in low]
        hits += [(low.find(k.replace("_", " ")), k) for k in table if k.replace("_", " ") in low]
        return list(dict.fromkeys(k for _, k in sorted(hits)))

    scenes: list[dict[str, Any]] = []
    for para in [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]:
        found = named(para, places)
        if found or not scenes:
            scenes.append({"location": found[0] if found else next(iter(places)), "description": "", "panels": []})
        for sentence in re.split(r"(?<=[.!?…])\s+(?=[A-Z“\"])", _one_line(para)):
            quotes = QUOTE.findall(sentence)
            action = _one_line(QUOTE.sub("", sentence)).strip(" ,")
            cast = named(sentence, chars)
            first = not scenes[-1]["panels"]
            shot = "establishing" if first else ("medium" if quotes and len(cast) > 1 else
                                                 "close-up" if quotes else "full" if cast else "wide")
            panel = {"shot": shot, "characters": cast, "action": action, "dialogue": [], "captions": [], "sfx": []}
            for q in (q.strip().rstrip(",") for q in quotes):  # prose puts the comma inside the quote
                if cast:
                    panel["dialogue"].append({"speaker": cast[0], "kind": "speech", "text": q})
                else:
                    panel["captions"].append(q)
            scenes[-1]["panels"].append(panel)
    return json.dumps({"scenes": [s for s in scenes if s["panels"]]})
