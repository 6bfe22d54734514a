"""What the data loop's timed work says (`data=True`): per step, and per loader what the workers did against what the
main process waited for.

Read from the rows (`loopviz.trace.datawork`) and, for the main process's wait, the loop's firings: the moment the
loop asked a loader for a batch is the end of the last event fired before the loader gave it (fastai's `after_batch`,
or `before_train` for a pass's first), so the main process's time getting batch k is from there to the start of its
main-process part (the move to the device, then the batch transforms), and the loop's time with batch k is from its
end to the next ask. Nothing here knows a framework: stage names are the adapter's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from loopviz.trace.data import TraceData
from loopviz.trace.datawork import (
    BATCH, D_BATCH, D_COUNT, D_END, D_PASS, D_START, D_STEP, D_TOTAL, D_WORKER, DATA_FIELDS, FETCH, MAIN, MOVE, ND,
    PASS,
)
from loopviz.trace.layout import F_END

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

__all__ = ["LoaderTiming", "STAGE_ORDER", "WAIT_LANE", "MAIN_LANE", "data_df", "data_summary", "loader_timing",
           "has_data", "pass_lanes", "data_rows"]

# the stages of a loader's loop in the order they run for a batch (others after them, in the order first timed)
STAGE_ORDER = ("do_item", "create_item", "after_item", "before_batch", "create_batch", "retain", FETCH, MOVE,
               "after_batch")
_MAIN_STAGES = (FETCH, MOVE, "after_batch")  # what the main process does to get a batch and to one it is given
WAIT_LANE = "main: getting the batch"  # from the loop's ask to the batch's main-process part
MAIN_LANE = "main: to_device, after_batch"


@dataclass(frozen=True)
class LoaderTiming:
    """One loader's loop over the trace: who made its batches, how fast, and what the main process waited."""

    loader: str
    passes: int
    batches: int  # batches the main process was given
    items: int  # items made
    workers: int  # worker processes that made batches (0: the main process made them)
    busy_ms: float  # time making batches, summed over the processes that made them
    batch_ms: float  # median time one process took to make one batch
    get_ms: float  # the main process's time getting its batches: waiting for a worker's (or making it), all batches
    wait_ms: float  # of that, the mean per batch, a pass's first batch left out
    move_ms: float  # moving batches to the device
    after_batch_ms: float  # the batch transforms in the main process
    model_ms: float  # median time the loop spent with a batch before asking for the next
    delivered_per_s: float  # batches per second the makers can deliver together (workers / batch_ms)
    consumed_per_s: float  # batches per second the loop asks for (1 / (model time + the main process's part))
    first_batch_ms: tuple[float, ...]  # per pass: from the pass's start to its first batch in the main process
    worker_busy: tuple[float, ...]  # per worker: the share of its passes' time it spent making batches
    slowest: tuple[str, str, float]  # the step that took most of the making time: (stage, step, share)

    @property
    def input_bound(self) -> bool:
        """True when the loop asks for batches faster than the makers can deliver them."""
        return self.consumed_per_s > self.delivered_per_s


def has_data(data: TraceData) -> bool:
    """True when the trace timed a data loop (data=True) and holds rows."""
    return bool(data.data_work) and bool(data.data_steps)


def _matrix(data: TraceData) -> np.ndarray:
    import numpy as np

    return (np.frombuffer(data.data_work, np.int64).reshape(-1, ND) if data.data_work
            else np.zeros((0, ND), np.int64))


def data_df(data: TraceData) -> pd.DataFrame:
    """Every row of the data loop's work, with its loader, stage, step and per ('item', 'batch', 'pass')."""
    import pandas as pd

    m = _matrix(data)
    df = pd.DataFrame(m, columns=list(DATA_FIELDS))
    steps = data.data_steps
    for offset, column in enumerate(("loader", "stage", "step", "per")):
        df[column] = [steps[i][offset] for i in m[:, D_STEP].tolist()]
    df["where"] = ["main process" if w == MAIN else f"worker {w}" for w in m[:, D_WORKER].tolist()]
    return df


def _stage_rank(stage: str) -> int:
    return STAGE_ORDER.index(stage) if stage in STAGE_ORDER else len(STAGE_ORDER)


def data_summary(data: TraceData) -> pd.DataFrame:
    """Per loader, stage and step (step '' for the stage as a whole) and where it ran ('workers': the loader's worker
    processes, 'main': the main process): batches, calls, total ms, ms per batch, µs per call, and its share of the
    loader's work (its stages' time; none for a torch loader's fetch, the main process getting a batch, which waits
    for or holds that work), in the order the loop runs them."""
    import pandas as pd

    columns = ["loader", "stage", "step", "where", "per", "batches", "calls", "total_ms", "ms_per_batch",
               "us_per_call", "pct"]
    df = data_df(data)
    df = df[~df["stage"].isin([BATCH, PASS])]
    if not len(df):
        return pd.DataFrame(columns=columns)
    df = df.assign(where=["main" if w == MAIN else "workers" for w in df["worker"].tolist()])
    df = df.assign(made=df["batch"] >= 0)  # (batch -1: items made for no batch, the short last one drop_last drops)
    out = df.groupby(["loader", "stage", "step", "where", "per"], sort=False).agg(
        batches=("made", "sum"), calls=("count", "sum"), total=("total", "sum")).reset_index()
    stage_totals = out[(out["step"] == "") & (out["stage"] != FETCH)].groupby("loader")["total"].sum()
    out["total_ms"] = out["total"] / 1e6
    out["ms_per_batch"] = out["total_ms"] / out["batches"].clip(lower=1)
    out["us_per_call"] = out["total"] / 1e3 / out["calls"].clip(lower=1)
    out["pct"] = [float("nan") if stage == FETCH else 100 * total / stage_totals.get(loader, 0)
                  if stage_totals.get(loader, 0) else 0.0
                  for loader, stage, total in zip(out["loader"], out["stage"], out["total"])]
    first = {loader: i for i, loader in enumerate(dict.fromkeys(step[0] for step in data.data_steps))}
    out["_order"] = [(first.get(loader, 0), _stage_rank(stage), step != "")
                     for loader, stage, step in zip(out["loader"], out["stage"], out["step"])]
    return out.sort_values("_order", kind="stable", ignore_index=True)[columns]


def loader_timing(data: TraceData) -> list[LoaderTiming]:
    """Each timed loader's loop over the trace (`LoaderTiming`), in the order the loaders were timed."""
    import numpy as np

    m = _matrix(data)
    if not len(m):
        return []
    steps = data.data_steps
    loaders = list(dict.fromkeys(step[0] for step in steps))
    firing_ends = np.sort(data.firings.matrix()[:, F_END]) if data.n_firings else np.zeros(0, np.int64)
    out = []
    for loader in loaders:
        ids = {i for i, step in enumerate(steps) if step[0] == loader}
        rows = m[np.isin(m[:, D_STEP], list(ids))]
        if len(rows):
            out.append(_one_loader(loader, rows, steps, firing_ends))
    return out


def _kind(steps: list[list[str]], rows: np.ndarray, stage: str, whole: bool = True) -> np.ndarray:
    """The rows of one stage (its whole-stage rows, or its steps' when not `whole`)."""
    import numpy as np

    pick = np.array([steps[i][1] == stage and (steps[i][2] == "") == whole for i in rows[:, D_STEP].tolist()], bool)
    return rows[pick] if len(rows) else rows


def _one_loader(loader: str, rows: np.ndarray, steps: list[list[str]], firing_ends: np.ndarray) -> LoaderTiming:
    import numpy as np

    batches = _kind(steps, rows, BATCH)
    passes = _kind(steps, rows, PASS)
    main_ids = {i for i, step in enumerate(steps) if step[0] == loader and step[1] in _MAIN_STAGES and not step[2]}
    main = rows[np.isin(rows[:, D_STEP], list(main_ids)) & (rows[:, D_WORKER] == MAIN)]
    given = _given(main, {i for i in main_ids if steps[i][1] == FETCH})  # per batch given: pass, batch, had, end
    workers = sorted({int(w) for w in batches[:, D_WORKER].tolist() if w != MAIN})
    busy = float(batches[:, D_TOTAL].sum()) / 1e6
    batch_ms = float(np.median(batches[:, D_TOTAL])) / 1e6 if len(batches) else 0.0
    makers = max(1, len(workers))
    gets, models, firsts = _main_timeline(given, passes, firing_ends)
    later = gets[~firsts] if len(gets) else gets
    move = _kind(steps, rows, MOVE)
    after = _kind(steps, rows, "after_batch")
    main_part = float(np.median((given[:, 3] - given[:, 2]))) / 1e6 if len(given) else 0.0
    model_ms = float(np.median(models)) if len(models) else 0.0
    per_batch = model_ms + main_part
    first_batch = tuple(float(v) for v in _first_batches(given, passes))
    return LoaderTiming(
        loader=loader, passes=len(passes) or len({int(p) for p in rows[:, D_PASS].tolist()}), batches=len(given),
        items=int(batches[:, D_COUNT].sum()), workers=len(workers), busy_ms=busy, batch_ms=batch_ms,
        get_ms=float(gets.sum()) if len(gets) else 0.0, wait_ms=float(later.mean()) if len(later) else 0.0,
        move_ms=float(move[:, D_TOTAL].sum()) / 1e6, after_batch_ms=float(after[:, D_TOTAL].sum()) / 1e6,
        model_ms=model_ms, delivered_per_s=1000 * makers / batch_ms if batch_ms else 0.0,
        consumed_per_s=1000 / per_batch if per_batch else 0.0, first_batch_ms=first_batch,
        worker_busy=_worker_busy(batches, passes, workers), slowest=_slowest(rows, steps))


def _given(main: np.ndarray, fetch_ids: set[int] = frozenset()) -> np.ndarray:
    """(pass, batch, had, end) of each batch given in the main process: when the main process had it (the end of its
    fetch from a torch loader's iterator, else the start of its move and batch transforms) and when those ended."""
    import numpy as np

    if not len(main):
        return np.zeros((0, 4), np.int64)
    keys = main[:, D_PASS] * (1 << 32) + main[:, D_BATCH]
    order = np.argsort(keys, kind="stable")
    keys, main = keys[order], main[order]
    first = np.r_[True, keys[1:] != keys[:-1]]
    fetched = np.isin(main[:, D_STEP], list(fetch_ids))
    big = np.iinfo(np.int64).max
    # had: a fetch's end where the batch was fetched, else the first main-process stage's start
    had_at = np.where(fetched, main[:, D_END], big)
    start_at = np.where(fetched, big, main[:, D_START])
    starts = np.flatnonzero(first)
    had = np.minimum.reduceat(had_at, starts)
    had = np.where(had == big, np.minimum.reduceat(start_at, starts), had)
    end = np.maximum.reduceat(main[:, D_END], starts)
    return np.column_stack([main[first, D_PASS], main[first, D_BATCH], had, end])


def _main_timeline(given: np.ndarray, passes: np.ndarray, firing_ends: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per batch given: the main process's time getting it (ms: from the loop's ask to the start of its main-process
    part), whether it was its pass's first; and per batch but a pass's last, the loop's time with it (ms)."""
    import numpy as np

    if not len(given) or not len(firing_ends):
        return np.zeros(0), np.zeros(0), np.zeros(0, bool)
    asked = firing_ends[np.clip(np.searchsorted(firing_ends, given[:, 2], side="right") - 1, 0, None)]
    pass_starts = {int(row[D_PASS]): int(row[D_START]) for row in passes} if len(passes) else {}
    floor = np.array([pass_starts.get(int(p), 0) for p in given[:, 0]], np.int64)
    firsts = np.r_[True, given[1:, 0] != given[:-1, 0]]
    asked = np.where(firsts, np.maximum(asked, floor), asked)  # a pass's first: asked when its pass began at the latest
    gets = (given[:, 2] - asked).clip(min=0) / 1e6
    same_pass = given[1:, 0] == given[:-1, 0]
    models = ((asked[1:] - given[:-1, 3]) / 1e6)[same_pass]
    return gets, models.clip(min=0), firsts


def _first_batches(given: np.ndarray, passes: np.ndarray) -> list[float]:
    """Per pass: from its start to the start of its first batch's main-process part (ms)."""
    out = []
    for row in passes:
        mine = given[given[:, 0] == row[D_PASS]]
        if len(mine):
            out.append(max(0, int(mine[0, 2]) - int(row[D_START])) / 1e6)
    return out


def _worker_busy(batches: np.ndarray, passes: np.ndarray, workers: list[int]) -> tuple[float, ...]:
    """Per worker: its batches' time over the time of the passes it worked in."""
    span = {int(row[D_PASS]): max(1, int(row[D_END] - row[D_START])) for row in passes}
    out = []
    for worker in workers:
        mine = batches[batches[:, D_WORKER] == worker]
        worked = sum(span.get(int(p), 0) for p in set(mine[:, D_PASS].tolist()))
        out.append(float(mine[:, D_TOTAL].sum()) / worked if worked else 0.0)
    return tuple(out)


def _slowest(rows: np.ndarray, steps: list[list[str]]) -> tuple[str, str, float]:
    """The step (a transform, else a stage) with the most time, and its share of the loader's stages' time."""
    totals: dict[int, int] = {}
    for step, total in zip(rows[:, D_STEP].tolist(), rows[:, D_TOTAL].tolist()):
        totals[step] = totals.get(step, 0) + total
    kept = (BATCH, PASS, FETCH)  # (a fetch is the main process waiting for, or making, the work the stages hold)
    stages = {i: t for i, t in totals.items() if steps[i][1] not in kept and not steps[i][2]}
    whole = sum(stages.values())
    named = {i: t for i, t in totals.items() if steps[i][1] not in kept and steps[i][2]}
    # a stage's steps stand for it; a stage without steps (collate, a getitem) stands for itself
    covered = {steps[i][1] for i in named}
    candidates = {**named, **{i: t for i, t in stages.items() if steps[i][1] not in covered}}
    if not candidates or not whole:
        return ("", "", 0.0)
    best = max(candidates, key=lambda i: candidates[i])
    return (steps[best][1], steps[best][2], candidates[best] / whole)


def pass_lanes(data: TraceData, loader: str) -> tuple[int, pd.DataFrame]:
    """The loader's longest pass as lanes of spans (ms from the pass's start): the main process getting each batch
    (from the loop's ask), its move and batch transforms, and each worker making its batches: (pass, spans with
    lane, batch, start, dur). Empty when the loader has no timed pass."""
    import numpy as np
    import pandas as pd

    columns = ["lane", "batch", "start", "dur"]
    df = data_df(data)
    mine = df[df["loader"] == loader]
    passes = mine[mine["stage"] == PASS]
    if not len(passes):
        return -1, pd.DataFrame(columns=columns)
    longest = passes.loc[(passes["end"] - passes["start"]).idxmax()]
    pass_no, origin = int(longest["pass"]), int(longest["start"])
    one = mine[mine["pass"] == pass_no]
    spans: list[tuple[str, int, float, float]] = []
    made = one[(one["stage"] == BATCH) & (one["batch"] >= 0)]
    for r in made.itertuples():
        lane = "main: making the batch" if r.worker == MAIN else f"worker {r.worker}"
        spans.append((lane, r.batch, (r.start - origin) / 1e6, (r.end - r.start) / 1e6))
    ids = [i for i, step in enumerate(data.data_steps) if step[0] == loader and step[1] in _MAIN_STAGES and not step[2]]
    main = _matrix(data)
    main = main[np.isin(main[:, D_STEP], ids) & (main[:, D_WORKER] == MAIN) & (main[:, D_PASS] == pass_no)]
    given = _given(main, {i for i in ids if data.data_steps[i][1] == FETCH})
    firing_ends = np.sort(data.firings.matrix()[:, F_END]) if data.n_firings else np.zeros(0, np.int64)
    pass_ids = [i for i, step in enumerate(data.data_steps) if step[0] == loader and step[1] == PASS]
    whole = _matrix(data)
    pass_rows = whole[np.isin(whole[:, D_STEP], pass_ids) & (whole[:, D_PASS] == pass_no)]
    gets, _, _ = _main_timeline(given, pass_rows, firing_ends)
    for (_, batch, start, end), got in zip(given.tolist(), gets.tolist() if len(gets) else [0.0] * len(given)):
        spans.append((WAIT_LANE, batch, (start - origin) / 1e6 - got, got))
        spans.append((MAIN_LANE, batch, (start - origin) / 1e6, (end - start) / 1e6))
    return pass_no, pd.DataFrame(spans, columns=columns)



def data_rows(data: TraceData) -> tuple[pd.DataFrame, dict[tuple[str, str, str], np.ndarray]]:
    """What a comparison of two traces reads of the data loop: per (loader, stage, step), the batches it ran in
    (`count`), total, p50 and p95 of its time per batch (ms), and each batch's time (ns) for the rank test."""
    import numpy as np
    import pandas as pd

    columns = ["loader", "stage", "step", "count", "total_ms", "p50_ms", "p95_ms", "ran"]
    df = data_df(data)
    df = df[~df["stage"].isin([BATCH, PASS]) & (df["batch"] >= 0)]
    if not len(df):
        return pd.DataFrame(columns=columns), {}
    samples: dict[tuple[str, str, str], np.ndarray] = {}
    rows = []
    for key, group in df.groupby(["loader", "stage", "step"], sort=False):
        per_batch = group.groupby(["pass", "worker", "batch"], sort=False)["total"].sum().to_numpy(np.int64)
        samples[key] = per_batch
        ms = per_batch / 1e6
        rows.append((*key, len(per_batch), float(ms.sum()), float(np.percentile(ms, 50)), float(np.percentile(ms, 95)),
                     len(per_batch)))
    return pd.DataFrame(rows, columns=columns), samples
