"""`lengthwise engine ...`: set up, start, inspect and stop the embedded vLLM engine."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, ParamSpec, TypeVar

import typer
from rich.console import Console

from lengthwise.engine import server
from lengthwise.engine.catalog import DEFAULT_MODEL, MODELS, model_spec
from lengthwise.engine.errors import EngineError
from lengthwise.engine.paths import MODEL_NAME, CacheLayout
from lengthwise.engine.progress import Progress
from lengthwise.engine.shell import tail_lines

engine_app = typer.Typer(
    help="The embedded default engine: a real vLLM on this machine's CPU serving Qwen2.5-Coder-0.5B-Instruct "
    "(or another model of its catalog: --model).",
    no_args_is_help=True,
)
console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

P = ParamSpec("P")
R = TypeVar("R")


class PolicyChoice(str, Enum):
    priority = "priority"
    fcfs = "fcfs"


PortOption = Annotated[int, typer.Option("--port", "-p", help="The engine's port on 127.0.0.1.")]
ModelOption = Annotated[
    str, typer.Option("--model", "-m", help=f"The model to serve: {', '.join(MODELS)} (a served name works too).")
]


def clear_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Print an EngineError in red and exit 1 (130 on Ctrl-C), instead of a traceback."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except EngineError as e:
            err_console.print(f"[red]Error:[/red] {e}")
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]Interrupted.[/yellow] What was cached stays; the next run picks up from there.")
            raise typer.Exit(130) from None

    return wrapper


@engine_app.command()
@clear_errors
def setup(model: ModelOption = DEFAULT_MODEL.key) -> None:
    """Install vLLM and prepare the model, without starting a server (each step runs only once)."""
    started = time.monotonic()
    model_dir = server.setup(CacheLayout.default(model_spec(model)), progress=Progress(console))
    console.print(f"Engine set up in {time.monotonic() - started:.0f} s: model in {model_dir}")


@engine_app.command()
@clear_errors
def up(
    port: PortOption = server.DEFAULT_PORT,
    model: ModelOption = DEFAULT_MODEL.key,
    policy: Annotated[PolicyChoice, typer.Option(help="vLLM's scheduling policy.")] = PolicyChoice.priority,
    max_num_seqs: Annotated[int, typer.Option(help="Requests run at once; the rest wait in vLLM's queue.")] = 4,
    max_model_len: Annotated[int, typer.Option(help="Longest prompt plus answer, in tokens.")] = 4096,
    kv_cache: Annotated[str, typer.Option(help="KV cache size, as vLLM's --kv-cache-memory-bytes.")] = "1G",
    omp_threads_bind: Annotated[
        str | None,
        typer.Option(help="The cores of the model's threads (e.g. 1); its API server is then pinned to the other "
                     "cores, where the clients should run too. Default: every core."),
    ] = None,
    vllm_arg: Annotated[
        list[str] | None, typer.Option(help="An extra argument for vLLM, e.g. --vllm-arg=--seed=1 (repeatable).")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the server to become healthy.")] = (
        server.START_TIMEOUT_S
    ),
) -> None:
    """Start the engine (installing vLLM and the model the first time) and print its base URL."""
    config = server.EngineConfig(
        port=port,
        model=model_spec(model).key,
        policy=policy.value,
        max_num_seqs=max_num_seqs,
        max_model_len=max_model_len,
        kv_cache_bytes=kv_cache,
        extra_args=tuple(vllm_arg or ()),
        omp_threads_bind=omp_threads_bind,
    )
    if omp_threads_bind is not None:
        try:
            server.parse_cpu_list(omp_threads_bind)
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="--omp-threads-bind") from None
    started = time.monotonic()
    handle = server.start(config, progress=Progress(console), timeout=timeout)
    console.print(
        f"[green]Engine up[/green] in {time.monotonic() - started:.0f} s: [bold]{handle.base_url}[/bold] "
        f"(pid {handle.pid}, model {handle.model}, {config.describe()})"
    )


@engine_app.command()
@clear_errors
def down(port: PortOption = server.DEFAULT_PORT) -> None:
    """Stop the engine that `up` started on this port, and every process under it."""
    pids = server.stop(port)
    if pids:
        console.print(f"Stopped the engine on port {port} (pids {', '.join(map(str, pids))}).")
    else:
        console.print(f"No engine started by lengthwise runs on port {port}.")


@engine_app.command()
@clear_errors
def status(port: Annotated[int | None, typer.Option("--port", "-p", help="Only this port.")] = None) -> None:
    """Show the engines that lengthwise started: pid, URL, model, policy, health."""
    handles = [h for h in [server.find(port)] if h] if port is not None else server.find_all()
    if not handles:
        where = f"on port {port}" if port is not None else "now"
        console.print(f"No engine started by lengthwise runs {where}.")
        if port is not None and server.is_healthy(f"http://127.0.0.1:{port}"):
            console.print(f"Another server answers /health on port {port} (not managed by lengthwise).")
        return
    for h in handles:
        healthy = "[green]healthy[/green]" if server.is_healthy(h.url) else "[red]not healthy[/red]"
        console.print(
            f"port {h.config.port}: {healthy}, [bold]{h.base_url}[/bold], pid {h.pid}, model {h.model}, "
            f"{h.config.describe()}, up {(time.time() - h.started_at) / 60:.0f} min, log {h.log}"
        )


@engine_app.command()
@clear_errors
def logs(
    port: PortOption = server.DEFAULT_PORT,
    lines: Annotated[int, typer.Option("--lines", "-n", help="How many of the last lines to print.")] = 50,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines (Ctrl-C stops).")] = False,
) -> None:
    """Print the end of the engine's log."""
    log = CacheLayout.default().server_log(port)
    if not log.exists():
        raise EngineError(f"No log for port {port}: {log} does not exist (has `lengthwise engine up` run?).")
    for line in tail_lines(log, lines):
        print(line)
    if follow:
        _follow(log)


def _follow(log: Path) -> None:
    with log.open(errors="replace") as f:
        f.seek(0, 2)
        try:
            while True:
                line = f.readline()
                if line:
                    print(line, end="", flush=True)
                else:
                    time.sleep(0.5)
        except KeyboardInterrupt:
            pass


@engine_app.command()
@clear_errors
def chat(
    prompt: str,
    port: PortOption = server.DEFAULT_PORT,
    max_tokens: Annotated[int, typer.Option(help="The answer's length cap.")] = 64,
    priority: Annotated[int | None, typer.Option(help="vLLM priority (lower runs first).")] = None,
) -> None:
    """Send one chat request to the engine and print the answer and its token counts."""
    import httpx

    handle = server.find(port)
    body: dict[str, object] = {
        "model": handle.model if handle else MODEL_NAME,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
    }
    if priority is not None:
        body["priority"] = priority
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    started = time.monotonic()
    try:
        response = httpx.post(url, json=body, timeout=300)
    except httpx.HTTPError as e:
        raise EngineError(f"No answer from {url}: {e}. Is the engine up? (`lengthwise engine status`)") from None
    if response.status_code != 200:
        raise EngineError(f"The engine answered {response.status_code}: {response.text[:500]}")
    data = response.json()
    console.print(data["choices"][0]["message"]["content"])
    usage = data["usage"]
    console.print(
        f"[dim]{usage['prompt_tokens']} prompt + {usage['completion_tokens']} completion tokens "
        f"in {time.monotonic() - started:.1f} s[/dim]"
    )
