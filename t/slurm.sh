#!/bin/sh
# A one-node Slurm cluster on this machine, for dagrun's Slurm tests.
#
#   t/slurm.sh start DIR   start munged, slurmctld and slurmd with everything
#                          (key, socket, config, spool, logs, PID files) in
#                          DIR; wait until the node is idle; print the line
#                          SLURM_CONF=DIR/slurm.conf and exit 0.  If they
#                          cannot start, print why on stderr, stop what did
#                          start and exit 1.
#   t/slurm.sh stop DIR    stop the daemons by the PIDs recorded in DIR.
#
# Slurm's clients (srun, squeue, scancel, sinfo) find this cluster through
# SLURM_CONF.  Run as root (slurmd must be able to run jobs as the user who
# submits them); Debian's packages: slurm-wlm munge.
set -u

usage() { echo "usage: t/slurm.sh start|stop DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
cmd=$1
case $2 in /*) dir=$2 ;; *) dir=$(pwd)/$2 ;; esac

stop() {
	for f in slurmd slurmctld munged; do
		[ -s "$dir/$f.pid" ] || continue
		pid=$(cat "$dir/$f.pid")
		kill "$pid" 2>/dev/null || { rm -f "$dir/$f.pid"; continue; }
		i=0
		while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do
			sleep 0.1; i=$((i + 1))
		done
		kill -9 "$pid" 2>/dev/null
		rm -f "$dir/$f.pid"
	done
	# the job steps slurmd started end with it
	pkill -9 -f "slurmstepd.*$dir" 2>/dev/null
	return 0
}

fail() {
	echo "slurm: $*" >&2
	for f in munged slurmctld slurmd; do
		[ -s "$dir/$f.log" ] || continue
		echo "--- last lines of $dir/$f.log" >&2
		tail -n 5 "$dir/$f.log" >&2
	done
	stop
	exit 1
}

# wait up to $1 tenths of a second for the command that follows to succeed
waitfor() {
	n=$1; shift
	i=0
	while ! "$@" >/dev/null 2>&1; do
		i=$((i + 1))
		[ $i -ge "$n" ] && return 1
		sleep 0.1
	done
}

case $cmd in
stop) stop; exit 0 ;;
start) ;;
*) usage ;;
esac

for p in munged mungekey slurmctld slurmd srun sinfo; do
	command -v "$p" >/dev/null 2>&1 || [ -x "/usr/sbin/$p" ] ||
		fail "$p not found (Debian: apt-get install slurm-wlm munge)"
done
[ "$(id -u)" -eq 0 ] || fail "the daemons must start as root"
PATH=$PATH:/usr/sbin

stop
mkdir -p "$dir/spool/ctld" "$dir/spool/d" "$dir/munge" || fail "cannot make $dir"
chmod 700 "$dir/munge"
rm -f "$dir"/*.log

# munge: a private key and socket, so nothing is shared with a system munged
[ -s "$dir/munge/munge.key" ] ||
	mungekey -c -k "$dir/munge/munge.key" 2>"$dir/munged.log" ||
	dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 2>/dev/null ||
	fail "cannot make a munge key"
chmod 400 "$dir/munge/munge.key"
munged --force --key-file="$dir/munge/munge.key" \
	--socket="$dir/munge/munge.sock" --pid-file="$dir/munged.pid" \
	--log-file="$dir/munged.log" --seed-file="$dir/munge/munge.seed" \
	>>"$dir/munged.log" 2>&1 || fail "munged did not start"
waitfor 50 test -S "$dir/munge/munge.sock" || fail "munged made no socket"

host=$(hostname -s 2>/dev/null || hostname)
cpus=$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)
memmb=$(awk '/^MemTotal:/ { print int($2 / 1024 / 2) }' /proc/meminfo 2>/dev/null)
[ -n "$memmb" ] || memmb=1024
port=${DAGRUN_SLURM_PORT:-16817}

cat > "$dir/slurm.conf" <<EOF
ClusterName=dagrun
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.sock
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$dir/spool/ctld
SlurmdSpoolDir=$dir/spool/d
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/pgid
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=64
ReturnToService=2
SlurmdTimeout=30
InactiveLimit=0
KillWait=2
MinJobAge=30
MessageTimeout=10
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memmb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
: > "$dir/cgroup.conf"
export SLURM_CONF="$dir/slurm.conf"

slurmctld -c -f "$SLURM_CONF" >>"$dir/slurmctld.log" 2>&1 ||
	fail "slurmctld did not start"
waitfor 100 test -s "$dir/slurmctld.pid" || fail "slurmctld wrote no PID file"
slurmd -f "$SLURM_CONF" >>"$dir/slurmd.log" 2>&1 || fail "slurmd did not start"
waitfor 100 test -s "$dir/slurmd.pid" || fail "slurmd wrote no PID file"

idle() { sinfo -h -n "$host" -o %T | grep -qx idle; }
waitfor 600 idle || fail "node $host not idle after 60s: $(sinfo -h -o '%T %E' 2>&1)"
echo "SLURM_CONF=$SLURM_CONF"
