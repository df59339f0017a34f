"""How k is chosen from the stability curve, and the settings that cannot be met."""

import pytest

from segrec.jobs import cli
from segrec.jobs.config import Segment
from segrec.jobs.errors import InputError
from segrec.jobs.segments.stability import check_k_range, choose_k


def point(stability, silhouette=0.2, min_stability=0.75, sizes=None):
    sizes = sizes or [1] * len(stability)
    known = [(j, n) for j, n in zip(stability, sizes, strict=True) if j is not None]
    return {
        "stability": stability,
        "reproducible": sum(j >= min_stability for j, _ in known),
        "reproducible_share": sum(n for j, n in known if j >= min_stability) / sum(sizes),
        "mean_stability": sum(j * n for j, n in known) / sum(n for _, n in known),
        "silhouette": silhouette,
    }


def test_the_most_segments_that_all_come_back():
    curve = {
        4: point([0.9, 0.95, 0.8, 0.9], silhouette=0.4),
        5: point([0.9, 0.6, 0.8, 0.9, 0.9]),
        6: point([0.8, 0.78, 0.76, 0.9, 0.95, 0.85], silhouette=0.1),
        7: point([0.9] * 6 + [0.3]),
    }
    assert choose_k(curve) == 6  # not 4 (best silhouette), not 7 (one segment dissolves)


def test_without_a_wholly_reproducible_k_the_reproducible_segments_holding_most_users_win():
    curve = {
        4: point([0.9, 0.5, 0.6, 0.7], sizes=[60, 20, 10, 10]),
        5: point([0.9, 0.8, 0.6, 0.7, 0.5], sizes=[25, 15, 20, 20, 20]),
        6: point([0.9, 0.8, 0.3, 0.2, 0.5, 0.4], sizes=[20, 20, 15, 15, 15, 15]),
    }
    assert choose_k(curve) == 4  # one reproducible segment of 60% beats two of 40%
    curve[4] = point([0.9, 0.5, 0.6, 0.7], sizes=[25, 25, 25, 25])
    assert choose_k(curve) == 5  # 40% at k=5 and k=6: the higher mean stability breaks the tie
    tie = {4: point([0.9, 0.5, 0.6, 0.7], silhouette=0.1), 5: point([0.9, 0.5, 0.6, 0.7, 0.65], silhouette=0.3)}
    tie[5]["mean_stability"] = tie[4]["mean_stability"]
    tie[5]["reproducible_share"] = tie[4]["reproducible_share"]
    assert choose_k(tie) == 5  # equal share, count and mean stability: the silhouette breaks the tie


def test_a_segment_absent_from_the_sample_is_not_reproducible():
    assert choose_k({4: point([0.9, 0.9, 0.9, None]), 5: point([0.9, 0.9, 0.9, 0.7, 0.6])}) == 4


def test_a_k_range_beyond_the_users_names_the_key():
    with pytest.raises(InputError, match=r"segment.k_min=4 needs at least 5 users; 4 have vectors"):
        check_k_range(Segment(), 4)
    assert check_k_range(Segment(), 8) == (4, 7)  # k_max trimmed to users - 1
    with pytest.raises(InputError, match="at least 3 users"):
        check_k_range(Segment(k_min=2), 2)


@pytest.mark.parametrize(
    "key, value",
    [("segment.bootstrap", "0"), ("segment.min_stability", "0"), ("segment.k_min", "1"), ("segment.algorithm", "ward")],
)
def test_bad_segment_settings_stop_with_exit_2_naming_the_key(key, value, capsys):
    assert cli.main(["validate", "--set", f"{key}={value}"]) == 2
    assert key.split(".")[1] in capsys.readouterr().err
