"""``python -m agent``: the same as the ``agent`` command."""

from agent._cli import main

main()
