"""Content-based video recommendations from thumbnails and titles.

>>> from recommender import Recommender
>>> recommender = Recommender.load("bundle")            # or a Hub repo id
>>> recommender.recommend(title="paper plane", mode="text", k=5)
"""

from .engine import MODES, Recommendation, Recommendations, Recommender
from .errors import BundleError, CatalogError, InvalidQueryError, RecommenderError

__all__ = [
    "MODES",
    "BundleError",
    "CatalogError",
    "InvalidQueryError",
    "Recommendation",
    "Recommendations",
    "Recommender",
    "RecommenderError",
]
