"""Conversations for a trace without them: which requests are later turns of an earlier one.

The Azure conversation trace gives each request's arrival and token counts but not
its conversation, so a router that keeps a conversation on the engine holding its
prefix (prefix affinity) would have nothing to exploit. This model threads the
requests into conversations: a request continues, with probability 1 − 1/turns, the
conversation of a request that arrived at least `think_s` earlier (the oldest such
turn still open, a turn staying open for `think_s` more seconds), and starts a new
conversation otherwise. Conversations then have `turns` turns on average, a
user's think time apart.

In the engine, the turns of a conversation share one prefix-cache key: a later turn
reuses its conversation's cached blocks up to its own prompt length. That is the
most reuse a conversation can give (a real later turn's prompt holds the earlier
turn's prompt and answer; the trace's lengths are not built that way), so what
affinity gains here is an upper bound.
"""

from __future__ import annotations

from collections import deque

import numpy as np


def thread_conversations(arrival: np.ndarray, turns: float, think_s: float, seed: int = 0) -> np.ndarray:
    """A conversation id per request (arrivals sorted); `turns` = 1 gives every request its own."""
    if turns < 1:
        raise ValueError(f"turns must be >= 1, got {turns}")
    if not think_s > 0:
        raise ValueError(f"think_s must be positive, got {think_s}")
    n = arrival.size
    continues = np.random.default_rng(seed).random(n) < 1.0 - 1.0 / turns
    ids = np.empty(n, dtype=np.int64)
    thinking: deque[tuple[float, int]] = deque()  # (arrival, conversation) of turns not yet answerable
    open_turns: deque[tuple[float, int]] = deque()  # turns a request may continue, oldest first
    new_id = 0
    for i, t in enumerate(arrival.tolist()):
        while thinking and thinking[0][0] <= t - think_s:
            open_turns.append(thinking.popleft())
        while open_turns and open_turns[0][0] <= t - 2 * think_s:
            open_turns.popleft()  # that user left
        if continues[i] and open_turns:
            conversation = open_turns.popleft()[1]
        else:
            conversation, new_id = new_id, new_id + 1
        ids[i] = conversation
        thinking.append((t, conversation))
    return ids
