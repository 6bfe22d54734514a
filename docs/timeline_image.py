"""A picture of a merged loopviz + torch.profiler trace (`Trace.to_perfetto_with`, `loopviz merge`), drawn with
matplotlib as Perfetto lays it out: no Perfetto UI or catapult trace viewer runs offline here to screenshot.

One row per track: loopviz's loop, events, callback calls and work (and device work, if timed), then each of the
profiler's CPU threads, then its GPU streams, in the file's process order (`process_sort_index`). Spans are bars
labelled with their names where they fit; nested spans stack downwards by depth, as in Perfetto.
"""
from __future__ import annotations

import colorsys
import hashlib
from pathlib import Path
from typing import Any

__all__ = ["merged_timeline_png"]

OURS = (("loop", "loop"), ("event", "events"), ("callback", "callbacks"), ("work", "work"))  # loopviz's categories
LANE = 0.26  # inches per lane of nested spans
WIDTH = 15.0  # inches
LABELS = 2.5  # inches of track names at the left
FONT = 7.5


def merged_timeline_png(merged: dict[str, Any], path: str | Path, start_us: float, end_us: float, *,
                        dpi: int = 130, title: str | None = None) -> Path:
    """Draw the merged trace's tracks between `start_us` and `end_us` (its clock: µs from loopviz's origin) as a
    PNG at `path`; times shown in ms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    groups = _tracks(merged, start_us, end_us)
    lanes = sum(1 + sum(max(1, depth) for _, _, depth in tracks) for _, tracks in groups)  # a header row each
    height = 0.9 + lanes * LANE
    fig = plt.figure(figsize=(WIDTH, height), dpi=dpi)
    ax = fig.add_axes((LABELS / WIDTH, 0.45 / height, 1 - (LABELS + 0.25) / WIDTH, 1 - 0.9 / height))
    ax.set_xlim(start_us / 1000, end_us / 1000)
    ax.set_ylim(lanes, 0)
    ax.set_yticks([])
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    ax.tick_params(axis="x", labelsize=FONT + 0.5)
    ax.set_xlabel("ms on loopviz's clock (from the start of the loop)", fontsize=FONT + 1)
    ax.grid(axis="x", color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)
    if title:
        fig.suptitle(title, x=0.01, ha="left", fontsize=FONT + 3, y=1 - 0.12 / height, va="top")
    per_ms = (ax.get_position().width * WIDTH * dpi) / ((end_us - start_us) / 1000)  # pixels per ms
    row = 0.0
    for group, tracks in groups:
        ax.add_patch(Rectangle((start_us / 1000, row), (end_us - start_us) / 1000, 1, color="#eef0f4", lw=0))
        fig.text(0.008, _figure_y(ax, row + 0.5, lanes), group, fontsize=FONT + 1, fontweight="bold", va="center")
        row += 1
        for name, spans, depth in tracks:
            fig.text(0.018, _figure_y(ax, row + 0.5, lanes), name, fontsize=FONT + 0.5, va="center", color="#333333")
            for span, level in spans:
                begin, end = max(span["ts"], start_us) / 1000, min(span["ts"] + span.get("dur", 0), end_us) / 1000
                colour = _colour(span["name"])
                ax.add_patch(Rectangle((begin, row + level + 0.06), max(end - begin, 1.5 / per_ms), 0.88,
                                       facecolor=colour, edgecolor="white", linewidth=0.4))
                label = _fitted(span["name"], (end - begin) * per_ms, dpi)
                if label:
                    ax.text((begin + end) / 2, row + level + 0.52, label, ha="center", va="center", fontsize=FONT,
                            color=_ink(colour), clip_on=True)
            row += max(1, depth)
            ax.axhline(row, color="#cccccc", linewidth=0.5)
    path = Path(path)
    fig.savefig(path, dpi=dpi, facecolor="white")
    plt.close(fig)
    return path


def _tracks(merged: dict[str, Any], start: float, end: float) -> list[tuple[str, list[tuple[str, list, int]]]]:
    """(process name, [(track name, [(span, depth)], lanes)]) in Perfetto's order: loopviz's process first, split by
    category, then the profiler's processes by sort index, a track per thread or stream."""
    events = [e for e in merged["traceEvents"] if isinstance(e, dict)]
    meta = {(e["name"], e.get("pid"), e.get("tid")): e.get("args", {}) for e in events if e.get("ph") == "M"}
    process = {p: a.get("name", str(p)) for (kind, p, _), a in meta.items() if kind == "process_name"}
    thread = {(p, t): a.get("name", str(t)) for (kind, p, t), a in meta.items() if kind == "thread_name"}
    order = {p: a.get("sort_index", 0) for (kind, p, _), a in meta.items() if kind == "process_sort_index"}
    shown = [e for e in events if e.get("ph") == "X" and type(e.get("pid")) is int
             and e["ts"] < end and e["ts"] + e.get("dur", 0) > start]
    ours = {e["pid"] for e in shown if e.get("cat") in dict(OURS)}
    groups = []
    for pid in sorted({e["pid"] for e in shown}, key=lambda p: (p not in ours, order.get(p, 0), p)):
        mine = [e for e in shown if e["pid"] == pid]
        if pid in ours:
            device = {e["tid"] for e in mine if e.get("cat") == "work"} - {e["tid"] for e in mine if e.get("cat") == "event"}
            keys = [(cat, label, lambda e, c=cat: e.get("cat") == c and (c != "work" or e["tid"] not in device))
                    for cat, label in OURS]
            keys += [("work", "work (device)", lambda e: e.get("cat") == "work" and e["tid"] in device)] if device else []
            tracks = [(label, [e for e in mine if pick(e)]) for _, label, pick in keys]
        else:
            tids = sorted({e["tid"] for e in mine}, key=str)
            tracks = [(thread.get((pid, t), f"thread {t}"), [e for e in mine if e["tid"] == t]) for t in tids]
        groups.append((process.get(pid, f"process {pid}"), [(n, *_nested(s)) for n, s in tracks if s]))
    return groups


def _nested(spans: list[dict[str, Any]]) -> tuple[list[tuple[dict[str, Any], int]], int]:
    """Each span with its depth (how many spans of the track enclose it), and the track's number of lanes."""
    out, open_ends, lanes = [], [], 0
    for span in sorted(spans, key=lambda e: (e["ts"], -e.get("dur", 0))):
        while open_ends and open_ends[-1] <= span["ts"] + 1e-3:
            open_ends.pop()
        out.append((span, len(open_ends)))
        open_ends.append(span["ts"] + span.get("dur", 0))
        lanes = max(lanes, len(open_ends))
    return out, lanes


def _figure_y(ax: Any, row: float, lanes: float) -> float:
    """A row's middle in figure coordinates (rows count down from the top of the axes)."""
    box = ax.get_position()
    return box.y1 - (row / lanes) * box.height


def _colour(name: str) -> tuple[float, float, float]:
    """A soft colour from the name, the same for the same name (as Perfetto colours slices)."""
    key = name.split(" (")[0].removeprefix("fastai ")
    hue = int(hashlib.md5(key.encode()).hexdigest()[:6], 16) / 0xFFFFFF
    return colorsys.hls_to_rgb(hue, 0.62, 0.55)


def _ink(colour: tuple[float, float, float]) -> str:
    """Black or white text, whichever reads better on the colour."""
    r, g, b = colour
    return "#111111" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"


def _fitted(name: str, pixels: float, dpi: int) -> str:
    """The name, cut to the bar's width (with an ellipsis); '' when not even a few characters fit."""
    per_char = FONT * 0.6 * dpi / 72
    room = int((pixels - 4) / per_char)
    if room >= len(name):
        return name
    return name[:room - 1] + "…" if room >= 4 else ""
