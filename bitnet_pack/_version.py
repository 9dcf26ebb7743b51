"""The version, in a module of its own: the package's modules import it from here,
never from the root package (which imports them)."""

__version__ = "0.1.0"
