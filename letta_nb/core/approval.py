"""Approval state of one pending request: pending → sending → approved | denied | failed.

Buttons, magics and the Python API all go through this, so a second click, a second call or an
auto-approve policy racing a human can never send two answers for one tool call.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from .errors import ApprovalError

PENDING, SENDING, APPROVED, DENIED, FAILED = "pending", "sending", "approved", "denied", "failed"


@dataclass
class ApprovalState:
    run_id: str
    tool_calls: list[dict[str, Any]]
    state: str = PENDING
    reason: str | None = None
    outcome_run_id: str | None = None
    error: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def open(self) -> bool:
        return self.state == PENDING

    def begin(self, approve: bool, reason: str | None = None) -> None:
        """Claim the single answer; raises if one was already given or is being sent."""
        with self._lock:
            if self.state != PENDING:
                raise ApprovalError(
                    f"the approval request of run {self.run_id} was already answered ({self.state})"
                )
            self.state = SENDING
            self._approve = approve
            self.reason = reason

    def succeeded(self, new_run_id: str | None) -> None:
        with self._lock:
            self.state = APPROVED if self._approve else DENIED
            self.outcome_run_id = new_run_id

    def failed(self, message: str, *, retryable: bool = True) -> None:
        """A send that failed before the server took it leaves the request open to retry."""
        with self._lock:
            self.error = message
            self.state = PENDING if retryable else FAILED

    def answers(self, approve: bool, reason: str | None = None) -> list[dict[str, Any]]:
        """The `approvals=[...]` list Letta expects: one entry per pending tool_call_id."""
        out: list[dict[str, Any]] = []
        for call in self.tool_calls:
            item: dict[str, Any] = {
                "type": "approval",
                "tool_call_id": call["tool_call_id"],
                "approve": approve,
            }
            if reason:
                item["reason"] = reason
            out.append(item)
        return out
