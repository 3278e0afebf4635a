"""The server process's log: one rotating, private file (size-bounded), never request headers.

Refused and failed requests are one line each (``letta_nb.server.requests``); uvicorn's own
logging is routed here too. Only ``letta-nb server --log-file`` calls ``configure``; an
in-process server logs through its host process's logging.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

from letta_nb.server.storage import private_file

LOG_MAX_BYTES = 1024 * 1024
LOG_BACKUPS = 3
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _PrivateRotatingHandler(logging.handlers.RotatingFileHandler):
    def _open(self):
        private_file(Path(self.baseFilename))
        return super()._open()


def configure(log_file: Path | None) -> None:
    if log_file is not None:
        handler: logging.Handler = _PrivateRotatingHandler(
            log_file, maxBytes=LOG_MAX_BYTES, backupCount=LOG_BACKUPS, encoding="utf-8"
        )
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("letta_nb.server").setLevel(logging.INFO)
    logging.captureWarnings(True)
