"""Errors raised for bad input: each says what was wrong and what was tried."""


class MiaTunerError(Exception):
    """Base class of every error this package raises on purpose."""


class DataError(MiaTunerError, ValueError):
    """A member/non-member set is missing, malformed or unusable."""


class ModelError(MiaTunerError, ValueError):
    """A model could not be found, fetched, loaded or used as asked."""


class MethodError(MiaTunerError, ValueError):
    """A detection method is unknown or misconfigured."""
