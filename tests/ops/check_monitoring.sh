#!/usr/bin/env bash
# The alert rules, the Prometheus configs and the Grafana dashboard, checked with Prometheus'
# own tools (promtool):
# the rules parse and fire as alerts.test.yml expects; every dashboard query parses as PromQL
# (each becomes a recording rule that `promtool check rules` reads) and the dashboard's
# structure is what Grafana loads (unique panel ids, a data source variable, panels on the
# 24-column grid). That the metrics they use exist is a Rust test on a running node
# (crates/cli/tests/cli.rs: every_metric_the_dashboard_and_the_alerts_use_is_served).
set -euo pipefail
cd "$(dirname "$0")/../.."

promtool check rules deploy/prometheus/alerts.yml
(cd deploy/prometheus && promtool test rules alerts.test.yml)

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# The docker-compose Prometheus configs (plain, and with TLS on the edges), with the paths the
# containers mount pointed at the repository's files.
touch "$scratch/tls.crt"
for config in prometheus.yml prometheus-tls.yml; do
  sed -e "s#/etc/prometheus/alerts.yml#$(pwd)/deploy/prometheus/alerts.yml#" \
      -e "s#/etc/prometheus/tls.crt#$scratch/tls.crt#" \
      "deploy/prometheus/$config" >"$scratch/$config"
  promtool check config --syntax-only "$scratch/$config"
done
python3 - deploy/grafana/switchboard.json "$scratch/dashboard-rules.yml" <<'PY'
import json, sys
dashboard = json.load(open(sys.argv[1]))
assert dashboard.get("uid") and dashboard.get("title"), "a dashboard needs a uid and a title"
variables = {v["name"] for v in dashboard["templating"]["list"]}
assert "datasource" in variables, "queries go through the ${datasource} variable"
ids, rules = set(), []
for panel in dashboard["panels"]:
    assert panel["id"] not in ids, f"panel id {panel['id']} used twice"
    ids.add(panel["id"])
    grid = panel["gridPos"]
    assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, f"{panel['title']}: off the 24-column grid"
    if panel["type"] == "row":
        continue
    assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
    assert panel["targets"], f"{panel['title']}: no query"
    for target in panel["targets"]:
        expr = target["expr"].replace("$__rate_interval", "5m").replace("$instance", ".*")
        rules.append({"record": f"dashboard:panel{panel['id']}:{target['refId'].lower()}", "expr": expr})
with open(sys.argv[2], "w") as f:
    json.dump({"groups": [{"name": "dashboard", "rules": rules}]}, f)
print(f"dashboard: {len(ids)} panels, {len(rules)} queries")
PY
promtool check rules "$scratch/dashboard-rules.yml"
