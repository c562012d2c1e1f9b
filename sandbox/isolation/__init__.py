"""The process boundary: one isolated compile, async mode's stand-in, the pool, the worker and the wire."""
