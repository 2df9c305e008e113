"""Teacher family: passt (being written)."""
