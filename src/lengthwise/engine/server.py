"""Starting, finding and stopping vLLM servers: one per port, each with a state file (its pid) and a log."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import psutil

from lengthwise.engine.catalog import DEFAULT_MODEL, model_spec
from lengthwise.engine.errors import EngineError
from lengthwise.engine.model import ensure_model
from lengthwise.engine.paths import MODEL_NAME, CacheLayout
from lengthwise.engine.progress import QUIET, Progress
from lengthwise.engine.resources import port_in_use, require_memory
from lengthwise.engine.shell import format_tail
from lengthwise.engine.venv import ensure_venv

if TYPE_CHECKING:  # httpx loads with the first health check, not with the command line
    import httpx

Policy = Literal["priority", "fcfs"]
DEFAULT_PORT = 8000
START_TIMEOUT_S = 600.0  # a quiet machine needs ~50 s; a busy 2-core one several times that
STOP_TIMEOUT_S = 30.0

# Servers started by this Python process, kept until `stop` so that they are reaped, not left as zombies.
_children: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class EngineConfig:
    """The settings of one server; `extra_args` go to vLLM's command line unchanged."""

    port: int = DEFAULT_PORT
    #: A key of `catalog.MODELS` (or a served name).
    model: str = DEFAULT_MODEL.key
    policy: Policy = "priority"
    max_num_seqs: int = 4
    # Bounds one prefill on a CPU; the 1 GB KV cache (~87k tokens) holds 16 sequences of this length.
    max_model_len: int = 4096
    kv_cache_bytes: str = "1G"
    extra_args: tuple[str, ...] = ()
    host: str = "127.0.0.1"
    #: The cores of the model's OpenMP threads (`VLLM_CPU_OMP_THREADS_BIND`, e.g. "1" or "1-3");
    #: None: the variable from the environment, else every core.
    omp_threads_bind: str | None = None

    def describe(self) -> str:
        extra = f", vLLM args {' '.join(self.extra_args)}" if self.extra_args else ""
        bind = f", OMP threads on cores {self.omp_threads_bind}" if self.omp_threads_bind else ""
        return (
            f"policy {self.policy}, max-num-seqs {self.max_num_seqs}, max-model-len {self.max_model_len}, "
            f"kv-cache {self.kv_cache_bytes}{bind}{extra}"
        )


@dataclass(frozen=True)
class EngineHandle:
    """A server this code started: what the state file records about it."""

    pid: int
    create_time: float  # with the pid, tells our process from a later one that reuses the pid
    config: EngineConfig
    log: Path
    model: str = MODEL_NAME
    started_at: float = field(default_factory=time.time)

    @property
    def url(self) -> str:
        """The server's root (health, metrics); the OpenAI API is under `base_url`."""
        return f"http://{self.config.host}:{self.config.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def to_json(self) -> str:
        data = asdict(self)
        data["log"] = str(self.log)
        return json.dumps(data, indent=2)

    @classmethod
    def from_json(cls, text: str) -> EngineHandle:
        data = json.loads(text)
        config = data.pop("config")
        config["extra_args"] = tuple(config["extra_args"])
        return cls(config=EngineConfig(**config), log=Path(data.pop("log")), **data)


def build_command(python: Path, model_dir: Path, config: EngineConfig) -> list[str]:
    return [
        str(python), "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir),
        "--served-model-name", model_spec(config.model).served_name,
        "--host", config.host,
        "--port", str(config.port),
        "--scheduling-policy", config.policy,
        "--enable-prefix-caching",
        "--enable-prompt-tokens-details",
        "--enforce-eager",  # same speed on CPU, and start-up drops from ~150 s to ~50 s
        "--kv-cache-memory-bytes", config.kv_cache_bytes,
        "--max-num-seqs", str(config.max_num_seqs),
        "--max-model-len", str(config.max_model_len),
        *config.extra_args,
    ]  # fmt: skip


def build_env(base: Mapping[str, str], omp_threads_bind: str | None = None) -> dict[str, str]:
    """The server's environment: offline, and the model's threads on `omp_threads_bind`, else as
    the environment says, else on every core."""
    env = dict(base)
    env["HF_HUB_OFFLINE"] = "1"
    if omp_threads_bind:
        env["VLLM_CPU_OMP_THREADS_BIND"] = omp_threads_bind
    # vLLM keeps a core for the API server by default; on 2 cores that halves the model's speed.
    env.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{(os.cpu_count() or 1) - 1}")
    return env


def is_alive(handle: EngineHandle) -> bool:
    """Whether the recorded process still runs (a reused pid or a zombie doesn't count)."""
    try:
        proc = psutil.Process(handle.pid)
        return abs(proc.create_time() - handle.create_time) < 1.0 and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def is_healthy(url: str, timeout: float = 2.0, client: httpx.Client | None = None) -> bool:
    import httpx

    try:
        return (client or httpx).get(f"{url}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def find(port: int, layout: CacheLayout | None = None) -> EngineHandle | None:
    """The running engine this code started on `port`; a stale state file is removed."""
    layout = layout or CacheLayout.default()
    path = layout.state_file(port)
    try:
        handle = EngineHandle.from_json(path.read_text())
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        path.unlink(missing_ok=True)  # unreadable: written by an interrupted start or another version
        return None
    if is_alive(handle):
        return handle
    path.unlink(missing_ok=True)
    return None


def find_all(layout: CacheLayout | None = None) -> list[EngineHandle]:
    layout = layout or CacheLayout.default()
    ports = sorted(int(p.stem.removeprefix("engine-")) for p in layout.state.glob("engine-*.json"))
    return [h for port in ports if (h := find(port, layout)) is not None]


def setup(layout: CacheLayout | None = None, progress: Progress = QUIET) -> Path:
    """Install vLLM and prepare `layout.model` (each only once); return the model directory."""
    layout = layout or CacheLayout.default()
    layout.state.mkdir(parents=True, exist_ok=True)
    ensure_venv(layout, progress)
    return ensure_model(layout, progress)


def start(
    config: EngineConfig = EngineConfig(),
    layout: CacheLayout | None = None,
    progress: Progress = QUIET,
    timeout: float = START_TIMEOUT_S,
) -> EngineHandle:
    """Start a server (setting up first if needed) and wait until it is healthy.

    An engine already running on the port with the same settings is returned as it is.
    """
    spec = model_spec(config.model)
    layout = (layout or CacheLayout.default()).for_model(spec)
    existing = find(config.port, layout)
    if existing is not None:
        if existing.config != config:
            raise EngineError(
                f"An engine already runs on port {config.port} (pid {existing.pid}) with other settings "
                f"({existing.config.describe()}). Stop it first: lengthwise engine down --port {config.port}"
            )
        progress.step(f"An engine already runs on port {config.port} (pid {existing.pid}): reusing it")
        return existing
    if port_in_use(config.host, config.port):
        raise EngineError(
            f"Port {config.port} on {config.host} is in use by another program. "
            "Choose another with --port (lengthwise's own engines: `lengthwise engine status`)."
        )
    model_dir = setup(layout, progress)
    require_memory(spec.start_memory_bytes, f"start the engine with {spec.served_name}")
    handle = _spawn(layout, model_dir, config)
    try:
        _wait_healthy(handle, timeout, progress)
    except BaseException:  # Ctrl-C included: leave no half-started server behind
        stop(config.port, layout)
        _reap(handle.pid)
        raise
    if config.omp_threads_bind:
        pinned = pin_engine(handle, parse_cpu_list(config.omp_threads_bind))
        progress.step(pinned)
    return handle


def parse_cpu_list(text: str) -> frozenset[int]:
    """Cores written as the kernel's cpu lists are ("1", "1-3", "0,2-3")."""
    cores: set[int] = set()
    for part in text.split(","):
        first, _, last = part.strip().partition("-")
        if not first.isdigit() or last and not last.isdigit():
            raise ValueError(f"not a cpu list: {text!r} (e.g. 1, 1-3 or 0,2-3)")
        cores.update(range(int(first), int(last or first) + 1))
    return frozenset(cores)


def pin_threads(pid: int, cores: frozenset[int]) -> None:
    """Every thread of process `pid` on `cores` (sched_setaffinity binds one thread; a process's are in
    /proc/PID/task; without /proc, only the thread `pid` names)."""
    tasks = Path(f"/proc/{pid}/task")
    for tid in [int(t) for t in os.listdir(tasks)] if tasks.is_dir() else [pid]:
        with contextlib.suppress(ProcessLookupError, PermissionError):  # a thread that has just ended
            os.sched_setaffinity(tid, cores)


def pin_engine(handle: EngineHandle, model_cores: frozenset[int]) -> str:
    """Keep the model's compute on `model_cores` and the API server on the other cores.

    `VLLM_CPU_OMP_THREADS_BIND` alone left vLLM 0.32's engine core (whose main thread runs the
    model when it has one OpenMP thread) free to run on every core: when a gateway kept the other
    core busy, the API server moved onto the model's core and the guided runs of a comparison lost
    10-30% of the engine's throughput. Pinned, the model has its cores to itself; the API server
    (HTTP, tokenizing, streaming) shares the rest with the client, as a gateway in front would.
    """
    others = frozenset(os.sched_getaffinity(0)) - model_cores
    if not others:
        return f"engine threads not pinned: no core outside {sorted(model_cores)} for the API server"
    children = [p for p in engine_processes(handle) if p.pid != handle.pid and p.is_running()]
    for proc in children:
        pin_threads(proc.pid, model_cores)
    pin_threads(handle.pid, others)
    return (f"Pinned vLLM's engine core ({len(children)} process(es)) to cores {sorted(model_cores)} "
            f"and its API server to {sorted(others)}")


def _spawn(layout: CacheLayout, model_dir: Path, config: EngineConfig) -> EngineHandle:
    log = layout.server_log(config.port)
    with log.open("w") as out:
        proc = subprocess.Popen(
            build_command(layout.venv_python, model_dir, config),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=build_env(os.environ, config.omp_threads_bind),
            start_new_session=True,  # its own process group: `stop` ends the server and its engine core together
        )
    _children[proc.pid] = proc
    handle = EngineHandle(
        pid=proc.pid,
        create_time=psutil.Process(proc.pid).create_time(),
        config=config,
        log=log,
        model=model_spec(config.model).served_name,
    )
    layout.state_file(config.port).write_text(handle.to_json())
    return handle


def _wait_healthy(handle: EngineHandle, timeout: float, progress: Progress) -> None:
    import httpx

    started = time.monotonic()
    progress.step(f"Starting vLLM on port {handle.config.port} (pid {handle.pid}, log {handle.log}); about a minute")
    # One client for all the polls: a new one per poll costs ~35 ms of CPU, which a busy 2-core machine feels.
    with progress.waiting(f"waiting for {handle.url}/health"), httpx.Client() as client:
        while not is_healthy(handle.url, client=client):
            if not is_alive(handle):
                raise EngineError(f"The engine exited during start-up.\n{format_tail(handle.log)}")
            if time.monotonic() - started > timeout:
                raise EngineError(
                    f"The engine was not healthy after {timeout:.0f} s; stopped it.\n{format_tail(handle.log)}"
                )
            time.sleep(0.5)
    progress.step(f"Engine healthy after {time.monotonic() - started:.0f} s")


def engine_processes(handle: EngineHandle) -> list[psutil.Process]:
    """The server, every process under it (vLLM's engine core and worker), and any other member of its
    process group (a grandchild whose parent died is no child of anyone's, but stays in the group)."""
    procs: dict[int, psutil.Process] = {}
    try:
        root = psutil.Process(handle.pid)
        procs.update((p.pid, p) for p in [root, *root.children(recursive=True)])
    except psutil.Error:
        pass
    for proc in psutil.process_iter():
        if _pgid(proc.pid) == handle.pid:
            procs.setdefault(proc.pid, proc)
    return list(procs.values())


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def stop(port: int, layout: CacheLayout | None = None, timeout: float = STOP_TIMEOUT_S) -> list[int]:
    """Stop the engine this code started on `port` and everything under it; return the pids it ended.

    SIGTERM to the server first, so that vLLM shuts its engine core down cleanly (shared memory
    included); then SIGTERM and, at last, SIGKILL to whatever is left.
    """
    layout = layout or CacheLayout.default()
    handle = find(port, layout)
    if handle is None:
        return []
    procs = engine_processes(handle)
    grace = min(timeout, 5.0)
    server_proc = [p for p in procs if p.pid == handle.pid]
    _signal_all(server_proc, signal.SIGTERM)
    psutil.wait_procs(server_proc, timeout=timeout)
    _, alive = psutil.wait_procs(procs, timeout=grace)
    _signal_all(alive, signal.SIGTERM)
    _, alive = psutil.wait_procs(alive, timeout=grace)
    _signal_all(alive, signal.SIGKILL)
    _, alive = psutil.wait_procs(alive, timeout=10)
    if alive:
        raise EngineError(f"Could not stop the engine on port {port}: pids {[p.pid for p in alive]} survive SIGKILL.")
    layout.state_file(port).unlink(missing_ok=True)
    _reap(handle.pid)
    return [p.pid for p in procs]


def _reap(pid: int) -> None:
    """Collect the exit status of a server this process started, so it leaves no zombie."""
    if (child := _children.pop(pid, None)) is not None:
        child.wait()


def _signal_all(procs: list[psutil.Process], sig: signal.Signals) -> None:
    for proc in procs:
        try:
            proc.send_signal(sig)
        except psutil.NoSuchProcess:
            pass
