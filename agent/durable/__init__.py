"""Durable execution: the engine boundary, and engines that checkpoint every step.

The loop reaches the world only through an :class:`Engine`'s two operations, one model request
and one tool call, whose inputs and outputs are plain data. ``agent.durable.dbos`` makes each
a DBOS step (``pip install 'agent-runtime[dbos]'``); a third engine implements the same two
methods (read ``agent/_engine.py`` and ``agent/durable/dbos.py``).
"""

from agent._engine import Engine, LiveTurn, ModelRequest, ToolOutcome, ToolRequest, response_from_json
from agent.durable._json import error_from_json, error_to_json, result_from_json, result_to_json

__all__ = [
    "Engine",
    "LiveTurn",
    "ModelRequest",
    "ToolOutcome",
    "ToolRequest",
    "error_from_json",
    "error_to_json",
    "response_from_json",
    "result_from_json",
    "result_to_json",
]
