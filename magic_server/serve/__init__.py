"""Serving edits: the ZeroMQ server, its job queue and workers, keys and time estimates."""
