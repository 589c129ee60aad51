"""Inputs that once crashed, leaked or met undefined behaviour in the config
and spawn file parsers (t/fuzz), kept as tests of the real binary: each
must give its exact result.  A copy of each is in t/fuzz/corpus."""

def check(dr, text, code, out="", err=""):
    r = dr.run("-c", ini=text)
    assert (r.returncode, r.stdout, r.stderr) == (code, out, err), r


def test_nodes_without_any_prerequisite(dr):
    # no `after` anywhere: no array of prerequisites, and no pointer
    # arithmetic on the missing one (UBSan: zero offset on a null pointer)
    check(dr, "[resources]\nwait_timeout = 1h\n\n[probe connections]\n"
          "cmd = ss -Htn state established '( sport = :8080 )' | wc -l\n"
          "max = 100\nevery = 10s\n\n[node load]\ncmd = ./load.sh\n",
          0, "dagrun.ini: ok, 1 node\n")


def test_no_nodes_at_all(dr):
    check(dr, "[run]\njobs = 2\n", 0, "dagrun.ini: ok, 0 nodes\n")


def test_variable_defined_by_itself(dr):
    # the error left the variable allocated and unlinked (a leak where the
    # error returns instead of exiting)
    check(dr, "[vars]\nout = result.txt hello ${out}\n", 2,
          err="dagrun.ini:2: undefined variable 'out'\n")


def test_spawn_error_under_a_long_state_dir(dr):
    # the message ("file:line: ...") is cut at the buffer's end instead of
    # being written past it when the spawn file's path fills the buffer
    state = "/".join(["d" * 200] * 6)
    r = dr.run("-q", ini="[run]\nstate_dir = %s\n[node w]\n"
               "cmd = printf '[node x]\\nbogus = 1\\n' > \"$DAGRUN_SPAWN\"; "
               "printf %%s \"$DAGRUN_SPAWN\" > spawn.path\n" % state)
    assert r.returncode == 1, r
    spawn = (dr.path / "spawn.path").read_text()
    assert len(spawn) > 1024
    full = spawn + ":2: unknown key 'bogus' in [node x]"
    lines = [l for l in r.stderr.splitlines() if l.startswith("w| dagrun: w: ")]
    assert len(lines) == 1, r.stderr
    msg = lines[0][len("w| dagrun: w: "):]
    assert msg == full[:1023], msg[-80:]
