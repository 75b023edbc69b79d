"""``distgan rate``: a person's answers through the page in a real headless Chromium, into the
run's ratings.jsonl, and back out as HYPE∞ error rates with bootstrap intervals.

The run is a real tiny one (tests/tiny_runs.py) with a shard folder at its ``data.source``. The
server runs as the real command in a subprocess on 127.0.0.1 at ray_port_base() + 790; the tests
that bind in this process take +791 to +793; the tests that send it raw requests (a wrong Host, a
bad Content-Length, 120 MB, 200 at once) run a second one at +794. Every test that serves checks
that nothing listens there once it is done.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import IN_A_TERMINAL, REPO, ray_port_base
from tiny_runs import train_run

from distgan.cli import main
from distgan.data import write_shards
from distgan.rate import (
    RATINGS,
    RatingServer,
    RatingSession,
    RatingsFile,
    bootstrap_ci,
    build_deck,
    read_ratings,
)
from distgan.storage import open_location

PORT = ray_port_base() + 790  # conftest.ray_port_base: a range no cluster uses
N = 10  # images per rater in these tests


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A tiny trained run (40 steps, mlp) whose data.source holds 64 random 28×28 images."""
    root = tmp_path_factory.mktemp("rate")
    images = np.random.default_rng(7).integers(0, 256, (64, 1, 28, 28), dtype=np.uint8)
    write_shards(images, None, root / "data", source="test")
    return train_run(root, arch="mlp")


def refused(port: int) -> bool:
    """True when nothing listens on 127.0.0.1:port."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def post(port: int, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/answer",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


# --- the bootstrap on its own ----------------------------------------------------------------


def test_the_bootstrap_interval_is_seeded_and_right_for_a_known_rate():
    wrong = np.array([1] * 120 + [0] * 280)  # 30% of 400 answers
    low, high = bootstrap_ci(wrong, seed=0)
    assert (low, high) == bootstrap_ci(wrong, seed=0)  # the seed decides every resample
    assert (low, high) != bootstrap_ci(wrong, seed=1)
    half = 1.96 * np.sqrt(0.3 * 0.7 / 400)  # the normal approximation: ±4.5 points
    assert abs(low - (0.3 - half)) < 0.01 and abs(high - (0.3 + half)) < 0.01
    small = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0, 0])  # pinned: 2,000 resamples, seed 0
    assert bootstrap_ci(small, seed=0) == pytest.approx((0.0, 0.6))
    assert bootstrap_ci(np.zeros(50)) == (0.0, 0.0) and bootstrap_ci(np.ones(50)) == (1.0, 1.0)


def test_the_overall_interval_resamples_raters_then_their_answers():
    wrong = np.array([1.0] * 50 + [0.0] * 50)  # one rater always wrong, the other always right
    raters = np.array(["a"] * 50 + ["b"] * 50)
    answers_only = bootstrap_ci(wrong)
    assert 0.38 < answers_only[0] < 0.5 < answers_only[1] < 0.62
    # Two raters who disagree this much say little about the next one: a draw of (a, a) gives
    # 100%, (b, b) 0%, each a quarter of the time.
    assert bootstrap_ci(wrong, raters) == (0.0, 1.0)


# --- --summary of a known set of answers -----------------------------------------------------


def _answers(rater: str, wrong_fakes: int, wrong_reals: int, step: int = 40) -> list[dict]:
    """Five generated and five real images; the first ``wrong_*`` of each answered wrong."""
    lines = []
    for truth, other, wrong in (
        ("generated", "real", wrong_fakes),
        ("real", "generated", wrong_reals),
    ):
        for i in range(5):
            lines.append({
                "rater": rater, "image": f"{truth}/{i}", "truth": truth,
                "answer": other if i < wrong else truth, "ms": 1000 + 100 * i,
                "time": "2025-01-01T00:00:00.000Z", "step": step,
                "protocol": "hype-inf/seed=0/real=5/generated=5",
            })  # fmt: skip
    return lines


def test_summary_columns_line_up_whatever_the_raters_names(tmp_path, capsys):
    """Wide characters (an emoji, CJK) take two terminal columns, a combining accent none."""
    from distgan.rate.summary import display_width

    raters = ["ana", "🎨 bo", "李雷", "e\u0301lise"]
    run = tmp_path / "run"
    run.mkdir()
    (run / "job.resolved.yaml").write_text("data: {source: embedded}\n")
    lines = [r for name in raters for r in _answers(name, wrong_fakes=1, wrong_reals=1)]
    (run / RATINGS).write_text("".join(json.dumps(r) + "\n" for r in lines))
    assert main(["rate", str(run), "--summary"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines()
            if any(line.startswith(name) for name in raters)]  # fmt: skip
    assert len(rows) == 4
    # Every rater answered alike, so each row's error cell ("20% ...") starts at one column.
    starts = {display_width(row[: row.index("%")]) for row in rows}
    assert len(starts) == 1, rows


def test_summary_gives_the_error_rates_and_intervals_of_known_answers(tmp_path, capsys):
    ana = _answers("ana", wrong_fakes=2, wrong_reals=1)  # 30%: fakes 40% real, reals 20% fake
    bo = _answers("bo", wrong_fakes=3, wrong_reals=2)  # 50%: 60%, 40%
    repeat = {**ana[0], "answer": "generated"}  # ana's second answer to generated/0: ignored
    later = _answers("ana", wrong_fakes=0, wrong_reals=0, step=80)
    run = tmp_path / "run"
    run.mkdir()
    (run / "job.resolved.yaml").write_text("data: {source: embedded}\n")
    lines = [*ana, *bo, repeat, *later]
    (run / RATINGS).write_text("".join(json.dumps(r) + "\n" for r in lines))

    assert main(["rate", str(run), "--summary"]) == 0
    out = capsys.readouterr().out

    def cell(wrong: list[int], raters: list[str] | None = None) -> str:
        low, high = bootstrap_ci(
            np.array(wrong, float), None if raters is None else np.array(raters)
        )
        return f"{np.mean(wrong):.1%} [{low:.1%}–{high:.1%}]"

    step_40 = out.split("step 80")[0].splitlines()
    rows = {line.split()[0]: line for line in step_40 if line[:1] in ("a", "b")}
    assert "10/10" in rows["ana"] and "1.2s" in rows["ana"]  # median of 1.0..1.4 s, twice
    assert cell([1, 1, 0, 0, 0, 1, 0, 0, 0, 0]) in rows["ana"]  # 30.0% [...]
    assert cell([1, 1, 0, 0, 0]) in rows["ana"] and cell([1, 0, 0, 0, 0]) in rows["ana"]
    assert "30.0%" in rows["ana"] and "40.0%" in rows["ana"] and "20.0%" in rows["ana"]
    assert "50.0%" in rows["bo"] and "60.0%" in rows["bo"]
    overall = [1, 1, 0, 0, 0, 1, 0, 0, 0, 0, 1, 1, 1, 0, 0, 1, 1, 0, 0, 0]
    assert cell(overall, ["ana"] * 10 + ["bo"] * 10) in rows["all"]  # 40.0%, raters resampled
    assert "1 repeated answer" in out
    groups = [line for line in out.splitlines() if line.startswith("step ")]
    assert groups == ["step 40 · hype-inf/seed=0/real=5/generated=5",
                      "step 80 · hype-inf/seed=0/real=5/generated=5"]  # fmt: skip
    assert "0.0% [0.0%–0.0%]" in out.split("step 80")[1]
    assert "50% is chance" in out


def test_a_line_that_is_not_a_rating_is_named(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "job.resolved.yaml").write_text("data: {source: embedded}\n")
    good = json.dumps(_answers("ana", 0, 0)[0])
    (run / RATINGS).write_text(f'{good}\n{{"rater": "ana", "truth": "fake"}}\n')
    assert main(["rate", str(run), "--summary"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "ratings.jsonl: line 2: field 'image'" in err
    assert "fix or delete that line" in err and len(err.splitlines()) == 1


# --- the page in Chromium --------------------------------------------------------------------


def test_a_person_rates_in_chromium_and_every_answer_is_in_ratings_jsonl(
    run_dir, browser, tmp_path
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    assert refused(PORT)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    server = subprocess.Popen(
        [*IN_A_TERMINAL, sys.executable, "-m", "distgan.cli", "rate", str(run_dir), "--n", str(N),
         "--port", str(PORT)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        first = server.stdout.readline()
        url_line = server.stdout.readline()
        assert f"at step 40: {N} images, half real, half generated" in first, first
        assert f"open http://127.0.0.1:{PORT}/ in a browser" in url_line, url_line
        deck = build_deck(open_location(run_dir, field="RUN"), N, 0)  # what the server shows

        browser.set_window_size(900, 900)  # the whole page in the screenshot
        browser.get_log("browser")  # drop what an earlier page left
        browser.get(f"http://127.0.0.1:{PORT}/")
        browser.execute_script("localStorage.clear()")
        browser.refresh()
        name = browser.find_element(By.ID, "name")
        name.send_keys("Ana T.", Keys.ENTER)  # the page asks for a name: none was given
        wait = WebDriverWait(browser, 15)

        def shown(k: int) -> dict:
            """Waits for image k (0-based) to be up and answerable; returns what the page shows."""
            wait.until(lambda d: d.find_element(By.ID, "real").is_enabled()
                       and d.find_element(By.ID, "count").text == f"{k + 1} of {N}")  # fmt: skip
            return browser.execute_script(
                "const i = document.getElementById('card');"
                "return {src: i.src, complete: i.complete, natural: i.naturalWidth,"
                " width: i.clientWidth}"
            )

        answers = ["real", "generated", "generated", "real", "generated", "real"]
        for k, answer in enumerate(answers):
            card = shown(k)
            assert card["complete"] and card["natural"] == 28 and card["width"] == 280, card
            # The page shows the deck's card k (as a data: URI: the URL says nothing of it).
            assert (
                card["src"]
                == "data:image/png;base64," + base64.b64encode(deck.cards[k].png).decode()
            )
            if k == 2:
                browser.save_screenshot(str(tmp_path / "rate.png"))
            if k < 3:
                browser.find_element(By.ID, answer).click()
            else:  # R / G, then the arrow keys
                key = {"real": "r", "generated": "g"}[answer] if k < 5 else Keys.ARROW_LEFT
                browser.find_element(By.TAG_NAME, "body").send_keys(key)
        shown(len(answers))
        assert browser.get_log("browser") == []  # no CSP refusal, no failed request, no error
        text = browser.find_element(By.TAG_NAME, "body").text
        assert "Real or generated?" in text and "rating as Ana T." in text
        assert "correct" not in text.lower() and "wrong" not in text.lower()  # no feedback

        # Every answer is in the file already, with the truth of its image.
        records = read_ratings(open_location(run_dir, field="RUN"))
        assert [r["answer"] for r in records] == answers
        assert [r["image"] for r in records] == [c.image for c in deck.cards[: len(answers)]]
        truth = {c.image: c.truth for c in deck.cards}
        for r in records:
            assert r["truth"] == truth[r["image"]] == r["image"].split("/")[0]
            assert r["rater"] == "Ana T." and r["step"] == 40 and r["ms"] > 0
            assert r["protocol"] == "hype-inf/seed=0/real=5/generated=5"
        assert sorted(c.truth for c in deck.cards).count("real") == N // 2  # a balanced deck

        # A reload picks up where the rater stopped; a stale answer (a second tab) is refused.
        browser.refresh()
        shown(len(answers))
        status, state = post(PORT, {"rater": "Ana T.", "index": 0, "answer": "real", "ms": 5})
        assert status == 409 and state["index"] == len(answers)
        assert len(read_ratings(open_location(run_dir, field="RUN"))) == len(answers)
        for k in range(len(answers), N):  # the rest, then the page says it is done
            shown(k)
            browser.find_element(By.TAG_NAME, "body").send_keys(Keys.ARROW_RIGHT)
        wait.until(lambda d: d.find_element(By.ID, "done").is_displayed())
        assert f"All {N} images answered" in browser.find_element(By.ID, "done").text
        assert browser.get_log("browser") == []
    finally:
        server.send_signal(signal.SIGINT)  # Ctrl-C: the server stops and says what it kept
        out, err = server.communicate(timeout=30)
    assert server.returncode == 0, err
    assert f"stopped; {N} answer(s) for step 40" in out
    assert refused(PORT)
    assert (tmp_path / "rate.png").stat().st_size > 5_000

    assert main(["rate", str(run_dir), "--summary"]) == 0  # the same answers, read back


# --- the server in this process --------------------------------------------------------------


@pytest.fixture
def serving(run_dir, tmp_path):
    """A RatingServer for a copy of the run's ratings, at PORT + 2, in a thread; stopped and
    checked closed at the end."""
    run = open_location(run_dir, field="RUN")
    home = open_location(tmp_path, field="RUN")  # answers go here, not into the shared run
    deck = build_deck(run, N, 0)
    server = RatingServer(RatingSession(deck, RatingsFile(home), rater="bo"), "127.0.0.1", PORT + 2)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, deck, home
    finally:
        server.shutdown()
        server.close()
        thread.join(10)
    assert refused(PORT + 2)


def test_the_server_writes_each_answer_before_it_replies_and_refuses_what_it_should(serving):
    server, deck, home = serving
    assert server.url == f"http://127.0.0.1:{PORT + 2}/"
    status, state = post(server.port, {"rater": "bo", "index": 0, "answer": "generated", "ms": 800})
    assert status == 200 and state["index"] == 1 and state["answered"] == 1
    (line,) = read_ratings(home)  # on disk when the reply came
    assert line["image"] == deck.cards[0].image and line["truth"] == deck.cards[0].truth
    assert "truth" not in state and deck.cards[1].image not in json.dumps(state)  # nothing leaks
    assert post(server.port, {"rater": "cy", "index": 1, "answer": "real", "ms": 1})[0] == 400
    assert post(server.port, {"rater": "bo", "index": 1, "answer": "maybe", "ms": 1})[0] == 400
    plain = urllib.request.Request(server.url + "api/answer", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as e:  # not JSON: what a form on another site sends
        urllib.request.urlopen(plain, timeout=10)
    assert e.value.code == 415
    assert len(read_ratings(home)) == 1


def test_a_port_in_use_is_one_line_and_nothing_is_written(run_dir, capsys):
    before = sorted(p.relative_to(run_dir) for p in run_dir.rglob("*"))
    ratings = (run_dir / RATINGS).read_bytes() if (run_dir / RATINGS).exists() else None
    taken = socket.socket()
    taken.bind(("127.0.0.1", PORT + 1))
    taken.listen()
    try:
        code = main(["rate", str(run_dir), "--n", "4", "--port", str(PORT + 1)])
    finally:
        taken.close()
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and captured.out == ""
    assert f"--port {PORT + 1}: already in use on 127.0.0.1" in lines[0]
    assert f"pick another port, e.g. --port {PORT + 2}" in lines[0]
    assert sorted(p.relative_to(run_dir) for p in run_dir.rglob("*")) == before
    assert ((run_dir / RATINGS).read_bytes() if ratings is not None else None) == ratings
    assert refused(PORT + 1)


# --- a run in object storage -----------------------------------------------------------------


def test_answers_and_summary_through_object_storage(s3_env, capsys):
    s3_env.create_bucket("ratings")
    uri = s3_env.uri("ratings", "runs/00000-tiny")
    s3_env.write("ratings", "runs/00000-tiny/job.resolved.yaml", b"data: {source: embedded}\n")
    run = open_location(uri, field="RUN")
    ratings = RatingsFile(run)
    for record in _answers("ana", wrong_fakes=2, wrong_reals=1):
        ratings.append(record)  # object stores cannot append: each one rewrites the file
    assert len(read_ratings(run)) == 10
    assert s3_env.keys("ratings") == [
        "runs/00000-tiny/job.resolved.yaml",
        "runs/00000-tiny/ratings.jsonl",
    ]
    assert main(["rate", uri, "--summary"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("s3://ratings/runs/00000-tiny/ratings.jsonl:")  # no endpoint shown
    assert "30.0%" in out and "10/10" in out


def test_a_dataset_changed_since_training_is_refused(tmp_path, capsys):
    images = np.zeros((8, 1, 28, 28), dtype=np.uint8)
    write_shards(images, None, tmp_path / "data", source="test")
    run = train_run(tmp_path, arch="mlp")
    shutil.rmtree(tmp_path / "data")  # the same folder, now 30×30 images
    write_shards(np.zeros((8, 1, 30, 30), np.uint8), None, tmp_path / "data", source="test")
    assert main(["rate", str(run), "--n", "4", "--port", str(PORT + 3)]) == 2
    err = capsys.readouterr().err.strip()
    assert "holds 1×30×30 images but the generator makes 1×28×28" in err
    assert "restore the one the run was trained on" in err and len(err.splitlines()) == 1
    assert not (run / RATINGS).exists() and refused(PORT + 3)


# --- the real server, from outside: raw requests ---------------------------------------------

RAW_PORT = PORT + 4
HOST = f"127.0.0.1:{RAW_PORT}"
ANSWER = b'{"rater": "eve", "index": 0, "answer": "real", "ms": 800}'


@pytest.fixture(scope="module")
def rate_server(run_dir, tmp_path_factory):
    """``distgan rate`` on a copy of the run at RAW_PORT, in a subprocess, for the module; yields
    (process, run copy, its stderr file). Stopped with Ctrl-C at the end, cleanly."""
    root = tmp_path_factory.mktemp("raw")
    run = shutil.copytree(run_dir, root / "run")  # answers that get through land here
    errors = root / "stderr.txt"
    assert refused(RAW_PORT)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with open(errors, "w") as err:
        server = subprocess.Popen(
            [*IN_A_TERMINAL, sys.executable, "-m", "distgan.cli", "rate", str(run), "--n",
             str(N), "--port", str(RAW_PORT)],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=err, text=True,
        )  # fmt: skip
    try:
        server.stdout.readline()
        assert f"open http://{HOST}/" in server.stdout.readline(), errors.read_text()
        yield server, run, errors
    finally:
        server.send_signal(signal.SIGINT)
        server.communicate(timeout=30)
    assert server.returncode == 0, errors.read_text()
    assert refused(RAW_PORT)


def http(method: str, path: str, headers: list[tuple[str, str]], body: bytes = b"") -> bytes:
    """The bytes of an HTTP/1.1 request, the headers exactly as given (none added)."""
    head = "".join(f"{k}: {v}\r\n" for k, v in headers)
    return f"{method} {path} HTTP/1.1\r\n{head}\r\n".encode() + body


def read_reply(s: socket.socket) -> tuple[int, bytes, bytes]:
    """(status, head, body) of what the server sends until it closes the connection."""
    chunks = []
    while chunk := s.recv(65536):
        chunks.append(chunk)
    reply = b"".join(chunks)
    assert reply, "the server closed the connection without an answer"
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), head, body


def exchange(request: bytes) -> tuple[int, dict | bytes]:
    """Sends ``request`` on a new connection; (status, the JSON body, or the bytes of a page)."""
    with socket.create_connection(("127.0.0.1", RAW_PORT), timeout=10) as s:
        s.sendall(request)
        status, head, body = read_reply(s)
    return status, json.loads(body) if b"application/json" in head else body


def json_post(body: bytes, host: str = HOST, length: str | None = None) -> bytes:
    length = str(len(body)) if length is None else length
    headers = [("Host", host), ("Content-Type", "application/json"), ("Content-Length", length)]
    return http("POST", "/api/answer", headers, body)


def answers_in(run: Path) -> bytes:
    return (run / RATINGS).read_bytes() if (run / RATINGS).exists() else b""


def no_traceback(errors: Path, since: int) -> None:
    """Nothing went wrong in the server since its stderr was ``since`` characters long."""
    text = errors.read_text()[since:]
    assert "Traceback" not in text and "Exception" not in text, text


def test_only_a_host_naming_this_server_is_answered(rate_server):
    # A page of another site that rebinds its name to 127.0.0.1 sends its own name as the Host.
    _, run, errors = rate_server
    since = len(errors.read_text())
    before = answers_in(run)
    for host in (f"localhost:{RAW_PORT}", f"LocalHost:{RAW_PORT}", f"[::1]:{RAW_PORT}", HOST):
        status, page = exchange(http("GET", "/", [("Host", host)]))
        assert status == 200 and b"Real or generated?" in page, host
    for host in (f"evil.example:{RAW_PORT}", "evil.example", f"127.0.0.1:{RAW_PORT + 1}",
                 f"127.0.0.1.evil.example:{RAW_PORT}", "127.0.0.1"):  # fmt: skip
        for request in (
            http("GET", "/", [("Host", host)]),
            http("GET", "/api/next?rater=eve", [("Host", host)]),
            json_post(ANSWER, host=host),
        ):
            status, body = exchange(request)
            assert status == 421 and "Host" in body["error"], (host, request)
    status, body = exchange(http("GET", "/api/next?rater=eve", []))
    assert status == 400 and "Host" in body["error"]
    assert answers_in(run) == before  # the post with a foreign Host wrote nothing
    assert exchange(http("GET", "/api/next?rater=eve", [("Host", HOST)]))[0] == 200
    no_traceback(errors, since)


def case(name: str, body: bytes, status: int = 400, lengths: list[str] | None = None):
    """A bad answer: its body, the status it must get, its Content-Length headers (default: one,
    the body's length)."""
    return pytest.param(body, [str(len(body))] if lengths is None else lengths, status, id=name)


@pytest.mark.parametrize(
    ("body", "lengths", "status"),
    [
        case("ms-Infinity", ANSWER.replace(b"800", b"Infinity")),
        case("ms--Infinity", ANSWER.replace(b"800", b"-Infinity")),
        case("ms-NaN", ANSWER.replace(b"800", b"NaN")),
        case("ms-1e400", ANSWER.replace(b"800", b"1e400")),  # a float too large: inf
        case("ms-true", ANSWER.replace(b"800", b"true")),  # bool is an int to Python
        case("2000-deep", b"[" * 2000 + b"]" * 2000),
        case("1000-deep-ms", ANSWER.replace(b"800", b"[" * 1000 + b"]" * 1000)),
        case("length-abc", ANSWER, lengths=["abc"]),
        case("length--1", ANSWER, lengths=["-1"]),
        case("length-+N", ANSWER, lengths=[f"+{len(ANSWER)}"]),  # int() takes this
        case("length-N_N", ANSWER, lengths=["_".join(str(len(ANSWER)))]),  # and this
        case("two-lengths", ANSWER, lengths=[str(len(ANSWER)), "4"]),
        case("no-length", ANSWER, 411, lengths=[]),
        case("length-5000-digits", ANSWER, 413, lengths=["9" * 5000]),  # too long for int()
    ],
)
def test_an_answer_the_server_cannot_take_gets_a_json_error_and_no_traceback(
    rate_server, body, lengths, status
):
    _, run, errors = rate_server
    since = len(errors.read_text())
    before = answers_in(run)
    headers = [("Host", HOST), ("Content-Type", "application/json")]
    got, reply = exchange(
        http("POST", "/api/answer", headers + [("Content-Length", n) for n in lengths], body)
    )
    assert got == status and isinstance(reply["error"], str), reply
    assert answers_in(run) == before
    no_traceback(errors, since)


def peak_rss(pid: int) -> int:
    """The highest resident memory of process ``pid`` since the last reset_peak, in bytes."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) * 1024


def reset_peak(pid: int) -> int:
    """Starts peak_rss anew (Linux's clear_refs 5); returns the resident memory now, in bytes."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return peak_rss(pid)


@pytest.mark.parametrize(
    ("host", "length", "status"),
    [(HOST, "-1", 400), (f"evil.example:{RAW_PORT}", "-1", 421), (HOST, "120000000", 413)],
    ids=["minus-one", "minus-one-foreign-host", "120-mb"],  # no port: xdist workers differ in it
)
def test_a_120_mb_body_is_refused_before_it_is_read(rate_server, host, length, status):
    server, _, errors = rate_server
    since = len(errors.read_text())
    before = reset_peak(server.pid)
    chunk = b"x" * (1 << 20)
    with socket.create_connection(("127.0.0.1", RAW_PORT), timeout=10) as s:
        s.sendall(json_post(b"", host=host, length=length))
        for _ in range(120):  # 120 MB, until the server answers
            if select.select([s], [], [], 0)[0]:
                break
            try:
                s.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
        else:
            s.shutdown(socket.SHUT_WR)  # all of it sent: the server has read it all, or waits
        got, _, body = read_reply(s)
    grown = peak_rss(server.pid) - before
    assert got == status and json.loads(body)["error"]
    assert grown < 30e6, f"the server's memory grew by {grown / 1e6:.0f} MB"
    no_traceback(errors, since)


def test_a_client_that_sends_all_of_a_refused_body_still_gets_the_refusal(rate_server):
    # Closing a connection with unread bytes resets it: the server reads and drops the rest.
    _, _, errors = rate_server
    since = len(errors.read_text())
    chunk = b"x" * (1 << 20)
    with socket.create_connection(("127.0.0.1", RAW_PORT), timeout=10) as s:
        s.sendall(json_post(b"", host=f"evil.example:{RAW_PORT}", length="-1"))
        for _ in range(120):  # a reset here fails the test
            s.sendall(chunk)
        s.shutdown(socket.SHUT_WR)
        status, _, body = read_reply(s)
    assert status == 421 and "Host" in json.loads(body)["error"]
    no_traceback(errors, since)


def test_200_concurrent_requests_are_all_answered(rate_server):
    _, _, errors = rate_server
    since = len(errors.read_text())
    request = http("GET", "/api/next?rater=eve", [("Host", HOST)])
    sockets = []
    for _ in range(200):  # all opened at once, before any request is sent
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", RAW_PORT))
        sockets.append(s)
    try:
        for s in sockets:
            select.select([], [s], [], 10)
            s.setblocking(True)
            s.settimeout(20)
            s.sendall(request)
        statuses = [read_reply(s)[0] for s in sockets]
    finally:
        for s in sockets:
            s.close()
    assert statuses == [200] * 200
    no_traceback(errors, since)
