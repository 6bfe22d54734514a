"""Memory of a trace: bytes per raw record and peak memory for a fit of over a million callback calls.

Runs one fit on synth_learner (bs=4, one torch thread) long enough that fastai makes at least
`--calls` callback calls, traced, and reports the raw-record bytes, bytes per record, and the
process's peak RSS growth; then the same fit with a small cap, to show memory stays flat past it.

    .venv/bin/python benchmarks/trace_memory.py [--calls 1000000]
"""
from __future__ import annotations

import argparse
import resource
import time
import warnings

import torch

warnings.filterwarnings("ignore")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1_000_000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    import fastai.callback.all  # noqa: F401
    from fastai.test_utils import synth_learner

    import loopviz  # noqa: F401

    per_batch = 3 * 8  # 3 callbacks (no_bar removes ProgressCallback) x about 8 events per training batch
    batches = args.calls // per_batch + 1
    learn = synth_learner(n_trn=batches // 4 + 1, n_val=1)
    learn.dls.train.bs = learn.dls.valid.bs = 4
    start = time.perf_counter()
    with learn.no_bar(), learn.no_logging():
        learn.fit(1)
    print(f"untraced: {len(learn.dls.train):,} batches in {time.perf_counter() - start:.1f} s; "
          f"peak RSS {peak_rss_mb():.0f} MB (the peak only grows: each run below adds what it needs beyond it)")
    for label, kwargs in (("cap 10,000 records (aggregates past it)", {"max_calls": 10_000, "max_firings": 10_000}),
                          ("raw records kept (caps above the run)", {"max_calls": 10**8, "max_firings": 10**8})):
        before = peak_rss_mb()
        start = time.perf_counter()
        with learn.no_bar(), learn.no_logging(), learn.trace(**kwargs) as t:
            learn.fit(1)
        seconds = time.perf_counter() - start
        fastai_calls = t.n_calls + t.no_handler_calls + t.dropped_calls
        raw_bytes = t.data.firings.nbytes + t.data.calls.nbytes
        records = t.n_firings + t.n_calls
        print(f"{label}: {len(learn.dls.train):,} batches in {seconds:.1f} s; fastai made {fastai_calls:,} callback calls "
              f"({t.n_calls + t.dropped_calls:,} to a handler) in {t.n_firings + t.dropped_firings:,} event firings")
        print(f"  raw records: {t.n_firings:,} firings + {t.n_calls:,} calls = {raw_bytes / 1e6:.1f} MB, "
              f"{raw_bytes / max(records, 1):.0f} bytes per record (32 per firing, 24 per call); "
              f"dropped past the cap: {t.dropped_firings:,} firings, {t.dropped_calls:,} calls")
        print(f"  peak RSS: {before:.0f} MB before, {peak_rss_mb():.0f} MB after (+{peak_rss_mb() - before:.0f} MB)")
        del t


if __name__ == "__main__":
    main()
