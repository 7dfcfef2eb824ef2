"""Optional API-key authentication: off while no key is configured (local use), on in the compose
and Kubernetes deployments.

Keys come from ``AIMQ_API_KEYS`` and/or the file ``AIMQ_API_KEYS_FILE`` (a mounted Kubernetes or
compose secret): entries ``name:key`` or a bare ``key``, separated by commas or newlines, ``#``
starts a comment line. The name (``key1``, ``key2``... by position when none is given) is what logs,
429 answers and the rate limit see; the key itself is never logged or stored in Redis.

The file is read again when it changes (looked at every ``AIMQ_API_KEYS_FILE_CHECK_S``), so a rotated
secret takes effect without a restart; a changed file that cannot be used (unreadable, empty, a bad
entry) is logged and the keys in force stay.

A request sends its key as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. The key is
hashed once and its SHA-256 compared with every configured key's in constant time, without stopping
at a match, so the timing says neither which key matched nor how much of one did.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from aimq_serving.api.errors import error_body_ref
from aimq_serving.api.middleware import SCOPE_API_KEY, address_key, send_json
from aimq_serving.api.ratelimit import LimiterUnavailable, RateLimiter
from aimq_serving.settings import AimqSettings

log = logging.getLogger(__name__)

# Reachable without a key: probes and the Prometheus scrape (orchestrators send no credentials;
# /metrics holds counts and model versions, no data), the upload page and its files (its API calls
# need the key), and the API's own description (/docs can then send a key with "Authorize").
PUBLIC_PATHS = frozenset(
    {
        "/health",
        "/ready",
        "/metrics",
        "/",
        "/ui/config",
        "/docs",
        "/docs/oauth2-redirect",
        "/redoc",
        "/openapi.json",
    }
)
PUBLIC_PREFIXES = ("/static/",)
MIN_KEY_LENGTH = 16
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
_WWW_AUTHENTICATE = 'Bearer realm="aimq"'
_SECURITY_SCHEMES = {
    "bearerAuth": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <API key>"},
    "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}


class ApiKeyConfigError(ValueError):
    pass


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


@dataclass(frozen=True)
class ApiKeys:
    """The configured keys as (name, SHA-256 of the key) pairs."""

    digests: tuple[tuple[str, bytes], ...]

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.digests]

    @classmethod
    def parse(cls, text: str, where: str) -> ApiKeys:
        entries = [
            entry.strip() for line in text.splitlines() if not line.strip().startswith("#") for entry in line.split(",")
        ]
        return cls.from_entries([e for e in entries if e], where)

    @classmethod
    def from_entries(cls, entries: Iterable[str], where: str) -> ApiKeys:
        digests: list[tuple[str, bytes]] = []
        for position, entry in enumerate(entries, 1):
            name, sep, key = entry.partition(":")
            if not sep:
                name, key = f"key{position}", entry
            elif not _NAME.fullmatch(name):
                # Said by position: the entry may be a key with a colon in it, which must not be echoed.
                raise ApiKeyConfigError(
                    f"{where}: entry {position}: the name before ':' must be letters, digits, '_.@-'"
                )
            if len(key) < MIN_KEY_LENGTH or any(c.isspace() for c in key):
                raise ApiKeyConfigError(
                    f"{where}: key {name!r} must be at least {MIN_KEY_LENGTH} characters without spaces "
                    "(make one with: openssl rand -hex 32)"
                )
            digest = hashlib.sha256(key.encode()).digest()
            if any(n == name for n, _ in digests):
                raise ApiKeyConfigError(f"{where}: the name {name!r} is given to two keys")
            if any(hmac.compare_digest(d, digest) for _, d in digests):
                raise ApiKeyConfigError(f"{where}: key {name!r} is configured twice")
            digests.append((name, digest))
        return cls(tuple(digests))

    @classmethod
    def from_settings(cls, settings: AimqSettings) -> ApiKeys | None:
        """The keys of AIMQ_API_KEYS and AIMQ_API_KEYS_FILE together; None when there are none (auth off)."""
        digests: list[tuple[str, bytes]] = []
        if settings.api_keys is not None:
            digests += cls.parse(settings.api_keys.get_secret_value(), "AIMQ_API_KEYS").digests
        if settings.api_keys_file is not None:
            path = Path(settings.api_keys_file)
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ApiKeyConfigError(f"AIMQ_API_KEYS_FILE: cannot read {path}: {exc}") from exc
            from_file = cls.parse(text, f"AIMQ_API_KEYS_FILE ({path})").digests
            if not from_file:
                # A mounted secret that came out empty must not silently turn authentication off.
                raise ApiKeyConfigError(f"AIMQ_API_KEYS_FILE: {path} holds no key")
            digests += from_file
        if not digests:
            return None
        if len({name for name, _ in digests}) != len(digests):
            raise ApiKeyConfigError("AIMQ_API_KEYS and AIMQ_API_KEYS_FILE give two keys the same name")
        return cls(tuple(digests))

    def identify(self, presented: bytes) -> str | None:
        """The name of the key ``presented`` is, or None; the same work whichever key (if any) it is."""
        digest = hashlib.sha256(presented).digest()
        found = None
        for name, expected in self.digests:
            if hmac.compare_digest(digest, expected):
                found = name
        return found


class ApiKeyRing:
    """The keys in force: those of the settings, with ``AIMQ_API_KEYS_FILE`` read again when its
    modification time, size or inode changes (a Kubernetes secret volume swaps a symlink)."""

    def __init__(self, settings: AimqSettings, keys: ApiKeys):
        self.settings = settings
        self.keys = keys
        self._path = Path(settings.api_keys_file) if settings.api_keys_file is not None else None
        self._every_s = settings.api_keys_file_check_s
        self._stamp = self._file_stamp()
        self._next_check = time.monotonic() + self._every_s

    def _file_stamp(self) -> tuple[int, int, int] | None:
        if self._path is None:
            return None
        try:
            st = os.stat(self._path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def current(self) -> ApiKeys:
        if self._path is None:
            return self.keys
        now = time.monotonic()
        if now < self._next_check:
            return self.keys
        self._next_check = now + self._every_s
        stamp = self._file_stamp()
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                keys = ApiKeys.from_settings(self.settings)
            except ApiKeyConfigError as exc:
                log.error(
                    "API keys not reloaded, the %d in force stay (%s): %s",
                    len(self.keys.digests),
                    ", ".join(self.keys.names),
                    exc,
                )
            else:
                assert keys is not None  # a configured file holds a key or raises
                self.keys = keys
                log.info("API keys reloaded from %s (%d: %s)", self._path, len(keys.names), ", ".join(keys.names))
        return self.keys


def presented_key(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """The key of ``Authorization: Bearer <key>``, else of ``X-API-Key``."""
    api_key_header = None
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.strip().partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                return token.strip()
        elif name == b"x-api-key" and api_key_header is None:
            api_key_header = value.strip()
    return api_key_header or None


class ApiKeyMiddleware:
    """401 for a request to a non-public path without a configured key. A refused request is counted
    against its address's rate limit, so guessing keys is as slow as the limit makes it."""

    def __init__(self, app: ASGIApp, keys: ApiKeyRing, limiter: RateLimiter | None):
        self.app = app
        self.keys = keys
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_public(scope["path"]):
            await self.app(scope, receive, send)
            return
        presented = presented_key(scope["headers"])
        name = self.keys.current().identify(presented) if presented is not None else None
        if name is not None:
            scope[SCOPE_API_KEY] = name
            await self.app(scope, receive, send)
            return
        await self.refuse(scope, send, presented is not None)

    async def refuse(self, scope: Scope, send: Send, wrong_key: bool) -> None:
        if self.limiter is not None:
            try:
                wait_s = await self.limiter.check(address_key(scope))
            except LimiterUnavailable:
                wait_s = None  # the answer is a 401 either way
            if wait_s is not None:
                retry = self.limiter.retry_after(wait_s)
                await send_json(
                    send,
                    429,
                    {
                        "detail": f"too many requests without a valid API key; retry in {retry} s",
                        "retry_after_s": retry,
                    },
                    {"Retry-After": str(retry)},
                )
                return
        if wrong_key:
            detail = "invalid API key"
            challenge = _WWW_AUTHENTICATE + ', error="invalid_token"'
        else:
            detail = "an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
            challenge = _WWW_AUTHENTICATE
        await send_json(send, 401, {"detail": detail}, {"WWW-Authenticate": challenge})


def document_security(app: FastAPI) -> None:
    """Declare the key in the OpenAPI schema: both header schemes, on every operation that needs one,
    with its 401 answer (so /docs offers "Authorize" and clients see which calls need the key)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        schema.setdefault("components", {}).setdefault("securitySchemes", {}).update(_SECURITY_SCHEMES)
        unauthorized = {
            "description": "no API key, or not a configured one; see WWW-Authenticate",
            "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
            "content": {"application/json": {"schema": error_body_ref(schema)}},
        }
        for path, operations in schema.get("paths", {}).items():
            if is_public(path):
                continue
            for operation in operations.values():
                operation["security"] = [{name: []} for name in _SECURITY_SCHEMES]
                operation.setdefault("responses", {}).setdefault("401", unauthorized)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
