"""The four built-in tools: their schemas, their answers and how they refuse bad input."""

import inspect
import json
import math
import os
import platform
import socket
import time
from datetime import datetime, timedelta
from typing import Any, cast
from zoneinfo import ZoneInfo

import pytest

import builtin_tools
from agent import Tool, ToolError
from builtin_tools import current_time, math_calculator, random_generator, registry, system_info
from builtin_tools._math import Operation


def _tool(name: str) -> Tool[..., Any]:
    found = registry.get(name)
    assert found is not None
    return found


def _arguments(name: str, arguments: dict[str, object]) -> dict[str, Any]:
    """Validate ``arguments`` the way the runtime does before it calls the tool.

    ``Tool.validate`` raises ``ArgumentsError``, a ``ValueError`` that ``agent`` does not export.
    """
    return _tool(name).validate(json.dumps(arguments))


# --- the package --------------------------------------------------------------------------


def test_public_names() -> None:
    """The package exports exactly the registry and the four tools."""
    expected = ["current_time", "math_calculator", "random_generator", "registry", "system_info"]
    assert expected == sorted(builtin_tools.__all__)


def test_registry_holds_the_four_tools() -> None:
    """The registry offers the tools under the names of the ChainHub API examples."""
    expected = ["random_generator", "system_info", "math_calculator", "current_time"]
    assert expected == registry.names


@pytest.mark.parametrize(
    ("name", "parameters"),
    [
        ("random_generator", ["min", "max", "count"]),
        ("system_info", []),
        ("math_calculator", ["a", "b", "operation"]),
        ("current_time", ["timezone"]),
    ],
)
def test_parameter_names(name: str, parameters: list[str]) -> None:
    """Each tool's schema has the parameter names of the API examples (plus current_time's zone)."""
    assert parameters == list(_tool(name).parameters["properties"])


@pytest.mark.parametrize("name", ["random_generator", "system_info", "math_calculator", "current_time"])
def test_every_parameter_is_described(name: str) -> None:
    """The model gets a description for each tool and each of its parameters."""
    found = _tool(name)
    properties: dict[str, dict[str, Any]] = found.parameters["properties"]
    undescribed = [key for key, schema in properties.items() if not schema.get("description")]
    assert found.description
    assert not undescribed


def test_only_system_info_runs_in_a_worker_thread() -> None:
    """The three CPU-light tools are async (no thread handoff); system_info, which reads /proc, is sync."""
    expected = {"random_generator": True, "system_info": False, "math_calculator": True, "current_time": True}
    assert expected == {name: inspect.iscoroutinefunction(_tool(name).function) for name in registry.names}


# --- random_generator ---------------------------------------------------------------------


@pytest.mark.asyncio
async def test_random_defaults() -> None:
    """Without arguments it draws one number from 1 to 100."""
    expected = {"min": 1, "max": 100, "count": 1}
    result = await random_generator()
    (number,) = result["numbers"]
    assert expected == {key: result[key] for key in ("min", "max", "count")}
    assert 1 <= number <= 100


@pytest.mark.parametrize(("low", "high", "count"), [(1, 6, 10), (-5, -1, 3), (0, 10**15, 2)])
@pytest.mark.asyncio
async def test_random_numbers_lie_in_range(low: int, high: int, count: int) -> None:
    """It returns ``count`` integers between min and max inclusive."""
    numbers = (await random_generator(min=low, max=high, count=count))["numbers"]
    assert count == len(numbers)
    assert all(low <= n <= high for n in numbers)


@pytest.mark.asyncio
async def test_random_equal_bounds() -> None:
    """min == max is a valid, if boring, range."""
    expected = [7, 7, 7]
    assert expected == (await random_generator(min=7, max=7, count=3))["numbers"]


@pytest.mark.asyncio
async def test_random_min_greater_than_max() -> None:
    """min > max is refused with a message naming both values."""
    with pytest.raises(ToolError, match=r"min \(10\) must not be greater than max \(1\)"):
        await random_generator(min=10, max=1)


@pytest.mark.parametrize(
    "arguments",
    [
        {"count": 0},
        {"count": 11},
        {"count": 1000},
        {"count": -1},
        {"min": -(10**15) - 1},
        {"max": 10**15 + 1},
        {"min": 10**100, "max": 10**100},
    ],
)
@pytest.mark.asyncio
async def test_random_out_of_range_refused_by_function(arguments: dict[str, int]) -> None:
    """Called directly, it refuses what the schema forbids, before generating anything."""
    with pytest.raises(ToolError, match="must be between"):
        await random_generator(**arguments)


@pytest.mark.parametrize(
    "arguments",
    [{"count": 0}, {"count": 11}, {"count": 1000}, {"min": 10**16}, {"count": 2.5}, {"x": 1}],
)
def test_random_out_of_range_refused_by_schema(arguments: dict[str, object]) -> None:
    """The runtime's validation refuses arguments outside the schema."""
    with pytest.raises(ValueError, match="invalid arguments"):
        _arguments("random_generator", arguments)


def test_random_schema_states_the_limits() -> None:
    """The schema tells the model count is 1..10 and the bounds are within ±10^15."""
    expected = {"count": (1, 10), "min": (-(10**15), 10**15), "max": (-(10**15), 10**15)}
    properties = _tool("random_generator").parameters["properties"]
    limits = {name: (properties[name]["minimum"], properties[name]["maximum"]) for name in expected}
    assert expected == limits


# --- system_info --------------------------------------------------------------------------


def test_system_info_fields() -> None:
    """It reports OS, architecture, Python, CPUs and memory figures, nothing else."""
    expected = {
        "os",
        "os_release",
        "architecture",
        "python_implementation",
        "python_version",
        "cpu_count",
        "memory_total_bytes",
        "memory_available_bytes",
        "memory_used_percent",
        "process_rss_bytes",
    }
    assert expected == set(system_info())


def test_system_info_values() -> None:
    """The figures are those of this machine and process."""
    info = system_info()
    assert (platform.system(), platform.python_version()) == (info["os"], info["python_version"])
    assert 0 < info["memory_available_bytes"] <= info["memory_total_bytes"]
    assert 0 < info["process_rss_bytes"] < info["memory_total_bytes"]


def test_system_info_keeps_personal_data_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """No environment value, user name, host name or working directory reaches the output."""
    secrets = {"HOME": "/home/sentinel-home-4711", "USER": "sentinel-user-4711"}
    secrets |= {"LOGNAME": "sentinel-logname-4711", "API_KEY": "sentinel-key-4711"}
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    dump = json.dumps(system_info())
    private = [*secrets.values(), socket.gethostname(), platform.node(), os.getcwd()]
    leaked = [value for value in private if value and json.dumps(value) in dump]
    assert not leaked
    assert "sentinel" not in dump


# --- math_calculator ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "operation", "expected"),
    [
        (123.5, 456.7, "add", 580.2),
        (0.1, 0.2, "add", 0.3),
        (123456789012345, 1, "add", 123456789012346),
        (10, 4.5, "subtract", 5.5),
        (0.3, 0.1, "subtract", 0.2),
        (1.1, 3, "multiply", 3.3),
        (-4, 2.5, "multiply", -10),
        (1, 3, "divide", 1 / 3),
        (7, -2, "divide", -3.5),
        (2, 10, "power", 1024),
        (-8, 3, "power", -512),
        (2, 0.5, "power", math.sqrt(2)),
        (2, -2, "power", 0.25),
        (0, 0, "power", 1),
        (10, 308, "power", 1e308),
        (-1, 10**15, "power", 1),
    ],
)
@pytest.mark.asyncio
async def test_math_results(a: float, b: float, operation: Operation, expected: float) -> None:
    """It computes the five operations, in decimal on the numbers as written."""
    assert expected == (await math_calculator(a=a, b=b, operation=operation))["result"]


@pytest.mark.asyncio
async def test_math_answer_shape() -> None:
    """It echoes operands and operation and adds a readable equation."""
    expected = {
        "a": 123.5,
        "b": 456.7,
        "operation": "add",
        "result": 580.2,
        "expression": "123.5 + 456.7 = 580.2",
    }
    assert expected == await math_calculator(a=123.5, b=456.7, operation="add")


@pytest.mark.parametrize(
    ("a", "b", "operation", "expected"),
    [
        (2, 3, "add", "2 + 3 = 5"),
        (5, -3, "subtract", "5 - (-3) = 8"),
        (-2, 2, "power", "(-2) ^ 2 = 4"),
        (-6, 4, "divide", "-6 / 4 = -1.5"),
        (1e20, 10, "multiply", "1e+20 * 10 = 1e+21"),
        (0, -1, "multiply", "0 * (-1) = 0"),
    ],
)
@pytest.mark.asyncio
async def test_math_expression(a: float, b: float, operation: Operation, expected: str) -> None:
    """The equation shows whole numbers without ".0" and brackets negative operands."""
    assert expected == (await math_calculator(a=a, b=b, operation=operation))["expression"]


@pytest.mark.parametrize(
    ("a", "b", "operation", "message"),
    [
        (1, 0, "divide", "division by zero"),
        (0, 0, "divide", "division by zero"),
        (0, -1, "power", "division by zero"),
        (math.nan, 1, "add", "a must be a finite number"),
        (1, math.inf, "multiply", "b must be a finite number"),
        (-math.inf, 1, "subtract", "a must be a finite number"),
        (10**400, 1, "add", "a is too large"),
        (-8, 1 / 3, "power", "complex"),
        (-2, 0.5, "power", "complex"),
        (10, 1e9, "power", "overflow"),
        (10, 10**9, "power", "overflow"),
        (1e300, 1e300, "power", "overflow"),
        (10, 309, "power", "overflow"),
        (1e308, 10, "multiply", "overflow"),
        (1e308, 1e308, "add", "overflow"),
        (1e308, 0.1, "divide", "overflow"),
        (0.5, 1e9, "power", "underflow"),
        (10, -400, "power", "underflow"),
        (1e-200, 1e-200, "multiply", "underflow"),
    ],
)
@pytest.mark.asyncio
async def test_math_refusals(a: float, b: float, operation: Operation, message: str) -> None:
    """Impossible or unrepresentable calculations are refused with a clear message."""
    with pytest.raises(ToolError, match=message):
        await math_calculator(a=a, b=b, operation=operation)


@pytest.mark.parametrize("b", [1e9, 10**9, 1e308, 123456789.5])
@pytest.mark.asyncio
async def test_math_huge_power_fails_fast(b: float) -> None:
    """A power too large to represent fails at once instead of computing its digits."""
    started = time.perf_counter()
    with pytest.raises(ToolError):
        await math_calculator(a=10, b=b, operation="power")
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize("operation", ["modulo", "", "ADD", "__import__('os').system('true')"])
@pytest.mark.asyncio
async def test_math_unknown_operation(operation: str) -> None:
    """Called directly with an unknown operation, it names the known ones and evaluates nothing."""
    expected = f"unknown operation {operation!r}; use one of: add, subtract, multiply, divide, power"
    with pytest.raises(ToolError) as caught:
        await math_calculator(a=1, b=2, operation=cast(Operation, operation))
    assert expected == caught.value.message


def test_math_unknown_operation_refused_by_schema() -> None:
    """The schema lists the operations, so the runtime refuses any other."""
    with pytest.raises(ValueError, match="invalid arguments: operation"):
        _arguments("math_calculator", {"a": 1, "b": 2, "operation": "modulo"})


def test_math_schema_lists_operations() -> None:
    """The model sees the five operations as an enum."""
    expected = ["add", "subtract", "multiply", "divide", "power"]
    assert expected == _tool("math_calculator").parameters["properties"]["operation"]["enum"]


# --- current_time -------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_time_local_by_default() -> None:
    """Without a zone it reports local time, with the local UTC offset."""
    result = await current_time()
    local = datetime.fromisoformat(result["local_time"])
    expected = ("local", local.astimezone().utcoffset())
    assert expected == (result["timezone"], local.utcoffset())


@pytest.mark.asyncio
async def test_time_named_zone_honoured() -> None:
    """An IANA zone gives that zone's wall time and offset for the same instant."""
    result = await current_time(timezone="Europe/Paris")
    utc = datetime.fromisoformat(result["utc_time"])
    paris = utc.astimezone(ZoneInfo("Europe/Paris"))
    expected = ("Europe/Paris", paris.isoformat(), paris.tzname())
    assert expected == (result["timezone"], result["local_time"], result["abbreviation"])


@pytest.mark.parametrize(
    ("zone", "offset"), [("UTC", "+00:00"), ("Asia/Kolkata", "+05:30"), ("Etc/GMT+5", "-05:00")]
)
@pytest.mark.asyncio
async def test_time_offset_text(zone: str, offset: str) -> None:
    """The UTC offset reads as ±HH:MM (zones without daylight saving keep a fixed one)."""
    assert offset == (await current_time(timezone=zone))["utc_offset"]


@pytest.mark.asyncio
async def test_time_instants_agree() -> None:
    """Local time, UTC time and Unix timestamp name the same second."""
    result = await current_time(timezone="America/New_York")
    local = datetime.fromisoformat(result["local_time"])
    utc = datetime.fromisoformat(result["utc_time"])
    assert (local, timedelta(0)) == (utc, utc.utcoffset())
    assert result["unix_timestamp"] == int(utc.timestamp())
    assert abs(time.time() - result["unix_timestamp"]) < 5


@pytest.mark.asyncio
async def test_time_weekday() -> None:
    """The weekday is the English name of the local date's day."""
    result = await current_time(timezone="Pacific/Auckland")
    local = datetime.fromisoformat(result["local_time"])
    assert local.strftime("%A") == result["weekday"]


@pytest.mark.parametrize(
    "zone",
    [
        "Not/AZone",
        "../../etc/passwd",
        "/etc/localtime",
        "Europe",
        "Europe/",
        "zone.tab",
        "",
        "utc ",
        "Europe/Paris\x00",
        "a" * 200,
    ],
)
@pytest.mark.asyncio
async def test_time_unknown_zone(zone: str) -> None:
    """A name that is not an IANA zone is refused with examples of valid ones."""
    expected = (
        f"unknown time zone {zone!r}: use an IANA name such as 'Europe/Paris', "
        "'America/New_York' or 'UTC', or omit timezone for local time"
    )
    with pytest.raises(ToolError) as caught:
        await current_time(timezone=zone)
    assert expected == caught.value.message


def test_time_null_zone_means_local() -> None:
    """A strict-mode model's ``null`` for timezone falls back to local time."""
    expected = {"timezone": None}
    assert expected == _arguments("current_time", {"timezone": None})
