"""The generation gateway: cache → budget → provider → store → ledger."""

from webtoon_assets.gateway.gateway import Gateway, GenerationResult
from webtoon_assets.gateway.request import Attribution, Figure, GenerationRequest, PreviewHints, Reference, stable_seed
from webtoon_assets.gateway.store import ImageStore

__all__ = ["Attribution", "Figure", "Gateway", "GenerationRequest", "GenerationResult", "ImageStore",
           "PreviewHints", "Reference", "stable_seed"]
