#!/usr/bin/env bash
# A throw-away one-host Ceph RADOS Gateway (Debian's radosgw/ceph-mon/ceph-osd 16.2.x) serving S3 on
# 127.0.0.1:7480, for the compatibility suite (tests/compat/).
# One mon, one memstore OSD (RAM only), no cephx, no mgr; radosgw with the beast frontend, loopback only.
# Usage: ceph.sh start | stop | status.   Needs: apt-get install ceph-mon ceph-osd radosgw ceph-common
# S3 user: access key INTEROPKEY, secret INTEROPSECRET; bucket "rec" is created with boto3 ($PY, default python3).
# State and PID files live in $STORES_DIR/ceph (default /tmp/streamproxy-stores/ceph); stop kills only those PIDs.
set -eu
d=${STORES_DIR:-/tmp/streamproxy-stores}/ceph
conf=$d/ceph.conf
port=7480

running() { # every daemon this script started is still alive
  local n=0 p
  for p in "$d"/run/*.pid; do [ -f "$p" ] && kill -0 "$(cat "$p")" 2>/dev/null && n=$((n + 1)); done
  [ "$n" -ge 3 ]
}

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...: fail loudly instead of going on with a half-started store
  local secs=$1 what=$2; shift 2
  for _ in $(seq 1 "$secs"); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
  echo "ceph.sh: $what not ready after ${secs}s (logs in $d/log)" >&2
  exit 1
}

case "${1:-start}" in
start)
  if running; then echo "ceph already running (S3 on http://127.0.0.1:$port)"; exit 0; fi
  "$0" stop
  rm -rf "$d" && mkdir -p "$d/mon.a" "$d/osd.0" "$d/run" "$d/log" "$d/rgw"
  fsid=$(python3 -c 'import uuid; print(uuid.uuid4())')
  cat > "$conf" <<CONF
[global]
fsid = $fsid
mon host = 127.0.0.1:6789
mon initial members = a
public network = 127.0.0.0/8
auth cluster required = none
auth service required = none
auth client required = none
run dir = $d/run
log file = $d/log/\$name.log
admin socket = $d/run/\$name.asok
pid file = $d/run/\$name.pid
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon allow pool size one = true
mon max pg per osd = 1000
mon warn on pool no redundancy = false
osd crush chooseleaf type = 0
# without cephx the OSD's own crush/class update at start carries a zero fsid and is refused: done by hand below
osd crush update on start = false
osd class update on start = false
[mon.a]
mon data = $d/mon.a
mon addr = 127.0.0.1:6789
[osd.0]
osd data = $d/osd.0
osd objectstore = memstore
memstore device bytes = 2147483648
osd max object size = 1073741824
[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:$port
rgw data = $d/rgw
rgw dns name = localhost
CONF
  ceph-mon -c "$conf" --mkfs -i a --fsid "$fsid" --mon-data "$d/mon.a" >"$d/log/mkfs-mon.out" 2>&1
  ceph-mon -c "$conf" -i a  # daemonizes; writes run/mon.a.pid
  wait_for 30 "ceph-mon" timeout 5 ceph -c "$conf" -s
  osd_uuid=$(python3 -c 'import uuid; print(uuid.uuid4())')
  id=$(timeout 20 ceph -c "$conf" osd new "$osd_uuid")
  ceph-osd -c "$conf" -i "$id" --mkfs --osd-uuid "$osd_uuid" >"$d/log/mkfs-osd.out" 2>&1
  timeout 20 ceph -c "$conf" osd crush add "osd.$id" 1.0 host=localhost root=default >/dev/null 2>&1
  ceph-osd -c "$conf" -i "$id"
  wait_for 30 "ceph-osd" sh -c "timeout 5 ceph -c '$conf' osd stat | grep -q '1 up'"
  radosgw -c "$conf" -n client.rgw.a
  wait_for 90 "radosgw" curl -sf -o /dev/null "http://127.0.0.1:$port/"
  timeout 60 radosgw-admin -c "$conf" user create --uid=interop --display-name=interop \
      --access-key=INTEROPKEY --secret=INTEROPSECRET >/dev/null
  "${PY:-python3}" - "$port" <<'PY'
import sys, boto3
s3 = boto3.client('s3', endpoint_url=f'http://127.0.0.1:{sys.argv[1]}', region_name='us-east-1',
                  aws_access_key_id='INTEROPKEY', aws_secret_access_key='INTEROPSECRET')
s3.create_bucket(Bucket='rec')
PY
  echo "ceph $(radosgw --version | awk '{print $3}') on http://127.0.0.1:$port (bucket rec, keys INTEROPKEY/INTEROPSECRET)"
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
  running && echo "ceph running" || { echo "ceph not running"; exit 1; }
  ;;
*) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
