"""Data: readers for raw sources, filters, and the pair shards that training streams."""
