"""``python -m agent`` and the ``agent`` console script.

The command line needs the ``cli`` extra (typer, rich, starlette, uvicorn); without it the
script says so in one line instead of a traceback.
"""

from __future__ import annotations

import sys

__all__ = ["main"]

_CLI_PACKAGES = frozenset({"typer", "click", "rich", "starlette", "uvicorn"})
MISSING_EXTRA_EXIT = 2
"""Exit code when the command line's dependencies are not installed."""


def main() -> None:
    """Run the ``agent`` command, or say in one line which extra it needs."""
    try:
        from agent._cli import main as cli_main
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] not in _CLI_PACKAGES:
            raise
        print(
            f"error: the agent command needs the cli extra ({exc.name} is missing): "
            "pip install 'agent-runtime[cli]'",
            file=sys.stderr,
        )
        raise SystemExit(MISSING_EXTRA_EXIT) from None
    cli_main()


if __name__ == "__main__":
    main()
