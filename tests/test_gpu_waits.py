"""learn.trace(waits=True) on a real CUDA device, checked against what the synchronising call itself measured.

Skipped without CUDA (tests/test_trace_waits.py checks the same logic with a fake GPU everywhere). A callback reads
the loss with `.item()` after every training batch, before fastai's Recorder (which moves the loss to the CPU, a
synchronisation of its own), and times that `.item()` with the host clock: the truth loopviz's wait must match.
"""
from __future__ import annotations

import warnings
from time import perf_counter_ns

import pytest
import torch
from fastai.callback.core import Callback

from tests.gpu_fits import mlp_learner, quiet

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

N_TRAIN = 12


class ReadsLossFirst(Callback):
    """Reads the loss on the host after each training batch, timing how long `.item()` blocked."""

    order = 40  # before Recorder (50)

    def __init__(self):
        self.blocked: list[int] = []

    def after_batch(self):
        if self.training:
            start = perf_counter_ns()
            self.learn.loss.item()
            self.blocked.append(perf_counter_ns() - start)


def test_the_wait_charged_to_a_callback_is_what_its_item_blocked():
    learn = mlp_learner("cuda", n_train=N_TRAIN, n_valid=2)
    reader = ReadsLossFirst()
    learn.add_cb(reader)
    with quiet(learn):
        learn.fit(1)  # warm-up: cuBLAS, the allocator
        reader.blocked.clear()
        torch.cuda.synchronize()
        show = warnings.showwarning
        with learn.trace(waits=True) as t:
            learn.fit(1)
    assert torch.cuda.get_sync_debug_mode() == 0 and warnings.showwarning is show
    waits = t.gpu_waits()
    print(waits.to_string())
    row = waits[(waits["name"] == "ReadsLossFirst.after_batch") & (waits["phase"] == "train")].iloc[0]
    assert row["calls"] == row["of"] == row["syncs"] == N_TRAIN
    blocked_ms = sum(reader.blocked) / 1e6
    assert blocked_ms / N_TRAIN > 0.5, f"the GPU had {blocked_ms / N_TRAIN:.3f} ms queued per batch: too little to test"
    # loopviz's wait starts as the call begins, a few µs before the callback's own clock; .item() returns a few µs
    # after the GPU finished: per call they differ by tens of µs
    assert abs(row["wait_ms"] - blocked_ms) <= 0.05 * blocked_ms + 0.1 * N_TRAIN, (row["wait_ms"], blocked_ms)
    assert row["site"].startswith("tests/test_gpu_waits.py:") and row["site"].endswith("in after_batch")


def test_a_fit_that_raises_with_waits_leaves_torch_as_it_was():
    class Boom(Callback):
        order = 90

        def after_batch(self):
            raise RuntimeError("boom")

    learn = mlp_learner("cuda", width=256, depth=2, bs=64, n_train=3, n_valid=1)
    learn.add_cb(Boom())
    show = warnings.showwarning
    with quiet(learn), pytest.raises(RuntimeError, match="boom"), learn.trace(waits=True):
        learn.fit(1)
    assert torch.cuda.get_sync_debug_mode() == 0 and warnings.showwarning is show
