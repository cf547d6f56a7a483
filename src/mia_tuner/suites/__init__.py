"""Suites shipped with the package (YAML files; see mia_tuner.suite.config)."""
