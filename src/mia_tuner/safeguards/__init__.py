"""Safeguards: defences a model publisher trains against membership inference, and their cost.

``api`` trains one on the defender's part of a split and returns the defended model; the
suite runner measures every attack before and after it (``mia_tuner.suite.defend``, the
`defend` command: a one-cell suite whose column is the safeguard); the defence is
an artefact (``artefact``: ``save_defence`` / ``apply_defence``); ``utility`` measures what it
costs. The method and the threat model: docs/safeguards.md.
"""

from mia_tuner.safeguards.artefact import apply_defence, read_defence_info
from mia_tuner.safeguards.config import DefenceConfig
from mia_tuner.safeguards.defended import DefendedModel, remove_defence

__all__ = ["DefenceConfig", "DefendedModel", "apply_defence", "read_defence_info", "remove_defence"]
