#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Commands per second of many concurrent clients through imapcached
beside the same clients straight to Dovecot (issue 13 item 3):
BENCH_LOAD_CLIENTS clients (default 200) over the fixture's load accounts
(20, made by make bench-load) for BENCH_LOAD_SECONDS (default 60) each
way, with tests/integration/loaddriver.py's mixed workload and all its
checks. Prints both rates and their ratio (one run each: the machine's
load moves both), the commands by kind, and the daemon's peak RSS
(VmHWM). Exits non-zero when an answer was wrong (every failure is
printed) or the daemon died; never judges the rates."""
import os
import sys

sys.dont_write_bytecode = True  # the imports below must leave the source tree alone
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import loaddriver  # noqa: E402
from proxyfixture import ENV, PORT, Daemon, upstream_dovecot  # noqa: E402

CLIENTS = int(ENV.get("BENCH_LOAD_CLIENTS", "200"))
SECONDS = float(ENV.get("BENCH_LOAD_SECONDS", "60"))


def report(name, result):
    print("%-22s %7d commands in %5.1f s: %7.0f/s (%s)" % (
        name, result.commands, result.elapsed, result.rate,
        ", ".join("%s %d" % kv for kv in sorted(result.counts.items()))))
    for failure in result.failures:
        print("FAIL (%s): %s" % (name, failure))
    if result.failure_count > len(result.failures):
        print("... and %d more failures" % (result.failure_count - len(result.failures)))


def main():
    accounts = loaddriver.accounts()
    if not accounts:
        sys.exit("bench-load: no load accounts (run under with-dovecot with IMAPTEST_LOAD_USERS=20)")
    corpus = loaddriver.Corpus()
    reference = loaddriver.reference(corpus, accounts)
    print("%d clients over %d accounts, %g s each way" % (CLIENTS, len(accounts), SECONDS))
    direct = loaddriver.run(PORT, corpus, reference, accounts, CLIENTS, SECONDS, "direct")
    report("straight to Dovecot", direct)
    daemon = Daemon(upstreams=upstream_dovecot("none"), log_level="info", keep_lines=2000)
    try:
        via = loaddriver.run(daemon.port, corpus, reference, accounts, CLIENTS, SECONDS, "proxy")
        hwm = loaddriver.vm_hwm(daemon.pid)
        alive = daemon.returncode is None
    finally:
        status = daemon.stop()
    report("through imapcached", via)
    print("ratio (through imapcached / straight): %.2f" % (via.rate / direct.rate if direct.rate else 0))
    print("daemon peak RSS (VmHWM): %d kB; %s" % (hwm, "running at the end" if alive else "DIED"))
    if not alive or status != 0:
        print(daemon.log()[-3000:])
    return 0 if alive and status == 0 and direct.failure_count == 0 and via.failure_count == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
