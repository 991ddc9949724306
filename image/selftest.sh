#!/bin/bash
# Firmware self-test, run inside the image (installed as /usr/lib/esignbox/selftest).
# Uses only the installed `esignbox` CLI, as the esignbox user, in a throw-away state directory:
#   1. esignbox init-dev              SoftHSM2 token + RSA key + dev PKI (TSA, OCSP, CRLs)
#   2. esignbox serve --dev           in the background (API + dev PKI on loopback)
#   3. GET  /v1/health                must be 200
#   4. POST /v1/signatures            a CAdES B-T signature of a digest, with the dev API key
#   5. openssl cms -verify            the returned CMS verifies against the dev root
# With SELFTEST_NGINX=1 (image build test; not on a live box, whose nginx already runs) it also
# makes the box TLS certificate, points the image's nginx at this box (nginx-config), starts it,
# repeats 3 and 4 over HTTPS, then (7) holds 900 idle connections from one address open against
# nginx and the firmware and checks that both still answer others and that nginx drops them.
#
# Ports: SELFTEST_API_PORT (default 18080) and SELFTEST_PKI_PORT (19180) so that it can run on a
# live box next to the real service. Exit status 0 = passed.
set -euo pipefail
VENV=${VENV:-/opt/esignbox/venv}
ESIGNBOX=$VENV/bin/esignbox
API_PORT=${SELFTEST_API_PORT:-18080}
PKI_PORT=${SELFTEST_PKI_PORT:-19180}
USER_NAME=${SELFTEST_USER:-esignbox}
TIMEOUT=${SELFTEST_TIMEOUT:-120}

say() { printf 'selftest: %s\n' "$*"; }
fail() { printf 'selftest: FAILED: %s\n' "$*" >&2; [ -n "${LOG:-}" ] && [ -f "$LOG" ] && tail -40 "$LOG" >&2; exit 1; }

STATE=$(mktemp -d /tmp/esignbox-selftest.XXXXXX)
LOG=$STATE.log
chown "$USER_NAME:" "$STATE"
chmod 700 "$STATE"
SERVER=""
NGINX_STARTED=""
cleanup() {
    if [ -n "$SERVER" ]; then   # SIGTERM: the firmware stops its dev PKI and console children
        kill -TERM "$SERVER" 2>/dev/null || true
        for _ in $(seq 1 20); do kill -0 "$SERVER" 2>/dev/null || break; sleep 0.5; done
        kill -KILL "$SERVER" 2>/dev/null || true
    fi
    [ -n "$NGINX_STARTED" ] && nginx -s quit 2>/dev/null || true
    rm -rf "$STATE"
}
trap cleanup EXIT

# setpriv execs the command itself: $! of a background call is the firmware's own PID.
as_box() { setpriv --reuid="$USER_NAME" --regid="$USER_NAME" --init-groups -- env HOME="$STATE" ESIGNBOX_STATE_DIR="$STATE" "$@"; }

t0=$SECONDS
say "esignbox $(as_box "$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("esignbox"))') in $VENV, user $USER_NAME"

say "1. init-dev (state $STATE, API :$API_PORT, dev PKI :$PKI_PORT)"
as_box "$ESIGNBOX" --state-dir "$STATE" init-dev --port "$API_PORT" --pki-port "$PKI_PORT" >"$LOG" 2>&1 \
    || fail "esignbox init-dev"

say "2. serve --dev in the background"
as_box "$ESIGNBOX" --state-dir "$STATE" serve --dev --host 127.0.0.1 --port "$API_PORT" >>"$LOG" 2>&1 &
SERVER=$!

health() { curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$@" || true; }
deadline=$((SECONDS + TIMEOUT))
until [ "$(health "http://127.0.0.1:$API_PORT/v1/health")" = 200 ]; do
    kill -0 "$SERVER" 2>/dev/null || fail "esignbox serve exited"
    [ $SECONDS -lt $deadline ] || fail "GET /v1/health did not answer 200 within ${TIMEOUT}s"
    sleep 1
done
say "3. GET /v1/health: 200 (after $((SECONDS - t0)) s)"

KEY=$(cat "$STATE/secrets/dev-api-key")
DOC=$STATE/document.txt
printf 'E-signature Box image self-test %s\n' "$(date -u +%FT%TZ)" > "$DOC"
HASH=$(openssl dgst -sha256 -binary "$DOC" | base64 -w0)

sign_and_verify() {  # sign_and_verify BASE_URL CURL_OPTS...
    local base=$1; shift
    local out=$STATE/response.json code
    code=$(curl -s -o "$out" -w '%{http_code}' --max-time 60 "$@" \
        -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
        -d "{\"hash_algorithm\":\"sha256\",\"hash\":\"$HASH\",\"level\":\"B-T\",\"profile\":\"CAdES\"}" \
        "$base/v1/signatures") || true
    [ "$code" = 201 ] || fail "POST $base/v1/signatures answered $code: $(head -c 400 "$out" 2>/dev/null)"
    python3 -c 'import json,sys,base64; sys.stdout.buffer.write(base64.b64decode(json.load(open(sys.argv[1]))["signature"]))' \
        "$out" > "$STATE/signature.p7s"
    openssl cms -verify -binary -inform DER -in "$STATE/signature.p7s" -content "$DOC" \
        -CAfile "$STATE/trust-roots.pem" -purpose any -out /dev/null 2>"$STATE/verify.txt" \
        || fail "openssl cms -verify: $(cat "$STATE/verify.txt")"
    openssl cms -cmsout -print -inform DER -in "$STATE/signature.p7s" | grep -q 'id-smime-aa-timeStampToken' \
        || fail "the B-T signature carries no signature timestamp"
}

sign_and_verify "http://127.0.0.1:$API_PORT"
say "4. POST /v1/signatures: 201, CAdES B-T ($(stat -c %s "$STATE/signature.p7s") bytes)"
say "5. openssl cms -verify: signature and timestamp token verify against the dev root"

if [ -n "${SELFTEST_NGINX:-}" ]; then
    /usr/lib/esignbox/tls-cert >>"$LOG" 2>&1 || fail "tls-cert"
    mkdir -p /run/nginx /var/lib/nginx /var/log/nginx
    ESIGNBOX_STATE_DIR=$STATE /usr/lib/esignbox/nginx-config /run/nginx >>"$LOG" 2>&1 || fail "nginx-config"
    nginx -t -q >>"$LOG" 2>&1 || fail "nginx -t"
    nginx -g 'daemon on; master_process on;' >>"$LOG" 2>&1 || fail "nginx did not start"
    NGINX_STARTED=1
    code=$(health -k "https://127.0.0.1/v1/health")
    [ "$code" = 200 ] || fail "GET https://127.0.0.1/v1/health via nginx answered $code"
    code=$(health "http://127.0.0.1/v1/health")
    [ "$code" = 308 ] || fail "plain HTTP on port 80 answered $code, not a redirect to HTTPS"
    sign_and_verify "https://127.0.0.1" -k
    say "6. via nginx (TLS, box certificate): /v1/health 200, POST /v1/signatures 201 and verified; port 80 redirects"
    # 7. Clients that connect and never finish a request head, from one other address: to nginx
    # (TLS and plain) and to the firmware itself. Both must keep answering others at once, and
    # nginx must drop the idle ones after client_header_timeout ([api] header_timeout, 10 s).
    python3 - "$API_PORT" >>"$LOG" 2>&1 <<'PY' || fail "an idle flood blocked the box (log above)"
import socket, subprocess, sys, time
api_port = int(sys.argv[1])
flood = {}
for port, head in ((443, b""), (80, b"GET / HTTP/1.1\r\nHost: box\r\n"), (api_port, b"POST /v1/signatures HTTP/1.1\r\n")):
    flood[port] = []
    for _ in range(300):
        sock = socket.socket()
        sock.bind(("127.0.0.2", 0))
        sock.connect(("127.0.0.1", port))
        sock.sendall(head)
        flood[port].append(sock)
for url in ("https://127.0.0.1/v1/health", f"http://127.0.0.1:{api_port}/v1/health"):
    code = subprocess.run(["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "3", url],
                          capture_output=True, text=True).stdout
    if code != "200":
        sys.exit(f"{url} answered {code or 'nothing'} during the flood")
def closed(sock):
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
deadline = time.monotonic() + 15
while time.monotonic() < deadline and not all(closed(s) for s in flood[443] + flood[80]):
    time.sleep(0.5)
left = sum(not closed(s) for s in flood[443] + flood[80])
if left:
    sys.exit(f"nginx still holds {left} idle connections after 15 s")
PY
    say "7. 900 idle connections from one address: health answered at once via nginx and directly; nginx dropped its 600 within 15 s"
fi
say "passed in $((SECONDS - t0)) s"
