#!/bin/bash
# SPDX-License-Identifier: MIT
# test-configure-errors.sh must pass in an in-tree build too (./configure
# && make check in the source tree), whose sources hold a config.status:
# a view of the sources with one stands for that tree here.
set -u
top=${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

mkdir "$work/src"
for entry in "$top"/*; do
	ln -s "$entry" "$work/src/"
done
if [ ! -e "$work/src/config.status" ]; then
	printf '#! /bin/sh\n# stands for the one an in-tree ./configure leaves\nexit 0\n' >"$work/src/config.status"
fi
top_srcdir=$work/src "$top/tests/build/test-configure-errors.sh"
