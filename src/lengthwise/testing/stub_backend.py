"""A fast OpenAI-compatible stub engine for gateway tests, load tests and benchmarks.

It answers `/v1/chat/completions` and `/v1/completions` (streaming or not) the way
vLLM does: the same JSON shapes, SSE framing, `stream_options.include_usage` chunk
and `usage.prompt_tokens_details.cached_tokens` (from a small prefix cache). Answer
lengths come from `max_tokens` (as with `ignore_eos`) or a `length_fn`; faults can be
switched on at run time (`stub.fault = "down"`). It is a bare ASGI callable, so that
the stub is never the bottleneck of a benchmark.

    python -m lengthwise.testing.stub_backend --port 8200
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from lengthwise.gateway.validation import enforced_max_tokens

Fault = Literal["down", "error", "garbage", "hang", "cut"]
#: What each fault does: "down" → 503 everywhere, health included; "error" → 500 on
#: completions; "garbage" → 200 with a body that is not JSON; "hang" → no answer until
#: the client leaves; "cut" → the connection drops after the first streamed token.
FAULTS: tuple[str, ...] = ("down", "error", "garbage", "hang", "cut")

CHARS_PER_TOKEN = 4
#: The token id of the answer's i-th token is GENERATED_TOKEN_BASE + i; prompt tokens are below it.
GENERATED_TOKEN_BASE = 100_000
#: Blocks of one prompt the prefix cache looks up at most (128K characters).
MAX_PROMPT_BLOCKS = 256


@dataclass
class Received:
    """One completion request as the stub saw it."""

    path: str
    body: dict[str, Any]
    headers: dict[str, str]
    at: float


class PrefixCache:
    """An LRU of prompt blocks: how many leading characters of a prompt were seen before."""

    def __init__(self, capacity_blocks: int, block_chars: int) -> None:
        self.capacity = capacity_blocks
        self.block_chars = block_chars
        self._blocks: OrderedDict[bytes, None] = OrderedDict()

    def lookup_and_insert(self, text: str) -> int:
        """Cached characters (whole blocks only, like vLLM), then remember the prompt's blocks: its
        first MAX_PROMPT_BLOCKS only, so that a megabyte prompt does not make the stub the
        bottleneck of a benchmark."""
        digest = hashlib.blake2b(digest_size=16)
        cached, hit = 0, True
        end = min(len(text) - self.block_chars + 1, MAX_PROMPT_BLOCKS * self.block_chars)
        for start in range(0, end, self.block_chars):
            digest.update(text[start : start + self.block_chars].encode())
            key = digest.digest()
            if hit and key in self._blocks:
                cached = start + self.block_chars
            else:
                hit = False
            self._blocks[key] = None
            self._blocks.move_to_end(key)
        while len(self._blocks) > self.capacity:
            self._blocks.popitem(last=False)
        return cached


def prompt_text(path: str, body: dict[str, Any]) -> str:
    """The prompt as plain text (chat messages joined with their roles)."""
    if path.endswith("/chat/completions"):
        parts = []
        for message in body.get("messages") or []:
            content = message.get("content") if isinstance(message, dict) else message
            if isinstance(content, list):
                content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
            parts.append(f"{message.get('role', '') if isinstance(message, dict) else ''}:{content}\n")
        return "".join(parts)
    prompt = body.get("prompt", "")
    return prompt if isinstance(prompt, str) else json.dumps(prompt)


def prompt_token_ids(text: str) -> list[int]:
    """The stub's tokenization of a prompt: one id per CHARS_PER_TOKEN characters, below GENERATED_TOKEN_BASE."""
    count = max(1, len(text) // CHARS_PER_TOKEN)
    return [1000 + zlib.crc32(text[i * CHARS_PER_TOKEN : (i + 1) * CHARS_PER_TOKEN].encode()) % 50_000
            for i in range(count)]


class ContinuationError(ValueError):
    """A continuation whose answer so far is not what the stub would have answered."""


def answered_so_far(path: str, body: dict[str, Any], vocabulary: tuple[str, ...]) -> int:
    """How many answer tokens a continuation carries (0 for a fresh request), as vLLM resumes: a chat's
    final assistant message with `continue_final_message`, a completion's trailing answer token ids."""
    if path.endswith("/chat/completions"):
        if not body.get("continue_final_message"):
            return 0
        if body.get("add_generation_prompt") is not False:
            raise ContinuationError("Cannot set both `continue_final_message` and `add_generation_prompt` to True.")
        content, done, i = str(body["messages"][-1].get("content") or ""), 0, 0
        while done < len(content) and content.startswith(vocabulary[i % len(vocabulary)], done):
            done += len(vocabulary[i % len(vocabulary)])
            i += 1
        if done != len(content):
            raise ContinuationError(f"the final message is not the stub's answer: {content[done:done + 40]!r}")
        return i
    prompt = body.get("prompt")
    if not (isinstance(prompt, list) and prompt and isinstance(prompt[0], int)):
        return 0
    answer = [t for t in prompt if t >= GENERATED_TOKEN_BASE]
    if answer != list(range(GENERATED_TOKEN_BASE, GENERATED_TOKEN_BASE + len(answer))) or \
            prompt[len(prompt) - len(answer):] != answer:
        raise ContinuationError("the prompt's trailing answer tokens are not the stub's answer")
    return len(answer)


def requested_tokens(path: str, body: dict[str, Any], default: int) -> int:
    """The cap vLLM enforces for the endpoint (the stub behaves as with ignore_eos): chat reads
    `max_completion_tokens` or `max_tokens`, completions `max_tokens` only."""
    endpoint = "chat" if path.endswith("/chat/completions") else "completion"
    return enforced_max_tokens(endpoint, body) or default


@dataclass
class StubBackend:
    """The stub engine: an ASGI app. Fields may be changed while it serves."""

    models: tuple[str, ...] = ("stub-model",)
    #: Output tokens when the request gives no max_tokens.
    default_tokens: int = 16
    #: Tokens of a request: defaults to `requested_tokens(path, body, default_tokens)`.
    length_fn: Callable[[dict[str, Any]], int] | None = None
    #: Answer text for a request (e.g. a number for prediction queries); None → the vocabulary's tokens.
    answer_fn: Callable[[dict[str, Any]], str | None] | None = None
    #: The answer's i-th token is vocabulary[i % len(vocabulary)], also in a continuation (which
    #: starts where its answer so far ends), so that a resumed answer equals an unbroken one.
    vocabulary: tuple[str, ...] = ("tok ",)
    #: Delay before the first byte of a completion, and between streamed tokens.
    latency_s: float = 0.0
    token_interval_s: float = 0.0
    #: Seconds between `data: [DONE]` and the end of the body (a real server's finishing work).
    done_linger_s: float = 0.0
    fault: Fault | None = None
    #: Keep every completion request in `received` (tests; off for benchmarks).
    record: bool = True
    prefix_cache: PrefixCache = field(default_factory=lambda: PrefixCache(4096, 128 * CHARS_PER_TOKEN))
    received: list[Received] = field(default_factory=list)
    #: Completion requests being answered now, and the most seen at once.
    inflight: int = 0
    max_inflight_seen: int = 0
    #: Output tokens sent so far, served at /metrics as vLLM's `vllm:generation_tokens_total`.
    generated_tokens: int = 0
    _ids: itertools.count = field(default_factory=itertools.count, repr=False)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        path, method = scope["path"], scope["method"]
        if self.fault == "down":
            await _send(send, 503, b'{"error":{"message":"stub is down","type":"ServiceUnavailable","code":503}}')
        elif path == "/health" and method == "GET":
            await _send(send, 200, b"")
        elif path == "/v1/models" and method == "GET":
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "stub"} for m in self.models]
            await _send(send, 200, json.dumps({"object": "list", "data": data}).encode())
        elif path == "/metrics" and method == "GET":
            await _send(send, 200, self._metrics().encode(), b"text/plain; version=0.0.4")
        elif path in ("/v1/chat/completions", "/v1/completions") and method == "POST":
            self.inflight += 1
            self.max_inflight_seen = max(self.max_inflight_seen, self.inflight)
            try:
                await self._complete(scope, receive, send, path)
            finally:
                self.inflight -= 1
        else:
            await _send(send, 404, b'{"error":{"message":"not found","type":"NotFoundError","code":404}}')

    def _metrics(self) -> str:
        """The two vLLM series a benchmark reads: requests running, and output tokens generated."""
        return (
            "# TYPE vllm:num_requests_running gauge\n"
            f"vllm:num_requests_running {self.inflight}\n"
            "# TYPE vllm:generation_tokens_total counter\n"
            f"vllm:generation_tokens_total {self.generated_tokens}\n"
        )

    async def _complete(self, scope: dict[str, Any], receive: Any, send: Any, path: str) -> None:
        raw = await _read_body(receive)
        try:
            body = json.loads(raw)
        except ValueError:
            await _send(send, 400, b'{"error":{"message":"invalid JSON","type":"BadRequestError","code":400}}')
            return
        if self.record:
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            self.received.append(Received(path, body, headers, time.monotonic()))
        if self.fault == "hang":
            await _disconnected(receive)
            return
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if self.fault == "error":
            await _send(send, 500, b'{"error":{"message":"stub failure","type":"InternalServerError","code":500}}')
            return
        if self.fault == "garbage":
            await _send(send, 200, b"<html>not json</html>")
            return
        try:
            start = answered_so_far(path, body, self.vocabulary)
        except ContinuationError as e:
            error = {"error": {"message": str(e), "type": "BadRequestError", "code": 400}}
            await _send(send, 400, json.dumps(error).encode())
            return
        answer = self.answer_fn(body) if self.answer_fn else None
        if answer is not None:
            pieces = [answer]
        else:
            n = self.length_fn(body) if self.length_fn else requested_tokens(path, body, self.default_tokens)
            pieces = [self.vocabulary[i % len(self.vocabulary)] for i in range(start, start + n)]
        token_ids = list(range(GENERATED_TOKEN_BASE + start, GENERATED_TOKEN_BASE + start + len(pieces))) \
            if body.get("return_token_ids") else None
        prompt = prompt_text(path, body)
        resumed_ids = start and path == "/v1/completions"  # a continuation's prompt is its token ids
        prompt_tokens = len(body["prompt"]) if resumed_ids else max(1, len(prompt) // CHARS_PER_TOKEN)
        # Tokenized only when returned: an 8 MB prompt's ids took the stub 0.6 s of CPU.
        prompt_ids = None if token_ids is None else body["prompt"] if resumed_ids else prompt_token_ids(prompt)
        usage = {
            "prompt_tokens": prompt_tokens,
            "total_tokens": prompt_tokens + len(pieces),
            "completion_tokens": len(pieces),
            "prompt_tokens_details": {"cached_tokens": self.prefix_cache.lookup_and_insert(prompt) // CHARS_PER_TOKEN},
        }
        model = body.get("model") or self.models[0]
        chat = path == "/v1/chat/completions"
        rid = f"{'chatcmpl' if chat else 'cmpl'}-stub{next(self._ids)}"
        if body.get("stream") is True:
            gone = asyncio.ensure_future(_disconnected(receive))
            try:
                await self._stream(send, body, chat, rid, model, pieces, usage, gone,
                                   (prompt_ids, token_ids) if token_ids is not None else None)
            finally:
                gone.cancel()
            return
        choice: dict[str, Any] = {"index": 0, "finish_reason": "length", "logprobs": None}
        if chat:
            choice["message"] = {"role": "assistant", "content": "".join(pieces)}
        else:
            choice["text"] = "".join(pieces)
        if token_ids is not None:
            choice["token_ids"] = token_ids
        self.generated_tokens += len(pieces)
        obj = "chat.completion" if chat else "text_completion"
        response = {"id": rid, "object": obj, "created": int(time.time()), "model": model,
                    "choices": [choice], "usage": usage}
        if token_ids is not None:
            response["prompt_token_ids"] = prompt_ids
        await _send(send, 200, json.dumps(response, separators=(",", ":")).encode())

    async def _stream(self, send: Any, body: dict[str, Any], chat: bool, rid: str, model: str,
                      pieces: list[str], usage: dict[str, Any], gone: asyncio.Future[None],
                      ids: tuple[list[int], list[int]] | None) -> None:
        """Stream the answer token by token; stop when the client goes away (as vLLM aborts). With
        `ids` (prompt's, answer's: `return_token_ids`), chunks carry them where vLLM puts them."""
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream; charset=utf-8")]})
        head = {"id": rid, "object": "chat.completion.chunk" if chat else "text_completion",
                "created": int(time.time()), "model": model}

        async def event(choices: list[dict[str, Any]], **extra: Any) -> None:
            data = json.dumps({**head, "choices": choices, **extra}, separators=(",", ":"))
            await send({"type": "http.response.body", "body": f"data: {data}\n\n".encode(), "more_body": True})

        if chat:
            await event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                          "finish_reason": None}], **({"prompt_token_ids": ids[0]} if ids else {}))
        for i, piece in enumerate(pieces):
            if i and self.token_interval_s:
                await asyncio.sleep(self.token_interval_s)
            if gone.done():
                return
            if self.fault == "cut" and i == 1:
                raise ConnectionAbortedError("stub: connection cut mid-stream (fault)")
            last = i == len(pieces) - 1
            content = {"delta": {"content": piece}} if chat else {"text": piece}
            if ids:
                content["token_ids"] = [ids[1][i]]
                if not chat:  # vLLM: on every chunk, null but on the first
                    content["prompt_token_ids"] = ids[0] if i == 0 else None
            self.generated_tokens += 1
            await event([{"index": 0, **content, "logprobs": None, "finish_reason": "length" if last else None}])
        options = body.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage"):
            await event([], usage=usage)
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": bool(self.done_linger_s)})
        if self.done_linger_s:
            await asyncio.sleep(self.done_linger_s)
            await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _disconnected(receive: Any) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _read_body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _send(send: Any, status: int, body: bytes, content_type: bytes = b"application/json") -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    """Serve the stub from the command line (for benchmarks and manual tests)."""
    import typer

    from lengthwise.gateway.server import run

    def serve(
        port: int = typer.Option(8200, help="Port to listen on (127.0.0.1)."),
        model: list[str] = typer.Option(["stub-model"], help="Served model name (repeatable)."),
        latency_ms: float = typer.Option(0.0, help="Delay before the first byte of each completion."),
        token_interval_ms: float = typer.Option(0.0, help="Delay between streamed tokens."),
        default_tokens: int = typer.Option(16, help="Output tokens when a request gives no max_tokens."),
    ) -> None:
        stub = StubBackend(models=tuple(model), default_tokens=default_tokens, latency_s=latency_ms / 1000,
                           token_interval_s=token_interval_ms / 1000, record=False)
        run(stub, "127.0.0.1", port)

    typer.run(serve)


if __name__ == "__main__":
    main()
