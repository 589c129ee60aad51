def test_diamond_runs_in_order(dr):
    r = dr.run(ini="""
[node a]
cmd = sh -c 'echo a >> ran'
[node b]
after = a
cmd = sh -c 'echo b >> ran'
[node c]
after = a
cmd = sh -c 'echo c >> ran'
[node d]
after = b c
cmd = sh -c 'echo d >> ran'
""")
    assert r.returncode == 0, r.stderr
    ran = (dr.path / "ran").read_text().split()
    assert ran[0] == "a" and ran[-1] == "d" and sorted(ran[1:3]) == ["b", "c"]
    assert "4 jobs: 4 ok" in r.stdout
