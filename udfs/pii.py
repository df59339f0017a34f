"""Personal data found in free text, replaced by typed placeholders before a text is hashed, embedded or
mined for segment labels.

Kinds, in the order they are replaced (a URL's credentials before the e-mail-like ``user@host`` in it,
card and account numbers before the looser phone pattern that would also match their digits):

- ``<url>``: a URL carrying credentials (``scheme://user:password@host...``), the whole URL;
- ``<email>``: an e-mail address;
- ``<iban>``: an IBAN (two letters, two check digits, 11-30 characters, optionally in groups of four)
  whose mod-97 check holds;
- ``<card>``: 13-19 digits, optionally grouped by spaces or dashes, that pass the Luhn check;
- ``<ip>``: an IPv4 or IPv6 address (checked by ``ipaddress``);
- ``<phone>``: an international number (``+`` or ``00``, 8-15 digits) or a national one written in
  groups (``(415) 555-2671``, ``020 7946 0958``: 9-15 digits in at least three groups).

Numbers that fail their check (a 16-digit order number that is not Luhn-valid, a date, a price, a
version) are left as they are. Nothing is logged or counted by value: callers count placeholders.
"""

from __future__ import annotations

import ipaddress
import re

import pandas as pd

KINDS = ("url", "email", "iban", "card", "ip", "phone")
PLACEHOLDER = {kind: f"<{kind}>" for kind in KINDS}
ANY_PLACEHOLDER = "<(?:" + "|".join(KINDS) + ")>"  # a Java and Python regex

_URL_CREDENTIALS = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s/:@]+:[^\s/@]*@[^\s]+")
_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{1,4}){3,8}\b")
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
_PHONE = re.compile(
    r"(?<![\w+])(?:(?:\+|00)\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{1,4}){1,4}"
    r"|\(?\d{2,4}\)?[ .-]\d{2,4}[ .-]\d{2,4}(?:[ .-]\d{2,4})?)(?![\w])"
)


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


def luhn_valid(number: str) -> bool:
    """Whether the digit string ``number`` passes the Luhn check (card numbers do, most phones do not)."""
    digits = [int(d) for d in number]
    odd = digits[-1::-2]
    even = [sum(divmod(2 * d, 10)) for d in digits[-2::-2]]
    return (sum(odd) + sum(even)) % 10 == 0


def iban_valid(candidate: str) -> bool:
    """Whether ``candidate`` (spaces allowed) has an IBAN's length and its mod-97 check digits."""
    code = candidate.replace(" ", "")
    if not 15 <= len(code) <= 34:
        return False
    moved = code[4:] + code[:4]
    return int("".join(str(int(ch, 36)) for ch in moved)) % 97 == 1


def _iban(match: re.Match) -> str:
    # The pattern may have taken an upper-case word after the number: try shorter group boundaries.
    text = match.group(0)
    groups = text.split(" ")
    for end in range(len(groups), 0, -1):
        head = " ".join(groups[:end])
        if iban_valid(head):
            return PLACEHOLDER["iban"] + text[len(head) :]
    return text


def _card(match: re.Match) -> str:
    digits = _digits(match.group(0))
    return PLACEHOLDER["card"] if 13 <= len(digits) <= 19 and luhn_valid(digits) else match.group(0)


def _ipv4(match: re.Match) -> str:
    return PLACEHOLDER["ip"] if all(int(part) <= 255 for part in match.group(0).split(".")) else match.group(0)


def _ipv6(match: re.Match) -> str:
    text = match.group(0)
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return text
    return PLACEHOLDER["ip"] if any(ch.isalnum() for ch in text) else text


def _phone(match: re.Match) -> str:
    text = match.group(0)
    n = len(_digits(text))
    international = text.startswith(("+", "00"))
    return PLACEHOLDER["phone"] if (8 <= n <= 15 if international else 9 <= n <= 15) else text


_STEPS = (
    (_URL_CREDENTIALS, PLACEHOLDER["url"]),
    (_EMAIL, PLACEHOLDER["email"]),
    (_IBAN, _iban),
    (_CARD, _card),
    (_IPV4, _ipv4),
    (_IPV6, _ipv6),
    (_PHONE, _phone),
)
# Texts without a digit or an @ cannot hold any of the kinds: most texts skip every pattern.
_MAY_HOLD = re.compile(r"[\d@]")


def redact(text: str | None) -> str | None:
    """``text`` with every kind above replaced by its placeholder."""
    if not text or not _MAY_HOLD.search(text):
        return text
    for pattern, replacement in _STEPS:
        text = pattern.sub(replacement, text)
    return text


def redact_series(texts: pd.Series) -> pd.Series:
    """redact over a pandas batch: only the texts that may hold personal data are looked at."""
    candidates = texts.str.contains(_MAY_HOLD, na=False)
    if not candidates.any():
        return texts
    out = texts.copy()
    out[candidates] = texts[candidates].map(redact)
    return out
