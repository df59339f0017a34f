"""The model's identity on the driver: where it is, a fingerprint of its files, and the model id.

The model id names everything that decides the vectors (weights, tokenizer, pooling, window length,
long-text handling), so vectors are reused only when they would come out the same.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from segrec.jobs.errors import ConfigError
from segrec.udfs.encoder import EncoderSettings, fingerprint, resolve_model_path


def model_identity(settings: EncoderSettings) -> dict[str, str]:
    """The model id: its name and a hash of its files and ``settings.vector_settings()`` (the same
    settings the workers key their encoders on)."""
    try:
        path = resolve_model_path(settings.model_path)
    except ValueError as exc:
        raise ConfigError(f"model.path: {exc}") from None
    files_hash = fingerprint(path)
    name = settings.model_path.split(":", 1)[1] if settings.model_path.startswith("package:") else Path(path).name
    vector_settings = {"files": files_hash, **settings.vector_settings()}
    settings_hash = hashlib.sha256(json.dumps(vector_settings, sort_keys=True).encode()).hexdigest()
    return {"name": name, "path": path, "files_sha256": files_hash, "model_id": f"{name}@{settings_hash[:16]}"}
