"""Four ready-made tools for agents and demos, and a registry holding all of them.

``random_generator``, ``system_info``, ``math_calculator`` and ``current_time`` have the names and
parameters of the tools in the ChainHub Responses API examples, so scripted conversations
recorded against that API replay against these tools::

    from agent import Agent
    from builtin_tools import registry

Each tool stays callable directly, ``await math_calculator(a=1, b=2, operation="add")`` or
``system_info()``; a bad input it detects raises :class:`agent.ToolError` with a message for the
model. ``current_time``, ``math_calculator`` and ``random_generator`` are async because they take
microseconds and never block, while a sync tool costs a worker-thread handoff per call;
``system_info`` reads ``/proc`` and so stays sync, run in a worker thread.
"""

from agent import ToolRegistry
from builtin_tools._math import math_calculator
from builtin_tools._random import random_generator
from builtin_tools._system import system_info
from builtin_tools._time import current_time

__all__ = ["current_time", "math_calculator", "random_generator", "registry", "system_info"]

registry = ToolRegistry([random_generator, system_info, math_calculator, current_time])
"""All four built-in tools, ready to hand to an agent."""
