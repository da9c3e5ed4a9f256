# shellcheck shell=bash disable=SC2034,SC2154
# Helpers shared by cluster-up.sh and cluster-down.sh (sourced, not run). Expects $dir to hold the
# absolute state directory.

marker=$dir/.pullwarden-cluster
piddir=$dir/pids
logdir=$dir/logs
# Start order; cluster-down stops them in reverse.
components=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

# proc_start_time PID: the process's start time in clock ticks since boot, or nothing if it is gone
# (or a zombie). A pid plus its start time names one process for good, so a recycled pid is never
# mistaken for ours.
proc_start_time() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
  # Field 2 (comm) may contain spaces; everything after the last ')' is space-separated.
  stat=${stat##*) }
  # shellcheck disable=SC2086
  set -- $stat
  [ "$1" = Z ] && return 0
  echo "${20}"
}

# record_pid NAME PID: writes "PID STARTTIME" to NAME's pid file.
record_pid() { echo "$2 $(proc_start_time "$2")" >"$piddir/$1.pid"; }

# recorded_pid NAME: prints NAME's pid if that exact process is still alive.
recorded_pid() {
  local pid start
  [ -f "$piddir/$1.pid" ] || return 1
  read -r pid start <"$piddir/$1.pid" || true
  [ -n "${pid:-}" ] && [ -n "${start:-}" ] && [ "$(proc_start_time "$pid")" = "$start" ] || return 1
  echo "$pid"
}
pid_alive() { recorded_pid "$1" >/dev/null; }

# group_alive PGID: true while any non-zombie process is in the process group.
group_alive() { ps -eo pgid=,stat= | awk -v g="$1" '$1 == g && $2 !~ /^Z/ { found = 1 } END { exit !found }'; }

plane_is_live() {
  [ -e "$marker" ] && [ -f "$dir/kubeconfig" ] && [ -f "$dir/binpath" ] || return 1
  local c
  for c in "${components[@]}"; do pid_alive "$c" || return 1; done
  "$(cat "$dir/binpath")/kubectl" --kubeconfig="$dir/kubeconfig" --request-timeout=5s get --raw=/readyz >/dev/null 2>&1
}
