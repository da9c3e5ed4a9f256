#!/usr/bin/env bash
# Stops the control plane that cluster-up.sh started in DIR and deletes DIR, keeping its logs.
#
#   cluster-down.sh [--dir DIR]
#
# Only the processes recorded in DIR/pids are signalled (each by its process group, TERM then KILL
# after PULLWARDEN_STOP_GRACE seconds, default 10), never anything found by name. Logs are moved to
# ${PULLWARDEN_CACHE:-~/.cache/pullwarden}/cluster-logs/last (replacing the previous copy).
# Idempotent: a missing or already stopped DIR is fine.
set -euo pipefail

scripts=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dir=${PULLWARDEN_CLUSTER_DIR:-/tmp/pullwarden-cluster-$(id -u)}
while [ $# -gt 0 ]; do
  case $1 in
    --dir) dir=$2; shift 2 ;;
    --dir=*) dir=${1#*=}; shift ;;
    -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 0 ;;
    *) echo "cluster-down: unknown argument: $1" >&2; exit 2 ;;
  esac
done
log() { echo "cluster-down: $*" >&2; }

if [ ! -d "$dir" ]; then log "nothing to stop: $dir does not exist"; exit 0; fi
dir=$(cd "$dir" && pwd -P)
# shellcheck source=cluster-lib.sh
. "$scripts/cluster-lib.sh"
if [ ! -e "$marker" ]; then
  log "$dir was not created by cluster-up.sh; leaving it alone"
  exit 0
fi

# The owner watchdog and a user may both run this at once; the loser waits, then finds no marker.
exec 9<"$dir"
flock 9
if [ ! -e "$marker" ]; then log "already stopped by someone else"; exit 0; fi

grace=${PULLWARDEN_STOP_GRACE:-10}

# A cluster-up.sh still starting this plane would keep launching components behind our back. It is
# not a group leader (it shares its caller's group), so only that one pid is killed, and with KILL
# so that its own failure handler does not call us recursively.
if pid=$(recorded_pid up); then
  log "killing cluster-up.sh (pid $pid), which was still starting this plane"
  kill -KILL "$pid" 2>/dev/null || true
fi

# stop NAMES...: TERM each recorded process group, wait up to $grace seconds for all of them, then
# KILL whatever is left.
stop() {
  local name pid groups=() deadline g left
  for name in "$@"; do
    pid=$(recorded_pid "$name") || continue
    # The watchdog execs into this script, so it is us; never signal our own group.
    if [ "$pid" = $$ ]; then continue; fi
    # cluster-up starts every process with setsid, making its pid the group id. If that ever does
    # not hold, signal only the pid rather than a group that is not ours.
    if [ "$(ps -o pgid= -p "$pid" | tr -d ' ')" = "$pid" ]; then
      kill -TERM -- "-$pid" 2>/dev/null || true
      groups+=("$pid")
    else
      kill -TERM "$pid" 2>/dev/null || true
      groups+=("$pid")
    fi
    log "sent TERM to $name (pid $pid)"
  done
  [ "${#groups[@]}" -gt 0 ] || return 0
  deadline=$((SECONDS + grace))
  while :; do
    left=()
    for g in "${groups[@]}"; do group_alive "$g" && left+=("$g"); done
    [ "${#left[@]}" -gt 0 ] || return 0
    if [ "$SECONDS" -ge "$deadline" ]; then
      for g in "${left[@]}"; do
        log "process group $g still running after ${grace}s; sending KILL"
        kill -KILL -- "-$g" 2>/dev/null || kill -KILL "$g" 2>/dev/null || true
      done
      return 0
    fi
    sleep 0.1
  done
}
# Processes the test harness started against this plane (operators, emulators) registered
# themselves as extra-*.pid; they go first so nothing outlives the API server it talks to.
extras=()
for f in "$piddir"/extra-*.pid; do
  [ -e "$f" ] || continue
  extras+=("$(basename "$f" .pid)")
done
if [ "${#extras[@]}" -gt 0 ]; then stop "${extras[@]}"; fi
stop watchdog
# Reverse start order: clients of the apiserver first, etcd last.
stop kwok kube-scheduler kube-controller-manager
stop kube-apiserver
stop etcd

if [ -d "$logdir" ]; then
  cp "$dir/timings" "$logdir/" 2>/dev/null || true
  dest_root=${PULLWARDEN_CACHE:-$HOME/.cache/pullwarden}/cluster-logs
  mkdir -p "$dest_root"
  # Stage under a unique name first, so two planes stopping at once cannot nest one log dir in the
  # other.
  staged=$dest_root/.incoming.$$
  if mv -T "$logdir" "$staged" && rm -rf "$dest_root/last" && mv -T "$staged" "$dest_root/last"; then
    log "logs saved to $dest_root/last"
  else
    log "could not save logs to $dest_root/last"
  fi
fi
rm -rf "$dir"
log "stopped; removed $dir"
