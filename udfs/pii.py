"""Personal data found in free text, replaced by typed placeholders before a text is hashed, embedded or
mined for segment labels.

Kinds, in the order they are replaced (a URL's credentials before the e-mail-like ``user@host`` in it,
identity and card numbers before the looser phone pattern that would also match their digits, a
Chinese mobile before cards so that its digits are never taken for one):

- ``<url>``: a URL carrying credentials (``scheme://user:password@host...``), the whole URL;
- ``<email>``: an e-mail address;
- ``<id>``: a Chinese resident identity number: 18 characters (region, a real birth date, sequence,
  ISO 7064 MOD 11-2 check character) whose check holds, or 15 or 18 such characters right after a
  label that names one (``身份证号``, ``证件号码``, ``ID number``), whatever its check;
- ``<phone>`` (first pass): a Chinese mobile number, ``1[3-9]`` and 9 more digits, with or without
  ``+86``/``0086`` and separators;
- ``<iban>``: an IBAN (two letters, two check digits, 11-30 characters, optionally in groups of four)
  whose mod-97 check holds;
- ``<card>``: 13-19 digits starting 1-9, in one run or in groups of four (American Express: 4-6-5)
  split by spaces or dashes, not after a ``+``, that pass the Luhn check and are not an ISBN-13 or
  EAN-13 product code; or 12-19 digits right after a label that names a card (``银行卡``, ``卡号``,
  ``card number``), however grouped and whatever their check;
- ``<ip>``: an IPv4 or IPv6 address (checked by ``ipaddress``);
- ``<phone>``: an international number (``+`` or ``00``, 8-15 digits) or a national one written in
  groups (``(415) 555-2671``, ``020 7946 0958``: 9-15 digits in at least three groups).

Every pattern works without spaces around what it finds: word boundaries are ASCII ones, so a number
or an address written against Chinese or Japanese characters (``手机13812345678``,
``邮箱是zhang.san@example.com请联系``) is found as it is in English text. Texts arrive NFKC-normalised
(``udfs.text``): full-width digits and ``＠`` are ASCII by then. Numbers that fail their check (a
16-digit order number that is not Luhn-valid, a date, a price, a version, an ISBN) are left as they
are. Nothing is logged or counted by value: callers count placeholders.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import date

import pandas as pd

KINDS = ("url", "email", "id", "iban", "card", "ip", "phone")
PLACEHOLDER = {kind: f"<{kind}>" for kind in KINDS}
ANY_PLACEHOLDER = "<(?:" + "|".join(KINDS) + ")>"  # a Java and Python regex

_A = re.ASCII  # \w, \b and \d of ASCII only: CJK characters are not word characters next to a number
_URL_CREDENTIALS = re.compile(
    r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s/:@]+:[^\s/@]*@[A-Za-z0-9._~:/?#\[\]@!$&'()*+,;=%-]+", _A
)
_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b", _A)
_ID_LABEL = r"(?:身份证(?:号码|号)?|公民身份号码|证件号码?|(?i:ID\s*(?:card\s*)?(?:number|no\.?|#)))\s*[:=]?\s*"
_ID_NUMBER = r"[1-9]\d{5}(?:(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx]|\d{9})"
_ID_LABELLED = re.compile(rf"({_ID_LABEL})({_ID_NUMBER})(?![0-9A-Za-z])", _A)
_ID = re.compile(rf"(?<![0-9A-Za-z])({_ID_NUMBER})(?![0-9A-Za-z])", _A)
_CN_MOBILE = re.compile(r"(?<![\d+])(?:(?:\+|00)86[ -]?)?1[3-9]\d(?:[ -]?\d{4}){2}(?!\d)", _A)
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{1,4}){3,8}\b", _A)
_CARD_LABEL = r"(?:银行卡|信用卡|储蓄卡|借记卡|卡号|(?i:card\s*(?:number|no\.?|#)|card))\s*(?:号码?)?\s*[:=]?\s*"
_CARD_LABELLED = re.compile(rf"({_CARD_LABEL})([1-9](?:[ -]?\d){{11,18}})(?![\d-])", _A)
# Unlabelled cards as they are written: one run of digits, groups of four (the last one shorter), or
# American Express's 4-6-5; a separator anywhere would read order numbers followed by a quantity as one.
_CARD = re.compile(
    r"(?<![\d+-])(?:[1-9]\d{12,18}|[1-9]\d{3}([ -])\d{4}(?:\1\d{4}){1,2}(?:\1\d{1,4})?|3\d{3}([ -])\d{6}\2\d{5})"
    r"(?![\d-])",
    _A,
)
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])", _A)
_IPV6 = re.compile(r"(?<![0-9A-Fa-f:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])", _A)
_PHONE = re.compile(
    r"(?<![\w+-])(?:(?:\+|00)\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{1,4}){1,4}"
    r"|\(?\d{2,4}\)?[ .-]\d{2,4}[ .-]\d{2,4}(?:[ .-]\d{2,4})?)(?![\w])",
    _A,
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


_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def resident_id_valid(number: str) -> bool:
    """Whether ``number`` is an 18-character Chinese resident identity number with a real birth date
    and its ISO 7064 MOD 11-2 check character."""
    if len(number) != 18 or not number[:17].isdigit():
        return False
    try:
        date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        return False
    total = sum(int(d) * w for d, w in zip(number[:17], _ID_WEIGHTS, strict=True))
    return "10X98765432"[total % 11] == number[17].upper()


def product_code(digits: str) -> bool:
    """Whether 13 ``digits`` carry a valid EAN-13 check digit (every ISBN-13 is one): a product's
    barcode, which a 13-digit card number would satisfy only by chance."""
    if len(digits) != 13:
        return False
    total = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(digits[:12]))
    return (10 - total % 10) % 10 == int(digits[12])


def _id(match: re.Match) -> str:
    return PLACEHOLDER["id"] if resident_id_valid(match.group(1)) else match.group(0)


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
    card = 13 <= len(digits) <= 19 and luhn_valid(digits) and not product_code(digits)
    return PLACEHOLDER["card"] if card else match.group(0)


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
    (_ID_LABELLED, rf"\1{PLACEHOLDER['id']}"),
    (_ID, _id),
    (_CN_MOBILE, PLACEHOLDER["phone"]),
    (_IBAN, _iban),
    (_CARD_LABELLED, rf"\1{PLACEHOLDER['card']}"),
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
