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

from agent._errors import (
    AgentError,
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    InternalServerError,
    MaxTurnsExceeded,
    NotFoundError,
    PermissionDeniedError,
    ProtocolError,
    RateLimitError,
    ResponseFailedError,
    RunError,
    ToolDefinitionError,
    ToolError,
    UnansweredToolCallError,
    UsageError,
)
from agent._http import RetryPolicy
from agent._logging import make_logger
from agent._loop import Agent
from agent._result import OutcomeKind, RunResult, ToolCallRecord, Usage
from agent._tools import ArgumentsError, Tool, ToolContext, ToolRegistry, tool

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "Agent",
    "AgentError",
    "ArgumentsError",
    "AuthenticationError",
    "BadRequestError",
    "InternalServerError",
    "MaxTurnsExceeded",
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
    "UnansweredToolCallError",
    "Usage",
    "UsageError",
    "make_logger",
    "tool",
]
