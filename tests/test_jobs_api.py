"""distgan's Jobs API client: where it sends, and a cluster with no job agent ready yet.

- **Where:** Ray's ``JobSubmissionClient`` sends to ``RAY_API_SERVER_ADDRESS`` or
  ``RAY_ADDRESS`` whatever address it is given (``ray.dashboard.utils.
  get_address_for_submission_client``). distgan resolves the address itself (``--address``
  first) and checks where the token may go against it, so the client must send there and
  nowhere else.
- **No agent:** a starting cluster answers every submission with HTTP 500 "No available agent to
  submit job, please try again later." (``ray/dashboard/modules/job/job_head.py``).

Both states are set up with small HTTP servers on 127.0.0.1 that answer Ray's routes with Ray's
own texts (a starting head is in the no-agent state for seconds, and cannot be put there on
purpose); Ray's real ``JobSubmissionClient`` talks to them, and distgan's own code is what is
tested."""

from __future__ import annotations

import contextlib
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from distgan.errors import ClusterError
from distgan.jobs_api import ADDRESS_VARIABLES, Jobs, connect
from distgan.submit import Submission

NO_AGENT = "No available agent to submit job, please try again later."


class StartingHead(ThreadingHTTPServer):
    """Ray's Jobs API routes, with the first ``busy`` submissions refused (by default for want
    of an agent)."""

    def __init__(
        self, busy: int, refusal: tuple[int, str] = (500, NO_AGENT), port: int = 0, job=None
    ):
        super().__init__(("127.0.0.1", port), Handler)
        self.busy, self.refusal, self.posts, self.seen = busy, refusal, [], []
        self.job = job  # (submission id, status, log) of the one job it knows, if any

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"


class Handler(BaseHTTPRequestHandler):
    server: StartingHead

    def log_message(self, *args) -> None:
        pass

    def _answer(self, status: int, body: str, kind: str = "application/json") -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.server.seen.append(("GET", self.path))
        sid, status, log = self.server.job or ("", "", "")
        if self.path.startswith("/api/version"):
            self._answer(200, json.dumps({"version": "4", "ray_version": "2.60.0",
                                          "ray_commit": "", "session_name": "s"}))  # fmt: skip
        elif sid and self.path == f"/api/jobs/{sid}":
            self._answer(200, json.dumps({"type": "SUBMISSION", "submission_id": sid,
                                          "status": status, "entrypoint": "true"}))  # fmt: skip
        elif sid and self.path == f"/api/jobs/{sid}/logs":
            self._answer(200, json.dumps({"logs": log}))
        else:  # the log stream too (/logs/tail): a proxy that takes no websocket answers so
            self._answer(404, "not found", "text/plain")

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.seen.append(("POST", self.path))
        self.server.posts.append((time.monotonic(), request))
        if len(self.server.posts) <= self.server.busy:
            self._answer(*self.server.refusal, "text/plain")
        else:
            sid = request["submission_id"]
            self._answer(200, json.dumps({"job_id": sid, "submission_id": sid}))


@pytest.fixture
def no_address(monkeypatch):
    for name in ADDRESS_VARIABLES:  # the suite's Ray head is in RAY_ADDRESS
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def head(request, no_address):
    with serving(*getattr(request, "param", (0,))) as server:
        yield server


@contextlib.contextmanager
def serving(*args):
    server = StartingHead(*args)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def no_token(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ray/auth_token
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)


def submission() -> Submission:
    return Submission(spec=None, submission_id="distgan-test-1", entrypoint="true",
                      runtime_env={}, metadata={})  # fmt: skip


@pytest.mark.parametrize("head", [(2,)], indirect=True)
def test_a_submission_waits_for_a_job_agent_and_says_so_once(head):
    jobs = Jobs(f"http://127.0.0.1:{head.server_port}", None, None)
    out = io.StringIO()
    assert jobs.submit(submission(), out=out, wait_s=30) == "distgan-test-1"
    assert len(head.posts) == 3  # two refusals, then the job
    assert all(body["entrypoint"] == "true" for _, body in head.posts)
    assert out.getvalue() == (
        f"distgan: http://127.0.0.1:{head.server_port} has no job agent ready yet (a cluster "
        "that is starting); waiting for one\n"
    )


@pytest.mark.parametrize("head", [(1_000,)], indirect=True)
def test_a_submission_gives_up_on_the_job_agent_after_its_wait_in_one_line(head):
    jobs = Jobs(f"http://127.0.0.1:{head.server_port}", None, None)
    started = time.monotonic()
    with pytest.raises(ClusterError) as e:
        jobs.submit(submission(), out=io.StringIO(), wait_s=3)
    assert 3 <= time.monotonic() - started < 10 and 2 <= len(head.posts) <= 3
    assert str(e.value) == (
        f"http://127.0.0.1:{head.server_port}: the Jobs API failed: Request failed with status "
        f"code 500: {NO_AGENT}."
    )


BAD_REQUEST = "Failed to submit job: runtime_env is not valid."


@pytest.mark.parametrize("head", [(1_000, (400, BAD_REQUEST))], indirect=True)
def test_other_refusals_fail_at_once(head):
    jobs = Jobs(f"http://127.0.0.1:{head.server_port}", None, None)
    out = io.StringIO()
    with pytest.raises(ClusterError, match="status code 400: Failed to submit job"):
        jobs.submit(submission(), out=out, wait_s=30)
    assert len(head.posts) == 1 and out.getvalue() == ""


@pytest.mark.parametrize("variable", ADDRESS_VARIABLES)
def test_the_client_sends_to_the_address_given_not_to_rays_variables(
    head, monkeypatch, no_token, variable
):
    """``--address`` wins over RAY_API_SERVER_ADDRESS and RAY_ADDRESS, as distgan says, and the
    other server hears nothing: Ray's client, left alone, sent everything there (so the check of
    where the token may go looked at one host while the requests went to another)."""
    with serving(0) as other:
        monkeypatch.setenv(variable, other.url)
        assert connect(head.url).submit(submission(), wait_s=0) == "distgan-test-1"
        assert [path for method, path in head.seen if method == "POST"] == ["/api/jobs/"]
        assert other.seen == []
        # Without --address, the variable is the address.
        assert connect(None).submit(submission(), wait_s=0) == "distgan-test-1"
        assert [method for method, _ in other.seen].count("POST") == 1


def test_ray_api_server_address_comes_before_ray_address(head, monkeypatch, no_token):
    with serving(0) as other:
        monkeypatch.setenv("RAY_API_SERVER_ADDRESS", head.url)
        monkeypatch.setenv("RAY_ADDRESS", other.url)
        assert connect(None).address == head.url
        connect(None).submit(submission(), wait_s=0)
        assert len(head.posts) == 1 and other.seen == []


def test_a_head_that_goes_away_while_a_job_is_followed_is_one_line(no_address):
    """``submit --wait`` and ``logs --follow`` poll the job: a head (or its dashboard) that dies
    meanwhile refuses the connection, which Ray's SDK lets through as requests' own error (it
    turns only the first call's into ConnectionError). It is one line naming the job, not a
    traceback, nor "start a cluster"."""
    with serving(0) as server:
        address = server.url
        jobs = Jobs(address, None, None)  # the version check: the head was there
    with pytest.raises(ClusterError) as e:
        jobs.follow("distgan-test-1", io.StringIO())
    assert str(e.value) == (
        f"{address}: the Ray Jobs API stopped answering (job distgan-test-1); the head node or "
        "its dashboard may be down. The job's state is unknown: `distgan status distgan-test-1` "
        "asks again once the cluster is back"
    )


def test_following_a_job_rides_out_a_jobs_api_that_goes_away_and_comes_back(no_address, capsys):
    """A dropped tunnel or a head that restarts: ``submit --wait`` and ``logs --follow`` ask
    again (saying so once, on stderr) and go on with the log where it was, to the job's end."""
    sid = "distgan-test-1"
    with serving(0, (500, NO_AGENT), 0, (sid, "RUNNING", "step 10\n")) as first:
        port, jobs = first.server_port, Jobs(first.url, None, None)

        def outage() -> None:  # the head goes once the log has been read, and is back 2 s later
            while ("GET", f"/api/jobs/{sid}/logs") not in first.seen:
                time.sleep(0.05)
            first.shutdown()
            first.server_close()
            time.sleep(2)
            again = StartingHead(0, port=port, job=(sid, "SUCCEEDED", "step 10\ndone: step 20\n"))
            threading.Thread(target=again.serve_forever, daemon=True).start()
            restarted.append(again)

        restarted: list[StartingHead] = []
        threading.Thread(target=outage, daemon=True).start()
        out = io.StringIO()
        jobs.follow(sid, out, poll=0.2, lost_s=30)
    restarted[0].shutdown()
    assert out.getvalue() == "step 10\ndone: step 20\n"  # nothing twice, nothing lost
    assert capsys.readouterr().err == (
        f"distgan: {jobs.address} stopped answering; asking again for 30 s (the job is not "
        f"touched)\ndistgan: {jobs.address} answers again\n"
    )


def test_a_jobs_api_that_stays_away_ends_the_following_after_its_window(no_address, capsys):
    sid = "distgan-test-1"
    with serving(0, (500, NO_AGENT), 0, (sid, "RUNNING", "")) as server:
        jobs = Jobs(server.url, None, None)
        assert jobs.status(sid) == "RUNNING"
    started = time.monotonic()
    with pytest.raises(ClusterError, match=rf"stopped answering \(job {sid}\)"):
        jobs.wait(sid, poll=0.2, lost_s=1)
    assert 1 <= time.monotonic() - started < 10
    assert capsys.readouterr().err.count("stopped answering") == 1
