"""Credentials in a backend URL (`http://user:pass@host:port`): out of the URL, into a header, never printed.

aiohttp refuses a request that carries both URL credentials and an Authorization header
(each request with a client key got a 500), and a URL with a password ends up in logs,
metric labels and the start-up banner. So the gateway keeps only the bare URL of each
backend (`GatewayConfig.backend_urls`), sends the credentials as `Authorization: Basic`
on requests that have no Authorization of their own (a `--backend-api-key` or the
client's key wins), and prints a URL as the user typed it only through `redacted`. The
headers are added by `lengthwise.gateway.backend_auth`; this module only reads URLs, and
loads aiohttp only for a URL that carries credentials (the command line starts without it).
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

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
    import aiohttp
    from yarl import URL

    parsed = URL(url)
    auth = aiohttp.BasicAuth.from_url(parsed)
    return str(parsed.with_user(None)), auth.encode() if auth is not None else None
