"""Which requests the gateway may preempt, and the bodies that resume them exactly.

A preempted request is resumed by sending its prompt plus the text generated so far as a
continuation, with the remaining `max_tokens`: for chat, a final assistant message and vLLM's
`continue_final_message: true, add_generation_prompt: false`; for completions, the prompt's
token ids followed by the generated ones (`return_token_ids` gives both), so re-tokenizing
cannot drift. With greedy decoding the continuation is then the answer the request would
have produced unpreempted. A request whose answer would differ, or whose stream the gateway
could not stitch, is never preempted; `not_resumable` says why (docs/GATEWAY.md, "Preemption"):
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lengthwise.gateway.validation import enforced_max_tokens
from lengthwise.predict.base import Endpoint

#: (reason, test on the body): the first that holds keeps the request from being preempted.
NOT_RESUMABLE: tuple[tuple[str, Callable[[Endpoint, dict[str, Any]], bool]], ...] = (
    # A continuation continues one answer; several choices (or beams) cannot be stitched into one.
    ("n > 1", lambda e, b: (b.get("n") or 1) != 1 or (b.get("best_of") or 1) != 1 or bool(b.get("use_beam_search"))),
    # Several prompts in one completions request are several answers.
    ("several prompts", lambda e, b: e == "completion" and _several_prompts(b.get("prompt"))),
    # Logprobs and echoed prompts would be the continuation's (its prompt holds the first part).
    ("logprobs", lambda e, b: any(b.get(k) not in (None, False, 0) for k in
                                  ("logprobs", "top_logprobs", "prompt_logprobs"))),
    ("echo", lambda e, b: bool(b.get("echo"))),
    # Tool-call and guided (JSON, regex, grammar) decoding parse or constrain the answer from its
    # start: on a continuation the parser and the grammar would start again mid-answer.
    ("tools", lambda e, b: any(b.get(k) for k in ("tools", "functions", "tool_choice", "function_call"))),
    ("guided decoding", lambda e, b: any(b.get(k) is not None for k in
                                         ("response_format", "structured_outputs", "guided_json", "guided_regex",
                                          "guided_choice", "guided_grammar", "guided_decoding_backend"))),
    # A fixed seed makes sampling reproducible from the answer's first token: a continuation draws
    # other numbers. (Unseeded sampling is resumed: the continuation is a fresh draw from the same
    # conditional distribution, as the unpreempted tokens would have been.)
    ("seed with sampling", lambda e, b: b.get("seed") is not None and b.get("temperature") != 0),
    # Stop strings are matched on the answer's text, and the engine holds back text that may
    # begin one: a stop string spanning the cut would be missed, and held-back text lost.
    ("stop strings", lambda e, b: bool(b.get("stop"))),
    # Frequency and presence penalties count the answer's own tokens, which a continuation moves
    # into its prompt; bad words are matched on the answer's tokens too.
    ("output penalties", lambda e, b: any(b.get(k) not in (None, 0) for k in
                                          ("frequency_penalty", "presence_penalty")) or bool(b.get("bad_words"))),
    # The prompt would be truncated differently with the answer appended; a suffix (fill in the
    # middle) has no place to resume in.
    ("truncated prompt", lambda e, b: b.get("truncate_prompt_tokens") is not None),
    ("suffix", lambda e, b: b.get("suffix") is not None),
    # The client already continues a message of its own, or reads fields the gateway uses itself.
    ("client continues a message", lambda e, b: bool(b.get("continue_final_message"))
     or b.get("add_generation_prompt") is False),
    ("token ids or continuous usage asked", lambda e, b: bool(b.get("return_token_ids")) or bool(
        isinstance(b.get("stream_options"), dict) and b["stream_options"].get("continuous_usage_stats"))),
)


def not_resumable(endpoint: Endpoint, body: dict[str, Any]) -> str | None:
    """Why the request must not be preempted; None when it may be."""
    for reason, holds in NOT_RESUMABLE:
        if holds(endpoint, body):
            return reason
    return None


def _several_prompts(prompt: Any) -> bool:
    return isinstance(prompt, list) and bool(prompt) and not isinstance(prompt[0], int) and len(prompt) > 1


@dataclass
class Transcript:
    """What a preemptible request has produced so far, over all its runs upstream."""

    text: list[str] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    #: The original prompt's token ids (the first run's first chunk); None if the backend gave none.
    prompt_token_ids: list[int] | None = None
    #: The backend reported token ids for every token so far: preemption may count on them.
    counted: bool = True
    #: Why the answer itself cannot be resumed any more (it began a tool call or reasoning), if so.
    stuck: str | None = None
    #: The last tokens came without their text (the engine holds back an incomplete character).
    held_back: bool = False

    @property
    def generated(self) -> int:
        return len(self.token_ids)

    def resumable(self, endpoint: Endpoint) -> bool:
        """The answer so far can be continued exactly: every token counted, nothing but answer
        text produced; a chat's text complete (it resumes from text), a completion's prompt ids known."""
        if not self.counted or self.stuck is not None:
            return False
        return not self.held_back if endpoint == "chat" else self.prompt_token_ids is not None


def upstream_body(body: dict[str, Any]) -> dict[str, Any]:
    """A preemptible request as first sent: streamed (a non-streaming one too, so that what it
    generated survives a preemption), with the token ids that make its resume exact."""
    sent = {**body, "stream": True, "return_token_ids": True}
    if body.get("stream") is not True:  # its usage, for the answer the gateway assembles
        sent["stream_options"] = {"include_usage": True}
    return sent


def continuation_body(endpoint: Endpoint, body: dict[str, Any], transcript: Transcript) -> dict[str, Any]:
    """The body that resumes `body` after `transcript`: its prompt and answer so far, the rest of its cap.

    Usage is asked for, to measure the resume's prefill and what the prefix cache served of it.
    """
    resumed = {**upstream_body(body), "stream_options": {"include_usage": True}}
    generated = transcript.generated
    cap = enforced_max_tokens(endpoint, body)
    if cap is not None:
        for name in ("max_tokens", "max_completion_tokens"):
            if name in body:
                resumed[name] = cap - generated
    if isinstance(body.get("min_tokens"), int):
        resumed["min_tokens"] = max(body["min_tokens"] - generated, 0)
    answer = "".join(transcript.text)
    if endpoint == "chat":
        resumed["messages"] = [*body["messages"], {"role": "assistant", "content": answer}]
        resumed["continue_final_message"], resumed["add_generation_prompt"] = True, False
    else:
        assert transcript.prompt_token_ids is not None, "a completion resumes from token ids"
        resumed["prompt"] = transcript.prompt_token_ids + transcript.token_ids
    return resumed


def remaining_cap(endpoint: Endpoint, body: dict[str, Any], generated: int) -> int | None:
    """Output tokens the request may still produce (None: no cap given)."""
    cap = enforced_max_tokens(endpoint, body)
    return None if cap is None else cap - generated
