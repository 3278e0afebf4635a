"""Brains: the deterministic stand-ins for an LLM, selected by model handle."""
