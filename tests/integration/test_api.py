"""The /sandbox REST surface: lifecycle, shapes, validation and errors."""
import re
import time

import pytest


def test_health_is_open(daemon):
    r = daemon.request("GET", "/health")
    assert r.status == 200 and r.json == {"status": "healthy"}
    assert daemon.request("GET", "/sandbox/health").json == {"status": "healthy"}


def test_create_get_list_delete(daemon):
    r = daemon.request("POST", "/sandbox/sandboxes",
                       {"image": "busybox", "name": "first", "env": {"A": "1"}, "metadata": {"team": "x"}})
    assert r.status == 200, r
    sb = r.json
    assert re.fullmatch(r"sbx_[0-9a-f]{12}4[0-9a-f]{3}[89ab][0-9a-f]{7}", sb["id"])
    assert sb["status"] == "running" and sb["name"] == "first" and sb["image"] == "busybox"
    assert sb["expiresAt"] - sb["createdAt"] == 3600 * 1000
    assert sb["config"]["memory"] == 512 and sb["config"]["cpu"] == 1.0
    assert sb["config"]["workdir"] == "/workspace" and sb["config"]["env"] == {"A": "1"}
    assert sb["metadata"] == {"team": "x"}
    sid = sb["id"]

    g = daemon.request("GET", f"/sandbox/sandboxes/{sid}")
    assert g.status == 200 and g.json["id"] == sid

    lst = daemon.request("GET", "/sandbox/sandboxes")
    assert lst.status == 200
    assert {"items", "total", "page", "pageSize"} <= set(lst.json)
    assert sid in [i["id"] for i in lst.json["items"]]
    only = daemon.request("GET", "/sandbox/sandboxes?status=running&pageSize=1&page=1")
    assert only.json["pageSize"] == 1 and len(only.json["items"]) == 1

    d = daemon.delete(sid)
    assert d.status == 200 and d.json == {"success": True}
    again = daemon.delete(sid)
    assert again.status == 404 and again.json["code"] == "S002"
    assert daemon.request("GET", f"/sandbox/sandboxes/{sid}").status == 404


def test_guide_fields_and_env_list(daemon):
    r = daemon.request("POST", "/sandbox/sandboxes",
                       {"image": "busybox", "cpus": 0.5, "memory_mb": 128, "idle_timeout_secs": 60,
                        "env": ["LANG=en_US.UTF-8", "X=a=b"]})
    assert r.status == 200, r
    sb = r.json
    try:
        assert sb["cpus"] == 0.5 and sb["memory_mb"] == 128 and sb["idle_timeout_secs"] == 60
        out = daemon.exec(sb["id"], cmd="env").json["stdout"]
        assert "LANG=en_US.UTF-8" in out.splitlines() and "X=a=b" in out.splitlines()
    finally:
        daemon.delete(sb["id"])


def test_unknown_sandbox_is_404_s002(daemon):
    for method, path, body in [("GET", "/sandbox/sandboxes/sbx_000000000000400080000000", None),
                               ("DELETE", "/sandbox/sandboxes/sbx_000000000000400080000000", None),
                               ("POST", "/sandbox/sandboxes/nope/exec", {"command": "true"})]:
        r = daemon.request(method, path, body)
        assert r.status == 404, r
        assert r.json["code"] == "S002" and r.json["type"] == "validation"
        assert r.json["error"] == r.json["message"]


@pytest.mark.parametrize("raw,fragment", [
    ("{not json", "malformed JSON"),
    ("[1,2]", "must be an object"),
    ('{"image": 5}', "image must be a string"),
    ('{"image": "busybox", "memory": "lots"}', "memory must be an integer"),
    ('{"image": "busybox", "cpu": true}', "cpu must be a number"),
    ('{"image": "busybox", "network": "maybe"}', "network must be a boolean"),
    ('{"image": "busybox", "env": ["NOEQUALS"]}', "KEY=VALUE"),
    ('{"image": "busybox", "env": {"A": 1}}', "env.A must be a string"),
    ('{"image": "busybox", "timeout": -5}', "timeout must be between"),
    ('{"image": ""}', "image is required"),
    ('{}', "image is required"),
    ('{"image": "../../etc"}', "invalid image name"),
])
def test_bad_create_requests_are_400_s001(daemon, raw, fragment):
    before = daemon.request("GET", "/sandbox/sandboxes").json["total"]
    r = daemon.request("POST", "/sandbox/sandboxes", raw=raw)
    assert r.status == 400, r
    assert r.json["code"] == "S001" and fragment in r.json["error"], r
    assert daemon.request("GET", "/sandbox/sandboxes").json["total"] == before


def test_image_not_allowed_is_403_s100(daemon):
    r = daemon.request("POST", "/sandbox/sandboxes", {"image": "ubuntu:22.04"})
    assert r.status == 403 and r.json["code"] == "S100" and r.json["type"] == "config"


def test_unknown_route_and_method(daemon):
    assert daemon.request("GET", "/sandbox/nothing-here").status == 404
    assert daemon.request("PUT", "/sandbox/sandboxes").status == 405


def test_query_numbers_are_accepted(daemon, sandbox):
    r = daemon.request("GET", "/sandbox/sandboxes?page=1&pageSize=5")
    assert r.json["pageSize"] == 5
    bad = daemon.request("GET", "/sandbox/sandboxes?pageSize=abc")
    assert bad.status == 400 and bad.json["code"] == "S001"


def test_auth(make_daemon):
    d = make_daemon(env={"III_AUTH_TOKEN": "s3cret-token"}).start()
    assert d.request("GET", "/health", token="").status == 200
    missing = d.request("GET", "/sandbox/sandboxes", token="")
    assert missing.status == 401 and "Missing authorization" in missing.json["error"]
    wrong = d.request("GET", "/sandbox/sandboxes", token="s3cret-tokeX")
    assert wrong.status == 403 and wrong.json["error"] == "Invalid token"
    shorter = d.request("GET", "/sandbox/sandboxes", token="s3cret")
    assert shorter.status == 403
    lower = d.request("GET", "/sandbox/sandboxes", token="",
                      headers={"Authorization": "bearer s3cret-token"})
    assert lower.status == 403
    ok = d.request("GET", "/sandbox/sandboxes")
    assert ok.status == 200
    bare = d.request("GET", "/sandbox/sandboxes", token="", headers={"Authorization": "s3cret-token"})
    assert bare.status == 200


def test_max_sandboxes_is_s400(make_daemon):
    d = make_daemon(env={"III_MAX_SANDBOXES": "2"}).start()
    a, b = d.create(), d.create()
    r = d.request("POST", "/sandbox/sandboxes", {"image": "busybox"})
    assert r.json["code"] == "S400" and "maximum sandbox limit reached: 2" in r.json["error"], r
    assert r.status == 503
    d.delete(a)
    c = d.create()
    for s in (b, c):
        d.delete(s)


def test_per_image_caps_are_s400(make_daemon):
    d = make_daemon(config={"per_image_caps": {"busybox": {"max_cpus": 1, "max_memory_mb": 256}}}).start()
    r = d.request("POST", "/sandbox/sandboxes", {"image": "busybox", "cpus": 2})
    assert r.status == 400 and r.json["code"] == "S400", r
    r = d.request("POST", "/sandbox/sandboxes", {"image": "busybox", "memory_mb": 512})
    assert r.status == 400 and r.json["code"] == "S400", r
    sid = d.create(memory_mb=256, cpus=1)
    d.delete(sid)


def test_metrics_count(daemon):
    before = daemon.request("GET", "/sandbox/metrics").json
    sid = daemon.create()
    daemon.delete(sid)
    after = daemon.request("GET", "/sandbox/metrics").json
    assert after["totalCreated"] == before["totalCreated"] + 1
    assert after["totalKilled"] == before["totalKilled"] + 1


def test_ttl_expiry_and_s004(make_daemon):
    d = make_daemon(config={"stopped_retention_secs": 60}).start()
    sid = d.create(timeout=1)
    deadline = time.time() + 15
    while time.time() < deadline:
        if d.request("GET", f"/sandbox/sandboxes/{sid}").json["status"] == "expired":
            break
        time.sleep(0.2)
    g = d.request("GET", f"/sandbox/sandboxes/{sid}").json
    assert g["status"] == "expired" and g["stopped"] is True
    r = d.exec(sid, "true")
    assert r.status == 409 and r.json["code"] == "S004", r


def test_idle_timeout(make_daemon):
    d = make_daemon(config={"stopped_retention_secs": 60}).start()
    sid = d.create(idle_timeout_secs=2)
    busy = d.create(idle_timeout_secs=2)
    deadline = time.time() + 15
    while time.time() < deadline:
        d.exec(busy, "true")
        if d.request("GET", f"/sandbox/sandboxes/{sid}").json["status"] != "running":
            break
        time.sleep(0.3)
    assert d.request("GET", f"/sandbox/sandboxes/{sid}").json["status"] == "stopped"
    assert d.request("GET", f"/sandbox/sandboxes/{busy}").json["status"] == "running"


def test_retention_then_record_removed(make_daemon):
    d = make_daemon(config={"stopped_retention_secs": 1}).start()
    sid = d.create(timeout=1)
    deadline = time.time() + 20
    while time.time() < deadline and d.request("GET", f"/sandbox/sandboxes/{sid}").status == 200:
        time.sleep(0.3)
    assert d.request("GET", f"/sandbox/sandboxes/{sid}").status == 404


def test_hostile_requests(daemon, sandbox):
    before = daemon.request("GET", "/sandbox/sandboxes").json["total"]
    # NUL inside a JSON string, deep nesting, an oversized body, a huge path, junk ids.
    r = daemon.request("POST", f"/sandbox/sandboxes/{sandbox}/exec", raw='{"command": "echo a\\u0000b"}')
    assert r.status == 400 and r.json["code"] == "S001"
    r = daemon.request("POST", "/sandbox/sandboxes", raw='{"image":' + "[" * 5000 + "]" * 5000 + "}")
    assert r.status == 400
    r = daemon.request("POST", "/sandbox/sandboxes", raw=b'{"image": "busybox", "name": "' + b"x" * (65 << 20) + b'"}')
    assert r.status == 413
    r = daemon.request("GET", "/sandbox/sandboxes/" + "a" * 20000)
    assert 400 <= r.status < 500
    for bad in ("..%2F..%2Fetc", "sbx_%00", "%ff%fe"):
        r = daemon.request("GET", f"/sandbox/sandboxes/{bad}")
        assert r.status in (400, 404), (bad, r)
    r = daemon.request("POST", "/sandbox/sandboxes", raw=b'{"image": "\xff\xfe"}')
    assert r.status == 400
    # Nothing was created or lost, and the daemon still answers.
    assert daemon.request("GET", "/sandbox/sandboxes").json["total"] == before
    assert daemon.exec(sandbox, "echo still").json["stdout"] == "still\n"
