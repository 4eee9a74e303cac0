#!/usr/bin/env python3
"""Gathers the fault matrix's findings (one JSON file per scenario, written by
crates/cli/tests/faults.rs) into one report and prints a table of them.

Usage: scripts/fault_report.py <findings dir> <report file>
"""
import json
import pathlib
import sys


def recovery_ms(f):
    for key in ("ready_after_ms", "ready_after_heal_ms", "ready_after_stall_ms", "followed_after_ms", "forced_failover_ms"):
        if key in f:
            return f[key]
    return None


def main():
    source, target = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    findings = [json.loads(p.read_text()) for p in sorted(source.glob("*.json"))]
    target.write_text(json.dumps(findings, indent=2) + "\n")
    print(f"{'scenario':<18} {'acked':>6} {'lost':>5} {'unknown':>8} {'reordered':>9} {'p99 ms':>7} {'ready ms':>9}  fault")
    for f in findings:
        h = f.get("history", {})
        ready = recovery_ms(f)
        print(
            f"{f['id']:<18} {h.get('acked', '-'):>6} {h.get('lost', '-'):>5} {h.get('indeterminate', '-'):>8} "
            f"{h.get('reordered', '-'):>9} {h.get('latency_ms', {}).get('p99', '-'):>7} "
            f"{ready if ready is not None else '-':>9}  {f['fault']}"
        )
    print(f"{len(findings)} scenarios; the report: {target}")


if __name__ == "__main__":
    main()
