"""In a real notebook kernel every loopviz object shows once: one output per cell, text and HTML in one bundle (a
plot: one image), however the cell ends — the trace, a report, a loop view, a plot, a trace diff."""
from __future__ import annotations

from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from loopviz.trace.display import PRE_STYLE

SETUP = """\
import warnings
warnings.filterwarnings("ignore", module="(?!loopviz)")  # a third party's warnings (torch's...) are not loopviz's output
from fastai.callback.all import *
from fastai.test_utils import synth_learner
import loopviz
learn = synth_learner(n_trn=3, n_val=2)
with learn.no_bar(), learn.no_logging():
    with learn.trace() as t:
        learn.fit(1)"""

# name -> cell source; cells run in this order in one kernel
CELLS = {
    "setup": SETUP,
    "trace": "t",
    "summary": "t.summary()",
    "print": "print(t)",
    "view": "learn.show_training_loop()",
    "view_rich": "learn.show_training_loop(fmt='rich')",
    "view_mermaid": "learn.show_training_loop(fmt='mermaid')",
    "view_traced": "learn.show_training_loop(trace=t, verbose=True)",
    "view_kept": "v = learn.show_training_loop(fmt='rich')",
    "view_again": "v",
    "view_and_value": "w = learn.show_training_loop(); w",
    "plot": "t.plot()",
    "plot_kept": "fig = t.plot()\nfig.savefig('plot.png')",
    "plot_again": "fig",
    "diff": "loopviz.diff_traces(t, t)",
    "recording": "r = learn.trace().__enter__()\nr",
    "stopped": "r.stop()",
    "rich_pretty": "import rich.pretty\nrich.pretty.install()",
    "trace_rich_pretty": "t",
    "view_rich_pretty": "learn.show_training_loop()",
    # a trace held in a name and started, as pyinstrument's Profiler is; then the magics
    "not_started": "u = learn.trace()\nu",
    "started_and_stopped": "u.start()\nwith learn.no_bar(), learn.no_logging(): learn.fit(1)\nu.stop()",
    "load_ext": "%load_ext loopviz",
    "magic": "%%loopviz\nwith learn.no_bar(), learn.no_logging(): learn.fit(1)",
    "magic_quiet": "%%loopviz -q -o kept\nwith learn.no_bar(), learn.no_logging(): learn.fit(1)",
    "magic_kept": "kept",
    "magic_line": "%loopviz -o line learn.validate()",
    # the live view without a bar: one output of the cell, updated in place at each refresh (every batch here)
    "live": "import loopviz.trace.live as live\nlive.REFRESH_NS = live.FIRST_FINDING_NS = live.FINDING_BUDGET = 0\n"
            "many = synth_learner(n_trn=20, n_val=2)\n"
            "with many.no_bar(), many.no_logging(), many.trace(live=True): many.fit(1)",
}
BUNDLE = {"text/plain", "text/html"}


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Any]]:
    """Each cell's outputs, by name, from one run of the notebook in one kernel."""
    folder = tmp_path_factory.mktemp("notebook")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in CELLS.values()])
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(folder)}}).execute()
    assert (folder / "plot.png").stat().st_size > 0  # `fig = t.plot()` saves
    return {name: cell.outputs for name, cell in zip(CELLS, nb.cells)}


def shown(outs: list[Any]) -> list[set[str]]:
    """The mime types of each output that displays something (stream text counts as 'stream')."""
    return [{"stream"} if o.output_type == "stream" else set(o.get("data", {})) for o in outs]


@pytest.mark.parametrize("name", ["trace", "summary", "view", "view_rich", "view_traced", "view_kept",
                                  "view_again", "view_and_value", "diff", "recording", "stopped", "trace_rich_pretty",
                                  "view_rich_pretty", "not_started", "started_and_stopped", "magic", "magic_kept"])
def test_a_cell_ending_in_a_loopviz_object_shows_one_bundle_of_text_and_html(outputs, name):
    assert shown(outputs[name]) == [BUNDLE], name


def test_the_trace_is_its_tables_once_in_a_monospace_pre(outputs):
    (out,) = outputs["trace"]
    assert out.output_type == "execute_result"
    page, text = out.data["text/html"], out.data["text/plain"]
    assert page.startswith(f'<pre style="{PRE_STYLE}">') and "monospace" in PRE_STYLE
    for part in ("Trace", "Events and work", "Callbacks (costliest first)"):
        assert page.count(part) == text.count(part) == 1, part
    assert shown(outputs["recording"]) == [BUNDLE] and "still recording" in outputs["recording"][0].data["text/plain"]


def test_printing_a_trace_is_only_its_text(outputs):
    (out,) = outputs["print"]
    assert out.output_type == "stream" and out.text.startswith("Trace of fastai")


def test_a_plot_shows_one_image_as_pyplot_shows_its_figures(outputs):
    """`t.plot()` as the cell's value: one image (not a second one from pyplot at the cell's end); kept in a name:
    pyplot shows it at the cell's end, as it does a figure of `plt.subplots()`; the name shows it again."""
    images = [o for o in outputs["plot"] if "image/png" in o.get("data", {})]
    assert len(outputs["plot"]) == len(images) == 1
    assert [set(o.data) >= {"image/png"} for o in outputs["plot_kept"]] == [True]
    assert [set(o.data) >= {"image/png"} for o in outputs["plot_again"]] == [True]


def test_nothing_else_printed_anything(outputs):
    assert outputs["setup"] == [] and outputs["rich_pretty"] == []


def test_a_trace_started_and_stopped_by_hand_and_the_magics_show_the_trace(outputs):
    assert "never started" in outputs["not_started"][0].data["text/plain"]
    for name in ("started_and_stopped", "magic", "magic_kept"):
        assert outputs[name][0].data["text/plain"].startswith("Trace of fastai"), name
    first = outputs["trace"][0].data["text/plain"].split(",")[0]  # 'Trace of fastai ...: N event firings'
    assert outputs["magic"][0].data["text/plain"].split(",")[0] == first  # the same fit, traced by `with` and by magic
    assert outputs["load_ext"] == [] and outputs["magic_quiet"] == []
    (line,) = [o for o in outputs["magic_line"] if o.output_type == "execute_result"]
    assert "(validate)" in line.data["text/plain"]


def test_the_mermaid_view_is_a_mermaid_block_in_markdown_that_jupyterlab_draws(outputs):
    (out,) = outputs["view_mermaid"]
    assert set(out.data) == {"text/plain", "text/markdown"}
    markdown = out.data["text/markdown"]
    assert markdown.startswith("```mermaid\nflowchart TB\n") and markdown.rstrip().endswith("```")
    assert markdown.split("\n", 1)[1].rstrip().removesuffix("```").rstrip() == out.data["text/plain"].rstrip()


def test_the_live_view_without_a_bar_is_one_output_updated_in_place(outputs):
    (out,) = outputs["live"]
    assert out.output_type == "display_data" and set(out.data) == {"text/plain"}
    first, second = out.data["text/plain"].splitlines()
    assert first.startswith("loopviz live: ") and "draw " in first
    assert second.startswith("  top finding so far: ")
