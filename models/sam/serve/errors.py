"""`ApiError`: a request the server refuses, with its HTTP status and the field at fault.

Every refusal (oversized upload, not an image, unknown id, malformed prompt)
raises one of these; `app` turns it into ``{"error": ..., "field": ...}`` with
the status. Anything else escaping a route is a bug in the server: it is
answered with a 500 JSON body and logged, and the server keeps running.
"""

from __future__ import annotations

from typing import Optional

__all__ = ["ApiError"]


class ApiError(Exception):
    def __init__(self, status: int, message: str, field: Optional[str] = None):
        super().__init__(message)
        self.status = int(status)
        self.message = message
        self.field = field

    def body(self) -> dict:
        return {"error": self.message, "field": self.field, "status": self.status}
