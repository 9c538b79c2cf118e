"""Quality report of a bundle: ranking metrics per mode, re-upload robustness, the hybrid weight sweep.

Relevance comes from a label column of the catalog (e.g. ``channel``): a recommendation is
relevant when it shares the query's label; every catalog item is asked as a query and never
recommends itself. For each mode (image, text, hybrid) the report gives precision@k and nDCG@k
next to a random ranking and the best possible one (the ceiling), then:

- **re-upload robustness**: catalog thumbnails re-encoded as a low-quality JPEG, cropped by a
  few percent and brightened or darkened, uploaded as image queries; recall@1 of the original;
- **alpha sweep**: hybrid quality for text weights 0..1 (weighted and RRF fusion), plotted; the
  best weighted alpha becomes the bundle's default (``manifest["search"]["alpha"]``), and a
  k-fold estimate over queries says how much of that is tuned on the same data;
- optionally a **baseline bundle** (``--encoder baseline``), scored the way the original design
  served it: IndexFlatL2 over raw encoder codes, hybrid = the set union of the image and text
  top-k lists; and, to separate encoder from fusion, through this engine as well.

All rankings come from :mod:`recommender.ranking` (the engine's semantics in bulk) and are
checked against ``Recommender.recommend`` on a sample of queries before anything is reported.
Output: ``<bundle>/evaluation/report.md``, ``metrics.json`` and PNG plots; a short summary goes
into the manifest for the Hub model card.
"""

from __future__ import annotations

import io
import json
import logging
import subprocess
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import faiss
import numpy as np
import torch
from PIL import Image, ImageEnhance

from recommender.data.bundle import read_manifest, read_search_config, write_manifest
from recommender.engine import Recommender
from recommender.errors import RecommenderError
from recommender.search.ranking import (
    Candidates,
    fuse_candidates,
    hybrid_candidates,
    search_excluding,
)
from train.evaluation.metrics import (
    encode_labels,
    mean,
    ranking_report,
    recall_at_k,
    reference_report,
)

logger = logging.getLogger(__name__)

REPORT_DIR = "evaluation"
DEFAULT_KS = (5, 10)
ALPHAS = tuple(round(float(a), 2) for a in np.linspace(0.0, 1.0, 21))
FUSIONS = ("weighted", "rrf")
MODES = ("image", "text", "hybrid")


class EvaluationError(RecommenderError):
    """The evaluation cannot run (missing label, mismatched baseline) or its fast path drifted from the engine."""


# --------------------------------------------------------------------------------------------
# Rankings of every catalog item as a query
# --------------------------------------------------------------------------------------------

def item_candidates(recommender: Recommender, rows: np.ndarray, k: int) -> Candidates:
    return hybrid_candidates(recommender.image_index, recommender.text_index, recommender.image_vectors,
                             recommender.text_vectors, recommender.image_vectors[rows], recommender.text_vectors[rows],
                             recommender.search.candidate_depth(k, len(recommender)), exclude_rows=rows)


def item_rankings(recommender: Recommender, rows: np.ndarray, k: int, alpha: float,
                  fusion: str = "weighted") -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Top ``k`` (rows, scores) per mode for catalog rows asked as queries, as ``recommend(item_id=...)`` ranks."""
    return {
        "image": search_excluding(recommender.image_index, recommender.image_vectors[rows], k, rows),
        "text": search_excluding(recommender.text_index, recommender.text_vectors[rows], k, rows),
        "hybrid": fuse_candidates(item_candidates(recommender, rows, k), alpha, k, fusion, recommender.search.rrf_k),
    }


def _same_ranking(engine_rows: list[int], engine_scores: list[float], rows: np.ndarray, scores: np.ndarray,
                  tolerance: float = 1e-5) -> str:
    """``identical``, ``tie`` (same score sequence, tied items in another order) or ``different``."""
    rows, scores = rows[rows >= 0], scores[rows >= 0]
    if list(rows) == list(engine_rows):
        return "identical"
    if len(rows) == len(engine_rows) and np.allclose(scores, engine_scores, atol=tolerance, rtol=0):
        return "tie"
    return "different"


def verify_against_engine(recommender: Recommender, rows: np.ndarray, k: int, alpha: float,
                          fusions: tuple[str, ...] = FUSIONS) -> dict:
    """Ask ``recommend(item_id=...)`` for ``rows`` in every mode and compare with the bulk rankings.

    Raises :class:`EvaluationError` when a ranking differs beyond ties: the report must measure
    what the engine serves.
    """
    outcome = {"queries": int(len(rows)), "identical": 0, "tie": 0, "different": 0}
    checks = [("image", "weighted"), ("text", "weighted")] + [("hybrid", fusion) for fusion in fusions]
    for mode, fusion in checks:
        bulk = item_rankings(recommender, rows, k, alpha, fusion)[mode]
        for position, row in enumerate(rows):
            served = recommender.recommend(item_id=recommender.catalog.item_ids[row], mode=mode, k=k, alpha=alpha,
                                           fusion=fusion)
            verdict = _same_ranking(served.rows.tolist(), [r.score for r in served], bulk[0][position],
                                    bulk[1][position])
            outcome[verdict] += 1
            if verdict == "different":
                raise EvaluationError(
                    f"Bulk ranking drifted from Recommender.recommend for item {recommender.catalog.item_ids[row]!r} "
                    f"({mode}, {fusion}): engine {served.rows.tolist()}, bulk {bulk[0][position].tolist()}."
                )
    return outcome


# --------------------------------------------------------------------------------------------
# Re-upload robustness
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Reupload:
    """How a catalog thumbnail is altered before being uploaded again."""

    crop: float = 0.04  # share of width and height removed, split at random between opposite sides
    brightness: float = 1.0
    jpeg_quality: int | None = None  # None: saved losslessly (PNG)
    scale: float = 1.0

    def apply(self, data: bytes, rng: np.random.Generator) -> bytes:
        image = Image.open(io.BytesIO(data)).convert("RGB")
        width, height = image.size
        if self.crop > 0:
            cut_w, cut_h = int(round(width * self.crop)), int(round(height * self.crop))
            left, top = int(rng.integers(0, cut_w + 1)), int(rng.integers(0, cut_h + 1))
            image = image.crop((left, top, width - (cut_w - left), height - (cut_h - top)))
        if self.brightness != 1.0:
            image = ImageEnhance.Brightness(image).enhance(self.brightness)
        if self.scale != 1.0:
            image = image.resize((max(1, int(image.width * self.scale)), max(1, int(image.height * self.scale))),
                                 Image.Resampling.BICUBIC)
        buffer = io.BytesIO()
        if self.jpeg_quality is None:
            image.save(buffer, "PNG", compress_level=1)
        else:
            image.save(buffer, "JPEG", quality=self.jpeg_quality)
        return buffer.getvalue()


#: Catalog thumbnails whose image vectors are this close are the same picture (re-encoded at most).
DUPLICATE_COSINE = 0.999
#: The headline: every query is cropped, brightened or darkened, and saved as a low-quality JPEG.
REUPLOAD_HEADLINE = {
    "crop 4% + brighten x1.2 + JPEG q30": Reupload(crop=0.04, brightness=1.2, jpeg_quality=30),
    "crop 4% + darken x0.8 + JPEG q30": Reupload(crop=0.04, brightness=0.8, jpeg_quality=30),
}
#: Each alteration alone, to see which one hurts.
REUPLOAD_SINGLE = {
    "JPEG q30": Reupload(crop=0.0, jpeg_quality=30),
    "crop 4%": Reupload(crop=0.04),
    "brighten x1.2": Reupload(crop=0.0, brightness=1.2),
    "darken x0.8": Reupload(crop=0.0, brightness=0.8),
    "half size": Reupload(crop=0.0, scale=0.5),
}


def reupload_queries(recommender: Recommender, rows: np.ndarray, seed: int) -> dict[str, list[bytes]]:
    """The altered thumbnails of ``rows`` for every variant (same crops for a given seed)."""
    queries = {}
    for name, variant in {**REUPLOAD_HEADLINE, **REUPLOAD_SINGLE}.items():
        rng = np.random.default_rng(seed)
        queries[name] = [variant.apply(recommender.catalog.image_bytes(int(row)), rng) for row in rows]
    return queries


def reupload_recall(recommender: Recommender, rows: np.ndarray, queries: dict[str, list[bytes]],
                    verify: int = 10) -> dict[str, dict[str, float]]:
    """Image-mode recall@1 / @5 of the original for each variant, as ``recommend(image=...)`` ranks."""
    results = {}
    for name, images in queries.items():
        vectors = recommender.encode_images(images)
        ranked, scores = search_excluding(recommender.image_index, vectors, 5)
        for position in range(min(verify, len(images))):
            served = recommender.recommend(image=images[position], mode="image", k=5)
            verdict = _same_ranking(served.rows.tolist(), [r.score for r in served], ranked[position],
                                    scores[position], tolerance=1e-4)
            if verdict == "different":
                raise EvaluationError(f"Bulk image search drifted from Recommender.recommend ({name}, query {position}).")
        results[name] = {"recall@1": recall_at_k(ranked, rows, 1), "recall@5": recall_at_k(ranked, rows, 5),
                         "misses": int((ranked[:, 0] != rows).sum()),
                         "misses_on_duplicates": duplicate_misses(thumbnail_features(recommender), ranked[:, 0], rows)}
    headline = [results[name]["recall@1"] for name in REUPLOAD_HEADLINE]
    results["re-upload (all headline variants)"] = {
        "recall@1": float(np.mean(headline)),
        "recall@5": float(np.mean([results[name]["recall@5"] for name in REUPLOAD_HEADLINE])),
        "misses": sum(results[name]["misses"] for name in REUPLOAD_HEADLINE),
        "misses_on_duplicates": sum(results[name]["misses_on_duplicates"] for name in REUPLOAD_HEADLINE),
    }
    return results


def thumbnail_features(recommender: Recommender) -> np.ndarray:
    """The catalog's autoencoder vectors: what the picture looks like, without the title head's prediction."""
    head = recommender.title_head
    return recommender.image_vectors if head is None else head.features_of(recommender.image_vectors)


def duplicate_misses(features: np.ndarray, first: np.ndarray, originals: np.ndarray) -> int:
    """Rank-1 misses that returned another catalog item with the same thumbnail (catalogs hold re-uploads too).

    Same thumbnail = autoencoder vectors at cosine >= :data:`DUPLICATE_COSINE`; no image search can
    tell such items apart, so these misses are reported next to recall@1 rather than hidden in it.
    """
    missed = (first != originals) & (first >= 0)
    cosine = np.einsum("ij,ij->i", features[first[missed]], features[originals[missed]])
    return int((cosine >= DUPLICATE_COSINE).sum())


# --------------------------------------------------------------------------------------------
# Alpha sweep
# --------------------------------------------------------------------------------------------

def alpha_sweep(recommender: Recommender, rows: np.ndarray, labels: np.ndarray, ks: tuple[int, ...],
                alphas: tuple[float, ...] = ALPHAS, fusions: tuple[str, ...] = FUSIONS
                ) -> dict[str, dict[float, dict[str, np.ndarray]]]:
    """Per fusion and alpha, per-query metrics of the hybrid ranking (candidates computed once per k)."""
    sweep: dict[str, dict[float, dict[str, np.ndarray]]] = {fusion: {} for fusion in fusions}
    per_k_candidates = {k: item_candidates(recommender, rows, k) for k in ks}
    for fusion in fusions:
        for alpha in alphas:
            merged: dict[str, np.ndarray] = {}
            for k, candidates in per_k_candidates.items():
                ranked, _ = fuse_candidates(candidates, alpha, k, fusion, recommender.search.rrf_k)
                metrics = ranking_report(ranked, labels, rows, (k,))
                merged.update(metrics)
            sweep[fusion][alpha] = merged
    return sweep


def choose_alpha(per_alpha: dict[float, dict[str, np.ndarray]], metric: str, tie_metric: str,
                 queries: np.ndarray | None = None) -> float:
    """Alpha with the best mean ``metric`` (then ``tie_metric``, then closest to 0.5) over ``queries``."""
    def score(alpha: float) -> tuple[float, float, float]:
        values = per_alpha[alpha]
        pick = slice(None) if queries is None else queries
        return (round(float(np.mean(values[metric][pick])), 9), round(float(np.mean(values[tie_metric][pick])), 9),
                -abs(alpha - 0.5))

    return max(per_alpha, key=score)


def cross_validated(per_alpha: dict[float, dict[str, np.ndarray]], metric: str, tie_metric: str, folds: int,
                    seed: int) -> dict:
    """Choose alpha on k-1 folds of the queries, measure ``metric`` on the held-out fold."""
    count = len(next(iter(per_alpha.values()))[metric])
    assignment = np.random.default_rng(seed).permutation(count) % folds
    held_out, chosen = np.empty(count), []
    for fold in range(folds):
        train, test = np.flatnonzero(assignment != fold), np.flatnonzero(assignment == fold)
        alpha = choose_alpha(per_alpha, metric, tie_metric, train)
        chosen.append(alpha)
        held_out[test] = per_alpha[alpha][metric][test]
    return {"folds": folds, metric: float(held_out.mean()), "alphas": chosen}


# --------------------------------------------------------------------------------------------
# The original design, as a baseline
# --------------------------------------------------------------------------------------------

@torch.inference_mode()
def raw_codes(recommender: Recommender, images: list[bytes], batch_size: int = 32) -> np.ndarray:
    """The encoder's output before normalisation: what the original design indexed."""
    encoder = recommender.thumbnail_encoder
    chunks = []
    for start in range(0, len(images), batch_size):
        batch = np.stack([encoder.prepare(image) for image in images[start:start + batch_size]])
        tensor = torch.from_numpy(batch).contiguous(memory_format=torch.channels_last)
        chunks.append(encoder.model.embed(tensor).float().numpy())
    return np.ascontiguousarray(np.concatenate(chunks), dtype=np.float32)


def union_of_top_k(image_rows: np.ndarray, text_rows: np.ndarray, k: int) -> np.ndarray:
    """The original hybrid: ``list(set(image_top_k) | set(text_top_k))`` cut to ``k`` (a set has no ranking)."""
    out = np.full((len(image_rows), k), -1, dtype=np.int64)
    for position, (image, text) in enumerate(zip(image_rows.tolist(), text_rows.tolist())):
        union = list({row for row in image[:k] if row >= 0} | {row for row in text[:k] if row >= 0})[:k]
        out[position, :len(union)] = union
    return out


RAW_CODES_CACHE = "baseline_raw_codes.npy"


def catalog_raw_codes(baseline: Recommender, cache: Path | None = None) -> np.ndarray:
    """Raw codes of every catalog thumbnail; cached in ``cache`` (the baseline encoder is slow on a CPU).

    The cache is used only while it matches the catalog size and the stored vectors' directions.
    """
    if cache is not None and cache.is_file():
        codes = np.load(cache, allow_pickle=False)
        if codes.shape == baseline.image_vectors.shape:
            norms = np.linalg.norm(codes, axis=1, keepdims=True)
            directions = np.divide(codes, norms, out=np.zeros_like(codes), where=norms > 0)
            if np.allclose(directions, baseline.image_vectors, atol=1e-3):
                return np.ascontiguousarray(codes, dtype=np.float32)
        logger.warning("Ignoring %s: it does not match this bundle's image vectors.", cache)
    codes = raw_codes(baseline, list(baseline.catalog.iter_image_bytes()))
    if cache is not None:
        try:
            np.save(cache, codes, allow_pickle=False)
        except OSError as error:
            logger.warning("Could not cache raw codes in %s: %s", cache, error)
    return codes


def evaluate_original_design(baseline: Recommender, rows: np.ndarray, labels: np.ndarray, ks: tuple[int, ...],
                             reupload: dict[str, list[bytes]], reupload_rows: np.ndarray,
                             cache: Path | None = None) -> dict:
    """The baseline bundle served as the original design did: IndexFlatL2, raw codes, union hybrid."""
    started = time.perf_counter()
    codes = catalog_raw_codes(baseline, cache)
    image_index = faiss.IndexFlatL2(codes.shape[1])
    image_index.add(codes)
    text_index = faiss.IndexFlatL2(baseline.text_vectors.shape[1])
    text_index.add(np.ascontiguousarray(baseline.text_vectors))
    top = max(ks)
    image_rows, _ = search_excluding(image_index, codes[rows], top, rows)
    text_rows, _ = search_excluding(text_index, baseline.text_vectors[rows], top, rows)
    modes = {"image": ranking_report(image_rows, labels, rows, ks),
             "text": ranking_report(text_rows, labels, rows, ks)}
    hybrid: dict[str, np.ndarray] = {}
    for k in ks:
        hybrid.update({name: value for name, value in
                       ranking_report(union_of_top_k(image_rows, text_rows, k), labels, rows, (k,)).items()})
    modes["hybrid"] = hybrid
    recall = {}
    for name, queries in reupload.items():
        ranked, _ = search_excluding(image_index, raw_codes(baseline, queries), 5)
        recall[name] = {"recall@1": recall_at_k(ranked, reupload_rows, 1), "recall@5": recall_at_k(ranked, reupload_rows, 5)}
    recall["re-upload (all headline variants)"] = {
        metric: float(np.mean([recall[name][metric] for name in REUPLOAD_HEADLINE])) for metric in ("recall@1", "recall@5")}
    dead = int((codes.max(axis=0) <= 0).sum())
    return {"modes": modes, "reupload": recall, "dead_dimensions": dead, "code_dimension": int(codes.shape[1]),
            "seconds": time.perf_counter() - started}


# --------------------------------------------------------------------------------------------
# The whole report
# --------------------------------------------------------------------------------------------

def catalog_labels(recommender: Recommender, label: str) -> tuple[np.ndarray, list[str]]:
    if label not in recommender.catalog.metadata_columns:
        raise EvaluationError(f"The catalog has no column {label!r} to use as relevance label; its metadata columns "
                              f"are {recommender.catalog.metadata_columns}.")
    return encode_labels(recommender.catalog.dataset[label])


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).resolve().parent).stdout.strip() or None
    except (OSError, subprocess.CalledProcessError):
        return None


def evaluate(bundle: str | Path, *, text_model: str | None = None, label: str = "channel",
             baseline_bundle: str | Path | None = None, output_dir: str | Path | None = None,
             ks: tuple[int, ...] = DEFAULT_KS, alphas: tuple[float, ...] = ALPHAS, reupload_items: int = 250,
             verify_queries: int = 30, folds: int = 5, seed: int = 0, set_alpha: bool = True,
             examples: int = 3) -> dict:
    """Evaluate a bundle (and optionally a baseline bundle of the same catalog); write the report.

    Returns everything measured as a JSON-friendly dict (also written to ``metrics.json``).
    With ``set_alpha`` the best weighted-fusion alpha is written into the bundle's manifest.
    """
    started = time.perf_counter()
    bundle = Path(bundle)
    output_dir = Path(output_dir) if output_dir else bundle / REPORT_DIR
    output_dir.mkdir(parents=True, exist_ok=True)
    recommender = Recommender.load(bundle, text_model=text_model)
    labels, label_names = catalog_labels(recommender, label)
    count = len(recommender)
    if count < 2:
        raise EvaluationError("Evaluation needs at least two catalog items.")
    rows = np.arange(count)
    top = max(ks)
    rng = np.random.default_rng(seed)
    timings: dict[str, float] = {}

    mark = time.perf_counter()
    sweep = alpha_sweep(recommender, rows, labels, ks, alphas)
    metric, tie_metric = f"P@{top}", f"nDCG@{top}"
    best = {fusion: choose_alpha(sweep[fusion], metric, tie_metric) for fusion in FUSIONS}
    alpha = best["weighted"]
    cv = cross_validated(sweep["weighted"], metric, tie_metric, min(folds, count), seed) if folds > 1 else None
    timings["sweep_s"] = time.perf_counter() - mark

    mark = time.perf_counter()
    ranked = item_rankings(recommender, rows, top, alpha)
    per_query = {mode: ranking_report(ranked[mode][0], labels, rows, ks) for mode in ("image", "text")}
    per_query["hybrid"] = sweep["weighted"][alpha]
    per_query["hybrid (rrf)"] = sweep["rrf"][best["rrf"]]
    references = reference_report(labels, rows, ks)
    sample = np.sort(rng.choice(count, size=min(verify_queries, count), replace=False))
    verification = verify_against_engine(recommender, sample, top, alpha)
    timings["rankings_s"] = time.perf_counter() - mark

    mark = time.perf_counter()
    reupload_rows = np.sort(rng.choice(count, size=min(reupload_items, count), replace=False))
    queries = reupload_queries(recommender, reupload_rows, seed)
    reupload = reupload_recall(recommender, reupload_rows, queries)
    timings["reupload_s"] = time.perf_counter() - mark

    baseline = None
    if baseline_bundle is not None:
        mark = time.perf_counter()
        baseline = evaluate_baseline(Path(baseline_bundle), recommender, text_model, label, rows, labels, ks, alphas,
                                     queries, reupload_rows)
        timings["baseline_s"] = time.perf_counter() - mark

    results = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "bundle": str(bundle),
        "code_commit": _git_commit(),
        "label": label,
        "queries": count,
        "labels": len(label_names),
        "ks": list(ks),
        "image_encoder": {key: recommender.manifest.get("image_encoder", {}).get(key)
                          for key in ("architecture", "dimension", "parameters")},
        "title_head": recommender.manifest.get("title_head"),
        "text_model": recommender.manifest.get("text_model", {}).get("name"),
        "indexes": {"image": recommender.info()["image_index"], "text": recommender.info()["text_index"]},
        "alpha": alpha,
        "alpha_rrf": best["rrf"],
        "alpha_selection": {"metric": metric, "cross_validated": cv},
        "modes": {mode: mean(values) for mode, values in per_query.items()},
        "reference": {name: mean(values) for name, values in references.items()},
        "reupload": reupload,
        "reupload_queries": int(len(reupload_rows)),
        "sweep": {fusion: {str(a): mean(values) for a, values in per_alpha.items()} for fusion, per_alpha in sweep.items()},
        "per_label": per_label({**per_query, "ceiling": references["ceiling"]}, labels, label_names, metric),
        "verification": verification,
        "baseline": baseline,
        "timings": timings,
    }
    results["files"] = write_report(output_dir, results, recommender, ranked, labels, label_names, examples, seed)
    timings["total_s"] = time.perf_counter() - started
    (output_dir / "metrics.json").write_text(json.dumps(results, indent=2, ensure_ascii=False))
    if set_alpha:
        store_in_manifest(bundle, results, output_dir)
    return results


def evaluate_baseline(bundle: Path, ours: Recommender, text_model: str | None, label: str, rows: np.ndarray,
                      labels: np.ndarray, ks: tuple[int, ...], alphas: tuple[float, ...],
                      queries: dict[str, list[bytes]], reupload_rows: np.ndarray) -> dict:
    """The baseline bundle, as the original design served it and through this engine."""
    baseline = Recommender.load(bundle, text_model=text_model)
    if baseline.catalog.item_ids != ours.catalog.item_ids:
        raise EvaluationError(f"Baseline bundle {bundle} has a different catalog (items or order) from the evaluated "
                              "bundle; build both from the same dataset.")
    # The baseline encoder is ~100x slower: its re-upload check uses the headline variants only.
    headline = {name: images for name, images in queries.items() if name in REUPLOAD_HEADLINE}
    original = evaluate_original_design(baseline, rows, labels, ks, headline, reupload_rows, bundle / RAW_CODES_CACHE)
    top = max(ks)
    sweep = alpha_sweep(baseline, rows, labels, ks, alphas, ("weighted",))["weighted"]
    alpha = choose_alpha(sweep, f"P@{top}", f"nDCG@{top}")
    ranked = item_rankings(baseline, rows, top, alpha)
    engine_modes = {"image": mean(ranking_report(ranked["image"][0], labels, rows, ks)),
                    "text": mean(ranking_report(ranked["text"][0], labels, rows, ks)),
                    "hybrid": mean(sweep[alpha])}
    return {
        "bundle": str(bundle),
        "image_encoder": {key: baseline.manifest.get("image_encoder", {}).get(key)
                          for key in ("architecture", "dimension", "parameters")},
        "original_design": {"modes": {mode: mean(values) for mode, values in original["modes"].items()},
                            "reupload": original["reupload"], "dead_dimensions": original["dead_dimensions"],
                            "code_dimension": original["code_dimension"],
                            "per_label": per_label(original["modes"], labels, None, f"P@{top}")},
        "through_engine": {"modes": engine_modes, "alpha": alpha},
    }


def per_label(per_query: dict[str, dict[str, np.ndarray]], labels: np.ndarray, label_names: list[str] | None,
              metric: str, largest: int = 8, min_items: int = 10) -> dict:
    """Mean ``metric`` per mode for the largest labels (at most ``largest``, each with ``min_items`` or more),
    the rest pooled as ``other``."""
    codes, sizes = np.unique(labels[labels >= 0], return_counts=True)
    order = np.argsort(-sizes, kind="stable")
    big = codes[order[:largest]][sizes[order[:largest]] >= min_items]
    groups = {int(code): labels == code for code in big}
    rest = ~np.isin(labels, big)
    out = {}
    for code, mask in groups.items():
        name = label_names[code] if label_names else str(code)
        out[name] = {"items": int(mask.sum()), **{mode: float(np.mean(values[metric][mask]))
                                                  for mode, values in per_query.items()}}
    if rest.any():
        out[f"other ({len(codes) - len(big)} labels)"] = {
            "items": int(rest.sum()), **{mode: float(np.mean(values[metric][rest])) for mode, values in per_query.items()}}
    return out


def store_in_manifest(bundle: Path, results: dict, output_dir: Path) -> None:
    """Write the tuned alpha and the evaluation summary into the manifest (checksums rewritten)."""
    manifest = read_manifest(bundle, verify=True)
    search = read_search_config(manifest, bundle).replace(alpha=results["alpha"], fusion="weighted")
    manifest.pop("fusion", None)  # where bundles before the search section kept alpha
    manifest["search"] = search.to_dict()
    try:
        report = str(output_dir.resolve().relative_to(bundle.resolve()) / "report.md")
    except ValueError:
        report = str(output_dir / "report.md")
    manifest["evaluation"] = {
        "alpha_source": f"train.evaluate: best {results['alpha_selection']['metric']} "
                        f"(label {results['label']!r}) over alpha {ALPHAS[0]}..{ALPHAS[-1]}",
        "summary": summary_markdown(results),
        "created": results["created"],
        "label": results["label"],
        "queries": results["queries"],
        "modes": results["modes"],
        "reference": results["reference"],
        "reupload": results["reupload"],
        "alpha": results["alpha"],
        "report": report,
    }
    manifest.pop("files", None)
    write_manifest(bundle, manifest)


# --------------------------------------------------------------------------------------------
# Report: Markdown + PNG
# --------------------------------------------------------------------------------------------

def _fmt(value: float | None) -> str:
    return "–" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.3f}"


def quality_rows(results: dict) -> list[tuple[str, str, dict]]:
    """(system, mode, metrics) rows of the main table, references first."""
    rows = [("random", "–", results["reference"]["random"]), ("ceiling", "–", results["reference"]["ceiling"])]
    modes = results["modes"]
    image = "image (features + title head)" if results.get("title_head") else "image"
    rows += [("this bundle", image, modes["image"]), ("this bundle", "text", modes["text"]),
             ("this bundle", f"hybrid (weighted, alpha={results['alpha']:.2f})", modes["hybrid"]),
             ("this bundle", f"hybrid (RRF, alpha={results['alpha_rrf']:.2f})", modes["hybrid (rrf)"])]
    baseline = results.get("baseline")
    if baseline:
        original = baseline["original_design"]["modes"]
        rows += [("baseline, original design", "image (IndexFlatL2, raw codes)", original["image"]),
                 ("baseline, original design", "text (IndexFlatL2)", original["text"]),
                 ("baseline, original design", "hybrid (set union of top-k lists)", original["hybrid"])]
        through = baseline["through_engine"]
        rows += [("baseline encoder, this engine", "image (cosine)", through["modes"]["image"]),
                 ("baseline encoder, this engine", f"hybrid (weighted, alpha={through['alpha']:.2f})",
                  through["modes"]["hybrid"])]
    return rows


def _quality_table(results: dict, rows: list[tuple[str, str, dict]]) -> list[str]:
    metrics = [f"{name}@{k}" for name in ("P", "nDCG") for k in results["ks"]]
    lines = ["| system | mode | " + " | ".join(metrics) + " |", "|---|---|" + "---:|" * len(metrics)]
    for system, mode, values in rows:
        lines.append(f"| {system} | {mode} | " + " | ".join(_fmt(values.get(m)) for m in metrics) + " |")
    return lines


def summary_markdown(results: dict) -> str:
    """The short version for the model card: main table, re-upload recall, chosen alpha."""
    rows = [row for row in quality_rows(results) if "RRF" not in row[1] and row[0] != "baseline encoder, this engine"]
    lines = [f"Label `{results['label']}` as relevance (same label = relevant; the query item excluded), every one of "
             f"the {results['queries']:,} catalog items asked as a query.", ""]
    lines += _quality_table(results, rows)
    headline = results["reupload"]["re-upload (all headline variants)"]
    lines += ["", f"Re-upload robustness (image mode, {results['reupload_queries']} thumbnails cropped 4%, brightened "
              f"or darkened, saved as JPEG q30): recall@1 **{headline['recall@1']:.3f}**"
              + (f" (baseline {results['baseline']['original_design']['reupload']['re-upload (all headline variants)']['recall@1']:.3f})"
                 if results.get("baseline") else "") + _duplicate_note(headline) + ".",
              f"Default hybrid weight alpha = {results['alpha']:.2f} (best {results['alpha_selection']['metric']} "
              "of the sweep)."]
    return "\n".join(lines)


def _duplicate_note(recall: dict) -> str:
    duplicates = recall.get("misses_on_duplicates", 0)
    return (f"; {duplicates} of its {recall['misses']} misses returned the same picture filed under another item"
            if duplicates else "")


def write_report(output_dir: Path, results: dict, recommender: Recommender, ranked: dict, labels: np.ndarray,
                 label_names: list[str], examples: int, seed: int) -> list[str]:
    """``report.md`` and its plots in ``output_dir``; returns the file names."""
    import matplotlib

    matplotlib.use("Agg")
    files = ["alpha_sweep.png", "per_label_precision.png"]
    plot_alpha_sweep(results, output_dir / files[0])
    plot_per_label(results, output_dir / files[1])
    if examples > 0:
        plot_examples(recommender, ranked, labels, label_names, output_dir / "examples.png", examples, seed)
        files.append("examples.png")
    (output_dir / "report.md").write_text(report_markdown(results, "examples.png" in files))
    return ["report.md", "metrics.json", *files]


def report_markdown(results: dict, with_examples: bool = True) -> str:
    encoder = results["image_encoder"]
    metric = results["alpha_selection"]["metric"]
    ndcg = f"nDCG@{results['ks'][-1]}"
    lines = [
        f"# Quality report: `{results['bundle']}`", "",
        f"{results['queries']:,} catalog items, label `{results['label']}` ({results['labels']} distinct) as relevance: a "
        "recommendation is relevant when it shares the query's label; every item is asked as a query and never "
        "recommends itself. Queries whose label has no other item count too (the ceiling shows what is reachable).", "",
        f"Measured {results['created']} on code `{results['code_commit']}`; image encoder `{encoder.get('architecture')}` "
        f"(dim {encoder.get('dimension')}, {encoder.get('parameters') or 0:,} parameters), text model "
        f"`{results['text_model']}`, indexes: image {results['indexes']['image']}, text {results['indexes']['text']}.", "",
    ]
    head = results.get("title_head")
    if head:
        lines += [f"Image vectors join the encoder's features with a title head's prediction ({head['dimension']}-d): "
                  f"kernel ridge regression from features to title vectors ({head['random_features']:,} random "
                  f"Fourier features, ridge {head.get('config', head).get('ridge')}), cross-fitted over {head['folds']} folds, so no "
                  "catalog item's vector was fitted on its own title.", ""]
    lines += ["## Ranking quality", ""]
    lines += _quality_table(results, quality_rows(results))
    cv = results["alpha_selection"]["cross_validated"]
    lines += ["", f"Hybrid alpha (text weight) = **{results['alpha']:.2f}**, the best {metric} of the sweep below "
              f"(ties: nDCG, then closest to 0.5); written into the bundle's manifest as the default."]
    if cv:
        lines += [f"Tuned on the same queries it is scored on; choosing alpha on {cv['folds'] - 1} of {cv['folds']} "
                  f"folds of queries and scoring the held-out fold gives hybrid {metric} **{cv[metric]:.3f}** "
                  f"(alphas chosen per fold: {', '.join(f'{a:.2f}' for a in cv['alphas'])})."]
    baseline = results.get("baseline")
    if baseline:
        original = baseline["original_design"]
        lines += ["", f"Baseline = the original design ({baseline['image_encoder'].get('parameters') or 0:,} encoder "
                  f"parameters), bundle `{baseline['bundle']}`: {original['dead_dimensions']} of its "
                  f"{original['code_dimension']} code dimensions are zero for every catalog item (dead ReLU units). "
                  "'original design' scores it as it was served (IndexFlatL2 over raw codes; hybrid = the set union "
                  "of the image and text top-k lists, cut to k in set order); 'this engine' runs the same encoder "
                  "through this project's cosine indexes and weighted fusion."]
    lines += ["", f"## Re-upload robustness (image mode, {results['reupload_queries']} catalog thumbnails)", "",
              "Each thumbnail altered, uploaded as a query; recall@1 = the original comes back first. 'Misses on "
              "duplicates' counts rank-1 misses that returned another catalog item with the same thumbnail "
              f"(encoder features at cosine >= {DUPLICATE_COSINE}): the catalog holds the picture twice.", "",
              "| alteration | recall@1 | recall@5 | misses on duplicates |" + (" baseline recall@1 |" if baseline else ""),
              "|---|---:|---:|---:|" + ("---:|" if baseline else "")]
    for name, values in results["reupload"].items():
        bold = name.startswith("re-upload")
        line = (f"| {'**' + name + '**' if bold else name} | {_fmt(values['recall@1'])} | {_fmt(values['recall@5'])} "
                f"| {values.get('misses_on_duplicates', '–')} |")
        if baseline:
            line += f" {_fmt(baseline['original_design']['reupload'].get(name, {}).get('recall@1'))} |"
        lines.append(line)
    lines += ["", "## Hybrid weight sweep", "", "![alpha sweep](alpha_sweep.png)", "",
              f"| alpha | weighted {metric} | weighted {ndcg} | RRF {metric} |", "|---:|---:|---:|---:|"]
    for alpha, values in results["sweep"]["weighted"].items():
        rrf = results["sweep"].get("rrf", {}).get(alpha, {})
        lines.append(f"| {float(alpha):.2f} | {_fmt(values[metric])} | {_fmt(values[ndcg])} | {_fmt(rrf.get(metric))} |")
    modes = list(next(iter(results["per_label"].values())))[1:]
    lines += ["", f"## {metric} per label", "", "![per-label precision](per_label_precision.png)", "",
              "| label | items | " + " | ".join(modes) + " |", "|---|---:|" + "---:|" * len(modes)]
    for name, values in results["per_label"].items():
        lines.append(f"| {name} | {values['items']} | " + " | ".join(_fmt(values[m]) for m in modes) + " |")
    if with_examples:
        lines += ["", "## Example queries", "",
                  "Query thumbnail first, then the top 5 per mode; green frame = same label, red = not.", "",
                  "![examples](examples.png)"]
    verification = results["verification"]
    lines += ["", "## Checks", "",
              f"Bulk rankings compared with `Recommender.recommend` on {verification['queries']} sampled queries per "
              f"mode and fusion: {verification['identical']} identical, {verification['tie']} equal up to tied scores, "
              f"{verification['different']} different. Timings: "
              + ", ".join(f"{name} {seconds:.1f}" for name, seconds in results["timings"].items()) + "."]
    return "\n".join(lines) + "\n"


def plot_alpha_sweep(results: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    metric = results["alpha_selection"]["metric"]
    ndcg = f"nDCG@{results['ks'][-1]}"
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    for axis, name in zip(axes, (metric, ndcg)):
        for fusion, style in (("weighted", "-o"), ("rrf", "--s")):
            per_alpha = results["sweep"].get(fusion)
            if per_alpha:
                alphas = [float(a) for a in per_alpha]
                axis.plot(alphas, [v[name] for v in per_alpha.values()], style, markersize=3, label=f"hybrid ({fusion})")
        for label, value, colour in (("image only", results["modes"]["image"][name], "tab:orange"),
                                     ("text only", results["modes"]["text"][name], "tab:green"),
                                     ("random", results["reference"]["random"][name], "grey"),
                                     ("ceiling", results["reference"]["ceiling"][name], "black")):
            axis.axhline(value, color=colour, linestyle=":", linewidth=1.2, label=label)
        axis.axvline(results["alpha"], color="tab:red", linewidth=0.8, label=f"chosen alpha {results['alpha']:.2f}")
        axis.set(xlabel="alpha (text weight)", ylabel=name, title=f"Hybrid {name} vs alpha")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="lower center")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_per_label(results: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    metric = results["alpha_selection"]["metric"]
    per_label = results["per_label"]
    series = {mode: [values[mode] for values in per_label.values()] for mode in ("image", "text", "hybrid")}
    baseline = results.get("baseline")
    if baseline:
        original = baseline["original_design"]["per_label"]
        series["baseline union"] = [original.get(name, {}).get("hybrid", np.nan) if not name.startswith("other")
                                    else next((v["hybrid"] for n, v in original.items() if n.startswith("other")), np.nan)
                                    for name in per_label]
    names = [f"{name[:28]} ({values['items']})" for name, values in per_label.items()]
    positions = np.arange(len(names))
    width = 0.8 / len(series)
    figure, axis = plt.subplots(figsize=(8, 0.55 * len(names) * len(series) / 3 + 1.5))
    for offset, (mode, values) in enumerate(series.items()):
        axis.barh(positions + offset * width, values, height=width, label=mode)
    if all("ceiling" in values for values in per_label.values()):
        for position, values in zip(positions, per_label.values()):
            axis.vlines(values["ceiling"], position - width / 2, position + width * (len(series) - 0.5), color="black",
                        linewidth=1.5, label="ceiling" if position == 0 else None)
    axis.set_yticks(positions + width * (len(series) - 1) / 2, names, fontsize=8)
    axis.invert_yaxis()
    axis.set(xlabel=metric, xlim=(0, 1), title=f"{metric} per {results['label']} (largest labels; items in brackets)")
    axis.grid(axis="x", alpha=0.3)
    axis.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_examples(recommender: Recommender, ranked: dict, labels: np.ndarray, label_names: list[str], path: Path,
                  examples: int, seed: int, shown: int = 5) -> None:
    """Rows of thumbnails: per example query, one row per mode (query first, then its top results)."""
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed + 1)
    codes, sizes = np.unique(labels[labels >= 0], return_counts=True)
    queries = [int(rng.choice(np.flatnonzero(labels == code))) for code in codes[np.argsort(-sizes)][:examples]]
    modes = ("image", "text", "hybrid")
    figure, axes = plt.subplots(len(queries) * len(modes), shown + 1,
                                figsize=(2.1 * (shown + 1), 1.75 * len(queries) * len(modes)), squeeze=False)
    for q, row in enumerate(queries):
        for m, mode in enumerate(modes):
            line = axes[q * len(modes) + m]
            results = [row] + [int(r) for r in ranked[mode][0][row][:shown]]
            for column, item in enumerate(results):
                axis = line[column]
                axis.set_xticks([])
                axis.set_yticks([])
                if item < 0:
                    axis.axis("off")
                    continue
                axis.imshow(recommender.catalog.image(item))
                colour = "black" if column == 0 else ("tab:green" if labels[item] == labels[row] else "tab:red")
                for spine in axis.spines.values():
                    spine.set_edgecolor(colour)
                    spine.set_linewidth(3 if column else 1)
                title = recommender.catalog.titles[item]
                axis.set_title(title[:30] + ("…" if len(title) > 30 else ""), fontsize=6)
            label = label_names[labels[row]] if labels[row] >= 0 else "?"
            line[0].set_ylabel(f"{mode}\n{label[:18]}", fontsize=7)
    with warnings.catch_warnings():  # titles in scripts the default font lacks draw as boxes; that is fine
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        figure.tight_layout()
        figure.savefig(path, dpi=80)
    plt.close(figure)
