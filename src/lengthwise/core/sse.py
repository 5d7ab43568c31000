"""Reading server-sent events from an OpenAI-compatible streaming response."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx


async def sse_data(response: httpx.Response) -> AsyncIterator[str]:
    """The `data:` payloads of a server-sent event stream, `[DONE]` included.

    Lines are split on b"\\n" only, as SSE says: httpx's `aiter_lines` also splits on
    U+2028 and other Unicode separators, which answers may contain inside a JSON string.
    """
    buffer = b""
    async for chunk in response.aiter_bytes():
        *lines, buffer = (buffer + chunk).split(b"\n")
        for line in lines:
            if line.startswith(b"data:"):
                yield line[5:].strip().decode()
    if buffer.startswith(b"data:"):
        yield buffer[5:].strip().decode()
