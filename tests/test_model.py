"""Model, metrics, input pipeline and augmentation: hand-computed values, exact equalities."""

from __future__ import annotations

import dataclasses
import random

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import CLEAN_HEIGHT, clean_captcha, tiny_model, write_examples_dir

from components import examples
from components.augmentation import NO_AUGMENTATION, AugmentConfig, augment_batch, make_augment
from components.dataset import make_dataset, read_split
from components.decoding import decode
from components.geometry import Geometry
from components.model import (
    KERAS_EXAMPLE,
    CharacterErrorRate,
    ModelConfig,
    SequenceAccuracy,
    build_model,
    ctc_loss,
    fold_batch_norm,
)
from components.preprocessing import preprocess_image


def logits_for(paths: list[list[int]], classes: int) -> tf.Tensor:
    """Logits whose best path is the given class per time step."""
    return tf.constant(np.eye(classes, dtype="float32")[np.array(paths)] * 10.0)


def test_greedy_decode_collapses_repeats_and_drops_blanks():
    # vocab a b c -> classes 1 2 3, blank 0
    paths = [[1, 1, 0, 1, 2, 2, 0, 3], [0, 0, 0, 0, 0, 0, 0, 0], [3, 0, 3, 3, 0, 0, 2, 1]]
    text, confidence = decode(logits_for(paths, 4), ["a", "b", "c"])
    assert [t.decode() for t in text.numpy()] == ["aabc", "", "ccba"]
    assert np.all((confidence.numpy() > 0.99) & (confidence.numpy() <= 1.0))


def test_keras_metrics_hand_computed():
    # labels (ids + 1, zero padded): "aab", "cb", "abc"
    y_true = tf.constant([[1, 1, 2], [3, 2, 0], [1, 2, 3]])
    paths = [[1, 0, 1, 2, 2, 0], [3, 3, 0, 0, 0, 0], [1, 2, 2, 2, 0, 3]]
    # decoded: "aab" (right), "c" (1 deletion), "abc" (right) -> 2/3 exact, CER 1/8
    y_pred = logits_for(paths, 4)
    accuracy, cer = SequenceAccuracy(), CharacterErrorRate()
    accuracy.update_state(y_true, y_pred)
    cer.update_state(y_true, y_pred)
    assert float(accuracy.result()) == pytest.approx(2 / 3)
    assert float(cer.result()) == pytest.approx(1 / 8)
    cer.update_state(tf.constant([[1, 2, 0]]), logits_for([[3, 0, 3, 0, 3, 0]], 4))
    assert float(cer.result()) == pytest.approx((1 + 3) / (8 + 2))  # "ccc" vs "ab": 2 subs + 1 ins


def test_ctc_loss_is_keras_ctc_loss_with_its_gradient_and_saves_with_the_model(tmp_path):
    # Labels (ids + 1, zero padded) of lengths 3, 1, 5 and 2, repeats included.
    y_true = tf.constant([[1, 1, 2, 0, 0], [3, 0, 0, 0, 0], [1, 2, 2, 3, 1], [2, 2, 0, 0, 0]])
    logits = tf.random.stateless_normal([4, 12, 4], seed=[1, 2])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(logits)
        ours = ctc_loss(y_true, logits)
        lengths = tf.reduce_sum(tf.cast(y_true != 0, tf.int32), 1)
        keras_loss = keras.ops.ctc_loss(y_true, logits, lengths, tf.fill([4], 12), mask_index=0)
    np.testing.assert_allclose(ours.numpy(), keras_loss.numpy(), rtol=1e-5)
    np.testing.assert_allclose(
        tape.gradient(ours, logits).numpy(), tape.gradient(keras_loss, logits).numpy(), atol=1e-5
    )
    model = build_model(dataclasses.replace(KERAS_EXAMPLE, image_height=16, image_width=32), 3)
    model.save(tmp_path / "model.keras")
    assert keras.models.load_model(tmp_path / "model.keras").loss is ctc_loss


def test_keras_example_preset_is_the_example_architecture():
    model = build_model(KERAS_EXAMPLE, vocab_size=19)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [32, 64]
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)
    assert model(np.zeros((1, 50, 200, 1), np.float32)).shape == (1, 50, 20)
    # No weight depends on the width: a batch cut to 100 columns gives 25 frames.
    assert model(np.zeros((2, 50, 100, 1), np.float32)).shape == (2, 25, 20)
    # conv 320 + 18,496; dense 768*64 + 64; BiLSTM 2*4*128*(64+128+1); BiLSTM 2*4*64*(256+64+1)
    body = 320 + 18_496 + 49_216 + 197_632 + 164_352
    assert model.count_params() == body + 128 * 20 + 20


def test_model_config_json_round_trip_and_label_length_check(tmp_path):
    config = ModelConfig(
        image_height=50,
        image_width=200,
        conv_filters=(16, 32, 64),
        batch_norm=True,
        lstm_units=(64,),
    )
    config.to_json(str(tmp_path / "hp.json"))
    assert ModelConfig.from_json(str(tmp_path / "hp.json")) == config
    assert config.time_steps == 50 and config.max_label_length == 24
    narrow = dataclasses.replace(config, image_width=40)  # 10 time steps
    narrow.check_label_length(4)
    with pytest.raises(ValueError, match="at least 11 time steps"):
        narrow.check_label_length(5)
    with pytest.raises(ValueError, match="unknown model hyperparameters"):
        ModelConfig.from_dict({"conv_filter": [1]})


def test_augmentation_changes_images_not_labels_and_is_off_at_eval(clean_examples):
    kwargs = dict(geometry=Geometry(24, 64, 1.0), max_label_length=4, batch_size=8)
    augment = make_augment(
        AugmentConfig(max_shift=0.1, max_rotation_degrees=5, max_noise_stddev=0.05)
    )
    tf.random.set_seed(1)
    plain = list(make_dataset(str(clean_examples), examples.TRAIN, **kwargs))
    varied = list(
        make_dataset(
            str(clean_examples), examples.TRAIN, training=True, augment=augment, seed=3, **kwargs
        )
    )
    shuffled_plain = list(
        make_dataset(str(clean_examples), examples.TRAIN, training=True, seed=3, **kwargs)
    )
    # Same shuffle seed: the same labels in the same order, with and without augmentation.
    for (images, labels), (plain_images, plain_labels) in zip(varied, shuffled_plain, strict=False):
        np.testing.assert_array_equal(labels.numpy(), plain_labels.numpy())
        assert images.shape == plain_images.shape
        assert float(tf.reduce_min(images)) >= 0.0 and float(tf.reduce_max(images)) <= 1.0
        assert float(tf.reduce_mean(tf.abs(images - plain_images))) > 0.005
    # Eval batches are exactly the shared preprocessing of the stored bytes, in order.
    stored = [ex["image"] for ex in read_split(str(clean_examples), examples.TRAIN)]
    eval_images = tf.concat([images for images, _ in plain], axis=0)
    eval_with_augment = tf.concat(
        [
            i
            for i, _ in make_dataset(str(clean_examples), examples.TRAIN, augment=augment, **kwargs)
        ],
        0,
    )
    expected = tf.stack([preprocess_image(b, Geometry(24, 64, 1.0)) for b in stored])
    np.testing.assert_array_equal(eval_images.numpy(), expected.numpy())
    np.testing.assert_array_equal(eval_with_augment.numpy(), expected.numpy())


def test_width_buckets_cut_batches_to_their_images_and_lose_nothing(tmp_path):
    """Captchas 40 to 160 wide in a 160-wide input: each training batch holds one bucket's
    images, cut to its width, with every column of ink they had at the full width."""
    rng = random.Random(0)
    widths = {"0": 40, "1": 64, "2": 100, "3": 160}  # the label's first digit names its width
    texts = set()
    while len(texts) < 48:  # distinct, so that each image is found by its label
        texts.add("".join(rng.choice("0123") for _ in range(rng.randint(2, 4))))
    items = [(clean_captcha(text, rng, width=widths[text[0]]), text) for text in sorted(texts)]
    folder = write_examples_dir(tmp_path / "examples", {examples.TRAIN: items}, list("0123"))
    geometry = Geometry(CLEAN_HEIGHT, 160, 1.0)
    assert geometry.bucket_widths(4) == [40, 80, 120, 160]
    kwargs = dict(geometry=geometry, max_label_length=4, batch_size=4, training=True)
    full = {
        tuple(labels.numpy()): float(tf.reduce_sum(images))
        for batch in make_dataset(str(folder), examples.TRAIN, **kwargs)
        for images, labels in zip(*(tf.unstack(x) for x in batch), strict=True)
    }
    cut = {40: set(), 80: set(), 120: set(), 160: set()}
    seen = 0
    for images, labels in make_dataset(str(folder), examples.TRAIN, width_buckets=4, **kwargs):
        width = images.shape[2]
        for image, label in zip(images, labels.numpy(), strict=True):
            seen += 1
            cut[width].add(int(label[0]) - 1)  # ids + 1
            assert float(tf.reduce_sum(image)) == pytest.approx(full[tuple(label)], rel=1e-6)
    assert seen == len(items) == len(full)
    assert cut == {40: {0}, 80: {1}, 120: {2}, 160: {3}}
    # The model takes every width in one fit.
    model = build_model(tiny_model(image_height=CLEAN_HEIGHT, image_width=160), vocab_size=4)
    history = model.fit(
        make_dataset(str(folder), examples.TRAIN, width_buckets=4, **kwargs), verbose=0
    )
    assert np.isfinite(history.history["loss"][0])


def test_augment_batch_keeps_shape_range_and_identity_when_off():
    images = tf.random.uniform([4, 24, 64, 1])
    assert make_augment(NO_AUGMENTATION) is None
    out = augment_batch(images, dataclasses.replace(NO_AUGMENTATION, max_shift=0.0))
    np.testing.assert_allclose(out.numpy(), images.numpy(), atol=1e-5)
    out = augment_batch(images, AugmentConfig())
    assert out.shape == images.shape


def test_fold_batch_norm_gives_the_same_logits_without_batch_norm_layers():
    config = ModelConfig(
        image_height=32,
        image_width=64,
        conv_filters=(8, 16, 16),
        batch_norm=True,
        dense_units=16,
        lstm_units=(16,),
    )
    model = build_model(config, vocab_size=5)
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            channels = layer.gamma.shape[0]
            layer.set_weights(
                [
                    rng.uniform(-2, 2, channels),
                    rng.normal(0, 1, channels),
                    rng.normal(0, 1, channels),
                    rng.uniform(0.1, 3, channels),
                ]
            )
    images = rng.uniform(0, 1, (4, 32, 64, 1)).astype("float32")

    folded = fold_batch_norm(model, config)

    assert not [la for la in folded.layers if isinstance(la, keras.layers.BatchNormalization)]
    assert [la.name for la in folded.layers if la.name.startswith("conv") and la.weights] == [
        "conv1",
        "conv2",
        "conv3",
    ]
    expected = model(images, training=False).numpy()
    np.testing.assert_allclose(
        folded(images, training=False).numpy(),
        expected,
        rtol=1e-4,
        atol=1e-4 * np.abs(expected).max(),
    )
    assert fold_batch_norm(folded, dataclasses.replace(config, batch_norm=False)) is folded
