"""Shared fixtures: real fastai learners, golden-file comparison, and a leak check around every test."""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest

# As in a notebook: importing fastai.callback.all makes ProgressCallback a default callback.
# Importing it here, once, keeps every test's learner the same whatever order tests run in.
import fastai.callback.all  # noqa: F401
from fastai.learner import Learner
from fastai.test_utils import synth_learner

import loopviz  # noqa: F401  (patches Learner)

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


@pytest.fixture(autouse=True)
def _no_leaks():
    """Fail a test that leaves fastai's dispatch patched."""
    assert Learner._call_one is PRISTINE_CALL_ONE
    yield
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
