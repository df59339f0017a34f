"""Chinese texts end to end: a tiny random BERT with CJK characters, label terms and interest tags in Chinese."""

import re

import pandas as pd
import pytest
import yaml

from segrec.jobs import cli
from segrec.jobs.bootstrap.synthetic import SyntheticData, config_dict, save_tiny_bert, write_parquet

HIKING = ["轻便徒步鞋", "登山帐篷", "户外睡袋", "徒步登山杖", "露营炉具", "登山背包"]
COOKING = ["铸铁煎锅", "厨师刀具", "烘焙烤盘", "家常菜谱", "手工面条机", "不锈钢炒锅"]
BIOS = {"hiker": "我喜欢周末去山里徒步和露营", "cook": "我喜欢在厨房做饭和烘焙面包"}
CJK = re.compile(r"^[\u4e00-\u9fff]+$")


@pytest.fixture(scope="module")
def chinese_run(tmp_path_factory, spark):
    root = tmp_path_factory.mktemp("chinese")
    texts = HIKING + COOKING + list(BIOS.values())
    model = save_tiny_bert(str(root / "bert"), extra_tokens=sorted({c for t in texts for c in t}))
    items = pd.DataFrame(
        {
            "item_id": [f"h{i}" for i in range(6)] + [f"c{i}" for i in range(6)],
            "title": HIKING + COOKING,
            "description": ["户外用品"] * 6 + ["厨房用品"] * 6,
        }
    )
    personas = {f"u{n:02d}": ("hiker" if n % 2 else "cook") for n in range(24)}
    users = pd.DataFrame({"user_id": list(personas), "bio": [BIOS[p] for p in personas.values()]})
    events = [
        (u, f"{p[0]}{(n + j) % 6}", 5.0, 1_700_000_000 + j)
        for n, (u, p) in enumerate(personas.items())
        for j in range(4)
    ]
    interactions = pd.DataFrame(events, columns=["user_id", "item_id", "rating", "timestamp"])
    data = SyntheticData(items, users, interactions, pd.Series(personas), pd.Series(dtype=str))
    conf = config_dict(write_parquet(data, str(root / "in")), str(root / "out"), model_path=model)
    conf["train"] = {"enabled": False}
    conf["segment"] = {"k": 2, "min_term_users": 3}
    (root / "conf.yaml").write_text(yaml.safe_dump(conf), encoding="utf-8")
    for stage in ("validate", "embed", "profile", "segment"):
        assert cli.main([stage, "--conf", str(root / "conf.yaml")]) == 0
    return root, personas


def test_chinese_label_terms_are_words(chinese_run, spark):
    root, _ = chinese_run
    summary = spark.read.parquet(str(root / "out" / "segment_summary")).toPandas()
    terms = [t for row in summary["label_terms"] for t in row]
    assert terms and all(CJK.match(t) and len(t) >= 2 for t in terms)  # words, not single characters
    assert not {"我们", "喜欢"} & set(terms)  # every user writes 喜欢: it sets no segment apart


def test_chinese_interest_tags_speak_of_each_users_hobby(chinese_run, spark):
    root, personas = chinese_run
    tags = {
        r.user_id: [t.term for t in r.interests]
        for r in spark.read.parquet(str(root / "out" / "user_interests")).collect()
    }
    assert set(tags) == set(personas)
    texts = {
        "hiker": " ".join(HIKING + ["户外用品", BIOS["hiker"]]),
        "cook": " ".join(COOKING + ["厨房用品", BIOS["cook"]]),
    }
    for user, persona in personas.items():
        other = texts["cook" if persona == "hiker" else "hiker"]
        assert len(tags[user]) >= 3 and all(CJK.match(t) and len(t) >= 2 for t in tags[user]), (user, tags[user])
        # every tag is a word of the user's own hobby's texts, none of the other hobby's
        assert all(t in texts[persona] and t not in other for t in tags[user]), (user, tags[user])
