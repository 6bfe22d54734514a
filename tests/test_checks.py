"""Wrong argument types at every public entry point: a LoopvizError that names the argument, never a raw
AttributeError or TypeError from inside loopviz, and never a silently wrong result."""
from __future__ import annotations

import pytest
from fastai.callback.all import GradientClip
from fastai.test_utils import synth_learner

import loopviz
from loopviz.errors import LoopvizError

WRONG = ["x", 123, ["fit"], 1.5, True, {"a": 1}, -1, object()]


@pytest.fixture(scope="module")
def learn():
    learn = synth_learner()
    if hasattr(learn, "progress"):
        learn.remove_cb(learn.progress)
    return learn


@pytest.fixture(scope="module")
def trace(learn):
    with learn.trace() as t:
        learn.fit(1)
    return t


def calls(learn, t):
    """(argument named in the error, the call) for every public entry point, each with one argument wrong."""
    spec = learn.loop_spec()
    return {
        "show_training_loop(trace=)": ("trace", lambda v: learn.show_training_loop(trace=v)),
        "show_training_loop(loop=)": ("loop", lambda v: learn.show_training_loop(loop=v)),
        "show_training_loop(width=)": ("width", lambda v: learn.show_training_loop(width=v)),
        "show_training_loop(fmt=)": ("fmt", lambda v: learn.show_training_loop(fmt=v)),
        "show_training_loop(verbose=)": ("verbose", lambda v: learn.show_training_loop(verbose=v)),
        "show_training_loop(hide_empty=)": ("hide_empty", lambda v: learn.show_training_loop(hide_empty=v)),
        "show_training_loop(focus=)": ("focus", lambda v: learn.show_training_loop(focus=v)),
        "show_training_loop(cbs=)": ("cbs", lambda v: learn.show_training_loop(cbs=v)),
        "show_training_loop(diff=)": ("diff", lambda v: learn.show_training_loop(diff=v)),
        "show_training_loop(start_epoch=)": ("start_epoch", lambda v: learn.show_training_loop(start_epoch=v)),
        "loop_spec(loop=)": ("loop", lambda v: learn.loop_spec(loop=v)),
        "trace(max_calls=)": ("max_calls", lambda v: learn.trace(max_calls=v)),
        "trace(max_firings=)": ("max_firings", lambda v: learn.trace(max_firings=v)),
        "trace(clock=)": ("clock", lambda v: learn.trace(clock=v)),
        "trace(changes=)": ("changes", lambda v: learn.trace(changes=v)),
        "trace(tensors=)": ("tensors", lambda v: learn.trace(tensors=v)),
        "Trace.select": ("loop", lambda v: t.select(v)),
        "Trace.who_changed": ("attribute", lambda v: t.who_changed(v)),
        "Trace.to_unix_ns": ("host_ns", lambda v: t.to_unix_ns(v)),
        "diff_traces(before)": ("before", lambda v: loopviz.diff_traces(v, t)),
        "diff_traces(after)": ("after", lambda v: loopviz.diff_traces(t, v)),
        "diff(b)": ("b", lambda v: loopviz.diff(spec, v)),
        "annotate(spec)": ("spec", lambda v: loopviz.annotate(v, t)),
        "annotate(trace)": ("trace", lambda v: loopviz.annotate(spec, v)),
        "show_loop(spec)": ("spec", lambda v: loopviz.show_loop(v)),
        "show_loop(fmt)": ("fmt", lambda v: loopviz.show_loop(spec, fmt=v)),
        "Loop(name)": ("name", lambda v: loopviz.Loop(v)),
        "Loop(framework)": ("framework", lambda v: loopviz.Loop("loop", v)),
        "Loop.event": ("name", lambda v: loopviz.Loop().event(v)),
        "Loop.work": ("name", lambda v: loopviz.Loop().work(v).__enter__()),
        "Loop.phase": ("name", lambda v: loopviz.Loop().phase(v)),
        "Loop.at": ("epoch", lambda v: loopviz.Loop().at(v)),
        "Loop.trace": ("max_calls", lambda v: loopviz.Loop().trace(max_calls=v).__enter__()),
        "render_text": ("spec", lambda v: loopviz.render_text(v)),
        "render_mermaid": ("spec", lambda v: loopviz.render_mermaid(v)),
        "rich_tree": ("spec", lambda v: loopviz.rich_tree(v)),
        "dot_graph": ("spec", lambda v: loopviz.dot_graph(v)),
        "LoopDiagram": ("spec", lambda v: loopviz.LoopDiagram(v)),
        "LoopDiagram.save": ("path", lambda v: learn.show_training_loop(fmt="graphviz").save(v)),
        "Trace.save": ("path", lambda v: t.save(v)),
    }


# Values a parameter takes (so they are not wrong for it), by the argument its error names.
ACCEPTS = {
    "loop": ("x",),  # a loop label: an error, but one about the label, tested below
    "Trace.select": (123, -1, "x", ["fit"]),  # labels and indices: errors about the loops, tested below
    "focus": ("x",),  # a callback name: an error naming the callbacks
    "fmt": (),
    "width": (123,),
    "start_epoch": (123,),
    "max_calls": (123,),
    "max_firings": (123,),
    "name": ("x",),
    "framework": ("x",),
    "epoch": (123, -1),
    "host_ns": (123, 1.5, -1),
    "attribute": ("x",),
    "path": ("x",),  # a file name: an error about its ending, or a file written  # any name: an error saying this trace recorded no changes
    **{flag: (True,) for flag in ("verbose", "hide_empty", "changes", "tensors")},
}


def wrong_cases():
    learn = synth_learner()
    names = calls(learn, None)
    for label, (argument, _) in names.items():
        accepted = ACCEPTS.get(label, ACCEPTS.get(argument, ()))
        for value in WRONG:
            if not any(value is ok or (type(value) is type(ok) and value == ok) for ok in accepted):
                yield pytest.param(label, value, id=f"{label}-{type(value).__name__}:{value!r}"[:60])


@pytest.mark.parametrize("label,value", list(wrong_cases()))
def test_a_wrong_argument_is_named_in_a_loopviz_error(learn, trace, label, value, capsys):
    argument, call = calls(learn, trace)[label]
    with pytest.raises(LoopvizError) as caught:
        call(value)
    message = str(caught.value)
    assert argument in message or (label == "Trace.select" and "loops" in message), message
    assert "\n" not in message and len(message) < 400


def test_the_reported_cases(learn, trace):
    with pytest.raises(LoopvizError, match="trace must be a Trace"):
        learn.show_training_loop(trace="x")
    with pytest.raises(LoopvizError, match=r"loop must be one of 'fit'.*not list \['fit'\]"):
        learn.show_training_loop(loop=["fit"])
    with pytest.raises(LoopvizError, match="width must be an integer, not str 'wide'"):
        learn.show_training_loop(width="wide")
    with pytest.raises(LoopvizError, match="max_calls must be an integer, not str '10'"):
        learn.trace(max_calls="10")
    with pytest.raises(LoopvizError, match="after must be a Trace"):
        loopviz.diff_traces(trace, "x")
    with pytest.raises(LoopvizError, match="diff must hold fastai Callback instances or classes; got str 'garbage'"):
        learn.show_training_loop(diff="garbage")
    with pytest.raises(LoopvizError, match="max_calls must be 0 or more, not -1"):
        with loopviz.Loop().trace(max_calls=-1):
            pass


def test_select_takes_one_label_or_index_and_names_the_loops_it_lacks(trace):
    assert trace.select("fit").n_firings == trace.select(["fit"]).n_firings == trace.select(0).n_firings > 0
    with pytest.raises(LoopvizError, match=r"this trace has no loop 'fti'; its loops are: 0 'fit'"):
        trace.select("fti")
    with pytest.raises(LoopvizError, match=r"this trace has no loop 7"):
        trace.select([7])
    with pytest.raises(LoopvizError, match=r"loops must hold loop labels \(str\) or indices \(int\), not float 1.5"):
        trace.select([1.5])


def test_unknown_view_options_name_what_exists(learn):
    with pytest.raises(LoopvizError, match="fmt='jpeg' is not a view loopviz has"):
        learn.show_training_loop(fmt="jpeg")
    with pytest.raises(LoopvizError, match="width must be 20 or more, not 5"):
        learn.show_training_loop(width=5)


def test_output_paths_are_checked_before_writing(trace, tmp_path):
    with pytest.raises(LoopvizError, match="the folder .*missing.* does not exist; create it first"):
        trace.save(tmp_path / "missing" / "t.json")
    with pytest.raises(LoopvizError, match="it is a folder"):
        trace.to_chrome(tmp_path)
    with pytest.raises(LoopvizError, match="path must be a file path"):
        trace.save(123)
    assert not (tmp_path / "missing").exists()
    assert trace.save(tmp_path / "t.json").stat().st_size > 0


def test_a_good_call_after_bad_ones_still_works(learn, trace, capsys):
    view = learn.show_training_loop(trace=trace, width=100)
    assert "before_fit" in str(view)
