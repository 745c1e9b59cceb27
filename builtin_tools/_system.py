"""The ``system_info`` tool: what the machine and this process are, without anything personal.

It reports no environment variables, user names, host names or paths: tool output goes to a
remote model, and those can identify people or hold secrets.
"""

import os
import platform
from typing import TypedDict

import psutil

from agent import tool

__all__ = ["SystemInfo", "system_info"]


class SystemInfo(TypedDict):
    """What ``system_info`` returns; memory figures are in bytes."""

    os: str
    os_release: str
    architecture: str
    python_implementation: str
    python_version: str
    cpu_count: int | None
    memory_total_bytes: int
    memory_available_bytes: int
    memory_used_percent: float
    process_rss_bytes: int


# Sync on purpose, unlike the other three tools: psutil reads /proc files, I/O that can block,
# so the runtime runs this tool in a worker thread, off the event loop.
@tool
def system_info() -> SystemInfo:
    """Get basic facts about the computer this agent runs on: OS, CPU, memory, Python version.

    Returns the OS name and release, CPU architecture, Python implementation and version,
    the number of logical CPUs, total and available memory in bytes, the percentage of memory
    in use, and this process's resident memory in bytes. It never reveals user names, host
    names, file paths or environment variables.
    """
    memory = psutil.virtual_memory()
    return {
        "os": platform.system(),
        "os_release": platform.release(),
        "architecture": platform.machine(),
        "python_implementation": platform.python_implementation(),
        "python_version": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "memory_total_bytes": memory.total,
        "memory_available_bytes": memory.available,
        "memory_used_percent": memory.percent,
        "process_rss_bytes": psutil.Process().memory_info().rss,
    }
