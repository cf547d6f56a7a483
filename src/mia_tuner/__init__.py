"""mia-tuner: detect whether a text was in a large language model's pre-training data.

The package is layered the way the work flows:
configuration -> data -> models -> detection methods (registered by name) -> scoring engine
(with an on-disk score cache) -> metrics -> reports, with the CLI on top.
"""

__version__ = "0.1.0"
