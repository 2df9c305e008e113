"""Teacher family: mule (being written)."""
