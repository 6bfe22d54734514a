"""Raw records, packed: 32 bytes per event firing and 24 per callback call.

The recorder packs rows in batches (at most `record.PENDING_ROWS` rows wait as values in a flat list until then; no
Python object is kept per record once packed). Everything else reads the rows through `matrix()`, an int64 matrix in
FIRING_FIELDS / CALL_FIELDS order, and trace files hold those same flat integers, so the packing is known only here
and to the recorder.

A row stores its duration in 32 bits (up to 4.29 s). A longer one (a callback saving a model, a validation run
inside an event) is kept exactly in `long` (row index -> ns), as is a negative one from a hand-made file. Device
times, when the trace was timed on a device clock, are kept beside the rows in `device` (two int64 per firing).
"""
from __future__ import annotations

import struct
from array import array
from typing import TYPE_CHECKING, Any

from loopviz.trace.layout import C_DUR, CALL_FIELDS, F_DEV_END, F_DEV_START, F_END, F_START, FIRING_FIELDS

if TYPE_CHECKING:
    import numpy as np

__all__ = ["FiringRecords", "CallRecords", "Unfit", "FIRING_ROW", "CALL_ROW", "FIRING_EPOCH_ITER", "LONG",
           "MAX_EVENT", "MAX_INDEX"]

# (field, struct code) in stored order; little-endian, unaligned: 8+4+4+4+4+2+1+1+4 = 32 bytes
FIRING_PACKING = (("start", "q"), ("epoch", "i"), ("iter", "i"), ("loop", "i"), ("parent", "i"), ("event", "H"),
                  ("mode", "B"), ("status", "B"), ("dur", "I"))
# 8+4+4+4+1 = 21, padded to 24 so that every row's start is 8-byte aligned
CALL_PACKING = (("start", "q"), ("firing", "i"), ("callback", "i"), ("dur", "I"), ("status", "B"), ("", "3x"))

FIRING_ROW = struct.Struct("<" + "".join(code for _, code in FIRING_PACKING))
CALL_ROW = struct.Struct("<" + "".join(code for _, code in CALL_PACKING))


def _offset(packing: tuple[tuple[str, str], ...], name: str) -> int:
    """Where a field starts in a packed row."""
    codes = [code for field, code in packing]
    return struct.calcsize("<" + "".join(codes[:[field for field, _ in packing].index(name)]))


FIRING_EPOCH_ITER = struct.Struct("<ii")  # a firing's epoch and iteration as its row holds them
assert FIRING_ROW.size == 32 and CALL_ROW.size == 24

LONG = 2**32 - 1  # the stored duration of a row whose true duration is in `long`
MAX_EVENT = 2**16 - 1  # the largest event index a row holds (the recorder aggregates firings of any later event)
MAX_INDEX = 2**31 - 1  # the largest loop, firing or callback index, epoch or iteration a row holds

_NUMPY_TYPES = {"q": "<i8", "i": "<i4", "I": "<u4", "H": "<u2", "B": "u1"}


class Unfit(ValueError):
    """Integers (from a file) that do not make whole rows, or a value a packed row cannot hold."""

    def __init__(self, detail: str, at: str = ""):
        super().__init__(f"{at}: {detail}" if at else detail)
        self.detail, self.at = detail, at


def _dtype(packing: tuple[tuple[str, str], ...], size: int) -> Any:
    """The numpy structured dtype of a packed row."""
    import numpy as np

    named = [(field, code) for field, code in packing if field]
    return np.dtype({"names": [f for f, _ in named], "formats": [_NUMPY_TYPES[c] for _, c in named],
                     "offsets": [_offset(packing, f) for f, _ in named], "itemsize": size})


class _Records:
    """Packed rows of one kind, their long durations, and their conversion to and from an int64 matrix."""

    packing: tuple[tuple[str, str], ...]
    row: struct.Struct
    fields: tuple[str, ...]  # the matrix's columns (a stored field is in the column of its name; "dur" is not one)

    def __init__(self, packed: bytearray | None = None, long: dict[int, int] | None = None):
        self.packed = packed if packed is not None else bytearray()
        self.long = long if long is not None else {}

    def __len__(self) -> int:
        return len(self.packed) // self.row.size

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.tolist() == other.tolist()  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} rows)"

    @property
    def nbytes(self) -> int:
        """Bytes held by the rows and their side tables (not counting Python object headers)."""
        return len(self.packed) + 16 * len(self.long)

    @classmethod
    def flat_matrix(cls, values: Any) -> np.ndarray:
        """The int64 matrix of flat integers in matrix order, as a trace file holds them (raises TypeError or
        OverflowError for a value that is not a 64-bit integer, Unfit when they do not make whole rows)."""
        import numpy as np

        ints = array("q", values)
        width = len(cls.fields)
        if len(ints) % width:
            raise Unfit(f"holds {len(ints):,} integers, not a whole number of {width}-integer records "
                        f"({', '.join(cls.fields)})")
        return np.frombuffer(ints, np.int64).reshape(-1, width)

    def tolist(self) -> list[int]:
        """The rows as flat integers in matrix order (what a trace file holds)."""
        return self.matrix().ravel().tolist()

    def _matrix(self) -> tuple[np.ndarray, np.ndarray]:
        """The int64 matrix with every stored field but the duration in its column, and the durations (long ones
        put back)."""
        import numpy as np

        stored = np.frombuffer(self.packed, dtype=_dtype(self.packing, self.row.size))
        m = np.empty((len(stored), len(self.fields)), np.int64)
        for field, _ in self.packing:
            if field and field != "dur":
                m[:, self.fields.index(field)] = stored[field]
        dur = stored["dur"].astype(np.int64)
        if self.long:
            dur[np.fromiter(self.long.keys(), np.int64, len(self.long))] = np.fromiter(self.long.values(), np.int64,
                                                                                      len(self.long))
        return m, dur

    @classmethod
    def _pack(cls, m: np.ndarray, dur: np.ndarray) -> tuple[bytearray, dict[int, int]]:
        """Rows from an int64 matrix (its durations given), each value checked to fit."""
        import numpy as np

        stored = np.zeros(len(m), dtype=_dtype(cls.packing, cls.row.size))
        for field, code in cls.packing:
            if not field or field == "dur":
                continue
            column = m[:, cls.fields.index(field)]
            info = np.iinfo(_NUMPY_TYPES[code])
            bad = np.flatnonzero((column < info.min) | (column > info.max))
            if len(bad):
                raise Unfit(f"{field} is {column[bad[0]]}, outside what a trace record holds "
                            f"({info.min} to {info.max})", f"record {bad[0]}")
            stored[field] = column
        long = (dur < 0) | (dur >= LONG)
        stored["dur"] = np.where(long, LONG, dur)
        where = np.flatnonzero(long)
        return bytearray(stored.tobytes()), dict(zip(where.tolist(), dur[where].tolist()))


class FiringRecords(_Records):
    """Event firings: 32 bytes each, FIRING_FIELDS as a matrix; `device` holds device times, when there are any."""

    packing, row, fields = FIRING_PACKING, FIRING_ROW, FIRING_FIELDS

    def __init__(self, packed: bytearray | None = None, long: dict[int, int] | None = None,
                 device: array | None = None):
        super().__init__(packed, long)
        self.device = device if device is not None else array("q")  # dev_start, dev_end per firing, or empty

    @property
    def nbytes(self) -> int:
        """Bytes held by the rows and their side tables (not counting Python object headers)."""
        return super().nbytes + len(self.device) * self.device.itemsize

    def matrix(self) -> np.ndarray:
        """The firings as an (n, NF) int64 matrix in FIRING_FIELDS order (a new array)."""
        import numpy as np

        m, dur = self._matrix()
        m[:, F_END] = m[:, F_START] + dur
        dev = np.frombuffer(self.device, np.int64).reshape(-1, 2) if len(self.device) else -1
        m[:, [F_DEV_START, F_DEV_END]] = dev
        return m

    @classmethod
    def from_matrix(cls, m: np.ndarray) -> FiringRecords:
        """Firings from an (n, NF) int64 matrix (raises Unfit for a value a row cannot hold)."""
        import numpy as np

        packed, long = cls._pack(m, m[:, F_END] - m[:, F_START])
        dev = np.ascontiguousarray(m[:, [F_DEV_START, F_DEV_END]], dtype=np.int64)
        device = array("q", dev.tobytes()) if (dev != -1).any() else array("q")
        return cls(packed, long, device)


class CallRecords(_Records):
    """Callback calls: 24 bytes each, CALL_FIELDS as a matrix."""

    packing, row, fields = CALL_PACKING, CALL_ROW, CALL_FIELDS

    def matrix(self) -> np.ndarray:
        """The calls as an (n, NC) int64 matrix in CALL_FIELDS order (a new array)."""
        m, dur = self._matrix()
        m[:, C_DUR] = dur
        return m

    @classmethod
    def from_matrix(cls, m: np.ndarray) -> CallRecords:
        """Calls from an (n, NC) int64 matrix (raises Unfit for a value a row cannot hold)."""
        return cls(*cls._pack(m, m[:, C_DUR]))
