"""Hangar: Sky Storage for compute tasks."""

__version__ = "0.1.0"
