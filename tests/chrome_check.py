"""A check shared by the Chrome/Perfetto export tests."""
from __future__ import annotations


def assert_nested(spans: list[dict]) -> None:
    """Complete ("X") events of one thread must nest perfectly: Perfetto drops overlapping ones."""
    open_ends: list[float] = []
    for span in sorted(spans, key=lambda e: (e["ts"], -e["dur"])):
        while open_ends and span["ts"] >= open_ends[-1] - 1e-6:
            open_ends.pop()
        if open_ends:
            assert span["ts"] + span["dur"] <= open_ends[-1] + 1e-3, span
        open_ends.append(span["ts"] + span["dur"])
