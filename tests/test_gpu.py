"""Traced fits of a model on a CUDA device: device clocks, the device timeline, and torch.profiler's kernels.

Skipped without CUDA. The model (tests/gpu_fits.py: four Linear(4096, 4096), batches of 1024, fp32) makes
forward and backward a few ms each on an H100, so kernel launch latency (µs) is a small part of what the
clocks are compared on. About 20 s on an H100, most of it CUDA and cuBLAS start-up.
"""
from __future__ import annotations

import statistics
import warnings

import pytest
import torch

from tests.gpu_fits import device_figures, mlp_learner, per_batch_ms, quiet, timeline_vs_wall, traced_fit

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

WARMUP = 4  # batches left out of per-batch medians (allocator, cuBLAS heuristics)
N_TRAIN = WARMUP + 20


@pytest.fixture(scope="module")
def fits():
    """The same learner fitted once untraced (warm-up), then traced with clock='cuda' and with clock='sync'."""
    learn = mlp_learner("cuda", n_train=N_TRAIN, n_valid=2)
    with quiet(learn):
        learn.fit(1)
    return {clock: traced_fit(learn, "cuda", clock=clock) for clock in ("cuda", "sync")}


@pytest.mark.parametrize("clock", ["cuda", "sync"])
def test_every_firing_has_device_times_in_order(fits, clock):
    t = fits[clock]
    figures = device_figures(t)
    assert t.clock == clock and figures["firings"] > 8 * N_TRAIN
    assert figures["missing"] == 0, figures  # every firing got both device times
    assert figures["negative"] == 0 and figures["end_before_start"] == 0, figures
    # one stream: the events' device times are in the order they were recorded, so no work is negative
    assert figures["out_of_order"] == 0 and figures["negative_work"] == 0, figures


@pytest.mark.parametrize("clock", ["cuda", "sync"])
def test_the_device_timeline_adds_up_to_the_wall_time(fits, clock):
    """Firings and the work between them tile the fit on the device clock; with the loop's setup and cleanup (host)
    they make its wall time. They can differ by where the device clock is anchored to the host's: the first event,
    on an idle device (the fit starts after a synchronize), is a launch latency (µs) behind; the last one is at most
    as far behind as the device lags the host at after_fit, which is ~0 because fastai's Recorder reads the epoch's
    losses (a sync) in after_epoch; and the two clocks' rates differ by parts per million. So the tolerance, 2 ms or
    5 % of the fit, leaves room for scheduling noise and still catches a device clock that is off by a batch."""
    r = timeline_vs_wall(fits[clock])
    assert abs(r["extent_ms"] - r["device_span_ms"]) < 1e-3, r  # one loop, its firings in order: they tile it exactly
    assert abs(r["difference_ms"]) <= max(2.0, 0.05 * r["wall_ms"]), r


@pytest.mark.parametrize("work", ["forward", "backward"])
def test_sync_and_cuda_clocks_agree_on_forward_and_backward(fits, work):
    """The median per batch of the same work, by a clock that stalls at every event and by one that does not. Sync
    adds the launch of the work's first kernel on an idle device (tens of µs) to each, hence 10 %."""
    sync = statistics.median(per_batch_ms(fits["sync"], work, skip=WARMUP))
    cuda = statistics.median(per_batch_ms(fits["cuda"], work, skip=WARMUP))
    assert len(per_batch_ms(fits["cuda"], work, skip=WARMUP)) == N_TRAIN - WARMUP
    assert sync >= 0.5, f"{work} takes {sync:.3f} ms per batch: too short to compare clocks on; use a bigger model"
    assert abs(cuda / sync - 1) <= 0.10, f"{work}: {cuda:.3f} ms per batch by cuda events, {sync:.3f} ms by sync"


def test_profiler_sees_fastai_ranges_and_kernels_inside_loopviz_forward_work(tmp_path):
    """ranges=True inside a CPU+CUDA torch.profiler: the profiler holds loopviz's ranges and the kernels, and the
    merged timeline puts the kernels launched during each forward (its host range) inside that forward's device span."""
    from torch.profiler import ProfilerActivity, profile

    from loopviz.trace.profiler import merged_with_profiler, profiler_events

    learn = mlp_learner("cuda", n_train=6, n_valid=1)
    with quiet(learn):
        learn.fit(1)  # warm-up, outside the profiler
        torch.cuda.synchronize()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof, \
                    learn.trace(clock="cuda", ranges=True) as t:
                learn.fit(1)
    exported = tmp_path / "kineto.json"
    prof.export_chrome_trace(str(exported))  # a profile exports once: both readers read the file
    events = profiler_events(exported)["traceEvents"]
    names = {e.get("name") for e in events if e.get("cat") == "user_annotation"}
    assert {"fastai before_batch (train)", "fastai after_pred (train)", "fastai forward",
            "fastai Recorder.after_batch"} <= names
    assert any(e.get("cat") == "kernel" for e in events), "no CUDA kernel in the profiler trace"

    merged = merged_with_profiler(t, exported)
    assert "event ranges (ranges=True)" in merged["otherData"]["profiler"]["placed by"]
    spans = [e for e in merged["traceEvents"] if e.get("ph") == "X"]
    forward = sorted((e for e in spans if e.get("cat") == "work" and e["name"] == "forward"), key=lambda e: e["ts"])
    launched = sorted((e for e in spans if e.get("cat") == "user_annotation"
                       and e["name"] == "fastai forward"), key=lambda e: e["ts"])
    assert len(forward) == len(launched) == 7  # 6 training batches and 1 validation batch
    kernels = {e["args"]["correlation"]: e for e in spans
               if e.get("cat") == "kernel" and e.get("args", {}).get("correlation") is not None}
    runtime = [e for e in spans if e.get("cat") in ("cuda_runtime", "cuda_driver")  # launches, by correlation id
               and e.get("args", {}).get("correlation") in kernels]
    tolerance = 250.0  # µs: the clocks are lined up to a few µs (ranges, CUPTI, the device clock's anchor)
    for device_span, host_range in zip(forward, launched):
        mine = [kernels[r["args"]["correlation"]] for r in runtime
                if host_range["ts"] <= r["ts"] <= host_range["ts"] + host_range["dur"]]
        assert len(mine) >= 3, f"{len(mine)} kernels launched in the forward at {host_range['ts']:.0f} µs"
        start, end = device_span["ts"], device_span["ts"] + device_span["dur"]
        early = max(start - k["ts"] for k in mine)
        late = max(k["ts"] + k.get("dur", 0) - end for k in mine)
        assert early <= tolerance and late <= tolerance, (
            f"forward at {start:.0f}-{end:.0f} µs: its kernels start up to {early:.0f} µs before it and end up to "
            f"{late:.0f} µs after it")


def test_the_stream_recorder_records_on_the_current_stream():
    """Events recorded through loopviz's recorder land on the stream current at the time: one behind a side
    stream's long work is not reached while the idle default stream's is."""
    from loopviz.trace.clock import stream_recorder

    record = stream_recorder(torch)
    side = torch.cuda.Stream()
    a = torch.randn(8192, 8192, device="cuda")
    torch.cuda.synchronize()
    with torch.cuda.stream(side):
        for _ in range(20):
            a @ a  # about half a second of work on the side stream
        behind = torch.cuda.Event()
        record(behind)
    idle = torch.cuda.Event()
    record(idle)
    idle.synchronize()
    assert not behind.query()
    behind.synchronize()
