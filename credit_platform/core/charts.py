"""Charts as PNG bytes: the test confusion matrix (logged to MLflow) and the monitoring
overview of the monitored days (linked from `model_monitoring`).

Matplotlib's object API with the Agg canvas, never pyplot: no global figure state, safe on
a run worker's threads and without a display.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def png_bytes(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()


def confusion_matrix_png(labels: Sequence[str], rows: Sequence[Sequence[int]], title: str) -> bytes:
    """Counts with each true label's share (rows: true labels, columns: predicted)."""
    figure = Figure(figsize=(4.8, 4.2), dpi=110)
    axes = figure.subplots()
    totals = [max(1, sum(row)) for row in rows]
    shares = [[count / total for count in row] for row, total in zip(rows, totals, strict=True)]
    axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    for i, row in enumerate(rows):
        for j, count in enumerate(row):
            dark = shares[i][j] > 0.55
            axes.text(
                j,
                i,
                f"{count}\n{shares[i][j]:.0%}",
                ha="center",
                va="center",
                color="white" if dark else "black",
                fontsize=10,
            )
    axes.set_xticks(range(len(labels)), labels)
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title, fontsize=10)
    return png_bytes(figure)
