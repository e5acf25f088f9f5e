"""railyard.streams."""
