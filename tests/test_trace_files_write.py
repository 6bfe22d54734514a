"""Writers respect what is at the path (issue 24, item 1): every file loopviz writes goes through
`loopviz.trace.files.write_bytes`, which writes through symlinks, keeps a file's mode, owner and hard links, writes
in place to a FIFO with a reader or a character device (never replacing either), refuses a FIFO with no reader at
once, and refuses a folder."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import fastai.callback.progress  # noqa: F401  (learn.no_bar)
import pytest
from click.testing import CliRunner
from fastai.test_utils import synth_learner

from loopviz import LoopDiagram, LoopvizError
from loopviz.cli import cli
from loopviz.trace import files

ROOT = Path(__file__).resolve().parents[1]
OLD = b"old contents\n"
needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A real fastai trace, its learner, a saved copy of it and a profiler trace of the same time."""
    folder = tmp_path_factory.mktemp("fitted")
    learn = synth_learner(path=folder)
    with learn.no_bar(), learn.no_logging():
        with learn.trace() as t:
            learn.fit(1)
    profiler = {"traceEvents": [{"ph": "X", "name": "aten::mul", "cat": "cpu_op", "ts": 1.0, "dur": 1.0,
                                 "pid": 1, "tid": 1}], "baseTimeNanoseconds": time.time_ns()}
    (folder / "profiler.json").write_text(json.dumps(profiler), encoding="utf-8")
    return {"learn": learn, "trace": t, "saved": str(t.save(folder / "saved.json")), "profiler": profiler,
            "profiler_file": str(folder / "profiler.json")}


def cli_ok(*args: str) -> None:
    """Run one loopviz command in-process; it must succeed."""
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, (result.stdout, result.stderr)


# Every writer, as (file name it writes, how to write it): the name's ending picks the CLI's format
WRITERS: dict[str, tuple[str, Callable[[dict[str, Any], Path], Any]]] = {
    "Trace.save": ("t.json", lambda f, p: f["trace"].save(p)),
    "Trace.to_html": ("t.html", lambda f, p: f["trace"].to_html(p)),
    "Trace.to_chrome": ("t.json", lambda f, p: f["trace"].to_chrome(p)),
    "Trace.to_perfetto_with": ("t.json", lambda f, p: f["trace"].to_perfetto_with(f["profiler"], p)),
    "LoopDiagram.save": ("loop.dot", lambda f, p: LoopDiagram(f["learn"].loop_spec()).save(p)),
    "loopviz report -o": ("report.txt", lambda f, p: cli_ok("report", f["saved"], "-o", str(p))),
    "loopviz trace -o": ("t.json", lambda f, p: cli_ok("trace", "--epochs", "1", "-o", str(p))),
    "loopviz merge -o": ("t.json", lambda f, p: cli_ok("merge", f["saved"], f["profiler_file"], "-o", str(p))),
}


@pytest.mark.parametrize("writer", list(WRITERS))
def test_every_writer_writes_through_a_symlink_and_keeps_the_mode(fitted, tmp_path, monkeypatch, writer):
    """The link stays a link, its target (a 0600 file) gets the new contents and stays 0600, through write_bytes."""
    name, write = WRITERS[writer]
    target = tmp_path / f"target-{name}"
    target.write_bytes(OLD)
    target.chmod(0o600)
    link = tmp_path / name
    link.symlink_to(target.name)
    written: list[str] = []
    real_write = files.write_bytes
    monkeypatch.setattr(files, "write_bytes", lambda data, path: written.append(os.fspath(path)) or real_write(data, path))
    write(fitted, link)
    assert written == [str(link)], "written through loopviz.trace.files.write_bytes, once"
    assert link.is_symlink() and os.readlink(link) == target.name
    assert target.read_bytes() not in (OLD, b"")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, target.name]), "no temporary file left"


def test_a_new_file_gets_the_umask_default_mode(tmp_path):
    old_umask = os.umask(0o027)
    try:
        files.write_bytes(b"new", tmp_path / "new.json")
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE((tmp_path / "new.json").stat().st_mode) == 0o640
    assert (tmp_path / "new.json").read_bytes() == b"new"


def test_a_regular_file_is_replaced_keeping_mode_and_owner(tmp_path):
    path = tmp_path / "t.json"
    path.write_bytes(OLD)
    path.chmod(0o640)
    if os.geteuid() == 0:  # only root can give a file away: then the owner must come back too
        os.chown(path, 1234, 5678)
    before = path.stat()
    files.write_bytes(b"new", path)
    after = path.stat()
    assert path.read_bytes() == b"new" and stat.S_ISREG(after.st_mode)
    assert stat.S_IMODE(after.st_mode) == 0o640 and (after.st_uid, after.st_gid) == (before.st_uid, before.st_gid)
    assert after.st_ino != before.st_ino, "replaced all or nothing by a rename, not written in place"


def test_a_hard_linked_file_is_written_in_place(fitted, tmp_path):
    path, other = tmp_path / "t.json", tmp_path / "other-name.json"
    path.write_bytes(OLD * 1000)  # longer than the trace's JSON: truncated, not overwritten in part
    os.link(path, other)
    fitted["trace"].save(path)
    assert os.path.samefile(path, other) and path.stat().st_nlink == 2
    assert json.loads(other.read_text(encoding="utf-8")) == fitted["trace"].to_json()


def test_a_dangling_symlink_creates_its_target_or_is_refused(tmp_path):
    (tmp_path / "link.json").symlink_to("made.json")
    files.write_bytes(b"new", tmp_path / "link.json")
    assert (tmp_path / "link.json").is_symlink() and (tmp_path / "made.json").read_bytes() == b"new"
    (tmp_path / "nowhere.json").symlink_to(tmp_path / "missing" / "t.json")
    with pytest.raises(LoopvizError, match=r"is a symlink to .*missing/t\.json.*does not exist; create the folder"):
        files.write_bytes(b"new", tmp_path / "nowhere.json")
    (tmp_path / "loop.json").symlink_to("loop.json")
    with pytest.raises(LoopvizError, match="its symlinks make a loop"):
        files.write_bytes(b"new", tmp_path / "loop.json")


def test_a_folder_is_refused(fitted, tmp_path):
    with pytest.raises(LoopvizError, match="it is a folder"):
        files.write_bytes(b"new", tmp_path)
    with pytest.raises(LoopvizError, match="it is a folder"):
        fitted["trace"].save(tmp_path)
    (tmp_path / "to-folder").symlink_to(tmp_path)
    with pytest.raises(LoopvizError, match="folder"):
        files.write_bytes(b"new", tmp_path / "to-folder")
    assert tmp_path.is_dir() and (tmp_path / "to-folder").is_symlink()


@pytest.mark.skipif(not stat.S_ISCHR(os.stat(os.devnull).st_mode), reason="no /dev/null character device here")
def test_dev_null_is_written_in_place_and_stays_a_device(fitted):
    """`-o /dev/null` discards the output; the device itself is never replaced (the test runs as root here)."""
    fitted["trace"].save(os.devnull)
    cli_ok("merge", fitted["saved"], fitted["profiler_file"], "-o", os.devnull)
    cli_ok("report", fitted["saved"], "-f", "table", "-o", os.devnull)
    st = os.stat(os.devnull)
    assert stat.S_ISCHR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o666


FIFO_WRITE = ("import sys\nfrom loopviz import LoopvizError\nfrom loopviz.trace.files import write_bytes\n"
              "try:\n    write_bytes(b'x', sys.argv[1])\nexcept LoopvizError as e:\n    print(e)")


@needs_fifo
@pytest.mark.parametrize("command", [
    pytest.param([sys.executable, "-c", FIFO_WRITE], id="write_bytes"),
    pytest.param([sys.executable, "-m", "loopviz", "report", "SAVED", "-f", "table", "-o"], id="loopviz report -o"),
])
def test_a_fifo_with_no_reader_is_refused_without_blocking(fitted, tmp_path, command):
    """Opening a FIFO to write blocks until a reader comes: a child process, with a timeout, proves nothing waits."""
    fifo = tmp_path / "out.txt"
    os.mkfifo(fifo)
    args = [fitted["saved"] if a == "SAVED" else a for a in command] + [str(fifo)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=ROOT)
    said = " ".join((done.stdout + done.stderr).split())
    assert f"{str(fifo)!r}: it is a FIFO (named pipe) with no reader; start the reader first" in said, said
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


@needs_fifo
def test_a_fifo_with_a_reader_is_written_in_place(fitted, tmp_path):
    fifo = tmp_path / "t.json"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader before the write, opened without waiting
    keeper = os.open(fifo, os.O_WRONLY)  # a writer held open: the reader sees no end of file before the save
    os.set_blocking(reader, True)
    chunks: list[bytes] = []

    def read_all() -> None:
        with os.fdopen(reader, "rb") as f:
            chunks.append(f.read())

    thread = threading.Thread(target=read_all)
    thread.start()  # the trace is larger than a pipe's buffer: someone must read while it is written
    try:
        fitted["trace"].save(fifo)
    finally:
        os.close(keeper)
        thread.join(timeout=120)
    assert json.loads(b"".join(chunks)) == fitted["trace"].to_json()
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_an_interrupted_replace_leaves_the_old_file_whole(fitted, tmp_path, monkeypatch):
    """Ctrl-C after the new contents are written but before the rename: the old file as it was, nothing beside it."""
    path = tmp_path / "t.json"
    path.write_bytes(OLD)

    def interrupted(*_: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fitted["trace"].save(path)
    monkeypatch.undo()
    assert path.read_bytes() == OLD and list(tmp_path.iterdir()) == [path]
