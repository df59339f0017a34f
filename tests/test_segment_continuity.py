"""Stable segment ids: matching a refit to the previous run, statuses, transitions, the ids file."""

import json

import numpy as np
import pytest

from segrec.jobs.errors import InputError
from segrec.jobs.segments.continuity import (
    SegmentIds,
    carried,
    centre_shift,
    in_stable_ids,
    match,
    transitions,
)


def test_a_refit_keeps_the_ids_of_segments_whose_members_stay_whatever_order_mllib_found_them():
    # previous ids 4 and 7 (40 and 30 users); tonight centre 0 is mostly old 7, centre 1 old 4
    pairs = [(4, 1, 36), (4, 0, 4), (7, 0, 28), (7, 1, 2), (None, 0, 5), (None, 1, 3)]
    result = match(pairs, 2, SegmentIds([4, 7], 9, {4: "2026-11-01", 7: "2026-11-20"}), 0.5, "2026-12-02")
    assert result.ids.ids == [7, 4]
    assert result.ids.next_id == 9  # nothing new issued
    assert result.status == {7: "kept", 4: "kept"}
    assert result.ids.first_seen == {7: "2026-11-20", 4: "2026-11-01"}
    # old 7: 30 users, centre 0: 4 + 28 + 5 = 37, shared 28 -> 28 / 39
    assert result.matched_jaccard[7] == round(28 / 39, 4)
    assert result.previous_size == {7: 30, 4: 40}
    assert result.agreement == round((36 + 28) / 70, 6)


def test_a_weak_match_gets_a_new_id_never_issued_before_and_the_old_id_retires():
    # old 0 splits evenly in two; old 1 stays; the previous model had issued ids up to 5 (2..4 retired)
    pairs = [(0, 0, 10), (0, 2, 10), (1, 1, 20)]
    result = match(pairs, 3, SegmentIds([0, 1], 5), 0.5, "2026-12-02")
    assert result.ids.ids[1] == 1 and result.status[1] == "kept"
    # old 0 (20 users) vs centre 0 or 2 (10 users each): Jaccard 0.5, kept by exactly one of them
    kept_centre = 0 if result.ids.ids[0] == 0 else 2
    other = 2 - kept_centre
    assert result.ids.ids[other] == 5 and result.ids.next_id == 6  # 2..4 are never reused
    assert result.status[5] == "split" and result.status_ids[5] == [0]
    assert result.ids.first_seen[5] == "2026-12-02"
    assert result.retired == []


def test_statuses_new_merged_and_retired():
    # old 0 and old 1 both end up in centre 0; centre 1 is a group of new users
    pairs = [(0, 0, 30), (1, 0, 8), (None, 1, 12), (1, None, 2)]
    result = match(pairs, 2, None, 0.5, "2026-12-02")
    assert result.ids.ids == [0, 2]  # without an ids file: next id above every previous id
    assert result.status == {0: "merged", 2: "new"} and result.status_ids[0] == [1]
    assert result.retired == [{"segment_id": 1, "went_to": 0, "previous_size": 10, "first_seen": None}]


def test_the_first_run_issues_ids_from_zero():
    result = match([(None, 0, 5), (None, 1, 7)], 2, None, 0.5, "2026-12-01")
    assert result.ids == SegmentIds([0, 1], 2, {0: "2026-12-01", 1: "2026-12-01"}, fitted_on="2026-12-01")
    assert result.agreement is None and set(result.status.values()) == {"new"}


def test_a_saved_model_keeps_its_ids_and_measures_each_id_against_itself():
    ids = SegmentIds([3, 8], 9)
    pairs = [(3, 0, 9), (8, 0, 1), (8, 1, 10), (None, 1, 2)]
    result = carried(pairs, ids)
    assert result.status == {3: "kept", 8: "kept"}
    assert result.matched_jaccard == {3: 0.9, 8: round(10 / 13, 4)}  # 11 before, 12 tonight, 10 shared
    assert result.agreement == 0.95
    assert in_stable_ids(pairs, ids) == [(3, 3, 9), (8, 3, 1), (8, 8, 10), (None, 8, 2)]


def test_small_transition_cells_are_pooled_and_the_users_still_add_up():
    pairs = [(0, 0, 30), (0, 1, 2), (None, 1, 3), (1, None, 1), (1, 1, 12)]
    rows = transitions(pairs, 5)
    assert rows == [(0, 0, 30, False), (1, 1, 12, False), (None, None, 6, True)]
    assert sum(r[2] for r in rows) == sum(p[2] for p in pairs)


def test_the_ids_file_round_trips_and_a_damaged_one_names_the_field():
    ids = SegmentIds([2, 0, 5], 6, {2: "2026-12-01", 0: None, 5: "2026-12-03"}, "2026-12-03")
    assert SegmentIds.from_json(ids.to_json(), "x/segment_ids.json", 3) == ids
    broken = json.loads(ids.to_json())
    broken["next_id"] = 5
    with pytest.raises(InputError, match=r"x/segment_ids.json: field 'next_id'"):
        SegmentIds.from_json(json.dumps(broken).encode(), "x/segment_ids.json", 3)
    with pytest.raises(InputError, match=r"field 'ids' must list 4 ids"):
        SegmentIds.from_json(ids.to_json(), "x/segment_ids.json", 4)
    with pytest.raises(InputError, match="not a JSON document"):
        SegmentIds.from_json(b"{", "x/segment_ids.json", 3)
    assert SegmentIds.numbered(3) == SegmentIds([0, 1, 2], 3, {0: None, 1: None, 2: None})


def test_centre_shift_is_measured_for_ids_both_runs_have():
    before = np.array([[1.0, 0.0], [0.0, 1.0]])
    now = np.array([[0.0, 2.0], [1.0, 1.0]])
    shifts = centre_shift(before, now, [4, 7], [7, 9])
    assert shifts == {7: 0.0}


def test_the_run_summary_says_what_moved_and_where_the_page_is():
    from segrec.jobs.cli import continuity_line

    figures = {
        "previous_run": "2026-12-01",
        "agreement_with_previous": 0.94,
        "new_users": 6,
        "departed_users": 2,
        "segments_vs_previous": [
            {"segment_id": 0, "status": "merged", "status_ids": [1]},
            {"segment_id": 2, "status": "kept", "status_ids": []},
            {"segment_id": 5, "status": "split", "status_ids": [2]},
        ],
        "retired_segments": [{"segment_id": 1, "went_to": 0}],
        "report": "out/segment_report/index.html",
    }
    assert continuity_line(figures) == (
        "  since 2026-12-01: agreement 0.94, 6 new and 2 departed users; kept 2; merged 0 (with 1); "
        "split 5 (from 2); retired 1\n  segment page: out/segment_report/index.html"
    )
    assert continuity_line({"previous_run": None}) is None
