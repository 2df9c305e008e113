"""Teacher family: vggish (being written)."""
