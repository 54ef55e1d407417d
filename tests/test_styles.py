"""The style zoo: every family is seeded, stays inside its declared ranges, and ingests whole."""

from __future__ import annotations

import collections
import csv
import io
import pathlib
import re

import numpy as np
import pytest
from PIL import Image

from components import styles
from components.example_gen import IngestConfig, run_ingest
from components.synth import LABELS_CSV, SynthConfig, generate
from pipeline import cli

STYLE_NAMES = list(styles.STYLES)
SAMPLE = 40  # images per style for the range checks


def file_bytes(folder: pathlib.Path) -> dict[str, bytes]:
    """The images of a folder by name (labels.csv aside)."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != LABELS_CSV}


def labelled(folder: pathlib.Path, written: list[tuple[str, str]]) -> dict[str, str]:
    """{file name: label} as written: from labels.csv when there is one."""
    if (folder / LABELS_CSV).exists():
        with open(folder / LABELS_CSV, newline="") as f:
            return {row["filename"]: row["label"] for row in csv.DictReader(f)}
    return {pathlib.Path(path).name: label for path, label in written}


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> dict[str, tuple[pathlib.Path, list[tuple[str, str]]]]:
    """SAMPLE images of every style (seed 0), written by synth.generate."""
    root = tmp_path_factory.mktemp("zoo")
    return {
        name: (
            root / name,
            generate(str(root / name), SynthConfig(count=SAMPLE, style=name), show_progress=False),
        )
        for name in STYLE_NAMES
    }


@pytest.mark.parametrize("name", STYLE_NAMES)
def test_same_seed_gives_byte_identical_files(name, tmp_path, samples):
    folder, written = samples[name]
    again = generate(str(tmp_path / "again"), SynthConfig(count=8, style=name), show_progress=False)
    assert again == [
        (str(tmp_path / "again" / pathlib.Path(p).name), label) for p, label in written[:8]
    ]
    first_eight = {pathlib.Path(p).name: pathlib.Path(p).read_bytes() for p, _ in written[:8]}
    assert file_bytes(tmp_path / "again") == first_eight
    other = generate(
        str(tmp_path / "other"), SynthConfig(count=8, seed=1, style=name), show_progress=False
    )
    assert [label for _, label in other] != [label for _, label in again]
    assert not set(file_bytes(tmp_path / "other").values()) & set(first_eight.values())


def test_parallel_rendering_of_a_style_writes_the_same_files(tmp_path):
    config = SynthConfig(count=6, seed=2, style="wide")
    generate(str(tmp_path / "serial"), config, show_progress=False)
    generate(str(tmp_path / "parallel"), config, show_progress=False, workers=2)
    assert file_bytes(tmp_path / "serial") == file_bytes(tmp_path / "parallel")


@pytest.mark.parametrize("name", STYLE_NAMES)
def test_images_and_labels_stay_in_the_declared_ranges(name, samples):
    style = styles.get_style(name)
    folder, written = samples[name]
    labels = labelled(folder, written)
    assert len(labels) == SAMPLE == len(list(folder.glob(f"*{style.suffix}")))
    sizes = set()
    for file, label in labels.items():
        assert set(label) <= set(style.alphabet), (file, label)
        assert style.lengths[0] <= len(label) <= style.lengths[1], (file, label)
        with Image.open(folder / file) as image:
            assert image.format == style.image_format
            width, height = image.size
            pixels = np.asarray(image.convert("L"), dtype=np.float32)
        assert style.widths[0] <= width <= style.widths[1], (file, image.size)
        assert style.heights[0] <= height <= style.heights[1], (file, image.size)
        assert pixels.std() > 10, f"{file} looks blank"
        sizes.add((width, height))
    assert len(sizes) > SAMPLE // 2, "a family draws its sizes at random, not one look"
    lengths = collections.Counter(len(label) for label in labels.values())
    assert len(lengths) > 1 or style.lengths[0] == style.lengths[1]


def test_tiny_is_under_32_pixels_high():
    style = styles.get_style("tiny")
    assert style.heights[1] < 32 and style.widths[1] <= 90 and style.lengths == (3, 5)


def test_wide_is_transparent_and_up_to_10_characters_of_lowercase_labels(samples):
    folder, written = samples["wide"]
    assert styles.get_style("wide").lengths[1] == 10
    assert max(len(label) for _, label in written) >= 9
    assert all(label == label.lower() for _, label in written)  # labels are case-insensitive
    for path, _ in written:
        with Image.open(path) as image:
            assert image.mode == "RGBA"
            alpha = np.asarray(image)[..., 3]
        assert alpha.min() == 0 and alpha.max() == 255  # transparent background, opaque ink


def test_case_style_has_both_cases_and_is_case_sensitive(samples):
    _, written = samples["case"]
    text = "".join(label for _, label in written)
    assert any(c.islower() for c in text) and any(c.isupper() for c in text)
    assert styles.get_style("case").case_sensitive


def test_math_labels_are_expressions_kept_in_labels_csv(samples):
    folder, written = samples["math"]
    assert (folder / LABELS_CSV).exists()
    assert all(re.fullmatch(r"\d{1,2}[+-]\d{1,2}(=\?)?", label) for _, label in written)
    assert any(label.endswith("=?") for _, label in written)


def test_jpeg_style_writes_jpeg_files(samples):
    folder, _ = samples["jpeg"]
    assert {p.suffix for p in folder.iterdir()} == {".jpg"}


@pytest.mark.parametrize("name", STYLE_NAMES)
def test_every_style_ingests_with_nothing_rejected(name, samples, tmp_path):
    folder, written = samples[name]
    csv_path = folder / LABELS_CSV
    metadata = run_ingest(
        str(folder),
        str(tmp_path / "examples"),
        IngestConfig(labels_csv=str(csv_path) if csv_path.exists() else None, num_shards=1),
    )
    assert metadata["num_rejected"] == 0, metadata["rejected_reasons"]
    assert metadata["num_written"] == SAMPLE
    expected = collections.Counter("".join(label for _, label in written))
    assert metadata["character_counts"] == dict(expected)  # labels parse back, case and all


def test_a_style_draws_its_own_alphabet_sizes_and_fonts():
    with pytest.raises(ValueError, match="width"):
        SynthConfig(style="tiny", width=100)
    with pytest.raises(ValueError, match="unknown style"):
        SynthConfig(style="no-such-style")


def test_cli_synth_style(tmp_path, capsys):
    out = tmp_path / "math"
    assert cli.main(["synth", "--style", "math", "--out", str(out), "--count", "3"]) == 0
    printed = capsys.readouterr().out
    assert "wrote 3 captchas" in printed and f"--labels {out}/{LABELS_CSV}" in printed
    assert sorted(p.name for p in out.iterdir()) == [
        "000000.png",
        "000001.png",
        "000002.png",
        LABELS_CSV,
    ]
    assert (
        cli.main(
            [
                "synth",
                "--style",
                "tiny",
                "--height",
                "40",
                "--out",
                str(tmp_path / "x"),
                "--count",
                "3",
            ]
        )
        == 2
    )
    assert "height" in capsys.readouterr().err


def test_contact_sheet_shows_every_style():
    sheet = styles.contact_sheet(samples=2)
    assert sheet.width > 2 * 300 and sheet.height >= len(STYLE_NAMES) * 90
    rows = np.asarray(sheet.convert("L")).reshape(len(STYLE_NAMES), -1, sheet.width)
    assert all(row.std() > 10 for row in rows)
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    assert buffer.tell() > 0
