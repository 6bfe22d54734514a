"""The families the per-batch charts colour by: the data, the model, the optimizer, the callbacks, the waits, the
rest. Each family is a hue (ColorBrewer's sequential ramps), each series of it a shade, so a stack reads as bands:
the plot (`t.plot()`) and the HTML report draw the same series in the same colours.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["FAMILIES", "RAMPS", "OTHER", "family_of", "series_kinds", "folded_series", "series_colours"]

OTHER = "other"  # the series folded together past a family's shades
# bottom of the stack first; each family's shades, darkest first (the largest series of a family gets the darkest)
FAMILIES = ("data", "model", "optimizer", "callbacks", "waits", "other")
RAMPS: dict[str, tuple[str, ...]] = {
    "data": ("#a63603", "#e6550d", "#fd8d3c", "#fdae6b"),
    "model": ("#08519c", "#3182bd", "#6baed6", "#9ecae1", "#c6dbef"),
    "optimizer": ("#006d2c", "#31a354", "#74c476", "#a1d99b"),
    "callbacks": ("#3f007d", "#54278f", "#6a51a3", "#807dba", "#9e9ac8", "#bcbddc", "#dadaeb"),
    "waits": ("#a50f15", "#de2d26", "#fb6a4a", "#fcae91"),
    "other": ("#525252", "#737373", "#969696", "#bdbdbd"),
}
# the names of work and of hooks, in every adapter's words, that are the data, the model and the optimizer
_DATA = frozenset({"draw", "data", "fetch", "next batch"})
_MODEL = frozenset({"forward", "loss", "backward", "forward+backward", "closure", "pred", "training_step",
                    "validation_step", "test_step", "predict_step", "prediction step", "evaluate"})
_OPTIMIZER = frozenset({"step", "zero_grad", "optimizer step", "scheduler+zero_grad", "optimizer_step",
                        "optimizer_zero_grad", "lr_scheduler_step", "configure_gradient_clipping", "optimizer.step()",
                        "clip gradients"})


def family_of(name: str, kind: str) -> str:
    """The family of a series: `name` a work or event name, `kind` 'work' or 'event' (an event's handlers are the
    callbacks'; the framework's own dispatch is theirs too)."""
    if name == OTHER:
        return "other"
    if "wait" in name.lower():
        return "waits"
    if name in _DATA:
        return "data"
    if name in _MODEL:
        return "model"
    if name in _OPTIMIZER:
        return "optimizer"
    return "callbacks" if kind == "event" or name.startswith("dispatch") else "other"


def series_kinds(spans: pd.DataFrame) -> dict[str, str]:
    """Each series' kind ('work' or 'event') from a loop's spans (a callback's span is named by its event)."""
    own = spans[spans["kind"] != "callback"]
    return dict(zip(own["name"].astype(str), own["kind"].astype(str)))


def folded_series(table: pd.DataFrame, kinds: dict[str, str]) -> pd.DataFrame:
    """The per-series columns of a batch table, family by family (data first: the bottom of a stack), largest first
    within each; past a family's shades its smallest fold into 'other'. `kinds`: each series' kind ('work'/'event')."""
    series = table.drop(columns=["epoch", "iter"])
    totals = series.sum()
    by_family: dict[str, list[str]] = {family: [] for family in FAMILIES}
    for name in sorted(series.columns, key=lambda n: (-float(totals[n]), str(n))):
        by_family[family_of(str(name), kinds.get(str(name), "work"))].append(name)
    kept: list[str] = []
    folded: list[str] = []
    for family in FAMILIES:
        room = len(RAMPS[family]) - (1 if family == "other" else 0)  # (the last grey is the folded rest's)
        kept += by_family[family][:room]
        folded += by_family[family][room:]
    out = series[kept]
    if folded:
        out = out.assign(**{OTHER: series[folded].sum(axis=1) + (series[OTHER] if OTHER in kept else 0)})
        if OTHER in kept:
            out = out[[c for c in out.columns if c != OTHER] + [OTHER]]
    return out


def series_colours(names: list[str], kinds: dict[str, str]) -> dict[str, str]:
    """A colour per series: its family's hue, in the shade of its rank in the family (`names` in folded_series'
    order, largest first within a family); 'other' is the last grey. No two series share a colour."""
    ranks = {family: 0 for family in FAMILIES}
    colours: dict[str, str] = {}
    for name in names:
        if name == OTHER:
            continue
        family = family_of(name, kinds.get(name, "work"))
        colours[name] = RAMPS[family][min(ranks[family], len(RAMPS[family]) - 1)]
        ranks[family] += 1
    if OTHER in names:
        colours[OTHER] = RAMPS["other"][-1]
    return colours
