import numpy as np

from segrec.udfs.segments import AssignSettings, assign


def test_nearest_centroid_distance_and_memberships():
    centroids = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 2]], dtype=np.float32)  # not unit: normalised inside
    vectors = np.array([[1, 0, 0], [0.6, 0.8, 0], [0, 0, 1]], dtype=np.float32)
    segment, distance, top_ids, top_weights = assign(vectors, centroids, AssignSettings(temperature=0.1, memberships=3))
    assert segment.tolist() == [0, 1, 2]
    np.testing.assert_allclose(distance, [0.0, 0.2, 0.0], atol=1e-6)
    assert top_ids[1].tolist() == [1, 0, 2]
    # softmax over cosine / 0.1 for [0.6, 0.8, 0]
    logits = np.array([6.0, 8.0, 0.0])
    expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    np.testing.assert_allclose(top_weights[1], expected[[1, 0, 2]], rtol=1e-5)
    np.testing.assert_allclose(top_weights.sum(axis=1), 1.0, atol=1e-6)  # k = 3 = top: all the mass


def test_ties_go_to_the_lowest_segment_id():
    centroids = np.array([[1, 0], [0, 1]], dtype=np.float32)
    vector = np.array([[2**-0.5, 2**-0.5]], dtype=np.float32)
    segment, _, top_ids, top_weights = assign(vector, centroids, AssignSettings(temperature=0.05, memberships=3))
    assert segment.tolist() == [0] and top_ids[0].tolist() == [0, 1]
    np.testing.assert_allclose(top_weights[0], [0.5, 0.5], atol=1e-6)


def test_top_is_capped_by_the_number_of_segments():
    segment, _, top_ids, _ = assign(np.eye(2, dtype=np.float32), np.eye(2, dtype=np.float32), AssignSettings(0.1, 3))
    assert top_ids.shape == (2, 2)


def test_the_number_of_memberships_kept_is_the_setting():
    vectors = np.eye(4, dtype=np.float32)
    _, _, top_ids, top_weights = assign(vectors, vectors, AssignSettings(temperature=0.1, memberships=1))
    assert top_ids.tolist() == [[0], [1], [2], [3]] and top_weights.shape == (4, 1)
    _, _, top_ids, _ = assign(vectors, vectors, AssignSettings(temperature=0.1, memberships=4))
    assert top_ids.shape == (4, 4) and top_ids[:, 0].tolist() == [0, 1, 2, 3]
