"""How long the reports take on the largest trace the default caps keep: 250,000 firings and 1,000,000 calls.

The trace is recorded through the recorder itself, in the shape of a fastai fit (an epoch of batches, each
with the batch events, four callbacks called at each, the rest of them counted without a handler), so it
has what a real one has, only faster to make than a fit of 1,000,000 callback calls. Each report is timed
as the best of `--repeats` runs.

    .venv/bin/python benchmarks/report_time.py [--repeats 3]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from loopviz.trace.record import RAN, Recorder
from loopviz.trace.trace import Trace

BATCH_EVENTS = ("before_batch", "after_pred", "after_loss", "before_backward", "after_backward", "before_step",
                "after_step", "after_cancel_step", "before_zero_grad", "after_zero_grad", "after_batch",
                "after_cancel_batch")
CALLBACKS = [{"cls": name, "name": name.lower(), "order": order, "module": "bench"}
             for name, order in (("TrainEvalCallback", -10), ("Recorder", 50), ("ProgressCallback", 60),
                                 ("GradientClip", 11))]


def big_trace(firings: int = 250_000, calls_per_firing: int = 4) -> Trace:
    """A trace at the default caps: `firings` raw firings with `calls_per_firing` handler calls each."""
    rec = Recorder()
    trace = Trace.recording(rec)
    ids = [rec.callback_id(i, lambda facts=facts: facts) for i, facts in enumerate(CALLBACKS)]
    rec.begin_loop("fit")
    top = rec.begin_firing("before_fit", 0, -1, -1)
    rec.end_firing(top, 0)
    batches = (firings - 1) // len(BATCH_EVENTS)
    for i in range(batches):
        for event in BATCH_EVENTS:
            index = rec.begin_firing(event, 1, 0, i)
            for cid in ids[:calls_per_firing]:
                start = time.perf_counter_ns()
                rec.call(cid, start, time.perf_counter_ns(), RAN)
            rec.no_handler[1] += 2
            rec.end_firing(index, 0)
    rec.end_loop()
    trace.finish(framework="fastai (synthetic)", work_names={("after_pred", "after_loss"): "loss"})
    return trace


def best_of(repeats: int, run) -> float:
    """The fastest of `repeats` runs of `run()`, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    """Print each report's best time on the big trace."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    started = time.perf_counter()
    t = big_trace()
    print(f"trace of {t.n_firings:,} firings and {t.n_calls:,} calls, recorded in {time.perf_counter() - started:.1f} s; "
          f"raw records {(t.data.firings.nbytes + t.data.calls.nbytes) / 1e6:.1f} MB")
    with tempfile.TemporaryDirectory() as folder:
        json_path, gz_path, chrome_path, html_path = (Path(folder) / name for name in
                                                      ("t.json", "t.json.gz", "t.perfetto.json", "t.html"))
        reports = {
            "summary()": t.summary, "by_callback()": t.by_callback, "to_df()": t.to_df,
            "str(t) (the tables)": lambda: str(t),
            "to_chrome(path)": lambda: t.to_chrome(chrome_path),
            "to_html(path)": lambda: t.to_html(html_path),
            "save(.json)": lambda: t.save(json_path), "load(.json)": lambda: Trace.load(json_path),
            "save(.json.gz)": lambda: t.save(gz_path), "load(.json.gz)": lambda: Trace.load(gz_path),
        }
        for name, run in reports.items():
            print(f"  {name:22s} {best_of(args.repeats, run):6.2f} s")
        print(f"  file sizes: .json {json_path.stat().st_size / 1e6:.1f} MB, .json.gz {gz_path.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
