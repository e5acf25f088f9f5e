"""Helpers shared by the test suites that run real node processes."""
