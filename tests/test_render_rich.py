"""The rich view: golden trees (no colour, fixed width), ASCII fallback, markup-proof labels."""
from __future__ import annotations

import io

from rich.console import Console

import loopviz
from loopviz import RichLoop, rich_tree
from loopviz.renderers.palette import callback_colours
from tests.views import realistic_spec, tricky_spec


class AsciiFile(io.StringIO):
    encoding = "ascii"


def render(renderable, width=100, ascii_only=False) -> str:
    out = AsciiFile() if ascii_only else io.StringIO()
    console = Console(file=out, width=width, color_system=None, legacy_windows=False, force_terminal=False)
    console.print(renderable)
    return out.getvalue()


def test_golden_rich_compact(tmp_path, golden):
    golden("rich_compact_realistic.txt", render(RichLoop(realistic_spec(tmp_path))).rstrip("\n"))


def test_golden_rich_verbose(learn, golden):
    golden("rich_verbose_default.txt", render(RichLoop(learn.loop_spec(), verbose=True)).rstrip("\n"))


def test_golden_rich_ascii(learn, golden):
    text = render(RichLoop(learn.loop_spec()), ascii_only=True)
    assert text.isascii()
    assert "+-- " in text and "`-- " in text
    golden("rich_ascii_default.txt", text.rstrip("\n"))


def test_docstrings_with_brackets_print_intact_and_wrap(tmp_path):
    text = render(RichLoop(tricky_spec(tmp_path), verbose=True), width=70)
    assert "with [markup] and <tags>" in text
    assert "Scale [mixup] by 0.5 <b>bold</b>" in text
    assert max(len(line.rstrip()) for line in text.splitlines()) <= 70


def test_colours_are_the_palettes_and_consistent(tmp_path):
    spec = realistic_spec(tmp_path)
    colours = callback_colours(spec)
    assert len(set(colours.values())) == len(colours)
    tree = rich_tree(spec)
    fit = tree.children[1]
    before_fit = fit.children[0].label
    chips = {str(span.style) for span in before_fit.spans if str(span.style).startswith("#")}
    expected = {colours[c] for c in ("TrainEvalCallback", "MixedPrecision", "Recorder", "ProgressCallback",
                                      "ParamScheduler", "SaveModelCallback", "EarlyStoppingCallback")}
    assert chips == expected


def test_the_rich_view_of_a_spec_is_its_rich_loop(learn, capsys):
    loopviz.show_loop(learn.loop_spec(), fmt="rich")
    printed = capsys.readouterr().out
    assert render(RichLoop(learn.loop_spec())).splitlines()[0] in printed


def test_show_training_loop_rich_prints_the_tree(learn, capsys):
    view = learn.show_training_loop(fmt="rich")
    out = capsys.readouterr().out
    assert "before_fit" in out and "Callbacks in call order" in out
    assert str(view).startswith("Start Create")


def test_the_printed_rich_view_keeps_the_width_asked_for(learn, capsys):
    """Piped, rich would print at 80 columns whatever was asked: the view asks for its own width."""
    widest = {}
    for width in (60, 100, 160):
        learn.show_training_loop(fmt="rich", verbose=True, width=width)
        lines = capsys.readouterr().out.splitlines()
        widest[width] = max(len(line) for line in lines)
        assert widest[width] <= width, width
    assert widest[60] < widest[100] < widest[160]  # (the verbose view's docstrings fill the width)
