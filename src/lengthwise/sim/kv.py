"""The prefix cache: KV blocks of finished or preempted requests, kept while space allows.

vLLM frees a request's blocks into a queue ordered by eviction (least recently
freed first) and keeps their hashes, so a later request with the same prefix
reuses them until they are reallocated. Here a prefix is a key (the request, its
prediction query and its recomputation share one) with a number of full blocks;
eviction trims the least recently freed prefix from its end, as vLLM frees a
request's blocks tail first. Only full blocks are cached, as in vLLM.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


def blocks_for(tokens: int, block_size: int) -> int:
    """KV blocks that hold `tokens` tokens (the last one may be partly filled)."""
    return -(-tokens // block_size)


@dataclass
class CacheStats:
    """Token counts of prefix-cache lookups, as vLLM's `prefix_cache_queries/hits`."""

    queries: int = 0
    hits: int = 0
    evicted_blocks: int = 0

    @property
    def hit_rate(self) -> float:
        return self.hits / self.queries if self.queries else 0.0


class PrefixCache:
    """Cached prefixes in eviction order; the engine keeps its size within free KV space."""

    def __init__(self, block_size: int, enabled: bool = True) -> None:
        self.block_size = block_size
        self.enabled = enabled
        self._entries: OrderedDict[object, int] = OrderedDict()
        self.cached_blocks = 0
        self.stats = CacheStats()

    def take(self, key: object, lookup_tokens: int) -> int:
        """Claim the cached blocks of `key`'s prefix for a request computing `lookup_tokens` tokens.

        Returns the number of blocks reused; at least one token is always left to
        compute (vLLM's rule). The claimed blocks leave the cache (they are in use);
        blocks of the prefix beyond what the request needs are dropped.
        """
        self.stats.queries += lookup_tokens
        if not self.enabled:
            return 0
        blocks = self._entries.pop(key, 0)
        self.cached_blocks -= blocks
        used = min(blocks, max(lookup_tokens - 1, 0) // self.block_size)
        self.stats.hits += used * self.block_size
        return used

    def peek(self, key: object, lookup_tokens: int) -> int:
        """What `take` would return, without claiming or counting."""
        if not self.enabled:
            return 0
        return min(self._entries.get(key, 0), max(lookup_tokens - 1, 0) // self.block_size)

    def put(self, key: object, tokens: int) -> None:
        """Cache the full blocks of `tokens` prefix tokens under `key`, most recently freed."""
        blocks = tokens // self.block_size
        if not self.enabled or blocks <= 0:
            return
        old = self._entries.pop(key, 0)
        self._entries[key] = max(old, blocks)
        self.cached_blocks += max(old, blocks) - old

    def trim(self, capacity: int) -> None:
        """Evict least recently freed blocks until at most `capacity` blocks stay cached."""
        excess = self.cached_blocks - max(capacity, 0)
        entries = self._entries
        while excess > 0:
            key, blocks = next(iter(entries.items()))
            cut = min(blocks, excess)
            if cut == blocks:
                del entries[key]
            else:
                entries[key] = blocks - cut
            self.cached_blocks -= cut
            self.stats.evicted_blocks += cut
            excess -= cut

    def __len__(self) -> int:
        return len(self._entries)
