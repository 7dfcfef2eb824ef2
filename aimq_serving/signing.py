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


def diagnose(
    key: bytes, group: str, version: int, artifacts: dict[str, bytes | None], signature: str, recorded: bytes | None
) -> tuple[str, list[str]]:
    """Why a version fails verification, and which artifacts changed, for the log.

    ``recorded`` is the manifest stored when the version was signed. Only when the signature
    verifies it are its digests trusted; then comparing them with the artifacts' names the changed
    ones. It never decides whether a version is loaded: ``verify`` alone does."""
    missing = sorted(name for name, data in artifacts.items() if data is None)
    if missing:
        return f"artifacts missing: {', '.join(missing)}", missing
    if recorded is None:
        return "an artifact (onnx, pickle, spec) or the signature was changed (no recorded digests to say which)", []
    if not hmac.compare_digest(hmac.new(key, recorded, hashlib.sha256).hexdigest(), signature):
        return (
            "the signature does not verify with this signing key: signed with another key, "
            "or the signature was changed",
            [],
        )
    digests = dict(line.split("=", 1) for line in recorded.decode(errors="replace").splitlines() if "=" in line)
    if (digests.get("group"), digests.get("version")) != (group, str(version)):
        return f"signed as group {digests.get('group')} version {digests.get('version')}, stored under another", []
    changed = [name for name in sorted(artifacts) if digests.get(name) != sha256_hex(artifacts[name] or b"")]
    return f"changed after signing: {', '.join(changed)}", changed
