"""The daemon as a process: settings, start-up errors, shutdown, restart and recovery."""
import json
import os
import signal
import sqlite3
import subprocess
import time

from conftest import SANDBOXD, Daemon, agent_pid, host_leftovers, spawner_pids, wait_no_leftovers


def run_sandboxd(args, env=None, timeout=10):
    e = {k: v for k, v in os.environ.items() if not k.startswith("III_")}
    e.update(env or {})
    return subprocess.run([SANDBOXD, *args], capture_output=True, text=True, timeout=timeout, env=e,
                          stdin=subprocess.DEVNULL)


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_help_and_version():
    r = run_sandboxd(["--help"])
    assert r.returncode == 0 and "--state-dir" in r.stdout and "III_AUTH_TOKEN" in r.stdout
    r = run_sandboxd(["--version"])
    assert r.returncode == 0 and r.stdout.startswith("sandboxd ")


def test_bad_settings_stop_startup(tmp_path):
    state = str(tmp_path / "state")
    cases = [
        ("unknown_key: 1\n", "unknown_key"),
        ("max_concurrent_sandboxes: lots\n", "max_concurrent_sandboxes"),
        ("custom_images:\n  python: /srv/evil\n", "python"),
        ("image_allowlist: python\n", "image_allowlist"),
        ("auto_install: [\n", "YAML syntax error"),
    ]
    for text, needle in cases:
        cfg = write(tmp_path, "c.yaml", text)
        r = run_sandboxd(["--config", cfg, "--state-dir", state, "--listen", "127.0.0.1:1"])
        assert r.returncode != 0, text
        assert needle in r.stderr, (text, r.stderr)
    r = run_sandboxd(["--state-dir", state], env={"III_MAX_SANDBOXES": "many"})
    assert r.returncode != 0 and "III_MAX_SANDBOXES" in r.stderr
    r = run_sandboxd(["--no-such-flag"])
    assert r.returncode != 0 and "--no-such-flag" in r.stderr
    r = run_sandboxd(["--config", str(tmp_path / "missing.yaml"), "--state-dir", state])
    assert r.returncode != 0 and "missing.yaml" in r.stderr


def test_engine_workers_block_is_accepted(busybox_rootfs, tmp_path):
    d = Daemon(busybox_rootfs)
    with open(d.config_path, "w") as f:
        f.write("workers:\n  - name: iii-sandbox\n    config:\n      image_allowlist: [busybox]\n"
                f"      custom_images:\n        busybox: {busybox_rootfs}\n      max_concurrent_sandboxes: 3\n")
    try:
        d.start()
        sid = d.create()
        assert d.exec(sid, "echo hi").json["stdout"] == "hi\n"
        r = d.request("POST", "/sandbox/sandboxes", {"image": "python"})
        assert r.status == 403 and r.json["code"] == "S100"
    finally:
        d.cleanup()


def test_empty_allowlist_denies_everything(make_daemon):
    d = make_daemon(config={"image_allowlist": []}).start()
    r = d.request("POST", "/sandbox/sandboxes", {"image": "busybox"})
    assert r.status == 403 and r.json["code"] == "S100"


def test_allowed_images_env_filters_too(make_daemon):
    d = make_daemon(env={"III_ALLOWED_IMAGES": "py*,node"}).start()
    r = d.request("POST", "/sandbox/sandboxes", {"image": "busybox"})
    assert r.status == 403 and r.json["code"] == "S100"


def test_auto_install_off_is_s101_with_command(make_daemon):
    d = make_daemon(config={"auto_install": False}).start()
    r = d.request("POST", "/sandbox/sandboxes", {"image": "python"})
    assert r.status == 503 and r.json["code"] == "S101", r
    assert "sandboxd build-image python" in r.json["error"]
    assert d.request("GET", "/sandbox/sandboxes").json["total"] == 0


def test_missing_custom_rootfs_is_s101(make_daemon, tmp_path):
    d = make_daemon(config={"custom_images": {"busybox": str(tmp_path / "nope")}}).start()
    r = d.request("POST", "/sandbox/sandboxes", {"image": "busybox"})
    assert r.json["code"] == "S101", r


def test_second_daemon_on_same_state_dir_refused(daemon):
    r = run_sandboxd(["--state-dir", daemon.state_dir, "--listen", "127.0.0.1:1"])
    assert r.returncode != 0 and "already" in r.stderr


def test_sigterm_stops_everything(busybox_rootfs):
    d = Daemon(busybox_rootfs).start()
    try:
        sids = [d.create() for _ in range(3)]
        for s in sids:
            d.exec(s, "sleep 300 >/dev/null 2>&1 &")
        assert d.stop(signal.SIGTERM) == 0
        for s in sids:
            assert host_leftovers(d.state_dir, s) == [], s
        assert "shutting down" in d.read_log()
        # The records say why they stopped, and nothing runs after a restart.
        d.start()
        for s in sids:
            g = d.request("GET", f"/sandbox/sandboxes/{s}").json
            assert g["status"] == "stopped" and "shut down" in g["stopReason"]
    finally:
        d.cleanup()


def test_sigint_also_shuts_down(busybox_rootfs):
    d = Daemon(busybox_rootfs).start()
    try:
        sid = d.create()
        assert d.stop(signal.SIGINT) == 0
        assert host_leftovers(d.state_dir, sid) == []
    finally:
        d.cleanup()


def test_crash_restart_readopts_live_sandboxes(busybox_rootfs):
    d = Daemon(busybox_rootfs).start()
    try:
        sid = d.create()
        d.exec(sid, "echo kept > /workspace/state")
        d.proc.kill()
        d.proc.wait()
        d.log.close()
        d.start()
        r = d.exec(sid, "cat /workspace/state")
        assert r.status == 200 and r.json["stdout"] == "kept\n", r
        assert d.request("GET", f"/sandbox/sandboxes/{sid}").json["status"] == "running"
        assert d.delete(sid).status == 200
        assert wait_no_leftovers(d.state_dir, sid) == []
    finally:
        d.cleanup()


def test_agent_killed_from_outside_marks_failed(daemon):
    sid = daemon.create()
    other = daemon.create()
    try:
        pid = agent_pid(sid)
        assert pid
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
        r = daemon.exec(sid, "true")
        assert r.status == 409 and r.json["code"] == "S004", r
        deadline = time.time() + 10
        while time.time() < deadline and host_leftovers(daemon.state_dir, sid):
            time.sleep(0.2)
        assert host_leftovers(daemon.state_dir, sid) == []
        assert daemon.request("GET", f"/sandbox/sandboxes/{sid}").json["status"] == "failed"
        assert daemon.exec(other, "echo ok").json["stdout"] == "ok\n"
    finally:
        daemon.delete(sid)
        daemon.delete(other)


def test_database_is_sqlite_wal(daemon):
    db = os.path.join(daemon.state_dir, "sandboxd.db")
    assert os.path.exists(db)
    with open(db, "rb") as f:
        assert f.read(16) == b"SQLite format 3\x00"
    assert os.path.exists(db + "-wal")


def test_delete_hides_at_once_and_tears_down_after(busybox_rootfs):
    d = Daemon(busybox_rootfs, config={"max_concurrent_sandboxes": 2}).start()
    try:
        sids = [d.create(), d.create()]
        for s in sids:
            d.exec(s, "sleep 300 >/dev/null 2>&1 &")
        for s in sids:
            assert d.delete(s).status == 200
            # Gone from every surface as soon as the delete answers.
            assert d.request("GET", f"/sandbox/sandboxes/{s}").status == 404
            assert d.delete(s).status == 404
            r = d.exec(s, "true")
            assert r.status == 404, r
        assert d.request("GET", "/sandbox/sandboxes").json["total"] == 0
        # The capacity is free at once, and the new sandboxes get uid ranges of their own
        # (the deleted ones keep theirs until their teardown ends).
        fresh = [d.create(), d.create()]
        for s in sids:
            assert wait_no_leftovers(d.state_dir, s) == [], s
        assert d.exec(fresh[0], "id -u").json["stdout"] == "0\n"
        m = d.request("GET", "/sandbox/metrics").json
        assert m["totalKilled"] == 2 and m["totalCreated"] == 4, m
    finally:
        d.cleanup()


def test_crash_during_delete_teardown_leaves_nothing(busybox_rootfs):
    d = Daemon(busybox_rootfs).start()
    try:
        sids = [d.create() for _ in range(4)]
        for s in sids:
            d.exec(s, "sleep 300 >/dev/null 2>&1 &")
        for s in sids:
            assert d.delete(s).status == 200
        # Killed while some teardowns may still run: the restart finishes them.
        d.proc.kill()
        d.proc.wait()
        d.log.close()
        d.start()
        for s in sids:
            assert wait_no_leftovers(d.state_dir, s) == [], s
            assert d.request("GET", f"/sandbox/sandboxes/{s}").status == 404
        assert d.request("GET", "/sandbox/sandboxes").json["total"] == 0
        # No record is left behind either, hidden or not.
        con = sqlite3.connect(f"file:{os.path.join(d.state_dir, 'sandboxd.db')}?mode=ro", uri=True)
        try:
            rows = con.execute("SELECT id, status FROM sandboxes").fetchall()
        finally:
            con.close()
        assert not [r for r in rows if r[0] in sids], rows
    finally:
        d.cleanup()


def test_last_exec_at_follows_activity(daemon):
    sid = daemon.create()
    before = daemon.request("GET", f"/sandbox/sandboxes/{sid}").json["lastExecAt"]
    time.sleep(0.05)
    daemon.exec(sid, "true")
    after = daemon.request("GET", f"/sandbox/sandboxes/{sid}").json["lastExecAt"]
    assert after > before
    listed = [s for s in daemon.request("GET", "/sandbox/sandboxes").json["items"] if s["id"] == sid]
    assert listed[0]["lastExecAt"] == after
    daemon.delete(sid)


def test_spawner_forks_sandboxes_and_its_loss_is_survived(busybox_rootfs):
    d = Daemon(busybox_rootfs).start()
    try:
        spawners = spawner_pids(d.proc.pid)
        assert len(spawners) == 1, spawners
        sid = d.create()
        # The sandbox's init is adopted by the daemon (the subreaper), not by the spawner.
        with open(f"/proc/{agent_pid(sid)}/stat") as f:
            st = f.read()
        assert int(st[st.rindex(")") + 2:].split()[1]) == d.proc.pid
        # The spawner keeps no descriptor but stdio, the agent memfd and its socket.
        fds = {os.readlink(f"/proc/{spawners[0]}/fd/{n}") for n in os.listdir(f"/proc/{spawners[0]}/fd")}
        assert not [f for f in fds if d.state_dir in f or f.endswith(".db")], fds
        # Without it, creates still work: the daemon forks them itself.
        os.kill(spawners[0], signal.SIGKILL)
        other = d.create()
        assert d.exec(other, "echo ok").json["stdout"] == "ok\n"
        assert "spawner lost" in d.read_log()
        for s in (sid, other):
            assert d.delete(s).status == 200
            assert wait_no_leftovers(d.state_dir, s) == [], s
    finally:
        d.cleanup()
    # It ends with the daemon.
    assert not spawner_pids(d.proc.pid)


def test_cgroup_favor_dynmods_hierarchy(busybox_rootfs):
    d = Daemon(busybox_rootfs).start()
    try:
        with open(f"/proc/{d.proc.pid}/cgroup") as f:
            assert "name=sandboxd-dynmods" in f.read()
        assert "cgroup favordynmods on" in d.read_log()
        # It lives in the daemon's private mount namespace only.
        with open("/proc/self/mountinfo") as f:
            assert "cgroup-dynmods" not in f.read()
        sid = d.create()
        with open(f"/proc/{agent_pid(sid)}/mountinfo") as f:
            assert "cgroup-dynmods" not in f.read()
        d.delete(sid)
    finally:
        d.cleanup()
    off = Daemon(busybox_rootfs, config={"cgroup_favor_dynmods": False}).start()
    try:
        assert "cgroup favordynmods on" not in off.read_log()
        sid = off.create()
        assert off.exec(sid, "true").status == 200
    finally:
        off.cleanup()
