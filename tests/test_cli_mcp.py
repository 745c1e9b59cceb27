"""``agent run --mcp`` and ``agent tools --mcp``: the fixture MCP server as a real process, the
command's own embedded local model as the model."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests._mcp_processes import HTTPServerProcess, free_port, http_server, stdio_command
from tests.test_cli import AGENT_SCRIPT, NO_OPENAI, assert_one_line_error, invoke, run_process

FIXTURE_TOOLS = ["echo", "add", "slow", "hang", "fail", "boom", "image", "point", "pid", "header", "add_tool"]
BUILTIN_TOOLS = ["random_generator", "system_info", "math_calculator", "current_time"]


@pytest.fixture(scope="module")
def http() -> Iterator[HTTPServerProcess]:
    with http_server() as server:
        yield server


def stdio_spec(journal: Path | None = None) -> str:
    return "stdio:" + shlex.join(stdio_command(journal))


def agent_process(*args: str) -> subprocess.CompletedProcess[str]:
    """The installed ``agent`` command as a real process, on its embedded local model.

    Runs with a stdio server are real processes: the server's stderr is the command's, a real
    file (a CliRunner's in-process stderr has no file descriptor to give a child process).
    """
    return run_process(str(AGENT_SCRIPT), *args)


def processes_naming(marker: str) -> list[psutil.Process]:
    """Live processes (anyone's children) whose command line mentions ``marker``."""
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        cmdline = process.info["cmdline"] or []
        if process.info["status"] != psutil.STATUS_ZOMBIE and any(marker in word for word in cmdline):
            found.append(process)
    return found


def test_run_calls_the_tool_of_a_stdio_server(tmp_path: Path) -> None:
    """``agent run --mcp stdio:COMMAND`` starts the server, calls its tool, prints the report, stops it."""
    done = agent_process("run", 'echo "hi from the cli"', "--mcp", stdio_spec(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["echo: hi from the cli"]
    assert processes_naming(str(tmp_path)) == []


def test_run_sends_the_headers_to_an_http_server(http: HTTPServerProcess) -> None:
    """``--mcp URL --mcp-header 'X-Token: abc'``: the server's tool sees the header."""
    result = invoke(
        "run", 'header "X-Token"', "--mcp", http.url, "--mcp-header", "X-Token: abc", env=NO_OPENAI
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["header: abc"]


def test_run_with_mcp_and_builtin_tools_offers_both(http: HTTPServerProcess) -> None:
    """``--tools builtin --mcp ...`` offers both; ``--mcp`` without ``--tools`` only the servers' tools."""
    prompt = 'echo "x" and show the system info'
    both = invoke("run", prompt, "--tools", "builtin", "--mcp", http.url, env=NO_OPENAI)
    assert both.exit_code == 0, both.output
    assert sorted(line.partition(":")[0] for line in both.stdout.splitlines()) == ["echo", "system_info"]
    alone = invoke("run", prompt, "--mcp", http.url, env=NO_OPENAI)
    assert alone.stdout.splitlines() == ["echo: x"]


def test_two_servers_offering_the_same_tool_exit_2(http: HTTPServerProcess) -> None:
    """``--mcp`` is repeatable; the same tool name from two servers is a one-line error, exit 2."""
    result = invoke("run", 'echo "x"', "--mcp", http.url, "--mcp", http.url, env=NO_OPENAI)
    assert_one_line_error(result, 2, mentions="two tools are named 'echo'")


def test_tools_lists_an_mcp_servers_tools_naming_the_server() -> None:
    """``agent tools --mcp stdio:...`` prints the server's tools, each with ``"server"``: its command."""
    command = stdio_command()
    done = agent_process("tools", "--mcp", "stdio:" + shlex.join(command))
    assert done.returncode == 0, done.stderr
    entries = json.loads(done.stdout)
    assert [entry["name"] for entry in entries] == FIXTURE_TOOLS
    assert {entry["server"] for entry in entries} == {shlex.join(command)}
    assert all(entry["type"] == "function" for entry in entries)


def test_tools_lists_builtin_and_http_server_tools(http: HTTPServerProcess) -> None:
    """``agent tools --tools builtin --mcp URL``: the builtin tools (no server), then the server's."""
    result = invoke("tools", "--tools", "builtin", "--mcp", http.url)
    assert result.exit_code == 0, result.output
    entries = json.loads(result.stdout)
    assert [(e["name"], e.get("server")) for e in entries] == [
        *((name, None) for name in BUILTIN_TOOLS),
        *((name, http.url) for name in FIXTURE_TOOLS),
    ]


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("python server.py", "expected 'stdio:COMMAND ARGS...' or an http(s):// URL"),
        ("ftp://127.0.0.1/mcp", "expected 'stdio:COMMAND ARGS...' or an http(s):// URL"),
        ("stdio:", "no command after 'stdio:'"),
        ("stdio:python 'unclosed", "No closing quotation"),
    ],
)
def test_a_bad_mcp_spec_exits_2(spec: str, reason: str) -> None:
    """A ``--mcp`` value that is neither form is a caller mistake: exit 2, one line."""
    for command in ("run", "tools"):
        args = [command, "hi"] if command == "run" else [command]
        result = invoke(*args, "--mcp", spec)
        assert_one_line_error(result, 2, mentions=f"bad --mcp {spec!r}")
        assert reason in result.stderr


@pytest.mark.parametrize("header", ["no colon", ": value", " X-Token: abc"])
def test_a_bad_mcp_header_exits_2(header: str, http: HTTPServerProcess) -> None:
    """A ``--mcp-header`` that is not 'Name: value' is a caller mistake: exit 2, one line."""
    result = invoke("run", "hi", "--mcp", http.url, "--mcp-header", header)
    assert_one_line_error(result, 2, mentions="--mcp-header takes 'Name: value'")


def test_an_mcp_header_without_an_http_server_exits_2() -> None:
    """``--mcp-header`` with only stdio servers (or none) would go nowhere: exit 2."""
    result = invoke("run", "hi", "--mcp", stdio_spec(), "--mcp-header", "X-Token: abc")
    assert_one_line_error(result, 2, mentions="no --mcp names one")


def test_mcp_without_the_extra_exits_2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the ``mcp`` package, ``--mcp`` is one line naming the extra, exit 2."""
    monkeypatch.setitem(sys.modules, "mcp", None)
    for args in (["run", "hi"], ["tools"]):
        result = invoke(*args, "--mcp", "http://127.0.0.1:9/mcp")
        assert_one_line_error(result, 2, mentions="pip install 'agent-runtime[mcp]'")


def test_an_unreachable_http_server_exits_1() -> None:
    """A refused port: one line naming the server, exit 1, for run and tools."""
    url = f"http://127.0.0.1:{free_port()}/mcp"
    for args in (["run", 'echo "x"'], ["tools"]):
        result = invoke(*args, "--mcp", url, env=NO_OPENAI)
        assert_one_line_error(
            result, 1, mentions=f"ToolSourceError: could not connect to the MCP server {url}"
        )


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(["no-such-mcp-server-command"], id="no-such-command"),
        pytest.param([sys.executable, "-c", "pass"], id="exits-at-once"),
    ],
)
def test_a_stdio_server_that_does_not_start_exits_1(command: list[str]) -> None:
    """A command that is not there, or ends at once: one line naming it, exit 1."""
    done = agent_process("run", 'echo "x"', "--mcp", "stdio:" + shlex.join(command))
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert f"could not connect to the MCP server {shlex.join(command)}" in errors[0]
    assert "Traceback" not in done.stderr
