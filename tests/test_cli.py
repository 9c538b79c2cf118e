"""Both command lines, run as a user runs them (``python -m ...`` in a subprocess) and in-process for the
many error paths: complete ``--help``, a real build, JSON output, and errors as one line with exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from recommender import Recommender
from recommender.__main__ import main as recommend_main
from train.__main__ import main as train_main

from .conftest import HubCache

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory, catalog_parquet: Path, text_model: Path, bundle_dir: Path,
        hub_cache: HubCache) -> dict[str, Run]:
    """Every subprocess this module needs, started together: each one spends most of its time importing torch."""
    work = tmp_path_factory.mktemp("cli")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HUB_CACHE": str(hub_cache.cache_dir)}
    commands = {
        "build_help": ["train", "build", "--help"],
        "recommend_help": ["recommender", "--help"],
        "build": ["train", "build", "--dataset", str(catalog_parquet), "--output", str(work / "bundle"),
                  "--text-model", str(text_model), "--epochs", "1", "--batch-size", "16", "--seed", "3",
                  "--no-title-head"],
        "recommend_hub": ["recommender", "--bundle", hub_cache.repo_id, "--revision", "main",
                          "--title", "paper plane tutorial", "--mode", "text", "-k", "4", "--json"],
        "recommend_error": ["recommender", "--bundle", str(work / "no-bundle"), "--title", "phone"],
        "build_error": ["train", "build", "--dataset", str(work / "missing.parquet"), "--output", str(work / "x"),
                        "--text-model", str(text_model)],
    }
    processes = {name: subprocess.Popen([sys.executable, "-m", *arguments], cwd=REPO_ROOT, env=env, text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for name, arguments in commands.items()}
    runs = {}
    for name, process in processes.items():
        stdout, stderr = process.communicate(timeout=600)
        runs[name] = Run(process.returncode, stdout, stderr)
    runs["output"] = Run(0, str(work / "bundle"), "")
    return runs


def test_build_help_is_complete(cli: dict[str, Run]) -> None:
    run = cli["build_help"]
    assert run.returncode == 0, run.stderr
    for option in ("--dataset", "--dataset-revision", "--output", "--overwrite", "--image-column", "--title-column",
                   "--id-column", "--limit", "--text-model", "--text-revision", "--text-prefix", "--encoder",
                   "--encoder-weights", "--epochs", "--batch-size", "--learning-rate", "--no-denoising",
                   "--time-budget", "--seed", "--no-title-head", "--index-key", "--alpha"):
        assert option in run.stdout
    assert "Ransaka/youtube_recommendation_data" in run.stdout and "intfloat/multilingual-e5-base" in run.stdout


def test_recommend_help_is_complete(cli: dict[str, Run]) -> None:
    run = cli["recommend_help"]
    assert run.returncode == 0, run.stderr
    for option in ("--bundle", "--revision", "--text-model", "--image", "--title", "--item-id", "--mode", "-k",
                   "--alpha", "--fusion", "--json", "Example:", "--where", "--diversity", "--max-per", "--no-dedupe",
                   "--offset", "--items", "--exclude"):
        assert option in run.stdout


def test_top_level_and_push_help(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        train_main(["--help"])
    assert exit_info.value.code == 0
    assert "build" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        train_main(["push", "--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    for option in ("repo_id", "--bundle", "--private", "--revision", "--token"):
        assert option in help_text


def test_build_command_makes_a_working_bundle(cli: dict[str, Run]) -> None:
    run = cli["build"]
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Built" in run.stdout and "32 items" in run.stdout
    bundle = Path(cli["output"].stdout)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["count"] == 32
    assert len(manifest["image_encoder"]["training"]["train_loss"]) == 1
    assert manifest["image_encoder"]["training"]["seed"] == 3
    assert (bundle / "training" / "loss_curve.png").stat().st_size > 0
    assert manifest["title_head"] is None and "title head" not in run.stdout  # --no-title-head
    assert not (bundle / "title_head.safetensors").exists()
    recommender = Recommender.load(bundle)
    assert recommender.title_head is None
    assert recommender.image_vectors.shape[1] == recommender.thumbnail_encoder.dimension
    assert recommender.recommend(title="paper plane tutorial", mode="text", k=1)[0].item_id == "vid103"
    image = recommender.catalog.image_bytes(5)
    assert recommender.recommend(image=image, mode="image", k=1).rows.tolist() == [5]


def test_recommend_prints_json_from_a_hub_repo(cli: dict[str, Run]) -> None:
    """Also proves the Hub path as users configure it: HF_HUB_CACHE and HF_HUB_OFFLINE from the environment."""
    run = cli["recommend_hub"]
    assert run.returncode == 0, run.stderr[-3000:]
    output = json.loads(run.stdout)
    assert output["mode"] == "text" and output["notes"] == []
    results = output["results"]
    assert [r["rank"] for r in results] == [1, 2, 3, 4]
    assert results[0]["item_id"] == "vid103" and results[0]["title"] == "paper plane tutorial"
    assert results[0]["metadata"] == {"channel": "Crafts", "views": 4000}
    assert all(r["image_score"] is None and isinstance(r["text_score"], float) for r in results)


@pytest.mark.parametrize("name", ["recommend_error", "build_error"])
def test_errors_exit_2_with_one_line_and_no_traceback(cli: dict[str, Run], name: str) -> None:
    run = cli[name]
    assert run.returncode == 2
    assert "Traceback" not in run.stderr
    assert "error: " in run.stderr
    expected = "no-bundle is neither a local folder" if name == "recommend_error" else "missing.parquet does not exist"
    assert expected in run.stderr


def test_recommend_table_output(bundle_dir: Path, capsys: pytest.CaptureFixture) -> None:
    assert recommend_main(["--bundle", str(bundle_dir), "--item-id", "vid300", "-k", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:5] == ["rank", "score", "image", "text", "item_id"]
    assert len(lines) == 4 and all(line.split()[0] == str(rank) for rank, line in enumerate(lines[1:], start=1))
    assert recommend_main(["--bundle", str(bundle_dir), "--title", "phone camera test", "-k", "2"]) == 0
    output = capsys.readouterr().out
    assert output.startswith("note: Hybrid needs both") and "phone camera test" in output


@pytest.mark.parametrize(("arguments", "message"), [
    (["--bundle", "no/such/folder", "--title", "phone"], "neither a local folder nor a Hub repo id"),
    (["--title", "   ", "--mode", "text"], "Title is empty"),
    (["--title", "phone", "-k", "0"], "k must be"),
    (["--title", "phone", "--alpha", "2"], "alpha"),
    (["--image", "/no/such/image.jpg", "--mode", "image"], "Image file not found"),
    (["--mode", "text"], "needs a title"),
])
def test_recommend_errors(bundle_dir: Path, capsys: pytest.CaptureFixture, arguments: list[str],
                          message: str) -> None:
    if "--bundle" not in arguments:
        arguments = ["--bundle", str(bundle_dir), *arguments]
    assert recommend_main(arguments) == 2
    last_line = capsys.readouterr().err.splitlines()[-1]  # after any model-loading progress bars
    assert last_line.startswith("error: ") and message in last_line


def test_recommend_usage_errors_exit_2(capsys: pytest.CaptureFixture) -> None:
    for arguments in (["--mode", "visual"], ["-k", "many"]):
        with pytest.raises(SystemExit) as exit_info:
            recommend_main(arguments)
        assert exit_info.value.code == 2
        assert "error:" in capsys.readouterr().err


def test_build_errors(tmp_path: Path, bundle_dir: Path, catalog_parquet: Path, text_model: Path,
                      capsys: pytest.CaptureFixture) -> None:
    common = ["--text-model", str(text_model), "--epochs", "1"]
    assert train_main(["build", "--dataset", str(catalog_parquet), "--output", str(bundle_dir), *common]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert train_main(["build", "--dataset", "nobody/no-such-dataset", "--output", str(tmp_path / "b"), *common]) == 2
    assert "error: Could not load dataset nobody/no-such-dataset" in capsys.readouterr().err
    assert train_main(["build", "--dataset", str(catalog_parquet), "--output", str(tmp_path / "b"),
                       "--limit", "0", *common]) == 2
    assert "error: No usable rows" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # a failed build leaves nothing behind, not even its staging folder


def test_overwrite_replaces_a_bundle_and_nothing_else(tmp_path: Path, bundle_dir: Path, catalog_parquet: Path,
                                                       text_model: Path, capsys: pytest.CaptureFixture) -> None:
    """--overwrite deletes the folder --output names (and <output>.old): only ever a bundle's."""
    import shutil

    from recommender.data.bundle import FILES

    def build(output: Path) -> int:
        return train_main(["build", "--dataset", str(catalog_parquet), "--output", str(output), "--overwrite",
                           "--text-model", str(text_model), "--no-title-head",
                           "--encoder-weights", str(bundle_dir / FILES["encoder_weights"])])

    home = tmp_path / "home"
    (home / "Documents").mkdir(parents=True)
    (home / "notes.txt").write_text("precious")
    assert build(home) == 2
    assert f"error: {home} is not a bundle folder" in capsys.readouterr().err
    assert (home / "notes.txt").read_text() == "precious" and (home / "Documents").is_dir()

    bundle = Path(shutil.copytree(bundle_dir, tmp_path / "bundle"))
    beside = tmp_path / "bundle.old"  # where the previous bundle waits during the swap
    beside.mkdir()
    (beside / "thesis.tex").write_text("precious")
    assert build(bundle) == 2
    assert f"error: {beside} is not a bundle folder" in capsys.readouterr().err
    assert (beside / "thesis.tex").read_text() == "precious"

    beside.joinpath("thesis.tex").unlink()
    assert json.loads((bundle / "manifest.json").read_text())["title_head"]  # the session bundle has a head
    (tmp_path / "empty").mkdir()
    assert build(bundle) == 0 and build(tmp_path / "empty") == 0  # a bundle, an empty folder: replaced
    assert json.loads((bundle / "manifest.json").read_text())["title_head"] is None  # the new build's
    assert (tmp_path / "empty" / "manifest.json").is_file()


def test_recommend_controls_reach_the_engine(bundle_dir: Path, capsys: pytest.CaptureFixture) -> None:
    """Every control flag gives what the same call of ``Recommender.recommend`` gives."""
    recommender = Recommender.load(bundle_dir)
    base = ["--bundle", str(bundle_dir), "--mode", "text", "-k", "4", "--json"]
    cases = [
        (["--item-id", "vid300", "--where", "channel=Crafts,Tech Reviews", "--where", "views!=2000"],
         {"item_id": "vid300", "where": {"channel": ["Crafts", "Tech Reviews"], "views": {"not": ["2000"]}}}),
        (["--item-id", "vid300", "--diversity", "0.8", "--max-per", "channel=1", "--no-dedupe"],
         {"item_id": "vid300", "diversity": 0.8, "max_per": {"channel": 1}, "dedupe": False}),
        (["--items", "vid000", "vid101", "--exclude", "vid001", "vid102", "--offset", "4"],
         {"items": ["vid000", "vid101"], "exclude": ["vid001", "vid102"], "offset": 4}),
    ]
    for arguments, call in cases:
        assert recommend_main([*base, *arguments]) == 0
        output = json.loads(capsys.readouterr().out)
        expected = recommender.recommend(mode="text", k=4, **call)
        assert [r["item_id"] for r in output["results"]] == [r.item_id for r in expected] and len(expected) > 0
        assert (output["offset"], output["more"]) == (expected.offset, expected.more)
        assert all(r["duplicates"] == [] for r in output["results"])
    assert recommend_main(["--bundle", str(bundle_dir), "--item-id", "vid300", "--mode", "text", "-k", "3"]) == 0
    assert capsys.readouterr().err.strip().endswith("more: --offset 3")


@pytest.mark.parametrize(("arguments", "message"), [
    (["--where", "colour=red"], "Unknown metadata column 'colour'"),
    (["--diversity", "3"], "diversity must be"),
    (["--max-per", "channel=0"], "must be a whole number of at least 1"),
    (["--offset", "-2"], "offset must be"),
    (["--items", "vid000", "nope"], "Unknown item id 'nope'"),
    (["--exclude", "nope"], "Unknown item id 'nope'"),
])
def test_recommend_control_errors(bundle_dir: Path, capsys: pytest.CaptureFixture, arguments: list[str],
                                  message: str) -> None:
    query = [] if "--items" in arguments else ["--item-id", "vid000"]
    assert recommend_main(["--bundle", str(bundle_dir), *query, *arguments]) == 2
    last_line = capsys.readouterr().err.splitlines()[-1]
    assert last_line.startswith("error: ") and message in last_line


def test_recommend_control_usage_errors_exit_2(capsys: pytest.CaptureFixture) -> None:
    for arguments in (["--where", "channel"], ["--max-per", "channel=two"], ["--where", "=x"]):
        with pytest.raises(SystemExit) as exit_info:
            recommend_main(arguments)
        assert exit_info.value.code == 2
        assert "error:" in capsys.readouterr().err
