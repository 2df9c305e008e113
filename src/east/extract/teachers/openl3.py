"""Teacher family: openl3 (being written)."""
