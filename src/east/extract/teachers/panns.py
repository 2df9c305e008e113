"""Teacher family: panns (being written)."""
