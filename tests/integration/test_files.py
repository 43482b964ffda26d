"""Files on the /sandbox dialect: every files/* route, the raw streaming routes, ownership,
atomic writes, the writable layer's cap, memory use with 1 GiB files, and the escapes that
must fail (symlinks to host paths, /proc/1/root, ../.., a path swapped under the reader)."""
import base64
import hashlib
import http.client
import json
import os
import secrets
import threading
import time
import urllib.parse

import pytest

MiB = 1 << 20


def files(d, sid, op, **body):
    return d.request("POST", f"/sandbox/sandboxes/{sid}/files/{op}", body)


def sh(d, sid, command, **kw):
    r = d.exec(sid, command, **kw)
    assert r.status == 200, r
    return r.json


def raw_url(sid, path, **q):
    q["path"] = path
    return f"/sandbox/sandboxes/{sid}/files/raw?" + urllib.parse.urlencode(q)


def raw_put(d, sid, path, data, **q):
    """PUT the bytes (Content-Length) or an iterable of bytes (chunked encoding)."""
    c = http.client.HTTPConnection("127.0.0.1", d.port, timeout=600)
    try:
        c.request("PUT", raw_url(sid, path, **q), body=data, headers={"Content-Type": "application/octet-stream"})
        r = c.getresponse()
        body = r.read()
        return r.status, json.loads(body) if body else None
    finally:
        c.close()


def raw_get(d, sid, path, **q):
    c = http.client.HTTPConnection("127.0.0.1", d.port, timeout=600)
    try:
        c.request("GET", raw_url(sid, path, **q))
        r = c.getresponse()
        return r.status, r.read(), dict(r.getheaders())
    finally:
        c.close()


def md5(b):
    return hashlib.md5(b).hexdigest()


def vm_rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def host_uid_of(d, sid):
    return int(sh(d, sid, "cat /proc/self/uid_map")["stdout"].split()[1])


# ---- the JSON routes ----


def test_write_then_read_relative_path_lands_in_workspace(daemon, sandbox):
    r = files(daemon, sandbox, "write", path="hello.txt", content="hello\nworld\n")
    assert r.status == 200, r
    assert r.json["success"] is True and r.json["path"] == "/workspace/hello.txt" and r.json["size"] == 12
    r = files(daemon, sandbox, "read", path="hello.txt")
    assert r.status == 200 and r.json == "hello\nworld\n", r
    assert r.raw.startswith('"')  # a bare JSON string, as the reference answers
    assert sh(daemon, sandbox, "cat /workspace/hello.txt")["stdout"] == "hello\nworld\n"
    r = files(daemon, sandbox, "read", path="/workspace/hello.txt")
    assert r.json == "hello\nworld\n"


def test_write_options_empty_mode_append_base64(daemon, sandbox):
    r = files(daemon, sandbox, "write", path="/tmp/empty", content="")
    assert r.status == 200 and r.json["size"] == 0, r
    assert sh(daemon, sandbox, "stat -c %s /tmp/empty")["stdout"] == "0\n"
    assert files(daemon, sandbox, "read", path="/tmp/empty").json == ""
    # New files are 0644 unless a mode is given (octal string or number).
    files(daemon, sandbox, "write", path="m1", content="x")
    assert sh(daemon, sandbox, "stat -c %a /workspace/m1")["stdout"] == "644\n"
    assert files(daemon, sandbox, "write", path="m2", content="x", mode="0600").status == 200
    assert sh(daemon, sandbox, "stat -c %a /workspace/m2")["stdout"] == "600\n"
    assert files(daemon, sandbox, "write", path="m3", content="x", mode=0o640).status == 200
    assert sh(daemon, sandbox, "stat -c %a /workspace/m3")["stdout"] == "640\n"
    assert files(daemon, sandbox, "write", path="m4", content="x", mode="999").status == 400
    # append
    files(daemon, sandbox, "write", path="log", content="one\n")
    r = files(daemon, sandbox, "write", path="log", content="two\n", append=True)
    assert r.status == 200, r
    assert files(daemon, sandbox, "read", path="log").json == "one\ntwo\n"
    # base64 content
    r = files(daemon, sandbox, "write", path="b64", content=base64.b64encode(b"\x00\x01bin").decode(),
              encoding="base64")
    assert r.status == 200 and r.json["size"] == 5, r
    assert sh(daemon, sandbox, "od -An -c /workspace/b64 | tr -s ' '")["stdout"].split() == \
        ["\\0", "001", "b", "i", "n"]
    assert files(daemon, sandbox, "write", path="bad", content="!!", encoding="base64").status == 400
    assert files(daemon, sandbox, "write", path="bad", content="x", encoding="latin1").status == 400
    # Missing parent directory: an error unless parents is set.
    r = files(daemon, sandbox, "write", path="no/such/dir/f", content="x")
    assert r.status == 404 and r.json["code"] == "ENOENT", r
    r = files(daemon, sandbox, "write", path="no/such/dir/f", content="x", parents=True)
    assert r.status == 200, r
    assert sh(daemon, sandbox, "cat /workspace/no/such/dir/f")["stdout"] == "x"


def test_read_replaces_invalid_utf8_and_caps_size(daemon, sandbox):
    files(daemon, sandbox, "upload", path="latin", content=base64.b64encode(b"ok \xff\xfe end").decode())
    assert files(daemon, sandbox, "read", path="latin").json == "ok \ufffd\ufffd end"
    sh(daemon, sandbox, "dd if=/dev/zero of=/workspace/big bs=1M count=11 2>/dev/null")
    r = files(daemon, sandbox, "read", path="big")
    assert r.status == 413 and "files/raw" in r.json["error"], r
    # download has a higher cap, and the raw route none.
    r = files(daemon, sandbox, "download", path="big")
    assert r.status == 200 and len(base64.b64decode(r.json)) == 11 * MiB
    st, body, _ = raw_get(daemon, sandbox, "big")
    assert st == 200 and len(body) == 11 * MiB and body.count(0) == len(body)


def test_errors_map_to_status_and_errno_codes(daemon, sandbox):
    r = files(daemon, sandbox, "read", path="missing")
    assert r.status == 404 and r.json["code"] == "ENOENT" and "/workspace/missing" in r.json["error"], r
    r = files(daemon, sandbox, "read", path="/tmp")
    assert r.status == 400 and r.json["code"] == "EISDIR", r
    r = files(daemon, sandbox, "read", path="/etc/passwd/x")
    assert r.status == 400 and r.json["code"] == "ENOTDIR", r
    r = files(daemon, sandbox, "read", path="")
    assert r.status == 400 and r.json["code"] == "S001", r
    r = files(daemon, sandbox, "read")
    assert r.status == 400 and r.json["code"] == "S001", r
    r = files(daemon, sandbox, "write", path="x")
    assert r.status == 400 and r.json["code"] == "S001", r
    r = files(daemon, sandbox, "write", path="/tmp", content="x")
    assert r.status in (400, 409), r
    r = files(daemon, sandbox, "mkdir", path="/workspace", parents=False)
    assert r.status == 409 and r.json["code"] == "EEXIST", r
    # Read-only /proc/sys: the agent reports the errno, not a 500.
    r = files(daemon, sandbox, "write", path="/proc/sys/kernel/hostname", content="x", inPlace=True)
    assert r.status in (403, 404), r
    assert r.json["code"] in ("EROFS", "EACCES", "EPERM", "ENOENT"), r


def test_missing_and_stopped_sandboxes(daemon):
    ghost = "sbx_000000000000400080000000"
    for op in ("read", "write", "delete", "list", "search", "upload", "download", "info", "move", "mkdir",
               "rmdir", "chmod"):
        r = files(daemon, ghost, op, path="a", content="", pattern="*", paths=["a"], mode="644",
                  moves=[{"from": "a", "to": "b"}])
        assert r.status == 404 and r.json["code"] == "S002", (op, r)
    st, body, _ = raw_get(daemon, ghost, "a")
    assert st == 404 and json.loads(body)["code"] == "S002"
    st, body = raw_put(daemon, ghost, "a", b"data")
    assert st == 404 and body["code"] == "S002"


def test_expired_sandbox_is_409_s004(make_daemon):
    d = make_daemon(config={"stopped_retention_secs": 60}).start()
    sid = d.create(timeout=1)
    deadline = time.time() + 15
    while time.time() < deadline and d.request("GET", f"/sandbox/sandboxes/{sid}").json["status"] != "expired":
        time.sleep(0.2)
    for op in ("read", "write", "list", "info", "mkdir"):
        r = files(d, sid, op, path="a", content="")
        assert r.status == 409 and r.json["code"] == "S004", (op, r)
    st, body, _ = raw_get(d, sid, "a")
    assert st == 409 and json.loads(body)["code"] == "S004"
    st, j = raw_put(d, sid, "a", b"x")
    assert st == 409 and j["code"] == "S004"


def test_upload_download_binary_with_nuls(daemon, sandbox):
    data = bytes(range(256)) * 64 + b"\x00" * 1000 + os.urandom(5000)
    r = files(daemon, sandbox, "upload", path="bin/blob.dat", content=base64.b64encode(data).decode(), parents=True)
    assert r.status == 200 and r.json["success"] is True and r.json["size"] == len(data), r
    r = files(daemon, sandbox, "download", path="bin/blob.dat")
    assert r.status == 200 and base64.b64decode(r.json) == data
    assert sh(daemon, sandbox, "md5sum /workspace/bin/blob.dat")["stdout"].split()[0] == md5(data)
    st, body, hdrs = raw_get(daemon, sandbox, "bin/blob.dat")
    assert st == 200 and body == data and hdrs["Content-Type"] == "application/octet-stream"
    r = files(daemon, sandbox, "upload", path="x", content="not base64!!")
    assert r.status == 400 and r.json["code"] == "S001", r
    assert files(daemon, sandbox, "download", path="nothing").status == 404


def test_delete(daemon, sandbox):
    files(daemon, sandbox, "write", path="gone", content="x")
    assert files(daemon, sandbox, "delete", path="gone").json == {"success": True}
    assert sh(daemon, sandbox, "test -e /workspace/gone; echo $?")["stdout"] == "1\n"
    # Like `rm -f`: a missing file is not an error.
    assert files(daemon, sandbox, "delete", path="gone").status == 200
    sh(daemon, sandbox, "mkdir -p /workspace/d/e && touch /workspace/d/e/f")
    r = files(daemon, sandbox, "delete", path="d")
    assert r.status in (400, 409), r
    assert files(daemon, sandbox, "delete", path="d", recursive=True).status == 200
    assert sh(daemon, sandbox, "test -e /workspace/d; echo $?")["stdout"] == "1\n"


def test_list(daemon, sandbox):
    sh(daemon, sandbox, "mkdir -p /workspace/ls/sub && printf abc > /workspace/ls/a.txt && "
                        "ln -s sub /workspace/ls/link")
    r = files(daemon, sandbox, "list", path="ls")
    assert r.status == 200 and isinstance(r.json, list), r
    by = {e["name"]: e for e in r.json}
    assert set(by) == {"a.txt", "sub", "link"}
    assert by["a.txt"]["path"] == "/workspace/ls/a.txt" and by["a.txt"]["size"] == 3
    assert by["a.txt"]["isDirectory"] is False and by["sub"]["isDirectory"] is True
    assert by["link"]["isDirectory"] is True  # a symlink to a directory lists as one
    now = time.time() * 1000
    assert abs(by["a.txt"]["modifiedAt"] - now) < 600_000
    assert set(by["sub"]) >= {"name", "path", "size", "isDirectory", "modifiedAt"}
    # Default: the workspace.
    names = {e["name"] for e in files(daemon, sandbox, "list").json}
    assert "ls" in names
    r = files(daemon, sandbox, "list", path="nope")
    assert r.status == 404 and r.json["code"] == "ENOENT"
    assert files(daemon, sandbox, "list", path="ls/a.txt").status == 400


def test_search(daemon, sandbox):
    sh(daemon, sandbox, "mkdir -p /workspace/s/a/b && touch /workspace/s/x.py /workspace/s/a/y.py "
                        "/workspace/s/a/b/z.py /workspace/s/a/b/notes.txt")
    r = files(daemon, sandbox, "search", dir="s", pattern="*.py")
    assert r.status == 200, r
    assert sorted(r.json) == ["/workspace/s/a/b/z.py", "/workspace/s/a/y.py", "/workspace/s/x.py"]
    r = files(daemon, sandbox, "search", path="/workspace/s", pattern="notes*")
    assert r.json == ["/workspace/s/a/b/notes.txt"]
    assert files(daemon, sandbox, "search", dir="s", pattern="nothing-*").json == []
    assert files(daemon, sandbox, "search", dir="s").status == 400
    # Default directory: the workspace.
    assert "/workspace/s/x.py" in files(daemon, sandbox, "search", pattern="x.py").json


def test_info_path_and_paths(daemon, sandbox):
    files(daemon, sandbox, "write", path="i.txt", content="12345")
    sh(daemon, sandbox, "ln -s i.txt /workspace/i.link")
    r = files(daemon, sandbox, "info", path="i.txt")
    assert r.status == 200 and isinstance(r.json, dict), r
    m = r.json
    assert m["path"] == "/workspace/i.txt" and m["size"] == 5 and m["permissions"] == "-rw-r--r--"
    assert m["owner"] == "root" and m["group"] == "root"
    assert m["isDirectory"] is False and m["isSymlink"] is False and m["modifiedAt"] > 0
    r = files(daemon, sandbox, "info", paths=["i.txt", "/workspace", "i.link"])
    assert r.status == 200 and isinstance(r.json, list) and len(r.json) == 3, r
    assert r.json[1]["isDirectory"] is True and r.json[1]["permissions"].startswith("d")
    assert r.json[2]["isSymlink"] is True and r.json[2]["permissions"].startswith("l")
    r = files(daemon, sandbox, "info", paths=["i.txt", "missing"])
    assert r.status == 404 and r.json["code"] == "ENOENT"
    assert files(daemon, sandbox, "info", paths=[]).status == 400


def test_move(daemon, sandbox):
    for n in ("m1", "m2", "m3", "m4"):
        files(daemon, sandbox, "write", path=n, content=n)
    r = files(daemon, sandbox, "move", moves=[{"from": "m1", "to": "n1"}, {"from": "m2", "to": "/tmp/n2"}])
    assert r.status == 200 and r.json == {"success": True}, r
    assert files(daemon, sandbox, "read", path="n1").json == "m1"
    assert files(daemon, sandbox, "read", path="/tmp/n2").json == "m2"
    assert files(daemon, sandbox, "move", source="m3", destination="n3").status == 200
    assert files(daemon, sandbox, "move", oldPath="n3", newPath="n3b").status == 200
    assert files(daemon, sandbox, "read", path="n3b").json == "m3"
    # Moves stop at the first failure.
    r = files(daemon, sandbox, "move", moves=[{"from": "missing", "to": "x"}, {"from": "m4", "to": "n4"}])
    assert r.status == 404, r
    assert files(daemon, sandbox, "read", path="m4").json == "m4"
    assert files(daemon, sandbox, "move", moves=[{"from": "m4"}]).status == 400
    assert files(daemon, sandbox, "move").status == 400
    # overwrite:false refuses to replace the destination.
    files(daemon, sandbox, "write", path="keep", content="keep")
    r = files(daemon, sandbox, "move", **{"from": "m4", "to": "keep", "overwrite": False})
    assert r.status == 409 and r.json["code"] == "EEXIST", r


def test_mkdir_and_rmdir(daemon, sandbox):
    r = files(daemon, sandbox, "mkdir", paths=["t/a/b/c", "t/d"])
    assert r.status == 200 and r.json == {"success": True}, r
    assert files(daemon, sandbox, "mkdir", path="t/e/f").status == 200  # e2e clients send `path`
    out = sh(daemon, sandbox, "cd /workspace/t && find . -type d | sort")["stdout"].split()
    assert out == [".", "./a", "./a/b", "./a/b/c", "./d", "./e", "./e/f"]
    assert files(daemon, sandbox, "mkdir", path="t/m", mode="0700").status == 200
    assert sh(daemon, sandbox, "stat -c %a /workspace/t/m")["stdout"] == "700\n"
    # recursive:false removes only empty directories.
    r = files(daemon, sandbox, "rmdir", path="t/a", recursive=False)
    assert r.status == 409 and r.json["code"] == "ENOTEMPTY", r
    assert files(daemon, sandbox, "rmdir", path="t/d", recursive=False).status == 200
    # By default like the reference's `rm -rf`.
    sh(daemon, sandbox, "touch /workspace/t/a/b/c/file")
    assert files(daemon, sandbox, "rmdir", paths=["t/a", "t/e"]).status == 200
    assert sh(daemon, sandbox, "ls /workspace/t")["stdout"].split() == ["m"]


def test_chmod_octal_numeric_symbolic(daemon, sandbox):
    files(daemon, sandbox, "write", path="c", content="#!/bin/sh\necho ran\n")
    assert files(daemon, sandbox, "chmod", path="c", mode="755").status == 200
    assert sh(daemon, sandbox, "stat -c %a /workspace/c")["stdout"] == "755\n"
    assert sh(daemon, sandbox, "/workspace/c")["stdout"] == "ran\n"
    assert files(daemon, sandbox, "chmod", path="c", mode=0o600).status == 200
    assert sh(daemon, sandbox, "stat -c %a /workspace/c")["stdout"] == "600\n"
    r = files(daemon, sandbox, "chmod", path="c", mode="u+x,go+r")
    assert r.status == 200 and r.json["success"] is True, r
    assert sh(daemon, sandbox, "stat -c %a /workspace/c")["stdout"] == "744\n"
    assert files(daemon, sandbox, "chmod", path="c", mode="a=rx").status == 200
    assert sh(daemon, sandbox, "stat -c %a /workspace/c")["stdout"] == "555\n"
    for bad in ("abc", "u+q", "99999", "", "7;rm -rf /"):
        r = files(daemon, sandbox, "chmod", path="c", mode=bad)
        assert r.status == 400, (bad, r)
    assert files(daemon, sandbox, "chmod", path="missing", mode="644").status == 404


def test_unicode_spaces_and_quotes_in_paths(daemon, sandbox):
    name = "dir with space/ünïcödé 'single' \"double\" $(id) ;`x` *.txt"
    r = files(daemon, sandbox, "write", path=name, content="odd", parents=True)
    assert r.status == 200, r
    assert r.json["path"] == "/workspace/" + name
    assert files(daemon, sandbox, "read", path=name).json == "odd"
    entries = files(daemon, sandbox, "list", path="dir with space").json
    assert [e["name"] for e in entries] == [name.split("/", 1)[1]]
    assert files(daemon, sandbox, "info", path=name).json["size"] == 3
    st, body, _ = raw_get(daemon, sandbox, name)
    assert st == 200 and body == b"odd"
    st, j = raw_put(daemon, sandbox, name + ".2", b"raw")
    assert st == 200 and j["path"] == "/workspace/" + name + ".2", j
    # Nothing went through a shell: `$(id)` made no file of its own.
    out = sh(daemon, sandbox, "ls '/workspace/dir with space'")["stdout"]
    assert "uid=" not in out and out.count("\n") == 2


def test_files_are_owned_by_sandbox_root(daemon, sandbox):
    files(daemon, sandbox, "write", path="owned-json", content="x")
    raw_put(daemon, sandbox, "owned-raw", b"y")
    files(daemon, sandbox, "mkdir", path="owned-dir")
    for p in ("owned-json", "owned-raw", "owned-dir"):
        assert sh(daemon, sandbox, f"stat -c %u:%g /workspace/{p}")["stdout"] == "0:0\n", p
    host_uid = host_uid_of(daemon, sandbox)
    upper = f"/proc/{daemon.daemon_pid()}/root{daemon.state_dir}/sandboxes/{sandbox}/rw/upper/workspace"
    for p in ("owned-json", "owned-raw", "owned-dir"):
        st = os.stat(os.path.join(upper, p))
        assert st.st_uid == host_uid and st.st_gid == host_uid, (p, st.st_uid, host_uid)


# ---- raw streaming ----


def test_raw_put_get_options(daemon, sandbox):
    data = os.urandom(3 * MiB + 17)
    st, j = raw_put(daemon, sandbox, "raw/a.bin", data, parents="true")
    assert st == 200 and j["size"] == len(data) and j["path"] == "/workspace/raw/a.bin", j
    st, body, _ = raw_get(daemon, sandbox, "raw/a.bin")
    assert st == 200 and body == data
    # Chunked request body.
    st, j = raw_put(daemon, sandbox, "raw/c.bin", (data[i:i + 100000] for i in range(0, len(data), 100000)))
    assert st == 200 and j["size"] == len(data), j
    assert raw_get(daemon, sandbox, "raw/c.bin")[1] == data
    # Empty body, append, mode, offset/length.
    st, j = raw_put(daemon, sandbox, "raw/empty", b"")
    assert st == 200 and j["size"] == 0
    assert raw_get(daemon, sandbox, "raw/empty")[1] == b""
    raw_put(daemon, sandbox, "raw/log", b"one\n")
    st, j = raw_put(daemon, sandbox, "raw/log", b"two\n", append="true")
    assert st == 200, j
    assert raw_get(daemon, sandbox, "raw/log")[1] == b"one\ntwo\n"
    raw_put(daemon, sandbox, "raw/secret", b"s", mode="0600")
    assert sh(daemon, sandbox, "stat -c %a /workspace/raw/secret")["stdout"] == "600\n"
    assert raw_get(daemon, sandbox, "raw/a.bin", offset=1000, length=500)[1] == data[1000:1500]
    assert raw_get(daemon, sandbox, "raw/a.bin", offset=len(data) - 10)[1] == data[-10:]
    # Errors come before any data.
    st, body, _ = raw_get(daemon, sandbox, "raw/missing")
    assert st == 404 and json.loads(body)["code"] == "ENOENT"
    st, body, _ = raw_get(daemon, sandbox, "raw")
    assert st == 400 and json.loads(body)["code"] == "EISDIR"
    st, j = raw_put(daemon, sandbox, "nodir/x", b"x")
    assert st == 404 and j["code"] == "ENOENT", j
    st, j = raw_put(daemon, sandbox, "", b"x")
    assert st == 400 and j["code"] == "S001", j


def test_atomic_writes_never_show_a_partial_file(daemon, sandbox):
    a = os.urandom(20 * MiB)
    b = os.urandom(20 * MiB)
    ok = {md5(a), md5(b)}
    assert raw_put(daemon, sandbox, "atomic.bin", a)[0] == 200
    seen, bad, stop = [], [], threading.Event()

    def reader():
        while not stop.is_set():
            out = sh(daemon, sandbox, "md5sum /workspace/atomic.bin")["stdout"].split()
            (seen if out and out[0] in ok else bad).append(out)

    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(6):
            st, j = raw_put(daemon, sandbox, "atomic.bin", b if i % 2 == 0 else a)
            assert st == 200, j
    finally:
        stop.set()
        t.join()
    assert not bad, bad[:3]
    assert len(seen) >= 3


def test_concurrent_writers_leave_one_whole_file(daemon, sandbox):
    blobs = [bytes([65 + i]) * (2 * MiB + i) for i in range(8)]
    results = []

    def writer(blob):
        results.append(raw_put(daemon, sandbox, "contended", blob)[0])

    ts = [threading.Thread(target=writer, args=(b,)) for b in blobs]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert results == [200] * 8
    final = raw_get(daemon, sandbox, "contended")[1]
    assert final in blobs
    # No temporary files stay behind.
    assert sh(daemon, sandbox, "ls -a /workspace")["stdout"].split() == [".", "..", "contended"]


def test_abandoned_upload_leaves_old_content(daemon, sandbox):
    raw_put(daemon, sandbox, "keep.txt", b"old content")
    c = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=60)
    c.putrequest("PUT", raw_url(sandbox, "keep.txt"))
    c.putheader("Content-Length", str(10 * MiB))
    c.endheaders()
    c.send(b"n" * MiB)
    time.sleep(0.5)
    c.sock.close()
    time.sleep(1)
    assert raw_get(daemon, sandbox, "keep.txt")[1] == b"old content"
    # The sandbox is not left with a stray slot or temporary file.
    assert sh(daemon, sandbox, "ls -a /workspace")["stdout"].split() == [".", "..", "keep.txt"]


def test_slow_transfer_holds_off_the_idle_timeout(make_daemon):
    d = make_daemon(config={"stopped_retention_secs": 60}).start()
    sid = d.create(idle_timeout_secs=2)

    def slow():
        for _ in range(8):
            yield b"x" * 1000
            time.sleep(0.5)

    st, j = raw_put(d, sid, "slow", slow())
    assert st == 200 and j["size"] == 8000, j
    assert d.request("GET", f"/sandbox/sandboxes/{sid}").json["status"] == "running"
    assert raw_get(d, sid, "slow")[1] == b"x" * 8000


def test_disk_cap_is_413_and_sandbox_survives(make_daemon):
    d = make_daemon(config={"default_disk_mb": 16})
    d.start()
    sid = d.create()
    assert raw_put(d, sid, "old.txt", b"old and intact")[0] == 200
    st, j = raw_put(d, sid, "old.txt", os.urandom(32 * MiB))
    assert st == 413 and j["code"] in ("ENOSPC", "EDQUOT", "EFBIG"), j
    assert raw_get(d, sid, "old.txt")[1] == b"old and intact"
    # The JSON route too.
    r = files(d, sid, "upload", path="big", content=base64.b64encode(b"z" * 20 * MiB).decode())
    assert r.status == 413, r
    # The space was given back: the sandbox still writes and runs.
    assert sh(d, sid, "echo alive > /workspace/after && cat /workspace/after")["stdout"] == "alive\n"
    assert raw_put(d, sid, "small", os.urandom(4 * MiB))[0] == 200
    assert sh(d, sid, "ls -a /workspace")["stdout"].split() == [".", "..", "after", "old.txt", "small"]


def test_one_gib_up_and_down_in_flat_memory(make_daemon):
    d = make_daemon(config={"default_disk_mb": 1600, "max_concurrent_sandboxes": 2})
    d.start()
    sid = d.create(memory_mb=2048)
    pid = d.daemon_pid()
    chunk = os.urandom(MiB)
    total = 1024
    # Warm up, so that thread stacks and buffers are counted in the baseline.
    raw_put(d, sid, "warm", chunk * 8)
    raw_get(d, sid, "warm")
    base = vm_rss_kb(pid)
    peak = [base]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], vm_rss_kb(pid))
            time.sleep(0.05)

    t = threading.Thread(target=sample)
    t.start()
    try:
        t0 = time.time()
        st, j = raw_put(d, sid, "huge.bin", (chunk for _ in range(total)))
        up = time.time() - t0
        assert st == 200 and j["size"] == total * MiB, j
        c = http.client.HTTPConnection("127.0.0.1", d.port, timeout=600)
        c.request("GET", raw_url(sid, "huge.bin"))
        r = c.getresponse()
        assert r.status == 200
        h, n, t0 = hashlib.md5(), 0, time.time()
        while True:
            b = r.read(4 * MiB)
            if not b:
                break
            h.update(b)
            n += len(b)
        down = time.time() - t0
        c.close()
    finally:
        stop.set()
        t.join()
    assert n == total * MiB
    expect = hashlib.md5()
    for _ in range(total):
        expect.update(chunk)
    assert h.hexdigest() == expect.hexdigest()
    grew_mb = (peak[0] - base) / 1024
    print(f"1 GiB up {total / up:.0f} MB/s, down {total / down:.0f} MB/s, daemon RSS grew {grew_mb:.1f} MB")
    assert grew_mb < 30, grew_mb


# ---- escapes ----


@pytest.fixture
def host_marker():
    token = "HOST-SECRET-" + secrets.token_hex(8)
    path = f"/tmp/sbx-host-marker-{secrets.token_hex(4)}"
    with open(path, "w") as f:
        f.write(token)
    yield path, token
    os.unlink(path)


def assert_no_leak(resp_or_bytes, token):
    text = resp_or_bytes if isinstance(resp_or_bytes, (bytes, str)) else resp_or_bytes.raw
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    assert token not in text


def test_symlink_to_shadow_and_host_paths_stays_inside(daemon, sandbox, host_marker):
    path, token = host_marker
    sh(daemon, sandbox, f"ln -s /etc/shadow /workspace/shadow; ln -s {path} /workspace/marker")
    with open("/etc/shadow") as f:
        host_shadow = f.read()
    r = files(daemon, sandbox, "read", path="shadow")
    assert r.status == 404 or (r.status == 200 and r.json != host_shadow), r
    if host_shadow.strip():
        assert host_shadow.splitlines()[0] not in r.raw
    for op in ("read", "download"):
        r = files(daemon, sandbox, op, path="marker")
        assert r.status == 404, r
        assert_no_leak(r, token)
    st, body, _ = raw_get(daemon, sandbox, "marker")
    assert st == 404
    assert_no_leak(body, token)
    r = files(daemon, sandbox, "read", path=path)
    assert r.status == 404
    # Writing through the symlink creates the file inside; the host file is untouched.
    assert files(daemon, sandbox, "write", path="marker", content="overwritten").status in (200, 404)
    assert raw_put(daemon, sandbox, path, b"inside")[0] == 200
    with open(path) as f:
        assert f.read() == token


def test_proc_1_root_stays_inside(daemon, sandbox, host_marker):
    path, token = host_marker
    sh(daemon, sandbox, f"ln -s /proc/1/root{path} /workspace/p1; ln -s /proc/1/root/ /workspace/p1root")
    # The agent (PID 1) is non-dumpable (docs/security.md: ptrace of the agent), so its
    # /proc/1/root is refused (403) to everything inside; /proc/self/root is the sandbox's
    # own root (404: the host file is not there).
    for p in ("p1", f"/proc/1/root{path}", f"/proc/self/root{path}", f"p1root{path}"):
        r = files(daemon, sandbox, "read", path=p)
        assert r.status == 404 or (r.status == 403 and "self" not in p), (p, r)
        assert_no_leak(r, token)
    r = files(daemon, sandbox, "list", path="/proc/self/root/tmp")
    assert r.status == 200 and all(e["name"] != os.path.basename(path) for e in r.json)
    # /proc/self/root is the sandbox's own root: a file placed there by the sandbox reads back.
    sh(daemon, sandbox, f"echo inside > {path}")
    assert files(daemon, sandbox, "read", path=f"/proc/self/root{path}").json == "inside\n"


def test_dotdot_paths_resolve_inside(daemon, sandbox, host_marker):
    path, token = host_marker
    name = "sbx-dotdot-" + secrets.token_hex(4)
    r = files(daemon, sandbox, "write", path=f"../../../../../../tmp/{name}", content="in")
    assert r.status == 200, r
    assert sh(daemon, sandbox, f"cat /tmp/{name}")["stdout"] == "in"
    assert not os.path.exists(f"/tmp/{name}")
    r = files(daemon, sandbox, "read", path="../../../../.." + path)
    assert r.status == 404
    assert_no_leak(r, token)
    r = files(daemon, sandbox, "read", path="/workspace/../../../etc/passwd")
    assert r.status == 200 and r.json.startswith("root:x:0:0:root:/root:/bin/sh")


def test_swapped_symlink_never_yields_host_content(daemon, sandbox, host_marker):
    path, token = host_marker
    rel = path.lstrip("/")
    # Inside: /workspace/swap flips between a directory holding the same relative path and
    # a symlink to /; the API reads through it while it flips.
    script = (f"mkdir -p /workspace/real/{os.path.dirname(rel)} && echo inside > /workspace/real/{rel}; "
              "i=0; while [ $i -lt 20000 ]; do ln -sfn /workspace/real /workspace/swap; "
              "rm -f /workspace/swap; ln -sfn / /workspace/swap; rm -f /workspace/swap; i=$((i+1)); done")
    r = daemon.request("POST", f"/sandbox/sandboxes/{sandbox}/exec/background", {"command": script})
    assert r.status == 200, r
    outcomes = {}
    for i in range(50):
        r = files(daemon, sandbox, "read", path=f"/workspace/swap/{rel}")
        assert_no_leak(r, token)
        outcomes[r.status] = outcomes.get(r.status, 0) + 1
        st, body, _ = raw_get(daemon, sandbox, f"/workspace/swap/{rel}")
        assert_no_leak(body, token)
        if r.status == 200:
            assert r.json == "inside\n"
    assert set(outcomes) <= {200, 404}, outcomes
