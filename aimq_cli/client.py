"""The AIMQ API over HTTP, exactly as any other client uses it, for `aimq score` and `aimq predict`.

Everything a person can get wrong (API down, a file the API refuses, a record with a bad field, an
unknown group) ends in ``CliError`` with one line built from the API's JSON error body.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import httpx

from aimq_cli.errors import CliError
from aimq_serving.schema import allowed_note


def describe_field_error(err: Mapping[str, Any], batch: bool) -> str:
    field = err.get("field")
    row = err.get("row")
    where = field or "body"
    if row is not None and batch:
        where = f"records[{row}]" + (f".{field}" if field else "")
    text = f"{where}: {err.get('message', 'invalid value')}"
    allowed = err.get("allowed")
    if allowed:
        text += allowed_note(allowed)
    return text


def api_error(response: httpx.Response, what: str, batch: bool = False) -> CliError:
    """One line from an error answer: the API's ``detail`` and each ``errors`` item."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "detail" in body:
        detail = body["detail"]
        if not isinstance(detail, str):  # FastAPI's own 4xx bodies carry a list here
            detail = json.dumps(detail)
        items = body.get("errors") or []
        line = detail + (": " + "; ".join(describe_field_error(e, batch) for e in items) if items else "")
    else:
        line = f"HTTP {response.status_code}: {response.text.strip()[:300] or response.reason_phrase}"
    return CliError(f"{what}: {line}")


class Api:
    """A thin client whose failures are CliErrors saying what to do."""

    def __init__(self, base_url: str, timeout_s: float = 30.0, api_key: str | None = None):
        self.base_url = base_url.rstrip("/")
        try:
            url = httpx.URL(self.base_url)
        except httpx.InvalidURL as exc:
            raise CliError(f"invalid API URL {base_url!r}: {exc}") from exc
        if url.scheme not in ("http", "https") or not url.host:
            raise CliError(f"invalid API URL {base_url!r}: expected e.g. http://127.0.0.1:8000")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
        self.http = httpx.Client(base_url=self.base_url, timeout=timeout_s, headers=headers)
        self.sends_key = bool(api_key)

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def url(self, path: str) -> str:
        return self.base_url + path

    def unreachable(self, exc: httpx.TransportError) -> CliError:
        reason = str(exc) or type(exc).__name__
        return CliError(
            f"the API at {self.base_url} is not reachable ({reason}); start it with 'aimq up', "
            "or point --api-url / AIMQ_API_URL at it"
        )

    def request(self, method: str, path: str, what: str, batch: bool = False, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise self.unreachable(exc) from exc
        if response.is_error:
            raise self.error(response, what, batch)
        return response

    def error(self, response: httpx.Response, what: str, batch: bool = False) -> CliError:
        if response.status_code == 401:
            if self.sends_key:
                return CliError(f"the API at {self.base_url} refused the API key (AIMQ_API_KEY / --api-key)")
            return CliError(f"the API at {self.base_url} requires an API key: set AIMQ_API_KEY or pass --api-key")
        return api_error(response, what, batch)

    @contextmanager
    def download(self, path: str, what: str) -> Iterator[httpx.Response]:
        try:
            with self.http.stream("GET", path) as response:
                if response.is_error:
                    response.read()
                    raise self.error(response, what)
                yield response
        except httpx.TransportError as exc:
            raise self.unreachable(exc) from exc
