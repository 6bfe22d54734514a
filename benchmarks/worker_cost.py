"""What a loader's worker processes cost the main process, with nothing for them to take over: fastai's TfmdDL on
synth_dbunch's in-memory tensors (items cost microseconds), one pass timed with 0 and 2 workers, short and long.

From two pass lengths, per pass: `start` (the workers' start, which fastai's DataLoader pays every epoch) and
`per batch` (what the main process waits per batch: with workers, handing each batch over). `diagnose()` suggests
workers for a fit that waits for data only when the wait, less these costs taken low (`WORKER_START_MS`,
`WORKER_HANDOFF_MS` in loopviz/trace/diagnose.py), is still at least half of it. Wall clock, the minimum of `--runs`
passes each, interleaved.

    .venv/bin/python benchmarks/worker_cost.py [--runs 5] [--workers 2]
"""
from __future__ import annotations

import argparse
import time


def pass_ms(loader) -> float:
    """One pass over the loader, in ms (wall clock)."""
    start = time.perf_counter()
    for _ in loader:
        pass
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    import torch
    from fastai.test_utils import synth_dbunch

    torch.set_num_threads(1)
    short, long = 20, 220
    for bs in (16, 256):
        loaders = {(workers, n): synth_dbunch(bs=bs, n_train=n, n_valid=1).train.new(num_workers=workers)
                   for workers in (0, args.workers) for n in (short, long)}
        for loader in loaders.values():
            pass_ms(loader)  # warm
        best = {key: float("inf") for key in loaders}
        for _ in range(args.runs):
            for key, loader in loaders.items():
                best[key] = min(best[key], pass_ms(loader))
        for workers in (0, args.workers):
            per_batch = (best[workers, long] - best[workers, short]) / (long - short)
            start = best[workers, short] - short * per_batch
            print(f"bs {bs:>3}, num_workers={workers}: per batch {per_batch:.3f} ms, start {start:.1f} ms a pass "
                  f"({short} batches {best[workers, short]:.1f} ms, {long} batches {best[workers, long]:.1f} ms)")


if __name__ == "__main__":
    main()
