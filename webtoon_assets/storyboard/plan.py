"""The panel plan. Pacing and framing default from the script's structure; a writer overrides any
of them on the PANEL line ([pace=..., gutter=..., width=..., aspect=..., camera=...]).

Gutters carry pacing in a vertical scroll (at 800 px width): ~50 px rapid action, ~100 normal,
~200 a pause, 400+ a scene change. Defaults: a scene's last panel before another scene is a
scene change; the episode's last panel is a pause; a panel with sound effects and no words is
rapid action; a panel with no text at all is a pause; everything else is normal.

What is drawn: each character in the outfit the panel, else its scene, else the character's default
names ([outfit=mira:raincoat]), and the panel's props ([props=letter]); each is sent as its sheet.
"""

from __future__ import annotations

from webtoon_assets.manifests import PanelPlan
from webtoon_assets.bible import Episode, Series
from webtoon_assets.bible.episode import Panel, Scene

PACE_GUTTER = {"rapid": 50, "normal": 100, "pause": 200, "scene": 400}

# The shot's frame: wide shots read as landscape strips, a figure head to toe as portrait.
SHOT_ASPECT = {
    "establishing": "landscape_16_9", "wide": "landscape_4_3", "full": "portrait_4_3", "medium": "square_hd",
    "close-up": "square_hd", "extreme-close-up": "landscape_16_9", "over-shoulder": "square_hd",
    "pov": "landscape_4_3", "insert": "square_hd",
}
INSET_SHOTS = {"insert", "extreme-close-up"}  # small details read best as narrower panels
CAMERA_WORDS = {"eye": "eye-level", "low": "low-angle", "high": "high-angle", "bird": "bird's-eye view",
                "worm": "worm's-eye view", "dutch": "dutch-angle"}
NO_TEXT = "No text, no letters, no speech balloons, no watermark."


def style_clause(series: Series) -> str:
    s = series.style
    return f"Style: {s.description}; {s.line}; {s.rendering}; palette {', '.join(s.palette)}."


def character_clause(series: Series, cid: str, outfit: str | None = None) -> str:
    """The character as drawn: their look and the outfit worn (None: their default outfit)."""
    c = series.characters[cid]
    return f"{c.name}: {c.look}; wearing {c.outfit_description(outfit)}"


def prop_clause(series: Series, pid: str) -> str:
    p = series.props[pid]
    return f"{p.name}: {p.look}"


def outfits_worn(series: Series, scene: Scene, panel: Panel) -> dict[str, str]:
    """Character → outfit for the panel's characters not in their default outfit: the panel's choice,
    else the scene's, else the character's default."""
    worn = {}
    for c in panel.characters:
        outfit = panel.outfits.get(c) or scene.outfits.get(c)
        if outfit is not None and outfit != series.characters[c].default_outfit_id:
            worn[c] = outfit
    return worn


def default_pace(panel: Panel, last_in_scene: bool, last_scene: bool) -> str:
    if last_in_scene:
        return "pause" if last_scene else "scene"
    if panel.sfx and not panel.dialogue and not panel.captions:
        return "rapid"
    if not (panel.sfx or panel.dialogue or panel.captions):
        return "pause"
    return "normal"


def pace_of_gutter(gutter: int) -> str:
    """The pace a writer's explicit gutter amounts to (the nearest of the four)."""
    return min(PACE_GUTTER, key=lambda p: abs(PACE_GUTTER[p] - gutter))


def prompt_parts(series: Series, scene: Scene, panel: Panel, camera: str) -> dict[str, str]:
    """Everything that goes into the panel's prompt, by source: shown in the storyboard."""
    loc = series.locations[scene.location]
    worn = outfits_worn(series, scene, panel)
    parts = {
        "shot": f"Webtoon panel, {panel.shot} shot, {CAMERA_WORDS[camera]} camera.",
        "setting": f"Setting: {loc.name}, {loc.description}." + (f" {scene.description}" if scene.description else ""),
        "action": f"Action: {panel.action}" if panel.action else "",
        "characters": (f"Characters, left to right: "
                       f"{'; '.join(character_clause(series, c, worn.get(c)) for c in panel.characters)}. "
                       "Keep each character exactly as in their reference sheet.") if panel.characters else "",
        "props": (f"Props: {'; '.join(prop_clause(series, p) for p in panel.props)}. "
                  "Keep each prop exactly as in its reference sheet.") if panel.props else "",
        "style": style_clause(series),
        "no_text": NO_TEXT,
    }
    return {k: v for k, v in parts.items() if v}


def plan_storyboard(series: Series, episode: Episode) -> list[PanelPlan]:
    fixed_size = series.models.panel_size_override()
    plans: list[PanelPlan] = []
    order = insets = 0
    for si, scene in enumerate(episode.scenes):
        for pi, panel in enumerate(scene.panels):
            order += 1
            pace = panel.pace or (pace_of_gutter(panel.gutter) if panel.gutter is not None else
                                  default_pace(panel, pi == len(scene.panels) - 1, si == len(episode.scenes) - 1))
            width = panel.width or ("inset" if panel.shot in INSET_SHOTS else "full")
            align = "center"
            if width == "inset":
                align = "left" if insets % 2 == 0 else "right"  # insets alternate sides down the scroll
                insets += 1
            camera = panel.camera or "eye"
            parts = prompt_parts(series, scene, panel, camera)
            aspect = panel.aspect or (fixed_size if fixed_size is not None else SHOT_ASPECT[panel.shot])
            plans.append(PanelPlan(
                id=panel.id, order=order, scene=scene.number, location=scene.location, shot=panel.shot,
                camera=camera, characters=panel.characters, action=panel.action, dialogue=panel.dialogue,
                captions=panel.captions, sfx=panel.sfx, take=panel.take, pace=pace,
                gutter=panel.gutter if panel.gutter is not None else PACE_GUTTER[pace],
                width=width, align=align,
                aspect=aspect if isinstance(aspect, str) else aspect.model_dump(),
                prompt=" ".join(parts.values()), prompt_parts=parts,
                props=panel.props, outfits=outfits_worn(series, scene, panel),
            ))
    return plans
