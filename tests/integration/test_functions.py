"""The function dialect over HTTP: POST /functions/<function_id> with the guide's payloads,
results and `handler error: {...}` envelope (spec/sandbox-guide.txt)."""
import base64
import json
import re
import threading
import time

import pytest

ENVELOPE = re.compile(r"handler error:\s*(\{.*\})")


def call(d, function_id, payload=None, **kw):
    return d.request("POST", f"/functions/{function_id}", payload if payload is not None else {}, **kw)


def envelope(r):
    """The envelope as a guide client extracts it from the error message."""
    assert r.json is not None, r
    m = ENVELOPE.search(r.json["error"])
    assert m, r
    env = json.loads(m.group(1))
    assert set(env) == {"type", "code", "message"}, env
    assert (env["type"], env["code"], env["message"]) == (r.json["type"], r.json["code"], r.json["message"])
    return env


def create(d, **payload):
    payload.setdefault("image", "busybox")
    r = call(d, "sandbox::create", payload)
    assert r.status == 200, r
    return r.json["sandbox_id"]


def stop(d, sid):
    call(d, "sandbox::stop", {"sandbox_id": sid, "wait": True})


@pytest.fixture
def fsb(daemon):
    sid = create(daemon)
    yield sid
    stop(daemon, sid)


def fexec(d, sid, cmd, **kw):
    payload = {"sandbox_id": sid, "cmd": cmd}
    payload.update(kw)
    return call(d, "sandbox::exec", payload)


def test_round_trip(daemon):
    r = call(daemon, "sandbox::create", {"image": "busybox", "name": "fn-rt", "cpus": 1, "memory_mb": 128,
                                         "network": False, "idle_timeout_secs": 60, "unknown_key": 1})
    assert r.status == 200, r
    sid = r.json["sandbox_id"]
    assert re.fullmatch(r"sbx_[0-9a-f]{24}", sid)
    assert r.json["image"] == "busybox" and r.json["name"] == "fn-rt"

    r = fexec(daemon, sid, "echo", args=["hi"])
    assert r.status == 200, r
    assert r.json["stdout"] == "hi\n" and r.json["success"] is True

    r = call(daemon, "sandbox::list")
    assert r.status == 200, r
    mine = [s for s in r.json["sandboxes"] if s["sandbox_id"] == sid]
    assert len(mine) == 1
    s = mine[0]
    assert s["name"] == "fn-rt" and s["image"] == "busybox"
    assert s["exec_in_progress"] is False and s["stopped"] is False and s["age_secs"] >= 0

    r = call(daemon, "sandbox::stop", {"sandbox_id": sid, "wait": True})
    assert r.status == 200, r
    assert r.json["stopped"] is True
    ids = [s["sandbox_id"] for s in call(daemon, "sandbox::list").json["sandboxes"]]
    assert sid not in ids
    # The record went away with the stop, so the id is simply unknown now.
    r = fexec(daemon, sid, "true")
    assert r.status == 404 and envelope(r)["code"] == "S002"


def test_exec_output_shape(daemon, fsb):
    r = fexec(daemon, fsb, "sh", args=["-c", "echo out; echo err >&2; exit 3"])
    assert r.status == 200, r
    j = r.json
    assert j["stdout"] == "out\n" and j["stderr"] == "err\n"
    assert j["exit_code"] == 3 and j["success"] is False and j["timed_out"] is False
    assert isinstance(j["duration_ms"], int) and j["duration_ms"] >= 0
    ok = fexec(daemon, fsb, "true").json
    assert ok["exit_code"] == 0 and ok["success"] is True


def test_workdir(daemon, fsb):
    assert fexec(daemon, fsb, "pwd").json["stdout"] == "/workspace\n"
    assert fexec(daemon, fsb, "pwd", workdir="/tmp").json["stdout"] == "/tmp\n"


def test_env_layering(daemon):
    sid = create(daemon, env=["BASE=b", "OVER=create"])
    try:
        show = ["-c", "echo $BASE $OVER ${ONLY:-unset}"]
        r = fexec(daemon, sid, "sh", args=show, env=["OVER=exec", "ONLY=1"])
        assert r.json["stdout"] == "b exec 1\n", r
        r = fexec(daemon, sid, "sh", args=show)
        assert r.json["stdout"] == "b create unset\n", r
        r = fexec(daemon, sid, "sh", args=show, env=["OVER="])
        assert r.json["stdout"] == "b unset\n", r
    finally:
        stop(daemon, sid)


def test_env_must_be_a_list_of_pairs(daemon, fsb):
    for bad in (["NOEQUALS"], {"A": "1"}, ["=x"], [1]):
        r = fexec(daemon, fsb, "true", env=bad)
        assert r.status == 400, (bad, r)
        assert envelope(r)["code"] == "S001"
    r = call(daemon, "sandbox::create", {"image": "busybox", "env": {"A": "1"}})
    assert r.status == 400 and envelope(r)["code"] == "S001"


def test_stdin_base64_binary(daemon, fsb):
    r = fexec(daemon, fsb, "cat", stdin=base64.b64encode(b"line1\nline2\n").decode())
    assert r.json["stdout"] == "line1\nline2\n"
    data = bytes(range(256)) * 4
    r = fexec(daemon, fsb, "wc", args=["-c"], stdin=base64.b64encode(data).decode())
    assert r.json["stdout"].strip() == str(len(data))
    r = fexec(daemon, fsb, "od", args=["-An", "-tx1", "-N4", "-j254"], stdin=base64.b64encode(data).decode())
    assert r.json["stdout"].split() == ["fe", "ff", "00", "01"]
    r = fexec(daemon, fsb, "cat", stdin="not base64!!")
    assert r.status == 400 and envelope(r)["code"] == "S001"


@pytest.mark.parametrize("cmd", ["echo hi", "node -v", "echo\thi", "ls\n"])
def test_cmd_with_whitespace_is_s001(daemon, fsb, cmd):
    r = fexec(daemon, fsb, cmd)
    assert r.status == 400, r
    env = envelope(r)
    assert env["code"] == "S001" and env["type"] == "validation"
    assert "args" in env["message"]


def test_shell_metacharacters_are_literal(daemon, fsb):
    r = fexec(daemon, fsb, "echo", args=["a;b", "$HOME", "|", "&&", ">x"])
    assert r.json["stdout"] == "a;b $HOME | && >x\n"
    # A cmd made of metacharacters is a binary name, not a shell line.
    r = fexec(daemon, fsb, "true;false")
    assert r.status == 200 and r.json["exit_code"] == 127


def test_timeout_is_s200(daemon, fsb):
    t0 = time.time()
    r = fexec(daemon, fsb, "sh", args=["-c", "echo started; sleep 30"], timeout_ms=500)
    assert time.time() - t0 < 10
    assert r.status == 504, r
    env = envelope(r)
    assert env == {"type": "execution", "code": "S200", "message": "exec timed out after 500ms"}
    assert r.json["timed_out"] is True and r.json["stdout"] == "started\n"
    # The sandbox is usable afterwards.
    assert fexec(daemon, fsb, "true").json["success"] is True


def test_concurrent_exec_is_s003(daemon, fsb):
    first = {}

    def run():
        first["r"] = fexec(daemon, fsb, "sleep", args=["3"])

    t = threading.Thread(target=run)
    t.start()
    try:
        deadline = time.time() + 10
        while time.time() < deadline:
            s = [x for x in call(daemon, "sandbox::list").json["sandboxes"] if x["sandbox_id"] == fsb]
            if s and s[0]["exec_in_progress"]:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the first exec never showed as in progress")
        r = fexec(daemon, fsb, "true")
        assert r.status == 409, r
        env = envelope(r)
        assert env["code"] == "S003" and env["type"] == "validation"
    finally:
        t.join()
    assert first["r"].status == 200 and first["r"].json["success"] is True
    assert fexec(daemon, fsb, "true").json["success"] is True


def test_concurrency_limit_is_configurable(make_daemon):
    d = make_daemon(config={"function_exec_concurrency": 2}).start()
    sid = create(d)
    results = []
    threads = [threading.Thread(target=lambda: results.append(fexec(d, sid, "sleep", args=["2"])))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.status for r in results] == [200, 200], results


def test_unknown_and_malformed_ids(daemon):
    r = fexec(daemon, "sbx_" + "0" * 24, "true")
    assert r.status == 404, r
    env = envelope(r)
    assert env["code"] == "S002" and env["type"] == "validation"
    assert env["message"] == "sandbox not found: sbx_" + "0" * 24
    for bad in ("nope", "sbx_ABCDEF000000000000000000", "sbx_123", "../etc/passwd"):
        r = fexec(daemon, bad, "true")
        assert r.status == 400, (bad, r)
        assert envelope(r)["code"] == "S001"
        assert "bad sandbox id" in r.json["message"]
    r = call(daemon, "sandbox::exec", {"cmd": "true"})
    assert r.status == 400 and envelope(r)["code"] == "S001"
    r = call(daemon, "sandbox::stop", {"sandbox_id": "sbx_" + "0" * 24})
    assert r.status == 404 and envelope(r)["code"] == "S002"
    r = call(daemon, "sandbox::stop", {"sandbox_id": "nope", "wait": True})
    assert r.status == 400 and envelope(r)["code"] == "S001"


def test_stopped_sandbox_is_s004(daemon):
    # The reaper stops an idle sandbox and keeps its record for a while: exec answers S004.
    sid = create(daemon, idle_timeout_secs=1)
    try:
        deadline = time.time() + 15
        while time.time() < deadline:
            s = [x for x in call(daemon, "sandbox::list").json["sandboxes"] if x["sandbox_id"] == sid]
            if s and s[0]["stopped"]:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the idle sandbox was not stopped")
        r = fexec(daemon, sid, "true")
        assert r.status == 409, r
        env = envelope(r)
        assert env["code"] == "S004" and env["type"] == "validation"
    finally:
        call(daemon, "sandbox::stop", {"sandbox_id": sid, "wait": True})


def test_stop_without_wait_returns_at_once(daemon):
    sid = create(daemon)
    r = call(daemon, "sandbox::stop", {"sandbox_id": sid, "wait": False})
    assert r.status == 200, r
    deadline = time.time() + 15
    while time.time() < deadline:
        if sid not in [s["sandbox_id"] for s in call(daemon, "sandbox::list").json["sandboxes"]]:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the background stop did not remove the sandbox")
    assert fexec(daemon, sid, "true").status == 404


def test_image_not_allowed_is_s100(daemon):
    r = call(daemon, "sandbox::create", {"image": "not-allowed-image"})
    assert r.status == 403, r
    env = envelope(r)
    assert env["code"] == "S100" and env["type"] == "config"


def test_create_validation(daemon):
    for payload in ({}, {"image": ""}, {"image": 3}, {"image": "busybox", "cpus": "many"},
                    {"image": "busybox", "memory_mb": -1}, {"image": "busybox", "network": "maybe"}):
        r = call(daemon, "sandbox::create", payload)
        assert r.status == 400, (payload, r)
        assert envelope(r)["code"] == "S001"


def test_unknown_function_is_404(daemon):
    r = call(daemon, "sandbox::nope")
    assert r.status == 404, r
    env = envelope(r)
    assert env["code"] == "S001" and "sandbox::nope" in env["message"]


def test_functions_need_the_token(make_daemon):
    d = make_daemon(env={"III_AUTH_TOKEN": "s3cret"}).start()
    assert call(d, "sandbox::list", token="wrong").status == 403
    r = call(d, "sandbox::list")
    assert r.status == 200 and isinstance(r.json["sandboxes"], list)


def test_output_cap_truncates(make_daemon):
    d = make_daemon(config={"max_exec_output_bytes": 1000}).start()
    sid = create(d)
    r = fexec(d, sid, "sh", args=["-c", "yes x | head -c 5000"])
    assert r.status == 200, r
    assert len(r.json["stdout"]) == 1000 and r.json["truncated"] is True
