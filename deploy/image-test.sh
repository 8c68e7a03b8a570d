#!/usr/bin/env bash
# Build the container image from ./Dockerfile with podman and check it running (CI runs this from .ci/run).
#
# Needs (Debian): podman runc mmdebstrap, as root. No Docker daemon, no registry: the base image is
# made here with mmdebstrap (Debian bookworm minbase + Python), because Docker Hub may be unreachable.
#
# What it checks in the running image: the server process runs as uid 10001; /healthz answers 200 and
# the image's HEALTHCHECK passes; an upload without a token is refused (401) and one with a token is
# stored byte-exact under the mounted volume; an upload in flight when `podman stop` sends SIGTERM is
# drained to success, and the container exits 0. Also: without a token the image refuses to start
# (exit 2), which is why the Dockerfile's usage line passes one.
#
# Environment:
#   IMAGE_TEST_COLD=1     rebuild the base image (to time a cold build)
#   IMAGE_TEST_PORT=N     port the server listens on (127.0.0.1, host network); default: a free one
#
# It never skips: if podman cannot build or run, it fails with the reason.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'image-test: %s\n' "$*"; }
fail() {
    printf 'image-test: FAIL: %s\n' "$*" >&2
    exit 1
}

for tool in podman runc mmdebstrap python3; do
    command -v "$tool" >/dev/null || fail "$tool is not installed (apt-get install podman runc mmdebstrap)"
done
[ "$(id -u)" = 0 ] || fail "run as root (mmdebstrap and rootful podman)"

work=$(mktemp -d /tmp/streamproxy-image-test.XXXXXX)
run_id=$$
app_image="localhost/streamproxy:image-test-$run_id"
container="streamproxy-image-test-$run_id"
noauth_container="streamproxy-image-test-noauth-$run_id"

cleanup() {
    local status=$?
    podman rm --force --ignore --time 0 "$container" "$noauth_container" >/dev/null 2>&1 || true
    podman rmi --force "$app_image" >/dev/null 2>&1 || true
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT

# A private containers.conf: crun fails on this kind of host ("cgroups in hybrid mode not supported"),
# and the default ulimits podman asks for are above what the host permits. Nothing in /etc changes.
export CONTAINERS_CONF="$work/containers.conf"
cat >"$CONTAINERS_CONF" <<'EOF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
EOF
podman info >/dev/null 2>"$work/podman-info.err" || fail "podman cannot run: $(cat "$work/podman-info.err")"

# --- the base image: Debian bookworm minbase + Python -------------------------------------------
# Extra CA certificates of the host (a TLS-intercepting proxy's) go into the base only when there are
# some: pip inside the build needs them to reach the package index. The tag carries a hash of
# everything that goes into the base, so a cached base is reused only when it would be built the same.
packages="python3,python3-venv,python3-pip,python-is-python3,ca-certificates"
mirrors=(
    "deb http://deb.debian.org/debian bookworm main"
    "deb http://deb.debian.org/debian bookworm-updates main"
    "deb http://deb.debian.org/debian-security bookworm-security main"
)
ca_dir=/usr/local/share/ca-certificates
ca_files=()
if [ -d "$ca_dir" ]; then
    mapfile -t ca_files < <(find "$ca_dir" -type f -name '*.crt' | sort)
fi
base_hash=$(
    {
        echo "$packages"
        printf '%s\n' "${mirrors[@]}"
        for file in "${ca_files[@]}"; do sha256sum "$file"; done
    } | sha256sum | cut -c1-12
)
base_image="localhost/streamproxy-base:bookworm-$base_hash"

start=$(date +%s)
if [ "${IMAGE_TEST_COLD:-0}" = 1 ]; then
    podman rmi --force "$base_image" >/dev/null 2>&1 || true
fi
if podman image exists "$base_image"; then
    log "base image $base_image cached"
else
    hooks=()
    if [ "${#ca_files[@]}" -gt 0 ]; then
        log "adding ${#ca_files[@]} CA certificate(s) from $ca_dir to the base"
        hooks+=(--customize-hook="cp ${ca_files[*]} \"\$1$ca_dir/\"")
        hooks+=(--customize-hook='chroot "$1" update-ca-certificates')
    fi
    log "building base image $base_image with mmdebstrap"
    mmdebstrap --quiet --variant=minbase --include="$packages" "${hooks[@]}" \
        bookworm "$work/base.tar" "${mirrors[@]}" </dev/null
    podman import --quiet --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' \
        "$work/base.tar" "$base_image" >/dev/null
    rm -f "$work/base.tar"
fi
base_done=$(date +%s)

# --- the image itself ----------------------------------------------------------------------------
# --format docker keeps HEALTHCHECK (the OCI format has no such field); --network host keeps the
# build's pip off netavark, which would otherwise change the host's firewall and forwarding.
# --layers=false: Debian's podman 4.3 (buildah 1.28) mishandles cached layers around
# `RUN --mount=type=bind,from=build`: with the build stage cached the mount comes up empty
# (podman#16281), and a changed build stage can be ignored in favour of a stale cached layer
# (podman#17119). So every build here is a full one; pip's cache mount still spares the downloads.
build_args=(--format docker --network host --layers=false --build-arg "PYTHON_IMAGE=$base_image" --tag "$app_image")
log "building $app_image"
podman build --quiet "${build_args[@]}" . >/dev/null
built=$(date +%s)
size=$(podman image inspect --format '{{.Size}}' "$app_image")
log "base $((base_done - start)) s, image build $((built - base_done)) s, image size $((size / 1000000)) MB ($size bytes)"

healthcheck=$(podman image inspect --format '{{json .Config.Healthcheck}}' "$app_image")
[[ "$healthcheck" == *healthz* ]] || fail "the image has no HEALTHCHECK (built without --format docker?): $healthcheck"

# --- without a token the image refuses to start ---------------------------------------------------
# Its own network namespace: the image binds 0.0.0.0 there, which is beyond loopback.
set +e
podman run --name "$noauth_container" --network none --health-interval disable "$app_image" \
    >"$work/noauth.log" 2>&1
noauth_status=$?
set -e
[ "$noauth_status" = 2 ] || fail "without a token the image should exit 2, it exited $noauth_status: $(cat "$work/noauth.log")"
grep -q -i 'without --auth-token' "$work/noauth.log" || fail "the refusal does not mention the token: $(cat "$work/noauth.log")"
podman rm --force "$noauth_container" >/dev/null 2>&1
log "ok: without a token the image exits 2 ($(grep -i 'without --auth-token' "$work/noauth.log" | cut -c1-160))"

# --- run it --------------------------------------------------------------------------------------
port=${IMAGE_TEST_PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
token=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')
volume="$work/recordings"
mkdir -m 0750 "$volume"
chown 10001:10001 "$volume"
# --network host with the server on 127.0.0.1: no netavark, nothing reachable from outside.
# --health-interval disable: no periodic timer (podman schedules those through systemd, absent in
# CI); `podman healthcheck run` below runs the image's HEALTHCHECK command itself. podman 4.3 still
# complains about systemd on stderr without systemd: that goes to a file, shown only on failure.
podman run --detach --name "$container" --network host \
    -e STREAMPROXY_HOST=127.0.0.1 -e STREAMPROXY_PORT="$port" -e STREAMPROXY_AUTH_TOKENS="$token" \
    -e STREAMPROXY_SHUTDOWN_TIMEOUT=20s \
    --volume "$volume:/var/lib/streamproxy/recordings" --read-only --cap-drop ALL \
    --health-interval disable \
    "$app_image" >/dev/null 2>"$work/podman-run.err" || fail "podman run failed: $(cat "$work/podman-run.err")"

export IMAGE_TEST_BASE="http://127.0.0.1:$port" IMAGE_TEST_TOKEN="$token"
python3 - <<'EOF' || fail "the server did not answer /healthz within 30 s: $(podman logs "$container" 2>&1 | tail -n 20)"
import os, time, urllib.request
deadline = time.monotonic() + 30
while True:
    try:
        with urllib.request.urlopen(os.environ["IMAGE_TEST_BASE"] + "/healthz", timeout=2) as answer:
            assert answer.status == 200, answer.status
            break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.3)
EOF
log "ok: /healthz answers 200"

pid=$(podman inspect --format '{{.State.Pid}}' "$container")
uid=$(awk '/^Uid:/ {print $2 ":" $3 ":" $4 ":" $5}' "/proc/$pid/status")
[ "$uid" = "10001:10001:10001:10001" ] || fail "the server process (pid $pid) runs as uid $uid, not 10001"
grep -q streamproxy "/proc/$pid/cmdline" || fail "pid $pid is not the server: $(tr '\0' ' ' <"/proc/$pid/cmdline")"
log "ok: the server process runs as uid 10001 ($(tr '\0' ' ' <"/proc/$pid/cmdline" | cut -c1-80))"

podman healthcheck run "$container" || fail "the image's HEALTHCHECK failed"
log "ok: the HEALTHCHECK command passes ($(podman inspect --format '{{.State.Health.Status}}' "$container"))"

# Uploads: refused without a token; stored byte-exact with one; one in flight during `podman stop`
# is drained to success. The slow upload writes a marker file once its first bytes are sent.
export IMAGE_TEST_VOLUME="$volume" IMAGE_TEST_WORK="$work"
python3 - <<'EOF' || fail "upload checks failed: $(podman logs "$container" 2>&1 | tail -n 20)"
import hashlib, http.client, json, os, struct, urllib.parse
base = urllib.parse.urlsplit(os.environ["IMAGE_TEST_BASE"])
token = os.environ["IMAGE_TEST_TOKEN"]
# A WAV as the platform's Record module sends it (16-bit PCM, 8 kHz): stored unchanged, byte for byte.
samples = os.urandom(3 * 1024 * 1024 + 18)
body = (b"RIFF" + struct.pack("<I", 36 + len(samples)) + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, 8000, 16000, 2, 16) + b"data" + struct.pack("<I", len(samples)) + samples)

def put(name: str, headers: dict[str, str]) -> tuple[int, dict]:
    connection = http.client.HTTPConnection(base.hostname, base.port, timeout=30)
    connection.request("PUT", f"/recordings/{name}", body=body,
                       headers={"Content-Type": "audio/wav", **headers})
    answer = connection.getresponse()
    return answer.status, json.loads(answer.read())

status, answer = put("no-token", {})
assert status == 401 and answer["error"] == "unauthorized", (status, answer)
assert not os.path.exists(os.path.join(os.environ["IMAGE_TEST_VOLUME"], "no-token.wav"))
print(f"image-test: ok: without a token: {status} {answer['error']}")

status, answer = put("call-7", {"Authorization": f"Bearer {token}"})
assert status == 200 and answer["status"] == "success", (status, answer)
with open(os.path.join(os.environ["IMAGE_TEST_VOLUME"], "call-7.wav"), "rb") as stored:
    assert hashlib.sha256(stored.read()).hexdigest() == hashlib.sha256(body).hexdigest() == answer["sha256"]
print(f"image-test: ok: with a token: {status}, {answer['url']}, {answer['size']} bytes, sha256 matches the volume's file")
EOF

# The slow upload: 2 MiB in 20 chunks over ~4 s, started before SIGTERM and finished during the drain.
python3 - >"$work/slow.out" 2>&1 <<'EOF' &
import hashlib, http.client, json, os, struct, time, urllib.parse
base = urllib.parse.urlsplit(os.environ["IMAGE_TEST_BASE"])
samples = os.urandom(20 * 100 * 1024 - 44)  # a 16-bit PCM WAV, stored unchanged
body = (b"RIFF" + struct.pack("<I", 36 + len(samples)) + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, 8000, 16000, 2, 16) + b"data" + struct.pack("<I", len(samples)) + samples)
chunks = [body[i : i + 100 * 1024] for i in range(0, len(body), 100 * 1024)]
connection = http.client.HTTPConnection(base.hostname, base.port, timeout=60)
connection.putrequest("PUT", "/recordings/drained")
connection.putheader("Authorization", "Bearer " + os.environ["IMAGE_TEST_TOKEN"])
connection.putheader("Content-Type", "audio/wav")
connection.putheader("Content-Length", str(sum(map(len, chunks))))
connection.endheaders()
for number, chunk in enumerate(chunks):
    connection.send(chunk)
    if number == 0:
        open(os.path.join(os.environ["IMAGE_TEST_WORK"], "slow.started"), "w").close()
    time.sleep(0.2)
answer = connection.getresponse()
result = json.loads(answer.read())
assert answer.status == 200 and result["status"] == "success", (answer.status, result)
digest = hashlib.sha256(b"".join(chunks)).hexdigest()
with open(os.path.join(os.environ["IMAGE_TEST_VOLUME"], "drained.wav"), "rb") as stored:
    assert hashlib.sha256(stored.read()).hexdigest() == digest == result["sha256"]
print(f"{answer.status} {result['status']} {result['size']} bytes")
EOF
slow_pid=$!
for _ in $(seq 100); do
    [ -e "$work/slow.started" ] && break
    sleep 0.1
done
[ -e "$work/slow.started" ] || fail "the slow upload did not start: $(cat "$work/slow.out")"
stop_started=$(date +%s.%N)
podman stop --time 30 "$container" >/dev/null 2>"$work/podman-stop.err" ||
    fail "podman stop exited non-zero: $(cat "$work/podman-stop.err")"
stop_took=$(python3 -c "print(f'{$(date +%s.%N) - $stop_started:.1f}')")
wait "$slow_pid" || fail "the upload in flight during the drain did not succeed: $(cat "$work/slow.out")"
exit_code=$(podman inspect --format '{{.State.ExitCode}}' "$container")
[ "$exit_code" = 0 ] || fail "the server exited $exit_code after SIGTERM (137 would be SIGKILL): $(podman logs "$container" 2>&1 | tail -n 20)"
podman logs "$container" >"$work/server.log" 2>&1
grep -q '"event": "drained"' "$work/server.log" || fail "no drain in the server's log: $(tail -n 5 "$work/server.log")"
log "ok: podman stop exited 0 after ${stop_took} s; the upload in flight was drained: $(cat "$work/slow.out"); server exit code 0"

log "all image checks passed (image $((size / 1000000)) MB, build $((built - base_done)) s, base $((base_done - start)) s)"
