"""The bundle: round trip, manifest, every way a bundle can be broken, and loading through the Hub cache."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import huggingface_hub
import numpy as np
import pytest
from huggingface_hub import ModelCard

from recommender import BundleError, Recommender
from recommender.data.bundle import (
    FILES,
    FORMAT_VERSION,
    MANIFEST,
    OPTIONAL_FILES,
    READABLE_VERSIONS,
    model_card,
    sha256_of,
    write_manifest,
)
from recommender.encoders.autoencoder import EncoderConfig
from recommender.encoders.titles import TitleEncoder, default_prefix
from recommender.search.config import SearchConfig
from recommender.search.index import build_index, save_index

from .conftest import TEST_ENCODER, HubCache
from .synthetic import catalog_records, write_tiny_text_model

#: Every file of the test bundle: the fixed ones, its title head, and one vector shard per modality
#: (which replace the single vector files of older bundles).
IMAGE_SHARD, TEXT_SHARD = "vectors/image-00000.npy", "vectors/text-00000.npy"
BUNDLE_FILES = sorted([*(name for role, name in FILES.items() if role not in ("image_vectors", "text_vectors")),
                       *OPTIONAL_FILES.values(), IMAGE_SHARD, TEXT_SHARD])


def queries() -> list[dict]:
    """A few queries of every kind, by catalog item, title, image and both."""
    records = catalog_records()
    return [
        {"item_id": "vid003", "mode": "hybrid", "k": 5},
        {"item_id": "vid205", "mode": "text", "k": 5},
        {"title": records[9]["title"], "mode": "text", "k": 5},
        {"image": records[17]["image"]["bytes"], "mode": "image", "k": 5},
        {"image": records[26]["image"]["bytes"], "title": records[1]["title"], "mode": "hybrid", "k": 6},
        {"image": records[26]["image"]["bytes"], "title": records[1]["title"], "mode": "hybrid", "k": 6,
         "fusion": "rrf", "alpha": 0.7},
    ]


def answers(recommender: Recommender) -> list[list[tuple]]:
    return [[(r.item_id, r.score, r.image_score, r.text_score) for r in recommender.recommend(**query)]
            for query in queries()]


def test_manifest_describes_the_bundle(bundle_dir: Path, catalog_parquet: Path, text_model: Path) -> None:
    manifest = json.loads((bundle_dir / MANIFEST).read_text())
    assert manifest["format_version"] == FORMAT_VERSION
    assert manifest["count"] == len(catalog_records())
    assert manifest["source"]["dataset"] == str(catalog_parquet)
    assert manifest["source"]["skipped_rows"] == 0
    assert manifest["text_model"]["name"] == str(text_model)
    assert manifest["text_model"]["dimension"] == 32
    assert EncoderConfig.from_dict(manifest["image_encoder"]["config"]) == TEST_ENCODER
    assert manifest["image_encoder"]["parameters"] > 0
    assert set(manifest["indexes"]) == {"image", "text"}
    assert manifest["search"] == SearchConfig().to_dict()
    assert manifest["files"] == {name: sha256_of(bundle_dir / name) for name in BUNDLE_FILES}
    head = manifest["title_head"]
    assert head["file"] == OPTIONAL_FILES["title_head"] and head["folds"] == 5 and head["random_features"] == 4096
    assert head["dimension"] == manifest["indexes"]["image"]["dimension"] == manifest["image_encoder"]["dimension"] + 32


def test_round_trip_gives_identical_vectors_and_rankings(tmp_path: Path, bundle_dir: Path,
                                                          recommender: Recommender) -> None:
    moved = tmp_path / "copied-bundle"
    shutil.copytree(bundle_dir, moved)
    again = Recommender.load(moved)
    assert np.array_equal(again.image_vectors, recommender.image_vectors)
    assert np.array_equal(again.text_vectors, recommender.text_vectors)
    assert answers(again) == answers(recommender)
    info = again.info()
    assert info["items"] == 32 and info["text_dimension"] == 32
    assert info["image_dimension"] == recommender.image_vectors.shape[1]


def test_stored_vectors_are_what_the_stored_models_compute(recommender: Recommender) -> None:
    """Build-time embedding (batched, from preprocessed arrays) and query-time embedding agree: a catalog
    thumbnail uploaded again gets its stored vector, title-head prediction included."""
    catalog = recommender.catalog
    text = recommender.title_encoder.encode(catalog.titles)
    assert np.allclose(text, recommender.text_vectors, atol=1e-5)
    images = recommender.encode_images([catalog.image_bytes(row) for row in range(len(catalog))])
    assert recommender.title_head is not None and images.shape[1] == recommender.title_head.dimension
    assert np.allclose(images, recommender.image_vectors, atol=2e-3)
    assert np.allclose(np.linalg.norm(recommender.image_vectors, axis=1), 1.0, atol=1e-5)


# ---- broken bundles -------------------------------------------------------------------------------------

@pytest.fixture
def broken(tmp_path: Path, bundle_dir: Path) -> Path:
    """A private copy of the bundle to damage."""
    return Path(shutil.copytree(bundle_dir, tmp_path / "bundle"))


def rewrite_checksums(folder: Path) -> None:
    """Re-sign the manifest after a change, so that only the content checks can catch it."""
    manifest = json.loads((folder / MANIFEST).read_text())
    for key in ("format_version", "files"):
        manifest.pop(key)
    write_manifest(folder, manifest)


def test_missing_manifest(broken: Path) -> None:
    (broken / MANIFEST).unlink()
    with pytest.raises(BundleError, match=r"manifest.json is missing.*python -m train build"):
        Recommender.load(broken)


def test_not_a_bundle_at_all(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="neither a local folder nor a Hub repo id"):
        Recommender.load(tmp_path / "nothing" / "here")


def test_manifest_that_is_not_json(broken: Path) -> None:
    (broken / MANIFEST).write_text("{not json")
    with pytest.raises(BundleError, match=r"manifest.json is not valid JSON"):
        Recommender.load(broken)


def test_wrong_format_version(broken: Path) -> None:
    manifest = json.loads((broken / MANIFEST).read_text())
    manifest["format_version"] = max(READABLE_VERSIONS) + 1
    (broken / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=rf"manifest.json has format version {max(READABLE_VERSIONS) + 1}.*Rebuild"):
        Recommender.load(broken)


@pytest.mark.parametrize("name", BUNDLE_FILES)
def test_missing_file_is_named(broken: Path, name: str) -> None:
    (broken / name).unlink()
    with pytest.raises(BundleError, match=rf"{name} is missing"):
        Recommender.load(broken)


@pytest.mark.parametrize("name", BUNDLE_FILES)
def test_corrupted_file_fails_its_checksum(broken: Path, name: str) -> None:
    data = bytearray((broken / name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (broken / name).write_bytes(bytes(data))
    with pytest.raises(BundleError, match=rf"{name} is corrupted.*checksum"):
        Recommender.load(broken)


@pytest.mark.parametrize("name", BUNDLE_FILES)
def test_file_without_a_checksum_is_refused(broken: Path, name: str) -> None:
    """A manifest that forgot a file must not let that file through unverified."""
    manifest = json.loads((broken / MANIFEST).read_text())
    del manifest["files"][name]
    (broken / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=rf"no checksum for {name}"):
        Recommender.load(broken)
    assert len(Recommender.load(broken, verify=False)) > 0  # the explicit opt-out still loads


@pytest.mark.parametrize("name", BUNDLE_FILES)
def test_garbage_file_with_a_valid_checksum_is_named(broken: Path, name: str) -> None:
    """A bundle written wrong in the first place: the checksum matches, the content does not load."""
    (broken / name).write_bytes(b"\x00\x01garbage" * 64)
    rewrite_checksums(broken)
    with pytest.raises(BundleError, match=name):
        Recommender.load(broken)


def test_vectors_that_miss_a_row(broken: Path, recommender: Recommender) -> None:
    np.save(broken / IMAGE_SHARD, recommender.image_vectors[:-1])
    rewrite_checksums(broken)
    with pytest.raises(BundleError, match=r"image-00000.npy holds \(31, \d+\).*\(32, dim\)"):
        Recommender.load(broken)


def test_index_that_misses_a_vector(broken: Path, recommender: Recommender) -> None:
    save_index(build_index(recommender.text_vectors[:-1]), broken / FILES["text_index"])
    rewrite_checksums(broken)
    with pytest.raises(BundleError, match=r"text.faiss holds 31 vectors.*32 items"):
        Recommender.load(broken)


def test_manifest_count_that_disagrees_with_the_catalog(broken: Path) -> None:
    manifest = json.loads((broken / MANIFEST).read_text())
    manifest["count"] = 33
    (broken / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"catalog.parquet has 32 items.*says 33"):
        Recommender.load(broken)


def test_encoder_config_that_does_not_fit_the_weights(broken: Path) -> None:
    config = json.loads((broken / FILES["encoder_config"]).read_text())
    config["latent_channels"] += 8
    (broken / FILES["encoder_config"]).write_text(json.dumps(config))
    rewrite_checksums(broken)
    with pytest.raises(BundleError, match=r"thumbnail_encoder.safetensors do not load.*thumbnail_encoder.json"):
        Recommender.load(broken)


def test_text_model_of_another_dimension(tmp_path: Path, bundle_dir: Path) -> None:
    other = write_tiny_text_model(tmp_path / "wide-model", dimension=48)
    with pytest.raises(BundleError, match=r"48-d.*text_vectors.npy is 32-d.*rebuild the bundle") as caught:
        Recommender.load(bundle_dir, text_model=str(other))
    assert str(other) in str(caught.value)


def test_text_model_that_cannot_be_loaded(broken: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(BundleError, match="no-such-model"):
        Recommender.load(broken, text_model=str(missing))
    manifest = json.loads((broken / MANIFEST).read_text())
    manifest["text_model"]["name"] = str(missing)
    (broken / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"no-such-model.*manifest.json"):
        Recommender.load(broken)



@pytest.mark.parametrize(("recorded", "copy_name"), [("query: ", "local-copy"), ("", "multilingual-e5-copy")])
def test_an_overriding_text_model_keeps_the_manifests_prefix(tmp_path: Path, bundle_dir: Path, text_model: Path,
                                                             recorded: str, copy_name: str) -> None:
    """--text-model points at a local copy: the folder's name must not decide the prefix (a copy of
    multilingual-e5 in ./local-copy still needs "query: "; any path with "e5" in it must not get it)."""
    copy = tmp_path / "bundle"
    shutil.copytree(bundle_dir, copy)
    manifest = json.loads((copy / MANIFEST).read_text())
    manifest["text_model"]["prefix"] = recorded
    (copy / MANIFEST).write_text(json.dumps(manifest))
    local_model = shutil.copytree(text_model, tmp_path / copy_name)
    loaded = Recommender.load(copy, text_model=str(local_model))
    assert loaded.title_encoder.prefix == recorded
    title = "paper plane tutorial"
    bare = TitleEncoder(str(local_model), prefix="")
    np.testing.assert_allclose(loaded.encode_title(title)[0], bare.encode([recorded + title])[0], atol=1e-5)


def test_only_a_hub_id_gets_a_guessed_prefix_at_build(tmp_path: Path) -> None:
    assert default_prefix("intfloat/multilingual-e5-base") == "query: "
    assert default_prefix("sentence-transformers/all-MiniLM-L6-v2") == ""
    local = tmp_path / "models" / "e5-base"
    local.mkdir(parents=True)
    assert default_prefix(str(local)) == ""  # a folder's name proves nothing: pass --text-prefix
    assert default_prefix("/srv/models/some-e5-like-name") == ""

# ---- the Hub: snapshot_download against a pre-populated cache, networking off ----------------------------

@pytest.fixture
def offline_hub(monkeypatch: pytest.MonkeyPatch, hub_cache: HubCache) -> HubCache:
    """huggingface_hub reads HF_HUB_CACHE / HF_HUB_OFFLINE at import, so set both the variables and its constants."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(hub_cache.cache_dir))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub_cache.cache_dir))
    return hub_cache


def test_load_from_the_hub_cache(offline_hub: HubCache, recommender: Recommender) -> None:
    from_hub = Recommender.load(offline_hub.repo_id)
    assert from_hub.default_alpha == SearchConfig.alpha != 0.2  # 0.2 is the old commit's
    assert np.array_equal(from_hub.image_vectors, recommender.image_vectors)
    assert answers(from_hub) == answers(recommender)
    same = Recommender.load(offline_hub.repo_id, revision="main")
    assert same.default_alpha == SearchConfig.alpha


def test_pinned_revision_resolves_to_its_snapshot(offline_hub: HubCache) -> None:
    pinned = Recommender.load(offline_hub.repo_id, revision=offline_hub.old_commit)
    assert pinned.default_alpha == 0.2
    assert pinned.recommend(item_id="vid000", mode="hybrid", k=3).mode == "hybrid"


def test_hub_errors_name_the_repo(offline_hub: HubCache) -> None:
    with pytest.raises(BundleError, match=r"someuser/somebundle@v2"):
        Recommender.load(offline_hub.repo_id, revision="v2")
    with pytest.raises(BundleError, match=r"someuser/other-bundle"):
        Recommender.load("someuser/other-bundle")


def test_incomplete_hub_snapshot(tmp_path: Path, offline_hub: HubCache, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    shutil.copytree(offline_hub.cache_dir, cache, symlinks=True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    snapshot = cache / "models--someuser--somebundle" / "snapshots" / offline_hub.main_commit
    (snapshot / FILES["text_index"]).unlink()
    with pytest.raises(BundleError, match="text.faiss"):
        Recommender.load(offline_hub.repo_id)


def test_model_card(bundle_dir: Path) -> None:
    manifest = json.loads((bundle_dir / MANIFEST).read_text())
    manifest["source"]["dataset"] = "Ransaka/youtube_recommendation_data"
    manifest["text_model"]["name"] = "intfloat/multilingual-e5-base"
    manifest["evaluation"] = {"summary": "hit rate@8: 0.61 (hybrid)"}
    text = model_card(manifest, "someuser/somebundle")
    card = ModelCard(text)
    assert card.data.library_name == "faiss"
    assert card.data.datasets == ["Ransaka/youtube_recommendation_data"]
    assert card.data.base_model == "intfloat/multilingual-e5-base"
    assert "video-recommendation" in card.data.tags
    assert card.text.lstrip().startswith("# someuser/somebundle")
    assert 'Recommender.load("someuser/somebundle")' in text
    assert "a catalog of 32 videos" in text
    assert f"{manifest['image_encoder']['parameters']:,} parameters" in text
    assert "## Evaluation" in text and "hit rate@8: 0.61" in text
    assert "| title head | predicts titles from thumbnail features: kernel ridge, 4,096 random features" in text
    manifest["title_head"] = None
    assert "title head" not in model_card(manifest, "someuser/somebundle")
    local = ModelCard(model_card(json.loads((bundle_dir / MANIFEST).read_text()), "someuser/somebundle"))
    assert not local.data.datasets and not local.data.base_model  # local paths are not Hub ids
    assert "## Evaluation" not in local.text
