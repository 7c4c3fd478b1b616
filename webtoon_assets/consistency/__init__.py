"""Character consistency scores (0-100): how alike a character looks from image to image."""

from webtoon_assets.consistency.scorers import (EmbeddingScorer, PaletteStructureScorer, Scorer, VisionJudgeScorer,
                                               character_crop, make_scorer)

__all__ = ["EmbeddingScorer", "PaletteStructureScorer", "Scorer", "VisionJudgeScorer", "character_crop", "make_scorer"]
