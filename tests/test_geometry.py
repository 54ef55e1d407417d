"""The input size derived from ExampleGen's metadata (components/geometry.py)."""

import itertools

import pytest

from components.geometry import Geometry, data_ranges, derive_geometry


@pytest.mark.parametrize(
    ("mix", "max_height", "max_aspect", "max_label_length", "pinned_height", "expected"),
    [
        # The Keras example's set: 200x50, 5 characters, kept as it is at height 48.
        ("keras", 50, 4.0, 5, None, Geometry(48, 192, 1.0)),
        # Tiny captchas: 72x24 is scaled up to the smallest height, its proportions kept.
        ("tiny", 24, 3.0, 4, None, Geometry(32, 96, 1.0)),
        # Wide variable-length captchas (640x60, 10 characters) at the head start's height:
        # 512 pixels leave 12.8 frames a character, so nothing is squeezed.
        ("wide", 90, 640 / 60, 10, 48, Geometry(48, 512, 1.0)),
        # Rotated tiles (200x30, 6 characters): unsqueezed too.
        ("tiles", 40, 200 / 30, 6, 48, Geometry(48, 320, 1.0)),
        # Four characters on a 12:1 strip are mostly space: squeezed to 16 frames a character.
        ("sparse", 40, 12.0, 4, None, Geometry(40, 256, 0.5333)),
        # On a 16:1 strip that would squeeze more than 2x: the width grows instead.
        ("sliver", 40, 16.0, 4, None, Geometry(40, 320, 0.5)),
        # Long labels on narrow images: padded to the frames CTC needs, never squeezed.
        ("crowded", 32, 2.0, 10, None, Geometry(32, 88, 1.0)),
    ],
)
def test_derived_geometry(mix, max_height, max_aspect, max_label_length, pinned_height, expected):
    geometry = derive_geometry(max_height, max_aspect, max_label_length, height=pinned_height)
    assert geometry == expected, mix


@pytest.mark.parametrize(
    ("max_height", "max_aspect", "max_label_length"),
    itertools.product((12, 25, 50, 80, 200), (0.5, 1.0, 3.3, 8.0, 20.0), (1, 4, 7, 12, 25)),
)
def test_every_geometry_fits_its_labels(max_height, max_aspect, max_label_length):
    """Room for the longest label with a blank between repeats; the squeeze stays within 2x."""
    geometry = derive_geometry(max_height, max_aspect, max_label_length)
    assert 32 <= geometry.height <= 48 and geometry.width % 8 == 0
    assert geometry.time_steps >= 2 * max_label_length + 1
    assert 0.5 <= geometry.width_scale <= 1.0
    drawn = geometry.height * max_aspect * geometry.width_scale
    assert drawn <= geometry.width + 8, "an image wider than the input would be cut"


def test_data_ranges_span_every_span():
    spans = [
        {"image_height_range": [50, 50], "aspect_ratio_range": [4.0, 4.0], "max_label_length": 5},
        # An older span without aspect ratios: its widest over its shortest.
        {"image_height_range": [30, 60], "image_width_range": [120, 300], "max_label_length": 7},
    ]
    assert data_ranges(spans) == {"max_height": 60, "max_aspect": 10.0, "max_label_length": 7}


def test_no_sizes_or_no_characters_is_a_clear_error():
    with pytest.raises(ValueError, match="re-ingest"):
        data_ranges([{"max_label_length": 4}])
    with pytest.raises(ValueError, match="at least one character"):
        derive_geometry(50, 4.0, 0)
