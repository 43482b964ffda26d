"""Crashes and restarts: kill -9 of the daemon with work in flight, agents dying from
outside, a full state directory, and the SIGUSR2 upgrade path that leaves sandboxes running.
(The plain kill -9 re-adoption and the agent killed while the daemon runs are covered by
tests/integration/test_daemon.py; these add the harder variants.)"""
import http.client
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time

import pytest

from conftest import Daemon, agent_pid, host_leftovers, sh, wait_no_leftovers


def submit(d, sid, command):
    r = d.request("POST", f"/sandbox/sandboxes/{sid}/exec/queue", {"command": command})
    assert r.status == 200, r
    return r.json["id"]


def job(d, jid):
    r = d.request("GET", f"/sandbox/queue/{jid}/status")
    assert r.status == 200, r
    return r.json


def wait_job(d, jid, until=("completed", "failed", "cancelled"), timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        j = job(d, jid)
        if j["status"] in until:
            return j
        time.sleep(0.05)
    raise AssertionError(f"job {jid} is still {j['status']}")


def integrity_check(state_dir):
    """PRAGMA integrity_check on a copy of the database (the daemon may hold it open)."""
    tmp = tempfile.mkdtemp(prefix="sbx-db-")
    try:
        for suffix in ("", "-wal", "-shm"):
            src = os.path.join(state_dir, "sandboxd.db" + suffix)
            if os.path.exists(src):
                shutil.copy(src, os.path.join(tmp, "sandboxd.db" + suffix))
        con = sqlite3.connect(os.path.join(tmp, "sandboxd.db"))
        try:
            return con.execute("PRAGMA integrity_check").fetchone()[0]
        finally:
            con.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def crash(d):
    d.proc.kill()
    d.proc.wait()
    d.log.close()


def start_stream(d, sid, command):
    c = http.client.HTTPConnection("127.0.0.1", d.port, timeout=10)
    c.request("POST", f"/sandbox/sandboxes/{sid}/exec/stream", body=json.dumps({"command": command}),
              headers={"Content-Type": "application/json", "Accept": "text/event-stream"})
    r = c.getresponse()
    assert r.status == 200
    assert r.readline()  # the stream is flowing
    return c, r


def drain(resp, limit=10 << 20):
    """Reads until the connection ends; bounded by size and by the socket timeout."""
    got = 0
    try:
        while got < limit:
            chunk = resp.read1(65536) if hasattr(resp, "read1") else resp.read(65536)
            if not chunk:
                break
            got += len(chunk)
    except (OSError, http.client.HTTPException):
        pass
    return got


def all_leftovers(d, sids):
    found = {s: wait_no_leftovers(d.state_dir, s) for s in sids}
    return {s: f for s, f in found.items() if f}


def test_kill9_with_streams_and_queued_jobs(busybox_rootfs):
    d = Daemon(busybox_rootfs, config={"queue_workers": 1, "queue_retry_base_ms": 100}).start()
    try:
        live, dead, worker = d.create(), d.create(), d.create()
        sh(d, live, "echo kept > /workspace/state")
        expires = d.request("GET", f"/sandbox/sandboxes/{live}").json["expiresAt"]
        c, r = start_stream(d, live, "i=0; while [ $i -lt 300 ]; do echo tick $i; i=$((i+1)); sleep 0.05; done")
        slow = submit(d, worker, "sleep 1; echo slow >> /workspace/order")
        queued = [submit(d, worker, f"echo n{i} >> /workspace/order") for i in range(3)]
        wait_job(d, slow, until=("running",))
        crash(d)
        # The stream ends (the connection closes); it does not hang.
        drain(r)
        c.close()
        # While no daemon runs, one sandbox's agent dies.
        os.kill(agent_pid(dead), signal.SIGKILL)
        d.start()
        # Live sandboxes are re-adopted and usable; their TTL still counts from creation.
        assert sh(d, live, "cat /workspace/state")["stdout"] == "kept\n"
        g = d.request("GET", f"/sandbox/sandboxes/{live}").json
        assert g["status"] == "running" and g["expiresAt"] == expires, g
        # The dead one is marked failed and nothing of it is left on the host.
        g = d.request("GET", f"/sandbox/sandboxes/{dead}").json
        assert g["status"] == "failed", g
        assert host_leftovers(d.state_dir, dead) == []
        # Queued jobs proceed; the interrupted one runs again.
        jobs = [wait_job(d, j) for j in [slow] + queued]
        assert all(j["status"] == "completed" for j in jobs), jobs
        assert sh(d, worker, "cat /workspace/order")["stdout"].split() == ["slow", "n0", "n1", "n2"]
        assert integrity_check(d.state_dir) == "ok"
        for s in (live, dead, worker):
            d.delete(s)
        assert all_leftovers(d, (live, dead, worker)) == {}
    finally:
        d.cleanup()


def test_agent_killed_during_stream_fails_and_cleans(daemon):
    sid = daemon.create()
    other = daemon.create()
    try:
        c, r = start_stream(daemon, sid, "i=0; while [ $i -lt 300 ]; do echo t; i=$((i+1)); sleep 0.05; done")
        os.kill(agent_pid(sid), signal.SIGKILL)
        drain(r)
        c.close()
        deadline = time.time() + 15
        while time.time() < deadline and (host_leftovers(daemon.state_dir, sid) or
                                          daemon.request("GET", f"/sandbox/sandboxes/{sid}").json["status"] != "failed"):
            time.sleep(0.2)
        assert daemon.request("GET", f"/sandbox/sandboxes/{sid}").json["status"] == "failed"
        assert host_leftovers(daemon.state_dir, sid) == []
        assert sh(daemon, other, "echo ok")["stdout"] == "ok\n"
        assert daemon.request("GET", "/health").status == 200
    finally:
        daemon.delete(sid)
        daemon.delete(other)


@pytest.fixture
def small_state_dir():
    base = tempfile.mkdtemp(prefix="sbx-small-state-")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m,mode=0711", "tmpfs", base], check=True)
    try:
        yield base
    finally:
        subprocess.run(["umount", "-l", base])
        shutil.rmtree(base, ignore_errors=True)


def fill(path, limit_mb=80):
    """Writes a file until ENOSPC (bounded); returns its path."""
    f = os.path.join(path, "filler")
    chunk = b"\0" * (1 << 20)
    with open(f, "wb", buffering=0) as fh:
        for _ in range(limit_mb):
            try:
                fh.write(chunk)
            except OSError:
                break
        # Also the last partial blocks, so even a small SQLite page write fails.
        for _ in range(4096):
            try:
                fh.write(b"\0" * 1024)
            except OSError:
                break
    return f


def test_state_dir_full(busybox_rootfs, small_state_dir):
    d = Daemon(busybox_rootfs, state_dir=os.path.join(small_state_dir, "state")).start()
    try:
        sid = d.create(name="before-full")
        sh(d, sid, "echo precious > /workspace/p")
        jid = submit(d, sid, "echo queued-before")
        assert wait_job(d, jid)["status"] == "completed"
        filler = fill(small_state_dir)
        # New work that must be stored is refused with a clear error, not a hang or a crash.
        failures = []
        for _ in range(3):
            r = d.request("POST", "/sandbox/sandboxes", {"image": "busybox"})
            if r.status != 200:
                failures.append(r)
                break
            d.delete(r.json["id"])
        assert failures, "a create succeeded on a full state directory three times"
        r = failures[0]
        assert r.status in (500, 503, 507), r
        msg = (r.json or {}).get("error", "") + (r.json or {}).get("message", "")
        assert msg, r
        print("create on a full state dir:", r.status, msg)
        # A job submission may still fit in SQLite's free pages; either way no crash.
        r = d.request("POST", f"/sandbox/sandboxes/{sid}/exec/queue", {"command": "echo x" * 2000})
        assert r.status in (200, 500, 503, 507), r
        # The daemon still answers, and what was stored is intact.
        assert d.request("GET", "/health").status == 200
        g = d.request("GET", f"/sandbox/sandboxes/{sid}")
        assert g.status == 200 and g.json["name"] == "before-full"
        assert job(d, jid)["status"] == "completed"
        assert integrity_check(d.state_dir) == "ok"
        # Space returns: everything works again without a restart.
        os.unlink(filler)
        sid2 = d.create()
        assert sh(d, sid2, "echo back")["stdout"] == "back\n"
        assert sh(d, sid, "cat /workspace/p")["stdout"] == "precious\n"
        jid2 = submit(d, sid2, "echo after")
        assert wait_job(d, jid2)["status"] == "completed"
        d.delete(sid2)
        d.delete(sid)
        assert d.proc.poll() is None
        assert integrity_check(d.state_dir) == "ok"
    finally:
        d.cleanup()


def test_sigusr2_exits_leaving_sandboxes_running(busybox_rootfs):
    d = Daemon(busybox_rootfs, config={"queue_workers": 1, "queue_retry_base_ms": 100}).start()
    try:
        a, b = d.create(), d.create()
        sh(d, a, "echo kept > /workspace/state; sleep 300 >/dev/null 2>&1 &")
        expires = d.request("GET", f"/sandbox/sandboxes/{a}").json["expiresAt"]
        pids = {s: agent_pid(s) for s in (a, b)}
        slow = submit(d, b, "sleep 1; echo done >> /workspace/jobs")
        wait_job(d, slow, until=("running",))
        assert d.stop(signal.SIGUSR2) == 0
        assert "left running" in d.read_log()
        # Nothing was stopped: the agents and the background process still run.
        for s, pid in pids.items():
            assert agent_pid(s) == pid, s
        assert any("sleep" in open(f"/proc/{p}/cmdline").read()
                   for p in os.listdir("/proc") if p.isdigit() and
                   f"/sandboxd/{a}" in (open(f"/proc/{p}/cgroup").read() if os.path.exists(f"/proc/{p}/cgroup") else ""))
        # The next daemon (the upgraded binary) re-adopts them.
        d.start()
        g = d.request("GET", f"/sandbox/sandboxes/{a}").json
        assert g["status"] == "running" and g["expiresAt"] == expires, g
        assert sh(d, a, "cat /workspace/state")["stdout"] == "kept\n"
        assert agent_pid(a) == pids[a]
        assert wait_job(d, slow)["status"] == "completed"
        assert "done" in sh(d, b, "cat /workspace/jobs")["stdout"]
        assert integrity_check(d.state_dir) == "ok"
        # SIGTERM still means "stop everything".
        assert d.stop(signal.SIGTERM) == 0
        assert all_leftovers(d, (a, b)) == {}
    finally:
        d.cleanup()
