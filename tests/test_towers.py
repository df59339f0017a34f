"""The two-tower model without Spark: shapes, numpy inference = torch, seeding, and what it learns on
planted personas (behaviour when texts say nothing; text alone for items nobody touched)."""

from dataclasses import replace

import numpy as np
import pytest
from conftest import tower_settings

from segrec.jobs.bootstrap.synthetic import generate
from segrec.udfs import towers
from segrec.udfs.towers import (
    TEXT_FREE,
    TowerWeights,
    TrainingData,
    build_model,
    choose_objective,
    example_positions,
    histories,
    hold_out_newest,
    id_rows,
    inference_history,
    train,
    validation_figures,
)

TEXT_DIM = 24
FAST = {
    "dim": 16,
    "hidden": 32,
    "epochs": 8,
    "batch_size": 64,
    "learning_rate": 5e-3,
    "history": 20,
    "temperature": 0.1,
}


def planted(text: str = "informative", cold_share: float = 0.0, seed: int = 3):
    """TrainingData from the planted-persona generator, with synthetic text vectors per item: near its
    persona's direction (informative), or those same vectors shuffled between items (uninformative). With
    ``cold_share``, that share of each persona's items loses every interaction (cold items)."""
    data = generate(n_users=150, items_per_persona=12, seed=seed)
    rng = np.random.default_rng(seed)
    personas = data.personas
    centres = rng.standard_normal((len(personas), TEXT_DIM))
    item_ids = np.array(sorted(data.items["item_id"]))
    item_persona = data.item_persona.loc[item_ids].to_numpy()
    vectors = centres[[personas.index(p) for p in item_persona]] + 0.6 * rng.standard_normal((len(item_ids), TEXT_DIM))
    if text == "uninformative":
        vectors = vectors[rng.permutation(len(item_ids))]
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    cold = np.zeros(len(item_ids), bool)
    if cold_share:
        for p in personas:
            own = np.flatnonzero(item_persona == p)
            cold[rng.choice(own, size=max(1, int(len(own) * cold_share)), replace=False)] = True
    events = data.interactions.sort_values(["user_id", "timestamp", "item_id"])
    events = events[~np.isin(events["item_id"], item_ids[cold])]
    users = np.array(sorted(data.users["user_id"]))
    lengths = events.groupby("user_id").size().reindex(users, fill_value=0).to_numpy()
    positions = np.searchsorted(item_ids, events["item_id"].to_numpy())
    training = TrainingData(
        item_ids=item_ids,
        item_text=vectors.astype(np.float32),
        item_counts=np.bincount(positions, minlength=len(item_ids)),
        flat_items=positions.astype(np.int64),
        flat_weights=np.ones(len(positions), np.float32),
        offsets=np.concatenate([[0], np.cumsum(lengths)]),
        user_text=np.zeros((len(users), TEXT_DIM), np.float32),
        has_text=np.zeros(len(users), bool),
    )
    user_persona = data.user_persona.loc[users].to_numpy()
    return training, item_persona, user_persona, cold


def user_matrix(data: TrainingData, weights: TowerWeights, items: np.ndarray) -> np.ndarray:
    """Every user's vector through the numpy user tower, pooling as the profile stage does."""
    pooled = np.zeros((data.n_users, weights.settings.dim))
    for u in range(data.n_users):
        a, b = data.offsets[u], data.offsets[u + 1]
        if b > a:
            hist, w = inference_history(data.flat_items[a:b], data.flat_weights[a:b], weights.settings)
            pooled[u] = (items[hist] * w[:, None]).sum(0) / w.sum()
    return weights.user_vectors(pooled, None)


def fitted(data: TrainingData, **overrides):
    settings = tower_settings(**{**FAST, **overrides})
    result = train(data, settings, log=lambda _: None)
    return TowerWeights(settings, result.state, result.id_items), result


def own_persona_share(scores: np.ndarray, data, item_persona, user_persona, k: int = 5) -> float:
    """Share of the top-k unseen items that belong to the user's own persona."""
    scores = scores.copy()
    for u in range(data.n_users):
        scores[u, data.flat_items[data.offsets[u] : data.offsets[u + 1]]] = -np.inf
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float((item_persona[top] == user_persona[:, None]).mean())


@pytest.fixture(scope="module")
def informative():
    return planted("informative")


def test_towers_give_unit_vectors_of_the_configured_dimension(informative):
    data, *_ = informative
    weights, result = fitted(data, epochs=1)
    items = weights.item_vectors(data.item_text, data.item_ids)
    assert items.shape == (len(data.item_ids), FAST["dim"]) and items.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(items, axis=1), 1.0, atol=1e-5)
    users = user_matrix(data, weights, items)
    np.testing.assert_allclose(np.linalg.norm(users, axis=1), 1.0, atol=1e-5)
    assert np.isfinite(users).all()
    # A user with no history and no text has no direction: a zero vector, never NaN.
    assert not weights.user_vectors(np.zeros((1, FAST["dim"])), np.full((1, TEXT_DIM), np.nan)).any()
    assert [c["epoch"] for c in result.curve] == [1] and np.isfinite(result.curve[0]["loss"])


def test_numpy_item_tower_matches_the_torch_model(informative):
    import torch

    data, *_ = informative
    weights, _ = fitted(data, epochs=1)
    model = build_model(TEXT_DIM, len(weights.id_items), weights.settings)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.state.items()})
    rows = torch.from_numpy(id_rows(data.item_counts, weights.settings))
    with torch.no_grad():
        expected = model.items(torch.from_numpy(data.item_text), rows).numpy()
    np.testing.assert_allclose(weights.item_vectors(data.item_text, data.item_ids), expected, atol=1e-5)
    # Items past the ID table (cold) get the text path alone: the torch model with row 0.
    with torch.no_grad():
        text_only = model.items(torch.from_numpy(data.item_text), torch.zeros(len(rows), dtype=torch.long)).numpy()
    unknown = np.array([f"new-{i}" for i in range(len(data.item_ids))])
    np.testing.assert_allclose(weights.item_vectors(data.item_text, unknown), text_only, atol=1e-5)


@pytest.mark.parametrize("history_map", [True, False])
def test_numpy_user_tower_matches_the_torch_model(informative, history_map):
    import torch

    data, *_ = informative
    weights, _ = fitted(data, epochs=2, history_map=history_map)
    model = build_model(TEXT_DIM, len(weights.id_items), weights.settings)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.state.items()})
    if history_map:  # trained away from the identity it starts as
        assert not np.allclose(weights.state["history_map.weight"], np.eye(FAST["dim"]), atol=1e-3)
    rng = np.random.default_rng(0)
    pooled = rng.standard_normal((6, FAST["dim"])).astype(np.float32)
    text = rng.standard_normal((6, TEXT_DIM)).astype(np.float32)
    has_text = np.array([1, 1, 1, 0, 0, 0], np.float32)
    with torch.no_grad():
        expected = model.users(torch.from_numpy(pooled), torch.from_numpy(text), torch.from_numpy(has_text)).numpy()
    got = weights.user_vectors(pooled, np.where(has_text[:, None] > 0, text, np.nan))
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_a_vector_splits_into_its_text_part_and_its_learned_part(informative):
    """vector = (text path + learned embedding) / norm: the learned part is the embedding over the same
    norm, so vector - learned part points along the text path alone; cold items have no learned part."""
    import torch

    data, *_ = informative
    weights, _ = fitted(data, epochs=1)
    ids = data.item_ids.copy()
    ids[::3] = [f"new-{i}" for i in range(len(ids[::3]))]  # a third of the items cold
    vectors, learned, found = weights.item_parts(data.item_text, ids)
    assert found.any() and not found.all()
    np.testing.assert_array_equal(found, ~np.isin(np.arange(len(ids)), np.arange(0, len(ids), 3)))
    np.testing.assert_array_equal(vectors, weights.item_vectors(data.item_text, ids))
    assert np.abs(learned[~found]).max() == 0.0 and np.abs(learned[found]).max() > 0.0
    model = build_model(TEXT_DIM, len(weights.id_items), weights.settings)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.state.items()})
    with torch.no_grad():
        text_path = model.text_skip(torch.from_numpy(data.item_text)) + model.text_mlp(torch.from_numpy(data.item_text))
    text_part = (vectors - learned).astype(np.float64)
    cosine = np.einsum("nd,nd->n", text_part, text_path.double().numpy()) / (
        np.linalg.norm(text_part, axis=1) * np.linalg.norm(text_path.double().numpy(), axis=1)
    )
    assert cosine.min() > 1 - 1e-5  # the text part is the text path, scaled


def test_same_seed_gives_the_same_model_and_another_seed_does_not(informative):
    data, *_ = informative
    first, _ = fitted(data, epochs=2)
    second, _ = fitted(data, epochs=2)
    other, _ = fitted(data, epochs=2, seed=7)
    a, b = first.item_vectors(data.item_text, data.item_ids), second.item_vectors(data.item_text, data.item_ids)
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert np.abs(a - other.item_vectors(data.item_text, data.item_ids)).max() > 1e-3


def test_items_need_enough_interactions_for_an_embedding():
    counts = np.array([0, 4, 5, 9])
    assert id_rows(counts, tower_settings(id_min_interactions=5)).tolist() == [0, 0, 1, 2]
    assert id_rows(counts, tower_settings(id_embeddings=False)).tolist() == [0, 0, 0, 0]


def test_sequential_history_is_what_came_before_the_target_newest_last():
    data = TrainingData(
        item_ids=np.array(["a", "b", "c", "d"]),
        item_text=np.eye(4, dtype=np.float32),
        item_counts=np.ones(4),
        flat_items=np.array([0, 1, 2, 3, 2]),
        flat_weights=np.array([1, 1, 1, 1, 2], np.float32),
        offsets=np.array([0, 3, 5]),
        user_text=np.zeros((2, 4), np.float32),
        has_text=np.array([False, True]),
    )
    settings = tower_settings(history=2, decay=0.5)
    # u0's first interaction has no history and u0 has no text: not an example; u1's first is (text).
    assert example_positions(data, settings).tolist() == [1, 2, 3, 4]
    items, weights = histories(data, np.array([2, 4]), settings, np.random.default_rng(0))
    assert items.tolist() == [[0, 1], [TEXT_FREE, 3]]
    np.testing.assert_allclose(weights, [[0.5, 1.0], [0.0, 1.0]])
    order_free = tower_settings(history=4, objective="order_free")
    items, _ = histories(data, np.array([1]), order_free, np.random.default_rng(0))
    assert sorted(i for i in items[0] if i != TEXT_FREE) == [0, 2]  # the user's others, not the target


def test_behaviour_is_learned_when_texts_are_shuffled_between_items():
    data, item_persona, user_persona, _ = planted("uninformative")
    weights, _ = fitted(data)
    items = weights.item_vectors(data.item_text, data.item_ids)
    trained = own_persona_share(user_matrix(data, weights, items) @ items.T, data, item_persona, user_persona)
    # content: the user as the mean of the text vectors of their items, scored by cosine
    text = data.item_text
    content_users = np.stack(
        [text[data.flat_items[data.offsets[u] : data.offsets[u + 1]]].mean(0) for u in range(data.n_users)]
    )
    content = own_persona_share(content_users @ text.T, data, item_persona, user_persona)
    assert trained >= 0.8 and trained > content + 0.4, (trained, content)


def test_items_nobody_touched_reach_the_right_personas_through_their_text():
    data, item_persona, user_persona, cold = planted("informative", cold_share=0.1)
    assert cold.sum() >= 5 and data.item_counts[cold].sum() == 0
    weights, _ = fitted(data)
    items = weights.item_vectors(data.item_text, data.item_ids)
    scores = user_matrix(data, weights, items) @ items.T
    best_cold = np.flatnonzero(cold)[np.argmax(scores[:, cold], axis=1)]
    assert (item_persona[best_cold] == user_persona).mean() >= 0.9


def test_a_catalogue_larger_than_negatives_trains_on_sampled_items_as_well(informative):
    data, item_persona, user_persona, _ = planted("uninformative")
    weights, _ = fitted(data, negatives=10)  # 60 trainable items: each step sees 10 drawn + the batch's own
    items = weights.item_vectors(data.item_text, data.item_ids)
    assert own_persona_share(user_matrix(data, weights, items) @ items.T, data, item_persona, user_persona) >= 0.8
    # at or above the trainable items the softmax is the whole catalogue: the very same model
    full, _ = fitted(informative[0], negatives=0)
    enough, _ = fitted(informative[0], negatives=60)
    assert all(np.array_equal(full.state[name], enough.state[name]) for name in full.state)


def test_padding_a_steps_sampled_candidates_changes_nothing_but_their_count(monkeypatch):
    # Padding keeps each step's tensor sizes few (the allocator reuses them); the padded candidates are
    # masked out of the softmax, so the model trains exactly as unpadded.
    data, _, _, _ = planted("uninformative")
    monkeypatch.setattr(towers.training, "CANDIDATE_BLOCK", 1)
    plain, plain_result = fitted(data, negatives=10, epochs=2)
    monkeypatch.setattr(towers.training, "CANDIDATE_BLOCK", 64)
    padded, padded_result = fitted(data, negatives=10, epochs=2)
    assert [e["loss"] for e in padded_result.curve] == pytest.approx([e["loss"] for e in plain_result.curve], abs=1e-5)
    for name in plain.state:
        np.testing.assert_allclose(padded.state[name], plain.state[name], atol=1e-5)


def test_new_items_reach_their_personas_with_sampled_negatives_too():
    data, item_persona, user_persona, cold = planted("informative", cold_share=0.1)
    weights, _ = fitted(data, negatives=10)
    items = weights.item_vectors(data.item_text, data.item_ids)
    scores = user_matrix(data, weights, items) @ items.T
    best_cold = np.flatnonzero(cold)[np.argmax(scores[:, cold], axis=1)]
    assert (item_persona[best_cold] == user_persona).mean() >= 0.9


def chains(n_users: int = 200, n_items: int = 60, length: int = 8, seed: int = 5) -> TrainingData:
    """Histories where the order is everything: each user walks ``length`` consecutive items of a ring
    from a random start, so the next item follows from the newest one alone; texts say nothing."""
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, n_items, n_users)
    flat = ((starts[:, None] + np.arange(length)[None, :]) % n_items).ravel()
    text = rng.standard_normal((n_items, TEXT_DIM)).astype(np.float32)
    return TrainingData(
        item_ids=np.array([f"i{n:03d}" for n in range(n_items)]),
        item_text=text / np.linalg.norm(text, axis=1, keepdims=True),
        item_counts=np.bincount(flat, minlength=n_items),
        flat_items=flat.astype(np.int64),
        flat_weights=np.ones(len(flat), np.float32),
        offsets=np.arange(n_users + 1) * length,
        user_text=np.zeros((n_users, TEXT_DIM), np.float32),
        has_text=np.zeros(n_users, bool),
    )


def test_holding_out_the_newest_interaction_keeps_every_other_and_recounts_items():
    data = chains(n_users=5, length=3)
    data.offsets[:] = [0, 3, 6, 7, 10, 15][: len(data.offsets)]  # users of 3, 3, 1, 3 and 5 interactions
    data = TrainingData(**{**data.__dict__, "flat_items": data.flat_items[:15]})
    kept, users, held = hold_out_newest(data, seed=1)
    assert users.tolist() == [0, 1, 3, 4]  # the user with one interaction keeps it
    assert held.tolist() == data.flat_items[[2, 5, 9, 14]].tolist()
    assert kept.offsets.tolist() == [0, 2, 4, 5, 7, 11]
    assert kept.flat_items.tolist() == np.delete(data.flat_items, [2, 5, 9, 14]).tolist()
    assert (kept.item_counts == data.item_counts - np.bincount(held, minlength=len(data.item_ids))).all()


def test_auto_chooses_the_sequential_objective_where_the_order_predicts_the_next_item():
    choice, chosen = choose_objective(chains(), tower_settings(**FAST, objective="auto"), log=lambda _: None)
    assert choice["objective"] == "sequential" and choice["validation_users"] == 200
    # order-free sees the walk's items but not which end is newest: its next item is one of two guesses
    assert choice["sequential"]["ndcg@10"] >= choice["order_free"]["ndcg@10"] + 0.1, choice
    gain = choice["sequential_gain"]
    assert gain["ndcg@10"] == pytest.approx(choice["sequential"]["ndcg@10"] - choice["order_free"]["ndcg@10"], abs=1e-5)
    assert gain["ndcg@10"] > 2 * gain["standard_error"] > 0


def test_auto_chooses_order_free_where_users_pick_by_taste_at_random_times():
    data, *_ = planted("uninformative")
    choice, _ = choose_objective(data, tower_settings(**FAST, objective="auto"), log=lambda _: None)
    assert choice["objective"] == "order_free", choice
    assert 0 < choice["sequential"]["ndcg@10"] <= 1 and 0 < choice["order_free"]["ndcg@10"] <= 1
    assert choice["sequential_gain"]["ndcg@10"] <= 2 * choice["sequential_gain"]["standard_error"]


def test_train_with_auto_ships_the_objective_validation_chose():
    data = chains()
    result = train(data, tower_settings(**{**FAST, "epochs": 4}, objective="auto"), log=lambda _: None)
    assert result.objective == "sequential" and result.choice["objective"] == "sequential"
    best = result.choice["sequential"]["epochs"]
    # the winner's validation epochs up to its best, then refit_epochs (1) on every interaction
    assert 1 <= best <= 4 and [p["epoch"] for p in result.curve] == list(range(1, best + 2))
    assert result.seconds() >= result.choice["seconds"] > 0


def test_an_objective_stops_after_patience_epochs_without_a_better_validation_figure():
    """Early stopping: each objective's per-epoch validation NDCG@10 is kept, it stops ``patience`` epochs
    after its best (or at ``epochs``), and the state handed on is the best epoch's."""
    settings = tower_settings(**{**FAST, "epochs": 12}, objective="auto", patience=1)
    choice, chosen = choose_objective(chains(), settings, log=lambda _: None)
    for objective in ("sequential", "order_free"):
        figures = choice[objective]
        by_epoch, best = figures["ndcg@10_by_epoch"], figures["epochs"]
        assert figures["ndcg@10"] == max(by_epoch) == by_epoch[best - 1]
        assert by_epoch.index(max(by_epoch)) == best - 1  # ties keep the earlier epoch
        assert len(by_epoch) == min(best + 1, 12)  # one epoch without a gain, then stopped
        assert all(later <= max(by_epoch) for later in by_epoch[best:])
    assert chosen["epochs"] == choice["sequential"]["epochs"] and len(chosen["curve"]) == chosen["epochs"]
    # the state handed on scores what validation measured at that epoch
    kept, users, held = hold_out_newest(chains(), seed=settings.seed)
    rows = id_rows(chains().item_counts, settings)
    probe = replace(settings, objective="sequential")
    state = {name: tensor.numpy() for name, tensor in chosen["model"].items()}
    gains, _ = validation_figures(TowerWeights(probe, state, kept.item_ids[rows > 0]), kept, users, held)
    assert gains.mean() == pytest.approx(choice["sequential"]["ndcg@10"], abs=1e-6)


def test_refit_epochs_zero_ships_the_best_validation_epoch_and_more_continue_it():
    data = chains()
    settings = tower_settings(**{**FAST, "epochs": 4}, objective="auto")
    choice, chosen = choose_objective(data, settings, log=lambda _: None)
    as_chosen = train(data, replace(settings, refit_epochs=0), log=lambda _: None)
    assert [p["epoch"] for p in as_chosen.curve] == list(range(1, chosen["epochs"] + 1))
    for name, tensor in chosen["model"].items():
        np.testing.assert_array_equal(as_chosen.state[name], tensor.numpy())
    refit = train(data, replace(settings, refit_epochs=2), log=lambda _: None)
    assert len(refit.curve) == chosen["epochs"] + 2
    assert not np.array_equal(refit.state["item_id.weight"], as_chosen.state["item_id.weight"])
