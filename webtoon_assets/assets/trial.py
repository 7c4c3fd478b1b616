"""The model trial (the cost study's "week 1 validation plan"), one partition per candidate model:
a base reference of one character from the model's text-to-image endpoint, then N variations
made with that reference on the candidate (multi-reference) endpoint, each scored for
consistency against the base; and the model's cost per panel at this series' panel sizes. Every
generation goes through the gateway, so the trial's own spend is in the ledger. Each run also
recommends a model from every trial made so far, by the study's decision tree: the
model_recommendation asset, downstream of every candidate's trial."""

import hashlib
import io
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from PIL import Image
from dagster import (AssetExecutionContext, AssetKey, AssetsDefinition, AutomationCondition, Failure,
                     MaterializeResult, MetadataValue, StaticPartitionsDefinition, asset)

from webtoon_assets.assets.loras import series_lora_cost
from webtoon_assets.bible import Episode, Series, episode_ids, load_episode
from webtoon_assets.consistency import make_scorer
from webtoon_assets.consistency.decision import Candidate, recommend, verdict
from webtoon_assets.consistency.gate import RetakeEstimate, retake_estimate
from webtoon_assets.files import write_bytes_atomic, write_text_atomic
from webtoon_assets.gateway import Attribution, Figure, GenerationRequest, Lora, PreviewHints, Reference, stable_seed
from webtoon_assets.manifests import ImageItem, PanelPlan
from webtoon_assets.paths import DataLayout
from webtoon_assets.pricing import PriceBook, quote
from webtoon_assets.resources import DataRootResource, GatewayResource
from webtoon_assets.resources.previews import contact_sheet_md, thumbnail
from webtoon_assets.sizes import size_pixels
from webtoon_assets.compose.pack import Packing, pack_references, plan_packs, planned as planned_packs
from webtoon_assets.recipes.loras import lora_request, training_zip
from webtoon_assets.storyboard import plan_storyboard
from webtoon_assets.storyboard.plan import NO_TEXT, character_clause, style_clause

SITUATIONS = [  # what each variation asks of the character: new poses, framings, light
    "walking through rain at night, full body, three-quarter view",
    "laughing, close-up portrait, warm lantern light",
    "running, side view, motion",
    "sitting at a workbench, medium shot, looking down",
    "looking back over the shoulder, from behind",
    "standing on a rooftop at dusk, wide shot",
    "surprised, extreme close-up on the face",
    "waving, from a low angle",
]


def partition_key(endpoint: str) -> str:
    return endpoint.replace("/", "__")


def endpoint_of(key: str) -> str:
    return key.replace("__", "/")


def trial_dir(layout: DataLayout, series_id: str) -> Path:
    return layout.output_dir(series_id) / "trials"


def text_endpoint(book: PriceBook, endpoint: str) -> str:
    """The candidate model's text-to-image endpoint, for the base reference (else the candidate)."""
    model = book.entry(endpoint).model
    return next((e.endpoint for e in book.entries if e.model == model and e.kind == "image" and e.max_references == 0),
                endpoint)


def cost_per_panel(book: PriceBook, endpoint: str, series: Series, plans: list[PanelPlan],
                   packing: Packing = "none") -> Decimal:
    """The candidate's average price over every planned panel of the series: each panel's size, and
    its character sheets, background and style as references at the series' sheet sizes (packed as
    ``packing`` says), fitted to the endpoint as the gateway would send them (the references it
    reads, the size it takes)."""
    entry = book.entry(endpoint)
    m = series.models
    sheet, plate, style = (size_pixels(f.image_size) for f in (m.character_sheets, m.backgrounds, m.style_sheet))

    def price(size: Any, characters: int) -> Decimal:
        refs = ([sheet] * characters + [plate, style])[: m.panels.max_references]
        stand_ins = [Reference(role=f"character:{i}" if i < characters else f"setting:{i}", path="", sha256="",
                               width=w, height=h) for i, (w, h) in enumerate(refs)]
        refs = [(r.width, r.height) if isinstance(r, Reference) else r.size for r in plan_packs(stand_ins, packing)]
        args, refs = entry.fit({"image_size": size, "num_images": 1}, refs)
        request = {**args, **({"image_urls": ["ref"] * len(refs),
                                "input_image_sizes": [{"width": w, "height": h} for w, h in refs]} if refs else {})}
        return quote(endpoint, request, book=book).usd

    prices = [price(plan.aspect, len(plan.characters)) for plan in plans]
    if not prices:  # no scripts yet: one portrait panel with one character
        prices = [price("portrait_4_3", 1)]
    return sum(prices, Decimal(0)) / len(prices)


def _blank(folder: Path, size: tuple[int, int], role: str) -> Reference:
    """A white stand-in of ``size``: a board cell the trial leaves empty, made once."""
    path = folder / f"blank-{size[0]}x{size[1]}.png"
    if not path.is_file():
        buf = io.BytesIO()
        Image.new("RGB", size, (255, 255, 255)).save(buf, format="PNG")
        folder.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(path, buf.getvalue())
    return Reference(role=role, path=str(path), sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
                     width=size[0], height=size[1])


def model_trial_asset(series_id: str, candidates: list[str]) -> AssetsDefinition:
    partitions = StaticPartitionsDefinition([partition_key(c) for c in candidates])

    @asset(key_prefix=[series_id], partitions_def=partitions, group_name=f"{series_id}_trial", kinds={"image"},
           pool="image_generation", description="One candidate model's trial: base reference, N variations, "
                                                "consistency scores, cost per panel and verdict.")
    def model_trial(context: AssetExecutionContext, gateway: GatewayResource) -> MaterializeResult:
        endpoint = endpoint_of(context.partition_key)
        with gateway.session(context, episode="") as s:  # trial spend belongs to no episode
            series = s.series()
            book = s.pricebook
            entry = book.entry(endpoint)
            episodes = [e for e in (load_episode(s.layout, series, i) for i in episode_ids(s.layout, series_id))
                        if isinstance(e, Episode)]
            t = series.trial
            cid = t.character or next(iter(series.characters))
            c = series.characters[cid]
            out = trial_dir(s.layout, series_id) / context.partition_key
            hints = PreviewHints(kind="character", title=f"{c.name} ({entry.model})", palette=series.style.palette[:2],
                                 figures=[Figure(name=c.name, palette=c.palette)])

            def who(item: str) -> Attribution:
                return Attribution(series=series_id, episode="", asset="model_trial",
                                   item=f"{partition_key(endpoint)}:{item}")

            base_prompt = (f"Character reference of {character_clause(series, cid)}. Full body, neutral pose, plain "
                           f"light background. {style_clause(series)} {NO_TEXT}")
            base_request = GenerationRequest(
                endpoint=text_endpoint(book, endpoint), preview=hints, attribution=who("base"),
                arguments={"prompt": base_prompt, "image_size": "portrait_4_3",
                           "seed": stable_seed(series_id, "trial", cid)})

            # The study's last branch as a candidate: the series' LoRA endpoint (models.loras.endpoint) in
            # trial.candidates trains a LoRA of the trial's character from its base reference on the trainer
            # (priced per step, paid once, in the trial's budget) and makes the variations with it.
            lora_cfg = series.models.loras
            trains = endpoint == lora_cfg.endpoint
            trigger = lora_cfg.trigger(cid)

            def with_lora(request: GenerationRequest, lora: Lora | None) -> GenerationRequest:
                if lora is None:
                    return request
                return request.model_copy(update={"loras": [lora], "arguments": {
                    **request.arguments, "prompt": f"{trigger}. {request.arguments['prompt']}"}})

            def training_request(base_ref: Reference) -> GenerationRequest:
                """The trainer request on the base reference (a planned one: a stand-in key, priced the same)."""
                if base_ref.sha256.startswith("planned:"):
                    data = Reference(role=f"training:{cid}", path="", sha256="planned:trial-training")
                else:
                    data = training_zip(s.layout.store / "training", cid, [ImageItem(
                        item="base", path=base_ref.path, store_path=base_ref.path, key="", sha256=base_ref.sha256,
                        status="generated", endpoint=base_request.endpoint, provider="", width=base_ref.width,
                        height=base_ref.height)])
                request = lora_request(series, "", cid, data)
                return request.model_copy(update={"attribution": who("lora")})

            def lora_of(trained_path: str, sha256: str) -> Lora:
                return Lora(role=f"lora:{cid}", path=trained_path, sha256=sha256, scale=lora_cfg.scale)

            def variation_requests(ref: Reference, lora: Lora | None = None) -> list[GenerationRequest]:
                return [with_lora(GenerationRequest(
                    endpoint=endpoint, references=[ref] if entry.max_references else [], attribution=who(f"v{i + 1}"),
                    preview=hints.model_copy(update={"kind": "panel",
                                                     "shot": ["full", "close-up", "full", "medium"][i % 4],
                                                     "caption": SITUATIONS[i % len(SITUATIONS)]}),
                    arguments={"prompt": f"The same character as the reference image, "
                                         f"{SITUATIONS[i % len(SITUATIONS)]}. {character_clause(series, cid)}. "
                                         f"{style_clause(series)} {NO_TEXT}",
                               "image_size": "square_hd", "seed": stable_seed(series_id, "trial", cid, i)}), lora)
                    for i in range(t.variations)]

            # The whole trial (every candidate, every run) spends at most trial.budget_usd: this candidate's
            # requests are quoted first (the base's image planned at its size until it is made) and refused
            # whole if they do not fit what is left of it.
            made = s.gateway.store.get(base_key := s.gateway.key(base_request))
            planned_w, planned_h = size_pixels("portrait_4_3")
            planned = (Reference(role=f"character:{cid}", path=str(s.gateway.store.image_path(base_key)),
                                 sha256=made["sha256"], width=made["width"], height=made["height"]) if made else
                       Reference(role=f"character:{cid}", path="", sha256="planned:trial-base", width=planned_w,
                                 height=planned_h))
            # With the series' reference packing, the same variations again with the base packed as a panel's
            # board would hold it (beside its background and style: blank stand-ins here), so the trial
            # measures what packing's smaller sheets do to consistency.
            packing = series.models.panels.pack_references if entry.max_references else "none"
            blanks = [_blank(s.layout.store / "packed", size_pixels(f.image_size), role)
                      for f, role in ((series.models.backgrounds, "background:blank"), (series.models.style_sheet, "style"))]

            def packed_requests(base_ref: Reference, packs: list[Reference]) -> list[GenerationRequest]:
                return [r.model_copy(update={"references": packs, "attribution": who(f"packed-v{i + 1}")})
                        for i, r in enumerate(variation_requests(base_ref))] if packing != "none" else []

            # planned: the LoRA as trained on the base (a stand-in until it is trained: its weights are unknown)
            planned_training = [training_request(planned)] if trains else []
            planned_lora = None
            if trains:
                lora_key = s.gateway.key(planned_training[0])
                held = s.gateway.store.lookup_file(lora_key)
                planned_lora = (lora_of(str(s.gateway.store.file_path(lora_key)), held.record["sha256"])
                                if held.state == "ok" else lora_of("", "planned:trial-lora"))
            s.preflight([base_request, *planned_training, *variation_requests(planned, planned_lora),
                         *packed_requests(planned, planned_packs([planned, *blanks], packing))],
                        f"model trial of {endpoint}", budget_usd=t.budget_usd)
            base = s.generate(base_request)
            ref = Reference(role=f"character:{cid}", path=str(base.path), sha256=base.sha256, width=base.width,
                            height=base.height)
            trained, lora = None, None
            if trains:
                trained = s.gateway.generate_file(training_request(ref))
                s.results.append(trained)
                lora = lora_of(str(trained.path), trained.sha256)
            variations = list(s.generate_many(variation_requests(ref, lora)))
            packed = list(s.generate_many(packed_requests(ref, pack_references([ref, *blanks], packing,
                                                                               s.layout.store / "packed"))))
            try:
                scorer = make_scorer(t.scorer, s.gateway, t.judge.endpoint, t.judge.arguments, who("judge"))
                scores = {v.request.attribution.item.rsplit(":", 1)[1]: scorer.score(base.path, v.path)
                          for v in variations}
                packed_scores = {v.request.attribution.item.rsplit(":", 1)[1]: scorer.score(base.path, v.path)
                                 for v in packed}
            except ValueError as e:
                raise Failure(description=f"trial of {endpoint}: {e}", allow_retries=False) from e
            consistency = round(sum(scores.values()) / len(scores), 2)
            consistency_packed = round(sum(packed_scores.values()) / len(packed_scores), 2) if packed_scores else None
            # offline, the scores compare preview stand-ins: not a measurement
            measured = all(r.provider != "local" for r in [base, *variations])
            plans = [plan for ep in episodes for plan in plan_storyboard(series, ep)]  # every planned panel
            per_panel = cost_per_panel(book, endpoint, series, plans)
            # a LoRA candidate's panels carry its training, amortised over the planned season (every character)
            training = series_lora_cost(s.layout, series) if trains else None
            per_panel_training = (training.per_panel_usd or Decimal(0)) if training else Decimal(0)
            per_panel += per_panel_training
            # under the consistency gate (series.yaml consistency), each variation is a take: the share
            # under its threshold is the model's retake rate, and retakes are paid per accepted panel
            retakes = trial_retakes(series, list(scores.values()))
            per_accepted = retakes.cost_per_accepted(per_panel)
            spent = [base, *([trained] if trained else []), *variations, *packed]
            result = {
                "series": series_id, "endpoint": endpoint, "model": entry.model, "platform": entry.platform,
                "character": cid, "variations": t.variations, "scorer": scorer.name, "scores": scores,
                "consistency": consistency, "verdict": verdict(consistency, t.thresholds, measured),
                "cost_per_panel_usd": str(per_panel),
                "lora": trains, "lora_training_per_panel_usd": str(per_panel_training) if trains else None,
                "lora_training_usd": str(training.total_usd) if training else None,
                # every reference counted, packed as each option would pack it; consistency with the series' packing
                "cost_per_panel_lineup_usd": str(cost_per_panel(book, endpoint, series, plans, "lineup")
                                                 + per_panel_training),
                "cost_per_panel_board_usd": str(cost_per_panel(book, endpoint, series, plans, "board")
                                                + per_panel_training),
                "packing": packing, "consistency_packed": consistency_packed, "packed_scores": packed_scores,
                "gate_threshold": retakes.threshold, "max_retakes": retakes.max_retakes,
                "retake_rate": retakes.retake_rate, "expected_takes": retakes.expected_takes,
                "takes_per_accepted_panel": (None if per_accepted is None else round(retakes.takes_per_accepted, 6)),
                "cost_per_accepted_panel_usd": None if per_accepted is None else str(per_accepted),
                "trial_spent_usd": str(sum((r.billed_usd for r in spent), Decimal(0))),
                "trial_quote_usd": str(sum((r.list_usd for r in spent if r.status == "generated"), Decimal(0))),
                "provider": variations[0].provider if variations else base.provider, "measured": measured,
                "trial_budget_usd": str(t.budget_usd), "base": str(base.path), "images": [str(v.path) for v in variations],
            }
            write_text_atomic(out.with_suffix(".json"), json.dumps(result, indent=1))
            context.log.info(f"trial {endpoint}: consistency {consistency}% ({result['verdict']}), "
                             f"${per_panel:.4f}/panel; {retakes.retake_rate:.0%} under the gate's "
                             f"{retakes.threshold:g}%: " + (f"${per_accepted:.4f}/accepted panel" if per_accepted
                                                            is not None else "no panel accepted"))
            table = "\n".join(["| variation | score |", "|---|---|"] + [f"| {k} | {v} |" for k, v in scores.items()])
            return s.materialize(metadata={
                "consistency": consistency, "cost_per_panel_usd": float(per_panel), "verdict": result["verdict"],
                "retake_rate": retakes.retake_rate,
                "cost_per_accepted_panel_usd": (float(per_accepted) if per_accepted is not None
                                                else "none accepted (every take under the gate)"),
                "scorer": scorer.name, "scores": MetadataValue.md(table),
                "preview": MetadataValue.md(contact_sheet_md([thumbnail(base.path),
                                                              *(thumbnail(v.path) for v in variations)])),
            })

    return model_trial


def model_recommendation_asset(series_id: str) -> AssetsDefinition:
    @asset(key=AssetKey([series_id, "model_recommendation"]), group_name=f"{series_id}_trial", kinds={"json"},
           deps=[AssetKey([series_id, "model_trial"])], automation_condition=AutomationCondition.eager(),
           description="The cost study's decision tree over every candidate tried so far: which model to use.")
    def model_recommendation(context: AssetExecutionContext, data: DataRootResource) -> MaterializeResult:
        layout, series = data.layout, data.series(series_id)
        trials = load_trials(layout, series_id)
        # the retake estimates under the series' gate as it is set now (from each trial's scores)
        rec = recommend([Candidate(r["endpoint"], r["model"], Decimal(r["cost_per_panel_usd"]), r["consistency"],
                                   measured=r.get("measured", r.get("provider") != "local"),
                                   platform=r.get("platform", "fal"),
                                   retakes=trial_retakes(series, list(r["scores"].values())) if r.get("scores")
                                   else None) for r in trials],
                        series.trial.thresholds, series.budget.target_per_panel_usd,
                        gate=series.consistency.gate is not False, lora=series_lora_cost(layout, series))
        write_text_atomic(trial_dir(layout, series_id) / "recommendation.json", json.dumps(rec.__dict__, indent=1))
        context.log.info(f"recommendation from {len(trials)} trial(s): {rec.action} {rec.model or ''}")
        rows = ["| platform | model | endpoint | $/panel | consistency | verdict | retake rate | $/accepted panel "
                "| trial spent |", "|---|---|---|---|---|---|---|---|---|"] + [
            f"| {r.get('platform', 'fal')} | {r['model']} | `{r['endpoint']}` | ${Decimal(r['cost_per_panel_usd']):.4f} | "
            f"{r['consistency']}% | {r['verdict']} | {_rate(r)} | {_per_accepted(r)} | "
            f"${Decimal(r.get('trial_spent_usd', '0')):.4f} |"
            for r in sorted(trials, key=lambda r: Decimal(r["cost_per_panel_usd"]))]
        return MaterializeResult(metadata={
            "recommendation": MetadataValue.md(f"**{rec.action}** {rec.model or ''}"
                                               f"{f' on {rec.platform}' if rec.platform else ''}: {rec.reason}"),
            "action": rec.action, "model": rec.model or "", "platform": rec.platform or "", "trials": len(trials),
            "candidates": MetadataValue.md("\n".join(rows)),
        })

    return model_recommendation


def trial_retakes(series: Series, scores: list[float]) -> RetakeEstimate:
    """A model's retake rate and takes per accepted panel under the series' consistency gate (its
    threshold, default trial.thresholds.acceptable, and max_retakes), from its trial's scores."""
    gate = series.consistency
    return retake_estimate(scores, gate.threshold_for(series.trial.thresholds), gate.max_retakes)


def _rate(trial: dict) -> str:
    return "-" if trial.get("retake_rate") is None else f"{trial['retake_rate']:.0%}"


def _per_accepted(trial: dict) -> str:
    if trial.get("retake_rate") is None:  # a trial made before the estimate
        return "-"
    usd = trial.get("cost_per_accepted_panel_usd")
    return "none accepted" if usd is None else f"${Decimal(usd):.4f}"


def load_trials(layout: DataLayout, series_id: str) -> list[dict]:
    folder = trial_dir(layout, series_id)
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json")) if p.name != "recommendation.json"]
