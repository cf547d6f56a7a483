"""Errors raised for bad input: each says what was wrong and what was tried."""


class MiaTunerError(Exception):
    """Base class of every error this package raises on purpose.

    The command line prints the message as one line and exits with ``exit_code``.
    """

    exit_code = 2


class DataError(MiaTunerError, ValueError):
    """A member/non-member set is missing, malformed or unusable."""


class ModelError(MiaTunerError, ValueError):
    """A model could not be found, fetched, loaded or used as asked."""


class MethodError(MiaTunerError, ValueError):
    """A detection method is unknown or misconfigured."""


class ArtefactError(MiaTunerError, ValueError):
    """A saved artefact (detector, checkpoint, cache) is missing, incomplete or corrupted."""


class DetectorError(ArtefactError):
    """A saved MIA-Tuner detector cannot be trusted or read (unverifiable, damaged, unreadable)."""


class RunDirError(MiaTunerError):
    """A run directory is in use by another run, or holds the results of another configuration."""


class CacheError(MiaTunerError):
    """The score cache cannot be used (locked by another process, or not a cache file)."""


class Interrupted(MiaTunerError):
    """The user stopped a run (Ctrl-C); the message says what was kept for a re-run."""

    exit_code = 130


class ConfigError(MiaTunerError, ValueError):
    """A configuration (suite file, settings) names an unknown key or an impossible value."""
