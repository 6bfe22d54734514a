"""The docs site builds in strict mode (a broken link or a bad API reference fails), and the CLI page
names every option the command has."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click

from loopviz.cli import cli

ROOT = Path(__file__).parent.parent


def test_mkdocs_builds_strict(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    for name in ("LoopSpec", "DispatchTracer", "Trace", "show_training_loop", "miniai_spec"):
        assert name in api, name


def test_cli_page_names_every_option():
    page = (ROOT / "docs" / "cli.md").read_text()
    for name, command in cli.commands.items():
        assert f"loopviz {name}" in page, name
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.opts[-1] in page or param.opts[0] in page, (name, param.opts)
