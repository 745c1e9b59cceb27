"""What the command line shows while a run works (built on rich).

Tool calls go to stderr: on a terminal as a live table (a spinner per running call, then its
result and duration), elsewhere as one line per finished call. The answer's text goes to
stdout as it streams in when stdout is a terminal; otherwise it is printed whole at the end,
so piped output is the same with or without streaming.

Logs go through the same console (`cli_logger`), so that on a terminal they are printed above
the live table instead of under it, and never on the line of a streamed answer. Without ``-v``
a retried request is no log line: a short status on a terminal that goes once the run moves on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Self, TextIO

import structlog
from rich.console import Console, Group, RenderableType
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

__all__ = ["LogWatch", "RunDisplay", "cli_logger"]

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
    _status: str | None = None
    """A passing status (a retry) shown on a terminal until the run moves on."""
    _status_live: Live | None = None

    def log(self, line: str) -> None:
        """Print one log line on the console: above the live table, never on an answer's line."""
        self._end_line()
        self.console.print(Text(line), soft_wrap=True, highlight=False)

    def retrying(self, wait: float | None, error: str) -> None:
        """Show that a request is retried (a terminal only), until the next event."""
        if not self.console.is_terminal:
            return
        self._status = f"retrying in {wait} s ({_clip(error)})" if wait is not None else "retrying"
        if self._live is not None:
            self._refresh()
        elif self._status_live is None:
            self._end_line()
            self._status_live = Live(self._status_text(), console=self.console, transient=True)
            self._status_live.start(refresh=True)
        else:
            self._status_live.update(self._status_text(), refresh=True)

    def _status_text(self) -> Text:
        return Text(self._status or "", style="yellow")

    def _clear_status(self) -> None:
        self._status = None
        if self._status_live is not None:
            self._status_live.stop()
            self._status_live = None

    def hooks(self) -> Hooks:
        """The run hooks that feed this display (for runs that are not streamed)."""
        return Hooks(on_tool_start=self.handle, on_tool_end=self.handle)

    def handle(self, event: RunEvent) -> None:
        """Show one event."""
        self._clear_status()
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
        self._clear_status()
        self._close_live()
        if as_json is not None:
            self.out.write(as_json + "\n")
        elif self._text_streamed:
            self._end_line()
        else:
            self.out.write(result.output + "\n")
        self.out.flush()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Stop the live table (and any status) while a person answers a question on the
        terminal; the table is drawn again afterwards, with what happened meanwhile."""
        self._clear_status()
        self._end_line()
        live = self._live
        if live is not None:
            live.stop()
        try:
            yield
        finally:
            if live is not None and self._live is live:
                live.start(refresh=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._clear_status()
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
        return Group(table, self._status_text()) if self._status else table


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


_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
_RETRY_EVENTS = frozenset({"model.retry", "model.retry_budget_exhausted"})


@dataclass(slots=True)
class LogWatch:
    """The CLI's structlog processor: counts the requests sent, keeps retries quiet without ``-v``.

    The logger it sits in logs everything (debug included), so requests are counted whatever
    is shown; this processor drops what ``verbose`` does not ask for.
    """

    display: RunDisplay
    verbose: bool
    requests: int = 0
    """Model requests sent so far, retries included."""

    def __call__(self, _: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        name = event.get("event")
        if name == "model.request":
            self.requests += 1
        if name in _RETRY_EVENTS and not self.verbose:
            if name == "model.retry":
                self.display.retrying(event.get("wait"), str(event.get("error", "")))
            raise structlog.DropEvent
        if _LEVELS.get(method, logging.WARNING) < (logging.DEBUG if self.verbose else logging.WARNING):
            raise structlog.DropEvent
        return event


def cli_logger(
    display: RunDisplay, format: Literal["console", "json"], *, verbose: bool
) -> tuple[structlog.typing.FilteringBoundLogger, LogWatch]:
    """A logger printing through ``display`` (debug with ``verbose``, else warnings), and its watch."""
    watch = LogWatch(display, verbose)
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    logger: structlog.typing.FilteringBoundLogger = structlog.wrap_logger(
        _DisplayLogger(display),
        processors=[
            watch,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
    )
    return logger, watch


class _DisplayLogger:
    """A structlog logger writing each rendered line through a `RunDisplay`."""

    def __init__(self, display: RunDisplay) -> None:
        self._display = display

    def msg(self, message: str) -> None:
        self._display.log(message)

    debug = info = warning = error = critical = exception = log = msg
