"""The ``agent`` command: ``demo``, ``run``, ``resume``, ``tools``, ``serve-local``, and the durable
``worker`` and ``runs`` (built on typer and rich).

Results go to stdout, everything else (progress, logs, errors) to stderr, so the answer can be
piped. With neither ``OPENAI_BASE_URL`` nor ``OPENAI_API_KEY`` set, runs use the embedded local
model server (a deterministic stand-in, not AI) and say so in one line; ``agent demo`` stays on
it unless ``--remote`` or ``OPENAI_BASE_URL`` says otherwise. The durable commands
live in ``agent._cli_durable``, imported only when one runs (DBOS is an optional extra); the
``--mcp`` servers in ``agent._cli_mcp_tools``, imported only when given (so is the ``mcp`` extra);
approvals (the terminal prompt, pausing, ``resume``'s decisions) in ``agent._cli_approvals``.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import ipaddress
import json
import os
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import anyio
import httpx
import typer
from pydantic_core import to_json
from rich.console import Console
from rich.text import Text
from structlog.typing import FilteringBoundLogger

from agent._agent import DEFAULT_BASE_URL, Agent
from agent._cli_approvals import (
    PAUSED_EXIT,
    Approvals,
    ApproveAllOption,
    DenyAllOption,
    StateFileOption,
    read_state,
    resume_decisions_for,
    resume_runner,
)
from agent._cli_mcp import serve_mcp_command
from agent._console import RunDisplay, cli_logger
from agent._errors import AgentError, UsageError
from agent._events import Hooks, OnApproval
from agent._logging import LogFormat, make_logger
from agent._otel import export_traces
from agent._registry import ToolRegistry
from agent._result import RunResult
from agent._retry import RetryPolicy
from agent._tools import Tool
from agent._urls import shown_url
from agent.durable import result_to_json
from agent.localmodel import (
    AutoPolicy,
    Endpoint,
    LocalModelServer,
    Policy,
    ScriptPolicy,
    demo_script,
    endpoint_or_local,
    serve,
)

if TYPE_CHECKING:
    from agent.mcp import MCPTools  # an optional extra, imported only when --mcp is given

__all__ = ["INCOMPLETE_EXIT", "PAUSED_EXIT", "app", "main"]

INCOMPLETE_EXIT = 3
"""Exit code of a run whose last response was cut short (``status: incomplete``)."""

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
DurableOption = Annotated[
    str | None,
    typer.Option(
        "--durable",
        envvar="AGENT_DURABLE_URL",
        help="DBOS database for durable runs: sqlite:///path or postgresql://...",
        show_default=False,
    ),
]
TemporalOption = Annotated[
    str | None,
    typer.Option(
        "--temporal", help="HOST:PORT of a Temporal server: runs are its workflows.", show_default=False
    ),
]
TaskQueueOption = Annotated[
    str | None,
    typer.Option("--task-queue", help="Temporal task queue (default: the name).", show_default=False),
]
NameOption = Annotated[
    str | None,
    typer.Option(
        "--name",
        help="Durable application name (default: DBOSAgent's, agent-runtime).",
        show_default=False,
    ),
]
ModelOption = Annotated[str, typer.Option(help="Model name.")]
InstructionsOption = Annotated[str | None, typer.Option(help="System instructions.")]
MaxTurnsOption = Annotated[int, typer.Option(min=1, help="Model responses before giving up.")]
MetadataOption = Annotated[list[str] | None, typer.Option(help="k=v request metadata, repeatable.")]
OtelOption = Annotated[
    bool, typer.Option("--otel", help="Export OpenTelemetry spans (OTEL_TRACES_EXPORTER=console|otlp).")
]
McpOption = Annotated[
    list[str] | None,
    typer.Option(
        "--mcp",
        help="An MCP server whose tools to add: 'stdio:COMMAND ARGS...' or an http(s):// URL; repeatable.",
        show_default=False,
    ),
]
McpHeaderOption = Annotated[
    list[str] | None,
    typer.Option(
        "--mcp-header", help="'Name: value' sent to every HTTP --mcp server; repeatable.", show_default=False
    ),
]


@app.command()
def demo(
    remote: Annotated[
        bool, typer.Option("--remote", help="Ask the endpoint of OPENAI_* instead of the local model.")
    ] = False,
    json_output: JsonOption = False,
    stream: StreamOption = True,
    log_format: LogFormatOption = "console",
    verbose: VerboseOption = False,
    otel: OtelOption = False,
) -> None:
    """Four builtin tools called in parallel, then the final answer.

    Runs on the embedded local model (not AI) unless --remote is given or OPENAI_BASE_URL is set;
    an exported OPENAI_API_KEY alone does not switch it.
    """
    _export_traces(otel)
    registry = load_tools(["builtin"])
    output = _Output(json_output, stream, log_format, verbose)
    runner = _in_process(DEMO_PROMPT, stream=output.stream)
    where = _demo_endpoint if remote or os.environ.get("OPENAI_BASE_URL") else _demo_local
    _run_command(registry, demo_script(), output, {"model": "gpt-4.1"}, runner, where=where)


@app.command()
def run(
    prompt: Annotated[str, typer.Argument(help="What to ask the model.")],
    model: ModelOption = "gpt-4.1",
    tools: ToolsOption = None,
    mcp: McpOption = None,
    mcp_header: McpHeaderOption = None,
    instructions: InstructionsOption = None,
    max_turns: MaxTurnsOption = 20,
    metadata: MetadataOption = None,
    durable: DurableOption = None,
    run_id: Annotated[
        str | None, typer.Option(help="Durable run id: a known one resumes or returns that run.")
    ] = None,
    enqueue: Annotated[
        bool, typer.Option("--enqueue", help="Only enqueue the durable run for a worker; print its id.")
    ] = False,
    name: NameOption = None,
    approve_all: ApproveAllOption = False,
    deny_all: DenyAllOption = False,
    state_file: StateFileOption = None,
    temporal: TemporalOption = None,
    task_queue: TaskQueueOption = None,
    json_output: JsonOption = False,
    stream: StreamOption = True,
    log_format: LogFormatOption = "console",
    verbose: VerboseOption = False,
    otel: OtelOption = False,
) -> None:
    """One run with the builtin tools (or --tools, --mcp); prints the final answer on stdout.

    With --durable (or $AGENT_DURABLE_URL) the run is checkpointed in that database; with
    --temporal HOST:PORT it is a Temporal workflow (this process serves while it waits). Calls that
    need approval are asked for on a terminal; elsewhere, without --approve-all or --deny-all,
    the run pauses (exit 4) and `agent resume` goes on from its --state-file.
    """
    _export_traces(otel)
    output = _Output(json_output, stream, log_format, verbose)
    approvals = Approvals(approve_all, deny_all, state_file, tools=tools or [])
    if temporal is not None:
        from agent import _cli_temporal  # optional extra, slow to import: only when used

        if approvals.given:
            _fail(
                "--approve-all, --deny-all and --state-file are for runs in this process, not --temporal",
                code=2,
            )
        if enqueue:
            enqueued = _guarded(
                lambda: _cli_temporal.enqueue(
                    prompt, address=temporal, name=name, task_queue=task_queue, run_id=run_id
                ),
                verbose,
            )
            typer.echo(enqueued)
            return
        runner = _cli_temporal.runner(prompt, temporal, name, task_queue, run_id or uuid.uuid4().hex, _note)
    elif durable is None:
        if run_id is not None or enqueue:
            _fail("--run-id and --enqueue need --durable URL (or AGENT_DURABLE_URL)", code=2)
        runner = _in_process(prompt, stream=output.stream, approvals=approvals)
    elif approvals.given:
        _fail(
            "--approve-all, --deny-all and --state-file are for runs in this process, not --durable", code=2
        )
    elif enqueue:
        _enqueue_command(prompt, durable, name, run_id, output)
        return
    else:
        runner = _durable_runner(prompt, durable, name, run_id)
    registry = load_tools(tools or ([] if mcp else ["builtin"]))
    for server in _mcp_servers(mcp or [], mcp_header or []):
        registry.add(server)
    options = _agent_options(model, instructions, max_turns, metadata)
    _run_command(registry, AutoPolicy(), output, options, runner, approvals=approvals)


@app.command()
def resume(
    state_file: Annotated[Path, typer.Argument(help="The saved state of a paused run (--state-file).")],
    approve: Annotated[
        list[str] | None, typer.Option("--approve", metavar="CALL_ID", help="Run this waiting call.")
    ] = None,
    deny: Annotated[
        list[str] | None,
        typer.Option("--deny", metavar="CALL_ID[=REASON]", help="Do not run this waiting call."),
    ] = None,
    approve_all: ApproveAllOption = False,
    deny_all: DenyAllOption = False,
    save_state: StateFileOption = None,
    model: Annotated[str | None, typer.Option(help="Model name (default: the paused run's).")] = None,
    tools: ToolsOption = None,
    mcp: McpOption = None,
    mcp_header: McpHeaderOption = None,
    instructions: InstructionsOption = None,
    max_turns: MaxTurnsOption = 20,
    metadata: MetadataOption = None,
    json_output: JsonOption = False,
    stream: StreamOption = True,
    log_format: LogFormatOption = "console",
    verbose: VerboseOption = False,
    otel: OtelOption = False,
) -> None:
    """Resume a run that paused for approvals, from its STATE_FILE; prints the answer like `agent run`.

    Give the paused run's --tools and --mcp. A waiting call not named by --approve or --deny is decided by
    --approve-all/--deny-all, else asked for on a terminal, else denied. What the resume runs is
    written back to STATE_FILE, so resuming it again does not run an approved call twice.
    """
    _export_traces(otel)
    output = _Output(json_output, stream, log_format, verbose)
    approvals = Approvals(approve_all, deny_all, save_state, tools=tools or [])
    registry = load_tools(tools or ([] if mcp else ["builtin"]))
    for server in _mcp_servers(mcp or [], mcp_header or []):
        registry.add(server)
    state = read_state(state_file)
    decisions = resume_decisions_for(state, registry, approve or [], deny or [], approvals)
    runner = resume_runner(state_file, state, decisions, approvals, stream=output.stream)
    options = _agent_options(model or str(state.get("model", "gpt-4.1")), instructions, max_turns, metadata)
    _run_command(registry, AutoPolicy(), output, options, runner, approvals=approvals)


@app.command()
def worker(
    durable: DurableOption = None,
    concurrency: Annotated[
        int | None, typer.Option(min=1, help="Runs at once per worker (one value for every worker).")
    ] = None,
    global_concurrency: Annotated[
        int | None, typer.Option(min=1, help="Runs at once over all workers.")
    ] = None,
    name: NameOption = None,
    temporal: TemporalOption = None,
    task_queue: TaskQueueOption = None,
    model: ModelOption = "gpt-4.1",
    tools: ToolsOption = None,
    instructions: InstructionsOption = None,
    max_turns: MaxTurnsOption = 20,
    metadata: MetadataOption = None,
    log_format: LogFormatOption = "console",
    verbose: VerboseOption = False,
) -> None:
    """Serve durable runs (enqueued, resumed, recovered) until Ctrl-C or SIGTERM."""
    serve: Callable[[Agent], Awaitable[str]]
    if temporal is not None:
        from agent import _cli_temporal  # optional extra, slow to import: only when used

        serve = partial(
            _cli_temporal.serve, address=temporal, name=name, task_queue=task_queue, announce=_note
        )
    else:
        url = _durable_url(durable)
        _require_dbos()
        from agent import _cli_durable  # optional extra, slow to import: only when used

        serve = partial(
            _cli_durable.serve,
            database_url=url,
            name=name,
            worker_concurrency=concurrency,
            global_concurrency=global_concurrency,
            announce=_note,
        )
    registry = load_tools(tools or ["builtin"])
    options = _agent_options(model, instructions, max_turns, metadata)
    logger = _Output(False, False, log_format, verbose).logger()
    with _endpoint(AutoPolicy(), pace=0.0) as endpoint:

        async def go() -> str:
            async with _agent(registry, endpoint, logger, options) as agent:
                return await serve(agent)

        signal_name = _guarded(go, verbose)
    _note(f"worker stopped ({signal_name})")


@app.command()
def runs(
    action: Annotated[
        str, typer.Argument(help="list; show RUN_ID; approve or deny RUN_ID CALL_ID.")
    ] = "list",
    run_id: Annotated[str | None, typer.Argument(help="The run to show.", show_default=False)] = None,
    call_id: Annotated[str | None, typer.Argument(help="The call to decide.", show_default=False)] = None,
    durable: DurableOption = None,
    name: NameOption = None,
    limit: Annotated[int, typer.Option(min=1, help="Runs to list, newest first.")] = 50,
    json_output: Annotated[bool, typer.Option("--json", help="Print the runs as JSON.")] = False,
    arguments: Annotated[
        str | None, typer.Option(help="approve: run the call with these arguments (a JSON object).")
    ] = None,
    reason: Annotated[str, typer.Option(help="deny: why (the model reads it).")] = "",
    verbose: VerboseOption = False,
) -> None:
    """The durable runs of an application: a table, one run in detail, or a decision for a call."""
    deciding = action in ("approve", "deny")
    if (
        action not in ("list", "show", "approve", "deny")
        or (action != "list") != (run_id is not None)
        or deciding != (call_id is not None)
    ):
        _fail("usage: agent runs [list | show RUN_ID | approve RUN_ID CALL_ID | deny RUN_ID CALL_ID]", code=2)
    url = _durable_url(durable)
    _require_dbos()
    from agent import _cli_durable  # optional extra, slow to import: only when used

    if deciding:
        run, call, approved = run_id or "", call_id or "", action == "approve"
        _guarded(
            lambda: _cli_durable.decide_run(
                database_url=url,
                name=name,
                run_id=run,
                call_id=call,
                approved=approved,
                arguments=arguments,
                reason=reason,
            ),
            verbose,
        )
        _note(f"{'approved' if approved else 'denied'} {call} of run {run}")
        return

    if run_id is None:
        infos = _guarded(lambda: _cli_durable.list_runs(database_url=url, name=name, limit=limit), verbose)
        typer.echo(_cli_durable.render_runs(infos, as_json=json_output))
        return
    info = _guarded(lambda: _cli_durable.show_run(database_url=url, name=name, run_id=run_id), verbose)
    if info is None:
        _fail(f"no run {run_id!r} in application {name or _cli_durable.DEFAULT_NAME!r}", code=1)
    typer.echo(_cli_durable.render_run(info, as_json=json_output))


@app.command("tools")
def list_tools(
    tools: ToolsOption = None,
    mcp: McpOption = None,
    mcp_header: McpHeaderOption = None,
    verbose: VerboseOption = False,
) -> None:
    """The registered tools and their JSON schemas, as JSON (an MCP server's tools name it)."""
    entries = load_tools(tools or ([] if mcp else ["builtin"])).wire()
    servers = _mcp_servers(mcp or [], mcp_header or [])
    if servers:
        from agent import _cli_mcp_tools  # optional extra: only when --mcp is given

        entries += _guarded(lambda: _cli_mcp_tools.list_tools(servers), verbose)
    typer.echo(json.dumps(entries, indent=2))


@app.command("serve-local")
def serve_local(
    port: Annotated[int, typer.Option(help="TCP port on 127.0.0.1.")] = 8000,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    script: Annotated[
        Path | None, typer.Option(help="Replay this transcript (JSON); default: call every tool, report.")
    ] = None,
    api_key: Annotated[
        str | None, typer.Option(help="Require this bearer key (401 otherwise).", show_default=False)
    ] = None,
    stream_delay: Annotated[
        float, typer.Option(min=0.0, help="Seconds between streamed items, to watch a stream.")
    ] = 0.0,
    auto: Annotated[bool, typer.Option("--auto", hidden=True, help="The default policy.")] = False,
) -> None:
    """Run the local model server in the foreground (a deterministic stand-in, not AI)."""
    if script and auto:
        _fail("use either --script or --auto (the default), not both", code=2)
    policy: Policy = _load_script(script) if script else AutoPolicy()

    def announce(url: str) -> None:
        _note(f"local model server (not AI) on {url} - Ctrl+C to stop")

    try:
        serve(policy, host=host, port=port, api_key=api_key, stream_delay=stream_delay, on_ready=announce)
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
    """Import the user's module, looking in the current directory first (as ``python -m`` does).

    Whatever its code raises is a bad target, not a crash; a module that is found but whose own
    imports fail is told apart from a module that is nowhere.
    """
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
        importlib.invalidate_caches()
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and _is_prefix(exc.name, module_name):
            raise ImportError(
                f"no module named {exc.name!r} (looked in the current directory and on sys.path)"
            ) from exc
        raise ImportError(f"{module_name} was found, but its import of {exc.name} failed: {exc}") from exc
    except Exception as exc:
        raise ImportError(f"importing {module_name} failed: {type(exc).__name__}: {exc}") from exc


def _is_prefix(package: str, module_name: str) -> bool:
    """Whether ``package`` is ``module_name`` or one of its parent packages."""
    return module_name == package or module_name.startswith(package + ".")


def _mcp_servers(specs: list[str], headers: list[str]) -> list[MCPTools]:
    """The tool sources of ``--mcp`` (with ``--mcp-header``); exits 2 on a bad value or without the extra."""
    if not specs and not headers:
        return []
    if importlib.util.find_spec("mcp") is None:
        _fail("--mcp needs the mcp extra: pip install 'agent-runtime[mcp]'", code=2)
    from agent import _cli_mcp_tools  # optional extra: only when --mcp is given

    try:
        return _cli_mcp_tools.sources(specs, _cli_mcp_tools.parse_headers(headers))
    except ValueError as exc:
        _fail(str(exc), code=2)


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

    def format(self) -> LogFormat:
        if self.log_format not in ("console", "json"):
            _fail("--log-format takes console or json", code=2)
        return "json" if self.log_format == "json" else "console"

    def logger(self) -> FilteringBoundLogger:
        return make_logger(self.format(), level="debug" if self.verbose else "warning")


Runner = Callable[[Agent, RunDisplay], Awaitable[RunResult]]
"""How a run command runs once its agent and display are ready: in process, or durably."""


def _run_command(
    registry: ToolRegistry,
    local_policy: Policy,
    output: _Output,
    options: dict[str, Any],
    runner: Runner,
    *,
    where: Callable[..., AbstractContextManager[Endpoint]] | None = None,
    approvals: Approvals | None = None,
) -> None:
    display = RunDisplay(stderr, sys.stdout, stream_text=output.stream and not output.json and _tty())
    logger, watch = cli_logger(display, output.format(), verbose=output.verbose)
    # Paced like a model when streaming to a person, so the stream can be seen; else at full speed.
    pace = _LOCAL_PACE if display.stream_text else 0.0
    with (where or _endpoint)(local_policy, pace=pace) as endpoint:

        async def go() -> RunResult:
            async with _agent(registry, endpoint, logger, options) as agent:
                with display:
                    return await runner(agent, display)

        result = _guarded(go, output.verbose, as_json=output.json, sent=lambda: watch.requests)
    as_json = to_json(result_to_json(result), indent=2).decode() if output.json else None
    if result.status == "awaiting_approval":
        (approvals or Approvals()).paused(result, display, as_json)  # exits 4
    display.finish(result, as_json=as_json)
    if result.status == "incomplete":
        reason = result.incomplete_reason or "no reason given"
        _fail(f"the response was cut short (status incomplete: {reason})", code=INCOMPLETE_EXIT)


_LOCAL_NOTICE = "no OPENAI_BASE_URL/OPENAI_API_KEY: running on the embedded local model (not AI)"


@contextmanager
def _endpoint(local_policy: Policy, *, pace: float) -> Iterator[Endpoint]:
    """The configured endpoint, or the embedded local model (said in one line on stderr)."""
    with endpoint_or_local(local_policy, stream_delay=pace) as endpoint:
        if endpoint.local:
            _note(_LOCAL_NOTICE, style="dim")
        yield endpoint


@contextmanager
def _demo_local(local_policy: Policy, *, pace: float) -> Iterator[Endpoint]:
    """The embedded local model, whatever ``OPENAI_API_KEY`` says (the demo's default)."""
    with LocalModelServer(local_policy, stream_delay=pace) as server:
        _note("agent demo: running on the embedded local model (not AI); --remote for yours", style="dim")
        yield Endpoint(base_url=server.base_url, api_key="local", local=True)


@contextmanager
def _demo_endpoint(local_policy: Policy, *, pace: float) -> Iterator[Endpoint]:
    """The endpoint ``OPENAI_*`` names (``agent demo --remote`` or ``OPENAI_BASE_URL`` set)."""
    _note(f"agent demo: on the endpoint {shown_url(os.environ.get('OPENAI_BASE_URL') or DEFAULT_BASE_URL)}")
    yield Endpoint(base_url=None, api_key=None, local=False)


_LOOPBACK_RETRY = RetryPolicy(initial_delay=0.05, max_delay=0.5, jitter=0.05)
"""Retries against a server on this machine: nothing is gained by waiting the default 0.5 s and
more for a refused port or a local 5xx; a ``Retry-After`` is still followed."""


def _agent(
    registry: ToolRegistry, endpoint: Endpoint, logger: FilteringBoundLogger, options: dict[str, Any]
) -> Agent:
    url = endpoint.base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
    if _is_loopback(url):
        options = {"retry": _LOOPBACK_RETRY, **options}
    return Agent(
        tools=registry, logger=logger, base_url=endpoint.base_url, api_key=endpoint.api_key, **options
    )


def _is_loopback(url: str) -> bool:
    """Whether ``url`` names this machine (a bad URL is not: the Agent refuses it later)."""
    try:
        host = httpx.URL(url).host
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except (httpx.InvalidURL, ValueError):
        return False


def _agent_options(
    model: str, instructions: str | None, max_turns: int, metadata: list[str] | None
) -> dict[str, Any]:
    return {
        "model": model,
        "instructions": instructions,
        "max_turns": max_turns,
        "metadata": _parse_metadata(metadata or []),
    }


def _in_process(prompt: str, *, stream: bool, approvals: Approvals | None = None) -> Runner:
    async def runner(agent: Agent, display: RunDisplay) -> RunResult:
        on_approval = approvals.policy(agent.tools, display.paused) if approvals else None
        return await _watched_run(agent, prompt, display, stream=stream, on_approval=on_approval)

    return runner


def _durable_runner(prompt: str, durable: str, name: str | None, run_id: str | None) -> Runner:
    """A durable run in this process; its id goes to stderr first, to resume it after a crash."""
    url = _durable_url(durable)
    _require_dbos()
    from agent import _cli_durable  # optional extra, slow to import: only when used

    chosen = run_id or uuid.uuid4().hex

    async def runner(agent: Agent, display: RunDisplay) -> RunResult:
        _note(f"durable run {chosen} on {_cli_durable.shown_database(url)}")
        return await _cli_durable.run(
            agent, prompt, database_url=url, name=name, run_id=chosen, hooks=display.hooks()
        )

    return runner


def _enqueue_command(
    prompt: str, durable: str, name: str | None, run_id: str | None, output: _Output
) -> None:
    url = _durable_url(durable)
    _require_dbos()
    from agent import _cli_durable  # optional extra, slow to import: only when used

    output.logger()  # checks --log-format, as every run command does
    enqueued = _guarded(
        lambda: _cli_durable.enqueue(prompt, database_url=url, name=name, run_id=run_id), output.verbose
    )
    typer.echo(to_json({"run_id": enqueued}, indent=2).decode() if output.json else enqueued)


def _require_dbos() -> None:
    if importlib.util.find_spec("dbos") is None:
        _fail("durable runs need DBOS: pip install 'agent-runtime[dbos]'", code=2)


def _durable_url(url: str | None) -> str:
    if not url:
        _fail("no database for durable runs: pass --durable URL or set AGENT_DURABLE_URL", code=2)
    return url


def _export_traces(otel: bool) -> None:
    """``--otel``: spans go where the OTEL_* variables say; a missing extra is one line, exit 2."""
    if otel:
        try:
            export_traces()
        except UsageError as exc:
            _fail(str(exc), code=2)


def _note(line: str, *, style: str | None = None) -> None:
    """One line on stderr, as it is (no wrapping, no markup)."""
    stderr.print(line, soft_wrap=True, markup=False, highlight=False, style=style)


async def _watched_run(
    agent: Agent, prompt: str, display: RunDisplay, *, stream: bool, on_approval: OnApproval | None = None
) -> RunResult:
    """Run with ``display`` watching: every event when streaming, tool hooks otherwise."""
    if not stream:
        return await agent.run(prompt, hooks=dataclasses.replace(display.hooks(), on_approval=on_approval))
    async with agent.run_stream(prompt, hooks=Hooks(on_approval=on_approval)) as events:
        async for event in events:
            display.handle(event)
    if events.result is None:  # pragma: no cover - run_stream raises instead
        raise AssertionError("the run ended without a result")
    return events.result


def _tty() -> bool:
    return sys.stdout.isatty()


def _guarded(
    main: Callable[[], Awaitable[T]],
    verbose: bool,
    *,
    as_json: bool = False,
    sent: Callable[[], int] = lambda: 0,
) -> T:
    """Run ``main``; a runtime error becomes one line on stderr and exit code 1 (traceback with -v).

    With ``as_json`` stdout still gets a JSON document: the error and what the run had done
    (``sent()``: the model requests sent, retries included).
    """
    try:
        return anyio.run(main)
    except UsageError as exc:
        if verbose:
            raise
        _fail(str(exc), code=2)
    except AgentError as exc:
        if as_json:
            typer.echo(to_json(_error_document(exc, sent()), indent=2).decode())
        if verbose:
            raise
        _fail(f"{type(exc).__name__}: {exc}", code=1)


def _error_document(exc: AgentError, sent: int = 0) -> dict[str, Any]:
    """The error, and what the run had done: status ``failed``, the requests sent counted."""
    error = {"type": type(exc).__name__, "message": str(exc)}
    error.update({k: v for k in ("status", "code") if (v := getattr(exc, k, None)) is not None})
    partial = result_to_json(exc.partial_result) if exc.partial_result is not None else None
    if partial is not None:
        partial["status"] = "failed"
        partial["usage"]["requests"] = max(partial["usage"]["requests"], sent)
    return {"error": error, "partial_result": partial}


def _fail(message: str, *, code: int) -> NoReturn:
    stderr.print(Text.assemble(("error: ", "red"), message), highlight=False, soft_wrap=True)
    raise typer.Exit(code)


app.command("serve-mcp")(serve_mcp_command(load_tools))


def main() -> None:
    """Entry point of the ``agent`` console script and ``python -m agent``."""
    app(prog_name="agent")


if __name__ == "__main__":  # pragma: no cover
    main()
