"""The function dialect's file operations: POST /functions/sandbox::fs::<op> with JSON
payloads, fs::read answering the raw bytes and fs::write taking them, and the S2xx file
error codes in the guide's envelope (docs/api.md, "File functions")."""
import json
import re
import urllib.parse

import pytest

ENVELOPE = re.compile(r"handler error:\s*(\{.*\})")


def call(d, op, payload):
    return d.request("POST", f"/functions/sandbox::fs::{op}", payload)


def ok(d, op, payload):
    r = call(d, op, payload)
    assert r.status == 200, r
    return r.json


def fail(d, op, payload, status, code):
    r = call(d, op, payload)
    assert r.status == status, r
    assert r.json["code"] == code, r
    env = json.loads(ENVELOPE.search(r.json["error"]).group(1))
    assert env["code"] == code and env["type"] == r.json["type"]
    return r


def write(d, sid, path, data, **opts):
    q = urllib.parse.urlencode({"sandbox_id": sid, "path": path, **opts})
    return d.request("POST", f"/functions/sandbox::fs::write?{q}", raw=data,
                     headers={"Content-Type": "application/octet-stream"})


def read(d, sid, path, **kw):
    """fs::read's raw answer as bytes (the conftest client decodes text, so go direct)."""
    import urllib.request
    body = json.dumps({"sandbox_id": sid, "path": path, **kw}).encode()
    req = urllib.request.Request(d.url + "/functions/sandbox::fs::read", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


def names(listing):
    return sorted(e["name"] for e in listing["entries"])


def sh(d, sid, script):
    r = d.exec(sid, script)
    assert r.status == 200, r
    return r.json


def test_write_read_binary_round_trip(daemon, sandbox):
    data = bytes(range(256)) * 64 + b"\x00\x00end\x00"
    r = write(daemon, sandbox, "/workspace/bin.dat", data)
    assert r.status == 200, r
    assert r.json["size"] == len(data)
    status, body, headers = read(daemon, sandbox, "/workspace/bin.dat")
    assert status == 200 and body == data
    assert headers["Content-Type"] == "application/octet-stream"
    # offset and length pick a slice
    status, body, _ = read(daemon, sandbox, "bin.dat", offset=10, length=5)   # relative: the workspace
    assert status == 200 and body == data[10:15]


def test_write_options(daemon, sandbox):
    assert write(daemon, sandbox, "/workspace/a.txt", b"one\n", mode="0600").status == 200
    assert write(daemon, sandbox, "/workspace/a.txt", b"two\n", append="true").status == 200
    assert read(daemon, sandbox, "/workspace/a.txt")[1] == b"one\ntwo\n"
    st = ok(daemon, "stat", {"sandbox_id": sandbox, "path": "/workspace/a.txt"})
    assert st["mode"] == 0o600 and st["size"] == 8 and st["type"] == "file"
    # an empty body writes an empty file
    assert write(daemon, sandbox, "/workspace/empty", b"").status == 200
    assert read(daemon, sandbox, "/workspace/empty")[:2] == (200, b"")
    # parents
    r = write(daemon, sandbox, "/workspace/deep/er/f", b"x")
    assert r.status == 404 and r.json["code"] == "S201", r
    assert write(daemon, sandbox, "/workspace/deep/er/f", b"x", parents="true").status == 200
    # exclusive refuses an existing file
    r = write(daemon, sandbox, "/workspace/deep/er/f", b"y", exclusive="true")
    assert r.status == 409 and r.json["code"] == "S206", r


def test_write_errors_use_the_envelope(daemon, sandbox):
    r = write(daemon, sandbox, "/workspace", b"x")
    assert r.status == 400 and r.json["code"] == "S202", r
    assert ENVELOPE.search(r.json["error"])
    r = write(daemon, "sbx_000000000000400080000000", "/x", b"x")
    assert r.status == 404 and r.json["code"] == "S002", r
    q = urllib.parse.urlencode({"sandbox_id": sandbox})
    r = daemon.request("POST", f"/functions/sandbox::fs::write?{q}", raw=b"x")
    assert r.status == 400 and r.json["code"] == "S001" and "path" in r.json["message"], r
    r = write(daemon, sandbox, "/workspace/m", b"x", mode="9z")
    assert r.status == 400 and r.json["code"] == "S001", r


def test_stat_ls_mkdir_mv_rm_chmod(daemon, sandbox):
    sid = sandbox
    ok(daemon, "mkdir", {"sandbox_id": sid, "path": "/workspace/t/a/b", "parents": True, "mode": "0750"})
    st = ok(daemon, "stat", {"sandbox_id": sid, "path": "/workspace/t/a/b"})
    assert st["type"] == "directory" and st["mode"] == 0o750
    fail(daemon, "mkdir", {"sandbox_id": sid, "path": "/workspace/t/a/b"}, 409, "S206")
    fail(daemon, "mkdir", {"sandbox_id": sid, "path": "/workspace/nope/x"}, 404, "S201")
    assert write(daemon, sid, "/workspace/t/f1", b"hello").status == 200
    listing = ok(daemon, "ls", {"sandbox_id": sid, "path": "/workspace/t"})
    assert names(listing) == ["a", "f1"]
    f1 = [e for e in listing["entries"] if e["name"] == "f1"][0]
    assert f1["size"] == 5 and f1["type"] == "file"
    rec = ok(daemon, "ls", {"sandbox_id": sid, "path": "/workspace/t", "recursive": True})
    assert {"a", "b", "f1"} <= {e["name"] for e in rec["entries"]}
    # default path: the workspace
    assert "t" in names(ok(daemon, "ls", {"sandbox_id": sid}))

    ok(daemon, "mv", {"sandbox_id": sid, "from": "/workspace/t/f1", "to": "/workspace/t/a/f2"})
    fail(daemon, "stat", {"sandbox_id": sid, "path": "/workspace/t/f1"}, 404, "S201")
    assert read(daemon, sid, "/workspace/t/a/f2")[1] == b"hello"
    assert write(daemon, sid, "/workspace/t/g", b"g").status == 200
    fail(daemon, "mv", {"sandbox_id": sid, "from": "/workspace/t/g", "to": "/workspace/t/a/f2",
                        "overwrite": False}, 409, "S206")

    ok(daemon, "chmod", {"sandbox_id": sid, "path": "/workspace/t/g", "mode": "0700"})
    assert ok(daemon, "stat", {"sandbox_id": sid, "path": "/workspace/t/g"})["mode"] == 0o700
    ok(daemon, "chmod", {"sandbox_id": sid, "path": "/workspace/t/g", "mode": "go+r"})
    assert ok(daemon, "stat", {"sandbox_id": sid, "path": "/workspace/t/g"})["mode"] == 0o744
    ok(daemon, "chmod", {"sandbox_id": sid, "path": "/workspace/t/g", "mode": 0o640})
    assert ok(daemon, "stat", {"sandbox_id": sid, "path": "/workspace/t/g"})["mode"] == 0o640
    fail(daemon, "chmod", {"sandbox_id": sid, "path": "/workspace/t/g"}, 400, "S001")

    fail(daemon, "rm", {"sandbox_id": sid, "path": "/workspace/t/a"}, 400, "S202")  # a directory
    fail(daemon, "rm", {"sandbox_id": sid, "path": "/workspace/t/missing"}, 404, "S201")
    ok(daemon, "rm", {"sandbox_id": sid, "path": "/workspace/t/missing", "force": True})
    ok(daemon, "rm", {"sandbox_id": sid, "path": "/workspace/t/a", "recursive": True})
    assert names(ok(daemon, "ls", {"sandbox_id": sid, "path": "/workspace/t"})) == ["g"]
    assert sh(daemon, sid, "ls /workspace/t")["stdout"] == "g\n"


def tree(d, sid):
    files = {
        "/workspace/src/a.py": b"import os\nTODO = 1\nprint('todo')\n",
        "/workspace/src/sub/b.py": b"x = 2\n# TODO: more\nTODO TODO\n",
        "/workspace/src/c.txt": b"nothing here\n",
    }
    for p, data in files.items():
        assert write(d, sid, p, data, parents="true").status == 200


def test_grep_literal_regex_line_numbers(daemon, sandbox):
    tree(daemon, sandbox)
    res = ok(daemon, "grep", {"sandbox_id": sandbox, "path": "/workspace/src", "pattern": "TODO"})
    got = sorted((m["path"], m["line"]) for m in res["matches"])
    assert got == [("/workspace/src/a.py", 2), ("/workspace/src/sub/b.py", 2), ("/workspace/src/sub/b.py", 3)]
    m = [m for m in res["matches"] if m["path"].endswith("a.py")][0]
    assert m["text"].rstrip("\n") == "TODO = 1"
    # case-insensitive literal
    res = ok(daemon, "grep", {"sandbox_id": sandbox, "path": "/workspace/src", "pattern": "todo",
                              "ignore_case": True})
    assert len(res["matches"]) == 4
    # regex: a line that starts with "x" or "import"
    res = ok(daemon, "grep", {"sandbox_id": sandbox, "path": "/workspace/src", "pattern": "^(x|import) ",
                              "regex": True})
    assert sorted(m["line"] for m in res["matches"]) == [1, 1]
    # "." is literal unless regex
    res = ok(daemon, "grep", {"sandbox_id": sandbox, "path": "/workspace/src", "pattern": "a.py"})
    assert res["matches"] == []
    # a single file
    res = ok(daemon, "grep", {"sandbox_id": sandbox, "path": "/workspace/src/a.py", "pattern": "TODO"})
    assert [(m["path"], m["line"]) for m in res["matches"]] == [("/workspace/src/a.py", 2)]
    fail(daemon, "grep", {"sandbox_id": sandbox, "path": "/workspace/src", "pattern": "(", "regex": True},
         400, "S205")
    fail(daemon, "grep", {"sandbox_id": sandbox, "path": "/workspace/none", "pattern": "x"}, 404, "S201")
    fail(daemon, "grep", {"sandbox_id": sandbox, "path": "/workspace/src"}, 400, "S001")


def test_sed_literal_and_regex(daemon, sandbox):
    tree(daemon, sandbox)
    res = ok(daemon, "sed", {"sandbox_id": sandbox, "path": "/workspace/src", "pattern": "TODO",
                             "replacement": "DONE"})
    assert res["replacements"] == 4
    assert sorted(f["path"] for f in res["files"]) == ["/workspace/src/a.py", "/workspace/src/sub/b.py"]
    assert read(daemon, sandbox, "/workspace/src/sub/b.py")[1] == b"x = 2\n# DONE: more\nDONE DONE\n"
    # regex with a group reference
    res = ok(daemon, "sed", {"sandbox_id": sandbox, "path": "/workspace/src/a.py", "pattern": "([a-z]+) = ([0-9])",
                             "replacement": "\\1 := \\2", "regex": True})
    assert res["replacements"] == 0  # "DONE = 1" has upper case
    res = ok(daemon, "sed", {"sandbox_id": sandbox, "path": "/workspace/src/sub/b.py",
                             "pattern": "([a-z]+) = ([0-9])", "replacement": "\\2 =: \\1", "regex": True})
    assert res["replacements"] == 1
    assert read(daemon, sandbox, "/workspace/src/sub/b.py")[1].startswith(b"2 =: x\n")
    # nothing to change: the file is untouched
    res = ok(daemon, "sed", {"sandbox_id": sandbox, "path": "/workspace/src/c.txt", "pattern": "zzz",
                             "replacement": "y"})
    assert res["replacements"] == 0
    fail(daemon, "sed", {"sandbox_id": sandbox, "path": "/workspace/src", "pattern": "x"}, 400, "S001")


@pytest.mark.parametrize("name", ["spaced name.txt", "ünïcødé-文件.txt", "quote's \"both\".txt", "semi;colon $x"])
def test_awkward_names(daemon, sandbox, name):
    path = "/workspace/" + name
    assert write(daemon, sandbox, path, name.encode()).status == 200
    assert read(daemon, sandbox, path)[1] == name.encode()
    assert name in names(ok(daemon, "ls", {"sandbox_id": sandbox, "path": "/workspace"}))
    ok(daemon, "mv", {"sandbox_id": sandbox, "from": path, "to": path + ".2"})
    assert ok(daemon, "stat", {"sandbox_id": sandbox, "path": path + ".2"})["name"] == name + ".2"
    ok(daemon, "rm", {"sandbox_id": sandbox, "path": path + ".2"})


def test_error_codes(daemon, sandbox):
    sid = sandbox
    fail(daemon, "stat", {"sandbox_id": sid, "path": "/nope"}, 404, "S201")
    status, body, _ = read(daemon, sid, "/nope")
    assert status == 404 and json.loads(body)["code"] == "S201"
    status, body, _ = read(daemon, sid, "/workspace")
    assert status == 400 and json.loads(body)["code"] == "S202"
    fail(daemon, "ls", {"sandbox_id": sid, "path": "/etc/passwd/x"}, 400, "S202")
    fail(daemon, "stat", {"sandbox_id": sid}, 400, "S001")
    fail(daemon, "stat", {"sandbox_id": "nope", "path": "/"}, 400, "S001")
    fail(daemon, "stat", {"sandbox_id": "sbx_000000000000400080000000", "path": "/"}, 404, "S002")
    fail(daemon, "stat", {"sandbox_id": sid, "path": "/workspace/" + "x" * 300}, 400, "S205")  # name too long
    sh(daemon, sid, "ln -s loop /workspace/loop")
    fail(daemon, "ls", {"sandbox_id": sid, "path": "/workspace/loop"}, 400, "S205")  # ELOOP
    r = call(daemon, "nosuchop", {})
    assert r.status == 404 and r.json["code"] == "S001"


def test_writable_layer_full_is_s204(make_daemon):
    d = make_daemon(config={"default_disk_mb": 4}).start()
    r = d.request("POST", "/functions/sandbox::create", {"image": "busybox"})
    assert r.status == 200, r
    sid = r.json["sandbox_id"]
    r = write(d, sid, "/workspace/big", b"\0" * (16 << 20))
    if r.status == 200:
        pytest.skip("this host does not enforce the writable layer's size cap")
    assert r.status == 413 and r.json["code"] == "S204", r
    # the sandbox stays usable
    assert write(d, sid, "/workspace/small", b"ok").status == 200
