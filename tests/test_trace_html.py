"""The HTML report: one self-contained file, checked as HTML and in a real headless Chromium with no network."""
from __future__ import annotations

import html
import json
import re
import xml.etree.ElementTree as ET
import shutil
import subprocess
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import pytest
from fastai.callback.core import Callback
from fastai.test_utils import synth_learner

from loopviz.errors import LoopvizError
import loopviz.trace.html as html_module

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
NAMESPACES = {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}

Hostile = type('Evil</script><b onmouseover="x">\x1b[31m', (Callback,), {
    "__doc__": "A callback whose name would break out of HTML if it were not escaped",
    "after_batch": lambda self: None,
})


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    learn = synth_learner(n_trn=48, cbs=[Hostile()])
    with learn.no_bar(), learn.no_logging(), learn.trace(changes=True) as t:
        learn.fit_one_cycle(2)
    return t.to_html(tmp_path_factory.mktemp("html") / "fit.html")


class Parts(HTMLParser):
    """What the report is made of: tags, ids, attributes that load something, and script bodies."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.ids: set[str] = set()
        self.links: list[str] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        self.links += [v for k, v in attrs.items() if k in ("src", "href", "xlink:href") and v]
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts.append(data)


def test_the_report_is_one_self_contained_file(report):
    text = report.read_text(encoding="utf-8")
    parts = Parts()
    parts.feed(text)
    assert {"summary", "callbacks", "changes", "diagram-details"} <= parts.ids
    assert parts.tags.count("svg") >= 3  # the diagram, time per batch, the slowest batch
    assert not parts.links, parts.links  # nothing fetched: no script, stylesheet or image from anywhere
    urls = set(re.findall(r"https?://[^\s\"'<>)]+", text))
    assert urls <= NAMESPACES, urls - NAMESPACES
    assert len(text) < 2_000_000


def test_every_name_is_escaped_at_the_sink(report):
    text = report.read_text(encoding="utf-8")
    assert "</script><b" not in text and "\x1b" not in text
    assert "Evil&lt;/script&gt;&lt;b onmouseover=&quot;x&quot;&gt;\\x1b[31m" in text  # shown, escaped
    details = json.loads(re.search(r'id="diagram-details">(.*?)</script>', text, re.S).group(1))
    batch = next(d for d in details.values() if d["title"] == "after_batch (train)")
    assert any(c.startswith('Evil</script><b onmouseover="x">\\x1b[31m: ') for c in batch["callbacks"])
    assert dict(batch["rows"])["count"] == "96"


def test_the_diagram_is_heat_coloured_by_share(report):
    text = report.read_text(encoding="utf-8")
    details = json.loads(re.search(r'id="diagram-details">(.*?)</script>', text, re.S).group(1))
    shares = {d["title"]: float(dict(d["rows"])["share of the run"].rstrip(" %")) for d in details.values()}
    hottest = max(shares, key=shares.get)
    node = re.search(r'<g id="(\w+)" class="(?:node|edge)">\s*<title>[^<]*</title>(.*?)</g>\s*(?=<!--|</g>)', text, re.S)
    assert node  # graphviz wrote its nodes and edges with our ids
    darkest = "#800026"
    hottest_id = next(k for k, d in details.items() if d["title"] == hottest)
    drawn = re.search(rf'<g id="{hottest_id}" class="(?:node|edge)">(.*?)</g>\n', text, re.S).group(1)
    assert darkest in drawn


SVG = "{http://www.w3.org/2000/svg}"


def diagram_parts(text: str) -> tuple[ET.Element, dict]:
    """The report's diagram as parsed XML, and its hover details."""
    svg = re.search(r'<div class="diagram">(<svg.*?</svg>)', text, re.S).group(1)
    details = json.loads(re.search(r'id="diagram-details">(.*?)</script>', text, re.S).group(1))
    return ET.fromstring(svg), details


def test_a_capped_trace_shows_the_summary_counts(tmp_path):
    learn = synth_learner(n_trn=64, n_val=8)
    with learn.no_bar(), learn.no_logging(), learn.trace(max_firings=100) as t:
        learn.fit(2)
    assert t.dropped_firings > 0
    root, details = diagram_parts(t.to_html(tmp_path / "capped.html").read_text(encoding="utf-8"))
    summary = t.summary()
    nodes = {g.get("id"): g for g in root.iter(f"{SVG}g") if g.get("class") == "node"}
    for kind, name, phase, count in zip(summary["kind"], summary["name"], summary["phase"], summary["count"]):
        if kind != "event":
            continue
        title = f"{name} ({phase})" if phase else name
        shown = [key for key, d in details.items() if d["title"] == title]
        assert len(shown) == 1, title  # one box per event and phase
        assert dict(details[shown[0]]["rows"])["count"] == f"{count:,}"
        drawn = " ".join(el.text or "" for el in nodes[shown[0]].iter(f"{SVG}text"))
        assert f"{count:,} × " in drawn, (title, drawn)  # the box says the same count
    batch = next(d for d in details.values() if d["title"] == "before_batch (train)")
    assert dict(batch["rows"])["count"] == "128" and dict(batch["rows"])["p95"].endswith("approx.")
    draw = next(d for d in details.values() if d["title"] == "draw (train)")
    work = summary[(summary["kind"] == "work") & (summary["name"] == "draw") & (summary["phase"] == "train")]
    assert dict(draw["rows"])["count"] == f"{work['count'].item():,}"


def test_the_diagram_is_the_loop_renderer_s(tmp_path):
    """One DOT writer: the report's diagram is LoopDiagram's drawing of the observed loop, ids and all."""
    from loopviz.diagram import LoopDiagram
    from loopviz.renderers.dot import step_ids
    from loopviz.trace.observed import observed_spec

    learn = synth_learner(n_trn=8, n_val=4)
    with learn.no_bar(), learn.no_logging(), learn.trace() as t:
        learn.fit(1)
    spec = observed_spec(t.data, 0)
    source = LoopDiagram(spec, ids=True).source
    assert all(f'id={key}' in source for key, _ in step_ids(spec))
    assert "id=" not in LoopDiagram(spec).source  # other diagrams are drawn as before
    assert not hasattr(html_module, "_dot_text") and not hasattr(html_module, "_event_stats")
    root, details = diagram_parts(t.to_html(tmp_path / "fit.html").read_text(encoding="utf-8"))
    ids = {g.get("id") for g in root.iter(f"{SVG}g")}
    assert set(details) <= ids and len(details) == sum(s.timing is not None for _, s in step_ids(spec))


def test_a_report_needs_a_finished_trace_and_a_writable_path(tmp_path):
    learn = synth_learner(n_trn=8)
    with learn.no_bar(), learn.no_logging(), learn.trace() as t:
        with pytest.raises(LoopvizError, match="still recording"):
            t.to_html(tmp_path / "early.html")
        learn.fit(1)
    with pytest.raises(LoopvizError, match="folder"):
        t.to_html(tmp_path / "missing" / "x.html")
    with pytest.raises(LoopvizError, match="is not a loop of this trace"):
        t.to_html(tmp_path / "x.html", loop="nope")


def test_many_batches_are_binned(tmp_path, monkeypatch):
    monkeypatch.setattr(html_module, "MAX_BARS", 10)
    learn = synth_learner(n_trn=25, n_val=1)
    with learn.no_bar(), learn.no_logging(), learn.trace() as t:
        learn.fit(1)
    text = t.to_html(tmp_path / "long.html").read_text(encoding="utf-8")
    assert "25 of them are shown as 10 bars, each the mean of consecutive ones" in text
    chart = re.search(r'<svg class="chart".*?</svg>', text, re.S).group(0)
    assert chart.count('class="hit"') == 10
    assert "#0–#1 (mean)" in chart and "#22–#24 (mean)" in chart


# -- in a real browser ----------------------------------------------------------------------------

# Appended to a copy of the report: sorts a table by clicking, hovers a diagram node, and writes what it saw.
PROBE = """<script>
window.addEventListener('load', function () {
  var out = {};
  var th = document.querySelector('#summary thead th[data-col="4"]');  // total_ms
  th.click();
  var col = Array.prototype.map.call(document.querySelectorAll('#summary tbody tr'),
                                     function (r) { return parseFloat(r.cells[4].getAttribute('data-v')); });
  out.sorted = col.every(function (v, i) { return i === 0 || col[i - 1] >= v; });
  out.rows = col.length;
  var details = JSON.parse(document.getElementById('diagram-details').textContent);
  out.described = Object.keys(details).length;
  out.drawn = Object.keys(details).filter(function (id) { return document.getElementById(id) !== null; }).length;
  out.titles = Object.keys(details).map(function (id) { return details[id].title; });
  out.callbacks = [].concat.apply([], Object.keys(details).map(function (id) { return details[id].callbacks; }));
  out.sections = document.querySelectorAll('main > section').length;
  var batch = Object.keys(details).filter(function (id) { return details[id].title === 'before_batch (train)'; })[0]
              || Object.keys(details)[0];
  document.getElementById(batch).dispatchEvent(new MouseEvent('mouseenter'));
  var panel = document.getElementById('details');
  out.panel = panel.hidden ? '' : panel.textContent;
  out.nodes = document.querySelectorAll('.diagram g.node').length;
  var pre = document.createElement('pre'); pre.id = 'probe'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def chromium(url: str) -> tuple[str, str]:
    """The DOM after load, and Chromium's log, with every network name unresolvable."""
    done = subprocess.run(
        [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
         '--host-resolver-rules=MAP * ~NOTFOUND', "--virtual-time-budget=5000", "--dump-dom", url],
        capture_output=True, text=True, timeout=120)
    return done.stdout, done.stderr


def probed(page: Path, tmp_path: Path) -> dict:
    """What the probe saw of the report at `page` in Chromium; fails if the page logged an error or the probe
    never ran (a script element that swallowed the rest of the page swallows the probe too)."""
    copy = tmp_path / "probed.html"
    copy.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom, log = chromium(copy.as_uri())
    console = [line for line in log.splitlines() if "CONSOLE" in line or "ERR_" in line]
    assert not console, console
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found, "the probe did not run: the page's end was swallowed"
    return json.loads(html.unescape(found.group(1)))


needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (./setup.sh --dev installs it)")


@needs_chromium
def test_the_report_works_in_chromium_offline(report, tmp_path):
    seen = probed(report, tmp_path)
    assert seen["sorted"] and seen["rows"] > 20
    assert seen["nodes"] >= 15
    assert seen["described"] >= 15 and seen["drawn"] == seen["described"]  # every hover text has its node
    assert "count" in seen["panel"] and "p95" in seen["panel"]


def test_the_capped_diagram_is_pinned(golden):
    """The report's diagram of a fit traced on an injected clock (1 µs per reading), capped at 40 firings: its DOT
    is the same on every run, so a change of what it says is a reviewed diff."""
    from loopviz.diagram import LoopDiagram
    from loopviz.trace.observed import observed_spec
    from tests.test_trace_views_golden import traced

    _, t = traced(max_firings=40)
    assert t.dropped_firings > 0
    golden("observed_capped.gv", LoopDiagram(observed_spec(t.data, 0), ids=True).source)


# -- names that would open a comment or a script inside the diagram's JSON island (issue 24) ------

EVIL_CB = "Evil<!--<script>"  # inside a <script>, '<!--<script>' makes '</script>' no longer end it
EVIL_EVENT = "</script><!--"


def island(page: str) -> str:
    """The text of the diagram's JSON island."""
    return re.search(r'<script type="application/json" id="diagram-details">(.*?)</script>', page, re.S).group(1)


def fastai_evil_trace(tmp_path: Path):
    """A fastai fit with a callback class named EVIL_CB, its after_loss renamed EVIL_EVENT (a custom event's name
    is any string given to `learn(...)`)."""
    from loopviz.trace.trace import Trace

    learn = synth_learner(n_trn=48, cbs=[type(EVIL_CB, (Callback,), {"after_batch": lambda self: None})()])
    with learn.no_bar(), learn.no_logging(), learn.trace() as t:
        learn.fit(1)
    return Trace(replace(t.data, events=[EVIL_EVENT if e == "after_loss" else e for e in t.events]))


def hf_evil_trace(tmp_path: Path):
    """A Hugging Face Trainer's run with a TrainerCallback class named EVIL_CB."""
    pytest.importorskip("transformers")
    from transformers import TrainerCallback

    from loopviz.adapters.transformers import trace_trainer
    from tests.hf_fixtures import tiny_trainer

    evil = type(EVIL_CB, (TrainerCallback,), {"on_step_end": lambda self, *args, **kwargs: None})
    trainer = tiny_trainer(tmp_path / "hf", [evil()], n_train=8, n_eval=4)
    with trace_trainer(trainer) as t:
        trainer.train()
    return t


def lightning_evil_trace(tmp_path: Path):
    """A Lightning fit with a Callback class named EVIL_CB."""
    pl = pytest.importorskip("lightning.pytorch")
    import loopviz
    from tests.lightning_fixtures import TinyModule, loader, quiet_lightning, trainer

    quiet_lightning()
    evil = type(EVIL_CB, (pl.Callback,), {"on_train_batch_end": lambda self, *args, **kwargs: None})
    fit = trainer(tmp_path, [evil()], max_epochs=1)
    with loopviz.tracing(fit) as t:
        fit.fit(TinyModule(), loader(), loader())
    return t


EVIL_TRACES = {"fastai": fastai_evil_trace, "transformers": hf_evil_trace, "lightning": lightning_evil_trace}


def test_json_island_escapes_what_would_end_or_hide_a_script():
    from loopviz.renderers.sanitise import json_island

    data = {"k<>&": ["</script><!--<script>-->", "\u2028\u2029", "ünï😀", 1.5, None]}
    text = json_island(data)
    assert json.loads(text) == data
    assert not re.search("[<>&\u2028\u2029]", text) and text.isascii()
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(LoopvizError, match="finite"):
            json_island({"x": [bad]})


@pytest.mark.parametrize("framework", list(EVIL_TRACES))
def test_the_island_carries_hostile_names_as_data(framework, tmp_path):
    t = EVIL_TRACES[framework](tmp_path)
    text = t.to_html(tmp_path / "evil.html").read_text(encoding="utf-8")
    data = island(text)
    assert not re.search("[<>&]", data)
    details = json.loads(data)
    assert any(c.startswith(EVIL_CB + ":") for d in details.values() for c in d["callbacks"])
    if framework == "fastai":
        assert any(d["title"].startswith(EVIL_EVENT) for d in details.values())


@needs_chromium
@pytest.mark.parametrize("framework", list(EVIL_TRACES))
def test_a_report_of_hostile_names_renders_whole_in_chromium(framework, tmp_path):
    page = EVIL_TRACES[framework](tmp_path).to_html(tmp_path / "evil.html")
    seen = probed(page, tmp_path)
    assert seen["sections"] == page.read_text(encoding="utf-8").count("<section>") >= 5
    assert seen["sorted"] and seen["rows"] > 5 and seen["described"] >= 5 and seen["drawn"] == seen["described"]
    assert "count" in seen["panel"]
    assert any(c.startswith(EVIL_CB + ":") for c in seen["callbacks"])
    if framework == "fastai":
        assert any(title.startswith(EVIL_EVENT) for title in seen["titles"])


@needs_chromium
def test_loopviz_report_html_of_hostile_names_renders_whole_in_chromium(tmp_path):
    from click.testing import CliRunner

    from loopviz.cli import cli

    saved = fastai_evil_trace(tmp_path).save(tmp_path / "evil.json")
    page = tmp_path / "report.html"
    result = CliRunner().invoke(cli, ["report", str(saved), "-f", "html", "-o", str(page)])
    assert result.exit_code == 0, result.output
    seen = probed(page, tmp_path)
    assert seen["sections"] == page.read_text(encoding="utf-8").count("<section>") >= 5 and seen["sorted"]
    assert any(title.startswith(EVIL_EVENT) for title in seen["titles"])
    assert any(c.startswith(EVIL_CB + ":") for c in seen["callbacks"])
