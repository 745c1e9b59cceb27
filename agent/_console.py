"""What the command line shows while a run works (built on rich).

Tool calls go to stderr: on a terminal as a live table (a spinner per running call, then its
result and duration), elsewhere as one line per finished call. The answer's text goes to
stdout as it streams in when stdout is a terminal; otherwise it is printed whole at the end,
so piped output is the same with or without streaming.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self, TextIO

from rich.console import Console, RenderableType
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from agent._events import (
    Hooks,
    RunEvent,
    StreamRestarted,
    TextDelta,
    ToolCallFinished,
    ToolCallStarted,
    ToolProgress,
)
from agent._result import RunResult, ToolCallRecord

__all__ = ["RunDisplay"]

_CELL = 70


@dataclass(slots=True)
class _Row:
    name: str
    arguments: str
    started: float
    progress: str = ""
    record: ToolCallRecord | None = None


@dataclass(slots=True)
class RunDisplay:
    """Renders a run's events; use as a context manager around the run."""

    console: Console
    """Where tool calls are shown (stderr)."""
    out: TextIO
    """Where the answer goes (stdout)."""
    stream_text: bool
    """Write the answer's text as it arrives (a terminal, and not ``--json``)."""
    _rows: dict[str, _Row] = field(default_factory=dict)
    _live: Live | None = None
    _text_streamed: bool = False
    _open_line: str | None = None
    """The message whose text was written last without its line ended, if any."""

    def hooks(self) -> Hooks:
        """The run hooks that feed this display (for runs that are not streamed)."""
        return Hooks(on_tool_start=self.handle, on_tool_end=self.handle)

    def handle(self, event: RunEvent) -> None:
        """Show one event."""
        if isinstance(event, ToolCallStarted):
            self._open_live()
            self._rows[event.call_id] = _Row(event.name, event.arguments, time.perf_counter())
        elif isinstance(event, ToolProgress) and event.call_id in self._rows:
            self._rows[event.call_id].progress = _clip(str(event.data))
        elif isinstance(event, ToolCallFinished):
            self._finished(event.record)
        elif isinstance(event, StreamRestarted) and self._text_streamed:
            self._end_line()
            self.out.write("[the stream broke and restarts]\n")
        elif isinstance(event, TextDelta) and self.stream_text:
            self._write_text(event)
        self._refresh()

    def _write_text(self, delta: TextDelta) -> None:
        self._close_live()
        if self._open_line != delta.item_id:
            self._end_line()  # a new message (e.g. the answer after a preamble): a new line
        self.out.write(delta.delta)
        self.out.flush()
        self._open_line = delta.item_id
        self._text_streamed = True

    def _end_line(self) -> None:
        if self._open_line is not None:
            self.out.write("\n")
            self.out.flush()
            self._open_line = None

    def finish(self, result: RunResult, *, as_json: str | None = None) -> None:
        """Print the answer (or ``as_json``), unless its text was streamed already."""
        self._close_live()
        if as_json is not None:
            self.out.write(as_json + "\n")
        elif self._text_streamed:
            self._end_line()
        else:
            self.out.write(result.output + "\n")
        self.out.flush()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._close_live()

    def _finished(self, record: ToolCallRecord) -> None:
        row = self._rows.setdefault(record.call_id, _Row(record.name, record.arguments, 0.0))
        row.record = record
        if not self.console.is_terminal:
            self.console.print(_line(record), highlight=False, soft_wrap=True)

    def _open_live(self) -> None:
        if self._live is None and self.console.is_terminal:
            self._end_line()  # the table goes under any text written so far
            self._rows = {}
            self._live = Live(self._render(), console=self.console, refresh_per_second=12)
            self._live.start()

    def _close_live(self) -> None:
        if self._live is not None:
            self._live.update(self._render())
            self._live.stop()
            self._live = None

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.update(self._render())

    def _render(self) -> RenderableType:
        table = Table(title="tool calls", title_justify="left")
        for column in ("tool", "arguments", "", "result", "time"):
            table.add_column(column, overflow="fold")
        for row in self._rows.values():
            table.add_row(*_cells(row))
        return table


def _cells(row: _Row) -> tuple[Any, ...]:
    record = row.record
    if record is None:
        elapsed = time.perf_counter() - row.started
        status = row.progress or "running"
        return row.name, _clip(row.arguments), Spinner("dots"), status, f"{elapsed:.2f}s"
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
