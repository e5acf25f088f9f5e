"""railyard: a replicated, durable stream store built on Raft."""

__version__ = "0.1.0"
