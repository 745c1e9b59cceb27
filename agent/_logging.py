"""Loggers for the runtime: silent unless the application hands one in.

The runtime never configures structlog globally. An ``Agent`` logs to the logger it is given
(``Agent(logger=structlog.get_logger())`` joins the application's own configuration) and to
a no-op logger otherwise, so an embedded library prints nothing by default.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal, TextIO

import structlog
from structlog.typing import FilteringBoundLogger, Processor

__all__ = ["LogFormat", "make_logger", "silent_logger"]

LogFormat = Literal["console", "json"]

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}


def make_logger(
    format: LogFormat = "console",
    *,
    level: Literal["debug", "info", "warning"] = "info",
    stream: TextIO | None = None,
) -> FilteringBoundLogger:
    """A structlog logger rendering one line per event to ``stream`` (default: stderr)."""
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    processors: list[Processor] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        renderer,
    ]
    logger: FilteringBoundLogger = structlog.wrap_logger(
        structlog.PrintLogger(stream or sys.stderr),
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
    )
    return logger


def silent_logger() -> FilteringBoundLogger:
    """A logger whose every method is a no-op: what an embedded agent uses by default."""
    # Filtered below CRITICAL, the methods are no-ops; ReturnLogger keeps CRITICAL silent too.
    logger: FilteringBoundLogger = structlog.wrap_logger(
        structlog.ReturnLogger(),
        processors=[],
        wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL),
    )
    return logger
