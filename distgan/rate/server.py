"""The local web server of ``distgan rate``: the page, the next image, and the answers.

    session = RatingSession(deck, RatingsFile(deck.run), rater=None)
    server = RatingServer(session, "127.0.0.1", 8765)   # bound here: JobError if it cannot be
    server.serve_forever()                                # until server.shutdown() or Ctrl-C
    server.close()

GET  /                 the page (page.py)
GET  /api/next?rater=  where this rater is: {index, total, answered, done, image (data: URI)}
POST /api/answer       {rater, index, answer, ms} -> the line is in ratings.jsonl, then the same
                       as /api/next; 409 with the current state when ``index`` is not the
                       rater's next image (a double click, a second tab)

Each rater goes through the deck in its order and picks up where they stopped: the answers
already in ratings.jsonl for this step and protocol count as given.

Every request must name this server in its Host header (127.0.0.1, localhost or ::1 at its port,
or the address it is bound to): a page of another site whose name is re-pointed at 127.0.0.1
(DNS rebinding) counts as same-origin to the browser, but still sends its own name, and gets 421.
A body is read only when its Content-Length is one count of at most MAX_BODY bytes.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import ipaddress
import json
import math
import re
import socket
import socketserver
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from distgan.errors import JobError, UserError
from distgan.rate.deck import GENERATED, REAL, Deck
from distgan.rate.page import CSP, rating_page
from distgan.rate.ratings import RatingsFile, check_rater, rating_record

MIN_SIDE = 256  # CSS pixels: small images are scaled up by a whole factor to at least this
MAX_BODY = 4096  # bytes of an answer
MAX_MS = 2**53  # the largest time of an answer: the largest whole number JSON readers keep exact
LOOPBACK = ("127.0.0.1", "localhost", "::1")  # names of this machine that no DNS can re-point
# A refused body is read and dropped, so that the client gets the refusal: while it comes, for
# up to LINGER_S seconds in all.
LINGER_S, LINGER_IDLE_S = 10.0, 1.0
_HOST = re.compile(r"(?:\[(?P<v6>[0-9a-f:.]+)\]|(?P<name>[^:\[\]]+))(?::(?P<port>[0-9]{1,5}))?")


class RatingSession:
    """The deck, who has answered what, and the file answers go to (shared by server threads)."""

    def __init__(self, deck: Deck, ratings: RatingsFile, rater: str | None = None):
        self.deck, self.ratings, self.rater = deck, ratings, rater
        self._lock = threading.Lock()
        self._answered: dict[str, set[str]] = {}
        for r in ratings.read():
            if r["step"] == deck.step and r["protocol"] == deck.protocol:
                self._answered.setdefault(r["rater"], set()).add(r["image"])

    def next(self, rater: str) -> tuple[int, dict]:
        """(HTTP status, body) for GET /api/next."""
        problem = self._check(rater)
        if problem:
            return 400, {"error": problem}
        with self._lock:
            return 200, self._state(rater)

    def answer(self, body: object) -> tuple[int, dict]:
        """(HTTP status, body) for POST /api/answer; the answer is stored before it returns."""
        if not isinstance(body, dict):
            return 400, {"error": "expected a JSON object"}
        rater, index, answer, ms = (body.get(k) for k in ("rater", "index", "answer", "ms"))
        problem = self._check(rater)
        if problem:
            return 400, {"error": problem}
        if answer not in (REAL, GENERATED):
            return 400, {"error": f"answer must be '{REAL}' or '{GENERATED}'"}
        # bool is an int to Python; NaN, infinity and huge numbers fail the comparison.
        whole = isinstance(index, int) and not isinstance(index, bool)
        number = isinstance(ms, (int, float)) and not isinstance(ms, bool)
        if not (whole and number and 0 <= ms < MAX_MS):
            return 400, {"error": "index must be an integer and ms a time in milliseconds"}
        with self._lock:
            state = self._state(rater)
            if state["done"] or index != state["index"]:
                return 409, state  # already answered: the page shows where the rater is
            card = self.deck.cards[index]
            record = rating_record(
                rater, card.image, card.truth, answer, round(ms), self.deck.step, self.deck.protocol
            )
            self.ratings.append(record)
            self._answered.setdefault(rater, set()).add(card.image)
            return 200, self._state(rater)

    def _check(self, rater: object) -> str | None:
        if not isinstance(rater, str):
            return "rater must be a name"
        if self.rater is not None and rater != self.rater:
            return f"this server takes answers from {self.rater} only (--rater)"
        return check_rater(rater)

    def _state(self, rater: str) -> dict:
        done = self._answered.get(rater, set())
        cards = self.deck.cards
        index = next((i for i, c in enumerate(cards) if c.image not in done), None)
        state = {
            "rater": rater,
            "total": len(cards),
            "answered": sum(c.image in done for c in cards),
            "done": index is None,
            "index": index,
        }
        if index is not None:
            state["image"] = "data:image/png;base64," + base64.b64encode(cards[index].png).decode()
        return state


class RatingServer:
    """An HTTP server for one session, bound at construction (JobError naming --host or --port
    when the address cannot be had)."""

    def __init__(self, session: RatingSession, host: str, port: int):
        deck = session.deck
        _, h, w = deck.shape
        scale = max(1, math.ceil(MIN_SIDE / max(h, w)))
        html = rating_page(
            title=deck.run.name,
            subtitle=f"step {deck.step} · {len(deck.cards)} images",
            total=len(deck.cards),
            size=(w * scale, h * scale),
            rater=session.rater,
        )
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        server_class = type("_Server", (_HTTPServer,), {"address_family": family})
        try:
            self.httpd = server_class((host, port), _Handler)  # closes its socket if bind fails
        except socket.gaierror:
            raise JobError(_not_here(host)) from None
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise JobError(
                    f"--port {port}: already in use on {host} (another distgan rate, or another "
                    f"program); pick another port, e.g. --port {port + 1 if port < 65535 else 8765}"
                ) from None
            if e.errno == errno.EACCES:
                raise JobError(
                    f"--port {port}: this user may not listen there (ports below 1024 need root); "
                    "pick one from 1024 to 65535"
                ) from None
            if e.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
                raise JobError(_not_here(host)) from None
            raise
        self.httpd.session = session
        self.httpd.page = html.encode()
        self.httpd.names = {*LOOPBACK, host.lower(), self.httpd.server_address[0]}
        self.httpd.url = self.url

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    @property
    def url(self) -> str:
        host = self.httpd.server_address[0]
        if host in ("0.0.0.0", "::"):  # every interface: this machine's own address opens it
            host = "127.0.0.1" if host == "0.0.0.0" else "::1"
        return f"http://[{host}]:{self.port}/" if ":" in host else f"http://{host}:{self.port}/"

    def serve_forever(self) -> None:
        self.httpd.serve_forever(poll_interval=0.2)

    def shutdown(self) -> None:
        """Stops ``serve_forever`` (from another thread)."""
        self.httpd.shutdown()

    def close(self) -> None:
        self.httpd.server_close()


def _not_here(host: str) -> str:
    return (
        f"--host {host}: not an address of this machine; leave --host out (the page is on "
        "127.0.0.1) or name one of this machine's own addresses"
    )


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _not_a_number(name: str) -> None:
    raise ValueError(f"{name} is not JSON")  # Python's json reads NaN and Infinity by default


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = socket.SOMAXCONN  # a page's burst of requests waits instead of a reset
    session: RatingSession
    page: bytes
    names: set[str]  # what the Host header may name (lower case, IPv6 without brackets)
    url: str

    def names_this_server(self, host: str) -> bool:
        """Whether a Host header value names this server: one of ``names`` at its port, or, when
        it listens on every interface, any IP address at its port (an address, unlike a DNS
        name, cannot be re-pointed)."""
        m = _HOST.fullmatch(host.strip().lower())
        if m is None or int(m["port"] or 80) != self.server_address[1]:
            return False
        name = m["v6"] or m["name"]
        if name in self.names:
            return True
        return self.server_address[0] in ("0.0.0.0", "::") and _is_address(name)

    def handle_error(self, request, client_address) -> None:
        # A client that goes away mid-request (a closed tab) is not a fault of this server.
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)

    def server_bind(self) -> None:
        # HTTPServer.server_bind asks DNS for the host's full name, which can hang offline.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]


class _Handler(BaseHTTPRequestHandler):
    server_version = "distgan-rate"
    server: _HTTPServer
    timeout = 30  # seconds a client may take to send its request: a stalled one frees its thread
    _linger = False  # a refused body may still be on its way: read and drop it before closing

    def do_GET(self) -> None:
        if not self._names_this_server():
            return
        url = urlsplit(self.path)
        if url.path == "/":
            self._send(200, self.server.page, "text/html; charset=utf-8")
        elif url.path == "/api/next":
            rater = parse_qs(url.query).get("rater", [""])[0]
            self._json(*self.server.session.next(rater))
        else:
            self._refuse(404, f"no such page: {url.path}")

    def do_POST(self) -> None:
        if not self._names_this_server():
            return
        if urlsplit(self.path).path != "/api/answer":
            return self._refuse(404, "no such endpoint")
        # JSON only: a page on another site cannot send that without the browser asking first
        # (a CORS preflight, which this server never grants).
        if self.headers.get_content_type() != "application/json":
            return self._refuse(415, "expected application/json")
        data = self._read_body()
        if data is None:
            return
        try:
            body = json.loads(data, parse_constant=_not_a_number)
        except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested deep
            return self._json(400, {"error": "invalid JSON"})
        try:
            self._json(*self.server.session.answer(body))
        except UserError as e:  # the storage refused the write: the rater and the operator see it
            sys.stderr.write(f"error: {e}\n")
            self._json(500, {"error": str(e)})

    def _names_this_server(self) -> bool:
        """True when the Host header names this server; else the request is refused (400, 421)."""
        hosts = self.headers.get_all("Host", [])
        if len(hosts) != 1:
            self._refuse(400, f"expected one Host header; open {self.server.url}")
            return False
        if not self.server.names_this_server(hosts[0]):
            self._refuse(421, f"the Host header names another server; open {self.server.url}")
            return False
        return True

    def _read_body(self) -> bytes | None:
        """The request's body; None when its length was refused (411, 400, 413) unread."""
        lengths = self.headers.get_all("Content-Length", [])
        if not lengths:
            return self._refuse(411, "Content-Length is required")
        # One count of bytes, digits only: int() would also take "-1", "+5" and "5_0".
        if len(lengths) > 1 or not re.fullmatch(r"[0-9]+", lengths[0].strip(" \t")):
            return self._refuse(400, "Content-Length must be one count of bytes")
        digits = lengths[0].strip(" \t").lstrip("0") or "0"
        if len(digits) > len(str(MAX_BODY)) or int(digits) > MAX_BODY:
            return self._refuse(413, f"an answer is at most {MAX_BODY} bytes")
        return self.rfile.read(int(digits))

    def _refuse(self, status: int, error: str) -> None:
        """Answers with an error before the body is read; the connection closes after it."""
        self._linger = True
        self.close_connection = True
        self._json(status, {"error": error})

    def finish(self) -> None:
        super().finish()
        if not self._linger:
            return
        # Closing a socket with unread bytes resets the connection, which can destroy the
        # refusal before the client reads it: end the answer, then drop what still comes.
        deadline = time.monotonic() + LINGER_S
        with contextlib.suppress(OSError):  # TimeoutError included
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(LINGER_IDLE_S)
            while time.monotonic() < deadline and self.connection.recv(65536):
                pass

    def _json(self, status: int, body: dict) -> None:
        self._send(status, json.dumps(body).encode(), "application/json")

    def _send(self, status: int, data: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        """Quiet: the terminal shows distgan's lines, not one per request."""
