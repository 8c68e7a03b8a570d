#!/usr/bin/env bash
# OpenStack Swift 2.30 (Debian) with its s3api middleware, one replica, all on 127.0.0.1; S3 on :8089,
# for the compatibility suite (tests/compat/).
# Usage: swift.sh start | stop | status.   Needs: apt-get install swift swift-proxy swift-account
#   swift-container swift-object memcached python3-memcache
# S3 credentials (tempauth): access key "test:tester", secret "testing"; bucket "rec" is created with boto3
# ($PY, default python3). State and PIDs in $STORES_DIR/swift (default /tmp/streamproxy-stores/swift);
# stop kills only those PIDs.
set -eu
d=${STORES_DIR:-/tmp/streamproxy-stores}/swift
port=8089
running() {
  local n=0 p
  for p in "$d"/run/*.pid; do [ -f "$p" ] && kill -0 "$(cat "$p")" 2>/dev/null && n=$((n + 1)); done
  [ "$n" -ge 5 ]
}
case "${1:-start}" in
start)
  if running; then echo "swift already running (S3 on http://127.0.0.1:$port)"; exit 0; fi
  "$0" stop
  rm -rf "$d" && mkdir -p "$d/node/d1" "$d/run" "$d/etc"
  chown -R swift: "$d/node"  # the servers drop to user swift
  cat > "$d/etc/swift.conf" <<C
[swift-hash]
swift_hash_path_suffix = interop
swift_hash_path_prefix = interop
[storage-policy:0]
name = gold
default = yes
C
  for s in account:6202 container:6201 object:6200; do
    n=${s%%:*}; p=${s##*:}
    (cd "$d/etc" && swift-ring-builder $n.builder create 6 1 1 >/dev/null \
      && swift-ring-builder $n.builder add r1z1-127.0.0.1:$p/d1 100 >/dev/null \
      && { swift-ring-builder $n.builder rebalance >/dev/null || true; })
    cat > "$d/etc/$n-server.conf" <<C
[DEFAULT]
swift_dir = $d/etc
devices = $d/node
mount_check = false
bind_ip = 127.0.0.1
bind_port = $p
workers = 1
log_facility = LOG_LOCAL2
[pipeline:main]
pipeline = $n-server
[app:$n-server]
use = egg:swift#$n
[$n-replicator]
[$n-updater]
[$n-auditor]
C
  done
  cat > "$d/etc/proxy-server.conf" <<C
[DEFAULT]
swift_dir = $d/etc
bind_ip = 127.0.0.1
bind_port = $port
workers = 1
[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats bulk s3api tempauth copy slo dlo versioned_writes symlink proxy-logging proxy-server
[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true
allow_account_management = true
[filter:tempauth]
use = egg:swift#tempauth
user_test_tester = testing .admin
[filter:s3api]
use = egg:swift#s3api
location = us-east-1
[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:11222
[filter:catch_errors]
use = egg:swift#catch_errors
[filter:gatekeeper]
use = egg:swift#gatekeeper
[filter:healthcheck]
use = egg:swift#healthcheck
[filter:proxy-logging]
use = egg:swift#proxy_logging
[filter:listing_formats]
use = egg:swift#listing_formats
[filter:bulk]
use = egg:swift#bulk
[filter:copy]
use = egg:swift#copy
[filter:slo]
use = egg:swift#slo
[filter:dlo]
use = egg:swift#dlo
[filter:versioned_writes]
use = egg:swift#versioned_writes
[filter:symlink]
use = egg:swift#symlink
C
  memcached -l 127.0.0.1 -p 11222 -U 0 -u root >"$d/memcached.log" 2>&1 &
  echo $! > "$d/run/memcached.pid"
  for n in account container object proxy; do
    swift-$n-server "$d/etc/$n-server.conf" >"$d/$n.log" 2>&1 &
    echo $! > "$d/run/$n.pid"
  done
  for _ in $(seq 1 60); do curl -sf -o /dev/null "http://127.0.0.1:$port/healthcheck" && break; sleep 0.5; done
  curl -sf -o /dev/null "http://127.0.0.1:$port/healthcheck" || { echo "swift.sh: proxy not ready (logs in $d)" >&2; exit 1; }
  "${PY:-python3}" - "$port" <<'PY'
import sys, time, boto3
s3 = boto3.client('s3', endpoint_url=f'http://127.0.0.1:{sys.argv[1]}', region_name='us-east-1',
                  aws_access_key_id='test:tester', aws_secret_access_key='testing')
for attempt in range(20):  # the account/container servers may answer a moment after the proxy
    try:
        s3.create_bucket(Bucket='rec'); break
    except Exception:
        if attempt == 19: raise
        time.sleep(0.5)
PY
  echo "swift $(dpkg-query -W -f '${Version}' swift-proxy 2>/dev/null) + s3api on http://127.0.0.1:$port (bucket rec, keys test:tester/testing)"
  ;;
stop)
  for p in "$d"/run/*.pid; do
    [ -f "$p" ] || continue
    pid=$(cat "$p"); kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$p"
  done
  ;;
status)
  running && echo "swift running" || { echo "swift not running"; exit 1; }
  ;;
*) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
