"""railyard.tui."""
