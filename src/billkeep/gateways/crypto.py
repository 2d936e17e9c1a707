"""Gateway secrets at rest: the server key, and the two ways billkeep encrypts with it.

The server key comes from `BILLKEEP_SECRET_KEY` (any string of at least 32 characters, e.g.
`python -c "import secrets; print(secrets.token_urlsafe(32))"`; several comma-separated keys rotate:
the first encrypts, all decrypt). Without it, a SQLite deployment creates a key file beside its
database on first use (mode 0600); a PostgreSQL deployment refuses to start, because servers on
several machines would each invent a different key and none could read the others' secrets.

Two sub-keys are derived (HKDF-SHA256) from each server key:
- `encrypt`/`decrypt`: Fernet (AES-128-CBC + HMAC-SHA256, random IV) for the stored columns.
- `seal`/`unseal`: AES-SIV, deterministic, for secrets inside a command's stored request. A command
  request is fingerprinted for idempotency (the same request under the same key must fingerprint
  the same), so its secrets must encrypt the same way each time; AES-SIV leaks only whether two
  sealed values are equal, never the value.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
from collections.abc import Mapping
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "MIN_SECRET_KEY_CHARS",
    "SEALED_PREFIX",
    "SECRET_KEY_ENV",
    "SecretBox",
    "SecretKeyMissing",
    "SecretUnreadable",
    "key_file_path",
    "secret_box_for_database",
]

SECRET_KEY_ENV = "BILLKEEP_SECRET_KEY"
MIN_SECRET_KEY_CHARS = 32
SEALED_PREFIX = "sealed:v1:"
_KEY_FILE_SUFFIX = ".secret-key"
_GENERATED_KEY_BYTES = 32
_FERNET_INFO = b"billkeep gateway secrets: fernet"
_SIV_INFO = b"billkeep command request seal: aes-siv"
_SIV_KEY_BYTES = 64  # AES-256-SIV
_SIV_CONTEXT = b"billkeep-sealed-secret"


class SecretKeyMissing(RuntimeError):
    """No server key is configured and none can be created safely."""


class SecretUnreadable(RuntimeError):
    """A ciphertext does not open with any configured key (wrong or rotated-out key, or tampering)."""


def _derive(material: str, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(
        material.encode("utf-8")
    )


class SecretBox:
    """Encrypts gateway secrets with the server key(s); the first key encrypts, all decrypt."""

    def __init__(self, server_keys: list[str]) -> None:
        keys = [k.strip() for k in server_keys if k.strip()]
        if not keys:
            raise SecretKeyMissing("no server key given")
        short = [k for k in keys if len(k) < MIN_SECRET_KEY_CHARS]
        if short:
            raise SecretKeyMissing(
                f"{SECRET_KEY_ENV} keys must be at least {MIN_SECRET_KEY_CHARS} characters"
            )
        self._fernet = MultiFernet(
            [Fernet(base64.urlsafe_b64encode(_derive(k, _FERNET_INFO, 32))) for k in keys]
        )
        self._sivs = [AESSIV(_derive(k, _SIV_INFO, _SIV_KEY_BYTES)) for k in keys]

    # --- randomized, for stored columns -------------------------------------------------------
    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, ciphertext: str) -> str:
        try:
            return self._fernet.decrypt(ciphertext.encode("ascii")).decode("utf-8")
        except InvalidToken as exc:
            raise SecretUnreadable("a stored secret does not decrypt with the server key") from exc

    # --- deterministic, for secrets inside command requests ------------------------------------
    def seal(self, plaintext: str) -> str:
        sealed = self._sivs[0].encrypt(plaintext.encode("utf-8"), [_SIV_CONTEXT])
        return SEALED_PREFIX + base64.urlsafe_b64encode(sealed).decode("ascii")

    def unseal(self, sealed: str) -> str:
        if not sealed.startswith(SEALED_PREFIX):
            raise SecretUnreadable("not a sealed value")
        try:
            raw = base64.urlsafe_b64decode(sealed.removeprefix(SEALED_PREFIX).encode("ascii"))
        except (binascii.Error, ValueError) as exc:
            raise SecretUnreadable("a sealed value is malformed") from exc
        for siv in self._sivs:
            try:
                return siv.decrypt(raw, [_SIV_CONTEXT]).decode("utf-8")
            except InvalidToken:
                continue
        raise SecretUnreadable("a sealed value does not open with the server key")


def key_file_path(database_url: str) -> Path | None:
    """Where a SQLite database keeps its generated key; None for in-memory or other databases."""
    if not database_url.startswith("sqlite:///"):
        return None
    path = database_url.removeprefix("sqlite:///").split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return Path(path + _KEY_FILE_SUFFIX)


def _read_or_create_key_file(path: Path) -> str:
    if path.exists():
        return path.read_text(encoding="ascii").strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    generated = base64.urlsafe_b64encode(os.urandom(_GENERATED_KEY_BYTES)).decode("ascii")
    temporary = path.with_name(f"{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(generated + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        # link() fails if another process created the file first: its key wins, never ours.
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path.read_text(encoding="ascii").strip()


def secret_box_for_database(database_url: str, env: Mapping[str, str] | None = None) -> SecretBox:
    """The server's SecretBox: from BILLKEEP_SECRET_KEY, else a key file beside a SQLite database.

    Raises SecretKeyMissing for PostgreSQL (or any shared database) without the variable.
    """
    environment = os.environ if env is None else env
    configured = environment.get(SECRET_KEY_ENV, "")
    if configured.strip():
        return SecretBox(configured.split(","))
    if database_url.startswith("sqlite"):
        path = key_file_path(database_url)
        if path is None:  # an in-memory database: its secrets die with it, and so may the key
            return SecretBox([base64.urlsafe_b64encode(os.urandom(_GENERATED_KEY_BYTES)).decode()])
        return SecretBox([_read_or_create_key_file(path)])
    raise SecretKeyMissing(
        f"{SECRET_KEY_ENV} is not set. Gateway secrets are encrypted at rest with this key, and "
        "on a shared database (PostgreSQL) every server must use the same one, so billkeep will "
        f"not invent one. Set {SECRET_KEY_ENV} to a random string of at least "
        f"{MIN_SECRET_KEY_CHARS} characters, the same on every server."
    )
