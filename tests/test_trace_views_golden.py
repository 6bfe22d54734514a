"""What users read of a timed trace, pinned: a real fastai fit traced on an injected clock that advances 1 µs per
reading, so every figure is the same on every run and machine, and its views are compared with golden files.

A change of format or of a figure is then a reviewed diff (`pytest --update-golden`). The views: the text summary
with every row, the HTML report's tables, and the diagram annotated with the trace (as DOT). Capped, the same fit
pins what the views say of figures from the aggregates past the cap ('approx.').
"""
from __future__ import annotations

import itertools
import re

import pytest
from fastai.test_utils import synth_learner

from loopviz.adapters.fastai.tracer import TraceSession
from loopviz.trace.display import as_text, trace_tables

STEP_NS = 1_000  # each reading of the injected clock is 1 µs after the one before


def traced(max_firings: int = 250_000):
    """A real fit of fastai's synthetic learner (16 training and 8 validation samples, batches of 16), traced on a
    clock that counts 1 µs per reading."""
    learn = synth_learner(n_trn=16, n_val=8)
    clock = itertools.count(0, STEP_NS)
    with learn.no_logging(), TraceSession(learn, now=clock.__next__, max_firings=max_firings) as t:
        learn.fit(1)
    return learn, t


# what recording costs, as a trace measures it when first read (a test clock's trace measures nothing: the capped
# fit's views say so); pinned here so that the views' line for a measured cost is pinned too
COST = {"per_firing_ns": 2500.0, "per_call_ns": 1000.0, "per_event_ns": 10000.0, "per_handler_ns": 20000.0,
        "batches": 25.0, "rounds": 5.0}


@pytest.fixture(scope="module")
def fit():
    learn, t = traced()
    t.meta["tracing_cost"] = dict(COST)
    return learn, t


@pytest.fixture(scope="module")
def capped():
    return traced(max_firings=40)


def html_tables(page: str) -> str:
    """The report's sortable tables, one per line, without the page around them (its diagram is dot's SVG)."""
    return "\n".join(re.findall(r'<table class="sortable".*?</table>', page, flags=re.S))


def test_the_injected_clock_makes_a_trace_repeatable(fit):
    _, again = traced()
    assert fit[1].summary().equals(again.summary())
    assert fit[1].by_callback().equals(again.by_callback())


def test_the_text_summary_is_pinned(fit, golden):
    golden("timed_summary.txt", as_text(trace_tables(fit[1], limit=None, callbacks=None), width=140))


def test_the_capped_text_summary_is_pinned(capped, golden):
    text = as_text(trace_tables(capped[1], limit=None, callbacks=None), width=140)
    assert "approx." in text
    golden("timed_summary_capped.txt", text)


def test_the_html_tables_are_pinned(fit, tmp_path, golden):
    page = fit[1].to_html(tmp_path / "report.html").read_text(encoding="utf-8")
    golden("timed_report_tables.html", html_tables(page))


def test_the_capped_html_tables_are_pinned(capped, tmp_path, golden):
    page = capped[1].to_html(tmp_path / "report.html").read_text(encoding="utf-8")
    golden("timed_report_tables_capped.html", html_tables(page))


def test_the_annotated_diagram_is_pinned(fit, golden):
    learn, t = fit
    golden("timed_annotated.gv", learn.show_training_loop(fmt="graphviz", trace=t).source)
