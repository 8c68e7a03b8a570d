#!/usr/bin/env bash
# Start, stop or describe every store of the compatibility suite (tests/compat/).
# Usage: all.sh start | stop | status | env
#   env prints the variables that point the suite at the running stores: eval "$(tests/stores/all.sh env)"
set -eu
here=$(cd "$(dirname "$0")" && pwd)
stores="ceph swift s3rver"
case "${1:-start}" in
start) for s in $stores; do "$here/$s.sh" start; done ;;
stop) for s in $stores; do "$here/$s.sh" stop; done ;;
status) rc=0; for s in $stores; do "$here/$s.sh" status || rc=1; done; exit $rc ;;
env)
  echo "export COMPAT_CEPH_URL=http://127.0.0.1:7480"
  echo "export COMPAT_SWIFT_URL=http://127.0.0.1:8089"
  echo "export COMPAT_S3RVER_URL=http://127.0.0.1:4568"
  ;;
*) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
