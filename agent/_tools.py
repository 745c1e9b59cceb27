"""``@tool``, :class:`Tool` and :class:`ToolContext`.

A tool's JSON schema is computed once, when it is defined: from the signature and docstring
(through a pydantic model that later validates the arguments), or from an explicit JSON schema
(validated with ``jsonschema``). Nothing here runs per request.
"""

from __future__ import annotations

import inspect
import itertools
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Generic, ParamSpec, TypeVar, get_origin, get_type_hints, overload

import anyio
import anyio.from_thread
import anyio.lowlevel
import docstring_parser
import jsonschema
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from agent._approvals import NeedsApproval
from agent._arguments import MAX_ERRORS, ArgumentsError, parse_arguments, safe_str, summarise
from agent._errors import ToolDefinitionError
from agent._events import Emit, ToolProgress
from agent._limits import DEFAULT_LIMITS, Limits
from agent._result import JSONObject
from agent._schema import drop_null_defaults, model_schema, to_strict
from agent._threads import LoopLocalLimiter

__all__ = ["ArgumentsError", "Tool", "ToolContext", "tool"]

P = ParamSpec("P")
R = TypeVar("R")
DepsT = TypeVar("DepsT")


@dataclass(frozen=True, slots=True)
class ToolContext(Generic[DepsT]):
    """What a tool may know about the call it serves. Declare a parameter of this type to get it.

    The parameter is injected by the runtime and never appears in the tool's schema.
    """

    call_id: str
    tool_name: str
    deps: DepsT
    """The ``deps`` object given to ``Agent.run`` (your database pool, HTTP client, user...)."""
    turn: int = 1
    emit: Emit | None = field(default=None, repr=False)
    """Where :meth:`report` sends progress (the run's event stream and hooks)."""
    cancel_event: threading.Event = field(default_factory=threading.Event, repr=False)
    """Set once the runtime is done with the call (it timed out, the run was cancelled, or its
    outcome is out); see :attr:`cancelled`."""
    loop: anyio.lowlevel.EventLoopToken | None = field(default=None, repr=False)
    """The run's event loop, for :meth:`report_from_thread`."""
    run_id: str = ""
    """The run's id (``Agent.run(run_id=...)``, or the durable run's id)."""

    @property
    def idempotency_key(self) -> str:
        """``"{run_id}:{turn}:{call_id}"``: the same every time this call is run again.

        A durable run that crashed while this call was in flight runs it again on recovery, with
        the same key: pass it to the services the tool changes (a payment API's idempotency
        key, a unique column) so the side effect happens once.
        """
        return f"{self.run_id}:{self.turn}:{self.call_id}"

    async def report(self, data: Any) -> None:
        """Report progress (or any custom event) from an async tool: it appears in the run's
        event stream as :class:`ToolProgress` while the tool keeps running.

        Nothing is reported once the runtime gave up on the call (its outcome is already out).
        A slow consumer of the run's events makes this wait: events are never dropped.
        """
        if self.emit is not None and not self.cancelled:
            await self.emit(ToolProgress(self.turn, self.call_id, self.tool_name, data))

    def report_from_thread(self, data: Any) -> None:
        """:meth:`report` for sync tools, which run in worker threads; waits until delivered.

        Like :meth:`report`, nothing is reported (and nothing raised) once the runtime is done
        with the call, even when the run's event loop has closed since.
        """
        if self.emit is None or self.loop is None or self.cancelled:
            return
        try:
            anyio.from_thread.run(self.report, data, token=self.loop)
        except RuntimeError:  # the loop closed (trio's RunFinishedError is one too)
            if not self.cancelled:
                raise

    def finish(self) -> None:
        """Called by the runtime when the call's outcome is out: later reports are dropped."""
        self.cancel_event.set()

    @property
    def cancelled(self) -> bool:
        """Whether the runtime is done with this call: a sync tool should check it and stop.

        A sync tool runs in a worker thread that Python cannot interrupt; after a timeout the
        run moves on without it, and this flag is how the tool learns to stop early.
        """
        return self.cancel_event.is_set()


class Tool(Generic[P, R]):
    """A function the model can call, with its JSON schema and its argument validator.

    A ``Tool`` is still callable like the function it wraps, so it stays unit-testable.
    """

    def __init__(
        self,
        function: Callable[P, R],
        *,
        name: str | None = None,
        description: str | None = None,
        parameters: JSONObject | None = None,
        timeout: float | None = None,
        strict: bool | None = None,
        max_concurrency: int | None = None,
        eager: bool = True,
        needs_approval: NeedsApproval = False,
    ) -> None:
        self.function = function
        self.eager = eager
        if not (isinstance(needs_approval, bool) or callable(needs_approval)):
            raise ToolDefinitionError(f"needs_approval must be a bool or a function, got {needs_approval!r}")
        self.needs_approval: NeedsApproval = needs_approval
        """Whether a call waits for a person's decision (see :func:`agent.approve`)."""
        self.name: str = _checked_name(getattr(function, "__name__", "") if name is None else name)
        self.is_async = inspect.iscoroutinefunction(function)
        self.timeout = timeout
        self.limiter = LoopLocalLimiter(max_concurrency) if max_concurrency else None
        doc = docstring_parser.parse(inspect.getdoc(function) or "")
        self.description = description if description is not None else (doc.description or "").strip()
        self._validator: _Validator
        if parameters is None:
            self._validator, self.context_param = _ModelValidator.from_signature(function, doc)
        else:
            self._validator, self.context_param = _SchemaValidator(parameters), _context_param(function)
        self.strict, self.parameters = _wire_schema(
            self._validator.schema, strict, self.name, explicit=parameters is not None
        )

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.function(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<Tool {self.name} strict={self.strict}>"

    def wire(self) -> JSONObject:
        """The tool as it is sent in a request's ``tools`` list."""
        return {
            "type": "function",
            "name": self.name,
            "description": self.description,
            "parameters": self.parameters,
            "strict": self.strict,
        }

    def validate(self, arguments: str, limits: Limits = DEFAULT_LIMITS) -> dict[str, Any]:
        """Parse and validate the model's JSON arguments; raise :class:`ArgumentsError` if bad.

        Nothing else is raised, whatever the model wrote: arguments over ``limits``
        (``max_argument_bytes``, ``max_json_depth``), NaN and infinite numbers, and a validator
        that breaks on them (any exception, not just ``ValueError``) are all ``ArgumentsError``.
        """
        parsed = parse_arguments(arguments, limits)
        try:
            return self._validator.validate(drop_null_defaults(parsed, self._validator.schema))
        except ArgumentsError:
            raise
        except RecursionError:
            raise ArgumentsError(
                "arguments could not be validated: the validator raised RecursionError "
                "(are they nested too deeply?)"
            ) from None
        except Exception as exc:  # a validator that was not written for this input
            kind = type(exc).__name__
            message = f"arguments could not be validated: the validator raised {kind}"
            raise ArgumentsError(message, detail=f"{message}: {safe_str(exc)}") from None

    def bind(self, arguments: dict[str, Any], context: ToolContext[Any] | None) -> Callable[[], Any]:
        """The call to make, with validated arguments and the context injected if asked for.

        ``context`` may be ``None`` only for a tool that takes none (``context_param`` unset).
        """
        if self.context_param:
            arguments = {**arguments, self.context_param: context}
        return partial(self.function, **arguments)


_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")


def _checked_name(name: object) -> str:
    """The name as given, if the API accepts it (``str.isalnum`` would let ``météo`` through)."""
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise ToolDefinitionError(f"tool name {name!r} must match ^[a-zA-Z0-9_-]{{1,64}}$")
    return name


def _wire_schema(
    schema: JSONObject, strict: bool | None, name: str, *, explicit: bool
) -> tuple[bool, JSONObject]:
    """Choose strictness: as asked, else strict only where that does not change the meaning.

    A schema from a signature already forbids extra properties, so only nullable optionals
    change its meaning; an explicit schema must already be in strict form, to the letter.
    """
    try:
        strict_schema, changed = to_strict(schema)
    except ToolDefinitionError as exc:
        if strict:
            raise ToolDefinitionError(f"tool {name!r} cannot be strict: {exc}") from None
        return False, schema
    if strict is None:
        strict = not changed and (strict_schema == schema or not explicit)
    return strict, strict_schema if strict else schema


class _Validator:
    schema: JSONObject

    def validate(self, arguments: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError


class _ModelValidator(_Validator):
    """Validates through a pydantic model built from the function's signature."""

    def __init__(self, model: type[BaseModel]) -> None:
        self.model = model
        self.schema = model_schema(model.model_json_schema())

    @classmethod
    def from_signature(
        cls, function: Callable[..., Any], doc: docstring_parser.Docstring
    ) -> tuple[_ModelValidator, str | None]:
        descriptions = {p.arg_name: p.description for p in doc.params if p.description}
        try:
            hints = get_type_hints(function, include_extras=True)
        except (NameError, TypeError) as exc:
            raise ToolDefinitionError(f"cannot read the type hints of {function!r}: {exc}") from exc
        fields: dict[str, Any] = {}
        context_param = None
        for param in inspect.signature(function).parameters.values():
            annotation = _annotation(function, param, hints)
            if _is_context(annotation):
                context_param = param.name
                continue
            default = ... if param.default is inspect.Parameter.empty else param.default
            text = descriptions.get(param.name)
            fields[param.name] = (
                annotation,
                Field(default, description=text) if text else Field(default),
            )
        model = _make_model(function, fields)
        return cls(model), context_param

    def validate(self, arguments: dict[str, Any]) -> dict[str, Any]:
        try:
            instance = self.model.model_validate(arguments)
        except ValidationError as exc:
            raise ArgumentsError(_describe(exc)) from None
        return {name: getattr(instance, name) for name in type(instance).model_fields}


def _is_context(annotation: Any) -> bool:
    return annotation is ToolContext or get_origin(annotation) is ToolContext


def _context_param(function: Callable[..., Any]) -> str | None:
    """The parameter of an explicit-schema tool's function that asks for the ToolContext."""
    try:
        hints = get_type_hints(function)
    except (NameError, TypeError):
        return None
    return next((name for name, hint in hints.items() if _is_context(hint)), None)


def _annotation(function: Callable[..., Any], param: inspect.Parameter, hints: dict[str, Any]) -> Any:
    if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
        raise ToolDefinitionError(
            f"{function.__qualname__}: parameter {param.name!r} must be passable by keyword"
        )
    if param.name not in hints:
        raise ToolDefinitionError(f"{function.__qualname__}: parameter {param.name!r} has no type hint")
    return hints[param.name]


def _make_model(function: Callable[..., Any], fields: dict[str, Any]) -> type[BaseModel]:
    try:
        return create_model(
            f"{function.__name__}_arguments",
            __config__=ConfigDict(extra="forbid", allow_inf_nan=False),
            **fields,
        )
    except Exception as exc:
        raise ToolDefinitionError(f"{function.__qualname__}: {exc}") from exc


def _describe(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors(include_url=False)[:MAX_ERRORS]:
        location = ".".join(str(part) for part in error["loc"]) or "arguments"
        lines.append(f"{location}: {error['msg']}")
    return summarise(lines, exc.error_count())


class _SchemaValidator(_Validator):
    """Validates against an explicit JSON schema (dynamic tools, gateways, MCP)."""

    def __init__(self, schema: JSONObject) -> None:
        try:
            validator_class = jsonschema.validators.validator_for(schema)
            validator_class.check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise ToolDefinitionError(f"invalid parameters schema: {exc.message}") from exc
        self.schema = schema
        self._validator = validator_class(schema)

    def validate(self, arguments: dict[str, Any]) -> dict[str, Any]:
        # Only the first few: each error costs, and a hostile array can make one per item.
        found = list(itertools.islice(self._validator.iter_errors(arguments), MAX_ERRORS + 1))
        if found:
            errors = sorted(found[:MAX_ERRORS], key=lambda e: [str(p) for p in e.path])
            lines = [f"{'.'.join(map(str, e.path)) or 'arguments'}: {e.message}" for e in errors]
            raise ArgumentsError(summarise(lines, len(lines), more=len(found) > MAX_ERRORS))
        return arguments


@overload
def tool(
    function: Callable[P, R],
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    parameters: JSONObject | None = None,
    timeout: float | None = None,
    strict: bool | None = None,
    max_concurrency: int | None = None,
    eager: bool = True,
    needs_approval: NeedsApproval = False,
) -> Tool[P, R]: ...


@overload
def tool(
    function: None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    parameters: JSONObject | None = None,
    timeout: float | None = None,
    strict: bool | None = None,
    max_concurrency: int | None = None,
    eager: bool = True,
    needs_approval: NeedsApproval = False,
) -> Callable[[Callable[P, R]], Tool[P, R]]: ...


def tool(
    function: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    parameters: JSONObject | None = None,
    timeout: float | None = None,
    strict: bool | None = None,
    max_concurrency: int | None = None,
    eager: bool = True,
    needs_approval: NeedsApproval = False,
) -> Tool[P, R] | Callable[[Callable[P, R]], Tool[P, R]]:
    """Make a sync or async function a tool: ``@tool``, ``@tool(...)`` or ``tool(fn, ...)``.

    Args:
        function: The function to wrap.
        name: The name the model sees (default: the function's name).
        description: What the tool does (default: the docstring's description).
        parameters: An explicit JSON schema for the arguments, instead of the signature's; the
            function then receives the validated arguments as keyword arguments.
        timeout: Seconds before the call is abandoned and reported as timed out (default:
            the agent's ``tool_timeout``).
        strict: OpenAI strict mode. Default: strict only where that does not change what the
            tool accepts (all parameters required, no free-form values).
        max_concurrency: At most this many calls of this tool at once, across all runs (e.g.
            to protect a database), on top of the agent's run-wide limit.
        eager: In a streamed run, start the call as soon as its ``function_call`` item is
            complete, before the response is. Set ``False`` for side effects that must not
            happen for a response that later fails: the call then waits for
            ``response.completed``. (A streamed request is never retried once a call started,
            so no call runs twice either way.)
        needs_approval: ``True`` (or a predicate ``(ctx, arguments) -> bool``, sync or async,
            on the validated arguments): a call waits for a person's decision before it runs;
            the run pauses for it (see ``Agent.resume``) unless an ``on_approval`` hook decides.
            Only the predicate's ``False`` lets a call run unasked (``None`` or an exception
            asks). Such calls never start early in a streamed run.
    """

    def wrap(func: Callable[P, R]) -> Tool[P, R]:
        return Tool(
            func,
            name=name,
            description=description,
            parameters=parameters,
            timeout=timeout,
            strict=strict,
            max_concurrency=max_concurrency,
            eager=eager,
            needs_approval=needs_approval,
        )

    return wrap if function is None else wrap(function)
