"""railyard.sim."""
