"""The programs in ``examples/`` do what their docstrings claim, against a local model server."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from agent.localmodel import AutoPolicy, LocalModelServer, demo_script
from tests._support import REPO_ROOT

EXAMPLES = REPO_ROOT / "examples"
DEMO_TOOLS = ["current_time", "math_calculator", "random_generator", "system_info"]


def load_example(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Import ``examples/NAME.py`` from its path, registered in ``sys.modules`` for this test only."""
    module_name = f"example_{name}"
    spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Dataclasses (custom_registry's Shop) look their module up in sys.modules while being built.
    monkeypatch.setitem(sys.modules, module_name, module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def auto_server() -> Iterator[LocalModelServer]:
    with LocalModelServer(AutoPolicy()) as server:
        yield server


@pytest.fixture
def demo_server() -> Iterator[LocalModelServer]:
    with LocalModelServer(demo_script()) as server:
        yield server


@pytest.mark.asyncio
async def test_quickstart_calls_its_weather_tool(
    auto_server: LocalModelServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """quickstart.py: the model calls get_weather once and the answer reports its result."""
    result = await load_example("quickstart", monkeypatch).main(auto_server.base_url, "local")
    [call] = result.tool_calls
    weather = {"city": "example", "temperature": 18, "unit": "c"}
    assert (call.name, call.kind, json.loads(call.output)) == ("get_weather", "ok", weather)
    assert result.output == f"get_weather: {call.output}"
    assert result.output in capsys.readouterr().out


@pytest.mark.asyncio
async def test_parallel_tools_overlap(demo_server: LocalModelServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """parallel_tools.py: the four builtin tools all start before the first one ends."""
    result, timeline = await load_example("parallel_tools", monkeypatch).main(demo_server.base_url, "local")
    assert sorted(timeline.spans) == DEMO_TOOLS
    assert timeline.overlapped() is True
    assert [call.kind for call in result.tool_calls] == ["ok"] * 4


@pytest.mark.asyncio
async def test_parallel_tools_sends_gateway_metadata(
    demo_server: LocalModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """parallel_tools.py: both requests carry metadata model_id=32, and the answer quotes 580.2."""
    result, _ = await load_example("parallel_tools", monkeypatch).main(demo_server.base_url, "local")
    assert [r["metadata"] for r in demo_server.requests] == [{"model_id": "32"}] * 2
    assert "123.5 + 456.7 = " in result.output
    assert "580.2" in result.output


@pytest.mark.asyncio
async def test_embed_many_serves_concurrent_runs_from_one_agent(
    demo_server: LocalModelServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """embed_many.py: 20 concurrent runs on one agent, each with four ok tool calls."""
    results = await load_example("embed_many", monkeypatch).main(demo_server.base_url, "local", runs=20)
    assert len(results) == 20
    assert [[call.kind for call in r.tool_calls] for r in results] == [["ok"] * 4] * 20
    assert len(demo_server.requests) == 40
    assert capsys.readouterr().out.startswith("20 runs, 80 tool calls in ")


@pytest.mark.asyncio
async def test_custom_registry_runs_every_kind_of_tool(
    auto_server: LocalModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """custom_registry.py: builtin, sync, context-taking and JSON-schema tools all end ok."""
    result = await load_example("custom_registry", monkeypatch).main(auto_server.base_url, "local")
    names = ["math_calculator", "random_generator", "checksum", "stock_level", "dice"]
    assert [(call.name, call.kind) for call in result.tool_calls] == [(name, "ok") for name in names]


@pytest.mark.asyncio
async def test_custom_registry_context_tool_sees_the_deps(
    auto_server: LocalModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """custom_registry.py: stock_level reads the Shop handed to run() as deps."""
    result = await load_example("custom_registry", monkeypatch).main(auto_server.base_url, "local")
    outputs = {call.name: call.output for call in result.tool_calls}
    assert outputs["stock_level"] == "Corner Shop has 12 x example"
    assert "stock_level: Corner Shop has 12 x example" in result.output.splitlines()


def test_quickstart_runs_as_a_script_on_the_local_model() -> None:
    """``python examples/quickstart.py`` without OPENAI_* runs on its own local server and exits 0."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "quickstart.py")],
        check=False,
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    weather = '{"city":"example","temperature":18,"unit":"c"}'
    assert done.stdout.splitlines() == [
        f'get_weather({{"city":"example","unit":"c"}}) -> {weather}',
        f"get_weather: {weather}",
    ]


@pytest.mark.asyncio
async def test_streaming_example_shows_eager_starts_and_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    """streaming.py: crawl starts first, reports three progress events, both tools succeed."""
    with LocalModelServer(AutoPolicy(), stream_delay=0.3) as server:
        lines = await load_example("streaming", monkeypatch).main(server.base_url, "local")
    events = [line.split(maxsplit=1)[1] for line in lines]
    assert events[0].startswith("start  crawl")
    assert sum(e.startswith("progress crawl") for e in events) == 3
    assert sum(e.startswith("done") and e.endswith("(ok)") for e in events) == 2


@pytest.mark.asyncio
async def test_durable_runs_returns_the_stored_result_the_second_time(
    auto_server: LocalModelServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """durable_runs.py: the tool gets run:turn:call as its key; run twice, no second request."""
    example = load_example("durable_runs", monkeypatch)
    first = await example.main(tmp_path / "runs.sqlite", auto_server.base_url, "local")
    sent = len(auto_server.requests)
    second = await example.main(tmp_path / "runs.sqlite", auto_server.base_url, "local")
    [call] = first.tool_calls
    assert f"idempotency key order-42:1:{call.call_id}" in call.output
    assert (second.output, len(auto_server.requests)) == (first.output, sent)
    assert first.output in capsys.readouterr().out


@pytest.mark.asyncio
async def test_approvals_pauses_then_resumes_from_its_file(
    auto_server: LocalModelServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """approvals.py: pay and send_mail wait; resumed, the approved one runs, the denied one does not."""
    example = load_example("approvals", monkeypatch)
    state, journal = tmp_path / "run.json", tmp_path / "journal.txt"
    paused = await example.pause(state, journal, auto_server.base_url, "local")
    ids = {waiting.tool_name: waiting.call_id for waiting in paused.pending_approvals}
    decisions = example.decisions_from([ids["pay"]], [f"{ids['send_mail']}=no"])
    resumed = await example.resume(state, decisions, journal, auto_server.base_url, "local")
    assert sorted(ids) == ["pay", "send_mail"]
    assert [(call.name, call.kind) for call in resumed.tool_calls][2:] == [
        ("pay", "ok"),
        ("send_mail", "denied"),
    ]
    ran = sorted(line.split()[0] for line in journal.read_text().splitlines())
    assert ran == ["check_budget", "find_invoice", "pay"]
