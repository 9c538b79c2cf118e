"""Exceptions with messages written for the person who has to act on them."""

from __future__ import annotations


class RecommenderError(Exception):
    """Base class: every error this package raises on purpose."""


class InvalidQueryError(RecommenderError, ValueError):
    """The query itself is unusable (bad image, blank title, unknown id, out-of-range k...)."""


class BundleError(RecommenderError):
    """A bundle is missing files, corrupted, or does not match the models asked for."""


class CatalogError(RecommenderError, ValueError):
    """A dataset cannot become a catalog (missing columns, no usable rows...)."""
