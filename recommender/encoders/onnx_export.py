"""ONNX exports run in a child process, never in the process that serves.

``torch.onnx.export`` (dynamo) traces with process-wide state switched on, such as the FX node
metadata that every ``torch.compiler.disable``-wrapped call touches. Other threads' torch code runs
through that state while an export runs: a title model loaded during an export (a hot swap, a
first-start build) failed with ``KeyError: 'custom'``, and two exports at once failed each other.
The app exports while it serves, so a child does it. The child rebuilds the model from what the
parent loaded it from (a sentence-transformers id or folder, or the autoencoder's safetensors and
JSON config), writes the ``.onnx`` file and exits. The parent then checks the file against its own
PyTorch vectors before it uses it (:mod:`.titles_onnx`, :mod:`.thumbnails_onnx`).

The child is ``python -m recommender.encoders.onnx_export title|thumbnail ...``, started by
:func:`exported_session`.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

#: A child that has not written its file by then is stopped (an export takes 10-60 s on 2 busy cores).
EXPORT_TIMEOUT_S = 900
#: The loggers whose INFO lines (hundreds of graph-pass messages) are muted in the child.
EXPORTER_LOGGERS = ("onnxscript", "onnx_ir", "torch.onnx", "torch.export")


class OnnxExportError(RuntimeError):
    """The model could not be exported, or the export does not reproduce PyTorch's vectors."""


def _cpu_session(path: Path, threads: int):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def exported_session(arguments: list[str], threads: int = 1, timeout: float = EXPORT_TIMEOUT_S):
    """Run this module's command line with ``arguments`` in a new Python process and return an ONNX
    Runtime CPU session of the model it wrote, on ``threads`` intra-op threads (the app runs one per
    query, startup.py); ``run`` is thread-safe, so concurrent queries share it.

    Raises :class:`OnnxExportError` with the child's last error line when it fails, runs past
    ``timeout`` seconds or writes nothing it can load. The child reads models offline: the parent has
    them already. Its file is gone on return: the session holds the graph.
    """
    package_root = str(Path(__file__).resolve().parents[2])
    environment = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
                       PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])))
    with tempfile.TemporaryDirectory(prefix="onnx-export-") as folder:
        output = Path(folder) / "model.onnx"
        command = [sys.executable, "-m", __name__, *arguments, f"--output={output}"]
        try:
            finished = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=timeout,
                                      check=False, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise OnnxExportError(f"the export process ran past {timeout:.0f} s and was stopped.") from None
        if finished.returncode != 0:
            lines = [line for line in finished.stderr.splitlines() if line.strip()]
            raise OnnxExportError("the export process failed: "
                                  f"{lines[-1] if lines else f'exit code {finished.returncode}'}")
        if not output.is_file():
            raise OnnxExportError("the export process wrote no model.")
        try:
            return _cpu_session(output, threads)
        except Exception as error:  # onnxruntime raises its own types; all mean "no export"
            raise OnnxExportError(f"ONNX Runtime cannot load the export: {type(error).__name__}: {error}") from error


def _export_title(arguments: argparse.Namespace) -> None:
    from sentence_transformers import SentenceTransformer

    from .titles_onnx import write_title_onnx

    model = SentenceTransformer(arguments.model, revision=arguments.revision, device="cpu", trust_remote_code=False)
    write_title_onnx(model, arguments.example, Path(arguments.output))


def _export_thumbnail(arguments: argparse.Namespace) -> None:
    from .autoencoder import load_autoencoder
    from .thumbnails_onnx import write_thumbnail_onnx

    write_thumbnail_onnx(load_autoencoder(Path(arguments.weights), Path(arguments.config)), Path(arguments.output))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recommender.encoders.onnx_export",
                                     description="Export a query encoder to ONNX (the app runs this itself).")
    kinds = parser.add_subparsers(dest="kind", required=True)
    title = kinds.add_parser("title", help="a sentence-transformers model, pooling and normalisation included")
    title.add_argument("--model", required=True, help="model id or folder, as the parent loaded it")
    title.add_argument("--revision", default=None)
    title.add_argument("--example", required=True, help="a prefixed title to trace with")
    thumbnail = kinds.add_parser("thumbnail", help="the autoencoder's embed")
    thumbnail.add_argument("--weights", required=True, help="safetensors written by save_autoencoder")
    thumbnail.add_argument("--config", required=True, help="its JSON config")
    for kind in (title, thumbnail):
        kind.add_argument("--output", required=True, help="the .onnx file to write")
    arguments = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)  # tracing is single-threaded; the parent's queries keep the cores
    warnings.simplefilter("ignore")  # this process only exports: its warnings would only bury the error line
    for name in EXPORTER_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        (_export_title if arguments.kind == "title" else _export_thumbnail)(arguments)
    except Exception as error:  # noqa: BLE001 - one line for the parent's log, not a traceback
        print(f"{type(error).__name__}: {error}".replace("\n", " "), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
