"""Pictures people would rather look at than read: image grids, training curves, reliability."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import tensorflow as tf

ERROR_COLOR = "red"
OK_COLOR = "black"


def _save(fig: plt.Figure, path: str) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(buffer.getvalue())


def image_grid(
    images: Sequence[np.ndarray],
    titles: Sequence[str],
    path: str,
    colors: Sequence[str] | None = None,
    columns: int = 4,
    suptitle: str = "",
) -> None:
    """Grayscale images [H, W, 1] in [0, 1] with a title each; red titles mark errors."""
    if not images:
        raise ValueError(f"no images to draw in {path}")
    colors = colors or [OK_COLOR] * len(images)
    rows = -(-len(images) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 1.3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, title, color in zip(axes.flat, images, titles, colors, strict=False):
        ax.imshow(np.squeeze(image, axis=-1), cmap="gray", vmin=0.0, vmax=1.0)
        ax.set_title(title, color=color, fontsize=9, family="monospace")
        if color != OK_COLOR:
            for spine in ax.spines.values():
                spine.set_visible(True)
                spine.set_color(color)
                spine.set_linewidth(2)
            ax.axis("on")
            ax.set_xticks([])
            ax.set_yticks([])
    if suptitle:
        fig.suptitle(suptitle)
    _save(fig, path)


def read_history(history_csv: str) -> dict[str, list[float]]:
    with tf.io.gfile.GFile(history_csv) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{history_csv} has no epochs")
    return {key: [float(row[key]) for row in rows] for key in rows[0]}


def training_curves(history_csv: str, path: str) -> None:
    """CTC loss, whole-captcha accuracy and CER per epoch, train vs validation."""
    history = read_history(history_csv)
    epochs = [int(e) + 1 for e in history["epoch"]]
    panels = [("loss", "CTC loss"), ("sequence_accuracy", "whole-captcha accuracy"), ("cer", "CER")]
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(16, 3.5))
    for ax, (key, title) in zip(axes, panels, strict=False):
        for prefix, label in (("", "train"), ("val_", "validation")):
            if prefix + key in history:
                ax.plot(epochs, history[prefix + key], label=label)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.legend()
    if "loss" in history:
        axes[0].set_yscale("log")
    if "learning_rate" in history:
        axes[-1].plot(epochs, history["learning_rate"])
        axes[-1].set_yscale("log")
    axes[-1].set_title("learning rate")
    axes[-1].set_xlabel("epoch")
    fig.tight_layout()
    _save(fig, path)


def reliability_diagram(
    table: Sequence[dict], path: str, review_below: float | None = None
) -> None:
    """Share right against confidence per bin (on the diagonal when calibrated), and counts."""
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(5, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    centres = [(row["low"] + row["high"]) / 2 for row in table]
    width = table[0]["high"] - table[0]["low"] if table else 0.1
    filled = [row for row in table if row["count"]]
    top.plot([0, 1], [0, 1], color="gray", linestyle="--", label="calibrated")
    top.bar(
        [row["mean_confidence"] for row in filled],
        [row["accuracy"] for row in filled],
        width=width * 0.8,
        alpha=0.7,
        label="share right",
    )
    top.set_ylabel("share of answers right")
    top.set_ylim(0, 1.02)
    bottom.bar(centres, [row["count"] for row in table], width=width * 0.8, color="gray")
    bottom.set_yscale("symlog")
    bottom.set_ylabel("answers")
    bottom.set_xlabel("confidence")
    bottom.set_xlim(0, 1)
    if review_below is not None:
        for ax in (top, bottom):
            ax.axvline(review_below, color=ERROR_COLOR, linewidth=1)
        top.text(review_below, 0.05, " review below", color=ERROR_COLOR, fontsize=8)
    top.legend(loc="upper left")
    top.set_title("reliability on the eval split")
    fig.tight_layout()
    _save(fig, path)
