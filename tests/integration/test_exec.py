"""Blocking exec on the /sandbox surface: both request forms, env layering, stdin,
timeouts, exit codes, and concurrency."""
import base64
import concurrent.futures
import json


def test_shell_command(daemon, sandbox):
    r = daemon.exec(sandbox, "echo hello; echo oops >&2; exit 3")
    assert r.status == 200, r
    j = r.json
    assert j["stdout"] == "hello\n" and j["stderr"] == "oops\n"
    assert j["exitCode"] == 3 and j["exit_code"] == 3 and j["success"] is False
    assert j["timed_out"] is False and j["duration"] >= 0 and j["duration_ms"] >= 0


def test_argv_form_does_not_use_a_shell(daemon, sandbox):
    r = daemon.exec(sandbox, cmd="echo", args=["a;b", "$HOME", "'q'", "two words", "|"])
    assert r.json["stdout"] == "a;b $HOME 'q' two words |\n"
    assert r.json["exit_code"] == 0 and r.json["success"] is True


def test_missing_binary_is_127(daemon, sandbox):
    r = daemon.exec(sandbox, cmd="/no/such/binary")
    assert r.status == 200
    assert r.json["exit_code"] == 127 and "No such file" in r.json["stderr"]


def test_env_layers(daemon):
    sid = daemon.create(env={"BASE": "b", "OVER": "create"})
    try:
        r = daemon.exec(sid, "echo $BASE $OVER $ONLY", env={"OVER": "exec", "ONLY": "1"})
        assert r.json["stdout"] == "b exec 1\n"
        r = daemon.exec(sid, "echo $BASE $OVER $ONLY", env=["OVER=list"])
        assert r.json["stdout"] == "b list\n"
        r = daemon.exec(sid, "echo $BASE $OVER ${ONLY:-unset}")
        assert r.json["stdout"] == "b create unset\n"
        assert "PATH=" in daemon.exec(sid, cmd="env").json["stdout"]
    finally:
        daemon.delete(sid)


def test_workdir_and_cwd(daemon, sandbox):
    assert daemon.exec(sandbox, "pwd").json["stdout"] == "/workspace\n"
    assert daemon.exec(sandbox, "pwd", cwd="/tmp").json["stdout"] == "/tmp\n"
    daemon.exec(sandbox, "mkdir -p /workspace/sub")
    assert daemon.exec(sandbox, "pwd", cwd="sub").json["stdout"] == "/workspace/sub\n"
    bad = daemon.exec(sandbox, "pwd", cwd="/does/not/exist")
    assert bad.json["exit_code"] != 0 and "/does/not/exist" in bad.json["stderr"]
    sid = daemon.create(workdir="/srv/app")
    try:
        assert daemon.exec(sid, "pwd").json["stdout"] == "/srv/app\n"
    finally:
        daemon.delete(sid)


def test_stdin_binary(daemon, sandbox):
    data = bytes(range(256)) * 64 + b"\x00end"
    r = daemon.exec(sandbox, "od -An -tx1 | wc -l; ", stdin=base64.b64encode(data).decode())
    assert r.status == 200 and int(r.json["stdout"].strip()) > 0
    r = daemon.exec(sandbox, cmd="wc", args=["-c"], stdin=base64.b64encode(data).decode())
    assert r.json["stdout"].strip() == str(len(data))
    big = b"x" * (3 << 20)
    r = daemon.exec(sandbox, cmd="wc", args=["-c"], stdin=base64.b64encode(big).decode())
    assert r.json["stdout"].strip() == str(len(big))


def test_bad_exec_requests(daemon, sandbox):
    path = f"/sandbox/sandboxes/{sandbox}/exec"
    for body, frag in [({}, "command is required"), ({"command": ""}, "command is required"),
                       ({"command": "true", "stdin": "%%%"}, "base64"),
                       ({"command": "true", "cmd": "true"}, "not both"),
                       ({"cmd": "echo", "args": "notalist"}, "array"),
                       ({"command": "true", "timeout": "soon"}, "integer")]:
        r = daemon.request("POST", path, body)
        assert r.status == 400 and r.json["code"] == "S001" and frag in r.json["error"], (body, r)
    r = daemon.request("POST", path, raw="{bad")
    assert r.status == 400 and r.json["code"] == "S001"


def test_timeout_kills_process_group(daemon, sandbox):
    r = daemon.exec(sandbox, "sleep 30 & sleep 30", timeout_ms=500)
    j = r.json
    assert j["timed_out"] is True and j["exit_code"] == 124 and j["success"] is False
    assert j["duration_ms"] < 10000
    ps = daemon.exec(sandbox, "ps -o comm | grep -c sleep || true").json["stdout"].strip()
    assert ps == "0"
    r = daemon.exec(sandbox, "sleep 5", timeout=1)
    assert r.json["timed_out"] is True


def test_timeout_is_capped(make_daemon):
    d = make_daemon(env={"III_MAX_CMD_TIMEOUT": "1"}).start()
    sid = d.create()
    r = d.exec(sid, "sleep 10", timeout=100)
    assert r.json["timed_out"] is True and r.json["duration_ms"] < 8000


def test_signal_exit_code(daemon, sandbox):
    r = daemon.exec(sandbox, "kill -9 $$")
    assert r.json["exit_code"] == 137 and r.json.get("signal") == 9


def test_invalid_utf8_is_replaced(daemon, sandbox):
    r = daemon.exec(sandbox, "printf 'ok\\377\\376end'")
    assert r.status == 200
    assert r.json["stdout"] == "ok\ufffd\ufffdend"
    json.dumps(r.json)


def test_large_output_is_capped_and_flagged(daemon, sandbox):
    # A blocking exec keeps max_exec_output_bytes (1 MiB by default) of each stream.
    r = daemon.exec(sandbox, "head -c 3000000 /dev/zero | tr '\\0' a; echo done >&2")
    assert len(r.json["stdout"]) == 1 << 20 and set(r.json["stdout"]) == {"a"}
    assert r.json["truncated"] is True and r.json["stderr"] == "done\n" and r.json["exit_code"] == 0
    small = daemon.exec(sandbox, "echo small")
    assert "truncated" not in small.json


def test_background_child_does_not_block(daemon, sandbox):
    r = daemon.exec(sandbox, "sleep 20 & echo started")
    assert r.json["stdout"] == "started\n" and r.json["duration_ms"] < 5000


def test_concurrent_execs_over_five_sandboxes(daemon):
    sids = [daemon.create() for _ in range(5)]
    try:
        def run(i):
            sid = sids[i % 5]
            r = daemon.exec(sid, f"echo {i}-$(hostname); sleep 0.2; echo done{i} >&2")
            return i, sid, r

        with concurrent.futures.ThreadPoolExecutor(20) as pool:
            results = list(pool.map(run, range(20)))
        for i, sid, r in results:
            assert r.status == 200, r
            assert r.json["stdout"] == f"{i}-{sid.replace('_', '-')}\n"
            assert r.json["stderr"] == f"done{i}\n"
    finally:
        for s in sids:
            daemon.delete(s)
