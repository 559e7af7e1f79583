"""The shared vaults' values at rest (`vault_redis.py`, `vault_sqlite.py`): AES-256-GCM with a
random nonce each, the session and the entity as associated data (a value copied to another session
or entity does not decrypt), found by a 16-byte HMAC-SHA256 of (session, entity, value) instead of
by the value. Both keys are derived with HKDF-SHA256 from one secret (`state.vault_key`)."""

from __future__ import annotations

import hashlib
import hmac
import os
from collections import OrderedDict

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MAC_BYTES = 16
NONCE_BYTES = 12
#: Decrypted values remembered by ciphertext, so a session's table (up to `vault_values` entries,
#: loaded on every call) is not decrypted again each turn.
PLAIN_CACHE = 65536


class VaultCipher:
    def __init__(self, secret: str) -> None:
        keys = HKDF(algorithm=hashes.SHA256(), length=64, salt=None, info=b"interlock vault").derive(secret.encode())
        self._aead = AESGCM(keys[:32])
        self._mac_key = keys[32:]
        self._plain: OrderedDict[bytes, str] = OrderedDict()

    def mac(self, session: str, entity: str, value: str) -> bytes:
        message = f"{session}\x1f{entity}\x1f{value}".encode("utf-8", "surrogatepass")
        return hmac.new(self._mac_key, message, hashlib.sha256).digest()[:MAC_BYTES]

    def seal(self, session: str, entity: str, value: str) -> bytes:
        # A nonce, not an id: straight from os.urandom, never from core/randpool's shared buffer.
        nonce = os.urandom(NONCE_BYTES)
        aad = f"{session}\x1f{entity}".encode("utf-8", "surrogatepass")
        return nonce + self._aead.encrypt(nonce, value.encode("utf-8", "surrogatepass"), aad)

    def unseal(self, session: str, entity: str, blob: bytes) -> str:
        """The value (raises `cryptography.exceptions.InvalidTag` for a blob of another key or place)."""
        cached = self._plain.get(blob)
        if cached is not None:
            return cached
        aad = f"{session}\x1f{entity}".encode("utf-8", "surrogatepass")
        value = self._aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad).decode("utf-8", "surrogatepass")
        self._plain[blob] = value
        if len(self._plain) > PLAIN_CACHE:
            self._plain.popitem(last=False)
        return value


def parse_placeholder(placeholder: str) -> tuple[str, int]:
    """`<EMAIL_ADDRESS_3>` → ("EMAIL_ADDRESS", 3)."""
    entity, _, number = placeholder[1:-1].rpartition("_")
    return entity, int(number)


__all__ = ["MAC_BYTES", "NONCE_BYTES", "VaultCipher", "parse_placeholder"]
