"""The library version, in a module of its own so any module can import it without an upward import."""

__version__ = "0.1.0"
