"""`diagnose(data)`: what a trace says is slow, named, with the fix for the framework that ran it.

Each finding reads the analysis layer only (the summary, the callbacks' table, the per-batch table, the waits for the
GPU, and the loaders' settings the adapter noted), so a trace loaded from a file is diagnosed as the live one was.
Every finding's figures come from those tables; its thresholds are `THRESHOLDS` (listed in docs/diagnose.md, which a
test compares with this table). A finding's saving is an upper bound: the most time the trace shows the fix could
take away, never an estimate of what it will.
"""
from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator, NamedTuple

import numpy as np
import pandas as pd

from loopviz.errors import LoopvizError
from loopviz.trace.cost import TracingCost, cost_entry
from loopviz.trace.data import TraceData
from loopviz.trace.datatiming import has_data, loader_timing
from loopviz.trace.reports import by_callback, gpu_waits, summary, total_ns, work_df

__all__ = ["Finding", "Findings", "diagnose", "THRESHOLDS", "SEVERITIES", "ADVICE_KEYS", "GENERIC_FIXES", "advice_of"]

SEVERITIES = ("info", "warning", "critical")


class Band(NamedTuple):
    """A finding's thresholds on its measure: warning from `warning`, critical from `critical`."""

    warning: float
    critical: float
    measure: str  # what is compared, for the docs


_STALL_RATIO = 15.0  # a first batch's wait counts as a stall past this many times the median wait
_STEP_FLOOR = 0.05  # the step finding needs the step to be at least this share of the run
_MIN_STEPS = 20  # ... and this many steps (the median of a few steps moves with whatever else the machine runs)
_ONE_OFF_MS = 1000.0  # a handler called once is named only past this (one first call of a short run is no culprit)
# What a loader's worker processes cost the main process at the least: starting them (every epoch for a loader that
# starts them again) and handing each batch over. A quarter of what benchmarks/worker_cost.py measured on a 2-core
# machine (44 ms, 1.3 ms), so that workers are not ruled out where more cores make them cheaper
WORKER_START_MS, WORKER_HANDOFF_MS = 10.0, 0.3
THRESHOLDS: dict[str, Band] = {
    "input_bound": Band(0.10, 0.20, "the time spent waiting for the next batch, as a share of the run"),
    "epoch_start_stall": Band(0.02, 0.10, "the first batch's extra wait in every epoch after the first, as a share of "
                                          f"the run (counted where that wait is over {_STALL_RATIO:g} times the median)"),
    "slow_callback": Band(0.05, 0.20, "one handler's time (a callback's method for one event), as a share of the "
                                      f"run (called more than once, or taking {_ONE_OFF_MS / 1000:g} s or more)"),
    "framework_callback": Band(0.10, 0.25, "one handler of the framework's own callbacks at an event that is not "
                                           "per batch (its per-batch ones count in 'dispatch'), as a share of the run"),
    "validation": Band(0.25, 0.50, "validation's time in a fit, as a share of the run"),
    "dispatch": Band(0.5, 1.0, "the framework's own work per batch (calling every callback, and its own callbacks' "
                               "per-batch handlers) over the batches' forward, loss, backward and step"),
    "step": Band(1.0, 2.0, f"the optimizer step's median over forward and backward's medians together (when the "
                           f"steps are over {100 * _STEP_FLOOR:g} % of the run, {_MIN_STEPS} steps or more)"),
    "gpu_wait": Band(0.05, 0.20, "the GPU work one callback or piece of work waited out, as a share of the run"),
    "gpu_idle": Band(0.10, 0.25, "the time the GPU sat idle between training batches, waiting for the host to start "
                                 "the next one, as a share of the run (a trace on the 'cuda' clock)"),
    "mixed_precision": Band(0.25, 0.50, "the model's forward and backward on a CUDA device in full precision (no "
                                        "mixed precision), as a share of the run"),
}
_FULL_PRECISION = ("32", "32-true", "64", "64-true")  # precisions (as `meta['precision']` names them) without AMP
@dataclass(frozen=True)
class Finding:
    """One thing the trace shows slowing the run, with the figures behind it and the fix."""

    kind: str  # a key of THRESHOLDS
    severity: str  # one of SEVERITIES
    title: str  # one line
    evidence: tuple[str, ...]  # the measured figures, each saying which table it comes from
    culprit: str  # the setting or the callback at fault
    fix: str  # code for the traced framework
    saving_ms: float  # the most time the fix could take away (an upper bound from the trace)
    figures: dict[str, float] = field(default_factory=dict)  # the numbers the finding was decided on

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        out = asdict(self)
        out["evidence"] = list(self.evidence)
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Finding:
        """A finding back from `to_json()`."""
        try:
            return cls(str(obj["kind"]), str(obj["severity"]), str(obj["title"]), tuple(map(str, obj["evidence"])),
                       str(obj["culprit"]), str(obj["fix"]), float(obj["saving_ms"]),
                       {str(k): float(v) for k, v in dict(obj.get("figures", {})).items()})
        except (KeyError, TypeError, ValueError) as error:
            raise LoopvizError(f"not a finding loopviz wrote ({error}); pass what Finding.to_json() returned.") from None


@dataclass(frozen=True, repr=False)
class Findings:
    """A trace's findings, most severe first (then the largest saving), and the figures each check looked at (the
    data; `loopviz.trace.diagnosis.Diagnosis`, what `t.diagnose()` returns, adds how it shows itself)."""

    framework: str  # the traced loop's framework and version, as its adapter named them
    run_ms: float
    findings: tuple[Finding, ...]
    checked: dict[str, float] = field(default_factory=dict)  # what each check measured, found or not
    tracing: dict[str, Any] = field(default_factory=dict)  # tracing's own cost (`loopviz.trace.cost.cost_entry`)

    def __iter__(self) -> Iterator[Finding]:
        return iter(self.findings)

    def __len__(self) -> int:
        return len(self.findings)

    def __getitem__(self, index: int) -> Finding:
        return self.findings[index]

    @property
    def top(self) -> Finding | None:
        """The first finding (the most severe), or None when nothing was found."""
        return self.findings[0] if self.findings else None

    def to_df(self) -> pd.DataFrame:
        """One row per finding: severity, kind, title, culprit, fix, saving (ms and % of the run), evidence."""
        rows = [(f.severity, f.kind, f.title, f.culprit, f.fix, f.saving_ms,
                 round(100 * f.saving_ms / self.run_ms, 2) if self.run_ms else 0.0, "; ".join(f.evidence))
                for f in self.findings]
        return pd.DataFrame(rows, columns=["severity", "kind", "title", "culprit", "fix", "saving_ms", "saving_pct",
                                           "evidence"])

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (what `from_json` reads back)."""
        return {"framework": self.framework, "run_ms": self.run_ms, "checked": dict(self.checked),
                "tracing": dict(self.tracing), "findings": [f.to_json() for f in self.findings]}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Findings:
        """A diagnosis back from `to_json()`."""
        try:
            return cls(str(obj["framework"]), float(obj["run_ms"]),
                       tuple(Finding.from_json(f) for f in obj["findings"]),
                       {str(k): float(v) for k, v in dict(obj.get("checked", {})).items()},
                       _tracing(obj.get("tracing", {})))
        except (KeyError, TypeError, ValueError) as error:
            raise LoopvizError(f"not a diagnosis loopviz wrote ({error}); pass what Diagnosis.to_json() "
                               f"returned.") from None

    def __repr__(self) -> str:
        kinds = ", ".join(f"{f.severity} {f.kind}" for f in self.findings) or "nothing found"
        return f"<{type(self).__name__} of a {self.run_ms:.1f} ms run: {kinds}>"


def _tracing(obj: Any) -> dict[str, Any]:
    """A diagnosis's tracing cost back from JSON: the estimate's figures, or why it is unknown."""
    entry = dict(obj)
    if "unmeasured" in entry:
        return {"unmeasured": str(entry["unmeasured"])}
    counts = ("firings", "calls", "events", "handlers")
    return {key: (int if key in counts else float)(entry[key]) for key in TracingCost._fields if key in entry}


# -- the framework's words (the adapter's advice, kept in the trace's meta) ----------------------------------------


# What a diagnosis says where the adapter gave no advice: framework-neutral. `{workers}`, `{callback}` and `{event}`
# are filled in (by replacement: an advice from a file is never a format string).
GENERIC_FIXES = {
    "loader": "DataLoader(dataset, batch_size=..., num_workers={workers})",
    "loader_persistent": "DataLoader(dataset, batch_size=..., num_workers={workers}, persistent_workers=True)",
    "stall": "DataLoader(dataset, batch_size=..., num_workers={workers}, persistent_workers=True)",
    "items": "make each item cheaper to make (decode or tokenize once and cache; augment on the GPU): the loader's "
             "{workers} workers already use every core",
    "every_n": "if step % 10: return  # first line of {callback}.{event}: its work every 10th batch",
    "rarer": "{callback}.{event} already skips most batches: do its heavy calls less often (every 100 batches, or "
             "once an epoch), or make them cheaper",
    "remove": "make {callback}.{event} cheaper, or run the loop without {callback}",
    "validation": "validate less often, or on fewer or larger batches",
    "batch_size": "larger batches: the loop's cost per event is paid per batch",
    "loader_batch": "larger batches (batch_size=...): part of the loader's cost is paid per batch; tracing with "
                    "data=True shows its stages",
    "step": "torch.optim.AdamW(params, foreach=True)  # a multi-tensor step (fused=True on CUDA)",
    "host_bound": "keep the GPU fed: DataLoader(..., num_workers={workers}, pin_memory=True) with "
                  "batch.to(device, non_blocking=True), and no .item() or print of a tensor between batches",
    "precision": "with torch.autocast('cuda', dtype=torch.bfloat16): loss = loss_func(model(x), y)  # mixed precision",
}
ADVICE_KEYS = {  # what an adapter's advice may hold (meta['advice']), and what each is
    "data_work": "the work between batches that waits for the next one",
    "compute_work": "the batch's own work (forward, loss, backward, step...): without it, no dispatch check",
    "step_work": "the optimizer step's work", "forward_backward_work": "forward and backward's work",
    "per_batch_events": "the events fired once a batch (a handler there may work every N batches)",
    "work_events": "the events whose handlers are the model's own work (a training step), never a callback's culprit",
    "model_events": "the events whose handlers are the model's forward and backward (where no work names them)",
    "own_modules": "the module prefixes of the framework's own callbacks",
    "fixes": "the fixes in the framework's words (the keys of GENERIC_FIXES)",
    "own_fixes": "per class of the framework's own callbacks, the setting that makes it cheaper",
}


class _Advice(NamedTuple):
    data_work: str | None
    compute_work: tuple[str, ...]
    step_work: str | None
    forward_backward_work: tuple[str, ...]
    per_batch_events: frozenset[str]
    work_events: frozenset[str]
    model_events: tuple[str, ...]
    own_modules: tuple[str, ...]
    fixes: dict[str, str]
    own_fixes: dict[str, str]


def advice_of(data: TraceData) -> _Advice:
    """The adapter's advice for this trace (its meta, checked as files are), with GENERIC_FIXES where it gave none."""
    given = data.meta.get("advice")
    given = given if isinstance(given, dict) else {}

    def names(key: str) -> tuple[str, ...]:
        value = given.get(key)
        return tuple(str(v) for v in value) if isinstance(value, list) else ()

    def text(key: str) -> str | None:
        value = given.get(key)
        return value if isinstance(value, str) and value else None

    def table(key: str) -> dict[str, str]:
        value = given.get(key)
        return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}

    return _Advice(text("data_work"), names("compute_work"), text("step_work"), names("forward_backward_work"),
                   frozenset(names("per_batch_events")), frozenset(names("work_events")), names("model_events"),
                   names("own_modules"),
                   {**GENERIC_FIXES, **table("fixes")},
                   table("own_fixes"))


def _fix(run: "_Run", key: str, **words: Any) -> str:
    """The advice's fix `key`, its {words} filled in."""
    text = run.advice.fixes.get(key, GENERIC_FIXES[key])
    for name, value in words.items():
        text = text.replace("{" + name + "}", str(value))
    return text


# -- the checks -------------------------------------------------------------------------------------


class _Run(NamedTuple):
    data: TraceData
    advice: _Advice
    run_ms: float
    summary: pd.DataFrame
    callbacks: pd.DataFrame
    loaders: dict[str, Any]  # the timed data loop's LoaderTiming per loader that gave batches (data=True), else none


def _severity(value: float, band: Band) -> str | None:
    return "critical" if value >= band.critical else "warning" if value >= band.warning else None


def _banded(checked: dict[str, float], name: str, kind: str, part: float, whole: float) -> tuple[float, str | None]:
    """`part / whole`, noted in `checked` under `name`, and its severity in `kind`'s band."""
    ratio = part / whole
    checked[name] = ratio
    return ratio, _severity(ratio, THRESHOLDS[kind])


def _row_line(row: Any, what: str) -> str:
    """A summary row as evidence."""
    phase = f" ({row.phase})" if row.phase else ""
    named = f"{what} '{row.name}'" if what else str(row.name)
    return (f"{named}{phase}: {int(row.count)} times, {row.total_ms:.1f} ms in all, {row.pct:.1f} % of "
            f"the run; mean {row.mean_ms:.3f} ms, p95 {row.p95_ms:.3f} ms (summary)")


def _work(run: _Run, names: tuple[str, ...], phase: str | None = "train") -> pd.DataFrame:
    s = run.summary
    rows = s[(s["kind"] == "work") & s["name"].isin(names)]
    return rows if phase is None else rows[rows["phase"] == phase]


def _loaders(run: _Run) -> dict[str, Any]:
    loaders = run.data.meta.get("loaders")
    return loaders if isinstance(loaders, dict) else {}


def _input_bound(run: _Run, checked: dict[str, float]) -> list[Finding]:
    name = run.advice.data_work
    rows = _work(run, (name,)) if name else run.summary.iloc[0:0]  # training's waits (validation's are its own)
    if not len(rows):
        return []
    waited = float(rows["total_ms"].sum())
    share, severity = _banded(checked, "data_share", "input_bound", waited, run.run_ms)
    if severity is None:
        return []
    train = _loaders(run).get("train", {})
    workers = train.get("num_workers")
    cpus = run.data.meta.get("cpus")
    cores = int(cpus) if isinstance(cpus, int) and cpus > 0 else None
    most = max(2, min(8, cores or 8))  # workers worth suggesting: the cores (8 where they are not known)
    setting = "the training loader" + (f" (num_workers={workers})" if workers is not None else "")
    evidence = tuple(_row_line(row, "work") for row in rows.itertuples())
    if cores is not None:
        evidence += (f"the machine that ran it had {cores} CPU cores (trace meta)",)
    key = "loader" if train.get("restarts_workers") else "loader_persistent"  # (such a loader would not keep them)
    suggest = min(max(2, 2 * workers), most) if isinstance(workers, int) and workers > 0 else most
    timing = _timed_loader(run, "train")
    if timing is not None:  # the data loop was timed (data=True): the workers it needs, and the transform to blame
        evidence += _loader_evidence(timing)
        setting = _loader_culprit(timing, setting)
        if timing.delivered_per_s > 0 and timing.consumed_per_s > timing.delivered_per_s:
            needed = math.ceil(max(1, timing.workers) * timing.consumed_per_s / timing.delivered_per_s)
            suggest = min(max(2, needed), most)
    if isinstance(workers, int) and workers >= most:  # more workers than cores would not help: cheaper items would
        key, suggest = "items", workers
        evidence += (f"the loader already has {workers} workers for {cores or 'unknown'} cores",)
    if workers == 0:
        batches = int(rows["count"].sum())
        starts = _passes(run, name) if train.get("restarts_workers") else 1
        cost = starts * WORKER_START_MS + batches * WORKER_HANDOFF_MS
        if waited - cost < waited / 2:  # workers would cost about as much as they could take off: not worth it
            key = "loader_batch"
            setting = (f"the training loader's own work, {waited / max(1, batches):.2f} ms a batch (num_workers=0): "
                       "too little for worker processes to take over")
            evidence += (f"workers would cost at least {WORKER_START_MS:g} ms each time they start (here {starts}) "
                         f"and {WORKER_HANDOFF_MS:g} ms for each batch they hand over (here {batches} waits): "
                         f"{cost:.1f} ms, against the {waited:.1f} ms they could take off (benchmarks/worker_cost.py)",)
    return [Finding("input_bound", severity, f"The model waits for data: {100 * share:.0f} % of the run is spent "
                    f"getting the next batch", evidence, setting, _fix(run, key, workers=suggest), waited,
                    {"share": share, "waited_ms": waited})]


def _training_draws(run: _Run, name: str) -> pd.DataFrame:
    """Each span of the data work `name` in training, in an epoch (work_df's rows)."""
    work = work_df(run.data)
    return work[(work["work"] == name) & (work["phase"] == "train") & (work["epoch"] >= 0)]


def _passes(run: _Run, name: str) -> int:
    """How many passes over the training loader the trace saw: the (loop, epoch) pairs of its data work."""
    return max(1, len(_training_draws(run, name)[["loop", "epoch"]].drop_duplicates()))


def _timed_loader(run: _Run, name: str) -> Any:
    """The loader's timing when the trace timed its data loop (data=True), else None."""
    return run.loaders.get(name)


def _loader_timings(data: TraceData) -> dict[str, Any]:
    """Each loader's timing that gave batches, when the trace timed its data loop (read once per diagnosis)."""
    if not has_data(data):
        return {}
    return {timing.loader: timing for timing in loader_timing(data) if timing.batches}


def _loader_evidence(timing: Any) -> tuple[str, ...]:
    """What the timed data loop says: the slowest step's share, and batches delivered against consumed."""
    stage, step, share = timing.slowest
    where = f"in the {timing.workers} workers" if timing.workers else "in the main process (num_workers=0)"
    lines = (f"{where}, {_step_name(stage, step)} takes {100 * share:.0f} % of the loader's work "
             f"(data loop, t.data_summary())",) if stage else ()
    return lines + (f"the loader delivers {timing.delivered_per_s:.1f} batches/s ({timing.batch_ms:.2f} ms a batch "
                    f"in each of {max(1, timing.workers)} processes) against {timing.consumed_per_s:.1f} the loop "
                    f"consumes; the main process waited {timing.wait_ms:.2f} ms a batch past each pass's first",)


def _loader_culprit(timing: Any, setting: str) -> str:
    """The culprit named down to the transform when the data loop was timed."""
    stage, step, share = timing.slowest
    return f"{setting}: its {_step_name(stage, step)} ({100 * share:.0f} % of its work)" if stage else setting


def _step_name(stage: str, step: str) -> str:
    """A transform with its stage ('Decode (after_item)'), or a stage timed whole ('create_batch')."""
    return f"{step} ({stage})" if step else stage


def _epoch_stalls(run: _Run, checked: dict[str, float]) -> list[Finding]:
    name = run.advice.data_work
    if name is None:
        return []
    work = _training_draws(run, name).sort_values("start", kind="stable")
    if len(work) < 4 or len(work[["loop", "epoch"]].drop_duplicates()) < 2:
        return []
    waits = work["dur"].to_numpy(float) / 1e6
    typical = float(np.median(waits))
    firsts = work.groupby(["loop", "epoch"], sort=False).head(1)
    later = firsts[firsts["loop"].duplicated()]["dur"].to_numpy(float) / 1e6  # a loop's first epoch starts workers once
    if not len(later):
        return []
    stalls = later - typical
    stalled = stalls[(later > _STALL_RATIO * max(typical, 1e-6)) & (stalls > 0)]
    extra = float(stalled.sum())
    share, severity = _banded(checked, "epoch_stall_share", "epoch_start_stall", extra, run.run_ms)
    if severity is None or len(stalled) < max(1, len(later) // 2):
        return []
    train = _loaders(run).get("train", {})
    workers, persistent = train.get("num_workers"), train.get("persistent_workers")
    evidence = (f"the first batch of {len(stalled)} of {len(later)} later epochs waited {extra / len(stalled):.1f} ms "
                f"more than the median wait for a batch ({typical:.2f} ms), {extra:.1f} ms in all (work '{name}', "
                f"training's, the first of each epoch)",)
    timing = _timed_loader(run, "train")
    if timing is not None and timing.first_batch_ms:  # the data loop timed: from each pass's start to its first batch
        evidence += (f"the training loader's passes reached their first batch after "
                     f"{', '.join(f'{ms:.1f}' for ms in timing.first_batch_ms)} ms; a batch takes "
                     f"{timing.batch_ms:.2f} ms to make (data loop)",)
    if workers == 0:  # no workers to start: the loader's own first items are slow
        title, setting = "Every epoch starts with a stall", "the first items the loader makes each epoch (num_workers=0)"
        fix = "look at what the dataset does for an epoch's first items (a cache filled, a file opened, a shuffle)"
    else:
        title = "Every epoch starts with a stall: the loader's workers start again"
        setting = "the training loader's workers, started again every epoch"
        if workers is not None:
            setting += f" (num_workers={workers}, persistent_workers={persistent})"
        fix = _fix(run, "stall", workers=max(2, int(workers or 0)))
    return [Finding("epoch_start_stall", severity, title, evidence, setting, fix, extra,
                    {"share": share, "stall_ms": extra, "typical_ms": typical})]


def _own(run: _Run, callback: str) -> bool:
    """True for one of the framework's own callbacks (by the module the trace noted for it)."""
    prefixes = run.advice.own_modules
    modules = {str(c.get("module", "")) for c in run.data.callbacks if c.get("cls") == callback}
    return bool(modules) and all(module.startswith(prefixes) for module in modules) if prefixes else False


def _source_of(run: _Run, callback: str, event: str) -> str:
    """Where the handler is defined, when its class is already imported here (nothing is imported for it)."""
    for facts in run.data.callbacks:
        if facts.get("cls") != callback:
            continue
        module = sys.modules.get(str(facts.get("module", "")))
        code = getattr(getattr(getattr(module, callback, None), event, None), "__code__", None)
        if code is not None:
            return f"{code.co_filename}:{code.co_firstlineno}"
    return ""


_HEAVY = 10.0  # a handler's heavy calls: past this many times its median call (and the median's and heaviest's mean)
_SKIPS = 0.8  # a handler 'already works every N batches' when its heavy calls are at most half and hold this share


def _rhythm(run: _Run, callback: str, event: str) -> tuple[bool, str] | None:
    """Whether a per-batch handler works at every call or already on a few (its raw calls' durations): (True when it
    already skips, the evidence), or None without raw calls to tell."""
    from loopviz.trace.layout import C_CALLBACK, C_DUR, C_FIRING, F_EVENT
    from loopviz.trace.reports import call_matrix, firing_matrix

    ids = [i for i, facts in enumerate(run.data.callbacks) if facts.get("cls") == callback]
    if event not in run.data.events or not ids:
        return None
    calls, firings = call_matrix(run.data), firing_matrix(run.data)
    mine = np.isin(calls[:, C_CALLBACK], ids) & (firings[calls[:, C_FIRING], F_EVENT] == run.data.events.index(event))
    spent = calls[mine, C_DUR].astype(np.float64) / 1e6
    if len(spent) < 4 or spent.sum() <= 0:
        return None
    median = float(np.median(spent))
    # past the geometric mean of the median and the heaviest call too: a call's jitter is not heavy, and one outlier
    # of a heavy call does not make the other heavy calls light
    heavy = spent > max(_HEAVY * median, math.sqrt(median * float(spent.max())))
    share = float(spent[heavy].sum() / spent.sum())
    if heavy.sum() <= len(spent) / 2 and share >= _SKIPS:
        return True, (f"it already works on only {int(heavy.sum())} of its {len(spent)} calls (over {_HEAVY:g} times "
                      f"its median call of {median:.3f} ms), which take {100 * share:.0f} % of its time (raw calls)")
    return False, (f"it works at every call: its median call takes {median:.3f} ms, its mean "
                   f"{float(spent.mean()):.3f} ms (raw calls)")


def _slow_callbacks(run: _Run, checked: dict[str, float]) -> list[Finding]:
    table = run.callbacks
    if not len(table):
        return []
    grouped = table.groupby(["callback", "event"], sort=False).agg(
        total_ms=("total_ms", "sum"), calls=("calls", "sum"), ran=("ran", "sum")).reset_index()
    grouped = grouped.sort_values("total_ms", ascending=False, kind="stable")
    checked["top_handler_share"] = float(grouped["total_ms"].iloc[0]) / run.run_ms
    found = []
    per_batch = run.advice.per_batch_events
    for row in grouped.itertuples():
        share = row.total_ms / run.run_ms
        own = _own(run, row.callback)
        if own and row.event in per_batch:
            continue  # the framework's own work per batch: the dispatch check weighs it against the batches' compute
        if row.event in run.advice.work_events:
            continue  # the model's own work (its training step): what the loop is for
        if row.ran < 2 and row.total_ms < _ONE_OFF_MS:
            continue  # a first call's cost in a short run (setting up at before_fit) is not what slows a fit
        severity = _severity(share, THRESHOLDS["framework_callback" if own else "slow_callback"])
        if severity is None:
            continue
        per_call = row.total_ms / max(int(row.ran), 1)
        evidence = [f"{row.callback}.{row.event}: {int(row.ran)} calls, {per_call:.3f} ms each, {row.total_ms:.1f} ms "
                    f"in all, {100 * share:.1f} % of the run (callbacks' table)"]
        where = _source_of(run, row.callback, row.event)
        if where:
            evidence.append(f"defined at {where}")
        rhythm = _rhythm(run, row.callback, row.event) if row.event in per_batch and not own else None
        if rhythm is not None:
            evidence.append(rhythm[1])
        key = ("rarer" if rhythm[0] else "every_n") if rhythm is not None else (
            "every_n" if row.event in per_batch else "remove")
        fix = (run.advice.own_fixes.get(row.callback) if own else None) or _fix(
            run, key, callback=row.callback, event=row.event)
        kind = "framework_callback" if own else "slow_callback"
        found.append(Finding(kind, severity, f"{row.callback}.{row.event} takes {100 * share:.0f} % of the run",
                             tuple(evidence), f"{row.callback}.{row.event}", fix, float(row.total_ms),
                             {"share": share, "per_call_ms": per_call, "calls": float(row.ran)}))
    return found[:3]


def _validation(run: _Run, checked: dict[str, float]) -> list[Finding]:
    s = run.summary
    tiles = s[s["kind"].isin(["event", "work"])]
    if not (tiles["phase"] == "train").any():
        return []  # not a fit: validating is the whole job
    valid = tiles[tiles["phase"] == "valid"]
    spent = float(valid["total_ms"].sum())
    share, severity = _banded(checked, "validation_share", "validation", spent, run.run_ms)
    if severity is None:
        return []
    train = float(tiles[tiles["phase"] == "train"]["total_ms"].sum())
    evidence = (f"validation's events and work: {spent:.1f} ms, {100 * share:.1f} % of the run; training's "
                f"{train:.1f} ms (summary, phase 'valid' against 'train')",)
    return [Finding("validation", severity, f"Validation takes {100 * share:.0f} % of the fit", evidence,
                    "how often, and on how much, the fit validates", _fix(run, "validation"), spent,
                    {"share": share, "valid_ms": spent, "train_ms": train})]


def _dispatch(run: _Run, checked: dict[str, float]) -> list[Finding]:
    names = run.advice.compute_work
    s = run.summary
    dispatch = s[s["kind"] == "dispatch"]
    compute = _work(run, names, None) if names else s.iloc[0:0]
    if not names or not len(dispatch) or not len(compute):
        return []  # (an adapter whose dispatch wraps the batch's own work gives no compute_work)
    table, per_batch = run.callbacks, run.advice.per_batch_events
    # (a mask, not a list: an empty list would select no columns, and a table without calls has no rows)
    own = table[np.array([_own(run, name) and event in per_batch
                          for name, event in zip(table["callback"], table["event"])], dtype=bool)]
    spent, handlers = float(dispatch["total_ms"].sum()), float(own["total_ms"].sum())
    work = float(compute["total_ms"].sum())
    if work <= 0:
        return []
    ratio, severity = _banded(checked, "dispatch_per_compute", "dispatch", spent + handlers, work)
    if severity is None:
        return []
    evidence = (_row_line(next(dispatch.itertuples()), ""),
                f"the framework's own callbacks at per-batch events: {handlers:.1f} ms (callbacks' table: "
                f"{', '.join(sorted(set(own['callback'] + '.' + own['event']))) or 'none'})",
                f"the batches' own work ({', '.join(names)}): {work:.1f} ms (summary)")
    return [Finding("dispatch", severity, f"The framework's own work per batch costs {ratio:.1f}x the batches' "
                    f"compute: batches are too small", evidence, "the batch size", _fix(run, "batch_size"),
                    spent + handlers, {"ratio": ratio, "dispatch_ms": spent, "own_handlers_ms": handlers,
                                       "compute_ms": work})]


def _step(run: _Run, checked: dict[str, float]) -> list[Finding]:
    step_work, forward_backward_work = run.advice.step_work, run.advice.forward_backward_work
    if step_work is None or not forward_backward_work:
        return []
    step, forward_backward = _work(run, (step_work,)), _work(run, forward_backward_work)
    if not len(step) or not len(forward_backward) or int(step["count"].sum()) < _MIN_STEPS:
        return []  # (the first steps make the optimizer's state: a few say nothing of the rest)
    spent, other = float(step["total_ms"].sum()), float(forward_backward["total_ms"].sum())
    share = spent / run.run_ms
    if other <= 0 or share < _STEP_FLOOR:
        return []
    # medians, not totals: a step the machine paused in (another process, the collector) says nothing of the others
    typical_step, typical_other = float(step["p50_ms"].iloc[0]), float(forward_backward["p50_ms"].sum())
    if typical_other <= 0:
        return []
    ratio, severity = _banded(checked, "step_per_forward_backward", "step", typical_step, typical_other)
    if severity is None:
        return []
    evidence = (_row_line(next(step.itertuples()), "work"),
                f"forward and backward ({', '.join(forward_backward_work)}): {other:.1f} ms in all, their medians "
                f"adding up to {typical_other:.3f} ms a batch, the step's {typical_step:.3f} ms (summary)")
    return [Finding("step", severity, f"The optimizer step costs {ratio:.1f}x forward and backward together",
                    evidence, "the optimizer", _fix(run, "step"), spent * (1 - 1 / ratio) if ratio > 1 else 0.0,
                    {"ratio": ratio, "step_ms": spent, "forward_backward_ms": other})]


def _gpu_waits(run: _Run, checked: dict[str, float]) -> list[Finding]:
    if not run.data.tracked_waits:
        return []
    found = []
    for row in gpu_waits(run.data).itertuples():
        share = row.wait_ms / run.run_ms
        severity = _severity(share, THRESHOLDS["gpu_wait"])
        if severity is None:
            continue
        evidence = (f"{row.name} ({row.phase or 'run'}): {int(row.calls)} of {int(row.of)} synchronised with the GPU, "
                    f"waiting out {row.wait_ms:.1f} ms of GPU work, {100 * share:.1f} % of the run (GPU waits)",)
        site = f" at {row.site}" if row.site else ""
        found.append(Finding("gpu_wait", severity, f"{row.name} makes the host wait for the GPU", evidence,
                             f"{row.name}{site}", "keep values on the GPU (no .item(), .cpu() or print of a tensor) "
                             "in that code, or do it every N batches", float(row.wait_ms), {"share": share}))
    return found[:3]


def _gpu_idle(run: _Run, checked: dict[str, float]) -> list[Finding]:
    """The GPU's idle time between training batches: from when the GPU finished a batch (the device time at the end of
    its closing event) to when the host started the next (the host time at the start of its opening event)."""
    from loopviz.trace.batches import batch_events
    from loopviz.trace.layout import F_DEV_END, F_EPOCH, F_EVENT, F_LOOP, F_MODE, F_START
    from loopviz.trace.reports import firing_matrix

    if run.data.clock != "cuda":
        return []  # (the host clock has no device times; the sync clock stalls the GPU at every boundary itself)
    opens, closes = batch_events(run.data)
    if opens not in run.data.events or closes not in run.data.events:
        return []
    m = firing_matrix(run.data)
    m = m[(m[:, F_MODE] == 1) & (m[:, F_DEV_END] >= 0)]  # training's, with device times
    m = m[np.argsort(m[:, F_START], kind="stable")]
    opened = m[m[:, F_EVENT] == run.data.events.index(opens)]
    closed = m[m[:, F_EVENT] == run.data.events.index(closes)]
    idle: list[float] = []
    at = 0
    for row in closed:  # each batch's close, and the next batch's open in the same loop and epoch
        while at < len(opened) and opened[at, F_START] <= row[F_START]:
            at += 1
        if at == len(opened):
            break
        following = opened[at]
        if following[F_LOOP] == row[F_LOOP] and following[F_EPOCH] == row[F_EPOCH]:
            idle.append(max(0.0, float(following[F_START] - row[F_DEV_END]) / 1e6))
    if len(idle) < _MIN_STEPS // 2:
        return []  # (a few batches' gaps say little: the first ones pay for warm-up)
    waited = float(sum(idle))
    share, severity = _banded(checked, "gpu_idle_share", "gpu_idle", waited, run.run_ms)
    if severity is None:
        return []
    workers = _loaders(run).get("train", {}).get("num_workers")
    evidence = (f"the GPU finished a training batch and waited for the host to start the next one in "
                f"{sum(1 for gap in idle if gap > 0)} of {len(idle)} gaps between batches: {waited:.1f} ms in all, "
                f"{100 * share:.1f} % of the run, {float(np.median(idle)):.3f} ms a gap at the median (firings' device "
                f"and host times, '{closes}' to '{opens}')",)
    return [Finding("gpu_idle", severity, f"The GPU waits for the host between batches: idle {100 * share:.0f} % of "
                    f"the run", evidence, "the host's work between batches (data, callbacks, syncs)",
                    _fix(run, "host_bound", workers=max(2, 2 * int(workers or 0))), waited,
                    {"share": share, "idle_ms": waited, "gaps": float(len(idle))})]


def _mixed_precision(run: _Run, checked: dict[str, float]) -> list[Finding]:
    device, precision = run.data.meta.get("device"), run.data.meta.get("precision")
    if not isinstance(device, str) or not device.startswith("cuda") or precision not in _FULL_PRECISION:
        return []  # (on a CPU, or already mixed: nothing to say; a trace that noted neither says nothing)
    spent, evidence = 0.0, [f"the model ran on {device} in full precision ({precision}) (trace meta)"]
    names, events = run.advice.forward_backward_work, run.advice.model_events
    if names:
        rows = _work(run, names, None)
        spent += float(rows["total_ms"].sum())
        evidence.append(f"forward and backward ({', '.join(names)}): {float(rows['total_ms'].sum()):.1f} ms (summary)")
    if events:
        rows = run.callbacks[run.callbacks["event"].isin(events)]
        spent += float(rows["total_ms"].sum())
        evidence.append(f"the model's {', '.join(events)}: {float(rows['total_ms'].sum()):.1f} ms (callbacks' table)")
    share, severity = _banded(checked, "full_precision_share", "mixed_precision", spent, run.run_ms)
    if severity is None or spent <= 0:
        return []
    return [Finding("mixed_precision", severity, f"The model trains in full precision on the GPU: its forward and "
                    f"backward take {100 * share:.0f} % of the run", tuple(evidence), "the training's precision",
                    _fix(run, "precision"), spent, {"share": share, "model_ms": spent})]


_CHECKS = (_input_bound, _epoch_stalls, _slow_callbacks, _validation, _dispatch, _step, _gpu_waits, _gpu_idle,
           _mixed_precision)


def diagnose(data: TraceData, tables: tuple[pd.DataFrame, pd.DataFrame] | None = None) -> Findings:
    """Every check on one trace's data, findings most severe first (then the largest saving). `tables`: its
    `summary` and `by_callback` tables, where a view has them already (in any row order)."""
    run_ms = total_ns(data) / 1e6
    if run_ms <= 0 or not math.isfinite(run_ms):
        return Findings(data.framework, 0.0, (), {}, cost_entry(data))
    run_summary, run_callbacks = tables if tables is not None else (summary(data), by_callback(data))
    run = _Run(data, advice_of(data), run_ms, run_summary, run_callbacks, _loader_timings(data))
    checked: dict[str, float] = {}
    findings = [finding for check in _CHECKS for finding in check(run, checked)]
    order = {name: rank for rank, name in enumerate(reversed(SEVERITIES))}
    findings.sort(key=lambda f: (order[f.severity], -f.saving_ms))
    return Findings(data.framework, run_ms, tuple(findings), checked, cost_entry(data))
