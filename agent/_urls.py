"""URLs as the agent sends them and as it shows them: credentials never leave in a message.

A ``base_url`` may carry credentials (``https://user:secret@host/v1``, ``?api-key=...``):
:func:`shown_url` is the form logs, reprs and errors use, and :func:`redact` takes those parts
out of a message written below us (httpx, a proxy, a custom transport) that quotes the URL.
"""

from __future__ import annotations

import re

import httpx

__all__ = ["redact", "responses_url", "shown_url", "url_secrets"]


def responses_url(base_url: str) -> str:
    """``{base_url}/responses``, keeping a query the base URL carries (e.g. ``?api-version=``)."""
    url = httpx.URL(base_url)
    return str(url.copy_with(path=url.path.rstrip("/") + "/responses"))


def shown_url(url: str) -> str:
    """``url`` without user info, query and fragment, which may hold credentials.

    An URL that cannot be parsed is shown only if it has no ``@``, ``?`` or ``#`` at all.
    """
    try:
        return str(httpx.URL(url).copy_with(userinfo=b"", query=None, fragment=None))
    except (httpx.InvalidURL, TypeError, ValueError):
        return "(not shown: it may hold credentials)" if _MAY_HIDE.search(url) else url


_MAY_HIDE = re.compile(r"[@?#]")


def url_secrets(url: str) -> tuple[str, ...]:
    """The parts of ``url`` that may be credentials (user info, query, fragment), longest first.

    An error message from below (httpx, a proxy, a custom transport) may quote the URL it was
    sent to; these are what :func:`redact` takes out of it.
    """
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        return ()
    parts = {parsed.userinfo.decode(errors="replace"), parsed.username, parsed.password or ""}
    parts |= {parsed.query.decode(errors="replace"), parsed.fragment}
    parts |= {value for _, value in parsed.params.multi_items()}
    return tuple(sorted((part for part in parts if len(part) > 2), key=len, reverse=True))


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` with every one of ``secrets`` replaced by ``***``."""
    for secret in secrets:
        text = text.replace(secret, "***")
    return text
