"""The Mermaid view: golden text, the official mermaid parser, escaping, strict structure, and the chart as
mermaid.js 11 really draws it in a headless Chromium."""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from fastai.callback.all import (
    EarlyStoppingCallback, GradientClip, MixedPrecision, ParamScheduler, SaveModelCallback, SchedCos,
)
from fastai.callback.core import Callback
from fastai.test_utils import synth_learner
from PIL import Image

from loopviz import render_mermaid
from loopviz.renderers.palette import callback_colours, rgb
from loopviz.renderers.sanitise import NAME_LIMIT, cut, one_line
from tests.callbacks import Tricky
from tests.views import realistic_spec, tricky_spec

CHECKER = Path(__file__).parent / "mermaid"
MERMAID_JS = CHECKER / "node_modules" / "mermaid" / "dist" / "mermaid.min.js"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ID = r"[a-z]\d+"


def test_golden_mermaid(learn, golden):
    golden("mermaid_default.mmd", render_mermaid(learn.loop_spec()))


def test_structure_is_strict(tmp_path):
    spec = realistic_spec(tmp_path)
    text = render_mermaid(spec, verbose=True)
    lines = text.splitlines()
    assert lines[0] == "flowchart TB"
    opened = sum(line.strip().startswith("subgraph ") for line in lines)
    closed = sum(line.strip() == "end" for line in lines)
    all_phases = [p for top in spec.phases for p in [top, *top.phases()]]
    assert opened == closed == len(all_phases)
    defined = set(re.findall(rf"^\s*({ID})[\[(]", text, re.M))
    used = set(re.findall(rf"({ID}) -", text)) | set(re.findall(rf"-> ?(?:\|[^|]*\| )?({ID})$", text, re.M))
    assert used <= defined
    for line in lines:
        label = re.search(r'\["(.*)"\]|\("(.*)"\)', line)
        if label:
            body = label.group(1) or label.group(2)
            assert '"' not in body and "[" not in body and "]" not in body, line


def test_hostile_docstrings_cannot_break_the_syntax(tmp_path):
    text = render_mermaid(tricky_spec(tmp_path), verbose=True)
    assert "<script>" not in text and "#60;script#62;" in text
    assert "#91;mixup#93;" in text and "#252;" in text


def official_parse(tmp_path, texts: dict[str, str]) -> str:
    files = []
    for name, text in texts.items():
        path = tmp_path / f"{name}.mmd"
        path.write_text(text, encoding="utf-8")
        files.append(str(path))
    done = subprocess.run(["node", str(CHECKER / "check.mjs"), *files], capture_output=True, text=True, timeout=120)
    return done.stdout + done.stderr


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_the_official_mermaid_parser_accepts_every_view(tmp_path):
    assert (CHECKER / "node_modules" / "mermaid").exists(), "run ./setup.sh --dev to install the Mermaid parser"
    spec = realistic_spec(tmp_path)
    texts = {
        "compact": render_mermaid(spec),
        "verbose": render_mermaid(spec, verbose=True),
        "tricky": render_mermaid(tricky_spec(tmp_path), verbose=True),
        "get_preds": render_mermaid(realistic_spec(tmp_path, loop="get_preds")),
    }
    out = official_parse(tmp_path, texts)
    assert out.count("OK ") == len(texts), out
    broken = official_parse(tmp_path, {"broken": 'flowchart TB\n  a["x" --> b\n'})
    assert "ERROR" in broken  # the checker really rejects bad syntax


def test_show_training_loop_mermaid_prints_it(learn, capsys, tmp_path):
    view = learn.show_training_loop(fmt="mermaid")
    assert capsys.readouterr().out == str(view) + "\n"
    assert str(view).startswith("flowchart TB")


# -- drawn by mermaid.js 11 in a real browser ------------------------------------------------------

# Renders every chart of CHARTS with mermaid.render (securityLevel 'strict', Mermaid's default), then writes what
# it saw, base64 JSON, into <pre id="seen">: each SVG's text, its chips (leaf elements showing only the chip
# glyph) with their computed colour, node and <script> counts, render errors and every console error.
PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>loopviz mermaid</title>
<script>
const errors = [];
for (const k of ['error', 'warn']) {
  const original = console[k];
  console[k] = (...a) => { errors.push(k + ': ' + a.map(String).join(' ')); original.apply(console, a); };
}
window.addEventListener('error', e => errors.push('error: ' + e.message));
window.addEventListener('unhandledrejection', e => errors.push('rejection: ' + e.reason));
</script>
<script src="MERMAID_JS"></script></head>
<body><div id="charts"></div>
<script>
const CHARTS = CHARTS_JSON;
(async () => {
  const out = {errors, charts: {}};
  if (typeof mermaid === 'undefined') errors.push('mermaid.min.js did not load');
  else {
    mermaid.initialize({startOnLoad: false, securityLevel: 'strict'});
    for (const [name, text] of Object.entries(CHARTS)) {
      const box = document.createElement('div');
      document.getElementById('charts').appendChild(box);
      const seen = {error: null};
      try {
        box.innerHTML = (await mermaid.render('chart-' + name, text)).svg;
      } catch (e) { seen.error = String((e && e.message) || e); }
      const svg = box.querySelector('svg');
      const shown = svg ? svg.cloneNode(true) : document.createElement('svg');
      shown.querySelectorAll('style').forEach(e => e.remove());  // the text it shows, less its stylesheet
      seen.text = shown.textContent;
      seen.nodes = box.querySelectorAll('g.node').length;
      seen.scripts = box.querySelectorAll('script').length;
      seen.chips = [...box.querySelectorAll('*')]
        .filter(e => e.childElementCount === 0 && e.textContent.trim() === '\\u25a0')
        .map(e => getComputedStyle(e).color);
      out.charts[name] = seen;
    }
    out.errorSvgs = [...document.querySelectorAll('svg')]
      .filter(s => s.getAttribute('aria-roledescription') === 'error' || /Syntax error/i.test(s.textContent)).length;
  }
  const pre = document.createElement('pre');
  pre.id = 'seen';
  pre.textContent = btoa(unescape(encodeURIComponent(JSON.stringify(out))));
  document.body.appendChild(pre);
})();
</script></body></html>"""

# What a chart must never show: Mermaid entity codes, HTML entities or Mermaid's private placeholders for them.
GARBAGE = re.compile(r"#\d+|#[A-Za-z]+;|&#|&amp;|&lt;|&gt;|&quot;|\ufb02|\xb0\xb0|\xb6\xdf")
HOSTILE_NAMES = [
    "Quote\"'<b>Angle</b>[x]\U0001F600", "Script<script>alert(1)</script>", 'Mermaid#quot;-->|pipe|end;"]',
    "style:#f00;Colon", "Ctl\x1b[2J\tTab", "Amp&amp;&#60;",
]
HOSTILE_DOC = 'Doc <script>alert(2)</script> & "q" [x] {y} | end --> \u00fcn\u00ef \U0001F600\nsecond line'


def hostile_callback(name: str, order: int) -> Callback:
    """A callback class called `name`, documented, with a documented after_batch handler."""

    def after_batch(self) -> None:
        pass

    after_batch.__doc__ = HOSTILE_DOC
    cls = type(name, (Callback,), {"after_batch": after_batch, "order": order, "__doc__": HOSTILE_DOC})
    return cls()


def rich_spec(tmp_path):
    """Many callbacks, cancel paths, docs with markup, and hostile callback names and docs."""
    learn = synth_learner(path=tmp_path, cbs=[GradientClip(), SaveModelCallback(), EarlyStoppingCallback(),
                                              MixedPrecision()])
    hostile = [hostile_callback(name, 41 + i) for i, name in enumerate(HOSTILE_NAMES)]
    return learn.loop_spec(cbs=[ParamScheduler({"lr": SchedCos(1e-3, 1e-5)}), Tricky(), *hostile])


def drawn_by_mermaid(tmp_path: Path, charts: dict[str, str], screenshot: Path) -> dict:
    """What mermaid.js shows for each chart in headless Chromium, offline from a file:// page, and a screenshot
    of the page's top (the first chart); Chromium's console lines are added to the errors."""
    page = tmp_path / "mermaid.html"
    page.write_text(PAGE.replace("MERMAID_JS", MERMAID_JS.as_uri())
                    .replace("CHARTS_JSON", json.dumps(charts).replace("<", "\\u003c")), encoding="utf-8")
    common = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
              "--hide-scrollbars", "--enable-logging=stderr", "--v=0", "--host-resolver-rules=MAP * ~NOTFOUND",
              "--virtual-time-budget=10000"]
    runs = [subprocess.Popen([*common, f"--user-data-dir={tmp_path / f'profile{i}'}", *extra, page.as_uri()],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for i, extra in enumerate([["--dump-dom"], [f"--screenshot={screenshot}", "--window-size=1400,2400"]])]
    (dom, log), (_, shot_log) = (run.communicate(timeout=120) for run in runs)
    found = re.search(r'<pre id="seen">([A-Za-z0-9+/=]+)</pre>', dom)
    assert found, f"the page never finished rendering:\n{log[-3000:]}"
    seen = json.loads(base64.b64decode(found.group(1)).decode("utf-8"))
    seen["errors"] += [line for line in (log + shot_log).splitlines() if "CONSOLE" in line or "ERR_" in line]
    return seen


def flat(text: str) -> str:
    return "".join(text.split())


def shown_name(name: str) -> str:
    """A name as the chart shows it: one line, runs of blanks as one, cut."""
    return cut(" ".join(one_line(name).split()), NAME_LIMIT)


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (./setup.sh --dev installs it)")
@pytest.mark.skipif(not MERMAID_JS.exists(), reason="needs mermaid in tests/mermaid/node_modules (./setup.sh --dev)")
def test_mermaid_js_draws_the_readme_and_a_rich_chart_in_chromium(learn, capsys, tmp_path):
    readme_chart = str(learn.show_training_loop(fmt="mermaid"))  # as in the README
    capsys.readouterr()
    specs = {"readme": learn.loop_spec(), "rich": rich_spec(tmp_path)}
    charts = {"readme": readme_chart, "rich": render_mermaid(specs["rich"], verbose=True)}
    assert readme_chart == render_mermaid(specs["readme"])
    screenshot = Path(os.environ.get("LOOPVIZ_MERMAID_PNG") or tmp_path / "mermaid.png")  # set it to keep and look
    seen = drawn_by_mermaid(tmp_path, charts, screenshot)
    assert not seen["errors"], seen["errors"]
    assert seen["errorSvgs"] == 0
    for name, spec in specs.items():
        drawn = seen["charts"][name]
        assert drawn["error"] is None, drawn["error"]
        assert drawn["nodes"] >= 30 and drawn["scripts"] == 0
        text = flat(drawn["text"])
        assert "Syntaxerror" not in text
        rest = text
        for info in spec.callbacks:
            want = flat(shown_name(info.label))
            assert want in text, f"{name}: {want!r} is not shown"
            rest = rest.replace(want, "")
        assert not GARBAGE.findall(rest), f"{name}: {sorted(set(GARBAGE.findall(rest)))}"
        # one chip per callback line, in the callback's own colour (not the node's text colour)
        assert len(drawn["chips"]) == charts[name].count("#9632;") > 0
        colours = {"rgb({}, {}, {})".format(*rgb(c)) for c in callback_colours(spec).values()}
        assert set(drawn["chips"]) <= colours and len(set(drawn["chips"])) >= 4, drawn["chips"]
    rich = flat(seen["charts"]["rich"]["text"])
    assert flat("<script>alert(2)</script> & \"q\" [x] {y} | end --> \u00fcn\u00ef \U0001F600") in rich
    assert flat(shown_name(HOSTILE_NAMES[4])) == "Ctl\\x1b[2J\\tTab"
    # the screenshot really shows the chips' colours (each a solid square of its colour)
    pixels = Counter(Image.open(screenshot).convert("RGB").getdata())
    for colour in callback_colours(specs["readme"]).values():
        assert pixels[rgb(colour)] >= 20, f"no {colour} chip in the screenshot"


def test_a_chart_in_markdown_is_fenced_past_any_backticks_in_it():
    from loopviz.view import mermaid_markdown

    assert mermaid_markdown("flowchart TB\n  a") == "```mermaid\nflowchart TB\n  a\n```\n"
    fenced = mermaid_markdown("flowchart TB\n  a[\"x ```` y\"]")
    assert fenced.startswith("`````mermaid\n") and fenced.endswith("\n`````\n")
