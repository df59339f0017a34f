"""A CSV interactions file with hostile ids and string ratings, read through the real reader."""

import json

import pytest

from segrec.jobs.config import config_from_dict
from segrec.jobs.sources import inputs as sources

CSV = '''user,item,stars,review
"u,1",a,5,"Great, really ""great"""
"u
2",a,4.5,"multi
line review"
u3,a,five,<b>bad</b>
u4,a,,fine
u5,b,3,
'''


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text(CSV, encoding="utf-8")
    return config_from_dict(
        {
            "inputs": {
                "items": {"path": "-", "columns": {"id": "id"}},
                "interactions": {
                    "path": str(path),
                    "format": "csv",
                    "columns": {"user_id": "user", "item_id": "item", "rating": "stars", "text": ["review"]},
                },
            }
        }
    )


def test_csv_quotes_commas_newlines_and_string_ratings(spark, config):
    source = config.inputs.interactions
    raw = sources.read_source(spark, "interactions", source)
    sources.check_columns(raw, "interactions", source, sources.roles_for("interactions", source))
    known = spark.createDataFrame([("a",), ("b",)], "item_id string")
    annotated = sources.annotate_interactions(raw, source, known, None)
    counts = sources.count_reasons(annotated)
    assert counts.as_dict() == {
        "rows_in": 5,
        "kept": 3,
        "rejected": 2,
        "rejected_by_reason": {"invalid_rating": 2},
        "pii_redacted": {"url": 0, "email": 0, "id": 0, "iban": 0, "card": 0, "ip": 0, "phone": 0},
    }
    kept, _ = sources.split(annotated, "interactions")
    rows = {r.user_id: r for r in kept.collect()}
    assert set(rows) == {"u,1", "u\n2", "u5"}
    assert rows["u,1"].text == 'Great, really "great"' and rows["u,1"].rating == 5.0
    assert rows["u\n2"].text == "multi line review" and rows["u\n2"].rating == 4.5
    assert rows["u5"].text is None


def test_invalid_utf8_rows_are_rejected_not_mangled(spark, tmp_path):
    path = tmp_path / "items.csv"
    path.write_bytes(b"item_id,title\n1,ok title\n2,bad \xff\xfe bytes\n3,caf\xc3\xa9\n")
    config = config_from_dict(
        {
            "inputs": {
                "items": {"path": str(path), "format": "csv", "columns": {"id": "item_id", "text": ["title"]}},
                "interactions": {"path": "-", "columns": {"user_id": "u", "item_id": "i"}},
            }
        }
    )
    raw = sources.read_source(spark, "items", config.inputs.items)
    annotated = sources.annotate_items(raw, config.inputs.items)
    assert sources.count_reasons(annotated).as_dict()["rejected_by_reason"] == {"invalid_encoding": 1}
    kept, rejects = sources.split(annotated, "items")
    assert dict(kept.collect()) == {"1": "ok title", "3": "café"}
    assert rejects.collect()[0].id == "2"


@pytest.mark.parametrize("source", ["items", "interactions"])
def test_invalid_utf8_in_json_lines_is_invalid_encoding_not_malformed(spark, tmp_path, source):
    """The JSON parser cannot parse a line with bytes that are not UTF-8 (it becomes a corrupt record):
    the reject names the bytes, as the README promises for every source."""
    path = tmp_path / f"{source}.json"
    lines = [
        b'{"item_id": "1", "user_id": "u1", "title": "ok title"}',
        b'{"item_id": "2", "user_id": "u2", "title": "bad \xff\xfe bytes"}',
        b'{"item_id": "3", "user_id": "u3", "title": "caf\xc3\xa9"}',
        b'{"item_id": "4", "title": ',
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    columns = (
        {"id": "item_id", "text": ["title"]} if source == "items" else {"user_id": "user_id", "item_id": "item_id"}
    )
    config = config_from_dict(
        {
            "inputs": {
                "items": {
                    "path": str(path),
                    "format": "json",
                    "columns": columns if source == "items" else {"id": "i"},
                },
                "interactions": {
                    "path": str(path),
                    "format": "json",
                    "columns": columns if source != "items" else {"user_id": "u", "item_id": "i"},
                },
            }
        }
    )
    raw = sources.read_source(spark, source, getattr(config.inputs, source))
    if source == "items":
        annotated = sources.annotate_items(raw, config.inputs.items)
    else:
        known = spark.createDataFrame([(str(i),) for i in range(1, 5)], "item_id string")
        annotated = sources.annotate_interactions(raw, config.inputs.interactions, known, None)
    reasons = sources.count_reasons(annotated).as_dict()["rejected_by_reason"]
    # line 4 is cut off: malformed, as a parser error should be
    assert reasons["invalid_encoding"] == 1 and reasons["malformed_row"] == 1


def test_ragged_rows_and_an_unclosed_quote_become_malformed_row_rejects(spark, tmp_path):
    path = tmp_path / "items.csv"
    path.write_text(
        "item_id,title,category\n1,Boots,hiker\n2,Tent\n3,Stove,cook,extra\n"
        '4,"Unclosed quote,cook\n5,Knife,cook\n6,Pan,cook\n',
        encoding="utf-8",
    )
    config = config_from_dict(
        {
            "inputs": {
                "items": {
                    "path": str(path),
                    "format": "csv",
                    "columns": {"id": "item_id", "text": ["title", "category"]},
                },
                "interactions": {"path": "-", "columns": {"user_id": "u", "item_id": "i"}},
            }
        }
    )
    raw = sources.read_source(spark, "items", config.inputs.items)
    annotated = sources.annotate_items(raw, config.inputs.items)
    counts = sources.count_reasons(annotated)
    # the unclosed quote swallowed records 5 and 6: they are not dropped, they are in its reject's raw text
    assert counts.as_dict()["rejected_by_reason"] == {"malformed_row": 3} and counts.kept == 1
    kept, rejects = sources.split(annotated, "items")
    assert [r.item_id for r in kept.collect()] == ["1"]
    raws = sorted(json.loads(r.raw)["malformed_text"] for r in rejects.collect())
    assert raws[0] == "2,Tent" and raws[1] == "3,Stove,cook,extra"
    assert "5,Knife,cook" in raws[2] and "6,Pan,cook" in raws[2]
    assert all(json.loads(r.raw)["file"].endswith("items.csv") for r in rejects.collect())
    # the quote opens on line 5 (the header is line 1) and swallowed the two lines after it
    (quote,) = sources.unclosed_quotes(spark, annotated)
    assert (quote.line, quote.swallowed) == (5, 2) and quote.file.endswith("items.csv")
    assert quote.describe("items").startswith("items: line 5 of ")
