"""The prediction query keeps the real request's prefix and never alters the request."""

import copy

import pytest

from lengthwise.predict.base import LengthRequest
from lengthwise.predict.self_query.query import UnpredictableRequest, build_query, prompt_text

POSTFIX = "\n\nHow many tokens? (max 512)"
KW = {"model": "m", "max_tokens": 8, "top_logprobs": 5, "priority": -7}


def chat(messages, **extra) -> LengthRequest:
    return LengthRequest("chat", {"model": "served", "messages": messages, **extra})


def test_chat_postfix_goes_at_the_end_of_the_last_user_message() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Explain TCP."},
    ]
    request = chat(messages, max_tokens=300, temperature=0.7, stream=True, stream_options={"include_usage": True})
    original = copy.deepcopy(request.body)
    query = build_query(request, POSTFIX, **KW)
    assert request.body == original  # the real request is untouched
    assert query["messages"][:-1] == messages[:-1]
    assert query["messages"][-1] == {"role": "user", "content": "Explain TCP." + POSTFIX}
    assert query["model"] == "served"  # the request's model wins over the default
    assert query["stream"] is False and "stream_options" not in query
    assert (query["temperature"], query["max_tokens"], query["n"]) == (0.0, 8, 1)
    assert (query["logprobs"], query["top_logprobs"], query["priority"]) == (True, 5, -7)


def test_chat_text_parts_and_non_user_last_message() -> None:
    parts = [{"type": "text", "text": "Part one."}, {"type": "text", "text": "Part two."}]
    query = build_query(chat([{"role": "user", "content": parts}]), POSTFIX, **KW)
    assert query["messages"][0]["content"] == [parts[0], {"type": "text", "text": "Part two." + POSTFIX}]
    assert parts[1]["text"] == "Part two."
    ending_with_assistant = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]
    query = build_query(chat(ending_with_assistant), POSTFIX, **KW)
    assert query["messages"][:2] == ending_with_assistant
    assert query["messages"][2] == {"role": "user", "content": POSTFIX.lstrip()}


def test_chat_keeps_prompt_shaping_keys_only() -> None:
    request = chat([{"role": "user", "content": "Q"}], chat_template_kwargs={"x": 1}, stop=["\n"], logit_bias={"1": 5})
    query = build_query(request, POSTFIX, **{**KW, "priority": None})
    assert query["chat_template_kwargs"] == {"x": 1}
    assert "stop" not in query and "logit_bias" not in query and "priority" not in query


def test_completion_postfix_is_appended_to_the_prompt() -> None:
    request = LengthRequest("completion", {"prompt": "def fib(n):", "max_tokens": 64, "echo": True, "suffix": "x"})
    query = build_query(request, POSTFIX, **KW)
    assert query["prompt"] == "def fib(n):" + POSTFIX
    assert query["model"] == "m" and query["logprobs"] == 5
    assert "echo" not in query and "suffix" not in query and "top_logprobs" not in query
    single = LengthRequest("completion", {"prompt": ["only one"]})
    assert build_query(single, POSTFIX, **KW)["prompt"] == "only one" + POSTFIX


@pytest.mark.parametrize(
    ("request_", "reason"),
    [
        (chat([]), "no messages"),
        (LengthRequest("chat", {}), "no messages"),
        (chat([{"role": "user", "content": "  "}]), "empty"),
        (chat([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]), "non-text"),
        (chat([{"role": "user", "content": "Q"}], n=3), "n > 1"),
        (chat([{"role": "user", "content": "Q"}], tools=[{"type": "function"}]), "tools"),
        (chat([{"role": "user", "content": "Q"}, {"role": "tool", "content": "r"}]), "tool calls"),
        (chat([{"role": "assistant", "content": None, "tool_calls": [{}]}]), "tool calls"),
        (LengthRequest("completion", {"prompt": ["a", "b"]}), "single string"),
        (LengthRequest("completion", {"prompt": [1, 2, 3]}), "single string"),
        (LengthRequest("completion", {"prompt": ""}), "empty"),
    ],
)
def test_bad_input_is_refused_with_a_reason(request_: LengthRequest, reason: str) -> None:
    with pytest.raises(UnpredictableRequest, match=reason):
        build_query(request_, POSTFIX, **KW)


def test_prompt_text_joins_all_message_texts() -> None:
    request = chat([{"role": "system", "content": "S"}, {"role": "user", "content": [{"type": "text", "text": "U"}]}])
    assert prompt_text(request) == "S\nU"
