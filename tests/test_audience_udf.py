"""Audience scoring on executors: per request the best users over every batch, ties to the lower id,
owners and users below a request's threshold never kept."""

import numpy as np
import pandas as pd

from segrec.udfs.audiences import RequestTargets, best_users


def batch(ids, vectors, owned=None):
    return pd.DataFrame(
        {
            "user_id": ids,
            "vector": [np.asarray(v, dtype=np.float32) for v in vectors],
            "owned": owned or [None] * len(ids),
        }
    )


def targets(vectors, depth, min_score=None):
    n = len(vectors)
    return RequestTargets(
        vectors=np.asarray(vectors, dtype=np.float32),
        depth=np.asarray(depth, dtype=np.int64),
        min_score=np.asarray(min_score if min_score is not None else [np.nan] * n, dtype=np.float64),
    )


def test_the_best_users_over_several_batches_with_ties_to_the_lower_id():
    first = batch(["u3", "u1"], [[1, 0], [0.6, 0.8]])
    second = batch(["u2", "u0"], [[1, 0], [0, 1]])  # u2 ties u3 on request 0 and comes first by id
    (ids0, scores0), (ids1, scores1) = best_users([first, second], targets([[1, 0], [0, 1]], [2, 3]))
    assert ids0.tolist() == ["u2", "u3"] and np.allclose(scores0, [1.0, 1.0])
    assert ids1.tolist() == ["u0", "u1", "u2"]  # u2 and u3 tie at 0: the lower id
    assert np.allclose(scores1, [1.0, 0.8, 0.0])


def test_owners_are_never_kept_and_a_threshold_keeps_everyone_above_it():
    users = batch(["a", "b", "c"], [[1, 0], [0.8, 0.6], [0, 1]], owned=[[0], None, None])
    (ids0, _), (ids1, scores1) = best_users([users], targets([[1, 0], [1, 0]], [5, -1], [np.nan, 0.5]))
    assert ids0.tolist() == ["b", "c"]  # a owns request 0; c (cosine 0) is still among the best 5
    assert ids1.tolist() == ["a", "b"] and np.allclose(scores1, [1.0, 0.8])  # c is below 0.5


def test_a_user_without_a_vector_is_never_kept_and_empty_batches_are_skipped():
    users = pd.DataFrame({"user_id": ["a", "b"], "vector": [None, np.array([1, 0], np.float32)], "owned": [None, None]})
    empty = users.iloc[:0]
    [(ids, scores)] = best_users([empty, users], targets([[1, 0]], [5]))
    assert ids.tolist() == ["b"] and scores.tolist() == [1.0]
