"""`t.diagnose()` on real fastai fits whose bottleneck is known: the top finding names it, its fix names the setting, its
figures are the tables' own, and a healthy compute-bound fit gets no warning (a false alarm is a defect)."""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import torch
from fastai.callback.core import Callback
from fastai.callback.progress import ProgressCallback  # noqa: F401 (Learner.no_bar)
from fastai.data.core import DataLoaders
from fastai.learner import Learner
from fastai.losses import MSELossFlat
from fastai.optimizer import SGD
from torch import nn

from loopviz.errors import LoopvizError
from loopviz.trace.diagnose import THRESHOLDS
from loopviz.trace.diagnosis import Diagnosis
from loopviz.trace.trace import Trace
from tests.clocks import CountingClock

DOCS = Path(__file__).parent.parent / "docs" / "diagnose.md"


class Items(torch.utils.data.Dataset):
    """`n` random items of `width` features; `sleep` seconds to make each, `first` more for item 0."""

    def __init__(self, n: int, width: int, sleep: float = 0.0, first: float = 0.0):
        gen = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(n, width, generator=gen), torch.randn(n, 1, generator=gen)
        self.sleep, self.first = sleep, first

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        if self.sleep:
            time.sleep(self.sleep)
        if self.first and i == 0:
            time.sleep(self.first)
        return self.x[i], self.y[i]


def learner(n_train: int = 640, n_valid: int = 64, bs: int = 64, width: int = 256, hidden: int = 1536,
            sleep: float = 0.0, workers: int = 0, cbs: tuple = ()) -> Learner:
    """A fastai learner of an MLP over in-memory items, with SGD (the defaults: compute-bound, about 30 ms a batch
    here; fastai's Adam would take about as long to step as the MLP does forward and backward)."""
    dls = DataLoaders.from_dsets(Items(n_train, width, sleep), Items(n_valid, width), bs=bs, num_workers=workers,
                                 shuffle=False)
    model = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                          nn.Linear(hidden, 1))
    return Learner(dls, model, loss_func=MSELossFlat(), opt_func=SGD, cbs=list(cbs))  # (a step that is no culprit)


def traced(learn: Learner, epochs: int = 1) -> Trace:
    torch.manual_seed(0)
    with learn.no_logging(), learn.no_bar():
        with learn.trace() as t:
            learn.fit(epochs)
    return t


class Sleepy(Callback):
    """Sleeps 50 ms after every batch (a logger that flushes every step): more than the batch's own compute here."""

    def after_batch(self):
        time.sleep(0.05)


class Flusher(Callback):
    """A logger that already writes every 5th batch only, and takes 60 ms to flush then."""

    def after_batch(self):
        if self.train_iter % 5 == 4:
            time.sleep(0.06)


class Quiet(Callback):
    """No handler at all: fastai still calls it at every event (its dispatch's cost per callback)."""


@pytest.fixture(scope="module")
def healthy() -> Trace:
    learn = learner(hidden=2560)  # compute well above the draw on any torch build (the newest's matmul is faster)
    with learn.no_logging(), learn.no_bar():
        learn.fit(1)  # warm: a process's first fit pays for torch's and fastai's first calls
    return traced(learn)


def test_a_healthy_compute_bound_fit_gets_no_warning(healthy: Trace) -> None:
    d = healthy.diagnose()
    assert [f for f in d if f.severity != "info"] == [], str(d)
    assert str(d).startswith("Nothing found to slow this run")
    assert d.checked["data_share"] < THRESHOLDS["input_bound"].warning
    assert d.checked["validation_share"] < THRESHOLDS["validation"].warning


def test_a_callback_that_works_every_batch_is_named_with_its_handler_and_the_fix(tmp_path: Path) -> None:
    t = traced(learner(cbs=(Sleepy(),)))
    top = t.diagnose().top
    assert top is not None and top.kind == "slow_callback" and top.culprit == "Sleepy.after_batch"
    assert top.severity == "critical" and "self.train_iter % 10" in top.fix
    assert any(line.startswith("it works at every call: its median call takes") for line in top.evidence)
    row = t.by_callback().set_index(["callback", "event"]).loc[("Sleepy", "after_batch")]
    assert top.saving_ms == pytest.approx(row["total_ms"].sum())  # the figures are the callbacks' table's
    assert top.figures["per_call_ms"] >= 50
    assert any(f"{Path(__file__).name}:" in line for line in top.evidence)  # where the handler is defined


def test_items_slow_to_make_without_workers_make_the_fit_input_bound() -> None:
    t = traced(learner(n_train=64, bs=8, width=16, hidden=16, sleep=0.001))
    top = t.diagnose().top
    assert top is not None and top.kind == "input_bound" and top.severity == "critical"
    assert top.culprit == "the training loader (num_workers=0)" and "num_workers=" in top.fix
    draw = t.summary().query("kind == 'work' and name == 'draw' and phase == 'train'")
    assert top.saving_ms == pytest.approx(float(draw["total_ms"].sum()))
    cores = t.meta["cpus"]
    assert f"num_workers={max(2, min(8, cores))}" in top.fix  # as many workers as the machine has cores (at most 8)
    for workers, cpus, said in ((2, 16, "num_workers=4"), (2, 2, "the loader's 2 workers already use every core"),
                                (8, 4, "the loader's 8 workers already use every core")):
        loaders = {"train": {**t.meta["loaders"]["train"], "num_workers": workers}}
        top = on(t, loaders=loaders, cpus=cpus).diagnose().top  # as if it had run with these workers and cores
        assert top.kind == "input_bound" and said in top.fix, (workers, cpus, top.fix)


class ClockItems(torch.utils.data.Dataset):
    """Items that each take `ns` of an injected clock to make."""

    def __init__(self, n: int, ns: int, clock: CountingClock):
        self.x, self.ns, self.clock = torch.randn(n, 4, generator=torch.Generator().manual_seed(0)), ns, clock

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        self.clock.spent += self.ns
        return self.x[i], self.x[i, :1]


def on_a_clock(item_ns: int, n_train: int, bs: int, epochs: int) -> Trace:
    """A fit traced on an injected clock (1 µs a reading, plus what the items spend): the same figures every run."""
    from loopviz.adapters.fastai.tracer import TraceSession

    clock = CountingClock()
    dls = DataLoaders.from_dsets(ClockItems(n_train, item_ns, clock), ClockItems(bs, 0, clock), bs=bs, shuffle=False,
                                 num_workers=0)
    learn = Learner(dls, nn.Linear(4, 1), loss_func=MSELossFlat(), opt_func=SGD)
    with learn.no_logging(), learn.no_bar(), TraceSession(learn, now=clock.now) as t:
        learn.fit(epochs)
    return t


def test_a_loader_too_cheap_for_workers_is_told_larger_batches_not_workers() -> None:
    """Items that take 30 µs each (in-memory tensors, as synth_learner's): the fit waits for them, but starting
    workers (fastai starts them every epoch) and handing them 40 batches would cost more than the 20 ms they could
    take off: on this machine workers make such a fit 2 to 9 times slower (benchmarks/worker_cost.py,
    test_the_workers_not_suggested_would_really_slow_the_fit). Items of 2 ms each get workers."""
    cheap = {f.kind: f for f in on_a_clock(30_000, n_train=320, bs=16, epochs=2).diagnose()}["input_bound"]
    assert cheap.severity == "critical" and "num_workers=" not in cheap.fix and "bs=256" in cheap.fix
    assert cheap.culprit.startswith("the training loader's own work, 0.") and "too little for worker" in cheap.culprit
    assert any(line.startswith("workers would cost at least 10 ms each time they start (here 2) and 0.3 ms for each "
                               "batch they hand over (here 42 waits): 32.6 ms, against the ")
               for line in cheap.evidence), cheap.evidence
    costly = {f.kind: f for f in on_a_clock(2_000_000, n_train=64, bs=8, epochs=1).diagnose()}["input_bound"]
    assert costly.culprit == "the training loader (num_workers=0)" and "num_workers=" in costly.fix


@pytest.mark.wallclock
def test_the_workers_not_suggested_would_really_slow_the_fit() -> None:
    """Reality behind the rule: synth_learner's fit (the README's default job), told larger batches rather than
    workers, really is slower with two workers."""
    from fastai.test_utils import synth_dbunch, synth_learner

    def fit_s(workers: int) -> float:
        dls = synth_dbunch(n_train=40)
        if workers:
            dls = DataLoaders(dls.train.new(num_workers=workers), dls.valid.new(num_workers=workers))
        learn = synth_learner(data=dls)
        with learn.no_logging(), learn.no_bar():
            learn.fit(1)
            start = time.perf_counter()
            learn.fit(1)
            return time.perf_counter() - start

    t = traced(synth_learner(n_trn=40))
    found = {f.kind: f for f in t.diagnose()}
    assert "num_workers=" not in found.get("input_bound", found.get("dispatch")).fix
    assert min(fit_s(2) for _ in range(3)) > min(fit_s(0) for _ in range(3))


def test_validation_twenty_times_the_size_of_training_is_found() -> None:
    t = traced(learner(n_train=64, n_valid=1280))
    top = t.diagnose().top
    assert top is not None and top.kind == "validation" and top.severity == "critical"
    assert "val_bs" in top.fix and top.figures["valid_ms"] > top.figures["train_ms"]
    tiles = t.summary().query("kind in ['event', 'work']").groupby("phase")["total_ms"].sum()
    assert (top.figures["valid_ms"], top.figures["train_ms"]) == pytest.approx((tiles["valid"], tiles["train"]))


def test_batches_of_one_let_the_frameworks_own_work_weigh_on_the_fit() -> None:
    t = traced(learner(n_train=64, n_valid=8, bs=1, width=4, hidden=4, cbs=tuple(Quiet() for _ in range(6))))
    d = t.diagnose()
    found = {f.kind: f for f in d}
    assert "dispatch" in found and found["dispatch"].culprit == "the batch size" and "bs=" in found["dispatch"].fix
    dispatch = t.summary().query("kind == 'dispatch'")["total_ms"].sum()
    assert found["dispatch"].figures["dispatch_ms"] == pytest.approx(dispatch)
    assert "Recorder" not in {f.culprit.split(".")[0] for f in d}  # fastai's own per-batch work counts in dispatch


def test_workers_started_again_every_epoch_are_found_and_torchs_loaders_keep_them() -> None:
    t = traced(learner(n_train=256, n_valid=32, bs=32, width=16, hidden=16, workers=2), epochs=3)
    stall = {f.kind: f for f in t.diagnose()}.get("epoch_start_stall")
    assert stall is not None and "num_workers=2" in stall.culprit and "persistent_workers=True" in stall.fix
    assert "fastai's DataLoader starts its workers again every epoch" in stall.fix
    train, valid = Items(256, 16), Items(32, 16)
    dl = torch.utils.data.DataLoader
    dls = DataLoaders(dl(train, batch_size=32, num_workers=2, persistent_workers=True),
                      dl(valid, batch_size=32, num_workers=2, persistent_workers=True))
    fixed = traced(Learner(dls, nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 1)),
                           loss_func=MSELossFlat()), epochs=3)
    d = fixed.diagnose()
    assert "epoch_start_stall" not in {f.kind for f in d} and d.checked["epoch_stall_share"] < 0.02
    assert fixed.meta["loaders"]["train"] == {"bs": 32, "num_workers": 2, "persistent_workers": True,
                                              "pin_memory": False, "restarts_workers": False}
    # Left to the cyclic garbage collector with the learner, torch's persistent workers wait out torch's 5 s join
    # timeout each (20 s in whichever later test the collector runs in); the fix's last line ends them at once.
    assert "for dl in dls.loaders: dl._iterator = None" in stall.fix
    started = time.perf_counter()
    for loader in dls.loaders:
        loader._iterator = None
    assert time.perf_counter() - started < 4  # (no 5 s timeout waited out)


def test_a_callback_that_already_works_every_few_batches_is_told_to_do_so_less_often() -> None:
    t = traced(learner(n_train=1280, cbs=(Flusher(),)))  # 20 training batches (4 flushes) and 1 validation batch
    top = t.diagnose().top
    assert top is not None and top.kind == "slow_callback" and top.culprit == "Flusher.after_batch", str(t.diagnose())
    rhythm = [line for line in top.evidence if line.startswith("it already works on only")]
    assert rhythm and rhythm[0].startswith("it already works on only 4 of its 21 calls"), top.evidence
    assert "self.train_iter % 100" in top.fix and "already skips most batches" in top.fix
    assert "% 10:" not in top.fix


def test_a_loaded_trace_is_diagnosed_as_the_live_one(tmp_path: Path) -> None:
    t = traced(learner(cbs=(Sleepy(),)))
    back = Trace.load(t.save(tmp_path / "fit.trace.json"))
    live, loaded = t.diagnose(), back.diagnose()
    assert [(f.kind, f.severity, f.culprit, f.fix) for f in live] == [(f.kind, f.severity, f.culprit, f.fix)
                                                                       for f in loaded]
    assert [f.saving_ms for f in loaded] == pytest.approx([f.saving_ms for f in live])
    with open(tmp_path / "fit.trace.json") as file:  # the file holds the diagnosis for readers without loopviz
        saved = json.load(file)["diagnosis"]
    assert Diagnosis.from_json(saved) == live and saved["findings"][0]["culprit"] == "Sleepy.after_batch"


def test_json_round_trip_and_table(healthy: Trace) -> None:
    t = traced(learner(n_train=64, n_valid=640))
    d = t.diagnose()
    again = Diagnosis.from_json(json.loads(json.dumps(d.to_json())))
    assert again == d
    df = d.to_df()
    assert list(df["kind"]) == [f.kind for f in d] and (df["saving_pct"] > 0).all()
    assert Diagnosis.from_json(healthy.diagnose().to_json()).findings == ()
    bundle = d._repr_mimebundle_()
    assert bundle["text/plain"] == str(d) and bundle["text/html"] == d._repr_html_()
    with pytest.raises(LoopvizError, match="not a diagnosis loopviz wrote"):
        Diagnosis.from_json({"framework": "fastai"})


def test_hostile_callback_names_are_escaped_in_text_and_html() -> None:
    hostile = type("Bad<script>\x1b[31m", (Callback,), {"after_batch": lambda self: time.sleep(0.01)})
    d = traced(learner(cbs=(hostile(),))).diagnose()
    assert d.top is not None and d.top.culprit.startswith("Bad<script>")
    assert "\x1b" not in str(d) and "\\x1b" in str(d)
    page = d._repr_html_()
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_the_docs_list_every_finding_with_its_thresholds() -> None:
    rows = re.findall(r"^\| `(\w+)` \| (\d+(?:\.\d+)?)( %|x) \| (\d+(?:\.\d+)?)( %|x) \|", DOCS.read_text(), re.M)
    scale = {" %": 100, "x": 1}
    documented = {kind: (float(w) / scale[wu], float(c) / scale[cu]) for kind, w, wu, c, cu in rows}
    assert documented == {kind: (band.warning, band.critical) for kind, band in THRESHOLDS.items()}


def test_loader_settings_in_a_file_are_checked(tmp_path: Path, healthy: Trace) -> None:
    path = healthy.save(tmp_path / "fit.trace.json")
    data = json.loads(path.read_text())
    assert data["meta"]["loaders"]["train"]["num_workers"] == 0
    data["meta"]["loaders"]["train"]["num_workers"] = "eight"
    path.write_text(json.dumps(data))
    with pytest.raises(LoopvizError, match="loaders"):
        Trace.load(path)


def test_the_html_reports_first_screen_shows_the_findings_escaped(tmp_path: Path) -> None:
    hostile = type("Bad<script>", (Callback,), {"after_batch": lambda self: time.sleep(0.01)})
    t = traced(learner(cbs=(hostile(),)))
    page = t.to_html(tmp_path / "fit.html").read_text(encoding="utf-8")
    assert page.index("What slows this run") < page.index("The loop, heat-coloured by time")
    assert "Bad&lt;script&gt;.after_batch" in page and "<script>.after_batch" not in page
    assert "self.train_iter % 10" in page


def test_advice_in_a_file_is_checked_and_never_formatted(tmp_path: Path, healthy: Trace) -> None:
    path = healthy.save(tmp_path / "fit.trace.json")
    data = json.loads(path.read_text())
    data["meta"]["advice"]["fixes"]["loader"] = "{workers.__class__.__mro__} {workers}"
    data["meta"]["advice"]["data_work"] = "forward"  # the file's word: this compute-bound fit's forward is large
    path.write_text(json.dumps(data))
    found = {f.kind: f for f in Trace.load(path).diagnose()}
    assert found["input_bound"].fix.startswith("{workers.__class__.__mro__} ")  # filled in by replacement only
    data["meta"]["advice"]["per_batch_events"] = "after_batch"
    path.write_text(json.dumps(data))
    with pytest.raises(LoopvizError, match="advice"):
        Trace.load(path)


def on(trace: Trace, **meta) -> Trace:
    """`trace` as if it had run with these meta entries (a CUDA device: what this CPU machine cannot run)."""
    data = json.loads(json.dumps(trace.to_json()))
    data["meta"].update(meta)
    return Trace.from_json(data)


def test_full_precision_on_a_gpu_is_found_and_mixed_precision_or_a_cpu_is_not(healthy: Trace) -> None:
    assert (healthy.meta["device"], healthy.meta["precision"]) == ("cpu", "32")
    assert "mixed_precision" not in {f.kind for f in healthy.diagnose()}  # on a CPU: nothing to say
    gpu = on(healthy, device="cuda:0")
    found = {f.kind: f for f in gpu.diagnose()}["mixed_precision"]
    rows = gpu.summary().query("kind == 'work' and name in ['forward', 'loss', 'backward']")
    assert found.saving_ms == pytest.approx(rows["total_ms"].sum())
    assert found.figures["share"] == pytest.approx(rows["total_ms"].sum() / (gpu.total_ns() / 1e6))
    assert found.severity == "critical" and found.fix.startswith("learn = learn.to_bf16()")
    assert found.evidence[0] == "the model ran on cuda:0 in full precision (32) (trace meta)"
    for mixed in ("bf16-mixed", "fp16-mixed"):
        assert "mixed_precision" not in {f.kind for f in on(healthy, device="cuda:0", precision=mixed).diagnose()}


def test_the_trace_notes_the_models_device_and_precision() -> None:
    for make, precision in ((lambda l: l, "32"), (lambda l: l.to_fp16(), "fp16-mixed"),
                            (lambda l: l.to_bf16(), "bf16-mixed")):
        learn = make(learner(n_train=64, n_valid=64, width=4, hidden=4))
        with learn.trace() as t:
            pass
        assert (t.meta["device"], t.meta["precision"]) == ("cpu", precision)
    learn = learner(n_train=64, n_valid=64, width=4, hidden=4)
    learn.model.double()
    with learn.trace() as t:
        pass
    assert t.meta["precision"] == "64"


def on_device(trace: Trace, clock: str, lag_ns: int) -> Trace:
    """`trace` as if its clock had been `clock`, the GPU reaching each boundary `lag_ns` after the host recorded it
    (0: the GPU always caught up, waiting for the host; a large lag: the host always ahead, the GPU never idle)."""
    from loopviz.trace.layout import F_DEV_END, F_DEV_START, F_END, F_START, FIRING_FIELDS

    data = json.loads(json.dumps(trace.to_json()))
    data["clock"] = clock
    flat, width = data["firings"], len(FIRING_FIELDS)  # the file's firings: rows of FIRING_FIELDS, flat
    for at in range(0, len(flat), width):
        flat[at + F_DEV_START], flat[at + F_DEV_END] = flat[at + F_START] + lag_ns, flat[at + F_END] + lag_ns
    return Trace.from_json(data)


def test_a_gpu_waiting_for_the_host_between_batches_is_found_and_a_busy_one_is_not() -> None:
    t = traced(learner(n_train=256, bs=8, width=16, hidden=16, sleep=0.001))  # 32 batches, slow items
    idle = on_device(t, "cuda", 0)
    found = {f.kind: f for f in idle.diagnose()}["gpu_idle"]
    work = idle.work_df()
    draws = work[(work["work"] == "draw") & (work["phase"] == "train") & (work["after"] == "after_batch") &
                 (work["before"] == "before_batch")]
    assert found.saving_ms == pytest.approx(draws["dur"].sum() / 1e6)  # every draw between batches: the GPU idle
    assert found.severity == "critical" and "pin_memory=True" in found.fix and found.figures["gaps"] == len(draws)
    busy = on_device(t, "cuda", 50_000_000).diagnose()  # the GPU 50 ms behind the host at every boundary
    assert "gpu_idle" not in {f.kind for f in busy} and busy.checked["gpu_idle_share"] == 0
    assert "gpu_idle" not in {f.kind for f in on_device(t, "sync", 0).diagnose()}  # a sync clock stalls it itself
    assert "gpu_idle" not in {f.kind for f in t.diagnose()}  # the host clock has no device times
