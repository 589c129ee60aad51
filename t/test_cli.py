"""Command line: -c -n -g -f -C -D -j -h -V -q -v, node targets, start
order of -n, and paths relative to the config file."""
import os
import re
import subprocess

import pytest

from conftest import BIN, argv, clean_env

USAGE = ("usage: dagrun [-cgknqrsvx] [-C dir] [-D name=value] [-f file] "
         "[-j jobs] [-l load] [-t timeline.svg] [node ...]\n")
SUMMARY = re.compile(r"^dagrun: (\d+) jobs: (.*) in \d+\.\d\ds$")


def ini(*lines):
    return "\n".join(lines) + "\n"


# a -> b, a -> c, b c -> d, plus e alone; every job leaves a file
DIAMOND = ini(
    "[node a]", "cmd = touch ran-a",
    "[node b]", "after = a", "cmd = touch ran-b",
    "[node c]", "after = a", "cmd = touch ran-c",
    "[node d]", "after = b c", "cmd = touch ran-d",
    "[node e]", "cmd = touch ran-e",
)


def ran(path):
    return sorted(p.name[4:] for p in path.glob("ran-*"))


def summary(stdout):
    last = stdout.splitlines()[-1]
    m = SUMMARY.match(last)
    assert m, last
    return m.group(1), m.group(2)


def assert_untouched(dr, r):
    assert ran(dr.path) == [], "a job ran"
    assert not (dr.path / ".dagrun").exists(), "state dir created"


# ---------------------------------------------------------------- -c

def test_check_ok(dr):
    r = dr.run("-c", ini=DIAMOND)
    assert (r.returncode, r.stdout, r.stderr) == (0, "dagrun.ini: ok, 5 nodes\n", "")
    assert_untouched(dr, r)


def test_check_counts_only_targets(dr):
    r = dr.run("-c", "b", ini=DIAMOND)
    assert (r.returncode, r.stdout, r.stderr) == (0, "dagrun.ini: ok, 2 nodes\n", "")


def test_check_names_the_file_as_given(dr):
    (dr.path / "sub").mkdir()
    dr.write(DIAMOND, name="sub/graph.ini")
    r = dr.run("-c", "-f", "sub/graph.ini")
    assert (r.returncode, r.stdout, r.stderr) == (0, "sub/graph.ini: ok, 5 nodes\n", "")
    assert not (dr.path / "sub" / ".dagrun").exists()


def test_check_error(dr):
    r = dr.run("-c", ini=DIAMOND + ini("[node f]", "after = zz", "cmd = touch ran-f"))
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr == "dagrun.ini:15: node 'f' depends on unknown node 'zz'\n"
    assert_untouched(dr, r)


def test_check_quiet_prints_nothing(dr):
    r = dr.run("-c", "-q", ini=DIAMOND)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")


# ---------------------------------------------------------------- -n

def test_dry_run_prints_jobs_in_order_and_runs_nothing(dr):
    r = dr.run("-n", ini=DIAMOND)
    assert (r.returncode, r.stderr) == (0, "")
    # longest remaining path first: a (3), then b, c (2), then d, e (1) by file order
    assert r.stdout == ("a\ttouch ran-a\nb\ttouch ran-b\nc\ttouch ran-c\n"
                        "d\ttouch ran-d\ne\ttouch ran-e\n")
    assert_untouched(dr, r)


def test_dry_run_order_is_valid(dr):
    lines = []
    for i in range(12):
        deps = [str(j) for j in range(i) if (i * 7 + j) % 3 == 0]
        lines += ["[node n%d]" % i, "cmd = true"]
        if deps:
            lines += ["after = " + " ".join("n" + d for d in deps)]
    r = dr.run("-n", ini=ini(*lines))
    assert r.returncode == 0, r
    order = [line.split("\t")[0] for line in r.stdout.splitlines()]
    assert sorted(order) == sorted("n%d" % i for i in range(12))
    pos = {n: k for k, n in enumerate(order)}
    for i in range(12):
        for j in range(i):
            if (i * 7 + j) % 3 == 0:
                assert pos["n%d" % j] < pos["n%d" % i], (j, i, order)


def test_dry_run_with_target(dr):
    r = dr.run("-n", "d", ini=DIAMOND)
    assert (r.returncode, r.stderr) == (0, "")
    assert [l.split("\t")[0] for l in r.stdout.splitlines()] == ["a", "b", "c", "d"]
    assert_untouched(dr, r)


def test_dry_run_expands_variables_and_templates(dr):
    r = dr.run("-n", "-D", "where=out dir", ini=ini(
        "[node job-1]", "cmd = echo {node} {attempt} ${where} {{x}}"))
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout == "job-1\techo job-1 1 out dir {x}\n"


def test_dry_run_priority_first_then_longest_path(dr):
    r = dr.run("-n", ini=ini(
        "[node w]", "cmd = echo w",
        "[node x]", "cmd = echo x",
        "[node y]", "after = x", "cmd = echo y",
        "[node z]", "after = y", "cmd = echo z",
        "[node hi]", "priority = 5", "cmd = echo hi",
        "[node lo]", "priority = -1", "after = x", "cmd = echo lo",
    ))
    assert r.returncode == 0, r
    # hi: highest priority; x: longest path (x y z); y (2) before w and z (1);
    # w before z by file order; lo, though ready after x, comes last
    assert [l.split("\t")[0] for l in r.stdout.splitlines()] == ["hi", "x", "y", "w", "z", "lo"]


def test_dry_run_priority_only_among_ready(dr):
    r = dr.run("-n", ini=ini(
        "[node a]", "cmd = true",
        "[node b]", "cmd = true", "priority = 1",
        "[node urgent]", "after = a", "cmd = true", "priority = 100",
        "[node c]", "cmd = true", "priority = 2",
    ))
    assert r.returncode == 0, r
    # urgent waits for a; a (priority 0) comes after every ready higher one
    assert [l.split("\t")[0] for l in r.stdout.splitlines()] == ["c", "b", "a", "urgent"]


def test_dry_run_longest_path_within_targets(dr):
    # target t needs a and b -> c. Within what runs, b has the longest path
    # (b c t); a's long tail u1 u2 u3 is not selected and must not count.
    r = dr.run("-n", "t", ini=ini(
        "[node a]", "cmd = true",
        "[node b]", "cmd = true",
        "[node c]", "after = b", "cmd = true",
        "[node t]", "after = a c", "cmd = true",
        "[node u1]", "after = a", "cmd = true",
        "[node u2]", "after = u1", "cmd = true",
        "[node u3]", "after = u2", "cmd = true",
    ))
    assert r.returncode == 0, r
    assert [l.split("\t")[0] for l in r.stdout.splitlines()] == ["b", "a", "c", "t"]


# ---------------------------------------------------------------- -g

def test_graph_dot(dr):
    r = dr.run("-g", ini=DIAMOND)
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout == (
        'digraph dagrun {\n'
        '\t"a";\n'
        '\t"b";\n'
        '\t"a" -> "b";\n'
        '\t"c";\n'
        '\t"a" -> "c";\n'
        '\t"d";\n'
        '\t"b" -> "d";\n'
        '\t"c" -> "d";\n'
        '\t"e";\n'
        '}\n')
    assert_untouched(dr, r)


def test_graph_dot_with_target(dr):
    r = dr.run("-g", "b", ini=DIAMOND)
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout == 'digraph dagrun {\n\t"a";\n\t"b";\n\t"a" -> "b";\n}\n'
    assert_untouched(dr, r)


# ---------------------------------------------------------------- -f, -C

def test_f_selects_config_file(dr):
    dr.write(ini("[node x]", "cmd = touch ran-x"), name="other.ini")
    dr.write(DIAMOND)
    r = dr.run("-f", "other.ini")
    assert r.returncode == 0, r
    assert ran(dr.path) == ["x"]
    assert summary(r.stdout) == ("1", "1 ok")


def test_missing_default_config(dr):
    r = dr.run()
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr == "dagrun: dagrun.ini: No such file or directory\n"
    assert not (dr.path / ".dagrun").exists()


def test_missing_f_config(dr):
    r = dr.run("-f", "nope.ini")
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr == "dagrun: nope.ini: No such file or directory\n"


def test_C_changes_directory_first(dr):
    sub = dr.path / "proj"
    sub.mkdir()
    (sub / "dagrun.ini").write_text(ini("[node x]", "cmd = sh -c 'pwd > ran-x'"))
    (sub / "alt.ini").write_text(ini("[node y]", "cmd = touch ran-y"))
    r = dr.run("-C", "proj")
    assert r.returncode == 0, r
    assert (sub / "ran-x").read_text() == str(sub.resolve()) + "\n"
    assert (sub / ".dagrun" / "journal").exists()
    assert not (dr.path / ".dagrun").exists()
    r = dr.run("-C", "proj", "-f", "alt.ini")
    assert r.returncode == 0, r
    assert (sub / "ran-y").exists()


def test_C_missing_directory(dr):
    r = dr.run("-C", "nowhere", ini=DIAMOND)
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr == "dagrun: -C nowhere: No such file or directory\n"
    assert_untouched(dr, r)


# ---------------------------------------------------------------- -D

def test_D_sets_variable(dr):
    r = dr.run("-D", "name=ran-x", "-D", "empty=", ini=ini("[node x]", "cmd = touch ${name}${empty}"))
    assert r.returncode == 0, r
    assert ran(dr.path) == ["x"]


def test_D_value_may_contain_equals(dr):
    r = dr.run("-n", "-D", "kv=a=b", ini=ini("[node x]", "cmd = echo ${kv}"))
    assert (r.returncode, r.stdout) == (0, "x\techo a=b\n")


@pytest.mark.parametrize("bad", ["novalue", "=value"])
def test_bad_D(dr, bad):
    r = dr.run("-D", bad, ini=DIAMOND)
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr == "dagrun: -D: expected name=value, got '%s'\n" % bad
    assert_untouched(dr, r)


# ---------------------------------------------------------------- -j

RENDEZVOUS = ini(
    # each waits (bounded) for the other to have started: passes only in parallel
    "[node a]", "cmd = touch a.up; i=0; while [ ! -e b.up ]; do i=$((i+1)); "
                "[ $i -gt 300 ] && exit 1; sleep 0.005; done",
    "[node b]", "cmd = touch b.up; i=0; while [ ! -e a.up ]; do i=$((i+1)); "
                "[ $i -gt 300 ] && exit 1; sleep 0.005; done",
)


def test_j_overrides_run_jobs_upward(dr):
    r = dr.run("-j", "2", ini=ini("[run]", "jobs = 1") + RENDEZVOUS)
    assert r.returncode == 0, r
    assert summary(r.stdout) == ("2", "2 ok")


def test_j0_means_no_fixed_limit(dr):
    r = dr.run("-j", "0", ini=ini("[run]", "jobs = 1") + RENDEZVOUS)
    assert r.returncode == 0, r


def test_j1_runs_one_at_a_time(dr):
    r = dr.run("-j", "1", ini=ini("[run]", "jobs = 4",
                                   "[node a]", "cmd = true", "[node b]", "cmd = true",
                                   "[node c]", "cmd = true"))
    assert r.returncode == 0, r
    events = [(j[0], j[1]) for j in dr.journal() if j[0] in ("start", "end")]
    assert events == [("start", "a"), ("end", "a"), ("start", "b"), ("end", "b"),
                      ("start", "c"), ("end", "c")]


@pytest.mark.parametrize("bad", ["x", "-1", "", "2.5", "99999999999"])
def test_bad_j(dr, bad):
    r = dr.run("-j", bad, ini=DIAMOND)
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr == "dagrun: -j: expected a whole number >= 0, got '%s'\n" % bad
    assert_untouched(dr, r)


# ---------------------------------------------------------------- -h, -V, bad options

def test_h_prints_usage(dr):
    r = dr.run("-h", ini=DIAMOND)
    assert (r.returncode, r.stdout, r.stderr) == (0, USAGE, "")
    assert_untouched(dr, r)


@pytest.mark.parametrize("args,complaint", [
    (["-z"], "unknown option -z"),
    (["-j"], "option -j needs a value"),
    (["-f"], "option -f needs a value"),
])
def test_bad_option_prints_usage(dr, args, complaint):
    r = dr.run(*args, ini=DIAMOND)
    assert (r.returncode, r.stdout) == (2, "")
    lines = r.stderr.splitlines(True)
    assert len(lines) == 2 and lines[0].endswith(": " + complaint + "\n"), r.stderr
    assert lines[1] == USAGE
    assert_untouched(dr, r)


def test_V_prints_version(dr):
    r = dr.run("-V")  # no config needed
    assert (r.returncode, r.stderr) == (0, "")
    assert re.fullmatch(r"dagrun \d+\.\d+\.\d+\n", r.stdout), r.stdout


# ---------------------------------------------------------------- targets

def test_targets_run_only_them_and_prerequisites(dr):
    r = dr.run("b", ini=DIAMOND)
    assert r.returncode == 0, r
    assert ran(dr.path) == ["a", "b"]
    assert summary(r.stdout) == ("2", "2 ok")


def test_several_targets(dr):
    r = dr.run("e", "c", "c", ini=DIAMOND)
    assert r.returncode == 0, r
    assert ran(dr.path) == ["a", "c", "e"]
    assert summary(r.stdout) == ("3", "3 ok")


def test_unknown_target(dr):
    r = dr.run("b", "ghost", ini=DIAMOND)
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr == "dagrun: unknown node 'ghost'\n"
    assert_untouched(dr, r)


def test_unknown_target_with_check(dr):
    r = dr.run("-c", "ghost", ini=DIAMOND)
    assert (r.returncode, r.stdout, r.stderr) == (2, "", "dagrun: unknown node 'ghost'\n")


# ---------------------------------------------------------------- -q, -v

def test_default_output_lines(dr):
    r = dr.run("b", ini=DIAMOND)
    assert r.returncode == 0, r
    lines = r.stdout.splitlines()
    assert len(lines) == 3
    assert re.fullmatch(r"ok \d+\.\d\ds a", lines[0]), lines
    assert re.fullmatch(r"ok \d+\.\d\ds b", lines[1]), lines
    assert r.stderr == ""


def test_quiet_keeps_summary_only(dr):
    r = dr.run("-q", ini=DIAMOND)
    assert r.returncode == 0, r
    assert ran(dr.path) == ["a", "b", "c", "d", "e"]
    assert len(r.stdout.splitlines()) == 1
    assert summary(r.stdout) == ("5", "5 ok")
    assert r.stderr == ""


def test_quiet_keeps_errors(dr):
    r = dr.run("-q", ini=ini("[node bad]", "cmd = echo boom >&2; exit 3",
                             "[node next]", "after = bad", "cmd = touch ran-next"))
    assert r.returncode == 1, r
    assert len(r.stdout.splitlines()) == 1
    assert summary(r.stdout) == ("2", "0 ok, 1 failed, 1 skipped")
    err = r.stderr.splitlines()
    assert re.fullmatch(r"FAILED exit 3 \d+\.\d\ds bad", err[0]), err
    assert err[1:] == ["bad| boom"]
    assert ran(dr.path) == []


def test_verbose_shows_commands_and_tagged_output(dr):
    r = dr.run("-v", ini=ini(
        "[node a]", "cmd = echo to-out; echo to-err >&2",
        "[node b]", "after = a", "cmd = printf 'x\\ny\\n'",
    ))
    assert r.returncode == 0, r
    out = r.stdout.splitlines()
    assert out[0] == "+ a: echo to-out; echo to-err >&2"
    assert "a| to-out" in out
    assert out.index("a| to-out") < out.index("+ b: printf 'x\\ny\\n'")
    assert out.index("+ b: printf 'x\\ny\\n'") < out.index("b| x") == out.index("b| y") - 1
    assert summary(r.stdout) == ("2", "2 ok")
    assert r.stderr == "a| to-err\n"


def test_verbose_shows_expanded_command(dr):
    r = dr.run("-v", "-D", "v=val", ini=ini("[node a]", "cmd = echo {node} ${v} {attempt}"))
    assert r.returncode == 0, r
    assert r.stdout.splitlines()[:2] == ["+ a: echo a val 1", "a| a val 1"]


def test_verbose_output_is_live(dr):
    fifo = dr.path / "go"
    os.mkfifo(fifo)
    p = dr.popen("-v", ini=ini("[node a]", "cmd = echo first; read x < go; echo second"))
    try:
        fd_out = p.stdout.fileno()
        os.set_blocking(fd_out, False)
        seen = []

        def got(text):
            try:
                chunk = os.read(fd_out, 65536)
            except BlockingIOError:
                chunk = b""
            if chunk:
                seen.append(chunk.decode())
            return text in "".join(seen)

        dr.wait_for(lambda: got("a| first\n"), timeout=5, what="live 'a| first'")
        assert "a| second" not in "".join(seen)
        fd = None

        def opened():
            nonlocal fd
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
                return True
            except OSError:
                return False

        dr.wait_for(opened, timeout=5, what="job reading the fifo")
        os.write(fd, b"go\n")
        os.close(fd)
        dr.wait_for(lambda: got("dagrun: 1 jobs: 1 ok"), timeout=5, what="summary")
        assert p.wait(timeout=10) == 0
        assert "a| second\n" in "".join(seen)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


# ---------------------------------------------------------------- relative paths

def test_config_dir_is_job_dir_and_state_base(dr):
    sub = dr.path / "sub"
    (sub / "work").mkdir(parents=True)
    dr.write(ini(
        "[node here]", "cmd = sh -c 'pwd > where'",
        "[node there]", "dir = work", "cmd = sh -c 'pwd > where'",
    ), name="sub/dagrun.ini")
    r = dr.run("-f", "sub/dagrun.ini")
    assert r.returncode == 0, r
    assert (sub / "where").read_text() == str(sub.resolve()) + "\n"
    assert (sub / "work" / "where").read_text() == str((sub / "work").resolve()) + "\n"
    assert (sub / ".dagrun" / "journal").exists()
    assert not (dr.path / ".dagrun").exists()
    assert not (dr.path / "where").exists()


def test_relative_state_dir_under_config_dir(dr):
    sub = dr.path / "sub"
    sub.mkdir()
    dr.write(ini("[run]", "state_dir = st/ate", "[node x]", "cmd = touch ran-x"),
             name="sub/dagrun.ini")
    r = dr.run("-f", "sub/dagrun.ini")
    assert r.returncode == 0, r
    assert (sub / "ran-x").exists()
    assert (sub / "st" / "ate" / "journal").exists()
    assert not (dr.path / "st").exists()
    assert [j[:2] for j in dr.journal("sub/st/ate") if j[0] == "end"] == [["end", "x"]]


def test_absolute_config_path_from_elsewhere(dr, tmp_path_factory):
    sub = dr.path / "proj"
    sub.mkdir()
    (sub / "dagrun.ini").write_text(ini("[node x]", "cmd = touch ran-x"))
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    r = dr.run("-f", str(sub / "dagrun.ini"), cwd=elsewhere)
    assert r.returncode == 0, r
    assert (sub / "ran-x").exists()
    assert (sub / ".dagrun").is_dir()
    assert list(elsewhere.iterdir()) == []


def test_dry_run_from_elsewhere_creates_nothing(dr):
    sub = dr.path / "sub"
    sub.mkdir()
    dr.write(DIAMOND, name="sub/dagrun.ini")
    r = dr.run("-n", "-f", "sub/dagrun.ini")
    assert r.returncode == 0, r
    assert len(r.stdout.splitlines()) == 5
    assert sorted(p.name for p in dr.path.rglob("*")) == ["dagrun.ini", "sub"]
