"""railyard.storage."""
