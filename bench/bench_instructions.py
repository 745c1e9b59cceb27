"""Instructions per run, counted by callgrind: a figure that machine noise does not move.

``N`` runs of the API page's scenario (turn 1: four parallel calls of the builtin tools; turn 2:
the answer) over an in-process ``httpx.MockTransport`` with canned replies, so nearly every
instruction is the client's. Run it under callgrind for two run counts; the difference over the
difference in runs is the cost of one run, imports and start-up cancelled out::

    for n in 4 24; do valgrind --tool=callgrind --callgrind-out-file=cg.$n .venv/bin/python \\
        bench/bench_instructions.py $n; done
    # per run = (Ir of cg.24 - Ir of cg.4) / 20   (Ir: the "summary:" line of each file)

Compare two commits by running the same script with ``PYTHONPATH`` set to each checkout.
"""

from __future__ import annotations

import json
import sys

import anyio
import httpx

from agent import Agent
from builtin_tools import registry

CALLS = [
    ("math_calculator", '{"expression": "2+2"}'),
    ("current_time", '{"timezone": "UTC"}'),
    ("random_generator", '{"min": 1, "max": 6}'),
    ("system_info", "{}"),
]


def _body(output: list[dict[str, object]]) -> bytes:
    usage = {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}
    body = {"id": "resp_1", "object": "response", "status": "completed", "model": "m", "output": output}
    return json.dumps({**body, "usage": usage}).encode()


FIRST = _body(
    [
        {"type": "function_call", "call_id": f"c{i}", "name": name, "arguments": arguments, "id": f"fc{i}"}
        for i, (name, arguments) in enumerate(CALLS)
    ]
)
ANSWER = {"type": "output_text", "text": "done"}
SECOND = _body([{"type": "message", "role": "assistant", "id": "m1", "content": [ANSWER]}])


def reply(request: httpx.Request) -> httpx.Response:
    sent = json.loads(request.content)
    answered = any(item.get("type") == "function_call_output" for item in sent["input"])
    headers = {"content-type": "application/json"}
    return httpx.Response(200, content=SECOND if answered else FIRST, headers=headers)


async def main(runs: int) -> None:
    async with (
        httpx.AsyncClient(transport=httpx.MockTransport(reply)) as client,
        Agent("m", tools=registry, base_url="http://bench/v1", api_key="k", http_client=client) as agent,
    ):
        for _ in range(runs):
            result = await agent.run("go")
            assert result.output == "done", result.output


if __name__ == "__main__":
    anyio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 10)
