"""The data gate on real TFDV statistics: a clean batch passes, each planted fault is caught."""

from __future__ import annotations

import base64
import html.parser
import json
import pathlib

import headless_chromium
import pytest
import tensorflow as tf
import tensorflow_data_validation as tfdv
from tensorflow_data_validation.statistics.stats_impl import generate_statistics_in_memory
from tfx_bsl.coders.example_coder import ExamplesToRecordBatchDecoder

from components import examples
from components.dataset import read_split
from components.example_gen import IngestConfig, run_ingest
from components.example_validator import describe_anomalies, validate
from components.schema_gen import load_schema
from components.statistics_gen import stats_options
from components.synth import DEFAULT_ALPHABET, SynthConfig, generate
from components.validation import ValidateConfig, run_validate
from pipeline.cli import main

NEW_CHARACTERS = "ABC"  # not in the baseline's vocabulary (lower case and digits)


@pytest.fixture(scope="module")
def baseline(synthetic_examples, tmp_path_factory):
    """The first batch: schema inferred and curated from it, statistics kept for drift."""
    output = tmp_path_factory.mktemp("baseline_validation")
    return run_validate(str(synthetic_examples), str(output), ValidateConfig())


@pytest.fixture(scope="module")
def make_batch(synthetic_examples, tmp_path_factory):
    """Synthesize, ingest with the baseline's vocabulary (+ `extra_characters` appended)."""

    def make(name: str, extra_characters: str = "", **synth) -> pathlib.Path:
        root = tmp_path_factory.mktemp(name)
        generate(str(root / "images"), SynthConfig(**synth), show_progress=False)
        vocab = examples.read_vocab(str(synthetic_examples / examples.VOCAB_FILE))
        examples.write_vocab(str(root / "vocab.txt"), vocab + list(extra_characters))
        run_ingest(
            str(root / "images"),
            str(root / "examples"),
            IngestConfig(vocab_path=str(root / "vocab.txt"), num_shards=1, span=1),
        )
        return root / "examples"

    return make


# Each planted batch: synth options (+ characters appended to the baseline's vocabulary).
BATCHES = {
    "clean": dict(count=150, seed=101),
    "new_characters": dict(
        count=60,
        seed=102,
        alphabet=DEFAULT_ALPHABET[:10] + NEW_CHARACTERS,
        extra_characters=NEW_CHARACTERS,
    ),
    "long_labels": dict(count=40, seed=103, min_length=8, max_length=9),
    "other_size": dict(count=40, seed=104, width=160, height=40),
    "digits_only": dict(count=60, seed=105, alphabet="0123"),
}


@pytest.fixture(scope="module")
def validate_batch(baseline, make_batch):
    """Make a BATCHES batch once and validate it against the baseline's schema and statistics."""
    done = {}

    def validate(name: str):
        if name not in done:
            examples_dir = make_batch(name, **BATCHES[name])
            config = ValidateConfig(
                schema_path=baseline.schema_path,
                previous_statistics=str(pathlib.Path(baseline.result_path).parent),
            )
            done[name] = (
                examples_dir,
                run_validate(str(examples_dir), str(examples_dir / "validation"), config),
            )
        return done[name]

    return validate


def _count_examples(examples_dir: pathlib.Path, split: str, predicate) -> int:
    return sum(1 for ex in read_split(str(examples_dir), split) if predicate(ex))


def _messages_about(result, split: str, feature: str) -> list[str]:
    return [m for m in result.anomalies if m.startswith(f"[{split}] feature '{feature}'")]


def test_inferred_schema_is_curated(baseline, synthetic_examples):
    assert baseline.schema_inferred and baseline.ok, baseline.anomalies
    schema = {f.name: f for f in load_schema(baseline.schema_path).feature}
    vocab = examples.read_vocab(str(synthetic_examples / examples.VOCAB_FILE))
    assert set(schema) == set(examples.FEATURE_SPEC)
    assert all(f.presence.min_fraction == 1.0 for f in schema.values())
    assert not schema["label"].HasField("domain") and not schema["label"].HasField("string_domain")
    ids = schema["label_ids"]
    assert (ids.int_domain.min, ids.int_domain.max) == (0, len(vocab) - 1)
    assert ids.drift_comparator.infinity_norm.threshold == pytest.approx(0.1)
    lengths = [
        len(ex["label_ids"])
        for s in examples.SPLITS
        for ex in read_split(str(synthetic_examples), s)
    ]
    assert (ids.value_count.min, ids.value_count.max) == (min(lengths), max(lengths))
    length = schema["label_length"].int_domain
    assert (length.min, length.max) == (min(lengths), max(lengths))
    assert (schema["width"].int_domain.min, schema["width"].int_domain.max) == (200, 200)
    assert (schema["height"].int_domain.min, schema["height"].int_domain.max) == (50, 50)
    summary = json.loads(pathlib.Path(baseline.result_path).read_text())
    assert summary["ok"] is True and set(summary["statistics"]) == set(examples.SPLITS)


def test_clean_batch_from_the_same_distribution_passes(validate_batch):
    _, result = validate_batch("clean")
    assert result.ok, result.anomalies
    for split in examples.SPLITS:  # drift was measured, and is small, not skipped
        anomalies = tfdv.load_anomalies_text(result.anomalies_paths[split])
        measured = {
            tuple(d.path.step): d.drift_measurements[0].value for d in anomalies.drift_skew_info
        }
        assert 0 < measured[("label_ids",)] < 0.1


def test_characters_outside_the_vocabulary_are_caught(validate_batch, baseline):
    examples_dir, result = validate_batch("new_characters")
    assert not result.ok
    vocab_size = len(DEFAULT_ALPHABET)
    for split in examples.SPLITS:
        affected = _count_examples(
            examples_dir, split, lambda ex: bool(tf.reduce_any(ex["label_ids"] >= vocab_size))
        )
        (message,) = [m for m in _messages_about(result, split, "label_ids") if "expected" in m]
        assert f"expected values in [0, {vocab_size - 1}]" in message
        assert f"in {affected} example" in message
        assert "'A'" in message or "'B'" in message or "'C'" in message


def test_labels_longer_than_the_schema_allows_are_caught(validate_batch):
    examples_dir, result = validate_batch("long_labels")
    assert not result.ok
    for split in examples.SPLITS:
        total = _count_examples(examples_dir, split, lambda ex: True)
        (length_message,) = _messages_about(result, split, "label_length")
        assert "expected values in [4, 6]" in length_message
        assert f"in {total} examples" in length_message
        (ids_message,) = [
            m for m in _messages_about(result, split, "label_ids") if "per example" in m
        ]
        assert "expected 4 to 6 values per example; saw 8 to 9" in ids_message


def test_images_of_another_size_are_caught(validate_batch):
    examples_dir, result = validate_batch("other_size")
    assert not result.ok
    for split in examples.SPLITS:
        total = _count_examples(examples_dir, split, lambda ex: True)
        for feature, seen in (("width", 160), ("height", 40)):
            (message,) = _messages_about(result, split, feature)
            assert f"saw {seen} in {total} examples" in message


def test_character_drift_is_caught(validate_batch):
    _, result = validate_batch("digits_only")
    assert not result.ok
    train_messages = _messages_about(result, examples.TRAIN, "label_ids")
    assert len(train_messages) == 1 and "drifted from the previous batch" in train_messages[0]
    assert "above the threshold 0.1" in train_messages[0]


class _HTMLText(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.images: list[str] = []
        self.open_tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag not in ("meta", "img", "br"):
            self.open_tags.append(tag)
        if tag == "img":
            self.images.append(dict(attrs)["src"])

    def handle_endtag(self, tag):
        assert self.open_tags and self.open_tags.pop() == tag, f"unbalanced </{tag}>"

    def handle_data(self, data):
        self.text.append(data)


def _check_report(path: str) -> None:
    parser = _HTMLText()
    parser.feed(pathlib.Path(path).read_text(encoding="utf-8"))
    parser.close()
    assert parser.open_tags == []
    text = " ".join(parser.text)
    for split in examples.SPLITS:
        assert f"Split {split}" in text
    for feature in examples.FEATURE_SPEC:
        assert feature in text
    assert len(parser.images) >= 3 * len(examples.SPLITS)
    for src in parser.images:
        prefix = "data:image/png;base64,"
        assert src.startswith(prefix)
        assert base64.b64decode(src[len(prefix) :]).startswith(b"\x89PNG")
    browser = headless_chromium.find_browser()
    if browser:  # rendered for real too, when a browser is installed (CI installs one)
        headless_chromium.assert_renders_offline(browser, path, tuple(examples.FEATURE_SPEC))


def test_report_is_well_formed_with_every_feature(baseline):
    _check_report(baseline.report_path)


def test_report_renders_offline_in_headless_chromium(baseline):
    browser = headless_chromium.browser_or_skip()
    report = headless_chromium.assert_renders_offline(
        browser, baseline.report_path, tuple(f"Split {split}" for split in examples.SPLITS)
    )
    assert len(report.images) >= 3 * len(examples.SPLITS)


def test_cli_prints_anomalies_and_exits_nonzero(baseline, validate_batch, capsys, tmp_path):
    examples_dir, _ = validate_batch("other_size")
    argv = ["validate", "--examples", str(examples_dir), "--schema", baseline.schema_path]
    assert main([*argv, "--output", str(tmp_path / "strict")]) == 1
    printed = capsys.readouterr().out
    assert "feature 'width': expected values in [200, 200]; saw 160 in" in printed
    assert "feature 'height': expected values in [50, 50]; saw 40 in" in printed
    assert (tmp_path / "strict" / "report.html").is_file()
    assert main([*argv, "--output", str(tmp_path / "lenient"), "--allow-anomalies"]) == 0
    assert "feature 'width'" in capsys.readouterr().out


def test_real_captchas_get_a_schema_and_validate_against_it(real_captcha_examples, tmp_path):
    result = run_validate(str(real_captcha_examples), str(tmp_path), ValidateConfig())
    assert result.schema_inferred and result.ok, result.anomalies
    schema = {f.name: f for f in load_schema(result.schema_path).feature}
    assert schema["label_ids"].int_domain.max == 18  # the 19 characters of the data set
    assert (schema["label_length"].int_domain.min, schema["label_length"].int_domain.max) == (5, 5)
    _check_report(result.report_path)


def test_messages_count_missing_features_and_unexpected_formats(baseline, synthetic_examples):
    """Faults ExampleGen never writes, planted in real examples; statistics by TFDV in memory."""
    schema = load_schema(baseline.schema_path)
    shards = tf.io.gfile.glob(examples.shard_pattern(str(synthetic_examples), examples.TRAIN))
    records = [
        tf.train.Example.FromString(r.numpy())
        for r in tf.data.TFRecordDataset(shards, compression_type="GZIP").take(20)
    ]
    for record in records[:3]:
        record.features.feature["image_format"].bytes_list.value[:] = [b"gif"]
    for record in records[3:5]:
        del record.features.feature["label"]
    batch = ExamplesToRecordBatchDecoder().DecodeBatch([r.SerializeToString() for r in records])
    statistics = generate_statistics_in_memory(batch, stats_options(schema))
    messages = describe_anomalies(validate(statistics, schema), statistics, schema)
    assert "feature 'image_format': expected one of jpeg, png; saw 'gif' (3 examples)" in messages
    assert "feature 'label': required in every example; missing in 2 of 20 examples" in messages
    assert len(messages) == 2, messages


@pytest.mark.parametrize("threshold", [0.0, -0.1, 1.5])
def test_drift_thresholds_outside_0_1_are_refused(threshold):
    with pytest.raises(ValueError, match="L-infinity"):
        ValidateConfig(drift_threshold=threshold)


def test_bad_paths_fail_before_any_work(synthetic_examples, tmp_path):
    with pytest.raises(FileNotFoundError, match="vocab.txt"):
        run_validate(str(tmp_path / "nothing"), str(tmp_path / "out"), ValidateConfig())
    missing = ValidateConfig(previous_statistics=str(tmp_path / "no-such-statistics"))
    with pytest.raises(FileNotFoundError, match="no previous statistics"):
        run_validate(str(synthetic_examples), str(tmp_path / "out"), missing)
    assert not (tmp_path / "out").exists()
