"""Seeded synthetic captchas, for tests, demos and benchmarks: the one writer of generated sets.

Without a style, images are the `captcha` package's, with the alphabet, lengths, size and
fonts of the config; `style=NAME` draws one of the style zoo's families instead
(components/styles.py), each with its own alphabet, lengths and random ranges.

`captcha.image.ImageCaptcha` draws its randomness from the `secrets` module, which cannot be
seeded. While generating, this module hands it a stand-in backed by `random.Random`, seeded
per image from (seed, index), and labels are drawn the same way: the same config gives
byte-identical PNGs in any process, so rendering can be spread over several.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import csv
import io
import logging
import multiprocessing
import os
import posixpath
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields

from PIL import Image

from components.settings import setting

DEFAULT_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
LABELS_CSV = "labels.csv"
CHUNK = 200  # images per unit of work for parallel rendering
# Characters that cannot appear in a `<label>_<n>.png` file name and be parsed back, or that
# Windows and macOS file systems refuse.
_FILE_NAME_UNSAFE = set('_/\\\0?*:<>|"')

log = logging.getLogger(__name__)

# This component's folder under the pipeline root (pipeline/runner.py).
PIPELINE_FOLDER = "SyntheticGen"


@dataclass(frozen=True)
class SynthConfig:
    count: int = setting(1000, "number of images")
    seed: int = setting(0, "same seed, byte-identical images")
    alphabet: str = setting(DEFAULT_ALPHABET, "characters labels are drawn from")
    min_length: int = 4
    max_length: int = 6
    width: int = setting(200, "image width in pixels")
    height: int = setting(50, "image height in pixels")
    fonts: tuple[str, ...] = setting(
        (),
        "a TrueType font file; repeat for several (none: the captcha package's DroidSansMono)",
        flag="--font",
        metavar="TTF",
    )
    font_sizes: tuple[int, ...] = ()  # empty: chosen to fit the height
    labels_csv: bool = setting(
        False,
        "name files 000000.png ... and write labels.csv instead of putting labels in file names",
    )
    style: str | None = setting(
        None,
        "a family of the style zoo (components/styles.py: tiny, wide, dark-dotted, "
        "classic, jpeg, overlap, tiles, case, math); it draws its own alphabet, lengths, sizes "
        "and fonts",
        shown_default="the captcha package's look",
    )

    def __post_init__(self) -> None:
        if self.style is not None:
            self._check_style()
        if self.count < 0:
            raise ValueError(f"count must be >= 0, got {self.count}")
        if not 1 <= self.min_length <= self.max_length:
            raise ValueError(f"bad length range {self.min_length}-{self.max_length}")
        if not self.alphabet or len(set(self.alphabet)) != len(self.alphabet):
            raise ValueError(f"the alphabet must be distinct characters, got {self.alphabet!r}")
        if not self.writes_labels_csv and _FILE_NAME_UNSAFE & set(self.alphabet):
            raise ValueError(
                f"alphabet {self.alphabet!r} has characters that cannot go in a file name "
                f"({''.join(sorted(_FILE_NAME_UNSAFE & set(self.alphabet)))!r}): use labels_csv"
            )
        if self.width < 8 or self.height < 8:
            raise ValueError(f"image too small: {self.width}x{self.height}")
        missing = [font for font in self.fonts if not os.path.isfile(font)]
        if missing:
            raise ValueError(f"font files not found: {missing}")

    def _check_style(self) -> None:
        from components import styles

        styles.get_style(self.style)
        drawn = ("alphabet", "min_length", "max_length", "width", "height", "fonts", "font_sizes")
        changed = [name for name in drawn if getattr(self, name) != _DEFAULTS[name]]
        if changed:
            raise ValueError(
                f"style {self.style!r} draws its own {', '.join(changed)}; leave them unset"
            )

    @property
    def writes_labels_csv(self) -> bool:
        """A style whose alphabet cannot go in file names (`?` of `8-3=?`) writes labels.csv."""
        if self.labels_csv or self.style is None:
            return self.labels_csv
        from components import styles

        return bool(_FILE_NAME_UNSAFE & set(styles.get_style(self.style).alphabet))

    @property
    def suffix(self) -> str:
        if self.style is None:
            return ".png"
        from components import styles

        return styles.get_style(self.style).suffix

    def effective_font_sizes(self) -> tuple[int, ...]:
        """Glyphs of 0.6-0.76 of the height fit after the package's rotation and warp."""
        return self.font_sizes or tuple(round(self.height * f) for f in (0.6, 0.68, 0.76))


_DEFAULTS = {field.name: field.default for field in fields(SynthConfig)}


def parse_length_range(text: str) -> tuple[int, int]:
    """`"4-6"` -> (4, 6); `"5"` -> (5, 5)."""
    low, _, high = text.partition("-")
    try:
        return int(low), int(high or low)
    except ValueError:
        raise ValueError(f"a length range looks like 4-6 or 5, got {text!r}") from None


class _SeededSecrets:
    """The part of the `secrets` API that captcha.image calls, backed by a seeded Random."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def reseed(self, seed: str) -> None:
        self._rng.seed(seed)

    def randbelow(self, n: int) -> int:
        return self._rng.randrange(n)

    def randbits(self, k: int) -> int:
        return self._rng.getrandbits(k)

    def choice(self, seq):
        return self._rng.choice(seq)


@contextlib.contextmanager
def _seeded_captcha_module() -> Iterator[_SeededSecrets]:
    import captcha.image

    original = captcha.image.secrets
    stand_in = _SeededSecrets(random.Random())
    captcha.image.secrets = stand_in
    try:
        yield stand_in
    finally:
        captcha.image.secrets = original


def label_for(config: SynthConfig, index: int) -> str:
    """Image `index`'s label, a function of (seed, index) alone."""
    if config.style is not None:
        from components import styles

        return styles.get_style(config.style).label(config.seed, index)
    rng = random.Random(f"{config.seed}/label/{index}")
    length = rng.randint(config.min_length, config.max_length)
    return "".join(rng.choice(config.alphabet) for _ in range(length))


def make_labels(config: SynthConfig) -> list[str]:
    return [label_for(config, index) for index in range(config.count)]


def file_name(label: str, index: int, labels_csv: bool, suffix: str = ".png") -> str:
    return f"{index:06d}{suffix}" if labels_csv else f"{label}_{index}{suffix}"


def seeded_captcha_image(
    text: str,
    size: tuple[int, int],
    font_sizes: Sequence[int],
    seed_key: str,
    fonts: Sequence[str] = (),
) -> Image.Image:
    """The captcha package's image of `text`, its randomness seeded by `seed_key`."""
    from captcha.image import ImageCaptcha

    drawer = ImageCaptcha(
        width=size[0], height=size[1], fonts=list(fonts) or None, font_sizes=tuple(font_sizes)
    )
    with _seeded_captcha_module() as secrets_stand_in:
        secrets_stand_in.reseed(seed_key)
        return drawer.generate_image(text)


def render(config: SynthConfig, indices: Sequence[int]) -> list[tuple[int, str, bytes]]:
    """(index, label, encoded image) of the given images; the same bytes in any process."""
    if config.style is not None:
        from components import styles

        style = styles.get_style(config.style)
        return [(index, *style.render(config.seed, index)) for index in indices]
    rendered = []
    for index in indices:
        label = label_for(config, index)
        image = seeded_captcha_image(
            label,
            (config.width, config.height),
            config.effective_font_sizes(),
            f"{config.seed}/image/{index}",
            config.fonts,
        )
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        rendered.append((index, label, buffer.getvalue()))
    return rendered


def _rendered_chunks(config: SynthConfig, workers: int) -> Iterator[list[tuple[int, str, bytes]]]:
    chunks = [
        range(start, min(start + CHUNK, config.count)) for start in range(0, config.count, CHUNK)
    ]
    if workers <= 1:
        yield from (render(config, chunk) for chunk in chunks)
        return
    # spawn, not fork: the parent may hold TensorFlow's threads and locks
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        yield from pool.map(render, [config] * len(chunks), chunks)


def generate(
    out_dir: str, config: SynthConfig, show_progress: bool = True, workers: int = 1
) -> list[tuple[str, str]]:
    """Write `config.count` captcha PNGs into `out_dir`; returns [(path, label)] in order.

    `workers` > 1 renders in that many processes; the files are the same.
    """
    import tensorflow as tf
    from rich.progress import Progress

    tf.io.gfile.makedirs(out_dir)
    written: list[tuple[str, str]] = []
    start = time.perf_counter()
    with Progress(disable=not show_progress, transient=True) as progress:
        task = progress.add_task(f"synth -> {out_dir}", total=config.count)
        for chunk in _rendered_chunks(config, workers):
            for index, label, png in chunk:
                name = file_name(label, index, config.writes_labels_csv, config.suffix)
                path = posixpath.join(out_dir, name)
                with tf.io.gfile.GFile(path, "wb") as f:
                    f.write(png)
                written.append((path, label))
            progress.advance(task, len(chunk))
    if config.writes_labels_csv:
        write_labels_csv(
            posixpath.join(out_dir, LABELS_CSV),
            [(posixpath.basename(path), label) for path, label in written],
        )
    seconds = time.perf_counter() - start
    log.info(
        "wrote %d captchas to %s in %.1f s (%.0f images/s)",
        len(written),
        out_dir,
        seconds,
        len(written) / max(seconds, 1e-9),
    )
    return written


def write_labels_csv(path: str, rows: list[tuple[str, str]]) -> None:
    """A `labels.csv` of (file name relative to its folder, label) rows, written atomically."""
    from components import artifact_io

    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["filename", "label"])
    writer.writerows(rows)
    artifact_io.write_file(path, text.getvalue())
