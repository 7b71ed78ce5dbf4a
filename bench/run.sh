#!/usr/bin/env bash
# make bench: forkring against nginx under wrk, one server worker each.
#
# Each server runs one worker pinned to CPU $SERVER_CPU; wrk runs pinned to
# CPU $CLIENT_CPU with one thread and $CONNS connections. Workloads:
#   keepalive  GET / on keep-alive connections
#   pipelined  GET / pipelined $DEPTH deep (bench/pipeline.lua)
#   close      one connection per request (Connection: close)
# The servers take turns within each repetition (the order rotates) and the
# table shows the median of $REPS runs: requests/s, p99 latency, and the
# server's CPU time (user + system, from /proc/<pid>/stat, summed over the
# server's processes) per request completed.
#
# Environment (defaults in brackets):
#   DURATION   wrk run length [5s]         REPS        repetitions [3]
#   CONNS      wrk connections [64]        DEPTH       pipeline depth [16]
#   BACKENDS   forkring backends [auto]; "auto epoll" adds an epoll column
#   WORKLOADS  [keepalive pipelined close] WARMUP      per-server warm-up [1s, 0 skips]
#   SERVER_CPU [0]                         CLIENT_CPU  [1]
#   NGINX      nginx binary [found on PATH or in /usr/sbin]
set -euo pipefail
export LC_ALL=C

DURATION=${DURATION:-5s}
REPS=${REPS:-3}
CONNS=${CONNS:-64}
DEPTH=${DEPTH:-16}
BACKENDS=${BACKENDS:-auto}
WORKLOADS=${WORKLOADS:-keepalive pipelined close}
WARMUP=${WARMUP:-1s}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# The backend is chosen per run below; an inherited override would blur that.
unset FORKRING_BACKEND

die() {
	echo "bench: $*" >&2
	exit 1
}

# ---------------------------------------------------------------- cleanup --

PIDS=()          # every server this script started
TMP=""
POLICY_RC_CREATED=""

# Prints a process's descendants (children first), from /proc.
descendants() {
	local root=$1 f s pid rest
	local -A kids=()
	for f in /proc/[0-9]*/stat; do
		{ read -r s <"$f"; } 2>/dev/null || continue
		pid=${f#/proc/}
		pid=${pid%/stat}
		rest=${s##*) }
		# shellcheck disable=SC2086 # the fields are numbers and one letter
		set -- $rest
		kids[$2]+=" $pid"
	done
	local queue=("$root") p c
	while ((${#queue[@]})); do
		p=${queue[0]}
		queue=("${queue[@]:1}")
		for c in ${kids[$p]:-}; do
			echo "$c"
			queue+=("$c")
		done
	done
}

# True while `pid` exists and is not a zombie.
alive() {
	local s
	{ read -r s <"/proc/$1/stat"; } 2>/dev/null || return 1
	s=${s##*) }
	[[ ${s:0:1} != Z ]]
}

stop() {
	local pid=$1 kids i
	alive "$pid" || { wait "$pid" 2>/dev/null || true; return 0; }
	kids=$(descendants "$pid")
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < 50; i++)); do
		alive "$pid" || break
		sleep 0.1
	done
	if alive "$pid"; then
		echo "bench: process $pid did not stop on SIGTERM; killing it" >&2
		kill -KILL "$pid" 2>/dev/null || true
	fi
	for i in $kids; do
		if alive "$i"; then kill -KILL "$i" 2>/dev/null || true; fi
	done
	wait "$pid" 2>/dev/null || true
}

cleanup() {
	local pid
	for pid in "${PIDS[@]}"; do
		stop "$pid"
	done
	[[ -n $POLICY_RC_CREATED ]] && rm -f /usr/sbin/policy-rc.d
	[[ -n $TMP ]] && rm -rf "$TMP"
	return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- tools ----

find_nginx() {
	if [[ -n ${NGINX:-} ]]; then
		return 0
	fi
	NGINX=$(command -v nginx || true)
	[[ -z $NGINX && -x /usr/sbin/nginx ]] && NGINX=/usr/sbin/nginx
	[[ -n $NGINX ]]
}

install_tools() {
	local want=()
	command -v wrk >/dev/null || want+=(wrk)
	find_nginx || want+=(nginx)
	((${#want[@]})) || return 0
	command -v apt-get >/dev/null ||
		die "needs ${want[*]}, and there is no apt-get here to install them; install them and rerun"
	local sudo=()
	if ((EUID != 0)); then
		command -v sudo >/dev/null || die "needs ${want[*]}; run as root or install them"
		sudo=(sudo)
	fi
	echo "bench: ${want[*]} missing; installing the Debian packages with apt-get" \
		"(wrk; nginx-light, or nginx where there is no nginx-light)"
	# The nginx package starts a system-wide nginx on port 80 where it can;
	# the benchmark starts its own, so keep the package from doing so.
	if ((EUID == 0)) && [[ ! -e /usr/sbin/policy-rc.d ]]; then
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod +x /usr/sbin/policy-rc.d
		POLICY_RC_CREATED=1
	fi
	export DEBIAN_FRONTEND=noninteractive
	echo "bench: apt-get update"
	"${sudo[@]}" apt-get update -q
	local pkg
	for pkg in "${want[@]}"; do
		case $pkg in
		wrk)
			echo "bench: apt-get install wrk"
			"${sudo[@]}" apt-get install -y -q wrk
			;;
		nginx)
			echo "bench: apt-get install nginx-light"
			"${sudo[@]}" apt-get install -y -q nginx-light ||
				{ echo "bench: no nginx-light; apt-get install nginx"; "${sudo[@]}" apt-get install -y -q nginx; }
			;;
		esac
	done
	if [[ -n $POLICY_RC_CREATED ]]; then
		rm -f /usr/sbin/policy-rc.d
		POLICY_RC_CREATED=""
	fi
	command -v wrk >/dev/null || die "wrk is still missing after installing it"
	find_nginx || die "nginx is still missing after installing it"
}

# ---------------------------------------------------------------- servers --

# A TCP port on 127.0.0.1 that nothing is bound to (from /proc/net/tcp*).
free_port() {
	local used p i
	used=$(awk 'NR > 1 { split($2, a, ":"); print a[2] }' /proc/net/tcp /proc/net/tcp6 2>/dev/null || true)
	for ((i = 0; i < 200; i++)); do
		p=$((20000 + RANDOM % 30000))
		grep -qx "$(printf '%04X' "$p")" <<<"$used" || {
			echo "$p"
			return 0
		}
	done
	die "found no free port"
}

# True if GET / on `port` answers 200 (bash's /dev/tcp; no curl needed).
http_ok() (
	exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
	printf 'GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&3
	IFS= read -r -t 2 line <&3 || exit 1
	[[ $line == "HTTP/1."?" 200"* ]]
) 2>/dev/null

# Waits for a just-started server to answer; dies with its log if it does not.
wait_ready() {
	local pid=$1 port=$2 name=$3 log=$4 i
	for ((i = 0; i < 100; i++)); do
		alive "$pid" || { cat "$log" >&2; die "$name exited at start (log above)"; }
		http_ok "$port" && return 0
		sleep 0.1
	done
	cat "$log" >&2
	die "$name does not answer GET / on 127.0.0.1:$port (log above)"
}

declare -A PID_OF=() PORT_OF=() NOTE_OF=()
SERVERS=()

start_forkring() {
	local backend=$1 name="forkring-$1" port pid log
	port=$(free_port)
	log="$TMP/$name.log"
	taskset -c "$SERVER_CPU" "$BIN" --listen "127.0.0.1:$port" --workers 1 \
		--backend "$backend" --log info >"$log" 2>&1 &
	pid=$!
	PIDS+=("$pid")
	wait_ready "$pid" "$port" "$name" "$log"
	PID_OF[$name]=$pid
	PORT_OF[$name]=$port
	NOTE_OF[$name]=$(grep -o 'backend: .*' "$log" | head -n1 || true)
	SERVERS+=("$name")
}

start_nginx() {
	local name=nginx port pid dir="$TMP/nginx" conf m temp="" user="" eopt=()
	port=$(free_port)
	mkdir -p "$dir"
	# As root, nginx would switch its worker to `nobody`, which cannot enter
	# the private temp dir; run the worker as root too.
	((EUID == 0)) && user="user root;"
	# Every temp path a compiled-in module would otherwise create under /var.
	for m in client_body proxy fastcgi uwsgi scgi; do
		if [[ $m == client_body ]] || ! "$NGINX" -V 2>&1 | grep -q -- "--without-http_${m}_module"; then
			temp+="    ${m}_temp_path $dir/$m;"$'\n'
		fi
	done
	conf=$(<bench/nginx.conf.in)
	conf=${conf//@USER@/"$user"}
	conf=${conf//@DIR@/"$dir"}
	conf=${conf//@PORT@/"$port"}
	conf=${conf//@TEMP_PATHS@/"$temp"}
	printf '%s\n' "$conf" >"$TMP/nginx.conf"
	# -e keeps nginx from opening its compiled-in error log before it has
	# read the configuration (nginx >= 1.19.5).
	"$NGINX" -h 2>&1 | grep -q -- '^ *-e ' && eopt=(-e "$dir/nginx-error.log")
	"$NGINX" -t -q -p "$dir/" -c "$TMP/nginx.conf" "${eopt[@]}" >"$TMP/nginx.log" 2>&1 ||
		{ cat "$TMP/nginx.log" >&2; die "nginx rejects the generated configuration $TMP/nginx.conf"; }
	taskset -c "$SERVER_CPU" "$NGINX" -p "$dir/" -c "$TMP/nginx.conf" "${eopt[@]}" >>"$TMP/nginx.log" 2>&1 &
	pid=$!
	PIDS+=("$pid")
	wait_ready "$pid" "$port" nginx "$TMP/nginx.log"
	PID_OF[$name]=$pid
	PORT_OF[$name]=$port
	NOTE_OF[$name]="$("$NGINX" -v 2>&1 | sed 's/^nginx version: //'), worker_processes 1"
	SERVERS+=("$name")
}

# ---------------------------------------------------------------- measuring

TICKS=$(getconf CLK_TCK)

# CPU clock ticks (user + system) of `pid` and every live descendant,
# including what each has collected from children it already reaped.
tree_ticks() {
	local root=$1 f s pid rest total=0
	local -A kids=() own=()
	for f in /proc/[0-9]*/stat; do
		{ read -r s <"$f"; } 2>/dev/null || continue
		pid=${f#/proc/}
		pid=${pid%/stat}
		rest=${s##*) }
		# shellcheck disable=SC2086 # the fields are numbers and one letter
		set -- $rest
		# After the command name: $1 state, $2 ppid, $12 utime, $13 stime,
		# $14 cutime, $15 cstime.
		kids[$2]+=" $pid"
		own[$pid]=$((${12} + ${13} + ${14} + ${15}))
	done
	local queue=("$root") p c
	while ((${#queue[@]})); do
		p=${queue[0]}
		queue=("${queue[@]:1}")
		total=$((total + ${own[$p]:-0}))
		for c in ${kids[$p]:-}; do
			queue+=("$c")
		done
	done
	echo "$total"
}

# wrk's duration strings (1.23ms, 930.00us, 1.02s, 2.00m) in microseconds.
to_us() {
	awk -v v="$1" 'BEGIN {
		n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
		f = (u == "us") ? 1 : (u == "ms") ? 1e3 : (u == "s") ? 1e6 : (u == "m") ? 6e7 : (u == "h") ? 3.6e9 : -1
		if (f < 0) { print "nan"; exit }
		printf "%.1f\n", n * f
	}'
}

wrk_args() {
	local workload=$1
	WRK_ARGS=(-t1 "-c$CONNS" --latency)
	WRK_TAIL=()
	case $workload in
	keepalive) ;;
	pipelined)
		WRK_ARGS+=(-s "$ROOT/bench/pipeline.lua")
		WRK_TAIL=(-- "$DEPTH")
		;;
	close) WRK_ARGS+=(-H "Connection: close") ;;
	*) die "unknown workload $workload (keepalive, pipelined, close)" ;;
	esac
}

# One measured run; appends "workload server rps p99_us cpu_us errors" to
# $RESULTS and prints a progress line.
measure() {
	local rep=$1 workload=$2 name=$3 pid port out t0 t1 reqs rps p99 cpu errs
	pid=${PID_OF[$name]}
	port=${PORT_OF[$name]}
	alive "$pid" || die "$name (pid $pid) is gone; its log is in $TMP"
	wrk_args "$workload"
	t0=$(tree_ticks "$pid")
	out=$(taskset -c "$CLIENT_CPU" wrk "${WRK_ARGS[@]}" "-d$DURATION" "http://127.0.0.1:$port/" "${WRK_TAIL[@]}" 2>&1) ||
		{ echo "$out" >&2; die "wrk failed against $name"; }
	t1=$(tree_ticks "$pid")
	reqs=$(awk '/ requests in / { print $1 }' <<<"$out")
	rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
	p99=$(awk '$1 == "99%" { print $2 }' <<<"$out")
	[[ -n $reqs && -n $rps && -n $p99 ]] || { echo "$out" >&2; die "could not read wrk's output (above)"; }
	((reqs > 0)) || { echo "$out" >&2; die "$name completed no request under $workload"; }
	p99=$(to_us "$p99")
	# wrk times a pipelined batch as one sample but corrects for coordinated
	# omission as if every response were one round trip; its percentiles are
	# then meaningless (often 0), so none is reported for this workload.
	[[ $workload == pipelined ]] && p99=nan
	cpu=$(awk -v d=$((t1 - t0)) -v hz="$TICKS" -v n="$reqs" 'BEGIN { printf "%.3f\n", d * 1e6 / hz / n }')
	errs=$(awk '/Socket errors:/ { gsub(/,/, ""); s += $4 + $6 + $8 + $10 }
		/Non-2xx or 3xx responses:/ { s += $NF } END { print s + 0 }' <<<"$out")
	echo "$workload $name $rps $p99 $cpu $errs" >>"$RESULTS"
	printf '  rep %d/%d  %-10s %-15s %12.0f req/s  p99 %9s  %7.3f µs/req%s\n' \
		"$rep" "$REPS" "$workload" "$name" "$rps" "$(fmt_us "$p99")" "$cpu" \
		"$( ((errs == 0)) || echo "  ($errs errors or non-2xx)")"
}

fmt_us() {
	awk -v u="$1" 'BEGIN { if (u == "nan") printf "n/a"; else if (u >= 1000) printf "%.2fms", u / 1000; else printf "%.0fus", u }'
}

# Median of column `col` over the runs of `workload` on `name`.
median() {
	awk -v w="$1" -v s="$2" -v c="$3" '$1 == w && $2 == s && $c != "nan" { print $c }' "$RESULTS" | sort -g |
		awk '{ a[NR] = $1 } END {
			if (NR == 0) print "nan"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2
		}'
}

ratio() {
	awk -v a="$1" -v b="$2" 'BEGIN { if (a == "nan" || b == "nan" || b + 0 == 0) print "-"; else printf "%.2f\n", a / b }'
}

# ---------------------------------------------------------------- main -----

[[ $REPS =~ ^[1-9][0-9]*$ ]] || die "REPS must be a positive whole number"
command -v taskset >/dev/null || die "needs taskset (Debian package util-linux)"
if (($(nproc) < 2)); then
	echo "bench: only one CPU available: server and wrk share it, so figures mean little" >&2
	CLIENT_CPU=$SERVER_CPU
fi
install_tools

echo "bench: building forkring (release)"
cargo build --release --quiet --bin forkring
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/forkring
[[ $BIN == /* ]] || BIN=$ROOT/$BIN

TMP=$(mktemp -d "${TMPDIR:-/tmp}/forkring-bench.XXXXXX")
RESULTS=$TMP/results

for b in $BACKENDS; do
	start_forkring "$b"
done
start_nginx

echo
echo "servers (each pinned to CPU $SERVER_CPU):"
for name in "${SERVERS[@]}"; do
	printf '  %-15s pid %-7s 127.0.0.1:%-5s %s\n' "$name" "${PID_OF[$name]}" "${PORT_OF[$name]}" "${NOTE_OF[$name]}"
done
echo "client: taskset -c $CLIENT_CPU wrk -t1 -c$CONNS -d$DURATION --latency; $REPS repetition(s); pipeline depth $DEPTH"

if [[ $WARMUP != 0 ]]; then
	echo "warm-up: $WARMUP per server"
	for name in "${SERVERS[@]}"; do
		taskset -c "$CLIENT_CPU" wrk -t1 "-c$CONNS" "-d$WARMUP" "http://127.0.0.1:${PORT_OF[$name]}/" >/dev/null 2>&1 ||
			die "warm-up wrk run against $name failed"
	done
fi

: >"$RESULTS"
for ((rep = 1; rep <= REPS; rep++)); do
	# Rotate the order each repetition, so that no server always runs first.
	order=()
	n=${#SERVERS[@]}
	for ((i = 0; i < n; i++)); do
		order+=("${SERVERS[$(((i + rep - 1) % n))]}")
	done
	for workload in $WORKLOADS; do
		for name in "${order[@]}"; do
			measure "$rep" "$workload" "$name"
		done
	done
done

echo
echo "Median of $REPS run(s); ratio = forkring / nginx (req/s: higher is better; p99 and CPU: lower is better)"
echo
printf '%-10s %-8s | %10s %10s %6s | %9s %9s %6s | %9s %9s %6s\n' \
	workload backend "req/s" "nginx" ratio "p99" "nginx" ratio "   µs/req" "nginx" ratio
printf '%s\n' "-----------------------------------------------------------------------------------------------------"
for workload in $WORKLOADS; do
	n_rps=$(median "$workload" nginx 3)
	n_p99=$(median "$workload" nginx 4)
	n_cpu=$(median "$workload" nginx 5)
	for b in $BACKENDS; do
		f_rps=$(median "$workload" "forkring-$b" 3)
		f_p99=$(median "$workload" "forkring-$b" 4)
		f_cpu=$(median "$workload" "forkring-$b" 5)
		printf '%-10s %-8s | %10.0f %10.0f %6s | %9s %9s %6s | %9.3f %9.3f %6s\n' \
			"$workload" "$b" "$f_rps" "$n_rps" "$(ratio "$f_rps" "$n_rps")" \
			"$(fmt_us "$f_p99")" "$(fmt_us "$n_p99")" "$(ratio "$f_p99" "$n_p99")" \
			"$f_cpu" "$n_cpu" "$(ratio "$f_cpu" "$n_cpu")"
	done
done
errors=$(awk '{ s += $6 } END { print s + 0 }' "$RESULTS")
((errors == 0)) || echo "note: $errors socket errors or non-2xx responses in total (see the per-run lines)"
