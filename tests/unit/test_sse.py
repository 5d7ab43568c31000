import json

import httpx

from lengthwise.core.sse import sse_data


async def _payloads(raw: bytes) -> list[object]:
    response = httpx.Response(200, stream=httpx.ByteStream(raw))
    return [json.loads(d) if d != "[DONE]" else d async for d in sse_data(response)]


async def test_sse_lines_split_on_newlines_only() -> None:
    raw = 'data: {"a": "line\u2028separator"}\r\n\r\ndata: [DONE]'.encode()
    assert await _payloads(raw) == [{"a": "line\u2028separator"}, "[DONE]"]


async def test_sse_accepts_data_without_space_and_skips_other_fields() -> None:
    raw = b': keep-alive\n\nevent: x\ndata:{"b": 1}\n\ndata: [DONE]\n\n'
    assert await _payloads(raw) == [{"b": 1}, "[DONE]"]
