"""Personal data in free text: each kind replaced by its placeholder, and nothing else touched."""

import pandas as pd
import pytest

from segrec.udfs.pii import iban_valid, luhn_valid, redact, redact_series

MIXED = (
    "Jane (jane.doe+shop@example.co.uk) paid with 4111 1111 1111 1111 from DE89 3704 0044 0532 0130 00; "
    "call +44 20 7946 0958 or (415) 555-2671, from 192.168.10.20 or 2001:db8:85a3::8a2e:370:7334, "
    "login at https://jane:s3cret@shop.example.com/orders"
)


def test_every_kind_in_a_mixed_text_is_replaced_by_its_placeholder():
    assert redact(MIXED) == (
        "Jane (<email>) paid with <card> from <iban>; call <phone> or <phone>, from <ip> or <ip>, login at <url>"
    )


@pytest.mark.parametrize(
    "text, expected",
    [
        ("card 5500-0000-0000-0004 ok", "card <card> ok"),  # dashes
        ("card 378282246310005.", "card <card>."),  # 15-digit Amex, no separators
        ("IBAN GB82 WEST 1234 5698 7654 32 BIC NWBKGB2L", "IBAN <iban> BIC NWBKGB2L"),  # letters inside, a word after
        ("ring 0033 1 42 68 53 00 tonight", "ring <phone> tonight"),
        ("ring +14155552671", "ring <phone>"),
        ("host 10.0.0.1:8080", "host <ip>:8080"),
        ("ftp://user:pw@files.example.org", "<url>"),
    ],
)
def test_formats_of_each_kind(text, expected):
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Model 1234 from 2019, size 10-12, 4.5 stars, 16 GB, 1,299.00 USD, at 10:30:45, v10.15.7, released 2026-01-15",
        "order 4111 1111 1111 1112 (not a card: the Luhn check fails)",
        "DE00 3704 0044 0532 0130 00 is not an IBAN (check digits)",
        "version 999.300.1.1 and 256.1.1.1 are not addresses",
        "Great boots! I hiked 120 km in them; 5/5 would buy again @ that price.",
        "東京 🍜 ramen, 2 bowls",
    ],
)
def test_a_text_without_personal_data_is_left_exactly_as_it_was(text):
    assert redact(text) == text


def test_the_checks():
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert iban_valid("DE89 3704 0044 0532 0130 00") and not iban_valid("DE00 3704 0044 0532 0130 00")


def test_a_batch_keeps_nulls_and_only_changes_texts_with_personal_data():
    batch = pd.Series(["mail a@b.io now", None, "plain words", "call +1 415 555 2671"], dtype=object)
    out = redact_series(batch)
    assert out.tolist() == ["mail <email> now", None, "plain words", "call <phone>"]
    assert batch.tolist()[0] == "mail a@b.io now"  # the input batch is not modified
