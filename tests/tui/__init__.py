"""Tests of the `railyard top` dashboard."""
