"""Query latency through ``gradio_client`` against a live ``app.py``, next to a trivial echo app.

The measuring itself belongs to ``benchmarks/latency_gradio.py`` (the app's own benchmark); this
adapter runs it against the app that the serving section starts and turns its numbers into rows.
"""

from __future__ import annotations

import logging

from .common import Results, Row

logger = logging.getLogger(__name__)


def probe(results: Results, queries: int):
    """A callable ``(url) -> dict`` for :func:`benchmarks.serving.app_startup`, or ``None`` if unavailable."""
    try:
        from . import latency_gradio
    except ImportError as error:
        results.add(Row("latency (gradio_client)", "not measured", f"benchmarks/latency_gradio.py unavailable ({error})"))
        return None
    measure = getattr(latency_gradio, "measure", None)
    if measure is None:
        results.add(Row("latency (gradio_client)", "not measured", "benchmarks/latency_gradio.py has no measure(url)"))
        return None

    def run(url: str) -> dict:
        measured = measure(url, queries=queries)
        for case, stats in measured.items():
            if isinstance(stats, dict) and "p50_ms" in stats:
                results.add(Row("latency (gradio_client)", f"{case} p50 / p95",
                                f"{stats['p50_ms']:.1f} / {stats.get('p95_ms', float('nan')):.1f} ms", None, "",
                                f"{stats.get('n', '?')} calls"))
        results.raw["gradio_latency"] = measured
        return measured

    return run
