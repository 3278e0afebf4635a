"""The run engine, split by job; ``Engine`` (engine.py) is its public face."""

from letta_nb.server.engine.engine import Engine, EngineSettings, SendRequest, Started

__all__ = ["Engine", "EngineSettings", "SendRequest", "Started"]
