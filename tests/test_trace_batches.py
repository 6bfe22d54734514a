"""Per-batch charts for every loop: the adapter says which events open and close a batch (fastai's before_batch and
after_batch; a Hugging Face Trainer's on_step_begin and on_step_end; Lightning's on_train_batch_start and
on_train_batch_end), and the trace file keeps it."""
from __future__ import annotations

import re
import shutil

import pytest

import loopviz
from loopviz.errors import LoopvizError
from loopviz.trace.batches import batch_events, loop_batches
from loopviz.trace.trace import Trace
from tests import hf_fixtures, lightning_fixtures

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="the HTML report draws its loop with Graphviz's dot")


@pytest.fixture(scope="module")
def hf_trace(tmp_path_factory):
    trainer = hf_fixtures.tiny_trainer(tmp_path_factory.mktemp("hf"), gradient_accumulation_steps=2, n_train=24)
    with loopviz.tracing(trainer) as t:
        trainer.train()
    return t


@pytest.fixture(scope="module")
def lightning_trace(tmp_path_factory):
    lightning_fixtures.quiet_lightning()
    trainer = lightning_fixtures.trainer(tmp_path_factory.mktemp("pl"))
    with loopviz.tracing(trainer) as t:
        trainer.fit(lightning_fixtures.TinyModule(), lightning_fixtures.loader(), lightning_fixtures.loader(8))
    return t


def test_a_trainer_step_is_a_batch(hf_trace):
    assert batch_events(hf_trace.data) == ("on_step_begin", "on_step_end")
    table = loop_batches(hf_trace.data, 0).table
    # 24 examples in batches of 4, two micro-batches a step: 3 steps, each with its forward and backward work
    assert len(table) == 3 and (table["forward+backward"] > 0).all() and (table["optimizer step"] > 0).all()


def test_a_lightning_training_batch_is_a_batch(lightning_trace):
    assert batch_events(lightning_trace.data) == ("on_train_batch_start", "on_train_batch_end")
    table = loop_batches(lightning_trace.data, 0).table
    assert len(table) == 8 and list(table["epoch"]) == [0] * 4 + [1] * 4  # 2 epochs of limit_train_batches=4
    assert (table["optimizer_step"] > 0).all()  # training_step, backward and the step run inside it


@needs_dot
@pytest.mark.parametrize("which", ["hf_trace", "lightning_trace"])
def test_the_html_report_has_per_batch_charts_for_other_loops(which, request, tmp_path):
    t = request.getfixturevalue(which)
    page = t.to_html(tmp_path / "fit.html").read_text(encoding="utf-8")
    assert {"Time per training batch: loop 0", "The slowest training batch of loop 0"} <= set(
        re.findall(r"<h2>([^<]*)</h2>", page))


def test_the_batch_events_survive_a_file_and_a_select(hf_trace, tmp_path):
    back = Trace.load(hf_trace.save(tmp_path / "t.json"))
    assert batch_events(back.data) == batch_events(hf_trace.select(0).data) == ("on_step_begin", "on_step_end")


def test_a_fastai_trace_keeps_fastais_batch_events(tmp_path):
    from fastai.test_utils import synth_learner

    learn = synth_learner(n_trn=2, n_val=1, path=tmp_path)
    with learn.no_bar(), learn.no_logging(), learn.trace() as t:
        learn.fit(1)
    # the adapter names its batch events, as every adapter does (the default is for files written before)
    assert t.meta["batch_events"] == ["before_batch", "after_batch"]
    assert batch_events(t.data) == ("before_batch", "after_batch")


@pytest.mark.parametrize("value", [["on_step_begin"], ["a", 3], "ab"])
def test_bad_batch_events_in_a_file_are_named(hf_trace, value):
    data = hf_trace.to_json()
    data["meta"]["batch_events"] = value
    with pytest.raises(LoopvizError, match="field 'meta' entry 'batch_events'"):
        Trace.from_json(data)
