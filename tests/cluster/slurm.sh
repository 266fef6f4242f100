#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, for the cluster test (tests/cluster/test_slurm.py):
# Debian's slurm-wlm 22.05 and munge, started without systemd, configured in a folder of its own.
#
#   tests/cluster/slurm.sh install   apt-get install slurm-wlm munge (root; skipped when sbatch is there)
#   tests/cluster/slurm.sh start DIR write DIR/slurm.conf, start munged, slurmctld, slurmd; wait for the node
#   tests/cluster/slurm.sh stop DIR  stop every daemon that `start DIR` started (by its pid file)
#
# The configuration lives in DIR; /etc/slurm/slurm.conf and gres.conf link to it, because the jobs' own srun
# calls find it only there (snakemake's jobstep executor drops SLURM_* variables, SLURM_CONF among them, before
# srun). An /etc/slurm/slurm.conf that is not such a link is never touched: start refuses. Two partitions share the one node: "cpu" (the
# default) and "gpu", whose jobs may ask for the node's GRES gpu (a count without a device file), so
# `sbatch --gpus=1` is scheduled and accounted for as on a real GPU node. Without slurmdbd there is no
# accounting: clients poll with squeue, which keeps a finished job for MinJobAge seconds.
set -euo pipefail

command=${1:?usage: slurm.sh install | start DIR | stop DIR}

install() {
	if command -v sbatch >/dev/null && command -v slurmctld >/dev/null && command -v munged >/dev/null; then
		return
	fi
	if [[ $(id -u) != 0 ]]; then
		echo "slurm.sh: installing slurm-wlm and munge needs root (apt-get)" >&2
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q >/dev/null
	apt-get install -y -q --no-install-recommends slurm-wlm munge >/dev/null
}

write_conf() {
	local dir=$1 host
	host=$(hostname -s)
	mkdir -p "$dir"/{state,spool,log,munge}
	cat >"$dir/slurm.conf" <<EOF
ClusterName=avemotion-test
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket.2
SlurmctldPort=${SLURMCTLD_PORT:-6817}
SlurmdPort=${SLURMD_PORT:-6818}
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
GresTypes=gpu
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
ReturnToService=2
# The node is declared, not probed: 4 CPUs, 64 GB and 2 GPUs whatever the machine has, so that the jobs' real
# requests (a group job's 4 CPUs, a backbone job's 16 GB and one GPU) are scheduled as on a cluster node, two
# at a time. Nothing enforces them here (task/none, no cgroups): the demo's jobs are small.
SlurmdParameters=config_overrides
MinJobAge=7200
InactiveLimit=0
KillWait=5
Waittime=0
NodeName=$host NodeAddr=127.0.0.1 CPUs=4 RealMemory=64000 Gres=gpu:2 State=UNKNOWN
PartitionName=cpu Nodes=$host Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$host Default=NO MaxTime=INFINITE State=UP
EOF
	# Two GPUs that are character devices every machine has: slurmd counts device files, and with task/none
	# nothing binds or restricts them; a job only sees CUDA_VISIBLE_DEVICES and SLURM_GPUS set.
	printf 'NodeName=%s Name=gpu File=%s\n' "$host" /dev/null "$host" /dev/zero >"$dir/gres.conf"
}

link_conf() {
	local dir=$1 name
	for name in slurm.conf gres.conf; do
		if [[ -e /etc/slurm/$name && ! -L /etc/slurm/$name ]]; then
			echo "slurm.sh: /etc/slurm/$name exists and is not a test cluster's link; not replacing it" >&2
			exit 1
		fi
		ln -sfn "$dir/$name" "/etc/slurm/$name"
	done
}

start() {
	local dir
	install
	mkdir -p "$1"
	dir=$(cd "$1" && pwd)
	write_conf "$dir"
	mkdir -p /etc/slurm
	link_conf "$dir"
	export SLURM_CONF=$dir/slurm.conf
	# munged: its own socket, pid and log in DIR, the key Debian's package created.
	munged --socket="$dir/munge/munge.socket.2" --pid-file="$dir/munge/munged.pid" \
		--log-file="$dir/log/munged.log" --seed-file="$dir/munge/munged.seed" --force
	slurmctld -f "$SLURM_CONF" -i
	slurmd -f "$SLURM_CONF"
	# Ready when the node is idle (up to 60 s): an unresponsive node would queue every job forever.
	for _ in $(seq 120); do
		if sinfo -h -N -o '%t' 2>/dev/null | grep -qx idle; then
			return
		fi
		sleep 0.5
	done
	echo "slurm.sh: the node did not come up; logs in $dir/log" >&2
	sinfo -N -l >&2 || true
	tail -n 20 "$dir"/log/*.log >&2 || true
	exit 1
}

stop() {
	local dir pidfile pid name
	dir=$(cd "$1" && pwd)
	for pidfile in "$dir/slurmd.pid" "$dir/slurmctld.pid" "$dir/munge/munged.pid"; do
		[[ -s $pidfile ]] || continue
		pid=$(<"$pidfile")
		kill "$pid" 2>/dev/null || continue
		for _ in $(seq 50); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -9 "$pid" 2>/dev/null || true
		rm -f "$pidfile"
	done
	for name in slurm.conf gres.conf; do
		if [[ $(readlink "/etc/slurm/$name" 2>/dev/null) == "$dir/$name" ]]; then
			rm -f "/etc/slurm/$name"
		fi
	done
}

case $command in
install) install ;;
start) start "${2:?usage: slurm.sh start DIR}" ;;
stop) stop "${2:?usage: slurm.sh stop DIR}" ;;
*)
	echo "usage: slurm.sh install | start DIR | stop DIR" >&2
	exit 2
	;;
esac
