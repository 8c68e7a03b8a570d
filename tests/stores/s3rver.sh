#!/usr/bin/env bash
# s3rver (npm package, a Node fake S3 common in development) on 127.0.0.1:4568 with bucket "rec",
# for the compatibility suite (tests/compat/).
# Usage: s3rver.sh start | stop | status.   Needs: node and npm (the script installs s3rver itself).
# Credentials: S3RVER / S3RVER (s3rver's built-in pair). State in $STORES_DIR/s3rver (default
# /tmp/streamproxy-stores/s3rver); stop kills only the PID this script recorded.
set -eu
d=${STORES_DIR:-/tmp/streamproxy-stores}/s3rver
port=4568
version=3.7.1
pidfile=$d/s3rver.pid
running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }
case "${1:-start}" in
start)
  if running; then echo "s3rver already running (S3 on http://127.0.0.1:$port)"; exit 0; fi
  mkdir -p "$d"
  if [ ! -x "$d/node_modules/.bin/s3rver" ]; then
    (cd "$d" && npm init -y >/dev/null && npm install --no-audit --no-fund "s3rver@$version" >/dev/null)
  fi
  rm -rf "$d/data" && mkdir -p "$d/data"
  "$d/node_modules/.bin/s3rver" -d "$d/data" -a 127.0.0.1 -p "$port" --configure-bucket rec \
    >"$d/s3rver.log" 2>&1 &
  echo $! > "$pidfile"
  for _ in $(seq 1 100); do curl -sf -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.2; done
  curl -sf -o /dev/null "http://127.0.0.1:$port/" || { echo "s3rver.sh: not ready (log: $d/s3rver.log)" >&2; exit 1; }
  echo "s3rver $version pid $(cat "$pidfile") on http://127.0.0.1:$port (bucket rec, keys S3RVER/S3RVER)"
  ;;
stop)
  if [ -f "$pidfile" ]; then kill "$(cat "$pidfile")" 2>/dev/null || true; rm -f "$pidfile"; fi
  ;;
status)
  running && echo "s3rver running" || { echo "s3rver not running"; exit 1; }
  ;;
*) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
