"""The README's sample of what `t` prints is what `t` prints: docs/make_images.py writes it from a real traced fit
(`readme_text`); this runs the same fit and compares what does not depend on the machine's speed: the first line's
counts and loops, the headings and table headers in order, how many rows each table shows and how many it leaves."""
from __future__ import annotations

import re
from pathlib import Path

from fastai.callback.all import GradientClip
from fastai.test_utils import synth_learner

README = Path(__file__).parent.parent / "README.md"
OPENING = ">>> with learn.trace() as t: learn.fit_one_cycle(2)\n>>> t\n"


def readme_sample() -> str:
    page = README.read_text(encoding="utf-8")
    start = page.index(OPENING) + len(OPENING)
    return page[start:page.index("```", start)]


def skeleton(text: str) -> list[str]:
    """The lines that do not depend on timings: headings, table headers and rules, the '... more rows' lines (their
    numbers kept: the tables' sizes do not vary), each table body as its number of rows; the first line's counts."""
    out: list[str] = []
    rows = 0
    lines = text.rstrip("\n").splitlines()
    first = re.match(r"(Trace of .*?: \d+ event firings, \d+ callback calls), .* in (\d+ loop\(s\) \(.*\))", lines[0])
    assert first, lines[0]
    out.append(" ".join(first.groups()))
    for line in lines[1:]:
        if "│" in line:  # a table row: its figures are timings
            rows += 1
            continue
        if rows:
            out.append(f"{rows} rows")
            rows = 0
        if line.startswith(("Largest shares", "Tracing added", "for the first firing", "sizes are", "clock:")):
            continue  # sentences of timings
        out.append(re.sub("━+", "━", " ".join(line.split())))  # (a column's width follows its figures)
    if rows:
        out.append(f"{rows} rows")
    return [line for line in out if not re.match(r"^(critical|warning|info)\b", line)]


def test_the_readmes_sample_of_a_trace_is_what_t_prints():
    learn = synth_learner(n_trn=20, cbs=[GradientClip()])
    with learn.no_bar(), learn.no_logging(), learn.trace() as t:
        learn.fit_one_cycle(2)
    assert skeleton(readme_sample()) == skeleton(str(t)), "regenerate it: python docs/make_images.py"
