"""Resource limits hold inside one sandbox while the daemon and other sandboxes live on."""
import time


def cgroup_file(ctrl, sid, name):
    for base in (f"/sys/fs/cgroup/{ctrl}", "/sys/fs/cgroup/cpu,cpuacct"):
        p = f"{base}/sandboxd/{sid}/{name}"
        try:
            with open(p) as f:
                return f.read().strip()
        except OSError:
            continue
    return None


def test_memory_hog_is_oom_killed_inside(daemon):
    hog = daemon.create(memory_mb=64)
    other = daemon.create()
    try:
        r = daemon.exec(hog, "dd if=/dev/zero of=/dev/null bs=256M count=1")
        assert r.status == 200, r
        assert r.json["exit_code"] == 137, r.json
        # The daemon, the hog's sandbox and another sandbox all still work.
        assert daemon.request("GET", "/health").status == 200
        assert daemon.exec(hog, "echo alive").json["stdout"] == "alive\n"
        assert daemon.exec(other, "echo fine").json["stdout"] == "fine\n"
    finally:
        daemon.delete(hog)
        daemon.delete(other)


def test_fork_bomb_stops_at_pids_limit(daemon):
    # The module's daemon runs with default_pids_max: 128.
    sid = daemon.create()
    other = daemon.create()
    try:
        assert cgroup_file("pids", sid, "pids.max") == "128"
        r = daemon.exec(sid, "i=0; while [ $i -lt 400 ]; do sleep 4 & i=$((i+1)); done; echo spawned", timeout=20)
        assert r.status == 200, r
        out = r.json
        assert "fork" in out["stderr"].lower() or "resource" in out["stderr"].lower(), out["stderr"][-500:]
        peak = int(cgroup_file("pids", sid, "pids.current"))
        assert 0 < peak <= 128, peak
        assert daemon.exec(other, "echo ok").json["stdout"] == "ok\n"
        assert daemon.request("GET", "/health").status == 200
        # Once the bomb's processes end, the sandbox works again.
        deadline = time.time() + 20
        ok = False
        while time.time() < deadline and not ok:
            ok = daemon.exec(sid, "echo back").json.get("stdout") == "back\n"
            time.sleep(0.5)
        assert ok
    finally:
        daemon.delete(sid)
        daemon.delete(other)


def test_writable_layer_is_size_capped(make_daemon):
    d = make_daemon(config={"default_disk_mb": 16}).start()
    sid = d.create(memory_mb=256)
    r = d.exec(sid, "dd if=/dev/zero of=/workspace/big bs=1M count=64")
    assert r.json["exit_code"] != 0 and "space" in r.json["stderr"].lower(), r.json
    size = int(d.exec(sid, "wc -c < /workspace/big").json["stdout"])
    assert size <= 16 * 1024 * 1024
    d.exec(sid, "rm /workspace/big")
    assert d.exec(sid, "echo ok > /workspace/small && cat /workspace/small").json["stdout"] == "ok\n"


def test_cpu_quota_throttles(daemon):
    sid = daemon.create(cpus=0.2)
    try:
        quota = cgroup_file("cpu", sid, "cpu.cfs_quota_us")
        period = cgroup_file("cpu", sid, "cpu.cfs_period_us")
        assert quota is not None and int(quota) == int(period) // 5
        r = daemon.exec(sid, "timeout 1.5 sh -c 'while :; do :; done'; true")
        assert r.status == 200
        used_ns = int(cgroup_file("cpuacct", sid, "cpuacct.usage"))
        # 1.5 s of wall time at 0.2 cpus allows ~0.3 s of CPU; unthrottled it would be ~1.5 s.
        assert used_ns < 0.8e9, used_ns
    finally:
        daemon.delete(sid)


def test_memory_limit_is_set(daemon):
    sid = daemon.create(memory_mb=96)
    try:
        assert int(cgroup_file("memory", sid, "memory.limit_in_bytes")) == 96 << 20
    finally:
        daemon.delete(sid)
