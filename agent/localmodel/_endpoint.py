"""Choose where to run: the endpoint the environment names, or a local model server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from ._policy import Policy
from ._server import LocalModelServer

__all__ = ["Endpoint", "endpoint_or_local"]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where an ``Agent`` should send its requests (``None``: read ``$OPENAI_*`` as usual)."""

    base_url: str | None
    api_key: str | None
    local: bool
    """Whether this is a local model server (a deterministic stand-in, not AI)."""


@contextmanager
def endpoint_or_local(policy: Policy, *, stream_delay: float = 0.0) -> Iterator[Endpoint]:
    """The real endpoint if ``OPENAI_BASE_URL`` or ``OPENAI_API_KEY`` is set, else a local model
    server running ``policy`` for the duration of the block (what the CLI and examples do).

    ``stream_delay`` is the local server's pause between streamed items (see `create_app`).
    """
    if os.environ.get("OPENAI_BASE_URL") or os.environ.get("OPENAI_API_KEY"):
        yield Endpoint(base_url=None, api_key=None, local=False)
        return
    with LocalModelServer(policy, stream_delay=stream_delay) as server:
        yield Endpoint(base_url=server.base_url, api_key="local", local=True)
