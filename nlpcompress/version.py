"""The package version (one place: pyproject.toml keeps the same)."""

__version__ = "0.1.0"
