"""A deterministic stand-in for a model, speaking OpenAI's `POST /v1/responses`. It is not AI.

For demos, offline development and tests of tools and agents: it answers from a `Policy` (a replayed
script, or `AutoPolicy`, which calls the tools the prompt names and reports the results), validates
requests like the real API (`text.format` included), supports `previous_response_id` and streaming,
and injects faults on request.

    with LocalModelServer(demo_script()) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="local")

In-process, without a socket: `httpx.AsyncClient(transport=httpx.ASGITransport(create_app(policy)))`.
"""

from ._app import create_app
from ._auto import AutoPolicy, example_arguments
from ._endpoint import Endpoint, endpoint_or_local
from ._faults import DEFAULT_MIX, Fault, FaultMix
from ._policy import Policy, ScriptExhaustedError, ScriptPolicy, demo_script
from ._request import Item, ResponseRequest
from ._response import PolicyOutputError
from ._server import LocalModelServer, serve

__all__ = [
    "DEFAULT_MIX",
    "AutoPolicy",
    "Endpoint",
    "Fault",
    "FaultMix",
    "Item",
    "LocalModelServer",
    "Policy",
    "PolicyOutputError",
    "ResponseRequest",
    "ScriptExhaustedError",
    "ScriptPolicy",
    "create_app",
    "demo_script",
    "endpoint_or_local",
    "example_arguments",
    "serve",
]
