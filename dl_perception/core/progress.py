"""Progress bars with a rate and an ETA for long commands (train, eval, record, process).

Written to stderr, so a command's own output on stdout stays clean for pipes; in a log that is
not a terminal tqdm redraws at most every 10 s instead of filling it."""
from __future__ import annotations

import sys
from collections.abc import Iterable

from tqdm import tqdm


def progress(iterable: Iterable | None = None, total: int | None = None, desc: str = "",
             unit: str = "it", enabled: bool = True) -> tqdm:
    interactive = sys.stderr.isatty()
    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, leave=False,
                dynamic_ncols=True, mininterval=0.5 if interactive else 10.0,
                disable=not enabled)
