"""Streaming, background execs, signals and streamed stdin on the /sandbox surface."""
import base64
import http.client
import json
import os
import threading
import time

import pytest


def sse_open(daemon, sid, body):
    c = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=60)
    c.request("POST", f"/sandbox/sandboxes/{sid}/exec/stream", body=json.dumps(body),
              headers={"Content-Type": "application/json", "Accept": "text/event-stream"})
    r = c.getresponse()
    return c, r


def sse_events(resp):
    """Yields (arrival time, event) as lines arrive."""
    while True:
        line = resp.readline()
        if not line:
            return
        line = line.decode().rstrip("\r\n")
        if line.startswith("data: "):
            yield time.monotonic(), json.loads(line[6:])


def test_sse_arrives_incrementally(daemon, sandbox):
    c, r = sse_open(daemon, sandbox, {"command": "echo first; sleep 2; echo second >&2; exit 5"})
    assert r.status == 200 and r.getheader("Content-Type") == "text/event-stream"
    assert r.getheader("X-Exec-Id", "").startswith("exec_")
    t0 = time.monotonic()
    events = []
    for t, ev in sse_events(r):
        events.append((t - t0, ev))
        if ev["type"] == "exit":
            break
    c.close()
    kinds = [e["type"] for _, e in events]
    assert kinds == ["stdout", "stderr", "exit"], events
    assert events[0][1]["data"] == "first\n" and events[1][1]["data"] == "second\n"
    # The first chunk came before the command slept; the exit after.
    assert events[0][0] < 1.5 and events[2][0] >= 1.5
    assert events[2][1]["data"] == "5" and events[2][1]["exitCode"] == 5
    assert all(isinstance(e["timestamp"], int) for _, e in events)


def test_sse_base64_is_exact(daemon, sandbox):
    c, r = sse_open(daemon, sandbox, {"command": "printf 'a\\000b\\377\\376'; printf 'e\\001' >&2",
                                      "encoding": "base64"})
    out, err = b"", b""
    for _, ev in sse_events(r):
        if ev["type"] == "stdout":
            out += base64.b64decode(ev["data"])
        elif ev["type"] == "stderr":
            err += base64.b64decode(ev["data"])
        elif ev["type"] == "exit":
            break
    c.close()
    assert out == b"a\x00b\xff\xfe" and err == b"e\x01"


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1])
    return 0


def test_sse_50mb_in_constant_memory(daemon, sandbox):
    pid = daemon.daemon_pid()
    before = rss_kb(pid)
    c, r = sse_open(daemon, sandbox, {"command": "head -c 52428800 /dev/zero | tr '\\0' x", "encoding": "base64"})
    total, peak, n = 0, before, 0
    for _, ev in sse_events(r):
        if ev["type"] == "stdout":
            total += len(base64.b64decode(ev["data"]))
            n += 1
            if n % 50 == 0:
                peak = max(peak, rss_kb(pid))
        elif ev["type"] == "exit":
            assert ev["exitCode"] == 0
            break
    c.close()
    assert total == 50 << 20
    assert peak - before < 30 * 1024, (before, peak)


def test_sse_client_disconnect_kills_the_command(daemon, sandbox):
    c, r = sse_open(daemon, sandbox, {"command": "echo go; sleep 30; touch /workspace/survived"})
    for _, ev in sse_events(r):
        break
    c.close()
    deadline = time.time() + 10
    while time.time() < deadline:
        ps = daemon.exec(sandbox, "ps -o comm | grep -c '^sleep' || true").json["stdout"].strip()
        if ps == "0":
            break
        time.sleep(0.2)
    assert ps == "0"
    assert daemon.exec(sandbox, "test -e /workspace/survived").json["exit_code"] != 0


def test_sse_errors_before_stream_are_json(daemon, sandbox):
    r = daemon.request("POST", f"/sandbox/sandboxes/{sandbox}/exec/stream", {})
    assert r.status == 400 and r.json["code"] == "S001"
    r = daemon.request("POST", "/sandbox/sandboxes/sbx_000000000000400080000000/exec/stream", {"command": "true"})
    assert r.status == 404 and r.json["code"] == "S002"


def signal_exec(daemon, sid, exec_id, sig):
    return daemon.request("POST", f"/sandbox/sandboxes/{sid}/exec/signal", {"execId": exec_id, "signal": sig})


def test_signal_reaches_the_right_exec(daemon, sandbox):
    c1, r1 = sse_open(daemon, sandbox, {"command": "trap 'echo got-term; exit 7' TERM; echo ready; "
                                                   "while :; do sleep 0.1; done"})
    c2, r2 = sse_open(daemon, sandbox, {"command": "echo ready; sleep 3; echo untouched"})
    e1, e2 = r1.getheader("X-Exec-Id"), r2.getheader("X-Exec-Id")
    it1, it2 = sse_events(r1), sse_events(r2)
    assert next(it1)[1]["data"] == "ready\n" and next(it2)[1]["data"] == "ready\n"
    s = signal_exec(daemon, sandbox, e1, "SIGTERM")
    assert s.status == 200 and s.json["signal"] == 15
    rest1 = [ev for _, ev in it1]
    assert "".join(e["data"] for e in rest1 if e["type"] == "stdout") == "got-term\n"
    assert rest1[-1]["type"] == "exit" and rest1[-1]["exitCode"] == 7
    rest2 = [ev for _, ev in it2]
    assert rest2[0]["data"] == "untouched\n" and rest2[-1]["exitCode"] == 0
    c1.close()
    c2.close()
    # Signalling a finished exec is a conflict; unknown ids and bad signals are rejected.
    assert signal_exec(daemon, sandbox, e1, 9).status == 409
    assert signal_exec(daemon, sandbox, "exec_000000000000400080000000", 9).status == 404
    r = signal_exec(daemon, sandbox, e1, "SIGBOGUS")
    assert r.status == 400 and r.json["code"] == "S001"


def test_interrupt(daemon, sandbox):
    c, r = sse_open(daemon, sandbox, {"command": "sleep 30"})
    time.sleep(0.3)
    i = daemon.request("POST", f"/sandbox/sandboxes/{sandbox}/exec/interrupt", {})
    assert i.status == 200 and i.json["success"] is True and i.json["signalled"] == 1
    evs = [ev for _, ev in sse_events(r)]
    assert evs[-1]["exitCode"] == 130
    c.close()
    # By pid: a background process inside the sandbox.
    bg = daemon.request("POST", f"/sandbox/sandboxes/{sandbox}/exec/background",
                        {"command": "trap 'echo int; exit 3' INT; while :; do sleep 0.1; done"}).json
    i = daemon.request("POST", f"/sandbox/sandboxes/{sandbox}/exec/interrupt", {"pid": bg["pid"]})
    assert i.status == 200, i
    st = wait_bg(daemon, bg["id"])
    assert st["exitCode"] == 3
    missing = daemon.request("POST", f"/sandbox/sandboxes/{sandbox}/exec/interrupt", {"pid": 99999})
    assert missing.status == 404


def wait_bg(daemon, bg_id, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        st = daemon.request("GET", f"/sandbox/exec/background/{bg_id}/status").json
        if not st["running"]:
            return st
        time.sleep(0.1)
    raise AssertionError("background exec still running")


def test_background_exec_and_cursor_logs(daemon, sandbox):
    r = daemon.request("POST", f"/sandbox/sandboxes/{sandbox}/exec/background",
                       {"command": "for i in 1 2 3 4 5; do echo line$i; sleep 0.1; done; echo oops >&2; exit 4"})
    assert r.status == 200, r
    bg = r.json
    assert bg["id"].startswith("bg_") and bg["sandboxId"] == sandbox and bg["running"] is True
    assert bg["pid"] > 1 and isinstance(bg["startedAt"], int)
    st = wait_bg(daemon, bg["id"])
    assert st["exitCode"] == 4 and st["finishedAt"] >= st["startedAt"]
    full = "line1\nline2\nline3\nline4\nline5\noops\n"
    logs = daemon.request("GET", f"/sandbox/exec/background/{bg['id']}/logs").json
    assert logs["output"] == full and logs["cursor"] == len(full)
    for cur in (0, 3, 6, len(full) - 1, len(full), len(full) + 10):
        part = daemon.request("GET", f"/sandbox/exec/background/{bg['id']}/logs?cursor={cur}").json
        assert part["output"] == full[cur:], cur
        assert part["cursor"] == max(cur, len(full)) if cur > len(full) else part["cursor"] == len(full)
    lim = daemon.request("GET", f"/sandbox/exec/background/{bg['id']}/logs?cursor=6&limit=6").json
    assert lim["output"] == "line2\n" and lim["cursor"] == 12
    so = daemon.request("GET", f"/sandbox/exec/background/{bg['id']}/logs?stream=stderr").json
    assert so["output"] == "oops\n"
    body = daemon.request("GET", f"/sandbox/exec/background/{bg['id']}/logs", {"cursor": 30}).json
    assert body["output"] == full[30:]


def test_background_survives_client_and_keeps_big_logs_on_disk(daemon, sandbox):
    pid = daemon.daemon_pid()
    before = rss_kb(pid)
    bg = daemon.request("POST", f"/sandbox/sandboxes/{sandbox}/exec/background",
                        {"command": "head -c 30000000 /dev/urandom | base64 -w 0 | head -c 20000000"}).json
    st = wait_bg(daemon, bg["id"], timeout=60)
    assert st["exitCode"] == 0 and st["stdoutBytes"] == 20000000
    assert rss_kb(pid) - before < 30 * 1024
    got, cur = 0, 0
    while True:
        part = daemon.request("GET", f"/sandbox/exec/background/{bg['id']}/logs?cursor={cur}&limit=4000000").json
        if not part["output"]:
            break
        got += len(part["output"])
        cur = part["cursor"]
    assert got == 20000000 and cur == 20000000


def test_background_bad_input(daemon, sandbox):
    assert daemon.request("GET", "/sandbox/exec/background/bg_000000000000400080000000/status").status == 404
    assert daemon.request("GET", "/sandbox/exec/background/..%2F..%2Fetc/logs").status == 404
    bg = daemon.request("POST", f"/sandbox/sandboxes/{sandbox}/exec/background", {"command": "true"}).json
    for q in ("cursor=-1", "cursor=abc", "limit=0", "stream=both"):
        r = daemon.request("GET", f"/sandbox/exec/background/{bg['id']}/logs?{q}")
        assert r.status == 400 and r.json["code"] == "S001", q
    assert daemon.request("POST", f"/sandbox/sandboxes/{sandbox}/exec/background", {}).status == 400


def test_streamed_stdin(daemon, sandbox):
    c, r = sse_open(daemon, sandbox, {"cmd": "cat", "stdinStream": True, "stdin": base64.b64encode(b"one\n").decode()})
    eid = r.getheader("X-Exec-Id")
    it = sse_events(r)
    assert next(it)[1]["data"] == "one\n"
    w = daemon.request("POST", f"/sandbox/sandboxes/{sandbox}/exec/stdin",
                       {"execId": eid, "data": base64.b64encode(b"two\n").decode()})
    assert w.status == 200 and w.json["written"] == 4
    assert next(it)[1]["data"] == "two\n"
    daemon.request("POST", f"/sandbox/sandboxes/{sandbox}/exec/stdin", {"execId": eid, "eof": True})
    rest = [ev for _, ev in it]
    assert rest[-1]["type"] == "exit" and rest[-1]["exitCode"] == 0
    c.close()
    late = daemon.request("POST", f"/sandbox/sandboxes/{sandbox}/exec/stdin", {"execId": eid, "data": "eA=="})
    assert late.status == 409


def test_output_never_mixes_between_execs(daemon, sandbox):
    results = {}

    def run(tag):
        c, r = sse_open(daemon, sandbox, {"command": f"for i in $(seq 1 200); do echo {tag}-$i; done"})
        out = "".join(ev["data"] for _, ev in sse_events(r) if ev["type"] == "stdout")
        c.close()
        results[tag] = out

    threads = [threading.Thread(target=run, args=(t,)) for t in ("aa", "bb", "cc", "dd")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for tag, out in results.items():
        assert out == "".join(f"{tag}-{i}\n" for i in range(1, 201)), tag


def test_log_quota_per_sandbox(make_daemon):
    d = make_daemon(config={"log_quota_mb": 1}).start()
    sid = d.create()
    bg = d.request("POST", f"/sandbox/sandboxes/{sid}/exec/background",
                   {"command": "head -c 3000000 /dev/zero | tr '\\0' q"}).json
    st = wait_bg(d, bg["id"])
    assert st["exitCode"] == 0 and st["truncated"] is True
    logs = d.request("GET", f"/sandbox/exec/background/{bg['id']}/logs?limit=16000000").json
    assert 0 < len(logs["output"]) <= 512 * 1024
    assert d.exec(sid, "echo still fine").json["stdout"] == "still fine\n"
