"""Content-based video recommendations from thumbnails and titles.

>>> from recommender import Recommender
>>> recommender = Recommender.load("bundle")            # or a Hub repo id
>>> recommender.recommend(title="paper plane", mode="text", k=5)
"""

from .engine import MODES, Recommender
from .errors import BundleError, CatalogError, InvalidQueryError, RecommenderError
from .results import Recommendation, Recommendations
from .search.config import SearchConfig

__all__ = [
    "MODES",
    "BundleError",
    "CatalogError",
    "InvalidQueryError",
    "Recommendation",
    "Recommendations",
    "Recommender",
    "RecommenderError",
    "SearchConfig",
]
