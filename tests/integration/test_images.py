"""OCI images: pull from a real registry (Debian's docker-registry) and from small stub
registries written here, unpack safely, boot and exec, and the image APIs."""
import gzip
import hashlib
import http.server
import io
import json
import os
import pty
import select
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import threading
import time
import urllib.request
import uuid

import pytest

from conftest import CLI, free_port, make_busybox_rootfs

REGISTRY_BIN = shutil.which("docker-registry") or "/usr/bin/docker-registry"
if not os.path.exists(REGISTRY_BIN):
    pytest.skip("docker-registry is not installed (apt-get install docker-registry)", allow_module_level=True)

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
LAYER_GZ = "application/vnd.oci.image.layer.v1.tar+gzip"


def sha(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def tar_layer(add):
    """A gzip'ed tar layer; add(tf) adds the entries."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        add(tf)
    return gzip.compress(buf.getvalue(), mtime=0)


def add_file(tf, name, data=b"", mode=0o644, uid=0, gid=0):
    ti = tarfile.TarInfo(name)
    ti.size, ti.mode, ti.uid, ti.gid = len(data), mode, uid, gid
    tf.addfile(ti, io.BytesIO(data))


def add_special(tf, name, type_, linkname="", mode=0o755):
    ti = tarfile.TarInfo(name)
    ti.type, ti.linkname, ti.mode = type_, linkname, mode
    tf.addfile(ti)


def busybox_layer():
    d = tempfile.mkdtemp()
    make_busybox_rootfs(d)
    data = tar_layer(lambda tf: tf.add(d, arcname="."))
    shutil.rmtree(d)
    return data


class Image:
    def __init__(self, layers, arch="amd64", config=None):
        self.layers = layers
        diff_ids = [sha(gzip.decompress(l)) for l in layers]
        self.config = json.dumps({"architecture": arch, "os": "linux", "created": "2024-01-02T03:04:05Z",
                                  "rootfs": {"type": "layers", "diff_ids": diff_ids},
                                  "config": config or {}}).encode()
        self.manifest = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(self.config),
                       "size": len(self.config)},
            "layers": [{"mediaType": LAYER_GZ, "digest": sha(l), "size": len(l)} for l in layers],
        }).encode()

    def blobs(self):
        return [self.config] + self.layers


class Registry:
    """Debian's docker-registry on a free loopback port with its own storage."""

    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="registry-")
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        cfg = os.path.join(self.tmp, "config.yml")
        with open(cfg, "w") as f:
            f.write(f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {self.tmp}/data\n"
                    f"  delete:\n    enabled: true\nhttp:\n  addr: {self.host}\n")
        self.proc = subprocess.Popen([REGISTRY_BIN, "serve", cfg], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.time() + 15
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1)
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("docker-registry did not start")

    def _req(self, method, url, data=None, ctype=None):
        if not url.startswith("http"):
            url = f"http://{self.host}{url}"
        req = urllib.request.Request(url, data=data, method=method)
        if ctype:
            req.add_header("Content-Type", ctype)
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers)

    def push_blob(self, repo, data):
        _, h = self._req("POST", f"/v2/{repo}/blobs/uploads/")
        loc = h["Location"]
        loc += ("&" if "?" in loc else "?") + "digest=" + sha(data)
        self._req("PUT", loc, data, "application/octet-stream")

    def push(self, repo, tag, img):
        for b in img.blobs():
            self.push_blob(repo, b)
        self._req("PUT", f"/v2/{repo}/manifests/{tag}", img.manifest, OCI_MANIFEST)
        return f"{self.host}/{repo}:{tag}"

    def push_index(self, repo, tag, entries):
        manifests = []
        for arch, img in entries:
            for b in img.blobs():
                self.push_blob(repo, b)
            self._req("PUT", f"/v2/{repo}/manifests/{sha(img.manifest)}", img.manifest, OCI_MANIFEST)
            manifests.append({"mediaType": OCI_MANIFEST, "digest": sha(img.manifest), "size": len(img.manifest),
                              "platform": {"architecture": arch, "os": "linux"}})
        index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}).encode()
        self._req("PUT", f"/v2/{repo}/manifests/{tag}", index, OCI_INDEX)
        return f"{self.host}/{repo}:{tag}"

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.tmp, ignore_errors=True)


class Stub:
    """A minimal registry serving one image, with knobs: a corrupted blob, bearer-token
    auth, slow blobs, and counters of blob GETs."""

    def __init__(self, img, repo="stub/img", tag="v1"):
        self.img, self.repo, self.tag = img, repo, tag
        self.corrupt = False
        self.token = None
        self.slow = 0.0
        self.gets = {}
        self.token_requests = 0
        stub = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def send(self, code, body=b"", headers=None):
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    if stub.slow and len(body) > 4096:
                        for i in range(0, len(body), 4096):
                            self.wfile.write(body[i:i + 4096])
                            self.wfile.flush()
                            time.sleep(stub.slow)
                    else:
                        self.wfile.write(body)
                except OSError:
                    pass

            def do_GET(self):
                if self.path.startswith("/token"):
                    stub.token_requests += 1
                    return self.send(200, json.dumps({"token": stub.token}).encode(),
                                     {"Content-Type": "application/json"})
                if stub.token and self.headers.get("Authorization") != f"Bearer {stub.token}":
                    return self.send(401, b'{"errors":[]}', {
                        "WWW-Authenticate": f'Bearer realm="http://{stub.host}/token",service="stub",'
                                            f'scope="repository:{stub.repo}:pull"'})
                base = f"/v2/{stub.repo}/"
                if self.path == "/v2/":
                    return self.send(200, b"{}")
                if self.path in (base + "manifests/" + stub.tag, base + "manifests/" + sha(stub.img.manifest)):
                    return self.send(200, stub.img.manifest, {"Content-Type": OCI_MANIFEST,
                                                              "Docker-Content-Digest": sha(stub.img.manifest)})
                for b in stub.img.blobs():
                    if self.path == base + "blobs/" + sha(b):
                        stub.gets[sha(b)] = stub.gets.get(sha(b), 0) + 1
                        if stub.corrupt and b is not stub.img.config:
                            b = b[:-10] + b"0123456789"
                        return self.send(200, b, {"Content-Type": "application/octet-stream"})
                self.send(404, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}')

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.srv.daemon_threads = True
        self.host = f"127.0.0.1:{self.srv.server_address[1]}"
        self.ref = f"{self.host}/{repo}:{tag}"
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()


@pytest.fixture(scope="module")
def registry():
    r = Registry()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def bb_layer():
    return busybox_layer()


def image_daemon(make_daemon, hosts, refs, **extra):
    cfg = {"insecure_registries": list(hosts), "image_allowlist": ["busybox"] + list(refs)}
    cfg.update(extra)
    return make_daemon(config=cfg).start()


def pull(d, ref, timeout=120):
    return d.request("POST", "/sandbox/images/pull", {"image": ref}, timeout=timeout)


def sh(d, sid, cmd):
    r = d.exec(sid, cmd)
    assert r.status == 200, r
    return r.json


def test_pull_boot_and_exec_busybox(registry, bb_layer, make_daemon):
    ref = registry.push("tests/busybox", "1", Image([bb_layer]))
    d = image_daemon(make_daemon, [registry.host], [ref])
    r = pull(d, ref)
    assert r.status == 200, r
    assert r.json["image"] == ref and r.json["layers"] == 1 and r.json["id"].startswith("sha256:")
    sid = d.create(ref)
    out = sh(d, sid, "busybox echo hello-from-oci; ls /bin/busybox")
    assert out["stdout"] == "hello-from-oci\n/bin/busybox\n"
    # A second create uses the cache: no second pull, fast.
    t0 = time.time()
    sid2 = d.create(ref)
    assert time.time() - t0 < 5
    d.delete(sid2)
    d.delete(sid)


def test_auto_install_pulls_on_first_create(registry, bb_layer, make_daemon):
    ref = registry.push("tests/auto", "1", Image([bb_layer]))
    d = image_daemon(make_daemon, [registry.host], [ref, "myapp"], custom_images={"myapp": ref})
    sid = d.create("myapp")
    assert sh(d, sid, "echo ok")["stdout"] == "ok\n"
    assert any(i["image"] == ref for i in d.request("GET", "/sandbox/images").json["images"])


def test_auto_install_false_is_s101_with_pull_command(registry, bb_layer, make_daemon):
    ref = registry.push("tests/noauto", "1", Image([bb_layer]))
    d = image_daemon(make_daemon, [registry.host], [ref], auto_install=False)
    r = d.request("POST", "/sandbox/sandboxes", {"image": ref})
    assert r.status == 503 and r.json["code"] == "S101", r
    assert f"sandbox image pull {ref}" in r.json["error"]
    assert pull(d, ref).status == 200
    d.delete(d.create(ref))


def test_allowlist_needs_exact_reference_and_env_patterns(registry, bb_layer, make_daemon):
    ref = registry.push("tests/allow", "1", Image([bb_layer]))
    d = image_daemon(make_daemon, [registry.host], [])
    r = d.request("POST", "/sandbox/sandboxes", {"image": ref})
    assert r.status == 403 and r.json["code"] == "S100", r
    d2 = make_daemon(config={"insecure_registries": [registry.host], "image_allowlist": [ref]},
                     env={"III_ALLOWED_IMAGES": "docker.io/*"}).start()
    r = d2.request("POST", "/sandbox/sandboxes", {"image": ref})
    assert r.status == 403 and r.json["code"] == "S100", r


def test_whiteouts_and_opaque_dirs(registry, bb_layer, make_daemon):
    def lower(tf):
        add_file(tf, "data/keep.txt", b"keep")
        add_file(tf, "data/gone.txt", b"gone")
        add_special(tf, "data/gonedir", tarfile.DIRTYPE)
        add_file(tf, "data/gonedir/inner", b"x")
        add_special(tf, "opq", tarfile.DIRTYPE)
        add_file(tf, "opq/old1", b"old")
        add_special(tf, "opq/sub", tarfile.DIRTYPE)
        add_file(tf, "opq/sub/old2", b"old")
        add_file(tf, "modes/suid", b"#!", mode=0o4755, uid=1234, gid=2345)

    def upper(tf):
        add_file(tf, "data/.wh.gone.txt")
        add_file(tf, "data/.wh.gonedir")
        add_file(tf, "opq/new1", b"new")  # before the marker: must survive it
        add_file(tf, "opq/.wh..wh..opq")
        add_special(tf, "opq/sub", tarfile.DIRTYPE)
        add_file(tf, "opq/sub/new2", b"new")

    ref = registry.push("tests/layers", "1", Image([bb_layer, tar_layer(lower), tar_layer(upper)]))
    d = image_daemon(make_daemon, [registry.host], [ref])
    assert pull(d, ref).status == 200
    sid = d.create(ref)
    out = sh(d, sid, "cd /; find data opq | sort; stat -c '%a %u %g' modes/suid")["stdout"]
    assert out.split("\n")[:-2] == ["data", "data/keep.txt", "opq", "opq/new1", "opq/sub", "opq/sub/new2"], out
    # Ownership and set-id bits survive (uids appear shifted into the sandbox's range only
    # if unmapped; inside, the mapping shows the layer's ids).
    assert out.split("\n")[-2] == "4755 1234 2345", out


def test_multi_arch_index_picks_host_arch(registry, bb_layer, make_daemon):
    marker = lambda arch: tar_layer(lambda tf: add_file(tf, "arch.txt", arch.encode()))
    amd = Image([bb_layer, marker("amd64")], "amd64")
    arm = Image([bb_layer, marker("arm64")], "arm64")
    ref = registry.push_index("tests/multi", "1", [("arm64", arm), ("amd64", amd)])
    only_arm = registry.push_index("tests/armonly", "1", [("arm64", arm)])
    d = image_daemon(make_daemon, [registry.host], [ref, only_arm])
    r = pull(d, ref)
    assert r.status == 200 and r.json["architecture"] == "amd64", r
    sid = d.create(ref)
    assert sh(d, sid, "cat /arch.txt")["stdout"] == "amd64"
    r = d.request("POST", "/sandbox/sandboxes", {"image": only_arm})
    assert r.json["code"] == "S102" and "no linux/amd64 manifest" in r.json["error"], r
    assert "arm64" in r.json["error"]


def test_malicious_layer_cannot_escape(registry, bb_layer, make_daemon):
    tag = uuid.uuid4().hex[:8]
    host_dir = f"/tmp/escape-target-{tag}"
    os.makedirs(host_dir)

    def evil(tf):
        add_file(tf, f"../../../../tmp/dotdot-{tag}", b"escaped")
        add_file(tf, f"/tmp/abs-{tag}", b"escaped")
        add_special(tf, "evil", tarfile.SYMTYPE, host_dir)
        add_file(tf, "evil/pwned", b"escaped")
        add_special(tf, "up", tarfile.SYMTYPE, "../../../../../")
        add_file(tf, f"up/tmp/viaup-{tag}", b"escaped-or-inside")
        add_special(tf, "shadow", tarfile.LNKTYPE, "/etc/shadow")
        add_special(tf, "shadow2", tarfile.LNKTYPE, "../../../../etc/shadow")
        add_special(tf, "devnode", tarfile.CHRTYPE)
        add_file(tf, "ok.txt", b"fine")

    ref = registry.push("tests/evil", "1", Image([bb_layer, tar_layer(evil)]))
    d = image_daemon(make_daemon, [registry.host], [ref])
    try:
        assert pull(d, ref).status == 200
        for p in (f"/tmp/dotdot-{tag}", f"/tmp/abs-{tag}", f"{host_dir}/pwned", f"/tmp/viaup-{tag}"):
            assert not os.path.exists(p), p
        sid = d.create(ref)
        out = sh(d, sid, "cat /ok.txt; ls /shadow /shadow2 /devnode 2>&1; cat /tmp/viaup-* 2>&1; true")["stdout"]
        assert out.startswith("fine"), out
        assert "No such file" in out and out.count("No such file") >= 3, out
        # The symlinked parent resolved inside the image (as a chroot would): harmless.
        assert "escaped-or-inside" in out
    finally:
        shutil.rmtree(host_dir, ignore_errors=True)


def test_digest_mismatch_is_rejected_and_retried(bb_layer, make_daemon):
    img = Image([bb_layer])
    stub = Stub(img)
    stub.corrupt = True
    try:
        d = image_daemon(make_daemon, [stub.host], [stub.ref])
        r = pull(d, stub.ref)
        assert r.status == 503 and r.json["code"] == "S102" and "verification" in r.json["error"], r
        assert stub.gets[sha(bb_layer)] >= 2  # retried
        assert d.request("GET", "/sandbox/images").json["images"] == []
        r = d.request("POST", "/sandbox/sandboxes", {"image": stub.ref})
        assert r.json["code"] == "S102", r
        stub.corrupt = False
        assert pull(d, stub.ref).status == 200
    finally:
        stub.stop()


def test_bearer_token_challenge(bb_layer, make_daemon):
    stub = Stub(Image([bb_layer]))
    stub.token = "tok-" + uuid.uuid4().hex
    try:
        d = image_daemon(make_daemon, [stub.host], [stub.ref])
        r = pull(d, stub.ref)
        assert r.status == 200, r
        assert stub.token_requests >= 1
        sid = d.create(stub.ref)
        assert sh(d, sid, "echo authed")["stdout"] == "authed\n"
    finally:
        stub.stop()


def test_concurrent_pulls_fetch_once(bb_layer, make_daemon):
    stub = Stub(Image([bb_layer]))
    stub.slow = 0.002
    try:
        d = image_daemon(make_daemon, [stub.host], [stub.ref])
        results = []
        ts = [threading.Thread(target=lambda: results.append(pull(d, stub.ref))) for _ in range(4)]
        [t.start() for t in ts]
        [t.join() for t in ts]
        assert [r.status for r in results] == [200] * 4, results
        assert stub.gets[sha(bb_layer)] == 1
    finally:
        stub.stop()


def test_interrupted_pull_leaves_nothing_bootable(bb_layer, make_daemon, busybox_rootfs):
    stub = Stub(Image([bb_layer]))
    stub.slow = 0.01
    try:
        d = image_daemon(make_daemon, [stub.host], [stub.ref], auto_install=False)
        def doomed_pull():
            try:
                pull(d, stub.ref)
            except OSError:
                pass  # the daemon dies under it

        t = threading.Thread(target=doomed_pull)
        t.start()
        deadline = time.time() + 20
        while not stub.gets and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait()
        t.join()
        stub.slow = 0
        d2 = make_daemon(config={"insecure_registries": [stub.host], "image_allowlist": [stub.ref],
                                 "auto_install": False}, state_dir=d.state_dir).start()
        assert d2.request("GET", "/sandbox/images").json["images"] == []
        r = d2.request("POST", "/sandbox/sandboxes", {"image": stub.ref})
        assert r.json["code"] == "S101", r
        assert pull(d2, stub.ref).status == 200
        d2.delete(d2.create(stub.ref))
    finally:
        stub.stop()


def test_v1_images_shapes_and_delete_in_use(registry, bb_layer, make_daemon):
    ref = registry.push("tests/v1img", "2", Image([bb_layer]))
    d = image_daemon(make_daemon, [registry.host], [ref])
    r = d.request("GET", "/v1/images")
    assert r.status == 200 and r.json == {"images": [], "message": "no images found"}
    r = d.request("POST", "/v1/images/pull", {})
    assert r.status == 400 and r.json["code"] == "BAD_REQUEST"
    r = d.request("POST", "/v1/images/pull", {"image": ref})
    assert r.status == 200 and r.json == {"status": "pulled", "image": ref}, r
    imgs = d.request("GET", "/v1/images").json["images"]
    assert len(imgs) == 1 and set(imgs[0]) == {"id", "tags", "size"} and imgs[0]["tags"] == [ref]
    iid = imgs[0]["id"]
    r = d.request("GET", f"/v1/images/{iid}")
    assert r.status == 200 and set(r.json) == {"id", "tags", "size", "created", "architecture", "os"}
    assert r.json["os"] == "linux" and r.json["architecture"] == "amd64"
    assert d.request("GET", "/v1/images/v1img:2").json["id"] == iid  # name:tag
    assert d.request("GET", "/v1/images/sha256:" + "0" * 64).status == 404
    sid = d.create(ref)
    r = d.request("DELETE", f"/v1/images/{iid}")
    assert r.status == 409 and r.json["code"] == "CONFLICT", r
    r = d.request("DELETE", "/sandbox/images?image=" + urllib.request.quote(ref))
    assert r.status == 409, r
    d.delete(sid)
    r = d.request("DELETE", f"/v1/images/{iid}")
    assert r.status == 204 and r.raw == ""
    assert d.request("GET", "/v1/images").json["images"] == []
    r = d.request("POST", "/sandbox/images/gc")
    assert r.status == 200 and r.json["freedBlobs"] >= 2, r


def test_cli_image_commands(registry, bb_layer, make_daemon):
    ref = registry.push("tests/cli", "1", Image([bb_layer]))
    d = image_daemon(make_daemon, [registry.host], [ref])
    r = d.cli("image", "pull", ref)
    assert r.returncode == 0, r
    r = d.cli("image", "ls")
    assert r.returncode == 0 and ref.encode() in r.stdout, r
    r = d.cli("image", "inspect", ref)
    assert r.returncode == 0 and json.loads(r.stdout)["image"] == ref, r
    r = d.cli("image", "rm", ref)
    assert r.returncode == 0, r
    assert ref.encode() not in d.cli("image", "ls").stdout


# ---- image config applied to sandboxes ----

def test_image_env_and_workdir_apply_to_sandboxes(registry, bb_layer, make_daemon):
    cfg = {"Env": ["PATH=/opt/img/bin:/bin:/usr/bin", "GREETING=hello", "FOO=from-image"],
           "WorkingDir": "/srv/app", "User": "65534", "Entrypoint": ["/bin/false"]}
    ref = registry.push("tests/config", "1", Image([bb_layer], config=cfg))
    d = image_daemon(make_daemon, [registry.host], [ref])
    sid = d.create(ref, env={"FOO": "from-request"})
    out = sh(d, sid, "echo $GREETING $FOO $PATH; pwd; id -u")["stdout"]
    assert out == "hello from-request /opt/img/bin:/bin:/usr/bin\n/srv/app\n0\n", out
    sid2 = d.create(ref, workdir="/tmp")
    assert sh(d, sid2, "pwd")["stdout"] == "/tmp\n"
    # Images without a config keep the daemon's defaults.
    sid3 = d.create("busybox")
    assert sh(d, sid3, "pwd; echo ${GREETING:-unset}")["stdout"] == "/workspace\nunset\n"


# ---- pull progress ----

def test_pull_progress_stream_reports_every_layer(registry, bb_layer, make_daemon):
    big = tar_layer(lambda tf: add_file(tf, "big.bin", os.urandom(3 << 20)))
    small = tar_layer(lambda tf: add_file(tf, "small.txt", b"small"))
    img = Image([bb_layer, big, small])
    ref = registry.push("tests/progress", "1", img)
    d = image_daemon(make_daemon, [registry.host], [ref])
    r = d.request("POST", "/sandbox/images/pull?progress=true", {"image": ref})
    assert r.status == 200 and r.headers["Content-Type"] == "application/x-ndjson", r
    lines = [json.loads(l) for l in r.raw.splitlines()]
    final = lines[-1]
    assert final["status"] == "ready" and final["digest"] == sha(img.manifest) and final["layers"] == 3, final
    seen = {}
    for l in lines[:-1]:
        assert set(l) == {"layer", "index", "count", "done", "total"} and l["count"] == 3, l
        seen[l["layer"]] = l
    assert set(seen) == {sha(x) for x in img.layers}
    assert all(v["done"] == v["total"] == len(img.layers[v["index"]]) for v in seen.values()), seen
    # Several progress lines for the 3 MiB layer: it is reported as it arrives.
    assert sum(1 for l in lines if l.get("layer") == sha(big)) >= 2
    # Errors end the stream with an error line; the plain pull still answers JSON.
    r = d.request("POST", "/sandbox/images/pull?progress=true", {"image": f"{registry.host}/tests/absent:1"})
    assert r.status == 200 and json.loads(r.raw.splitlines()[-1])["code"] == "S102", r
    assert pull(d, ref).json["digest"] == sha(img.manifest)


def run_on_terminal(args, env, timeout=120):
    """Runs args with stderr on a pseudo-terminal; returns (rc, stdout, terminal output)."""
    master, slave = pty.openpty()
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=slave, env=env)
    os.close(slave)
    term = b""
    deadline = time.time() + timeout
    while time.time() < deadline:
        r, _, _ = select.select([master], [], [], 0.2)
        if r:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                chunk = b""
            if not chunk and p.poll() is not None:
                break
            term += chunk
        elif p.poll() is not None:
            break
    out = p.stdout.read()
    p.wait(10)
    os.close(master)
    return p.returncode, out, term


def test_cli_pull_draws_bars_on_a_terminal_and_is_quiet_in_pipes(registry, bb_layer, make_daemon):
    layers = [bb_layer, tar_layer(lambda tf: add_file(tf, "a.bin", os.urandom(1 << 20))),
              tar_layer(lambda tf: add_file(tf, "b.txt", b"b"))]
    img = Image(layers)
    ref = registry.push("tests/bars", "1", img)
    d = image_daemon(make_daemon, [registry.host], [ref])
    env = dict(os.environ, SANDBOXD_URL=d.url)
    rc, out, term = run_on_terminal([CLI, "image", "pull", ref], env)
    assert rc == 0, term
    assert out.decode() == sha(img.manifest) + "\n"
    text = term.decode(errors="replace")
    for l in layers:
        assert hashlib.sha256(l).hexdigest()[:12] in text, text
    assert "\x1b[" in text and "done" in text and "3 layers" in text, text
    d.cli("image", "rm", ref)
    r = d.cli("image", "pull", ref)
    assert r.returncode == 0 and r.stdout.decode() == sha(img.manifest) + "\n" and r.stderr == b"", r


# ---- import ----

def write_layout(path, img, annotations=None, corrupt=None):
    """An OCI image layout directory for img; corrupt=i alters layer i's bytes in place."""
    os.makedirs(os.path.join(path, "blobs", "sha256"), exist_ok=True)
    for i, b in enumerate(img.blobs() + [img.manifest]):
        data = b
        if corrupt is not None and b is img.layers[corrupt]:
            data = b[:-4] + b"XXXX"
        with open(os.path.join(path, "blobs", "sha256", hashlib.sha256(b).hexdigest()), "wb") as f:
            f.write(data)
    desc = {"mediaType": OCI_MANIFEST, "digest": sha(img.manifest), "size": len(img.manifest)}
    if annotations:
        desc["annotations"] = annotations
    with open(os.path.join(path, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [desc]}, f)
    with open(os.path.join(path, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    return path


def tar_dir(path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        tf.add(path, arcname=".")
    return buf.getvalue()


def docker_archive(layers, repo_tag, config=None, bad_diff_id=False):
    """A `docker save` tarball: manifest.json, the config, one dir per layer; a repeated
    layer is a symlink to the first copy, as docker writes it."""
    diff_ids = [sha(l) for l in layers]
    if bad_diff_id:
        diff_ids[0] = sha(b"something else")
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": config or {},
                      "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    cfg_name = hashlib.sha256(cfg).hexdigest() + ".json"
    buf = io.BytesIO()
    paths, first = [], {}
    with tarfile.open(fileobj=buf, mode="w") as tf:
        add_file(tf, cfg_name, cfg)
        for i, l in enumerate(layers):
            d = f"{i:02d}" + hashlib.sha256(l).hexdigest()[:20]
            add_special(tf, d, tarfile.DIRTYPE)
            if sha(l) in first:
                add_special(tf, f"{d}/layer.tar", tarfile.SYMTYPE, f"../{first[sha(l)]}/layer.tar")
            else:
                add_file(tf, f"{d}/layer.tar", l)
                first[sha(l)] = d
            paths.append(f"{d}/layer.tar")
        manifest = [{"Config": cfg_name, "RepoTags": [repo_tag], "Layers": paths}]
        add_file(tf, "manifest.json", json.dumps(manifest).encode())
    return buf.getvalue()


def import_http(d, data, name=None):
    q = "?name=" + urllib.request.quote(name, safe="") if name else ""
    return d.request("POST", "/sandbox/images/import" + q, raw=data,
                     headers={"Content-Type": "application/octet-stream"}, timeout=120)


def test_import_oci_layout_directory_and_tarball_via_cli(bb_layer, make_daemon, tmp_path):
    marker = tar_layer(lambda tf: add_file(tf, "marker.txt", b"from-layout"))
    img = Image([bb_layer, marker], config={"WorkingDir": "/srv", "Env": ["FROM_LAYOUT=1"]})
    layout = write_layout(str(tmp_path / "layout"), img,
                          {"org.opencontainers.image.ref.name": "localhost:5000/layout/app:1"})
    named = "127.0.0.1:5999/imported/app:7"
    d = image_daemon(make_daemon, [], ["localhost:5000/layout/app:1", named], auto_install=False)
    # A directory: the CLI packs it on the fly, under the name the layout gives.
    r = d.cli("image", "import", layout)
    assert r.returncode == 0 and r.stdout.decode() == sha(img.manifest) + "\n", r
    sid = d.create("localhost:5000/layout/app:1")
    assert sh(d, sid, "cat /marker.txt; pwd; echo $FROM_LAYOUT")["stdout"] == "from-layout/srv\n1\n"
    # A tarball of the same layout, sent as is, under a name given on the command line.
    tarball = tmp_path / "layout.tar"
    tarball.write_bytes(tar_dir(layout))
    r = d.cli("image", "import", str(tarball), "--name", named)
    assert r.returncode == 0, r
    info = json.loads(d.cli("image", "inspect", named).stdout)
    assert info["digest"] == sha(img.manifest) and info["layers"] == 2 and info["id"] == sha(img.config)
    sid2 = d.create(named)
    assert sh(d, sid2, "cat /marker.txt")["stdout"] == "from-layout"
    # A layout that does not name its image needs --name.
    bare = write_layout(str(tmp_path / "bare"), img)
    r = d.cli("image", "import", bare)
    assert r.returncode == 1 and b"give it a name" in r.stderr, r


def test_import_docker_save_tarball_via_http(bb_layer, make_daemon):
    base = gzip.decompress(bb_layer)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        add_file(tf, "etc/motd", b"docker-archive\n")
    extra = buf.getvalue()
    data = docker_archive([base, extra, base], "dsave:1", {"Env": ["A=from-image", "B=b"], "WorkingDir": "/app"})
    d = image_daemon(make_daemon, [], ["dsave:1"], auto_install=False)
    r = import_http(d, data)
    assert r.status == 200 and r.json["image"] == "docker.io/library/dsave:1" and r.json["layers"] == 3, r
    assert any(i["image"] == "docker.io/library/dsave:1" for i in d.request("GET", "/sandbox/images").json["images"])
    sid = d.create("dsave:1", env={"B": "request"})
    out = sh(d, sid, "cat /etc/motd; pwd; echo $A $B; ls /bin/busybox")["stdout"]
    assert out == "docker-archive\n/app\nfrom-image request\n/bin/busybox\n", out
    # gzip-compressed tarballs are accepted too; importing again is idempotent.
    r = import_http(d, gzip.compress(data), name="dsave:1")
    assert r.status == 200, r


def test_import_rejects_digest_mismatch(bb_layer, make_daemon, tmp_path):
    d = image_daemon(make_daemon, [], ["bad:1"])
    img = Image([bb_layer])
    bad = write_layout(str(tmp_path / "bad"), img, corrupt=0)
    r = import_http(d, tar_dir(bad), name="bad:1")
    assert r.status == 400 and r.json["code"] == "S001" and "does not match its digest" in r.json["error"], r
    r = d.cli("image", "import", bad, "--name", "bad:1")
    assert r.returncode == 1 and b"does not match its digest" in r.stderr, r
    r = import_http(d, docker_archive([gzip.decompress(bb_layer)], "bad:1", bad_diff_id=True))
    assert r.status == 400 and "does not match its digest" in r.json["error"], r
    r = import_http(d, b"this is not a tar archive at all" * 100, name="bad:1")
    assert r.status == 400 and r.json["code"] == "S001", r
    assert d.request("GET", "/sandbox/images").json["images"] == []
    # Nothing of the refused imports stays in the store's temporary directory.
    assert os.listdir(os.path.join(d.state_dir, "images", "oci", "tmp")) == []


def test_import_rejects_malicious_paths(bb_layer, make_daemon, tmp_path):
    tag = uuid.uuid4().hex[:8]
    host_dir = tmp_path / "host"
    host_dir.mkdir()
    d = image_daemon(make_daemon, [], ["evil:1"])
    img = Image([bb_layer])
    layout = write_layout(str(tmp_path / "layout"), img)

    def outer(extra):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tf:
            tf.add(layout, arcname=".")
            extra(tf)
        return buf.getvalue()

    # The archive itself: `..` and absolute paths, links leaving it.
    for extra, why in [
        (lambda tf: add_file(tf, f"../../../../tmp/import-dotdot-{tag}", b"x"), "unsafe path"),
        (lambda tf: add_file(tf, f"/tmp/import-abs-{tag}", b"x"), "unsafe path"),
        (lambda tf: add_special(tf, "escape", tarfile.SYMTYPE, str(host_dir)), "symlink leaving"),
        (lambda tf: add_special(tf, "up", tarfile.SYMTYPE, "../../.."), "symlink leaving"),
        (lambda tf: add_special(tf, "hard", tarfile.LNKTYPE, "../../etc/shadow"), "unsafe hardlink"),
    ]:
        r = import_http(d, outer(extra), name="evil:1")
        assert r.status == 400 and why in r.json["error"], r
    assert not os.path.exists(f"/tmp/import-dotdot-{tag}") and not os.path.exists(f"/tmp/import-abs-{tag}")
    assert d.request("GET", "/sandbox/images").json["images"] == []

    # A layer that tries to escape is unpacked with the pull's safety: nothing lands outside.
    def evil(tf):
        add_file(tf, f"../../../../tmp/layer-dotdot-{tag}", b"escaped")
        add_file(tf, f"/tmp/layer-abs-{tag}", b"escaped")
        add_special(tf, "evil", tarfile.SYMTYPE, str(host_dir))
        add_file(tf, "evil/pwned", b"escaped")
        add_special(tf, "shadow", tarfile.LNKTYPE, "/etc/shadow")
        add_file(tf, "ok.txt", b"fine")

    img2 = Image([bb_layer, tar_layer(evil)])
    layout2 = write_layout(str(tmp_path / "layout2"), img2)
    r = d.cli("image", "import", layout2, "--name", "evil:1")
    assert r.returncode == 0, r
    for p in (f"/tmp/layer-dotdot-{tag}", f"/tmp/layer-abs-{tag}", str(host_dir / "pwned")):
        assert not os.path.exists(p), p
    sid = d.create("evil:1")
    assert sh(d, sid, "cat /ok.txt; ls /shadow 2>&1; true")["stdout"].startswith("fine")
