"""Protocol errors raised by the ledger and the HTTP layer.

Every failure the authority reports is a `CyclesProtocolError`: the HTTP layer turns it into a spec-shaped
`ErrorResponse` body (`error`, `message`, `request_id`, optional `details`) with the matching status code.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CyclesProtocolError", "invalid"]


class CyclesProtocolError(Exception):
    """A protocol-level failure with its HTTP status and `ErrorCode`.

    Attributes:
        status: HTTP status code, e.g. 409.
        code: Spec `ErrorCode`, e.g. `BUDGET_EXCEEDED`.
        message: Human-readable message.
        details: Optional structured details (e.g. for `UNIT_MISMATCH`).
    """

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details


def invalid(message: str) -> CyclesProtocolError:
    """Return a 400 `INVALID_REQUEST` error with `message`."""
    return CyclesProtocolError(400, "INVALID_REQUEST", message)
