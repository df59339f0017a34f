"""The model's identity on the driver: where it is, a fingerprint of its files, and the model id.

The model id names everything that decides the vectors (weights, tokenizer, pooling, window length,
long-text handling), so vectors are reused only when they would come out the same.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from segrec.jobs.errors import ConfigError
from segrec.udfs.encoder import EncoderSettings, resolve_model_path
from segrec.udfs.model_files import fingerprint


def model_identity(settings: EncoderSettings) -> dict[str, str]:
    """The model id: its name and a hash of its files and ``settings.vector_settings()`` (the same
    settings the workers key their encoders on)."""
    try:
        path = resolve_model_path(settings.model_path)
    except ValueError as exc:
        raise ConfigError(f"model.path: {exc}") from None
    check_model_directory(path, settings.model_path)
    files_hash = fingerprint(path)
    name = settings.model_path.split(":", 1)[1] if settings.model_path.startswith("package:") else Path(path).name
    vector_settings = {"files": files_hash, **settings.vector_settings()}
    settings_hash = hashlib.sha256(json.dumps(vector_settings, sort_keys=True).encode()).hexdigest()
    return {"name": name, "path": path, "files_sha256": files_hash, "model_id": f"{name}@{settings_hash[:16]}"}


TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def check_model_directory(path: str, setting: str) -> None:
    """Exit 2 naming ``model.path`` (``setting``, resolved to ``path``) before any worker starts when the
    directory holds no model the workers could load: a config.json transformers cannot read, no
    weights file, or no tokenizer. The workers would otherwise each fail with a traceback."""
    from transformers import AutoConfig, AutoTokenizer

    where = f"model.path {setting!r}" + ("" if setting == path else f" ({path})")
    try:
        AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=False)
    except Exception as exc:  # transformers raises OSError, ValueError or a JSON error by case
        raise ConfigError(f"{where}: config.json is not a model configuration transformers can read: {exc}") from None
    if not any((Path(path) / name).is_file() for name in WEIGHT_FILES):
        raise ConfigError(
            f"{where} holds no model weights (one of {', '.join(WEIGHT_FILES)}): point model.path at the "
            "directory a model was saved to (save_pretrained), or at package:<module>"
        )
    # Checked by file: transformers builds a tokenizer with an empty vocabulary where none is saved.
    if not any((Path(path) / name).is_file() for name in TOKENIZER_FILES):
        raise ConfigError(
            f"{where} holds no tokenizer (one of {', '.join(TOKENIZER_FILES)}): save the tokenizer beside "
            "the model (tokenizer.save_pretrained)"
        )
    try:
        AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
    except Exception as exc:  # a damaged vocabulary file
        raise ConfigError(f"{where}: its tokenizer does not load: {str(exc).splitlines()[0]}") from None
