"""The embedded Letta-API-compatible server (background runs, durable frame log, approvals)."""

from letta_nb.server.app import create_app
from letta_nb.server.config import ServerConfig
from letta_nb.server.inprocess import EmbeddedServer, start_in_process

__all__ = ["EmbeddedServer", "ServerConfig", "create_app", "start_in_process"]
