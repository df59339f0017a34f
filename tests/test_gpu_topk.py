"""Top-k scoring on a CUDA device gives the CPU path's lists (runs only where a GPU is present)."""

import numpy as np
import pytest
import torch
from conftest import topk_settings

from segrec.udfs.topk.catalogue import Catalogue, SeenItems
from segrec.udfs.topk.exact import top_k

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def lists(blocks):
    """{user row: (item indices, scores)}."""
    out = {}
    for rows, idx, score, _sim, _boost in blocks:
        for r in dict.fromkeys(rows.tolist()):
            out[r] = (idx[rows == r].tolist(), score[rows == r])
    return out


@pytest.mark.parametrize("weight", [0.0, 0.3])
def test_cuda_and_cpu_lists_match(weight):
    rng = np.random.default_rng(0)
    n, d, users = 5000, 384, 700
    vectors = rng.standard_normal((n, d)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    popularity = rng.random((n, 4)).astype(np.float32)
    cat = Catalogue(item_ids=np.array([f"i{j}" for j in range(n)]), vectors=vectors, popularity=popularity)
    u = rng.standard_normal((users, d)).astype(np.float32)
    segments = rng.integers(-1, 4, users)
    seen = [rng.choice(n, size=int(rng.integers(0, 50)), replace=False) for _ in range(users)]
    cpu = lists(
        top_k(
            u,
            segments,
            SeenItems.from_lists(seen),
            cat,
            topk_settings(k=20, popularity_weight=weight, block_mb=16, device="cpu", precision="bfloat16"),
        )
    )
    gpu = lists(
        top_k(
            u,
            segments,
            SeenItems.from_lists(seen),
            cat,
            topk_settings(k=20, popularity_weight=weight, block_mb=16, device="cuda:0"),
        )
    )
    assert cpu.keys() == gpu.keys()
    # Both exact passes score candidates in float64: lists match, scores to float64 rounding.
    assert [c[0] for c in cpu.values()] == [g[0] for g in gpu.values()]
    for r in cpu:
        np.testing.assert_allclose(cpu[r][1], gpu[r][1], rtol=0, atol=1e-12)
    assert all(not set(gpu[r][0]) & set(seen[r].tolist()) for r in gpu)
