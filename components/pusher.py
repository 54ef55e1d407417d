"""Pusher: a trained model -> a SavedModel with decoding built in, in TF Serving's layout.

Contract 2 of DESIGN.md. The `serving_default` signature takes encoded image bytes and
answers with text, so no client re-implements preprocessing or CTC decoding: the graph runs
`preprocessing.preprocess_each` (the trainer's own `preprocess_image` on a batch, behind the
shared decoder's limits on pixels and bytes) and `decoding.decode` (with the answer lengths
and the calibration the trainer fitted), with the vocabulary embedded as a constant. The
model in the graph has its batch norms folded into its convs (`model.fold_batch_norm`): the
same logits, fewer passes over memory.

Layout: `<export_dir>[/<model_name>]/<version>/`. A version is first written to a
non-numeric temporary folder beside it and renamed into place when complete, so TF Serving
(which only loads numeric folders) never sees half a model. Blessing: the candidate and the
newest existing version are both run through their serving signatures on the same eval split;
the candidate is pushed only if it reaches `min_accuracy` and is not worse than the baseline
by more than `tolerance` (or if `force`).
"""

from __future__ import annotations

import dataclasses
import logging
import posixpath
import uuid
from collections.abc import Sequence

import keras
import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

from components import artifact_io, examples
from components.decoding import Decoding, decode, load_decoding, save_decoding
from components.model import ModelConfig, fold_batch_norm
from components.object_store import publish_folder
from components.predict import (
    INPUT_NAME,
    PREPROCESS_SIGNATURE,
    SAVED_MODEL_FILE,
    SERVING_SIGNATURE,
    evaluate_saved_model,
    saved_model_versions,
)
from components.preprocessing import has_ink, preprocess_each
from components.settings import setting
from components.trainer import MODEL_CONFIG_FILE, load_trained

log = logging.getLogger(__name__)

# This component's folder under the pipeline root (pipeline/runner.py).
PIPELINE_FOLDER = "Pusher"

ASSETS_EXTRA = "assets.extra"
BLESSING_FILE = "blessing.json"
EVALUATION_METRICS_FILE = "evaluation_metrics.json"
# TF Serving replays this file at load time, so the first real request is not the slow one.
WARMUP_FILE = "tf_serving_warmup_requests"
TEMP_PREFIX = ".tmp-export-"
# A model that reads fewer than half of its eval captchas is no first version to serve: the
# floor a run must pass before anything is pushed (`--min-accuracy` moves it).
DEFAULT_MIN_ACCURACY = 0.5


@dataclasses.dataclass(frozen=True)
class PushConfig:
    """When a candidate may replace the served model, and where it goes."""

    min_accuracy: float = setting(
        DEFAULT_MIN_ACCURACY,
        "push only a model whose serving signature reads at least this share of the eval captchas",
    )
    tolerance: float = setting(
        0.0, "how far below the served version's accuracy a candidate may be and still be pushed"
    )
    force: bool = setting(False, "push whatever the evaluation says", flag="--force-push")
    model_name: str | None = setting(
        None, "lay out EXPORT/NAME/<version>/ for a multi-model server"
    )
    batch_size: int = setting(64, "images per batch in the blessing evaluations")
    metrics_path: str | None = None  # the evaluator's metrics.json, kept in assets.extra

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_accuracy <= 1.0:
            raise ValueError(f"min_accuracy is a share in [0, 1], got {self.min_accuracy}")
        if self.tolerance < 0.0:
            raise ValueError(f"tolerance cannot be negative, got {self.tolerance}")


@dataclasses.dataclass(frozen=True)
class PushResult:
    pushed: bool
    version: int | None  # the new version, or the one still served when not pushed
    version_dir: str | None
    reason: str
    candidate_accuracy: float | None
    baseline_accuracy: float | None
    baseline_version: int | None = None
    candidate_cer: float | None = None
    baseline_cer: float | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class ServingModule(tf.Module):
    """What the SavedModel holds: the Keras model plus decoding before and after it."""

    def __init__(
        self,
        model: keras.Model,
        vocab: Sequence[str],
        config: ModelConfig,
        decoding: Decoding,
    ) -> None:
        super().__init__(name="captcha_ocr_serving")
        self.model = model
        # Keras 3 variables wrap tf.Variables that tf.Module does not find by itself. Track
        # the wrapped tf.Variables (the dropout layers' seed states too): tracking the Keras
        # wrappers instead saves a SavedModel that TF2 loads but TF Serving's session loader
        # does not ("Could not find variable", keras-team/keras#20095).
        self.model_variables = [variable.value for variable in model.variables]
        self._vocab = list(vocab)
        self._geometry = config.geometry
        self._decoding = decoding

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_NAME)])
    def preprocess(self, image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        """The model's input tensor for each image, as served (for skew checks and debugging)."""
        images, valid = preprocess_each(image_bytes, self._geometry)
        return {"images": images, "valid": valid}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_NAME)])
    def serve(self, image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        images, valid = preprocess_each(image_bytes, self._geometry)
        logits = self.model(images, training=False)
        text, confidence = decode(logits, self._vocab, self._decoding)
        # Reading nothing is no confident reading: an image with no ink (blank) or no text
        # read answers has_text false, "" and confidence 0, not the blank path's probability.
        has_text = valid & has_ink(images) & (tf.strings.length(text) > 0)
        return {
            "text": tf.where(has_text, text, ""),
            "confidence": tf.where(has_text, confidence, 0.0),
            "valid": valid,
            "has_text": has_text,
        }


def export_base(export_dir: str, model_name: str | None = None) -> str:
    """The folder TF Serving watches (its --model_base_path)."""
    return posixpath.join(export_dir, model_name) if model_name else export_dir


def _warmup_record() -> bytes:
    """One PredictionLog with a small blank PNG, in TF Serving's warmup format."""
    request = predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(signature_name=SERVING_SIGNATURE)
    )
    blank_png = tf.io.encode_png(tf.fill([50, 200, 1], tf.constant(255, tf.uint8))).numpy()
    request.inputs[INPUT_NAME].CopyFrom(tf.make_tensor_proto([blank_png], dtype=tf.string))
    log_entry = prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request)
    )
    return log_entry.SerializeToString()


def save_candidate(model_dir: str, base_dir: str, metrics_path: str | None = None) -> str:
    """SavedModel of a trained model folder in a fresh temporary folder under `base_dir`.

    On failure the temporary folder is removed; if the process dies instead, what is left
    has a non-numeric name that neither TF Serving nor `saved_model_versions` counts.
    """
    model, vocab, config = load_trained(model_dir)
    model = fold_batch_norm(model, config)
    decoding = load_decoding(model_dir)
    temp_dir = posixpath.join(base_dir, f"{TEMP_PREFIX}{uuid.uuid4().hex[:12]}")
    tf.io.gfile.makedirs(temp_dir)
    try:
        module = ServingModule(model, vocab, config, decoding)
        tf.saved_model.save(
            module,
            temp_dir,
            signatures={SERVING_SIGNATURE: module.serve, PREPROCESS_SIGNATURE: module.preprocess},
        )
        extra = posixpath.join(temp_dir, ASSETS_EXTRA)
        tf.io.gfile.makedirs(extra)
        examples.write_vocab(posixpath.join(extra, examples.VOCAB_FILE), vocab)
        config.to_json(posixpath.join(extra, MODEL_CONFIG_FILE))
        save_decoding(decoding, extra)
        with tf.io.TFRecordWriter(posixpath.join(extra, WARMUP_FILE)) as writer:
            writer.write(_warmup_record())
        if metrics_path:
            tf.io.gfile.copy(metrics_path, posixpath.join(extra, EVALUATION_METRICS_FILE))
    except BaseException:
        tf.io.gfile.rmtree(temp_dir)
        raise
    return temp_dir


def publish(temp_dir: str, base_dir: str) -> str:
    """Rename a complete SavedModel into the next version folder; returns that folder.

    The rename is atomic on local and POSIX file systems. Object stores (gs://) have no such
    rename: there the objects are copied with saved_model.pb last (components.object_store),
    so `saved_model_versions` counts the version only once whole, and TF Serving, which may
    see the numeric folder earlier, fails to load it (and retries) until it is.
    """
    try:
        while True:
            versions = saved_model_versions(base_dir)
            version_dir = posixpath.join(base_dir, str((versions[-1] if versions else 0) + 1))
            if tf.io.gfile.exists(version_dir):  # someone else's incomplete folder: leave it
                raise FileExistsError(f"{version_dir} exists but holds no saved_model.pb")
            try:
                if artifact_io.is_object_store(base_dir):
                    publish_folder(temp_dir, version_dir, SAVED_MODEL_FILE)
                else:
                    tf.io.gfile.rename(temp_dir, version_dir, overwrite=False)
                return version_dir
            except tf.errors.AlreadyExistsError:  # another exporter took that number just now
                continue
    except BaseException:
        tf.io.gfile.rmtree(temp_dir)
        raise


def export_model(
    model_dir: str,
    export_dir: str,
    *,
    model_name: str | None = None,
    metrics_path: str | None = None,
) -> str:
    """Export a trained model folder as the next version, without blessing; returns its folder."""
    base_dir = export_base(export_dir, model_name)
    version_dir = publish(save_candidate(model_dir, base_dir, metrics_path), base_dir)
    log.info("exported %s as %s", model_dir, version_dir)
    return version_dir


def bless(candidate: dict, baseline: dict | None, config: PushConfig) -> tuple[bool, str]:
    """(push?, why) from the candidate's and the newest served version's eval metrics."""
    accuracy = candidate["accuracy"]
    if config.force:
        return True, "forced (--force-push): evaluation not enforced"
    if accuracy < config.min_accuracy:
        return False, (
            f"candidate accuracy {accuracy:.4f} is below the threshold {config.min_accuracy:.4f}"
        )
    if baseline is None:
        return True, f"no earlier version; accuracy {accuracy:.4f} reaches the threshold"
    # Accuracies are ratios of counts: compare with a hair of slack for float rounding.
    if accuracy < baseline["accuracy"] - config.tolerance - 1e-9:
        return False, (
            f"candidate accuracy {accuracy:.4f} is worse than the served version's "
            f"{baseline['accuracy']:.4f} (tolerance {config.tolerance:.4f}) on the same eval split"
        )
    return True, (
        f"candidate accuracy {accuracy:.4f} >= served version's {baseline['accuracy']:.4f} "
        f"- tolerance {config.tolerance:.4f}"
    )


def run_push(
    model_dir: str,
    examples_dirs: str | list[str],
    export_dir: str,
    config: PushConfig = PushConfig(),
) -> PushResult:
    """Export the model, judge it on the eval split against the newest version, publish or drop."""
    base_dir = export_base(export_dir, config.model_name)
    versions = saved_model_versions(base_dir)
    baseline_version = versions[-1] if versions else None
    temp_dir = save_candidate(model_dir, base_dir, config.metrics_path)
    try:
        candidate = evaluate_saved_model(temp_dir, examples_dirs, batch_size=config.batch_size)
        del candidate["saved_model"]  # the temporary folder, gone soon
        candidate["model_dir"] = model_dir
        baseline = None
        if baseline_version is not None:
            baseline = evaluate_saved_model(
                posixpath.join(base_dir, str(baseline_version)),
                examples_dirs,
                batch_size=config.batch_size,
            )
        pushed, reason = bless(candidate, baseline, config)
        if pushed:
            artifact_io.write_json(
                posixpath.join(temp_dir, ASSETS_EXTRA, BLESSING_FILE),
                {
                    "reason": reason,
                    "candidate": candidate,
                    "baseline": baseline,
                    "baseline_version": baseline_version,
                    "config": dataclasses.asdict(config),
                },
            )
    except BaseException:
        tf.io.gfile.rmtree(temp_dir)
        raise
    if pushed:
        version_dir = publish(temp_dir, base_dir)
        version = int(posixpath.basename(version_dir))
        log.info("pushed %s as version %d: %s", model_dir, version, reason)
    else:
        tf.io.gfile.rmtree(temp_dir)
        version = baseline_version
        version_dir = None if version is None else posixpath.join(base_dir, str(version))
        log.warning("not pushed, keeping version %s: %s", version, reason)
    return PushResult(
        pushed=pushed,
        version=version,
        version_dir=version_dir,
        reason=reason,
        candidate_accuracy=candidate["accuracy"],
        baseline_accuracy=baseline["accuracy"] if baseline else None,
        baseline_version=baseline_version,
        candidate_cer=candidate["cer"],
        baseline_cer=baseline["cer"] if baseline else None,
    )
