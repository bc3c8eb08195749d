"""How the served models did over the monitored days, for a person to read at a glance.

`model_monitoring` reports one day; an operator asks about the weeks around it: which
model answered when, how each did, where the model changed. This builds that view from the
stored rows of `credit_model_monitoring`: one row per day, model version and role (so on a
hot-swap day the model swapped out keeps its own row), the model changes, and a chart of
the monitored days only (Dagster's partition plots span the whole partition range, months
in which nothing was monitored).
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from credit_platform.core.charts import png_bytes
from credit_platform.core.monitoring import (
    ALL_VERSIONS,
    LABELLED,
    LIVE_ACCURACY,
    LIVE_MACRO_F1,
    MAX_FEATURE_PSI,
    PREDICTION_MIX_PSI,
    REQUESTS,
    TEST_ACCURACY,
)
from credit_platform.core.schema import MODEL_ROLES, MONITORING_ALL_ROLES

# The view covers the monitored days among this many days ending at the reported one.
VIEW_DAYS = 30
VIEW_METRICS = (
    REQUESTS,
    LABELLED,
    LIVE_ACCURACY,
    LIVE_MACRO_F1,
    TEST_ACCURACY,
    MAX_FEATURE_PSI,
    PREDICTION_MIX_PSI,
)

# The role whose model serves the traffic (the champion's); shadows and canaries run beside.
SERVED_ROLE = MODEL_ROLES[0]


def version_days(report: pd.DataFrame) -> pd.DataFrame:
    """One row per (day, model version, role) of the served roles, a column per metric of
    VIEW_METRICS (NaN when not known); days in order, each day's roles in MODEL_ROLES order
    and the busier version first."""
    columns = ["day", "model_version", "role", *VIEW_METRICS]
    rows = report[
        (report["model_version"] != ALL_VERSIONS)
        & (report["role"] != MONITORING_ALL_ROLES)
        & (report["feature"] == "")
        & report["metric"].isin(VIEW_METRICS)
    ]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    wide = rows.pivot_table(
        index=["day", "model_version", "role"],
        columns="metric",
        values="value",
        aggfunc="first",
        dropna=False,
    ).reset_index()
    for metric in VIEW_METRICS:
        if metric not in wide:
            wide[metric] = np.nan
    wide[REQUESTS] = wide[REQUESTS].fillna(0)
    wide[LABELLED] = wide[LABELLED].fillna(0)
    wide = wide[wide[REQUESTS] > 0]
    wide["_role_order"] = wide["role"].map({role: n for n, role in enumerate(MODEL_ROLES)})
    wide = wide.sort_values(
        ["day", "_role_order", REQUESTS, "model_version"],
        ascending=[True, True, False, True],
        kind="stable",
    )
    return wide[columns].reset_index(drop=True)


@dataclass(frozen=True)
class ModelChange:
    """A day on which the served (champion) model changed: the versions that answered the
    day before and on the day. A hot swap within the day shows both in `now`."""

    day: date
    before: tuple[str, ...]
    now: tuple[str, ...]

    @property
    def text(self) -> str:
        new = [version for version in self.now if version not in self.before]
        kept = [version for version in self.now if version in self.before]
        how = "hot swap" if kept and new else "new model"
        return f"{self.day}: {how}: {', '.join(self.before)} -> {', '.join(new)}"


def model_changes(view: pd.DataFrame) -> list[ModelChange]:
    """Each monitored day whose champion versions are not only those of the monitored day
    before (the first monitored day has nothing to compare with)."""
    served = view[view["role"] == SERVED_ROLE]
    changes = []
    previous: tuple[str, ...] | None = None
    for day, rows in served.groupby("day", sort=True):
        now = tuple(rows["model_version"])
        if previous is not None and set(now) - set(previous):
            changes.append(ModelChange(day=day, before=previous, now=now))
        # a hot-swap day ends on the model that was not there before
        remaining = [version for version in now if version not in (previous or ())]
        previous = tuple(remaining or now)
    return changes


def role_totals(view_of_day: pd.DataFrame, role: str) -> dict[str, float | int | str | None]:
    """One role's figures over every version that answered in it on the day: requests and
    labelled summed, live accuracy and macro F1 labelled-weighted (accuracy is then exactly
    that of all the role's labelled predictions), the largest drift of any version."""
    rows = view_of_day[view_of_day["role"] == role]
    labelled_rows = rows[(rows[LABELLED] > 0) & rows[LIVE_ACCURACY].notna()]
    labelled = int(labelled_rows[LABELLED].sum())

    def weighted(metric: str) -> float | None:
        known = labelled_rows[labelled_rows[metric].notna()]
        weight = known[LABELLED].sum()
        return float((known[LABELLED] * known[metric]).sum() / weight) if weight else None

    def largest(metric: str) -> float | None:
        values = rows[metric].dropna()
        return float(values.max()) if not values.empty else None

    return {
        "model_version": ", ".join(rows["model_version"]),
        "versions": len(rows),
        REQUESTS: int(rows[REQUESTS].sum()),
        LABELLED: int(rows[LABELLED].sum()),
        LIVE_ACCURACY: weighted(LIVE_ACCURACY) if labelled else None,
        LIVE_MACRO_F1: weighted(LIVE_MACRO_F1) if labelled else None,
        MAX_FEATURE_PSI: largest(MAX_FEATURE_PSI),
        PREDICTION_MIX_PSI: largest(PREDICTION_MIX_PSI),
    }


def short_version(tag: str) -> str:
    """The version part of a model tag (what tells two models apart where space is short:
    a chart's legend, the asset page's narrow metadata column)."""
    return tag.split(":", 1)[-1]


def _cell(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    if isinstance(value, float) and value.is_integer() and digits == 0:
        return str(int(value))
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def view_rows(
    view: pd.DataFrame, changes: list[ModelChange], *, short: bool = False
) -> list[tuple[str, ...]]:
    """The view as table rows, each model change noted on its day's rows (`short`: model
    versions without the model name)."""
    noted = {change.day: change for change in changes}
    rows = []
    for row in view.itertuples(index=False):
        change = noted.get(row.day)
        note = ""
        if change is not None and row.role == SERVED_ROLE:
            note = "new" if row.model_version not in change.before else "swapped out"
        rows.append(
            (
                str(row.day),
                short_version(row.model_version) if short else row.model_version,
                row.role,
                _cell(getattr(row, REQUESTS), 0),
                _cell(getattr(row, LABELLED), 0),
                _cell(getattr(row, LIVE_ACCURACY)),
                _cell(getattr(row, TEST_ACCURACY)),
                _cell(getattr(row, MAX_FEATURE_PSI), 3),
                _cell(getattr(row, PREDICTION_MIX_PSI), 3),
                note,
            )
        )
    return rows


VIEW_HEADERS = (
    "day",
    "model version",
    "role",
    "requests",
    "labelled",
    "live accuracy",
    "test accuracy",
    "max feature PSI",
    "prediction mix PSI",
    "model change",
)


def overview_chart(
    view: pd.DataFrame, changes: list[ModelChange], psi_threshold: float, title: str
) -> bytes:
    """Three panels over the monitored days only (one slot per day, no empty calendar):
    live accuracy per model version and role (its test accuracy dashed), requests stacked
    per version and role, the largest feature PSI per version against the threshold; a
    dotted line where the served model changed."""
    days = sorted(view["day"].unique())
    slot = {day: n for n, day in enumerate(days)}
    groups = list(dict.fromkeys(zip(view["model_version"], view["role"], strict=True)))
    versions = list(dict.fromkeys(view["model_version"]))
    palette = [f"C{n % 10}" for n in range(len(versions))]
    colour = dict(zip(versions, palette, strict=True))
    style = {SERVED_ROLE: "-", "shadow": ":", "canary": "--"}

    figure = Figure(figsize=(max(7.0, 1.0 + 0.55 * len(days)), 8.4), dpi=100)
    accuracy, volume, drift = figure.subplots(3, 1, sharex=True, height_ratios=[3, 2, 2])
    bottoms = np.zeros(len(days))
    for version, role in groups:
        rows = view[(view["model_version"] == version) & (view["role"] == role)]
        x = [slot[day] for day in rows["day"]]
        label = f"{short_version(version)} ({role})"
        accuracy.plot(
            x, rows[LIVE_ACCURACY], style.get(role, "-"), marker="o", color=colour[version],
            label=label,
        )  # fmt: skip
        if role == SERVED_ROLE and rows[TEST_ACCURACY].notna().any():
            accuracy.hlines(
                rows[TEST_ACCURACY].dropna().iloc[0], min(x) - 0.4, max(x) + 0.4,
                colors=colour[version], linestyles="dashed", linewidth=1,
            )  # fmt: skip
        heights = np.zeros(len(days))
        for day, count in zip(rows["day"], rows[REQUESTS], strict=True):
            heights[slot[day]] = count
        volume.bar(range(len(days)), heights, bottom=bottoms, color=colour[version], label=label,
                   alpha=1.0 if role == SERVED_ROLE else 0.5)  # fmt: skip
        bottoms += heights
        if role == SERVED_ROLE:
            drift.plot(x, rows[MAX_FEATURE_PSI], marker="s", color=colour[version], label=label)
    if view.loc[view["role"] == SERVED_ROLE, MAX_FEATURE_PSI].isna().all():
        drift.set_ylim(0, psi_threshold * 2)
        drift.text(
            (len(days) - 1) / 2, psi_threshold * 1.5, "drift not measured (see drift_skipped)",
            ha="center", color="dimgray", fontsize=9,
        )  # fmt: skip
    drift.axhline(psi_threshold, color="crimson", linestyle="--", linewidth=1)
    drift.text(-0.4, psi_threshold, f" PSI threshold {psi_threshold}", color="crimson",
               va="bottom", fontsize=8)  # fmt: skip
    for change in changes:
        for axes in (accuracy, volume, drift):
            axes.axvline(slot[change.day] - 0.5, color="dimgray", linestyle=":", linewidth=1.2)
        new = [short_version(v) for v in change.now if v not in change.before]
        accuracy.annotate(
            "model change -> " + ", ".join(new), (slot[change.day] - 0.45, 1.0),
            xycoords=("data", "axes fraction"), va="top", fontsize=8, color="dimgray",
        )  # fmt: skip
    accuracy.set_ylabel("live accuracy\n(test accuracy dashed)")
    accuracy.legend(fontsize=8, loc="lower left")
    accuracy.grid(alpha=0.3)
    volume.set_ylabel("requests")
    volume.grid(alpha=0.3, axis="y")
    drift.set_ylabel("max feature PSI\n(served model)")
    drift.grid(alpha=0.3)
    drift.set_xticks(range(len(days)), [f"{day:%b %d}" for day in days], rotation=45)
    drift.set_xlim(-0.6, len(days) - 0.4)
    figure.suptitle(title, fontsize=11)
    return png_bytes(figure)


def html_report(title: str, chart: bytes, rows: list[tuple[str, ...]], notes: list[str]) -> str:
    """A standalone page: the chart (embedded) and the table of the monitored days."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in VIEW_HEADERS)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in rows
    )
    image = base64.b64encode(chart).decode("ascii")
    items = "".join(f"<li>{html.escape(note)}</li>" for note in notes)
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>"
        "body{font-family:sans-serif;margin:24px;color:#222}"
        "table{border-collapse:collapse;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
        "td:nth-child(2),td:nth-child(3),td:nth-child(10){text-align:left}"
        "</style></head><body>"
        f"<h2>{html.escape(title)}</h2><ul>{items}</ul>"
        f"<img alt='monitoring chart' src='data:image/png;base64,{image}'>"
        f"<table><tr>{head}</tr>{body}</table></body></html>"
    )
