"""The /v1 file routes (spec/v1-wire.md §5.5): raw bodies streamed both ways, recursive
delete, the `ls -la` listing, and failures reported in the v1 error shape."""
import urllib.error
import urllib.parse
import urllib.request

import pytest


@pytest.fixture
def v1sb(daemon):
    r = daemon.request("POST", "/v1/sandboxes", {"image": "busybox"})
    assert r.status == 201, r
    sid = r.json["id"]
    yield sid
    daemon.request("DELETE", f"/v1/sandboxes/{sid}")


def url(sid, path=None, sub=""):
    q = "" if path is None else "?" + urllib.parse.urlencode({"path": path})
    return f"/v1/sandboxes/{sid}/files{sub}{q}"


def get_bytes(d, route):
    req = urllib.request.Request(d.url + route, method="GET")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


def put(d, sid, path, data, **q):
    route = url(sid, path) + ("&" + urllib.parse.urlencode(q) if q else "")
    return d.request("PUT", route, raw=data, headers={"Content-Type": "application/octet-stream"})


def assert_v1_error(r, status, code):
    assert r.status == status, r
    assert set(r.json) == {"code", "message"} and r.json["code"] == code, r


def test_put_get_binary(daemon, v1sb):
    data = b"\x00\x01binary\xff\xfe\x00" * 1000
    r = put(daemon, v1sb, "/workspace/dir/bin.dat", data)   # parents are created
    assert r.status == 200, r
    assert r.json["path"] == "/workspace/dir/bin.dat" and r.json["status"] == "written"
    assert r.json["size"] == len(data)
    status, body, headers = get_bytes(daemon, url(v1sb, "/workspace/dir/bin.dat"))
    assert status == 200 and body == data
    assert headers["Content-Type"] == "application/octet-stream"


def test_empty_file_can_be_written(daemon, v1sb):
    r = put(daemon, v1sb, "/workspace/empty.txt", b"")
    assert r.status == 200, r
    assert r.json["size"] == 0
    assert get_bytes(daemon, url(v1sb, "/workspace/empty.txt"))[:2] == (200, b"")
    r = daemon.exec(v1sb, "stat -c %s /workspace/empty.txt")
    assert r.json["stdout"].strip() == "0"


def test_put_replaces_and_mode(daemon, v1sb):
    assert put(daemon, v1sb, "/workspace/f", b"old content").status == 200
    assert put(daemon, v1sb, "/workspace/f", b"new").status == 200
    assert get_bytes(daemon, url(v1sb, "/workspace/f"))[1] == b"new"
    # mode applies to a new file (a replaced one keeps its mode, as cp(1) does)
    assert put(daemon, v1sb, "/workspace/g", b"g", mode="0700").status == 200
    r = daemon.exec(v1sb, "stat -c %a /workspace/g")
    assert r.json["stdout"].strip() == "700"
    assert put(daemon, v1sb, "/workspace/f", b"+more", append="true").status == 200
    assert get_bytes(daemon, url(v1sb, "/workspace/f"))[1] == b"new+more"


def test_delete_is_recursive_and_idempotent(daemon, v1sb):
    assert put(daemon, v1sb, "/workspace/tree/a/b/c.txt", b"c").status == 200
    r = daemon.request("DELETE", url(v1sb, "/workspace/tree"))
    assert r.status == 204 and r.raw == ""
    assert get_bytes(daemon, url(v1sb, "/workspace/tree/a/b/c.txt"))[0] == 404
    r = daemon.request("DELETE", url(v1sb, "/workspace/tree"))   # missing: still 204
    assert r.status == 204


def test_list(daemon, v1sb):
    assert put(daemon, v1sb, "/workspace/ls/file one.txt", b"12345").status == 200
    assert daemon.exec(v1sb, "mkdir /workspace/ls/sub && chmod 0750 /workspace/ls/sub").status == 200
    r = daemon.request("GET", url(v1sb, "/workspace/ls", "/list"))
    assert r.status == 200, r
    assert r.json["path"] == "/workspace/ls" and isinstance(r.json["output"], str)
    lines = r.json["output"].splitlines()
    assert lines[0].startswith("total ")
    f = [l for l in lines if l.endswith("file one.txt")][0]
    assert f.startswith("-rw-r--r--") and " 5 " in f
    s = [l for l in lines if l.endswith(" sub")][0]
    assert s.startswith("drwxr-x---")
    # the path defaults to "/"
    r = daemon.request("GET", url(v1sb, None, "/list"))
    assert r.status == 200 and r.json["path"] == "/"
    assert any(l.endswith(" workspace") for l in r.json["output"].splitlines())


def test_unicode_space_quote_paths(daemon, v1sb):
    for name in ("with space.txt", "ünï 文件.txt", "it's \"quoted\".txt"):
        path = "/workspace/" + name
        assert put(daemon, v1sb, path, name.encode()).status == 200
        assert get_bytes(daemon, url(v1sb, path))[1] == name.encode()
        assert daemon.request("DELETE", url(v1sb, path)).status == 204


def test_errors(daemon, v1sb):
    for method in ("GET", "PUT", "DELETE"):
        r = daemon.request(method, f"/v1/sandboxes/{v1sb}/files", raw=b"" if method == "PUT" else None)
        assert_v1_error(r, 400, "BAD_REQUEST")
        assert r.json["message"] == "path query param is required"
        r = daemon.request(method, f"/v1/sandboxes/{v1sb}/files?path=", raw=b"" if method == "PUT" else None)
        assert_v1_error(r, 400, "BAD_REQUEST")
    r = daemon.request("GET", url(v1sb, "/workspace/missing"))
    assert_v1_error(r, 404, "NOT_FOUND")
    r = daemon.request("GET", url(v1sb, "/workspace"))   # a directory
    assert_v1_error(r, 400, "BAD_REQUEST")
    r = put(daemon, v1sb, "/workspace", b"x")
    assert r.status in (400, 409) and set(r.json) == {"code", "message"}, r
    r = daemon.request("GET", url(v1sb, "/workspace/missing", "/list"))
    assert_v1_error(r, 404, "NOT_FOUND")
    gone = "sbx_000000000000400080000000"
    assert_v1_error(daemon.request("GET", url(gone, "/x")), 404, "NOT_FOUND")
    assert_v1_error(put(daemon, gone, "/x", b"x"), 404, "NOT_FOUND")
    assert_v1_error(daemon.request("DELETE", url(gone, "/x")), 404, "NOT_FOUND")
    assert_v1_error(daemon.request("GET", url(gone, "/", "/list")), 404, "NOT_FOUND")


def test_auth(make_daemon):
    d = make_daemon(env={"III_AUTH_TOKEN": "sekret"}).start()
    r = d.request("POST", "/v1/sandboxes", {"image": "busybox"})
    assert r.status == 201, r
    sid = r.json["id"]
    r = d.request("PUT", url(sid, "/workspace/x"), raw=b"x", token="wrong")
    assert_v1_error(r, 401, "UNAUTHORIZED")
    r = d.request("GET", url(sid, "/workspace/x"), token="wrong")
    assert_v1_error(r, 401, "UNAUTHORIZED")
    assert d.request("PUT", url(sid, "/workspace/x"), raw=b"x").status == 200
