"""`loopviz diff` as a gate: --fail-on-regression PCT exits 1 naming the run and rows that regressed beyond PCT and
the noise, 0 when none did; a bad PCT is a usage error. In-process with click's CliRunner, on saved traces of real
fits timed on an injected clock, so that every verdict is the same on every run (two real fits on the system clock
differ by tens of percent on a busy machine, and with thousands of rows that is significant: a gate test on them
failed in CI)."""
from __future__ import annotations

import pytest
from click.testing import CliRunner
from fastai.callback.core import Callback
from fastai.test_utils import synth_learner

from loopviz.adapters.fastai.tracer import TraceSession
from loopviz.cli import cli
from tests.clocks import CountingClock


class SleepsBeforeBatch(Callback):
    "Spends 5 ms of the injected clock before each batch, as a sleep would"

    def __init__(self, clock: CountingClock):
        self.clock = clock

    def before_batch(self):
        self.clock.spent += 5_000_000


def run(*args: str):
    """Exit code, stdout and stderr of one in-process command."""
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Saved traces of two-epoch fits, each on its own injected clock: plain, plain again, with a callback that
    spends 5 ms before each batch, and one recorded with state changes."""
    folder = tmp_path_factory.mktemp("diff")
    learn = synth_learner(path=folder)
    paths = {}
    with learn.no_bar(), learn.no_logging():
        for name, sleeps, options in (("plain", False, {}), ("again", False, {}), ("sleeps", True, {}),
                                      ("changes", False, {"changes": True})):
            clock = CountingClock()
            with TraceSession(learn, now=clock.now, **options) as t:
                learn.fit(2, cbs=[SleepsBeforeBatch(clock)] if sleeps else [])
            paths[name] = str(t.save(folder / f"{name}.json.gz"))
    return paths


def test_a_regression_beyond_the_gate_fails_and_is_named(saved):
    code, out, err = run("diff", saved["plain"], saved["sleeps"], "--fail-on-regression", "50")
    assert code == 1 and "Events and work: before / after" in out, err
    assert err.startswith("loopviz: ") and "regression(s) of 50% or more beyond the noise" in err
    assert "event before_batch (train) +" in err and "SleepsBeforeBatch.before_batch (train)" in err
    assert "(only after)" in err and len(err.strip().splitlines()) == 1
    assert "verdicts: a change of at least 50% per occurrence" in out  # PCT is the minimum without --min-change


def test_no_regression_passes(saved):
    code, out, err = run("diff", saved["plain"], saved["plain"], "--fail-on-regression", "5%")
    assert code == 0 and out.rstrip().endswith("no regression of 5% or more beyond the noise"), err
    code, out, err = run("diff", saved["sleeps"], saved["plain"], "--fail-on-regression", "10")  # faster: not one
    assert code == 0 and "no regression of 10% or more" in out and "improvement" in out, err
    code, out, err = run("diff", saved["plain"], saved["sleeps"], "--fail-on-regression", "1e9")
    assert code == 0, err


def test_min_change_given_keeps_its_verdicts_and_the_gate_its_pct(saved):
    code, out, err = run("diff", saved["plain"], saved["sleeps"], "--min-change", "0.5ms", "--fail-on-regression",
                         "50", "--top", "3")
    assert code == 1 and "verdicts: a change of at least 0.5 ms per occurrence" in out
    assert "SleepsBeforeBatch.before_batch (train)" in err


def test_traces_recorded_differently_get_a_warning(saved):
    code, out, _ = run("diff", saved["plain"], saved["changes"])
    assert code == 0
    assert "warning: the traces were recorded with different options (changes=False vs True)" in out
    assert "warning" not in run("diff", saved["plain"], saved["again"])[1]


@pytest.mark.parametrize("pct", ["fast", "-1", "inf", "nan", "5%%", ""])
def test_a_bad_pct_is_a_usage_error(saved, pct):
    code, out, err = run("diff", saved["plain"], saved["again"], "--fail-on-regression", pct)
    assert code == 2 and not out
    assert f"Invalid value for '--fail-on-regression': {pct!r} is not a percentage" in err
