"""Charts as PNG bytes, for MLflow and the Dagster catalog.

The test confusion matrix (logged to MLflow) and the overview of the monitored days
(linked from `model_monitoring`).

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


def reliability_diagram_png(
    curves: Sequence[tuple[str, Sequence[dict]]], title: str, ece: Sequence[float | None]
) -> bytes:
    """Reliability diagram: per confidence bin (`core.calibration.reliability_bins`), the
    share answered right against the mean confidence, one line per named curve (e.g. before
    and after calibration, with its ECE in the legend), the diagonal of a calibrated model,
    and below it the rows per bin."""
    figure = Figure(figsize=(5.2, 6.0), dpi=110)
    top, bottom = figure.subplots(2, 1, gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    top.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="calibrated")
    width = 1.0 / max(1, max((len(bins) for _, bins in curves), default=1))
    for position, ((name, bins), error) in enumerate(zip(curves, ece, strict=True)):
        filled = [item for item in bins if item["rows"]]
        label = name if error is None else f"{name} (ECE {error:.3f})"
        top.plot(
            [item["mean_confidence"] for item in filled],
            [item["accuracy"] for item in filled],
            marker="o",
            label=label,
        )
        offset = (position - (len(curves) - 1) / 2) * width / max(1, len(curves))
        bottom.bar(
            [(item["lower"] + item["upper"]) / 2 + offset for item in bins],
            [item["rows"] for item in bins],
            width=width / max(1, len(curves)),
            label=name,
        )
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("share answered right")
    top.set_title(title, fontsize=10)
    top.legend(fontsize=8, loc="upper left")
    bottom.set_xlabel("confidence (probability of the answered class)")
    bottom.set_ylabel("rows")
    return png_bytes(figure)
