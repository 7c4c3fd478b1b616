"""What to ask for: prompts composed from the bible, and the gateway requests built from them.

Prompts never ask a model to draw text (lettering is done afterwards). Seeds depend only on
what an image is of and its take, so a re-run, or a panel moved within a script, asks for the
same image, while a new ``take`` asks for a new one.
"""

from __future__ import annotations

from webtoon_assets.manifests import ImageItem, PanelPlan, sheet_id
from webtoon_assets.bible import FamilyModel, Series
from webtoon_assets.storyboard.plan import NO_TEXT, character_clause, prop_clause, style_clause
from webtoon_assets.gateway import Attribution, Figure, GenerationRequest, PreviewHints, Reference, stable_seed



def _request(series: Series, family: FamilyModel, prompt: str, seed_parts: tuple, who: Attribution,
             preview: PreviewHints, references: list[Reference] | None = None,
             image_size: str | dict | None = None) -> GenerationRequest:
    size = image_size or (family.image_size if isinstance(family.image_size, str) else family.image_size.model_dump())
    return GenerationRequest(
        endpoint=family.endpoint,
        arguments={"prompt": prompt, "image_size": size, "seed": stable_seed(series.id, *seed_parts),
                   **family.arguments},
        references=references or [],
        preview=preview,
        attribution=who,
    )


def style_request(series: Series, episode: str) -> GenerationRequest:
    prompt = (f"Style reference sheet for the webtoon '{series.title}': sample vignettes of a character bust, "
              f"a street corner and props, with colour swatches. {style_clause(series)} {NO_TEXT}")
    return _request(series, series.models.style_sheet, prompt, ("style", series.style.take),
                    Attribution(series=series.id, episode=episode, asset="style_sheet", item="style", reusable=True),
                    PreviewHints(kind="style", title=f"{series.title}: style", palette=series.style.palette))


def character_request(series: Series, episode: str, cid: str, outfit: str | None = None) -> GenerationRequest:
    """The character's sheet in ``outfit`` (None, or the default outfit: their sheet ``cid``; another:
    ``cid@outfit``). Every outfit shares the character's seed: the same person, redressed."""
    c = series.characters[cid]
    outfit = None if outfit == c.default_outfit_id else outfit
    prompt = (f"Character reference sheet, full-body turnaround (front, three-quarter, side) of "
              f"{character_clause(series, cid, outfit)}. Colours {', '.join(c.palette)}. Personality: {c.personality}. "
              f"Neutral pose, plain light background. {style_clause(series)} {NO_TEXT}")
    return _request(series, series.models.character_sheets, prompt, ("character", cid, c.take),
                    Attribution(series=series.id, episode=episode, asset="character_sheets", item=sheet_id(cid, outfit),
                                reusable=True),
                    PreviewHints(kind="character", title=c.name if outfit is None else f"{c.name} ({outfit})",
                                 palette=series.style.palette[:2], figures=[Figure(name=c.name, palette=c.palette)]))


def prop_request(series: Series, episode: str, pid: str) -> GenerationRequest:
    p = series.props[pid]
    prompt = (f"Prop reference sheet, one object seen from the front, three-quarter and side, no people: "
              f"{prop_clause(series, pid)}. Colours {', '.join(p.palette)}. Plain light background. "
              f"{style_clause(series)} {NO_TEXT}")
    return _request(series, series.models.prop_sheets, prompt, ("prop", pid, p.take),
                    Attribution(series=series.id, episode=episode, asset="prop_sheets", item=pid, reusable=True),
                    PreviewHints(kind="prop", title=p.name, palette=series.style.palette[:2],
                                 figures=[Figure(name=p.name, palette=p.palette)]))


def background_request(series: Series, episode: str, lid: str) -> GenerationRequest:
    loc = series.locations[lid]
    palette = loc.palette or series.style.palette
    prompt = (f"Background plate, no people: {loc.name}. {loc.description}. Colours {', '.join(palette)}. "
              f"{style_clause(series)} {NO_TEXT}")
    return _request(series, series.models.backgrounds, prompt, ("background", lid, loc.take),
                    Attribution(series=series.id, episode=episode, asset="backgrounds", item=lid, reusable=True),
                    PreviewHints(kind="background", title=loc.name, palette=[*palette, *series.style.palette[:1]]))


def panel_references(series: Series, plan: PanelPlan, style: ImageItem, characters: dict[str, ImageItem],
                     backgrounds: dict[str, ImageItem], props: dict[str, ImageItem] | None = None) -> list[Reference]:
    """Characters first (consistency matters most; each in the outfit the panel draws), then the props,
    then the background, then the style, cut to the endpoint's max_references (most endpoints read
    only the first 4). ``characters`` by sheet item (``mira``, ``mira@raincoat``), ``props`` by prop id."""
    def ref(role: str, item: ImageItem) -> Reference:
        return Reference(role=role, path=item.store_path, sha256=item.sha256, width=item.width, height=item.height)

    refs = [ref(f"character:{plan.sheet(c)}", characters[plan.sheet(c)]) for c in plan.characters]
    refs += [ref(f"prop:{p}", (props or {})[p]) for p in plan.props]
    refs.append(ref(f"background:{plan.location}", backgrounds[plan.location]))
    refs.append(ref("style", style))
    return refs[: series.models.panels.max_references]


def panel_request(series: Series, episode: str, plan: PanelPlan, references: list[Reference]) -> GenerationRequest:
    return _request(series, series.models.panels, plan.prompt, ("panel", plan.prompt, plan.take),
                    Attribution(series=series.id, episode=episode, asset="panels", item=plan.id),
                    PreviewHints(kind="panel", title=f"{episode} {plan.id}",
                                 palette=series.locations[plan.location].palette or series.style.palette,
                                 figures=[Figure(name=series.characters[c].name,
                                                 palette=series.characters[c].palette) for c in plan.characters],
                                 shot=plan.shot, caption=plan.action),
                    references, image_size=plan.aspect)
