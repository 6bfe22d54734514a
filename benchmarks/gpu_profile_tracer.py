"""Where a traced fit's host time goes on a GPU machine: the small CNN of gpu_check.py fitted untraced and traced
(clock='cuda' and 'host') under cProfile, the functions that take the most time of their own printed for each.

    python3 benchmarks/gpu_profile_tracer.py [--batches 300] [--top 25]
"""
from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    import fastai.callback.all  # noqa: F401
    import torch

    import loopviz  # noqa: F401
    from tests.gpu_fits import cnn_learner, quiet, synchronize

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_profile_tracer: no CUDA device; use --device cpu.", file=sys.stderr)
        return 2
    learn = cnn_learner(args.device, n_train=args.batches, n_valid=max(args.batches // 10, 1))
    runs = [("warm-up", None), ("untraced", None), ("clock='host'", {"clock": "host"})]
    if args.device.startswith("cuda"):
        runs.append(("clock='cuda'", {"clock": "cuda"}))
    for name, options in runs:
        profiler = cProfile.Profile()
        with quiet(learn):
            synchronize(args.device)
            profiler.enable()
            if options is None:
                learn.fit(1)
            else:
                with learn.trace(**options):
                    learn.fit(1)
            synchronize(args.device)
            profiler.disable()
        if name == "warm-up":
            continue
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        print(f"\n== {name}: {stats.total_tt * 1e3:.0f} ms under cProfile")
        stats.sort_stats("tottime").print_stats(args.top)
        print("\n".join(line for line in out.getvalue().splitlines()[6:] if line.strip()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
