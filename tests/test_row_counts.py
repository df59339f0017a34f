"""Several counts from one Spark job: what the stages reconcile their inputs and outputs with."""

from segrec.jobs.io.counts import row_counts


def test_each_frame_is_counted_under_its_own_name(spark):
    items = spark.createDataFrame([("a", "x"), ("b", None), ("b", None)], "item_id string, text string")
    vectors = spark.createDataFrame([(1, [0.5]), (2, [0.1]), (3, [0.2]), (4, [0.3])], "id int, vector array<float>")
    counts = row_counts(
        {
            "items": items,
            "items_without_text": items.where("text is null"),  # duplicate rows count twice
            "vectors": vectors,
            "nothing": vectors.where("id > 10"),  # an empty frame is 0, not missing
        }
    )
    assert counts == {"items": 3, "items_without_text": 2, "vectors": 4, "nothing": 0}


def test_no_frames_give_no_counts(spark):
    assert row_counts({}) == {}
