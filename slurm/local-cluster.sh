#!/usr/bin/env bash
# A real one-node Slurm cluster on localhost, for the Slurm tests and CI (Debian/Ubuntu, root,
# no systemd needed). Idempotent: `start` installs what is missing, writes the config, starts
# only the daemons that are down and waits until the node is idle.
#
#   bash slurm/local-cluster.sh start    # ~15 s the first time (apt), < 3 s after
#   bash slurm/local-cluster.sh status
#   bash slurm/local-cluster.sh stop     # slurmd, slurmctld, slurmdbd, mariadb, munged
#
# Accounting (slurmdbd + MariaDB) is on because submitit needs `sacct` to notice a job that
# died without writing its result; without it such a sweep waits forever.
# Knobs: LOCAL_SLURM_PARTITION (debug), LOCAL_SLURM_CPUS (nproc; more oversubscribes),
# LOCAL_SLURM_MEM_MB (90% of RAM), LOCAL_SLURM_READY_S (60).
set -euo pipefail

ACTION=${1:-}
PARTITION=${LOCAL_SLURM_PARTITION:-debug}
READY_S=${LOCAL_SLURM_READY_S:-60}
CLUSTER=localcluster
CONF=/etc/slurm/slurm.conf
DBD_CONF=/etc/slurm/slurmdbd.conf
LOGDIR=/var/log/slurm
CTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid
DBD_PID=/run/slurmdbd.pid
MUNGE_PID=/run/munge/munged.pid
MYSQL_PID=/run/mysqld/mysqld.pid

log() { printf '[local-cluster] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }
alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }
wait_for() {  # wait_for SECONDS CMD...: poll every 0.1 s until CMD succeeds
  local n=$(( $1 * 10 )); shift
  while (( n-- > 0 )); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  return 1
}

stop_pidfile() {  # stop_pidfile NAME PIDFILE: TERM, then KILL after 15 s
  local name=$1 pf=$2 pid i
  alive "$pf" || { rm -f "$pf"; return 0; }
  pid=$(cat "$pf"); log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then log "$name did not exit: SIGKILL"; kill -KILL "$pid" || true; fi
  rm -f "$pf"
}

do_stop() {
  # slurmd first: it kills the running job steps.
  stop_pidfile slurmd "$SLURMD_PID"
  stop_pidfile slurmctld "$CTLD_PID"
  stop_pidfile slurmdbd "$DBD_PID"
  stop_pidfile mariadbd "$MYSQL_PID"
  stop_pidfile munged "$MUNGE_PID"
}

install_packages() {
  local pkgs=() made_policy=0
  command -v slurmctld >/dev/null || pkgs+=(slurmctld)
  command -v slurmd >/dev/null || pkgs+=(slurmd)
  command -v sbatch >/dev/null || pkgs+=(slurm-client)
  command -v munged >/dev/null || pkgs+=(munge)
  command -v slurmdbd >/dev/null || pkgs+=(slurmdbd)
  command -v mariadbd >/dev/null || pkgs+=(mariadb-server)
  (( ${#pkgs[@]} )) || return 0
  command -v apt-get >/dev/null || die "apt-get not found: install ${pkgs[*]} by hand"
  log "apt-get install ${pkgs[*]}"
  # No init system here: keep the packages' postinst scripts from starting services.
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; made_policy=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -q && apt-get install -y -q --no-install-recommends "${pkgs[@]}"; } \
    > /var/log/local-cluster-apt.log 2>&1 || { tail -30 /var/log/local-cluster-apt.log >&2; exit 1; }
  if (( made_policy )); then rm -f /usr/sbin/policy-rc.d; fi
}

install_if_changed() {  # install_if_changed TMPFILE DEST MODE FLAGVAR: sets FLAGVAR=1 if DEST changed
  if [[ -f $2 ]] && cmp -s "$1" "$2"; then rm -f "$1"; return 0; fi
  install -m "$3" "$1" "$2"; rm -f "$1"; printf -v "$4" 1; log "wrote $2"
}

write_slurm_conf() {
  local host cpus mem_mb topo tmp
  host=$(hostname -s)
  # JAX's Slurm auto-detection uses the node name as coordinator address: it must resolve.
  getent hosts "$host" >/dev/null || echo "127.0.0.1 $host" >> /etc/hosts
  cpus=${LOCAL_SLURM_CPUS:-$(nproc)}
  mem_mb=${LOCAL_SLURM_MEM_MB:-$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)}
  if [[ $cpus == "$(nproc)" ]]; then
    # The topology exactly as slurmd detects it, so the node never drains for a mismatch.
    topo=$(slurmd -C | head -1 | grep -o 'CPUs=.*ThreadsPerCore=[0-9]*')
  else
    topo="CPUs=$cpus"  # oversubscribed; allowed by SlurmdParameters=config_overrides
  fi
  install -d -m 0755 /etc/slurm "$LOGDIR" /var/spool/slurmctld /var/spool/slurmd
  tmp=$(mktemp)
  cat > "$tmp" <<EOF
# written by slurm/local-cluster.sh
ClusterName=${CLUSTER}
SlurmctldHost=${host}(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
# a requeued job is eligible again after cred_expire + 1 s (default 120)
AuthInfo=cred_expire=10
MpiDefault=none
MailProg=/bin/true
# no cgroups in a container: plain process tracking, no task binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SlurmdParameters=config_overrides
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=${CTLD_PID}
SlurmdPidFile=${SLURMD_PID}
SlurmctldLogFile=${LOGDIR}/slurmctld.log
SlurmdLogFile=${LOGDIR}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
# memory is not consumable: --mem is only checked against RealMemory
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobCompType=jobcomp/none
# finished jobs stay visible to squeue/scontrol for an hour
MinJobAge=3600
# seconds between SIGTERM and SIGKILL: the time a preempted run has to save its checkpoint
KillWait=30
InactiveLimit=0
SlurmdTimeout=60
NodeName=${host} NodeAddr=127.0.0.1 ${topo} RealMemory=${mem_mb} State=UNKNOWN
PartitionName=${PARTITION} Nodes=${host} Default=YES MaxTime=INFINITE State=UP
EOF
  install_if_changed "$tmp" "$CONF" 0644 CONF_CHANGED
}

write_dbd_conf() {
  local tmp
  tmp=$(mktemp)
  cat > "$tmp" <<EOF
# written by slurm/local-cluster.sh
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
PidFile=${DBD_PID}
LogFile=${LOGDIR}/slurmdbd.log
DebugLevel=info
EOF
  install_if_changed "$tmp" "$DBD_CONF" 0600 DBD_CHANGED  # slurmdbd refuses a config others can read
}

start_munge() {
  alive "$MUNGE_PID" && return 0
  [[ -s /etc/munge/munge.key ]] || mungekey --create --keyfile=/etc/munge/munge.key
  chown munge:munge /etc/munge/munge.key; chmod 0400 /etc/munge/munge.key
  install -d -o munge -g munge -m 0755 /run/munge
  install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
  log "starting munged"
  runuser -u munge -- /usr/sbin/munged
  munge -n | unmunge >/dev/null
}

start_accounting() {
  if ! alive "$MYSQL_PID"; then
    log "starting mariadbd"
    install -d -o mysql -g root -m 0755 /run/mysqld
    # root@localhost authenticates through the unix socket: slurmdbd (root) needs no password.
    setsid /usr/sbin/mariadbd --user=mysql --skip-log-error >> "$LOGDIR/mariadb.log" 2>&1 < /dev/null &
    wait_for 60 mariadb-admin --silent ping || die "mariadb did not start; see $LOGDIR/mariadb.log"
  fi
  if ! alive "$DBD_PID"; then log "starting slurmdbd"; /usr/sbin/slurmdbd; fi
  wait_for 30 sacctmgr -n show cluster || die "slurmdbd does not answer; see $LOGDIR/slurmdbd.log"
}

wait_idle() {
  local host state="" i
  host=$(hostname -s)
  for i in $(seq 1 $(( READY_S * 10 ))); do
    state=$(sinfo -h -n "$host" -o '%T' 2>/dev/null || true)
    case $state in
      idle*|mixed*|allocated*|completing*) log "node $host is $state"; return 0 ;;
      drain*|down*|fail*)
        if (( i % 20 == 0 )); then scontrol update NodeName="$host" State=RESUME 2>/dev/null || true; fi ;;
    esac
    sleep 0.1
  done
  scontrol show node "$host" >&2 || true
  die "node not ready after ${READY_S} s (state '$state'); see $LOGDIR/*.log"
}

do_start() {
  CONF_CHANGED=0 DBD_CHANGED=0
  install_packages
  write_slurm_conf
  write_dbd_conf
  start_munge
  if (( CONF_CHANGED || DBD_CHANGED )) && { alive "$CTLD_PID" || alive "$SLURMD_PID"; }; then
    log "config changed: restarting slurmctld and slurmd"
    stop_pidfile slurmd "$SLURMD_PID"
    stop_pidfile slurmctld "$CTLD_PID"
  fi
  if (( DBD_CHANGED )); then stop_pidfile slurmdbd "$DBD_PID"; fi
  start_accounting
  if ! alive "$CTLD_PID"; then log "starting slurmctld"; /usr/sbin/slurmctld; fi
  if ! alive "$SLURMD_PID"; then log "starting slurmd"; /usr/sbin/slurmd; fi
  wait_idle
  if ! sacctmgr -n -P show cluster format=cluster | grep -qx "$CLUSTER"; then
    # slurmctld registers the cluster itself on first contact; make sure of it.
    sacctmgr -i add cluster "$CLUSTER" >/dev/null
    log "registered cluster $CLUSTER with slurmdbd"
  fi
}

do_status() {
  local name pf rc=0
  for name in munged:$MUNGE_PID mariadbd:$MYSQL_PID slurmdbd:$DBD_PID slurmctld:$CTLD_PID slurmd:$SLURMD_PID; do
    pf=${name#*:}
    if alive "$pf"; then echo "${name%%:*}: running (pid $(cat "$pf"))"; else echo "${name%%:*}: stopped"; rc=1; fi
  done
  sinfo 2>/dev/null || rc=1
  return $rc
}

case $ACTION in
  start|stop) [[ $(id -u) == 0 ]] || die "run as root: it installs packages and starts system daemons"
              "do_$ACTION" ;;
  status) do_status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
