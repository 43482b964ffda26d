"""The `sandbox` CLI against a real daemon."""
import os


def test_create_exec_list_stop(daemon):
    r = daemon.cli("create", "busybox", "--name", "cli-box", "-e", "GREETING=hi", "-e", "NOEQUALS",
                   "--memory", "128", "--cpus", "0.5", "--idle-timeout", "120")
    assert r.returncode == 0, r.stderr
    sid = r.stdout.decode().strip()
    assert sid.startswith("sbx_") and r.stderr == b""   # not a terminal: silent
    try:
        r = daemon.cli("exec", sid, "--", "sh", "-c", "echo $GREETING; echo err >&2; exit 7")
        assert r.returncode == 7
        assert r.stdout == b"hi\n" and r.stderr == b"err\n"
        r = daemon.cli("exec", sid, "-e", "GREETING=override", "--", "sh", "-c", "echo $GREETING")
        assert r.stdout == b"override\n"
        r = daemon.cli("exec", sid, "--timeout", "500ms", "--", "sleep", "10")
        assert r.returncode == 124
        r = daemon.cli("exec", "--stdin", sid, "--", "wc", "-c", input=b"12345")
        assert r.stdout.strip() == b"5"
        r = daemon.cli("list")
        assert r.returncode == 0 and sid in r.stdout.decode() and "cli-box" in r.stdout.decode()
        sb = daemon.request("GET", f"/sandbox/sandboxes/{sid}").json
        assert sb["memory_mb"] == 128 and sb["cpus"] == 0.5 and sb["idle_timeout_secs"] == 120
    finally:
        r = daemon.cli("stop", sid)
    assert r.returncode == 0
    assert daemon.request("GET", f"/sandbox/sandboxes/{sid}").status == 404
    r = daemon.cli("stop", sid)
    assert r.returncode != 0 and b"not found" in r.stderr


def test_run_one_shot_cleans_up(daemon):
    before = daemon.request("GET", "/sandbox/sandboxes").json["total"]
    r = daemon.cli("run", "busybox", "--", "sh", "-c", "echo one-shot; exit 4")
    assert r.returncode == 4 and r.stdout == b"one-shot\n"
    assert daemon.request("GET", "/sandbox/sandboxes").json["total"] == before


def test_errors_are_reported(daemon):
    r = daemon.cli("create", "not-allowed-image")
    assert r.returncode != 0 and b"S100" in r.stderr
    r = daemon.cli("exec", "sbx_000000000000400080000000", "--", "true")
    assert r.returncode != 0 and b"S002" in r.stderr
    r = daemon.cli("exec", "x", "--timeout", "soon", "--", "true")
    assert r.returncode == 2


def test_help(daemon):
    for args in (["--help"], ["run", "--help"], ["create", "--help"], ["exec", "--help"], ["list", "--help"],
                 ["stop", "--help"]):
        r = daemon.cli(*args)
        assert r.returncode == 0 and b"usage" in r.stdout.lower(), args


def test_unreachable_daemon():
    import subprocess
    from conftest import CLI, free_port
    env = dict(os.environ, SANDBOXD_URL=f"http://127.0.0.1:{free_port()}")
    r = subprocess.run([CLI, "list"], capture_output=True, env=env, timeout=30)
    assert r.returncode != 0 and b"sandboxd" in r.stderr


def test_exec_streams_live_and_forwards_ctrl_c(daemon, sandbox):
    import signal
    import subprocess
    import time
    from conftest import CLI
    env = dict(os.environ, SANDBOXD_URL=daemon.url)
    p = subprocess.Popen([CLI, "exec", sandbox, "--", "sh", "-c",
                          "trap 'echo got-int; exit 9' INT; echo ready; while :; do sleep 0.1; done"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    t0 = time.monotonic()
    assert p.stdout.readline() == b"ready\n"   # arrives while the command still runs
    assert p.poll() is None and time.monotonic() - t0 < 10
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=20)
    assert p.returncode == 9, err
    assert out == b"got-int\n"


def test_exec_stdin_streams(daemon, sandbox):
    r = daemon.cli("exec", "-i", sandbox, "--", "sh", "-c", "wc -c; echo done >&2", input=b"x" * 300000)
    assert r.returncode == 0 and r.stdout.strip() == b"300000" and r.stderr == b"done\n"
