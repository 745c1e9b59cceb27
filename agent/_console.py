"""What the command line shows while a run works: a live table of tool calls, on stderr.

Built on rich: a spinner per running call, then its result and duration. On a terminal the
table updates in place; elsewhere (a pipe, CI) one line per finished call is printed instead.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from agent._events import Hooks, ToolCallFinished, ToolCallStarted
from agent._result import ToolCallRecord

__all__ = ["ToolCallDisplay"]

_CELL = 70


@dataclass(slots=True)
class _Row:
    name: str
    arguments: str
    started: float
    record: ToolCallRecord | None = None


@dataclass(slots=True)
class ToolCallDisplay:
    """Shows each tool call as it starts and finishes; use as a context manager around a run."""

    console: Console
    _rows: dict[str, _Row] = field(default_factory=dict)
    _live: Live | None = None

    def hooks(self) -> Hooks:
        """The run hooks that feed this display."""
        return Hooks(on_tool_start=self._started, on_tool_end=self._finished)

    def __enter__(self) -> Self:
        if self.console.is_terminal:
            self._live = Live(self._render(), console=self.console, refresh_per_second=12, transient=False)
            self._live.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._live is not None:
            self._live.update(self._render())
            self._live.__exit__(exc_type, exc, tb)

    def _started(self, event: ToolCallStarted) -> None:
        self._rows[event.call_id] = _Row(event.name, event.arguments, time.perf_counter())
        self._refresh()

    def _finished(self, event: ToolCallFinished) -> None:
        record = event.record
        row = self._rows.setdefault(record.call_id, _Row(record.name, record.arguments, 0.0))
        row.record = record
        if self._live is None:
            self.console.print(_line(record), highlight=False, soft_wrap=True)
        self._refresh()

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.update(self._render())

    def _render(self) -> RenderableType:
        table = Table(title="tool calls", title_justify="left", expand=False)
        for column in ("tool", "arguments", "", "result", "time"):
            table.add_column(column, overflow="fold")
        for row in self._rows.values():
            table.add_row(*_cells(row))
        return Group(table)


def _cells(row: _Row) -> tuple[RenderableType, ...]:
    record = row.record
    if record is None:
        elapsed = time.perf_counter() - row.started
        return row.name, _clip(row.arguments), Spinner("dots"), "running", f"{elapsed:.2f}s"
    mark = Text("ok", style="green") if record.ok else Text(record.kind, style="red")
    return row.name, _clip(row.arguments), mark, _clip(record.output), f"{record.duration:.3f}s"


def _line(record: ToolCallRecord) -> Text:
    status = Text("ok", style="green") if record.ok else Text(record.kind, style="red")
    return Text.assemble(
        status,
        f" {record.name}({_clip(record.arguments)}) -> {_clip(record.output)} ",
        (f"({record.duration * 1000:.1f} ms)", "dim"),
    )


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _CELL else text[: _CELL - 1] + "…"
