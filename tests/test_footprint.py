"""The install footprint: the engine and the builtin tools need neither the CLI nor the server."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tomllib

from tests._support import REPO_ROOT

CLI_ONLY = ("typer", "rich", "starlette", "uvicorn")

# Makes the CLI-only packages (and click, which typer brings) impossible to import, as without
# the extra. httpx imports rich and click on its own when they happen to be installed, for its
# own command line; without them it does without.
_WITHOUT_CLI_EXTRA = textwrap.dedent(
    """
    import sys

    class _Absent:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in {"typer", "click", "rich", "starlette", "uvicorn"}:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, _Absent())
    """
)


def python(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter, in the repository."""
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False
    )


def test_core_dependencies_leave_out_the_cli_and_server() -> None:
    """pyproject's dependencies name none of the CLI-only packages; the cli and dev extras name all."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    names = {dep.split(">")[0].split("[")[0] for dep in project["dependencies"]}
    assert names.isdisjoint(CLI_ONLY)
    for extra in ("cli", "dev"):
        extra_names = {dep.split(">")[0] for dep in project["optional-dependencies"][extra]}
        assert set(CLI_ONLY) <= extra_names, extra


def test_import_agent_imports_no_cli_or_server_package() -> None:
    """``import agent`` (and the builtin tools) leave typer, starlette and uvicorn unimported."""
    done = python(
        "import sys, agent, agent.durable, builtin_tools\n"
        "print(sorted(m for m in ('typer', 'starlette', 'uvicorn') if m in sys.modules))"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_engine_runs_a_tool_without_the_cli_extra() -> None:
    """Without the CLI-only packages the builtin tools import and an agent runs a tool (mock transport)."""
    code = _WITHOUT_CLI_EXTRA + textwrap.dedent(
        """
        import json, httpx, agent, builtin_tools

        @agent.tool
        def add(a: int, b: int) -> int:
            "Add two integers."
            return a + b

        def reply(request):
            if len(json.loads(request.content)["input"]) == 1:
                call = {"type": "function_call", "id": "fc_1", "call_id": "c1",
                        "name": "add", "arguments": '{"a": 2, "b": 3}'}
                return httpx.Response(200, json={"id": "r1", "status": "completed", "output": [call]})
            text = {"type": "output_text", "text": "done", "annotations": []}
            item = {"type": "message", "id": "m1", "role": "assistant", "content": [text]}
            return httpx.Response(200, json={"id": "r2", "status": "completed", "output": [item]})

        async def main():
            client = httpx.AsyncClient(transport=httpx.MockTransport(reply))
            async with agent.Agent("m", tools=[add], api_key="x",
                                   base_url="http://127.0.0.1:1/v1", http_client=client) as bot:
                result = await bot.run("2+3?")
            print(result.output, result.tool_calls[0].kind)

        import anyio
        anyio.run(main)
        """
    )
    done = python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "done ok"


def test_console_script_without_the_cli_extra_says_which_extra_in_one_line() -> None:
    """Without the extra, ``agent`` prints one line naming ``agent-runtime[cli]`` and exits 2."""
    code = _WITHOUT_CLI_EXTRA + "sys.argv = ['agent', 'demo']\nfrom agent.__main__ import main\nmain()"
    done = python(code)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert "pip install 'agent-runtime[cli]'" in done.stderr
    assert done.stdout == ""
