"""The MCP client options of the ``agent`` command: ``--mcp SPEC`` and ``--mcp-header``.

``agent._cli`` imports this module only when ``--mcp`` is given: the ``mcp`` package is an
optional extra. A SPEC is ``stdio:COMMAND ARGS...`` (split as a shell would, run as a subprocess
speaking MCP on its stdin/stdout) or an ``http://``/``https://`` URL (streamable HTTP); every
``--mcp-header "Name: value"`` is sent to every HTTP server. Nothing here prints: a bad option is
a ``ValueError``, an unreachable server the sources' own ``ToolSourceError``.
"""

from __future__ import annotations

import shlex

from agent._result import JSONObject
from agent.mcp import MCPTools, mcp_http, mcp_stdio

__all__ = ["list_tools", "parse_headers", "sources"]

_STDIO = "stdio:"
_HTTP = ("http://", "https://")


def parse_headers(values: list[str]) -> dict[str, str]:
    """``["Name: value", ...]`` as a dict; anything else is a ``ValueError``."""
    headers = {}
    for value in values:
        name, colon, text = value.partition(":")
        if not colon or not name or name != name.strip():
            raise ValueError(f"--mcp-header takes 'Name: value', got {value!r}")
        headers[name] = text.strip()
    return headers


def sources(specs: list[str], headers: dict[str, str]) -> list[MCPTools]:
    """One tool source per ``--mcp`` SPEC; a SPEC of neither form is a ``ValueError``."""
    found = [_source(spec, headers) for spec in specs]
    if headers and not any(spec.startswith(_HTTP) for spec in specs):
        raise ValueError("--mcp-header is sent to HTTP MCP servers, and no --mcp names one")
    return found


def _source(spec: str, headers: dict[str, str]) -> MCPTools:
    if spec.startswith(_STDIO):
        try:
            command = shlex.split(spec.removeprefix(_STDIO))
        except ValueError as exc:
            raise ValueError(f"bad --mcp {spec!r}: {exc}") from exc
        if not command:
            raise ValueError(f"bad --mcp {spec!r}: no command after 'stdio:'")
        return mcp_stdio(command)
    if spec.startswith(_HTTP):
        return mcp_http(spec, headers=headers)
    raise ValueError(f"bad --mcp {spec!r}: expected 'stdio:COMMAND ARGS...' or an http(s):// URL")


async def list_tools(found: list[MCPTools]) -> list[JSONObject]:
    """Each source's tools as function schemas, with ``"server"``: the source's name; closed after."""
    entries: list[JSONObject] = []
    for source in found:
        async with source:
            entries += [{**tool.wire(), "server": source.name} for tool in await source.list_tools()]
    return entries
