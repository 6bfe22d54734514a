"""learn.trace(waits=True): who makes the host wait for the GPU, checked against a fake GPU that keeps its own
record of every wait (no GPU here; tests/test_gpu.py checks a real one on CUDA machines).

The fake GPU has a queue and a host clock: a launch adds work after what is queued, a synchronising operation
moves the host clock to the queue's end (that jump is the true wait, recorded with who made it) and then warns as
torch does in sync debug mode 'warn'. loopviz sees only the warnings and its CUDA events, as on a real GPU.
"""
from __future__ import annotations

import os
import shutil
import warnings

import pytest
import torch
from fastai.callback.core import Callback
from fastai.test_utils import synth_learner

import loopviz.adapters.fastai.tracer as tracer
from loopviz.errors import LoopvizError
from loopviz.trace.display import as_text, trace_tables
from loopviz.trace.trace import Trace
from loopviz.trace.waits import SYNC_MESSAGE, Device, WaitWatch

MS = 1_000_000


class FakeGPU:
    """A CUDA device as the watcher sees it, with the truth of every wait kept aside."""

    def __init__(self):
        self.host = 10 * MS  # the host clock (ns); it moves only when the host waits or works
        self.busy = 0  # when the GPU will have run everything queued
        self.mode = 0  # torch's sync debug mode
        self.truth: list[tuple[str, int]] = []  # (who synchronised, ns the host really waited)

    def launch(self, ms: float) -> None:
        self.busy = max(self.busy, self.host) + int(ms * MS)

    def work(self, ms: float) -> None:
        """Host work (Python) that does not wait for the GPU."""
        self.host += int(ms * MS)

    def block(self, who: str) -> None:
        """Wait for the queue to drain, and keep the truth of that wait."""
        waited = max(0, self.busy - self.host)
        self.host += waited
        self.truth.append((who, waited))

    def synchronize(self) -> None:  # torch.cuda.synchronize: waits, and torch does not warn
        self.host = max(self.host, self.busy)

    def event(self):
        gpu = self

        class Event:
            def record(self):
                self.t = max(gpu.busy, gpu.host)  # the GPU reaches it when what was queued before has run

            def query(self):
                return self.t <= gpu.host

            def elapsed_time(self, later):
                return (later.t - self.t) / MS

        return Event()

    def set_mode(self, mode):
        self.mode = mode

    def device(self) -> Device:
        return Device(self.event, self.synchronize, lambda: self.mode, self.set_mode, lambda: self.host)


# What `.item()` does, FakeGPU.sync(who): wait for the queue to drain, then warn as torch does in sync debug mode
# 'warn'. Its code belongs to a file inside torch, as torch's own Python (Tensor.__format__, say) would: loopviz names
# the first frame outside torch as where the synchronisation was asked for.
_TORCH_SIDE = f"""
def sync(gpu, who):
    gpu.block(who)
    if gpu.mode:
        warnings.warn({SYNC_MESSAGE + ' (Triggered internally at fake.cpp:1.)'!r}, UserWarning)
"""
_namespace = {"warnings": warnings}
exec(compile(_TORCH_SIDE, os.path.join(os.path.dirname(torch.__file__), "_fake_sync.py"), "exec"), _namespace)
FakeGPU.sync = _namespace["sync"]


class Forward(Callback):
    """Launches the model's GPU work: 4 ms of kernels per batch."""

    def __init__(self, gpu):
        self.gpu = gpu

    def after_pred(self):
        self.gpu.launch(4)


class ReadsLoss(Callback):
    """Reads the loss on the host after every training batch, as a progress bar does with `.item()`."""

    order = 60

    def __init__(self, gpu):
        self.gpu = gpu

    def after_batch(self):
        if self.training:
            self.gpu.sync("ReadsLoss.after_batch")


@pytest.fixture
def gpu(monkeypatch):
    fake = FakeGPU()
    monkeypatch.setattr(tracer, "wait_watch", lambda dispatch=frozenset(): WaitWatch(fake.device(), dispatch))
    return fake


def syncing_loss(gpu, loss_func):
    """A loss function that reads its value on the host during validation (the work 'loss' synchronises)."""
    def loss(pred, *yb):
        out = loss_func(pred, *yb)
        if not torch.is_grad_enabled():
            gpu.sync("work loss")
        return out
    return loss


def traced_fit(gpu, tmp_path, epochs=2, **trace):
    learn = synth_learner(n_trn=5, n_val=3, path=tmp_path, cbs=[Forward(gpu), ReadsLoss(gpu)])
    learn.loss_func = syncing_loss(gpu, learn.loss_func)
    with learn.no_bar(), learn.no_logging(), learn.trace(waits=True, **trace) as t:
        learn.fit(epochs)
    return learn, t


def row(waits, kind, name, phase):
    found = waits[(waits["kind"] == kind) & (waits["name"] == name) & (waits["phase"] == phase)]
    assert len(found) == 1, waits
    return found.iloc[0]


def test_each_wait_is_charged_to_who_made_it_and_as_long_as_it_really_was(gpu, tmp_path):
    _, t = traced_fit(gpu, tmp_path)
    waits = t.gpu_waits()
    truth: dict[str, list[int]] = {}
    for who, ns in gpu.truth:
        truth.setdefault(who, []).append(ns)
    reads = row(waits, "callback", "ReadsLoss.after_batch", "train")
    assert reads["calls"] == reads["of"] == reads["syncs"] == len(truth["ReadsLoss.after_batch"]) == 10
    assert reads["wait_ms"] == pytest.approx(sum(truth["ReadsLoss.after_batch"]) / MS) == pytest.approx(40.0)
    assert reads["site"].startswith("tests/test_trace_waits.py:") and reads["site"].endswith("in after_batch")
    assert " <- " not in reads["site"]  # fastai's dispatch and loopviz's wrappers are not where it synchronised
    loss = row(waits, "work", "loss", "valid")
    assert loss["calls"] == loss["of"] == len(truth["work loss"]) == 6
    assert loss["wait_ms"] == pytest.approx(sum(truth["work loss"]) / MS) and loss["max_ms"] == pytest.approx(4.0)
    assert loss["site"].startswith("tests/test_trace_waits.py:") and loss["site"].split(" <- ")[0].endswith("in loss")
    assert loss["site"].split(" <- ")[1].startswith("fastai/learner.py:")  # where fastai called the loss function
    assert len(waits) == 2 and waits["syncs"].sum() == len(gpu.truth)


def test_the_report_says_who_waits_in_words(gpu, tmp_path):
    _, t = traced_fit(gpu, tmp_path)
    text = as_text(trace_tables(t), width=400)
    assert ("ReadsLoss.after_batch (train) waits for the GPU in all 10 calls: ~4.00 ms each, 40.0 ms in all, first at "
            "tests/test_trace_waits.py:") in text
    assert "the work 'loss' (valid) waits for the GPU in all 6 runs: ~4.00 ms each" in text
    assert "work: loss" in text and "Waits for the GPU" in t._repr_html_()


# A metric library of the user's, in a file of its own: its function asks for the synchronising operation
_LIBRARY = "def accumulate(gpu):\n    gpu.sync('Metric.after_batch')\n"
_library = {}
exec(compile(_LIBRARY, os.path.join(os.path.dirname(__file__), "metrics_lib.py"), "exec"), _library)


def test_where_names_the_frames_from_the_operation_out_to_the_handler(gpu, tmp_path):
    class Metric(Callback):
        def after_batch(self):
            _library["accumulate"](gpu)

    learn = synth_learner(n_trn=2, n_val=1, path=tmp_path, cbs=[Forward(gpu), Metric()])
    with learn.no_bar(), learn.no_logging(), learn.trace(waits=True) as t:
        learn.fit(1)
    site = row(t.gpu_waits(), "callback", "Metric.after_batch", "train")["site"]
    inner, outer = site.split(" <- ")
    assert inner == "tests/metrics_lib.py:2 in accumulate"
    assert outer.startswith("tests/test_trace_waits.py:") and outer.endswith("in after_batch")


def test_a_call_whose_gpu_was_idle_waited_nothing(gpu, tmp_path):
    class Idle(Callback):
        def before_fit(self):
            gpu.sync("Idle.before_fit")  # nothing queued yet

        def before_batch(self):
            gpu.synchronize()  # an explicit torch.cuda.synchronize(): torch does not report it...
            gpu.sync("Idle.before_batch")  # ...so the .item() after it is charged with the wait it made

    learn = synth_learner(n_trn=3, n_val=1, path=tmp_path, cbs=[Forward(gpu), Idle()])
    with learn.no_bar(), learn.no_logging(), learn.trace(waits=True) as t:
        learn.fit(1)
    waits = t.gpu_waits()
    assert row(waits, "callback", "Idle.before_fit", "")[["calls", "wait_ms"]].tolist() == [1, 0.0]
    batch = row(waits, "callback", "Idle.before_batch", "train")
    assert batch["calls"] == 3 and batch["wait_ms"] == pytest.approx(8.0)  # the 2nd and 3rd batch: 4 ms queued each


def test_host_work_before_the_sync_is_counted_up_to_the_gpu_work_queued(gpu):
    """The documented limit: what the GPU ran while the call did host work of its own counts as waited."""
    watch = WaitWatch(gpu.device())
    watch.start()
    try:
        gpu.launch(4)
        watch.open()
        gpu.work(6)  # 6 ms of Python: the GPU's 4 ms finished meanwhile
        gpu.sync("late")
        wait = watch.close()
    finally:
        watch.stop()
    assert gpu.truth == [("late", 0)] and wait.wait_ns == 4 * MS


def test_a_wait_is_capped_by_when_the_synchronisation_returned(gpu):
    watch = WaitWatch(gpu.device())
    watch.start()
    try:
        watch.open()
        gpu.launch(5)
        # the event was recorded before the launch: the GPU had nothing queued when the call began
        gpu.sync("late launch")
        wait = watch.close()
    finally:
        watch.stop()
    assert wait is not None and wait.syncs == 1 and wait.wait_ns == 0  # waits for work the call launched: left out


def test_synchronisations_on_another_stream_count_but_wait_nothing_known(gpu):
    watch = WaitWatch(gpu.device())
    watch.start()
    try:
        gpu.launch(3)
        watch.open()
        gpu.host += 1 * MS  # the call synchronised something else: its own queue has not drained
        warnings.warn(SYNC_MESSAGE, UserWarning)
        wait = watch.close()
    finally:
        watch.stop()
    assert wait.syncs == 1 and wait.wait_ns == 0


def test_warnings_mode_and_hooks_are_restored_and_other_warnings_pass(gpu, tmp_path):
    filters, show = list(warnings.filters), warnings.showwarning

    class Warns(Callback):
        def after_fit(self):
            warnings.warn("a warning of the user's own", UserWarning)

    learn = synth_learner(n_trn=2, n_val=1, path=tmp_path, cbs=[Forward(gpu), ReadsLoss(gpu), Warns()])
    with pytest.warns(UserWarning, match="of the user's own") as seen:
        with learn.no_bar(), learn.no_logging(), learn.trace(waits=True) as t:
            assert gpu.mode == 1
            learn.fit(1)
    assert not [w for w in seen if SYNC_MESSAGE in str(w.message)]  # loopviz asked for these: not shown
    assert gpu.mode == 0 and warnings.filters == filters and warnings.showwarning is show
    assert t.gpu_waits()["calls"].sum() == 2


def test_a_fit_that_raises_leaves_everything_as_it_was(gpu, tmp_path):
    filters, show = list(warnings.filters), warnings.showwarning

    class Boom(Callback):
        order = 90

        def after_batch(self):
            raise KeyboardInterrupt

    learn = synth_learner(n_trn=3, n_val=1, path=tmp_path, cbs=[Forward(gpu), ReadsLoss(gpu), Boom()])
    with pytest.raises(KeyboardInterrupt), learn.no_bar(), learn.no_logging(), learn.trace(waits=True) as t:
        learn.fit(1)
    assert gpu.mode == 0 and warnings.filters == filters and warnings.showwarning is show
    assert row(t.gpu_waits(), "callback", "ReadsLoss.after_batch", "train")["calls"] == 1


def test_a_user_who_asked_torch_for_warnings_still_gets_them(gpu, tmp_path):
    gpu.mode = 1
    learn = synth_learner(n_trn=2, n_val=1, path=tmp_path, cbs=[Forward(gpu), ReadsLoss(gpu)])
    with pytest.warns(UserWarning, match=SYNC_MESSAGE):
        with learn.no_bar(), learn.no_logging(), learn.trace(waits=True) as t:
            learn.fit(1)
    assert gpu.mode == 1 and t.gpu_waits()["calls"].sum() == 2


def test_sync_debug_mode_error_is_left_to_raise(gpu, tmp_path):
    gpu.mode = 2
    learn = synth_learner(n_trn=2, n_val=1, path=tmp_path, cbs=[Forward(gpu)])
    with learn.no_bar(), learn.no_logging(), learn.trace(waits=True):
        assert gpu.mode == 2
        learn.fit(1)
    assert gpu.mode == 2


def test_waits_survive_save_load_and_select(gpu, tmp_path):
    _, t = traced_fit(gpu, tmp_path, epochs=1)
    back = Trace.load(t.save(tmp_path / "t.json.gz"))
    assert back.tracked_waits and back.wait_agg == t.wait_agg
    assert back.gpu_waits().equals(t.gpu_waits())
    assert t.select(0).gpu_waits().equals(t.gpu_waits())


def test_a_file_from_before_waits_reads_as_none_recorded(tmp_path):
    learn = synth_learner(n_trn=2, n_val=1, path=tmp_path)
    with learn.no_bar(), learn.no_logging(), learn.trace() as t:
        learn.fit(1)
    data = t.to_json()
    data["version"] = 3
    del data["tracked_waits"], data["wait_agg"]
    old = Trace.from_json(data)
    assert not old.tracked_waits
    with pytest.raises(LoopvizError, match=r"waits=True"):
        old.gpu_waits()


@pytest.mark.parametrize("entry, complaint", [
    ([[0, 0, 0, 0, -1], [0, 1, 0, 0, "x"]], "wait_agg"),
    ([[0, 0, 0, 99, -1], [1, 1, 0, 0, "x"]], "callback index 99"),
    ([[0, 0, 0, -1, 99], [1, 1, 0, 0, "x"]], "next event index 99"),
    ([[0, 0, 0, 0, -1], [1, 1, 0, 0, 7]], "wait_agg"),
])
def test_bad_waits_in_a_file_are_named(tmp_path, entry, complaint):
    learn = synth_learner(n_trn=2, n_val=1, path=tmp_path)
    with learn.no_bar(), learn.no_logging(), learn.trace() as t:
        learn.fit(1)
    data = t.to_json()
    data["tracked_waits"], data["wait_agg"] = True, [entry]
    with pytest.raises(LoopvizError, match=complaint):
        Trace.from_json(data)


def test_waits_need_a_gpu(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    learn = synth_learner(n_trn=2, n_val=1, path=tmp_path)
    with pytest.raises(LoopvizError, match="waits=True finds where the host waits for a CUDA GPU, and torch sees none"):
        learn.trace(waits=True)
    with pytest.raises(LoopvizError, match="waits"):
        learn.trace(waits="yes")


def test_without_waits_the_report_says_how_to_get_them(tmp_path):
    learn = synth_learner(n_trn=2, n_val=1, path=tmp_path)
    with learn.no_bar(), learn.no_logging(), learn.trace() as t:
        learn.fit(1)
    with pytest.raises(LoopvizError, match=r"learn.trace\(waits=True\)"):
        t.gpu_waits()
    assert "Waits for the GPU" not in str(t)


@pytest.mark.skipif(shutil.which("dot") is None, reason="the report draws its loop with Graphviz's dot")
def test_the_html_report_has_the_waits(gpu, tmp_path):
    _, t = traced_fit(gpu, tmp_path, epochs=1)
    page = t.to_html(tmp_path / "fit.html").read_text(encoding="utf-8")
    assert "<h2>Waits for the GPU</h2>" in page and 'id="waits"' in page
    assert "ReadsLoss.after_batch (train) waits for the GPU in all 5 calls: ~4.00 ms each" in page


def test_the_cli_traces_waits_and_says_when_there_is_no_gpu(gpu, tmp_path):
    from click.testing import CliRunner

    from loopviz.cli import cli

    result = CliRunner().invoke(cli, ["trace", "--waits", "-o", str(tmp_path / "t.json")])
    assert result.exit_code == 0, result.output
    assert "Waits for the GPU" in result.output and Trace.load(tmp_path / "t.json").tracked_waits


def test_the_cli_says_waits_need_a_gpu(monkeypatch):
    from click.testing import CliRunner

    from loopviz.cli import cli

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = CliRunner().invoke(cli, ["trace", "--waits"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].startswith("loopviz: waits=True finds where the host waits for a CUDA GPU")


def test_a_trace_recorded_on_an_h100_reads_back_with_its_waits():
    """A real trace (benchmarks/gpu_check.py on an H100: four Linear(4096, 4096), bs 1024, fastai's usual callbacks,
    clock='cuda', waits=True). fastai's Recorder moves the smoothed loss to the CPU in after_batch, so it waits there
    for each batch's backward and step: most of its host time is that wait."""
    t = Trace.load(os.path.join(os.path.dirname(__file__), "data", "h100_waits_mlp.json.gz"))
    assert t.clock == "cuda" and t.tracked_waits and t.framework == "fastai 2.8.12"
    top = t.gpu_waits().iloc[0]
    assert (top["name"], top["phase"], top["calls"], top["of"], top["syncs"]) == ("Recorder.after_batch", "train", 40,
                                                                                  40, 40)
    assert top["site"] == "fastai/torch_core.py:246 in _inner <- fastai/learner.py:524 in accumulate"
    calls = t.by_callback()
    recorder = calls[(calls["callback"] == "Recorder") & (calls["event"] == "after_batch") & (calls["phase"] == "train")]
    host_ms = recorder["total_ms"].iloc[0]
    assert 0.8 * host_ms < top["wait_ms"] <= host_ms and 4 < top["mean_ms"] < 8
    backward = t.summary().query("name == 'backward' and phase == 'train'")["mean_ms"].iloc[0]
    assert top["mean_ms"] < backward + 1.5  # what it waits for is the batch's backward and step, on the GPU


def test_a_synchronisation_in_another_thread_is_charged_to_nothing(gpu, tmp_path):
    import threading

    class Background(Callback):
        def after_batch(self):
            worker = threading.Thread(target=gpu.sync, args=("a pin-memory thread",))
            worker.start()
            worker.join()

    learn = synth_learner(n_trn=3, n_val=1, path=tmp_path, cbs=[Forward(gpu), Background()])
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        with learn.no_bar(), learn.no_logging(), learn.trace(waits=True) as t:
            learn.fit(1)
    assert len(gpu.truth) == 4 and not len(t.gpu_waits())  # 3 training batches and 1 validation batch, none charged
    assert not [w for w in shown if SYNC_MESSAGE in str(w.message)]
