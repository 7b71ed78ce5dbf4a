#!/usr/bin/env bash
# Installs what the harnesses drive besides forkring, when it is missing,
# with apt-get (Debian packages): wrk (`wrk`) and nginx, the anchor
# (`nginx-light`, or `nginx` where there is no nginx-light).
#
#   install-deps.sh            make stress: without apt-get (or root/sudo) it
#                              says what is missing and carries on; the
#                              harness then measures scenario 5 with its own
#                              client and prints no nginx lines
#   install-deps.sh --scale    make scale: HAProxy too (`haproxy`), the
#                              balancer in front of the fleet; without it
#                              `make scale` refuses to run and says why
#   install-deps.sh --bench    make bench (bench/run.sh): nginx's echo module
#                              too (`libnginx-mod-http-echo`, which answers
#                              POST /echo; without it nginx sits out that
#                              workload), and wrk or nginx still missing is
#                              an error
#   install-deps.sh --echo-module
#                              prints the echo module's path, if this nginx
#                              ($NGINX, or the one on PATH) has one
set -euo pipefail
mode=stress
case ${1:-} in
--scale) mode=scale ;;
--bench) mode=bench ;;
esac
# The prefix of every message: the make target it serves.
who=$mode
[[ $mode == scale ]] && who=stress

fail() {
	echo "$who: $*" >&2
	[[ $mode == bench ]] && exit 1
	exit 0
}

have_nginx() {
	[[ -n ${NGINX:-} ]] || command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]]
}

nginx_bin() {
	if [[ -n ${NGINX:-} ]]; then echo "$NGINX"; elif command -v nginx; then :; else echo /usr/sbin/nginx; fi
}

# The echo module's path, if this nginx has one (bench/run.sh asks too).
echo_module() {
	local dir
	dir=$("$(nginx_bin)" -V 2>&1 | grep -o -- '--modules-path=[^ ]*' | cut -d= -f2 || true)
	dir=${dir:-/usr/lib/nginx/modules}
	[[ -f $dir/ngx_http_echo_module.so ]] && echo "$dir/ngx_http_echo_module.so"
}
if [[ ${1:-} == --echo-module ]]; then
	echo_module
	exit
fi

want=()
command -v wrk >/dev/null || want+=(wrk)
if ! have_nginx; then
	want+=(nginx)
elif [[ $mode == bench && -z $(echo_module || true) ]]; then
	want+=(echo)
fi
[[ $mode == scale ]] && ! command -v haproxy >/dev/null && ! [[ -x /usr/sbin/haproxy ]] && want+=(haproxy)
((${#want[@]})) || exit 0

# The echo module alone is worth no error: nginx then sits out POST /echo.
only_echo=""
[[ ${want[*]} == echo ]] && only_echo=1
if ! command -v apt-get >/dev/null; then
	[[ -n $only_echo ]] && exit 0
	[[ $mode == bench ]] && fail "needs ${want[*]}, and there is no apt-get here to install them; install them and rerun"
	fail "${want[*]} missing and no apt-get to install them; running without"
fi
sudo=()
if ((EUID != 0)); then
	if ! command -v sudo >/dev/null; then
		[[ -n $only_echo ]] && exit 0
		[[ $mode == bench ]] && fail "needs ${want[*]}; run as root or install them"
		fail "${want[*]} missing; run as root (or with sudo) to install them; running without"
	fi
	sudo=(sudo)
fi

POLICY_RC_CREATED=""
cleanup() {
	[[ -n $POLICY_RC_CREATED ]] && rm -f /usr/sbin/policy-rc.d
	return 0
}
trap cleanup EXIT

if [[ $mode == bench ]]; then
	echo "$who: ${want[*]} missing; installing the Debian packages with apt-get" \
		"(wrk; nginx-light, or nginx where there is no nginx-light; libnginx-mod-http-echo)"
else
	echo "$who: ${want[*]} missing; installing the Debian packages with apt-get"
fi
# The nginx and haproxy packages start a system-wide server where they
# can; the harnesses start their own, so keep the packages from doing so.
if ((EUID == 0)) && [[ ! -e /usr/sbin/policy-rc.d ]]; then
	printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
	chmod +x /usr/sbin/policy-rc.d
	POLICY_RC_CREATED=1
fi
export DEBIAN_FRONTEND=noninteractive
echo "$who: apt-get update"
"${sudo[@]}" apt-get update -q
for pkg in "${want[@]}"; do
	case $pkg in
	wrk)
		echo "$who: apt-get install wrk"
		"${sudo[@]}" apt-get install -y -q wrk
		;;
	haproxy)
		echo "$who: apt-get install haproxy"
		"${sudo[@]}" apt-get install -y -q --no-install-recommends haproxy
		;;
	nginx)
		echo "$who: apt-get install nginx-light"
		"${sudo[@]}" apt-get install -y -q nginx-light ||
			{
				echo "$who: no nginx-light; apt-get install nginx"
				"${sudo[@]}" apt-get install -y -q nginx
			}
		;;
	echo)
		echo "$who: apt-get install libnginx-mod-http-echo"
		"${sudo[@]}" apt-get install -y -q libnginx-mod-http-echo ||
			echo "$who: could not install nginx's echo module; nginx sits out the post workload"
		;;
	esac
done
if [[ $mode == bench ]]; then
	command -v wrk >/dev/null || fail "wrk is still missing after installing it"
	have_nginx || fail "nginx is still missing after installing it"
	exit 0
fi
command -v wrk >/dev/null || echo "$who: wrk is still missing after installing it" >&2
have_nginx || echo "$who: nginx is still missing after installing it" >&2
if [[ $mode == scale ]] && ! command -v haproxy >/dev/null && ! [[ -x /usr/sbin/haproxy ]]; then
	echo "scale: haproxy is still missing after installing it" >&2
fi
