"""The ``agent`` command: demo, run, tools and serve-local, in-process and as real processes."""

from __future__ import annotations

import functools
import io
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner, Result

from agent import Agent, TextDelta, ToolCallStarted, ToolRegistry, UsageError, tool
from agent import _cli as cli
from agent._console import RunDisplay, cli_logger
from agent.localmodel import AutoPolicy, Endpoint, Fault, LocalModelServer
from tests._support import FAST_RETRY, REPO_ROOT

DEMO_TOOLS = ["current_time", "math_calculator", "random_generator", "system_info"]
LOCAL_MODEL_NOTICE = "running on the embedded local model"
AGENT_SCRIPT = Path(sys.executable).with_name("agent")
# Variables that would make rich draw a live terminal display instead of one line per call.
_TERMINAL_HINTS = ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")
NO_OPENAI: dict[str, str | None] = {"OPENAI_BASE_URL": None, "OPENAI_API_KEY": None}

runner = CliRunner()


@tool
def shout(text: str) -> str:
    """Upper-case a text."""
    return text.upper()


@tool
async def count(text: str) -> int:
    """Count the characters of a text."""
    return len(text)


REGISTRY = ToolRegistry([shout, count])
TOOL_LIST = [shout, count]
NOT_TOOLS = [1, 2]


def invoke(*args: str, env: Mapping[str, str | None] | None = None) -> Result:
    """Run the typer app in-process."""
    return runner.invoke(cli.app, list(args), env=env)


def against(server: LocalModelServer, key: str = "x") -> dict[str, str | None]:
    """Environment pointing the command at ``server``."""
    return {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": key}


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


def assert_one_line_error(result: Result, code: int, *, mentions: str) -> None:
    """Exit ``code``, exactly one ``error:`` line (the last) naming ``mentions``, no traceback."""
    assert result.exit_code == code, result.output
    lines = error_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert lines[0] == result.stderr.strip().splitlines()[-1]
    assert mentions in lines[0]
    assert "Traceback" not in result.output


def process_env(**extra: str) -> dict[str, str]:
    """This environment without OPENAI_* (nor terminal hints), plus ``extra``."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_") and k not in _TERMINAL_HINTS}
    return {**keep, **extra}


def run_process(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run a command line as a real process, in the repository, with a clean environment."""
    return subprocess.run(
        list(args),
        check=False,
        env=process_env(**env),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """Poll until something accepts connections on ``port``; fail if the process ends or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server exited with {process.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        except OSError:
            time.sleep(0.05)
        else:
            return
    pytest.fail(f"nothing listened on port {port} within {timeout} s")


@pytest.fixture(scope="module")
def demo() -> Result:
    """One in-process ``agent demo`` on the embedded local model, shared by the demo tests."""
    return invoke("demo", env=NO_OPENAI)


@pytest.fixture
def server() -> Iterator[LocalModelServer]:
    with LocalModelServer(AutoPolicy()) as local:
        yield local


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The command's agents retry without waiting (the command has no retry option)."""
    monkeypatch.setattr(cli, "Agent", functools.partial(Agent, retry=FAST_RETRY))


def test_demo_prints_the_final_answer_on_stdout(demo: Result) -> None:
    """``agent demo`` ends with the scripted answer, which quotes 123.5 + 456.7, on stdout."""
    assert demo.exit_code == 0, demo.output
    assert demo.stdout.startswith("I ran the four tasks in parallel.")
    assert "123.5 + 456.7 = " in demo.stdout
    assert "580.2" in demo.stdout


def test_demo_prints_each_tool_result_on_stderr(demo: Result) -> None:
    """Each of the four builtin tools gets one ``ok name(args) -> result`` line on stderr."""
    finished = [line.split("(")[0] for line in demo.stderr.splitlines() if line.startswith("ok ")]
    assert sorted(finished) == [f"ok {name}" for name in DEMO_TOOLS]
    assert "ok " not in demo.stdout


def test_demo_says_once_that_it_runs_on_the_local_model(demo: Result) -> None:
    """Without OPENAI_* the demo says, in one stderr line, that it runs on the local model."""
    notices = [line for line in demo.stderr.splitlines() if LOCAL_MODEL_NOTICE in line]
    assert len(notices) == 1
    assert "not AI" in notices[0]
    assert LOCAL_MODEL_NOTICE not in demo.stdout


def test_demo_json_is_a_run_result_with_four_tool_calls() -> None:
    """``agent demo --json`` prints the whole RunResult: 2 turns, four ok tool calls."""
    result = invoke("demo", "--json", env=NO_OPENAI)
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert sorted(call["name"] for call in document["tool_calls"]) == DEMO_TOOLS
    assert [call["kind"] for call in document["tool_calls"]] == ["ok"] * 4
    assert (document["turns"], document["status"]) == (2, "completed")
    assert document["output"].startswith("I ran the four tasks in parallel.")


def test_demo_console_script_runs_on_the_local_model() -> None:
    """The installed ``agent demo`` script runs the four tools and prints the answer."""
    done = run_process(str(AGENT_SCRIPT), "demo")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("I ran the four tasks in parallel.")
    assert sum(line.startswith("ok ") for line in done.stderr.splitlines()) == 4
    assert LOCAL_MODEL_NOTICE in done.stderr


def test_run_prints_the_servers_final_answer(server: LocalModelServer) -> None:
    """``agent run`` against OPENAI_BASE_URL prints the model's report of every builtin tool."""
    result = invoke("run", "Use the tools.", env=against(server))
    assert result.exit_code == 0, result.output
    reported = sorted(line.partition(":")[0] for line in result.stdout.splitlines())
    assert reported == DEMO_TOOLS
    assert LOCAL_MODEL_NOTICE not in result.stderr
    assert len(server.requests) == 2


def test_run_metadata_reaches_the_request_body(server: LocalModelServer) -> None:
    """``--metadata model_id=32`` is sent as request metadata, in every request."""
    result = invoke("run", "hi", "--metadata", "model_id=32", "--metadata", "x=a=b", env=against(server))
    assert result.exit_code == 0, result.output
    assert [r["metadata"] for r in server.requests] == [{"model_id": "32", "x": "a=b"}] * 2


@pytest.mark.parametrize("pair", ["model_id", "=32"])
def test_run_metadata_without_a_key_and_value_exits_2(pair: str) -> None:
    """A ``--metadata`` value that is not key=value is a caller mistake."""
    assert_one_line_error(invoke("run", "hi", "--metadata", pair), 2, mentions="--metadata")


@pytest.mark.parametrize(
    ("targets", "names"),
    [
        (["builtin"], ["random_generator", "system_info", "math_calculator", "current_time"]),
        (["tests.test_cli:REGISTRY"], ["shout", "count"]),
        (["tests.test_cli:TOOL_LIST"], ["shout", "count"]),
        (["tests.test_cli:shout"], ["shout"]),
        (["tests.test_cli:count", "builtin_tools:math_calculator"], ["count", "math_calculator"]),
    ],
)
def test_tools_option_loads_registries_lists_and_single_tools(targets: list[str], names: list[str]) -> None:
    """``--tools`` takes 'builtin' or module:attr naming a registry, a list or a tool; repeatable."""
    options = [arg for target in targets for arg in ("--tools", target)]
    result = invoke("tools", *options)
    assert result.exit_code == 0, result.output
    assert [entry["name"] for entry in json.loads(result.stdout)] == names


def test_run_calls_the_tools_named_by_tools_option(server: LocalModelServer) -> None:
    """``agent run --tools module:attr`` offers (and runs) exactly those tools."""
    result = invoke("run", "hi", "--tools", "tests.test_cli:REGISTRY", env=against(server))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["shout: EXAMPLE", "count: 7"]
    assert [t["name"] for t in server.requests[0]["tools"]] == ["shout", "count"]


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("nope", "expected 'builtin' or 'module:attr'"),
        (":REGISTRY", "expected 'builtin' or 'module:attr'"),
        ("tests.test_cli:", "expected 'builtin' or 'module:attr'"),
        ("no_such_module_here:tools", "no module named 'no_such_module_here'"),
        ("tests.test_cli:MISSING", "has no attribute 'MISSING'"),
        ("tests.test_cli:NOT_TOOLS", "is a list, not a ToolRegistry"),
        ("os:path", "is a module, not a ToolRegistry"),
    ],
)
def test_bad_tools_target_exits_2_with_one_line(target: str, reason: str) -> None:
    """A ``--tools`` target that names no tools is a caller mistake: exit 2, one line, no traceback."""
    result = invoke("run", "hi", "--tools", target)
    assert_one_line_error(result, 2, mentions=f"bad --tools target {target!r}")
    assert reason in result.stderr


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        pytest.param("def broken(:\n", "SyntaxError", id="syntax-error"),
        pytest.param("raise RuntimeError('boom')\n", "RuntimeError: boom", id="raises-on-import"),
    ],
)
def test_tools_module_that_fails_to_import_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, reason: str
) -> None:
    """A ``--tools`` module whose own code fails on import is a bad target, not a crash."""
    name = f"cli_tools_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    result = invoke("tools", "--tools", f"{name}:registry")
    assert_one_line_error(result, 2, mentions=reason)


def test_tools_prints_json_schemas_with_explicit_strict() -> None:
    """``agent tools`` prints every builtin tool as a function schema with an explicit strict flag."""
    result = invoke("tools")
    assert result.exit_code == 0, result.output
    entries = json.loads(result.stdout)
    assert sorted(entry["name"] for entry in entries) == DEMO_TOOLS
    for entry in entries:
        assert entry["type"] == "function"
        assert isinstance(entry["strict"], bool)
        assert entry["parameters"]["type"] == "object"


@pytest.mark.usefixtures("fast_retries")
def test_refused_connection_exits_1_with_one_line() -> None:
    """A closed port on 127.0.0.1: retried, then exit 1 with one error line and no traceback."""
    env = {"OPENAI_BASE_URL": f"http://127.0.0.1:{free_port()}/v1", "OPENAI_API_KEY": "x"}
    assert_one_line_error(invoke("run", "hi", env=env), 1, mentions="APIConnectionError")


def test_wrong_api_key_exits_1_without_showing_the_key() -> None:
    """A 401 for a wrong key exits 1 naming AuthenticationError; the key itself is not printed."""
    with LocalModelServer(AutoPolicy(), api_key="right") as server:
        result = invoke("run", "hi", env=against(server, key="wrong-key-value"))
    assert_one_line_error(result, 1, mentions="AuthenticationError")
    assert "wrong-key-value" not in result.output


def test_rate_limit_after_retries_exits_1() -> None:
    """429 on every attempt (Retry-After: 0): three requests, then exit 1 naming RateLimitError."""
    faults = [Fault(status=429, retry_after=0)] * 3
    with LocalModelServer(AutoPolicy(), faults=faults) as server:
        result = invoke("run", "hi", env=against(server))
        assert len(server.requests) == 3
    assert_one_line_error(result, 1, mentions="RateLimitError")
    assert "429" in error_lines(result.stderr)[0]


def test_max_turns_exceeded_exits_1(server: LocalModelServer) -> None:
    """``--max-turns 1`` while the model still calls tools: exit 1 naming MaxTurnsExceeded."""
    assert_one_line_error(
        invoke("run", "hi", "--max-turns", "1", env=against(server)), 1, mentions="MaxTurnsExceeded"
    )


@pytest.mark.parametrize(
    "url",
    [
        "notaurl",
        "127.0.0.1:8000/v1",
        "ftp://example.test/v1",
        "http://",
        "http://[::1/v1",
        "http://127.0.0.1:99999/v1",
    ],
)
def test_bad_base_url_exits_2(url: str) -> None:
    """An OPENAI_BASE_URL httpx could never send to is a caller mistake: exit 2, one line."""
    result = invoke("run", "hi", env={"OPENAI_BASE_URL": url, "OPENAI_API_KEY": "x"})
    assert_one_line_error(result, 2, mentions="base_url")


def test_bad_log_format_exits_2() -> None:
    """``--log-format`` takes console or json only."""
    assert_one_line_error(invoke("demo", "--log-format", "xml"), 2, mentions="--log-format")


def test_verbose_shows_the_traceback() -> None:
    """With ``-v`` a failed run ends in the exception's traceback instead of one line."""
    with LocalModelServer(AutoPolicy(), api_key="right") as server:
        done = run_process(
            str(AGENT_SCRIPT), "run", "hi", "-v", OPENAI_BASE_URL=server.base_url, OPENAI_API_KEY="wrong"
        )
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("agent._errors.AuthenticationError: HTTP 401")


def test_serve_local_answers_python_m_agent_run(tmp_path: Path) -> None:
    """``agent serve-local --auto`` serves a real port that ``python -m agent run`` gets answers from."""
    port = free_port()
    with (tmp_path / "server.log").open("wb") as log:
        process = subprocess.Popen(
            [str(AGENT_SCRIPT), "serve-local", "--auto", "--port", str(port)],
            env=process_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until_listening(port, process)
            done = run_process(
                sys.executable,
                "-m",
                "agent",
                "run",
                "hi",
                OPENAI_BASE_URL=f"http://127.0.0.1:{port}/v1",
                OPENAI_API_KEY="x",
            )
        finally:
            process.terminate()
            process.wait(timeout=15)
    assert done.returncode == 0, done.stderr
    assert sorted(line.partition(":")[0] for line in done.stdout.splitlines()) == DEMO_TOOLS
    assert "local model server (not AI)" in (tmp_path / "server.log").read_text()


def test_no_stream_and_stream_give_the_same_json_shape(server: LocalModelServer) -> None:
    """--json output is the same RunResult with or without streaming."""
    streamed = invoke("run", "hello", "--json", env=against(server))
    plain = invoke("run", "hello", "--json", "--no-stream", env=against(server))
    assert (streamed.exit_code, plain.exit_code) == (0, 0)
    a, b = json.loads(streamed.stdout), json.loads(plain.stdout)
    names = sorted(c["name"] for c in a["tool_calls"])
    assert (a.keys(), names, a["turns"]) == (b.keys(), sorted(c["name"] for c in b["tool_calls"]), b["turns"])
    assert [body.get("stream") for body in server.requests] == [True, True, None, None]


def test_streamed_text_reaches_stdout_piece_by_piece() -> None:
    """On a terminal the answer is written delta by delta, then one newline; nothing twice."""
    import io

    from rich.console import Console

    from agent import RunResult, TextDelta, Usage
    from agent._console import RunDisplay

    out = io.StringIO()
    writes: list[str] = []
    display = RunDisplay(Console(file=io.StringIO()), out, stream_text=True)
    for piece in ("Hello", ", ", "world"):
        display.handle(TextDelta(1, "msg_1", piece))
        writes.append(out.getvalue())
    result = RunResult("Hello, world", [], (), Usage(), 1, ("resp_1",))
    display.finish(result)
    assert writes == ["Hello", "Hello, ", "Hello, world"]
    assert out.getvalue() == "Hello, world\n"


def test_streaming_demo_in_a_terminal_shows_the_table_and_the_answer() -> None:
    """In a pseudo-terminal, `agent demo` draws the live table and streams the answer."""
    import pty

    env = process_env()
    env.update({"COLUMNS": "160", "LINES": "50"})
    primary, secondary = pty.openpty()
    process = subprocess.Popen(
        [str(AGENT_SCRIPT), "demo"], stdin=secondary, stdout=secondary, stderr=secondary, env=env
    )
    os.close(secondary)
    chunks = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            data = os.read(primary, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    process.wait(timeout=30)
    os.close(primary)
    screen = b"".join(chunks).decode(errors="replace")
    assert process.returncode == 0
    assert "tool calls" in screen
    assert "Three random numbers between 1 and 100" in screen


def test_streamed_preamble_and_answer_stay_on_their_own_lines() -> None:
    """Text of two messages (a preamble, later the answer) is not glued together."""
    import io

    from rich.console import Console

    from agent import RunResult, TextDelta, Usage
    from agent._console import RunDisplay

    out = io.StringIO()
    display = RunDisplay(Console(file=io.StringIO()), out, stream_text=True)
    for item, piece in (("msg_1", "Let me check."), ("msg_2", "It is "), ("msg_2", "noon.")):
        display.handle(TextDelta(1, item, piece))
    display.finish(RunResult("It is noon.", [], (), Usage(), 2, ("r1", "r2")))
    assert out.getvalue() == "Let me check.\nIt is noon.\n"


def test_json_failure_still_prints_a_json_document(server: LocalModelServer) -> None:
    """With --json a failed run prints the error and the partial result on stdout, and exits 1."""
    result = invoke("run", "hi", "--max-turns", "1", "--json", env=against(server))
    document = json.loads(result.stdout)
    assert result.exit_code == 1
    assert document["error"]["type"] == "MaxTurnsExceeded"
    assert len(document["partial_result"]["tool_calls"]) == 4


def test_console_script_finds_a_tools_module_in_the_current_directory(tmp_path: Path) -> None:
    """``agent tools --tools mod:attr`` run where ``mod.py`` lies finds it, as ``python -m agent`` does."""
    (tmp_path / "mytools.py").write_text(
        "from agent import tool\n\n@tool\ndef ping() -> str:\n    'Answer pong.'\n    return 'pong'\n"
    )
    done = subprocess.run(
        [str(AGENT_SCRIPT), "tools", "--tools", "mytools:ping"],
        cwd=tmp_path,
        env=process_env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert [entry["name"] for entry in json.loads(done.stdout)] == ["ping"]


def test_tools_module_whose_own_import_fails_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A module found but importing a missing package is reported as such, not as a missing module."""
    name = f"cli_tools_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    result = invoke("tools", "--tools", f"{name}:registry")
    assert_one_line_error(
        result, 2, mentions=f"{name} was found, but its import of no_such_dependency_xyz failed"
    )


def test_missing_tools_module_says_where_it_was_looked_for() -> None:
    """A module that is nowhere is named as missing, the current directory included in the search."""
    result = invoke("tools", "--tools", "no_such_module_here:tools")
    assert_one_line_error(result, 2, mentions="no module named 'no_such_module_here'")
    assert "current directory" in result.stderr


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_incomplete_response_exits_3_with_the_reason(json_flag: list[str]) -> None:
    """A response cut short (status incomplete) exits 3 with its reason on one stderr line."""
    with LocalModelServer(AutoPolicy(), faults=[Fault(incomplete="max_output_tokens")]) as server:
        result = invoke("run", "hi", "--no-stream", *json_flag, env=against(server))
    assert_one_line_error(result, cli.INCOMPLETE_EXIT, mentions="incomplete")
    assert "max_output_tokens" in error_lines(result.stderr)[0]
    if json_flag:
        assert json.loads(result.stdout)["status"] == "incomplete"


def test_demo_stays_local_when_only_an_api_key_is_exported() -> None:
    """An exported OPENAI_API_KEY alone does not send the demo to the real API."""
    result = invoke("demo", "--json", env={"OPENAI_BASE_URL": None, "OPENAI_API_KEY": "sk-real"})
    assert result.exit_code == 0, result.output
    assert LOCAL_MODEL_NOTICE in result.stderr
    assert "--remote" in result.stderr


def test_demo_goes_remote_when_a_base_url_is_set(server: LocalModelServer) -> None:
    """With OPENAI_BASE_URL set the demo runs there and says so in one line."""
    result = invoke("demo", "--json", env=against(server))
    assert result.exit_code == 0, result.output
    assert LOCAL_MODEL_NOTICE not in result.stderr
    assert [line for line in result.stderr.splitlines() if "endpoint" in line] == [
        f"agent demo: on the endpoint {server.base_url}"
    ]


def test_demo_remote_flag_uses_the_environments_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    """``agent demo --remote`` asks the configured endpoint even without OPENAI_BASE_URL."""
    seen: list[str | None] = []

    def agent_at(registry: ToolRegistry, endpoint: Endpoint, *rest: object) -> None:
        seen.append(endpoint.base_url)
        raise UsageError("stop here")

    monkeypatch.setattr(cli, "_agent", agent_at)
    result = invoke("demo", "--remote", env=NO_OPENAI)
    assert seen == [None]  # None: the Agent reads OPENAI_* (default https://api.openai.com/v1)
    assert LOCAL_MODEL_NOTICE not in result.stderr


def test_local_model_notice_fits_80_columns(demo: Result) -> None:
    """The one-line local-model notice does not wrap on an 80-column terminal."""
    notices = [line for line in demo.stderr.splitlines() if LOCAL_MODEL_NOTICE in line]
    assert len(notices[0]) <= 80


def test_demo_help_names_no_outside_page() -> None:
    """The demo's help says what it does, without pointing at a page users cannot place."""
    result = invoke("demo", "--help")
    assert "API page" not in result.stdout
    assert "four builtin tools" in result.stdout.lower()


def test_serve_local_auto_is_accepted_but_hidden() -> None:
    """``--auto`` (the default policy) still parses but is no longer in the help."""
    assert "--auto" not in invoke("serve-local", "--help").stdout
    assert_one_line_error(invoke("serve-local", "--auto", "--script", "x.json"), 2, mentions="--script")


def test_serve_local_passes_api_key_and_stream_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    """``serve-local --api-key K --stream-delay S`` reach the server."""
    calls: list[dict[str, object]] = []
    monkeypatch.setattr(cli, "serve", lambda policy, **options: calls.append(options))
    result = invoke("serve-local", "--api-key", "k1", "--stream-delay", "0.05", "--port", "0")
    assert result.exit_code == 0, result.output
    assert (calls[0]["api_key"], calls[0]["stream_delay"]) == ("k1", 0.05)


def terminal_display() -> tuple[RunDisplay, io.StringIO, io.StringIO]:
    """A display on a recorded 100-column terminal: (display, stderr text, stdout text)."""
    err, out = io.StringIO(), io.StringIO()
    console = Console(file=err, force_terminal=True, width=100, color_system=None)
    return RunDisplay(console, out, stream_text=True), err, out


def test_logs_go_through_the_console_above_the_live_table() -> None:
    """A log line written while the live table is up reaches the console whole, on its own line."""
    display, err, _ = terminal_display()
    logger, _ = cli_logger(display, "console", verbose=True)
    with display:
        display.handle(ToolCallStarted(1, "c1", "shout", '{"text": "a"}'))
        logger.info("tool.end", tool="shout")
    lines = err.getvalue().splitlines()
    logged = [line for line in lines if "tool.end" in line]
    assert len(logged) == 1
    assert logged[0].split("[info     ]")[0].strip().endswith("Z")  # the timestamp starts the line


def test_log_line_does_not_stick_to_a_streamed_answer() -> None:
    """A log line during a streamed answer ends the answer's line first."""
    display, _err, out = terminal_display()
    logger, _ = cli_logger(display, "console", verbose=True)
    display.handle(TextDelta(1, "msg_1", "Hello"))
    logger.warning("something")
    display.handle(TextDelta(1, "msg_1", " world"))
    assert out.getvalue().startswith("Hello\n")


def test_retry_without_verbose_logs_nothing_and_shows_a_transient_status() -> None:
    """Without -v a retry is no log line: a short status on a terminal, gone once the run moves on."""
    display, err, _ = terminal_display()
    logger, _ = cli_logger(display, "console", verbose=False)
    with display:
        logger.warning("model.retry", attempt=1, wait=0.8, error="HTTP 429: slow down")
        shown = err.getvalue()
    assert "model.retry" not in err.getvalue()
    assert "retrying in 0.8 s (HTTP 429: slow down)" in shown


def test_retry_with_verbose_is_logged() -> None:
    """With -v the retry is a log line as before."""
    display, err, _ = terminal_display()
    logger, _ = cli_logger(display, "console", verbose=True)
    logger.warning("model.retry", attempt=1, wait=0.8, error="HTTP 429")
    assert "model.retry" in err.getvalue()


def test_rate_limited_run_prints_exactly_one_line_without_verbose() -> None:
    """429s retried then given up on: stderr holds the one error line and nothing else."""
    faults = [Fault(status=429, retry_after=0)] * 3
    with LocalModelServer(AutoPolicy(), faults=faults) as server:
        result = invoke("run", "hi", env=against(server))
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == error_lines(result.stderr)


def test_refused_loopback_port_fails_within_a_second() -> None:
    """A refused port on 127.0.0.1 is retried at a loopback's pace: the run fails in under 1 s."""
    env = {"OPENAI_BASE_URL": f"http://127.0.0.1:{free_port()}/v1", "OPENAI_API_KEY": "x"}
    started = time.perf_counter()
    result = invoke("run", "hi", env=env)
    assert result.exit_code == 1
    assert time.perf_counter() - started < 1.0


def test_json_error_document_after_a_401_reports_a_failed_attempt() -> None:
    """--json after a 401: partial_result status "failed" and one request sent."""
    with LocalModelServer(AutoPolicy(), api_key="right") as server:
        result = invoke("run", "hi", "--json", env=against(server, key="wrong"))
    partial = json.loads(result.stdout)["partial_result"]
    assert (partial["status"], partial["usage"]["requests"]) == ("failed", 1)


def test_json_error_document_after_refused_connections_counts_every_attempt() -> None:
    """--json after a refused port: status "failed", the three attempts (two retries) counted."""
    env = {"OPENAI_BASE_URL": f"http://127.0.0.1:{free_port()}/v1", "OPENAI_API_KEY": "x"}
    partial = json.loads(invoke("run", "hi", "--json", env=env).stdout)["partial_result"]
    assert (partial["status"], partial["usage"]["requests"]) == ("failed", 3)


def test_readme_quick_start_runs_as_a_file(tmp_path: Path, server: LocalModelServer) -> None:
    """The README's quick start, pasted into a file, runs (against the local model)."""
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    (tmp_path / "quickstart.py").write_text(code)
    done = subprocess.run(
        [sys.executable, "quickstart.py"],
        cwd=tmp_path,
        env=process_env(OPENAI_BASE_URL=server.base_url, OPENAI_API_KEY="x"),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "get_weather" in done.stdout
