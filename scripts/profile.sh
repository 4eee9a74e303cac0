#!/usr/bin/env bash
# Profiles a running process (a switchboard node, or sb-load) with perf and draws a flamegraph.
#
#   scripts/profile.sh PID [SECONDS] [OUT.svg]
#
# Samples on-CPU stacks (user and kernel) at 999 Hz for SECONDS (default 10) with DWARF call
# graphs (release builds keep line tables, see [profile.release]), then folds them with inferno
# into OUT.svg (default flamegraph-PID.svg). Installs perf (Debian's linux-perf) and inferno
# (cargo install) when missing. Needs root or kernel.perf_event_paranoid <= 1.
set -euo pipefail

pid=${1:?usage: scripts/profile.sh PID [SECONDS] [OUT.svg]}
seconds=${2:-10}
out=${3:-flamegraph-$pid.svg}
[ -d "/proc/$pid" ] || { echo "no process $pid" >&2; exit 1; }

if ! command -v perf >/dev/null; then
  echo "installing perf (linux-perf)" >&2
  apt-get update -qq && apt-get install -y -qq linux-perf >/dev/null
fi
if ! command -v inferno-flamegraph >/dev/null; then
  echo "installing inferno (cargo install --locked inferno)" >&2
  cargo install --locked --quiet inferno
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "sampling $pid for ${seconds}s" >&2
perf record -F 999 --call-graph dwarf,16384 -p "$pid" -o "$work/perf.data" -- sleep "$seconds" 2>"$work/record.log" \
  || { cat "$work/record.log" >&2; exit 1; }
perf script -i "$work/perf.data" 2>/dev/null | inferno-collapse-perf >"$work/folded"
inferno-flamegraph --title "$(tr '\0' ' ' </proc/"$pid"/cmdline 2>/dev/null || echo "pid $pid"), ${seconds}s" \
  <"$work/folded" >"$out"
echo "wrote $out ($(wc -l <"$work/folded") distinct stacks)" >&2
