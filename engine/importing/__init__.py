"""Contact import, in parts: reading the file, parsing rows, writing batches."""
