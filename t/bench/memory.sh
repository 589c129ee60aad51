#!/bin/sh
# memory.sh -- 12 jobs that each take 1.5 GiB (touched over 0.5 s) and hold it
# for 2 s, under a memory limit where at most 4 fit; dagrun with the gate
# alone, with the gate and memory_suspend_percent, with mem = 1536M declared,
# and GNU parallel --memfree on the same jobs, in the same run.
# Prints, per runner: makespan, peak memory in use (MemTotal - MemAvailable)
# and that peak over the limit.  Needs about 24 GiB of RAM.
#
#   DAGRUN=./dagrun t/bench/memory.sh
set -eu
here=$(cd "$(dirname "$0")" && pwd)
DAGRUN=$(cd "$(dirname "${DAGRUN:-./dagrun}")" && pwd)/$(basename "${DAGRUN:-./dagrun}")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cc -O2 -o "$work/memhog" "$here/memhog.c"
N=12 SIZE=1536 GROW=0.5 HOLD=2

total=$(awk '/^MemTotal/ {print $2 * 1024}' /proc/meminfo)
base=$(awk '/^MemTotal/ {t = $2} /^MemAvailable/ {a = $2} END {print (t - a) * 1024}' /proc/meminfo)
# room for 4 jobs and a half on top of what is in use now
limit=$(awk -v b="$base" -v s=$SIZE 'BEGIN {print b + 4.5 * s * 1048576}')
pct=$(awk -v l="$limit" -v t="$total" 'BEGIN {printf "%.1f", 100 * l / t}')
susp=$(awk -v p="$pct" -v t="$total" -v s=$SIZE 'BEGIN {printf "%.1f", p + 100 * s * 1048576 / t}')
memfree=$(awk -v l="$limit" -v t="$total" 'BEGIN {printf "%d", (t - l) / 1024}')

ini() {	# $1 = extra [resources] lines, $2 = extra node lines
	{
		printf '[run]\njobs = 0\n[resources]\nmemory_percent = %s\npoll = 100ms\n%s\n' "$pct" "$1"
		i=0
		while [ $i -lt $N ]; do
			printf '[node j%d]\ncmd = %s %d %s %s\n%s\n' $i "$work/memhog" $SIZE $GROW $HOLD "$2"
			i=$((i + 1))
		done
	} > "$work/dagrun.ini"
	cd "$work"
}

# peak of MemTotal - MemAvailable while a command runs, sampled every 10 ms
measure() {	# $1 = label, rest = command
	label=$1
	shift
	python3 - "$work/peak" <<'PY' &
import os, sys, time
peak = 0
end = time.time() + 120
while time.time() < end:
    m = {}
    for line in open("/proc/meminfo"):
        k, v = line.split(":")
        m[k] = int(v.split()[0]) * 1024
    peak = max(peak, m["MemTotal"] - m["MemAvailable"])
    open(sys.argv[1] + ".tmp", "w").write(str(peak))
    os.replace(sys.argv[1] + ".tmp", sys.argv[1])
    time.sleep(0.01)
PY
	sampler=$!
	sleep 0.2
	rm -rf .dagrun
	t0=$(date +%s.%N)
	"$@" > "$work/out" 2>&1 || true
	t1=$(date +%s.%N)
	sleep 0.1
	kill $sampler 2>/dev/null; wait $sampler 2>/dev/null || true
	peak=$(cat "$work/peak")
	awk -v l="$label" -v a="$t0" -v b="$t1" -v p="$peak" -v lim="$limit" -v base="$base" \
	    -v susp="$(cut -f2 .dagrun/journal 2>/dev/null | grep -c '^suspend$' || true)" 'BEGIN {
		printf "%-28s %7.2f s %8.2f GiB %+8.2f GiB %6s\n", l, b - a, p / 2^30,
		    (p - lim) / 2^30, susp
	}'
}

printf 'RAM %.1f GiB, in use before %.2f GiB, limit %.2f GiB (memory_percent = %s)\n' \
    "$(awk -v t="$total" 'BEGIN {print t / 2^30}')" "$(awk -v b="$base" 'BEGIN {print b / 2^30}')" \
    "$(awk -v l="$limit" 'BEGIN {print l / 2^30}')" "$pct"
printf 'ideal packing of 4 at a time, without page-fault cost: %s s\n' \
    "$(awk -v g=$GROW -v h=$HOLD -v n=$N 'BEGIN {print n / 4 * (g + h)}')"
printf '%-28s %9s %12s %13s %6s\n' runner makespan "peak in use" "over limit" stops
i=0; : > "$work/cmds"
while [ $i -lt $N ]; do echo "$work/memhog $SIZE $GROW $HOLD" >> "$work/cmds"; i=$((i + 1)); done
# the packing of 4 at a time as this machine does it, page faults and all
measure "xargs -P 4 (4 at a time)" xargs -P 4 -d '\n' -n 1 -a "$work/cmds" sh -c
ini "" ""
measure "dagrun, gate alone" "$DAGRUN" -q -f "$work/dagrun.ini"
ini "memory_suspend_percent = $susp" ""
measure "dagrun, gate + suspend" "$DAGRUN" -q -f "$work/dagrun.ini"
ini "" "mem = ${SIZE}M"
measure "dagrun, mem = ${SIZE}M" "$DAGRUN" -q -f "$work/dagrun.ini"
if command -v parallel >/dev/null; then
	measure "parallel --memfree ${memfree}K" parallel --will-cite -j 0 --memfree "${memfree}K" -a "$work/cmds"
fi
measure "xargs -P 4 (4 at a time)" xargs -P 4 -d '\n' -n 1 -a "$work/cmds" sh -c
