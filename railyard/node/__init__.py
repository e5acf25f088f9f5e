"""railyard.node."""
