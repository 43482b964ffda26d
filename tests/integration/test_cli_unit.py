"""Tests of the `sandbox` CLI against a fake sandboxd.

The fake daemon below implements the HTTP routes the CLI uses with canned answers that
depend on the request (exec echoes back what it received), so each test can check both
what the CLI sent and what it made of the answer.  Its streaming exec writes each
Server-Sent Event as its own HTTP chunk and waits between them, the way a real command
produces output, and scripted commands react to the signals and stdin the CLI forwards.
Only the Python standard library is needed; the CLI binary is built with
`make build/sandbox`.
"""

import base64
import json
import os
import random
import re
import select
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
# SANDBOX_CLI points the tests at another build (e.g. a sanitizer build).
CLI = os.environ.get("SANDBOX_CLI") or os.path.join(ROOT, "build", "sandbox")

# The fake daemon hands out at most this many sandboxes per page, so listing more than
# this exercises the CLI's paging.
FAKE_MAX_PAGE = 2

# How long a scripted command waits for a signal, stdin or the test before it gives up
# and exits with FAKE_GAVE_UP, which no test expects.
FAKE_WAIT = 10
FAKE_GAVE_UP = 99

SIGNAL_NUMBERS = {"SIGINT": 2, "SIGKILL": 9, "SIGTERM": 15}


class FakeExec:
    """One streaming exec: what the CLI sent to it through /exec/signal and /exec/stdin."""

    def __init__(self, exec_id, body):
        self.id = exec_id
        self.body = body
        self.cond = threading.Condition()
        self.signals = []
        self.stdin = []  # decoded chunks, in order
        self.eof = False
        self.finished = False

    def wait(self, predicate):
        with self.cond:
            return self.cond.wait_for(predicate, timeout=FAKE_WAIT)


class FakeDaemon:
    """In-memory sandboxd: sandboxes, a request log, and a few scripted exec commands."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests = []
        self.sandboxes = {}
        self.next_id = 1
        self.execs = {}
        # Set by a test to let the "ticker" command go on after its first chunk.
        self.release = threading.Event()
        handler = self._handler_class()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def log(self, method=None, path=None, suffix=""):
        """Requests received, optionally only those with this method and exact path or
        path ending."""
        with self.lock:
            return [
                r
                for r in self.requests
                if (method is None or r["method"] == method)
                and (path is None or r["path"] == path)
                and r["path"].endswith(suffix)
            ]

    def add_sandbox(self, image="python", name=None, age_ms=0, status="running"):
        with self.lock:
            sid = "sbx_%024x" % self.next_id
            self.next_id += 1
            now = int(time.time() * 1000)
            self.sandboxes[sid] = {
                "id": sid,
                "sandbox_id": sid,
                "name": name,
                "image": image,
                "status": status,
                "createdAt": now - age_ms,
                "expiresAt": now + 3600 * 1000,
                "config": {},
                "metadata": {},
            }
            return self.sandboxes[sid]

    def _handler_class(self):
        daemon = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, status, obj):
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _error(self, status, code, msg):
                self._send(status, {"error": msg, "code": code, "type": "validation", "message": msg})

            def _handle(self, method):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = None
                url = urllib.parse.urlsplit(self.path)
                req = {
                    "method": method,
                    "path": url.path,
                    "query": urllib.parse.parse_qs(url.query),
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": body,
                }
                with daemon.lock:
                    daemon.requests.append(req)
                self._route(method, url.path, req)

            def _route(self, method, path, req):
                parts = [urllib.parse.unquote(p) for p in path.strip("/").split("/")]
                if parts[:2] != ["sandbox", "sandboxes"] and parts[:2] != ["sandbox", "images"]:
                    return self._error(404, "S404", "no route for %s" % path)
                if parts[1] == "images" and method == "GET" and len(parts) == 3:
                    if parts[2] == "slow-image":
                        return self._send(
                            200,
                            {"name": parts[2], "state": "building", "message": "Unpacking python3.11 ...", "elapsedMs": 23000},
                        )
                    return self._send(200, {"name": parts[2], "state": "ready", "message": "", "elapsedMs": 0})
                if len(parts) == 2 and method == "POST":
                    return self._create(req["body"] or {})
                if len(parts) == 2 and method == "GET":
                    return self._list(req["query"])
                sid = parts[2] if len(parts) > 2 else ""
                with daemon.lock:
                    known = sid in daemon.sandboxes
                if not known:
                    return self._error(404, "S001", "Sandbox not found: %s" % sid)
                if len(parts) == 3 and method == "DELETE":
                    with daemon.lock:
                        del daemon.sandboxes[sid]
                    return self._send(200, {"success": True})
                if len(parts) == 5 and parts[3] == "exec" and method == "POST":
                    if parts[4] == "stream":
                        return self._exec_stream(req["body"] or {})
                    if parts[4] == "signal":
                        return self._exec_signal(req["body"] or {})
                    if parts[4] == "stdin":
                        return self._exec_stdin(req["body"] or {})
                return self._error(404, "S404", "no route for %s %s" % (method, path))

            def _create(self, body):
                image = body.get("image")
                if image == "missing-image":
                    return self._error(400, "S101", "image `missing-image` is not installed")
                if image == "slow-image":
                    time.sleep(1.2)
                sb = daemon.add_sandbox(image=image, name=body.get("name"))
                sb["config"] = body
                self._send(200, sb)

            def _list(self, query):
                size = min(int(query.get("pageSize", ["50"])[0]), FAKE_MAX_PAGE)
                page = int(query.get("page", ["1"])[0])
                with daemon.lock:
                    items = list(daemon.sandboxes.values())
                chunk = items[(page - 1) * size : page * size]
                self._send(200, {"items": chunk, "total": len(items), "page": page, "pageSize": size})

            # --- streaming exec -------------------------------------------------------

            def _chunk(self, data):
                """Writes one HTTP chunk and pushes it out at once."""
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()

            def _event(self, ev, raw=None):
                ev.setdefault("timestamp", int(time.time() * 1000))
                self._chunk(raw if raw is not None else b"data: " + json.dumps(ev).encode() + b"\n\n")

            def _out(self, stream, data):
                self._event({"type": stream, "data": base64.b64encode(data).decode(), "encoding": "base64"})

            def _exit(self, code, timed_out=False, signal=None):
                ev = {"type": "exit", "data": "" if code is None else str(code), "exitCode": code, "timedOut": timed_out}
                if signal is not None:
                    ev["signal"] = signal
                self._event(ev)

            def _exec_stream(self, body):
                cmd = body.get("cmd")
                if cmd == "boom":
                    return self._error(500, "S300", "exec failed: agent unreachable")
                ex = FakeExec("exec_%024x" % random.getrandbits(96), body)
                with daemon.lock:
                    daemon.execs[ex.id] = ex
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("X-Exec-Id", ex.id)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.flush()
                self.close_connection = True
                script = getattr(self, "_cmd_" + cmd.replace("-", "_"), None) if cmd else None
                ended = (script or self._cmd_default)(ex)
                with ex.cond:
                    ex.finished = True
                if ended is not False:
                    self._chunk(b"")

            def _cmd_default(self, ex):
                self._exit(0)

            def _cmd_echo_request(self, ex):
                self._out("stdout", json.dumps(ex.body).encode())
                self._exit(0)

            def _cmd_fail(self, ex):
                self._out("stdout", b"to stdout\n")
                self._out("stderr", b"to stderr\n")
                self._exit(3)

            def _cmd_exit(self, ex):
                self._exit(int(ex.body["args"][0]))

            def _cmd_killed(self, ex):
                # Ended without an exit code (None or -1), by a signal or not.
                code, sig = json.loads(ex.body["args"][0])
                self._exit(code, signal=sig)

            def _cmd_daemon_error(self, ex):
                # sandboxd lost the command: an error event, then an exit without status.
                self._out("stdout", b"some output\n")
                self._event({"type": "error", "data": "agent connection lost", "code": "S300"})
                self._exit(-1)

            def _cmd_slow(self, ex):
                self._out("stderr", b"partial\n")
                self._exit(137, timed_out=True, signal=9)

            def _cmd_binary(self, ex):
                self._out("stdout", b"a\x00b\xc3\xa9\xff\xfe\n")
                self._out("stderr", b"\x00\x80err\xc0")
                self._exit(0)

            def _cmd_text(self, ex):
                # Without encoding=base64 the data is the text itself.
                self._event({"type": "stdout", "data": "plain text\n"})
                self._event({"type": "stderr", "data": "plain err\n"})
                self._exit(0)

            def _cmd_interleave(self, ex):
                for i in range(6):
                    self._out("stdout" if i % 2 == 0 else "stderr", b"%d" % i)
                    time.sleep(0.02)
                self._exit(0)

            def _cmd_ticker(self, ex):
                self._out("stdout", b"first chunk, no newline")
                ok = daemon.release.wait(FAKE_WAIT)
                self._out("stdout", b" and the rest\n")
                self._exit(0 if ok else FAKE_GAVE_UP)

            def _cmd_split(self, ex):
                # Events cut into 3-byte pieces, CRLF line endings, a comment, other
                # fields and an unknown event type around the ones that matter.
                data = base64.b64encode(b"split \x00ok\n").decode()
                text = (
                    ": keep-alive\r\n\r\n"
                    "event: output\r\nid: 1\r\n"
                    'data: {"type":"stdout","encoding":"base64",\r\n'
                    'data: "data":"%s","timestamp":1}\r\n\r\n'
                    'data: {"type":"progress","data":"ignored"}\r\n\r\n'
                    'data: {"type":"exit","data":"5","exitCode":5,"timedOut":false,"timestamp":2}\r\n\r\n' % data
                ).encode()
                for i in range(0, len(text), 3):
                    self._chunk(text[i : i + 3])
                    time.sleep(0.002)

            def _cmd_cut(self, ex):
                # The connection drops in the middle of the body.
                self._out("stdout", b"before the cut\n")
                self.wfile.write(b"40\r\ndata: {\"type\"")
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                return False

            def _cmd_noexit(self, ex):
                # The body ends cleanly, but without an exit event.
                self._out("stdout", b"no exit follows\n")

            def _wait_signal(self, ex, seen):
                ex.wait(lambda: len(ex.signals) > seen)
                return ex.signals[seen] if len(ex.signals) > seen else None

            def _cmd_hang(self, ex):
                # Runs until a signal comes, then dies of it as a shell child would.
                self._out("stdout", b"started\n")
                sig = self._wait_signal(ex, 0)
                if sig is None:
                    return self._exit(FAKE_GAVE_UP)
                self._out("stderr", b"got %s\n" % sig.encode())
                self._exit(128 + SIGNAL_NUMBERS[sig], signal=SIGNAL_NUMBERS[sig])

            def _cmd_stubborn(self, ex):
                # Ignores SIGINT; only SIGKILL ends it.
                self._out("stdout", b"started\n")
                for seen in range(5):
                    sig = self._wait_signal(ex, seen)
                    if sig is None:
                        return self._exit(FAKE_GAVE_UP)
                    if sig == "SIGKILL":
                        return self._exit(137, signal=9)
                    self._out("stderr", b"ignoring %s\n" % sig.encode())

            def _cmd_deaf(self, ex):
                # Never ends, whatever it is sent; the CLI has to stop waiting.
                self._out("stdout", b"started\n")
                ex.wait(lambda: False)
                return False

            def _cmd_racy(self, ex):
                # Exits just as the signal arrives: /exec/signal answers 409.
                self._out("stdout", b"started\n")
                ex.wait(lambda: ex.finished)
                self._exit(0)

            def _cmd_cat(self, ex):
                # Echoes stdin chunk by chunk as it arrives, until eof.
                sent = 0
                while True:
                    if not ex.wait(lambda: len(ex.stdin) > sent or ex.eof):
                        return self._exit(FAKE_GAVE_UP)
                    with ex.cond:
                        chunks, eof = ex.stdin[sent:], ex.eof
                    for c in chunks:
                        self._out("stdout", c)
                    sent += len(chunks)
                    if eof and sent == len(ex.stdin):
                        return self._exit(0)

            def _exec_of(self, body):
                with daemon.lock:
                    return daemon.execs.get(body.get("execId"))

            def _exec_signal(self, body):
                ex = self._exec_of(body)
                if ex is None:
                    return self._error(404, "S404", "no such exec")
                if body.get("signal") not in SIGNAL_NUMBERS:
                    return self._error(400, "S400", "bad signal")
                with ex.cond:
                    if ex.body.get("cmd") == "racy":
                        ex.finished = True
                    elif not ex.finished:
                        ex.signals.append(body["signal"])
                    finished = ex.finished
                    ex.cond.notify_all()
                if finished:
                    return self._error(409, "S409", "the command has already finished")
                self._send(200, {"success": True})

            def _exec_stdin(self, body):
                ex = self._exec_of(body)
                if ex is None:
                    return self._error(404, "S404", "no such exec")
                with ex.cond:
                    if ex.finished or ex.eof:
                        conflict = True
                    else:
                        conflict = False
                        data = base64.b64decode(body.get("data") or "")
                        if data:
                            ex.stdin.append(data)
                        ex.eof = bool(body.get("eof"))
                        ex.cond.notify_all()
                if conflict:
                    return self._error(409, "S409", "stdin is closed")
                self._send(200, {"success": True})

            def do_GET(self):
                self._handle("GET")

            def do_POST(self):
                self._handle("POST")

            def do_DELETE(self):
                self._handle("DELETE")

        return Handler


@pytest.fixture(scope="session", autouse=True)
def cli_binary():
    if not os.environ.get("SANDBOX_CLI"):
        subprocess.run(["make", "-s", "build/sandbox"], cwd=ROOT, check=False)
    if not os.access(CLI, os.X_OK):
        pytest.fail("build/sandbox could not be built")


@pytest.fixture
def daemon():
    d = FakeDaemon()
    yield d
    d.close()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sandbox(daemon, *args, env=None, stdin=subprocess.DEVNULL, input=None, timeout=20):
    """Runs the CLI against `daemon` (or no daemon when None) and returns the result."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOXD_")}
    if daemon is not None:
        e["SANDBOXD_URL"] = daemon.url
    e.update(env or {})
    return subprocess.run(
        [CLI, *args], env=e, stdin=stdin, input=input, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        timeout=timeout,
    )


# --- create -----------------------------------------------------------------------------


def test_create_prints_only_the_id_and_nothing_on_stderr_without_a_tty(daemon):
    r = sandbox(daemon, "create", "python")
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(rb"sbx_[0-9a-f]{24}\n", r.stdout)
    assert r.stderr == b""
    # Not on a terminal: no image progress polling either.
    assert not any(r["path"].startswith("/sandbox/images") for r in daemon.log())


def test_create_sends_the_flags_it_was_given(daemon):
    r = sandbox(
        daemon, "create", "python", "--cpus", "2", "--memory=1024", "--idle-timeout", "300",
        "--name", "my box", "--network", "-e", "A=1", "-e", "NOEQUALS", "--env", "B=x=y", "--env=C=",
    )
    assert r.returncode == 0, r.stderr
    (req,) = daemon.log("POST", "/sandbox/sandboxes")
    assert req["body"] == {
        "image": "python", "cpus": 2, "memory_mb": 1024, "idle_timeout_secs": 300,
        "name": "my box", "network": True, "env": ["A=1", "B=x=y", "C="],
    }
    assert req["headers"]["content-type"] == "application/json"


def test_create_sends_only_what_was_given(daemon):
    assert sandbox(daemon, "create", "node").returncode == 0
    (req,) = daemon.log("POST", "/sandbox/sandboxes")
    assert req["body"] == {"image": "node"}


def test_create_on_a_terminal_shows_progress_then_ready(daemon):
    import pty

    master, slave = pty.openpty()
    try:
        p = subprocess.Popen(
            [CLI, "create", "slow-image"], env={**os.environ, "SANDBOXD_URL": daemon.url},
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave,
        )
        os.close(slave)
        slave = -1
        out, _ = p.communicate(timeout=20)
        err = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            err += chunk
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    assert p.returncode == 0
    assert re.fullmatch(rb"sbx_[0-9a-f]{24}\n", out), "stdout stays clean on a terminal too"
    text = err.decode()
    assert "building image slow-image (23s): Unpacking python3.11 ..." in text
    assert "\r\x1b[2K" in text
    assert re.search(r"✓ sandbox ready in \d+\.\ds\r?\n", text)
    assert daemon.log("GET", "/sandbox/images/slow-image")


def test_create_daemon_error_prints_message_and_code_exit_125(daemon):
    r = sandbox(daemon, "create", "missing-image")
    assert r.returncode == 125
    assert r.stdout == b""
    assert b"sandbox: image `missing-image` is not installed (S101)" in r.stderr


def test_port_flag_and_global_url_flag(daemon):
    r = sandbox(None, "create", "python", "--port", str(daemon.port))
    assert r.returncode == 0, r.stderr
    r = sandbox(None, "--url", daemon.url, "list")
    assert r.returncode == 0, r.stderr
    r = sandbox(None, "list", "--url=" + daemon.url + "/")
    assert r.returncode == 0, r.stderr


# --- exec -------------------------------------------------------------------------------


def stream_path(sb):
    return "/sandbox/sandboxes/%s/exec/stream" % sb["id"]


def test_exec_sends_cmd_args_env_and_timeout(daemon):
    sb = daemon.add_sandbox()
    r = sandbox(
        daemon, "exec", sb["id"], "--timeout", "1m30s", "-e", "K=V", "-e", "DROPPED", "--",
        "echo-request", "hello world", "--flag", "-e",
    )
    assert r.returncode == 0, r.stderr
    sent = json.loads(r.stdout)
    assert sent == {
        "cmd": "echo-request", "args": ["hello world", "--flag", "-e"], "env": ["K=V"], "timeout_ms": 90000,
        "encoding": "base64",
    }
    (req,) = daemon.log("POST", stream_path(sb))
    assert req["body"] == sent
    assert req["headers"]["accept"] == "text/event-stream"
    assert daemon.log("POST", "/sandbox/sandboxes/%s/exec" % sb["id"]) == [], "the blocking exec is not used"


def test_exec_without_double_dash(daemon):
    sb = daemon.add_sandbox()
    r = sandbox(daemon, "exec", sb["id"], "echo-request", "-c", "x")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"cmd": "echo-request", "args": ["-c", "x"], "encoding": "base64"}


def test_exec_timeout_in_milliseconds(daemon):
    sb = daemon.add_sandbox()
    r = sandbox(daemon, "exec", sb["id"], "--timeout=500ms", "--", "echo-request")
    assert json.loads(r.stdout)["timeout_ms"] == 500


def test_exec_splits_stdout_and_stderr_and_passes_the_exit_code(daemon):
    sb = daemon.add_sandbox()
    r = sandbox(daemon, "exec", sb["id"], "--", "fail")
    assert r.returncode == 3
    assert r.stdout == b"to stdout\n"
    assert r.stderr == b"to stderr\n"


def test_exec_keeps_interleaved_streams_apart_and_in_order(daemon):
    sb = daemon.add_sandbox()
    r = sandbox(daemon, "exec", sb["id"], "--", "interleave")
    assert r.returncode == 0, r.stderr
    assert (r.stdout, r.stderr) == (b"024", b"135")


def test_exec_writes_exact_bytes(daemon):
    sb = daemon.add_sandbox()
    r = sandbox(daemon, "exec", sb["id"], "--", "binary")
    assert r.returncode == 0
    assert r.stdout == b"a\x00b\xc3\xa9\xff\xfe\n", "NUL bytes and invalid UTF-8 survive on stdout"
    assert r.stderr == b"\x00\x80err\xc0", "and on stderr"


def test_exec_accepts_plain_text_events(daemon):
    sb = daemon.add_sandbox()
    r = sandbox(daemon, "exec", sb["id"], "--", "text")
    assert (r.returncode, r.stdout, r.stderr) == (0, b"plain text\n", b"plain err\n")


def test_exec_parses_events_split_across_reads(daemon):
    sb = daemon.add_sandbox()
    r = sandbox(daemon, "exec", sb["id"], "--", "split")
    assert r.returncode == 5, r.stderr
    assert r.stdout == b"split \x00ok\n"
    assert r.stderr == b""


@pytest.mark.parametrize("code", [0, 1, 42, 255])
def test_exec_exits_with_the_command_exit_code(daemon, code):
    sb = daemon.add_sandbox()
    r = sandbox(daemon, "exec", sb["id"], "--", "exit", str(code))
    assert r.returncode == code, r.stderr


@pytest.mark.parametrize("code,sig,want", [(None, 9, 137), (-1, 2, 130), (-1, None, 1), (None, None, 1)])
def test_exec_without_exit_code_exits_128_plus_signal_or_1(daemon, code, sig, want):
    sb = daemon.add_sandbox()
    r = sandbox(daemon, "exec", sb["id"], "--", "killed", json.dumps([code, sig]))
    assert r.returncode == want, r.stderr


def test_exec_error_event_is_reported_and_exits_125(daemon):
    sb = daemon.add_sandbox()
    r = sandbox(daemon, "exec", sb["id"], "--", "daemon-error")
    assert r.returncode == 125
    assert r.stdout == b"some output\n"
    assert r.stderr == b"sandbox: agent connection lost (S300)\n"


def test_exec_timed_out_exits_124(daemon):
    sb = daemon.add_sandbox()
    r = sandbox(daemon, "exec", sb["id"], "--timeout", "1s", "--", "slow")
    assert r.returncode == 124
    assert r.stderr == b"partial\n"


def spawn(daemon, *args, stdin=subprocess.DEVNULL):
    return subprocess.Popen(
        [CLI, *args], env={**os.environ, "SANDBOXD_URL": daemon.url},
        stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


def read_until(f, want, timeout=10):
    """Reads from the pipe `f` until `want` has been seen; returns everything read."""
    got = b""
    deadline = time.time() + timeout
    while want not in got:
        left = deadline - time.time()
        assert left > 0, "never saw %r, got %r" % (want, got)
        ready, _, _ = select.select([f], [], [], left)
        if ready:
            chunk = os.read(f.fileno(), 65536)
            assert chunk, "EOF before %r, got %r" % (want, got)
            got += chunk
    return got


def wait_for(predicate, what, timeout=10):
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, what
        time.sleep(0.02)


def the_exec(daemon):
    (ex,) = daemon.execs.values()
    return ex


def test_exec_output_arrives_while_the_command_runs(daemon):
    sb = daemon.add_sandbox()
    p = spawn(daemon, "exec", sb["id"], "--", "ticker")
    try:
        # The fake command is blocked until release is set: this chunk (with no newline)
        # can only have come through while it still runs.
        assert read_until(p.stdout, b"first chunk, no newline") == b"first chunk, no newline"
        assert p.poll() is None
        daemon.release.set()
        out, err = p.communicate(timeout=10)
    finally:
        p.kill()
    assert out == b" and the rest\n"
    assert p.returncode == 0, err


@pytest.mark.parametrize("sig,name,code", [(signal.SIGINT, "SIGINT", 130), (signal.SIGTERM, "SIGTERM", 143)])
def test_exec_forwards_a_signal_and_exits_with_the_command_code(daemon, sig, name, code):
    sb = daemon.add_sandbox()
    p = spawn(daemon, "exec", sb["id"], "--", "hang")
    try:
        read_until(p.stdout, b"started\n")
        p.send_signal(sig)
        out, err = p.communicate(timeout=10)
    finally:
        p.kill()
    assert p.returncode == code, err
    assert err == b"got %s\n" % name.encode(), "the command kept streaming after the signal"
    ex = the_exec(daemon)
    reqs = daemon.log("POST", "/sandbox/sandboxes/%s/exec/signal" % sb["id"])
    assert [r["body"] for r in reqs] == [{"execId": ex.id, "signal": name}]
    assert re.fullmatch(r"exec_[0-9a-f]{24}", ex.id)


def test_exec_second_sigint_sends_sigkill(daemon):
    sb = daemon.add_sandbox()
    p = spawn(daemon, "exec", sb["id"], "--", "stubborn")
    try:
        read_until(p.stdout, b"started\n")
        p.send_signal(signal.SIGINT)
        read_until(p.stderr, b"ignoring SIGINT\n")
        assert p.poll() is None, "the CLI waits for the command after forwarding"
        p.send_signal(signal.SIGINT)
        p.communicate(timeout=10)
    finally:
        p.kill()
    assert p.returncode == 137
    reqs = daemon.log("POST", suffix="/exec/signal")
    assert [r["body"]["signal"] for r in reqs] == ["SIGINT", "SIGKILL"]


def test_exec_third_signal_stops_waiting(daemon):
    sb = daemon.add_sandbox()
    p = spawn(daemon, "exec", sb["id"], "--", "deaf")
    try:
        read_until(p.stdout, b"started\n")
        for n in (1, 2):
            p.send_signal(signal.SIGINT)
            wait_for(lambda: len(daemon.log("POST", suffix="/exec/signal")) == n, "signal %d not forwarded" % n)
        assert p.poll() is None
        p.send_signal(signal.SIGINT)
        p.communicate(timeout=10)
    finally:
        p.kill()
    assert p.returncode == 130
    assert [r["body"]["signal"] for r in daemon.log("POST", suffix="/exec/signal")] == ["SIGINT", "SIGKILL"]


def test_exec_signal_to_a_finished_command_is_not_an_error(daemon):
    sb = daemon.add_sandbox()
    p = spawn(daemon, "exec", sb["id"], "--", "racy")
    try:
        read_until(p.stdout, b"started\n")
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=10)
    finally:
        p.kill()
    assert (p.returncode, err) == (0, b"")
    assert len(daemon.log("POST", suffix="/exec/signal")) == 1


def test_exec_stdin_is_streamed_while_the_command_runs(daemon):
    sb = daemon.add_sandbox()
    p = spawn(daemon, "exec", "-i", sb["id"], "--", "cat", stdin=subprocess.PIPE)
    try:
        p.stdin.write(b"hello\n")
        p.stdin.flush()
        assert read_until(p.stdout, b"hello\n") == b"hello\n", "echoed before stdin ended"
        p.stdin.write(b"\x00\xff binary\n")
        p.stdin.flush()
        assert read_until(p.stdout, b"binary\n") == b"\x00\xff binary\n"
        p.stdin.close()
        p.wait(timeout=10)
        out, err = p.stdout.read(), p.stderr.read()
    finally:
        p.kill()
    assert (p.returncode, out, err) == (0, b"", b"")
    (req,) = daemon.log("POST", stream_path(sb))
    assert req["body"]["stdinStream"] is True
    assert "stdin" not in req["body"]
    ex = the_exec(daemon)
    sent = [r["body"] for r in daemon.log("POST", "/sandbox/sandboxes/%s/exec/stdin" % sb["id"])]
    assert all(b["execId"] == ex.id for b in sent)
    assert [base64.b64decode(b["data"]) for b in sent] == [b"hello\n", b"\x00\xff binary\n", b""]
    assert [b["eof"] for b in sent] == [False, False, True]


def test_exec_large_stdin_goes_in_bounded_chunks(daemon):
    sb = daemon.add_sandbox()
    data = random.Random(7).randbytes(300_000)
    r = sandbox(daemon, "exec", "--stdin", sb["id"], "--", "cat", stdin=None, input=data)
    assert r.returncode == 0, r.stderr
    assert r.stdout == data
    sent = [r["body"] for r in daemon.log("POST", suffix="/exec/stdin")]
    chunks = [base64.b64decode(b["data"]) for b in sent]
    assert b"".join(chunks) == data
    assert max(len(c) for c in chunks) <= 65536 and len(chunks) >= 6
    assert [b["eof"] for b in sent] == [False] * (len(sent) - 1) + [True]


def test_exec_does_not_read_stdin_without_the_flag(daemon):
    sb = daemon.add_sandbox()
    # stdin is a pipe nobody writes to or closes: reading it would hang.
    p = subprocess.Popen(
        [CLI, "exec", sb["id"], "--", "echo-request"], env={**os.environ, "SANDBOXD_URL": daemon.url},
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        p.wait(timeout=10)
        out = p.stdout.read()
    finally:
        p.stdin.close()
        p.stdout.close()
        p.stderr.close()
    assert p.returncode == 0
    sent = json.loads(out)
    assert "stdin" not in sent and "stdinStream" not in sent
    assert daemon.log("POST", suffix="/exec/stdin") == []


@pytest.mark.parametrize("cmd,before", [("cut", b"before the cut\n"), ("noexit", b"no exit follows\n")])
def test_exec_stream_ending_without_exit_event_exits_125(daemon, cmd, before):
    sb = daemon.add_sandbox()
    r = sandbox(daemon, "exec", sb["id"], "--", cmd)
    assert r.returncode == 125
    assert r.stdout == before, "output that did arrive was written"
    assert b"sandbox: lost the connection to sandboxd at " + daemon.url.encode() in r.stderr


def test_exec_unknown_sandbox_exits_125_with_message(daemon):
    r = sandbox(daemon, "exec", "sbx_nope", "--", "true")
    assert r.returncode == 125
    assert b"Sandbox not found: sbx_nope (S001)" in r.stderr


def test_exec_refused_before_streaming_exits_125_with_message(daemon):
    sb = daemon.add_sandbox()
    r = sandbox(daemon, "exec", sb["id"], "--", "boom")
    assert r.returncode == 125
    assert r.stderr == b"sandbox: exec failed: agent unreachable (S300)\n"


def test_token_is_sent_as_bearer(daemon):
    sb = daemon.add_sandbox()
    sandbox(daemon, "exec", sb["id"], "--", "echo-request", env={"SANDBOXD_TOKEN": "s3cret"})
    sandbox(daemon, "exec", "-i", sb["id"], "--", "cat", env={"SANDBOXD_TOKEN": "s3cret"}, stdin=None, input=b"x")
    sandbox(daemon, "list", env={"SANDBOXD_TOKEN": "s3cret"})
    reqs = daemon.log()
    assert daemon.log("POST", suffix="/exec/stdin")
    assert reqs and all(r["headers"].get("authorization") == "Bearer s3cret" for r in reqs)


def test_no_token_no_authorization_header(daemon):
    sandbox(daemon, "list")
    assert all("authorization" not in r["headers"] for r in daemon.log())


# --- run --------------------------------------------------------------------------------


def test_run_creates_execs_and_stops(daemon):
    r = sandbox(daemon, "run", "python", "--cpus", "2", "-e", "X=1", "--", "fail")
    assert r.returncode == 3
    assert r.stdout == b"to stdout\n" and r.stderr == b"to stderr\n"
    (create,) = daemon.log("POST", "/sandbox/sandboxes")
    assert create["body"] == {"image": "python", "cpus": 2, "env": ["X=1"]}
    (execreq,) = daemon.log("POST", suffix="/exec/stream")
    (delete,) = daemon.log("DELETE")
    assert execreq["path"] == delete["path"] + "/exec/stream"
    assert daemon.sandboxes == {}


def test_run_passes_command_and_timeout(daemon):
    r = sandbox(daemon, "run", "python", "--timeout", "2m", "echo-request", "a", "b")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"cmd": "echo-request", "args": ["a", "b"], "timeout_ms": 120000, "encoding": "base64"}
    assert daemon.sandboxes == {}


def test_run_streams_output_live(daemon):
    p = spawn(daemon, "run", "python", "--", "ticker")
    try:
        read_until(p.stdout, b"first chunk, no newline")
        assert p.poll() is None and len(daemon.sandboxes) == 1
        daemon.release.set()
        p.communicate(timeout=10)
    finally:
        p.kill()
    assert p.returncode == 0
    assert daemon.sandboxes == {}


def test_run_streams_stdin(daemon):
    r = sandbox(daemon, "run", "python", "-i", "--", "cat", stdin=None, input=b"through run\n")
    assert (r.returncode, r.stdout) == (0, b"through run\n")
    assert daemon.sandboxes == {}


def test_run_stops_the_sandbox_when_exec_fails(daemon):
    r = sandbox(daemon, "run", "python", "--", "boom")
    assert r.returncode == 125
    assert b"exec failed: agent unreachable (S300)" in r.stderr
    assert len(daemon.log("DELETE")) == 1
    assert daemon.sandboxes == {}


def test_run_stops_the_sandbox_when_the_stream_is_cut(daemon):
    r = sandbox(daemon, "run", "python", "--", "cut")
    assert r.returncode == 125
    assert b"lost the connection to sandboxd" in r.stderr
    assert daemon.sandboxes == {}


def test_run_timed_out_exits_124_and_stops(daemon):
    r = sandbox(daemon, "run", "python", "--timeout", "1s", "--", "slow")
    assert r.returncode == 124
    assert daemon.sandboxes == {}


def test_run_create_failure_exits_125(daemon):
    r = sandbox(daemon, "run", "missing-image", "--", "true")
    assert r.returncode == 125
    assert b"(S101)" in r.stderr
    assert daemon.log("POST", suffix="/exec/stream") == []


@pytest.mark.parametrize("sig,name,code", [(signal.SIGINT, "SIGINT", 130), (signal.SIGTERM, "SIGTERM", 143)])
def test_run_forwards_a_signal_then_stops_the_sandbox(daemon, sig, name, code):
    p = spawn(daemon, "run", "python", "--", "hang")
    try:
        read_until(p.stdout, b"started\n")
        p.send_signal(sig)
        out, err = p.communicate(timeout=10)
    finally:
        p.kill()
    assert p.returncode == code, "the command's exit code (the fake dies of %s)" % name
    assert err == b"got %s\n" % name.encode()
    assert [r["body"]["signal"] for r in daemon.log("POST", suffix="/exec/signal")] == [name]
    assert len(daemon.log("DELETE")) == 1
    assert daemon.sandboxes == {}


def test_run_signal_before_the_stream_answers_is_forwarded_once_it_does(daemon):
    # The signal lands after the request went out but possibly before the exec id is
    # known; it must reach the command either way.
    p = spawn(daemon, "run", "python", "--", "hang")
    try:
        wait_for(lambda: daemon.log("POST", suffix="/exec/stream"), "exec never arrived")
        p.send_signal(signal.SIGINT)
        p.communicate(timeout=10)
    finally:
        p.kill()
    assert p.returncode == 130
    assert [r["body"]["signal"] for r in daemon.log("POST", suffix="/exec/signal")] == ["SIGINT"]
    assert daemon.sandboxes == {}


def test_run_third_signal_stops_waiting_and_still_stops_the_sandbox(daemon):
    p = spawn(daemon, "run", "python", "--", "deaf")
    try:
        read_until(p.stdout, b"started\n")
        for n in (1, 2):
            p.send_signal(signal.SIGTERM)
            wait_for(lambda: len(daemon.log("POST", suffix="/exec/signal")) == n, "signal %d not forwarded" % n)
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=10)
    finally:
        p.kill()
    assert p.returncode == 143
    assert [r["body"]["signal"] for r in daemon.log("POST", suffix="/exec/signal")] == ["SIGTERM", "SIGKILL"]
    assert len(daemon.log("DELETE")) == 1
    assert daemon.sandboxes == {}


# --- list -------------------------------------------------------------------------------


def test_list_prints_an_aligned_table_over_all_pages(daemon):
    daemon.add_sandbox(image="python", name="web", age_ms=5_000)
    daemon.add_sandbox(image="node", name=None, age_ms=3 * 60_000 + 10)
    daemon.add_sandbox(image="python", name="a-much-longer-name", age_ms=2 * 3600_000 + 10, status="stopped")
    r = sandbox(daemon, "list")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.decode().splitlines()
    assert lines[0].split() == ["ID", "NAME", "IMAGE", "STATUS", "AGE"]
    assert len(lines) == 4, "all three pages were read"
    rows = [l.split() for l in lines[1:]]
    assert [row[1:] for row in rows] == [
        ["web", "python", "running", "5s"],
        ["-", "node", "running", "3m"],
        ["a-much-longer-name", "python", "stopped", "2h"],
    ]
    starts = [re.search(r"\b%s\b" % h, lines[0]).start() for h in ["NAME", "IMAGE", "STATUS", "AGE"]]
    for line, row in zip(lines[1:], rows):
        assert [line.index(" " + v) + 1 for v in row[1:]] == starts
    pages = [r["query"].get("page", ["1"])[0] for r in daemon.log("GET", "/sandbox/sandboxes")]
    assert pages == ["1", "2"]
    assert all(r["query"]["pageSize"] == ["200"] for r in daemon.log("GET", "/sandbox/sandboxes"))


def test_list_empty_prints_the_header(daemon):
    r = sandbox(daemon, "list", "--all")
    assert r.returncode == 0
    assert r.stdout.decode().split() == ["ID", "NAME", "IMAGE", "STATUS", "AGE"]


def test_list_json(daemon):
    a = daemon.add_sandbox(name="one")
    b = daemon.add_sandbox(name="two")
    c = daemon.add_sandbox(name="three")
    r = sandbox(daemon, "list", "--json")
    assert r.returncode == 0
    assert [x["id"] for x in json.loads(r.stdout)] == [a["id"], b["id"], c["id"]]


# --- stop -------------------------------------------------------------------------------


def test_stop_prints_nothing(daemon):
    sb = daemon.add_sandbox()
    r = sandbox(daemon, "stop", sb["id"])
    assert (r.returncode, r.stdout, r.stderr) == (0, b"", b"")
    assert daemon.sandboxes == {}


def test_stop_unknown_id_exits_1_with_the_message(daemon):
    r = sandbox(daemon, "stop", "sbx_unknown")
    assert r.returncode == 1
    assert r.stderr == b"sandbox: Sandbox not found: sbx_unknown (S001)\n"


# --- help, usage errors, unreachable daemon ------------------------------------------------


HELP_FLAGS = {
    "run": ["--cpus", "--memory", "--idle-timeout", "--name", "--network", "--env", "--timeout", "--stdin", "--port"],
    "create": ["--cpus", "--memory", "--idle-timeout", "--name", "--network", "-e", "--env", "--port"],
    "exec": ["--timeout", "-e", "--env", "--stdin", "--port"],
    "list": ["--json", "--all", "--port"],
    "stop": ["--port"],
}


@pytest.mark.parametrize("cmd", sorted(HELP_FLAGS))
def test_subcommand_help(cmd):
    for argv in ([cmd, "--help"], [cmd, "-h"], ["help", cmd]):
        r = sandbox(None, *argv)
        assert r.returncode == 0, argv
        text = r.stdout.decode()
        assert text.startswith("Usage: sandbox " + cmd)
        for flag in HELP_FLAGS[cmd]:
            assert flag in text, (cmd, flag)


def test_top_level_help_and_version():
    for argv in (["--help"], ["help"], ["-h"]):
        r = sandbox(None, *argv)
        assert r.returncode == 0
        for cmd in HELP_FLAGS:
            assert cmd in r.stdout.decode()
    r = sandbox(None, "--version")
    assert (r.returncode, r.stdout) == (0, b"sandbox 0.1.0\n")


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["--bogus", "list"],
        ["list", "--bogus"],
        ["create"],
        ["create", "python", "--cpus", "two"],
        ["create", "python", "--cpus=0"],
        ["create", "python", "--memory", "-5"],
        ["create", "python", "--idle-timeout", "soon"],
        ["create", "python", "--cpus"],
        ["create", "python", "extra"],
        ["create", "python", "--port", "99999"],
        ["exec", "sbx_1"],
        ["exec", "sbx_1", "--"],
        ["exec"],
        ["exec", "sbx_1", "--timeout", "forever", "--", "true"],
        ["exec", "sbx_1", "--network", "--", "true"],
        ["run", "python"],
        ["run", "python", "--timeout", "5x", "--", "true"],
        ["stop"],
        ["stop", "a", "b"],
        ["list", "extra"],
        ["help", "frobnicate"],
    ],
)
def test_usage_errors_exit_2(daemon, argv):
    r = sandbox(daemon, *argv)
    assert r.returncode == 2, (argv, r.stderr)
    assert r.stdout == b""
    assert r.stderr
    assert daemon.log() == [], "nothing reached the daemon"


@pytest.mark.parametrize("argv", [["list"], ["create", "python"], ["stop", "sbx_1"], ["exec", "sbx_1", "--", "true"], ["run", "python", "--", "true"]])
def test_unreachable_daemon_exits_125(argv):
    port = free_port()
    r = sandbox(None, argv[0], "--port", str(port), *argv[1:])
    assert r.returncode == 125
    msg = r.stderr.decode()
    assert "cannot reach sandboxd at http://127.0.0.1:%d" % port in msg
    assert "sudo build/sandboxd" in msg
