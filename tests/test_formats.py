"""The one table of formats: names, endings, inference from file names, contradictions, and adding a view."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import loopviz
from loopviz import formats
from loopviz.cli import cli
from loopviz.errors import FormatError
from loopviz.formats import LOOP_FORMATS, REPORT_FORMATS, Format, choose, find, for_path


def test_names_are_unique_and_every_renderer_imports():
    for table in (LOOP_FORMATS, REPORT_FORMATS):
        assert len({f.name for f in table}) == len(table)
        for fmt in table:
            assert callable(formats.renderer(fmt)), fmt.name
            assert all(ext.startswith(".") and ext == ext.lower() for ext in fmt.extensions)
            assert not (fmt.binary and fmt.name in ("text", "rich", "mermaid", "dot"))
    assert formats.loop_views() == ["text", "rich", "mermaid", "graphviz"]


@pytest.mark.parametrize("path, name", [
    ("loop.svg", "svg"), ("LOOP.PNG", "png"), ("a/b.pdf", "pdf"), ("loop.dot", "dot"), ("loop.gv", "dot"),
    ("loop.mmd", "mermaid"), ("loop.mermaid", "mermaid"), ("loop.txt", "text"), ("loop.jpeg", None), ("loop", None),
])
def test_loop_formats_by_file_name(path, name):
    found = for_path(LOOP_FORMATS, path)
    assert (found.name if found else None) == name


@pytest.mark.parametrize("path, name", [
    ("t.perfetto.json", "chrome"), ("t.json", "chrome"), ("t.csv", "csv"), ("t.svg", "svg"), ("t.txt", "table"),
])
def test_report_formats_by_file_name(path, name):
    assert for_path(REPORT_FORMATS, path).name == name


def test_choose():
    assert choose(LOOP_FORMATS, None, None).name == "text"
    assert choose(LOOP_FORMATS, "graphviz", "loop.png").name == "png"  # a view's name: the ending picks its format
    assert choose(LOOP_FORMATS, "graphviz", None).name == "dot"
    assert choose(LOOP_FORMATS, "rich", "loop.txt").name == "rich"  # .txt is rich's ending too
    assert choose(LOOP_FORMATS, "mermaid", "loop.md").name == "mermaid"  # an ending no format claims: as asked
    with pytest.raises(FormatError, match="--format text contradicts the file name 'loop.svg', which asks for svg"):
        choose(LOOP_FORMATS, "text", "loop.svg")
    with pytest.raises(FormatError, match=r"cannot tell the format of 'x\.xlsx' from its ending; use one of: \.txt, \.csv"):
        choose(REPORT_FORMATS, None, "x.xlsx")
    with pytest.raises(FormatError, match="'jpeg' is not a format loopviz writes here"):
        find(LOOP_FORMATS, "jpeg")


def test_a_new_view_is_one_row(monkeypatch, tmp_path, learn, capsys):
    """What the README promises: a renderer file plus a row, and Python and the CLI both have the view."""
    row = Format("json", "json", (".json",), "tests.extra_view:render_json", help="events and callbacks as JSON")
    monkeypatch.setattr(formats, "LOOP_FORMATS", (*formats.LOOP_FORMATS, row))
    view = loopviz.show_loop(learn.loop_spec(), fmt="json")
    assert json.loads(str(view))["before_fit"] == ["TrainEvalCallback", "Recorder", "ProgressCallback"]
    assert capsys.readouterr().out.strip() == str(view)
    result = CliRunner().invoke(cli, ["show", "-o", str(tmp_path / "loop.json")])
    assert result.exit_code == 0, result.stderr
    assert "after_batch" in json.loads((tmp_path / "loop.json").read_text())
