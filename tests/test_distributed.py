"""Two real processes (torchrun, gloo on CPU), each tracing a DistributedDataParallel fastai fit; merged."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from loopviz import LoopvizError, merge
from loopviz.cli import main
from tests.chrome_check import assert_nested

SCRIPT = Path(__file__).parent / "distributed_fit.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(out: Path, mode: str, nproc: int = 2) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1",
           "PYTHONPATH": str(SCRIPT.parent.parent) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), str(SCRIPT), str(out), mode]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.fixture(scope="module")
def rank_traces(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    torchrun(out, "ddp-cpu")
    return sorted(out.glob("trace.rank*.json"))


def test_each_rank_traced_its_own_fit(rank_traces):
    assert [p.name for p in rank_traces] == ["trace.rank0.json", "trace.rank1.json"]
    merged = merge(rank_traces)
    assert merged.ranks == [0, 1]
    assert all(t.meta["world_size"] == 2 for t in merged.traces)
    counts = [t.firings_df()["event"].astype(str).value_counts().sort_index() for t in merged.traces]
    assert counts[0].equals(counts[1])  # the same events, as often, on every rank


def test_rank_dependent_callbacks_show(rank_traces):
    table = merge(rank_traces).callbacks()
    progress = table[table["callback"] == "ProgressCallback"]
    assert len(progress) and progress[0].notna().all() and progress[1].isna().all()
    assert table[table["callback"] == "Recorder"][[0, 1]].notna().all().all()


def test_the_all_reduce_wait_is_visible_in_backward(rank_traces):
    merged = merge(rank_traces)
    waits = merged.stragglers().set_index("rank")
    batches = waits.loc[0, "batches"]
    # rank 1 sleeps 60 ms before each backward; rank 0 waits for it inside backward's all-reduce (half of that is the
    # line: on a loaded 2-core machine rank 1 can wait a little for rank 0's scheduling too)
    assert waits.loc[0, "wait_ms"] > 30 * batches > waits.loc[1, "wait_ms"]
    assert waits.loc[0, "backward_ms"] - waits.loc[1, "backward_ms"] > 30 * batches
    summary = merged.summary()
    backward = summary[(summary["name"] == "backward") & (summary["phase"] == "train")].iloc[0]
    assert backward["slowest_rank"] == 0 and backward["ranks"] == 2


def test_one_perfetto_file_with_a_track_per_rank(rank_traces, tmp_path):
    merged = merge(rank_traces)
    data = json.loads(merged.to_chrome(tmp_path / "ddp.perfetto.json").read_text())
    spans = [e for e in data["traceEvents"] if e["ph"] == "X"]
    assert {e["pid"] for e in spans} == {0, 1}
    for pid in (0, 1):  # each rank's track nests perfectly
        assert_nested([e for e in spans if e["pid"] == pid])
    starts = [min(e["ts"] for e in spans if e["pid"] == pid) for pid in (0, 1)]
    assert min(starts) == pytest.approx(0, abs=1e-6) and max(starts) < 5_000_000  # one timeline, within 5 s


def test_the_cli_merges_rank_files(rank_traces, tmp_path, capsys):
    assert main(["report", *map(str, rank_traces)]) == 0
    out = capsys.readouterr().out
    assert "Merged trace of 2 ranks" in out and "Waiting in backward for the slowest rank" in out
    assert main(["report", *map(str, rank_traces), "-f", "chrome", "-o", str(tmp_path / "m.json")]) == 0


def test_merging_traces_that_do_not_belong_together(rank_traces):
    with pytest.raises(LoopvizError, match="do not come from distinct ranks"):
        merge([rank_traces[0], rank_traces[0]])
    with pytest.raises(LoopvizError, match="at least one trace"):
        merge([])


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="fastai's distrib_ctx needs a GPU per rank (2 here)")
def test_distrib_ctx_on_two_gpus(tmp_path):
    torchrun(tmp_path, "distrib_ctx")
    merged = merge(sorted(tmp_path.glob("trace.rank*.json")))
    assert merged.ranks == [0, 1]
    assert merged.traces[0].clock == "cuda"
