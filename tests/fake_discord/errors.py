"""Discord-shaped REST errors: status, JSON error code, message and nested form errors."""

from __future__ import annotations

from typing import Any


class RestError(Exception):
    """An error the fake answers with `{"message", "code", "errors"?}` and an HTTP status."""

    def __init__(self, status: int, code: int, message: str, errors: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors

    def body(self) -> dict[str, Any]:
        """The JSON body Discord would send."""
        data: dict[str, Any] = {"message": self.message, "code": self.code}
        if self.errors is not None:
            data["errors"] = self.errors
        return data


def form_error(path: list[str | int], code: str, message: str) -> RestError:
    """400 Invalid Form Body (50035) with the error nested under `path` like Discord does."""
    errors: dict[str, Any] = {"_errors": [{"code": code, "message": message}]}
    for key in reversed(path):
        errors = {str(key): errors}
    return RestError(400, 50035, "Invalid Form Body", errors)


def unknown(kind: str, code: int) -> RestError:
    """404 `Unknown <kind>` with its JSON code (10003 channel, 10008 message, 10015 webhook, ...)."""
    return RestError(404, code, f"Unknown {kind}")


UNKNOWN_CHANNEL = 10003
UNKNOWN_GUILD = 10004
UNKNOWN_MEMBER = 10007
UNKNOWN_MESSAGE = 10008
UNKNOWN_USER = 10013
UNKNOWN_WEBHOOK = 10015
UNKNOWN_APPLICATION_COMMAND = 10063
UNKNOWN_INTERACTION = 10062
MISSING_ACCESS = 50001
