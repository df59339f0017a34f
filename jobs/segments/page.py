"""The page segment owners open: one static HTML file per run (no server, no script), with a plot.

For each segment: its label terms as a name, status against the previous run (kept, merged, split,
new) with the ids involved, the date its id first appeared, size and share with the sizes of the
dated runs present, stability, top engaged items and the terms that set it apart; then the run's
transitions (users moving from each previous segment to each of tonight's) and the retired ids.
Built from the rows the segment stage wrote, collected on the driver (one row per segment, one per
transition cell, one per segment and dated run).
"""

from __future__ import annotations

import html
import os
from collections.abc import Iterable

import pandas as pd

PAGE = "index.html"
TREND_PLOT = "segment_sizes.png"


def segment_name(row: dict, terms: int = 3) -> str:
    """A short name a person can say: the first label terms of the summary ``row``, else its id."""
    words = list(row.get("label_terms") or [])[:terms]
    return ", ".join(words) if words else f"segment {row['segment_id']}"


def status_text(row: dict) -> str:
    """The summary ``row``'s status in words: kept / merged (from ids) / split (from id) / new."""
    status, ids = row.get("status") or "new", list(row.get("status_ids") or [])
    joined = ", ".join(str(i) for i in ids)
    if status == "merged":
        return f"kept, merged with retired {joined}"
    if status == "split":
        return f"new, split from {joined}"
    return status


def sizes_by_run(history: pd.DataFrame) -> dict[int, list[tuple[str, int]]]:
    """Segment id -> [(run date, size)] in date order, from ``history`` (segment_id, run_date, size)."""
    trend: dict[int, list[tuple[str, int]]] = {}
    for row in history.sort_values(["run_date", "segment_id"]).itertuples(index=False):
        trend.setdefault(int(row.segment_id), []).append((str(row.run_date), int(row.size)))
    return trend


def plot_sizes(history: pd.DataFrame, path: str) -> bool:
    """Sizes of each segment id over the dated runs in ``history``, saved as a PNG at ``path``; False
    (nothing written) when there are fewer than two runs to draw."""
    if history.empty or history["run_date"].nunique() < 2:
        return False
    import matplotlib

    matplotlib.use("Agg")  # headless: schedulers and CI have no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    for segment_id, points in sorted(sizes_by_run(history).items()):
        ax.plot([d for d, _ in points], [n for _, n in points], marker="o", label=f"segment {segment_id}")
    ax.set(xlabel="run date", ylabel="users", title="Segment sizes by run")
    ax.legend(fontsize=7, ncol=2)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def render(
    run_label: str,
    summary: list[dict],
    transitions: list[dict],
    retired: Iterable[dict],
    history: pd.DataFrame,
    has_plot: bool,
) -> str:
    """The page's HTML for the run ``run_label``: ``summary`` (segment_summary rows; those of ids retired
    tonight are listed with ``retired`` instead of as segments), ``transitions``
    (segment_transitions rows), ``retired`` (the stage's retired ids with where their members went),
    ``history`` (segment_id, run_date, size of the dated runs present) and whether the trend plot
    (``has_plot``) sits beside the page."""
    e = html.escape
    summary = [row for row in summary if row.get("status") != "retired"]  # listed apart, below
    trend = sizes_by_run(history)
    total = sum(int(row["size"]) for row in summary) or 1
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Segments, {e(run_label)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse}"
        "td,th{border:1px solid #bbb;padding:.3em .6em;text-align:left}.seg{margin:1.2em 0;padding:.6em 1em;"
        "border:1px solid #ccc;border-radius:6px}.muted{color:#555}</style></head><body>",
        f"<h1>Segments, {e(run_label)}</h1>",
        f"<p>{len(summary)} segments, {total} users.</p>",
    ]
    steady = [r for r in summary if r.get("stability_class") in ("natural", "reproducible")]
    if len(steady) < len(summary):
        held = sum(int(r["size"]) for r in steady) / total
        parts.append(
            f"<p><strong>{len(steady)} of {len(summary)} segments are reproducible, holding {held:.0%} of "
            "users.</strong> The others are constructed: one way of cutting these users that another sample "
            "does not give back, so their ids mean little from one run to the next.</p>"
        )
    if has_plot:
        parts.append(f"<img src='{TREND_PLOT}' alt='Segment sizes by run' width='700'>")
    for row in sorted(summary, key=lambda r: r["segment_id"]):
        sid = int(row["segment_id"])
        sizes = " → ".join(f"{n} ({d})" for d, n in trend.get(sid, []))
        stability = "" if row.get("stability") is None else f"{row['stability']:.2f} ({row['stability_class']})"
        items = "".join(
            f"<li>{e(str(i['item']))} <span class='muted'>({i['lift']:.1f}x, {i['users']} users)</span></li>"
            for i in (row.get("engaged_items") or [])
        )
        jaccard = row.get("matched_jaccard")
        parts += [
            f"<div class='seg' id='segment-{sid}'><h2>Segment {sid}: {e(segment_name(row))}</h2>",
            "<table>",
            f"<tr><th>status</th><td>{e(status_text(row))}</td></tr>",
            f"<tr><th>first seen</th><td>{e(str(row.get('first_seen') or 'before ids were recorded'))}</td></tr>",
            f"<tr><th>size</th><td>{int(row['size'])} users ({row['share']:.1%})</td></tr>",
        ]
        if sizes:
            parts.append(f"<tr><th>sizes by run</th><td>{e(sizes)}</td></tr>")
        if jaccard is not None:
            parts.append(f"<tr><th>members kept since the last run</th><td>Jaccard {jaccard:.2f}</td></tr>")
        if stability:
            parts.append(f"<tr><th>stability</th><td>{e(stability)}</td></tr>")
        tags = ", ".join(row.get("label_terms") or []) or "none shared by enough users"
        parts.append(f"<tr><th>interest tags</th><td>{e(tags)}</td></tr>")
        parts.append("</table>")
        if items:
            parts.append(f"<h3>Top items</h3><ol>{items}</ol>")
        parts.append("</div>")
    parts.append("<h2>Transitions since the last run</h2>")
    if transitions:
        parts.append("<table><tr><th>from</th><th>to</th><th>users</th></tr>")
        for t in sorted(transitions, key=lambda r: (r["pooled"], _key(r["from_segment_id"]), _key(r["to_segment_id"]))):
            if t["pooled"]:
                source, target = "cells of few users, pooled", ""
            else:
                source = "new users" if t["from_segment_id"] is None else f"segment {t['from_segment_id']}"
                target = "gone" if t["to_segment_id"] is None else f"segment {t['to_segment_id']}"
            parts.append(f"<tr><td>{e(source)}</td><td>{e(target)}</td><td>{int(t['users'])}</td></tr>")
        parts.append("</table>")
    retired_rows = list(retired)
    if retired_rows:
        listed = ", ".join(
            f"{r['segment_id']}" + ("" if r.get("went_to") is None else f" (most members to {r['went_to']})")
            for r in retired_rows
        )
        parts.append(f"<p>Retired ids, never used again: {e(listed)}.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _key(value: int | None) -> int:
    return -1 if value is None else int(value)


def write_page(directory: str, run_label: str, summary, transitions, retired, history: pd.DataFrame) -> str:
    """Write the page and its plot into the local ``directory``; returns the page's path. The
    arguments are :func:`render`'s (``run_label``, ``summary``, ``transitions``, ``retired``,
    ``history``)."""
    has_plot = plot_sizes(history, os.path.join(directory, TREND_PLOT))
    page = os.path.join(directory, PAGE)
    with open(page, "w", encoding="utf-8") as fh:
        fh.write(render(run_label, summary, transitions, retired, history, has_plot))
    return page
