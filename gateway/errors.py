"""Errors a client may see, each with its SQLSTATE (wire) and HTTP status.

Front ends translate these and nothing else: any other exception is an
internal fault, reported with a request id only, never with its text.
"""

from __future__ import annotations


class GatewayError(Exception):
    """An error whose message is safe to show to the client."""

    sqlstate = "XX000"
    http_status = 500
    title = "Internal error"
    type_slug = "internal"

    def __init__(self, message: str, *, rule: str | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.rule = rule
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class SyntaxProblem(GatewayError):
    sqlstate = "42601"
    http_status = 400
    title = "SQL syntax error"
    type_slug = "syntax-error"


class Refused(GatewayError):
    """The policy does not allow this statement; `rule` names the rule that refused it."""

    sqlstate = "42501"
    http_status = 403
    title = "Refused by policy"
    type_slug = "refused"

    def __init__(self, message: str, *, rule: str, hint: str | None = None):
        super().__init__(message, rule=rule, hint=hint)


class UnknownTable(GatewayError):
    sqlstate = "42P01"
    http_status = 400
    title = "Unknown table"
    type_slug = "unknown-table"


class UnknownColumn(GatewayError):
    sqlstate = "42703"
    http_status = 400
    title = "Unknown column"
    type_slug = "unknown-column"


class UnknownTemplate(GatewayError):
    sqlstate = "42883"
    http_status = 404
    title = "Unknown template"
    type_slug = "unknown-template"


class UnknownRule(GatewayError):
    sqlstate = "42704"  # undefined_object
    http_status = 404
    title = "Unknown rule"
    type_slug = "unknown-rule"


class BadParameter(GatewayError):
    sqlstate = "22023"
    http_status = 400
    title = "Invalid parameter"
    type_slug = "bad-parameter"


class InvalidDatetimeFormat(GatewayError):
    """A date or time literal that does not match its format (to_date('x', 'YYYY'))."""

    sqlstate = "22007"
    http_status = 400
    title = "Invalid date or time"
    type_slug = "invalid-datetime"


class NotAuthenticated(GatewayError):
    sqlstate = "28000"
    http_status = 401
    title = "Not authenticated"
    type_slug = "not-authenticated"


class UnknownCleanRoom(GatewayError):
    sqlstate = "3D000"
    http_status = 404
    title = "Unknown clean room"
    type_slug = "unknown-cleanroom"


class QueryTimeout(GatewayError):
    sqlstate = "57014"
    http_status = 422
    title = "Query timed out"
    type_slug = "timeout"


class QueryCancelled(GatewayError):
    sqlstate = "57014"
    http_status = 409
    title = "Query cancelled"
    type_slug = "cancelled"


class ExecutionFailed(GatewayError):
    """The engine failed on an allowed query. Its text is never shown: a cast
    that fails on one record would reveal that record. The operator finds the
    engine's message in the log under the request id."""

    sqlstate = "22000"
    http_status = 422
    title = "Query could not be executed"
    type_slug = "execution-failed"

    def __init__(self, request_id: str):
        super().__init__(
            f"the query could not be executed (request id {request_id})",
            rule="engine.failure",
            hint="the operator can look up the request id in the gateway log",
        )
        self.request_id = request_id


class ResultTooLarge(GatewayError):
    sqlstate = "54000"
    http_status = 422
    title = "Result too large"
    type_slug = "result-too-large"


class BudgetExhausted(GatewayError):
    """The analyst's privacy budget cannot pay for this query. Nothing was run
    and nothing was charged."""

    sqlstate = "53400"  # configuration_limit_exceeded: a limit set by the operator
    http_status = 429
    title = "Privacy budget exhausted"
    type_slug = "budget-exhausted"


class QuotaExceeded(GatewayError):
    """An analyst (or its collaborator) is at a quota: statements running at once,
    statements per minute or engine seconds per hour. Nothing was run and nothing
    was charged; `retry_after` (whole seconds, at least 1) says when to try again,
    sent as HTTP Retry-After and in the hint."""

    sqlstate = "53400"  # configuration_limit_exceeded: a limit set by the policy or the operator
    http_status = 429
    title = "Quota exceeded"
    type_slug = "quota-exceeded"

    def __init__(self, message: str, *, rule: str, retry_after: int, hint: str | None = None):
        super().__init__(message, rule=rule, hint=hint or f"retry in {retry_after} s")
        self.retry_after = retry_after


class PolicyInvalid(Exception):
    """A policy or config file failed validation; `problems` lists every finding
    as `file:line:col: key.path: message`."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems
