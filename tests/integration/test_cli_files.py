"""`sandbox cp` and `sandbox ls` against a real daemon: files and trees both ways, stdin and
stdout, binary content, awkward names, listings and errors."""
import json
import os
import stat


def put(d, sid, path, data):
    r = d.cli("cp", "-", f"{sid}:{path}", input=data)
    assert r.returncode == 0, r.stderr
    return r


def cat(d, sid, path):
    r = d.cli("cp", f"{sid}:{path}", "-")
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_file_round_trip_binary(daemon, sandbox, tmp_path):
    data = os.urandom(3 << 20) + b"\x00" * 1000
    src = tmp_path / "blob.bin"
    src.write_bytes(data)
    os.chmod(src, 0o751)
    r = daemon.cli("cp", str(src), f"{sandbox}:/workspace/blob.bin")
    assert r.returncode == 0 and r.stdout == b"" and r.stderr == b"", r.stderr   # no progress off a tty
    r = daemon.exec(sandbox, "stat -c '%s %a' /workspace/blob.bin")
    assert r.json["stdout"].split() == [str(len(data)), "751"]
    dst = tmp_path / "back.bin"
    r = daemon.cli("cp", f"{sandbox}:/workspace/blob.bin", str(dst))
    assert r.returncode == 0, r.stderr
    assert dst.read_bytes() == data
    assert stat.S_IMODE(os.stat(dst).st_mode) == 0o751
    # relative remote paths are under the workspace; into an existing local directory
    out = tmp_path / "outdir"
    out.mkdir()
    r = daemon.cli("cp", f"{sandbox}:blob.bin", str(out))
    assert r.returncode == 0, r.stderr
    assert (out / "blob.bin").read_bytes() == data
    assert not [n for n in os.listdir(out) if "sandbox-cp" in n]   # no temporary left


def test_into_existing_remote_directory(daemon, sandbox, tmp_path):
    src = tmp_path / "note.txt"
    src.write_bytes(b"note\n")
    assert daemon.cli("cp", str(src), f"{sandbox}:/tmp").returncode == 0
    assert cat(daemon, sandbox, "/tmp/note.txt") == b"note\n"
    assert daemon.cli("cp", str(src), f"{sandbox}:").returncode == 0   # the workspace
    assert cat(daemon, sandbox, "/workspace/note.txt") == b"note\n"


def test_stdin_and_stdout(daemon, sandbox):
    data = b"line\x00one\n" * 50000
    put(daemon, sandbox, "/workspace/piped", data)
    assert cat(daemon, sandbox, "/workspace/piped") == data
    put(daemon, sandbox, "/workspace/empty", b"")
    assert cat(daemon, sandbox, "/workspace/empty") == b""


def test_tree_round_trip(daemon, sandbox, tmp_path):
    src = tmp_path / "proj"
    (src / "pkg" / "deep").mkdir(parents=True)
    (src / "empty").mkdir()
    (src / "README").write_bytes(b"readme\n")
    (src / "pkg" / "mod.py").write_bytes(b"print('x')\n")
    (src / "pkg" / "deep" / "data.bin").write_bytes(bytes(range(256)))
    (src / "run.sh").write_bytes(b"#!/bin/sh\necho run\n")
    os.chmod(src / "run.sh", 0o755)
    (src / "with space 'q'.txt").write_bytes("ü".encode())
    r = daemon.cli("cp", str(src), f"{sandbox}:/workspace/proj")
    assert r.returncode == 1 and b"-r" in r.stderr          # a directory needs -r
    r = daemon.cli("cp", "-r", str(src), f"{sandbox}:/workspace/proj")
    assert r.returncode == 0, r.stderr
    r = daemon.exec(sandbox, "cd /workspace/proj && find . | sort && ./run.sh")
    listing = r.json["stdout"].splitlines()
    assert listing[:-1] == sorted([".", "./README", "./empty", "./pkg", "./pkg/deep", "./pkg/deep/data.bin",
                                   "./pkg/mod.py", "./run.sh", "./with space 'q'.txt"])
    assert listing[-1] == "run"
    # and back, into a new directory
    daemon.exec(sandbox, "ln -s README /workspace/proj/link")
    back = tmp_path / "back"
    r = daemon.cli("cp", "-r", f"{sandbox}:/workspace/proj", str(back))
    assert r.returncode == 0, r.stderr
    for rel in ("README", "pkg/mod.py", "pkg/deep/data.bin", "run.sh", "with space 'q'.txt"):
        assert (back / rel).read_bytes() == (src / rel).read_bytes(), rel
    assert (back / "empty").is_dir()
    assert os.access(back / "run.sh", os.X_OK)
    assert os.readlink(back / "link") == "README"
    # into an existing directory: goes under its name
    r = daemon.cli("cp", "-r", f"{sandbox}:/workspace/proj/pkg", str(back))
    assert r.returncode == 0, r.stderr
    assert (back / "pkg" / "mod.py").read_bytes() == b"print('x')\n"


def test_ls(daemon, sandbox):
    daemon.exec(sandbox, "mkdir -p /workspace/l/adir/inner")
    put(daemon, sandbox, "/workspace/l/b.txt", b"12345")
    daemon.exec(sandbox, "chmod 640 /workspace/l/b.txt")
    r = daemon.cli("ls", sandbox, "/workspace/l")
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().splitlines() == ["adir/", "b.txt"]
    r = daemon.cli("ls", "-l", sandbox, "/workspace/l")
    lines = r.stdout.decode().splitlines()
    assert lines[0].startswith("drwxr-xr-x") and lines[0].endswith(" adir/")
    cols = lines[1].split()
    assert cols[0] == "-rw-r-----" and cols[1] == "5" and cols[-1] == "b.txt"
    r = daemon.cli("ls", "--json", sandbox, "/workspace/l")
    doc = json.loads(r.stdout)
    assert sorted(e["name"] for e in doc["entries"]) == ["adir", "b.txt"]
    r = daemon.cli("ls", "-r", sandbox, "/workspace/l")
    assert any(l.endswith("/adir/inner/") for l in r.stdout.decode().splitlines())
    r = daemon.cli("ls", sandbox)     # the workspace
    assert "l/" in r.stdout.decode().splitlines()


def test_errors(daemon, sandbox, tmp_path):
    r = daemon.cli("cp", f"{sandbox}:/workspace/nope", str(tmp_path / "x"))
    assert r.returncode == 1 and b"no such file" in r.stderr
    assert not (tmp_path / "x").exists()
    r = daemon.cli("cp", str(tmp_path / "missing"), f"{sandbox}:/workspace/x")
    assert r.returncode == 1 and b"missing" in r.stderr
    r = daemon.cli("cp", "-", f"{sandbox}:/workspace/no/such/dir/f", input=b"x")
    assert r.returncode == 1 and r.stderr.startswith(b"sandbox: "), r.stderr
    r = daemon.cli("cp", f"{sandbox}:/workspace", "-")
    assert r.returncode == 1 and b"directory" in r.stderr
    r = daemon.cli("cp", "-", "sbx_000000000000400080000000:/x", input=b"x")
    assert r.returncode == 1 and b"not found" in r.stderr.lower()
    r = daemon.cli("ls", sandbox, "/workspace/nope")
    assert r.returncode == 1 and b"S201" in r.stderr
    r = daemon.cli("ls", "sbx_000000000000400080000000")
    assert r.returncode == 1 and b"S002" in r.stderr
    # usage errors
    for args in (["cp"], ["cp", "a"], ["cp", "a", "b"], ["cp", f"{sandbox}:/a", f"{sandbox}:/b"],
                 ["cp", "a", "b", "c"], ["cp", "--bogus", "a", f"{sandbox}:/b"], ["ls"], ["ls", "a", "b", "c"]):
        r = daemon.cli(*args)
        assert r.returncode == 2, (args, r.stderr)


def test_help(daemon):
    for args in (["cp", "--help"], ["ls", "--help"], ["help", "cp"], ["help", "ls"]):
        r = daemon.cli(*args)
        assert r.returncode == 0 and b"usage" in r.stdout.lower(), args
    r = daemon.cli("--help")
    assert b"cp " in r.stdout and b"ls " in r.stdout
