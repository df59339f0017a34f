"""The segment owners' page: what it says, and what a person sees when a real browser opens it."""

import shutil
import subprocess
from datetime import date

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from segrec.jobs.segments.page import PAGE, TREND_PLOT, render, segment_name, status_text, write_page

SUMMARY = [
    {
        "segment_id": 0,
        "size": 40,
        "share": 0.4,
        "stability": 0.93,
        "stability_class": "natural",
        "label_terms": ["hiking", "trail", "tent", "boots"],
        "engaged_items": [{"item": "i1: Trail map", "users": 12, "lift": 2.5}],
        "status": "merged",
        "status_ids": [1],
        "matched_jaccard": 0.81,
        "first_seen": date(2026, 12, 1),
    },
    {
        "segment_id": 4,
        "size": 60,
        "share": 0.6,
        "stability": 0.62,
        "stability_class": "constructed",
        "label_terms": [],
        "engaged_items": [],
        "status": "split",
        "status_ids": [2],
        "matched_jaccard": None,
        "first_seen": date(2026, 12, 3),
    },
]
TRANSITIONS = [
    {"from_segment_id": 0, "to_segment_id": 0, "users": 33, "pooled": False},
    {"from_segment_id": None, "to_segment_id": 4, "users": 9, "pooled": False},
    {"from_segment_id": 2, "to_segment_id": None, "users": 5, "pooled": False},
    {"from_segment_id": None, "to_segment_id": None, "users": 4, "pooled": True},
]
HISTORY = pd.DataFrame(
    {
        "segment_id": [0, 1, 2, 0, 2, 0, 4],
        "run_date": ["2026-12-01", "2026-12-01", "2026-12-01", "2026-12-02", "2026-12-02", "2026-12-03", "2026-12-03"],
        "size": [30, 8, 50, 35, 52, 40, 60],
    }
)


def test_names_and_statuses_read_as_words():
    assert segment_name(SUMMARY[0]) == "hiking, trail, tent" and segment_name(SUMMARY[1]) == "segment 4"
    assert status_text(SUMMARY[0]) == "kept, merged with retired 1"
    assert status_text(SUMMARY[1]) == "new, split from 2" and status_text({"status": "kept"}) == "kept"


def test_the_page_holds_each_segment_its_trend_and_the_transitions():
    page = render("run 2026-12-03", SUMMARY, TRANSITIONS, [{"segment_id": 1, "went_to": 0}], HISTORY, True)
    assert "Segment 0: hiking, trail, tent" in page and "Segment 4: segment 4" in page
    assert "30 (2026-12-01) → 35 (2026-12-02) → 40 (2026-12-03)" in page
    assert "i1: Trail map" in page and "2.5x, 12 users" in page
    assert "<td>new users</td><td>segment 4</td><td>9</td>" in page
    assert "<td>segment 2</td><td>gone</td><td>5</td>" in page
    assert "Retired ids, never used again: 1 (most members to 0)" in page
    assert f"src='{TREND_PLOT}'" in page
    assert "1 of 2 segments are reproducible, holding 40% of users" in page
    gone = {**SUMMARY[1], "segment_id": 1, "size": 0, "share": 0.0, "status": "retired", "status_ids": [0]}
    with_retired = render("x", [*SUMMARY, gone], [], [{"segment_id": 1, "went_to": 0}], HISTORY, False)
    assert "Segment 1:" not in with_retired and "2 segments, 100 users" in with_retired
    assert "are reproducible, holding" not in render("x", SUMMARY[:1], [], [], HISTORY, False)
    injected = [{**SUMMARY[1], "label_terms": ["<script>alert(1)</script>"]}]
    assert "<script>" not in render("x", injected, [], [], HISTORY, False)


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if found is None or shutil.which("pdftotext") is None:
        pytest.skip("no headless browser here (apt-get install chromium poppler-utils; .ci/run installs them)")
    return found


def browse(browser: str, page, *flags: str) -> None:
    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *flags, page.as_uri()],
        check=True,
        capture_output=True,
        timeout=120,
    )


def test_a_browser_shows_the_segments_the_transitions_and_the_plot(tmp_path):
    browser = chromium()
    page = tmp_path / PAGE
    write_page(str(tmp_path), "run 2026-12-03", SUMMARY, TRANSITIONS, [{"segment_id": 1, "went_to": 0}], HISTORY)
    assert (tmp_path / TREND_PLOT).is_file()

    browse(browser, page, f"--print-to-pdf={tmp_path / 'page.pdf'}", "--no-pdf-header-footer")
    seen = subprocess.run(
        ["pdftotext", "-layout", str(tmp_path / "page.pdf"), "-"], capture_output=True, text=True, check=True
    ).stdout
    seen = " ".join(seen.split())
    for text in (
        "Segments, run 2026-12-03",
        "Segment 0: hiking, trail, tent",
        "kept, merged with retired 1",
        "40 users (40.0%)",
        "new, split from 2",
        "new users segment 4 9",
        "cells of few users, pooled 4",
    ):
        assert text in seen, text

    browse(browser, page, f"--screenshot={tmp_path / 'page.png'}", "--window-size=1000,900")
    shot = np.asarray(Image.open(tmp_path / "page.png").convert("RGB")).astype(int)
    # the lines of segments 0 and 2 (matplotlib's C0 blue, C2 green) were drawn where a person looks
    blue = (np.abs(shot - [31, 119, 180]).sum(axis=2) < 40).sum()
    green = (np.abs(shot - [44, 160, 44]).sum(axis=2) < 40).sum()
    assert blue > 200 and green > 200, (blue, green)
