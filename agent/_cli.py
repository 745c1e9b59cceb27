"""The ``agent`` command: ``demo``, ``run``, ``tools`` and ``serve-local`` (built on typer and rich).

Results go to stdout, everything else (progress, logs, errors) to stderr, so the answer can be
piped. With neither ``OPENAI_BASE_URL`` nor ``OPENAI_API_KEY`` set, runs use the embedded local
model server (a deterministic stand-in, not AI) and say so in one line.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any, NoReturn, TypeVar

import anyio
import typer
from pydantic_core import to_json
from rich.console import Console
from rich.text import Text
from structlog.typing import FilteringBoundLogger

from agent._agent import Agent
from agent._console import RunDisplay
from agent._errors import AgentError, UsageError
from agent._logging import LogFormat, make_logger
from agent._registry import ToolRegistry
from agent._result import RunResult
from agent._tools import Tool
from agent.localmodel import AutoPolicy, Policy, ScriptPolicy, demo_script, endpoint_or_local, serve

__all__ = ["app", "main"]

DEMO_PROMPT = (
    "Please help me do the following things simultaneously:\n"
    "1. Get the current system time\n"
    "2. Check system information (operating system, memory, etc.)\n"
    "3. Calculate the result of 123.5 + 456.7\n"
    "4. Generate 3 random numbers between 1 and 100\n\n"
    "This is a parallel tool invocation test, please execute these tasks simultaneously."
)

T = TypeVar("T")

_LOCAL_PACE = 0.25
"""Seconds between streamed items of the local model when a person watches the stream."""

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Run tool-calling agents against any OpenAI-compatible /v1/responses endpoint.",
)
stderr = Console(stderr=True)

ToolsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--tools", help="'builtin', or module:attr naming a ToolRegistry, a list of tools or one tool."
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the whole RunResult as JSON.")]
StreamOption = Annotated[
    bool, typer.Option("--stream/--no-stream", help="Stream responses as they are written.")
]
LogFormatOption = Annotated[
    str, typer.Option("--log-format", help="Log rendering on stderr: console or json.")
]
VerboseOption = Annotated[bool, typer.Option("-v", "--verbose", help="Debug logs; tracebacks on errors.")]


@app.command()
def demo(
    json_output: JsonOption = False,
    stream: StreamOption = True,
    log_format: LogFormatOption = "console",
    verbose: VerboseOption = False,
) -> None:
    """The API page's scenario: four builtin tools called in parallel, then the final answer."""
    registry = load_tools(["builtin"])
    output = _Output(json_output, stream, log_format, verbose)
    _run_command(DEMO_PROMPT, registry, demo_script(), output, {"model": "gpt-4.1"})


@app.command()
def run(
    prompt: Annotated[str, typer.Argument(help="What to ask the model.")],
    model: Annotated[str, typer.Option(help="Model name.")] = "gpt-4.1",
    tools: ToolsOption = None,
    instructions: Annotated[str | None, typer.Option(help="System instructions.")] = None,
    max_turns: Annotated[int, typer.Option(min=1, help="Model responses before giving up.")] = 20,
    metadata: Annotated[list[str] | None, typer.Option(help="k=v request metadata, repeatable.")] = None,
    json_output: JsonOption = False,
    stream: StreamOption = True,
    log_format: LogFormatOption = "console",
    verbose: VerboseOption = False,
) -> None:
    """One run with the builtin tools (or --tools); prints the final answer on stdout."""
    registry = load_tools(tools or ["builtin"])
    options = {
        "model": model,
        "instructions": instructions,
        "max_turns": max_turns,
        "metadata": _parse_metadata(metadata or []),
    }
    _run_command(prompt, registry, AutoPolicy(), _Output(json_output, stream, log_format, verbose), options)


@app.command("tools")
def list_tools(tools: ToolsOption = None) -> None:
    """The registered tools and their JSON schemas, as JSON."""
    registry = load_tools(tools or ["builtin"])
    typer.echo(json.dumps(registry.wire(), indent=2))


@app.command("serve-local")
def serve_local(
    port: Annotated[int, typer.Option(help="TCP port on 127.0.0.1.")] = 8000,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    script: Annotated[Path | None, typer.Option(help="Replay this transcript (JSON).")] = None,
    auto: Annotated[bool, typer.Option("--auto", help="Call every offered tool, then report.")] = False,
) -> None:
    """Run the local model server in the foreground (a deterministic stand-in, not AI)."""
    if script and auto:
        _fail("use either --script or --auto, not both", code=2)
    policy: Policy = _load_script(script) if script else AutoPolicy()

    def announce(url: str) -> None:
        stderr.print(f"local model server (not AI) on {url} - Ctrl+C to stop")

    try:
        serve(policy, host=host, port=port, on_ready=announce)
    except OSError as exc:  # raised by the bind, before anything is served
        _fail(f"cannot serve on {host} port {port}: {exc.strerror or exc}", code=2)


def load_tools(targets: list[str]) -> ToolRegistry:
    """Resolve ``--tools`` values: ``builtin`` or ``module:attr``; exits 2 on a bad target."""
    registry = ToolRegistry()
    for target in targets:
        try:
            registry.add(_load_target(target))
        except (ImportError, AttributeError, ValueError, TypeError, AgentError) as exc:
            _fail(f"bad --tools target {target!r}: {exc}", code=2)
    return registry


def _load_target(target: str) -> ToolRegistry | Tool[..., Any]:
    if target == "builtin":
        target = "builtin_tools:registry"
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise ValueError("expected 'builtin' or 'module:attr'")
    value = getattr(_import(module_name), attribute)
    if isinstance(value, ToolRegistry | Tool):
        return value
    if isinstance(value, list | tuple) and all(isinstance(v, Tool) for v in value):
        return ToolRegistry(value)
    raise TypeError(f"{target} is a {type(value).__name__}, not a ToolRegistry, a list of tools or a tool")


def _import(module_name: str) -> ModuleType:
    """Import the user's module; whatever its code raises is a bad target, not a crash."""
    try:
        return importlib.import_module(module_name)
    except ImportError:
        raise
    except Exception as exc:
        raise ImportError(f"importing {module_name} failed: {type(exc).__name__}: {exc}") from exc


def _parse_metadata(pairs: list[str]) -> dict[str, str] | None:
    metadata = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            _fail(f"--metadata takes key=value, got {pair!r}", code=2)
        metadata[key] = value
    return metadata or None


def _load_script(path: Path) -> ScriptPolicy:
    try:
        return ScriptPolicy.from_file(path)
    except (OSError, ValueError) as exc:
        _fail(f"cannot load script {path}: {exc}", code=2)


@dataclass(frozen=True, slots=True)
class _Output:
    """How a run command reports: JSON or text, streamed or not, which logs."""

    json: bool
    stream: bool
    log_format: str
    verbose: bool

    def logger(self) -> FilteringBoundLogger:
        if self.log_format not in ("console", "json"):
            _fail("--log-format takes console or json", code=2)
        fmt: LogFormat = "json" if self.log_format == "json" else "console"
        return make_logger(fmt, level="debug" if self.verbose else "warning")


def _run_command(
    prompt: str, registry: ToolRegistry, local_policy: Policy, output: _Output, options: dict[str, Any]
) -> None:
    logger = output.logger()
    display = RunDisplay(stderr, sys.stdout, stream_text=output.stream and not output.json and _tty())
    # Paced like a model when streaming to a person, so the stream can be seen; else at full speed.
    pace = _LOCAL_PACE if display.stream_text else 0.0
    with endpoint_or_local(local_policy, stream_delay=pace) as endpoint:
        if endpoint.local:
            stderr.print(
                "No OPENAI_BASE_URL/OPENAI_API_KEY set: running on the embedded local model "
                "(a deterministic script, not AI).",
                style="dim",
                soft_wrap=True,
            )

        async def go() -> RunResult:
            agent = Agent(
                tools=registry, logger=logger, base_url=endpoint.base_url, api_key=endpoint.api_key, **options
            )
            async with agent:
                with display:
                    return await _watched_run(agent, prompt, display, stream=output.stream)

        result = _guarded(go, output.verbose, as_json=output.json)
    display.finish(result, as_json=to_json(result, indent=2).decode() if output.json else None)


async def _watched_run(agent: Agent, prompt: str, display: RunDisplay, *, stream: bool) -> RunResult:
    """Run with ``display`` watching: every event when streaming, tool hooks otherwise."""
    if not stream:
        return await agent.run(prompt, hooks=display.hooks())
    async with agent.run_stream(prompt) as events:
        async for event in events:
            display.handle(event)
    if events.result is None:  # pragma: no cover - run_stream raises instead
        raise AssertionError("the run ended without a result")
    return events.result


def _tty() -> bool:
    return sys.stdout.isatty()


def _guarded(main: Callable[[], Awaitable[T]], verbose: bool, *, as_json: bool = False) -> T:
    """Run ``main``; a runtime error becomes one line on stderr and exit code 1 (traceback with -v).

    With ``as_json`` stdout still gets a JSON document: the error and what the run had done.
    """
    try:
        return anyio.run(main)
    except UsageError as exc:
        if verbose:
            raise
        _fail(str(exc), code=2)
    except AgentError as exc:
        if as_json:
            typer.echo(to_json(_error_document(exc), indent=2).decode())
        if verbose:
            raise
        _fail(f"{type(exc).__name__}: {exc}", code=1)


def _error_document(exc: AgentError) -> dict[str, Any]:
    error = {"type": type(exc).__name__, "message": str(exc)}
    error.update({k: v for k in ("status", "code") if (v := getattr(exc, k, None)) is not None})
    return {"error": error, "partial_result": exc.partial_result}


def _fail(message: str, *, code: int) -> NoReturn:
    stderr.print(Text.assemble(("error: ", "red"), message), highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def main() -> None:
    """Entry point of the ``agent`` console script and ``python -m agent``."""
    app(prog_name="agent")


if __name__ == "__main__":  # pragma: no cover
    main()
