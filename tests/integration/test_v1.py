"""The /v1 surface (opensbx-compatible): lifecycle, commands, ND-JSON streams, errors and
auth, driven over HTTP against a real daemon."""
import http.client
import json
import time

import pytest


def v1_create(daemon, **kw):
    body = {"image": "busybox"}
    body.update(kw)
    r = daemon.request("POST", "/v1/sandboxes", body)
    assert r.status == 201, r
    return r.json


@pytest.fixture
def v1box(daemon):
    sid = v1_create(daemon)["id"]
    yield sid
    daemon.request("DELETE", f"/v1/sandboxes/{sid}")


def is_v1_error(r, status, code):
    return r.status == status and r.json is not None and r.json.get("code") == code and \
        isinstance(r.json.get("message"), str) and set(r.json) == {"code", "message"}


def run_cmd(daemon, sid, command, args=None, **kw):
    body = {"command": command}
    if args is not None:
        body["args"] = args
    body.update(kw)
    r = daemon.request("POST", f"/v1/sandboxes/{sid}/cmd", body)
    assert r.status == 200, r
    return r.json["command"]


def wait_cmd(daemon, sid, cid, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = daemon.request("GET", f"/v1/sandboxes/{sid}/cmd/{cid}")
        assert r.status == 200, r
        if "exit_code" in r.json["command"]:
            return r.json["command"]
        time.sleep(0.05)
    raise AssertionError("command did not finish")


class Stream:
    """An HTTP response read line by line as it arrives."""

    def __init__(self, daemon, method, path, body=None, token=None):
        self.conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=60)
        hdrs = {"Content-Type": "application/json"}
        tok = token if token is not None else daemon.token
        if tok:
            hdrs["Authorization"] = f"Bearer {tok}"
        data = json.dumps(body).encode() if body is not None else None
        self.conn.request(method, path, body=data, headers=hdrs)
        self.resp = self.conn.getresponse()

    def lines(self):
        while True:
            line = self.resp.readline()
            if not line:
                return
            assert line.endswith(b"\n"), line
            yield json.loads(line), time.time()

    def close(self):
        self.conn.close()


# Health and auth.

def test_health_is_open_and_has_its_own_shape(daemon):
    r = daemon.request("GET", "/v1/health")
    assert r.status == 200 and r.json == {"status": "healthy"}


def test_auth_missing_or_wrong_token_is_401(make_daemon):
    d = make_daemon(env={"III_AUTH_TOKEN": "s3cret"}).start()
    assert d.request("GET", "/v1/health", token="").status == 200
    r = d.request("GET", "/v1/sandboxes", token="")
    assert is_v1_error(r, 401, "UNAUTHORIZED"), r
    r = d.request("GET", "/v1/sandboxes", token="wrong")
    assert is_v1_error(r, 401, "UNAUTHORIZED"), r
    r = d.request("POST", "/v1/sandboxes/x/cmd", {"command": "true"}, token="wrong")
    assert is_v1_error(r, 401, "UNAUTHORIZED"), r
    r = d.request("GET", "/v1/sandboxes")
    assert r.status == 200, r


# Sandboxes.

def test_create_inspect_list_delete(daemon):
    r = daemon.request("POST", "/v1/sandboxes",
                       {"image": "busybox", "timeout": 120, "resources": {"memory": 256, "cpus": 0.5},
                        "env": {"GREETING": "hi"}, "ports": ["3000", "53/udp", "bogus"]})
    assert r.status == 201, r
    sid = r.json["id"]
    assert set(r.json) == {"id", "name", "ports"}
    assert r.json["ports"] == ["3000/tcp", "53/udp"]
    try:
        r = daemon.request("GET", f"/v1/sandboxes/{sid}")
        assert r.status == 200, r
        d = r.json
        assert d["id"] == sid and d["image"] == "busybox" and d["status"] == "running"
        assert d["running"] is True and d["ports"] == []
        assert d["resources"] == {"memory": 256, "cpus": 0.5}
        assert d["started_at"].endswith("Z") and "T" in d["started_at"]
        assert d["finished_at"] == "0001-01-01T00:00:00Z"
        assert d["expires_at"].endswith("Z")

        r = daemon.request("GET", "/v1/sandboxes")
        assert r.status == 200, r
        mine = [s for s in r.json["sandboxes"] if s["id"] == sid]
        assert len(mine) == 1
        s = mine[0]
        assert s["state"] == "running" and s["status"].startswith("Up ") and s["image"] == "busybox"
        assert s["ports"] == [] and "expires_at" in s

        # Create-time env reaches commands.
        c = run_cmd(daemon, sid, "sh", ["-c", "echo $GREETING"])
        wait_cmd(daemon, sid, c["id"])
        r = daemon.request("GET", f"/v1/sandboxes/{sid}/cmd/{c['id']}/logs")
        assert r.json["stdout"] == "hi\n", r
    finally:
        r = daemon.request("DELETE", f"/v1/sandboxes/{sid}")
    assert r.status == 204 and r.raw == ""
    assert is_v1_error(daemon.request("GET", f"/v1/sandboxes/{sid}"), 404, "NOT_FOUND")
    # Delete is idempotent, as in the reference.
    assert daemon.request("DELETE", f"/v1/sandboxes/{sid}").status == 204


def test_empty_list_says_so(make_daemon):
    d = make_daemon().start()
    r = d.request("GET", "/v1/sandboxes")
    assert r.status == 200 and r.json == {"sandboxes": [], "message": "no sandboxes found"}


def test_create_errors(daemon):
    assert is_v1_error(daemon.request("POST", "/v1/sandboxes", {}), 400, "BAD_REQUEST")
    assert is_v1_error(daemon.request("POST", "/v1/sandboxes", raw="{not json"), 400, "BAD_REQUEST")
    r = daemon.request("POST", "/v1/sandboxes", {"image": "busybox", "timeout": -1})
    assert is_v1_error(r, 400, "BAD_REQUEST") and r.json["message"] == "timeout must be >= 0"
    r = daemon.request("POST", "/v1/sandboxes", {"image": "busybox", "resources": {"memory": -5}})
    assert is_v1_error(r, 400, "BAD_REQUEST") and "resources.memory" in r.json["message"]
    r = daemon.request("POST", "/v1/sandboxes", {"image": "busybox", "resources": {"cpus": -1}})
    assert is_v1_error(r, 400, "BAD_REQUEST") and "resources.cpus" in r.json["message"]
    r = daemon.request("POST", "/v1/sandboxes", {"image": "alpine"})
    assert is_v1_error(r, 400, "BAD_REQUEST") and "not allowed" in r.json["message"]
    r = daemon.request("POST", "/v1/sandboxes", {"image": "busybox", "env": {"A": 1}})
    assert is_v1_error(r, 400, "BAD_REQUEST")


def test_missing_image_is_400_with_hint(make_daemon, tmp_path):
    d = make_daemon(config={"image_allowlist": ["ghost"],
                            "custom_images": {"ghost": str(tmp_path / "nothing-here")}}).start()
    r = d.request("POST", "/v1/sandboxes", {"image": "ghost"})
    assert is_v1_error(r, 400, "BAD_REQUEST"), r
    assert r.json["message"].startswith("image not found locally") and "S101" in r.json["message"]


def test_capacity_is_409(make_daemon):
    d = make_daemon(config={"max_concurrent_sandboxes": 1}).start()
    v1_create(d)
    r = d.request("POST", "/v1/sandboxes", {"image": "busybox"})
    assert is_v1_error(r, 409, "CONFLICT"), r


def test_unsupported_lifecycle_routes_are_501(daemon, v1box):
    for method, route in [("POST", "stop"), ("POST", "start"), ("POST", "restart"), ("POST", "pause"),
                          ("POST", "resume"), ("POST", "renew-expiration"), ("GET", "stats"),
                          ("GET", "network")]:
        r = daemon.request(method, f"/v1/sandboxes/{v1box}/{route}", {"timeout": 10} if method == "POST" else None)
        assert r.status == 501 and r.json["code"] == "NOT_IMPLEMENTED", (route, r)
        assert route in r.json["message"]
        r = daemon.request(method, f"/v1/sandboxes/sbx_nope/{route}")
        assert is_v1_error(r, 404, "NOT_FOUND"), (route, r)
    # The sandbox still runs after a refused stop.
    assert daemon.request("GET", f"/v1/sandboxes/{v1box}").json["running"] is True


def test_unknown_route_is_v1_404(daemon):
    r = daemon.request("GET", "/v1/nothing/here")
    assert is_v1_error(r, 404, "NOT_FOUND"), r


# Commands.

def test_cmd_async_then_status_and_logs(daemon, v1box):
    c = run_cmd(daemon, v1box, "sh", ["-c", "echo out; echo err >&2; exit 3"])
    assert c["id"].startswith("cmd_") and c["name"] == "sh" and c["args"] == ["-c", "echo out; echo err >&2; exit 3"]
    assert c["sandbox_id"] == v1box and c["cwd"] == "" and isinstance(c["started_at"], int)
    assert c["started_at"] > 1_600_000_000_000
    final = wait_cmd(daemon, v1box, c["id"])
    assert final["exit_code"] == 3 and final["finished_at"] >= final["started_at"]
    r = daemon.request("GET", f"/v1/sandboxes/{v1box}/cmd/{c['id']}/logs")
    assert r.status == 200 and r.json == {"stdout": "out\n", "stderr": "err\n", "exit_code": 3}, r


def test_cmd_runs_argv_without_shell_and_echoes_null_args(daemon, v1box):
    c = run_cmd(daemon, v1box, "echo", ["$HOME", "a;b"])
    wait_cmd(daemon, v1box, c["id"])
    r = daemon.request("GET", f"/v1/sandboxes/{v1box}/cmd/{c['id']}/logs")
    assert r.json["stdout"] == "$HOME a;b\n"
    c = run_cmd(daemon, v1box, "pwd", cwd="/tmp", env={"X": "1"})
    assert c["args"] is None and c["cwd"] == "/tmp"
    assert wait_cmd(daemon, v1box, c["id"])["exit_code"] == 0
    r = daemon.request("GET", f"/v1/sandboxes/{v1box}/cmd/{c['id']}/logs")
    assert r.json["stdout"] == "/tmp\n"
    c = run_cmd(daemon, v1box, "sh", ["-c", "echo $X"], env={"X": "exec-env"})
    wait_cmd(daemon, v1box, c["id"])
    assert daemon.request("GET", f"/v1/sandboxes/{v1box}/cmd/{c['id']}/logs").json["stdout"] == "exec-env\n"


def test_cmd_wait_streams_two_ndjson_lines(daemon, v1box):
    s = Stream(daemon, "POST", f"/v1/sandboxes/{v1box}/cmd?wait=true",
               {"command": "sh", "args": ["-c", "sleep 1; exit 7"]})
    try:
        assert s.resp.status == 200
        assert s.resp.getheader("Content-Type").startswith("application/x-ndjson")
        got = list(s.lines())
    finally:
        s.close()
    assert len(got) == 2
    (first, t1), (second, t2) = got
    assert "exit_code" not in first["command"] and "finished_at" not in first["command"]
    assert second["command"]["exit_code"] == 7 and second["command"]["id"] == first["command"]["id"]
    assert t2 - t1 >= 0.5  # the first line arrived before the command ended

    # Status with ?wait=true: the same two lines; identical once finished.
    cid = first["command"]["id"]
    s = Stream(daemon, "GET", f"/v1/sandboxes/{v1box}/cmd/{cid}?wait=true")
    try:
        got = [j for j, _ in s.lines()]
    finally:
        s.close()
    assert len(got) == 2 and got[0] == got[1] and got[1]["command"]["exit_code"] == 7


def test_wait_flag_must_be_exactly_true(daemon, v1box):
    r = daemon.request("POST", f"/v1/sandboxes/{v1box}/cmd?wait=1", {"command": "sleep", "args": ["1"]})
    assert r.status == 200 and r.headers["Content-Type"].startswith("application/json")
    assert "exit_code" not in r.json["command"]


def test_cmd_list(daemon, v1box):
    a = run_cmd(daemon, v1box, "true")
    b = run_cmd(daemon, v1box, "false")
    wait_cmd(daemon, v1box, a["id"])
    wait_cmd(daemon, v1box, b["id"])
    r = daemon.request("GET", f"/v1/sandboxes/{v1box}/cmd")
    assert r.status == 200
    ids = [c["id"] for c in r.json["commands"]]
    assert ids.index(a["id"]) < ids.index(b["id"])
    codes = {c["id"]: c["exit_code"] for c in r.json["commands"]}
    assert codes[a["id"]] == 0 and codes[b["id"]] == 1
    assert is_v1_error(daemon.request("GET", "/v1/sandboxes/sbx_nope/cmd"), 404, "NOT_FOUND")


def test_cmd_errors(daemon, v1box):
    base = f"/v1/sandboxes/{v1box}/cmd"
    assert is_v1_error(daemon.request("POST", base, {}), 400, "BAD_REQUEST")
    assert is_v1_error(daemon.request("POST", base, {"command": ""}), 400, "BAD_REQUEST")
    assert is_v1_error(daemon.request("POST", base, {"command": "ls", "args": "-l"}), 400, "BAD_REQUEST")
    assert is_v1_error(daemon.request("POST", base, raw="{bad"), 400, "BAD_REQUEST")
    assert is_v1_error(daemon.request("POST", "/v1/sandboxes/sbx_nope/cmd", {"command": "true"}), 404,
                       "NOT_FOUND")
    for path in (f"{base}/cmd_0000", f"{base}/cmd_0000/logs"):
        r = daemon.request("GET", path)
        assert is_v1_error(r, 404, "NOT_FOUND") and r.json["message"] == "command not found", r
    r = daemon.request("POST", f"{base}/cmd_0000/kill", {"signal": 15})
    assert is_v1_error(r, 404, "NOT_FOUND") and r.json["message"] == "command not found", r


def test_command_of_another_sandbox_is_404(daemon, v1box):
    other = v1_create(daemon)["id"]
    try:
        c = run_cmd(daemon, other, "sleep", ["30"])
        for method, suffix, body in [("GET", "", None), ("GET", "/logs", None), ("POST", "/kill", {"signal": 9})]:
            r = daemon.request(method, f"/v1/sandboxes/{v1box}/cmd/{c['id']}{suffix}", body)
            assert is_v1_error(r, 404, "NOT_FOUND") and r.json["message"] == "command not found", (suffix, r)
        # It was not signalled through the wrong sandbox.
        r = daemon.request("GET", f"/v1/sandboxes/{other}/cmd/{c['id']}")
        assert "exit_code" not in r.json["command"]
        r = daemon.request("GET", f"/v1/sandboxes/{v1box}/cmd")
        assert all(x["id"] != c["id"] for x in r.json["commands"])
    finally:
        daemon.request("DELETE", f"/v1/sandboxes/{other}")


def test_kill_ends_command_with_128_plus_signal(daemon, v1box):
    c = run_cmd(daemon, v1box, "sleep", ["30"])
    kill = f"/v1/sandboxes/{v1box}/cmd/{c['id']}/kill"
    for body in ({}, {"signal": 0}, {"signal": -1}, {"signal": 65}, {"signal": "TERM"}):
        r = daemon.request("POST", kill, body)
        assert is_v1_error(r, 400, "BAD_REQUEST"), (body, r)
    assert is_v1_error(daemon.request("POST", kill, raw="{oops"), 400, "BAD_REQUEST")
    t0 = time.time()
    r = daemon.request("POST", kill, {"signal": 15})
    assert r.status == 200, r
    assert time.time() - t0 < 5
    final = wait_cmd(daemon, v1box, c["id"])
    assert final["exit_code"] == 128 + 15
    r = daemon.request("POST", kill, {"signal": 15})
    assert is_v1_error(r, 409, "CONFLICT") and r.json["message"] == "command has already finished", r


def test_kill_reaches_the_process_group(daemon, v1box):
    c = run_cmd(daemon, v1box, "sh", ["-c", "sleep 30 & sleep 30; echo never"])
    time.sleep(0.3)
    r = daemon.request("POST", f"/v1/sandboxes/{v1box}/cmd/{c['id']}/kill", {"signal": 9})
    assert r.status == 200, r
    assert wait_cmd(daemon, v1box, c["id"])["exit_code"] == 128 + 9
    r = daemon.request("GET", f"/v1/sandboxes/{v1box}/cmd/{c['id']}/logs")
    assert "never" not in r.json["stdout"]


def test_logs_stream_is_live_ndjson_ending_with_exit(daemon, v1box):
    c = run_cmd(daemon, v1box, "sh", ["-c", "echo first; echo oops >&2; sleep 2; printf last; exit 4"])
    t0 = time.time()
    s = Stream(daemon, "GET", f"/v1/sandboxes/{v1box}/cmd/{c['id']}/logs?stream=true")
    try:
        assert s.resp.status == 200
        assert s.resp.getheader("Content-Type").startswith("application/x-ndjson")
        got = list(s.lines())
    finally:
        s.close()
    lines = [j for j, _ in got]
    assert lines[-1] == {"type": "exit", "exit_code": 4}
    out = [j["data"] for j in lines if j["type"] == "stdout"]
    err = [j["data"] for j in lines if j["type"] == "stderr"]
    assert out == ["first\n", "last\n"] and err == ["oops\n"]
    first_at = next(t for j, t in got if j.get("data") == "first\n")
    end_at = got[-1][1]
    assert first_at - t0 < 1.5, "the first line must arrive before the command ends"
    assert end_at - first_at >= 1.0


def test_logs_stream_of_finished_command_replays(daemon, v1box):
    c = run_cmd(daemon, v1box, "sh", ["-c", "for i in 1 2 3; do echo line$i; done"])
    wait_cmd(daemon, v1box, c["id"])
    s = Stream(daemon, "GET", f"/v1/sandboxes/{v1box}/cmd/{c['id']}/logs?stream=true")
    try:
        lines = [j for j, _ in s.lines()]
    finally:
        s.close()
    assert lines == [{"type": "stdout", "data": f"line{i}\n"} for i in (1, 2, 3)] + \
        [{"type": "exit", "exit_code": 0}]


def test_logs_snapshot_limit_keeps_the_tail(daemon, v1box):
    c = run_cmd(daemon, v1box, "sh", ["-c", "echo 0123456789"])
    wait_cmd(daemon, v1box, c["id"])
    r = daemon.request("GET", f"/v1/sandboxes/{v1box}/cmd/{c['id']}/logs?limit=4")
    assert r.status == 200 and r.json["stdout"] == "789\n" and r.json.get("truncated") is True, r
    r = daemon.request("GET", f"/v1/sandboxes/{v1box}/cmd/{c['id']}/logs?limit=-1")
    assert is_v1_error(r, 400, "BAD_REQUEST")


def test_running_command_logs_have_no_exit_code(daemon, v1box):
    c = run_cmd(daemon, v1box, "sh", ["-c", "echo started; sleep 30"])
    try:
        deadline = time.time() + 10
        while time.time() < deadline:
            r = daemon.request("GET", f"/v1/sandboxes/{v1box}/cmd/{c['id']}/logs")
            if r.json["stdout"]:
                break
            time.sleep(0.05)
        assert r.json == {"stdout": "started\n", "stderr": ""}, r
    finally:
        daemon.request("POST", f"/v1/sandboxes/{v1box}/cmd/{c['id']}/kill", {"signal": 9})


def test_delete_removes_commands(daemon):
    sid = v1_create(daemon)["id"]
    c = run_cmd(daemon, sid, "sleep", ["30"])
    assert daemon.request("DELETE", f"/v1/sandboxes/{sid}").status == 204
    r = daemon.request("GET", f"/v1/sandboxes/{sid}/cmd/{c['id']}")
    assert is_v1_error(r, 404, "NOT_FOUND"), r


def test_missing_binary_exits_127(daemon, v1box):
    c = run_cmd(daemon, v1box, "/no/such/binary")
    assert wait_cmd(daemon, v1box, c["id"])["exit_code"] == 127
    r = daemon.request("GET", f"/v1/sandboxes/{v1box}/cmd/{c['id']}/logs")
    assert r.json["exit_code"] == 127 and r.json["stderr"], r


def test_logs_stream_large_output_and_long_lines(daemon, v1box):
    script = "seq 1 100000; head -c 150000 /dev/zero | tr '\\0' x"
    c = run_cmd(daemon, v1box, "sh", ["-c", script])
    s = Stream(daemon, "GET", f"/v1/sandboxes/{v1box}/cmd/{c['id']}/logs?stream=true")
    try:
        lines = [j for j, _ in s.lines()]
    finally:
        s.close()
    assert lines[-1] == {"type": "exit", "exit_code": 0}
    data = [j["data"] for j in lines[:-1]]
    assert data[:100000] == [f"{i}\n" for i in range(1, 100001)]
    # A 150000-byte line without a newline comes as 64 KiB pieces, each ending with "\n".
    assert [len(x) for x in data[100000:]] == [65537, 65537, 150000 - 2 * 65536 + 1]
    assert "".join(data[100000:]).replace("\n", "") == "x" * 150000
