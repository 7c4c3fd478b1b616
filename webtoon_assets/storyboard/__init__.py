"""From a validated episode to the panel plan: pacing, framing and what each prompt says."""

from webtoon_assets.storyboard.plan import PACE_GUTTER, SHOT_ASPECT, plan_storyboard

__all__ = ["PACE_GUTTER", "SHOT_ASPECT", "plan_storyboard"]
