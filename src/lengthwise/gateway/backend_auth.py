"""The Basic credentials of backend URLs, added to the gateway's own requests (see `gateway/credentials.py`)."""

from __future__ import annotations

from collections.abc import Generator, Iterable

import aiohttp
import httpx
from yarl import URL

from lengthwise.gateway.credentials import split_credentials


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
