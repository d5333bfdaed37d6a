#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Concurrent clients through imapcached, every answer checked (issue 13
item 3, the short run of make check): IMAPTEST_LOAD_CLIENTS clients
(default 40) over the fixture's load accounts (IMAPTEST_LOAD_USERS, made
20 by the Makefile) for IMAPTEST_LOAD_SECONDS (default 10) with
loaddriver's mixed workload. Any wrong answer, hang or lost or doubled
APPEND fails the test; the daemon must still run and its peak RSS
(VmHWM) is printed. tests/bench/bench-load.py is the long run with a rate
beside Dovecot's."""
import subprocess
import sys

import loaddriver
from checks import check, summary
from proxyfixture import BINARY, ENV, Daemon, upstream_dovecot

CLIENTS = int(ENV.get("IMAPTEST_LOAD_CLIENTS", "40"))
SECONDS = float(ENV.get("IMAPTEST_LOAD_SECONDS", "10"))
RSS_LIMIT_KB = 256 * 1024  # the daemon's peak RSS: far above what 40 clients need, far below a leak's


def main():
    accounts = loaddriver.accounts()
    if not accounts:
        print("SKIP: no load accounts (run under with-dovecot with IMAPTEST_LOAD_USERS=20)")
        return 77
    corpus = loaddriver.Corpus()
    reference = loaddriver.reference(corpus, accounts)
    daemon = Daemon(upstreams=upstream_dovecot("none"), log_level="info", keep_lines=2000)
    try:
        result = loaddriver.run(daemon.port, corpus, reference, accounts, CLIENTS, SECONDS, "test")
        hwm = loaddriver.vm_hwm(daemon.pid)
        check("the daemon still runs", daemon.returncode is None, daemon.log()[-2000:])
    finally:
        status = daemon.stop()
    print("%d commands in %.1f s (%.0f/s) by %d clients over %d accounts: %s" % (
        result.commands, result.elapsed, result.rate, CLIENTS, len(accounts),
        ", ".join("%s %d" % kv for kv in sorted(result.counts.items()))))
    print("daemon peak RSS (VmHWM): %d kB" % hwm)
    for failure in result.failures:
        print("FAIL: " + failure)
    check("every answer right (%d wrong)" % result.failure_count, result.failure_count == 0)
    check("every kind of command ran", all(result.counts.get(k, 0) > 0 for k in (
        "FETCH", "SEARCH", "STORE", "APPEND", "EXPUNGE", "MOVE", "IDLE", "LOGIN", "SELECT")), result.counts)
    # AddressSanitizer keeps freed memory in quarantine: RSS then says nothing
    sanitized = b"libasan" in subprocess.run(["ldd", BINARY], capture_output=True).stdout
    check("peak RSS under %d kB%s" % (RSS_LIMIT_KB, ", not judged under AddressSanitizer" if sanitized else ""),
          sanitized or hwm < RSS_LIMIT_KB, hwm)
    check("the daemon stopped cleanly", status == 0, status)
    return summary()


if __name__ == "__main__":
    sys.exit(main())
