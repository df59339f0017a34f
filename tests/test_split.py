from pyspark.sql import functions as F

from segrec.jobs.evaluation.split import holdout_split


def frame(spark, rows):
    return spark.createDataFrame(rows, "user_id string, item_id string, rating double, timestamp timestamp")


def ts(day):
    import datetime

    return datetime.datetime(2026, 1, day)


def test_last_n_by_time_are_held_out_and_nothing_leaks(spark):
    rows = [("u1", f"i{d}", 4.0, ts(d)) for d in range(1, 6)]  # 5 events
    rows += [("u2", "a", 3.0, ts(1)), ("u2", "b", 3.0, ts(2))]  # 2 events: hold out 1
    rows += [("u3", "only", 5.0, ts(3))]  # 1 event: cold, nothing held out
    train, held = holdout_split(frame(spark, rows), n=2)
    held_pairs = {(r.user_id, r.item_id) for r in held.collect()}
    train_pairs = {(r.user_id, r.item_id) for r in train.collect()}
    assert held_pairs == {("u1", "i5"), ("u1", "i4"), ("u2", "b")}
    assert not held_pairs & train_pairs
    assert len(held_pairs) + len(train_pairs) == len(rows)
    assert ("u3", "only") in train_pairs


def test_without_timestamps_the_choice_is_seeded_and_stable(spark):
    rows = [(f"u{u}", f"i{i}", 1.0, None) for u in range(20) for i in range(6)]
    df = frame(spark, rows)
    first = {(r.user_id, r.item_id) for r in holdout_split(df, n=2, seed=1)[1].collect()}
    again = {(r.user_id, r.item_id) for r in holdout_split(df.repartition(7), n=2, seed=1)[1].collect()}
    other = {(r.user_id, r.item_id) for r in holdout_split(df, n=2, seed=2)[1].collect()}
    assert first == again and first != other
    assert len(first) == 40 and {u for u, _ in first} == {f"u{u}" for u in range(20)}
    assert holdout_split(df, n=2)[1].agg(F.countDistinct("user_id")).first()[0] == 20
