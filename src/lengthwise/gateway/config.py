"""The gateway's settings, one field per `lengthwise serve` flag."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from lengthwise.core.policy import DEFAULT_POLICY
from lengthwise.core.preempt import PreemptSettings
from lengthwise.core.tokens import FALLBACK_TOKENS
from lengthwise.gateway.credentials import redacted, split_credentials

Engine = Literal["vllm", "sglang", "openai"]
Mode = Literal["priority", "queue", "both"]
ENGINES: tuple[Engine, ...] = ("vllm", "sglang", "openai")
MODES: tuple[Mode, ...] = ("priority", "queue", "both")
#: The learned prompt model (no engine time), the engine's own self-prediction (costly:
#: sampled on a tenth of requests until it ranks best) and prompt length.
DEFAULT_PREDICTOR = "auto:candidates=learned:wrap=none|self|prompt-length"
#: The query-window rule's default cheap predictor: the learned ranker alone (no engine time).
DEFAULT_CHEAP_PREDICTOR = "learned:wrap=none"


@dataclass(frozen=True)
class GatewayConfig:
    """What `lengthwise serve` runs; checked on construction (ValueError says what is wrong)."""

    #: Engine base URLs (no `/v1`), e.g. http://127.0.0.1:8100; `http://user:pass@host` sends
    #: the credentials as `Authorization: Basic` (see `backend_urls` and gateway/credentials.py).
    backends: tuple[str, ...]
    engine: Engine = "vllm"
    #: priority: forward at once with a priority; queue: hold and admit by policy;
    #: both: hold and admit, and send the priority too.
    mode: Mode = "priority"
    #: Shortest predicted service time first, waits bounded relative to FCFS's (the bound
    #: acts where the gateway queues: queue and both modes; a priority is sent once).
    policy: str = DEFAULT_POLICY
    #: Do no harm by default: schedule by whichever candidate measurably ranks lengths
    #: best, FCFS until one does (docs/AUTO_PREDICTOR.md).
    predictor: str = DEFAULT_PREDICTOR
    #: Queue mode: requests in flight per backend at most.
    max_inflight: int = 4
    #: Queue mode: requests waiting in the gateway at most; beyond → 429.
    max_queue: int = 1024
    retry_after_s: int = 1
    host: str = "127.0.0.1"
    port: int = 8000
    #: Client keys accepted (Authorization: Bearer KEY); empty: no authentication.
    api_keys: tuple[str, ...] = ()
    #: Key sent to the backends; None: the client's Authorization is forwarded as is.
    backend_api_key: str | None = None
    #: SGLang started with --schedule-low-priority-values-first.
    sglang_low_first: bool = False
    #: Policy keys are multiplied by this before rounding to the engine's integer priority.
    priority_scale: float = 1.0
    max_body_bytes: int = 8 * 1024 * 1024
    #: Request headers (names and values) larger than this in all get 431; the HTTP parser
    #: (httptools) has no limit of its own, and the headers are forwarded to the backend.
    max_header_bytes: int = 64 * 1024
    #: A prediction slower than this is abandoned for the fallback.
    prediction_timeout_s: float = 10.0
    #: When nothing waits for the backend (a free seat), send a request at once and predict
    #: it in the background, only to learn from; False: every request waits for its prediction.
    lazy_prediction: bool = True
    #: Priority mode: requests a backend runs at once (vLLM's --max-num-seqs), below which
    #: nothing waits; 0: unknown, so every request waits for its prediction.
    backend_seats: int = 0
    #: Predicted tokens of a request whose prediction failed.
    fallback_tokens: float = FALLBACK_TOKENS
    health_interval_s: float = 5.0
    health_path: str = "/health"
    #: A health check slower than this fails (a loaded engine answers slowly).
    health_timeout_s: float = 10.0
    #: When all of a backend's requests in flight have been silent this long, its health check
    #: also asks for a one-token completion (an engine may answer /health and complete nothing).
    stall_timeout_s: float = 60.0
    connect_timeout_s: float = 5.0
    #: Longest silence from a backend while a response is under way.
    read_timeout_s: float = 600.0
    #: Connections to one backend at most (requests beyond wait for one to free up): a burst is
    #: not a storm of simultaneous connects.
    max_upstream_connections: int = 1024
    #: A client must begin a request within this many seconds of connecting (or of its last
    #: response, after uvicorn's 5 s keep-alive), and finish its headers this long after beginning.
    header_timeout_s: float = 10.0
    #: The whole request body must arrive within this many seconds of the headers; else 408.
    body_timeout_s: float = 30.0
    #: Client connections at most; beyond, uvicorn answers 503 and closes.
    max_connections: int = 2048
    #: On SIGTERM, streams still running after this many seconds are cut.
    graceful_shutdown_s: float = 30.0
    #: Prompt characters hashed for prefix affinity.
    affinity_prefix_chars: int = 1024
    #: Stay on the prefix's backend unless it has this many more predicted tokens
    #: outstanding than the least loaded one.
    affinity_slack_tokens: float = 4096.0
    #: Redis shared by the gateway's replicas (redis://host:port/db): queue mode's queue and seats,
    #: and learning, are shared through it (docs/SCALE_OUT.md); None: this process alone.
    redis_url: str | None = None
    #: A seat's lease: a replica that stops renewing (killed) gives its seats back this long after.
    redis_lease_s: float = 10.0
    #: Queue modes, vLLM: preempt long running requests for short waiting ones; None: never.
    preempt: PreemptSettings | None = None
    #: Queue modes: the query-window rule (docs/GATEWAY.md, "The query window"). W >= 1: a waiting
    #: request is ordered by `cheap_predictor`, and predicted by `predictor` (the self-query, which
    #: warms the engine's prefix cache) only once it is among the best W waiting for its backend;
    #: only queried requests are admitted. 0: off (every waiting request gets `predictor` on arrival).
    query_window: int = 0
    #: What orders the requests outside the query window: a predictor that spends no engine time.
    cheap_predictor: str = DEFAULT_CHEAP_PREDICTOR

    def __post_init__(self) -> None:
        if not self.backends:
            raise ValueError("at least one --backend URL is needed")
        for url in self.backends:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"backend {redacted(url)!r} is not an http(s) URL")
            if parts.path.rstrip("/").endswith("/v1"):
                raise ValueError(f"backend {redacted(url)!r}: give the server root, without /v1")
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")
        if self.engine == "openai" and self.mode != "queue":
            raise ValueError("engine 'openai' has no priority field: use --mode queue")
        for name in ("max_inflight", "max_queue", "max_body_bytes", "max_header_bytes", "max_upstream_connections",
                     "max_connections"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.backend_seats < 0:
            raise ValueError("backend_seats must be 0 (unknown) or more")
        for name in ("prediction_timeout_s", "health_interval_s", "health_timeout_s", "connect_timeout_s",
                     "read_timeout_s", "stall_timeout_s", "header_timeout_s", "body_timeout_s", "graceful_shutdown_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.priority_scale <= 0:
            raise ValueError("priority_scale must be positive")
        if self.redis_url is not None and urlsplit(self.redis_url).scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"redis URL {redacted(self.redis_url)!r} is not a redis://, rediss:// or unix:// URL")
        if self.redis_lease_s <= 0:
            raise ValueError("redis_lease_s must be positive")
        if self.preempt is not None and (not self.queues or self.engine != "vllm" or self.redis_url is not None):
            raise ValueError("--preempt needs the gateway's own queue (--mode queue or both, without --redis) and "
                             "--engine vllm (it resumes with vLLM's continue_final_message and return_token_ids)")
        if self.query_window < 0:
            raise ValueError(f"query_window must be 0 (off) or more, got {self.query_window}")
        if self.query_window and (not self.queues or self.redis_url is not None or self.preempt is not None):
            raise ValueError("--query-window needs the gateway's own queue (--mode queue or both, without --redis) "
                             "and no --preempt")

    @property
    def queues(self) -> bool:
        return self.mode in ("queue", "both")

    @property
    def sends_priority(self) -> bool:
        return self.mode in ("priority", "both")

    @property
    def backend_urls(self) -> tuple[str, ...]:
        """The backends' URLs without credentials (what the gateway uses, logs and labels metrics with)."""
        return tuple(split_credentials(url)[0].rstrip("/") for url in self.backends)
