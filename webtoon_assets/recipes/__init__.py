"""What each asset asks the gateway for: requests built from the bible and the storyboard, and the
whole episode as requests for the pre-flight quote. No Dagster here: the CLI quotes with it too."""

from webtoon_assets.recipes.episode import episode_requests
from webtoon_assets.recipes.requests import (background_request, character_request, panel_references, panel_request,
                                             prop_request, style_request)

__all__ = ["background_request", "character_request", "episode_requests", "panel_references", "panel_request",
           "prop_request", "style_request"]
