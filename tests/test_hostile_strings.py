"""Strings from callbacks cannot break any view (issue 12): hostile class names and docstrings, fuzzed and
hand-picked, through the text, rich, DOT, SVG and Mermaid views and a trace's text, rich, HTML, Chrome and plot
outputs. Every view must render, show control characters as their Python escapes (never raw), stay valid for
its reader (XML, UTF-8, Mermaid's parser), and still show the name."""
from __future__ import annotations

import html
import io
import json
import os
import re
import shutil
import subprocess
import time
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fastai.callback.core import Callback
from fastai.test_utils import synth_learner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from rich.console import Console

from loopviz import LoopDiagram, LoopvizError, render_mermaid, render_text
from loopviz.renderers.rich_tree import RichLoop, render_rich_text
from loopviz.renderers.sanitise import NAME_LIMIT, TEXT_LIMIT, cut, visible_spec
from loopviz.renderers.shown import class_docs, handler_doc
from loopviz.trace.trace import Trace
from tests.test_render_mermaid import official_parse

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
SVG = "{http://www.w3.org/2000/svg}"

# What no printed view may emit raw: C0 controls (but newline), DEL, C1, lone surrogates, U+FFFE/FFFF, bidi controls.
UNSAFE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff\u202a-\u202e\u2066-\u2069]")
SGR = re.compile(r"\x1b\[[0-9;]*m")  # rich's own colours, the one escape sequence a coloured console may print

NAMES = [
    "Backspace\bfoo\b", "Clear\x1b[2J", "Title\x1b]0;pwned\x07", "Del\x7fC1\x85\x9b", "Bidi\u202eesrever",
    "Tab\tNewline\nCR\rEnd", "Cdata]]>", "Script<script>alert(1)</script>", "Amp&amp;&", 'Quote"\'',
    "Back\\slash\\l\\n", "Brace{x}%s%d", 'Mermaid#quot;-->|pipe|end;"]', "[mixup]", "Dollar$\\frac$", "Emoji😀ünï",
    "Nonchar\ufffe\uffff", "Graphviz\\N\\G\\E\\H\\T\\L\\\\x",
]
DOCS = [
    "\bfoo\b backspaces", "NUL\x00here", "\x1b[2J clears \x1b]0;pwned\x07", "lone \ud800 and \udfff surrogates",
    "CRLF\r\nline\ttab", "]]> <script>alert(1)</script> & \"q\" \\ {} % #quot; --> |x| end", "\u2028sep\u2029",
]


def shown(text: str, multiline: bool = False) -> str:
    """What a view must show for `text`: every unsafe character as `ascii()` writes it; a name on one line, a
    docstring keeping its newlines (CRLF as one) and tabs."""
    kept = "\t\n" if multiline else ""
    text = text.replace("\r\n", "\n") if multiline else text
    return "".join(ascii(c)[1:-1] if (UNSAFE.match(c) or c in "\t\n\r") and c not in kept else c for c in text)


def flat(text: str) -> str:
    return "".join(text.split())


def hostile_spec(learn: Any, names: list[str], docs: list[str]) -> Any:
    """The loop with one callback per name, each with a class docstring and a documented after_batch handler."""
    cbs = []
    for i, name in enumerate(names):
        doc = docs[i % len(docs)] if docs else ""

        def after_batch(self) -> None:
            pass

        after_batch.__doc__ = doc
        cls = type(name, (Callback,), {"after_batch": after_batch, "order": 40 + i})
        cls.__doc__ = doc  # set afterwards: type() cannot take a docstring with a lone surrogate
        cbs.append(cls())
    return learn.loop_spec(cbs=cbs)


def printed_safe(out: str) -> None:
    """A printed view: no unsafe character, and it encodes to UTF-8 strictly."""
    assert not UNSAFE.findall(out), f"raw control characters {sorted(set(UNSAFE.findall(out)))!r}"
    out.encode("utf-8")


def shows_names(out: str, spec: Any, limit: int | None = None) -> None:
    """Every callback's name is there, escaped (and cut, for diagrams)."""
    out = flat(out)
    for info in spec.callbacks:
        want = shown(info.cls) if limit is None else cut(" ".join(shown(info.cls).split()), limit)
        assert flat(want) in out, f"{want[:80]!r} is not shown"


def shows_docs(out: str, spec: Any) -> None:
    """Every line of what each handler says (its own docstring, else its first line of code) is there, escaped (the
    printed views do not cut), and each callback class's docstring once, with the callbacks."""
    out = flat(out)
    for event in spec.events():
        for handler in event.handlers:
            said = handler_doc(handler) if handler.runs else None
            for line in shown(said or "", multiline=True).splitlines():
                assert flat(line) in out, f"{line[:80]!r} is not shown"
    for label, doc in class_docs(visible_spec(spec)):
        assert flat(doc) in out, f"{label}'s docstring {doc[:80]!r} is not shown"


def rich_printed(renderable: Any, colour: bool) -> str:
    """What a rich console writes for `renderable`, plain or in colour (SGR codes removed)."""
    out = io.StringIO()
    console = Console(file=out, width=100_000, force_terminal=colour, color_system="truecolor" if colour else None,
                      legacy_windows=False)
    console.print(renderable)
    return SGR.sub("", out.getvalue())


def mermaid_text(chart: str) -> str:
    """What Mermaid shows: loopviz's tags dropped, then entity codes decoded."""
    return re.sub(r"#(\d+);", lambda m: chr(int(m.group(1))), re.sub(r"<[^>]+>", " ", chart))


def svg_text(svg: str) -> str:
    """The text an SVG shows, less the invisible word joiners the diagram puts after each backslash."""
    root = ET.fromstring(svg)  # well-formed XML, or this raises
    return " ".join(el.text or "" for el in root.iter(f"{SVG}text")).replace("\u2060", "")


def check_loop_views(spec: Any, verbose: bool, every_row: bool = True) -> None:
    """Text, rich, Mermaid and DOT source of `spec`: rendered, safe for their reader, names still shown (in the
    diagram too unless some rows of a table were dropped, `every_row=False`)."""
    text = render_text(spec, verbose, width=100_000)
    printed_safe(text)
    shows_names(text, spec)
    plain, coloured = (rich_printed(RichLoop(spec, verbose), colour) for colour in (False, True))
    for out in (plain, coloured):
        printed_safe(out)
        shows_names(out, spec)
    printed_safe(render_rich_text(spec, verbose))
    chart = render_mermaid(spec, verbose)
    chart.encode("utf-8")
    assert all(c.isascii() and (c.isprintable() or c == "\n") for c in chart)
    shows_names(mermaid_text(chart), spec, NAME_LIMIT)
    source = LoopDiagram(spec, verbose).source
    assert all(c.isascii() and (c.isprintable() or c in "\n\t") for c in source)
    if every_row:
        shows_names(html.unescape(source).replace("\u2060", ""), spec, NAME_LIMIT)
    if verbose:
        shows_docs(text, spec)
        shows_docs(plain, spec)


@pytest.fixture(scope="module")
def learner(tmp_path_factory) -> Any:
    return synth_learner(path=tmp_path_factory.mktemp("hostile"))


# -- fuzzing -------------------------------------------------------------------------------------

any_char = st.characters(exclude_categories=())  # surrogates too
name_chars = st.characters(exclude_categories=("Cs",), exclude_characters="\x00")  # what type() accepts


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(name_chars, max_size=40), doc=st.text(any_char, max_size=200), verbose=st.booleans())
@example(name="Clear\x1b[2J", doc="lone \ud800 \x00 \bfoo\b", verbose=True)
def test_fuzzed_names_and_docs_render_in_every_printed_view(learner, name, doc, verbose):
    spec = hostile_spec(learner, [f"Hostile{name}"], [doc])
    check_loop_views(spec, verbose)


@needs_dot
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(name_chars, max_size=40), doc=st.text(any_char, max_size=300))
def test_fuzzed_names_and_docs_draw_as_svg(learner, name, doc):
    spec = hostile_spec(learner, [f"Hostile{name}"], [doc])
    shows_names(svg_text(LoopDiagram(spec, verbose=True).svg()), spec, NAME_LIMIT)


# -- hand-picked ---------------------------------------------------------------------------------

CASES = {
    "names": (NAMES, DOCS),
    "long name": (["Long" + "N" * 16_500], ["short"]),
    "huge docs": ([f"Big{i}" for i in range(6)], ["😀 " * 5000, "ü\n" * 3000, "x" * 20_000, "&<>" * 3000]),
    "many callbacks": ([f"Cb{i:03d}" for i in range(150)], []),
}


@pytest.mark.parametrize("verbose", [False, True])
@pytest.mark.parametrize("case", list(CASES))
def test_hand_picked_strings_render_in_every_printed_view(learner, case, verbose):
    check_loop_views(hostile_spec(learner, *CASES[case]), verbose, every_row=case != "many callbacks")


@needs_dot
@pytest.mark.parametrize("verbose", [False, True])
@pytest.mark.parametrize("case", list(CASES))
def test_hand_picked_strings_draw_as_svg(learner, case, verbose):
    spec = hostile_spec(learner, *CASES[case])
    svg = LoopDiagram(spec, verbose).svg()
    texts = svg_text(svg)
    assert "<script" not in svg
    if case != "many callbacks":  # 150 rows do not fit one label: rows are dropped, and counted
        shows_names(texts, spec, NAME_LIMIT)
    else:
        assert "more rows: too long for one Graphviz label" in texts


@needs_dot
@pytest.mark.parametrize("verbose", [False, True])
def test_a_text_of_brackets_alone_draws(learner, verbose):
    """Graphviz refuses a text that is "]" alone (hypothesis found it: a framework named "]" in the title, a phase
    "]" in its title): every text reaching the diagram has its "]" as a character reference. Nor may a FONT be
    empty."""
    spec = replace(hostile_spec(learner, ["]", "]]"], ["]"]), framework="]", loop="]")
    svg = LoopDiagram(spec, verbose).svg()
    assert "]]" in svg_text(svg)
    LoopDiagram(replace(spec, framework=""), verbose).svg()  # nor an empty FONT: a framework without a name


@needs_dot
def test_a_cut_name_is_whole_in_the_tooltip(learner):
    name = "Long" + "N" * 500
    svg = LoopDiagram(hostile_spec(learner, [name], ["doc"])).svg()
    root = ET.fromstring(svg)
    assert cut(name, NAME_LIMIT) in svg_text(svg) and name not in svg_text(svg)
    titles = [a.get("{http://www.w3.org/1999/xlink}title") or "" for a in root.iter(f"{SVG}a")]
    assert any(f"in full: {name}" in t for t in titles)


def test_docs_are_cut_in_diagrams_only(learner):
    spec = hostile_spec(learner, ["Wordy"], ["word " * 1000])
    assert flat("word " * 1000) in flat(render_text(spec, verbose=True, width=100_000))
    assert "…" in html.unescape(LoopDiagram(spec, verbose=True).source)
    chart = mermaid_text(render_mermaid(spec, verbose=True))
    assert flat("word " * 1000) not in flat(chart)
    assert flat(cut("word " * 1000, TEXT_LIMIT).rstrip("…")) in flat(chart)


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_the_official_mermaid_parser_accepts_hostile_charts(learner, tmp_path):
    charts = {f"{case.replace(' ', '_')}_{verbose}": render_mermaid(hostile_spec(learner, *CASES[case]), verbose)
              for case in ("names", "long name", "huge docs") for verbose in (False, True)}
    out = official_parse(tmp_path, charts)
    assert out.count("OK ") == len(charts), out


# -- traces --------------------------------------------------------------------------------------


def slow_handler(self) -> None:
    "Sleeps, so the timeline has room to print the name"
    time.sleep(0.003)


@pytest.fixture(scope="module")
def traced(tmp_path_factory) -> Trace:
    """A real traced fit with hostile callback names (and a slow one, so the plot draws its name)."""
    cbs = [type(name, (Callback,), {"after_batch": slow_handler if i == 0 else (lambda self: None)})()
           for i, name in enumerate(["Dollar$\\frac$", *NAMES[:8]])]
    learn = synth_learner(path=tmp_path_factory.mktemp("traced"), cbs=cbs)
    with learn.no_bar(), learn.no_logging():
        with learn.trace() as t:
            learn.fit(1)
    return t


def renamed(trace: Trace, name: str, event: str) -> Trace:
    """The trace with its callbacks (`name0`, `name1`...), framework, loop labels and before_draw renamed, as a
    recording could name them (a custom event's name is any string given to `learn(...)`)."""
    return Trace(replace(
        trace.data, framework=name, loops=[name for _ in trace.loops],
        callbacks=[{**cb, "cls": f"{name}{i}"} for i, cb in enumerate(trace.callbacks)],
        events=[event if e == "before_draw" else e for e in trace.events]))


def check_trace_views(t: Trace, tmp_path: Path, name: str) -> None:
    """str(t), its rich tables (plain and coloured), its HTML and its Chrome file: rendered, safe, `name` shown."""
    for out in (str(t), rich_printed(t.__rich__(), False), rich_printed(t.__rich__(), True)):
        printed_safe(out)
        assert flat(shown(name)) in flat(out)
    page = t._repr_html_()
    page.encode("utf-8")
    assert not UNSAFE.findall(page) and "<script>alert" not in page
    chrome = json.loads(t.to_chrome(tmp_path / "chrome.json").read_text(encoding="utf-8"))
    called = {e["args"]["callback"] for e in chrome["traceEvents"] if e.get("cat") == "callback"}
    assert called and called <= {c["cls"] for c in t.callbacks}  # the file keeps the true names


def test_a_traced_fit_with_hostile_names_shows_in_every_trace_view(traced, tmp_path):
    check_trace_views(traced, tmp_path, "Dollar$\\frac$")  # the costliest callback: in the table's first rows


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(any_char, min_size=1, max_size=30), event=st.text(any_char, min_size=1, max_size=30))
def test_fuzzed_names_in_a_trace_show_in_every_trace_view(traced, tmp_path, name, event):
    check_trace_views(renamed(traced, name, event), tmp_path, name)


def test_the_plot_draws_hostile_names_literally(traced):
    fig = traced.plot()
    fig.savefig(io.BytesIO(), format="png")  # mathtext in '$\frac$' would raise here
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert "Dollar\\$\\frac\\$" in texts  # drawn as the literal name: '\$' is matplotlib's literal dollar
    assert not any(UNSAFE.findall(text) for text in texts)


def test_a_plot_of_renamed_callbacks_saves(traced):
    for name in ("\ud800$x$", "\x1b[2J$\\frac$"):
        renamed(traced, name, name).plot().savefig(io.BytesIO(), format="png")


# -- when dot fails ------------------------------------------------------------------------------


def broken(learner) -> LoopDiagram:
    """A diagram whose DOT source dot rejects."""
    diagram = LoopDiagram(learner.loop_spec())
    diagram.graph.body.append("  }{ not dot\x1b[2J\n")
    return diagram


@needs_dot
def test_a_dot_failure_is_one_line_saying_what_to_do(learner, capfd):
    with pytest.raises(LoopvizError) as caught:
        broken(learner).svg()
    message = str(caught.value)
    assert "\n" not in message and not UNSAFE.findall(message)
    assert message.startswith("Graphviz's dot could not draw this diagram as SVG (Error: ")
    assert message.endswith("save the diagram as .dot to keep its source, and please report this as a loopviz bug.")
    assert capfd.readouterr().err == ""  # dot's own stderr is not passed through


@needs_dot
def test_the_notebook_shows_the_text_when_dot_fails(learner):
    bundle = broken(learner)._repr_mimebundle_()
    assert set(bundle) == {"text/plain"}
    text, note = bundle["text/plain"].rsplit("\n\n", 1)
    assert text.startswith("Start Fit") or text.startswith("Start Create")
    assert note.startswith("(no diagram: Graphviz's dot could not draw this diagram as SVG (Error: ")


def test_a_hanging_dot_is_stopped(learner, tmp_path, monkeypatch):
    fake = tmp_path / "dot"
    fake.write_text("#!/bin/sh\nsleep 30\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr("loopviz.diagram.DOT_TIMEOUT", 0.5)
    diagram = LoopDiagram(learner.loop_spec())
    with pytest.raises(LoopvizError, match=r"^Graphviz's dot did not finish drawing PNG within 0.5 s; save the"):
        diagram.pipe("png")
    assert "(no diagram: Graphviz's dot did not finish" in diagram._repr_mimebundle_()["text/plain"]


def test_a_dot_killed_by_a_signal_is_a_loopviz_error(learner, tmp_path, monkeypatch):
    fake = tmp_path / "dot"
    fake.write_text("#!/bin/sh\nkill -SEGV $$\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(LoopvizError, match=r"\(exit status -11\)"):
        LoopDiagram(learner.loop_spec()).svg()


def test_a_subprocess_error_is_a_loopviz_error(learner, monkeypatch):
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise PermissionError(13, "Permission denied\nsecond line")

    monkeypatch.setattr(subprocess, "run", refuse)
    message = r"^Graphviz's dot could not be run \(\[Errno 13\] Permission denied\\nsecond line\); save"
    with pytest.raises(LoopvizError, match=message):
        LoopDiagram(learner.loop_spec()).svg()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(any_char, min_size=1, max_size=30), event=st.text(any_char, min_size=1, max_size=30))
@example(name="Evil<!--<script>", event="</script><!--")
@example(name="\ud800", event="after_batch")  # a lone surrogate (hypothesis found it): the diagram's colours too
@example(name="]", event="0")  # a text of "]" alone, which Graphviz refuses (hypothesis found it)
def test_fuzzed_names_stay_data_in_the_report_s_json_island(traced, tmp_path, name, event):
    """The diagram's hover data sits in a <script> element: no name may end it or open a comment in it (issue 24)."""
    page = renamed(traced, name, event).to_html(tmp_path / "fuzzed.html").read_text(encoding="utf-8")
    island = re.search(r'<script type="application/json" id="diagram-details">(.*?)</script>', page, re.S).group(1)
    assert island.isascii() and not re.search("[<>&]", island)
    callbacks = [c for step in json.loads(island).values() for c in step["callbacks"]]
    assert callbacks and all(c.startswith(shown(name)) for c in callbacks)
