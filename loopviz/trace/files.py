"""Trace files: `TraceData` to and from JSON, field by field with each field's codec, gzip for `.gz` names."""
from __future__ import annotations

import gzip
import json
from dataclasses import fields
from pathlib import Path
from typing import Any

from loopviz.errors import LoopvizError
from loopviz.trace.data import ADDED_IN_3, TraceData, spans_from_firings
from loopviz.trace.layout import CALL_FIELDS, CHANGE_FIELDS, FIRING_FIELDS

__all__ = ["FORMAT_VERSION", "READS", "to_json", "from_json", "write_json", "read_json"]

FORMAT_VERSION = 3  # 2: aggregates past the cap keyed by loop too; 3: loop spans, work and nesting past the cap
READS = (1, 2, 3)
_LAYOUTS = {"firing_fields": FIRING_FIELDS, "call_fields": CALL_FIELDS, "change_fields": CHANGE_FIELDS}


def to_json(data: TraceData) -> dict[str, Any]:
    """Everything in the trace as JSON-ready data."""
    out: dict[str, Any] = {"format": "loopviz-trace", "version": FORMAT_VERSION}
    out.update({name: list(layout) for name, layout in _LAYOUTS.items()})
    out.update({f.name: f.metadata["codec"].encode(getattr(data, f.name)) for f in fields(TraceData)})
    return out


def from_json(obj: Any) -> TraceData:
    """Trace data from `to_json()` output of this or an earlier version; a clear error for anything else."""
    if not isinstance(obj, dict) or obj.get("format") != "loopviz-trace":
        raise LoopvizError("not a loopviz trace: the file has no 'format': 'loopviz-trace' field.")
    version = obj.get("version")
    if version not in READS:
        raise LoopvizError(f"loopviz trace version {version!r} is not supported; this loopviz reads versions "
                           f"{', '.join(map(str, READS))}.")
    if any(obj.get(name, list(layout)) != list(layout) for name, layout in _LAYOUTS.items()):
        raise LoopvizError("this loopviz trace has different record fields than this loopviz version reads.")
    optional = ADDED_IN_3 if version < 3 else ()
    missing = [f.name for f in fields(TraceData) if f.name not in obj and f.name not in optional]
    if missing:
        raise LoopvizError(f"this loopviz trace lacks the fields {', '.join(missing)}: the file is incomplete.")
    values = {}
    for f in fields(TraceData):
        if f.name not in obj:
            continue
        codec, value = f.metadata["codec"], obj[f.name]
        values[f.name] = codec.decode(codec.from_v1(value) if version == 1 else value)
    data = TraceData(**values)
    if version < 3:
        data.loop_spans = spans_from_firings(data)
        data.meta["spans_from_firings"] = True
    return data


def write_json(obj: Any, path: str | Path) -> Path:
    """Write JSON data compactly (gzip-compressed when the name ends in .gz)."""
    path = Path(path)
    text = json.dumps(obj, separators=(",", ":"))
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode("utf-8")))
    else:
        path.write_text(text, encoding="utf-8")
    return path


def read_json(path: str | Path) -> Any:
    """JSON data from a file written by `write_json` (gzip or not)."""
    path = Path(path)
    if not path.exists():
        raise LoopvizError(f"no trace file at {str(path)!r}.")
    raw = path.read_bytes()
    try:
        text = gzip.decompress(raw).decode("utf-8") if raw[:2] == b"\x1f\x8b" else raw.decode("utf-8")
        return json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LoopvizError(f"{str(path)!r} is not a loopviz trace (not JSON: {e}).") from e
