#!/bin/sh
# Run a static dagrun on a bare BusyBox system: a chroot holding nothing but
# busybox, one symlink per applet, /dev/null and /tmp.  It runs the
# shell-only example twice, without /proc and with /proc mounted, and checks
# the exit status and the result file each time.
#
# usage: t/busybox.sh ./dagrun-static      (as root; needs busybox-static)
set -u

die() {
	echo "t/busybox.sh: FAIL: $*" >&2
	exit 1
}

[ $# -eq 1 ] || { echo "usage: $0 path/to/static/dagrun" >&2; exit 2; }
BIN=$1
HERE=$(cd "$(dirname "$0")" && pwd) || exit 1
EX=$HERE/../examples/shell-only

[ "$(id -u)" -eq 0 ] || die "needs root (chroot, mknod)"
[ -f "$BIN" ] && [ -x "$BIN" ] || die "$BIN: not an executable file"
[ -f "$EX/dagrun.ini" ] || die "$EX/dagrun.ini is missing"
BUSYBOX=
for b in /bin/busybox /usr/bin/busybox; do
	[ -x "$b" ] && { BUSYBOX=$b; break; }
done
[ -n "$BUSYBOX" ] || die "busybox not found (apt-get install busybox-static)"
CHROOT=$(command -v chroot) || die "chroot not found"
if command -v file >/dev/null 2>&1; then
	file -L "$BUSYBOX" | grep -q 'statically linked' ||
		die "$BUSYBOX is not statically linked (install busybox-static, not busybox)"
	file -L "$BIN" | grep -q 'statically linked' ||
		die "$BIN is not statically linked (make static)"
fi

ROOT=$(mktemp -d "${TMPDIR:-/tmp}/dagrun-busybox.XXXXXX") || die "mktemp failed"
cleanup() {
	if [ -d "$ROOT/proc" ] && grep -q " $ROOT/proc " /proc/mounts 2>/dev/null; then
		umount "$ROOT/proc" || { echo "t/busybox.sh: cannot unmount $ROOT/proc; left $ROOT" >&2; return; }
	fi
	rm -rf --one-file-system "$ROOT"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$ROOT/bin" "$ROOT/dev" "$ROOT/tmp" "$ROOT/proc" "$ROOT/ex" || die "cannot create $ROOT"
chmod 1777 "$ROOT/tmp"
cp "$BUSYBOX" "$ROOT/bin/busybox" || die "cannot copy $BUSYBOX"
n=0
for applet in $("$BUSYBOX" --list); do
	[ "$applet" = busybox ] && continue
	ln -s busybox "$ROOT/bin/$applet" || die "cannot link applet $applet"
	n=$((n + 1))
done
mknod -m 666 "$ROOT/dev/null" c 1 3 || die "mknod $ROOT/dev/null failed"
cp "$BIN" "$ROOT/bin/dagrun" || die "cannot copy $BIN"
echo "t/busybox.sh: root $ROOT: busybox with $n applets, $(wc -c < "$BIN") byte dagrun"

expect='count 100
sum 5050
max 100'

# $1: label; runs the example in a fresh copy and checks it
runex() {
	rm -rf "$ROOT/ex" && cp -R "$EX" "$ROOT/ex" || die "cannot copy $EX"
	rm -rf "$ROOT/ex/.dagrun" "$ROOT/ex"/*.txt "$ROOT/ex"/*.tmp
	out=$(env -i PATH=/bin HOME=/ "$CHROOT" "$ROOT" /bin/dagrun -C /ex 2>&1)
	rc=$?
	[ -z "$out" ] || printf '%s\n' "$out" | sed 's/^/    /'
	case $rc in
	0) ;;
	126|127) die "$1: dagrun did not start in the chroot (exit $rc; is it static?)" ;;
	*) die "$1: dagrun exited $rc, expected 0" ;;
	esac
	[ -f "$ROOT/ex/result.txt" ] || die "$1: no result.txt"
	got=$(cat "$ROOT/ex/result.txt")
	[ "$got" = "$expect" ] ||
		die "$1: result.txt is
$got
expected
$expect"
	[ -s "$ROOT/ex/.dagrun/journal" ] || die "$1: no journal in .dagrun/"
	echo "t/busybox.sh: ok: $1"
}

runex "no /proc"
# what needs /proc is said once to be unavailable; a gate asked for that
# needs it refuses the run, nothing run
n=$(grep -c 'unavailable on this system (/proc): cpu_percent, memory_percent' \
	"$ROOT/ex/.dagrun/main.log")
[ "$n" -eq 1 ] || die "no /proc: main.log says $n times what is unavailable, expected once"
rm -rf "$ROOT/ex/.dagrun" "$ROOT/ex"/*.txt
printf '[resources]\nmemory_percent = 90\n' | cat - "$EX/dagrun.ini" > "$ROOT/ex/dagrun.ini"
out=$(env -i PATH=/bin HOME=/ "$CHROOT" "$ROOT" /bin/dagrun -C /ex 2>&1)
rc=$?
[ "$rc" -eq 2 ] || die "no /proc, memory_percent asked for: exit $rc, expected 2"
[ "$out" = "dagrun: memory_percent: cannot read memory use on this system (/proc/meminfo)" ] ||
	die "no /proc, memory_percent asked for: said '$out'"
[ ! -e "$ROOT/ex/result.txt" ] && [ ! -e "$ROOT/ex/.dagrun/journal" ] ||
	die "no /proc, memory_percent asked for: something ran"
echo "t/busybox.sh: ok: no /proc, a gate that needs it refused: $out"
mount -t proc proc "$ROOT/proc" || die "cannot mount proc on $ROOT/proc"
runex "with /proc"
umount "$ROOT/proc" || die "cannot unmount $ROOT/proc"
echo "t/busybox.sh: all ok"
