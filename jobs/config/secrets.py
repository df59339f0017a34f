"""Which config values are secrets, and the config with them replaced (for the manifest and logs)."""

from __future__ import annotations

import re
from typing import Any

# A key or variable is secret when its last word names a secret ("access_token", "DB_PASSWORD",
# "fs.s3a.secret.key"), not whenever a word appears in it ("token_budget" is a batching knob).
_SECRET_LAST_WORDS = {
    "secret",
    "password",
    "passwd",
    "pwd",
    "token",
    "credential",
    "credentials",
    "apikey",
    "passphrase",
    "sas",
}


_KEY_QUALIFIERS = {"api", "access", "secret", "private", "account", "master", "signing", "encryption", "client"}


# Values that are secrets whatever their key: cloud and API tokens, private keys, passwords in URLs.
SECRET_VALUE = re.compile(
    r"AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{30,}|xox[abpr]-[A-Za-z0-9-]{10,}|dapi[0-9a-f]{32}"
    r"|sk-[A-Za-z0-9_-]{20,}|eyJ[\w-]+\.eyJ[\w-]+\.[\w-]+|-----BEGIN [A-Z ]*PRIVATE KEY-----"
)


URL_PASSWORD = re.compile(r"(://[^/\s:@]+:)[^/\s@]+@")


def is_secret_name(name: str) -> bool:
    """Whether a key or variable called ``name`` holds a secret (password, token, api_key, ...)."""
    words = [w for w in re.split(r"[^a-z0-9]+", name.lower()) if w]
    if not words:
        return False
    last = words[-1]
    return last in _SECRET_LAST_WORDS or (last == "key" and len(words) > 1 and words[-2] in _KEY_QUALIFIERS)


def redact(data: Any, secret_paths: set[tuple[str, ...]] | None = None, path: tuple[str, ...] = ()) -> Any:
    """``data`` with values that came from secret-looking variables (at ``secret_paths``), or sit under
    secret-looking keys, replaced; ``path`` is where ``data`` sits in the whole config."""
    secret_paths = secret_paths or set()
    if isinstance(data, dict):
        return {k: redact(v, secret_paths, path + (str(k),)) for k, v in data.items()}
    if isinstance(data, list):
        return [redact(v, secret_paths, path + (str(i),)) for i, v in enumerate(data)]
    if path in secret_paths or (path and is_secret_name(path[-1]) and data not in (None, "")):
        return "***redacted***"
    if isinstance(data, str):
        if SECRET_VALUE.search(data):
            return "***redacted***"
        return URL_PASSWORD.sub(r"\1***@", data)
    return data
