"""ipywidgets front end: `RunView` shows a run chain live; standard widgets only, no JS."""

from .approval import ApprovalCard
from .pump import InlinePump, ThreadPump, shared_pump
from .run_view import RunView
from .transcript_view import TranscriptView

__all__ = ["ApprovalCard", "InlinePump", "RunView", "ThreadPump", "TranscriptView", "shared_pump"]
