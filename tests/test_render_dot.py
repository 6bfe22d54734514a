"""The graphviz view: golden DOT, SVG parsed as XML with counted nodes and edges, escaping, exports,
hide_empty/focus, and what happens when `dot` is missing."""
from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET

import pytest

from loopviz import GraphvizNotFound, LoopDiagram, LoopvizError, Work, annotate, focus, hide_empty
from loopviz.model import Event
from loopviz.renderers.palette import HEAT
from tests.views import HOSTILE, realistic_spec, tricky_spec

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
SVG = "{http://www.w3.org/2000/svg}"


def svg_tree(diagram: LoopDiagram) -> ET.Element:
    return ET.fromstring(diagram.svg())


def groups(root: ET.Element, cls: str) -> list[ET.Element]:
    return [g for g in root.iter(f"{SVG}g") if g.get("class") == cls]


def expected_counts(spec) -> tuple[int, int]:
    """Nodes and edges the diagram must have, counted from the model alone."""
    all_phases = [p for top in spec.phases for p in [top, *top.phases()]]
    events = len(spec.events()) + len(spec.custom_events)
    works = sum(isinstance(s, Work) for p in all_phases for s in p.steps)
    cancels = sum(p.cancel is not None for p in all_phases)
    nodes = events + works + cancels + 1  # + the legend
    flow_steps = [[s for s in p.steps if not (getattr(s, "role", None) == "cancel")] for p in all_phases]
    chain = sum(len(steps) - 1 for steps in flow_steps) + len(spec.phases) - 1
    loops = sum(p.repeat is not None for p in all_phases)
    return nodes, chain + loops + 2 * cancels


def test_golden_dot_source(learn, golden):
    golden("dot_default.gv", LoopDiagram(learn.loop_spec()).source.rstrip("\n"))


@needs_dot
@pytest.mark.parametrize("verbose", [False, True])
def test_svg_is_xml_with_one_node_per_step_and_every_edge(tmp_path, verbose):
    spec = realistic_spec(tmp_path)
    root = svg_tree(LoopDiagram(spec, verbose=verbose))
    nodes, edges = expected_counts(spec)
    assert len(groups(root, "node")) == nodes
    assert len(groups(root, "edge")) == edges
    clusters = [p for top in spec.phases for p in [top, *top.phases()]]
    assert len(groups(root, "cluster")) == len(clusters)
    texts = " ".join(t.text or "" for t in root.iter(f"{SVG}text"))
    assert "CancelStepException" in texts
    titles = [a.get("{http://www.w3.org/1999/xlink}title") or "" for a in root.iter(f"{SVG}a")]
    assert "next: for each batch of dls.valid" in titles  # the loop back's tooltip; its cluster's title says it too
    assert "for each batch of dls.valid" in texts
    assert ("no callbacks" in texts) == verbose  # a compact diagram leaves an event without callbacks bare


@needs_dot
def test_hostile_docstrings_render_as_literal_text(tmp_path):
    svg = LoopDiagram(tricky_spec(tmp_path), verbose=True).svg()
    root = ET.fromstring(svg)  # well-formed XML, or this raises
    assert not list(root.iter(f"{SVG}script")) and not list(root.iter("script"))
    texts = "".join(t.text or "" for t in root.iter(f"{SVG}text"))
    for piece in HOSTILE:
        assert piece in texts, piece


def test_hostile_strings_are_escaped_in_the_dot_source(tmp_path):
    source = LoopDiagram(tricky_spec(tmp_path), verbose=True).source
    assert "<script>" not in source and "&lt;script&gt;" in source
    assert "&#252;" in source  # ü as a character reference
    assert "&quot;quotes&quot;" in source


@needs_dot
def test_save_by_extension(learn, tmp_path):
    diagram = learn.show_training_loop(fmt="graphviz")
    assert isinstance(diagram, LoopDiagram)
    assert diagram.save(tmp_path / "loop.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert diagram.save(tmp_path / "loop.pdf").read_bytes()[:5] == b"%PDF-"
    ET.parse(diagram.save(tmp_path / "loop.svg"))
    assert diagram.save(tmp_path / "loop.dot").read_text() == diagram.source
    with pytest.raises(LoopvizError, match=r"cannot tell the format of .*loop\.jpeg.* use one of: \.dot, \.gv, \.svg, \.png, \.pdf"):
        diagram.save(tmp_path / "loop.jpeg")


@needs_dot
def test_notebook_bundle_has_svg_and_text(learn):
    bundle = LoopDiagram(learn.loop_spec())._repr_mimebundle_()
    assert set(bundle) == {"image/svg+xml", "text/plain"}
    ET.fromstring(bundle["image/svg+xml"])
    assert bundle["text/plain"].startswith("Start Create")
    assert set(LoopDiagram(learn.loop_spec())._repr_mimebundle_(include=["text/plain"])) == {"text/plain"}


def test_without_dot_source_works_and_exports_say_what_to_install(learn, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", "")
    diagram = learn.show_training_loop(fmt="graphviz")
    assert diagram.save(tmp_path / "loop.dot").exists()
    for suffix in ("svg", "png", "pdf"):
        with pytest.raises(GraphvizNotFound, match="needs Graphviz's `dot` program, which is not on PATH. Install it"):
            diagram.save(tmp_path / f"loop.{suffix}")
    bundle = diagram._repr_mimebundle_()
    assert set(bundle) == {"text/plain"}
    assert "no diagram: Rendering SVG needs Graphviz's `dot`" in bundle["text/plain"]


def test_an_annotated_diagram_fills_steps_by_their_share_and_names_the_hot_spots(learn):
    with learn.no_bar(), learn.no_logging():
        with learn.trace() as t:
            learn.fit(1)
    spec = annotate(learn.loop_spec(), t)
    source = LoopDiagram(spec).source
    timed = [s for top in spec.phases for _, s in top.walk() if isinstance(s, (Event, Work)) and s.timing]
    hottest = max(timed, key=lambda s: s.timing.pct)
    assert f"{hottest.name}  {hottest.timing.pct:.0f} %</B>" in source and "#1 cost" in source
    assert source.count(HEAT[-1]) >= 2  # the hottest steps' fill, and the legend's scale
    assert "Share of the run" in source and f"#1 {hottest.name}" in source
    plain = LoopDiagram(learn.loop_spec()).source
    assert "Share of the run" not in plain and not any(colour in plain for colour in HEAT)


def test_verbose_shows_a_class_doc_once_in_the_legend(tmp_path):
    source = LoopDiagram(tricky_spec(tmp_path), verbose=True).source
    assert source.count("Scale [mixup&#93; by 0.5") == 1  # (its "]" escaped) not again under each handler without a doc
    assert "Multiline doc" in source  # a handler's own doc stays under it


def test_a_loop_without_callbacks_draws_no_legend():
    from loopviz import Loop
    from tests.test_generic_loops import plain_fit

    loop = Loop("train")
    with loop.trace() as t:
        plain_fit(loop, epochs=1)
    assert "legend" not in LoopDiagram(loop.spec()).source and "no callbacks" not in LoopDiagram(loop.spec()).source
    measured = LoopDiagram(annotate(loop.spec(), t)).source
    assert "legend" in measured and "Callbacks, in call order" not in measured  # the legend holds the time scale


@needs_dot
def test_the_dark_theme_is_transparent_with_light_text(learn):
    dark = LoopDiagram(learn.loop_spec(), theme="dark")
    assert "bgcolor=transparent" in dark.source and 'fontcolor="#e5e7eb"' in dark.source
    root = svg_tree(dark)
    assert len(groups(root, "node")) == expected_counts(learn.loop_spec())[0]
    assert "bgcolor" not in LoopDiagram(learn.loop_spec()).source  # light: Graphviz's white, as before
    with pytest.raises(LoopvizError, match="theme='pink' is not a theme of the diagram; choose one of: light, dark"):
        LoopDiagram(learn.loop_spec(), theme="pink")


def test_hide_empty_drops_events_without_callbacks(learn):
    spec = hide_empty(learn.loop_spec())
    assert "after_cancel_fit" not in [e.name for e in spec.events()]
    assert all(any(h.runs or h.disabled for h in e.handlers) for e in spec.events())
    assert "after_cancel_fit" not in LoopDiagram(spec).source


def test_focus_shows_one_callback(tmp_path):
    spec = focus(realistic_spec(tmp_path), "param_scheduler")
    assert [c.cls for c in spec.callbacks] == ["ParamScheduler"]
    assert [(e.name, e.mode) for e in spec.events()] == [
        ("before_fit", None), ("before_batch", "train"), ("after_batch", "train"), ("after_fit", None)]
    source = LoopDiagram(spec).source
    assert "Recorder <FONT" not in source and "ParamScheduler <FONT" in source
    with pytest.raises(LoopvizError, match="focus='Nope' matches no callback of this loop; its callbacks are: ParamScheduler\."):
        focus(spec, "Nope")


def test_bad_fmt_is_named(learn):
    with pytest.raises(LoopvizError, match="fmt='jpeg' is not a view loopviz has; choose one of: text, rich, mermaid, dot, svg, png, pdf, graphviz"):
        learn.show_training_loop(fmt="jpeg")
    assert learn.show_training_loop(fmt="svg").source == learn.show_training_loop(fmt="graphviz").source


@needs_dot
def test_fifteen_callbacks_stay_one_table_per_event(tmp_path):
    from fastai.callback.core import Callback

    from fastai.test_utils import synth_learner

    extra = [type(f"Cb{i:02d}", (Callback,), {"order": i, "after_batch": lambda self: None})() for i in range(15)]
    spec = synth_learner(path=tmp_path).loop_spec(cbs=extra)
    root = svg_tree(LoopDiagram(spec))
    nodes, edges = expected_counts(spec)
    assert (len(groups(root, "node")), len(groups(root, "edge"))) == (nodes, edges)
    width = float(root.get("width").rstrip("pt"))
    assert width < 2000, f"the diagram grew sideways to {width}pt"


def test_show_training_loop_passes_the_theme_to_the_diagram(learn):
    dark = learn.show_training_loop(fmt="graphviz", theme="dark")
    assert dark.theme == "dark" and "bgcolor=transparent" in dark.source
    with pytest.raises(LoopvizError, match=r"theme must be one of 'light', 'dark', not 'blue'"):
        learn.show_training_loop(fmt="graphviz", theme="blue")
