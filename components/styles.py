"""The style zoo: families of synthetic captchas that users plausibly bring, drawn offline.

Each style is a family, not one look: its renderer draws every image's size, fonts, colours,
noise and layout from its own ranges, with a `random.Random` seeded from (seed, style,
index), so the same seed gives byte-identical files in any process. Labels are drawn from a
separate stream, so they do not depend on how an image is drawn. Fonts are the ones that ship
inside installed pip packages (matplotlib's DejaVu and STIX families, the captcha package's
DroidSansMono): nothing is downloaded and no system font is needed.

`synth.generate` is the one writer: `SynthConfig(style=NAME)` renders through `render` here.
"""

from __future__ import annotations

import colorsys
import functools
import io
import math
import os
import pathlib
import random
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFilter, ImageFont

Colour = tuple[int, ...]
Box = tuple[int, int]  # (width, height)

UPPER_AND_DIGITS = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no I/1, O/0: sites drop them
# Lowercase and digits without the look-alikes 0/o and 1/l/i, as real sets (and the demo's
# DEMO_ALPHABET) drop them: warped, overlapping or mixed-case, they cannot be told apart.
LOWER_AND_DIGITS = "23456789abcdefghjkmnpqrstuvwxyz"
# Letters whose two cases differ in shape, not just in size (c/C, o/O, ... dropped), without
# l and I, which most sans fonts draw alike.
CASED_LETTERS = "abdefghijkmnqrtuyABDEFGHJKLMNQRTUY"
MATH_SYMBOLS = "+-=?"
PALE_COLOURS: tuple[Colour, ...] = (
    (240, 230, 140),
    (250, 250, 150),
    (0, 230, 230),
    (150, 240, 255),
    (255, 190, 220),
    (190, 255, 190),
    (255, 215, 160),
)


def _font_files() -> dict[str, tuple[str, ...]]:
    """Font groups by look, from fonts shipped inside pip packages."""
    import captcha
    import matplotlib

    ttf = pathlib.Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    droid = pathlib.Path(captcha.__file__).parent / "data" / "DroidSansMono.ttf"

    def files(*names: str) -> tuple[str, ...]:
        return tuple(str(ttf / name) for name in names)

    sans = files(
        "DejaVuSans.ttf",
        "DejaVuSans-Oblique.ttf",
        "DejaVuSansMono.ttf",
        "DejaVuSansMono-Oblique.ttf",
    ) + (str(droid),)
    serif = files(
        "DejaVuSerif.ttf", "DejaVuSerif-Italic.ttf", "STIXGeneral.ttf", "STIXGeneralItalic.ttf"
    )
    bold = files(
        "DejaVuSans-Bold.ttf",
        "DejaVuSans-BoldOblique.ttf",
        "DejaVuSansMono-Bold.ttf",
        "DejaVuSansMono-BoldOblique.ttf",
        "DejaVuSerif-Bold.ttf",
        "DejaVuSerif-BoldItalic.ttf",
        "STIXGeneralBol.ttf",
        "STIXGeneralBolIta.ttf",
    )
    groups = {"sans": sans, "serif": serif, "bold": bold, "any": sans + serif + bold}
    missing = [path for path in groups["any"] if not os.path.isfile(path)]
    if missing:
        raise FileNotFoundError(f"fonts expected inside installed packages are missing: {missing}")
    return groups


@functools.cache
def fonts(group: str) -> tuple[str, ...]:
    return _font_files()[group]


@functools.lru_cache(maxsize=512)
def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


# --- drawing helpers shared by the renderers ---------------------------------------------


def glyph_mask(
    char: str,
    font_path: str,
    size: int,
    rotation: float = 0.0,
    shear: float = 0.0,
    thin: bool = False,
) -> Image.Image:
    """One character as an 8-bit coverage mask cropped to its ink, rotated and sheared.

    `thin` erodes the strokes at twice the resolution (fonts in pip packages have no light
    weights).
    """
    scale = 2 if thin else 1
    font = _font(font_path, size * scale)
    left, top, right, bottom = font.getbbox(char)
    pad = 4 * scale
    mask = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 0)
    ImageDraw.Draw(mask).text((pad - left, pad - top), char, fill=255, font=font)
    if thin:
        mask = mask.filter(ImageFilter.MinFilter(3))
        mask = mask.resize((max(1, mask.width // 2), max(1, mask.height // 2)), Image.LANCZOS)
    if shear:
        width, height = mask.size
        offset = abs(shear) * height
        mask = mask.transform(
            (int(width + offset), height),
            Image.AFFINE,
            (1, shear, -offset if shear > 0 else 0, 0, 1, 0),
            Image.BICUBIC,
        )
    if rotation:
        mask = mask.rotate(rotation, resample=Image.BICUBIC, expand=True)
    box = mask.getbbox()
    return mask.crop(box) if box else mask


def scale_masks(masks: list[Image.Image], factor: float) -> list[Image.Image]:
    if factor >= 1.0:
        return masks
    return [
        m.resize((max(1, round(m.width * factor)), max(1, round(m.height * factor))), Image.LANCZOS)
        for m in masks
    ]


def layout(
    rng: random.Random,
    masks: list[Image.Image],
    box: Box,
    advance: float = 1.0,
    jitter: float = 0.15,
    fill: float = 0.92,
) -> list[tuple[Image.Image, tuple[int, int]]]:
    """(mask, top-left corner) on one line: each mask starts `advance` of the previous one's
    width after it (below 1 they touch and overlap). The masks are shrunk by one factor when
    the line would span more than `fill` of the width or be taller than the box, so every
    glyph stays whole inside the image; the line sits at a random place."""

    def span(ms: list[Image.Image]) -> int:
        return sum(round(m.width * advance) for m in ms[:-1]) + ms[-1].width

    masks = scale_masks(
        masks, min(fill * box[0] / span(masks), 0.95 * box[1] / max(m.height for m in masks))
    )
    x = rng.randint(0, max(0, box[0] - span(masks)))
    placed = []
    for mask in masks:
        room = max(0, box[1] - mask.height)
        y = min(room, max(0, room // 2 + round(rng.uniform(-jitter, jitter) * box[1])))
        placed.append((mask, (x, y)))
        x += round(mask.width * advance)
    return placed


def paste_ink(
    image: Image.Image, mask: Image.Image, corner: tuple[int, int], colour: Colour
) -> None:
    """Ink of one colour through a coverage mask (keeps alpha right on RGBA canvases)."""
    ink = Image.new(image.mode, mask.size, colour if image.mode != "L" else colour[0])
    if image.mode == "RGBA":
        opacity = colour[3] if len(colour) > 3 else 255
        layer = Image.new("RGBA", image.size, (0, 0, 0, 0))
        ink.putalpha(mask.point(lambda v: v * opacity // 255))
        layer.paste(ink, corner)
        image.alpha_composite(layer)
    else:
        image.paste(ink, corner, mask)


def random_curve(rng: random.Random, box: Box, points: int = 24) -> list[tuple[float, float]]:
    """A sine-like curve from the left edge to the right edge."""
    amplitude = rng.uniform(0.1, 0.45) * box[1]
    phase, periods = rng.uniform(0, 2 * math.pi), rng.uniform(0.3, 1.5)
    centre = rng.uniform(0.25, 0.75) * box[1]
    slope = rng.uniform(-0.3, 0.3) * box[1]
    return [
        (
            box[0] * t,
            centre + slope * (t - 0.5) + amplitude * math.sin(phase + 2 * math.pi * periods * t),
        )
        for t in (i / (points - 1) for i in range(points))
    ]


def draw_lines(
    draw: ImageDraw.ImageDraw,
    rng: random.Random,
    box: Box,
    count: int,
    colour: Callable[[], Colour],
    width: tuple[int, int] = (1, 2),
) -> None:
    for _ in range(count):
        draw.line(random_curve(rng, box), fill=colour(), width=rng.randint(*width))


def speckle(
    draw: ImageDraw.ImageDraw,
    rng: random.Random,
    box: Box,
    density: float,
    colour: Callable[[], Colour],
) -> None:
    for _ in range(int(density * box[0] * box[1])):
        x, y = rng.randrange(box[0]), rng.randrange(box[1])
        draw.point((x, y), fill=colour())


def dark(rng: random.Random, top: int = 90) -> Colour:
    return tuple(rng.randint(0, top) for _ in range(3))


def light(rng: random.Random, bottom: int = 215) -> Colour:
    return tuple(rng.randint(bottom, 255) for _ in range(3))


def bright(rng: random.Random) -> Colour:
    """A saturated, light colour: stands out on a dark background."""
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.4, 1.0), rng.uniform(0.8, 1.0))
    return round(r * 255), round(g * 255), round(b * 255)


def encode(image: Image.Image, image_format: str, rng: random.Random) -> bytes:
    buffer = io.BytesIO()
    if image_format == "JPEG":
        image.convert("RGB").save(
            buffer, format="JPEG", quality=rng.randint(12, 55), subsampling=rng.choice((0, 2))
        )
    else:
        image.save(buffer, format="PNG")
    return buffer.getvalue()


def glyph_row(
    rng: random.Random,
    text: str,
    box: Box,
    font_group: str,
    size: tuple[float, float],
    rotation: float = 0.0,
    shear: float = 0.0,
    thin: float = 0.0,
    per_glyph_size: bool = True,
) -> list[Image.Image]:
    """Masks of `text`, one font per glyph, sizes as fractions of the box height."""
    shared_size = rng.uniform(*size)
    masks = []
    for char in text:
        fraction = rng.uniform(*size) if per_glyph_size else shared_size
        masks.append(
            glyph_mask(
                char,
                rng.choice(fonts(font_group)),
                max(6, round(fraction * box[1])),
                rng.uniform(-rotation, rotation),
                rng.uniform(-shear, shear),
                thin=rng.random() < thin,
            )
        )
    return masks


# --- the styles ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Style:
    """A family of captchas: what its labels and images may be, and how to draw one."""

    name: str
    summary: str
    alphabet: str
    lengths: tuple[int, int]
    widths: tuple[int, int]
    heights: tuple[int, int]
    case_sensitive: bool
    draw: Callable[[random.Random, str, Box], Image.Image]
    image_format: str = "PNG"
    make_label: Callable[[random.Random, Style], str] | None = None

    @property
    def suffix(self) -> str:
        return ".jpg" if self.image_format == "JPEG" else ".png"

    def label(self, seed: int, index: int) -> str:
        rng = random.Random(f"{seed}/{self.name}/label/{index}")
        if self.make_label:
            return self.make_label(rng, self)
        length = rng.randint(*self.lengths)
        return "".join(rng.choice(self.alphabet) for _ in range(length))

    def render(self, seed: int, index: int) -> tuple[str, bytes]:
        """(label, encoded image) of image `index`: a function of (seed, index) alone."""
        label = self.label(seed, index)
        rng = random.Random(f"{seed}/{self.name}/image/{index}")
        box = (rng.randint(*self.widths), rng.randint(*self.heights))
        return label, encode(self.draw(rng, label, box), self.image_format, rng)


def draw_tiny(rng: random.Random, text: str, box: Box) -> Image.Image:
    """Small, clean, dark glyphs on a light plain background, sometimes one faint line."""
    image = Image.new("RGB", box, light(rng, 225))
    masks = glyph_row(
        rng, text, box, rng.choice(("sans", "bold")), (0.6, 0.8), rotation=6, per_glyph_size=False
    )
    ink = dark(rng, 80)
    for mask, corner in layout(rng, masks, box, rng.uniform(0.95, 1.25), jitter=0.05, fill=0.9):
        paste_ink(image, mask, corner, ink)
    if rng.random() < 0.4:
        draw_lines(ImageDraw.Draw(image), rng, box, 1, lambda: light(rng, 150), (1, 1))
    return image


def draw_wide(rng: random.Random, text: str, box: Box) -> Image.Image:
    """Transparent background; glyphs of random case, size, font and colour (pale ones too),
    often thin; crossing curves. The transparent pixels are black or white underneath."""
    under = rng.choice(((0, 0, 0, 0), (255, 255, 255, 0)))
    image = Image.new("RGBA", box, under)
    shown = "".join(c.upper() if rng.random() < 0.5 else c for c in text)
    masks = glyph_row(rng, shown, box, "any", (0.35, 0.75), rotation=20, shear=0.3, thin=0.6)

    def colour() -> Colour:
        return rng.choice(PALE_COLOURS) if rng.random() < 0.35 else dark(rng, 140)

    for mask, corner in layout(rng, masks, box, rng.uniform(0.9, 1.3), jitter=0.2, fill=0.95):
        paste_ink(image, mask, corner, colour() + (255,))
    lines = Image.new("RGBA", box, (0, 0, 0, 0))
    draw_lines(
        ImageDraw.Draw(lines),
        rng,
        box,
        rng.randint(1, 4),
        lambda: colour() + (rng.randint(120, 255),),
        (1, 2),
    )
    image.alpha_composite(lines)
    return image


def draw_dark_dotted(rng: random.Random, text: str, box: Box) -> Image.Image:
    """Dark background; bright glyphs drawn as dots or as noisy fill, among noise dots."""
    background = dark(rng, 60)
    image = Image.new("RGB", box, background)
    draw = ImageDraw.Draw(image)
    speckle(draw, rng, box, rng.uniform(0.02, 0.08), lambda: bright(rng))
    masks = glyph_row(rng, text, box, "bold", (0.55, 0.8), rotation=15)
    dotted = rng.random() < 0.6
    step = rng.randint(2, 3)
    for mask, corner in layout(rng, masks, box, rng.uniform(1.0, 1.3), fill=0.9):
        colour = bright(rng)
        for y in range(0, mask.height, 1 if not dotted else step):
            for x in range(0, mask.width, 1 if not dotted else step):
                if mask.getpixel((x, y)) < 128 or (not dotted and rng.random() < 0.3):
                    continue
                px, py = corner[0] + x, corner[1] + y
                if dotted:
                    radius = rng.choice((0.6, 1.0, 1.4))
                    draw.ellipse((px - radius, py - radius, px + radius, py + radius), fill=colour)
                else:
                    draw.point(
                        (px, py),
                        fill=tuple(min(255, max(0, c + rng.randint(-60, 60))) for c in colour),
                    )
    return image


def draw_classic(rng: random.Random, text: str, box: Box) -> Image.Image:
    """The captcha package's own look (the default generator's), at a random size."""
    from components.synth import seeded_captcha_image

    sizes = tuple(round(box[1] * f) for f in (0.6, 0.68, 0.76))
    return seeded_captcha_image(text, box, sizes, f"{rng.random()}")


def draw_jpeg(rng: random.Random, text: str, box: Box) -> Image.Image:
    """Coloured text on a noisy, tinted background; saved as a low-quality JPEG."""
    image = Image.new("RGB", box, light(rng, 180))
    draw = ImageDraw.Draw(image)
    speckle(draw, rng, box, rng.uniform(0.05, 0.2), lambda: light(rng, 120))
    masks = glyph_row(rng, text, box, "any", (0.55, 0.8), rotation=20)
    for mask, corner in layout(rng, masks, box, rng.uniform(0.95, 1.2), fill=0.9):
        paste_ink(image, mask, corner, dark(rng, 150))
    draw_lines(draw, rng, box, rng.randint(0, 2), lambda: dark(rng, 180), (1, 2))
    return image.filter(ImageFilter.GaussianBlur(rng.uniform(0, 0.7)))


def draw_overlap(rng: random.Random, text: str, box: Box) -> Image.Image:
    """Glyphs of different fonts, weights and slants that touch and overlap, in one ink;
    half of them binarised to 1-bit like scanned or thresholded captchas."""
    image = Image.new("L", box, rng.randint(215, 255))
    masks = glyph_row(
        rng, text, box, rng.choice(("bold", "any")), (0.9, 1.2), rotation=12, shear=0.3
    )
    ink = (rng.randint(0, 70),)
    for mask, corner in layout(rng, masks, box, rng.uniform(0.75, 0.9), jitter=0.1, fill=0.96):
        paste_ink(image, mask, corner, ink)
    if rng.random() < 0.5:
        return image.point(lambda v: 255 if v > 128 else 0, mode="1")
    return image


def draw_tiles(rng: random.Random, text: str, box: Box) -> Image.Image:
    """Each glyph in its own outlined square tile, rotated at random, on white with thin grey
    curves; the first tile is sometimes cut by the left edge (like cryptowin_math)."""
    image = Image.new("RGB", box, (255, 255, 255))
    draw_lines(ImageDraw.Draw(image), rng, box, rng.randint(2, 6), lambda: light(rng, 170), (1, 1))
    side = round(box[1] * rng.uniform(0.7, 0.85))
    step = min(round(side * rng.uniform(1.2, 1.6)), (box[0] - side) // max(1, len(text) - 1))
    x = rng.randint(-side // 4, max(0, box[0] - side - step * (len(text) - 1)) // 3)
    for char in text:
        colour = dark(rng, 150)
        tile = Image.new("RGBA", (side, side), (255, 255, 255, 0))
        ImageDraw.Draw(tile).rectangle(
            (0, 0, side - 1, side - 1), outline=colour + (255,), width=rng.choice((1, 1, 2))
        )
        mask = glyph_mask(char, rng.choice(fonts("any")), round(side * 0.8))
        mask = scale_masks([mask], 0.8 * side / max(mask.size))[0]
        paste_ink(
            tile, mask, ((side - mask.width) // 2, (side - mask.height) // 2), colour + (255,)
        )
        tile = tile.rotate(rng.uniform(-35, 35), resample=Image.BICUBIC, expand=True)
        y = (box[1] - tile.height) // 2 + rng.randint(-1, 1)
        image.paste(tile, (x - (tile.width - side) // 2, y), tile)
        x += step
    return image


def draw_case(rng: random.Random, text: str, box: Box) -> Image.Image:
    """Both cases on one baseline at one size per image, so capitals stand taller; light
    noise. Labels keep the case."""
    image = Image.new("RGB", box, light(rng, 200))
    draw = ImageDraw.Draw(image)
    speckle(draw, rng, box, rng.uniform(0.0, 0.05), lambda: dark(rng, 200))
    font_path = rng.choice(fonts(rng.choice(("sans", "serif", "bold"))))
    size = round(box[1] * rng.uniform(0.5, 0.62))
    spacing = [rng.uniform(1.0, 1.25) for _ in text]

    def measure(points: int) -> float:
        font = _font(font_path, points)
        return sum(font.getlength(c) * f for c, f in zip(text, spacing, strict=True))

    if measure(size) > 0.94 * box[0]:  # one size per image: shrink it until the text fits
        size = int(size * 0.94 * box[0] / measure(size))
    text_width = measure(size)
    font = _font(font_path, size)
    baseline = round(box[1] * rng.uniform(0.68, 0.78))
    x = rng.uniform(0.03 * box[0], max(0.03 * box[0], 0.97 * box[0] - text_width))
    for char, factor in zip(text, spacing, strict=True):
        draw.text((x, baseline), char, fill=dark(rng, 110), font=font, anchor="ls")
        x += font.getlength(char) * factor
    draw_lines(draw, rng, box, rng.randint(0, 2), lambda: dark(rng, 160), (1, 1))
    return image


def math_label(rng: random.Random, style: Style) -> str:
    """`A+B`, `A-B`, sometimes followed by `=?`: what a math captcha shows."""
    expression = f"{rng.randint(0, 99)}{rng.choice('+-')}{rng.randint(0, 99)}"
    return expression + "=?" if rng.random() < 0.4 else expression


def draw_math(rng: random.Random, text: str, box: Box) -> Image.Image:
    """An arithmetic expression in one font, slightly rotated glyphs, lines and dots."""
    image = Image.new("RGB", box, light(rng, 200))
    draw = ImageDraw.Draw(image)
    speckle(draw, rng, box, rng.uniform(0.0, 0.06), lambda: dark(rng, 200))
    masks = glyph_row(
        rng,
        text,
        box,
        rng.choice(("sans", "serif", "bold")),
        (0.55, 0.75),
        rotation=12,
        per_glyph_size=False,
    )
    ink = dark(rng, 120)
    for mask, corner in layout(rng, masks, box, rng.uniform(1.0, 1.2), jitter=0.08):
        paste_ink(image, mask, corner, ink)
    draw_lines(draw, rng, box, rng.randint(1, 3), lambda: dark(rng, 180), (1, 2))
    return image


STYLES: dict[str, Style] = {
    style.name: style
    for style in (
        Style(
            "tiny",
            "under 32 px high, 3-5 clean capitals and digits",
            UPPER_AND_DIGITS,
            (3, 5),
            (60, 90),
            (20, 30),
            True,
            draw_tiny,
        ),
        Style(
            "wide",
            "up to 10 glyphs of mixed size, font, case and colour (pale too), thin "
            "strokes, crossing lines, transparent RGBA",
            LOWER_AND_DIGITS,
            (4, 10),
            (300, 640),
            (60, 90),
            False,
            draw_wide,
        ),
        Style(
            "dark-dotted",
            "bright dotted or noisy digits on a dark background",
            string.digits,
            (4, 6),
            (180, 260),
            (60, 90),
            True,
            draw_dark_dotted,
        ),
        Style(
            "classic",
            "the captcha package's own look (the synth default's 36 symbols)",
            string.digits + string.ascii_lowercase,
            (4, 6),
            (160, 240),
            (50, 70),
            True,
            draw_classic,
        ),
        Style(
            "jpeg",
            "coloured text on noise, saved as a low-quality JPEG",
            LOWER_AND_DIGITS,
            (4, 6),
            (120, 200),
            (40, 60),
            True,
            draw_jpeg,
            image_format="JPEG",
        ),
        Style(
            "overlap",
            "touching, overlapping glyphs of mixed fonts and slants, gray or 1-bit",
            LOWER_AND_DIGITS,
            (4, 6),
            (110, 180),
            (35, 55),
            True,
            draw_overlap,
        ),
        Style(
            "tiles",
            "each glyph in a rotated outlined tile, grey curves",
            UPPER_AND_DIGITS,
            (4, 6),
            (140, 200),
            (30, 40),
            True,
            draw_tiles,
        ),
        Style(
            "case",
            "case-sensitive letters and digits, one baseline",
            CASED_LETTERS + "2345678",
            (4, 6),
            (150, 230),
            (50, 70),
            True,
            draw_case,
        ),
        Style(
            "math",
            "arithmetic expressions like 12+7 or 8-3=?",
            string.digits + MATH_SYMBOLS,
            (3, 7),
            (120, 200),
            (36, 56),
            True,
            draw_math,
            make_label=math_label,
        ),
    )
}


def get_style(name: str) -> Style:
    if name not in STYLES:
        raise ValueError(f"unknown style {name!r}; the zoo has {', '.join(STYLES)}")
    return STYLES[name]


# --- a picture of the zoo ------------------------------------------------------------------


def _on_checkerboard(image: Image.Image) -> Image.Image:
    """RGBA images over a grey checkerboard, so transparency shows as such."""
    if image.mode != "RGBA":
        return image.convert("RGB")
    board = Image.new("RGB", image.size, (255, 255, 255))
    draw = ImageDraw.Draw(board)
    for y in range(0, image.height, 8):
        for x in range(0, image.width, 8):
            if (x // 8 + y // 8) % 2:
                draw.rectangle((x, y, x + 7, y + 7), fill=(205, 205, 205))
    board.paste(image, (0, 0), image)
    return board


def contact_sheet(
    names: Sequence[str] = tuple(STYLES), samples: int = 4, seed: int = 0, cell: Box = (330, 96)
) -> Image.Image:
    """Every style's first `samples` images (seed `seed`), each under its label and size, a
    row per style; small images are shown twice as large, wide ones scaled down."""
    caption_font, title_font = _font(fonts("sans")[0], 12), _font(fonts("bold")[0], 14)
    title_width, caption = 110, 16
    sheet = Image.new(
        "RGB", (title_width + samples * cell[0], len(names) * (cell[1] + caption)), (255, 255, 255)
    )
    draw = ImageDraw.Draw(sheet)
    for row, name in enumerate(names):
        style = get_style(name)
        top = row * (cell[1] + caption)
        draw.text(
            (6, top + (cell[1] + caption) // 2), name, fill=(0, 0, 0), font=title_font, anchor="lm"
        )
        for column in range(samples):
            label, data = style.render(seed, column)
            with Image.open(io.BytesIO(data)) as opened:
                size = opened.size
                image = _on_checkerboard(
                    opened.convert("RGBA") if opened.mode in ("RGBA", "P") else opened
                )
            zoom = 2 if size[1] * 2 <= cell[1] - 4 and size[0] * 2 <= cell[0] - 10 else 1
            if zoom > 1:
                image = image.resize((size[0] * zoom, size[1] * zoom), Image.NEAREST)
            image.thumbnail((cell[0] - 10, cell[1] - 4))
            left = title_width + column * cell[0]
            note = f"  x{zoom}" if zoom > 1 else ""
            draw.text(
                (left, top + 1),
                f"{label}   {size[0]}x{size[1]}{note}",
                fill=(0, 0, 120),
                font=caption_font,
            )
            sheet.paste(image, (left, top + caption))
    return sheet
