"""The generation gateway: cache → budget → provider → store → ledger."""

from webtoon_assets.gateway.gateway import FileResult, Gateway, GenerationResult
from webtoon_assets.gateway.request import Attribution, Figure, GenerationRequest, Lora, PreviewHints, Reference, stable_seed
from webtoon_assets.gateway.store import ImageStore

__all__ = ["Attribution", "Figure", "FileResult", "Lora", "Gateway", "GenerationRequest", "GenerationResult", "ImageStore",
           "PreviewHints", "Reference", "stable_seed"]
