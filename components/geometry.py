"""The model's input size, derived from the data ExampleGen saw (issue: any captcha style).

A profile describes a network, not an image size: the trainer asks `derive_geometry` for the
height, width and horizontal scale of the ingested images, and writes the answer into
`model_config.json`, which the serving signature reads. Images are scaled to a common
height (keeping glyph strokes a few pixels thick, whatever the source size), keep their
aspect ratio up to a horizontal squeeze of at most `MAX_SQUEEZE`, and are padded, never
stretched, to the width. Two 2x2 poolings turn every `FRAME_PIXELS` columns into one CTC
frame, and the width always leaves room for the longest label with a blank between repeats.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

MIN_HEIGHT, MAX_HEIGHT = 32, 48
# Columns per output frame (the first two conv blocks pool 2x2) and a multiple for the sizes.
FRAME_PIXELS = 4
SIZE_MULTIPLE = 8
# Beyond this many frames (4 px each) per character of the longest label an image is mostly
# space between glyphs, so squeezing it costs nothing but time; below it, squeezing thins the
# glyphs and costs accuracy (10 squeezed `wide` to 0.78 and read 63 % where 1.0 read 70.6 %:
# benchmarks/README.md, "A geometry that does not squeeze").
MAX_FRAMES_PER_CHARACTER = 16
MAX_SQUEEZE = 2.0  # narrowest horizontal scale relative to the vertical one, as 1 / MAX_SQUEEZE


@dataclasses.dataclass(frozen=True)
class Geometry:
    """What every image becomes before the network: `height` x `width`, one channel."""

    height: int
    width: int
    width_scale: float  # horizontal scale relative to the vertical one (1.0 keeps the aspect)

    @property
    def time_steps(self) -> int:
        return self.width // FRAME_PIXELS

    def bucket_widths(self, buckets: int) -> list[int]:
        """The widths training batches are cut to: `buckets` even steps up to the width."""
        step = self.width / buckets
        return sorted({min(self.width, _round_up(step * k)) for k in range(1, buckets + 1)})


def _round_up(value: float, multiple: int = SIZE_MULTIPLE) -> int:
    return int(math.ceil(value / multiple) * multiple)


def data_ranges(metadata: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Largest height, widest aspect ratio and longest label over ExampleGen metadata (spans)."""
    heights = [m["image_height_range"][1] for m in metadata if m.get("image_height_range")]
    aspects = []
    for m in metadata:
        if m.get("aspect_ratio_range"):
            aspects.append(m["aspect_ratio_range"][1])
        elif m.get("image_width_range") and m.get("image_height_range"):
            aspects.append(m["image_width_range"][1] / m["image_height_range"][0])
    if not heights or not aspects:
        raise ValueError("ExampleGen metadata holds no image sizes: re-ingest the images")
    return {
        "max_height": max(heights),
        "max_aspect": max(aspects),
        "max_label_length": max(m["max_label_length"] for m in metadata),
    }


def derive_geometry(
    max_height: float, max_aspect: float, max_label_length: int, height: int | None = None
) -> Geometry:
    """The input size for images up to `max_height` tall, `max_aspect` wide, labels this long.

    Height (unless given): the images' own height rounded to a multiple of 8, within
    [MIN_HEIGHT, MAX_HEIGHT] (tiny captchas are scaled up, large ones down). Width: the widest
    image at that height, rounded up, between the frames the longest label needs and
    MAX_FRAMES_PER_CHARACTER per character; a wider aspect is squeezed horizontally, by at
    most MAX_SQUEEZE (beyond it the width grows instead).
    """
    if max_label_length < 1:
        raise ValueError(f"labels must have at least one character, got {max_label_length}")
    if height is None:
        height = min(MAX_HEIGHT, max(MIN_HEIGHT, SIZE_MULTIPLE * round(max_height / SIZE_MULTIPLE)))
    natural = height * max_aspect
    least = _round_up(FRAME_PIXELS * (2 * max_label_length + 1))
    most = max(least, _round_up(FRAME_PIXELS * MAX_FRAMES_PER_CHARACTER * max_label_length))
    width = min(max(_round_up(natural), least), most)
    if natural / width > MAX_SQUEEZE:  # squeezing more would thin glyphs to slivers: widen
        width = _round_up(natural / MAX_SQUEEZE)
    return Geometry(height=height, width=width, width_scale=round(min(1.0, width / natural), 4))
