"""`TraceData`: everything a trace holds, each field named once, next to how it is written to JSON.

The recorder fills one `TraceData`, a `Trace` takes it over when recording ends, `Trace.select` derives
a new one with `dataclasses.replace`, and `loopviz.trace.files` writes and reads it field by field with
the codec in each field's metadata: a new field is one line here plus its codec.

Records past the raw-record cap only update aggregates, whose keys start with the loop the record belongs
to (the loop its firing began in, as for raw records), so a trace cut to some loops keeps exactly those
loops' aggregates. Files written before version 2 had no loop in those keys: they read as `UNKNOWN_LOOP`.
"""
from __future__ import annotations

import copy

from array import array
from dataclasses import dataclass, field, replace
from typing import Any, Callable, NamedTuple

from loopviz.model import CallbackInfo
from loopviz.trace.layout import F_END, F_LOOP, F_START, NCH, UNKNOWN_LOOP
from loopviz.trace.records import CallRecords, FiringRecords
from loopviz.trace.sketch import Sketch

__all__ = ["TraceData", "Aggregate", "Codec", "HIST_BUCKETS", "ADDED_IN_3", "ADDED_IN_4", "ADDED_IN_6", "COARSE_PERCENTILES",
           "callback_facts", "callback_of_facts", "recount", "without_loop", "merged_changes", "spans_from_firings", "is_outermost"]

HIST_BUCKETS = 64  # the log2 histogram of files before version 5


@dataclass(slots=True)
class Aggregate:
    """Count, total, min, max and a quantile sketch of durations (ns): memory that grows with their spread, not
    their number; percentiles within the sketch's relative error (`loopviz.trace.sketch`)."""

    count: int = 0
    total: int = 0
    min: int = 1 << 62
    max: int = 0
    sketch: Sketch = field(default_factory=Sketch)

    def add(self, dur: int) -> None:
        """Count one more duration (ns)."""
        self.count += 1
        self.total += dur
        if dur < self.min:
            self.min = dur
        if dur > self.max:
            self.max = dur
        self.sketch.add(dur)

    def plus(self, other: Aggregate) -> Aggregate:
        """A new aggregate of both sets of durations."""
        return Aggregate(self.count + other.count, self.total + other.total, min(self.min, other.min),
                         max(self.max, other.max), self.sketch.plus(other.sketch))

    def with_durations(self, durations: Any) -> Aggregate:
        """A new aggregate of these durations (ns, a numpy array) and this aggregate's."""
        if not len(durations):
            return self.plus(Aggregate())
        sketch = self.sketch.copy()
        sketch.add_many(durations)
        return Aggregate(self.count + len(durations), self.total + int(durations.sum()),
                         min(self.min, int(durations.min())), max(self.max, int(durations.max())), sketch)

    def quantile(self, q: float) -> float:
        """The duration (ns) at rank ceil(q * count), within the sketch's relative error, clamped to [min, max]."""
        return self.sketch.quantile(q, self.min, self.max) if self.count else 0.0

    def to_json(self) -> dict[str, Any]:
        """The aggregate as JSON-ready data."""
        return {"count": self.count, "total": self.total, "min": self.min, "max": self.max,
                "sketch": self.sketch.to_json()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Aggregate:
        """An aggregate from `to_json()` data, or from a file before version 5 (its log2 `hist` read into a sketch,
        coarsely: the trace's meta says so, `COARSE_PERCENTILES`)."""
        values = (data["count"], data["total"], data["min"], data["max"])
        if "hist" in data:
            return cls(*values, Sketch.from_log2(data["hist"]))
        return cls(*values, Sketch.from_json(data["sketch"]))


# -- codecs: how each field is written to JSON and read back ------------------------------------


class Codec(NamedTuple):
    """How one field goes to JSON (`encode`), comes back (`decode`), reads from a version-1 file (`from_v1`), and
    becomes the field's value once the decoded data has been checked (`build`: raw records are packed)."""

    encode: Callable[[Any], Any]
    decode: Callable[[Any], Any]
    from_v1: Callable[[Any], Any] = lambda value: value
    build: Callable[[Any], Any] = lambda value: value


def _same(value: Any) -> Any:
    return value


def _keyed(encode_value: Callable[[Any], Any], decode_value: Callable[[Any], Any]) -> Codec:
    """A dict keyed by (loop, ...) int tuples, as [[key...], value] pairs; version 1 had no loop in the key."""
    return Codec(
        encode=lambda d: [[list(k), encode_value(v)] for k, v in d.items()],
        decode=lambda rows: {tuple(k): decode_value(v) for k, v in rows},
        from_v1=lambda rows: [[[UNKNOWN_LOOP, *k], v] for k, v in rows],
    )


PLAIN = Codec(copy.deepcopy, _same)  # (a copy out: what to_json gives is the caller's, not the trace's)
INTS = Codec(lambda a: a.tolist(), lambda v: array("q", v))
FIRINGS = Codec(FiringRecords.tolist, FiringRecords.flat_matrix, build=FiringRecords.from_matrix)
CALLS = Codec(CallRecords.tolist, CallRecords.flat_matrix, build=CallRecords.from_matrix)
AGGREGATES = _keyed(Aggregate.to_json, Aggregate.from_json)
CHANGE_AGGREGATES = _keyed(list, list)
WAITS = _keyed(list, list)
PAIR_NAMES = Codec(lambda d: [[a, b, n] for (a, b), n in d.items()], lambda rows: {(a, b): n for a, b, n in rows})


def _field(doc: str, default: Any = None, *, factory: Callable[[], Any] | None = None, codec: Codec = PLAIN) -> Any:
    """A dataclass field with its description and JSON codec in the metadata."""
    metadata = {"doc": doc, "codec": codec}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def _ints() -> array:
    return array("q")


def callback_facts(info: CallbackInfo) -> dict[str, Any]:
    """What a trace keeps about a callback (an entry of `TraceData.callbacks`), from the facts a loop spec has."""
    return {"cls": info.cls, "name": info.name, "order": info.order, "module": info.module}


def callback_of_facts(facts: dict[str, Any]) -> CallbackInfo:
    """A callback as a loop spec describes it, from what a trace kept about it (`callback_facts`)."""
    return CallbackInfo(str(facts.get("name", "")), str(facts.get("cls", "")), str(facts.get("module", "")),
                        float(facts.get("order", 0) or 0))


@dataclass
class TraceData:
    """Everything one traced run holds: names, flat records, aggregates past the cap, state changes, metadata."""

    framework: str = _field("the traced loop's framework and version, as its adapter names them", "")
    clock: str = _field("the clock event boundaries were timed with: host, cuda or sync", "host")
    meta: dict[str, Any] = _field("process identity, clock origin, raw-record caps, selected loops", factory=dict)
    events: list[str] = _field("event names; records refer to them by index", factory=list)
    callbacks: list[dict[str, Any]] = _field("each callback's facts (cls, order, ...); records refer to them by index",
                                             factory=list)
    loops: list[str] = _field("each loop's label (a fit, a validate, ...); records refer to them by index",
                              factory=list)
    loop_spans: list[list[int]] = _field(
        "per loop: [start, end, parent loop, parent firing, first top-level firing's start, last top-level firing's "
        "end] (ns; -1 when none; parent firing -2 when it was past the cap); kept whatever the cap",
        factory=list)
    firings: FiringRecords = _field("event firings, packed; FIRING_FIELDS per row in files and as a matrix",
                                    factory=FiringRecords, codec=FIRINGS)
    calls: CallRecords = _field("callback calls, packed; CALL_FIELDS per row in files and as a matrix",
                                factory=CallRecords, codec=CALLS)
    no_handler_calls: int = _field("calls to callbacks with no handler for the event: counted, not recorded", 0)
    no_handler_by_loop: list[int] = _field("no_handler_calls of each loop (the rest were outside any loop)",
                                           factory=list)
    dropped_firings: int = _field("firings past the raw-record cap (in overflow_firings)", 0)
    dropped_calls: int = _field("callback calls past the raw-record cap (in overflow_calls)", 0)
    overflow_firings: dict[tuple[int, int, int], Aggregate] = _field(
        "durations of firings past the cap, keyed (loop, event, mode)", factory=dict, codec=AGGREGATES)
    overflow_calls: dict[tuple[int, int, int, int, int], Aggregate] = _field(
        "durations of calls past the cap, keyed (loop, event, mode, callback, status)", factory=dict, codec=AGGREGATES)
    overflow_nested: dict[tuple[int, int, int], Aggregate] = _field(
        "durations of firings past the cap that ran inside another firing, keyed (loop, event, mode)",
        factory=dict, codec=AGGREGATES)
    overflow_work: dict[tuple[int, int, int, int, int], Aggregate] = _field(
        "the work before each firing past the cap, since the previous firing at its level, keyed "
        "(loop, event before, event after, mode, 1 inside another firing else 0)", factory=dict, codec=AGGREGATES)
    work_names: dict[tuple[str, str], str] = _field("names of the work between two events, {(before, after): name}",
                                                    factory=dict, codec=PAIR_NAMES)
    tracked_changes: bool = _field("whether state changes were recorded", False)
    attrs: list[str] = _field("names of changed attributes; change records refer to them by index", factory=list)
    change_agg: dict[tuple[int, int, int, int, int], list[int]] = _field(
        "every state change, keyed (loop, event, mode, callback, attr): "
        "[count, first epoch, first iter, last epoch, last iter]", factory=dict, codec=CHANGE_AGGREGATES)
    change_log: array = _field("state changes up to the cap, CHANGE_FIELDS per row, flat", factory=_ints, codec=INTS)
    dropped_changes: int = _field("state changes in change_agg but not in change_log", 0)
    tracked_waits: bool = _field("whether waits for the GPU were recorded (waits=True)", False)
    wait_agg: dict[tuple[int, int, int, int, int], list[Any]] = _field(
        "calls and work that synchronised with the GPU, keyed (loop, event, mode, callback, next event): a callback's "
        "calls at the event (next event -1), or with callback -1 the work after the event until the next event's "
        "firing (-1: none); [calls that synchronised, synchronising operations, ns of GPU work waited out in all, "
        "the longest wait of one call (ns), where the first synchronisation was made]", factory=dict, codec=WAITS)

    data_steps: list[list[str]] = _field(
        "the data loop's timed steps (data=True): [loader, stage, step, per]; step '' is the stage as a whole",
        factory=list)
    data_work: array = _field("the data loop's work per step per batch, in each process, DATA_FIELDS per row, flat",
                              factory=_ints, codec=INTS)

    @property
    def n_firings(self) -> int:
        """Event firings recorded raw (not counting dropped ones)."""
        return len(self.firings)

    @property
    def n_calls(self) -> int:
        """Callback calls recorded raw (not counting dropped ones)."""
        return len(self.calls)


# Fields that files before version 3 lack: they read as empty, and loop spans are rebuilt from the firings.
ADDED_IN_3 = ("loop_spans", "no_handler_by_loop", "overflow_nested", "overflow_work")
ADDED_IN_4 = ("tracked_waits", "wait_agg")  # fields files before version 4 lack: they read as no waits recorded
ADDED_IN_6 = ("data_steps", "data_work")  # fields files before version 6 lack: they read as no data loop timed
# Files before version 5 kept a log2 histogram per aggregate: read into a sketch, their percentiles past the cap are
# within a factor of sqrt(2), not the sketch's ALPHA; the trace's meta says so under this key.
COARSE_PERCENTILES = "percentiles_from_log2"


def is_outermost(span: list[int]) -> bool:
    """True for a loop (a `loop_spans` entry) that no other loop or firing ran: the run is made of these."""
    return span[2] < 0 and span[3] == -1


def spans_from_firings(data: TraceData) -> list[list[int]]:
    """Loop spans for a trace that did not record them (files before version 3): each loop from its first raw
    firing's start to its last one's end, every loop taken as outermost."""
    spans = [[-1, -1, -1, -1, -1, -1] for _ in data.loops]
    for row in data.firings.matrix().tolist():
        loop, start, end = row[F_LOOP], row[F_START], row[F_END]
        if 0 <= loop < len(spans):
            span = spans[loop]
            span[0] = start if span[0] < 0 else min(span[0], start)
            span[1] = max(span[1], end)
    for span in spans:
        span[4], span[5] = span[0], span[1]
    return spans


def recount(data: TraceData) -> TraceData:
    """The data with its dropped counts counted from what it holds: the aggregates past the cap, and the
    changes aggregated but not logged."""
    return replace(
        data,
        dropped_firings=sum(a.count for a in [*data.overflow_firings.values(), *data.overflow_nested.values()]),
        dropped_calls=sum(a.count for a in data.overflow_calls.values()),
        dropped_changes=sum(entry[0] for entry in data.change_agg.values()) - len(data.change_log) // NCH,
    )


def without_loop(aggregates: dict[tuple[int, ...], Aggregate]) -> dict[tuple[int, ...], Aggregate]:
    """Aggregates added up over loops: keyed as they are less the loop, in the order their keys first appear."""
    out: dict[tuple[int, ...], Aggregate] = {}
    for (_, *rest), agg in aggregates.items():
        key = tuple(rest)
        out[key] = out[key].plus(agg) if key in out else agg
    return out


def merged_changes(change_agg: dict[tuple[int, ...], list[int]]) -> dict[tuple[int, ...], list[int]]:
    """State-change aggregates added up over loops: the count summed, the first change from the earliest loop,
    the last from the latest (loops are numbered in the order they started)."""
    out: dict[tuple[int, ...], list[int]] = {}
    for (loop, *rest), entry in sorted(change_agg.items(), key=lambda item: item[0][0]):
        key = tuple(rest)
        if key in out:
            first = out[key]
            out[key] = [first[0] + entry[0], first[1], first[2], entry[3], entry[4]]
        else:
            out[key] = list(entry)
    return {key: out[key] for key in dict.fromkeys(tuple(k[1:]) for k in change_agg)}
