#!/usr/bin/env bash
# make bench: forkring (io_uring and epoll) beside nginx and the peers
# (may_minihttp and hyper, from bench/peers), one report.
#
# For each worker count in $WORKERS (1, and "all" = one per CPU) the script
# starts forkring on each backend in $BACKENDS, nginx and the peers in
# $PEERS with that many workers, then measures each workload under wrk with the same parameters
# for every server:
#   keepalive  GET / on $CONNS keep-alive connections
#   pipelined  GET / pipelined $DEPTH deep
#   post       POST /echo with a $BODY-byte body (the server sends it back)
#   close      one connection per request (Connection: close)
#   static1m   GET /files/1m.bin: a 1 MiB file (forkring --static, zero-copy;
#              nginx with sendfile on)
#   static4k   GET /files/4k.bin: a 4 KiB file, the same way
# With one worker, the servers are pinned to CPU $SERVER_CPU and wrk (one
# thread) to CPU $CLIENT_CPU. With more, nothing is pinned: the servers and
# wrk (one thread per CPU) share the CPUs. The servers take turns, the order
# rotating every repetition; the report gives the median of $REPS runs and
# their range. Per run: requests/s, latency p50/p99/p99.9 (bench/wrk.lua),
# the server's CPU time per request (user + system from /proc/<pid>/stat over
# the server's processes), its memory (VmRSS summed over master and workers
# at the end of the run) and errors (wrk's socket errors and non-2xx
# answers).
#
# Then (SSE=1) server-sent events: each forkring backend with one worker
# holds $SSE_STREAMS streams of GET /stream (one event a second each) from
# tools/src/bin/sseload.rs for $SSE_DURATION seconds: server memory per stream
# and CPU time per event (nginx cannot produce events by itself).
#
# Then a fixed-rate run (tools/src/bin/ratebench.rs) at $RATE requests/s for
# every server, so that tail latency is compared at equal load rather than
# at saturation; (CURVE=1, one worker) the latency curve: ratebench at
# $CURVE_SHARES percent of each server's own keep-alive median from this run
# and at the absolute rates $CURVE_RATES, capped at $CURVE_MAX; and (IPC=1)
# the IPC ring summary (cargo bench --bench ipc -- summary); and (OVERLOAD=1),
# last, past capacity: `make stress` scenario 14 (forkring-stress --only 14
# --json), an open-loop paced client offering 0.5x to 4x each route's
# measured capacity (a pool-bound and a loop-bound route) to forkring and
# its anchors, a fast route measured beside the load; the figures are the
# stress binary's, kept as $OUT/overload.json. A forkring bound that fails
# there does not stop the bench: the report says which goals were missed.
# bench/report.py prints the tables and writes $OUT/report.md and
# $OUT/report.svg.
#
# Environment (defaults in brackets):
#   DURATION   wrk run length [4s]          REPS       repetitions [3]
#   WORKERS    worker counts [1 all]
#   WORKLOADS  [keepalive pipelined post close static1m static4k]
#   BACKENDS   forkring backends [uring epoll] (uring is dropped, with a note,
#              where the kernel refuses io_uring)
#   CONNS      wrk connections [64]         DEPTH      pipeline depth [16]
#   BODY       POST body bytes [4096]       WARMUP     per-server warm-up [1s, 0 skips]
#   RATE       fixed-rate requests/s [20000]; "auto": half the slowest
#              server's 1-worker keep-alive median; 0 skips the fixed-rate run
#   RATE_WORKERS   worker counts for the fixed-rate run [1]
#   RATE_DURATION  seconds per fixed-rate run, 1 s warm-up included [10]
#   RATE_THREADS, RATE_CONNS  ratebench sender threads [2] and connections
#              per thread [4]
#   IPC        1 runs the IPC ring summary (about 90 s), 0 skips it [1]
#   UPLOAD     bytes of the streamed upload (POST /upload, one worker per
#              backend, bench/upload.py) [1073741824]; 0 skips it
#   WAITS      1 runs the waiting workloads, 0 skips them [1]: one worker
#              per backend with a pool of 64 threads, GET /sleep?ms=10 (a
#              pool thread blocks) and GET /delay?ms=10 (a worker timer)
#              from $WAIT_CONNS [256] connections, while GET / on one more
#              connection measures the fast route's p99; Node's http server
#              (setTimeout, bench/node-wait.js) beside /delay when node is
#              installed
#   SSE        1 runs the server-sent events measurement, 0 skips it [1]
#              (Node's http server, bench/node-wait.js, as the anchor when
#              node is installed)
#   SSE_STREAMS    streams held by one worker [10000]
#   SSE_DURATION   seconds the events are counted [10]
#   QUIET      seconds a run waits for other processes to use less than
#              QUIET_PCT [15] percent of a CPU before it starts [30]; 0 never
#              waits. QUIET_BUDGET [180] caps the waiting over the whole run
#   SERVER_CPU [0]                          CLIENT_CPU [1]
#   OUT        report directory [target/bench]
#   NGINX      nginx binary [found on PATH or in /usr/sbin]
#   BASELINE   a forkring server binary from another commit (the fixture, or an older
#              commit's demo binary) [unset]: it
#              joins the rotation as forkring-base-<backend>, one per backend
#              in $BACKENDS, started with the same flags as the current build,
#              and the report adds a table of current and baseline against
#              nginx (requests/s and CPU µs/req) from the same run
#   PEERS      other Rust servers measured beside nginx [may_minihttp hyper
#              floor]; 0 skips them. Built from bench/peers (its own cargo
#              project) when missing; where that fails they sit out, with a
#              note. `floor` is one server per backend in $BACKENDS
#              (floor-uring, floor-epoll): the least system-call work that
#              answers GET / as forkring's driver on that backend does, for
#              the report's ratios to the floor; it serves GET / only, so it
#              sits out post and the static workloads
#   CURVE      1 measures the latency curve (one worker, after the
#              saturation runs, which must include keepalive), 0 skips it [1]
#   CURVE_SHARES   percents of each server's keep-alive capacity [10 30 50 70 90]
#   CURVE_RATES    absolute rates for every server [10000 20000 40000 80000]
#   CURVE_MAX  the highest rate asked of ratebench, what one client CPU can
#              drive [100000]; rates above it are left out
#   CURVE_DURATION seconds per curve point, 1 s warm-up included [5]
#   CURVE_REPS repetitions of each curve point [1]
#   HYPER_MODE hyper's workers: threads (one current-thread runtime per
#              thread) or processes (one per process) [threads]
#   OVERLOAD   1 runs past capacity (forkring-stress --only 14 --json, after
#              the other steps), 0 skips it [1]
#   OVERLOAD_JSON  a file of those figures, as forkring-stress --json writes
#              them, reported instead of running the scenario [unset]
set -euo pipefail
export LC_ALL=C

DURATION=${DURATION:-4s}
REPS=${REPS:-3}
WORKERS=${WORKERS:-1 all}
WORKLOADS=${WORKLOADS:-keepalive pipelined post close static1m static4k}
BACKENDS=${BACKENDS:-uring epoll}
CONNS=${CONNS:-64}
DEPTH=${DEPTH:-16}
BODY=${BODY:-4096}
WARMUP=${WARMUP:-1s}
RATE=${RATE:-20000}
RATE_WORKERS=${RATE_WORKERS:-1}
RATE_DURATION=${RATE_DURATION:-10}
RATE_THREADS=${RATE_THREADS:-2}
RATE_CONNS=${RATE_CONNS:-4}
IPC=${IPC:-1}
UPLOAD=${UPLOAD:-1073741824}
WAITS=${WAITS:-1}
WAIT_CONNS=${WAIT_CONNS:-256}
SSE=${SSE:-1}
SSE_STREAMS=${SSE_STREAMS:-10000}
SSE_DURATION=${SSE_DURATION:-10}
QUIET=${QUIET:-30}
QUIET_PCT=${QUIET_PCT:-15}
QUIET_BUDGET=${QUIET_BUDGET:-180}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
PEERS=${PEERS-may_minihttp hyper floor}
CURVE=${CURVE:-1}
CURVE_SHARES=${CURVE_SHARES:-10 30 50 70 90}
CURVE_RATES=${CURVE_RATES:-10000 20000 40000 80000}
CURVE_MAX=${CURVE_MAX:-100000}
CURVE_DURATION=${CURVE_DURATION:-5}
CURVE_REPS=${CURVE_REPS:-1}
HYPER_MODE=${HYPER_MODE:-threads}
OVERLOAD=${OVERLOAD:-1}
OVERLOAD_JSON=${OVERLOAD_JSON:-}

BASELINE=${BASELINE:-}
# Relative to where the script was started, before it moves to the root.
[[ -z $BASELINE || $BASELINE == /* ]] || BASELINE=$PWD/$BASELINE
[[ -z $OVERLOAD_JSON || $OVERLOAD_JSON == /* ]] || OVERLOAD_JSON=$PWD/$OVERLOAD_JSON

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
OUT=${OUT:-${CARGO_TARGET_DIR:-target}/bench}
# The backend is chosen per server below; an inherited override would blur that.
unset FORKRING_BACKEND

die() {
	echo "bench: $*" >&2
	exit 1
}

# ---------------------------------------------------------------- cleanup --
#
# Processes are handled by forkring-harness (tools/src/bin/forkring-harness.rs,
# the harness library's process handling), built below. The script starts
# each server itself, so that the server stays its child and is reaped here
# with `wait`; the harness says when it is ready, stops it and what is left
# of its tree, and reads its CPU time and memory.

PIDS=() # every server this script started
TMP=""
HARNESS="" # forkring-harness, once built

# True while `pid` exists and is not a zombie.
alive() {
	"$HARNESS" alive "$1"
}

# SIGTERM, SIGKILL after 5 s, then SIGKILL to what was below it; reaped.
stop() {
	"$HARNESS" stop "$1" --timeout 5 || true
	wait "$1" 2>/dev/null || true
}

cleanup() {
	local pid
	[[ -z $HARNESS ]] || for pid in "${PIDS[@]}"; do
		stop "$pid"
	done
	[[ -n $TMP ]] && rm -rf "$TMP"
	return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- tools ----

# wrk, nginx and nginx's echo module (Debian: libnginx-mod-http-echo, which
# nginx-light depends on; how nginx answers POST /echo with the request
# body), installed with apt-get where missing (tools/install-deps.sh).
install_tools() {
	bash "$ROOT/tools/install-deps.sh" --bench || die "wrk and nginx are needed (above)"
	[[ -n ${NGINX:-} ]] || NGINX=$(command -v nginx || echo /usr/sbin/nginx)
	ECHO_MODULE=$(bash "$ROOT/tools/install-deps.sh" --echo-module || true)
}

# ---------------------------------------------------------------- servers --

# Waits until the just-started server `pid` answers GET / on `port` and the
# readiness options that follow (forkring-harness wait-ready's: --log-count
# TEXT N, --children N) hold; dies, the harness having printed `log`, if not.
wait_ready() {
	local pid=$1 port=$2 name=$3 log=$4
	shift 4
	"$HARNESS" wait-ready "$pid" --url "http://127.0.0.1:$port/" --log "$log" --name "$name" "$@" ||
		die "$name did not start (above)"
}

declare -A PID_OF=() PORT_OF=() NOTE_OF=() LOG_OF=() NO_STATIC=() NO_POST=()
SERVERS=()
SRV_PIN=() # the taskset prefix for servers, empty when unpinned
CLI_PIN=() # the same for the client

# start_forkring BACKEND WORKERS [BINARY NAME]: the current build as
# forkring-BACKEND, or BINARY (the baseline) as NAME.
start_forkring() {
	local backend=$1 workers=$2 bin=${3:-$BIN} name=${4:-forkring-$1} port pid log static=()
	port=$("$HARNESS" free-port)
	log="$TMP/$name-$workers.log"
	# A baseline from before --static sits out the file workloads.
	if "$bin" --help 2>/dev/null | grep -q -- '--static'; then
		static=(--static "$STATIC")
	else
		NO_STATIC[$name]=1
	fi
	"${SRV_PIN[@]}" "$bin" --listen "127.0.0.1:$port" --workers "$workers" \
		--backend "$backend" --log info "${static[@]}" >"$log" 2>&1 &
	pid=$!
	PIDS+=("$pid")
	wait_ready "$pid" "$port" "$name" "$log" --log-count ' info: ready ' "$workers"
	PID_OF[$name]=$pid
	PORT_OF[$name]=$port
	LOG_OF[$name]=$log
	NOTE_OF[$name]=$(grep -o 'backend: .*' "$log" | head -n1 || true)
	SERVERS+=("$name")
}

# nginx with the configuration forkring-harness writes (the harness
# library's one nginx configuration builder): GET /, POST /echo, the files
# under /files/, reuseport, every path in its own directory.
start_nginx() {
	local workers=$1 name=nginx port pid dir="$TMP/nginx-$1" eopt=()
	port=$("$HARNESS" free-port)
	mkdir -p "$dir"
	"$HARNESS" nginx-conf --nginx "$NGINX" --dir "$dir" --port "$port" --workers "$workers" --static "$STATIC" \
		--echo-module "$ECHO_MODULE" || die "could not write nginx's configuration"
	# -e keeps nginx from opening its compiled-in error log before it has
	# read the configuration (nginx >= 1.19.5).
	"$NGINX" -h 2>&1 | grep -q -- '^ *-e ' && eopt=(-e "$dir/nginx-error.log")
	"$NGINX" -t -q -p "$dir/" -c "$dir/nginx.conf" "${eopt[@]}" >"$dir/nginx.log" 2>&1 ||
		{
			cat "$dir/nginx.log" >&2
			die "nginx rejects the generated configuration $dir/nginx.conf"
		}
	"${SRV_PIN[@]}" "$NGINX" -p "$dir/" -c "$dir/nginx.conf" "${eopt[@]}" >>"$dir/nginx.log" 2>&1 &
	pid=$!
	PIDS+=("$pid")
	wait_ready "$pid" "$port" nginx "$dir/nginx.log" --children "$workers"
	PID_OF[$name]=$pid
	PORT_OF[$name]=$port
	LOG_OF[$name]=$dir/nginx-error.log
	NOTE_OF[$name]="$("$NGINX" -v 2>&1 | sed 's/^nginx version: //'), worker_processes $workers"
	SERVERS+=("$name")
}

start_servers() {
	local workers=$1 b
	SERVERS=()
	for b in $BACKENDS; do
		start_forkring "$b" "$workers"
		# Each baseline server next to its current counterpart.
		[[ -z $BASELINE ]] || start_forkring "$b" "$workers" "$BASELINE" "forkring-base-$b"
	done
	start_nginx "$workers"
	start_peers "$workers"
}

stop_servers() {
	local name
	for name in "${SERVERS[@]}"; do
		stop "${PID_OF[$name]}"
	done
	SERVERS=()
}

# Dies unless server `name` is still running, with the end of its log.
check_alive() {
	local name=$1 what=$2
	alive "${PID_OF[$name]}" && return 0
	tail -n 20 "${LOG_OF[$name]}" >&2 2>/dev/null || true
	die "$name (pid ${PID_OF[$name]}) is gone $what (interrupted? the end of its log is above)"
}

# ---------------------------------------------------------------- peers ----
#
# The fastest Rust HTTP/1 servers, beside forkring and nginx: may_minihttp
# (coroutines on may) and hyper 1.x (on tokio), from bench/peers, a cargo
# project of its own (its own lockfile, outside the workspace). They serve
# the demo server's GET / and POST /echo, with as many workers, pinned as
# the others are.

PEER_LIST=() # the peers built and measured in this run

# Builds the peers in $PEERS (release), into $PEER_TARGET. Where the build
# fails (no registry, say), the peers sit out and the report says why.
build_peers() {
	local p missing=() log=$TMP/peers-build.log why
	PEER_TARGET=$TARGET/peers
	[[ $PEERS == 0 || -z ${PEERS// /} ]] && return 0
	for p in $PEERS; do
		for b in $(peer_binaries "$p"); do
			[[ -x $PEER_TARGET/release/$b ]] || missing+=("$b")
		done
	done
	if ((${#missing[@]})); then
		echo "bench: building the peers ${missing[*]} (bench/peers, release, into $PEER_TARGET);" \
			"the first build downloads their crates and takes a few minutes"
	else
		echo "bench: building the peers (bench/peers, release; nothing to do unless it changed)"
	fi
	if cargo build --release --locked --quiet --manifest-path "$ROOT/bench/peers/Cargo.toml" \
		--target-dir "$PEER_TARGET" >"$log" 2>&1; then
		read -ra PEER_LIST <<<"$PEERS"
		return 0
	fi
	tail -n 20 "$log" >&2
	why=$(grep -m1 -E '^(error|warning: spurious)' "$log" || tail -n1 "$log")
	NOTES+=("the peers ($PEERS) were skipped: building bench/peers failed: ${why:-no output}")
	echo "bench: ${NOTES[-1]}; the rest of the benchmark runs without them" >&2
}

# The binaries of peer `p`: the floor has one per backend.
peer_binaries() {
	if [[ $1 == floor ]]; then
		printf 'floor-%s\n' uring epoll
	else
		echo "$1"
	fi
}

# The version of `crate` in the peers' lockfile.
peer_version() {
	awk -v c="$1" '$1 == "name" && $3 == "\"" c "\"" { getline; gsub(/"/, "", $3); print $3; exit }' \
		"$ROOT/bench/peers/Cargo.lock"
}

start_peer() {
	local name=$1 workers=$2 port pid log args=() backend crate
	port=$("$HARNESS" free-port)
	log="$TMP/$name-$workers.log"
	[[ $name == hyper ]] && args=(--mode "$HYPER_MODE")
	"${SRV_PIN[@]}" "$PEER_TARGET/release/$name" --listen "127.0.0.1:$port" --workers "$workers" "${args[@]}" \
		>"$log" 2>&1 &
	pid=$!
	PIDS+=("$pid")
	wait_ready "$pid" "$port" "$name" "$log" --log-count ' ready ' "$workers"
	PID_OF[$name]=$pid
	PORT_OF[$name]=$port
	LOG_OF[$name]=$log
	# The peers serve GET / and POST /echo only: no static files.
	NO_STATIC[$name]=1
	case $name in
	floor-*)
		# GET / only.
		NO_POST[$name]=1
		backend=${name#floor-}
		crate=""
		[[ $backend != uring ]] || crate=", io-uring $(peer_version io-uring)"
		NOTE_OF[$name]="the $backend floor (bench/peers$crate), $workers worker process(es)"
		;;
	may_minihttp)
		NOTE_OF[$name]="may_minihttp $(peer_version may_minihttp) (may $(peer_version may)), $workers scheduler thread(s)"
		;;
	hyper)
		local per=thread
		[[ $HYPER_MODE == processes ]] && per=process
		NOTE_OF[$name]="hyper $(peer_version hyper) (tokio $(peer_version tokio)), $workers current-thread runtime(s), one per $per"
		;;
	esac
	SERVERS+=("$name")
}

start_peers() {
	local p b
	for p in "${PEER_LIST[@]}"; do
		if [[ $p == floor ]]; then
			# A floor for each forkring backend measured.
			for b in $BACKENDS; do
				[[ $b == auto ]] || start_peer "floor-$b" "$1"
			done
		else
			start_peer "$p" "$1"
		fi
	done
}

# Prints two lines about the server on `port`: the head of its answer to a
# keep-alive GET / (every header in order, Date's value left out) with the
# body, and whether it then closes a connection whose request says
# `Connection: close` ("closes", or "stays open" when the connection is
# still open 2 s after the answer).
probe_server() (
	local line len=0 head="" body rc
	exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
	printf 'GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n' >&3
	while IFS= read -r -t 2 line <&3; do
		line=${line%$'\r'}
		[[ -z $line ]] && break
		case ${line,,} in
		date:*) line="${line%%:*}: …" ;;
		content-length:*) len=${line#*:} len=${len// /} ;;
		esac
		head+="$line | "
	done
	IFS= read -r -t 2 -N "$len" body <&3 || true
	echo "$head$body"
	printf 'GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&3
	while IFS= read -r -t 2 line <&3; do
		[[ -z ${line%$'\r'} ]] && break
	done
	IFS= read -r -t 2 -N "$len" body <&3 || true
	rc=0
	IFS= read -r -t 2 -N 1 body <&3 || rc=$?
	if ((rc > 128)); then echo "stays open"; elif ((rc == 0)); then echo "sends more"; else echo closes; fi
) 2>/dev/null

declare -A PROBED=()
# Once per server: what it answers to GET / and whether it closes on
# `Connection: close`, into meta.tsv for the report.
probe_once() {
	local name=$1 out
	[[ -z ${PROBED[$name]:-} ]] || return 0
	PROBED[$name]=1
	out=$(probe_server "${PORT_OF[$name]}") || out=$'no answer\nunknown'
	meta "response_$name" "$(head -n1 <<<"$out")"
	meta "on_close_$name" "$(tail -n1 <<<"$out")"
	[[ $(tail -n1 <<<"$out") == closes ]] ||
		echo "  $name: $(tail -n1 <<<"$out") after answering a request with Connection: close (marked in the report)"
}

# ---------------------------------------------------------------- measuring

TICKS=$(getconf CLK_TCK)

# "ticks rss_kb" of `pid` and every process below it: CPU clock ticks (user +
# system, including what each collected from children it already reaped)
# and resident memory (VmRSS).
tree_stats() {
	"$HARNESS" tree-usage "$1"
}

# Sets BUSY to the machine's busy CPU ticks so far (all CPUs, from
# /proc/stat), CHILD_MS to the CPU milliseconds of this shell's reaped
# children (the load generators), and NOW_US to the time; no process is
# started, so that nothing of the script's own lands between two readings.
snapshot() {
	local _cpu u n s i w q sq st _rest t m sec
	read -r _cpu u n s i w q sq st _rest </proc/stat
	BUSY=$((u + n + s + q + sq + st))
	times >"$TMP/times"
	{
		read -r _rest
		read -r u s
	} <"$TMP/times"
	CHILD_MS=0
	for t in "$u" "$s"; do
		m=${t%%m*}
		sec=${t#*m}
		sec=${sec%s}
		CHILD_MS=$((CHILD_MS + m * 60000 + ${sec%.*} * 1000 + 10#${sec#*.}))
	done
	NOW_US=${EPOCHREALTIME/./}
}

# The CPU that neither the server nor the load generator used between two
# snapshots (B0 C0 T0 and the current BUSY CHILD_MS NOW_US), in percent of
# one CPU: other processes on the machine, and kernel threads.
other_cpu() {
	local server_ticks=$1
	awk -v b=$((BUSY - B0)) -v s="$server_ticks" -v c=$((CHILD_MS - C0)) -v hz="$TICKS" -v t=$((NOW_US - T0)) \
		'BEGIN { o = (b - s) / hz - c / 1000; if (o < 0) o = 0; printf "%.0f\n", (t > 0) ? o * 1e8 / t : 0 }'
}

# Before a run: waits (up to $QUIET s, within $QUIET_BUDGET s for the whole
# benchmark) until other processes use less than $QUIET_PCT% of one CPU,
# measured over 0.3 s while the servers idle.
WAITED_MS=0
GAVE_UP=0
wait_quiet() {
	local b0 pct t0 told=""
	((QUIET > 0 && WAITED_MS < QUIET_BUDGET * 1000)) || return 0
	t0=${EPOCHREALTIME/./}
	while :; do
		snapshot
		b0=$BUSY
		sleep 0.3
		snapshot
		pct=$(((BUSY - b0) * 100 * 100 / TICKS / 30))
		((pct < QUIET_PCT)) && break
		if [[ -z $told ]]; then
			echo "  (other processes are using ${pct}% of a CPU; waiting up to ${QUIET}s for them to calm down)"
			told=1
		fi
		if ((NOW_US - t0 > QUIET * 1000000 || WAITED_MS + (NOW_US - t0) / 1000 > QUIET_BUDGET * 1000)); then
			echo "  (still ${pct}%; measuring anyway)"
			GAVE_UP=$((GAVE_UP + 1))
			break
		fi
		sleep 0.7
	done
	[[ -z $told ]] || WAITED_MS=$((WAITED_MS + (${EPOCHREALTIME/./} - t0) / 1000))
}

wrk_args() {
	local workload=$1
	WRK_PATH=/
	WRK_ARGS=("-t$WRK_THREADS" "-c$CONNS" -s "$ROOT/bench/wrk.lua")
	WRK_TAIL=()
	case $workload in
	keepalive) ;;
	pipelined) WRK_TAIL=(-- pipeline "$DEPTH") ;;
	post)
		WRK_PATH=/echo
		WRK_TAIL=(-- post "$BODY")
		;;
	close) WRK_ARGS+=(-H "Connection: close") ;;
	static1m) WRK_PATH=/files/1m.bin ;;
	static4k) WRK_PATH=/files/4k.bin ;;
	*) die "unknown workload $workload (keepalive, pipelined, post, close, static1m, static4k)" ;;
	esac
}

# The one-worker sections: servers pinned to SERVER_CPU and clients to
# CLIENT_CPU when PINNING, nothing pinned otherwise.
pin_one_worker() {
	if ((PINNING)); then
		SRV_PIN=(taskset -c "$SERVER_CPU")
		CLI_PIN=(taskset -c "$CLIENT_CPU")
	else
		SRV_PIN=()
		CLI_PIN=()
	fi
}

fmt_us() {
	awk -v u="$1" 'BEGIN { if (u == "nan") printf "n/a"; else if (u >= 1000) printf "%.2fms", u / 1000; else printf "%.0fus", u }'
}

# One wrk run; appends a line to $RESULTS:
#   workers workload server rep rps p50 p99 p999 cpu_us_per_req rss_kb errors requests other_cpu_pct
measure() {
	local workers=$1 rep=$2 workload=$3 name=$4 pid port out s0 s1 reqs rps lat p50 p99 p999 cpu rss errs other
	pid=${PID_OF[$name]}
	port=${PORT_OF[$name]}
	check_alive "$name" "before a $workload run"
	wait_quiet
	wrk_args "$workload"
	s0=$(tree_stats "$pid")
	snapshot
	B0=$BUSY C0=$CHILD_MS T0=$NOW_US
	out=$("${CLI_PIN[@]}" wrk "${WRK_ARGS[@]}" "-d$DURATION" "http://127.0.0.1:$port$WRK_PATH" "${WRK_TAIL[@]}" 2>&1) ||
		{
			echo "$out" >&2
			die "wrk failed against $name"
		}
	snapshot
	check_alive "$name" "after a $workload run"
	s1=$(tree_stats "$pid")
	other=$(other_cpu $((${s1% *} - ${s0% *})))
	reqs=$(awk '/ requests in / { print $1 }' <<<"$out")
	rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
	lat=$(awk '$1 == "LATENCY_US" { print $2, $5, $6 }' <<<"$out")
	[[ -n $reqs && -n $rps && -n $lat ]] || {
		echo "$out" >&2
		die "could not read wrk's output (above)"
	}
	read -r p50 p99 p999 <<<"$lat"
	if ((reqs == 0)); then
		# Kept as a run of 0 requests/s, and said in the report.
		echo "bench: $name completed no request in a $workload run of $DURATION" >&2
		NOTES+=("$name completed no request in one $workload run ($workers worker(s), repetition $rep)")
		p50=nan p99=nan p999=nan
	fi
	# wrk times a pipelined batch as one sample but corrects for coordinated
	# omission as if every response were one round trip; its percentiles are
	# then meaningless (often 0), so none is reported for this workload.
	[[ $workload == pipelined ]] && p50=nan p99=nan p999=nan
	cpu=$(awk -v a="${s0% *}" -v b="${s1% *}" -v hz="$TICKS" -v n="$reqs" \
		'BEGIN { if (n > 0) printf "%.3f\n", (b - a) * 1e6 / hz / n; else print "nan" }')
	rss=${s1#* }
	errs=$(awk '/Socket errors:/ { gsub(/,/, ""); s += $4 + $6 + $8 + $10 }
		/Non-2xx or 3xx responses:/ { s += $NF } END { print s + 0 }' <<<"$out")
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$workers" "$workload" "$name" "$rep" \
		"$rps" "$p50" "$p99" "$p999" "$cpu" "$rss" "$errs" "$reqs" "$other" >>"$RESULTS"
	printf '  %sw rep %d/%d  %-9s %-*s %10.0f req/s  p99 %8s  p99.9 %8s  %6s µs/req  %5.1f MiB  other CPU %3s%%%s\n' \
		"$workers" "$rep" "$REPS" "$workload" "$NAME_W" "$name" "$rps" "$(fmt_us "$p99")" "$(fmt_us "$p999")" "$cpu" \
		"$(awk -v k="$rss" 'BEGIN { print k / 1024 }')" "$other" \
		"$( ((errs == 0)) || echo "  ($errs errors or non-2xx)")"
}

# One fixed-rate run; appends a line to $RATES:
#   workers server rep rate achieved p50 p90 p99 p999 max svc_p50 svc_p99 lag_p50 lag_p99 errors cpu_us rss_kb
#   other_cpu_pct
# or, for a point of the latency curve (measure_rate ... OUT SHARE SECONDS),
# the same columns and SHARE (the percent of the server's capacity the rate
# is, or "abs" for an absolute rate) to OUT, ratebench running SECONDS.
measure_rate() {
	local workers=$1 rep=$2 name=$3 rate=$4 into=${5:-$RATES} share=${6:-} secs=${7:-$RATE_DURATION}
	local pid port out s0 s1 res cpu k v other tag=fixed reps=$REPS
	pid=${PID_OF[$name]}
	port=${PORT_OF[$name]}
	check_alive "$name" "before a fixed-rate run"
	wait_quiet
	s0=$(tree_stats "$pid")
	snapshot
	B0=$BUSY C0=$CHILD_MS T0=$NOW_US
	out=$("${CLI_PIN[@]}" "$RATEBENCH" --addr "127.0.0.1:$port" --rate "$rate" --duration "$secs" \
		--warmup 1 --threads "$RATE_THREADS" --conns "$RATE_CONNS" 2>&1) ||
		{
			echo "$out" >&2
			die "ratebench failed against $name"
		}
	snapshot
	check_alive "$name" "after a fixed-rate run"
	s1=$(tree_stats "$pid")
	other=$(other_cpu $((${s1% *} - ${s0% *})))
	res=$(grep '^RESULT ' <<<"$out") || {
		echo "$out" >&2
		die "could not read ratebench's output (above)"
	}
	local -A r=()
	for kv in ${res#RESULT }; do
		k=${kv%%=*}
		v=${kv#*=}
		r[$k]=$v
	done
	cpu=$(awk -v a="${s0% *}" -v b="${s1% *}" -v hz="$TICKS" -v n="${r[sent]}" \
		'BEGIN { if (n > 0) printf "%.3f\n", (b - a) * 1e6 / hz / n; else print "nan" }')
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s%s\n' "$workers" "$name" "$rep" \
		"$rate" "${r[achieved]}" "${r[p50]}" "${r[p90]}" "${r[p99]}" "${r[p999]}" "${r[max]}" \
		"${r[svc_p50]}" "${r[svc_p99]}" "${r[lag_p50]}" "${r[lag_p99]}" "${r[errors]}" "$cpu" "${s1#* }" "$other" \
		"${share:+$'\t'$share}" >>"$into"
	[[ -z $share ]] || tag=curve reps=$CURVE_REPS
	printf '  %sw rep %d/%d  %-5s %-6s %-*s %8.0f req/s  p50 %8s  p99 %8s  p99.9 %8s  max %8s  other CPU %3s%%%s\n' \
		"$workers" "$rep" "$reps" "$tag" "$rate" "$NAME_W" "$name" "${r[achieved]}" "$(fmt_us "${r[p50]}")" "$(fmt_us "${r[p99]}")" \
		"$(fmt_us "${r[p999]}")" "$(fmt_us "${r[max]}")" "$other" \
		"$( ((r[errors] == 0)) || echo "  (${r[errors]} errors)")"
}

# The latency curve, one worker: ratebench at $CURVE_SHARES percent of each
# server's keep-alive median from this run, and at the absolute rates
# $CURVE_RATES, for every server (rates above $CURVE_MAX left out), into
# $CURVE_OUT; the order of the servers rotates at every point.
measure_curve() {
	local name p share rate rep i points=() skipped=0
	if [[ " $WORKLOADS " != *" keepalive "* ]]; then
		NOTES+=("the latency curve needs the keepalive workload (each server's capacity): it was skipped")
		return
	fi
	for p in $CURVE_SHARES; do points+=("$p%"); done
	for p in $CURVE_RATES; do points+=("$p"); done
	echo "  latency curve: ratebench at $CURVE_SHARES% of each server's keep-alive median and at $CURVE_RATES req/s," \
		"${CURVE_DURATION}s a point (1 s warm-up), at most $CURVE_MAX req/s"
	for ((rep = 1; rep <= CURVE_REPS; rep++)); do
		for ((i = 0; i < ${#points[@]}; i++)); do
			p=${points[i]}
			rotate $((rep + i))
			for name in "${ORDER[@]}"; do
				if [[ $p == *% ]]; then
					share=${p%\%}
					rate=$(awk -v c="$(median_rps 1 keepalive "$name")" -v s="$share" 'BEGIN { printf "%d\n", c * s / 100 }')
				else
					share=abs rate=$p
				fi
				if ((rate <= 0 || rate > CURVE_MAX)); then
					skipped=$((skipped + 1))
					continue
				fi
				measure_rate 1 "$rep" "$name" "$rate" "$CURVE_OUT" "$share" "$CURVE_DURATION"
			done
		done
	done
	((skipped == 0)) || NOTES+=("latency curve: $skipped point(s) above CURVE_MAX=$CURVE_MAX req/s (what one client CPU drives) or without a capacity figure were left out")
}

# Median of a column of $RESULTS for one worker count, workload and server.
median_rps() {
	awk -F'\t' -v w="$1" -v l="$2" -v s="$3" '$1 == w && $2 == l && $3 == s { print $5 }' "$RESULTS" | sort -g |
		awk '{ a[NR] = $1 } END { if (NR == 0) print 0; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

# The rotation of SERVERS for repetition `rep`, in ORDER.
rotate() {
	local rep=$1 n=${#SERVERS[@]} i
	ORDER=()
	for ((i = 0; i < n; i++)); do
		ORDER+=("${SERVERS[$(((i + rep - 1) % n))]}")
	done
}

meta() {
	printf '%s\t%s\n' "$1" "$2" >>"$META"
}

# ---------------------------------------------------------------- main -----

[[ $REPS =~ ^[1-9][0-9]*$ ]] || die "REPS must be a positive whole number"
[[ $RATE == auto || $RATE =~ ^[0-9]+$ ]] || die "RATE must be a whole number of requests/s, auto, or 0"
RATE_DURATION=${RATE_DURATION%s}
if ! [[ $RATE_DURATION =~ ^[0-9]+$ ]] || ((RATE_DURATION < 2)); then
	die "RATE_DURATION must be whole seconds, at least 2"
fi
CURVE_DURATION=${CURVE_DURATION%s}
[[ $CURVE =~ ^[01]$ ]] || die "CURVE must be 0 or 1"
if ! [[ $CURVE_DURATION =~ ^[0-9]+$ ]] || ((CURVE_DURATION < 2)); then
	die "CURVE_DURATION must be whole seconds, at least 2"
fi
for v in $CURVE_SHARES $CURVE_RATES $CURVE_MAX $CURVE_REPS; do
	[[ $v =~ ^[1-9][0-9]*$ ]] || die "CURVE_SHARES, CURVE_RATES, CURVE_MAX and CURVE_REPS take positive whole numbers ($v)"
done
for wl in $WORKLOADS; do
	case $wl in keepalive | pipelined | post | close | static1m | static4k) ;; *) die "unknown workload $wl (keepalive, pipelined, post, close, static1m, static4k)" ;; esac
done
for b in $BACKENDS; do
	case $b in uring | epoll | auto) ;; *) die "unknown backend $b (uring, epoll, auto)" ;; esac
done
[[ $PEERS == 0 ]] || for p in $PEERS; do
	case $p in may_minihttp | hyper | floor) ;; *) die "unknown peer $p (may_minihttp, hyper, floor; PEERS=0 for none)" ;; esac
done
case $HYPER_MODE in threads | processes) ;; *) die "HYPER_MODE must be threads or processes" ;; esac
[[ $OVERLOAD =~ ^[01]$ ]] || die "OVERLOAD must be 0 or 1"
[[ -z $OVERLOAD_JSON || -r $OVERLOAD_JSON ]] || die "OVERLOAD_JSON=$OVERLOAD_JSON is not a readable file"
command -v taskset >/dev/null || die "needs taskset (Debian package util-linux)"
command -v python3 >/dev/null || die "needs python3 for the report (bench/report.py)"
NPROC=$(nproc)
PINNING=1
if ((NPROC < 2)); then
	echo "bench: only one CPU available: servers and clients share it, so figures mean little" >&2
	PINNING=0
fi
WORKER_COUNTS=()
for w in $WORKERS; do
	[[ $w == all ]] && w=$NPROC
	[[ $w =~ ^[1-9][0-9]*$ ]] || die "WORKERS: $w is neither a positive whole number nor all"
	[[ " ${WORKER_COUNTS[*]} " == *" $w "* ]] || WORKER_COUNTS+=("$w")
done
RATE_COUNTS=()
for w in $RATE_WORKERS; do
	[[ $w == all ]] && w=$NPROC
	[[ $w =~ ^[1-9][0-9]*$ ]] || die "RATE_WORKERS: $w is neither a positive whole number nor all"
	RATE_COUNTS+=("$w")
done
[[ $RATE == 0 ]] && RATE_COUNTS=()
# The width of a server's name in the progress lines.
NAME_W=15
if [[ -n $BASELINE ]]; then
	[[ -f $BASELINE && -x $BASELINE ]] || die "BASELINE=$BASELINE is not an executable file"
	"$BASELINE" --version >/dev/null 2>&1 || die "BASELINE=$BASELINE does not answer --version; is it a forkring server binary?"
	for b in $BACKENDS; do
		n=forkring-base-$b
		((${#n} <= NAME_W)) || NAME_W=${#n}
	done
fi

install_tools

# The server under test: its cargo package and binary (named nowhere else).
SERVER_PKG=forkring-fixture SERVER_BIN=forkring-fixture
# The stress binary when it measures past capacity here.
STRESS_BUILD=()
[[ $OVERLOAD == 0 || -n $OVERLOAD_JSON ]] || STRESS_BUILD=(--bin forkring-stress)
echo "bench: building $SERVER_BIN, ratebench, sseload, forkring-harness${STRESS_BUILD[*]:+ and forkring-stress} (release)"
cargo build --release --quiet -p "$SERVER_PKG" --bin "$SERVER_BIN"
cargo build --release --quiet -p forkring-stress --bin ratebench --bin sseload --bin forkring-harness "${STRESS_BUILD[@]}"
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
[[ $TARGET == /* ]] || TARGET=$ROOT/$TARGET
BIN=$TARGET/release/$SERVER_BIN
RATEBENCH=$TARGET/release/ratebench
SSELOAD=$TARGET/release/sseload
HARNESS=$TARGET/release/forkring-harness
STRESS=$TARGET/release/forkring-stress
if [[ $IPC != 0 ]]; then
	echo "bench: building the IPC benchmark"
	cargo bench --bench ipc --no-run --quiet 2>/dev/null || cargo bench --bench ipc --no-run
fi

NOTES=()
if [[ " $BACKENDS " == *" uring "* ]] && ! "$BIN" --check-uring >/dev/null 2>&1; then
	if [[ -n $BASELINE ]]; then
		NOTES+=("this kernel refuses io_uring: forkring-uring and forkring-base-uring are left out (the epoll ones stay)")
	else
		NOTES+=("this kernel refuses io_uring: forkring-uring is left out (forkring-epoll stays)")
	fi
	BACKENDS=$(tr ' ' '\n' <<<"$BACKENDS" | grep -vx uring | tr '\n' ' ')
	echo "bench: ${NOTES[-1]}" >&2
fi
[[ -n ${BACKENDS// /} ]] || die "no forkring backend left to measure"
if [[ -z $ECHO_MODULE && " $WORKLOADS " == *" post "* ]]; then
	NOTES+=("nginx has no echo module here (libnginx-mod-http-echo): it sits out the post workload")
	echo "bench: ${NOTES[-1]}" >&2
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/forkring-bench.XXXXXX")
RESULTS=$TMP/results.tsv
RATES=$TMP/rates.tsv
CURVE_OUT=$TMP/curve.tsv
META=$TMP/meta.tsv
SSE_RESULTS=$TMP/sse.tsv
: >"$SSE_RESULTS"
# The files of the static workloads.
STATIC=$TMP/static
mkdir -p "$STATIC"
head -c 1048576 /dev/urandom >"$STATIC/1m.bin"
head -c 4096 /dev/urandom >"$STATIC/4k.bin"
chmod -R a+rX "$STATIC"
: >"$RESULTS"
: >"$RATES"
: >"$CURVE_OUT"
: >"$META"
mkdir -p "$OUT"
build_peers

meta date "$(date -u '+%Y-%m-%d %H:%M UTC')"
meta nproc "$NPROC"
meta model "$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
meta memory "$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
meta kernel "$(uname -srm)"
meta load_start "$(cut -d' ' -f1-3 /proc/loadavg)"
meta forkring "$("$BIN" --version) ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo 'no git')$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo ', with local changes'))"
if [[ -n $BASELINE ]]; then
	meta baseline "$("$BASELINE" --version) ($BASELINE, modified $(date -u -r "$BASELINE" '+%Y-%m-%d %H:%M UTC'), sha256 $(sha256sum "$BASELINE" | cut -c1-12))"
fi
meta rustc "$(rustc -V)"
meta wrk "$(wrk -v 2>&1 | head -n1 | sed 's/ Copyright.*//')"
meta nginx "$("$NGINX" -v 2>&1 | sed 's/^nginx version: //')${ECHO_MODULE:+, echo module}"
meta python "$(python3 -V 2>&1)"
meta duration "$DURATION"
meta reps "$REPS"
meta conns "$CONNS"
meta depth "$DEPTH"
meta body "$BODY"
meta warmup "$WARMUP"
meta workloads "$WORKLOADS"
meta backends "$BACKENDS"
meta worker_counts "${WORKER_COUNTS[*]}"
meta server_cpu "$SERVER_CPU"
meta client_cpu "$CLIENT_CPU"
meta pinning "$PINNING"
meta rate_setting "$RATE"
meta rate_duration "$RATE_DURATION"
meta rate_threads "$RATE_THREADS"
meta rate_conns "$RATE_CONNS"
meta curve_shares "$CURVE_SHARES"
meta curve_rates "$CURVE_RATES"
meta curve_max "$CURVE_MAX"
meta curve_duration "$CURVE_DURATION"
meta curve_reps "$CURVE_REPS"
meta peers "${PEER_LIST[*]}"
meta hyper_mode "$HYPER_MODE"

echo "bench: load average $(cut -d' ' -f1-3 /proc/loadavg) on $NPROC CPUs"
for workers in "${WORKER_COUNTS[@]}"; do
	if ((workers == 1 && PINNING)); then
		SRV_PIN=(taskset -c "$SERVER_CPU")
		CLI_PIN=(taskset -c "$CLIENT_CPU")
		WRK_THREADS=1
		where="servers pinned to CPU $SERVER_CPU, client pinned to CPU $CLIENT_CPU"
	else
		SRV_PIN=()
		CLI_PIN=()
		WRK_THREADS=$NPROC
		where="nothing pinned: servers and client share the $NPROC CPUs"
	fi
	meta "wrk_threads_$workers" "$WRK_THREADS"
	meta "where_$workers" "$where"
	start_servers "$workers"
	echo
	echo "== $workers worker(s) each: $where"
	for name in "${SERVERS[@]}"; do
		printf '  %-*s pid %-7s 127.0.0.1:%-5s %s\n' "$NAME_W" "$name" "${PID_OF[$name]}" "${PORT_OF[$name]}" "${NOTE_OF[$name]}"
		meta "note_${name}_$workers" "${NOTE_OF[$name]}"
	done
	for name in "${SERVERS[@]}"; do
		probe_once "$name"
	done
	echo "  client: wrk -t$WRK_THREADS -c$CONNS -d$DURATION; $REPS repetition(s)"
	if [[ $WARMUP != 0 ]]; then
		for name in "${SERVERS[@]}"; do
			"${CLI_PIN[@]}" wrk "-t$WRK_THREADS" "-c$CONNS" "-d$WARMUP" "http://127.0.0.1:${PORT_OF[$name]}/" >/dev/null 2>&1 ||
				die "warm-up wrk run against $name failed"
		done
	fi
	for ((rep = 1; rep <= REPS; rep++)); do
		# Rotate the order each repetition, so that no server always runs first.
		rotate "$rep"
		for workload in $WORKLOADS; do
			for name in "${ORDER[@]}"; do
				[[ $workload == post && $name == nginx && -z $ECHO_MODULE ]] && continue
				[[ $workload == static* && -n ${NO_STATIC[$name]:-} ]] && continue
				[[ $workload == post && -n ${NO_POST[$name]:-} ]] && continue
				measure "$workers" "$rep" "$workload" "$name"
			done
		done
	done

	if [[ " ${RATE_COUNTS[*]} " == *" $workers "* ]]; then
		rate=$RATE
		if [[ $RATE == auto ]]; then
			rate=0
			if [[ " $WORKLOADS " == *" keepalive "* ]] && [[ " ${WORKER_COUNTS[*]} " == *" 1 "* ]]; then
				rate=$(for name in "${SERVERS[@]}"; do median_rps 1 keepalive "$name"; done |
					sort -g | head -n1 | awk '{ printf "%d\n", $1 / 2 }')
			fi
			if ((rate == 0)); then
				rate=20000
				NOTES+=("RATE=auto without a 1-worker keep-alive measurement before it: the fixed-rate run used 20000 req/s")
			fi
		fi
		meta "rate_$workers" "$rate"
		echo "  fixed rate: ratebench at $rate req/s, $RATE_THREADS threads x $RATE_CONNS connections, ${RATE_DURATION}s (1 s warm-up)"
		for ((rep = 1; rep <= REPS; rep++)); do
			rotate "$rep"
			for name in "${ORDER[@]}"; do
				measure_rate "$workers" "$rep" "$name" "$rate"
			done
		done
	fi
	((CURVE && workers == 1)) && measure_curve
	stop_servers
done

# A streamed upload per backend: one worker, POST /upload of $UPLOAD bytes
# over loopback (the demo computes the body's CRC-32 as it arrives and keeps
# none of it), its throughput and the worker's resident memory before it
# and at its peak. After a warm-up upload of 64 MiB, so that the worker is
# in its steady state (on io_uring, its provided receive buffers resident).
: >"$TMP/uploads.txt"
if [[ $UPLOAD != 0 ]]; then
	[[ $UPLOAD =~ ^[1-9][0-9]*$ ]] || die "UPLOAD must be a number of bytes"
	echo
	echo "== streamed upload: POST /upload of $UPLOAD bytes, 1 worker per backend"
	pin_one_worker
	printf '| backend | MiB/s | seconds | worker RSS before (KiB) | peak (KiB) | growth (KiB) |\n|---|---|---|---|---|---|\n' >>"$TMP/uploads.txt"
	for backend in $BACKENDS; do
		SERVERS=()
		start_forkring "$backend" 1
		name=forkring-$backend
		worker=$("$HARNESS" descendants "${PID_OF[$name]}" | head -n1)
		if ! "${CLI_PIN[@]}" python3 "$ROOT/bench/upload.py" "${PORT_OF[$name]}" "$worker" $((64 << 20)) >/dev/null ||
			! line=$("${CLI_PIN[@]}" python3 "$ROOT/bench/upload.py" "${PORT_OF[$name]}" "$worker" "$UPLOAD"); then
			NOTES+=("the streamed upload against $name failed")
			stop_servers
			continue
		fi
		IFS=$'\t' read -r secs mibs before peak _ <<<"$line"
		echo "  $name: $mibs MiB/s ($secs s), worker RSS $before KiB before, $peak KiB at its peak"
		printf '| %s | %s | %s | %s | %s | %s |\n' "$backend" "$mibs" "$secs" "$before" "$peak" $((peak - before)) >>"$TMP/uploads.txt"
		stop_servers
	done
fi

# Waiting: requests that wait 10 ms each, on a pool thread (/sleep) or on a
# worker timer (/delay), from $WAIT_CONNS connections, while one more
# connection asks for GET / as fast as it is answered: the load's
# requests/s against its ceiling (threads or connections / 10 ms) and the
# fast route's p99. Both wrk runs share the client CPU.
: >"$TMP/waits.txt"
# One waiting run: the load on `route` and the fast route beside it.
measure_wait() {
	local name=$1 port=$2 route=$3 ceiling=$4 slow fast rps p99 errs
	wait_quiet
	# The load runs a second longer on each side of the fast route's run, so
	# that its start (every connection opening at once) is not measured.
	local secs=${DURATION%s}
	"${CLI_PIN[@]}" wrk -t1 "-c$WAIT_CONNS" "-d$((secs + 2))s" "http://127.0.0.1:$port$route" >"$TMP/wait-slow.txt" 2>&1 &
	slow=$!
	sleep 1
	fast=$("${CLI_PIN[@]}" wrk -t1 -c1 "-d$DURATION" -s "$ROOT/bench/wrk.lua" "http://127.0.0.1:$port/" 2>&1) || true
	wait "$slow" || true
	rps=$(awk '/^Requests\/sec:/ { print $2 }' "$TMP/wait-slow.txt")
	p99=$(awk '$1 == "LATENCY_US" { print $5 }' <<<"$fast")
	if [[ -z $rps || -z $p99 ]]; then
		NOTES+=("the waiting run $route against $name gave no figures")
		return
	fi
	errs=$(awk '/Socket errors:/ { gsub(/,/, ""); s += $4 + $6 + $8 + $10 }
		/Non-2xx or 3xx responses:/ { s += $NF } END { print s + 0 }' "$TMP/wait-slow.txt")
	echo "  $name $route: $rps req/s of $ceiling, GET / beside it p99 $(fmt_us "$p99"), $errs errors"
	# shellcheck disable=SC2016 # the backquotes are Markdown
	printf '| %s | `%s` | %.0f | %s | %.0f%% | %s | %s |\n' "$name" "$route" "$rps" "$ceiling" \
		"$(awk -v r="$rps" -v c="$ceiling" 'BEGIN { print 100 * r / c }')" "$(fmt_us "$p99")" "$errs" >>"$TMP/waits.txt"
}
if [[ $WAITS != 0 ]]; then
	[[ $WAIT_CONNS =~ ^[1-9][0-9]*$ ]] || die "WAIT_CONNS must be a whole number"
	[[ $DURATION =~ ^[1-9][0-9]*s$ ]] || die "the waiting workloads need DURATION in whole seconds (e.g. 4s)"
	echo
	echo "== waiting: GET /sleep?ms=10 and GET /delay?ms=10 on $WAIT_CONNS connections, GET / on one more, 1 worker"
	pin_one_worker
	printf '| server | route | requests/s | ceiling | of the ceiling | GET / p99 beside it | errors |\n|---|---|---|---|---|---|---|\n' >>"$TMP/waits.txt"
	for backend in $BACKENDS; do
		SERVERS=()
		start_forkring "$backend" 1
		name=forkring-$backend
		measure_wait "$name" "${PORT_OF[$name]}" "/sleep?ms=10" 6400
		measure_wait "$name" "${PORT_OF[$name]}" "/delay?ms=10" $((WAIT_CONNS * 100))
		stop_servers
	done
	if command -v node >/dev/null; then
		SERVERS=()
		port=$("$HARNESS" free-port)
		"${SRV_PIN[@]}" node "$ROOT/bench/node-wait.js" "$port" >"$TMP/node.log" 2>&1 &
		PIDS+=("$!")
		PID_OF[node]=$!
		wait_ready "$!" "$port" node "$TMP/node.log" --log-count listening 1
		SERVERS+=(node)
		measure_wait node "$port" "/delay?ms=10" $((WAIT_CONNS * 100))
		meta node "$(node --version)"
		stop_servers
	else
		NOTES+=("node is not installed: the waiting workload has no Node anchor")
	fi
fi

if [[ $SSE != 0 ]]; then
	echo
	echo "== server-sent events: $SSE_STREAMS streams on one worker, one event a second each, ${SSE_DURATION}s"
	# Both ends hold a descriptor per stream.
	ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
	if (($(ulimit -n) < SSE_STREAMS + 100)); then
		NOTES+=("the open-file limit ($(ulimit -n)) is below $SSE_STREAMS streams: the SSE measurement was skipped")
		echo "bench: ${NOTES[-1]}" >&2
	else
		pin_one_worker
		targets=$BACKENDS
		command -v node >/dev/null && targets+=" node"
		for b in $targets; do
			SERVERS=()
			if [[ $b == node ]]; then
				# Node's http server, one process, as the anchor.
				name=node
				port=$("$HARNESS" free-port)
				"${SRV_PIN[@]}" node "$ROOT/bench/node-wait.js" "$port" >"$TMP/node-sse.log" 2>&1 &
				PIDS+=("$!")
				PID_OF[node]=$!
				PORT_OF[node]=$port
				LOG_OF[node]="$TMP/node-sse.log"
				wait_ready "$!" "$port" node "$TMP/node-sse.log" --log-count listening 1
				SERVERS+=(node)
			else
				start_forkring "$b" 1
				name=forkring-$b
			fi
			pid=${PID_OF[$name]}
			sleep 0.5
			idle=$(tree_stats "$pid")
			"${CLI_PIN[@]}" "$SSELOAD" --addr "127.0.0.1:${PORT_OF[$name]}" --streams "$SSE_STREAMS" \
				--duration "$SSE_DURATION" >"$TMP/sse-$b.out" 2>&1 &
			cpid=$!
			for ((i = 0; i < 600; i++)); do
				grep -q '^READY' "$TMP/sse-$b.out" 2>/dev/null && break
				alive "$cpid" || break
				sleep 0.1
			done
			s0=$(tree_stats "$pid")
			wait "$cpid" || { cat "$TMP/sse-$b.out" >&2; die "sseload failed against $name"; }
			s1=$(tree_stats "$pid")
			res=$(grep '^RESULT ' "$TMP/sse-$b.out") || { cat "$TMP/sse-$b.out" >&2; die "could not read sseload's output"; }
			declare -A r=()
			for kv in ${res#RESULT }; do r[${kv%%=*}]=${kv#*=}; done
			# Memory at the start of the counting window (every stream open).
			line=$(awk -v n="${r[streams]}" -v e="${r[events]}" -v sec="${r[seconds]}" -v ri="${idle#* }" -v rs="${s0#* }" \
				-v t0="${s0% *}" -v t1="${s1% *}" -v hz="$TICKS" -v err="${r[errors]}" -v nm="$name" \
				'BEGIN { bps = (n > 0) ? (rs - ri) * 1024 / n : 0; cpe = (e > 0) ? (t1 - t0) * 1e6 / hz / e : 0;
				printf "%s\t%d\t%d\t%s\t%d\t%d\t%.0f\t%.3f\t%d\n", nm, n, e, sec, ri, rs, bps, cpe, err }')
			printf '%s\n' "$line" >>"$SSE_RESULTS"
			awk -F'\t' '{ printf "  %-15s %6d streams  %8.0f events/s  %5.1f -> %5.1f MiB  %6d bytes/stream  %6.2f us/event  %d errors\n",
				$1, $2, $3 / $4, $5 / 1024, $6 / 1024, $7, $8, $9 }' <<<"$line"
			stop_servers
		done
	fi
fi

if [[ $IPC != 0 ]]; then
	echo
	echo "== IPC rings: cargo bench --bench ipc -- summary (about 90 s)"
	if cargo bench --quiet --bench ipc -- summary >"$TMP/ipc.txt" 2>"$TMP/ipc.err"; then
		cat "$TMP/ipc.txt"
	else
		cat "$TMP/ipc.err" >&2
		NOTES+=("the IPC benchmark failed; its summary is missing")
		: >"$TMP/ipc.txt"
	fi
fi
# Past capacity: make stress's scenario 14, the same measurement, its
# figures as the stress binary writes them. It exits non-zero when a
# forkring bound fails, the figures written all the same: the report then
# marks the goals missed, and the bench goes on. No figures at all is said
# in a note.
if [[ $OVERLOAD != 0 ]]; then
	echo
	if [[ -n $OVERLOAD_JSON ]]; then
		echo "== past capacity: the figures in $OVERLOAD_JSON (OVERLOAD_JSON; the scenario is not run)"
		cp "$OVERLOAD_JSON" "$TMP/overload.json"
		meta overload_source "OVERLOAD_JSON=$OVERLOAD_JSON"
	else
		echo "== past capacity: forkring-stress --only 14 (make stress scenario 14), 0.5x to 4x each route's capacity"
		wait_quiet
		rc=0
		NGINX=$NGINX "$STRESS" --bin "$BIN" --only 14 --json "$TMP/overload.json" 2>&1 | tee "$TMP/overload.log" ||
			rc=${PIPESTATUS[0]}
		# shellcheck disable=SC2016 # the backquotes are Markdown
		meta overload_source '`forkring-stress --only 14 --json`'
		meta overload_exit "$rc"
		backend=$(sed -n 's/.*; backend \([a-z]*\)).*/\1/p' "$TMP/overload.log" | head -n1)
		[[ -z $backend ]] || meta overload_backend "$backend"
		if [[ ! -s $TMP/overload.json ]]; then
			why="exit status $rc; its output is above"
			grep -q 'unknown argument "--json"' "$TMP/overload.log" && why="this forkring-stress has no --json flag"
			NOTES+=("past capacity: forkring-stress --only 14 wrote no figures ($why)")
			echo "bench: ${NOTES[-1]}" >&2
		elif ((rc != 0)); then
			echo "  (forkring-stress exited with status $rc: a forkring bound failed or a part could not run; the report says which goals were missed)"
		fi
	fi
fi

meta load_end "$(cut -d' ' -f1-3 /proc/loadavg)"
meta quiet "$QUIET"
meta quiet_pct "$QUIET_PCT"
meta quiet_waited "$((WAITED_MS / 1000))"
meta quiet_gave_up "$GAVE_UP"
for n in "${NOTES[@]}"; do
	meta note "$n"
done

# The measurements stay beside the report, so that it can be made again:
#   python3 bench/report.py --dir target/bench --out target/bench
cp "$RESULTS" "$RATES" "$CURVE_OUT" "$META" "$SSE_RESULTS" "$OUT/"
rm -f "$OUT/ipc.txt" "$OUT/uploads.txt" "$OUT/waits.txt" "$OUT/overload.json"
[[ -s $TMP/overload.json ]] && cp "$TMP/overload.json" "$OUT/"
[[ -s $TMP/uploads.txt ]] && cp "$TMP/uploads.txt" "$OUT/"
[[ -s $TMP/waits.txt ]] && cp "$TMP/waits.txt" "$OUT/"
[[ -s $TMP/ipc.txt ]] && cp "$TMP/ipc.txt" "$OUT/"
echo
python3 "$ROOT/bench/report.py" --dir "$OUT" --out "$OUT"
