"""Errors that carry a message meant for the user (no traceback from deep inside torch)."""


class AmanetError(Exception):
    """Base class: the CLI prints ``error: <message>`` and exits non-zero for these."""


class InputError(AmanetError, ValueError):
    """An image or array that cannot be used as model input."""
