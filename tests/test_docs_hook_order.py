"""docs/lightning-hooks.md and docs/transformers-events.md: each is what docs/hook_order.py writes, and the order
each draws is the order the framework really calls, recorded as the frameworks' own tests record it."""
from __future__ import annotations

import re
import runpy
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("lightning")
pytest.importorskip("transformers")

import lightning.pytorch as pl  # noqa: E402
from lightning.pytorch.callbacks import Callback  # noqa: E402

from loopviz.adapters.lightning import lightning_spec  # noqa: E402
from loopviz.adapters.transformers import trainer_spec  # noqa: E402
from tests.hf_fixtures import Spy  # noqa: E402
from tests.lightning_fixtures import record_hooks  # noqa: E402
from tests.test_adapter_lightning import NOT_SHOWN  # noqa: E402
from tests.test_adapter_transformers import Case, expand  # noqa: E402

DOCS = Path(__file__).parent.parent / "docs"
pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def pages() -> dict[str, Any]:
    script = runpy.run_path(str(DOCS / "hook_order.py"), run_name="hook_order")
    script["_quiet"]()
    return script


def _pinned(package: str) -> str:
    """The version of `package` requirements/dev.txt pins (the pages name it)."""
    text = (Path(__file__).parent.parent / "requirements" / "dev.txt").read_text()
    return re.search(rf"^{re.escape(package)}(?:\[[^]]*\])?==(\S+)", text, re.M).group(1)


def test_the_pages_are_what_the_script_writes(pages: dict[str, Any]) -> None:
    import transformers

    if (transformers.__version__, pl.__version__) != (_pinned("transformers"), _pinned("lightning")):
        pytest.skip("the pages are written for the pinned transformers and Lightning (CI's newest versions differ); "
                    "their order is checked by the tests below all the same")
    assert (DOCS / "lightning-hooks.md").read_text() == pages["lightning_page"](), "python docs/hook_order.py"
    assert (DOCS / "transformers-events.md").read_text() == pages["transformers_page"](), "python docs/hook_order.py"


def _first_calls(called: list[str]) -> list[str]:
    """Each hook the recorder saw, in the order of its first call, less the module's own helpers."""
    names = [name.split(".")[-1] for name in called]
    return [name for name in dict.fromkeys(names) if name not in NOT_SHOWN]


def _recorded_run(pages: dict[str, Any], root: Path, loop: str, ckpt: str | None = None) -> tuple[list[str], Any]:
    """One run of the page's trainer and module with every hook recorded: (hooks in first-call order, the spec the
    page draws for it)."""
    module_cls, callback_cls = pages["lightning_classes"]()
    called: list[str] = []
    callback = record_hooks(callback_cls(), Callback, called, "Callback.")
    trainer = pages["lightning_trainer"](str(root), [callback], **({"max_epochs": 3} if ckpt else {}))
    module = record_hooks(module_cls(), pl.LightningModule, called)
    spec = lightning_spec(trainer, module, loop, ckpt_path=ckpt)
    loader = pages["lightning_loader"]
    kw = {"ckpt_path": ckpt} if ckpt else {}
    if loop == "fit":
        trainer.fit(module, loader(), loader(), **kw)
    else:
        getattr(trainer, loop)(module, loader())
    return _first_calls(called), spec


@pytest.mark.parametrize("loop", ["fit", "validate", "test", "predict"])
def test_the_lightning_page_draws_the_real_order(pages: dict[str, Any], tmp_path: Path, loop: str) -> None:
    real, spec = _recorded_run(pages, tmp_path, loop)
    assert spec.event_names() == real
    assert [ev.name for ev in pages["lightning_specs"](str(tmp_path / "page"))[loop].events()] == \
        [ev.name for ev in spec.events()]  # the page's spec is this one


def test_the_lightning_page_draws_the_real_order_of_a_resumed_fit(pages: dict[str, Any], tmp_path: Path) -> None:
    _recorded_run(pages, tmp_path / "first", "fit")
    real, spec = _recorded_run(pages, tmp_path, "fit", ckpt=str(tmp_path / "first" / "last.ckpt"))
    assert spec.event_names() == real
    assert real[real.index("configure_model") + 1:real.index("configure_optimizers")] == \
        ["on_load_checkpoint", "load_state_dict"]


def test_the_transformers_page_draws_the_real_sequence(pages: dict[str, Any], tmp_path: Path) -> None:
    trainer = pages["hf_trainer"](str(tmp_path))
    spec = trainer_spec(trainer)
    with Spy(trainer) as spy:
        trainer.train()
    assert expand(spec, trainer, Case(dict(pages["TRAINER_ARGS"]), n_train=16)) == spy.events
    assert {"on_save", "on_substep_end", "on_prediction_step", "on_evaluate"} <= set(spy.events)
