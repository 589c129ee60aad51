"""executor = slurm on a real one-node Slurm cluster (munged, slurmctld and
slurmd on this machine, started by t/slurm.sh): jobs run through srun, their
exit codes and logs come back, cancellation (SIGINT, timeout, -x, the
deadline) leaves nothing in the queue, a job lost by Slurm is retried, and a
run resumed after dagrun was killed never runs a job beside a copy of itself
still on the cluster.

The cluster: the one SLURM_CONF names when it answers (.ci/run starts one),
else one started here with t/slurm.sh for the session and stopped after.
The tests are skipped only when that script says the daemons cannot start;
its reason is the skip message."""
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

import conftest
from conftest import clean_env
from test_resume import guards, last_run, reaper, records, runs, status  # noqa: F401 (a fixture)

SLOW = conftest.SLOW
HERE = os.path.dirname(os.path.abspath(__file__))


def free_ports():
    """A port p with p + 1 free too, for slurmctld and slurmd."""
    for _ in range(100):
        p = random.randrange(20000, 60000)
        try:
            for q in (p, p + 1):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", q))
            return p
        except OSError:
            continue
    return 16817


@pytest.fixture(scope="session")
def cluster():
    conf = os.environ.get("SLURM_CONF")
    if conf and shutil.which("squeue") and subprocess.run(
            ["squeue", "-h"], env=dict(os.environ, SLURM_CONF=conf),
            capture_output=True, timeout=60).returncode == 0:
        yield conf
        return
    d = tempfile.mkdtemp(prefix="dagrun-slurm.", dir="/tmp")
    r = subprocess.run(["sh", os.path.join(HERE, "slurm.sh"), "start", d],
                       env=dict(os.environ, DAGRUN_SLURM_PORT=str(free_ports())),
                       capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        shutil.rmtree(d, ignore_errors=True)
        pytest.skip("the Slurm daemons cannot start here: " + r.stderr.strip())
    try:
        yield os.path.join(d, "slurm.conf")
    finally:
        subprocess.run(["sh", os.path.join(HERE, "slurm.sh"), "stop", d], timeout=120)
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def env(cluster):
    return clean_env(SLURM_CONF=cluster)


def tag(dr, sd=".dagrun"):
    """The --comment dagrun gives the Slurm jobs of a state directory."""
    h = 14695981039346656037
    for c in os.fsencode(str(dr.path / sd)):
        h = ((h ^ c) * 1099511628211) & (2 ** 64 - 1)
    return "dagrun:%016x" % h


def queue(env):
    """The jobs in the queue: [(id, name, state, comment)]."""
    out = subprocess.run(["squeue", "-h", "-u", str(os.getuid()), "-o", "%i|%j|%T|%k"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [tuple(l.split("|", 3)) for l in out.stdout.splitlines() if l]


def ours(dr, env):
    t = tag(dr)
    return [q for q in queue(env) if q[3] == t]


def slurm_ids(run):
    """job -> [Slurm job ids] from a run's slurm records."""
    out = {}
    for f in run:
        if f[1] == "slurm":
            out.setdefault(f[2], []).append(int(f[4]))
    return out


def ends(run):
    return {f[2]: (f[4], int(f[5])) for f in run if f[1] == "end"}


def wait_queue_empty(dr, env, timeout=30):
    dr.wait_for(lambda: not ours(dr, env), timeout, "the queue to lose the test's jobs")


# ---------------------------------------------------------------- the graph

def test_diamond_runs_on_the_cluster(dr, env):
    """Each job ran as a Slurm job (its id in its environment, in the journal
    and in Slurm's own view of the job's name), in the graph's order; logs
    land in state_dir/logs."""
    r = dr.run("-j", "4", env=env, ini="""
[run]
executor = slurm
[node top]
cmd = sh -c 'echo "top $SLURM_JOB_ID $SLURM_JOB_NAME" >> order'
[node left]
after = top
cmd = sh -c 'echo "left $SLURM_JOB_ID $SLURM_JOB_NAME" >> order; echo to-err >&2'
[node right]
after = top
cmd = sh -c 'echo "right $SLURM_JOB_ID $SLURM_JOB_NAME" >> order; echo out-right'
[node bottom]
after = left right
cmd = sh -c 'echo "bottom $SLURM_JOB_ID $SLURM_JOB_NAME" >> order'
""")
    assert r.returncode == 0, r.stderr
    lines = [l.split() for l in (dr.path / "order").read_text().splitlines()]
    assert [l[0] for l in lines][0] == "top" and lines[-1][0] == "bottom"
    assert sorted(l[0] for l in lines) == ["bottom", "left", "right", "top"]
    ids = slurm_ids(last_run(dr))
    for name, jobid, jobname in lines:
        assert jobname == name
        assert ids[name] == [int(jobid)]
    assert len({l[1] for l in lines}) == 4
    assert (dr.path / ".dagrun/logs/right.out").read_text() == "out-right\n"
    assert (dr.path / ".dagrun/logs/left.err").read_text() == "to-err\n"
    assert re.search(r"^dagrun: 4 jobs: 4 ok in", r.stdout, re.M)


def test_fanout_100_inputs_with_exit_codes(dr, env):
    """One job per input, 100 of them through srun, each exit code the job's
    own; dependents after all of them."""
    (dr.path / "in").mkdir()
    for i in range(100):
        (dr.path / "in" / ("f%03d" % i)).write_text("%d\n" % (i % 7 if i % 10 == 3 else 0))
    r = dr.run("-k", "-j", "2", env=env, timeout=240, ini="""
[run]
executor = slurm
[node each]
inputs = in/*
cmd = sh -c 'echo "$SLURM_JOB_ID" > {input}.id; exit $(cat {input})'
[node after]
after = each
cmd = echo never
""")
    assert status(r.returncode) == 1, r.stderr
    run = last_run(dr)
    got = ends(run)
    want_bad = {}
    for i in range(100):
        code = i % 7 if i % 10 == 3 else 0
        name = "each:in/f%03d" % i
        assert got[name] == (("failed", code) if code else ("ok", 0)), name
        if code:
            want_bad[name] = code
        ids = slurm_ids(run)[name]
        assert ids == [int((dr.path / ("in/f%03d.id" % i)).read_text())]
    assert len(want_bad) == 9
    assert got["after"][0] == "skipped"
    assert re.search(r"^dagrun: 101 jobs: 91 ok, 9 failed, 1 skipped in", r.stdout, re.M)
    wait_queue_empty(dr, env)   # a job ended may still be COMPLETING for a moment


def test_failing_job_reports_its_own_exit(dr, env):
    r = dr.run(env=env, ini="""
[run]
executor = slurm
[node bad]
cmd = sh -c 'echo broken >&2; exit 7'
[node next]
after = bad
cmd = true
""")
    assert status(r.returncode) == 1
    assert ends(last_run(dr))["bad"] == ("failed", 7)
    assert ends(last_run(dr))["next"][0] == "skipped"
    err = (dr.path / ".dagrun/logs/bad.err").read_text()
    assert "broken" in err
    assert "lost by Slurm" not in r.stderr + err


def test_options_reach_slurm(dr, env):
    """cpus, mem, timeout, the job name and slurm_args ([run]'s, then the
    node's) as Slurm itself shows the job."""
    r = dr.run(env=env, ini="""
[run]
executor = slurm
kill_grace = 5s
slurm_args = --nice=3 --comment=overridden
[node shown]
cpus = 2
mem = 100M
timeout = 90s
slurm_args = --nice=7
cmd = sh -c 'scontrol show job "$SLURM_JOB_ID" > job.txt'
""")
    assert r.returncode == 0, r.stderr
    job = (dr.path / "job.txt").read_text()
    assert re.search(r"\bJobName=shown\b", job), job
    assert re.search(r"\bNumCPUs=2\b", job), job
    assert re.search(r"\bMinMemoryNode=100M\b", job), job
    assert re.search(r"\bTimeLimit=00:02:00\b", job), job   # 90s + 5s, in minutes
    assert re.search(r"\bNice=7\b", job), job
    assert re.search(r"\bComment=overridden\b", job), job


def test_dry_run_shows_the_srun_line(dr, env):
    r = dr.run("-n", env=env, ini="""
[run]
executor = slurm
[node a]
cpus = 1.5
mem = 1G
slurm_args = --partition=debug
cmd = echo hi
[node b]
executor = local
cmd = echo local
""")
    assert r.returncode == 0, r.stderr
    assert ("a\tsrun --job-name=a --ntasks=1 --quiet --cpus-per-task=2 --mem=1024M "
            "--partition=debug -- echo hi\n") in r.stdout
    assert "b\techo local\n" in r.stdout


def test_mixed_graph(dr, env):
    """Some nodes here, some on the cluster, in one graph."""
    r = dr.run(env=env, ini="""
[run]
executor = local
[node here]
cmd = sh -c 'echo "here $${SLURM_JOB_ID:-none}" > here.txt'
[node there]
after = here
executor = slurm
cmd = sh -c 'cat here.txt > there.txt; echo "there $SLURM_JOB_ID" >> there.txt'
[node back]
after = there
cmd = sh -c 'cat there.txt > back.txt; echo "back $${SLURM_JOB_ID:-none}" >> back.txt'
""")
    assert r.returncode == 0, r.stderr
    lines = (dr.path / "back.txt").read_text().split("\n")
    assert lines[0] == "here none"
    assert re.fullmatch(r"there \d+", lines[1])
    assert lines[2] == "back none"
    ids = slurm_ids(last_run(dr))
    assert list(ids) == ["there"] and ids["there"] == [int(lines[1].split()[1])]


def test_local_gates_do_not_hold_slurm_jobs(dr, env):
    """-j 0: no dagrun limit, so all six srun start at once though the node
    takes two; a load gate no machine meets holds local jobs, not these."""
    r = dr.run("-j", "0", env=env, timeout=120, ini="""
[resources]
load_avg_1m = 0.0001
poll = 100ms
[run]
executor = slurm
[node a]
cmd = sleep 1
[node b]
cmd = sleep 1
[node c]
cmd = sleep 1
[node d]
cmd = sleep 1
[node e]
cmd = sleep 1
[node f]
cmd = sleep 1
""")
    assert r.returncode == 0, r.stderr
    run = last_run(dr)
    kinds = [f[1] for f in run if f[1] in ("start", "end")]
    assert kinds[:6] == ["start"] * 6, kinds
    assert "waiting for resources" not in (dr.path / ".dagrun/main.log").read_text()


def test_j_and_pools_bound_slurm_jobs(dr, env):
    r = dr.run("-j", "3", env=env, timeout=120, ini="""
[run]
executor = slurm
[pool one]
size = 1
""" + "".join("""
[node p%d]
pool = one
cmd = sh -c 'echo start >> p.log; sleep 0.3; echo end >> p.log'
""" % i for i in range(3)) + "".join("""
[node q%d]
cmd = sleep 0.3
""" % i for i in range(4)))
    assert r.returncode == 0, r.stderr
    run = last_run(dr)
    live, peak, pool, ppeak = 0, 0, 0, 0
    for f in run:
        if f[1] == "start":
            live += 1
            pool += f[2].startswith("p")
        elif f[1] == "end":
            live -= 1
            pool -= f[2].startswith("p")
        peak, ppeak = max(peak, live), max(ppeak, pool)
    assert peak == 3 and ppeak == 1
    assert (dr.path / "p.log").read_text() == "start\nend\n" * 3


def test_post_runs_through_srun(dr, env):
    r = dr.run(env=env, ini="""
[run]
executor = slurm
[node made]
output = made.txt
cmd = sh -c 'echo data > {output}'
post = sh -c 'echo "$SLURM_JOB_ID" > post.id; grep -q data {output}'
""")
    assert r.returncode == 0, r.stderr
    assert (dr.path / "made.txt").read_text() == "data\n"
    # the post is a Slurm job of its own, recorded after the command's
    ids = slurm_ids(last_run(dr))["made"]
    assert len(ids) == 2 and ids[1] == int((dr.path / "post.id").read_text()) != ids[0]


# ------------------------------------------------------------- cancellation

def test_timeout_ends_the_slurm_job(dr, env):
    t0 = time.monotonic()
    r = dr.run(env=env, ini="""
[run]
executor = slurm
kill_grace = 2s
[node slow]
cmd = sleep 300
timeout = 1s
""")
    assert status(r.returncode) == 1
    assert time.monotonic() - t0 < 30 * SLOW
    assert ends(last_run(dr))["slow"][0] == "timeout"
    assert not ours(dr, env)


def running_on_cluster(dr, names):
    def ok():
        rs = runs(records(dr))
        return bool(rs) and set(names) <= set(slurm_ids(rs[-1]))
    return ok


def test_sigint_leaves_no_job_in_the_queue(dr, env):
    # pend asks for the whole node once s0 and s1 have it (the gate waits
    # for their ids in the journal), so it stays pending
    ini = "[run]\nexecutor = slurm\nkill_grace = 3s\n" + "".join(
        "[node s%d]\ncmd = sleep 300\n" % i for i in range(2)) + """
[node gate]
executor = local
cmd = sh -c 'i=0; while [ "$(grep -c "slurm.s[01]." .dagrun/journal)" -lt 2 ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done'
[node pend]
after = gate
cmd = sleep 300
cpus = 2
"""
    p = dr.popen("-j", "0", env=env, ini=ini, preexec_fn=lambda: signal.signal(
        signal.SIGINT, signal.SIG_DFL))
    try:
        dr.wait_for(running_on_cluster(dr, ["s0", "s1"]), 60, "both jobs on the cluster")
        dr.wait_for(lambda: len(ours(dr, env)) == 3, 30, "three jobs queued")
        assert sorted(q[2] for q in ours(dr, env)) == ["PENDING", "RUNNING", "RUNNING"]
        shown = dr.run("-s", env=env).stdout
        for name, ids in slurm_ids(last_run(dr)).items():
            assert re.search(r"^  running +[0-9.]+s  %s \(Slurm job %d\)$" % (name, ids[-1]),
                             shown, re.M), shown
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60 * SLOW)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert status(p.returncode) == 130, err
    assert not ours(dr, env)            # at once: dagrun waited for the queue
    got = ends(last_run(dr))
    assert {k: v[0] for k, v in got.items()} == {
        "s0": "cancelled", "s1": "cancelled", "gate": "ok", "pend": "cancelled"}


def test_abort_and_deadline_cancel_slurm_jobs(dr, env):
    r = dr.run("-x", "-j", "0", env=env, ini="""
[run]
executor = slurm
kill_grace = 2s
[node long]
cmd = sleep 300
[node bad]
cmd = sh -c 'sleep 1; exit 4'
""")
    assert status(r.returncode) == 1
    got = ends(last_run(dr))
    assert got["bad"] == ("failed", 4) and got["long"][0] == "cancelled"
    assert not ours(dr, env)

    r = dr.run("-j", "0", env=env, ini="""
[run]
executor = slurm
kill_grace = 2s
deadline = 2s
[node long]
cmd = sleep 300
""")
    assert status(r.returncode) == 4
    assert ends(last_run(dr))["long"][0] == "cancelled"
    assert not ours(dr, env)


def test_job_lost_by_slurm_is_retried(dr, env):
    """A job cancelled by someone else (here: itself, with scancel) was lost
    by Slurm, not failed by its command: said so, and retried."""
    r = dr.run(env=env, ini="""
[run]
executor = slurm
[node victim]
retries = 1
retry_delay = 0
cmd = sh -c 'if [ "$DAGRUN_ATTEMPT" = 1 ]; then scancel "$SLURM_JOB_ID"; sleep 60; fi; echo fine'
""")
    assert r.returncode == 0, r.stderr
    # slurmstepd's "*** STEP N.0 ON HOST CANCELLED AT ... ***" when it said
    # so in time, else srun's own error about the step
    why = r"lost by Slurm: (slurmstepd\S*: error: \*\*\* STEP \d+\.0 .*CANCELLED.*|srun: error: .*)"
    assert re.search(r"^dagrun: victim: " + why + "$", r.stderr, re.M), r.stderr
    log = (dr.path / ".dagrun/main.log").read_text()
    assert re.search(r"\tINFO\tvictim: " + why + "$", log, re.M), log
    run = last_run(dr)
    assert [(f[3], f[4]) for f in run if f[1] == "end"] == [("1", "failed"), ("2", "ok")]
    assert (dr.path / ".dagrun/logs/victim.out").read_text() == "fine\n"


# ---------------------------------------------------------------- preflight

def test_srun_missing_is_an_error_before_anything(dr, env, tmp_path):
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    for prog in ("sh", "true", "echo"):
        os.symlink(shutil.which(prog), bin_ / prog)
    for w in conftest.WRAP[:1]:     # a wrapper (valgrind: a script and its .bin)
        d, name = os.path.split(shutil.which(w))
        for f in os.listdir(d):
            if f.startswith(name):
                os.symlink(os.path.join(d, f), bin_ / f)
    env = dict(env, PATH=str(bin_))
    r = dr.run(env=env, ini="""
[node here]
cmd = touch here.txt
[node far]
executor = slurm
cmd = true
""")
    assert r.returncode == 2
    assert r.stderr == "dagrun: far: executor = slurm, but srun is not in PATH\n"
    assert not (dr.path / "here.txt").exists()
    assert not (dr.path / ".dagrun/journal").exists() or \
        "run" not in (dr.path / ".dagrun/journal").read_text()


def test_unreachable_cluster_is_an_error_before_anything(dr, env, cluster):
    conf = dr.path / "slurm.conf"
    text = re.sub(r"(?m)^SlurmctldPort=.*$", "SlurmctldPort=1", open(cluster).read())
    conf.write_text(re.sub(r"(?m)^MessageTimeout=.*$", "MessageTimeout=1", text))
    r = dr.run(env=dict(env, SLURM_CONF=str(conf)), ini="""
[run]
executor = slurm
[node far]
cmd = touch far.txt
""")
    assert r.returncode == 2
    assert re.fullmatch(r"dagrun: far: executor = slurm, but the Slurm cluster does not "
                        r"answer: .*(contact|connect).*\n", r.stderr), r.stderr
    assert not (dr.path / "far.txt").exists()


def test_config_errors(dr):
    for ini, msg in [
        ("[run]\nexecutor = cloud\n[node a]\ncmd = true\n",
         "dagrun.ini:2: executor: expected local or slurm, got 'cloud'"),
        ("[node a]\ncmd = true\nexecutor = remote\n",
         "dagrun.ini:3: executor: expected local or slurm, got 'remote'"),
        ("[node a]\ncmd = true\nslurm_args = --nice=1\n",
         "dagrun.ini:3: slurm_args needs executor = slurm"),
        ("[run]\nexecutor = slurm\n[node a]\ninputs = *.x\ncalibrate = yes\ncmd = true {input}\n",
         "dagrun.ini:4: calibrate measures jobs on this machine: not with executor = slurm"),
    ]:
        r = dr.run("-c", ini=ini)
        assert r.returncode == 2, ini
        assert r.stderr == msg + "\n", r.stderr


# ------------------------------------------------------------------- resume

JOB = r"""#!/bin/sh
# a job that says whether another copy of itself is on the cluster
others=$(squeue -h -u "$(id -u)" -n "$SLURM_JOB_NAME" -o '%i %T' |
	grep -v "^$SLURM_JOB_ID " | grep -c -E 'RUNNING|COMPLETING|CONFIGURING|SUSPENDED')
echo "start $SLURM_JOB_NAME $SLURM_JOB_ID $others" >> ledger
sleep "$1"
echo "end $SLURM_JOB_NAME $SLURM_JOB_ID" >> ledger
"""

RESUME_INI = """
[run]
executor = slurm
kill_grace = 2s
[node quick]
cmd = ./job.sh 0
[node long1]
after = quick
cmd = ./job.sh 8
[node long2]
after = quick
cmd = ./job.sh 8
[node started]
after = quick
executor = local
cmd = sh -c 'i=0; while [ "$(grep -c "^start long" ledger)" -lt 2 ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done'
[node wide]
after = started
cpus = 2
cmd = ./job.sh 1
[node last]
after = long1 long2 wide
cmd = ./job.sh 0
"""


def ledger(dr):
    return [l.split() for l in (dr.path / "ledger").read_text().splitlines()]


def check_ledger(dr):
    """No copy ever started beside another of the same job on the cluster,
    and every job ended once at least."""
    rows = ledger(dr)
    assert all(r[3] == "0" for r in rows if r[0] == "start"), rows
    assert {r[1] for r in rows if r[0] == "end"} == {"quick", "long1", "long2", "wide", "last"}


def setup_resume(dr):
    (dr.path / "job.sh").write_text(JOB)
    os.chmod(dr.path / "job.sh", 0o755)
    dr.write(RESUME_INI)


def test_resume_after_sigkill_of_dagrun(dr, env):
    """dagrun killed: its guard ends srun and clears the queue; -r runs what
    had not ended, nothing twice at once, the finished job not again."""
    setup_resume(dr)
    p = dr.popen("-j", "0", env=env)
    try:
        dr.wait_for(running_on_cluster(dr, ["long1", "long2"]), 60, "long jobs on the cluster")
        p.kill()
        p.communicate(timeout=30)
        dr.wait_for(lambda: not ours(dr, env), 60, "the guard to clear the queue")
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    r = dr.run("-r", "-j", "0", env=env, timeout=180)
    assert r.returncode == 0, r.stderr
    run = last_run(dr)
    assert "quick" not in [f[2] for f in run if f[1] == "start"]
    check_ledger(dr)
    wait_queue_empty(dr, env)


def test_resume_when_slurm_jobs_outlive_dagrun(dr, env, reaper):
    """dagrun, its guard and every srun killed at once (as when the machine
    that ran them is lost): a job still pending on the cluster has no srun
    left and would hold its place for ever.  The next run cancels the
    state directory's jobs and waits until they have left the queue before
    it starts their copies."""
    if True:
        setup_resume(dr)
        p = dr.popen("-j", "0", env=env)
        dr.wait_for(running_on_cluster(dr, ["long1", "long2"]), 60, "long jobs on the cluster")
        dr.wait_for(lambda: any(q[1] == "wide" and q[2] == "PENDING" for q in ours(dr, env)),
                    30, "wide pending")
        for g in guards(p.pid):
            os.kill(g, signal.SIGKILL)
        p.kill()
        p.wait(timeout=30)
        for f in last_run(dr):
            if f[1] == "start":
                try:
                    os.killpg(int(f[4]), signal.SIGKILL)
                except OSError:
                    pass
        # the pending job is still there, its srun gone
        left = ours(dr, env)
        assert any(q[1] == "wide" for q in left), left
        r = dr.run("-r", "-j", "0", env=env, timeout=180)
        assert r.returncode == 0, r.stderr
        log = (dr.path / ".dagrun/main.log").read_text()
        for q in left:
            assert "Slurm job %s of this state directory is still queued: scancel" % q[0] in log
        assert re.search(r"the Slurm jobs cancelled have left the queue after", log)
        check_ledger(dr)
        wait_queue_empty(dr, env)
