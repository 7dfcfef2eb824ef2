"""HMAC signatures over model artifacts.

A pickle is code: whoever can write a pickle that the API unpickles owns the API. So every stored
version carries an HMAC over the hashes of all its artifacts, and nothing is deserialised before the
signature checks out (compared in constant time).
"""

from __future__ import annotations

import hashlib
import hmac


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def manifest(group: str, version: int, artifacts: dict[str, bytes]) -> bytes:
    lines = [f"group={group}", f"version={version}"]
    lines += [f"{name}={sha256_hex(artifacts[name])}" for name in sorted(artifacts)]
    return "\n".join(lines).encode()


def sign(key: bytes, group: str, version: int, artifacts: dict[str, bytes]) -> str:
    return hmac.new(key, manifest(group, version, artifacts), hashlib.sha256).hexdigest()


def verify(key: bytes, group: str, version: int, artifacts: dict[str, bytes], signature: str) -> bool:
    return hmac.compare_digest(sign(key, group, version, artifacts), signature)
