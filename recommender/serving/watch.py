"""Serve a bundle that changes: notice a new revision, load it in the background, swap it in.

A local bundle folder has a new revision when its manifest changes (``train add``, ``remove`` and
``compact`` end by replacing it); a Hub repo when its branch points to a new commit
(``HfApi.model_info(...).sha``, one small request per poll). Each poll compares that with the
revision being served; a new one is loaded in this watcher's thread while the old one keeps
answering, then :meth:`Startup.swap <recommender.serving.startup.Startup.swap>` replaces one
reference: requests already running finish on the old bundle, the next ones get the new one. A
revision that fails to load is logged, reported in ``/info`` and not retried until the bundle
changes again; the old one stays in service.

``python app.py --watch SECONDS`` or ``RECOMMENDER_WATCH_SECONDS`` (for Spaces) turns it on.
While a new revision loads, the process holds both (about twice the memory of one).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ..data.bundle import MANIFEST, is_repo_id
from ..data.live import describe_revision
from ..engine import Recommender
from .public import without_paths
from .startup import Startup, use_onnx_runtime

logger = logging.getLogger(__name__)

ENV_WATCH = "RECOMMENDER_WATCH_SECONDS"

#: Returns the source's current revision key, ``None`` when it cannot tell right now.
Probe = Callable[[], "str | None"]


def local_probe(folder: Path) -> Probe:
    """The digest of a local bundle's manifest (as :func:`describe_revision` gives it); ``None`` while
    there is none (e.g. mid-way through ``train compact``'s folder swap)."""
    path = Path(folder) / MANIFEST

    def probe() -> str | None:
        try:
            return describe_revision(json.loads(path.read_text()))["manifest"]
        except (OSError, ValueError):
            return None

    return probe


def hub_probe(repo_id: str, revision: str | None = None, model_info: Callable | None = None) -> Probe:
    """The commit the repo's ``revision`` (default ``main``) points to now. ``model_info`` replaces
    ``HfApi().model_info`` (tests have no Hub)."""
    if model_info is None:
        from huggingface_hub import HfApi

        model_info = HfApi().model_info

    def probe() -> str | None:
        try:
            return model_info(repo_id, revision=revision or "main").sha
        except Exception as error:  # noqa: BLE001 - offline, rate-limited, ...: keep serving, try again later
            logger.warning("Cannot check %s for a new revision: %s", repo_id, error)
            return None

    return probe


def served_key(recommender: Recommender, source: str) -> str | None:
    """The key a probe of ``source`` gives for the revision ``recommender`` serves."""
    return recommender.revision["commit"] if is_repo_id(source) else recommender.revision["manifest"]


class BundleWatcher:
    """Polls ``startup``'s bundle every ``interval`` seconds and swaps in each new revision."""

    def __init__(self, startup: Startup, interval: float, probe: Probe | None = None,
                 load: Callable[[str], Recommender] | None = None):
        """``probe`` and ``load`` (a revision key -> its recommender) default to the bundle's source: a
        local folder or a Hub repo; tests inject their own."""
        source = startup.plan.source
        self.startup = startup
        self.interval = float(interval)
        self.probe = probe or (hub_probe(source, startup.plan.revision) if is_repo_id(source) else local_probe(source))
        self.load = load or self._load
        self._failed: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        startup.watch_status = {"every_s": self.interval, "checked": None, "swaps": 0, "error": None}

    def start(self) -> BundleWatcher:
        self._thread = threading.Thread(target=self._run, name="bundle-watcher", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        self.startup.wait()  # the first revision comes from startup itself
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception:  # the watcher must outlive any one bad revision
                logger.exception("Bundle watcher check failed")

    def check(self) -> bool:
        """Poll once; load and swap in a new revision if there is one. Whether it swapped."""
        status = self.startup.watch_status
        status["checked"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        current = self.startup.get() if self.startup.ready else None
        key = self.probe()
        if current is None or key is None or key == self._failed or key == served_key(current, self.startup.plan.source):
            return False
        logger.info("New bundle revision %s of %s: loading it in the background", key[:12], self.startup.plan.source)
        started = time.monotonic()
        try:
            recommender = self.load(key)
        except Exception as error:  # reported, and the old revision keeps serving
            self._failed = key
            status["error"] = f"revision {key[:12]} did not load: {without_paths(str(error))}"  # shown to visitors
            logger.exception("Revision %s of %s did not load; still serving %s", key[:12], self.startup.plan.source,
                             current.revision["id"])
            return False
        use_onnx_runtime(recommender, titles=recommender.title_encoder is not current.title_encoder and
                         self.startup.onnx_titles, thumbnails=self.startup.onnx_thumbnails, previous=current)
        self.startup.swap(recommender)
        self._failed, status["error"] = None, None
        status["swaps"] += 1
        status["last_swap_s"] = round(time.monotonic() - started, 2)
        return True

    def _load(self, key: str) -> Recommender:
        plan = self.startup.plan
        current = self.startup.get()
        return Recommender.load(plan.source, revision=key if is_repo_id(plan.source) else None,
                                text_model=self.startup.text_model, title_encoder=current.title_encoder,
                                query_cache_size=self.startup.query_cache_size)
