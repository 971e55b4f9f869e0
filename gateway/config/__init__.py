"""The configuration data model, its YAML loader and the rule language.

This package imports nothing else from Sluice: everything above depends on it.
"""
