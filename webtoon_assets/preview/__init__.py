"""Offline preview drawing: what the local provider renders instead of calling a model."""

from webtoon_assets.preview.hints import Figure, PreviewHints

__all__ = ["Figure", "PreviewHints"]
