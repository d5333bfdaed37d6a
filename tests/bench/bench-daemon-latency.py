#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Measures how long a FETCH takes through imapcached against the same
FETCH sent straight to Dovecot: after LOGIN and SELECT, the time from
sending "FETCH n BODY[]" to reading its tagged OK, for the first FETCH
of a connection, for the ones after it and for the corpus's largest
message, and NOOP as the round trip of a command with no data; and the
time of an APPEND from Python's imaplib (which writes a literal and its
CRLF in two writes, without TCP_NODELAY), APPENDS of them on one
connection, APPEND_RUNS times, direct and through the proxy. Three
paths, a fresh connection per round on each: direct to Dovecot in
plaintext, direct with TLS (what the proxy's upstream side does), and
through the proxy (plaintext listener, TLS upstream). Prints medians
(with p90 and max) and the ratios proxy/direct; never judges them by
time. Runs under with-dovecot (make bench-daemon-latency); exits
non-zero only when the measurement itself failed."""
import imaplib
import importlib.util
import json
import os
import socket
import ssl
import statistics
import sys
import time

sys.dont_write_bytecode = True  # the import below must leave the source tree alone
HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location(
    "bench_daemon_resources", os.path.join(HERE, "bench-daemon-resources.py"))
resources = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(resources)
Daemon, MeasureError = resources.Daemon, resources.MeasureError
import proxyfixture  # noqa: E402 (on the path bench-daemon-resources.py puts it on)
from proxyfixture import CA, HOST, MANIFEST, PASS, PORT, TLS_PORT, USER, quote_bytes  # noqa: E402

ROUNDS = 15            # connections per path: enough for a stable median on a busy machine
MESSAGES = (1, 2, 3, 4, 5)  # FETCHed in this order on each connection; 1 comes back at the end
WAIT = 60              # seconds: the longest any single answer may take
APPENDS, APPEND_RUNS = 20, 3  # imaplib APPENDs per connection, connections per path
APPEND_MESSAGE = b"From: a@example.org\r\nSubject: append latency\r\n\r\n" + b"x" * 2000 + b"\r\n"
with open(MANIFEST) as _f:
    _largest = max(json.load(_f)["messages"], key=lambda m: m["size"])
LARGEST_UID, LARGEST_SIZE = _largest["uid"], _largest["size"]


class Path:
    """One way to reach Dovecot, and the times measured through it (ms)."""

    def __init__(self, name, port, tls):
        self.name, self.port, self.tls = name, port, tls
        self.first, self.later, self.again, self.noop, self.large = [], [], [], [], []

    def connect(self):
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=WAIT)
        if self.tls:
            context = ssl.create_default_context(cafile=CA)
            sock = context.wrap_socket(sock, server_hostname=HOST)
        return Conn(self.port, sock=sock, skip_literals=True)


class Conn(proxyfixture.Raw):
    """An IMAP connection that skips literals by their announced size, so
    the client's own cost stays linear in the bytes (reading a 2 MB
    literal line by line would turn the client into the figure)."""

    error = MeasureError
    recv_size = 1 << 20


def percentile(samples, fraction):
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def timed(conn, tag, command):
    """Milliseconds from sending command to its tagged OK."""
    started = time.perf_counter()
    conn.send(b"%s %s\r\n" % (tag.encode(), command))
    conn.expect_ok(tag, command.decode())
    return (time.perf_counter() - started) * 1000


def one_round(path):
    conn = path.connect()
    try:
        greeting = conn.line()
        if not greeting.startswith("* OK"):
            raise MeasureError("%s greeting: %s" % (path.name, greeting))
        conn.send(b"l LOGIN " + quote_bytes(USER) + b" " + quote_bytes(PASS) + b"\r\n")
        conn.expect_ok("l", "LOGIN")
        conn.send(b"s SELECT INBOX\r\n")
        conn.expect_ok("s", "SELECT")
        times = [timed(conn, "f%d" % i, b"FETCH %d BODY[]" % seq) for i, seq in enumerate(MESSAGES)]
        path.first.append(times[0])
        path.later.extend(times[1:])
        path.again.append(timed(conn, "r", b"FETCH %d BODY[]" % MESSAGES[0]))
        path.noop.append(timed(conn, "n", b"NOOP"))
        path.large.append(timed(conn, "b", b"UID FETCH %d BODY[]" % LARGEST_UID))
        conn.send(b"z LOGOUT\r\n")
    finally:
        conn.close()


def append_round(port, mailbox):
    """Milliseconds per imaplib APPEND on one connection (as imaplib
    sends it: line, "+", literal, CRLF), into mailbox, made and dropped."""
    conn = imaplib.IMAP4("127.0.0.1", port, timeout=WAIT)
    try:
        conn.login(USER, PASS)
        conn.create(mailbox)
        times = []
        for _ in range(APPENDS):
            started = time.perf_counter()
            status, _ = conn.append(mailbox, None, None, APPEND_MESSAGE)
            times.append((time.perf_counter() - started) * 1000)
            if status != "OK":
                raise MeasureError("APPEND on port %d: %s" % (port, status))
        conn.delete(mailbox)
        return times
    except imaplib.IMAP4.error as e:
        raise MeasureError("imaplib on port %d: %s" % (port, e))
    finally:
        conn.logout()


def report_appends(times):
    print("imaplib APPEND, %d per connection, %d connections per path; ms" % (APPENDS, APPEND_RUNS))
    for name, samples in times.items():
        print("%-12s median %.2f (p90 %.1f, max %.1f)" % (name, statistics.median(samples),
                                                         percentile(samples, 0.9), max(samples)))
    print("RESULT APPEND proxy/direct: %.2fx" % (statistics.median(times["proxy"]) /
                                                 statistics.median(times["direct"])))


def main():
    daemon = Daemon()
    paths = [Path("direct", PORT, False),
             Path("direct TLS", TLS_PORT, True),
             Path("proxy", daemon.port, False)]
    try:
        for path in paths:  # one warm-up round each, not counted
            one_round(path)
            path.first, path.later, path.again, path.noop, path.large = [], [], [], [], []
        for _ in range(ROUNDS):  # interleaved, so load changes hit every path alike
            for path in paths:
                one_round(path)
        appends = {"direct": [], "proxy": []}
        for run in range(APPEND_RUNS):
            appends["direct"] += append_round(PORT, "bench-append-direct-%d" % run)
            appends["proxy"] += append_round(daemon.port, "bench-append-proxy-%d" % run)
    except (MeasureError, OSError) as e:
        print("FAIL: measurement failed: %s" % e)
        return 1
    finally:
        daemon.stop()
    print("%d connections per path; FETCH BODY[] of messages %s after LOGIN and SELECT; medians in ms"
          % (ROUNDS, ",".join(str(m) for m in MESSAGES)))
    print("%-12s %18s %18s %18s %18s %18s" % ("path", "first FETCH", "later FETCH", "same again", "NOOP",
                                              "%d KiB FETCH" % (LARGEST_SIZE >> 10)))
    print("%-12s %18s %18s %18s %18s %18s" % ("", *["median (p90, max)"] * 5))
    medians = {}
    for path in paths:
        samples = (path.first, path.later, path.again, path.noop, path.large)
        medians[path.name] = [statistics.median(x) for x in samples]
        print("%-12s %s" % (path.name, " ".join(
            "%18s" % ("%.2f (%.1f, %.1f)" % (statistics.median(x), percentile(x, 0.9), max(x)))
            for x in samples)))
    for base in ("direct", "direct TLS"):
        ratios = [p / b if b > 0 else float("inf") for p, b in zip(medians["proxy"], medians[base])]
        print("RESULT proxy/%s: first FETCH %.2fx, later FETCH %.2fx, same again %.2fx, NOOP %.2fx, "
              "%d KiB FETCH %.2fx" % (base, *ratios[:4], LARGEST_SIZE >> 10, ratios[4]))
    report_appends(appends)
    print("(a benchmark: exit 0 whatever the ratios)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
