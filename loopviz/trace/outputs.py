"""The reports a trace (or several merged) can be written as: the functions behind `loopviz.formats.REPORT_FORMATS`."""
from __future__ import annotations

import io
from typing import Any

from loopviz.trace.jsontext import compact_json

__all__ = ["table", "spans_csv", "chrome_json", "plot_svg", "html_page"]


def _is_merged(report: Any) -> bool:
    from loopviz.trace.merge import MergedTrace

    return isinstance(report, MergedTrace)


def table(report: Any) -> str:
    """The report's tables as plain text (a merged trace: its across-ranks tables)."""
    return str(report)


def spans_csv(trace: Any) -> str:
    """Every span of one trace (events, callback calls, work), one CSV row each."""
    return trace.to_df().to_csv(index=False)


def chrome_json(report: Any) -> str:
    """A Chrome/Perfetto trace as JSON text: one trace, or every rank of a merged one on one timeline."""
    if _is_merged(report):
        return compact_json(report.chrome(), "the Chrome trace")
    from loopviz.trace.chrome import chrome_text

    return chrome_text(report)


def plot_svg(trace: Any) -> str:
    """The trace's plot (time per batch, the slowest batch) as SVG text."""
    import matplotlib.pyplot as plt

    figure = trace.plot()
    out = io.StringIO()
    figure.savefig(out, format="svg")
    plt.close(figure)
    return out.getvalue()


def html_page(trace: Any) -> str:
    """The interactive HTML report of one trace: one self-contained page."""
    from loopviz.trace.html import html_report

    return html_report(trace)
