"""The run view: one anywidget model per run chain (`RunView`), its logic in `doc.py`.

`doc.py` (pure: no ipywidgets) turns a chain into the document and the append-only messages the
browser module (`static/run_view.js`) displays; `pump.py` flushes views off the reader threads.
"""

from .pump import InlinePump, ThreadPump, shared_pump
from .run_view import RunView

__all__ = ["InlinePump", "RunView", "ThreadPump", "shared_pump"]
