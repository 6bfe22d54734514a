"""The Mermaid view: golden text, the official mermaid parser, escaping, and strict structure."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from loopviz import render_mermaid
from tests.views import realistic_spec, tricky_spec

CHECKER = Path(__file__).parent / "mermaid"
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
