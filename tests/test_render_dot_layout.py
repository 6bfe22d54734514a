"""The graphviz diagram as laid out by `dot`, read back from its JSON output: it fits a laptop screen, no edge runs
over a node or a phase's title, no line of text touches the line below it, each cancel path is one line beside the
event it resumes at, an event's callbacks sit beside its name, and many callbacks take two columns of the legend."""
from __future__ import annotations

import json
import runpy
import shutil
import tempfile
from pathlib import Path
from typing import Any

import graphviz
import pytest
from fastai.callback.all import GradientClip, MixedPrecision, SaveModelCallback
from fastai.test_utils import synth_learner

from loopviz import LoopDiagram

pytestmark = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in points


def laid_out(diagram: LoopDiagram) -> dict[str, Any]:
    """dot's layout of the diagram, as its JSON output."""
    return json.loads(graphviz.Source(diagram.source).pipe(format="json").decode())


def _box(x: float, y: float, width: float, height: float) -> Box:
    return x - width / 2, y - height / 2, x + width / 2, y + height / 2


def boxes(layout: dict[str, Any]) -> dict[str, Box]:
    """Each drawn node's box, and each cluster title's box (`title of cluster_N`), in points."""
    found = {}
    for obj in layout["objects"]:
        if obj["name"].startswith("cluster") and "lp" in obj:
            x, y = map(float, obj["lp"].split(","))
            found[f"title of {obj['name']}"] = _box(x, y, float(obj["lwidth"]) * 72, float(obj["lheight"]) * 72)
        elif "pos" in obj and obj.get("style") != "invis":
            x, y = map(float, obj["pos"].split(","))
            found[obj["name"]] = _box(x, y, float(obj["width"]) * 72, float(obj["height"]) * 72)
    return found


def along(spline: str) -> list[tuple[float, float]]:
    """Points along an edge's drawn spline (cubic Bézier pieces), 40 to a piece."""
    points = [tuple(map(float, p.split(","))) for p in spline.split() if not p.startswith(("e,", "s,"))]
    out = []
    for i in range(0, len(points) - 3, 3):
        p0, p1, p2, p3 = points[i:i + 4]
        for k in range(41):
            t = k / 40
            out.append(tuple((1 - t) ** 3 * a + 3 * (1 - t) ** 2 * t * b + 3 * (1 - t) * t ** 2 * c + t ** 3 * d
                             for a, b, c, d in zip(p0, p1, p2, p3)))
    return out


def edges_over_text(diagram: LoopDiagram) -> list[tuple[str, str, str]]:
    """(tail, head, what it runs over) for each edge that passes inside a node other than its ends, or a title."""
    layout = laid_out(diagram)
    names = {obj["_gvid"]: obj["name"] for obj in layout["objects"]}
    drawn = boxes(layout)
    over = []
    for edge in layout.get("edges", []):
        if edge.get("style") == "invis":
            continue
        tail, head = names[edge["tail"]], names[edge["head"]]
        points = along(edge["pos"])
        for name, (x0, y0, x1, y1) in drawn.items():
            if name not in (tail, head) and any(x0 + 1 < x < x1 - 1 and y0 + 1 < y < y1 - 1 for x, y in points):
                over.append((tail, head, name))
    return over


# DejaVu Sans, where fontconfig sends Helvetica on most Linux machines, in em: how far '_' reaches below the baseline
# and 'b' above it (the glyphs' bounds, read with fontTools)
UNDERSCORE_DEPTH, ASCENT = 0.236, 0.76
CLEARANCE = 0.5  # points between the two: about a pixel at 100 %


def text_lines(drawn: list[dict[str, Any]]) -> list[tuple[float, float, float, float, str]]:
    """(left, right, baseline, font size, text) of each piece of text in a label's draw operations."""
    size, found = 10.0, []
    for op in drawn:
        if op["op"] == "F":
            size = op["size"]
        elif op["op"] == "T" and op["text"].strip():
            x, y = op["pt"]
            left = {"l": x, "c": x - op["width"] / 2, "r": x - op["width"]}[op["align"]]
            found.append((left, left + op["width"], y, size, op["text"]))
    return found


def lines_too_close(diagram: LoopDiagram) -> list[tuple[str, str, str, float]]:
    """(where, upper text, lower text, points missing) for each two pieces of text of one label, one above the
    other and overlapping across, where the upper's underscores would touch the lower's tallest letters."""
    layout = laid_out(diagram)
    close = []
    for obj in [layout, *layout["objects"]]:
        pieces = text_lines(obj.get("_ldraw_", []))
        for left, right, baseline, size, text in pieces:
            for left2, right2, baseline2, size2, text2 in pieces:
                gap = baseline - baseline2  # (y grows upwards)
                missing = UNDERSCORE_DEPTH * size + ASCENT * size2 + CLEARANCE - gap
                if 0 < gap < size + size2 and left < right2 and left2 < right and missing > 0:
                    close.append((obj["name"], text, text2, round(missing, 1)))
    return close


def centre_y(layout: dict[str, Any], label_has: str) -> float:
    """The height of the middle of the one node whose label holds `label_has`."""
    found = [obj for obj in layout["objects"] if "pos" in obj and label_has in obj.get("label", "")]
    assert len(found) == 1, (label_has, [obj["name"] for obj in found])
    return float(found[0]["pos"].split(",")[1])


@pytest.fixture(scope="module")
def learners() -> dict[str, Any]:
    """The default synthetic learner, one with the callbacks of the README's picture, one traced (with its data
    loop's stages)."""
    import fastai.callback.all  # noqa: F401  (ProgressCallback joins the defaults, as in a notebook)

    traced = synth_learner(n_trn=20, cbs=[GradientClip()])
    with traced.no_bar(), traced.no_logging(), traced.trace(data=True) as trace:
        traced.fit_one_cycle(1)
    return {"default": synth_learner(), "realistic": synth_learner(cbs=[GradientClip(), MixedPrecision()]),
            "traced": (traced, trace)}


def test_the_default_fit_diagram_fits_a_laptop_screen(learners):
    svg = learners["default"].show_training_loop(fmt="graphviz").svg()
    root = svg[svg.index("<svg"):]
    height_pt = float(root.split('height="', 1)[1].split("pt", 1)[0])
    width_pt = float(root.split('width="', 1)[1].split("pt", 1)[0])
    assert height_pt * 96 / 72 < 1700 and width_pt * 96 / 72 < 1100  # pixels at 100 % (96 dpi)


@pytest.mark.parametrize("verbose", [False, True])
@pytest.mark.parametrize("hide_empty", [False, True])
def test_no_edge_runs_over_a_node_or_a_title(learners, verbose, hide_empty):
    diagram = learners["realistic"].show_training_loop(fmt="graphviz", verbose=verbose, hide_empty=hide_empty,
                                                       cbs=[SaveModelCallback()])
    assert edges_over_text(diagram) == []


def test_no_edge_runs_over_text_in_an_annotated_diagram(learners):
    traced, trace = learners["traced"]
    assert edges_over_text(traced.show_training_loop(fmt="graphviz", trace=trace)) == []


@pytest.fixture(scope="module")
def lightning_and_trainer() -> dict[str, Any]:
    """The loop specs of Lightning's fit, validate, test, predict and resume, and of the Trainer."""
    pytest.importorskip("lightning")
    pytest.importorskip("transformers")
    from loopviz.adapters.transformers import trainer_spec

    script = runpy.run_path(str(Path(__file__).parent.parent / "docs" / "hook_order.py"), run_name="hook_order")
    script["_quiet"]()
    with tempfile.TemporaryDirectory() as root:
        return {**script["lightning_specs"](root), "trainer": trainer_spec(script["hf_trainer"](root))}


def test_no_edge_runs_over_text_for_lightning_and_the_trainer(lightning_and_trainer):
    for name, spec in lightning_and_trainer.items():
        for verbose in (False, True):
            assert edges_over_text(LoopDiagram(spec, verbose=verbose)) == [], (name, verbose)


def test_no_line_of_text_touches_the_line_below(learners):
    traced, trace = learners["traced"]
    assert lines_too_close(traced.show_training_loop(fmt="graphviz", trace=trace)) == []
    assert lines_too_close(traced.show_training_loop(fmt="graphviz", trace=trace, verbose=True)) == []
    for verbose in (False, True):
        diagram = learners["realistic"].show_training_loop(fmt="graphviz", verbose=verbose, cbs=[SaveModelCallback()])
        assert lines_too_close(diagram) == [], verbose


def test_no_line_of_text_touches_the_line_below_for_lightning_and_the_trainer(lightning_and_trainer):
    for name, spec in lightning_and_trainer.items():
        assert lines_too_close(LoopDiagram(spec, verbose=True)) == [], name


def test_a_cancel_path_is_one_line_beside_the_event_it_resumes_at(learners):
    layout = laid_out(learners["default"].show_training_loop(fmt="graphviz"))
    for exception, phase in [("Train", "train"), ("Valid", "validate"), ("Epoch", "epoch"), ("Fit", "fit")]:
        heights = {centre_y(layout, f">Cancel{exception}Exception</FONT>"),
                   centre_y(layout, f"<B>after_cancel_{phase}</B>"), centre_y(layout, f"<B>after_{phase}</B>")}
        assert len(heights) == 1, phase


def test_an_events_callbacks_sit_beside_its_name(learners):
    import xml.etree.ElementTree as ET

    ns = "{http://www.w3.org/2000/svg}"
    root = ET.fromstring(learners["default"].show_training_loop(fmt="graphviz").svg())
    nodes = [g for g in root.iter(f"{ns}g") if g.get("class") == "node"]
    (before_fit,) = [g for g in nodes if any(t.text == "before_fit" for t in g.iter(f"{ns}text"))]
    texts = [(t.text.strip(), float(t.get("y"))) for t in before_fit.iter(f"{ns}text") if t.text.strip()]
    assert [text for text, _ in texts] == ["before_fit", "TrainEvalCallback", "-10", "Recorder", "50",
                                           "ProgressCallback", "60"]
    assert len({y for _, y in texts}) == 1  # one line


def test_many_callbacks_take_two_columns_of_the_legend(learners):
    few = _legend_texts(learners["default"].show_training_loop(fmt="graphviz").svg())
    assert len({x for _, x, _ in few}) == 1  # four callbacks: one column
    many = _legend_texts(learners["realistic"].show_training_loop(fmt="graphviz", cbs=[SaveModelCallback()]).svg())
    columns = sorted({x for _, x, _ in many})
    assert len(columns) == 2 and [name for name, _, _ in many][:1] == ["TrainEvalCallback"]
    first = [name for name, x, _ in sorted(many, key=lambda t: t[2]) if x == columns[0]]
    second = [name for name, x, _ in sorted(many, key=lambda t: t[2]) if x == columns[1]]
    assert first + second == ["TrainEvalCallback", "CastToTensor", "MixedPrecision", "GradientClip", "Recorder",
                              "ProgressCallback", "SaveModelCallback"]  # in call order, down each column


def _legend_texts(svg: str) -> list[tuple[str, float, float]]:
    """(callback name, x, y) of each callback listed in the legend (its group in the SVG is titled 'legend')."""
    import xml.etree.ElementTree as ET

    ns = "{http://www.w3.org/2000/svg}"
    root = ET.fromstring(svg[svg.index("<svg"):])
    (legend,) = [g for g in root.iter(f"{ns}g") if g.findtext(f"{ns}title") == "legend"]
    texts = [t for t in legend.iter(f"{ns}text") if t.text and t.text[:1].isupper()]
    return [(t.text.strip(), float(t.get("x")), float(t.get("y"))) for t in texts
            if t.text.strip() != "Callbacks, in call order" and not t.text.startswith(("box", "Share"))]
