"""Images per second of the ExampleGen Beam job against a plain single-process Python loop.

    flock /tmp/captcha-bench.lock .venv/bin/python benchmarks/ingest.py [--sizes 10000 50000]

Synthetic PNGs are generated once into --work (default /tmp/captcha-bench, not the repo) and
reused. For each size, the plain loop and the Beam job in each DirectRunner mode write the
same examples; the loop's shards must be byte-identical to the job's, so both do the same
work. Times are wall clock and include the job's start-up (worker processes included).
"""

from __future__ import annotations

import argparse
import collections
import os
import platform
import posixpath
import shutil
import time

from PIL import Image

from components import examples
from components.example_gen import (
    DEFAULT_NUM_SHARDS,
    IngestConfig,
    list_inputs,
    run_ingest,
    shard_path,
    write_shard,
)
from components.synth import SynthConfig, generate

MODES = {
    "in_memory (default)": [],
    "multi_threading, 2 workers": [
        "--direct_running_mode=multi_threading",
        "--direct_num_workers=2",
    ],
    "multi_processing, 2 workers": [
        "--direct_running_mode=multi_processing",
        "--direct_num_workers=2",
    ],
}


def ensure_images(work: str, count: int) -> str:
    """`count` seeded PNGs; smaller sets are hard links to the first images of the largest."""
    folder = os.path.join(work, f"pngs-{count}")
    if os.path.isdir(folder) and len(os.listdir(folder)) == count:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    generate(folder + ".partial", SynthConfig(count=count, seed=2024), workers=os.cpu_count() or 1)
    os.rename(folder + ".partial", folder)
    return folder


def subset(work: str, full: str, count: int) -> str:
    folder = os.path.join(work, f"pngs-{count}")
    if os.path.isdir(folder) and len(os.listdir(folder)) == count:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    names = sorted(os.listdir(full), key=lambda n: int(n.rsplit("_", 1)[1].split(".")[0]))
    for name in names[:count]:
        os.link(os.path.join(full, name), os.path.join(folder, name))
    return folder


def plain_loop(images: str, output: str, num_shards: int = DEFAULT_NUM_SHARDS) -> int:
    """The same examples as ExampleGen, written by one Python loop (no Beam)."""
    inputs, _ = list_inputs(images)
    records = {}
    for path in inputs:
        with open(path, "rb") as f:
            data = f.read()
        with Image.open(path) as image:
            image.load()
            size = (image.height, image.width, len(image.getbands()))
        sha256 = examples.sha256_hex(data)
        label = os.path.basename(path).split("_")[0].split(".")[0]
        records.setdefault(sha256, (path, label, data, size))
    vocab = sorted({c for _, label, _, _ in records.values() for c in label})
    shards = collections.defaultdict(list)
    for sha256, (path, label, data, (height, width, channels)) in records.items():
        example = examples.make_example(
            image=data,
            image_format="png",
            height=height,
            width=width,
            channels=channels,
            label=label,
            label_ids=examples.encode_label(label, vocab),
            sha256=sha256,
            source=path,
            span=0,
        )
        split = examples.split_for(sha256)
        shards[split, int(sha256[8:16], 16) % num_shards].append(
            (sha256, example.SerializeToString())
        )
    for split in examples.SPLITS:
        os.makedirs(examples.split_dir(output, split))
        for shard in range(num_shards):
            write_shard(
                shard_path(output, split, shard, num_shards),
                (data for _, data in sorted(shards[split, shard])),
            )
    return len(records)


def shard_files(folder: str) -> dict[str, bytes]:
    out = {}
    for split in examples.SPLITS:
        split_folder = examples.split_dir(folder, split)
        for name in sorted(os.listdir(split_folder)):
            with open(posixpath.join(split_folder, name), "rb") as f:
                out[f"{split}/{name}"] = f.read()
    return out


def timed(fn, *args) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def synth_rates(work: str, count: int) -> list[tuple[str, float]]:
    """Seconds to generate `count` captchas in one process and in one per core."""
    rows = []
    for workers in sorted({1, os.cpu_count() or 1}):
        folder = os.path.join(work, "synth-rate")
        shutil.rmtree(folder, ignore_errors=True)
        seconds, _ = timed(generate, folder, SynthConfig(count=count, seed=1), False, workers)
        rows.append((f"{workers} process{'es' if workers > 1 else ''}", seconds))
        shutil.rmtree(folder)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[10_000, 50_000])
    parser.add_argument(
        "--synth-count",
        type=int,
        default=2000,
        help="also time `synth` on this many images (0: skip)",
    )
    parser.add_argument("--work", default="/tmp/captcha-bench")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    args = parser.parse_args()

    os.makedirs(args.work, exist_ok=True)
    print(f"machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}")
    if args.synth_count:
        print(f"\n| synth {args.synth_count:,} captchas | seconds | images/s |\n|---|---:|---:|")
        for how, seconds in synth_rates(args.work, args.synth_count):
            print(f"| {how} | {seconds:.1f} | {args.synth_count / seconds:,.0f} |", flush=True)
    if not args.sizes:
        return
    start = time.perf_counter()
    full = ensure_images(args.work, max(args.sizes))
    print(f"images ready in {time.perf_counter() - start:.0f} s", flush=True)
    rows = []
    for size in sorted(args.sizes):
        images = full if size == max(args.sizes) else subset(args.work, full, size)
        out = os.path.join(args.work, "out")
        shutil.rmtree(out, ignore_errors=True)
        loop_seconds, written = timed(plain_loop, images, os.path.join(out, "plain"))
        reference = shard_files(os.path.join(out, "plain"))
        rows.append((size, "plain Python loop", loop_seconds, loop_seconds))
        print(f"{size} plain loop: {loop_seconds:.1f} s ({written} written)", flush=True)
        for mode in args.modes:
            target = os.path.join(out, mode.split()[0])
            start = time.perf_counter()
            try:
                metadata = run_ingest(images, target, IngestConfig(), MODES[mode])
            except RuntimeError as e:  # the job's inputs = written + rejected check failed
                seconds = time.perf_counter() - start
                rows.append((size, f"{mode}: FAILED, {e}", seconds, loop_seconds))
                print(f"{size} {mode}: failed after {seconds:.1f} s: {e}", flush=True)
                continue
            seconds = time.perf_counter() - start
            assert metadata["num_written"] == written, (metadata["num_written"], written)
            assert shard_files(target) == reference, f"{mode}: shards differ from the loop's"
            rows.append((size, mode, seconds, loop_seconds))
            print(f"{size} {mode}: {seconds:.1f} s", flush=True)
        shutil.rmtree(out)

    print("\n| images | how | seconds | images/s | x plain loop |")
    print("|---:|---|---:|---:|---:|")
    for size, how, seconds, loop_seconds in rows:
        print(
            f"| {size:,} | {how} | {seconds:.1f} | {size / seconds:,.0f} | "
            f"{seconds / loop_seconds:.2f} |"
        )


if __name__ == "__main__":
    main()
