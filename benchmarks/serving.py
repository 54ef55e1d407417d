"""Serving speed: images per second through the exported signature, beside ddddocr.

The model is the `full` profile's architecture (pass `--model` for a trained folder;
untrained weights run exactly as fast), exported by the Pusher and loaded back with
`tf.saved_model.load`; timings include PNG decoding, resizing and CTC decoding in the graph,
as TF Serving would run them (not its RPC overhead). ddddocr's `classification()` on the
same files is the baseline, run from its own venv in a subprocess so its pins stay out of
ours; its ONNX model reads other captchas than ours, so only its speed is comparable.

    python3 -m venv /tmp/dddd-venv && /tmp/dddd-venv/bin/pip install ddddocr
    flock /tmp/captcha-bench.lock .venv/bin/python benchmarks/serving.py
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

PROJECT_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

import tensorflow as tf  # noqa: E402

from components import examples  # noqa: E402
from components.model import build_model  # noqa: E402
from components.predict import (  # noqa: E402
    INPUT_NAME,
    PREPROCESS_SIGNATURE,
    ExportedModel,
)
from components.pusher import export_model  # noqa: E402
from components.trainer import MODEL_CONFIG_FILE, MODEL_FILE  # noqa: E402
from pipeline.configs import PROFILES  # noqa: E402

DEFAULT_DATA = PROJECT_ROOT.parent / "shared" / "data" / "captcha_images_v2"
DEFAULT_DDDD_PYTHON = "/tmp/dddd-venv/bin/python"
REAL_VOCAB = list("2345678bcdefgmnpwxy")  # the 19 characters of captcha_images_v2
DDDD_SCRIPT = r"""
import importlib.metadata, json, statistics, sys, time
import ddddocr
files = json.load(sys.stdin)
images = [open(f, "rb").read() for f in files]
ocr = ddddocr.DdddOcr(show_ad=False)
ocr.classification(images[0])  # load and warm up
seconds = []
for image in images:
    start = time.perf_counter()
    ocr.classification(image)
    seconds.append(time.perf_counter() - start)
print(json.dumps({"seconds": seconds, "version": importlib.metadata.version("ddddocr")}))
"""


def untrained_full_model(folder: pathlib.Path) -> pathlib.Path:
    # The input size `full` derives for the Keras captchas (200x50, 5 characters).
    keras_set = {
        "image_height_range": [50, 50],
        "aspect_ratio_range": [4.0, 4.0],
        "max_label_length": 5,
    }
    config = PROFILES["full"].model.with_data_geometry([keras_set])
    folder.mkdir(parents=True)
    build_model(config, len(REAL_VOCAB)).save(folder / MODEL_FILE)
    examples.write_vocab(str(folder / examples.VOCAB_FILE), REAL_VOCAB)
    config.to_json(str(folder / MODEL_CONFIG_FILE))
    return folder


def summarize(seconds: list[float], batch: int) -> dict:
    """Median and p90 per call; images/s from the median call and from the total time.

    Both rates are given because a shared machine adds a long tail to some runs' calls.
    """
    median = statistics.median(seconds)
    return {
        "median_ms": 1000 * median,
        "p90_ms": 1000 * sorted(seconds)[int(0.9 * len(seconds))],
        "per_second_median": batch / median,
        "per_second_mean": batch * len(seconds) / sum(seconds),
    }


def time_signature(
    signature: Callable[..., dict], images: list[bytes], batch: int, repeats: int
) -> dict:
    """Per call wall times of a signature on `batch` images at a time, after a warm-up."""
    batches = [
        tf.constant([images[(start + i) % len(images)] for i in range(batch)])
        for start in range(0, repeats * batch, batch)
    ]
    signature(**{INPUT_NAME: batches[0]})
    seconds = []
    for tensor in batches:
        start = time.perf_counter()
        signature(**{INPUT_NAME: tensor})
        seconds.append(time.perf_counter() - start)
    return summarize(seconds, batch)


def time_ddddocr(python: str, files: list[pathlib.Path]) -> dict | None:
    if not os.path.exists(python):
        print(f"ddddocr skipped: no {python} (see the module docstring)", file=sys.stderr)
        return None
    done = subprocess.run(
        [python, "-c", DDDD_SCRIPT],
        input=json.dumps([str(f) for f in files]),
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode:
        print(f"ddddocr failed:\n{done.stderr[-2000:]}", file=sys.stderr)
        return None
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    return {**summarize(answer["seconds"], 1), "version": answer["version"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=pathlib.Path, default=DEFAULT_DATA)
    parser.add_argument("--images", type=int, default=256, help="distinct files to read")
    parser.add_argument("--model", type=pathlib.Path, help="trained model folder")
    parser.add_argument("--repeats", type=int, default=200, help="batch-1 calls")
    parser.add_argument("--batch-repeats", type=int, default=20, help="batch-64 calls")
    parser.add_argument("--dddd-python", default=DEFAULT_DDDD_PYTHON)
    args = parser.parse_args()

    files = sorted(args.data.glob("*.png"))[: args.images]
    images = [f.read_bytes() for f in files]
    with tempfile.TemporaryDirectory() as work:
        model_dir = args.model or untrained_full_model(pathlib.Path(work) / "model")
        model = ExportedModel(export_model(str(model_dir), str(pathlib.Path(work) / "export")))
        preprocess = tf.saved_model.load(model.path).signatures[PREPROCESS_SIGNATURE]
        rows = {
            "signature, batch 1": time_signature(model.signature, images, 1, args.repeats),
            "signature, batch 64": time_signature(model.signature, images, 64, args.batch_repeats),
            "of which preprocessing (`preprocess` signature), batch 64": time_signature(
                preprocess, images, 64, args.batch_repeats
            ),
        }
    dddd = time_ddddocr(args.dddd_python, files)
    if dddd:
        rows[f"ddddocr {dddd['version']} classification(), one by one"] = dddd

    weights = "trained" if args.model else "untrained"
    print(f"{len(files)} PNGs from {args.data.name}; model: `full` profile, {weights} weights\n")
    print("| path | median ms per call | p90 ms | images/s (median call) | images/s (total time) |")
    print("|---|---:|---:|---:|---:|")
    for name, row in rows.items():
        print(
            f"| {name} | {row['median_ms']:.1f} | {row['p90_ms']:.1f} | "
            f"{row['per_second_median']:.0f} | {row['per_second_mean']:.0f} |"
        )
    if dddd:
        batch64 = rows["signature, batch 64"]
        median_ratio = batch64["per_second_median"] / dddd["per_second_median"]
        mean_ratio = batch64["per_second_mean"] / dddd["per_second_mean"]
        print(
            f"\nbatch 64 vs ddddocr, images/s: {median_ratio:.1f}x "
            f"(median calls), {mean_ratio:.1f}x (total time); "
            f"target >= 10x. Batch-1 median {rows['signature, batch 1']['median_ms']:.1f} ms "
            f"(target < 20 ms)"
        )


if __name__ == "__main__":
    main()
