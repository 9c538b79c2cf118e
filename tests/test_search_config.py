"""The bundle's search settings: recorded at build, validated at load, overridable per process and
per call, and applied to the indexes; results keep their mode and notes when sliced."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import faiss
import numpy as np
import pytest

from recommender import BundleError, Recommender, SearchConfig
from recommender.data.bundle import MANIFEST, read_search_config
from recommender.search.index import build_index

from .synthetic import catalog_records


def with_manifest(tmp_path: Path, bundle_dir: Path, change) -> Path:
    """A copy of the bundle whose manifest ``change`` edited (the manifest has no checksum of itself)."""
    copy = tmp_path / "bundle"
    shutil.copytree(bundle_dir, copy)
    manifest = json.loads((copy / MANIFEST).read_text())
    change(manifest)
    (copy / MANIFEST).write_text(json.dumps(manifest))
    return copy


def test_a_build_records_the_search_settings_and_a_load_uses_them(recommender: Recommender) -> None:
    assert recommender.manifest["search"] == SearchConfig().to_dict()
    assert recommender.search == SearchConfig()
    assert recommender.info()["search"] == SearchConfig().to_dict()


@pytest.mark.parametrize(("values", "message"), [
    ({"alpha": 1.5}, "alpha must be a number from 0 to 1, got 1.5"),
    ({"alpha": "high"}, "alpha must be a number from 0 to 1"),
    ({"fusion": "max"}, "fusion must be one of weighted, rrf"),
    ({"candidate_factor": 0}, "candidate_factor must be a whole number of at least 1"),
    ({"hnsw_ef_search": 12.5}, "hnsw_ef_search must be a whole number"),
    ({"nprobe": 4}, "unknown search setting"),
])
def test_bad_settings_in_a_manifest_are_refused_at_load(tmp_path: Path, bundle_dir: Path, values: dict,
                                                        message: str) -> None:
    broken = with_manifest(tmp_path, bundle_dir, lambda manifest: manifest["search"].update(values))
    with pytest.raises(BundleError, match=rf"manifest.json has bad search settings: {message}"):
        Recommender.load(broken)


def test_bundles_from_before_the_search_section_keep_their_alpha(tmp_path: Path, bundle_dir: Path,
                                                                 recommender: Recommender) -> None:
    def legacy(manifest: dict) -> None:
        del manifest["search"]
        manifest["fusion"] = {"alpha": 0.3, "method": "rrf", "alpha_source": "train.evaluate"}

    old = Recommender.load(with_manifest(tmp_path, bundle_dir, legacy))
    assert old.search == SearchConfig(alpha=0.3, fusion="rrf")
    query = {"item_id": "vid003", "mode": "hybrid", "k": 6}
    assert ([r.item_id for r in old.recommend(**query)]
            == [r.item_id for r in recommender.recommend(**query, alpha=0.3, fusion="rrf")])


def test_load_overrides_fields_and_per_call_arguments_override_the_defaults(bundle_dir: Path,
                                                                          recommender: Recommender) -> None:
    tuned = Recommender.load(bundle_dir, search={"alpha": 0.2, "fusion": "rrf"})
    assert tuned.search == SearchConfig(alpha=0.2, fusion="rrf") and tuned.default_alpha == 0.2
    query = {"image": catalog_records()[26]["image"]["bytes"], "title": catalog_records()[1]["title"],
             "mode": "hybrid", "k": 6}
    by_default = [(r.item_id, r.score) for r in tuned.recommend(**query)]
    assert by_default == [(r.item_id, r.score) for r in recommender.recommend(**query, alpha=0.2, fusion="rrf")]
    assert by_default != [(r.item_id, r.score) for r in recommender.recommend(**query)]
    per_call = [(r.item_id, r.score) for r in tuned.recommend(**query, alpha=recommender.default_alpha,
                                                               fusion="weighted")]
    assert per_call == [(r.item_id, r.score) for r in recommender.recommend(**query)]
    with pytest.raises(ValueError, match="alpha must be"):
        Recommender.load(bundle_dir, search={"alpha": -1})
    with pytest.raises(TypeError):
        Recommender.load(bundle_dir, search={"ef_search": 10})


def test_candidate_depth_follows_the_config() -> None:
    config = SearchConfig(candidate_factor=3, min_candidates=5)
    assert config.candidate_depth(k=1, count=1000) == 6    # min_candidates, + the query item itself
    assert config.candidate_depth(k=10, count=1000) == 31  # 3 * k + 1
    assert config.candidate_depth(k=10, count=20) == 20    # never deeper than the catalog


def test_hybrid_searches_as_deep_as_the_config_says(bundle_dir: Path, recommender: Recommender) -> None:
    """With a pool of 2 per index, hybrid can only return items from the top 2 of either modality."""
    shallow = Recommender.load(bundle_dir, search={"candidate_factor": 1, "min_candidates": 1})
    text = recommender.recommend(item_id="vid101", mode="text", k=2)
    image = recommender.recommend(item_id="vid101", mode="image", k=2)
    hybrid = shallow.recommend(item_id="vid101", mode="hybrid", k=2)
    deep = recommender.recommend(item_id="vid101", mode="hybrid", k=len(recommender) - 1)
    assert {r.item_id for r in hybrid} <= {r.item_id for r in text} | {r.item_id for r in image}
    assert len(deep) == len(recommender) - 1


def test_index_depth_settings_reach_the_faiss_indexes() -> None:
    vectors = np.random.default_rng(0).standard_normal((300, 8)).astype(np.float32)
    faiss.normalize_L2(vectors)
    hnsw = build_index(vectors, "HNSW16,Flat", SearchConfig(hnsw_ef_search=77))
    assert faiss.downcast_index(hnsw).hnsw.efSearch == 77
    ivf = build_index(vectors, "IVF16,Flat", SearchConfig(ivf_nprobe=5))
    assert faiss.extract_index_ivf(ivf).nprobe == 5
    assert faiss.extract_index_ivf(build_index(vectors, "IVF16,Flat")).nprobe == 8  # max(8, nlist // 32)


def test_read_search_config_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"bundle/manifest.json: 'search' must be an object"):
        read_search_config({"search": [0.5]}, tmp_path / "bundle")


def test_a_slice_of_recommendations_keeps_mode_notes_and_rows(recommender: Recommender) -> None:
    results = recommender.recommend(title=catalog_records()[4]["title"], mode="hybrid", k=6)
    assert results.mode == "text" and results.notes  # hybrid with only a title falls back, and says so
    top = results[:3]
    assert type(top) is type(results) and top.mode == "text" and top.notes == results.notes
    assert top.rows.tolist() == results.rows[:3].tolist() and list(top) == list(results)[:3]
    assert "row" not in results[0].to_dict()
    assert [recommender.catalog.row_of(r.item_id) for r in results] == results.rows.tolist()
