#!/usr/bin/env bash
# make stress: installs what the harness drives besides forkring, when it is
# missing: wrk (Debian package `wrk`) and nginx, the anchor (`nginx-light`,
# or `nginx` where there is no nginx-light), the way bench/run.sh does.
# Without apt-get (or root/sudo) it says what is missing and carries on: the
# harness then measures scenario 5 with its own client and prints no nginx
# lines.
#
# `install-deps.sh --scale` (make scale) wants HAProxy too (Debian's
# `haproxy`), the balancer in front of the fleet; without it `make scale`
# refuses to run and says why.
set -euo pipefail
scale=""
[[ ${1:-} == --scale ]] && scale=1

have_nginx() {
	[[ -n ${NGINX:-} ]] || command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]]
}

want=()
command -v wrk >/dev/null || want+=(wrk)
have_nginx || want+=(nginx)
[[ -n $scale ]] && ! command -v haproxy >/dev/null && ! [[ -x /usr/sbin/haproxy ]] && want+=(haproxy)
((${#want[@]})) || exit 0

if ! command -v apt-get >/dev/null; then
	echo "stress: ${want[*]} missing and no apt-get to install them; running without" >&2
	exit 0
fi
sudo=()
if ((EUID != 0)); then
	if ! command -v sudo >/dev/null; then
		echo "stress: ${want[*]} missing; run as root (or with sudo) to install them; running without" >&2
		exit 0
	fi
	sudo=(sudo)
fi

POLICY_RC_CREATED=""
cleanup() {
	[[ -n $POLICY_RC_CREATED ]] && rm -f /usr/sbin/policy-rc.d
	return 0
}
trap cleanup EXIT

echo "stress: ${want[*]} missing; installing the Debian packages with apt-get"
# The nginx and haproxy packages start a system-wide server where they
# can; the harnesses start their own, so keep the packages from doing so.
if ((EUID == 0)) && [[ ! -e /usr/sbin/policy-rc.d ]]; then
	printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
	chmod +x /usr/sbin/policy-rc.d
	POLICY_RC_CREATED=1
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -q
for pkg in "${want[@]}"; do
	case $pkg in
	wrk) "${sudo[@]}" apt-get install -y -q wrk ;;
	haproxy) "${sudo[@]}" apt-get install -y -q --no-install-recommends haproxy ;;
	nginx)
		"${sudo[@]}" apt-get install -y -q nginx-light ||
			{ echo "stress: no nginx-light; apt-get install nginx"; "${sudo[@]}" apt-get install -y -q nginx; }
		;;
	esac
done
command -v wrk >/dev/null || echo "stress: wrk is still missing after installing it" >&2
have_nginx || echo "stress: nginx is still missing after installing it" >&2
if [[ -n $scale ]] && ! command -v haproxy >/dev/null && ! [[ -x /usr/sbin/haproxy ]]; then
	echo "scale: haproxy is still missing after installing it" >&2
fi
