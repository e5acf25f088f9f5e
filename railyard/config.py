"""Cluster TOML -> validated, typed config."""
