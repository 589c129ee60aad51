#!/bin/sh
# rss.sh -- dagrun's own peak memory for a fan-out of 1,000, 10,000 and
# 100,000 inputs: once loading and planning only (-n, the graph itself) and
# once running every job (/bin/true {input}, 2 at once).  The difference,
# per job, is what running costs beyond the graph; it must stay a few bytes.
#
#   DAGRUN=./dagrun-static sh t/bench/rss.sh        (about two minutes)
set -eu
DAGRUN=$(cd "$(dirname "${DAGRUN:-./dagrun}")" && pwd)/$(basename "${DAGRUN:-./dagrun}")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

here=$(cd "$(dirname "$0")" && pwd)
# peak RSS (KiB) of a command, measured by a launcher smaller than dagrun
musl-gcc -static -Os -o "$work/maxrss" "$here/maxrss.c" 2>/dev/null ||
	cc -static -Os -o "$work/maxrss" "$here/maxrss.c"
peak() {
	"$work/maxrss" "$@" || { echo "rss.sh: failed: $*" >&2; exit 1; }
}

printf '%8s %12s %12s %12s %14s\n' inputs "plan KiB" "run KiB" "run - plan" "bytes per job"
for n in ${SIZES:-1000 10000 100000}; do
	d=$work/$n
	mkdir -p "$d/in"
	(cd "$d/in" && seq -f 'f%06g' 1 "$n" | xargs touch)
	printf '[run]\njobs = 2\n[node each]\ninputs = in/*\ncmd = true {input}\n' > "$d/dagrun.ini"
	plan=$(peak "$DAGRUN" -C "$d" -n)
	run=$(peak "$DAGRUN" -C "$d" -q)
	awk -v n="$n" -v p="$plan" -v r="$run" 'BEGIN {
		printf "%8d %12d %12d %12d %14.1f\n", n, p, r, r - p, (r - p) * 1024 / n
	}'
	rm -rf "$d"
done
