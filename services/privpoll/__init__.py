"""privpoll: reasonably private polling."""

__version__ = "0.1.0"
