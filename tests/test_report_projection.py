"""The report's 2D projection brings a bounded sample of users to the driver, however many there are."""

import numpy as np

from segrec.jobs.evaluation.report import projection


def test_projection_points_do_not_grow_with_the_user_count(spark):
    rng = np.random.default_rng(0)
    sizes = {}
    for n_users in (200, 2000):
        vectors = rng.standard_normal((n_users, 8)).astype(np.float32)
        profiles = spark.createDataFrame(
            [(f"u{i}", v.tolist()) for i, v in enumerate(vectors)], "user_id string, vector array<float>"
        )
        segments = spark.createDataFrame([(f"u{i}", i % 3) for i in range(n_users)], "user_id string, segment_id int")
        points = projection(profiles, segments, sample=60, seed=1)
        assert 30 <= len(points) <= 60 and set(points["segment_id"]) <= {0, 1, 2}
        assert np.isfinite(points[["x", "y"]].to_numpy(float)).all()
        sizes[n_users] = len(points)
    assert sizes[2000] <= 60  # ten times the users, the same bound on what reaches the driver
