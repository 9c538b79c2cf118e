"""The recommendation controls in the quality report: diversity sweep, dedupe calibration, sessions and
title -> thumbnails, on the synthetic bundle (4 channels x 8 videos). Timings are never asserted."""

from __future__ import annotations

import copy
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from recommender import Recommender
from train.evaluation import EvaluationContext
from train.evaluation.metrics import ranking_report
from train.evaluation.rankings import item_rankings

from .synthetic import catalog_records, write_catalog_parquet


@pytest.fixture(scope="module")
def context(bundle_dir: Path, text_model: Path) -> EvaluationContext:
    return EvaluationContext.load(bundle_dir, text_model=str(text_model), ks=(5, 10))


# ---------------------------------------------------------------- diversity

def test_intra_list_similarity_and_distinct_labels_by_hand():
    from train.evaluation.diversity import distinct_labels, intra_list_similarity

    vectors = np.array([[1, 0], [1, 0], [0, 1]], dtype=np.float32)
    assert intra_list_similarity(vectors, np.array([0, 1, -1])) == pytest.approx(1.0)
    assert intra_list_similarity(vectors, np.array([0, 1, 2])) == pytest.approx(1 / 3)  # pairs: 1, 0, 0
    assert np.isnan(intra_list_similarity(vectors, np.array([2, -1])))
    assert distinct_labels(np.array([0, 0, 1, -1, -1]), np.array([0, 1, 2, 3, 4, -1])) == 4  # two unlabelled


def test_diversity_one_spreads_the_list_and_zero_is_todays_ranking(context: EvaluationContext):
    from train.evaluation.diversity import DiversityEvaluator

    context.rng = np.random.default_rng(0)
    result = DiversityEvaluator(queries=32, diversities=(1.0, 0.0))(context)
    assert result.queries == 32 and [p.diversity for p in result.modes["hybrid"]] == [0.0, 1.0]
    for mode, (plain, diverse) in result.modes.items():
        assert diverse.ils < plain.ils, mode
        assert diverse.distinct >= plain.distinct, mode
    # Diversity 0 scores exactly what the bulk rankings (today's ranking) score on the same queries.
    ranked = item_rankings(context.recommender, context.rows, 10, context.recommender.default_alpha)
    for mode in ("image", "text", "hybrid"):
        expected = ranking_report(ranked[mode][0], context.labels, context.rows, (10,))["P@10"].mean()
        assert result.point(mode, 0.0).precision == pytest.approx(expected), mode


# ---------------------------------------------------------------- dedupe calibration

def _reencoded(data: bytes) -> bytes:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("RGB").save(buffer, "JPEG", quality=80)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def duplicated_bundle(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session bundle with two planted duplicates added live: vid000's exact bytes and vid101's
    thumbnail re-encoded, each under a new id (and another title)."""
    from train.live import add_items

    folder = tmp_path_factory.mktemp("dedupe")
    bundle = folder / "bundle"
    shutil.copytree(bundle_dir, bundle)
    originals = {record["video_id"]: record for record in catalog_records()}
    planted = [
        {**originals["vid000"], "video_id": "copy-of-vid000", "title": "same picture, other upload"},
        {**originals["vid101"], "video_id": "copy-of-vid101", "title": "re-encoded upload",
         "image": {"bytes": _reencoded(originals["vid101"]["image"]["bytes"]), "path": None}},
    ]
    add_items(bundle, write_catalog_parquet(folder / "planted.parquet", planted), show_progress_bar=False)
    return bundle


def test_known_duplicates_are_exactly_the_planted_pairs(duplicated_bundle: Path, text_model: Path):
    from train.evaluation.dedupe import known_duplicates

    catalog = Recommender.load(duplicated_bundle, text_model=str(text_model)).catalog
    found = {(catalog.item_ids[a], catalog.item_ids[b]) for a, b in known_duplicates(catalog, catalog.live_rows())}
    assert found == {("vid000", "copy-of-vid000"), ("vid101", "copy-of-vid101")}


def test_nearest_distinct_video_leaves_known_duplicates_out():
    from train.evaluation.dedupe import nearest_distinct

    features = np.array([[1, 0, 0], [1, 0, 0], [0.8, 0.6, 0], [0, 0, 1]], dtype=np.float32)
    labels = np.array([0, 0, 0, 1])
    same, anywhere = nearest_distinct(features, labels, np.arange(4), np.array([[0, 1]]))
    assert same.tolist() == pytest.approx([0.8, 0.8, 0.8, -np.inf])  # rows 0 and 1 are one picture
    assert anywhere[:3].tolist() == pytest.approx([0.8, 0.8, 0.8]) and anywhere[3] == pytest.approx(0.0)


def test_dedupe_calibration_collapses_the_planted_duplicates(duplicated_bundle: Path, text_model: Path):
    from train.evaluation.dedupe import DedupeEvaluator

    context = EvaluationContext.load(duplicated_bundle, text_model=str(text_model))
    thresholds = (0.9, 0.99, 0.999, 0.9999)
    result = DedupeEvaluator(items=10, thresholds=thresholds, tolerance=0.0)(context)
    assert sorted(result.duplicate_pairs) == [("vid000", "copy-of-vid000"), ("vid101", "copy-of-vid101")]
    assert result.live_items == 34 and result.reupload_items == 10
    assert [rates.threshold for rates in result.rates] == list(thresholds)
    assert all(rates.known_duplicates == 1.0 for rates in result.rates[:3])  # the same picture, up to JPEG
    for field in ("distinct_same_label", "distinct_any_label", "reuploads_all"):
        values = [getattr(rates, field) for rates in result.rates]
        assert values == sorted(values, reverse=True), field  # a higher threshold collapses less
    # The recommended threshold is the lowest keeping distinct videos of a channel apart (tolerance 0).
    acceptable = [rates.threshold for rates in result.rates if rates.distinct_same_label == 0.0]
    assert result.threshold == (acceptable[0] if acceptable else thresholds[-1])
    assert result.primary == result.at_threshold.reuploads_all


# ---------------------------------------------------------------- sessions

def test_sessions_are_drawn_from_one_label_plus_noise():
    from train.evaluation.sessions import draw_sessions

    labels = np.repeat([0, 1, 2], [10, 4, 2])
    rows = np.arange(len(labels))
    rng = np.random.default_rng(0)
    for session in draw_sessions(labels, rows, 5, 50, "one label", rng):
        assert len(set(session.rows)) == 5 and set(labels[session.rows]) == {session.label} == {0}  # only 0 has > 5
    for session in draw_sessions(labels, rows, 3, 50, "one label + noise", rng):
        members = labels[session.rows]
        assert len(set(session.rows)) == 3 and (members == session.label).sum() == 2 and session.label in (0, 1)


def test_session_fusions_are_measured_with_the_engine(context: EvaluationContext, monkeypatch):
    from train.evaluation.sessions import SessionEvaluator

    asked = []
    recommend = Recommender.recommend

    def spy(self, *args, **kwargs):
        served = recommend(self, *args, **kwargs)
        asked.append((self.search.session_fusion, kwargs, served))
        return served

    monkeypatch.setattr(Recommender, "recommend", spy)
    context.rng = np.random.default_rng(0)
    result = SessionEvaluator(sessions=4)(context)
    assert context.recommender.search.session_fusion in ("centroid", "rrf")  # the loaded bundle is left alone
    plan = [(score.size, score.kind) for score in result.scores]
    assert sorted(set(plan)) == [(1, "one label"), (3, "one label"), (3, "one label + noise"), (5, "one label"),
                                 (5, "one label + noise")]
    assert len(asked) == len(result.scores) * 2 * 4  # every session asked with each fusion
    assert {fusion for fusion, _, _ in asked} == {"centroid", "rrf"}
    for fusion, kwargs, served in asked:
        assert set(kwargs["items"]).isdisjoint(r.item_id for r in served)  # session items never come back
    for score in result.scores:
        if score.size == 1:  # one item: nothing to fuse
            assert score.precision["centroid"] == score.precision["rrf"]
        assert 0 <= min(score.precision.values()) <= max(score.precision.values()) <= score.ceiling + 1e-9
    assert result.recommended in ("centroid", "rrf") and result.primary == max(result.means.values())


# ---------------------------------------------------------------- title -> thumbnails

def test_title_search_asks_the_same_titles_in_image_and_text_mode(context: EvaluationContext):
    from train.evaluation.title_search import TitleSearchEvaluator

    context.rng = np.random.default_rng(0)
    result = TitleSearchEvaluator(queries=12)(context)
    assert result.queries == 12
    image, text = result.modes["image (title through the title head)"], result.modes["text (title)"]
    assert 0.0 <= image["P@10"] <= result.ceiling["P@10"] + 1e-9 and not np.isnan(result.primary)
    # Text mode by title = the engine asked by hand, the query item excluded.
    context.rng = np.random.default_rng(0)
    rows = np.sort(context.rng.choice(context.rows, size=12, replace=False))
    catalog = context.recommender.catalog
    precisions = []
    for row in rows.tolist():
        served = context.recommender.recommend(title=catalog.titles[row], mode="text", k=10,
                                               exclude=[catalog.item_ids[row]], dedupe=False)
        assert catalog.item_ids[row] not in [r.item_id for r in served]
        precisions.append(sum(context.labels[served.rows] == context.labels[row]) / 10)
    assert text["P@10"] == pytest.approx(np.mean(precisions))


def test_title_search_says_a_bundle_without_a_title_head_cannot(context: EvaluationContext):
    from train.evaluation.title_search import TitleSearchEvaluator

    headless = copy.copy(context)
    headless.recommender = copy.copy(context.recommender)
    headless.recommender.title_head = None
    result = TitleSearchEvaluator(queries=4)(headless)
    assert result.modes is None and np.isnan(result.primary)
