"""railyard.client."""
