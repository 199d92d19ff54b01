"""Both HTTP servers under ``ojs-server`` (``--http-server uvicorn|hypercorn``): each serves
the binding, bounds the request head, answers pipelined requests and lets a request in flight
finish when the server stops. Real server processes on loopback."""

from __future__ import annotations

import json
import signal
import socket
import threading
from typing import BinaryIO

import httpx
import pytest
from test_http_edges import status_line
from test_http_startup import server

from ojs_http import http_server

KINDS = ["uvicorn", "hypercorn"]


def _addr(base: str) -> tuple[str, int]:
    host, port = base.removeprefix("http://").split(":")
    return host, int(port)


def _read_response(stream: BinaryIO) -> tuple[int, bytes]:
    """One HTTP/1.1 response with a content-length, read from a buffered stream over the
    socket (``sock.makefile("rb")``): status and body. Buffered, so the bytes of a pipelined
    response that arrived in the same read as this one stay for the next call."""
    status_line = stream.readline()
    assert status_line, "connection closed before a response"
    length = None
    while (line := stream.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    assert line, "connection closed mid-head"
    assert length is not None, f"no content-length: {status_line!r}"
    body = stream.read(length)
    assert len(body) == length, "connection closed mid-body"
    return int(status_line.split()[1]), body


def test_auto_prefers_uvicorn_when_installed() -> None:
    assert http_server.uvicorn_installed()  # a dependency of ojs-http[server]
    assert http_server.resolve("auto") == "uvicorn"
    assert http_server.resolve("hypercorn") == "hypercorn"


@pytest.mark.parametrize("kind", KINDS)
def test_each_server_serves_the_binding(kind: str) -> None:
    with server("--http-server", kind) as (base, lines, _proc):
        assert status_line(base, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n") == (
            "HTTP/1.1 404 Not Found"
        )
        created = httpx.post(f"{base}/ojs/v1/jobs", json={"type": "t.x", "args": [1]})
        assert created.status_code == 201
        job_id = created.json()["job"]["id"]
        got = httpx.get(f"{base}/ojs/v1/jobs/{job_id}")
        assert got.json()["job"]["args"] == [1]
    assert any(f"HTTP server: {kind}" in line for line in lines), lines


@pytest.mark.parametrize("kind", KINDS)
def test_a_request_head_over_the_bound_is_refused(kind: str) -> None:
    bound = http_server.MAX_HEAD_BYTES
    with server("--http-server", kind) as (base, _lines, _proc):
        # Just under the bound: served.
        filler = b"a" * (bound - 200)
        ok = b"GET /ojs/v1/health HTTP/1.1\r\nHost: x\r\nX-Pad: " + filler + b"\r\n\r\n"
        assert status_line(base, ok) == "HTTP/1.1 200 OK"
        # Over it, in one write: refused by ours; h11 (Hypercorn) bounds only what is still
        # incomplete after a read, so it serves a large head that arrives whole.
        big = b"GET /ojs/v1/health HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * bound + b"\r\n\r\n"
        want = "431 Request Header Fields Too Large" if kind == "uvicorn" else "200 OK"
        assert status_line(base, big) == f"HTTP/1.1 {want}"
        # A header without end, sent in pieces: refused long before it ends.
        with socket.create_connection(_addr(base), timeout=10) as sock:
            sock.sendall(b"GET /ojs/v1/health HTTP/1.1\r\nHost: x\r\nX-Endless: ")
            sent = 0
            answer = b""
            try:
                while sent < 64 * bound:
                    sock.sendall(b"a" * 4096)
                    sent += 4096
                    sock.settimeout(0.01)
                    try:
                        answer = sock.recv(4096)
                    except TimeoutError:
                        continue
                    finally:
                        sock.settimeout(10)
                    break
            except (BrokenPipeError, ConnectionResetError):
                pass
            assert sent < 64 * bound, "the server took the endless header"
            if answer:
                assert answer.split(b"\r\n", 1)[0].split()[1] in (b"431", b"400")


@pytest.mark.parametrize("kind", KINDS)
def test_pipelined_requests_with_a_large_body_are_each_answered(kind: str) -> None:
    body = json.dumps({"type": "t.big", "args": ["x" * 200_000]}).encode()
    first = (
        b"POST /ojs/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    second = b"GET /ojs/v1/health HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"b" * 8000 + b"\r\n\r\n"
    with (
        server("--http-server", kind) as (base, _lines, _proc),
        socket.create_connection(_addr(base), timeout=10) as sock,
    ):
        sock.sendall(first + second)
        # Both answers may come in one read: the reader keeps what follows the first.
        with sock.makefile("rb") as stream:
            assert _read_response(stream)[0] == 201
            assert _read_response(stream)[0] == 200


@pytest.mark.parametrize("kind", KINDS)
def test_a_request_in_flight_finishes_when_the_server_stops(kind: str) -> None:
    fetch = json.dumps({"queues": ["drain"], "worker_id": "w1", "wait_ms": 1500}).encode()
    request = (
        b"POST /ojs/v1/workers/fetch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(fetch)).encode() + b"\r\n\r\n" + fetch
    )
    answers: list[tuple[int, bytes]] = []
    with server("--http-server", kind) as (base, _lines, proc):
        with (
            socket.create_connection(_addr(base), timeout=10) as polling,
            polling.makefile("rb") as stream,
        ):
            polling.sendall(request)
            # A request on another connection, answered after the long-poll was sent: the
            # server has read the long-poll by then (one event loop, read in arrival order).
            assert httpx.get(f"{base}/ojs/v1/health").status_code == 200
            reader = threading.Thread(target=lambda: answers.append(_read_response(stream)))
            reader.start()
            proc.send_signal(signal.SIGTERM)
            reader.join(timeout=15)
        assert proc.wait(timeout=20) == 0
    assert answers, "the long-poll got no answer"
    status, payload = answers[0]
    assert status == 200
    assert json.loads(payload)["jobs"] == []
