"""The package version, in one place: pyproject.toml reads it (setuptools' dynamic version), acdistill exports it,
and provenance records it without importing the package it belongs to."""

__version__ = "0.1.0"
