"""Exceptions with one-line messages meant for the person running the code."""


class SSEPTError(Exception):
    """Base class: the message says what went wrong and how to fix it."""


class DataError(SSEPTError):
    """A dataset is missing, corrupt or malformed."""


class ConfigError(SSEPTError, ValueError):
    """A setting is out of range or inconsistent with the data."""


class CheckpointError(SSEPTError):
    """A checkpoint is missing, unreadable, unsafe or does not fit the model."""


class NonFiniteError(SSEPTError):
    """A model produced NaN or infinite numbers (scores or loss): the run has diverged."""
