#!/bin/bash
# SPDX-License-Identifier: MIT
# configure must stop with the Debian package to install when a required
# library is missing: each one is hidden from pkg-config in turn.
set -u
top=${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
passed=0 failed=0

# configure run from another directory refuses a source tree that has a
# config.status ("source directory already configured"), as the tree of
# an in-tree build (./configure && make check) has: run it from a view of
# the sources, links to everything but that config.status.
srcdir=$work/src
mkdir "$srcdir"
for entry in "$top"/*; do
	[ "${entry##*/}" = config.status ] || ln -s "$entry" "$srcdir/"
done

# A pkg-config directory with links to every .pc file the machine has.
mkdir "$work/pc"
for dir in $(pkg-config --variable pc_path pkg-config | tr ':' ' '); do
	[ -d "$dir" ] && find "$dir" -maxdepth 1 -name '*.pc' -exec ln -sf {} "$work/pc/" \;
done

expect_missing() {
	local pc=$1 package=$2
	rm -f "$work/pc/$pc.pc"
	mkdir "$work/build-$pc"
	(cd "$work/build-$pc" && PKG_CONFIG_LIBDIR=$work/pc "$srcdir/configure" -q >out 2>&1)
	local status=$?
	if [ $status -ne 0 ] && grep -q "apt-get install $package" "$work/build-$pc/out"; then
		echo "ok: without $pc.pc configure says: apt-get install $package"
		passed=$((passed + 1))
	else
		echo "FAIL: without $pc.pc (status $status):"; tail -n 5 "$work/build-$pc/out"
		failed=$((failed + 1))
	fi
	ln -sf "$(pkg-config --variable pcfiledir "$pc")/$pc.pc" "$work/pc/"
}

expect_missing libevent_openssl libevent-dev
expect_missing libssl libssl-dev
expect_missing sqlite3 libsqlite3-dev
expect_missing libconfig libconfig-dev
expect_missing cunit libcunit1-dev
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
