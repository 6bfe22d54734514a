"""The Hugging Face Trainer and Lightning traces on a CUDA device, with the cuda clock: every firing has device
times and the events and the work between them add up to the run. Skipped without CUDA."""
from __future__ import annotations

import pytest
import torch

import loopviz

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def assert_on_the_gpu_timeline(t) -> None:
    f = t.firings_df()
    assert t.clock == "cuda" and len(f) > 10
    assert ((f["dev_start"] >= 0) & (f["dev_end"] >= f["dev_start"])).all(), f[f["dev_start"] < 0].head()
    summary = t.summary()
    assert summary[summary["kind"].isin(["event", "work"])]["pct"].sum() == pytest.approx(100, abs=1.0)


def test_a_trainer_on_the_gpu(tmp_path):
    from tests.hf_fixtures import tiny_trainer

    trainer = tiny_trainer(tmp_path, use_cpu=False, gradient_accumulation_steps=2, n_train=32)
    assert trainer.model.device.type == "cuda"
    with loopviz.tracing(trainer) as t:  # clock 'auto': the model is on the GPU
        trainer.train()
    assert_on_the_gpu_timeline(t)


def test_a_lightning_fit_on_the_gpu(tmp_path):
    from tests import lightning_fixtures as lf

    lf.quiet_lightning()
    trainer = lf.trainer(tmp_path, accelerator="gpu")
    with loopviz.tracing(trainer, clock="cuda") as t:
        trainer.fit(lf.TinyModule(), lf.loader(), lf.loader(8))
    assert_on_the_gpu_timeline(t)
