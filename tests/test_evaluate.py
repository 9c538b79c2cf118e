"""The quality report: metric functions, the evaluators (bulk rankings against the engine, never-seen
uploads) and the report writer.

All on the synthetic bundle (no real data); timings are never asserted.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from recommender import Recommender
from recommender.data.bundle import model_card, read_manifest
from recommender.encoders.autoencoder import BASELINE_CONFIG
from recommender.encoders.title_head import TitleHeadConfig
from recommender.search.config import SearchConfig
from recommender.search.fusion import fuse_batch
from train.build import BuildSettings
from train.evaluation.metrics import (
    ceiling,
    encode_labels,
    label_counts,
    ndcg_at_k,
    precision_at_k,
    random_expectation,
    ranking_report,
    recall_at_k,
    reference_report,
    relevance,
    relevant_counts,
    upload_ranking_report,
    upload_reference_report,
)
from train.trainer import TrainingConfig

from .conftest import TEST_ENCODER

#: The original design's architecture, shrunk so a test can train it in seconds.
TINY_BASELINE = replace(BASELINE_CONFIG, width=64, height=48, channels=(4, 8, 8), latent_channels=8)


# ---------------------------------------------------------------- metrics

def test_precision_and_ndcg_by_hand():
    labels = np.array([0, 0, 0, 1, 1, 2])  # label 0 has 3 items, label 1 has 2, label 2 one
    queries = np.array([0, 3, 5])
    ranked = np.array([[1, 3, 2], [5, 0, -1], [0, 1, 2]])
    relevant = relevance(ranked, labels, labels[queries])
    assert relevant.tolist() == [[True, False, True], [False, False, False], [False, False, False]]
    n_relevant = relevant_counts(labels, queries)
    assert n_relevant.tolist() == [2, 1, 0]
    assert precision_at_k(relevant, 3).tolist() == pytest.approx([2 / 3, 0, 0])
    ideal = 1 + 1 / np.log2(3)
    assert ndcg_at_k(relevant, n_relevant, 3).tolist() == pytest.approx([(1 + 1 / np.log2(4)) / ideal, 0, 0])
    report = ranking_report(ranked, labels, queries, (1, 3))
    assert report["P@1"].tolist() == [1, 0, 0]


def test_random_expectation_equals_the_average_over_all_rankings():
    labels = np.array([0, 0, 0, 1, 1, 2])
    query = 0
    others = [row for row in range(len(labels)) if row != query]
    k = 3
    precisions, ndcgs = [], []
    for ranking in itertools.permutations(others):
        relevant = relevance(np.array([ranking[:k]]), labels, labels[[query]])
        precisions.append(precision_at_k(relevant, k)[0])
        ndcgs.append(ndcg_at_k(relevant, relevant_counts(labels, np.array([query])), k)[0])
    expected_p, expected_ndcg = random_expectation(relevant_counts(labels, np.array([query])), len(others), k)
    assert expected_p[0] == pytest.approx(np.mean(precisions))
    assert expected_ndcg[0] == pytest.approx(np.mean(ndcgs))


def test_ceiling_and_reference_report():
    p, ndcg = ceiling(np.array([0, 1, 12]), 10)
    assert p.tolist() == [0, 0.1, 1.0] and ndcg.tolist() == [0, 1, 1]
    labels = np.array([0, 0, 1, 1, 1, -1])
    references = reference_report(labels, np.arange(6), (2,))
    assert references["ceiling"]["P@2"].tolist() == [0.5, 0.5, 1, 1, 1, 0]
    assert references["random"]["P@2"][0] == pytest.approx(1 / 5)


def test_labels_encoding_treats_missing_as_relevant_to_nothing():
    codes, names = encode_labels(["a", None, "b", "a", "", float("nan")])
    assert codes.tolist() == [0, -1, 1, 0, -1, -1] and names == ["a", "b"]
    assert relevant_counts(codes, np.arange(6)).tolist() == [1, 0, 0, 1, 0, 0]
    assert relevance(np.array([[4]]), codes, codes[[1]]).tolist() == [[False]]  # two missing labels never match


def test_upload_metrics_count_every_catalog_item_with_the_label():
    labels = np.array([0, 0, 0, 1, 1, 2])  # the catalog; queries come from outside it
    query_labels = np.array([0, 2, 3, -1])  # label 3: no catalog item; -1: missing
    assert label_counts(labels, query_labels).tolist() == [3, 1, 0, 0]
    ranked = np.array([[0, 3, 1], [5, 0, -1], [0, 1, 2], [3, 4, 5]])
    report = upload_ranking_report(ranked, labels, query_labels, (1, 3))
    assert report["P@3"].tolist() == pytest.approx([2 / 3, 1 / 3, 0, 0])
    assert report["nDCG@1"].tolist() == [1, 1, 0, 0]
    references = upload_reference_report(labels, query_labels, (3,))
    assert references["ceiling"]["P@3"].tolist() == pytest.approx([1, 1 / 3, 0, 0])
    assert references["random"]["P@3"].tolist() == pytest.approx([3 / 6, 1 / 6, 0, 0])  # no query item to leave out


def test_recall_at_k():
    assert recall_at_k(np.array([[3, 1], [2, 0], [5, 4]]), np.array([3, 0, 9]), 1) == pytest.approx(1 / 3)
    assert recall_at_k(np.array([[3, 1], [2, 0], [5, 4]]), np.array([3, 0, 9]), 2) == pytest.approx(2 / 3)


# ---------------------------------------------------------------- bulk ranking = the engine's

@pytest.mark.parametrize("method", ["weighted", "rrf"])
def test_fuse_batch_equals_engine_fusion_row_by_row(method):
    rng = np.random.default_rng(0)
    text = rng.normal(size=(40, 12)).astype(np.float32)
    image = rng.normal(size=(40, 12)).astype(np.float32)
    valid = rng.random((40, 12)) > 0.3
    valid[0] = True
    text[1] = 0.5  # a constant modality carries no ranking
    image[2, :] = np.round(image[2, :])  # ties
    valid[3] = False  # nothing valid
    valid[4] = False
    valid[4, 5] = True  # one candidate
    for alpha in (0.0, 0.3, 1.0):
        fused = fuse_batch(text, image, valid, alpha, method)
        for row in range(len(text)):
            keep = valid[row]
            assert np.all(np.isneginf(fused[row][~keep]))
            if keep.any():
                alone = fuse_batch(text[row][keep][None], image[row][keep][None], np.ones((1, keep.sum()), bool),
                                   alpha, method)[0]
                np.testing.assert_allclose(fused[row][keep], alone, rtol=0, atol=1e-7)


def test_bulk_rankings_equal_recommend_for_every_item(bundle_dir: Path, text_model: Path):
    from train.evaluation.rankings import verify_against_engine

    recommender = Recommender.load(bundle_dir, text_model=str(text_model))
    outcome = verify_against_engine(recommender, np.arange(len(recommender)), k=5, alpha=0.4)
    assert outcome.different == 0
    assert outcome.identical + outcome.tie == 4 * len(recommender)


def test_union_of_top_k_is_the_original_set_union():
    from train.evaluation.baseline import union_of_top_k

    union = union_of_top_k(np.array([[5, 1, 2], [7, -1, -1]]), np.array([[1, 9, 3], [7, 8, 4]]), 3)
    assert set(union[0]) <= {5, 1, 2, 9, 3} and len(set(union[0])) == 3
    assert union[0].tolist() == list({5, 1, 2} | {1, 9, 3})[:3]
    assert sorted(union[1].tolist()) == [4, 7, 8]


def test_reupload_alteration_crops_and_recompresses():
    from train.evaluation.reupload import Reupload

    buffer = io.BytesIO()
    Image.new("RGB", (480, 360), (100, 120, 140)).save(buffer, "PNG")
    altered = Reupload(crop=0.04, brightness=1.2, jpeg_quality=30).apply(buffer.getvalue(), np.random.default_rng(0))
    image = Image.open(io.BytesIO(altered))
    assert image.format == "JPEG" and image.size == (461, 346)
    assert np.asarray(image.convert("RGB")).mean() > 130  # brightened


def test_duplicate_misses_count_only_misses_on_the_same_picture():
    from train.evaluation.reupload import duplicate_misses

    vectors = np.eye(4, dtype=np.float32)
    vectors[3] = vectors[0]  # row 3 is row 0's thumbnail uploaded twice
    first = np.array([3, 1, 2, 0, -1])  # query 0 got its duplicate, query 1 a different item, 2 a hit, 3 too
    originals = np.array([0, 0, 2, 3, 1])
    assert duplicate_misses(vectors, first, originals) == 2  # rows 3->0 and 0->3; -1 (no result) is no duplicate


# ---------------------------------------------------------------- the report

@pytest.fixture(scope="module")
def baseline_bundle(bundle_dir: Path, catalog_parquet: Path, text_model: Path) -> Path:
    """The original design's architecture (shrunk) on the same catalog."""
    from train.build import build_bundle
    from train.trainer import TrainingConfig

    output = bundle_dir.parent / "baseline-bundle"
    if not output.exists():
        build_bundle(catalog_parquet, output, text_model=str(text_model), encoder_config=TINY_BASELINE,
                     training=TrainingConfig(epochs=1, batch_size=8, denoising=False), show_progress_bar=False)
    return output


def test_evaluate_command_writes_report_and_tunes_the_manifest(bundle_dir: Path, baseline_bundle: Path,
                                                               text_model: Path, tmp_path: Path, capsys):
    from train.__main__ import main

    bundle = tmp_path / "bundle"
    shutil.copytree(bundle_dir, bundle)  # the session bundle is shared: never modify it
    code = main(["evaluate", "--bundle", str(bundle), "--text-model", str(text_model), "--baseline-bundle",
                 str(baseline_bundle), "--reupload-items", "12", "--verify-queries", "8", "--examples", "2",
                 "--holdout-fraction", "0.25", "--holdout-epochs", "1"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| this bundle | hybrid" in printed and "baseline, original design" in printed
    assert "Never-seen uploads (8 videos held out" in printed

    report_dir = bundle / "evaluation"
    plots = ("alpha_sweep.png", "per_label_precision.png", "examples.png", "diversity.png", "dedupe.png")
    for name in ("report.md", "metrics.json", *plots):
        assert (report_dir / name).is_file(), name
    for name in plots:
        assert Image.open(report_dir / name).format == "PNG"
    metrics = json.loads((report_dir / "metrics.json").read_text())
    assert metrics["info"]["queries"] == 32 and metrics["info"]["labels"] == 4
    rankings = metrics["rankings"]
    for mode in ("image", "text", "hybrid"):
        for name in ("P@5", "P@10", "nDCG@5", "nDCG@10"):
            assert 0.0 <= rankings["modes"][mode][name] <= rankings["reference"]["ceiling"][name] + 1e-9
    assert rankings["reference"]["ceiling"]["P@5"] == 1.0  # 8 items per channel
    assert rankings["reference"]["random"]["P@10"] == pytest.approx(7 / 31)
    assert rankings["primary"] == rankings["modes"]["hybrid"]["P@10"]
    assert set(metrics["sweep"]["sweep"]["weighted"]) == {str(round(a, 2)) for a in np.linspace(0, 1, 21)}
    assert rankings["verification"]["different"] == 0
    headline = metrics["reupload"]["headline"]
    assert 0.0 <= headline["recall_at_1"] <= headline["recall_at_5"] <= 1.0
    assert headline["misses"] == round((1 - headline["recall_at_1"]) * 2 * 12)  # two headline variants, 12 items
    assert 0 <= headline["misses_on_duplicates"] <= headline["misses"]
    original = metrics["baseline"]["original_design"]
    assert set(original["modes"]) == {"image", "text", "hybrid"}
    assert 0 <= original["dead_dimensions"] <= original["code_dimension"] == 8
    # The text index is shared: the original design's text ranking is ours (L2 = cosine on unit vectors).
    assert original["modes"]["text"]["P@10"] == pytest.approx(rankings["modes"]["text"]["P@10"])
    assert set(original["per_label"]) == set(rankings["per_label"])  # named alike, so plotted side by side
    never_seen = metrics["never_seen"]
    assert never_seen["held_out"] == 8 and never_seen["catalog_items"] == 24 and never_seen["epochs"] == 1
    for mode in ("image", "text", "hybrid"):
        assert 0.0 <= never_seen["modes"][mode]["P@10"] <= never_seen["reference"]["ceiling"]["P@10"] + 1e-9
    for name in ("diversity", "dedupe", "sessions", "title_search"):  # the recommendation controls, measured too
        assert metrics[name]["primary"] == metrics[name]["primary"], name  # not NaN
    assert [point["diversity"] for point in metrics["diversity"]["modes"]["hybrid"]] == [0, .1, .2, .3, .5, .7, 1]
    assert {score["size"] for score in metrics["sessions"]["scores"]} == {1, 3, 5}
    report = (report_dir / "report.md").read_text()
    assert "## Re-upload robustness" in report and "![alpha sweep](alpha_sweep.png)" in report
    for section in ("## Diversity (MMR)", "## Dedupe calibration", "## Sessions", "## Title -> thumbnails"):
        assert section in report, section
    assert "## Never-seen uploads (8 held-out videos)" in report and "| hybrid (both) |" in report

    manifest = read_manifest(bundle, verify=True)  # rewritten with valid checksums
    assert manifest["search"]["alpha"] == metrics["sweep"]["alpha"]
    assert manifest["evaluation"]["report"] == "evaluation/report.md"
    assert manifest["evaluation"]["never_seen"]["modes"] == never_seen["modes"]
    served = Recommender.load(bundle, text_model=str(text_model))
    assert served.default_alpha == metrics["sweep"]["alpha"]
    # the controls' defaults calibrated on this catalog are what the bundle now serves
    assert served.search.dedupe_threshold == metrics["dedupe"]["threshold"] == manifest["evaluation"]["dedupe_threshold"]
    assert served.search.session_fusion == metrics["sessions"]["recommended"]
    assert f"dedupe threshold {metrics['dedupe']['threshold']}" in printed
    card = model_card(manifest, "someone/bundle")
    assert "## Evaluation" in card and "| this bundle | image (features + title head) |" in card
    assert "Never-seen uploads" in card


def test_evaluate_without_setting_alpha_leaves_the_manifest_alone(bundle_dir: Path, text_model: Path,
                                                                  tmp_path: Path):
    from train.evaluation import evaluate

    bundle = tmp_path / "bundle"
    shutil.copytree(bundle_dir, bundle)
    before = (bundle / "manifest.json").read_text()
    results = evaluate(bundle, text_model=str(text_model), output_dir=tmp_path / "report", reupload_items=4,
                       verify_queries=4, examples=0, set_alpha=False, folds=2, holdout=False)
    assert (bundle / "manifest.json").read_text() == before
    assert (tmp_path / "report" / "report.md").is_file() and not (tmp_path / "report" / "examples.png").exists()
    assert results.baseline is None and results.sweep.cross_validated.folds == 2
    assert results.never_seen is None and "Never-seen" not in (tmp_path / "report" / "report.md").read_text()


def test_evaluate_names_the_columns_when_the_label_is_missing(bundle_dir: Path, text_model: Path, tmp_path: Path,
                                                             capsys):
    from train.__main__ import main

    code = main(["evaluate", "--bundle", str(bundle_dir), "--text-model", str(text_model), "--label", "genre",
                 "--output", str(tmp_path / "out"), "--no-set-alpha"])
    assert code == 2
    error = capsys.readouterr().err
    assert "genre" in error and "channel" in error


# ---------------------------------------------------------------- never-seen uploads

def test_build_settings_are_read_back_from_the_manifest(bundle_dir: Path):
    manifest = read_manifest(bundle_dir)
    settings = BuildSettings.of(manifest)
    assert settings.encoder_config == TEST_ENCODER and settings.title_head == TitleHeadConfig()
    assert (settings.training.epochs, settings.training.batch_size) == (2, 8)  # as conftest built it
    assert settings.search == SearchConfig() and settings.index_key is None
    # Manifests written before title_head.config kept the head's settings beside its file and dimension.
    legacy = {**manifest, "title_head": {"file": "title_head.safetensors", "dimension": 48, "folds": 3,
                                         "random_features": 256, "kernel_gamma": 4.0, "ridge": 0.3,
                                         "feature_share": 0.4}}
    assert BuildSettings.of(legacy).title_head == TitleHeadConfig(folds=3, random_features=256, kernel_gamma=4.0,
                                                                  ridge=0.3, feature_share=0.4)


def test_held_out_split_is_seeded_and_disjoint():
    from train.evaluation.base import EvaluationError
    from train.evaluation.never_seen import split_catalog

    held_out, kept = split_catalog(50, 0.2, seed=3)
    assert len(held_out) == 10 and len(kept) == 40 and set(held_out).isdisjoint(kept)
    assert sorted([*held_out, *kept]) == list(range(50))
    assert split_catalog(50, 0.2, seed=3)[0].tolist() == held_out.tolist()
    assert split_catalog(50, 0.2, seed=4)[0].tolist() != held_out.tolist()
    for fraction in (0.0, 1.0, 0.99):
        with pytest.raises(EvaluationError):
            split_catalog(50, fraction, seed=0)


def test_never_seen_videos_are_uploaded_to_a_bundle_built_without_them(bundle_dir: Path, text_model: Path,
                                                                       monkeypatch):
    from train.evaluation import EvaluationContext
    from train.evaluation.never_seen import NeverSeenEvaluator

    context = EvaluationContext.load(bundle_dir, text_model=str(text_model), ks=(5,))
    calls = []
    recommend = Recommender.recommend

    def spy(self, *args, **kwargs):
        served = recommend(self, *args, **kwargs)
        calls.append((self, kwargs, served))
        return served

    monkeypatch.setattr(Recommender, "recommend", spy)
    result = NeverSeenEvaluator(fraction=0.25, epochs=1, alpha=0.4, show_progress_bar=False)(context)

    catalog = context.recommender.catalog
    assert result.held_out == len(set(result.held_out_ids)) == 8 and result.catalog_items == 24
    bundles = {id(bundle): bundle for bundle, _, _ in calls}
    assert len(bundles) == 1 and id(context.recommender) not in bundles
    uploaded_to = next(iter(bundles.values()))
    assert len(uploaded_to) == 24 and set(result.held_out_ids).isdisjoint(uploaded_to.catalog.item_ids)
    # Built the evaluated bundle's way, but for the epochs asked.
    recorded, rebuilt = context.recommender.manifest, uploaded_to.manifest
    for section in ("config", "architecture"):
        assert rebuilt["image_encoder"][section] == recorded["image_encoder"][section]
    assert rebuilt["title_head"]["config"] == recorded["title_head"]["config"]
    assert rebuilt["search"] == recorded["search"] and rebuilt["text_model"] == recorded["text_model"]
    settings = [item.name for item in dataclasses.fields(TrainingConfig) if item.name != "epochs"]
    assert ({name: rebuilt["image_encoder"]["training"][name] for name in settings}
            == {name: recorded["image_encoder"]["training"][name] for name in settings})
    assert rebuilt["image_encoder"]["training"]["epochs"] == 1 == result.epochs

    # Every held-out video was asked three ways as an upload (its own bytes and title), never by item id.
    asked = [(kwargs["mode"], kwargs.get("image"), kwargs.get("title"), "item_id" in kwargs) for _, kwargs, _ in calls]
    expected = []
    for item_id in result.held_out_ids:
        row = catalog.row_of(item_id)
        image, title = catalog.image_bytes(row), catalog.titles[row]
        expected += [("image", image, None, False), ("text", None, title, False), ("hybrid", image, title, False)]
    assert asked == expected
    assert all(kwargs["alpha"] == 0.4 for _, kwargs, _ in calls)

    # The metrics are those of what the engine served: relevant = a catalog item of the query's channel.
    for mode_position, mode in enumerate(("image", "text", "hybrid")):
        precisions = []
        for query, item_id in enumerate(result.held_out_ids):
            _, _, served = calls[3 * query + mode_position]
            channel = catalog.metadata(catalog.row_of(item_id))["channel"]
            precisions.append(sum(r.metadata["channel"] == channel for r in served[:5]) / 5)
        assert result.modes[mode]["P@5"] == pytest.approx(np.mean(precisions))
    channels = [uploaded_to.catalog.metadata(row)["channel"] for row in range(24)]
    expected_random = np.mean([channels.count(catalog.metadata(catalog.row_of(i))["channel"]) / 24
                               for i in result.held_out_ids])
    assert result.reference.random["P@5"] == pytest.approx(expected_random)


# ---------------------------------------------------------------- live bundles

def test_evaluate_asks_and_finds_only_the_live_items_of_a_bundle_with_removals(bundle_dir: Path, text_model: Path,
                                                                              tmp_path: Path):
    from train.evaluation import evaluate
    from train.live import remove_items

    bundle = tmp_path / "bundle"
    shutil.copytree(bundle_dir, bundle)
    gone = ["vid000", "vid101", "vid102", "vid305"]
    remove_items(bundle, gone)
    report = evaluate(bundle, text_model=str(text_model), output_dir=tmp_path / "report", reupload_items=40,
                      verify_queries=28, examples=1, set_alpha=False, folds=2, holdout=False,
                      show_progress_bar=False)
    catalog = Recommender.load(bundle, text_model=str(text_model)).catalog
    removed = {catalog.lookup(item_id) for item_id in gone}
    assert report.info.queries == 28 and report.rankings.verification.queries == 28
    for ranked in report.rankings.ranked.values():
        assert len(ranked) == 28 and removed.isdisjoint(ranked.ravel().tolist())
    assert report.reupload.queries == 28 and removed.isdisjoint(report.reupload.rows.tolist())
    # Channel "Crafts" lost two of its 8 videos: its live queries have 5 others to find, among 27 candidates.
    crafts = [row for row in catalog.live_rows() if catalog.metadata(int(row))["channel"] == "Crafts"]
    assert len(crafts) == 6
    expected_random = np.mean([(8 - 1 - (channel == 0) - 2 * (channel == 1) - (channel == 3)) / 27
                               for channel in (0,) * 7 + (1,) * 6 + (2,) * 8 + (3,) * 7])
    assert report.rankings.reference.random["P@10"] == pytest.approx(expected_random)
