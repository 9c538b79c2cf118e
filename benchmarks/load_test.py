"""Load test: concurrent ``gradio_client`` callers sending mixed-mode requests to the app.

Passes when no request fails and every answer under load equals the answer to the same query
sent alone (same items in the same order, scores within 1e-5): concurrency must not leak state
between requests. Exits non-zero otherwise.

    python -m benchmarks.load_test --bundle /tmp/realbundle --text-model PATH      # 8 callers x 25 requests
    python -m benchmarks.load_test --url http://127.0.0.1:7860/ --callers 16
    python -m benchmarks.load_test --bundle ... --echo-rounds 5      # and requests/s against the echo app
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .common import percentiles
from .latency_gradio import Query, add_app_arguments, app_from, sample_queries

SCORE_TOLERANCE = 1e-5
#: Seconds a client waits for an answer: on a saturated shared machine gradio_client's default (a few
#: seconds while connecting) ended whole runs; a slow answer is measured, not an error.
CLIENT_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Request:
    kind: str
    query: Query


def call(client, request: Request, k: int) -> dict:
    """Send one request; its JSON answer."""
    from gradio_client import handle_file

    query = request.query
    calls: dict[str, Callable[[], tuple]] = {
        "text": lambda: client.predict(title=query.title, mode="text", k=k, api_name="/recommend"),
        "image": lambda: client.predict(image=handle_file(query.image), mode="image", k=k, api_name="/recommend"),
        "hybrid": lambda: client.predict(image=handle_file(query.image), title=query.title, mode="hybrid", k=k,
                                         api_name="/recommend"),
        "hybrid rrf": lambda: client.predict(image=handle_file(query.image), title=query.title, mode="hybrid", k=k,
                                             fusion="rrf", alpha=0.3, api_name="/recommend"),
        "item text": lambda: client.predict(item_id=query.item_id, mode="text", k=k, api_name="/recommend_item"),
        "item image": lambda: client.predict(item_id=query.item_id, mode="image", k=k, api_name="/recommend_item"),
        "item hybrid": lambda: client.predict(item_id=query.item_id, mode="hybrid", k=k, api_name="/recommend_item"),
    }
    return calls[request.kind]()[1]


KINDS = ("text", "image", "hybrid", "hybrid rrf", "item text", "item image", "item hybrid")


def plan(queries: list[Query], callers: int, per_caller: int) -> list[list[Request]]:
    """Each caller's requests: kinds and queries spread so that callers send different things at once."""
    return [[Request(KINDS[(caller + step) % len(KINDS)], queries[(caller * per_caller + step) % len(queries)])
             for step in range(per_caller)] for caller in range(callers)]


def same(answer: dict, reference: dict) -> float | None:
    """Largest score difference if the answers rank the same items in the same order, else ``None``."""
    ids = [r["item_id"] for r in answer["results"]]
    if ids != [r["item_id"] for r in reference["results"]] or answer["mode"] != reference["mode"]:
        return None
    return max((abs(a["score"] - b["score"]) for a, b in zip(answer["results"], reference["results"], strict=True)),
               default=0.0)


@dataclass
class Outcome:
    request: Request
    seconds: float
    answer: dict | None = None
    error: str | None = None


def client_for(url: str):
    from gradio_client import Client

    return Client(url, verbose=False, download_files=False, httpx_kwargs={"timeout": CLIENT_TIMEOUT_S})


def run_concurrently(url: str, requests: list[list[Request]], k: int,
                     on_start: Callable[[], None] | None = None) -> tuple[list[Outcome], float]:
    """All callers at once, each with its own client, released together; outcomes and wall time (from the
    release: connecting the clients, which fetches the app's whole page config, is not timed).
    ``on_start`` is called at the release."""
    clients = [client_for(url) for _ in requests]
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    start = threading.Barrier(len(requests) + 1)

    def caller(client, mine: list[Request]) -> None:
        start.wait()
        for request in mine:
            began = time.perf_counter()
            try:
                outcome = Outcome(request, 0.0, answer=call(client, request, k))
            except Exception as error:  # noqa: BLE001 - every failure is counted and shown
                outcome = Outcome(request, 0.0, error=f"{type(error).__name__}: {error}")
            outcome.seconds = time.perf_counter() - began
            with lock:
                outcomes.append(outcome)

    threads = [threading.Thread(target=caller, args=(client, mine)) for client, mine in zip(clients, requests,
                                                                                             strict=True)]
    for thread in threads:
        thread.start()
    if on_start is not None:
        on_start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    return outcomes, time.perf_counter() - began


def report(outcomes: list[Outcome], references: dict[Request, dict], wall: float, callers: int) -> bool:
    """Print a table per kind of request; ``True`` when there were no errors and no differences."""
    print(f"{'request':<13}{'sent':>6}{'errors':>8}{'differ':>8}{'max |Δscore|':>14}{'p50 ms':>9}{'p95 ms':>9}")
    print("-" * 67)
    ok = True
    for kind in KINDS:
        mine = [o for o in outcomes if o.request.kind == kind]
        errors = [o for o in mine if o.error]
        diffs = [same(o.answer, references[o.request]) for o in mine if o.answer is not None]
        differ = sum(d is None for d in diffs)
        largest = max((d for d in diffs if d is not None), default=0.0)
        stats = percentiles([o.seconds for o in mine])
        print(f"{kind:<13}{len(mine):>6}{len(errors):>8}{differ:>8}{largest:>14.2e}{stats['p50_ms']:>9.0f}"
              f"{stats['p95_ms']:>9.0f}")
        ok &= not errors and not differ
    failed = [o for o in outcomes if o.error]
    for outcome in failed[:5]:
        print(f"error ({outcome.request.kind}, {outcome.request.query.item_id}): {outcome.error}")
    print(f"\n{len(outcomes)} requests from {callers} concurrent callers in {wall:.1f} s "
          f"({len(outcomes) / wall:.1f} requests/s): {'PASS' if ok else 'FAIL'}")
    return ok


def references_for(url: str, requests: list[list[Request]], k: int) -> dict[Request, dict]:
    """Every distinct request sent alone, one after another: the answers concurrency must reproduce."""

    alone = client_for(url)
    distinct = {request for mine in requests for request in mine}
    print(f"Sending {len(distinct)} distinct requests alone for reference...", flush=True)
    return {request: call(alone, request, k) for request in distinct}


def warm(url: str, requests: list[list[Request]], k: int) -> None:
    """Send every distinct request once, one after another, as :func:`references_for` did to the app: both
    servers start the timed rounds with the same requests behind them (first calls, queue history)."""
    client = client_for(url)
    for request in {request for mine in requests for request in mine}:
        call(client, request, k)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux ``/proc``), all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def against_echo(app_url: str, echo_url: str, requests: list[list[Request]], references: dict[Request, dict],
                 k: int, rounds: int, pids: dict[str, int] | None = None) -> dict:
    """Requests per second of the app and of the echo app (same endpoints, inputs and outputs, no
    recommending), the same concurrent requests in alternating order, ``rounds`` times each. The echo
    app is first sent every request once, as the app was for ``references``.

    The ratio of each round compares two runs seconds apart, so a machine shared with other work
    moves both; the median over rounds and the spread are reported. Every app answer is checked
    against ``references``. With the servers' ``pids``, also the CPU time each server and the
    clients (this process) spent per request from the release of the callers (connecting them is
    not counted): where the difference goes.
    """
    warm(echo_url, requests, k)
    rates: dict[str, list[float]] = {"app": [], "echo": []}
    cpu_ms: dict[str, list[float]] = {"app": [], "echo": [], "app clients": [], "echo clients": []}
    errors = {"app": 0, "echo": 0}
    differ = 0
    load = [os.getloadavg()[0]]  # other work on the machine moves both apps, but is worth knowing
    for round_ in range(rounds):
        for name in ("app", "echo") if round_ % 2 == 0 else ("echo", "app"):
            before: dict[str, float] = {}

            def started(name: str = name, before: dict[str, float] = before) -> None:
                before.update(server=cpu_seconds(pids[name]) if pids else 0.0, clients=sum(os.times()[:2]))

            outcomes, wall = run_concurrently(app_url if name == "app" else echo_url, requests, k, started)
            if pids:
                cpu_ms[name].append(1000 * (cpu_seconds(pids[name]) - before["server"]) / len(outcomes))
                cpu_ms[f"{name} clients"].append(1000 * (sum(os.times()[:2]) - before["clients"]) / len(outcomes))
            rates[name].append(len(outcomes) / wall)
            errors[name] += sum(outcome.error is not None for outcome in outcomes)
            if name == "app":
                differ += sum(same(o.answer, references[o.request]) is None for o in outcomes if o.answer)
        load.append(os.getloadavg()[0])
        print(f"round {round_ + 1}: app {rates['app'][-1]:.1f} requests/s, echo {rates['echo'][-1]:.1f} "
              f"requests/s, ratio {rates['app'][-1] / rates['echo'][-1]:.3f}", flush=True)
    ratios = [app / echo for app, echo in zip(rates["app"], rates["echo"], strict=True)]
    return {"callers": len(requests), "requests": sum(map(len, requests)), "rounds": rounds,
            "app_rps": float(np.median(rates["app"])), "echo_rps": float(np.median(rates["echo"])),
            "ratio_median": float(np.median(ratios)), "ratio_min": min(ratios), "ratio_max": max(ratios),
            "ratios": ratios, "app_errors": errors["app"], "echo_errors": errors["echo"], "differ": differ,
            "load_average": {"min": min(load), "max": max(load), "per_round": load},
            "cpu_ms_per_request": {name: float(np.median(values)) for name, values in cpu_ms.items() if values}}


def echo_table(result: dict) -> str:
    return (f"{result['callers']} callers x {result['requests'] // result['callers']} requests, {result['rounds']} "
            f"rounds: app {result['app_rps']:.1f} requests/s, echo {result['echo_rps']:.1f} requests/s (medians); "
            f"app / echo {result['ratio_median']:.3f} (median; rounds {result['ratio_min']:.3f}-"
            f"{result['ratio_max']:.3f}); errors app {result['app_errors']}, echo {result['echo_errors']}; "
            f"answers differing from sequential ones: {result['differ']}; load average (1 min) "
            f"{result['load_average']['min']:.1f}-{result['load_average']['max']:.1f} during the rounds"
            + "".join(f"\nCPU per request, {name}: {ms:.1f} ms (median)"
                      for name, ms in result.get("cpu_ms_per_request", {}).items()))


def suite_section(bundle: Path, text_model: str | None, results, callers: int, per_caller: int, rounds: int,
                  k: int = 10, query_cache: int = 0) -> dict:
    """``python -m benchmarks`` section ``throughput``: the app against the echo app, side by side;
    first, in this process, the server CPU of thumbnail and hybrid queries on each thumbnail backend."""
    from . import thumbnail_backends
    from .common import Row, free_port
    from .latency_gradio import app_command, echo_command, started

    backends = thumbnail_backends.measure(bundle, text_model, queries=30, rounds=5)
    print(thumbnail_backends.tables(backends), flush=True)
    results.add(*thumbnail_backends.suite_rows(backends))
    results.raw["thumbnail_backends"] = backends
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per HTTP request: thousands per round
    app_port, echo_port = free_port(), free_port()
    app_url, echo_url = f"http://127.0.0.1:{app_port}/", f"http://127.0.0.1:{echo_port}/"
    with started(app_command(bundle, text_model, app_port, query_cache), app_url) as app, \
            started(echo_command(echo_port), echo_url) as echo, tempfile.TemporaryDirectory() as folder:
        requests = plan(sample_queries(app_url, min(callers * per_caller, 100), Path(folder)), callers, per_caller)
        result = against_echo(app_url, echo_url, requests, references_for(app_url, requests, k), k, rounds,
                              {"app": app.pid, "echo": echo.pid})
    print(echo_table(result))
    note = (f"{callers} concurrent gradio_client callers x {per_caller} mixed requests, app --query-cache "
            f"{query_cache}, median of {rounds} "
            f"interleaved rounds (spread {result['ratio_min']:.3f}-{result['ratio_max']:.3f}); errors "
            f"{result['app_errors']}, differing from sequential {result['differ']}; load average "
            f"{result['load_average']['min']:.1f}-{result['load_average']['max']:.1f}")
    cpu = result["cpu_ms_per_request"]
    results.add(Row("throughput", "requests/s: app / echo app", f"{result['ratio_median']:.3f}", None, "", note),
                Row("throughput", "requests/s", result["app_rps"], result["echo_rps"], "", "app vs echo app, medians"),
                Row("throughput", "server CPU per request", cpu["app"], cpu["echo"], "ms",
                    "app vs echo app, medians", "lower"),
                Row("throughput", "client CPU per request", cpu["app clients"], cpu["echo clients"], "ms",
                    "gradio_client callers (the benchmark's process), app vs echo app", "lower"))
    results.raw["throughput"] = result
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_app_arguments(parser)
    parser.add_argument("--callers", type=int, default=8, help="concurrent clients (default: %(default)s)")
    parser.add_argument("--requests", type=int, default=25, help="requests per caller (default: %(default)s)")
    parser.add_argument("-k", type=int, default=10, help="recommendations per request (default: %(default)s)")
    parser.add_argument("--echo-rounds", type=int, default=0,
                        help="also send the same load to the echo app, this many interleaved rounds each, and "
                             "report the ratio of requests per second (default: no echo)")
    args = parser.parse_args(argv)

    from .latency_gradio import serve_echo

    with app_from(args) as url, tempfile.TemporaryDirectory() as folder:
        queries = sample_queries(url, min(args.callers * args.requests, 100), Path(folder))
        requests = plan(queries, args.callers, args.requests)
        references = references_for(url, requests, args.k)
        print(f"Now {args.callers} callers x {args.requests} requests at once...\n", flush=True)
        outcomes, wall = run_concurrently(url, requests, args.k)
        ok = report(outcomes, references, wall, args.callers)
        if args.echo_rounds:
            with serve_echo() as echo_url:
                result = against_echo(url, echo_url, requests, references, args.k, args.echo_rounds)
            print(echo_table(result))
            ok &= not result["app_errors"] and not result["differ"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
