"""Peak memory of the app under concurrent maximal uploads: what the decoding cap bounds.

Starts ``python app.py`` on a bundle and waits until it has settled, sends a few ordinary queries,
resets the server's peak-memory mark, then has ``--callers`` clients upload at the same moment the
largest image the app decodes: an RGBA PNG of ``MAX_IMAGE_PIXELS`` in 16:9 (transparency makes
decoding keep the most full-size copies: RGBA, the black background, the composite, RGB). Several
rounds. Reports the server's resident memory before the burst and its peak during it (VmHWM, reset
through ``/proc/<pid>/clear_refs`` first; else the highest VmRSS polled every few milliseconds).

    python -m benchmarks.upload_memory --bundle /tmp/sec-bundle --text-model $MINILM
    python -m benchmarks.upload_memory --bundle ... --megapixels 40   # an image above the cap: refused
"""

from __future__ import annotations

import argparse
import io
import math
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from recommender.data.images import MAX_IMAGE_PIXELS

from .common import free_port
from .latency_gradio import app_command, started


def rgba_png(pixels: int) -> bytes:
    """A 16:9 RGBA PNG of at most ``pixels`` pixels: smooth gradients with a varying alpha, so it stays
    far below the upload size cap however many pixels it has."""
    width = int(math.sqrt(pixels * 16 / 9))
    height = pixels // width
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    channels = [np.broadcast_to(x, (height, width)), np.broadcast_to(y, (height, width)),
                np.broadcast_to((x + y) / 2, (height, width)), np.broadcast_to(255 - y / 2, (height, width))]
    image = Image.fromarray(np.stack(channels, axis=-1).astype(np.uint8), "RGBA")
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def memory_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise KeyError(field)


def reset_peak(pid: int) -> bool:
    """Reset the process's VmHWM to its current RSS (Linux; allowed for our own child)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def burst(url: str, image: Path, callers: int, rounds: int) -> tuple[int, int, float]:
    """``callers`` clients upload ``image`` at once, ``rounds`` times; (answered, refused, seconds)."""
    from gradio_client import Client, handle_file

    clients = [Client(url, verbose=False, download_files=False) for _ in range(callers)]
    outcomes: list[bool] = []
    lock = threading.Lock()
    for _ in range(rounds):
        start = threading.Barrier(callers)

        def send(client, start: threading.Barrier) -> None:
            start.wait()
            try:
                client.predict(image=handle_file(image), mode="image", k=5, api_name="/recommend")
                answered = True
            except Exception:  # noqa: BLE001 - an image over the cap is refused, and that is counted
                answered = False
            with lock:
                outcomes.append(answered)

        began = time.perf_counter()
        threads = [threading.Thread(target=send, args=(client, start)) for client in clients]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return sum(outcomes), len(outcomes) - sum(outcomes), time.perf_counter() - began


def measure(bundle: Path, text_model: str | None, pixels: int, callers: int = 8, rounds: int = 3) -> dict:
    """Resident memory of a fresh app before and during bursts of ``callers`` concurrent uploads."""
    from gradio_client import Client

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    with tempfile.TemporaryDirectory() as folder, started(app_command(bundle, text_model, port), url) as process:
        image = Path(folder) / "maximal.png"
        image.write_bytes(rgba_png(pixels))
        png_bytes = image.stat().st_size
        warm = Client(url, verbose=False, download_files=False)
        for title in ("paper plane", "phone review", "cooking at home"):
            warm.predict(title=title, mode="text", k=5, api_name="/recommend")
        settled_kib = memory_kib(process.pid, "VmRSS")
        exact = reset_peak(process.pid)
        polled = [settled_kib]
        stop = threading.Event()

        def poll() -> None:
            while not stop.is_set():
                polled.append(memory_kib(process.pid, "VmRSS"))
                time.sleep(0.005)

        poller = threading.Thread(target=poll)
        poller.start()
        answered, refused, seconds = burst(url, image, callers, rounds)
        stop.set()
        poller.join()
        peak_kib = max(memory_kib(process.pid, "VmHWM"), max(polled)) if exact else max(polled)
    return {"pixels": pixels, "png_bytes": png_bytes, "callers": callers, "rounds": rounds,
            "answered": answered, "refused": refused, "rss_before_mib": settled_kib / 1024,
            "peak_mib": peak_kib / 1024, "growth_mib": (peak_kib - settled_kib) / 1024,
            "peak_from": "VmHWM" if exact else "polled VmRSS", "seconds_last_round": seconds}


def table(result: dict) -> str:
    return "\n".join([
        (f"{result['callers']} concurrent uploads x {result['rounds']} rounds of a {result['pixels'] / 1e6:.1f} MP "
         f"RGBA PNG ({result['png_bytes'] / 2**20:.1f} MiB): {result['answered']} answered, "
         f"{result['refused']} refused"),
        (f"server RSS before: {result['rss_before_mib']:.0f} MiB; peak during ({result['peak_from']}): "
         f"{result['peak_mib']:.0f} MiB (+{result['growth_mib']:.0f} MiB)"),
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, required=True, help="bundle folder to serve with python app.py")
    parser.add_argument("--text-model", help="text model (local path for offline use)")
    parser.add_argument("--callers", type=int, default=8, help="concurrent uploads (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="bursts (default: %(default)s)")
    parser.add_argument("--megapixels", type=float, default=MAX_IMAGE_PIXELS / 1e6,
                        help="image size (default: the app's cap, %(default).1f)")
    args = parser.parse_args(argv)
    print(table(measure(args.bundle, args.text_model, int(args.megapixels * 1e6), args.callers, args.rounds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
