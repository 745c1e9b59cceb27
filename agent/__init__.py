"""agent-runtime: a small, fast, fault-tolerant agent loop for OpenAI-compatible ``/v1/responses``.

```python
from agent import Agent, tool

@tool
def add(a: int, b: int) -> int:
    \"\"\"Add two integers.\"\"\"
    return a + b

async with Agent(model="gpt-4.1", tools=[add]) as agent:
    result = await agent.run("What is 2 + 40?")
    print(result.output)
```
"""

from agent._agent import Agent
from agent._approvals import Decision, PendingApproval, approve, deny
from agent._errors import (
    AgentClosedError,
    AgentError,
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    HookError,
    InternalServerError,
    InvalidStateError,
    MaxTurnsExceeded,
    NotFoundError,
    OutputRefusedError,
    OutputValidationError,
    PermissionDeniedError,
    ProtocolError,
    RateLimitError,
    ResponseFailedError,
    ResponseTooLargeError,
    RunError,
    RunTimeoutError,
    ToolDefinitionError,
    ToolError,
    ToolSourceError,
    UnansweredToolCallError,
    UsageError,
)
from agent._events import (
    ApprovalRequested,
    ArgumentsDelta,
    Hooks,
    ModelResponded,
    RunEvent,
    RunFinished,
    RunResumed,
    RunStarted,
    StreamEvent,
    StreamRestarted,
    TextDelta,
    ToolCallFinished,
    ToolCallStarted,
    ToolProgress,
    TurnFinished,
)
from agent._limits import Limits
from agent._logging import make_logger
from agent._registry import ToolRegistry
from agent._result import OutcomeKind, RunResult, ToolCallRecord, Usage
from agent._retry import RetryPolicy
from agent._run_stream import RunStream
from agent._settings import ModelSettings
from agent._sources import ToolSource
from agent._tools import ArgumentsError, Tool, ToolContext, tool

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "Agent",
    "AgentClosedError",
    "AgentError",
    "ApprovalRequested",
    "ArgumentsDelta",
    "ArgumentsError",
    "AuthenticationError",
    "BadRequestError",
    "Decision",
    "HookError",
    "Hooks",
    "InternalServerError",
    "InvalidStateError",
    "Limits",
    "MaxTurnsExceeded",
    "ModelResponded",
    "ModelSettings",
    "NotFoundError",
    "OutcomeKind",
    "OutputRefusedError",
    "OutputValidationError",
    "PendingApproval",
    "PermissionDeniedError",
    "ProtocolError",
    "RateLimitError",
    "ResponseFailedError",
    "ResponseTooLargeError",
    "RetryPolicy",
    "RunError",
    "RunEvent",
    "RunFinished",
    "RunResult",
    "RunResumed",
    "RunStarted",
    "RunStream",
    "RunTimeoutError",
    "StreamEvent",
    "StreamRestarted",
    "TextDelta",
    "Tool",
    "ToolCallFinished",
    "ToolCallRecord",
    "ToolCallStarted",
    "ToolContext",
    "ToolDefinitionError",
    "ToolError",
    "ToolProgress",
    "ToolRegistry",
    "ToolSource",
    "ToolSourceError",
    "TurnFinished",
    "UnansweredToolCallError",
    "Usage",
    "UsageError",
    "approve",
    "deny",
    "make_logger",
    "tool",
]
