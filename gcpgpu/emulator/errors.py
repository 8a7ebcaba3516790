"""Google-style API errors, both the HTTP kind and the kind reported inside an operation."""

from __future__ import annotations

# HTTP status -> google.rpc canonical status name, as the "status" field of an error body.
CANONICAL_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    412: "FAILED_PRECONDITION",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

HTTP_REASON_PHRASE = {
    400: "BAD REQUEST",
    403: "FORBIDDEN",
    404: "NOT FOUND",
    409: "CONFLICT",
    412: "PRECONDITION FAILED",
    429: "TOO MANY REQUESTS",
    500: "INTERNAL SERVER ERROR",
    503: "SERVICE UNAVAILABLE",
}

# Operation error codes -> the httpErrorStatusCode GCE reports alongside them.
OPERATION_ERROR_HTTP_STATUS = {
    "ZONE_RESOURCE_POOL_EXHAUSTED": 503,
    "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS": 503,
    "QUOTA_EXCEEDED": 403,
    "RESOURCE_NOT_FOUND": 404,
    "RESOURCE_ALREADY_EXISTS": 409,
    "INTERNAL_ERROR": 500,
}


def stockout_message(project: str, zone: str) -> str:
    return (
        f"The zone 'projects/{project}/zones/{zone}' does not have enough resources available "
        "to fulfill the request.  Try a different zone, or try again later."
    )


class ApiError(Exception):
    """An error answered as the HTTP response itself (4xx/5xx with a Google error body)."""

    def __init__(self, http_status: int, reason: str, message: str):
        super().__init__(message)
        self.http_status = http_status
        self.reason = reason
        self.message = message

    def body(self) -> dict:
        return {
            "error": {
                "code": self.http_status,
                "message": self.message,
                "errors": [{"message": self.message, "domain": "global", "reason": self.reason}],
                "status": CANONICAL_STATUS.get(self.http_status, "UNKNOWN"),
            }
        }


def not_found(resource_path: str) -> ApiError:
    return ApiError(404, "notFound", f"The resource '{resource_path}' was not found")


def already_exists(resource_path: str) -> ApiError:
    return ApiError(409, "alreadyExists", f"The resource '{resource_path}' already exists")


def invalid(message: str) -> ApiError:
    return ApiError(400, "invalid", message)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "badRequest", message)


def fingerprint_mismatch() -> ApiError:
    return ApiError(412, "conditionNotMet", "Supplied fingerprint does not match current fingerprint.")


class OperationError(Exception):
    """A failure that GCE reports inside the DONE operation rather than as the HTTP status."""

    def __init__(self, code: str, message: str, http_status: int | None = None, details: list | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = http_status or OPERATION_ERROR_HTTP_STATUS.get(code, 400)
        self.details = details or []

    def as_operation_fields(self) -> dict:
        error = {"code": self.code, "message": self.message}
        if self.details:
            error["errorDetails"] = self.details
        return {
            "error": {"errors": [error]},
            "httpErrorStatusCode": self.http_status,
            "httpErrorMessage": HTTP_REASON_PHRASE.get(self.http_status, "ERROR"),
        }
