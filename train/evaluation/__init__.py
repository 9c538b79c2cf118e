"""Quality evaluation of a bundle: small evaluators with typed results, one report writer.

Relevance comes from a label column of the catalog (e.g. ``channel``): a recommendation is
relevant when it shares the query's label. Only live items are asked and found (a live bundle's
removed rows are neither). :func:`evaluate` (``python -m train evaluate``) runs

- ``alpha_sweep``: hybrid quality for text weights 0..1 (weighted and RRF fusion); the best
  weighted alpha becomes the bundle's default, with a k-fold estimate of how much is tuning;
- ``rankings``: every catalog item asked as a query (never recommending itself), precision@k and
  nDCG@k per mode next to a random ranking and the best possible one; bulk rankings are checked
  against ``Recommender.recommend`` before anything is reported;
- ``reupload``: catalog thumbnails cropped, brightened or darkened, saved as low-quality JPEG and
  uploaded again; recall@1 of the original;
- ``never_seen``: part of the catalog held out, a bundle built on the rest the same way, the
  held-out videos uploaded (thumbnail, title, both) against it;
- ``baseline`` (optional): a bundle built with ``--encoder baseline`` scored as the original
  design served it, and through this engine;
- the recommendation controls (``controls=True``): ``diversity`` (precision, intra-list similarity
  and distinct labels for MMR weights 0..1), ``dedupe`` (the feature-cosine threshold at which
  re-uploads and the catalog's known duplicates collapse and distinct same-label videos do not),
  ``sessions`` (several items asked at once, centroid vs rank fusion) and ``title_search`` (image
  mode asked with a title alone, next to text mode);

then writes ``report.md`` with plots (:mod:`.report`, :mod:`.plots`) and ``metrics.json`` into
``<bundle>/evaluation/``, and the tuned alpha and a summary into the manifest (:mod:`.manifest`).

Adding an evaluator: a module with a frozen dataclass evaluator (settings as fields, a ``name``,
``__call__(context)``) returning a frozen dataclass derived from :class:`EvaluationResult` (its
``primary_metric`` and ``primary`` value); a field for it in :class:`EvaluationReport`; a line in
:func:`evaluate`; its section in :mod:`.report`. The report's check table lists every result's
primary metric on its own.
"""

from .base import EvaluationContext, EvaluationError, EvaluationResult, Evaluator
from .results import EvaluationReport
from .run import evaluate

__all__ = ["EvaluationContext", "EvaluationError", "EvaluationReport", "EvaluationResult", "Evaluator", "evaluate"]
