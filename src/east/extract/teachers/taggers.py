"""Teacher family: taggers (being written)."""
