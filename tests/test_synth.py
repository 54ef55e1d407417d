"""Synthetic captchas: reproducible bytes, labels as configured, names that parse back."""

from __future__ import annotations

import csv
import pathlib

import pytest
from PIL import Image

from components.synth import (
    DEFAULT_ALPHABET,
    LABELS_CSV,
    SynthConfig,
    generate,
    make_labels,
    parse_length_range,
)
from pipeline import cli


def file_bytes(folder: pathlib.Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_same_seed_gives_byte_identical_pngs(tmp_path):
    config = SynthConfig(count=12, seed=5)
    first = generate(str(tmp_path / "a"), config, show_progress=False)
    second = generate(str(tmp_path / "b"), config, show_progress=False)
    assert [label for _, label in first] == [label for _, label in second]
    assert file_bytes(tmp_path / "a") == file_bytes(tmp_path / "b")
    other = generate(str(tmp_path / "c"), SynthConfig(count=12, seed=6), show_progress=False)
    assert [label for _, label in other] != [label for _, label in first]
    assert not set(file_bytes(tmp_path / "a").values()) & set(file_bytes(tmp_path / "c").values())


def test_parallel_rendering_writes_the_same_files(tmp_path):
    config = SynthConfig(count=9, seed=4)
    serial = generate(str(tmp_path / "serial"), config, show_progress=False)
    parallel = generate(str(tmp_path / "parallel"), config, show_progress=False, workers=2)
    assert [label for _, label in serial] == [label for _, label in parallel]
    assert file_bytes(tmp_path / "serial") == file_bytes(tmp_path / "parallel")


def test_images_and_names_follow_the_config(tmp_path):
    config = SynthConfig(
        count=40, seed=1, alphabet="abc123", min_length=3, max_length=5, width=120, height=40
    )
    written = generate(str(tmp_path), config, show_progress=False)
    assert len(written) == 40 == len(list(tmp_path.glob("*.png")))
    lengths = set()
    for index, (path, label) in enumerate(written):
        assert pathlib.Path(path).name == f"{label}_{index}.png"
        assert set(label) <= set("abc123")
        lengths.add(len(label))
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size == (120, 40)
    assert lengths == {3, 4, 5}
    assert [label for _, label in written] == make_labels(config)


def test_default_config_is_200x50_with_4_to_6_lowercase_alphanumerics(tmp_path):
    written = generate(str(tmp_path), SynthConfig(count=30), show_progress=False)
    assert {len(label) for _, label in written} == {4, 5, 6}
    assert set("".join(label for _, label in written)) <= set(DEFAULT_ALPHABET)
    with Image.open(written[0][0]) as image:
        assert image.size == (200, 50)


def test_labels_csv_mode(tmp_path):
    written = generate(
        str(tmp_path),
        SynthConfig(count=5, seed=2, alphabet="a_b,c", labels_csv=True),
        show_progress=False,
    )
    with open(tmp_path / LABELS_CSV, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["filename"], r["label"]) for r in rows] == [
        (pathlib.Path(p).name, label) for p, label in written
    ]
    assert [r["filename"] for r in rows] == [f"{i:06d}.png" for i in range(5)]


def test_custom_font_changes_the_pixels(tmp_path):
    import matplotlib

    font = pathlib.Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    default = generate(str(tmp_path / "a"), SynthConfig(count=3), show_progress=False)
    custom = generate(
        str(tmp_path / "b"), SynthConfig(count=3, fonts=(str(font),)), show_progress=False
    )
    assert [label for _, label in default] == [label for _, label in custom]
    assert file_bytes(tmp_path / "a").keys() == file_bytes(tmp_path / "b").keys()
    assert file_bytes(tmp_path / "a") != file_bytes(tmp_path / "b")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"alphabet": "ab_"},  # '_' cannot be parsed back out of `<label>_<n>.png`
        {"alphabet": "aab"},
        {"min_length": 5, "max_length": 4},
        {"min_length": 0},
        {"count": -1},
        {"width": 4},
        {"fonts": ("/no/such/font.ttf",)},
    ],
)
def test_bad_configs_are_refused(kwargs):
    with pytest.raises(ValueError):
        SynthConfig(**kwargs)


def test_parse_length_range():
    assert parse_length_range("4-6") == (4, 6)
    assert parse_length_range("5") == (5, 5)
    with pytest.raises(ValueError, match="4-6"):
        parse_length_range("four")


def test_cli_synth(tmp_path, capsys):
    out = tmp_path / "cli"
    assert (
        cli.main(
            [
                "synth",
                "--out",
                str(out),
                "--count",
                "4",
                "--seed",
                "9",
                "--alphabet",
                "xyz",
                "--length",
                "2-3",
                "--width",
                "100",
                "--height",
                "32",
            ]
        )
        == 0
    )
    assert "wrote 4 captchas" in capsys.readouterr().out
    expected = make_labels(SynthConfig(count=4, seed=9, alphabet="xyz", min_length=2, max_length=3))
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{label}_{i}.png" for i, label in enumerate(expected)
    )
