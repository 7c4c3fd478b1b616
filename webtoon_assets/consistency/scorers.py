"""Three ways to score consistency, one interface: ``score(reference, candidate) -> 0..100``.

- ``palette-structure`` (the default, offline, no model weights): the colour distribution (HSV
  histogram intersection) and the coarse structure (SSIM of 64x64 edge maps) of the two crops,
  half each. It measures whether the crops *look alike in colour and shape*, not whether they show
  the same person: a cheap, deterministic proxy that catches a changed outfit or palette.
- ``vision-judge``: a vision-language model on fal is shown both images and asked for a 0-100
  score; through the gateway, so it is priced, cached and in the ledger.
- ``embedding``: cosine similarity of image embeddings from a local ONNX model
  (``WEBTOON_EMBEDDING_MODEL``, e.g. a CLIP or ArcFace image encoder exported to ONNX); practice
  (ViStoryBench) uses CLIP-like embeddings for stylised characters.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image, ImageFilter

from webtoon_assets.files import atomic_path
from webtoon_assets.gateway import Attribution, Gateway, GenerationRequest, Reference
from webtoon_assets.gateway.store import sha256_file


class Scorer(Protocol):
    name: str

    def score(self, reference: Path, candidate: Path, *, reference_box: tuple[float, float] = (0.0, 1.0),
              candidate_box: tuple[float, float] = (0.0, 1.0)) -> float:
        """0-100. A box holds the character: (x0, y0, x1, y1) as shares of the width and height (a detected
        box), or a band (x0, x1) of the width (its middle 80 % of height)."""
        ...


def character_crop(path: Path, band: tuple[float, ...] = (0.0, 1.0), size: int = 128) -> Image.Image:
    """The part of the image where the character stands, squared to ``size``: a detected box
    (x0, y0, x1, y1), or a band (x0, x1) of the width, its middle 80 % of height."""
    x0, y0, x1, y1 = _as_box(band)
    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        left, top = int(w * x0), int(h * y0)
        box = (left, top, max(left + 1, int(w * x1)), max(top + 1, int(h * y1)))
        return im.crop(box).resize((size, size), Image.Resampling.BILINEAR)


def _as_box(band: tuple[float, ...]) -> tuple[float, float, float, float]:
    return (band[0], 0.1, band[1], 0.9) if len(band) == 2 else (band[0], band[1], band[2], band[3])


class PaletteStructureScorer:
    name = "palette-structure"

    def __init__(self) -> None:
        # A character's sheet is the reference of every panel it is in: cropped once per file version.
        self._references: dict[tuple[Path, int, tuple[float, float]], Image.Image] = {}

    def _reference(self, path: Path, band: tuple[float, float]) -> Image.Image:
        key = (path, path.stat().st_mtime_ns, tuple(band))
        if (crop := self._references.get(key)) is None:
            crop = self._references[key] = character_crop(path, band)
        return crop

    def score(self, reference: Path, candidate: Path, *, reference_box=(0.0, 1.0), candidate_box=(0.0, 1.0)) -> float:
        a, b = self._reference(reference, reference_box), character_crop(candidate, candidate_box)
        return round(100 * (0.5 * _colour(a, b) + 0.5 * _structure(a, b)), 2)


def _colour(a: Image.Image, b: Image.Image) -> float:
    def hist(im: Image.Image) -> np.ndarray:
        hsv = np.asarray(im.convert("HSV")).reshape(-1, 3).astype(np.int32)
        idx = (hsv[:, 0] * 12 // 256) * 16 + (hsv[:, 1] * 4 // 256) * 4 + hsv[:, 2] * 4 // 256
        counts = np.bincount(idx, minlength=12 * 16).astype(np.float64)
        return counts / counts.sum()
    return float(np.minimum(hist(a), hist(b)).sum())


def _structure(a: Image.Image, b: Image.Image) -> float:
    def edges(im: Image.Image) -> np.ndarray:
        return np.asarray(im.convert("L").resize((64, 64)).filter(ImageFilter.FIND_EDGES), dtype=np.float64)
    x, y = edges(a), edges(b)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = x.mean(), y.mean()
    vx, vy, cov = x.var(), y.var(), ((x - mx) * (y - my)).mean()
    ssim = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    return float((ssim + 1) / 2)


class VisionJudgeScorer:
    """A vision-language model on fal judges; each judgement is a priced, cached gateway request."""

    name = "vision-judge"
    PROMPT = ("Image 1 is a character's reference; image 2 should show the same character. Judge only the "
              "character (face, hair, outfit, colours, proportions), not the pose or background. Answer JSON "
              'only: {"score": <0-100, how consistently image 2 shows the same character>}.')

    def __init__(self, gateway: Gateway, endpoint: str, arguments: dict, who: Attribution):
        self.gateway, self.endpoint, self.arguments, self.who = gateway, endpoint, arguments, who

    def score(self, reference: Path, candidate: Path, *, reference_box=(0.0, 1.0), candidate_box=(0.0, 1.0)) -> float:
        refs = []
        for role, path, band in (("reference", reference, reference_box), ("candidate", candidate, candidate_box)):
            # crops live in the store's own folder, named by what they are cut from: made once
            crop_path = self.gateway.store.root / "crops" / f"{sha256_file(path)}-{_crop_name(band)}.png"
            if not crop_path.is_file():
                with atomic_path(crop_path) as tmp:  # another scorer may be hashing it already
                    character_crop(path, band, 512).save(tmp, format="PNG")
            refs.append(Reference(role=role, path=str(crop_path), sha256=sha256_file(crop_path), width=512, height=512))
        result = self.gateway.generate_text(GenerationRequest(
            endpoint=self.endpoint, arguments={"prompt": self.PROMPT, "system_prompt": "You are a strict art director.",
                                               **self.arguments},
            references=refs, attribution=self.who))
        m = re.search(r"\{.*\}", result.text, re.S)
        try:
            value = float(json.loads(m.group(0))["score"]) if m else None
        except (ValueError, KeyError, TypeError):
            value = None
        if value is None or not 0 <= value <= 100:
            raise ValueError(f"the vision judge ({self.endpoint}) answered {result.text[:120]!r}; expected "
                             '{"score": 0-100}')
        return value


def _crop_name(band: tuple[float, ...]) -> str:
    """A band keeps the name it always had (crops made before boxes are found again)."""
    return "-".join(f"{v:.3f}" for v in (band if len(band) == 2 else _as_box(band)))


class EmbeddingScorer:
    """Cosine similarity of embeddings from a local ONNX image encoder, as 0-100."""

    name = "embedding"

    def __init__(self, model_path: str):
        import onnxruntime as ort

        if not Path(model_path).is_file():
            raise FileNotFoundError(f"WEBTOON_EMBEDDING_MODEL: no model file at {model_path}")
        self.session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        shape = inp.shape  # N, C, H, W; sizes may be symbolic
        self.side = shape[2] if len(shape) == 4 and isinstance(shape[2], int) else 224

    def embed(self, crop: Image.Image) -> np.ndarray:
        x = np.asarray(crop.resize((self.side, self.side)), dtype=np.float32) / 255.0
        x = (x - np.array([0.485, 0.456, 0.406], dtype=np.float32)) / np.array([0.229, 0.224, 0.225], dtype=np.float32)
        out = self.session.run(None, {self.input_name: x.transpose(2, 0, 1)[None].astype(np.float32)})[0]
        return np.asarray(out, dtype=np.float64).reshape(-1)

    def score(self, reference: Path, candidate: Path, *, reference_box=(0.0, 1.0), candidate_box=(0.0, 1.0)) -> float:
        a = self.embed(character_crop(reference, reference_box, self.side))
        b = self.embed(character_crop(candidate, candidate_box, self.side))
        cos = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) or 1.0))
        return round(100 * max(0.0, cos), 2)


def make_scorer(kind: str, gateway: Gateway | None = None, judge_endpoint: str = "", judge_arguments: dict | None = None,
                who: Attribution | None = None) -> Scorer:
    if kind == "palette-structure":
        return PaletteStructureScorer()
    if kind == "vision-judge":
        if gateway is None or who is None:
            raise ValueError("the vision judge needs the gateway")
        return VisionJudgeScorer(gateway, judge_endpoint, judge_arguments or {}, who)
    if kind == "embedding":
        path = os.environ.get("WEBTOON_EMBEDDING_MODEL", "")
        if not path:
            raise ValueError("scorer 'embedding' needs WEBTOON_EMBEDDING_MODEL: the path of an ONNX image encoder")
        return EmbeddingScorer(path)
    raise ValueError(f"unknown scorer {kind!r}; expected palette-structure, vision-judge or embedding")
