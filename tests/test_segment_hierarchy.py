"""segment.algorithm bisecting: each segment sits under one broad segment."""

import numpy as np
import pytest

from segrec.jobs.config import Segment
from segrec.jobs.segments.fitting import features
from segrec.jobs.segments.segmenters import BisectingSegmenter, KMeansSegmenter, segmenter_for
from segrec.udfs.segments import normalise_rows


@pytest.fixture(scope="module")
def two_families(spark):
    """Four groups of 40 users: groups 0 and 1 near one direction, 2 and 3 near the opposite one."""
    rng = np.random.default_rng(1)
    base = normalise_rows(rng.normal(size=(1, 16)))[0]
    offsets = normalise_rows(rng.normal(size=(4, 16)))
    centres = normalise_rows(
        np.stack([base + 0.5 * offsets[0], base + 0.5 * offsets[1], -base + 0.5 * offsets[2], -base + 0.5 * offsets[3]])
    )
    vectors = normalise_rows(np.repeat(centres, 40, axis=0) + 0.05 * rng.normal(size=(160, 16)))
    rows = [(f"u{i:03d}", [float(x) for x in v]) for i, v in enumerate(vectors)]
    return spark.createDataFrame(rows, "user_id string, vector array<float>"), np.repeat(np.arange(4), 40)


def test_every_segment_has_the_broad_segment_its_users_descend_through(two_families):
    users, truth = two_families
    settings = Segment(algorithm="bisecting", k=4, parents=2)
    feats = features(users)
    segmenter = segmenter_for(settings)
    assert isinstance(segmenter, BisectingSegmenter)
    model = segmenter.fit(feats, 4)
    segments = segmenter.assign(users, segmenter.centres(model))
    parents, broad = segmenter.parents(feats, segments, 4)
    parent = {r.segment_id: r.parent_id for r in parents.collect()}
    assert sorted(parent) == [0, 1, 2, 3] and sorted(set(parent.values())) == [0, 1] and broad.shape == (2, 16)
    placed = {r.user_id: r.segment_id for r in segments.collect()}
    family = {f"u{i:03d}": truth[i] // 2 for i in range(160)}
    # the planted families split at the top: segments of one family share a parent, the other family's differ
    by_family = {}
    for user, segment in placed.items():
        by_family.setdefault(family[user], set()).add(parent[segment])
    assert by_family[0] != by_family[1] and all(len(p) == 1 for p in by_family.values())


def test_flat_segments_and_too_few_segments_have_no_parents(two_families):
    users, _ = two_families
    feats = features(users)
    assert isinstance(segmenter_for(Segment(k=4)), KMeansSegmenter)
    assert segmenter_for(Segment(k=4)).parents(feats, None, 4) is None
    assert segmenter_for(Segment(algorithm="bisecting", k=4, parents=4)).parents(feats, None, 4) is None


def test_a_user_keeps_the_configured_number_of_soft_memberships(two_families):
    users, _ = two_families
    segmenter = segmenter_for(Segment(k=4, memberships=2))
    centres = segmenter.centres(segmenter.fit(features(users), 4))
    rows = segmenter.assign(users, centres).collect()
    assert {len(r.top_segments) for r in rows} == {2} and all(r.top_segments[0] == r.segment_id for r in rows)
    assert all(r.top_weights[0] >= r.top_weights[1] for r in rows)
