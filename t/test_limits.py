"""Small machines: when processes (RLIMIT_NPROC) or descriptors
(RLIMIT_NOFILE) run out, a launch waits and is tried again instead of
failing its job, said once in main.log; a run at `ulimit -n 16` with 100 jobs
allowed at once completes."""
import os
import pwd
import re
import shutil
import subprocess
import tempfile

import pytest

import conftest
from conftest import clean_env

SLOW = conftest.SLOW

# qemu-user needs descriptors and threads of its own: under emulation these
# limits would measure the emulator, which fails where dagrun would wait
pytestmark = pytest.mark.skipif(conftest.EMULATED, reason="qemu-user shares the limits")

WAITED = re.compile(r"^\S+ \S+\tINFO\tcannot start a job now \((.*)\): waiting until one "
                    r"ends or the system has room, then trying again$", re.M)


def ini(n, cmd="sleep 0.1", extra=""):
    return "[run]\nkill_grace = 1s\n" + extra + "".join(
        "[node n%03d]\ncmd = %s\n" % (i, cmd) for i in range(n)) + \
        "[node last]\nafter = %s\ncmd = true\n" % " ".join("n%03d" % i for i in range(n))


def lowfd_env():
    """LeakSanitizer needs descriptors of its own at exit (it reads
    /proc/PID/task): with a handful, an ASan build checks all but leaks."""
    env = clean_env()
    if "ASAN_OPTIONS" in env:
        env["ASAN_OPTIONS"] += ":detect_leaks=0"
    return env


def ulimit_n(k):
    """argv prefix: dagrun with soft and hard RLIMIT_NOFILE k."""
    return ["prlimit", "--nofile=%d:%d" % (k, k), "--"]


@pytest.fixture
def prlimit():
    if not shutil.which("prlimit"):
        pytest.skip("prlimit not found (util-linux)")


# a wrapper such as valgrind keeps descriptors of its own
fdwrap = pytest.mark.skipif(bool(conftest.WRAP), reason="the wrapper needs the descriptors")


@fdwrap
def test_ulimit_n_16_with_100_jobs_at_once(dr, prlimit):
    dr.write(ini(100))
    r = subprocess.run(ulimit_n(16) + conftest.argv("-j", "100"), cwd=dr.path,
                       env=lowfd_env(), capture_output=True, text=True, timeout=120 * SLOW)
    assert r.returncode == 0, r.stderr
    assert re.search(r"^dagrun: 101 jobs: 101 ok in", r.stdout, re.M), r.stdout
    log = (dr.path / ".dagrun/main.log").read_text()
    assert WAITED.findall(log) in (["Too many open files"],              # glibc
                                   ["No file descriptors available"]), log  # musl
    m = re.search(r"\tINFO\t(\d+) launches waited for processes or descriptors$", log, re.M)
    assert m and int(m.group(1)) >= 1, log
    ends = [l.split("\t") for l in (dr.path / ".dagrun/journal").read_text().splitlines()]
    assert sorted(f[2] for f in ends if f[1] == "end" and f[4] == "ok") == \
        sorted(["n%03d" % i for i in range(100)] + ["last"])


@fdwrap
def test_spawn_file_read_when_descriptors_are_all_taken(dr, prlimit):
    """A job's spawn file is read at its end even when the running jobs took
    every descriptor: whichever the limit, the node it adds runs."""
    text = ini(6, cmd="sleep 0.2") + """
[node adder]
cmd = sh -c 'printf "[node added]\\\\ncmd = touch added.txt\\\\n" > "$DAGRUN_SPAWN"'
"""
    for k in range(13, 20):
        dr.write(text)
        for f in ("added.txt",):
            if (dr.path / f).exists():
                os.unlink(dr.path / f)
        shutil.rmtree(dr.path / ".dagrun", ignore_errors=True)
        r = subprocess.run(ulimit_n(k) + conftest.argv("-j", "20"), cwd=dr.path,
                           env=lowfd_env(), capture_output=True, text=True,
                           timeout=120 * SLOW)
        if r.returncode == 1 and "cannot start" in r.stderr:
            continue        # too few for even one job: refused, said so
        assert r.returncode == 0, (k, r.stderr)
        assert (dr.path / "added.txt").exists(), k


@fdwrap
def test_too_few_descriptors_for_one_job(dr, prlimit):
    """Nothing of dagrun's runs to free one: the job fails at once, said."""
    dr.write(ini(2))
    for k in range(6, 16):
        r = subprocess.run(ulimit_n(k) + conftest.argv(), cwd=dr.path, env=lowfd_env(),
                           capture_output=True, text=True, timeout=60 * SLOW)
        if r.returncode == 0:
            break
        assert r.returncode in (1, 2), r.stderr
        if r.returncode == 1:
            assert re.search(r"^dagrun: cannot start n00[01]: (Too many open files|"
                             r"No file descriptors available)$",
                             r.stderr, re.M), r.stderr
    else:
        pytest.fail("no limit up to 15 let two jobs run")


# ------------------------------------------------------------ RLIMIT_NPROC

@pytest.fixture
def nobody(prlimit):
    if os.getuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to run as another user")
    try:
        pw = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user nobody")
    d = tempfile.mkdtemp(prefix="dagrun-nproc.", dir="/tmp")
    os.chown(d, pw.pw_uid, pw.pw_gid)
    yield pw, d
    shutil.rmtree(d, ignore_errors=True)


def nobody_env(d):
    """For a dagrun run as nobody: a wrapper's (valgrind's) own files go to
    nobody's directory, and valgrind makes no gdb pipe in /tmp, where a file
    of root's may have the same name (it is named after the PID)."""
    return clean_env(TMPDIR=d, VALGRIND_OPTS="--vgdb=no")


def as_nobody(pw, nproc):
    return ["setpriv", "--reuid=%d" % pw.pw_uid, "--regid=%d" % pw.pw_gid, "--clear-groups",
            "prlimit", "--nproc=%d" % nproc, "--"]


def test_process_limit_waits_and_completes(nobody):
    """-j 20 with room for a few processes: launches wait for jobs to end."""
    pw, d = nobody
    with open(os.path.join(d, "dagrun.ini"), "w") as f:
        f.write(ini(30))
    os.chown(os.path.join(d, "dagrun.ini"), pw.pw_uid, pw.pw_gid)
    r = subprocess.run(as_nobody(pw, 8) + conftest.argv("-j", "20"), cwd=d, env=nobody_env(d),
                       capture_output=True, text=True, timeout=120 * SLOW)
    assert r.returncode == 0, r.stderr
    assert re.search(r"^dagrun: 31 jobs: 31 ok in", r.stdout, re.M), r.stdout
    log = open(os.path.join(d, ".dagrun/main.log")).read()
    assert WAITED.findall(log) == ["Resource temporarily unavailable"], log


def test_process_limit_taken_by_others_waits_for_them(nobody):
    """Other processes of the user hold every process slot when the run
    begins: nothing of dagrun's runs to end, so the launch is tried again on
    a timer, and the run completes once they are gone."""
    pw, d = nobody
    with open(os.path.join(d, "dagrun.ini"), "w") as f:
        f.write(ini(3))
    os.chown(os.path.join(d, "dagrun.ini"), pw.pw_uid, pw.pw_gid)
    # a shell of nobody's starts sleepers until the limit holds, then dagrun:
    # its launches fail until the sleepers end (in about a second)
    script = ("i=0; while [ $i -lt 40 ] && (sleep 1.5 &) 2>/dev/null; do i=$((i+1)); done; "
              "exec \"$@\"")
    r = subprocess.run(as_nobody(pw, 12) + ["sh", "-c", script, "sh"] + conftest.argv(),
                       cwd=d, env=nobody_env(d), capture_output=True, text=True,
                       timeout=120 * SLOW)
    assert r.returncode == 0, r.stderr
    log = open(os.path.join(d, ".dagrun/main.log")).read()
    assert WAITED.findall(log) == ["Resource temporarily unavailable"], log
