"""Personal data in Chinese and English text: a generated corpus with every personal span marked, and
ordinary catalogue text full of numbers that must come through unchanged."""

import random
from datetime import date, timedelta

import pytest

from segrec.udfs.pii import luhn_valid, product_code, redact, resident_id_valid

RNG_SEED = 20261207


def resident_id(rng: random.Random) -> str:
    region = f"{rng.choice([11, 31, 44, 51, 33, 42])}{rng.randint(1, 99):02d}{rng.randint(1, 99):02d}"
    born = date(1950, 1, 1) + timedelta(days=rng.randint(0, 365 * 55))
    body = f"{region}{born:%Y%m%d}{rng.randint(0, 999):03d}"
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    return body + "10X98765432"[sum(int(d) * w for d, w in zip(body, weights, strict=True)) % 11]


def card(rng: random.Random) -> str:
    prefix = rng.choice(["4", "51", "55", "62", "6222", "37"])
    length = 15 if prefix == "37" else rng.choice([16, 16, 19])
    body = prefix + "".join(str(rng.randint(0, 9)) for _ in range(length - len(prefix) - 1))
    for check in "0123456789":
        if luhn_valid(body + check) and not product_code(body + check):
            return body + check
    return card(rng)


def grouped(number: str, rng: random.Random) -> str:
    sep = rng.choice(["", " ", "-"])
    return sep.join(number[i : i + 4] for i in range(0, len(number), 4)) if sep else number


def mobile(rng: random.Random) -> str:
    number = f"1{rng.choice('3456789')}{rng.randint(0, 999999999):09d}"
    return rng.choice(
        [
            number,
            f"+86 {number[:3]} {number[3:7]} {number[7:]}",
            f"+86-{number}",
            f"0086 {number}",
            f"{number[:3]}-{number[3:7]}-{number[7:]}",
            f"+86{number}",
        ]
    )


def iban(rng: random.Random) -> str:
    bban = "".join(str(rng.randint(0, 9)) for _ in range(18))
    numeric = int("".join(str(int(ch, 36)) for ch in bban + "DE00"))
    code = f"DE{98 - numeric % 97:02d}{bban}"
    return " ".join(code[i : i + 4] for i in range(0, len(code), 4)) if rng.random() < 0.5 else code


def email(rng: random.Random) -> str:
    local = rng.choice(["zhang.san", "li_si", "wang.wu+shop", "jane.doe", "u2026", "chen-lei"])
    return f"{local}@{rng.choice(['example.com', 'mail.example.cn', 'qq.com', 'corp.example.co.uk'])}"


KINDS = {
    "email": email,
    "phone": mobile,
    "id": resident_id,
    "card": lambda rng: grouped(card(rng), rng),
    "iban": iban,
    "ip": lambda rng: rng.choice(
        [f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}", "2001:db8::8a2e:370:7334"]
    ),
    "url": lambda rng: f"https://user{rng.randint(1, 99)}:pw{rng.randint(100, 999)}@shop.example.com/orders",
}
CONTEXTS = {
    "email": ["邮箱是{}请联系", "联系邮箱:{}。", "mail me at {} today", "{}"],
    "phone": ["手机{}", "请拨打{}联系我", "电话:{},谢谢", "call {} after six"],
    "id": ["身份证号{}", "我的证件是{}请核对", "ID number {} on file", "{}"],
    "card": ["银行卡{}", "卡号:{}", "paid with {} yesterday", "退款到{}这张卡"],
    "iban": ["账号{}收款", "IBAN {} please", "转账至{}。"],
    "ip": ["登录IP{}异常", "from {} at night"],
    "url": ["链接{}请点击", "login at {} now"],
}


def personal_corpus(n_per_kind: int = 60) -> list[tuple[str, str, str]]:
    """(text, span, kind) for generated personal spans in Chinese and English contexts."""
    rng = random.Random(RNG_SEED)
    rows = []
    for kind, make in KINDS.items():
        for i in range(n_per_kind):
            span = make(rng)
            rows.append((CONTEXTS[kind][i % len(CONTEXTS[kind])].format(span), span, kind))
    return rows


def isbn13(rng: random.Random, dashed: bool) -> str:
    body = f"97{rng.choice('89')}{rng.randint(0, 999999999):09d}"
    check = (10 - sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(body)) % 10) % 10
    code = body + str(check)
    return f"{code[:3]}-{code[3]}-{code[4:7]}-{code[7:12]}-{code[12]}" if dashed else code


def ean13(rng: random.Random) -> str:
    body = f"69{rng.randint(0, 9999999999):010d}"
    return body + str((10 - sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(body)) % 10) % 10)


CATALOGUE = [
    lambda r: f"iPhone {r.randint(11, 16)} Pro {r.choice([128, 256, 512])}GB 售价{r.randint(3000, 12999)}元",
    lambda r: f"RTX {r.choice([3060, 4070, 4090])} {r.choice([8, 12, 24])}GB GDDR6X, ${r.randint(299, 1999)}.99",
    lambda r: f"ISBN {isbn13(r, r.random() < 0.5)} 定价¥{r.randint(20, 199)}.00",
    lambda r: f"ISBN-10: 7-{r.randint(100, 999)}-{r.randint(10000, 99999)}-{r.randint(0, 9)}",
    lambda r: f"条形码 {ean13(r)} 数量:{r.randint(1, 50)}件",
    lambda r: f"Barcode {ean13(r)}, pack of {r.randint(2, 24)}",
    lambda r: f"订单号{r.randint(10**11, 10**12 - 1)} 已发货 {day(r, '-')}",
    lambda r: f"尺寸{r.randint(50, 200)}x{r.randint(30, 120)}x{r.randint(20, 90)}cm, 重量{r.randint(1, 40)}kg",
    lambda r: f"{r.randint(1950, 2026)}年上映 评分{r.randint(1, 9)}.{r.randint(0, 9)} 时长{r.randint(80, 180)}分钟",
    lambda r: (
        f"Released {r.randint(1950, 2026)}, {r.randint(80, 180)} min, rated {r.randint(1, 9)}.{r.randint(0, 9)}/10"
    ),
    lambda r: f"SKU {r.randint(10**5, 10**9)} x {r.randint(1, 99)} @ {r.randint(1, 999)}.{r.randint(0, 99):02d} USD",
    lambda r: f"JD商品编号{r.randint(10**11, 10**12 - 1)} 4K {r.choice([60, 120, 144])}Hz {r.randint(24, 85)}英寸",
    lambda r: f"Firmware v{r.randint(1, 20)}.{r.randint(0, 99)}.{r.randint(0, 999)} build {r.randint(1000, 99999)}",
    lambda r: f"容量{r.choice([250, 500, 750, 1000])}ml 保质期{r.randint(6, 36)}个月 生产日期{day(r, '')}",
    lambda r: f"Model A{r.randint(1000, 2999)}, {r.randint(1, 12)}-pack, {r.randint(10, 99)}% off until {day(r, '/')}",
    lambda r: f"{r.randint(1, 5)}人份 {r.randint(1, 9)}折 满{r.randint(100, 999)}减{r.randint(10, 99)}",
    lambda r: f"库存{r.randint(0, 99999)} 已售{r.randint(0, 99999)}件",
]


def day(rng: random.Random, sep: str) -> str:
    return f"{rng.randint(2020, 2026)}{sep}{rng.randint(1, 12):02d}{sep}{rng.randint(1, 28):02d}"


def catalogue_corpus(n: int = 3000) -> list[str]:
    rng = random.Random(RNG_SEED + 1)
    return [CATALOGUE[i % len(CATALOGUE)](rng) for i in range(n)]


def test_the_generators_make_what_they_claim():
    rng = random.Random(1)
    assert all(resident_id_valid(resident_id(rng)) for _ in range(50))
    assert all(product_code(isbn13(rng, False)) and product_code(ean13(rng)) for _ in range(50))


def test_every_marked_personal_span_is_redacted_in_both_languages(capsys):
    corpus = personal_corpus()
    missed = [(text, kind) for text, span, kind in corpus if span in (redact(text) or "")]
    wrong = [(text, kind, redact(text)) for text, _, kind in corpus if f"<{kind}>" not in (redact(text) or "")]
    with capsys.disabled():
        print(f"\npersonal corpus: {len(corpus)} spans of {len(KINDS)} kinds, ", end="")
        print(f"{len(missed)} missed, {len(wrong)} with another placeholder")
    assert missed == [] and wrong == []


def test_ordinary_catalogue_text_comes_through(capsys):
    corpus = catalogue_corpus()
    changed = [(text, redact(text)) for text in corpus if redact(text) != text]
    with capsys.disabled():
        print(f"\ncatalogue corpus: {len(corpus)} strings, {len(changed)} changed ({len(changed) / len(corpus):.2%})")
    assert len(changed) / len(corpus) <= 0.01, changed[:10]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("邮箱是zhang.san@example.com请联系", "邮箱是<email>请联系"),
        ("手机13812345678", "手机<phone>"),
        ("身份证号110101199003077777", "身份证号<id>"),  # labelled: redacted whatever its check
        ("银行卡6222021234567890123", "银行卡<card>"),  # labelled: redacted whatever its check
        ("call +86 138 1234 5678", "call <phone>"),  # a phone, never a card
        ("ring +44 20 7946 0958 now", "ring <phone> now"),
        ("出生于110101199003074", "出生于110101199003074"),  # 15 digits without a label: not taken for an id
    ],
)
def test_the_strings_that_leaked_before(text, expected):
    assert redact(text) == expected
