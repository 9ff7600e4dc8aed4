"""Label maps for layout edits: reading them, and making them from a photo."""
