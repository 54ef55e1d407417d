"""How much Keras prints: a redrawn progress bar on a terminal, one line per epoch elsewhere."""

from __future__ import annotations

import sys
from typing import TextIO

PROGRESS_BAR, LINE_PER_EPOCH = 1, 2  # Keras' `verbose` values


def keras_verbose(setting: int | str, stream: TextIO | None = None) -> int:
    """Resolve `"auto"` for `fit`/`search`: the bar only when `stream` (stdout) is a terminal.

    Keras 3's own "auto" is always the bar, and the bar redraws itself with '\\r' whenever
    "posix" is imported (always, on Linux), so CI logs, `nohup` and Dataflow get a frame per
    step: megabytes for a long run. Elsewhere one line per epoch is what a person can read.
    """
    if setting != "auto":
        return int(setting)
    stream = sys.stdout if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return PROGRESS_BAR if isatty is not None and isatty() else LINE_PER_EPOCH
