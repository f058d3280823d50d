"""The size progress bars draw at: the terminal's, or a fixed 80 x 24 where a pseudo-terminal reports 0 x 0."""

from __future__ import annotations

import shutil
from typing import Any


def bar_size() -> dict[str, Any]:
    """tqdm's size arguments for a bar on this terminal.

    A pseudo-terminal with no size (script(1), some CI runners) reports 0 x 0, and tqdm then hides
    every bar (its position is past 0 rows): draw at a fixed 80 x 24 there instead.
    """
    sized = shutil.get_terminal_size((0, 0)).columns > 0
    return {"dynamic_ncols": sized, "ncols": None if sized else 80, "nrows": None if sized else 24}
