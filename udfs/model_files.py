"""A model directory's identity: one hash of its files, shared by the encoder, its ONNX export and the driver."""

from __future__ import annotations

import hashlib
from pathlib import Path

# Files that describe a model without being part of it.
_SKIP = {"README.md", ".gitattributes"}


def fingerprint(directory: str) -> str:
    """sha256 of a model directory's files (names and bytes; READMEs aside): what the model id hashes,
    and what names the model's ONNX export."""
    digest = hashlib.sha256()
    for path in sorted(Path(directory).rglob("*")):
        if not path.is_file() or path.name in _SKIP:
            continue
        digest.update(str(path.relative_to(directory)).encode())
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
