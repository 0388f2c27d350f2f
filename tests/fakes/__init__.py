"""In-memory test doubles; each name starts with ``Fake``."""
