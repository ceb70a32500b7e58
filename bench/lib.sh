# Shared helpers for the shell benchmarks (sourced, not run).
#   BENCH_DIR   where data, outputs and the img2dataset venv go (default /tmp/capcrawl-bench)
#   BENCH_PORT  nginx port on 127.0.0.1 and 127.0.0.2 (default 18089)
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH_DIR="${BENCH_DIR:-/tmp/capcrawl-bench}"
BENCH_PORT="${BENCH_PORT:-18089}"
PY="${PYTHON:-$REPO/.venv/bin/python}"
CAPCRAWL="${CAPCRAWL:-$REPO/.venv/bin/capcrawl}"
export BENCH_DIR BENCH_PORT

# capcrawl's side of bench/vs_img2dataset.sh (and of bench/ab_checkouts.sh, which must time the
# same commands): img2dataset's size, mode, format, timeout and retries; all 3,000 URLs are on
# one host, so the polite per-host defaults are lifted to match img2dataset's 2 x 64 threads.
CAPCRAWL_DOWNLOAD_ARGS=(--caption-col caption --allow-private-addresses --image-size 256 --resize-mode keep_ratio
    --image-format jpg --timeout 10 --retries 0)
CAPCRAWL_VS_FLAGS="--concurrency 128 --per-host-concurrency 128 --no-autothrottle"

# Re-run the calling script inside a private network namespace (only loopback exists there),
# so that nothing a benchmark does can leave the machine. Needs root (or user namespaces).
enter_netns() {
    if [ -z "${CCB_IN_NETNS:-}" ]; then
        command -v unshare >/dev/null || { echo "unshare (util-linux) is required" >&2; exit 2; }
        exec env CCB_IN_NETNS=1 unshare -n -- bash "$0" "$@"
    fi
    ip link set lo up
}

need_apt() {  # need_apt COMMAND PACKAGE
    if ! command -v "$1" >/dev/null 2>&1 && [ ! -x "$1" ]; then
        echo "installing $2 (apt) ..." >&2
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
    fi
}

prepare_tools() {  # run before enter_netns: apt needs the network
    need_apt nginx nginx-light
    need_apt /usr/bin/time time
    need_apt ip iproute2
    # Byte-compile the project's own modules, as pip does for any installed package (the
    # img2dataset venv's included): an editable install leaves them to be compiled on every
    # start when PYTHONDONTWRITEBYTECODE is set, as it is on some machines (~0.03 s a command).
    "$PY" -m compileall -q "$REPO/capcrawl" "$REPO/common" "$REPO/crawler" "$REPO/filter" "$REPO/shards"
}

build_site() {  # build_site [--list-sizes N ...]
    "$PY" "$REPO/bench/site.py" "$BENCH_DIR" --port "$BENCH_PORT" "$@"
}

# SET picks the image set of vs_img2dataset.sh and ab_checkouts.sh: unset or "base" is
# site.py's 3,000 640x480 JPEGs (urls.csv); indep, photos, png are bench/imagesets.py's.
SET="${SET:-base}"
set_urls() {  # the URL list of $SET (run build_site first; generates the set when missing)
    if [ "$SET" = base ]; then
        echo "$BENCH_DIR/urls.csv"
    else
        "$PY" "$REPO/bench/imagesets.py" "$BENCH_DIR" --port "$BENCH_PORT" --sets "$SET" >&2
        echo "$BENCH_DIR/urls-$SET.csv"
    fi
}

# nginx with a config of our own: 1 worker, 127.0.0.1 and 127.0.0.2 on BENCH_PORT, no access log.
start_nginx() {
    local d="$BENCH_DIR/nginx"
    mkdir -p "$d/tmp"
    cat >"$d/nginx.conf" <<CONF
worker_processes 1;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $d/tmp/body;
    proxy_temp_path $d/tmp/proxy;
    fastcgi_temp_path $d/tmp/fastcgi;
    uwsgi_temp_path $d/tmp/uwsgi;
    scgi_temp_path $d/tmp/scgi;
    types { text/html html; image/jpeg jpg; image/png png; text/plain txt; }
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    server {
        listen 127.0.0.1:$BENCH_PORT;
        listen 127.0.0.2:$BENCH_PORT;
        root $BENCH_DIR/site;
    }
}
CONF
    nginx -e "$d/error.log" -p "$d" -c "$d/nginx.conf"
    for _ in $(seq 50); do
        curl -sf -o /dev/null "http://127.0.0.1:$BENCH_PORT/img/00000.jpg" 2>/dev/null && return 0
        "$PY" -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$BENCH_PORT/img/00000.jpg')" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nginx did not start; see $d/error.log" >&2
    exit 1
}

stop_nginx() {
    local d="$BENCH_DIR/nginx"
    [ -f "$d/nginx.pid" ] && nginx -e "$d/error.log" -p "$d" -c "$d/nginx.conf" -s quit 2>/dev/null || true
}

# img2dataset 1.47.0 in a virtual environment of its own (never the project's .venv).
I2D_VENV="${I2D_VENV:-$BENCH_DIR/i2d-venv}"
export NO_ALBUMENTATIONS_UPDATE=1
prepare_img2dataset() {
    if [ ! -x "$I2D_VENV/bin/img2dataset" ]; then
        echo "installing img2dataset 1.47.0 into $I2D_VENV ..." >&2
        python3 -m venv "$I2D_VENV"
        "$I2D_VENV/bin/pip" install -q "img2dataset==1.47.0"
    fi
}

median() { sort -g | awk '{a[NR]=$1} END{ if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2 }'; }
