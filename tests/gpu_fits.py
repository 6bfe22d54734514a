"""Fits for GPU timing checks, on synthetic tensors made on the device (no downloads, no host-to-device copies),
and the figures the checks compare. Used by tests/test_gpu.py and benchmarks/gpu_check.py; everything here
also runs on the CPU (that is how it is tested on machines without CUDA).

Each DataLoader yields the same ready-made batch again and again (`bs=None`: fastai does not collate), so
the draw costs no device work and the forward, backward and step are the model's alone.
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

TRAIN = "train"


def batches_learner(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_func: Any, n_train: int,
                    n_valid: int, cbs: Any = None) -> Any:
    """A fastai Learner whose training and validation loaders yield (x, y) n_train and n_valid times."""
    from fastai.data.core import DataLoaders
    from fastai.data.load import DataLoader
    from fastai.learner import Learner
    from fastai.optimizer import SGD

    dls = DataLoaders(DataLoader([(x, y)] * n_train, bs=None), DataLoader([(x, y)] * n_valid, bs=None))
    return Learner(dls, model, loss_func=loss_func, opt_func=SGD, lr=1e-4, cbs=cbs)


def mlp_learner(device: str = "cuda", width: int = 4096, depth: int = 4, bs: int = 1024, n_train: int = 24,
                n_valid: int = 2) -> Any:
    """`depth` Linear(width, width) layers with ReLUs between, regression on batches of `bs`: at the defaults each
    layer's forward matmul is 34 GFLOP, about half a ms on an H100 in fp32, so forward and backward take a few ms
    each and kernel launch latency (µs) is a small part of them."""
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(width, width)] + ([nn.ReLU()] if i < depth - 1 else [])
    model = nn.Sequential(*layers).to(device)
    x = torch.randn(bs, width, device=device)
    y = torch.randn(bs, width, device=device)
    return batches_learner(model, x, y, nn.MSELoss(), n_train, n_valid)


def cnn_learner(device: str = "cuda", bs: int = 128, size: int = 64, n_train: int = 300, n_valid: int = 10,
                mixed_precision: bool = True) -> Any:
    """A small CNN (four conv layers, 10 classes) on 3 x size x size images, with fastai's MixedPrecision."""
    torch.manual_seed(0)

    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    model = nn.Sequential(*block(3, 32), *block(32, 64), *block(64, 128), *block(128, 256),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(256, 10)).to(device)
    x = torch.randn(bs, 3, size, size, device=device)
    y = torch.randint(0, 10, (bs,), device=device)
    cbs = None
    if mixed_precision:
        from fastai.callback.fp16 import MixedPrecision

        cbs = [MixedPrecision()]
    return batches_learner(model, x, y, nn.CrossEntropyLoss(), n_train, n_valid, cbs=cbs)


@contextlib.contextmanager
def quiet(learn: Any) -> Iterator[None]:
    """No progress bar (it reads the loss every batch, a device sync) and no logging; no warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with learn.no_bar(), learn.no_logging():
            yield


def synchronize(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def traced_fit(learn: Any, device: str, **trace: Any) -> Any:
    """One epoch traced with `learn.trace(**trace)`, the device idle at its start (so the device clock's anchor,
    taken at the first event, is not behind queued work); returns the trace."""
    with quiet(learn):
        synchronize(device)
        with learn.trace(**trace) as t:
            learn.fit(1)
    return t


def device_figures(trace: Any) -> dict[str, Any]:
    """What a device clock recorded: firings, those without device times, with a negative time or duration,
    starting before the previous firing at their level ended, and work between events of negative duration."""
    f = trace.firings_df()
    start, end = f["dev_start"].to_numpy(), f["dev_end"].to_numpy()
    top = f[f["parent"] == -1]
    ts, te = top["dev_start"].to_numpy(), top["dev_end"].to_numpy()
    work = trace.work_df()
    pairs = work[work["after"] != ""]  # not each loop's setup and cleanup (host time)
    return {
        "clock": trace.clock, "firings": int(len(f)),
        "missing": int(((start == -1) | (end == -1)).sum()),
        "negative": int(((start < -1) | (end < -1)).sum()),
        "end_before_start": int((end < start).sum()),
        "out_of_order": int((ts[1:] < te[:-1]).sum()) if len(top) > 1 else 0,
        "negative_work": int((pairs["dur"] < 0).sum()),
        "min_firing_us": float((end - start).min() / 1e3) if len(f) else 0.0,
    }


def timeline_vs_wall(trace: Any) -> dict[str, float]:
    """The fit as the device saw it against the host's wall time, in ms.

    The outermost loop's top-level firings and the work between consecutive ones tile the span from its first
    event to its last: on the device clock that span is the sum of their device durations. Add the loop's setup
    (entry point to first event) and cleanup (last event to return), host-timed, and it should be the fit's wall
    time (`total_ns`, host), give or take where the device clock is anchored to the host's.
    """
    f = trace.firings_df()
    top = f[f["parent"] == -1]
    start = top["dev_start"].where(top["dev_start"] >= 0, top["start"])  # host times where there are no device times
    end = top["dev_end"].where(top["dev_end"] >= 0, top["end"])
    firing_ns = int((end - start).sum())
    work = trace.work_df()
    between = work[(work["after"] != "") & ~work["nested"].astype(bool)]
    edges = work[work["after"] == ""]
    work_ns = int(between["dur"].sum())
    device_ns = firing_ns + work_ns
    wall_ns = trace.total_ns()
    edges_ns = int(edges["dur"].sum())
    return {"device_span_ms": device_ns / 1e6, "firings_ms": firing_ns / 1e6, "work_ms": work_ns / 1e6,
            "setup_cleanup_ms": edges_ns / 1e6, "wall_ms": wall_ns / 1e6,
            "difference_ms": (device_ns + edges_ns - wall_ns) / 1e6,
            "extent_ms": int(end.max() - start.min()) / 1e6 if len(top) else 0.0}


def per_batch_ms(trace: Any, work: str, skip: int = 0, phase: str = TRAIN) -> np.ndarray:
    """The duration (ms) of one kind of work (descriptions.WORK_BETWEEN's name: 'forward', 'backward'...) in each
    batch of `phase`, its first `skip` batches left out (warm-up)."""
    w = trace.work_df()
    w = w[(w["work"] == work) & (w["phase"] == phase) & ~w["nested"].astype(bool)]
    return w["dur"].to_numpy()[skip:] / 1e6
