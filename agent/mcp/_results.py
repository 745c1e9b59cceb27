"""What an MCP tool result becomes: the output the model reads, or a ``ToolError``.

- ``isError``: a ``tool_error`` whose message is the result's text;
- text blocks only: their texts, one per line (what MCP means for the model: a server sends its
  ``structuredContent`` serialised as text too, and the official Python server wraps a plain
  return value as ``{"result": value}`` there, which the text says without the wrapping);
- ``structuredContent`` and no text block, or ``prefer_structured``: the structured content
  as JSON;
- any other block (image, audio, resource, resource link): ``{"content": [...]}`` with every
  block as MCP JSON (``structuredContent`` beside it when there is one), so nothing is dropped.
"""

from __future__ import annotations

import json
from typing import Any

from mcp_types import CallToolResult, ContentBlock, TextContent

from agent._errors import ToolError

__all__ = ["output_of"]


def output_of(result: CallToolResult, *, prefer_structured: bool = False) -> Any:
    """The call's output (a string, or a JSON-able value), or raise ToolError for ``isError``."""
    blocks = result.content
    if result.is_error:
        raise ToolError(_texts(blocks) or "the MCP tool reported an error and gave no message")
    structured = result.structured_content
    if all(isinstance(block, TextContent) for block in blocks):
        if structured is not None and (prefer_structured or not blocks):
            return json.dumps(structured, ensure_ascii=False)
        return _texts(blocks)
    whole: dict[str, Any] = {"content": [_as_json(block) for block in blocks]}
    if structured is not None:
        whole["structuredContent"] = structured
    return whole


def _texts(blocks: list[ContentBlock]) -> str:
    return "\n".join(block.text for block in blocks if isinstance(block, TextContent))


def _as_json(block: ContentBlock) -> Any:
    return block.model_dump(mode="json", by_alias=True, exclude_none=True)
