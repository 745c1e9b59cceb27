"""A 429 storm: many runs through one agent against an endpoint that rate-limits them.

The endpoint is the local model server's app (``AutoPolicy``: each run is one request that
echoes the prompt) behind a token bucket of ``--rate`` requests per second (burst: one second's
worth). Past it, it answers 429 with ``Retry-After: --retry-after`` seconds, as a gateway does.
It runs in-process (``httpx.ASGITransport``), each answer held ``--latency`` seconds as a network
and a gateway would (so requests overlap and a 429 arrives after others were sent): what is
measured is how many requests the agent sends, not how fast a socket carries them.

``--runs`` runs start together through one agent, under three retry policies:

- ``independent``: every run retries on its own clock (no shared pause, no retry budget),
- ``shared pause``: a 429 pauses every request to the endpoint (no budget),
- ``pause + budget``: the default ``RetryPolicy`` (shared pause and retry budget).

For each (the median of ``--repeat`` storms): requests sent, runs that succeeded, runs that
failed (with ``RateLimitError``), requests per successful run (and its range), and the wall
time. Run::

    .venv/bin/python bench/bench_storm.py                       # 1,000 runs, 100 req/s, Retry-After 1 s
    .venv/bin/python bench/bench_storm.py --max-retries 2       # the default number of retries
    .venv/bin/python bench/bench_storm.py --status 503          # overloaded: 503, no Retry-After
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from functools import partial

import anyio
import httpx
from starlette.types import ASGIApp, Receive, Scope, Send

from agent import Agent, AgentError, RetryPolicy
from agent.localmodel import AutoPolicy, create_app


class RateLimited:
    """ASGI middleware: a token bucket in front of ``app``; past it, 429 with Retry-After."""

    def __init__(
        self, app: ASGIApp, *, rate: float, retry_after: float, latency: float, status: int = 429
    ) -> None:
        self._app = app
        self._status = status
        self._latency = latency
        self._rate = rate
        self._retry_after = retry_after
        self._tokens = rate
        self._last = time.monotonic()
        self.requests = 0
        self.limited = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        self.requests += 1
        await anyio.sleep(self._latency)  # the network's and the gateway's time: requests overlap
        if self._take():
            await self._app(scope, receive, send)
            return
        self.limited += 1
        if self._status == 429:
            await _too_many(send, self._retry_after)
        else:
            await _overloaded(send, self._status)

    def _take(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self._rate, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


async def _too_many(send: Send, retry_after: float) -> None:
    error = {"message": "Rate limit reached for requests.", "type": "requests", "code": "rate_limit_exceeded"}
    body = json.dumps({"error": error}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"retry-after", f"{retry_after:g}".encode()),
        (b"retry-after-ms", str(round(retry_after * 1000)).encode()),
    ]
    await send({"type": "http.response.start", "status": 429, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _overloaded(send: Send, status: int) -> None:
    """An endpoint in trouble: an error status and no word on when to come back."""
    body = json.dumps({"error": {"message": "The server is overloaded.", "code": "server_error"}}).encode()
    await send(
        {"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": body})


@dataclass(frozen=True, slots=True)
class Outcome:
    policy: str
    requests: int
    succeeded: int
    failed: collections.Counter[str]
    seconds: float


async def storm(
    name: str,
    policy: RetryPolicy,
    *,
    runs: int,
    rate: float,
    retry_after: float,
    latency: float,
    status: int = 429,
) -> Outcome:
    """``runs`` runs started together through one agent; what they cost and how they ended."""
    app = create_app(AutoPolicy())
    server = RateLimited(app, rate=rate, retry_after=retry_after, latency=latency, status=status)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(server), timeout=60)
    agent = Agent("m", base_url="http://storm.test/v1", api_key="k", http_client=client, retry=policy)
    succeeded = 0
    failed: collections.Counter[str] = collections.Counter()

    async def one(n: int) -> None:
        nonlocal succeeded
        try:
            await agent.run(f"run {n}")
        except AgentError as exc:
            failed[type(exc).__name__] += 1
        else:
            succeeded += 1

    started = time.perf_counter()
    async with client, agent, anyio.create_task_group() as group:
        for n in range(runs):
            group.start_soon(one, n)
    return Outcome(name, server.requests, succeeded, failed, time.perf_counter() - started)


def policies(max_retries: int) -> list[tuple[str, RetryPolicy]]:
    default = RetryPolicy(max_retries=max_retries)
    return [
        ("independent", replace(default, shared_pause=False, budget_ratio=None)),
        ("shared pause", replace(default, budget_ratio=None)),
        ("pause + budget", default),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second the endpoint takes")
    parser.add_argument("--retry-after", type=float, default=1.0, help="seconds its 429s ask to wait")
    parser.add_argument("--max-retries", type=int, default=10)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds before each answer")
    parser.add_argument("--repeat", type=int, default=3, help="storms per policy (the median is shown)")
    parser.add_argument(
        "--status", type=int, default=429, help="past the rate: 429 with Retry-After, or e.g. 503 without"
    )
    args = parser.parse_args()
    print(
        f"{args.runs} runs, endpoint {args.rate:g} req/s, past it {args.status}"
        f"{f' with Retry-After {args.retry_after:g} s' if args.status == 429 else ' (no Retry-After)'}, "
        f"{args.latency * 1000:g} ms per answer, max_retries {args.max_retries}, "
        f"median of {args.repeat}"
    )
    print(
        f"{'policy':<16}{'requests':>9}{'ok':>6}{'failed':>8}{'req/ok run':>12}{'(range)':>13}{'wall s':>8}"
    )
    for name, policy in policies(args.max_retries):
        run = partial(
            storm,
            name,
            policy,
            runs=args.runs,
            rate=args.rate,
            retry_after=args.retry_after,
            latency=args.latency,
            status=args.status,
        )
        results = [anyio.run(run) for _ in range(args.repeat)]
        ratios = sorted(r.requests / r.succeeded for r in results if r.succeeded)
        spread = f"{ratios[0]:.2f}-{ratios[-1]:.2f}" if ratios else "-"
        print(
            f"{name:<16}{_median(r.requests for r in results):>9.0f}"
            f"{_median(r.succeeded for r in results):>6.0f}"
            f"{_median(sum(r.failed.values()) for r in results):>8.0f}"
            f"{_median(ratios) if ratios else float('nan'):>12.2f}{spread:>13}"
            f"{_median(r.seconds for r in results):>8.1f}"
        )


def _median(values: Iterable[float]) -> float:
    return statistics.median(values)


if __name__ == "__main__":
    main()
