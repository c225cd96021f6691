"""Shipped model files (read with importlib.resources)."""
