"""The clock modes' logic, through the clock interface, with fake CUDA events (no GPU here)."""
from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from loopviz.trace.clock import CudaEventClock, HostClock, SyncClock
from loopviz.trace.record import Recorder
from loopviz.trace.trace import Trace


class FakeGPU:
    """A device whose timeline is set by the test: each event records the device's current time."""

    def __init__(self):
        self.now_ms = 0.0
        self.syncs = 0
        self.records = 0

    def event(self):
        gpu = self

        class Event:
            def record(self):
                gpu.records += 1
                self.t = gpu.now_ms

            def synchronize(self):
                gpu.syncs += 1

            def elapsed_time(self, other):
                return other.t - self.t

        return Event()

    def synchronize(self):
        self.syncs += 1


def fake_host(step: int = 1000):
    counter = itertools.count(0, step)
    return lambda: next(counter)


def test_host_clock_reads_now():
    clock = HostClock(fake_host(5))
    assert [clock.mark(), clock.mark()] == [0, 5] and clock.drain() == [] and not clock.deferred


def test_sync_clock_synchronizes_at_every_boundary():
    gpu = FakeGPU()
    clock = SyncClock(gpu.synchronize, fake_host())
    marks = [clock.mark() for _ in range(3)]
    assert marks == [0, 1000, 2000] and gpu.syncs == 3


def test_cuda_clock_records_without_waiting_and_resolves_in_one_wait():
    gpu = FakeGPU()
    clock = CudaEventClock(gpu.event, fake_host())
    for t in (0.0, 1.5, 4.0):
        gpu.now_ms = t
        assert clock.mark() == -1
    assert gpu.syncs == 0  # recording never waits
    assert clock.drain() == [0, 1_500_000, 4_000_000]
    assert gpu.syncs == 1
    gpu.now_ms = 10.0
    clock.mark()
    assert clock.drain() == [10_000_000] and gpu.syncs == 2
    assert len(clock.pool) == 3  # events are reused after a drain


def test_recorder_puts_gpu_times_on_firings_and_work_uses_them():
    gpu = FakeGPU()
    rec = Recorder(CudaEventClock(gpu.event, fake_host()))
    trace = Trace.recording(rec)
    rec.begin_loop("fit")
    # host-side the events are instant; on the GPU, 'forward' between them takes 3 ms
    gpu.now_ms = 0.0
    a = rec.begin_firing("before_batch", 1, 0, 0)
    rec.end_firing(a, 0)
    gpu.now_ms = 3.0
    b = rec.begin_firing("after_pred", 1, 0, 0)
    gpu.now_ms = 3.5
    rec.end_firing(b, 0)
    trace.finish("test", {("before_batch", "after_pred"): "forward"})
    work = trace.work_df().query("after != ''")  # the work between the two events, not the loop's setup
    assert list(work["work"]) == ["forward"]
    assert work["dur"].iloc[0] == 3_000_000
    firings = trace.firings_df()
    assert list(firings["dev_end"] - firings["dev_start"]) == [0, 500_000]
    assert gpu.syncs == 1 and "cuda" in trace.notes()[0]


def test_cuda_clock_drains_in_batches_not_per_event():
    gpu = FakeGPU()
    rec = Recorder(CudaEventClock(gpu.event, fake_host()))
    rec.begin_loop("fit")
    for i in range(5000):
        index = rec.begin_firing("after_batch", 1, 0, i)
        rec.end_firing(index, 0)
    assert gpu.syncs == 2  # 10,000 boundaries, one wait per 4,096


def test_the_stream_recorder_builds_a_stream_only_when_the_current_one_changes():
    from types import SimpleNamespace

    from loopviz.trace.clock import stream_recorder

    current = {"stream": (3, 0, 1)}
    built, recorded = [], []

    def current_stream():
        built.append(current["stream"])
        return f"Stream{current['stream']}"

    fake = SimpleNamespace(
        _C=SimpleNamespace(_cuda_getCurrentStream=lambda device: current["stream"], _cuda_getDevice=lambda: 0,
                           _CudaEventBase=SimpleNamespace(record=lambda event, stream: recorded.append((event, stream)))),
        cuda=SimpleNamespace(current_stream=current_stream))
    record = stream_recorder(fake)
    record("a"), record("b")
    current["stream"] = (5, 0, 1)  # `with torch.cuda.stream(side):`
    record("c")
    assert recorded == [("a", "Stream(3, 0, 1)"), ("b", "Stream(3, 0, 1)"), ("c", "Stream(5, 0, 1)")]
    assert built == [(3, 0, 1), (5, 0, 1)]


def test_the_stream_recorder_falls_back_to_event_record_without_torchs_calls():
    from types import SimpleNamespace

    from loopviz.trace.clock import stream_recorder

    gpu = FakeGPU()
    event = gpu.event()
    stream_recorder(SimpleNamespace(_C=SimpleNamespace()))(event)
    assert gpu.records == 1


H100_TRACE = Path(__file__).parent / "data" / "h100_waits_mlp.json.gz"


def test_on_the_gpu_timeline_events_and_work_add_up_to_the_run():
    """A trace recorded on an H100 with clock='cuda' (four Linear(4096) layers, fastai's usual callbacks), where
    Recorder.after_batch waits ~6 ms per batch on the host for the GPU's backward: on the host that wait is inside
    the after_batch event, on the GPU it is backward's time. Events and work are both taken on the GPU timeline, so
    the summary's rows add up to the run and each batch's stack to its span (with events on the host: 166 %)."""
    from loopviz.trace.batches import loop_batches

    t = Trace.load(H100_TRACE)
    summary = t.summary()
    assert summary[summary["kind"].isin(["event", "work"])]["pct"].sum() == pytest.approx(100, abs=0.5)
    after_batch = summary.query("kind == 'event' and name == 'after_batch' and phase == 'train'")["mean_ms"].iloc[0]
    assert after_batch < 1.0  # on the GPU: the host's ~6 ms wait is not in it
    batches = loop_batches(t.data, 0).table
    f = t.firings_df()
    opens = f[(f["event"] == "before_batch") & (f["phase"] == "train")]["dev_start"].to_numpy()
    closes = f[(f["event"] == "after_batch") & (f["phase"] == "train")]["dev_end"].to_numpy()
    # a batch's stack is the draw that led up to it, then its events and the work between them
    stacked = batches.drop(columns=["epoch", "iter", "draw"]).sum(axis=1).to_numpy()
    spans = (closes - opens) / 1e6
    assert len(stacked) == len(spans) == 40 and (batches["draw"] > 0).all()
    assert abs(stacked - spans).max() < 0.001 * spans.min()  # each batch's events and work tile its GPU span
