"""Shared fixtures: real fastai learners, golden-file comparison, and a leak check around every test."""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest

# As in a notebook: importing fastai.callback.all makes ProgressCallback a default callback.
# Importing it here, once, keeps every test's learner the same whatever order tests run in.
import fastai.callback.all  # noqa: F401
import torch
from fastai.callback import core as fastai_core
from fastai.callback.core import Callback
from fastai.learner import Learner
from fastai.test_utils import synth_learner

import loopviz  # noqa: F401  (patches Learner)
from loopviz.trace import instrument

GOLDEN = Path(__file__).parent / "golden"
PRISTINE_CALL_ONE = Learner._call_one

warnings.filterwarnings("ignore", message=".*CUDA is not available.*")
warnings.filterwarnings("ignore", message=".*torch.cuda.amp.*")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true", help="rewrite golden files from current output")


@pytest.fixture(autouse=True)
def _clean_terminal_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FORCE_COLOR", "NO_COLOR", "COLUMNS", "TERM"):
        monkeypatch.delenv(name, raising=False)


def _patched_state() -> dict[tuple[object, str], object]:
    """Every attribute and setting a tracer patches, by identity: fastai's Learner and callback classes and its
    getcallable, Lightning's dispatch functions (once imported), warnings.showwarning, torch's sync debug mode."""
    owners: list[object] = [Learner, fastai_core, warnings, *_subclasses(Callback)]
    call = sys.modules.get("lightning.pytorch.trainer.call")
    if call is not None:
        owners.append(call)
    # keyed by the owner itself: holding it keeps a class defined by the test from being collected and its id reused
    state: dict[tuple[object, str], object] = {(owner, name): value for owner in owners
                                               for name, value in list(vars(owner).items())
                                               if owner is not warnings or name == "showwarning"}
    if torch.cuda.is_available():
        state[(torch.cuda, "sync debug mode")] = torch.cuda.get_sync_debug_mode()
    return state


def _subclasses(klass: type) -> list[type]:
    found, todo = [klass], [klass]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub not in found:
                found.append(sub)
                todo.append(sub)
    return found


@pytest.fixture(autouse=True)
def _no_leaks():
    """Fail a test that leaves anything a tracer patches patched: the kernel's registry is empty after it, and every
    patched owner's attributes are as they were before it (for owners that existed before it)."""
    assert Learner._call_one is PRISTINE_CALL_ONE
    before = _patched_state()
    yield
    assert instrument.installed() == [], f"a test left patches installed: {instrument.installed()}"
    assert instrument.stranded() == [], f"a test left wrappers under other code's: {instrument.stranded()}"
    after = _patched_state()
    changed = [f"{getattr(owner, '__qualname__', owner)}.{name}" for (owner, name), value in before.items()
               if after.get((owner, name), instrument.MISSING) is not value and after.get((owner, name)) != value]
    assert not changed, f"a test left these patched: {changed}"
    assert Learner._call_one is PRISTINE_CALL_ONE, "a test left Learner._call_one patched"


@pytest.fixture
def learn(tmp_path: Path) -> Learner:
    """fastai's synthetic regression learner, writing anything it saves under tmp_path."""
    return synth_learner(path=tmp_path)


@pytest.fixture
def golden(request: pytest.FixtureRequest):
    """Compare text with tests/golden/<name>; `pytest --update-golden` rewrites the file instead."""

    def check(name: str, text: str) -> None:
        path = GOLDEN / name
        if request.config.getoption("--update-golden"):
            path.write_text(text + "\n", encoding="utf-8")
        assert path.exists(), f"no golden file {path}; create it with pytest --update-golden and review it"
        expected = path.read_text(encoding="utf-8")
        assert text + "\n" == expected, f"output differs from {path}; rerun with --update-golden after reviewing"

    return check
