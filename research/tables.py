"""Tables as text: Markdown for the console, LaTeX (booktabs) for a paper, CSV for pandas."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

FORMATS = ("markdown", "latex", "csv")
LATEX_SPECIAL = {c: "\\" + c for c in "&%$#_{}"}


def markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell, so the table reads as text too."""
    widths = [max(len(c) for c in column) for column in zip(header, *rows, strict=True)]
    return "\n".join(
        "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"
        for cells in [header, ["-" * w for w in widths], *rows]
    )


def _latex_text(text: str) -> str:
    return "".join(LATEX_SPECIAL.get(c, c) for c in text).replace("±", "$\\pm$")


def latex(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A booktabs ``tabular`` (``\\usepackage{booktabs}``), special characters escaped."""
    lines = [
        "\\begin{tabular}{" + "l" * len(header) + "}",
        "\\toprule",
        " & ".join(_latex_text(c) for c in header) + " \\\\",
        "\\midrule",
        *(" & ".join(_latex_text(c) for c in row) + " \\\\" for row in rows),
        "\\bottomrule",
        "\\end{tabular}",
    ]
    return "\n".join(lines)


def csv_text(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().rstrip("\n")
