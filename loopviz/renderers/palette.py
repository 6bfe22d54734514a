"""One colour per callback class, the same in every view of a loop."""
from __future__ import annotations

import zlib

from loopviz.model import LoopSpec

__all__ = ["PALETTE", "callback_colours"]

# Sixteen colours that stay apart from each other on white and dark backgrounds.
PALETTE: tuple[str, ...] = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd",
)


def callback_colours(spec: LoopSpec) -> dict[str, str]:
    """Colour per callback class: chosen from the class name, moved on to a free colour on a clash.

    The first choice depends on the name only, so a class keeps its colour across learners unless
    two classes of one loop want the same colour; then the later one (in call order) moves on.
    """
    colours: dict[str, str] = {}
    for info in spec.callbacks:
        if info.cls in colours:
            continue
        start = zlib.crc32(info.cls.encode("utf-8")) % len(PALETTE)
        taken = set(colours.values())
        for step in range(len(PALETTE)):
            colour = PALETTE[(start + step) % len(PALETTE)]
            if colour not in taken or len(taken) >= len(PALETTE):
                break
        colours[info.cls] = colour
    return colours
