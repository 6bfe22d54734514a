"""The README as a test: every ```python block runs as written, in order, in one namespace (the later
blocks use the `learn`, `t` and `before` the earlier ones made, as a reader running them would), in an
empty folder (they save files); the captions and the text shown with the pictures match what loopviz
draws; the set-up commands are the two the README promises."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
README = ROOT / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.S | re.M)
IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)")
EVENT = re.compile(r"\b(?:before|after)_[a-z_]+")


def blocks(lang: str) -> list[tuple[int, str]]:
    """The README's fenced blocks of one language, each with the line its code starts on."""
    text = README.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start(2)) + 1, m.group(2)) for m in FENCE.finditer(text) if m.group(1) == lang]


def text_after(image: str) -> str:
    """The ```text block that follows an image of the README (the picture's text)."""
    text = README.read_text(encoding="utf-8")
    start = text.index(f"]({image})")
    m = FENCE.search(text, start)
    assert m and m.group(1) == "text", f"no text block after {image}"
    assert "![" not in text[start + len(image):m.start()], f"the text after {image} belongs to another picture"
    return m.group(2)


@pytest.mark.skipif(shutil.which("dot") is None, reason="the README saves SVG/PNG/PDF, which need Graphviz's dot")
def test_python_blocks_run_as_written(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    code = blocks("python")
    assert len(code) >= 3
    outputs = ("loop.svg", "loop.png", "loop.pdf", "loop.dot", "fit.trace.json.gz", "fit.perfetto.json", "fit.html")
    already = {name for name in outputs if (ROOT / name).exists()}
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__readme__"}
    try:
        for line, block in code:
            # Padded so that a traceback names the README's own line.
            exec(compile("\n" * (line - 1) + block, str(README), "exec"), namespace)
    finally:
        plt.close("all")
    for name in outputs:
        assert (tmp_path / name).stat().st_size > 0, name
        assert name in already or not (ROOT / name).exists(), f"a README block wrote {name} into the repository"
    # "before.who_changed('lr')  # ... (ParamScheduler: lr)": the fit_one_cycle it traced does change lr.
    assert set(namespace["before"].who_changed("lr")["callback"]) == {"ParamScheduler"}


def test_images_have_text_alternatives():
    text = README.read_text(encoding="utf-8")
    images = IMAGE.findall(text)
    assert images
    assert "linked relatively" in text, "the README says its pictures are files of the repository"
    for alt, link in images:
        assert not re.match(r"[a-z]+:", link), f"{link}: pictures are relative links to the repository's files"
        assert (ROOT / link).is_file(), link
        assert len(alt.split()) >= 8, f"{link}: its alt text should say what the picture shows: {alt!r}"


def test_text_shown_with_the_loop_picture_is_loopviz_output():
    """The picture of `show_training_loop` is text; the README gives that text, for the learner its caption names."""
    from fastai.callback.all import GradientClip, MixedPrecision, SaveModelCallback
    from fastai.test_utils import synth_learner

    shown = text_after("docs/images/show_training_loop.svg")
    call, _, output = shown.partition("\n")
    assert call == ">>> learn.show_training_loop(cbs=[SaveModelCallback()])"
    learn = synth_learner(cbs=[GradientClip(), MixedPrecision()])
    assert output.rstrip("\n") == str(learn.show_training_loop(cbs=[SaveModelCallback()]))


def test_the_diagram_is_the_hide_empty_rendering_its_caption_says():
    from fastai.callback.all import GradientClip, MixedPrecision, SaveModelCallback
    from fastai.test_utils import synth_learner

    text = README.read_text(encoding="utf-8")
    caption = text.split("(docs/images/loop_diagram.svg)")[1].split("\n\n")[1]
    call = "learn.show_training_loop(fmt='graphviz', cbs=[SaveModelCallback()], hide_empty=True)"
    assert call in caption.replace("\n", " ") and "synth_learner(cbs=[GradientClip(), MixedPrecision()])" in caption
    learn = synth_learner(cbs=[GradientClip(), MixedPrecision()])
    drawn = set(EVENT.findall((ROOT / "docs/images/loop_diagram.svg").read_text(encoding="utf-8")))
    shown = set(EVENT.findall(learn.show_training_loop(fmt="graphviz", cbs=[SaveModelCallback()], hide_empty=True).source))
    every = set(EVENT.findall(learn.show_training_loop(fmt="graphviz", cbs=[SaveModelCallback()]).source))
    assert drawn == shown, "docs/images/loop_diagram.svg is stale: rerun docs/make_images.py"
    hidden = every - shown
    assert hidden, "hide_empty hides nothing on this learner: the caption is wrong"
    for event in hidden:
        assert event.removeprefix("after_cancel_").removeprefix("after_") in caption, event


def test_set_up_is_two_commands_and_ci_runs_the_second():
    setup = [b for _, b in blocks("bash") if "./setup.sh" in b]
    assert len(setup) == 1
    commands = [line.split("#")[0].strip() for line in setup[0].splitlines() if line.strip()]
    assert commands == ["./setup.sh && .venv/bin/loopviz show --verbose",
                        "./setup.sh --dev && .venv/bin/python -m pytest"]
    assert commands[1] in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    index = (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
    for command in commands:
        assert command in index, f"docs/index.md should give the README's set-up command {command!r}"
