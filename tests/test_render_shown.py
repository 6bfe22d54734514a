"""What a view shows, defined once (`loopviz.renderers.shown`): every view carries every item of a spec that has
them all — custom events, run=False, run_train/run_valid, a `__call__` overrider, cancel paths, measured times,
notes from a capped trace, and a diff."""
from __future__ import annotations

import html
import re
import shutil
import xml.etree.ElementTree as ET

import pytest
from fastai.callback.all import GradientClip
from fastai.callback.core import Callback
from fastai.test_utils import synth_learner

from loopviz import annotate, diff, render_mermaid, render_text
from loopviz.diagram import LoopDiagram
from loopviz.renderers.rich_tree import render_rich_text
from tests.callbacks import DrawCallback, TrainOnlyCallback


class ValidOnly(Callback):
    "Counts validation batches"
    run_train = False
    order = 56

    def after_batch(self) -> None:
        "Count one more validation batch"


class SwitchedOff(Callback):
    "Switched off for this fit"
    run = False
    order = 57

    def before_epoch(self) -> None:
        "Would prepare the epoch"


class HearsEverything(Callback):
    "Receives every event through its own __call__"
    order = 58

    def __call__(self, event_name: str) -> None:
        self.heard = getattr(self, "heard", 0) + 1


@pytest.fixture(scope="module")
def everything(tmp_path_factory):
    """A spec with every kind of item a view can show."""
    learn = synth_learner(path=tmp_path_factory.mktemp("shown"),
                          cbs=[DrawCallback(), TrainOnlyCallback(), ValidOnly(), SwitchedOff(), HearsEverything()])
    spec = diff(learn.loop_spec(), learn.loop_spec(cbs=[GradientClip()]))  # before fit() sets run back to True
    with learn.no_bar(), learn.no_logging():
        with learn.trace(max_calls=40, max_firings=40) as t:  # capped: the annotated loop gets notes
            learn.fit(1)
    return annotate(spec, t)


def _flat(text: str) -> str:
    return " ".join(text.split())


def _mermaid_text(chart: str) -> str:
    """What Mermaid shows: entity codes decoded, tags dropped."""
    decoded = re.sub(r"#(\d+);", lambda m: chr(int(m.group(1))), chart)
    return _flat(re.sub(r"<[^>]+>", " ", decoded))


def _svg_text(svg: str) -> str:
    root = ET.fromstring(svg)
    return _flat(" ".join(el.text or "" for el in root.iter("{http://www.w3.org/2000/svg}text")))


VIEWS = {
    "text": lambda spec, verbose: _flat(render_text(spec, verbose, width=100_000)),
    "rich": lambda spec, verbose: _flat(render_rich_text(spec, verbose, width=100_000)),
    "mermaid": lambda spec, verbose: _mermaid_text(render_mermaid(spec, verbose)),
    "graphviz": lambda spec, verbose: _svg_text(LoopDiagram(spec, verbose).svg()),
}


def _items(spec, verbose: bool) -> list[str]:
    """What every view must carry, read from the spec's data (not from any view's code)."""
    handlers = [h for e in [*spec.events(), *spec.custom_events] for h in e.handlers]
    items = [e.name for e in spec.custom_events]
    items += [c.cls for c in spec.callbacks]
    items += [e.timing.short() for e in spec.events() if e.timing]
    items += [spec.measured, spec.compared, *spec.notes]
    items += ["run=False"] if any(h.disabled for h in handlers) else []
    items += ["__call__"] if any(h.via == "call" for h in handlers) else []
    items += sorted({h.diff for h in handlers if h.diff})
    if verbose:
        items += sorted({f"skipped here: {h.skipped}" for h in handlers if h.skipped and not h.disabled})
        items += sorted({p.cancel.exception for top in spec.phases for p in [top, *top.phases()] if p.cancel})
    return items


def test_the_spec_has_every_kind_of_item(everything):
    handlers = [h for e in everything.events() for h in e.handlers]
    assert everything.custom_events and everything.notes and everything.measured and everything.compared
    assert {h.skipped for h in handlers} >= {"run=False", "run_train=False", "run_valid=False"}
    assert any(h.via == "call" for h in handlers) and any(h.diff == "added" for h in handlers)
    assert any(h.timing for h in handlers) and any(e.timing for e in everything.events())


@pytest.mark.parametrize("verbose", [False, True])
@pytest.mark.parametrize("view", list(VIEWS))
def test_every_view_carries_every_item(everything, view, verbose):
    if view == "graphviz" and not shutil.which("dot"):
        pytest.skip("needs Graphviz's dot to render the SVG a user sees")
    shown = VIEWS[view](everything, verbose)
    missing = [item for item in _items(everything, verbose) if _flat(item) not in shown]
    assert not missing, f"the {view} view (verbose={verbose}) leaves out: {missing}"


def test_compact_views_leave_out_handlers_skipped_here(everything):
    """Compact views list only what runs (or is switched off); the skipped reasons are for verbose views."""
    for view in VIEWS:
        if view == "graphviz" and not shutil.which("dot"):
            continue
        assert "skipped here: run_valid=False" not in VIEWS[view](everything, False), view


def test_dot_source_escapes_the_footer(everything):
    source = LoopDiagram(everything).source
    assert html.escape(everything.notes[0][:20]).replace("×", "&#215;") in source or everything.notes[0][:20] in source


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_the_official_mermaid_parser_accepts_custom_events_and_footers(everything, tmp_path):
    from tests.test_render_mermaid import CHECKER, official_parse

    assert (CHECKER / "node_modules" / "mermaid").exists(), "run ./setup.sh --dev to install the Mermaid parser"
    texts = {"compact": render_mermaid(everything), "verbose": render_mermaid(everything, verbose=True)}
    out = official_parse(tmp_path, texts)
    assert out.count("OK ") == len(texts), out
