"""Synthetic data with planted truth: personas with their own vocabulary, items, users and interactions.

Each user belongs to one persona (the planted segment); their bio speaks of the persona's interests and
most of their interactions are with the persona's items, rated high. Tests and benchmarks reuse it to
check that segmentation recovers the personas and that recommendations stay on-topic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

PERSONAS: dict[str, dict[str, list[str]]] = {
    "hiker": {
        "things": [
            "hiking boots",
            "trail map",
            "camping tent",
            "trekking poles",
            "backpack",
            "sleeping bag",
            "water filter",
            "headlamp",
            "rain jacket",
            "camp stove",
        ],
        "likes": ["mountain trails", "backpacking trips", "camping under the stars", "long hikes", "the outdoors"],
    },
    "cook": {
        "things": [
            "cast iron skillet",
            "chef knife",
            "dutch oven",
            "spice rack",
            "cutting board",
            "stand mixer",
            "baking sheet",
            "cookbook of recipes",
            "pasta maker",
            "saucepan",
        ],
        "likes": ["cooking dinner", "baking bread", "trying new recipes", "the kitchen", "homemade pasta"],
    },
    "gamer": {
        "things": [
            "video game console",
            "gaming controller",
            "gaming headset",
            "role-playing video game",
            "mechanical keyboard",
            "gaming mouse",
            "strategy video game",
            "racing video game",
            "gaming monitor",
            "arcade stick",
        ],
        "likes": [
            "playing video games",
            "online multiplayer matches",
            "gaming all night",
            "esports",
            "role-playing games",
        ],
    },
    "gardener": {
        "things": [
            "flower seeds",
            "pruning shears",
            "compost bin",
            "garden hose",
            "watering can",
            "potting soil",
            "raised garden bed",
            "tomato plants",
            "garden gloves",
            "rose bush",
        ],
        "likes": ["gardening", "growing vegetables", "planting flowers", "my backyard garden", "composting"],
    },
    "musician": {
        "things": [
            "acoustic guitar",
            "digital piano",
            "drum kit",
            "guitar amplifier",
            "violin",
            "microphone",
            "guitar strings",
            "music stand",
            "vinyl records",
            "ukulele",
        ],
        "likes": ["playing guitar", "writing songs", "jazz concerts", "practising piano", "live music"],
    },
}
_ADJECTIVES = ["classic", "lightweight", "premium", "compact", "durable", "deluxe", "essential", "pro"]


@dataclass
class SyntheticData:
    items: pd.DataFrame  # item_id, title, description, category
    users: pd.DataFrame  # user_id, bio
    interactions: pd.DataFrame  # user_id, item_id, rating, timestamp
    user_persona: pd.Series  # user_id -> persona name (the planted segment)
    item_persona: pd.Series  # item_id -> persona name

    @property
    def personas(self) -> list[str]:
        return sorted(self.user_persona.unique())


def generate(
    n_users: int = 200,
    items_per_persona: int = 20,
    personas: list[str] | None = None,
    interactions_per_user: tuple[int, int] = (5, 12),
    on_topic: float = 0.85,
    seed: int = 7,
) -> SyntheticData:
    rng = np.random.default_rng(seed)
    names = personas or list(PERSONAS)

    item_rows, item_persona = [], {}
    for p_index, persona in enumerate(names):
        things = PERSONAS[persona]["things"]
        for j in range(items_per_persona):
            item_id = f"i{p_index:02d}{j:04d}"
            thing = things[j % len(things)]
            adjective = _ADJECTIVES[(j // len(things)) % len(_ADJECTIVES)]
            like = PERSONAS[persona]["likes"][j % len(PERSONAS[persona]["likes"])]
            item_rows.append(
                {
                    "item_id": item_id,
                    "title": f"{adjective.title()} {thing}",
                    "description": f"A {adjective} {thing} for anyone who loves {like}.",
                    "category": persona,
                }
            )
            item_persona[item_id] = persona
    items = pd.DataFrame(item_rows)
    by_persona = {p: items.loc[items["category"] == p, "item_id"].tolist() for p in names}

    user_rows, user_persona, events = [], {}, []
    start = pd.Timestamp("2026-01-01", tz="UTC").timestamp()
    for u in range(n_users):
        persona = names[u % len(names)]
        user_id = f"u{u:05d}"
        likes = rng.choice(PERSONAS[persona]["likes"], size=2, replace=False)
        user_rows.append({"user_id": user_id, "bio": f"I am into {likes[0]} and {likes[1]}."})
        user_persona[user_id] = persona
        n = int(rng.integers(interactions_per_user[0], interactions_per_user[1] + 1))
        seen: set[str] = set()
        for k in range(n):
            own = rng.random() < on_topic
            pool = by_persona[persona] if own else by_persona[names[int(rng.integers(len(names)))]]
            item_id = str(rng.choice(pool))
            if item_id in seen:
                continue
            seen.add(item_id)
            rating = float(rng.integers(4, 6)) if item_persona[item_id] == persona else float(rng.integers(1, 4))
            events.append((user_id, item_id, rating, int(start + 86400 * k + int(rng.integers(0, 86400)))))
    users = pd.DataFrame(user_rows)
    interactions = pd.DataFrame(events, columns=["user_id", "item_id", "rating", "timestamp"])
    return SyntheticData(
        items=items,
        users=users,
        interactions=interactions,
        user_persona=pd.Series(user_persona, name="persona"),
        item_persona=pd.Series(item_persona, name="persona"),
    )


def write_parquet(data: SyntheticData, directory: str) -> dict[str, str]:
    """Write items/users/interactions as parquet files; returns their paths by source name."""
    import os

    os.makedirs(directory, exist_ok=True)
    paths = {}
    for name in ("items", "users", "interactions"):
        path = os.path.join(directory, f"{name}.parquet")
        getattr(data, name).to_parquet(path, index=False)
        paths[name] = path
    return paths


def config_dict(paths: dict[str, str], output: str, model_path: str | None = None) -> dict:
    """A run config (as a dict) over data written by :func:`write_parquet`."""
    config: dict = {
        "spark": {"master": "local[2]"},
        "inputs": {
            "items": {"path": paths["items"], "columns": {"id": "item_id", "text": ["title", "description"]}},
            "users": {"path": paths["users"], "columns": {"id": "user_id", "text": ["bio"]}},
            "interactions": {
                "path": paths["interactions"],
                "columns": {"user_id": "user_id", "item_id": "item_id", "rating": "rating", "timestamp": "timestamp"},
            },
        },
        "output": {"path": output},
    }
    if model_path:
        config["model"] = {"path": model_path}
    return config


TINY_VOCAB_WORDS = """
    the a an and or of to for in on with is are was i am my into love loves anyone who hiking boots
    trail running shoes cast iron skillet tent camping chef knife recipe baking bread video game
    console guitar piano garden seeds flowers music cooking kitchen outdoors mountain
""".split()


def save_tiny_bert(directory: str, extra_tokens: list[str] | None = None) -> str:
    """A randomly initialised 2-layer BertModel (hidden size 32) and a WordPiece tokenizer saved to
    ``directory``: fast enough for tests and the scale benchmark, where the real model's throughput is
    not what is measured. ``extra_tokens`` join the vocabulary (CJK characters, say: BERT's tokenizer
    splits Chinese text into single characters)."""
    import string
    from pathlib import Path

    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    vocab = specials + chars + ["##" + c for c in string.ascii_lowercase + string.digits] + TINY_VOCAB_WORDS
    vocab += list(extra_tokens or [])
    vocab = list(dict.fromkeys(vocab))
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    tokenizer.model_max_length = 128
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).eval().save_pretrained(folder)
    return str(folder)
