"""Which bundle the app serves, and loading it in the background so the page can show progress.

Order: an explicit ``--bundle`` / ``RECOMMENDER_BUNDLE`` (local folder or Hub repo id, with
``--revision`` / ``RECOMMENDER_BUNDLE_REVISION``), then ``./bundle``, then building ``./bundle``
from the default dataset. Loading (a Hub download, a model download, or a whole build) runs in a
thread while the web page is already up and polls :meth:`Startup.status`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tqdm.std import tqdm

from ..data.bundle import DEFAULT_BUNDLE_DIR, MANIFEST, read_search_config
from ..data.catalog import DEFAULT_DATASET
from ..encoders.query_cache import DEFAULT_QUERY_CACHE_SIZE
from ..engine import Recommender
from ..errors import RecommenderError
from ..search.config import SearchConfig
from .public import public_name, without_paths

logger = logging.getLogger(__name__)

ENV_BUNDLE = "RECOMMENDER_BUNDLE"
ENV_REVISION = "RECOMMENDER_BUNDLE_REVISION"
ENV_TEXT_MODEL = "RECOMMENDER_TEXT_MODEL"
#: Catalog titles the ONNX export of the text model must reproduce before queries move onto it.
ONNX_PROBE_TITLES = 16
#: Catalog thumbnails the ONNX export of the thumbnail encoder must reproduce before uploads move onto it.
ONNX_PROBE_THUMBNAILS = 16
#: Logged, with the backend, once title queries are on their final backend (benchmarks wait for it);
#: thumbnails settle before titles.
TITLES_SETTLED_LOG = "Title queries settled on"
THUMBNAILS_SETTLED_LOG = "Thumbnail queries settled on"


def use_one_thread_per_query() -> None:
    """Serving runs queries side by side on Gradio's workers, each too small to split: one torch/FAISS/BLAS
    thread per query is as fast on a quiet CPU and much faster on a busy one, where threads of
    concurrent queries fight over the cores (docs/performance.md). Called after any first-start
    build, so training still uses every core."""
    import faiss
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    threadpool_limits(limits=1, user_api="blas")


def use_onnx_runtime(recommender: Recommender, titles: bool, thumbnails: bool,
                     previous: Recommender | None = None) -> None:
    """Move queries onto ONNX Runtime where its export reproduces PyTorch on catalog items (seconds to a
    minute: off the request path). ``previous``: the recommender this one replaces; when its thumbnail
    encoder has the same weights, this one takes it over (its session, or the export still running
    for it) instead of exporting again."""
    if previous is not None and recommender.thumbnail_encoder.same_model(previous.thumbnail_encoder):
        recommender.thumbnail_encoder = previous.thumbnail_encoder
    elif thumbnails:
        rows = recommender.catalog.live_rows()[:ONNX_PROBE_THUMBNAILS]
        try:
            probes = [recommender.catalog.image_bytes(int(row)) for row in rows]
        except Exception as error:  # noqa: BLE001 - a catalog thumbnail that cannot be read: keep PyTorch, go on
            logger.warning("Thumbnails stay on PyTorch: no probe thumbnails to check an export on (%s)", error)
            probes = []
        if probes:
            recommender.thumbnail_encoder.use_onnx_runtime(probes)
    logger.info("%s %s", THUMBNAILS_SETTLED_LOG, recommender.thumbnail_encoder.backend)
    if titles:
        recommender.title_encoder.use_onnx_runtime(recommender.catalog.titles[:ONNX_PROBE_TITLES])


class NotReadyError(RecommenderError):
    """The recommender is still loading (or failed to load); the message says which."""


@dataclass(frozen=True)
class BundlePlan:
    """Where the bundle comes from and why that one was chosen (printed at startup, shown in the banner)."""

    source: str
    revision: str | None
    reason: str
    build_from: str | None = None  # a dataset to build ``source`` from first

    def describe(self, public: bool = False) -> str:
        """Source, revision and reason; ``public``: with folder names instead of server paths (for visitors)."""
        source, build_from = (public_name(self.source), public_name(self.build_from)) if public else \
            (self.source, self.build_from)
        at = f"@{self.revision}" if self.revision else ""
        if self.build_from:
            return f"building {source} from {build_from} ({self.reason})"
        return f"{source}{at} ({self.reason})"


def plan_bundle(bundle: str | None = None, revision: str | None = None, environ: Mapping[str, str] | None = None,
                default_dir: Path = DEFAULT_BUNDLE_DIR, dataset: str = DEFAULT_DATASET) -> BundlePlan:
    """Apply the startup order; pure, so tests can check it without loading anything."""
    environ = {} if environ is None else environ
    revision = revision or environ.get(ENV_REVISION) or None
    if bundle:
        return BundlePlan(str(bundle), revision, "--bundle")
    if environ.get(ENV_BUNDLE):
        return BundlePlan(environ[ENV_BUNDLE], revision, f"${ENV_BUNDLE}")
    if (Path(default_dir) / MANIFEST).is_file():
        return BundlePlan(str(default_dir), None, f"found ./{Path(default_dir).as_posix()}")
    return BundlePlan(str(default_dir), None, f"no bundle given and none in ./{Path(default_dir).as_posix()}",
                      build_from=dataset)


class Startup:
    """Holds the recommender once it is loaded; until then, says what is happening.

    A new bundle revision replaces it with :meth:`swap` (see :mod:`.watch`); a request that
    :meth:`pinned` the recommender at its start finishes on that one.
    """

    def __init__(self, plan: BundlePlan, text_model: str | None = None, build_options: dict | None = None,
                 onnx_titles: bool = True, onnx_thumbnails: bool = True,
                 query_cache_size: int = DEFAULT_QUERY_CACHE_SIZE):
        self.plan = plan
        self.text_model = text_model
        #: Query vectors each loaded recommender keeps: **More** and paging encode nothing again.
        self.query_cache_size = query_cache_size
        self.build_options = build_options or {}
        self.onnx_titles = onnx_titles
        self.onnx_thumbnails = onnx_thumbnails
        self._recommender: Recommender | None = None
        self._error: str | None = None
        self._stage = "waiting to start"
        self._started = time.monotonic()
        self._done = threading.Event()
        self._titles_settled = threading.Event()  # set once title queries are on their final backend
        self._pinned = threading.local()  # the recommender each request thread started on
        #: What the bundle watcher last did, for /info (None when nothing watches the bundle).
        self.watch_status: dict | None = None

    @classmethod
    def loaded(cls, recommender: Recommender, description: str = "given in-process") -> Startup:
        """A startup that is already finished, for tests and embedding the app in other code."""
        startup = cls(BundlePlan(description, None, "in-process"))
        startup._recommender = recommender
        startup._done.set()
        startup._titles_settled.set()
        return startup

    def start(self) -> Startup:
        threading.Thread(target=self._run, name="recommender-startup", daemon=True).start()
        return self

    def _run(self) -> None:
        try:
            if self.plan.build_from:
                self._build()
            use_one_thread_per_query()
            self._stage = f"loading bundle {self.plan.source}"
            logger.info("Loading bundle %s", self.plan.describe())
            self._recommender = Recommender.load(self.plan.source, revision=self.plan.revision,
                                                 text_model=self.text_model, query_cache_size=self.query_cache_size)
            logger.info("Ready in %.0f s: %s", time.monotonic() - self._started, self._recommender.info())
        except RecommenderError as error:  # a clear message of ours (a bad bundle, the Hub): no traceback
            self._error = str(error)
            logger.error("Startup failed: %s", error)
        except Exception as error:
            self._error = f"{type(error).__name__}: {error}"
            logger.exception("Startup failed")
        finally:
            self._done.set()
        try:
            if self._recommender is not None:
                # After "ready": queries are answered on PyTorch until the faster path has proven itself.
                use_onnx_runtime(self._recommender, titles=self.onnx_titles, thumbnails=self.onnx_thumbnails)
        finally:
            self._titles_settled.set()
            if self._recommender is not None:
                logger.info("%s %s", TITLES_SETTLED_LOG, self._recommender.title_encoder.backend)

    def _build(self) -> None:
        from train.build import (
            build_bundle,  # the offline pipeline is only imported when a build is needed
        )

        self._stage = f"building a bundle from {self.plan.build_from} (first start; this takes a while)"
        logger.info("No bundle found: building %s from %s", self.plan.source, self.plan.build_from)
        options = {"text_model": self.text_model} if self.text_model else {}
        build_bundle(self.plan.build_from, self.plan.source, **options, **self.build_options)

    def default_search(self) -> SearchConfig:
        """The bundle's search settings, known before loading ends when its manifest can be read cheaply.

        The page's α slider and fusion choice start there, and those are also the defaults
        ``gradio_client`` callers see.
        """
        if self._recommender is not None:
            return self._recommender.search
        if self.plan.build_from:
            return self.build_options.get("search", SearchConfig())
        try:
            return read_search_config(json.loads(self._manifest_path().read_text()))
        except Exception as error:  # noqa: BLE001 - any problem surfaces when the bundle really loads
            logger.warning("Cannot read the search settings of %s yet (%s); the page starts at the defaults.",
                           self.plan.source, " ".join(str(error).split()))  # one line, however the Hub put it
            return SearchConfig()

    def default_alpha(self) -> float:
        """The bundle's hybrid weight (see :meth:`default_search`)."""
        return self.default_search().alpha

    def _manifest_path(self) -> Path:
        if Path(self.plan.source).is_dir():
            return Path(self.plan.source) / MANIFEST
        from huggingface_hub import (
            hf_hub_download,  # one small file, from the cache when offline
        )

        return Path(hf_hub_download(self.plan.source, MANIFEST, revision=self.plan.revision))

    def wait(self, timeout: float | None = None) -> Recommender:
        """Block until loading ends; the recommender, or :class:`NotReadyError` with the reason."""
        self._done.wait(timeout)
        return self.get()

    def get(self) -> Recommender:
        """The recommender this request started on (see :meth:`pinned`), else the one being served now."""
        recommender = getattr(self._pinned, "recommender", None) or self._recommender
        if recommender is not None:
            return recommender
        raise NotReadyError(self.status_line())

    @contextmanager
    def pinned(self) -> Iterator[None]:
        """Within this block, :meth:`get` in this thread returns the recommender served when it began,
        even if :meth:`swap` replaces it meanwhile: one request never mixes two bundle revisions."""
        if getattr(self._pinned, "recommender", None) is not None:  # already inside a pinned request
            yield
            return
        self._pinned.recommender = self._recommender
        try:
            yield
        finally:
            self._pinned.recommender = None

    def swap(self, recommender: Recommender) -> None:
        """Serve ``recommender`` from the next request on: one reference replaced, no request waits."""
        previous, self._recommender = self._recommender, recommender
        logger.info("Now serving bundle revision %s (%d items); was %s", recommender.revision["id"],
                    recommender.catalog.live_count, previous.revision["id"] if previous else "none")

    @property
    def ready(self) -> bool:
        return self._recommender is not None

    @property
    def titles_settled(self) -> bool:
        """Whether title queries run on their final backend (the ONNX export, if any, has ended)."""
        return self._titles_settled.is_set()

    @property
    def failed(self) -> bool:
        return self._error is not None

    def status_line(self) -> str:
        """One human line for visitors: still loading (with the current progress bar), failed, or ready.
        Server paths in it are cut to their last part; the log has them whole."""
        if self._error is not None:
            return without_paths(f"Startup failed: {self._error}")
        if self._recommender is not None:
            return "Ready."
        elapsed = time.monotonic() - self._started
        line = f"Still starting ({elapsed:.0f} s): {self._stage}."
        progress = current_progress()
        return without_paths(f"{line} {progress}" if progress else line)


def current_progress() -> str | None:
    """The newest live tqdm bar in this process (datasets, Hub downloads, training epochs), as text.

    Reads the bars instead of patching tqdm, so every library's progress shows up unchanged.
    """
    with tqdm.get_lock():
        bars = [bar for bar in getattr(tqdm, "_instances", ()) if not getattr(bar, "disable", True)]
    if not bars:
        return None
    info = max(bars, key=lambda bar: bar.start_t).format_dict
    done, total = info.get("n", 0), info.get("total")
    amount = f"{done:,.0f}/{total:,.0f} ({done / total:.0%})" if total else f"{done:,.0f}"
    return f"{info.get('prefix') or 'Working'}: {amount}"
