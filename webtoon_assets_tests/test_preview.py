"""The offline preview renderer: a scene's plate is fitted once, and again when the plate changes."""

from __future__ import annotations

import os

from PIL import Image

from webtoon_assets.preview.draw import _fitted_plate, render_preview
from webtoon_assets.preview.hints import PreviewHints


def test_a_panels_plate_is_fitted_once_per_version(tmp_path):
    plate = tmp_path / "plate.png"
    Image.new("RGB", (400, 300), "#204060").save(plate)
    hints = PreviewHints.plain("fal-ai/flux-2/flash")
    _fitted_plate.cache_clear()
    first = render_preview(hints, 200, 200, seed=1, backdrop=plate)
    again = render_preview(hints, 200, 200, seed=1, backdrop=plate)
    assert first.tobytes() == again.tobytes()  # drawing on the cached plate never changed it
    assert _fitted_plate.cache_info().hits == 1
    Image.new("RGB", (400, 300), "#c8553d").save(plate)
    os.utime(plate, ns=(1, 1))
    redrawn = render_preview(hints, 200, 200, seed=1, backdrop=plate)
    assert redrawn.getpixel((100, 20)) != first.getpixel((100, 20))  # the new plate, not the cached one
