#!/bin/sh
# fanout.sh -- one fan-out node over N inputs (default 5,000) of a trivial
# command, beside xargs -P and GNU parallel over the same input list and the
# posix_spawn floor, K at once (default 2), in rounds whose order rotates.
# Prints the median wall time of each and its ratio to the floor.
#
#   DAGRUN=./dagrun RUNS=7 t/bench/fanout.sh
set -eu
here=$(cd "$(dirname "$0")" && pwd)
DAGRUN=$(cd "$(dirname "${DAGRUN:-./dagrun}")" && pwd)/$(basename "${DAGRUN:-./dagrun}")
N=${N:-5000} K=${K:-2} RUNS=${RUNS:-7}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cc -O2 -o "$work/floor" "$here/floor.c"
prog=$(command -v true); case $prog in /*) ;; *) prog=/bin/true ;; esac
cd "$work"
mkdir in
i=0
while [ $i -lt "$N" ]; do
	echo "in/f$i.dat"
	i=$((i + 1))
done > list.txt
printf '[run]\njobs = %s\n[node f]\ninput_list = list.txt\ncmd = %s {input}\n' "$K" "$prog" > dagrun.ini

run() {	# $1 = name: prints seconds
	case $1 in
	floor) ./floor "$K" "$N" "$prog" in/x ;;
	dagrun)
		rm -rf .dagrun
		t0=$(date +%s.%N); "$DAGRUN" -q > /dev/null; t1=$(date +%s.%N)
		echo "$t1 - $t0" | bc ;;
	xargs)
		t0=$(date +%s.%N); xargs -P "$K" -n 1 -a list.txt "$prog"; t1=$(date +%s.%N)
		echo "$t1 - $t0" | bc ;;
	parallel)
		t0=$(date +%s.%N); parallel --will-cite -j "$K" -a list.txt "$prog" '{}'; t1=$(date +%s.%N)
		echo "$t1 - $t0" | bc ;;
	esac
}

tools="floor dagrun xargs"
command -v parallel > /dev/null && tools="$tools parallel"
for t in $tools; do run "$t" > /dev/null; done	# warm-up
r=0
while [ $r -lt "$RUNS" ]; do
	set -- $tools
	s=$((r % $#))
	while [ $s -gt 0 ]; do set -- "$@" "$1"; shift; s=$((s - 1)); done
	for t in "$@"; do printf '%s\t%s\t%s\n' "$t" "$(run "$t")" "$r"; done
	r=$((r + 1))
done > times.tsv
awk -F'\t' -v n="$N" -v k="$K" '
function median(s,    a, m, x, y, z) {
	m = split(substr(s, 2), a, " ")
	for (x = 1; x <= m; x++) for (y = x + 1; y <= m; y++) if (a[y] < a[x]) { z = a[x]; a[x] = a[y]; a[y] = z }
	lo = a[1]; hi = a[m]
	return m % 2 ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
}
{ v[$1] = v[$1] " " $2; t[$1, $3] = $2; if ($3 + 1 > rounds) rounds = $3 + 1 }
END {
	printf "%d inputs, %d at once, %d rounds: median wall, and median of the same-round ratios to the floor\n", n, k, rounds
	split("floor dagrun xargs parallel", order, " ")
	for (i = 1; i <= 4; i++) {
		tool = order[i]
		if (!(tool in v)) continue
		med = median(v[tool]); a = lo; b = hi
		r = ""
		for (j = 0; j < rounds; j++) r = r " " t[tool, j] / t["floor", j]
		printf "  %-9s %.3f s  [%.3f-%.3f]  x%.3f floor  [%.3f-%.3f]\n", tool, med, a, b, median(r), lo, hi
	}
}' times.tsv
