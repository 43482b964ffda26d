"""The warm pool: sandboxes started ahead of requests and handed over on create."""
import os
import signal
import time

from conftest import Daemon, host_leftovers


def pool_status(d):
    r = d.request("GET", "/sandbox/pool/status")
    assert r.status == 200, r
    return r.json


def wait_pool(d, total, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        st = pool_status(d)
        if st["total"] >= total:
            return st
        time.sleep(0.1)
    raise AssertionError(f"pool did not reach {total}: {pool_status(d)}")


def warm_ids(d):
    return set(os.listdir(os.path.join(d.state_dir, "sandboxes")))


def served_from_pool(d):
    return d.read_log().count("created from the warm pool")


def test_pool_fills_and_serves_creates(make_daemon):
    d = make_daemon(config={"pool_size": 2, "pool_images": ["busybox"]}).start()
    st = wait_pool(d, 2)
    assert st == {"total": 2, "ready": 2, "by_profile": {"busybox": 2}, "size": 2}
    # Warm sandboxes belong to nobody: no surface shows them.
    assert d.request("GET", "/sandbox/sandboxes").json["total"] == 0
    warm = warm_ids(d)
    assert len(warm) == 2
    for sid in warm:
        assert d.request("GET", f"/sandbox/sandboxes/{sid}").status == 404
        assert d.exec(sid, "true").status == 404
        assert d.delete(sid).status == 404
    r = d.request("POST", "/sandbox/sandboxes",
                  {"image": "busybox", "name": "hot", "env": {"A": "from-request"}, "memory_mb": 96, "cpus": 0.5})
    assert r.status == 200, r
    sb = r.json
    assert sb["id"] in warm and served_from_pool(d) == 1
    assert sb["name"] == "hot" and sb["status"] == "running" and sb["memory_mb"] == 96
    out = d.exec(sb["id"], "echo $A; hostname; pwd").json["stdout"]
    assert out == f"from-request\n{sb['id'].replace('_', '-')}\n/workspace\n"
    with open(f"/sys/fs/cgroup/memory/sandboxd/{sb['id']}/memory.limit_in_bytes") as f:
        assert int(f.read()) == 96 << 20
    assert d.request("GET", "/sandbox/sandboxes").json["total"] == 1
    # The pool refills behind the request.
    wait_pool(d, 2)
    assert len(warm_ids(d)) == 3
    assert d.delete(sb["id"]).status == 200


def test_requests_the_pool_cannot_serve_go_the_normal_way(make_daemon, tmp_path):
    d = make_daemon(config={"pool_size": 1, "pool_images": ["busybox"]}).start()
    wait_pool(d, 1)
    r = d.request("POST", "/sandbox/sandboxes", {"image": "busybox", "workdir": "/srv/other"})
    assert r.status == 200 and served_from_pool(d) == 0
    assert d.exec(r.json["id"], "pwd").json["stdout"] == "/srv/other\n"
    bad = d.request("POST", "/sandbox/sandboxes", {"image": "busybox", "memory": "lots"})
    assert bad.status == 400 and bad.json["code"] == "S001"
    assert pool_status(d)["total"] == 1
    assert d.request("POST", "/sandbox/sandboxes", {"image": "nope"}).json["code"] == "S100"


def test_pool_respects_max_sandboxes(make_daemon):
    d = make_daemon(config={"pool_size": 5, "pool_images": ["busybox"], "max_concurrent_sandboxes": 3}).start()
    wait_pool(d, 3)
    time.sleep(1.5)
    assert pool_status(d)["total"] == 3
    a = d.create()
    b = d.create()
    c = d.create()
    r = d.request("POST", "/sandbox/sandboxes", {"image": "busybox"})
    assert r.json["code"] == "S400", r
    for s in (a, b, c):
        d.delete(s)


def test_pool_size_from_environment_and_shutdown_leaves_nothing(busybox_rootfs):
    d = Daemon(busybox_rootfs, config={"pool_images": ["busybox"]}, env={"III_POOL_SIZE": "2"}).start()
    try:
        wait_pool(d, 2)
        warm = warm_ids(d)
        assert d.stop(signal.SIGTERM) == 0
        for sid in warm:
            assert host_leftovers(d.state_dir, sid) == [], sid
        # A restart warms new sandboxes; the old warm records are gone.
        d.start()
        wait_pool(d, 2)
        assert not warm & warm_ids(d)
        assert d.request("GET", "/sandbox/sandboxes").json["total"] == 0
    finally:
        d.cleanup()


def test_pool_off_by_default(daemon):
    st = pool_status(daemon)
    assert st["total"] == 0 and st["size"] == 0
