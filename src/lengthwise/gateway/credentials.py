"""Credentials in a backend URL (`http://user:pass@host:port`): out of the URL, into a header, never printed.

aiohttp refuses a request that carries both URL credentials and an Authorization header
(each request with a client key got a 500), and a URL with a password ends up in logs,
metric labels and the start-up banner. So the gateway keeps only the bare URL of each
backend (`GatewayConfig.backend_urls`), sends the credentials as `Authorization: Basic`
on requests that have no Authorization of their own (a `--backend-api-key` or the
client's key wins), and prints a URL as the user typed it only through `redacted`.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import httpx
from yarl import URL

_HIDDEN = "***"


def redacted(url: str) -> str:
    """`url` with its user information (name and password, either may be a token) shown as `***`."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=f"{_HIDDEN}@{parts.netloc.rpartition('@')[2]}"))


def split_credentials(url: str) -> tuple[str, str | None]:
    """The URL without user information, and the `Authorization: Basic` value it carried (None: none)."""
    if "@" not in urlsplit(url).netloc:
        return url, None
    parsed = URL(url)
    auth = aiohttp.BasicAuth.from_url(parsed)
    return str(parsed.with_user(None)), auth.encode() if auth is not None else None


def _origin(url: str | URL | httpx.URL) -> tuple[str, str, int | None]:
    parsed = URL(str(url))
    return parsed.scheme, parsed.host or "", parsed.port


class BackendCredentials:
    """The Basic header of each backend that had credentials in its URL, by origin; adds it to the
    gateway's own requests (upstream, health checks, prediction queries) that carry no Authorization."""

    def __init__(self, urls: Iterable[str]) -> None:
        self._headers: dict[tuple[str, str, int | None], str] = {}
        for url in urls:
            bare, header = split_credentials(url)
            if header is not None:
                self._headers[_origin(bare)] = header

    def __bool__(self) -> bool:
        return bool(self._headers)

    def header_for(self, url: str | URL | httpx.URL) -> str | None:
        return self._headers.get(_origin(url)) if self._headers else None

    def aiohttp_middlewares(self) -> tuple[aiohttp.ClientMiddlewareType, ...]:
        """For `aiohttp.ClientSession(middlewares=...)`; none when no URL had credentials."""
        return (self._aiohttp_middleware,) if self._headers else ()

    async def _aiohttp_middleware(self, request: aiohttp.ClientRequest,
                                  handler: aiohttp.ClientHandlerType) -> aiohttp.ClientResponse:
        header = self.header_for(request.url)
        if header is not None and "authorization" not in request.headers:
            request.headers["authorization"] = header
        return await handler(request)

    def httpx_auth(self) -> httpx.Auth | None:
        """For `httpx.AsyncClient(auth=...)`; None when no URL had credentials."""
        return _HttpxBasic(self) if self._headers else None


class _HttpxBasic(httpx.Auth):
    def __init__(self, credentials: BackendCredentials) -> None:
        self.credentials = credentials

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        header = self.credentials.header_for(request.url)
        if header is not None and "authorization" not in request.headers:
            request.headers["authorization"] = header
        yield request
