#!/bin/bash
# SPDX-License-Identifier: MIT
# dev.sh: set up, build, demo and test imapcached on Debian 12.
#
#   ./dev.sh deps                 install the Debian packages that are missing
#   ./dev.sh build [--sanitizers|--threads|--fuzzers]
#   ./dev.sh demo                 deps + build + the demo session
#   ./dev.sh check [--sanitizers] deps + build + make check
#   ./dev.sh check --threads      the threaded suites under ThreadSanitizer
#   ./dev.sh fuzz [SECONDS]       deps + clang build + each fuzzer for SECONDS
#
# Builds go to build/ (build-asan/, build-tsan/, build-fuzz/ for the variants), never
# into the source tree.
set -euo pipefail
top=$(cd "$(dirname "$0")" && pwd)
jobs=$(nproc 2>/dev/null || echo 2)

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'dev.sh: %s\n' "$*" >&2; exit 1; }

# Build tools, libraries, and what the tests drive or compare against.
PACKAGES=(build-essential autoconf automake pkg-config
	libevent-dev libssl-dev libsqlite3-dev libconfig-dev libcunit1-dev libsystemd-dev
	libunistring-dev
	openssl python3 libpython3.11-testsuite dovecot-imapd isync offlineimap3 imapfilter curl clang systemd
	iproute2)

install_deps() {
	local missing=() pkg
	for pkg in "${PACKAGES[@]}"; do
		dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || missing+=("$pkg")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	say "installing: ${missing[*]}"
	local sudo=
	if [ "$(id -u)" != 0 ]; then
		command -v sudo >/dev/null || die "need root (or sudo) to apt-get install ${missing[*]}"
		sudo=sudo
	fi
	# The package would start a system-wide Dovecot on every interface;
	# the tests start their own on loopback, so keep it from starting.
	local policy=/usr/sbin/policy-rc.d added_policy=no
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
		$sudo chmod 755 "$policy"
		added_policy=yes
	fi
	local status=0
	{ $sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q \
		--no-install-recommends "${missing[@]}"; } || status=$?
	[ $added_policy = yes ] && $sudo rm -f "$policy"
	[ $status -eq 0 ] || die "apt-get install failed (status $status); see its messages above"
}

build() {
	local variant=${1:-} dir=build flags=()
	case "$variant" in
	"") ;;
	--sanitizers) dir=build-asan; flags=(--enable-sanitizers) ;;
	--threads) dir=build-tsan; flags=(--enable-sanitizers=thread) ;;
	--fuzzers) dir=build-fuzz; flags=(--enable-fuzzers CC=clang) ;;
	*) die "unknown build variant: $variant" ;;
	esac
	if [ ! -x "$top/configure" ] || [ ! -f "$top/Makefile.in" ] ||
		[ -n "$(find "$top" -path "$top/build*" -prune -o \( -name configure.ac -o -name '*.am' \) \
			-newer "$top/Makefile.in" -print)" ]; then
		say "autoreconf"
		(cd "$top" && autoreconf -fi)
	fi
	mkdir -p "$top/$dir"
	cd "$top/$dir"
	if [ ! -f Makefile ] || [ "$top/configure" -nt Makefile ]; then
		say "configure ${flags[*]} (in $dir/)"
		"$top/configure" -q "${flags[@]}"
	fi
	say "make (in $dir/)"
	make -s -j"$jobs"
	build_dir=$top/$dir
}

# Prints automake's counts as one "N passed, N failed" line.
summarize() {
	local log=$1/test-suite.log pass fail skip
	[ -f "$log" ] || return 0
	pass=$(sed -n 's/^# PASS: *//p' "$log"); fail=$(sed -n 's/^# FAIL: *//p' "$log")
	skip=$(sed -n 's/^# SKIP: *//p' "$log")
	fail=$((fail + $(sed -n 's/^# ERROR: *//p' "$log") + $(sed -n 's/^# XPASS: *//p' "$log")))
	echo "check: ${pass:-0} passed, ${fail:-0} failed, ${skip:-0} skipped"
}

# The suites that run a store's worker thread beside the event loop:
# what `check --threads` runs under ThreadSanitizer.
thread_tests="tests/unit/test-cache tests/unit/test-search tests/unit/test-prefetch
	tests/integration/test-imapcachectl.py tests/integration/test-cache-sessions.py
	tests/integration/test-cache-fts-crash.py"

check() {
	build "$@"
	say "make check (in ${build_dir#$top/}/)"
	local status=0 tests=()
	if [ "${1:-}" = --threads ]; then
		# a data race fails its test: the report aborts the process
		export TSAN_OPTIONS="halt_on_error=1 abort_on_error=1 second_deadlock_stack=1 ${TSAN_OPTIONS:-}"
		tests=(TESTS="$(echo $thread_tests)")
	fi
	make -j"$jobs" check "${tests[@]}" || status=$?
	if [ $status -ne 0 ]; then
		for log in $(grep -l -E '^:test-result: (FAIL|ERROR)' $(find . -name '*.trs') 2>/dev/null); do
			echo "---- ${log%.trs}.log"; tail -n 60 "${log%.trs}.log"
		done
	fi
	summarize "$build_dir"
	return $status
}

fuzz() {
	build --fuzzers
	"$top/tests/fuzz/run-fuzzers" "$build_dir" "${1:-30}"
}

demo() {
	build
	make -s -j"$jobs" tests/data/corpus-small/manifest.json
	top_builddir=$build_dir PYTHON3=$(command -v python3) \
		"$top/tests/integration/with-dovecot" "$top/tests/demo/run-demo" "$build_dir"
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
deps) install_deps ;;
build) install_deps; build "$@" ;;
check) install_deps; check "$@" ;;
demo) install_deps; demo ;;
fuzz) install_deps; fuzz "$@" ;;
*) sed -n '3,14s/^# \{0,1\}//p' "$0"; exit 2 ;;
esac
