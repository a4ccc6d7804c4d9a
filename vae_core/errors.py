"""Exceptions the engine raises: ``VAEError`` and its kinds for problems a user can fix, and ``Cancelled``."""


class VAEError(Exception):
    """Base class: the message is meant to be shown to a user as is."""


class ConfigError(VAEError, ValueError):
    """A configuration value is out of range or of the wrong kind."""


class DatasetError(VAEError):
    """A dataset could not be loaded; the message names the file and the problem."""


class CheckpointError(VAEError):
    """A checkpoint could not be read or does not fit; the message names the file."""


class Cancelled(Exception):
    """A long call stopped because its ``cancelled`` callable returned True."""
