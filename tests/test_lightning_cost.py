"""What tracing a Lightning fit added to it (`t.tracing_cost()`): measured on the adapter's stand-in trainers
(`loopviz.adapters.lightning.cost`), counted on a real fit's trace, and measured without leaving Lightning patched."""
from __future__ import annotations

import itertools
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("lightning")

from lightning.pytorch.trainer import call  # noqa: E402

from loopviz.adapters import lightning as adapter  # noqa: E402
from loopviz.adapters.lightning import cost as lightning_cost  # noqa: E402
from loopviz.errors import LoopvizError  # noqa: E402
from loopviz.trace import instrument  # noqa: E402
from loopviz.trace.cost import COST_KEY, TracingCost, why_unmeasured  # noqa: E402
from loopviz.trace.reports import total_ns  # noqa: E402
from tests.lightning_fixtures import TinyModule, loader, quiet_lightning, trainer  # noqa: E402

quiet_lightning()
pytestmark = pytest.mark.filterwarnings("ignore")
NAMES = ("_call_callback_hooks", "_call_lightning_module_hook", "_call_strategy_hook",
         "_call_lightning_datamodule_hook", "_call_and_handle_interrupt")


def _originals() -> dict[str, Any]:
    return {name: getattr(call, name) for name in NAMES}


def _fit(root: Path, **options: Any) -> Any:
    """The tests' small fit (two epochs of four batches, with validation and its sanity check), traced."""
    tr = trainer(root)
    with adapter.trace(tr, **options) as t:
        tr.fit(TinyModule(), loader(), loader())
    return t


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing measured yet in this process: the next read of a trace measures the stand-in."""
    monkeypatch.setattr(lightning_cost, "_MEASURED", {})


def test_a_fit_s_cost_is_its_firings_and_calls_at_the_measured_costs(tmp_path: Path, fresh: None) -> None:
    t = _fit(tmp_path)
    found = t.tracing_cost()
    assert isinstance(found, TracingCost)
    assert 0 < found.per_firing_us < 1000 and 0 < found.per_call_us < 1000
    assert found.firings == t.n_firings + t.dropped_firings > 0
    assert found.calls == t.n_calls + t.dropped_calls > 0
    entry = t.meta[COST_KEY]
    assert found.setup_ms == (found.events * entry["per_event_ns"] + found.handlers * entry["per_handler_ns"]) / 1e6
    expected_ms = found.firings * found.per_firing_us / 1000 + found.calls * found.per_call_us / 1000 + found.setup_ms
    assert math.isclose(found.added_ms, expected_ms, rel_tol=1e-9)
    assert math.isclose(found.share, found.added_ms * 1e6 / total_ns(t.data), rel_tol=1e-9)
    assert 0 < found.share < 1
    entry = t.meta[COST_KEY]
    assert {"per_firing_ns", "per_call_ns"} <= set(entry)
    assert entry["per_firing_ns"] == pytest.approx(found.per_firing_us * 1000)
    assert entry["per_call_ns"] == pytest.approx(found.per_call_us * 1000)


def test_measured_once_per_process(tmp_path: Path, fresh: None) -> None:
    first, second = _fit(tmp_path), _fit(tmp_path)
    assert first.tracing_cost() is not None
    assert set(lightning_cost._MEASURED) == {"host"}
    assert second.meta.get(COST_KEY) is None  # measured when first read, not before
    second.firings_df()
    assert second.meta[COST_KEY] == first.meta[COST_KEY]
    assert second.meta[COST_KEY] is not first.meta[COST_KEY]  # each trace has its own copy


def test_the_stand_in_fires_firings_in_the_tracer_s_sense(fresh: None) -> None:
    """Each dispatch pair of the stand-in's batch (callbacks, then the module) is one firing, with one call per
    callback that handles it."""
    trainers = lightning_cost._stand_ins()
    hooks = lightning_cost.BATCH_HOOKS
    for handlers, stand_in in trainers.items():
        with adapter.LightningTracer(stand_in) as t:
            for hook, args in hooks * 3:
                call._call_callback_hooks(stand_in, hook, *args)
                call._call_lightning_module_hook(stand_in, hook, *args)
        assert t.n_firings == 3 * len(hooks)
        assert t.n_calls == 3 * len(hooks) * handlers
        assert list(t.firings_df()["event"]) == [hook for hook, _ in hooks] * 3


def test_a_caller_s_clock_is_not_measured(tmp_path: Path, fresh: None) -> None:
    ticks = itertools.count(0, 1000)
    t = _fit(tmp_path, now=lambda: next(ticks))
    assert t.tracing_cost() is None
    assert "clock given by the caller" in why_unmeasured(t.data)
    assert t.meta[COST_KEY] == {"unmeasured": why_unmeasured(t.data)}
    assert lightning_cost._MEASURED == {}  # nothing was measured for it


def test_not_read_while_recording(tmp_path: Path, fresh: None) -> None:
    tr = trainer(tmp_path, max_epochs=1)
    with adapter.trace(tr) as t:
        tr.fit(TinyModule(), loader())
        with pytest.raises(LoopvizError, match="still recording"):
            t.tracing_cost()
    assert COST_KEY not in t.meta and lightning_cost._MEASURED == {}
    assert t.tracing_cost() is not None


def test_not_measured_while_another_lightning_trace_records(tmp_path: Path, fresh: None) -> None:
    done = _fit(tmp_path)
    other = trainer(tmp_path, max_epochs=1)
    with adapter.trace(other):
        assert done.tracing_cost() is None
    assert "another Lightning trace was recording" in why_unmeasured(done.data)
    assert lightning_cost._MEASURED == {}  # not kept: the next trace read alone is measured
    assert _fit(tmp_path).tracing_cost() is not None


def test_measuring_leaves_lightning_as_it_was(tmp_path: Path, fresh: None, monkeypatch: pytest.MonkeyPatch) -> None:
    before = _originals()
    t = _fit(tmp_path)
    assert _originals() == before
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    lightning_cost._stand_ins.cache_clear()  # the stand-in trainers are built as it measures
    scratch = _scratch()
    assert t.tracing_cost() is not None and lightning_cost._MEASURED  # measured now
    assert _originals() == before
    assert instrument.installed() == [] and instrument.stranded() == []
    for stand_in in lightning_cost._stand_ins().values():
        for obj in [stand_in.lightning_module, *stand_in.callbacks]:
            assert not [k for k, v in vars(obj).items() if getattr(v, "__loopviz_wrapper__", False)]
    assert list(here.iterdir()) == [] and _scratch() == scratch  # nothing written, no folder left behind
    tr, module = trainer(tmp_path, max_epochs=1), TinyModule()  # a plain fit after it runs untraced, as before
    tr.fit(module, loader())
    assert tr.global_step == 4 and module.seen.count("on_before_backward") == 4
    assert _originals() == before
    assert _fit(tmp_path).n_firings > 0  # and a new trace records as before


def _scratch() -> set[str]:
    """The stand-ins' temporary folders (deleted once the trainers are built)."""
    return {name for name in os.listdir(tempfile.gettempdir()) if name.startswith("loopviz-lightning-cost-")}
