"""`learn.trace(data=True)`: the data loop of a real fastai fit timed stage by stage and transform by transform, in the
main process and in worker processes, checked against an independent spy of fastai's transforms (a wrapper of
`Transform._do_call` written without loopviz, appending to a file so that workers report too), and never changing
what the loader yields."""
from __future__ import annotations

import os
import pickle
import random
import sys
import time
from pathlib import Path

import pytest
import torch
from fastai.callback.core import Callback
from fastai.data.all import DataBlock, DataLoaders, RandomSplitter, Transform, TransformBlock, tensor
from fastai.data.load import DataLoader
from fastai.learner import Learner
from fastai.torch_core import set_seed
import fastai.data.load as fastai_load
from torch import nn

from loopviz.adapters.fastai.datatimer import TimedPipeline
from loopviz.adapters.loader_timer import timed_loaders
from loopviz.errors import LoopvizError
from loopviz.trace import instrument
from loopviz.trace.chrome import chrome_trace
from loopviz.trace.datawork import DATA_FIELDS, MAIN
from loopviz.trace.trace import Trace
from tests.transform_spy import TransformSpy

SLEEP = 0.003  # what SlowItem sleeps per item: a lower bound on its measured time


class SlowItem(Transform):
    "Sleeps a little per item, in worker processes when there are any"
    order = 6

    def encodes(self, x: torch.Tensor):
        time.sleep(SLEEP)
        return x


class Jitter(Transform):
    "Random noise on each item, from torch's generator: the same for a fixed seed"
    order = 7
    split_idx = 0

    def encodes(self, x: torch.Tensor):
        return x + torch.rand(1) * 0.1 + random.random() * 0.01


class Scale(Transform):
    "Halves each number"
    order = 1

    def encodes(self, x: torch.Tensor):
        return x / 2


def as_pair(x):
    "Four numbers as a float tensor"
    return tensor([float(x)] * 4)


def target(o):
    return float(o % 2)


def items(_):
    return list(range(48))


def loaders(workers: int = 0, bs: int = 4) -> DataLoaders:
    block = DataBlock(blocks=(TransformBlock(type_tfms=[as_pair]), TransformBlock()), get_items=items,
                      get_y=target, splitter=RandomSplitter(seed=0), item_tfms=[SlowItem(), Jitter()],
                      batch_tfms=[Scale()])
    return block.dataloaders(None, bs=bs, num_workers=workers, device="cpu")


def loss(pred, y):
    return ((pred.squeeze(-1) - y.float()) ** 2).mean()


class Seen(Callback):
    "Keeps every batch the model is given"

    def before_fit(self):
        self.batches = []

    def before_batch(self):
        self.batches.append([t.clone() for t in (*self.learn.xb, *self.learn.yb)])


def learner(workers: int = 0) -> Learner:
    set_seed(0)
    return Learner(loaders(workers), nn.Linear(4, 1), loss_func=loss, cbs=Seen())


def fit(learn: Learner, data: bool, epochs: int = 2) -> tuple[list, Trace | None]:
    set_seed(1)
    if not data:
        learn.fit(epochs)
        return learn.seen.batches, None
    with learn.trace(data=True) as t:
        learn.fit(epochs)
    return learn.seen.batches, t



def rows(t: Trace):
    """Every row of the trace's data loop, named (`data_df`)."""
    from loopviz.trace.datatiming import data_df

    return data_df(t.data)


def loader_state(dl: DataLoader) -> dict:
    """What the loader holds: the name of each attribute, and for its stages and dataset the very object (a fit
    changes its random generator and index list, so those are compared by name only)."""
    stages = set(DataLoader._methods) | {"dataset", "fake_l"}
    return {name: (id(value) if name in stages else None) for name, value in vars(dl).items()}


@pytest.mark.parametrize("workers", [0, 2])
def test_the_model_gets_the_same_batches_with_the_same_random_augmentations(workers: int) -> None:
    plain, _ = fit(learner(workers), data=False)
    traced, t = fit(learner(workers), data=True)
    assert len(plain) == len(traced) == 2 * (len(learner(workers).dls.train) + len(learner(workers).dls.valid))
    for a, b in zip(plain, traced):
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert len(t.data_work)  # and it did time them


@pytest.mark.parametrize("workers", [0, 2])
def test_each_transform_is_timed_as_often_as_the_spy_saw_it_run_and_where(tmp_path: Path, workers: int) -> None:
    learn = learner(workers)
    with TransformSpy(tmp_path / "ran.tsv", named=lambda tfm: type(tfm).__name__) as spy:
        _, t = fit(learn, data=True, epochs=1)
    ran = spy.ran()
    summary = t.data_summary()
    timed = summary[summary["step"] != ""]
    main = os.getpid()
    for name in ("SlowItem", "Jitter", "Scale"):
        spied = [pid for spied_name, pid in ran if spied_name == name]
        rows_ = timed[timed["step"] == name]
        if name == "Jitter":  # train only: every valid call passes the item through untouched (the spy sees none)
            rows_ = rows_[rows_["loader"] == "train"]
        assert int(rows_["calls"].sum()) == len(spied), name
        in_main = {pid == main for pid in spied}
        expected_where = {"main"} if (name == "Scale" or workers == 0) else {"workers"}
        assert set(rows_["where"]) == expected_where and in_main == {expected_where == {"main"}}, name
    items = summary[(summary["stage"] == "create_item") & (summary["step"] == "")]
    assert items.set_index("loader")["calls"].to_dict() == {"train": len(learn.dls.train_ds),
                                                            "valid": len(learn.dls.valid_ds)}


def test_worker_rows_come_from_each_worker_process_on_the_main_process_clock() -> None:
    learn = learner(2)
    before = time.perf_counter_ns()
    _, t = fit(learn, data=True, epochs=2)
    after = time.perf_counter_ns()
    df = rows(t)
    made = df[(df["stage"] == "batch") & (df["loader"] == "train")]
    assert set(made["worker"]) == {0, 1} and os.getpid() not in set(made["pid"])
    assert made["pid"].nunique() == 4  # fastai starts its workers again every pass: 2 passes x 2 workers
    for _, one_pass in made.groupby("pass"):
        assert sorted(one_pass["batch"]) == list(range(len(learn.dls.train)))  # each batch made once
        assert all(one_pass["batch"] % 2 == one_pass["worker"])  # fastai deals batches out in turn
    assert made["start"].min() > before and made["end"].max() < after  # one clock: within the fit as timed here
    given = df[(df["worker"] == MAIN) & (df["stage"] == "after_batch") & (df["step"] == "")]
    joined = given.merge(made, on=["loader", "pass", "batch"], suffixes=("_main", "_worker"))
    assert len(joined) == len(made) and (joined["start_main"] >= joined["end_worker"]).all()  # made, then given


def test_the_timings_hold_what_the_work_took() -> None:
    _, t = fit(learner(0), data=True, epochs=1)
    summary = t.data_summary().set_index(["loader", "stage", "step"])
    slow = summary.loc[("train", "after_item", "SlowItem")]
    assert slow["us_per_call"] >= SLEEP * 1e6  # one sleep per item (its x: the target is a float, not a tensor)
    stage = summary.loc[("train", "after_item", "")]
    steps = summary.loc["train"].loc["after_item"].drop(index="")
    assert steps["total_ms"].sum() <= stage["total_ms"]
    timing = {lt.loader: lt for lt in t.loader_timing()}["train"]
    assert timing.workers == 0 and timing.slowest[:2] == ("after_item", "SlowItem") and timing.slowest[2] > 0.5
    assert timing.batches == len(learner(0).dls.train) and timing.passes == 1
    assert timing.batch_ms >= 4 * SLEEP * 1e3 and timing.delivered_per_s <= 1000 / timing.batch_ms + 1e-9
    assert timing.get_ms >= timing.batches * 4 * SLEEP * 1e3  # the main process made every batch itself


def test_with_workers_the_main_process_waits_and_the_diagnosis_names_the_transform() -> None:
    learn = learner(2)
    learn.dls.train.fake_l.num_workers = 1  # one worker making 4 items a batch at >= 3 ms each
    _, t = fit(learn, data=True, epochs=1)
    timing = {lt.loader: lt for lt in t.loader_timing()}["train"]
    assert timing.workers == 1 and timing.input_bound
    assert timing.consumed_per_s > timing.delivered_per_s
    assert timing.first_batch_ms and min(timing.first_batch_ms) >= 4 * SLEEP * 1e3
    finding = next(f for f in t.diagnose().findings if f.kind == "input_bound")
    assert "SlowItem (after_item)" in " ".join(finding.evidence) and "SlowItem (after_item)" in finding.culprit
    assert "batches/s" in " ".join(finding.evidence)
    text = str(t)
    assert "Data loop: train:" in text and "SlowItem" in text


def test_the_loader_fastai_and_the_kernel_are_left_as_they_were() -> None:
    learn = learner(2)
    fit(learn, data=False, epochs=1)  # (a first pass adds the loader's index list)
    before = {name: loader_state(dl) for name, dl in zip(("train", "valid"), learn.dls.loaders)}
    tls = [dict(vars(tl)) for tl in learn.dls.train.dataset.tls]
    move, new = fastai_load.to_device, DataLoader.new
    _, t = fit(learn, data=True, epochs=1)
    assert {name: loader_state(dl) for name, dl in zip(("train", "valid"), learn.dls.loaders)} == before
    assert [dict(vars(tl)) for tl in learn.dls.train.dataset.tls] == tls
    assert fastai_load.to_device is move and DataLoader.new is new
    assert not instrument.installed() and timed_loaders() == 0
    assert not any(isinstance(v, TimedPipeline) for v in vars(learn.dls.train).values())


def test_a_fit_that_raises_leaves_every_loader_as_it_was() -> None:
    class Boom(Callback):
        def after_batch(self):
            if self.iter == 2:
                raise KeyboardInterrupt  # Ctrl-C in the middle of an epoch

    learn = learner(2)
    fit(learn, data=False, epochs=1)
    before = loader_state(learn.dls.train)
    with pytest.raises(KeyboardInterrupt):
        with learn.trace(data=True) as t:
            learn.fit(1, cbs=Boom())
    assert loader_state(learn.dls.train) == before and not instrument.installed()
    assert (rows(t)["stage"] == "batch").any()  # what was made before it stopped is there


def test_a_loader_made_from_a_traced_one_while_tracing_is_made_as_without_the_trace() -> None:
    learn = learner(0)
    with learn.trace(data=True) as t:
        test = learn.dls.test_dl(list(range(8)))
        learn.fit(1)
    assert not any(getattr(v, "__loopviz_wrapper__", False) or isinstance(v, TimedPipeline) for v in vars(test).values())
    assert type(test.after_batch).__name__ == "Pipeline" and test.dataset is not learn.dls.train.dataset
    assert len(list(test)) == 2 and t.data_work


def test_a_traced_loader_pickles_with_its_wrappers_and_runs_the_same_after() -> None:
    dl = DataLoader(list(range(12)), bs=4, after_batch=halve)
    learn = Learner(DataLoaders(dl, DataLoader(list(range(4)), bs=4)), nn.Linear(1, 1), loss_func=nn.MSELoss())
    with learn.trace(data=True):
        copy = pickle.loads(pickle.dumps(dl))  # what a worker started by spawn receives
        assert [b.tolist() for b in copy] == [b.tolist() for b in dl]
    assert [b.tolist() for b in dl] == [[0.0, 0.5, 1.0, 1.5], [2.0, 2.5, 3.0, 3.5], [4.0, 4.5, 5.0, 5.5]]


def halve(batch):
    "Halves the batch"
    return batch / 2


def test_a_torch_loader_is_said_not_timed_and_data_false_times_nothing() -> None:
    xs = torch.randn(16, 1)
    torch_dl = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xs, xs), batch_size=4)
    learn = Learner(DataLoaders(torch_dl, torch_dl), nn.Linear(1, 1), loss_func=nn.MSELoss())
    with learn.trace(data=True) as t:
        learn.fit(1)
    assert t.meta["data_not_timed"] == ["train: a DataLoader, not a fastai DataLoader",
                                        "valid: a DataLoader, not a fastai DataLoader"]
    assert not t.data_work and t.loader_timing() == [] and len(t.data_summary()) == 0
    learn = learner(0)
    with learn.trace() as t:
        learn.fit(1)
    assert not t.data_work and not t.data_steps and "Data loop" not in str(t)


def test_a_tabular_loader_times_its_do_item_and_batch_reading() -> None:
    import pandas as pd
    from fastai.tabular.core import Categorify, Normalize, TabularPandas

    df = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0] * 8, "c": ["x", "y"] * 16, "y": [0.0, 1.0] * 16})
    to = TabularPandas(df, procs=[Categorify, Normalize], cat_names=["c"], cont_names=["a"], y_names="y",
                       splits=(list(range(24)), list(range(24, 32))))
    dls = to.dataloaders(bs=8)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(1, 1)

        def forward(self, cat, cont):
            return self.lin(cont)

    learn = Learner(dls, Model(), loss_func=nn.MSELoss())
    with learn.trace(data=True) as t:
        learn.fit(1)
    summary = t.data_summary()
    train = summary[summary["loader"] == "train"]
    assert list(dict.fromkeys(train["stage"])) == ["do_item", "before_batch", "create_batch", "retain", "to_device",
                                                   "after_batch"]
    assert int(train[train["stage"] == "do_item"]["calls"].iloc[0]) == 24
    assert "ReadTabBatch" in set(train["step"])


def test_a_saved_trace_keeps_its_data_loop_and_a_damaged_one_is_refused(tmp_path: Path) -> None:
    _, t = fit(learner(0), data=True, epochs=1)
    path = t.save(tmp_path / "t.json")
    loaded = Trace.load(path)
    assert loaded.data_summary().equals(t.data_summary()) and loaded.loader_timing() == t.loader_timing()
    obj = t.to_json()
    assert obj["data_fields"] == list(DATA_FIELDS)
    bad = dict(obj, data_work=obj["data_work"][:-1])
    with pytest.raises(LoopvizError, match="data_work.*not a whole number"):
        Trace.from_json(bad)
    bad = dict(obj, data_work=[len(obj["data_steps"])] + obj["data_work"][1:])
    with pytest.raises(LoopvizError, match="step index"):
        Trace.from_json(bad)
    bad = dict(obj, data_steps=[["train", "after_item", "x", "often"]] * len(obj["data_steps"]))
    with pytest.raises(LoopvizError, match="per is 'often'"):
        Trace.from_json(bad)
    old = {k: v for k, v in obj.items() if k not in ("data_steps", "data_work", "data_fields")}
    old["version"] = 5
    assert not Trace.from_json(old).data_work


def test_the_chrome_trace_has_a_track_per_worker_and_the_main_process_part() -> None:
    _, t = fit(learner(2), data=True, epochs=1)
    trace = chrome_trace(t)
    names = {e["tid"]: e["args"]["name"] for e in trace["traceEvents"] if e["ph"] == "M" and e["name"] == "thread_name"}
    assert {"train loader: worker 0", "train loader: worker 1", "valid loader: worker 0",
            "main process: data loop (to_device, after_batch)"} <= set(names.values())
    data = [e for e in trace["traceEvents"] if e.get("cat") == "data"]
    made = [e for e in data if names[e["tid"]].startswith("train loader")]
    assert len(made) == len(learner(2).dls.train) and all("SlowItem" in e["args"]["steps"] for e in made)
    assert all(e["args"]["pid"] != os.getpid() for e in made)
    moves = [e for e in data if e["name"] == "train to_device"]
    transforms = [e for e in data if e["name"] == "train after_batch"]
    assert len(moves) == len(transforms) == len(made)
    for move, after in zip(moves, transforms):
        assert move["ts"] + move["dur"] <= after["ts"] + 1e-3  # the move, then the batch transforms


SPAWNED = """
import multiprocessing as mp
if __name__ == "__main__":
    mp.set_start_method("spawn")  # Python 3.14's default on Linux is forkserver: the loader is pickled either way
    import torch
    from tests.test_trace_dataloop_fastai import fit, learner, rows
    plain, _ = fit(learner(2), data=False, epochs=1)
    traced, t = fit(learner(2), data=True, epochs=1)
    assert all(all(torch.equal(x, y) for x, y in zip(a, b)) for a, b in zip(plain, traced))
    made = rows(t)
    made = made[made["stage"] == "batch"]
    print("workers", sorted(set(made["worker"])), "processes", made["pid"].nunique())
"""


def test_workers_started_by_spawn_time_the_same_loop(tmp_path: Path) -> None:
    import subprocess
    import sys

    script = tmp_path / "spawned.py"
    script.write_text(SPAWNED)
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(root)}, cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "workers [0, 1] processes 4" in done.stdout
    assert "could not patch" not in done.stderr


def test_a_trace_cut_to_one_loop_keeps_the_data_work_done_inside_it() -> None:
    learn = learner(0)
    with learn.trace(data=True) as t:
        learn.fit(1)
        learn.validate()
    fit_only, validate_only = t.select("fit"), t.select("validate")
    count = lambda trace: {lt.loader: lt.batches for lt in trace.loader_timing()}
    assert count(t) == {"train": 9, "valid": 6} and count(fit_only) == {"train": 9, "valid": 3}
    assert count(validate_only) == {"valid": 3}


def test_a_stage_called_outside_the_loaders_loop_is_not_counted_in_it() -> None:
    class Decoding(Callback):
        "Runs the loader's stages on one item itself, as decode does the first time"

        def before_batch(self):
            if self.training and self.iter == 2:
                self.learn.dls.train._one_pass()

    learn = learner(0)
    with learn.trace(data=True) as t:
        learn.fit(1, cbs=Decoding())
    timing = {lt.loader: lt for lt in t.loader_timing()}["train"]
    df = rows(t)
    made = df[(df["loader"] == "train") & (df["stage"] == "batch") & (df["batch"] >= 0)]
    assert timing.batches == len(made) == len(learn.dls.train)
    assert sorted(made["batch"]) == list(range(len(learn.dls.train)))


def test_a_diff_names_the_transform_that_got_slower(monkeypatch) -> None:
    from loopviz.diff import diff_traces

    _, before = fit(learner(0), data=True, epochs=2)
    monkeypatch.setattr(sys.modules[__name__], "SLEEP", 3 * SLEEP)  # SlowItem reads it at each call
    _, after = fit(learner(0), data=True, epochs=2)
    d = diff_traces(before, after)
    slower = d.data[(d.data["verdict"] == "regression")]
    assert ("train", "after_item", "SlowItem") in set(zip(slower["loader"], slower["stage"], slower["step"]))
    row = d.data[(d.data["step"] == "SlowItem") & (d.data["loader"] == "train")].iloc[0]
    assert row["change_pct"] > 100 and "Data loop: before / after" in d.text()
    assert "train after_item (SlowItem)" in set(d.regressions()["row"])
    learn = learner(0)
    with learn.trace() as plain:
        learn.fit(1)
    assert diff_traces(plain, plain).data is None


def test_the_annotated_loop_puts_each_stage_and_transform_time_on_draw() -> None:
    learn = learner(0)
    _, t = fit(learn, data=True, epochs=1)
    spec = learn.loop_spec()
    from loopviz.annotate import annotate

    draws = []
    annotate(spec, t).map(work=lambda w, phase: draws.append((phase.mode, w.data_loop)) or w)
    loops = {mode: loop for mode, loop in draws if loop is not None}
    summary = t.data_summary().set_index(["loader", "stage", "step"])
    ms, pct = loops["train"].timed("after_item", "SlowItem")
    assert ms == pytest.approx(summary.loc[("train", "after_item", "SlowItem"), "ms_per_batch"])
    assert pct == pytest.approx(summary.loc[("train", "after_item", "SlowItem"), "pct"])
    assert loops["valid"].timed("after_item", "Jitter") is not None  # (called, it passes items through)
    text = " ".join(str(learn.show_training_loop(trace=t, verbose=True)).split())
    assert f"SlowItem (order 6): {ms:.2f} ms/batch, {pct:.0f} %" in text


@pytest.mark.parametrize("workers", [0, 2])
def test_past_the_row_cap_the_rows_are_counted_and_said_and_every_view_still_works(monkeypatch, tmp_path: Path,
                                                                                   workers: int) -> None:
    import loopviz.adapters.loader_timer as loader_timer

    monkeypatch.setattr(loader_timer, "MAX_DATA_ROWS", 60)
    _, t = fit(learner(workers), data=True, epochs=1)
    assert len(t.data_work) == 60 * len(DATA_FIELDS) and t.meta["data_rows_dropped"] > 0
    note = next(n for n in t.notes() if "rows past the" in n)
    assert f"{t.meta['data_rows_dropped']:,} rows" in note
    assert "Data loop" in str(t) and t.to_html(tmp_path / "t.html").exists() and chrome_trace(t)["traceEvents"]
    t.diagnose()
    assert Trace.load(t.save(tmp_path / "t.json")).meta["data_rows_dropped"] == t.meta["data_rows_dropped"]


def test_hostile_transform_and_loader_names_reach_no_view_raw(tmp_path: Path) -> None:
    class Evil(Transform):
        "bad\x07doc"
        order = 8

        def encodes(self, x: torch.Tensor):
            return x

    Evil.__name__ = Evil.__qualname__ = "Evil\x1b[31m<b>&\u202e"
    learn = learner(0)
    learn.dls.train.after_item.add(Evil())
    _, t = fit(learn, data=True, epochs=1)
    assert any("Evil" in step for step in t.data_summary()["step"])
    text = str(t)
    assert "\x1b" not in text and "\u202e" not in text and "Evil\\x1b[31m" in text
    page = t.to_html(tmp_path / "t.html").read_text()
    assert "\x1b" not in page and "<b>&amp;" not in page.split("Evil", 1)[1][:40] and "Evil\\x1b[31m&lt;b&gt;" in page
    import json

    chrome = json.loads(t.to_chrome(tmp_path / "t.json").read_text())
    assert any("Evil\x1b[31m<b>&\u202e" in e["args"].get("steps", "") for e in chrome["traceEvents"]
               if e.get("cat") == "data")  # JSON escapes it; Perfetto shows text
    dot = learn.show_training_loop(trace=t, verbose=True, fmt="graphviz")
    assert "\x1b" not in dot.source and "<b>&" not in dot.source
    dot.save(tmp_path / "loop.svg")  # dot accepts the label
    mermaid = str(learn.show_training_loop(trace=t, verbose=True, fmt="mermaid"))
    assert "\x1b" not in mermaid and "\u202e" not in mermaid and "Evil\x1b[31m<b>" not in mermaid
