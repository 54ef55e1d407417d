"""Where a style's reading errors fall: on pale glyphs, small ones, faint ones.

Issue 13's `wide` style stays far under 99 %. This takes one `styles.py` row's eval-split
captchas (the run's own Evaluator split: `examples.split_for` of each image's SHA-256, as
ExampleGen splits) and the answers in the run's `errors.csv`, and prints the share misread
(1) of captchas by how many of their glyphs were drawn in a pale colour
(`styles.PALE_COLOURS`), (2) of glyphs, by their ink height in model-input pixels and
their ink, pale or dark, and (3) of glyphs, by their contrast: the distance of their colour
from the image's background (the median of its border) as the model's ink measures it
(`preprocessing.INK_COLOURS`), which finds faint glyphs in any style. A glyph is misread
when the answer has the label's length and another character in its place; captchas
answered with a character dropped or added are left out of (2) and (3). The glyphs are
learnt by drawing each captcha again from its seed and index (the zoo's images are a
function of them alone) with `styles.paste_ink` wrapped to record each glyph's mask and
colour.

    .venv/bin/python benchmarks/glyph_errors.py /tmp/captcha-styles/style-wide-seed0
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import pathlib
import re
import sys

PROJECT_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from components import styles  # noqa: E402
from components.examples import split_for  # noqa: E402
from components.preprocessing import BACKGROUND, INK_COLOURS  # noqa: E402

ERRORS = "run/runs/captcha-ocr/Evaluator/span-0/errors.csv"


def background(image: Image.Image) -> np.ndarray:
    """The median colour of the image's border, transparency over white (`ink`'s background,
    here per RGB channel of the image as drawn)."""
    flat = Image.new("RGBA", image.size, (BACKGROUND,) * 3 + (255,))
    pixels = np.asarray(Image.alpha_composite(flat, image.convert("RGBA")).convert("RGB"))
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    return np.median(border, axis=0)


def contrast(colour: tuple, behind: np.ndarray) -> float:
    """Distance of a glyph's colour from the background, as the model's ink measures it."""
    return float(np.linalg.norm((np.float32(colour[:3]) - behind) / 255 @ INK_COLOURS))


def drawn_glyphs(
    style: styles.Style, seed: int, index: int, height: int
) -> tuple[str, list[tuple[int, tuple, float]]]:
    """Image `index`'s label, and (ink height in input pixels at `height`, colour, contrast)
    of each of its glyphs."""
    glyphs: list[tuple[int, tuple]] = []
    paste_ink = styles.paste_ink

    def recording(image, mask, corner, colour) -> None:
        box = mask.getbbox()
        glyphs.append((0 if box is None else box[3] - box[1], tuple(colour[:3])))
        paste_ink(image, mask, corner, colour)

    styles.paste_ink = recording
    try:
        label, image = style.render(seed, index)
    finally:
        styles.paste_ink = paste_ink
    if len(glyphs) < len(label):
        raise SystemExit(f"style {style.name} does not draw its glyphs with styles.paste_ink")
    drawn = Image.open(io.BytesIO(image))
    scale, behind = height / drawn.height, background(drawn)
    return label, [(round(h * scale), c, contrast(c, behind)) for h, c in glyphs[: len(label)]]


def share(group: list[dict]) -> str:
    bad = sum(r["wrong"] for r in group)
    return f"{bad / len(group):.1%} ({bad})" if group else ""


def glyph_table(glyphs: list[dict], height: int) -> str:
    """Share of glyphs misread, by ink height and by pale or dark ink."""
    lines = [
        f"| glyph ink height, px of {height} | dark glyphs | misread | pale glyphs | misread |",
        "|---|---:|---:|---:|---:|",
    ]
    for low, high in ((0, 10), (10, 12), (12, 14), (14, 16), (16, 20), (20, 24), (24, 99)):
        group = [g for g in glyphs if low <= g["height"] < high]
        if not group:
            continue
        dark = [g for g in group if not g["pale"]]
        pale = [g for g in group if g["pale"]]
        name = f"{low}-{high - 1}" if high < 99 else f"{low}+"
        lines.append(f"| {name} | {len(dark)} | {share(dark)} | {len(pale)} | {share(pale)} |")
    return "\n".join(lines)


def contrast_table(glyphs: list[dict]) -> str:
    """Share of glyphs misread, by their contrast against the background."""
    lines = ["| glyph contrast (ink) | glyphs | misread |", "|---|---:|---:|"]
    for low, high in ((0, 0.1), (0.1, 0.2), (0.2, 0.3), (0.3, 0.4), (0.4, 0.6), (0.6, 9)):
        group = [g for g in glyphs if low <= g["contrast"] < high]
        name = f"{low:.1f}-{high:.1f}" if high < 9 else f"{low:.1f}+"
        lines.append(f"| {name} | {len(group)} | {share(group)} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("row", type=pathlib.Path, help="a styles.py row folder (style-S-seedN)")
    parser.add_argument("--height", type=int, default=48, help="the model's input height")
    args = parser.parse_args()
    row = re.fullmatch(r"style-(.+)-seed(\d+)", args.row.name)
    if not row:
        parser.error(f"{args.row} is not a styles.py row folder (style-NAME-seedN)")
    style, seed = styles.get_style(row[1]), int(row[2])
    with open(args.row / ERRORS, newline="") as f:  # sources are paths as the run saw them
        answers = {pathlib.PurePath(r["source"]).name: r["prediction"] for r in csv.DictReader(f)}
    captchas, glyphs, other_length = [], [], 0
    for path in sorted((args.row / "train").iterdir()):
        if split_for(hashlib.sha256(path.read_bytes()).hexdigest()) != "eval":
            continue
        label, drawn = drawn_glyphs(style, seed, int(path.stem.rsplit("_", 1)[1]), args.height)
        answer = answers.pop(path.name, label)
        pale = [c in styles.PALE_COLOURS for _, c, _ in drawn]
        captchas.append({"pale": sum(pale), "wrong": answer != label})
        if len(answer) != len(label):
            other_length += 1
            continue  # a dropped or added character: which glyph is not known
        for (height, _, seen), is_pale, said, meant in zip(drawn, pale, answer, label, strict=True):
            glyphs.append(
                {"height": height, "pale": is_pale, "contrast": seen, "wrong": said != meant}
            )
    if answers:  # every error is an eval captcha: a leftover means the split was not redone
        parser.error(f"{len(answers)} errors of {ERRORS} are not eval captchas of {args.row}")
    print(f"{args.row}: {len(captchas)} eval captchas, {share(captchas)} misread\n")
    lines = ["| pale glyphs in the captcha | eval captchas | misread |", "|---|---:|---:|"]
    for low, high in ((0, 1), (1, 2), (2, 3), (3, 99)):
        group = [c for c in captchas if low <= c["pale"] < high]
        lines.append(f"| {low if high == low + 1 else f'{low}+'} | {len(group)} | {share(group)} |")
    print("\n".join(lines) + "\n")
    print(glyph_table(glyphs, args.height) + "\n")
    print(contrast_table(glyphs))
    print(f"\n({other_length} captchas answered with a character dropped or added are left out)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
