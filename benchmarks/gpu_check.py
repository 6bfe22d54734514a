"""Tracing on a CUDA device: the device clocks checked on a real fit, and what tracing costs a small CNN fit.

Checks (tests/test_gpu.py asserts them; this prints the figures), on four Linear(4096, 4096) layers, batches of
1024, fp32, traced with clock='cuda' and clock='sync': every firing has device times, none negative, none ending
before it starts; the firings and the work between them on the device clock, plus the loop's setup and cleanup,
against the fit's wall time; the median forward and backward per training batch by each clock, and their ratio.

Overhead: a small CNN (four conv layers, 10 classes, 3x64x64 images, batches of 128, MixedPrecision, data already on
the device) fitted untraced and traced with clock='cuda', 'sync', 'host', and 'cuda' with ranges=True (no profiler
running): the minimum CPU time and the minimum wall time (synchronized at both ends) of interleaved fits, and each
one's ratio to the untraced fit. Rounds stop early when --max-seconds have passed (at least one is run). The same,
fewer configurations, for the MLP above: a fit whose time the GPU bounds.

Who waits: the CNN and the MLP fitted with fastai's usual callbacks and traced with waits=True: the callback calls and
work that synchronised with the GPU, and the GPU work each waited out.

With --merged PATH: a few CNN batches traced with ranges=True inside torch.profiler (CPU and CUDA), merged into one
Perfetto file, and a PNG of one training batch of it beside it (docs/timeline_image.py).

    python3 benchmarks/gpu_check.py [--runs 7] [--batches 300] [--json gpu_check.json]
    .venv/bin/python benchmarks/gpu_check.py --device cpu --smoke   # the whole flow on the CPU, host clock only

Without CUDA (and without --device cpu) it exits with status 2 and one line saying so.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

warnings.filterwarnings("ignore")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: loopviz and tests.gpu_fits


def fit_times(learn: Any, device: str, trace: dict[str, Any] | None) -> tuple[float, float]:
    """CPU and wall seconds of one epoch, untraced (`trace` None) or traced with `learn.trace(**trace)`; the device
    is synchronized before and after, so the wall time holds all of the fit's device work."""
    from tests.gpu_fits import quiet, synchronize

    with quiet(learn):
        synchronize(device)
        cpu, wall = time.process_time(), time.perf_counter()
        if trace is None:
            learn.fit(1)
        else:
            with learn.trace(**trace):
                learn.fit(1)
        synchronize(device)
        return time.process_time() - cpu, time.perf_counter() - wall


def interleaved(run: Callable[[dict[str, Any] | None], tuple[float, float]], configurations: dict[str, Any],
                runs: int, deadline: float) -> dict[str, dict[str, Any]]:
    """Each configuration's CPU and wall seconds over up to `runs` rounds (one fit of each per round, after one
    warm-up round), stopping after the round that passes `deadline` (time.perf_counter)."""
    for options in configurations.values():
        run(options)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in configurations}
    for _ in range(runs):
        for name, options in configurations.items():
            times[name].append(run(options))
        if time.perf_counter() > deadline:
            break
    return {name: {"cpu_s": [c for c, _ in values], "wall_s": [w for _, w in values]} for name, values in times.items()}


def device_checks(device: str, batches: int, warmup: int) -> dict[str, Any]:
    """The figures of tests/test_gpu.py's checks, on the MLP traced with each device clock."""
    from tests.gpu_fits import device_figures, mlp_learner, per_batch_ms, quiet, timeline_vs_wall, traced_fit

    learn = mlp_learner(device, n_train=warmup + batches, n_valid=2)
    with quiet(learn):
        learn.fit(1)  # warm-up: CUDA context, allocator, cuBLAS heuristics
    out: dict[str, Any] = {"model": "4 x Linear(4096, 4096), bs 1024, fp32", "batches": batches, "warmup": warmup}
    for clock in ("cuda", "sync"):
        t = traced_fit(learn, device, clock=clock)
        out[clock] = {**device_figures(t), **timeline_vs_wall(t)}
        for work in ("forward", "backward"):
            out[clock][f"{work}_ms"] = statistics.median(per_batch_ms(t, work, skip=warmup))
    for work in ("forward", "backward"):
        out[f"{work}_cuda_over_sync"] = out["cuda"][f"{work}_ms"] / out["sync"][f"{work}_ms"]
    return out


def checks_table(checks: dict[str, Any]) -> str:
    """The device checks as a markdown table, a column per clock."""
    if "skipped" in checks:
        return f"Device checks: skipped ({checks['skipped']})."
    c, s = checks["cuda"], checks["sync"]

    def row(label: str, value: Callable[[dict[str, Any]], str]) -> str:
        return f"| {label} | {value(c)} | {value(s)} |"

    rows = [
        f"Device checks: {checks['model']}, median of {checks['batches']} training batches after {checks['warmup']}.",
        "",
        "| | clock='cuda' | clock='sync' |",
        "|---|---:|---:|",
        row("firings / without device times", lambda d: f"{d['firings']} / {d['missing']}"),
        row("negative times / end before start / out of order / negative work",
            lambda d: f"{d['negative']} / {d['end_before_start']} / {d['out_of_order']} / {d['negative_work']}"),
        row("device span + setup and cleanup (ms)", lambda d: f"{d['device_span_ms'] + d['setup_cleanup_ms']:.2f}"),
        row("wall time of the fit (ms)", lambda d: f"{d['wall_ms']:.2f}"),
        row("difference (ms)", lambda d: f"{d['difference_ms']:+.3f}"),
        row("forward per batch, median (ms)", lambda d: f"{d['forward_ms']:.3f}"),
        row("backward per batch, median (ms)", lambda d: f"{d['backward_ms']:.3f}"),
        "",
        f"cuda / sync, per batch: forward {checks['forward_cuda_over_sync']:.3f}, "
        f"backward {checks['backward_cuda_over_sync']:.3f}.",
    ]
    return "\n".join(rows)


def overhead_table(overhead: dict[str, dict[str, Any]], setting: str) -> str:
    """Minimum CPU and wall time per configuration and their ratios to the untraced fit, as a markdown table."""
    base = overhead["untraced"]
    rows = [setting, "", "| configuration | CPU ms (min) | CPU ratio | wall ms (min) | wall ratio |",
            "|---|---:|---:|---:|---:|"]
    for name, r in overhead.items():
        rows.append(f"| {name} | {r['cpu_ms']:.1f} | {r['cpu_ms'] / base['cpu_ms']:.3f} | {r['wall_ms']:.1f} | "
                    f"{r['wall_ms'] / base['wall_ms']:.3f} |")
    return "\n".join(rows)


def measure_overhead(learn: Any, device: str, configurations: dict[str, Any], runs: int, seconds: float,
                     what: str) -> tuple[dict[str, Any], str]:
    """Interleaved fits of `learn` in each configuration: the minimum CPU and wall times, and a markdown table."""
    measured = interleaved(lambda options: fit_times(learn, device, options), configurations, runs,
                           time.perf_counter() + seconds)
    overhead = {name: {"cpu_ms": min(m["cpu_s"]) * 1e3, "wall_ms": min(m["wall_s"]) * 1e3,
                       "cpu_ms_all": [round(v * 1e3, 3) for v in m["cpu_s"]],
                       "wall_ms_all": [round(v * 1e3, 3) for v in m["wall_s"]]} for name, m in measured.items()}
    rounds = len(measured["untraced"]["cpu_s"])
    setting = (f"{what}; minimum of {rounds} interleaved fits (CPU time; wall time synchronized at both ends), "
               "ratios to untraced.")
    return overhead, overhead_table(overhead, setting)


def who_waits(learn: Any, device: str, what: str, save: Path | None = None) -> dict[str, Any]:
    """`learn` fitted with fastai's usual callbacks (Recorder, ProgressCallback with its bar written to nowhere),
    traced with waits=True: who makes the host wait for the GPU, as sentences and as a markdown table."""
    import contextlib
    import io

    from loopviz.trace.reports import wait_lines
    from tests.gpu_fits import synchronize

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        learn.fit(1)  # warm-up
        synchronize(device)
        with learn.trace(waits=True) as t:
            learn.fit(1)
    if save is not None:
        t.save(save)
    waits = t.gpu_waits()
    lines = wait_lines(waits, limit=None)
    head = (f"Who makes the host wait for the GPU: {what}, with fastai's usual callbacks (Recorder, ProgressCallback), "
            "traced with waits=True.")
    rows = ["| who | phase | synced / of | syncs | waited ms | mean ms | max ms | first sync at |",
            "|---|---|---|---|---|---|---|---|"]
    for r in waits.itertuples():
        who = r.name if r.kind == "callback" else f"work: {r.name}"
        rows.append(f"| {who} | {r.phase} | {r.calls} / {r.of} | {r.syncs} | {r.wait_ms:.2f} | {r.mean_ms:.3f} | "
                    f"{r.max_ms:.3f} | `{r.site}` |")
    markdown = "\n".join([head, "", *[f"- {line}" for line in lines], "", *rows])
    return {"rows": waits.to_dict("records"), "lines": lines, "markdown": markdown}


def merged_picture(device: str, bs: int, size: int, path: Path) -> str:
    """A few CNN batches traced with ranges=True inside torch.profiler (CPU and CUDA), merged into one Perfetto
    file at `path`, and one training batch of it drawn beside it (docs/timeline_image.py)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from loopviz.trace.files import write_json
    from loopviz.trace.profiler import merged_with_profiler
    from tests.gpu_fits import cnn_learner, quiet

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "docs"))
    from timeline_image import merged_timeline_png

    learn = cnn_learner(device, bs=bs, size=size, n_train=6, n_valid=1)
    with quiet(learn):
        learn.fit(1)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof, \
                learn.trace(ranges=True) as t:
            learn.fit(1)
    merged = merged_with_profiler(t, prof)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(merged, path)
    fired = [e for e in merged["traceEvents"] if e.get("cat") == "event" and e.get("args", {}).get("phase") == "train"
             and e["args"].get("iter") == 3 and e["name"] in ("before_batch", "after_batch")]
    start, end = fired[0]["ts"], fired[-1]["ts"] + fired[-1]["dur"]
    # the GPU runs behind the host: show until the last kernel that began during the batch has ended
    end = max([end] + [e["ts"] + e.get("dur", 0) for e in merged["traceEvents"]
                       if e.get("cat") == "kernel" and start <= e.get("ts", -1) <= end])
    margin = (end - start) * 0.02
    png = path.with_name(path.name.split(".")[0] + ".png")
    merged_timeline_png(merged, png, start - margin, end + margin,
                        title=f"One training batch on {torch.cuda.get_device_name()}: loopviz's events, callbacks "
                              "and work above torch.profiler's operators and CUDA kernels (ranges=True, MixedPrecision)")
    info = merged["otherData"]["profiler"]
    return f"wrote {path} and {png}: profiler placed by {info['placed by']}, firings {info['firings']}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="torch device (default cuda; 'cpu' runs the flow without "
                        "the device-only checks and with clock='host' only)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: a quick run of the whole flow")
    parser.add_argument("--runs", type=int, default=7, help="interleaved rounds of the overhead fits (default 7)")
    parser.add_argument("--batches", type=int, default=300, help="training batches per CNN fit (default 300)")
    parser.add_argument("--bs", type=int, default=128, help="CNN batch size (default 128)")
    parser.add_argument("--check-batches", type=int, default=20, help="MLP batches the clocks are compared on")
    parser.add_argument("--mlp-batches", type=int, default=40, help="MLP batches per fit of the GPU-bound overhead "
                        "and waits (default 40)")
    parser.add_argument("--max-seconds", type=float, default=150.0,
                        help="stop the overhead rounds after this many seconds of them (default 150)")
    parser.add_argument("--json", type=Path, help="also write the figures and tables here as JSON")
    parser.add_argument("--save-traces", type=Path, help="save the traces of the waits fits in this folder")
    parser.add_argument("--merged", type=Path, help="write a merged loopviz + torch.profiler trace of a few CNN "
                        "batches here (.json.gz), and beside it a PNG of one training batch")
    args = parser.parse_args()
    import torch

    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        print(f"gpu_check: no CUDA device (torch {torch.__version__} sees none); run it on a GPU machine, or use "
              "--device cpu --smoke for the flow on the CPU.", file=sys.stderr)
        return 2
    started = time.perf_counter()
    import fastai
    import fastai.callback.all  # noqa: F401  (as in a notebook)

    import loopviz  # patches Learner.trace
    from tests.gpu_fits import cnn_learner, mlp_learner

    size, runs, batches, check_batches = 64, args.runs, args.batches, args.check_batches
    if args.smoke:
        size, runs, batches, check_batches = 16, min(runs, 2), min(batches, 8), min(check_batches, 4)
    device_name = torch.cuda.get_device_name() if cuda else platform.processor() or platform.machine()
    print(f"gpu_check on {args.device} ({device_name}), torch {torch.__version__}, fastai {fastai.__version__}, "
          f"loopviz {loopviz.__version__}, Python {platform.python_version()}", flush=True)

    if cuda:
        checks = device_checks(args.device, check_batches, warmup=2 if args.smoke else 4)
    else:
        checks = {"skipped": f"no device clock on {args.device}"}
    print("\n" + checks_table(checks) + "\n", flush=True)

    learn = cnn_learner(args.device, bs=args.bs, size=size, n_train=batches, n_valid=max(batches // 10, 1))
    cnn = (f"small CNN (4 conv layers, 10 classes), 3x{size}x{size}, bs {args.bs}, {batches} training batches, "
           "MixedPrecision")
    configurations: dict[str, Any] = {"untraced": None}
    if cuda:
        configurations.update({"clock='cuda'": {"clock": "cuda"}, "clock='sync'": {"clock": "sync"},
                               "clock='host'": {"clock": "host"}, "clock='cuda', ranges=True": {"clock": "cuda",
                                                                                                "ranges": True},
                               "clock='cuda', waits=True": {"clock": "cuda", "waits": True}})
    else:
        configurations.update({"clock='host'": {"clock": "host"}, "clock='host', ranges=True": {"clock": "host",
                                                                                                "ranges": True}})
    overhead, table = measure_overhead(learn, args.device, configurations, runs, args.max_seconds,
                                       f"Tracing overhead on {device_name}: {cnn}, no progress bar")
    print(table, flush=True)
    waits: dict[str, Any] = {}
    if cuda:  # the same on a fit the GPU bounds: 4 x Linear(4096), each batch ~9 ms of GPU work
        mlp = f"4 x Linear(4096, 4096), bs 1024, fp32, {args.mlp_batches} training batches"
        big = mlp_learner(args.device, n_train=args.mlp_batches, n_valid=2)
        gpu_bound = {name: configurations[name] for name in ("untraced", "clock='cuda'", "clock='cuda', waits=True")}
        overhead["gpu_bound"], gpu_table = measure_overhead(
            big, args.device, gpu_bound, runs, args.max_seconds / 3, f"Tracing overhead on {device_name}: {mlp}")
        table += "\n\n" + gpu_table
        print("\n" + gpu_table, flush=True)
        folder = args.save_traces
        waits = {"cnn": who_waits(learn, args.device, f"the {cnn}", folder and folder / "waits_cnn.json.gz"),
                 "mlp": who_waits(mlp_learner(args.device, n_train=args.mlp_batches, n_valid=2), args.device,
                                  f"the {mlp}", folder and folder / "waits_mlp.json.gz")}
        for found in waits.values():
            print("\n" + found["markdown"], flush=True)
    if cuda and args.merged:
        print(merged_picture(args.device, args.bs, size, args.merged), flush=True)
    elapsed = time.perf_counter() - started
    print(f"\n{elapsed:.0f} s in all", flush=True)
    if args.json:
        report = {"device": args.device, "device_name": device_name, "torch": torch.__version__,
                  "fastai": fastai.__version__, "python": platform.python_version(), "smoke": args.smoke,
                  "settings": {"runs": runs, "rounds": len(overhead["untraced"]["cpu_ms_all"]), "batches": batches,
                               "bs": args.bs, "size": size, "check_batches": check_batches,
                               "mlp_batches": args.mlp_batches},
                  "checks": checks, "overhead": overhead, "waits": waits, "seconds": elapsed,
                  "markdown": "\n\n".join([checks_table(checks), table, *(w["markdown"] for w in waits.values())])}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
