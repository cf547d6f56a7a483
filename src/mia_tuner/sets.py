"""Named benchmark sets, every family registered: the registry and WikiMIA(-24) / smoke live in
``mia_tuner.data.registry`` (its docstring lists the names), the controlled sets register
themselves in ``mia_tuner.training.controlled``. The CLI's ``--data``, suites and the bench
scripts read names through ``resolve`` here, so that every family is known."""

from __future__ import annotations

from .data.registry import (DEBIASED, HUB, LENGTHS, SMOKE, NamedSet, SplitRecipe, data_root,  # noqa: F401
                            debiased_wikimia24, is_named, resolve, smoke_set, spellings, split_recipe,
                            wikimia_config)
from .training.controlled import CONTROLLED_SPLIT, controlled_set  # noqa: F401  (registers controlled:)
