"""Client API keys: `Authorization: Bearer KEY`, compared in constant time."""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from starlette.types import Scope

from lengthwise.gateway.errors import GatewayError


class ApiKeys:
    """The keys clients may use; none: every request is let in."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._keys = [key.encode() for key in keys]

    def check(self, scope: Scope) -> None:
        """Raise a 401 GatewayError unless the request carries one of the keys."""
        if not self._keys:
            return
        token = b""
        for name, value in scope["headers"]:
            if name == b"authorization" and value[:7].lower() == b"bearer ":
                token = value[7:].strip()
        matched = False
        for key in self._keys:  # compare with every key: time does not tell which one matched
            matched |= hmac.compare_digest(token, key)
        if not matched:
            raise GatewayError(401, "invalid or missing API key (Authorization: Bearer KEY)",
                               code="invalid_api_key", headers={"www-authenticate": "Bearer"})
