"""Trace files: `TraceData` to and from JSON, field by field with each field's codec, gzip for `.gz` names.

Reading is safe on any file: only regular files are opened, at most `max_bytes` are read from disk and at
most `max_json_bytes` of JSON come out of gzip (measured before any is kept, so a gzip bomb costs time, not
memory), and the data is checked field by field (`loopviz.trace.validate`) before a report can trip on it.
Both limits default to 512 MiB, about ten times the largest trace the recorder's default caps produce.
"""
from __future__ import annotations

import errno
import gzip
import json
import os
import secrets
import stat
import sys
import zlib
from dataclasses import fields
from pathlib import Path
from typing import Any, Callable

from loopviz.checks import check_int, check_type
from loopviz.errors import LoopvizError
from loopviz.trace import validate
from loopviz.trace.jsontext import compact_json
from loopviz.trace.data import ADDED_IN_3, ADDED_IN_4, ADDED_IN_6, COARSE_PERCENTILES, TraceData, spans_from_firings
from loopviz.trace.datawork import DATA_FIELDS
from loopviz.trace.layout import CALL_FIELDS, CHANGE_FIELDS, FIRING_FIELDS
from loopviz.trace.records import Unfit

__all__ = ["FORMAT_VERSION", "READS", "MAX_BYTES", "MAX_JSON_BYTES", "MAX_BYTES_ENV", "MAX_JSON_BYTES_ENV",
           "to_json", "from_json", "write_json", "write_text", "write_bytes", "read_json", "read_trace"]

FORMAT_VERSION = 6  # 2: aggregates past the cap keyed by loop too; 3: loop spans, work and nesting past the cap;
# 4: waits for the GPU; 5: aggregates keep a quantile sketch (loopviz.trace.sketch), not a log2 histogram; 6: the
# data loop's timed work (data=True)
READS = (1, 2, 3, 4, 5, 6)
_LAYOUTS = {"firing_fields": FIRING_FIELDS, "call_fields": CALL_FIELDS, "change_fields": CHANGE_FIELDS,
            "data_fields": DATA_FIELDS}

# Limits on reading a trace file; the environment variables override these defaults, keyword arguments both.
MAX_BYTES = 512 * 2**20  # bytes read from disk
MAX_JSON_BYTES = 512 * 2**20  # bytes of JSON text, after gzip
MAX_BYTES_ENV = "LOOPVIZ_MAX_TRACE_BYTES"
MAX_JSON_BYTES_ENV = "LOOPVIZ_MAX_TRACE_JSON_BYTES"
_TYPICAL = "a trace of 1,000,000 callback calls is about 50 MB of JSON"
_GZIP_MAGIC = b"\x1f\x8b"
_IN_CHUNK = 1 << 16  # compressed bytes fed to zlib at a time
_OUT_CHUNK = 1 << 20  # the most bytes zlib may produce at a time
_SAFE_RECURSION = 10_000  # json's C parser recurses per nesting level; deeper than this can overflow the C stack


def to_json(data: TraceData) -> dict[str, Any]:
    """Everything in the trace as JSON-ready data."""
    out: dict[str, Any] = {"format": "loopviz-trace", "version": FORMAT_VERSION}
    out.update({name: list(layout) for name, layout in _LAYOUTS.items()})
    out.update({f.name: f.metadata["codec"].encode(getattr(data, f.name)) for f in fields(TraceData)})
    return out


def from_json(obj: Any, source: str | None = None) -> TraceData:
    """Trace data from `to_json()` output of this or an earlier version, every field checked; a clear error
    (naming `source`, the file it came from, if given) for anything else."""
    where = repr(source) if source is not None else "trace data"
    if not isinstance(obj, dict) or obj.get("format") != "loopviz-trace":
        raise LoopvizError(f"{where} is not a loopviz trace: it has no 'format': 'loopviz-trace' field.")
    version = obj.get("version")
    if type(version) is not int or version not in READS:
        raise LoopvizError(f"{where}: loopviz trace version {version!r} is not supported; this loopviz reads versions "
                           f"{', '.join(map(str, READS))}.")
    if any(obj.get(name, list(layout)) != list(layout) for name, layout in _LAYOUTS.items()):
        raise LoopvizError(f"{where}: this loopviz trace has different record fields than this loopviz version reads.")
    optional = ((ADDED_IN_3 if version < 3 else ()) + (ADDED_IN_4 if version < 4 else ())
                + (ADDED_IN_6 if version < 6 else ()))
    missing = [f.name for f in fields(TraceData) if f.name not in obj and f.name not in optional]
    if missing:
        raise LoopvizError(f"{where}: this loopviz trace lacks the fields {', '.join(missing)}: the file is incomplete "
                           "(cut short, or not written by Trace.save); record the trace again.")
    try:
        return _decode(obj, version)
    except validate.Invalid as e:
        raise LoopvizError(e.message(where, from_file=source is not None)) from None


def _decode(obj: dict[str, Any], version: int) -> TraceData:
    """The checked fields decoded by their codecs, then checked against each other."""
    validate.check_json(obj, version)
    values = {}
    for f in fields(TraceData):
        if f.name not in obj:
            continue
        codec, value = f.metadata["codec"], obj[f.name]
        value = codec.from_v1(value) if version == 1 else value
        try:
            values[f.name] = codec.decode(value)
        except Unfit as e:
            raise validate.Invalid(f.name, e.detail, e.at) from None
        except (TypeError, OverflowError, ValueError):  # check_json vetted all but the record arrays' contents
            raise validate.bad_records(f.name, value) from None
    data = TraceData(**values)
    validate.check_data(data, spans=version >= 3)  # raw records still int64 matrices: checked before packing
    for f in fields(TraceData):
        try:
            setattr(data, f.name, f.metadata["codec"].build(getattr(data, f.name)))
        except Unfit as e:
            raise validate.Invalid(f.name, e.detail, e.at) from None
    if version < 3:
        data.loop_spans = spans_from_firings(data)
        data.meta = {**data.meta, "spans_from_firings": True}
    if data.framework and "dispatch_label" not in data.meta:  # written before adapters named these: the names then
        word = data.framework.split()[0]  # (the one tracer that opened ranges named them after its framework)
        data.meta = {"dispatch_label": f"dispatch ({word}'s own)", "range_prefix": word, **data.meta}
    if version < 5 and any((data.overflow_firings, data.overflow_calls, data.overflow_nested, data.overflow_work)):
        data.meta = {**data.meta, COARSE_PERCENTILES: True}  # its log2 histograms: percentiles within a factor of 1.42
    return data


def write_json(obj: Any, path: str | Path) -> Path:
    """Write JSON data compactly (gzip-compressed when the name ends in .gz) with `write_bytes`."""
    return write_text(compact_json(obj, repr(str(path))), path)


def write_text(text: str, path: str | Path) -> Path:
    """Write text (gzip-compressed when the name ends in .gz; level 6, which is several times faster than 9 for
    a few per cent more bytes) with `write_bytes`."""
    path = Path(path)
    data = text.encode("utf-8")
    if path.suffix == ".gz":
        data = gzip.compress(data, compresslevel=6)
    return write_bytes(data, path)


def write_bytes(data: bytes, path: str | os.PathLike[str]) -> Path:
    """Write `data` to `path` the way its kind of file allows; every file loopviz writes goes through here.

    A symlink is written through (its target is written; a dangling one's target is created). A regular file, or
    a new one, is replaced all or nothing: a temporary file in the same folder, given the old file's mode (and
    owner, where allowed) or the umask's default, is renamed over it, so the file appears complete or not at all
    even when writing is interrupted (Ctrl-C, a full disk). A regular file with other hard links is written in
    place (truncated, then written), so the links stay one file; that write is not all or nothing. A FIFO with
    a reader and a character device (`/dev/null`, a terminal) are written in place, never replaced; a FIFO with
    no reader, a block device, a socket and a folder are refused with a LoopvizError, as is any write the system
    refuses (a read-only folder, a full disk), naming the path."""
    given = Path(path)
    try:
        _write_to(data, given)
    except OSError as e:
        raise LoopvizError(f"cannot write {str(given)!r}: {e.strerror or e}.") from e
    return given


def _write_to(data: bytes, given: Path) -> None:
    """`write_bytes`'s work, which may raise OSError."""
    target = _write_target(given)
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        _replace(data, target, None)
        return
    if stat.S_ISREG(st.st_mode):
        if st.st_nlink > 1:
            _write_in_place(data, target, truncate=True)
        else:
            _replace(data, target, st)
    elif stat.S_ISFIFO(st.st_mode):
        _write_fifo(data, target, given)
    elif stat.S_ISCHR(st.st_mode):
        _write_in_place(data, target, truncate=False)
    else:
        raise LoopvizError(f"cannot write {str(given)!r}: it is {_kind(st.st_mode)}, not a file loopviz can write; "
                           "give the name of a regular file.")


def _write_target(path: Path) -> Path:
    """The file a write to `path` goes to: `path`, or the file its symlinks lead to (which must be in a folder)."""
    if not path.is_symlink():
        return path
    target = Path(os.path.realpath(path))
    if target.is_symlink():  # realpath stops at a loop of links
        raise LoopvizError(f"cannot write {str(path)!r}: its symlinks make a loop; give a file name instead.")
    if not target.parent.is_dir():
        raise LoopvizError(f"cannot write {str(path)!r}: it is a symlink to {str(target)!r}, whose folder "
                           f"{str(target.parent)!r} does not exist; create the folder or give another name.")
    return target


def _replace(data: bytes, path: Path, old: os.stat_result | None) -> None:
    """Write `data` to a new file beside `path` with `old`'s mode and owner (None: a new file), then rename it over
    `path`; the new file is removed if anything fails."""
    fd, partial = _create_partial(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if old is not None:
                _keep_mode_and_owner(f.fileno(), partial, old)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _create_partial(path: Path) -> tuple[int, Path]:
    """A new, empty file beside `path` with the umask's default mode, under a name nothing else holds (O_EXCL: never
    through a symlink someone placed there)."""
    for _ in range(100):
        partial = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.partial")
        try:
            return os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o666), partial
        except FileExistsError:
            continue
    raise LoopvizError(f"cannot write {str(path)!r}: no free name for a temporary file beside it.")


def _keep_mode_and_owner(fd: int, partial: Path, old: os.stat_result) -> None:
    """Give the open file `fd` (at `partial`) `old`'s permission bits and, where this process may, its owner."""
    if hasattr(os, "fchown"):
        try:
            os.fchown(fd, old.st_uid, old.st_gid)
        except PermissionError:  # only root may give a file away: the new file stays this process's
            pass
    mode = stat.S_IMODE(old.st_mode)  # set after chown, which clears set-user-ID bits
    try:
        os.chmod(fd if os.chmod in os.supports_fd else partial, mode)
    except PermissionError:  # a file system without modes (FAT, some network mounts): nothing to keep
        pass


def _write_in_place(data: bytes, path: Path, *, truncate: bool) -> None:
    """Write `data` into the existing file at `path` (truncated first if asked), keeping the file itself."""
    fd = os.open(path, os.O_WRONLY | _NOFOLLOW | (os.O_TRUNC if truncate else 0))
    _write_all(fd, data)


def _write_fifo(data: bytes, path: Path, given: Path) -> None:
    """Write `data` into the FIFO at `path` if a reader has it open; refuse at once (never wait) if none has."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | _NOFOLLOW)
    except OSError as e:
        if e.errno != errno.ENXIO:
            raise
        raise LoopvizError(f"cannot write {str(given)!r}: it is a FIFO (named pipe) with no reader; start the "
                           "reader first (e.g. `cat` it), or give the name of a regular file.") from None
    os.set_blocking(fd, True)  # the reader may be slower than us: wait for it, now that it exists
    _write_all(fd, data)


def _write_all(fd: int, data: bytes) -> None:
    """Write all of `data` to the open descriptor `fd`, then close it."""
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _kind(mode: int) -> str:
    """What a file that is not regular is, in words."""
    kinds = [(stat.S_ISDIR, "a folder"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device")]
    return next((words for test, words in kinds if test(mode)), "not a regular file")


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def read_trace(path: str | os.PathLike[str], *, max_bytes: int | None = None,
               max_json_bytes: int | None = None) -> TraceData:
    """The checked trace data in a file written by `Trace.save` (gzip or not), within the reading limits."""
    return from_json(read_json(path, max_bytes=max_bytes, max_json_bytes=max_json_bytes), source=_name(path))


def read_json(path: str | os.PathLike[str], *, max_bytes: int | None = None, max_json_bytes: int | None = None) -> Any:
    """JSON data from a regular file (gzip or not), at most `max_bytes` read and `max_json_bytes` of JSON text;
    None means the environment variable's value, else the module default (`MAX_BYTES`, `MAX_JSON_BYTES`)."""
    name = repr(_name(path))
    disk = _limit("max_bytes", max_bytes, MAX_BYTES_ENV, MAX_BYTES)
    text = _limit("max_json_bytes", max_json_bytes, MAX_JSON_BYTES_ENV, MAX_JSON_BYTES)
    raw = _read_regular(os.fspath(path), name, disk)
    if raw[:2] == _GZIP_MAGIC:
        _inflate(raw, name, text, keep=False)  # measured first: a gzip bomb is refused before any of it is kept
        raw = _inflate(raw, name, text, keep=True)
    elif len(raw) > text:
        raise _too_big(name, f"is {len(raw):,} bytes of JSON, more than", text, "max_json_bytes", MAX_JSON_BYTES_ENV)
    return _parse(raw, name)


def _name(path: Any) -> str:
    """The path as text for messages; a clear error for anything that is not a path."""
    name = os.fspath(check_type("path", path, (str, os.PathLike), "a file name (a str or pathlib.Path)"))
    return name if isinstance(name, str) else os.fsdecode(name)


def _limit(keyword: str, given: int | None, env: str, default: int) -> int:
    """A reading limit in bytes: the keyword argument, else the environment variable, else the default."""
    if given is not None:
        return check_int(keyword, given, 0)
    value = os.environ.get(env, "").strip()
    if not value:
        return default
    try:
        limit = int(value)
    except ValueError:
        limit = -1
    if limit < 0:
        raise LoopvizError(f"the environment variable {env}={value!r} is not a number of bytes; set it to an "
                           f"integer such as {2 * default}, or unset it for the default ({default}).")
    return limit


def _too_big(name: str, what: str, limit: int, keyword: str, env: str) -> LoopvizError:
    """The error for a file past a reading limit (`what` it is, ending before the limit), saying how to raise it."""
    bigger = max(2 * limit, 2**20)
    return LoopvizError(
        f"{name} {what} the {limit:,} bytes loopviz reads ({_TYPICAL}). If you trust the file, raise the limit: set "
        f"the environment variable {env}={bigger}, or call Trace.load(path, {keyword}={bigger}).")


def _read_regular(path: str, name: str, limit: int) -> bytes:
    """The bytes of a regular file, at most `limit` of them; FIFOs, devices and directories are never opened."""
    _require_regular(_os_call(os.stat, path, name).st_mode, name)  # before opening: opening a FIFO blocks
    fd = _os_call(os.open, path, name, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    with open(fd, "rb") as file:
        info = os.fstat(fd)
        _require_regular(info.st_mode, name)  # the file opened, not one put there since the check
        if info.st_size > limit:
            raise _too_big(name, f"is {info.st_size:,} bytes, more than", limit, "max_bytes", MAX_BYTES_ENV)
        want = min(info.st_size, limit) + 1  # a buffer the size of the file, not of the limit
        raw = _os_call(file.read, want, name)
        if len(raw) == want and want <= limit:  # it grew since: read on, up to the limit
            raw += _os_call(file.read, limit + 1 - want, name)
    if len(raw) > limit:
        raise _too_big(name, "is larger than", limit, "max_bytes", MAX_BYTES_ENV)
    return raw


def _os_call(call: Callable[..., Any], first: Any, name: str, *rest: Any) -> Any:
    """`call(first, *rest)`, its OS errors as a clear LoopvizError about the file `name`."""
    try:
        return call(first, *rest)
    except FileNotFoundError:
        raise LoopvizError(f"no trace file at {name}: check the path.") from None
    except PermissionError:
        raise LoopvizError(f"cannot read {name}: permission denied; check the file's permissions.") from None
    except OSError as e:
        raise LoopvizError(f"cannot read {name}: {e.strerror or e}.") from None
    except ValueError:  # a NUL character in the name
        raise LoopvizError(f"{name} is not a valid file name.") from None


def _require_regular(mode: int, name: str) -> None:
    if stat.S_ISREG(mode):
        return
    kind = ("a directory" if stat.S_ISDIR(mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "not a regular file")
    raise LoopvizError(f"{name} is {kind}, not a trace file: give the path of a file written by Trace.save.")


def _inflate(raw: bytes, name: str, limit: int, keep: bool) -> bytes:
    """Every gzip member in `raw` decompressed in bounded steps (the output, or b'' unless `keep`); refused as
    soon as it passes `limit` bytes, and when cut short or damaged."""
    out: list[bytes] = []
    size, start, view = 0, 0, memoryview(raw)
    while start < len(raw):
        if raw[start:start + 2] != _GZIP_MAGIC:
            if raw.count(0, start) == len(raw) - start:  # zero padding after the last member, as gzip allows
                break
            raise LoopvizError(f"{name} is not a loopviz trace: it has data after the end of its gzip stream.")
        engine, pos, pending = zlib.decompressobj(wbits=31), start, b""
        while not engine.eof:
            if not pending and pos < len(raw):
                pending, pos = view[pos:pos + _IN_CHUNK], pos + _IN_CHUNK
            try:
                piece = engine.decompress(pending, _OUT_CHUNK)
            except zlib.error as e:
                raise LoopvizError(f"{name} is a damaged gzip file ({e}); save the trace again.") from None
            if not piece and not pending and pos >= len(raw):
                raise LoopvizError(f"{name} is cut short: its gzip stream ends early (an interrupted copy or "
                                   "download?); copy or save the trace again.")
            pending = engine.unconsumed_tail
            size += len(piece)
            if size > limit:
                raise _too_big(name, "decompresses to more JSON than", limit, "max_json_bytes", MAX_JSON_BYTES_ENV)
            if keep:
                out.append(piece)
        start = min(pos, len(raw)) - len(engine.unused_data)
    return b"".join(out)


def _parse(raw: bytes, name: str) -> Any:
    """JSON from UTF-8 bytes; a clear error for anything else, and for nesting too deep to read safely."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise LoopvizError(f"{name} is not a loopviz trace (not UTF-8 text: byte {e.start} is invalid).") from None
    del raw
    limit = sys.getrecursionlimit()
    if limit > _SAFE_RECURSION:  # json's C parser holds the GIL throughout, so no other thread sees the lower limit
        sys.setrecursionlimit(_SAFE_RECURSION)
    try:
        return json.loads(text)
    except RecursionError:
        raise LoopvizError(f"{name} is not a loopviz trace: its JSON nests too deep to read.") from None
    except json.JSONDecodeError as e:
        raise LoopvizError(f"{name} is not a loopviz trace (not JSON: {e}).") from None
    except ValueError:  # an integer longer than Python converts
        raise LoopvizError(f"{name} is not a loopviz trace: it holds an integer of more than "
                           f"{sys.get_int_max_str_digits():,} digits.") from None
    finally:
        sys.setrecursionlimit(limit)
