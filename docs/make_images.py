"""Regenerate the README's pictures: `python docs/make_images.py` (terminal output saved as SVG by rich, the
loop's graphviz diagram, plain and annotated with a trace's times, and the HTML report as headless Chromium
draws it, and one batch of a merged loopviz + torch.profiler trace)."""
from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
from pathlib import Path

import fastai.callback.all  # noqa: F401  (ProgressCallback joins the defaults, as in a notebook)
from fastai.callback.all import GradientClip, MixedPrecision, SaveModelCallback
from fastai.test_utils import synth_learner
from rich.console import Console
from rich.text import Text

import loopviz  # noqa: F401
from loopviz import render_text

IMAGES = Path(__file__).parent / "images"
OUT = IMAGES / "show_training_loop.svg"


def main() -> None:
    """Render the compact loop of a realistic synthetic learner into docs/images/."""
    learn = synth_learner(cbs=[GradientClip(), MixedPrecision()])
    text = render_text(learn.loop_spec(cbs=[SaveModelCallback()]))
    console = Console(record=True, width=112, file=io.StringIO(), color_system="truecolor")
    console.print(Text(">>> learn.show_training_loop(cbs=[SaveModelCallback()])", style="bold"))
    console.print(Text(text))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(console.export_svg(title="loopviz: learn.show_training_loop()"), encoding="utf-8")
    print(f"wrote {OUT}")
    traced = synth_learner(n_trn=20, cbs=[GradientClip()])
    with traced.no_bar(), traced.no_logging(), traced.trace() as t:
        traced.fit_one_cycle(2)
    record = Console(record=True, width=120, file=io.StringIO(), color_system="truecolor")
    record.print(Text(">>> with learn.trace() as t: learn.fit_one_cycle(2)\n>>> t", style="bold"))
    record.print(t)
    (IMAGES / "trace_summary.svg").write_text(record.export_svg(title="loopviz: a traced fit"), encoding="utf-8")
    print(f"wrote {IMAGES / 'trace_summary.svg'}")
    readme_text(str(t))
    diagram = learn.show_training_loop(fmt="graphviz", cbs=[SaveModelCallback()], hide_empty=True)
    print(f"wrote {diagram.save(IMAGES / 'loop_diagram.svg')}")
    print(f"wrote {diagram.save(IMAGES / 'loop_diagram.png')}")
    timed = traced.show_training_loop(fmt="graphviz", trace=t, hide_empty=True)  # filled by share of the run
    print(f"wrote {timed.save(IMAGES / 'loop_diagram_traced.svg')}")
    print(f"wrote {timed.save(IMAGES / 'loop_diagram_traced.png')}")
    screenshot(t, IMAGES / "html_report.png")
    merged_timeline(IMAGES / "merged_timeline.png")
    data_loop_lanes(IMAGES / "data_loop_lanes.png")


def readme_text(text: str) -> None:
    """Put the traced fit's text (what `t` shows) in the README, under the picture of the same run."""
    readme = Path(__file__).parent.parent / "README.md"
    opening = ">>> with learn.trace() as t: learn.fit_one_cycle(2)\n>>> t\n"
    page = readme.read_text(encoding="utf-8")
    start = page.index(opening) + len(opening)
    end = page.index("```", start)
    lines = "\n".join(line.rstrip() for line in text.rstrip().splitlines())
    readme.write_text(page[:start] + lines + "\n" + page[end:], encoding="utf-8")
    print(f"wrote the traced fit's text in {readme}")


def screenshot(trace, out: Path) -> None:
    """The top of the trace's HTML report (the header, what slows the run, the heat-coloured loop), drawn by headless
    Chromium."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print(f"skipped {out}: needs Debian's chromium")
        return
    with tempfile.TemporaryDirectory() as folder:
        page = trace.to_html(Path(folder) / "fit.html")
        subprocess.run([chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        "--host-resolver-rules=MAP * ~NOTFOUND", f"--screenshot={out}", "--window-size=1100,1400",
                        page.as_uri()], check=True, capture_output=True, timeout=120)
    print(f"wrote {out}")


def data_loop_lanes(out: Path) -> None:
    """docs/inside-draw.md's example fit (a DataBlock whose item transform sleeps, two workers) traced with
    data=True, and its report's lanes of the training loader's longest pass, drawn by headless Chromium."""
    import runpy
    import sys

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print(f"skipped {out}: needs Debian's chromium")
        return
    example = Path(__file__).parent / "inside_draw.py"
    sys.path.insert(0, str(example.parent))  # spawned workers import the example by name
    make = runpy.run_path(str(example), run_name="inside_draw")["traced_fit"]
    learn, t = make()
    data_loop_diagram(learn, t, IMAGES / "data_loop_diagram.png")
    with tempfile.TemporaryDirectory() as folder:
        page = t.to_html(Path(folder) / "fit.html").read_text(encoding="utf-8")
        start = page.index('<section id="data-lanes-0">')
        end = page.index("</section>", start) + len("</section>")
        alone = page[:page.index("<main>") + len("<main>")] + page[start:end] + page[page.index("</main>"):]
        (Path(folder) / "lanes.html").write_text(alone, encoding="utf-8")
        subprocess.run([chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        "--host-resolver-rules=MAP * ~NOTFOUND", f"--screenshot={out}", "--window-size=1100,330",
                        (Path(folder) / "lanes.html").as_uri()], check=True, capture_output=True, timeout=120)
    print(f"wrote {out}")


def data_loop_diagram(learn, t, out: Path) -> None:
    """The training draw of the annotated verbose diagram (`show_training_loop(trace=t, verbose=True)`): its loader's
    loop as a table, each stage and transform filled by its share of the loader's work. The diagram is drawn whole
    and cut around that box (found in the SVG's coordinates)."""
    import re

    from PIL import Image

    diagram = learn.show_training_loop(trace=t, verbose=True, fmt="graphviz")
    with tempfile.TemporaryDirectory() as folder:
        svg = Path(diagram.save(Path(folder) / "loop.svg")).read_text(encoding="utf-8")
        png = diagram.save(Path(folder) / "loop.png")
        width = float(re.search(r'viewBox="0.00 0.00 ([\d.]+) [\d.]+"', svg).group(1))
        shift_x, shift_y = (float(v) for v in re.search(r"translate\(([\d.]+) ([\d.]+)\)", svg).groups())
        x, y = (float(v) for v in re.search(r'x="([\d.]+)" y="(-[\d.]+)"[^>]*>the train loader', svg).groups())
        image = Image.open(png)
        scale = image.size[0] / width
        left, top = (x + shift_x) * scale, (y + shift_y) * scale
        image.crop((int(left - 40), int(top - 70), int(left + 600), int(top + 470))).save(out)
    print(f"wrote {out}")


def merged_timeline(out: Path) -> None:
    """One training batch of a CPU fit traced with `ranges=True` inside torch.profiler, merged
    (`t.to_perfetto_with(prof, ...)`) and drawn track by track as Perfetto lays it out (docs/timeline_image.py:
    no Perfetto UI runs offline here to screenshot)."""
    from torch.profiler import ProfilerActivity, profile

    from loopviz.trace.profiler import merged_with_profiler
    from timeline_image import merged_timeline_png  # beside this file

    learn = synth_learner(n_trn=8, cbs=[GradientClip()])
    with learn.no_bar(), learn.no_logging():
        with profile(activities=[ProfilerActivity.CPU]) as prof, learn.trace(ranges=True) as t:
            learn.fit(1)
    merged = merged_with_profiler(t, prof)
    fired = [e for e in merged["traceEvents"] if e.get("cat") == "event" and e["args"]["phase"] == "train"
             and e["args"]["iter"] == 2 and e["name"] in ("before_batch", "after_batch")]
    start, end = fired[0]["ts"], fired[-1]["ts"] + fired[-1]["dur"]
    margin = (end - start) * 0.02
    merged_timeline_png(merged, out, start - margin, end + margin,
                        title="One training batch: loopviz's events, callbacks and work above torch.profiler's "
                              "operators (CPU, ranges=True)")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
