"""The public surface is exactly what ``agent.__all__`` says."""

from __future__ import annotations

import inspect

import agent

EXPECTED = {
    "ApprovalRequested",
    "Decision",
    "InvalidStateError",
    "PendingApproval",
    "approve",
    "deny",
    "StreamRestarted",
    "HookError",
    "RunStream",
    "StreamEvent",
    "TurnFinished",
    "ToolProgress",
    "ToolCallStarted",
    "ToolCallFinished",
    "TextDelta",
    "RunResumed",
    "RunStarted",
    "RunFinished",
    "RunEvent",
    "ModelResponded",
    "Hooks",
    "ArgumentsDelta",
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "ArgumentsError",
    "APITimeoutError",
    "Agent",
    "AgentClosedError",
    "AgentError",
    "Limits",
    "ResponseTooLargeError",
    "RunTimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "InternalServerError",
    "MaxTurnsExceeded",
    "ModelSettings",
    "OutputRefusedError",
    "OutputValidationError",
    "NotFoundError",
    "OutcomeKind",
    "PermissionDeniedError",
    "ProtocolError",
    "RateLimitError",
    "ResponseFailedError",
    "RetryPolicy",
    "RunError",
    "RunResult",
    "Tool",
    "ToolCallRecord",
    "ToolContext",
    "ToolDefinitionError",
    "ToolError",
    "ToolRegistry",
    "ToolSource",
    "ToolSourceError",
    "UnansweredToolCallError",
    "Usage",
    "UsageError",
    "make_logger",
    "tool",
}


def test_all_is_exactly_the_public_names() -> None:
    """Adding or removing a public name is a deliberate change to this list."""
    assert set(agent.__all__) == EXPECTED


def test_every_public_name_is_importable_and_documented() -> None:
    """Each public class and function exists and has a docstring for the user's editor."""
    for name in agent.__all__:
        obj = getattr(agent, name)
        if isinstance(obj, type) or inspect.isfunction(obj):
            assert obj.__doc__, name


def test_errors_share_one_root() -> None:
    """Every runtime error derives from AgentError; a tool's signal and Tool.validate's stand apart."""
    apart = {"ToolError", "ArgumentsError"}
    names = [n for n in agent.__all__ if n.endswith(("Error", "Exceeded")) and n not in apart]
    errors = [getattr(agent, n) for n in names]
    assert all(issubclass(e, agent.AgentError) for e in errors)
    assert not issubclass(agent.ToolError, agent.AgentError)
