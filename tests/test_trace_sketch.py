"""The quantile sketch behind percentiles past the raw-record cap: within 1 % (its ALPHA, 0.5 %) of numpy's exact
order statistics on many distributions, mergeable, through JSON, old log2 files read coarsely and said so, and a
real fastai trace's capped percentiles against the exact ones of its own durations. Hostile sketches in files are
in test_trace_files.py's corpus."""
from __future__ import annotations

import gzip
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from fastai.test_utils import synth_learner
from hypothesis import given, settings
from hypothesis import strategies as st

from loopviz.trace.data import COARSE_PERCENTILES, HIST_BUCKETS, Aggregate, recount
from loopviz.trace.layout import (
    C_CALLBACK, C_DUR, C_FIRING, C_STATUS, F_END, F_EVENT, F_LOOP, F_MODE, F_PARENT, F_START, MODES,
)
from loopviz.trace.records import CallRecords, FiringRecords
from loopviz.trace.sketch import ALPHA, MAX_KEY, Sketch, rank_of
from loopviz.trace.trace import FORMAT_VERSION, Trace

# Saved by loopviz before the sketch (format 4, log2 histograms): `synth_learner(n_trn=64, n_val=8)`, fit(2) traced
# with max_firings=100.
OLD_FILE = Path(__file__).parent / "data" / "v4_capped_fit.json.gz"
QS = (0.0, 0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0)
N = 20_000


def exact(values: np.ndarray, q: float) -> float:
    """numpy's order statistic at rank ceil(q * n): method='inverted_cdf'."""
    return float(np.quantile(values, q, method="inverted_cdf"))


def durations(name: str) -> np.ndarray:
    """N integer durations (ns) of one shape, from a seeded generator."""
    rng = np.random.default_rng(sum(map(ord, name)))
    made = {
        "uniform": lambda: rng.uniform(1_000, 2_000_000, N),
        "lognormal": lambda: rng.lognormal(11, 1.5, N),
        "bimodal": lambda: np.concatenate([rng.normal(50_000, 2_000, N // 2), rng.normal(5_000_000, 100_000, N // 2)]),
        "heavy tail": lambda: (rng.pareto(1.1, N) + 1) * 10_000,
        "1 ns to 1e12 ns": lambda: 10 ** rng.uniform(0, 12, N),
        "constant": lambda: np.full(N, 123_457.0),
        "ones": lambda: np.ones(N),
    }[name]()
    return np.maximum(np.rint(made), 1).astype(np.int64)


SHAPES = ["uniform", "lognormal", "bimodal", "heavy tail", "1 ns to 1e12 ns", "constant", "ones"]


def aggregate_of(values: np.ndarray) -> Aggregate:
    """An aggregate fed one duration at a time, as the recorder feeds it past the cap."""
    agg = Aggregate()
    for value in values.tolist():
        agg.add(value)
    return agg


@pytest.mark.parametrize("shape", SHAPES)
def test_quantiles_are_within_one_percent_of_the_exact_order_statistics(shape):
    values = durations(shape)
    agg = aggregate_of(values)
    for q in QS:
        truth = exact(values, q)
        got = agg.quantile(q)
        assert abs(got - truth) <= ALPHA * truth * (1 + 1e-12), (shape, q, got, truth)
        assert abs(got - truth) <= 0.01 * truth
    assert agg.quantile(0.0) == values.min() and agg.quantile(1.0) == values.max()  # clamped to [min, max]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 2**62), min_size=1, max_size=300), st.sampled_from(QS))
def test_any_durations_any_quantile_within_alpha(values, q):
    agg = aggregate_of(np.array(values, dtype=np.int64))
    truth = exact(np.array(values), q)
    assert abs(agg.quantile(q) - truth) <= ALPHA * truth * (1 + 1e-9)


def test_the_rank_is_ceil_q_n():
    assert [rank_of(q, 100) for q in (0.0, 0.07, 0.5, 0.95, 0.951, 1.0)] == [1, 7, 50, 95, 96, 100]
    assert rank_of(0.5, 1) == 1 and rank_of(0.5, 3) == 2


def test_zero_and_negative_durations_have_their_own_count():
    agg = aggregate_of(np.array([0, -5, 0, 100, 200], dtype=np.int64))
    assert agg.sketch.zeros == 3 and sum(agg.sketch.bins.values()) == 2
    assert agg.quantile(0.5) == 0.0  # rank 3 of 5 is one of the three values <= 0
    assert agg.quantile(0.0) == -5  # 0, clamped to the min
    assert abs(agg.quantile(1.0) - 200) <= 200 * ALPHA


def test_an_empty_aggregate_has_no_quantile():
    assert Aggregate().quantile(0.5) == 0.0 and Sketch().quantile(0.5) == 0.0


@pytest.mark.parametrize("shape", ["lognormal", "bimodal", "1 ns to 1e12 ns"])
def test_merging_is_the_sketch_of_the_union(shape):
    values = durations(shape)
    first, second = values[: N // 3], values[N // 3:]
    merged = aggregate_of(first).plus(aggregate_of(second))
    assert merged == aggregate_of(values)
    assert merged.count == N and merged.total == int(values.sum())


def test_adding_an_array_is_adding_each_value():
    values = np.concatenate([durations("lognormal"), np.array([0, -3])])
    one_by_one, at_once = aggregate_of(values), Aggregate().with_durations(values)
    assert at_once == one_by_one
    assert Aggregate(3, 30, 5, 20).with_durations(np.zeros(0, np.int64)) == Aggregate(3, 30, 5, 20)


def test_the_sketch_stays_small():
    agg = aggregate_of(durations("1 ns to 1e12 ns"))
    assert len(agg.sketch.bins) <= 12 * math.log(10) / math.log((1 + ALPHA) / (1 - ALPHA)) + 1  # ~230 per decade
    assert max(agg.sketch.bins) <= MAX_KEY


def test_json_round_trip_is_exact():
    agg = aggregate_of(np.concatenate([durations("bimodal"), [0]]))
    back = Aggregate.from_json(json.loads(json.dumps(agg.to_json())))
    assert back == agg
    keys = [key for key, _ in agg.to_json()["sketch"]["bins"]]
    assert keys == sorted(keys)


# -- log2 histograms of files before version 5 -------------------------------------------------------------------


def log2_hist(values: np.ndarray) -> list[int]:
    """The log2 histogram format 4 wrote: bucket b counts the durations of bit length b (0: those <= 0)."""
    hist = [0] * HIST_BUCKETS
    for value in values.tolist():
        hist[min(max(value, 0).bit_length(), HIST_BUCKETS - 1)] += 1
    return hist


@pytest.mark.parametrize("shape", ["uniform", "lognormal", "heavy tail", "1 ns to 1e12 ns"])
def test_an_old_log2_histogram_reads_within_a_factor_of_sqrt_2(shape):
    values = durations(shape)
    old = Aggregate.from_json({"count": N, "total": int(values.sum()), "min": int(values.min()),
                               "max": int(values.max()), "hist": log2_hist(values)})
    bound = math.sqrt(2) * (1 + ALPHA)
    for q in QS:
        truth = exact(values, q)
        assert truth / bound <= old.quantile(q) <= truth * bound, (q, old.quantile(q), truth)


def test_an_old_file_loads_with_coarse_percentiles_and_says_so(tmp_path):
    old = Trace.load(OLD_FILE)
    raw = json.loads(gzip.decompress(OLD_FILE.read_bytes()))
    assert raw["version"] == 4 and "hist" in raw["overflow_firings"][0][1]
    assert old.meta[COARSE_PERCENTILES] is True
    assert old.dropped_firings == sum(a["count"] for _, a in raw["overflow_firings"] + raw["overflow_nested"])
    summary = old.summary()
    events = summary[summary["kind"] == "event"]
    past_cap = {(old.events[e], MODES[mode]) for _, e, mode in old.overflow_firings}
    assert set(zip(events["name"][events["approx"]], events["phase"][events["approx"]])) == past_cap
    assert (events["p50_ms"] <= events["p95_ms"]).all() and (events["p95_ms"] <= events["max_ms"] + 1e-12).all()
    note = next(n for n in old.notes() if "past the raw-record cap" in n)
    assert "within a factor of 1.42" in note
    again = Trace.load(old.save(tmp_path / "v5.json"))  # saved as this version, still said to be coarse
    assert again.to_json()["version"] == FORMAT_VERSION == 6
    assert again.meta[COARSE_PERCENTILES] is True and "within a factor of 1.42" in str(again)
    assert again.summary().equals(summary)


# -- a real fastai trace ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def uncapped(tmp_path_factory: pytest.TempPathFactory) -> Trace:
    learn = synth_learner(n_trn=800, n_val=80, path=tmp_path_factory.mktemp("learn"))
    with learn.no_bar(), learn.no_logging():
        with learn.trace() as t:
            learn.fit(2)
    assert not t.dropped_firings and not t.dropped_calls
    return t


def capped_copy(t: Trace, keep: int) -> Trace:
    """The same trace with only its first `keep` firings (and their calls) raw, every later firing and call added
    one at a time into the aggregates past the cap (`Aggregate.add`, what the recorder calls past the cap): the
    same durations, capped. The work between events is left out (it is not compared here)."""
    m, calls = t._firing_matrix(), t._call_matrix()
    firings: dict = {}
    nested: dict = {}
    for row in m[keep:].tolist():
        target = nested if row[F_PARENT] != -1 else firings
        target.setdefault((row[F_LOOP], row[F_EVENT], row[F_MODE]), Aggregate()).add(row[F_END] - row[F_START])
    past_calls: dict = {}
    for row in calls[calls[:, C_FIRING] >= keep].tolist():
        firing = m[row[C_FIRING]].tolist()
        key = (firing[F_LOOP], firing[F_EVENT], firing[F_MODE], row[C_CALLBACK], row[C_STATUS])
        past_calls.setdefault(key, Aggregate()).add(row[C_DUR])
    return Trace(recount(replace(
        t.data, firings=FiringRecords.from_matrix(m[:keep].copy()),
        calls=CallRecords.from_matrix(calls[calls[:, C_FIRING] < keep].copy()),
        overflow_firings=firings, overflow_nested=nested, overflow_calls=past_calls, overflow_work={})))


@pytest.mark.parametrize("keep", [0, 100, 1_000])
def test_capped_percentiles_are_within_one_percent_of_the_same_durations_exact_ones(uncapped, keep):
    """Every event row and callback row of a real fit, capped after `keep` firings: p50 and p95 against numpy's
    order statistics of the very durations the uncapped trace recorded."""
    capped = capped_copy(uncapped, keep)
    assert capped.dropped_firings == uncapped.n_firings - keep
    firings = uncapped.firings_df()
    top = firings[firings["parent"] == -1]
    truth = {(str(e), p): g["dur"].to_numpy() for (e, p), g in top.groupby(["event", "phase"], observed=True)}
    summary = capped.summary()
    events = summary[summary["kind"] == "event"]
    raw = capped.firings_df()
    past_cap = {key for key, values in truth.items()
                if len(values) > ((raw["event"].astype(str) == key[0]) & (raw["phase"] == key[1])).sum()}
    assert len(events) == len(truth) and set(zip(events["name"][events["approx"]], events["phase"][events["approx"]])) \
        == past_cap and len(past_cap) >= len(truth) - 1
    for row in events.itertuples():
        values = truth[(row.name, row.phase)]
        assert row.count == len(values)
        for q, got in ((0.5, row.p50_ms), (0.95, row.p95_ms)):
            if not row.approx:  # all raw: the exact order statistic, as the sketch defines it
                assert got == exact(values, q) / 1e6
                continue
            want = exact(values, q) / 1e6
            assert abs(got - want) <= ALPHA * want * (1 + 1e-9), (row.name, row.phase, q, got, want)
    calls = uncapped.calls_df()
    by_cb = capped.by_callback()
    assert by_cb["approx"].sum() >= len(by_cb) // 2 and by_cb["calls"].sum() == len(calls)
    for row in by_cb.itertuples():
        values = calls[(calls["callback"] == row.callback) & (calls["event"] == row.event)
                       & (calls["phase"] == row.phase)]["dur"].to_numpy()
        want = exact(values, 0.95) / 1e3 if row.approx else np.percentile(values, 95) / 1e3
        assert row.calls == len(values) and abs(row.p95_us - want) <= ALPHA * want * (1 + 1e-9), (row, want)


def test_a_real_capped_fit_keeps_every_record_in_its_sketches(tmp_path):
    learn = synth_learner(n_trn=64, n_val=8, path=tmp_path)
    with learn.no_bar(), learn.no_logging():
        with learn.trace(max_firings=100, max_calls=100) as t:
            learn.fit(2)
    aggregates = [*t.overflow_firings.values(), *t.overflow_nested.values()]
    assert sum(a.sketch.count for a in aggregates) == t.dropped_firings > 0
    assert sum(a.sketch.count for a in t.overflow_calls.values()) == t.dropped_calls > 0
    summary = t.summary()
    row = summary[(summary["name"] == "before_batch") & (summary["phase"] == "train")].iloc[0]
    assert row["count"] == 128 and row["approx"]
    assert row["p50_ms"] < row["p95_ms"] <= row["max_ms"]  # no longer one power of two for both
    text = str(t)
    assert "approx." in text and f"within {ALPHA * 100:g} %" in text
    page = t.to_html(tmp_path / "t.html").read_text()
    summary_table = page[page.index('<table class="sortable" id="summary">'):]
    summary_table = summary_table[:summary_table.index("</table>")]
    assert "<td>approx.</td>" in summary_table and "<td>True</td>" not in summary_table
    assert Trace.load(t.save(tmp_path / "t.json")).summary().equals(summary)


def test_a_trace_without_records_past_the_cap_shows_no_approx_mark(uncapped):
    assert not uncapped.summary()["approx"].any() and not uncapped.by_callback()["approx"].any()
    assert "approx." not in str(uncapped)
