"""Specs shared by the view tests: a realistic learner and one with hostile docstrings."""
from __future__ import annotations

from fastai.callback.all import (
    EarlyStoppingCallback, GradientClip, MixedPrecision, ParamScheduler, SaveModelCallback, SchedCos,
)
from fastai.test_utils import synth_learner

from tests.callbacks import Tricky


def realistic_spec(tmp_path, **kwargs):
    """synth_learner + GradientClip, SaveModelCallback, EarlyStopping, MixedPrecision, fit_one_cycle's ParamScheduler."""
    learn = synth_learner(path=tmp_path, cbs=[GradientClip(), SaveModelCallback(), EarlyStoppingCallback(), MixedPrecision()])
    return learn.loop_spec(cbs=[ParamScheduler({"lr": SchedCos(1e-3, 1e-5)})], **kwargs)


def tricky_spec(tmp_path):
    """A loop whose callback docs carry markup, HTML, quotes, braces, pipes, backslashes and non-ASCII."""
    return synth_learner(path=tmp_path).loop_spec(cbs=[Tricky()])


HOSTILE = ['[mixup]', '<b>bold</b>', '& "quotes"', '{braces}', '| pipe', '\\ backslash', 'ünïcode', '<script>alert(1)</script>']
