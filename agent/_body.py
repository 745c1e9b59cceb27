"""Reading a reply's body within a byte limit: decompression in bounded steps, early close.

httpx inflates each raw chunk in one go (a 64 KiB gzip chunk can become 64 MiB) and reads a
whole line before handing it over, so the body is read raw here and inflated piece by piece:
no more than :data:`PIECE` bytes past the limit are ever held. Requests ask only for the
encodings that can be inflated so (``gzip``, ``deflate``).

A body left unread (an error, a limit, a stream that goes on after its last event) is closed
without reading further, and httpx's chain of async generators under it is finished at once
rather than left to the garbage collector (which trio reports as a ``ResourceWarning``).
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from typing import Self

import anyio
import httpx

from agent._errors import ProtocolError, ResponseTooLargeError

__all__ = ["ACCEPT_ENCODING", "PIECE", "ReplyBody"]

ACCEPT_ENCODING = "gzip, deflate"
"""The content codings a request accepts: the ones :class:`ReplyBody` can inflate in bounded steps."""
PIECE = 64 * 1024
"""The most bytes one step of inflating produces."""


class ReplyBody:
    """The body of ``reply`` as decoded chunks, refused past ``limit`` bytes after decompression.

    ``limit_name`` names the :class:`~agent.Limits` field in the error. Use it as an async
    iterator of chunks or :meth:`read` it whole, and :meth:`aclose` it in all cases.
    """

    def __init__(self, reply: httpx.Response, *, limit: int, limit_name: str) -> None:
        self._reply = reply
        self._limit = limit
        self._limit_name = limit_name
        self._size = 0
        self._preloaded = reply.is_stream_consumed
        self._inflate = _inflater(reply)
        self._pieces: Iterator[bytes] = iter(())
        self._raw: AsyncIterator[bytes] | None = None
        self._started = False
        self._ended = False

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> bytes:
        while (piece := next(self._pieces, None)) is None:
            if self._ended:
                raise StopAsyncIteration
            self._pieces = await self._next_pieces()
        self._size += len(piece)
        if self._size > self._limit:
            raise ResponseTooLargeError(
                f"the reply passed Limits.{self._limit_name}={self._limit} bytes",
                status=self._reply.status_code,
                request_id=self._reply.headers.get("x-request-id"),
            )
        return piece

    async def _next_pieces(self) -> Iterator[bytes]:
        if self._preloaded:
            # The transport handed over the whole body, decoded (httpx.MockTransport does).
            self._ended = True
            return _slices(self._reply.content)
        if self._raw is None:
            self._raw = self._reply.aiter_raw()
        self._started = True
        try:
            raw = await anext(self._raw)
        except StopAsyncIteration:
            self._ended = True
            return self._inflate.flush() if self._inflate else iter(())
        return self._inflate.decode(raw) if self._inflate else iter((raw,))

    async def read(self) -> bytes:
        """The whole (rest of the) body."""
        return b"".join([chunk async for chunk in self])

    async def finish(self, grace: float) -> None:
        """Read what is left of the body (discarding it) for up to ``grace`` seconds, then close.

        A server ends the body right after its last event: reading that end lets the
        connection be used again. A server that keeps it open is not waited for longer.
        """
        if not self._ended and self._raw is not None:
            with anyio.move_on_after(grace), contextlib.suppress(httpx.HTTPError):
                async for _ in self._raw:
                    pass
                self._ended = True
        await self.aclose()

    async def aclose(self) -> None:
        """Close the reply, without reading more of it."""
        if self._reply.is_closed and (self._ended or not self._started):
            return  # read to its end (httpx closed it then) or never opened here: nothing to do
        with anyio.CancelScope(shield=True):
            await self._reply.aclose()
            if self._raw is not None and self._started and not self._ended:
                await _end(self._raw)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


async def _end(raw: AsyncIterator[bytes]) -> None:
    """Finish httpx's generators under a closed reply: their next read fails at once."""
    with anyio.CancelScope() as scope, contextlib.suppress(Exception):
        scope.cancel()  # in case a transport would still wait for data
        await anext(raw)
    if isinstance(raw, AsyncGenerator):
        await raw.aclose()


def _slices(content: bytes) -> Iterator[bytes]:
    view = memoryview(content)
    return (bytes(view[i : i + PIECE]) for i in range(0, len(content), PIECE))


class _Inflater:
    """zlib decompression (gzip or deflate) in steps of at most :data:`PIECE` bytes."""

    def __init__(self, wbits: int, *, deflate: bool = False) -> None:
        self._zlib = zlib.decompressobj(wbits)
        self._deflate_unknown = deflate

    def decode(self, data: bytes) -> Iterator[bytes]:
        try:
            yield from self._steps(data)
        except zlib.error as exc:
            if not self._deflate_unknown:
                raise _undecodable(exc) from None
            # "deflate" is sent both zlib-wrapped and raw (as httpx also allows).
            self._zlib, self._deflate_unknown = zlib.decompressobj(-zlib.MAX_WBITS), False
            yield from self.decode(data)
        self._deflate_unknown = False

    def _steps(self, data: bytes) -> Iterator[bytes]:
        while True:
            out = self._zlib.decompress(data, PIECE)
            data = self._zlib.unconsumed_tail
            if out:
                yield out
            if not data and len(out) < PIECE:
                return

    def flush(self) -> Iterator[bytes]:
        try:
            rest = self._zlib.flush()
        except zlib.error as exc:  # pragma: no cover - flush after bounded steps has nothing to fail on
            raise _undecodable(exc) from None
        return iter((rest,) if rest else ())


def _undecodable(exc: zlib.error) -> ProtocolError:
    return ProtocolError(f"the reply's compressed body cannot be decoded ({exc})", transient=True)


def _inflater(reply: httpx.Response) -> _Inflater | None:
    coding = reply.headers.get("content-encoding", "identity").strip().lower()
    if coding in ("", "identity") or reply.is_stream_consumed:
        return None
    if coding in ("gzip", "x-gzip"):
        return _Inflater(zlib.MAX_WBITS | 16)
    if coding == "deflate":
        return _Inflater(zlib.MAX_WBITS, deflate=True)
    raise ProtocolError(
        f"the reply is encoded as {coding[:40]!r}, which was not asked for (only {ACCEPT_ENCODING})",
        status=reply.status_code,
    )
