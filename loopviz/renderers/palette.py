"""One colour per callback class, the same in every view of a loop."""
from __future__ import annotations

import math
import zlib
from typing import Iterable

from loopviz.model import LoopSpec

__all__ = ["PALETTE", "HEAT", "HEAT_DARK", "heat_index", "callback_colours", "pick_colours", "rgb"]

# Sixteen colours that stay apart from each other on white and dark backgrounds.
PALETTE: tuple[str, ...] = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#7b83eb", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd",
)

# White to dark red, for a share of the run from 0 to the largest share in the picture (ColorBrewer YlOrRd).
HEAT: tuple[str, ...] = ("#ffffcc", "#ffeda0", "#fed976", "#feb24c", "#fd8d3c", "#fc4e2a", "#e31a1c", "#bd0026", "#800026")
HEAT_DARK = 6  # HEAT[HEAT_DARK:] are dark enough to need white text


def heat_index(share: float, top: float) -> int:
    """The HEAT index of a share, scaled to the largest share shown (0 when nothing took any time)."""
    if top <= 0:
        return 0
    return max(0, min(int(share / top * (len(HEAT) - 1) + 0.5), len(HEAT) - 1))


def callback_colours(spec: LoopSpec) -> dict[str, str]:
    """Colour per callback class: chosen from the class name, moved on to a free colour on a clash.

    The first choice depends on the name only, so a class keeps its colour across learners unless
    two classes of one loop want the same colour; then the later one (in call order) moves on.
    """
    return pick_colours(info.cls for info in spec.callbacks)


def pick_colours(names: Iterable[str], taken: dict[str, str] | None = None, near: float = 0.0) -> dict[str, str]:
    """A PALETTE colour per name, in the order given: the colour its crc32 picks, or the next one free of those
    taken so far (and, while one is left, at least `near` apart from them in RGB); `taken` are fixed beforehand.
    Up to len(PALETTE) names never share a colour; past that a name gets its first choice."""
    colours = dict(taken or {})
    for name in dict.fromkeys(names):
        if name in colours:
            continue
        start = zlib.crc32(name.encode("utf-8", "surrogatepass")) % len(PALETTE)
        used = list(colours.values())
        free = [c for step in range(len(PALETTE)) if (c := PALETTE[(start + step) % len(PALETTE)]) not in used]
        apart = [c for c in free if all(math.dist(rgb(c), rgb(u)) >= near for u in used)]
        colours[name] = (apart or free or [PALETTE[start]])[0]
    return colours


def rgb(colour: str) -> tuple[int, int, int]:
    """The red, green and blue (0-255) of a '#rrggbb' colour."""
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)
