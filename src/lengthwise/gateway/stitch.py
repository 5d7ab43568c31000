"""One answer from the runs of a preemptible request: the client sees one uninterrupted stream.

A preemptible request is streamed from the backend with `return_token_ids` (`resumable`);
each preemption ends a run and a continuation starts the next. `Stitcher` reads the runs'
events and writes the client's: every event carries the first run's `id` and `created`,
the token ids the gateway asked for are nulled (as vLLM writes them when not asked for),
a resumed run's opening role chunk is dropped, and one final `usage` counts the original
prompt and every token generated. A client that did not stream gets the answer assembled
into one completion object.

Events are re-encoded as vLLM encodes them (compact JSON, UTF-8), so an answer never
preempted reads as the engine wrote it, byte for byte apart from those token ids.
"""

from __future__ import annotations

import json
from typing import Any

from lengthwise.gateway.proxy import SseEvents
from lengthwise.gateway.resumable import Transcript
from lengthwise.predict.base import Endpoint

_DONE = b"data: [DONE]\n\n"


def _encode(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


class Stitcher(SseEvents):
    """The client's side of a preemptible request; `begin()` before each run, `feed` its bytes."""

    def __init__(self, endpoint: Endpoint, client_streams: bool, client_wants_usage: bool) -> None:
        super().__init__()
        self.endpoint = endpoint
        self.client_streams = client_streams
        self.client_wants_usage = client_wants_usage
        self.transcript = Transcript()
        #: Runs started upstream (1 + preemptions).
        self.runs = 0
        #: `data: [DONE]` came: the answer is complete.
        self.done = False
        #: The current run's `usage` (a resumed run's prefill and cached tokens).
        self.run_usage: dict[str, Any] | None = None
        self.finish_reason: str | None = None
        self.stop_reason: Any = None
        self._head: dict[str, Any] | None = None  # id, created, model of the first run
        self._fingerprint: Any = None
        self._usage_event: dict[str, Any] | None = None
        self._held: dict[str, Any] | None = None  # a run's last chunk, until its usage chunk has passed
        self._out = bytearray()

    def begin(self) -> None:
        self.runs += 1
        self.run_usage = None

    @property
    def preempted(self) -> bool:
        return self.runs > 1

    def take(self, chunk: bytes) -> bytes:
        """Feed a run's bytes; the client's bytes to send (nothing for a client that does not stream)."""
        self.feed(chunk)
        out, self._out = bytes(self._out), bytearray()
        return out

    def finish(self) -> bytes:
        """The last run ended (with or without its [DONE]): what the client still needs."""
        self.flush()
        if not self.done:
            self._end()
        out, self._out = bytes(self._out), bytearray()
        return out

    def usage(self) -> dict[str, Any] | None:
        """The request's usage: the original prompt, every token generated over all runs (the engine's
        own, when it was never preempted and sent one; counted from the token ids otherwise)."""
        usage = dict(self._usage_event["usage"]) if self._usage_event else None
        if (usage is not None and not self.preempted) or not self.transcript.counted:
            return usage
        prompt_ids = self.transcript.prompt_token_ids
        prompt = len(prompt_ids) if prompt_ids is not None else (usage or {}).get("prompt_tokens", 0)
        completion = self.transcript.generated
        return {**(usage or {}), "prompt_tokens": prompt, "total_tokens": prompt + completion,
                "completion_tokens": completion, "prompt_tokens_details": None}

    def body(self) -> bytes:
        """The answer as one completion object, for a client that did not stream."""
        head = self._head or {}
        text = "".join(self.transcript.text)
        choice: dict[str, Any] = {"index": 0}
        if self.endpoint == "chat":
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        choice.update(logprobs=None, finish_reason=self.finish_reason, stop_reason=self.stop_reason)
        obj = {"id": head.get("id"), "object": "chat.completion" if self.endpoint == "chat" else "text_completion",
               "created": head.get("created"), "model": head.get("model"), "choices": [choice],
               "usage": self.usage()}
        if self._fingerprint is not None:
            obj["system_fingerprint"] = self._fingerprint
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()

    # ---- events -------------------------------------------------------------------------

    def _event(self, event: bytes | bytearray) -> None:
        for line in bytes(event).splitlines():
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                self._end()
                continue
            try:
                obj = json.loads(data)
            except ValueError:
                obj = None
            if not isinstance(obj, dict) or "choices" not in obj:  # an error event, or not ours to read
                self._send_raw(line + b"\n\n")
                continue
            self._chunk(obj)

    def _chunk(self, obj: dict[str, Any]) -> None:
        if self._head is None:
            self._head = {k: obj.get(k) for k in ("id", "created", "model")}
        obj["id"], obj["created"] = self._head["id"], self._head["created"]
        if obj.get("system_fingerprint") is not None:
            self._fingerprint = obj["system_fingerprint"]
        prompt_ids = obj.get("prompt_token_ids")
        for choice in obj["choices"]:
            prompt_ids = choice.get("prompt_token_ids", prompt_ids)
        if prompt_ids is not None and self.runs == 1:
            self.transcript.prompt_token_ids = list(prompt_ids)
        _null(obj, "prompt_token_ids")
        if isinstance(obj.get("usage"), dict):
            self.run_usage = obj["usage"]
            if not obj["choices"]:  # the run's usage chunk: the client's comes at the end
                self._usage_event = obj
                return
        if not obj["choices"]:
            self._send(obj)
            return
        choice = obj["choices"][0]
        self._read_choice(choice)
        if self.runs > 1 and self._opening(choice):
            return  # a resumed run's role chunk: the client had it from the first run
        if self.endpoint == "chat" and not choice.get("delta") and choice.get("finish_reason") is None:
            return  # a chunk only for the token ids the gateway asked for: vLLM sends none without them
        self._flush_held()
        if choice.get("finish_reason") is not None:
            self._held = obj  # the usage chunk may carry the run's system_fingerprint
        else:
            self._send(obj)

    def _read_choice(self, choice: dict[str, Any]) -> None:
        transcript = self.transcript
        delta = choice.get("delta") if self.endpoint == "chat" else choice
        delta = delta if isinstance(delta, dict) else {}
        text = delta.get("content") if self.endpoint == "chat" else delta.get("text")
        if any(delta.get(k) for k in ("tool_calls", "reasoning_content", "reasoning", "function_call")):
            transcript.stuck = "the answer began a tool call or reasoning"
        ids = choice.get("token_ids")
        if isinstance(ids, list):
            transcript.token_ids.extend(ids)
            if ids or text:
                transcript.held_back = not text
        elif text:
            transcript.counted = False
        _null(choice, "token_ids", "prompt_token_ids")
        if text:
            transcript.text.append(text)
        if choice.get("finish_reason") is not None:
            self.finish_reason, self.stop_reason = choice["finish_reason"], choice.get("stop_reason")

    def _opening(self, choice: dict[str, Any]) -> bool:
        delta = choice.get("delta")
        return isinstance(delta, dict) and "role" in delta and not delta.get("content") and \
            choice.get("finish_reason") is None

    def _end(self) -> None:
        """The answer is complete: its last chunk, the one usage (if asked for), [DONE]."""
        self.done = True
        if self._held is not None and self._usage_event is not None and not self.client_wants_usage \
                and self._held.get("system_fingerprint") is None and self._fingerprint is not None:
            self._held["system_fingerprint"] = self._fingerprint  # where vLLM puts it without a usage chunk
        self._flush_held()
        if self.client_wants_usage and self._usage_event is not None:
            self._send({**self._usage_event, "usage": self.usage()})
        if self.client_streams:
            self._out += _DONE

    def _flush_held(self) -> None:
        if self._held is not None:
            self._send(self._held)
            self._held = None

    def _send(self, obj: dict[str, Any]) -> None:
        if self.client_streams:
            self._out += _encode(obj)

    def _send_raw(self, event: bytes) -> None:
        if self.client_streams:
            self._out += event


def _null(obj: dict[str, Any], *keys: str) -> None:
    """Set the keys `obj` has to None: vLLM writes them as null when the client did not ask."""
    for key in keys:
        if key in obj:
            obj[key] = None
