"""ExampleGen: real Beam jobs on the DirectRunner over real PNGs, checked record by record."""

from __future__ import annotations

import csv
import io
import json
import pathlib
import shutil

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
from apache_beam.options.pipeline_options import PipelineOptions
from helpers import bilevel_png_bomb, encode, read_rejected
from PIL import Image

from components import dataset, examples
from components.example_gen import (
    BAD_CHARACTER,
    CONFLICTING_LABELS,
    DUPLICATE,
    EMPTY_FILE,
    EMPTY_LABEL,
    IMPLAUSIBLE_SIZE,
    LABEL_TOO_LONG,
    NOT_AN_IMAGE,
    TOO_LARGE,
    UNDECODABLE,
    UNREADABLE,
    UNSUPPORTED_FORMAT,
    IngestConfig,
    build_pipeline,
    plan_ingest,
    run_ingest,
)
from components.synth import SynthConfig, file_name, generate, make_labels
from pipeline import cli, report, runner

SYNTHETIC_COUNT = 150  # tests/conftest.py makes `synthetic_images` with this many, seed 0


def read_examples(examples_dir: pathlib.Path) -> dict[str, list[dict]]:
    """{split: [example as plain Python values]} read back through components.dataset."""
    out = {}
    for split in examples.SPLITS:
        rows = []
        for ex in dataset.read_split(str(examples_dir), split):
            rows.append(
                {k: (v.numpy().tolist() if k == "label_ids" else v.numpy()) for k, v in ex.items()}
            )
        out[split] = rows
    return out


def shard_bytes(examples_dir: pathlib.Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(examples_dir)): p.read_bytes()
        for p in sorted(examples_dir.glob("Split-*/*.gz"))
    }


@pytest.fixture(scope="module")
def real_examples(real_captchas, tmp_path_factory) -> tuple[pathlib.Path, dict]:
    output = tmp_path_factory.mktemp("real") / "examples"
    return output, run_ingest(str(real_captchas), str(output), IngestConfig())


def test_real_data_counts_and_vocab(real_examples):
    output, metadata = real_examples
    assert (metadata["num_inputs"], metadata["num_written"], metadata["num_rejected"]) == (
        1040,
        1040,
        0,
    )
    vocab = examples.read_vocab(str(output / examples.VOCAB_FILE))
    assert len(vocab) == 19 and vocab == sorted(vocab)
    assert metadata["vocab_size"] == 19
    assert sum(metadata["counts"].values()) == 1040
    assert metadata["label_length_range"] == [5, 5] and metadata["max_label_length"] == 5
    assert metadata["image_height_range"] == [50, 50] and metadata["image_width_range"] == [
        200,
        200,
    ]
    assert sum(metadata["character_counts"].values()) == 5 * 1040
    assert json.loads((output / examples.METADATA_FILE).read_text()) == metadata
    assert (output / examples.REJECTED_FILE).read_text() == ""
    assert sorted(p.name for p in output.iterdir()) == [
        "Split-eval",
        "Split-train",
        "metadata.json",
        "rejected.jsonl",
        "vocab.txt",
    ]
    assert not list(output.parent.glob(".*tmp*")), "the temporary folder was left behind"


def test_real_data_round_trips(real_examples, real_captchas):
    output, _ = real_examples
    vocab = examples.read_vocab(str(output / examples.VOCAB_FILE))
    seen = set()
    for split, rows in read_examples(output).items():
        for ex in rows:
            source = pathlib.Path(ex["source"].decode())
            label = ex["label"].decode()
            assert source.parent == real_captchas and label == source.stem
            assert ex["image"] == source.read_bytes()
            pixels = tf.io.decode_png(ex["image"]).numpy()
            assert np.array_equal(pixels, np.asarray(Image.open(source)))
            assert pixels.shape == (ex["height"], ex["width"], ex["channels"])
            assert ex["image_format"] == b"png"
            assert [vocab[i] for i in ex["label_ids"]] == list(label)
            assert ex["label_length"] == len(label) and ex["span"] == 0
            assert ex["sha256"].decode() == examples.sha256_hex(ex["image"])
            assert examples.split_for(ex["sha256"].decode()) == split
            seen.add(source.name)
    assert len(seen) == 1040


def test_rerun_is_byte_identical(real_examples, real_captchas, tmp_path):
    output, metadata = real_examples
    again = tmp_path / "again"
    assert run_ingest(str(real_captchas), str(again), IngestConfig()) == metadata
    first, second = shard_bytes(output), shard_bytes(again)
    assert len(first) == 8 and first == second
    assert (output / "vocab.txt").read_bytes() == (again / "vocab.txt").read_bytes()


def test_new_images_move_no_old_image_between_splits(real_examples, real_captchas, tmp_path):
    output, _ = real_examples
    folder = tmp_path / "more"
    shutil.copytree(real_captchas, folder)
    generate(str(folder), SynthConfig(count=100, seed=7), show_progress=False)
    metadata = run_ingest(str(folder), str(tmp_path / "out"), IngestConfig())
    assert metadata["num_written"] == 1140 and metadata["num_rejected"] == 0

    def split_by_sha(examples_dir):
        return {
            ex["sha256"]: split
            for split, rows in read_examples(examples_dir).items()
            for ex in rows
        }

    before, after = split_by_sha(output), split_by_sha(tmp_path / "out")
    assert len(after) == 1140
    assert {sha: after[sha] for sha in before} == before


def png_variant(path: pathlib.Path, k: int) -> bytes:
    """A valid PNG with different bytes than `path` (one pixel changed)."""
    image = Image.open(path).convert("RGB")
    image.putpixel((0, 0), (k, k, k))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def planted(synthetic_images, tmp_path_factory) -> tuple[pathlib.Path, set[str]]:
    """Good synthetic PNGs plus one file for each rejection reason; returns (folder, good names)."""
    folder = tmp_path_factory.mktemp("planted")
    good = sorted(synthetic_images.glob("*.png"))[:12]
    for p in good:
        shutil.copy(p, folder / p.name)
    a, b, c = (p.read_bytes() for p in good[:3])
    label_a = good[0].name.split("_")[0]
    planted_files = {
        "trunc_1.png": c[: len(c) // 2],  # a PNG cut in half
        "empty_2.png": b"",
        "text_3.png": b"this is not an image\n",
        "ABcd_4.png": png_variant(good[3], 1),  # upper case: outside the alphabet
        f"{label_a}_900.png": a,  # exact duplicate of good[0] (same bytes, same label)
        "zzzz_901.png": b,  # same bytes as good[1] under another label: both rejected
        "abcdefg_5.png": png_variant(good[3], 2),  # 7 characters > max_label_length=6
        "_6.png": png_variant(good[3], 3),  # empty label
    }
    for name, data in planted_files.items():
        (folder / name).write_bytes(data)
    gif = io.BytesIO()
    Image.new("L", (20, 10)).save(gif, format="GIF")
    (folder / "gifimg_7.png").write_bytes(gif.getvalue())
    good_names = {p.name for p in good} - {good[1].name}
    return folder, good_names


def test_planted_bad_inputs_are_rejected_with_reasons(planted, tmp_path, synthetic_images):
    folder, good_names = planted
    config = IngestConfig(alphabet="0123456789abcdefghijklmnopqrstuvwxyz", max_label_length=6)
    metadata = run_ingest(str(folder), str(tmp_path / "out"), config)
    rejected = read_rejected(tmp_path / "out")
    good = sorted(synthetic_images.glob("*.png"))[:12]
    expected = {
        "trunc_1.png": UNDECODABLE,
        "empty_2.png": EMPTY_FILE,
        "text_3.png": NOT_AN_IMAGE,
        "ABcd_4.png": BAD_CHARACTER,
        f"{good[0].name.split('_')[0]}_900.png": DUPLICATE,
        "zzzz_901.png": CONFLICTING_LABELS,
        good[1].name: CONFLICTING_LABELS,
        "abcdefg_5.png": LABEL_TOO_LONG,
        "_6.png": EMPTY_LABEL,
        "gifimg_7.png": UNSUPPORTED_FORMAT,
    }
    assert {name: r["reason"] for name, r in rejected.items()} == expected
    assert rejected[f"{good[0].name.split('_')[0]}_900.png"]["detail"].endswith(good[0].name)
    written = {
        pathlib.Path(ex["source"].decode()).name
        for rows in read_examples(tmp_path / "out").values()
        for ex in rows
    }
    assert written == good_names
    assert metadata["num_inputs"] == len(written) + len(rejected) == 21
    assert metadata["rejected_reasons"][CONFLICTING_LABELS] == 2


def test_synth_output_ingests_with_labels_as_generated(synthetic_examples):
    expected = {
        file_name(label, i, False): label
        for i, label in enumerate(make_labels(SynthConfig(count=SYNTHETIC_COUNT, seed=0)))
    }
    rows = [ex for rows in read_examples(synthetic_examples).values() for ex in rows]
    got = {pathlib.Path(ex["source"].decode()).name: ex["label"].decode() for ex in rows}
    assert got == expected
    metadata = json.loads((synthetic_examples / examples.METADATA_FILE).read_text())
    assert metadata["num_rejected"] == 0 and metadata["label_length_range"] == [4, 6]


def test_labels_from_csv(tmp_path):
    folder = tmp_path / "csv_images"
    written = generate(
        str(folder), SynthConfig(count=8, seed=3, labels_csv=True), show_progress=False
    )
    (folder / "unlisted.png").write_bytes(png_variant(pathlib.Path(written[0][0]), 1))
    with open(folder / "labels.csv", "a", newline="") as f:
        csv.writer(f).writerow(["missing.png", "abcd"])
    metadata = run_ingest(
        str(folder), str(tmp_path / "out"), IngestConfig(labels_csv=str(folder / "labels.csv"))
    )
    got = {
        pathlib.Path(ex["source"].decode()).name: ex["label"].decode()
        for rows in read_examples(tmp_path / "out").values()
        for ex in rows
    }
    assert got == {pathlib.Path(p).name: label for p, label in written}
    reasons = {name: r["reason"] for name, r in read_rejected(tmp_path / "out").items()}
    assert reasons == {"unlisted.png": EMPTY_LABEL, "missing.png": UNREADABLE}
    assert metadata["num_inputs"] == 10
    (folder / "bad.csv").write_text("file,text\n000000.png,abcd\n")
    with pytest.raises(ValueError, match="filename,label"):
        run_ingest(
            str(folder), str(tmp_path / "bad"), IngestConfig(labels_csv=str(folder / "bad.csv"))
        )


def test_fixed_vocab_rejects_unknown_characters_and_keeps_ids(synthetic_images, tmp_path):
    vocab_path = tmp_path / "vocab.txt"
    vocab = list("9876543210abcdefghijklmnopqrstuvw")  # no x, y, z; deliberately unsorted
    examples.write_vocab(str(vocab_path), vocab)
    metadata = run_ingest(
        str(synthetic_images),
        str(tmp_path / "out"),
        IngestConfig(vocab_path=str(vocab_path), span=3),
    )
    assert (tmp_path / "out" / "vocab.txt").read_text() == vocab_path.read_text()
    rejected = read_rejected(tmp_path / "out")
    assert rejected and {r["reason"] for r in rejected.values()} == {BAD_CHARACTER}
    assert all(set(r["label"]) & set("xyz") for r in rejected.values())
    rows = [ex for rows in read_examples(tmp_path / "out").values() for ex in rows]
    assert len(rows) + len(rejected) == SYNTHETIC_COUNT == metadata["num_inputs"]
    for ex in rows:
        assert [vocab[i] for i in ex["label_ids"]] == list(ex["label"].decode())
        assert ex["span"] == 3


def test_images_of_earlier_spans_are_rejected_naming_the_span(
    synthetic_images, synthetic_examples, tmp_path
):
    batch = tmp_path / "batch"
    generate(str(batch), SynthConfig(count=20, seed=11), show_progress=False)
    earlier = sorted(synthetic_images.iterdir())[:6]
    for n, path in enumerate(earlier[:5]):  # same bytes and label, another file name
        shutil.copy(path, batch / f"{path.name.split('_')[0]}_again{n}.png")
    shutil.copy(earlier[5], batch / "relabelled_1.png")  # same bytes, another label
    config = IngestConfig(
        vocab_path=str(synthetic_examples / examples.VOCAB_FILE),
        span=1,
        earlier_spans=(str(synthetic_examples),),
    )
    metadata = run_ingest(str(batch), str(tmp_path / "span-1"), config)

    rejected = read_rejected(tmp_path / "span-1")
    duplicates = {name: r for name, r in rejected.items() if r["reason"] == DUPLICATE}
    assert sorted(duplicates) == sorted(
        f"{p.name.split('_')[0]}_again{n}.png" for n, p in enumerate(earlier[:5])
    )
    for n, path in enumerate(earlier[:5]):
        row = duplicates[f"{path.name.split('_')[0]}_again{n}.png"]
        assert row["detail"] == f"already in span 0 as {path}" and row["earlier_span"] == 0
    relabelled = rejected["relabelled_1.png"]
    assert relabelled["reason"] == CONFLICTING_LABELS and relabelled["earlier_span"] == 0
    assert relabelled["detail"].startswith(f"already in span 0 as {earlier[5]}, labelled ")
    assert metadata["num_written"] == 20 - sum(
        r["reason"] == BAD_CHARACTER for r in rejected.values()
    )
    written = {
        ex["sha256"].decode() for rows in read_examples(tmp_path / "span-1").values() for ex in rows
    }
    assert not written & {examples.sha256_hex(p.read_bytes()) for p in earlier}


def test_existing_output_needs_overwrite_and_failures_leave_nothing(synthetic_examples, tmp_path):
    with pytest.raises(FileExistsError, match="complete ExampleGen output"):
        run_ingest(str(tmp_path), str(synthetic_examples), IngestConfig())
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x_1.png").write_bytes(b"")
    with pytest.raises(ValueError, match="no usable images"):
        run_ingest(str(bad), str(tmp_path / "out"), IngestConfig())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad"]


def test_overwrite_replaces_output(synthetic_images, tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    (output / "stale.txt").write_text("old")
    with pytest.raises(FileExistsError, match="not empty"):
        run_ingest(str(synthetic_images), str(output), IngestConfig(num_shards=1))
    run_ingest(str(synthetic_images), str(output), IngestConfig(num_shards=1, overwrite=True))
    assert not (output / "stale.txt").exists()
    assert (
        sorted(p.name for p in output.glob("Split-*/*")) == ["data_tfrecord-00000-of-00001.gz"] * 2
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_dataflow_pipeline_constructs_and_serialises(synthetic_images):
    options = PipelineOptions(
        [
            "--runner=DataflowRunner",
            "--project=captcha-ocr-test",
            "--region=europe-west1",
            "--temp_location=gs://captcha-ocr-test/tmp",
            "--setup_file=./setup.py",
            "--dry_run=True",
            "--no_auth",  # validate options without calling Google Cloud
        ]
    )
    plan = plan_ingest(str(synthetic_images), "gs://captcha-ocr-test/examples", IngestConfig())
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, plan)
    proto = pipeline.to_runner_api()
    names = {t.unique_name for t in proto.components.transforms.values()}
    assert {"Inspect", "ResolveDuplicates", "WriteShards", "WriteSummary"} <= names
    assert len(proto.components.transforms) > 20
    rebuilt = beam.Pipeline.from_runner_api(proto, pipeline.runner, options)  # unpickles DoFns
    assert (
        rebuilt.to_runner_api().components.transforms.keys() == proto.components.transforms.keys()
    )


def test_multi_processing_matches_in_memory(synthetic_images, synthetic_examples, tmp_path):
    """DoFns unpickle in worker processes, and the output does not depend on the runner mode."""
    args = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]
    multi = run_ingest(str(synthetic_images), str(tmp_path / "multi"), IngestConfig(), args)
    assert multi["num_written"] == SYNTHETIC_COUNT
    assert multi["beam_options"]["direct_running_mode"] == "multi_processing"
    assert shard_bytes(tmp_path / "multi") == shard_bytes(synthetic_examples)


def test_cli_ingest_passes_beam_options(synthetic_images, tmp_path, capsys):
    out = tmp_path / "cli"
    code = cli.main(
        [
            "ingest",
            "--images",
            str(synthetic_images),
            "--output",
            str(out),
            "--eval-percent",
            "50",
            "--num-shards",
            "2",
            "--job_name=cli-test",
        ]
    )
    assert code == 0
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["eval_percent"] == 50 and metadata["num_shards"] == 2
    assert metadata["beam_options"]["job_name"] == "cli-test"
    assert f"{SYNTHETIC_COUNT} written" in capsys.readouterr().out


def test_a_bomb_is_rejected_and_the_rest_of_the_folder_ingested(synthetic_images, tmp_path):
    """PIL's own DecompressionBombError (20000^2) and our header limit (3000^2) alike."""
    folder = tmp_path / "images"
    folder.mkdir()
    good = sorted(synthetic_images.glob("*.png"))[:12]
    for p in good:
        shutil.copy(p, folder / p.name)
    (folder / "bomb_1.png").write_bytes(bilevel_png_bomb(20000, 20000))
    (folder / "big_2.png").write_bytes(bilevel_png_bomb(3000, 3000))
    limit = max(p.stat().st_size for p in good)
    (folder / "huge_3.png").write_bytes(good[0].read_bytes() + b"\0" * limit)
    config = IngestConfig(max_pixels=2_000_000, max_file_bytes=limit)
    metadata = run_ingest(str(folder), str(tmp_path / "out"), config)
    rejected = read_rejected(tmp_path / "out")
    assert {name: r["reason"] for name, r in rejected.items()} == {
        "bomb_1.png": TOO_LARGE,
        "big_2.png": TOO_LARGE,
        "huge_3.png": TOO_LARGE,
    }
    assert "3000x3000: 9,000,000 pixels > the limit 2,000,000" in rejected["big_2.png"]["detail"]
    assert metadata["num_written"] == 12 and metadata["num_inputs"] == 15


def test_implausible_shapes_are_rejected_and_odd_ones_listed(synthetic_images, tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    for p in sorted(synthetic_images.glob("*.png"))[:12]:  # 200x50
        shutil.copy(p, folder / p.name)
    sizes = {
        "dot_1.png": (1, 1),
        "sliver_2.png": (5000, 10),
        "small_3.png": (40, 10),
        "strip_4.png": (200, 12),
    }
    for name, size in sizes.items():
        (folder / name).write_bytes(encode(Image.new("L", size, 255), "PNG"))
    out = tmp_path / "out"
    assert cli.main(["ingest", "--images", str(folder), "--output", str(out)]) == 0
    assert "2 images far from the data set's shape" in capsys.readouterr().out
    metadata = json.loads((out / examples.METADATA_FILE).read_text())
    rejected = read_rejected(out)
    assert {name: r["reason"] for name, r in rejected.items()} == {
        "dot_1.png": IMPLAUSIBLE_SIZE,
        "sliver_2.png": IMPLAUSIBLE_SIZE,
    }
    assert "aspect ratio 500:1" in rejected["sliver_2.png"]["detail"]
    assert metadata["aspect_ratio_range"] == [4.0, 16.6667]  # the sliver's 500 kept out
    outliers = metadata["size_outliers"]
    assert outliers["count"] == 2 and outliers["median_aspect"] == 4.0
    listed = {
        (o["width"], o["height"]): [pathlib.Path(e).name for e in o["examples"]]
        for o in outliers["sizes"]
    }
    assert listed == {(40, 10): ["small_3.png"], (200, 12): ["strip_4.png"]}
    record = runner.StepRecord("ExampleGen", "ran", 1.0, str(out), "-", metadata)
    page = pathlib.Path(report.write_report(str(tmp_path / "report.html"), [record])).read_text()
    assert "<h2>Ingestion" in page
    assert "<td>implausible_size</td><td>2</td>" in page and "<td>40x10</td>" in page
