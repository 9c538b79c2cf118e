"""The Hub through real ``huggingface_hub`` HTTP calls to a local endpoint (tests have no network).

:class:`HubServer` answers raw HTTP on a local port the way huggingface.co answers the calls a push and a
download make (the same status codes and ``X-Error-Code`` headers), so ``huggingface_hub`` raises its own
error classes from real responses. Every failure must reach the user as one ``error:`` line, never a
traceback; a push to a branch the repo lacks creates it.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import huggingface_hub
import pytest

from recommender import Recommender
from recommender.errors import BundleError
from recommender.serving.endpoints import Endpoints
from recommender.serving.startup import BundlePlan, NotReadyError, Startup
from train.__main__ import main as train_main

REPO = "someone/bundle"
_API = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/(?P<action>tree|branch|preupload|commit)/(?P<rev>[^/?]+)")


class HubServer(ThreadingHTTPServer):
    """One Hub model repo, ``REPO``, with its branches and the commits pushed to them; or, with ``failure``
    set to ``(status, X-Error-Code or None, message)``, that answer to every request."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.branches = {"main"}
        self.commits: list[tuple[str, list[str]]] = []  # (branch, paths added)
        self.failure: tuple[int, str | None, str] | None = None


class _Handler(BaseHTTPRequestHandler):
    server: HubServer

    def do_GET(self) -> None:  # http.server's name
        self._answer()

    do_POST = do_HEAD = do_GET

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        hub = self.server
        if hub.failure is not None:
            return self._send(*hub.failure)
        if self.command == "POST" and self.path == "/api/repos/create":
            return self._send(409, None, "You already created this model repo", url=f"{hub.url}/{REPO}")
        if self.command == "POST" and self.path == "/api/validate-yaml":  # the model card's metadata
            return self._send(200, None, None, errors=[], warnings=[])
        match = _API.match(self.path)
        if match is None or match["repo"] != REPO:
            return self._send(404, "RepoNotFound", "Repository not found")
        action, revision = match["action"], unquote(match["rev"])
        if action == "branch":
            if revision in hub.branches:
                return self._send(409, None, "Reference already exists")
            hub.branches.add(revision)
            return self._send(200, None, None)
        if revision not in hub.branches:  # as huggingface.co answers a missing branch
            return self._send(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        if action == "tree":
            return self._send(200, None, None, payload=[])
        if action == "preupload":
            files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                     for f in json.loads(body)["files"]]
            return self._send(200, None, None, files=files)
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        hub.commits.append((revision, [line["value"]["path"] for line in lines if line["key"] == "file"]))
        oid = f"{len(hub.commits):040x}"
        return self._send(200, None, None, commitUrl=f"{hub.url}/{REPO}/commit/{oid}", commitOid=oid)

    def _send(self, status: int, code: str | None, message: str | None, payload: object = None, **fields) -> None:
        data = json.dumps(payload if payload is not None else {**({"error": message} if message else {}), **fields})
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if code:
            self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", message or "")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data.encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[HubServer]:
    """The local Hub as ``huggingface_hub``'s endpoint (online), with an empty cache."""
    server = HubServer()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", server.url)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    yield server
    server.shutdown()
    server.server_close()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"  # nothing listens there once it is closed


def push(bundle: Path, *options: str) -> list[str]:
    return ["push", REPO, "--bundle", str(bundle), "--token", "hf_test", *options]


def test_a_push_to_a_missing_branch_creates_it(bundle: Path, hub: HubServer, capsys: pytest.CaptureFixture) -> None:
    assert train_main(push(bundle, "--revision", "staging")) == 0, capsys.readouterr().err
    assert hub.branches == {"main", "staging"}
    [(branch, paths)] = hub.commits
    assert branch == "staging" and {"manifest.json", "README.md", "catalog.parquet"} <= set(paths)
    assert f"Pushed {bundle} to {REPO}" in capsys.readouterr().out
    assert train_main(push(bundle, "--revision", "staging")) == 0  # the branch exists now: pushed again
    assert [branch for branch, _ in hub.commits] == ["staging", "staging"]


FAILURES = {
    "no such repo": ((404, "RepoNotFound", "Repository not found"), f"Hub repo {REPO} does not exist or is private"),
    "server error": ((500, None, "Internal Error - We're working hard to fix this"),
                     f"The Hub answered HTTP 500 when asked to push to {REPO}@main: Internal Error"),
    "bad token": ((401, None, "Invalid credentials in Authorization header"),
                  f"HTTP 401 when asked to push to {REPO}@main: Invalid credentials in Authorization header. Check"),
    "gated": ((403, "GatedRepo", "Access to this repo is restricted"), f"Hub repo {REPO} is gated"),
}


@pytest.mark.parametrize("case", FAILURES)
def test_a_failing_push_is_one_clear_line(bundle: Path, hub: HubServer, capsys: pytest.CaptureFixture,
                                          case: str) -> None:
    hub.failure, expected = FAILURES[case]
    assert train_main(push(bundle)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and expected in err, err


def test_a_push_without_the_hub_is_one_clear_line(bundle: Path, hub: HubServer, capsys: pytest.CaptureFixture,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    unreachable = closed_port_url()
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", unreachable)
    assert train_main(push(bundle)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: Cannot reach the Hub at {unreachable} to push to {REPO}@main: ") and \
        err.count("\n") == 1, err
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert train_main(push(bundle)) == 2
    assert capsys.readouterr().err == (f"error: Cannot push to {REPO}@main: offline mode is on (HF_HUB_OFFLINE); "
                                       "unset it to reach the Hub.\n")


@pytest.mark.parametrize(("failure", "revision", "expected"), [
    ((404, "RepoNotFound", "Repository not found"), None,
     f"Hub repo {REPO} does not exist or is private, so you cannot download the bundle from it"),
    ((404, "RevisionNotFound", "Invalid rev id: v9"), "v9", f"Hub repo {REPO} has no revision 'v9'"),
    ((502, None, "Bad Gateway"), None, f"The Hub answered HTTP 502 when asked to download the bundle from {REPO}@main: "
                                       "Bad Gateway. It is not in the local Hub cache either."),
])
def test_a_failing_download_is_one_clear_line(hub: HubServer, failure: tuple, revision: str | None,
                                              expected: str) -> None:
    hub.failure = failure
    with pytest.raises(BundleError) as error:
        Recommender.load(REPO, revision=revision)
    assert expected in str(error.value) and "\n" not in str(error.value), str(error.value)


def test_offline_without_the_bundle_in_the_cache_is_one_clear_line(hub: HubServer,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(BundleError, match=re.escape(f"Cannot download the bundle from {REPO}@main: it is not in the "
                                                    "local Hub cache and the Hub cannot be reached")):
        Recommender.load(REPO)


def test_the_app_says_why_a_hub_bundle_failed_without_a_traceback(hub: HubServer,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    hub.failure = (404, "RepoNotFound", "Repository not found")
    startup = Startup(BundlePlan(REPO, None, "--bundle"))
    with caplog.at_level(logging.INFO, logger="recommender.serving.startup"), pytest.raises(NotReadyError):
        startup.start().wait(timeout=60)
    status = Endpoints(startup).info()["status"]
    assert status.startswith(f"Startup failed: Hub repo {REPO} does not exist or is private") and "\n" not in status
    records = [record for record in caplog.records if record.name == "recommender.serving.startup"]
    assert records and not any(record.exc_info for record in records)  # no traceback in the server log
    assert all("\n" not in record.getMessage() for record in records)  # the manifest's early read too
