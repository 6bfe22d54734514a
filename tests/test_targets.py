"""loopviz.show / loopviz.tracing / loopviz.spec_of: one entry point for every loop, through its adapter."""
from __future__ import annotations

import importlib

import pytest
from fastai.test_utils import synth_learner

import loopviz
from loopviz.adapters import ADAPTERS, Adapter
from loopviz.errors import LoopvizError
from loopviz.view import LoopView
from tests.test_generic_loops import miniai_learner


def test_show_draws_a_fastai_learner_as_its_own_method_does(tmp_path, capsys):
    learn = synth_learner(path=tmp_path)
    view = loopviz.show(learn, verbose=True)
    assert isinstance(view, LoopView) and str(view) == str(learn.show_training_loop(verbose=True))
    assert loopviz.spec_of(learn, "validate").loop == "validate"
    assert "digraph" in loopviz.show(learn, fmt="graphviz").source


def test_tracing_a_fastai_learner_is_learn_trace(tmp_path):
    learn = synth_learner(n_trn=2, n_val=1, path=tmp_path)
    with learn.no_bar(), learn.no_logging(), loopviz.tracing(learn, changes=True) as t:
        learn.fit(1)
    assert t.tracked_changes and t.framework.startswith("fastai") and t.n_firings > 10


def test_show_and_tracing_work_on_a_miniai_style_learner():
    learn = miniai_learner()
    assert "before_fit" in str(loopviz.show(learn))
    with loopviz.tracing(learn) as t:
        learn.fit(1)
    assert t.n_firings > 0


def test_an_object_no_adapter_knows_is_named():
    with pytest.raises(LoopvizError, match=r"no adapter for a int: it shows and traces a fastai Learner, .* or a "
                                           r"Lightning Trainer or LightningModule"):
        loopviz.show(3)
    with pytest.raises(LoopvizError, match="no adapter for a str"):
        loopviz.tracing("learn")


def test_bad_view_options_fail_before_the_spec_is_built(tmp_path):
    with pytest.raises(LoopvizError, match="fmt='jpeg' is not a view"):
        loopviz.show(synth_learner(path=tmp_path), fmt="jpeg")


def test_a_missing_framework_says_what_to_install(monkeypatch):
    real = importlib.import_module

    def without_transformers(name, *args):
        if name == "loopviz.adapters.transformers":
            raise ModuleNotFoundError("No module named 'transformers'", name="transformers")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", without_transformers)
    adapter = next(a for a in ADAPTERS if a.name == "transformers")
    with pytest.raises(LoopvizError, match=r"needs 'transformers', which is not installed: "
                                           r"pip install 'loopviz\[transformers\]'"):
        adapter.load()
    with pytest.raises(ModuleNotFoundError):  # loopviz's own modules missing is a bug, not an install to make
        Adapter("x", "x", lambda obj: False, "loopviz.no_such_module", "x").load()


def test_show_takes_a_trace_of_the_loop_it_shows(tmp_path):
    learn = synth_learner(n_trn=4, n_val=2, path=tmp_path)
    with learn.no_bar(), learn.no_logging(), loopviz.tracing(learn) as t:
        learn.validate()
    view = loopviz.show(learn, trace=t)  # the loop the trace ran, as learn.show_training_loop(trace=t) draws it
    assert view.spec.loop == "validate" and str(view) == str(learn.show_training_loop(trace=t))
    assert view.spec.event("before_batch", mode="valid").timing.count == len(learn.dls.valid)
    with pytest.raises(LoopvizError, match="this trace ran 'validate'; the view asks for 'fit': pass loop='validate'"):
        loopviz.show(learn, loop="fit", trace=t)
    with pytest.raises(LoopvizError, match="trace"):
        loopviz.show(learn, trace="t.json")


def test_model_is_refused_for_a_target_that_holds_its_own(learn) -> None:
    from loopviz.errors import LoopvizError
    from loopviz.targets import spec_of

    with pytest.raises(LoopvizError, match="model= is for a trainer that runs a model it does not hold yet"):
        spec_of(learn, model=object())
