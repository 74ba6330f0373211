"""Errors a user can fix: the command line prints their message on one line, no traceback.

They subclass the matching built-in too, so library callers can catch what they expect.
"""

from __future__ import annotations


class EcgxError(Exception):
    """Base class: the message names the file, key or value at fault."""


class ConfigValueError(EcgxError, ValueError):
    """A config value that cannot work (names the key)."""


class MissingPathError(EcgxError, FileNotFoundError):
    """A file or folder the config points at is absent (names the path and key)."""


class TrackingError(EcgxError, ConnectionError):
    """The MLflow tracking store cannot be reached or written."""


class UnwritablePathError(EcgxError, PermissionError):
    """A folder a run writes to (cache, logs, outputs) cannot be written (names the path)."""
