"""Errors the ReQL test server sends back, typed as the real server types them.

The wire layer turns each into a response: ``response_type`` is the
``Response.ResponseType`` (COMPILE_ERROR, RUNTIME_ERROR, CLIENT_ERROR) and,
for runtime errors, ``error_type`` is the ``Response.ErrorType`` that the
driver maps to ``ReqlQueryLogicError``, ``ReqlOpFailedError`` and so on.
"""

from __future__ import annotations

from rethinkdb.ql2_pb2 import Response

ResponseType = Response.ResponseType
ErrorType = Response.ErrorType


class ReqlServerError(Exception):
    """Base class: ``str(error)`` is the message the client sees."""

    response_type: int = ResponseType.RUNTIME_ERROR
    error_type: int | None = ErrorType.QUERY_LOGIC

    def __init__(self, message: str, backtrace: list | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.backtrace = backtrace or []


class ReqlClientError(ReqlServerError):
    """The query itself is malformed (bad JSON, unknown query type)."""

    response_type = ResponseType.CLIENT_ERROR
    error_type = None


class ReqlCompileError(ReqlServerError):
    """The term tree cannot be compiled (unknown or unsupported term, bad arity)."""

    response_type = ResponseType.COMPILE_ERROR
    error_type = None


class ReqlRuntimeError(ReqlServerError):
    response_type = ResponseType.RUNTIME_ERROR
    error_type = ErrorType.QUERY_LOGIC


class ReqlQueryLogicError(ReqlRuntimeError):
    error_type = ErrorType.QUERY_LOGIC


class ReqlNonExistenceError(ReqlQueryLogicError):
    error_type = ErrorType.NON_EXISTENCE


class ReqlOpFailedError(ReqlRuntimeError):
    error_type = ErrorType.OP_FAILED


class ReqlResourceLimitError(ReqlRuntimeError):
    error_type = ErrorType.RESOURCE_LIMIT


class ReqlUserError(ReqlRuntimeError):
    """Raised by ``r.error(...)``."""

    error_type = ErrorType.USER


class ReqlEmptyUserError(ReqlUserError):
    """``r.error()`` without a message: inside ``default`` it rethrows the error the
    default handles; anywhere else the client gets it as a logic error."""

    error_type = ErrorType.QUERY_LOGIC

    def __init__(self) -> None:
        super().__init__("Empty ERROR term outside a default block.")


class ReqlInternalError(ReqlRuntimeError):
    error_type = ErrorType.INTERNAL
