"""Tests of the `sandbox` CLI against a fake sandboxd.

The fake daemon below implements the HTTP routes the CLI uses with canned answers that
depend on the request (exec echoes back what it received), so each test can check both
what the CLI sent and what it made of the answer.  Only the Python standard library is
needed; the CLI binary is built with `make build/sandbox`.
"""

import base64
import json
import os
import re
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


class FakeDaemon:
    """In-memory sandboxd: sandboxes, a request log, and a few scripted exec commands."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests = []
        self.sandboxes = {}
        self.next_id = 1
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
                if len(parts) == 4 and parts[3] == "exec" and method == "POST":
                    return self._exec(req["body"] or {})
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

            def _exec(self, body):
                cmd = body.get("cmd")
                result = {"exit_code": 0, "stdout": "", "stderr": "", "timed_out": False, "duration_ms": 5}
                if cmd == "echo-request":
                    result["stdout"] = json.dumps(body)
                elif cmd == "fail":
                    result.update(exit_code=3, stdout="to stdout\n", stderr="to stderr\n")
                elif cmd == "slow":
                    result.update(exit_code=None, timed_out=True, stderr="partial\n")
                elif cmd == "boom":
                    return self._error(500, "S300", "exec failed: agent unreachable")
                elif cmd == "hang":
                    time.sleep(5)
                elif cmd == "binary":
                    result["stdout"] = "a\u0000b\u00e9\n"
                result["success"] = result["exit_code"] == 0
                result["exitCode"] = result["exit_code"]
                result["duration"] = result["duration_ms"]
                self._send(200, result)

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


def sandbox(daemon, *args, env=None, stdin=subprocess.DEVNULL, timeout=20):
    """Runs the CLI against `daemon` (or no daemon when None) and returns the result."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOXD_")}
    if daemon is not None:
        e["SANDBOXD_URL"] = daemon.url
    e.update(env or {})
    return subprocess.run(
        [CLI, *args], env=e, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout
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


def test_exec_sends_cmd_args_env_and_timeout(daemon):
    sb = daemon.add_sandbox()
    r = sandbox(
        daemon, "exec", sb["id"], "--timeout", "1m30s", "-e", "K=V", "-e", "DROPPED", "--",
        "echo-request", "hello world", "--flag", "-e",
    )
    assert r.returncode == 0, r.stderr
    sent = json.loads(r.stdout)
    assert sent == {"cmd": "echo-request", "args": ["hello world", "--flag", "-e"], "env": ["K=V"], "timeout_ms": 90000}
    (req,) = daemon.log("POST", "/sandbox/sandboxes/%s/exec" % sb["id"])
    assert req["body"] == sent


def test_exec_without_double_dash(daemon):
    sb = daemon.add_sandbox()
    r = sandbox(daemon, "exec", sb["id"], "echo-request", "-c", "x")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"cmd": "echo-request", "args": ["-c", "x"]}


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


def test_exec_writes_raw_bytes(daemon):
    sb = daemon.add_sandbox()
    r = sandbox(daemon, "exec", sb["id"], "--", "binary")
    assert r.returncode == 0
    assert r.stdout == "a\u0000b\u00e9\n".encode()


def test_exec_timed_out_exits_124(daemon):
    sb = daemon.add_sandbox()
    r = sandbox(daemon, "exec", sb["id"], "--timeout", "1s", "--", "slow")
    assert r.returncode == 124
    assert r.stderr == b"partial\n"


def test_exec_stdin_is_sent_base64(daemon):
    sb = daemon.add_sandbox()
    data = b"line one\n\x00\xff binary\n"
    r = subprocess.run(
        [CLI, "exec", "-i", sb["id"], "--", "echo-request"],
        env={**os.environ, "SANDBOXD_URL": daemon.url}, input=data, capture_output=True, timeout=20,
    )
    assert r.returncode == 0, r.stderr
    assert base64.b64decode(json.loads(r.stdout)["stdin"]) == data


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
    assert "stdin" not in json.loads(out)


def test_exec_unknown_sandbox_exits_125_with_message(daemon):
    r = sandbox(daemon, "exec", "sbx_nope", "--", "true")
    assert r.returncode == 125
    assert b"Sandbox not found: sbx_nope (S001)" in r.stderr


def test_token_is_sent_as_bearer(daemon):
    sb = daemon.add_sandbox()
    sandbox(daemon, "exec", sb["id"], "--", "echo-request", env={"SANDBOXD_TOKEN": "s3cret"})
    sandbox(daemon, "list", env={"SANDBOXD_TOKEN": "s3cret"})
    reqs = daemon.log()
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
    (execreq,) = daemon.log("POST", suffix="/exec")
    (delete,) = daemon.log("DELETE")
    assert execreq["path"] == delete["path"] + "/exec"
    assert daemon.sandboxes == {}


def test_run_passes_command_and_timeout(daemon):
    r = sandbox(daemon, "run", "python", "--timeout", "2m", "echo-request", "a", "b")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"cmd": "echo-request", "args": ["a", "b"], "timeout_ms": 120000}
    assert daemon.sandboxes == {}


def test_run_stops_the_sandbox_when_exec_fails(daemon):
    r = sandbox(daemon, "run", "python", "--", "boom")
    assert r.returncode == 125
    assert b"exec failed: agent unreachable (S300)" in r.stderr
    assert len(daemon.log("DELETE")) == 1
    assert daemon.sandboxes == {}


def test_run_timed_out_exits_124_and_stops(daemon):
    r = sandbox(daemon, "run", "python", "--timeout", "1s", "--", "slow")
    assert r.returncode == 124
    assert daemon.sandboxes == {}


def test_run_create_failure_exits_125(daemon):
    r = sandbox(daemon, "run", "missing-image", "--", "true")
    assert r.returncode == 125
    assert b"(S101)" in r.stderr
    assert daemon.log("POST", suffix="/exec") == []


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_run_stops_the_sandbox_on_signal(daemon, sig, code):
    p = subprocess.Popen(
        [CLI, "run", "python", "--", "hang"], env={**os.environ, "SANDBOXD_URL": daemon.url},
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    deadline = time.time() + 10
    while not daemon.log("POST", suffix="/exec"):
        assert time.time() < deadline, "exec never arrived"
        time.sleep(0.05)
    p.send_signal(sig)
    p.communicate(timeout=10)
    assert p.returncode == code
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
