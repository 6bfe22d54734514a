"""The text view: fastai's shape in compact mode, golden files for compact and verbose output."""
from __future__ import annotations

import io
from contextlib import redirect_stdout

import pytest
from fastai.callback.all import (
    EarlyStoppingCallback, GradientClip, MixedPrecision, ParamScheduler, SaveModelCallback, SchedCos,
)
from fastai.test_utils import synth_learner

from loopviz import render_text
from tests.callbacks import Tricky, TrainOnlyCallback


def realistic(tmp_path):
    learn = synth_learner(path=tmp_path, cbs=[GradientClip(), SaveModelCallback(), EarlyStoppingCallback(), MixedPrecision()])
    return learn, [ParamScheduler({"lr": SchedCos(1e-3, 1e-5)})]


def fastai_output(learn) -> list[str]:
    out = io.StringIO()
    with redirect_stdout(out):
        learn._orig_show_training_loop()
    return out.getvalue().splitlines()


def test_compact_keeps_every_line_of_fastais_output_in_order(learn):
    """fastai's lines, same text and indentation, in the same order; one deliberate change:
    after_cancel_epoch/after_epoch fire once per epoch, so they stay inside the Epoch Loop block."""
    per_epoch = ("- after_cancel_epoch:", "- after_epoch ")
    ours = str(learn.show_training_loop()).splitlines()
    theirs = [line for line in fastai_output(learn) if "CBs same as train batch" not in line]
    epoch_block = ours[ours.index("  Start Epoch Loop"):ours.index("  End Epoch Loop")]
    assert [line.strip() for line in theirs if line.lstrip().startswith(per_epoch)] == [
        line.strip() for line in epoch_block if line.lstrip().startswith(per_epoch)]
    theirs = [line for line in theirs if not line.lstrip().startswith(per_epoch)]
    position = 0
    for line in theirs:
        assert line in ours[position:], f"fastai's line {line!r} is missing or out of order"
        position = ours.index(line, position) + 1


def test_compact_adds_what_fastai_leaves_out(learn):
    ours = str(learn.show_training_loop())
    for name in ("after_create", "after_backward", "after_cancel_backward", "after_cancel_step"):
        assert f" - {name}" in ours
    assert "CBs same as train batch" not in ours
    valid = ours[ours.index("Start Valid"):ours.index("End Valid")]
    assert " - after_batch    : [Recorder, ProgressCallback]" in valid
    assert "before_backward" not in valid and "before_step" not in valid


def test_show_training_loop_prints_the_text_it_returns(learn, capsys):
    view = learn.show_training_loop(verbose=True)
    assert capsys.readouterr().out == str(view) + "\n"
    assert view == learn.show_training_loop(verbose=True)
    assert view != learn.show_training_loop()
    assert view.spec.loop == "fit"
    assert repr(view).startswith("<LoopView: fit loop, 24 events")


def test_golden_compact_default(learn, golden):
    golden("compact_default.txt", render_text(learn.loop_spec()))


def test_golden_verbose_default(learn, golden):
    golden("verbose_default.txt", render_text(learn.loop_spec(), verbose=True))


def test_golden_compact_realistic(tmp_path, golden):
    learn, extra = realistic(tmp_path)
    golden("compact_realistic.txt", render_text(learn.loop_spec(cbs=extra + [TrainOnlyCallback()])))


def test_golden_verbose_realistic(tmp_path, golden):
    learn, extra = realistic(tmp_path)
    golden("verbose_realistic.txt", render_text(learn.loop_spec(cbs=extra), verbose=True))


@pytest.mark.parametrize("loop", ["validate", "get_preds", "lr_find", "fit_one_cycle", "fine_tune"])
def test_golden_other_loops(learn, golden, loop):
    golden(f"compact_{loop}.txt", render_text(learn.loop_spec(loop=loop)))


def test_docstrings_print_intact_and_wrap_to_width(learn):
    text = render_text(learn.loop_spec(cbs=[Tricky()]), verbose=True, width=60)
    assert "Multiline doc" in text and "with [markup] and <tags>" in text
    assert "<script>alert(1)</script>" in text
    assert max(len(line) for line in text.splitlines()) <= 60
