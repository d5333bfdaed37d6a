#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""What the upstream says while the proxy runs its own commands (a
prefetch batch, an IDLE paused for one) reaches the client in the
upstream's order and only once it may (doc/cache.md "Prefetch"):

- lines held during a batch go out before anything of the client's next
  command (an EXISTS before that command's EXPUNGE or FETCH of the new
  message; before a SELECT's answer, not inside it);
- a command the client pipelines behind DONE while its IDLE is paused is
  answered;
- a client idling in an empty mailbox is not paused again and again;
- flag updates held over several batches reach the client once per
  message, as its last state.

Each case came from a review with a reproduction against the real Dovecot."""
import re
import socket
import sys
import threading
import time

from checks import check, summary
import proxyfixture
from proxyfixture import PORT, USER, PASS, Daemon, Raw, Relay, quote

DONE = r"prefetch: nothing more is missing"
TIMINGS = re.compile(rb" \(\d+\.\d+ \+ \d+\.\d+( \+ \d+\.\d+)? secs\)")
MAILBOX = "own-order"


class Side:
    """One connection; commands under tags PREFIX1, PREFIX2, ..."""

    def __init__(self, port, prefix):
        self.conn = Raw(port, greeting=True)
        self.tag = 0
        self.prefix = prefix
        self.exchange("LOGIN %s %s" % (quote(USER), quote(PASS)))

    def send(self, command):
        self.tag += 1
        self.conn.send(b"%s%d %s\r\n" % (self.prefix.encode(), self.tag, command.encode()))
        return b"%s%d " % (self.prefix.encode(), self.tag)

    def read(self, tag):
        out = []
        while True:
            response = self.conn.response()
            out.append(TIMINGS.sub(b"", response))
            if response.startswith(tag):
                return out

    def exchange(self, command):
        return self.read(self.send(command))


def start(prefetch="headers", delay=0.0):
    relay = Relay(delay=delay)
    config = ('cache = { dir = "%s"; prefetch = "%s"; body_budget = 100000000; };\n'
              'timeouts = { shutdown = 0; };\n' % (proxyfixture.scratch_dir("imapcached-own-order."), prefetch))
    return relay, Daemon(relay.upstream_entry(), extra=config)


def exists_of(lines):
    counts = [int(m.group(1)) for m in (re.match(rb"\* (\d+) EXISTS", l) for l in lines) if m]
    return counts[-1] if counts else None


def make_mailbox(side, count):
    side.exchange("DELETE %s" % MAILBOX)
    side.exchange("CREATE %s" % MAILBOX)
    for i in range(count):
        body = b"Subject: m%d\r\n\r\nbody %d\r\n" % (i, i)
        side.exchange("APPEND %s {%d+}\r\n%s" % (MAILBOX, len(body), body.decode()))


def held_session(label):
    """A new daemon and a client in MAILBOX; another connection appends a
    message before the first prefetch batch, whose answer then holds the
    EXISTS. Returns (relay, daemon, proxied, other, messages upstream)."""
    relay, daemon = start()
    proxied, other = Side(daemon.port, "p"), Side(PORT, "o")
    make_mailbox(other, 30)
    proxied.exchange("SELECT %s" % MAILBOX)
    other.exchange("SELECT %s" % MAILBOX)
    other.exchange("APPEND %s {12+}\r\nSubject: x\r\n" % MAILBOX)
    proxied.exchange("CAPABILITY")
    check("%s: the prefetch walk ran" % label, daemon.wait_log(DONE) is not None)
    return relay, daemon, proxied, other, 31


def held_before_noop():
    """An append and an expunge during the walk: after its NOOP the client
    counts what the upstream has."""
    relay, daemon, proxied, other, real = held_session("noop")
    try:
        other.exchange("STORE 3 +FLAGS.SILENT (\\Deleted)")
        other.exchange("EXPUNGE")
        count = 30
        noop = proxied.exchange("NOOP")
        for line in noop:
            m = re.match(rb"\* (\d+) (EXISTS|EXPUNGE)", line)
            if m:
                count = int(m.group(1)) if m.group(2) == b"EXISTS" else count - 1
        check("noop: the client counts the upstream's messages", count == real - 1,
              "client %s, upstream %s: %r" % (count, real - 1, noop))
    finally:
        daemon.stop()
        relay.close()


def held_before_fetch():
    """The new message's FETCH line comes after the EXISTS that announces it."""
    relay, daemon, proxied, other, real = held_session("fetch")
    try:
        got = proxied.exchange("FETCH 1:* (FLAGS)")
        exists = [i for i, l in enumerate(got) if re.match(rb"\* %d EXISTS" % real, l)]
        fetch = [i for i, l in enumerate(got) if l.startswith(b"* %d FETCH" % real)]
        check("fetch: EXISTS before the new message's FETCH line", exists and fetch and exists[0] < fetch[0], got)
    finally:
        daemon.stop()
        relay.close()


def held_before_select():
    """Lines held in one mailbox don't land in the next one's SELECT."""
    relay, daemon, proxied, other, real = held_session("select")
    try:
        other.exchange("DELETE %s-empty" % MAILBOX)
        other.exchange("CREATE %s-empty" % MAILBOX)
        got = proxied.exchange("SELECT %s-empty" % MAILBOX)
        closed = [i for i, l in enumerate(got) if b"[CLOSED]" in l]
        check("select: the answer's EXISTS is the new mailbox's", exists_of(got) == 0, got)
        check("select: the old mailbox's EXISTS comes before [CLOSED]",
              closed and any(re.match(rb"\* %d EXISTS" % real, l) for l in got[:closed[0]]), got)
        other.exchange("DELETE %s-empty" % MAILBOX)
    finally:
        daemon.stop()
        relay.close()


def send_with_literal(side, command, argument):
    """Sends command with its last argument as a synchronizing literal
    (the command goes upstream before its line is complete); returns every
    response up to its tagged one, the "+" included."""
    side.tag += 1
    tag = b"%s%d " % (side.prefix.encode(), side.tag)
    side.conn.send(tag + command.encode() + b" {%d}\r\n" % len(argument))
    out = []
    while True:  # what comes before the "+"
        response = side.conn.response()
        out.append(TIMINGS.sub(b"", response))
        if response.startswith(b"+"):
            break
    side.conn.send(argument + b"\r\n")
    return out + side.read(tag)


def held_before_literal_append():
    """A command with a synchronizing literal goes upstream before its
    line is complete: what was held still goes out before its answer (an
    APPEND's EXISTS was once followed by the smaller held one)."""
    relay, daemon, proxied, other, real = held_session("literal append")
    try:
        got = send_with_literal(proxied, "APPEND %s" % MAILBOX, b"Subject: y\r\n\r\nliteral\r\n")
        counts = [int(m.group(1)) for m in (re.match(rb"\* (\d+) EXISTS", l) for l in got) if m]
        check("literal append: the EXISTS counts never go down", counts == sorted(counts) and counts[-1] == real + 1,
              got)
    finally:
        daemon.stop()
        relay.close()


def held_before_literal_select():
    """The same for a SELECT whose name is a literal: the old mailbox's
    EXISTS once came inside the new one's answer, after [CLOSED]."""
    relay, daemon, proxied, other, real = held_session("literal select")
    try:
        other.exchange("DELETE %s-empty" % MAILBOX)
        other.exchange("CREATE %s-empty" % MAILBOX)
        got = send_with_literal(proxied, "SELECT", ("%s-empty" % MAILBOX).encode())
        closed = [i for i, l in enumerate(got) if b"[CLOSED]" in l]
        check("literal select: the answer's EXISTS is the new mailbox's", exists_of(got) == 0, got)
        check("literal select: the old mailbox's EXISTS comes before [CLOSED]",
              closed and any(re.match(rb"\* %d EXISTS" % real, l) for l in got[:closed[0]]), got)
        other.exchange("DELETE %s-empty" % MAILBOX)
    finally:
        daemon.stop()
        relay.close()


def idle_pipeline():
    """DONE and a NOOP in one packet while the proxy pauses the IDLE."""
    relay, daemon = start(delay=0.05)  # a 100 ms round trip: the pause is long enough to hit
    proxied = Side(daemon.port, "p")
    try:
        proxied.exchange("SELECT INBOX")
        tag = proxied.send("IDLE")
        check("pipeline: IDLE goes ahead", proxied.conn.response().startswith(b"+ "))
        deadline = time.time() + 20
        while time.time() < deadline and not any(c.line == "DONE" for c in relay.recorded()):
            time.sleep(0.005)
        check("pipeline: the proxy paused the IDLE", any(c.line == "DONE" for c in relay.recorded()))
        proxied.conn.send(b"DONE\r\n" + b"p9 NOOP\r\n")
        proxied.conn.sock.settimeout(10)
        got = []
        try:
            while not got or not got[-1].startswith(b"p9 "):
                got.append(proxied.conn.response())
        except (socket.timeout, OSError):
            pass
        check("pipeline: the IDLE ends and the NOOP behind DONE is answered",
              len(got) >= 2 and any(l.startswith(tag + b"OK") for l in got) and got[-1].startswith(b"p9 OK"), got)
    finally:
        daemon.stop()
        relay.close()


def idle_done_during_pause(line=b"DONE"):
    """A DONE that comes just after the proxy paused the IDLE: answered
    with the kept OK, no prefetch batch first. Any other line ends the
    IDLE with Dovecot's "BAD Expected DONE." (it once got the kept OK)."""
    relay, daemon = start("full", delay=0.05)
    proxied = Side(daemon.port, "p")
    label = line.decode()
    try:
        proxied.exchange("SELECT INBOX")
        tag = proxied.send("IDLE")
        proxied.conn.response()
        first = len(relay.recorded())
        deadline = time.time() + 20
        while time.time() < deadline and not any(c.line == "DONE" for c in relay.recorded()[first:]):
            time.sleep(0.001)
        paused_at = len(relay.recorded())
        proxied.conn.send(line + b"\r\n")
        got = proxied.read(tag)
        after = [c.line for c in relay.recorded()[paused_at:]]  # what was sent before the OK reached the client
        if line.upper() == b"DONE":
            check("%s: the IDLE ends with its OK" % label, got[-1].startswith(tag + b"OK"), got)
        else:
            check("%s: the IDLE ends with BAD Expected DONE" % label, got[-1] == tag + b"BAD Expected DONE.\r\n", got)
        check("%s: no batch between the pause and the client's line" % label,
              not any(re.search(r" FETCH ", line) for line in after), after)
        check("%s: the session goes on" % label, proxied.exchange("NOOP")[-1].startswith(b"p"), "")
    finally:
        daemon.stop()
        relay.close()


def idle_empty_mailbox():
    """An empty mailbox has nothing to prefetch: the IDLE stays as it is."""
    relay, daemon = start()
    proxied, other = Side(daemon.port, "p"), Side(PORT, "o")
    try:
        other.exchange("DELETE %s-empty" % MAILBOX)
        other.exchange("CREATE %s-empty" % MAILBOX)
        proxied.exchange("SELECT %s-empty" % MAILBOX)
        tag = proxied.send("IDLE")
        proxied.conn.response()
        time.sleep(2)
        lines = [c.line for c in relay.recorded()]
        check("empty: no pause loop (at most one DONE upstream in 2 s)", lines.count("DONE") <= 1,
              "%d DONE" % lines.count("DONE"))
        proxied.conn.send(b"DONE\r\n")
        check("empty: DONE ends the IDLE", proxied.read(tag)[-1].startswith(tag + b"OK"))
        other.exchange("DELETE %s-empty" % MAILBOX)
    finally:
        daemon.stop()
        relay.close()


def held_updates_merged():
    """Another client toggles \\Flagged on every message during the walk:
    the held updates reach the client as one line per message at most."""
    relay, daemon = start("full", delay=0.01)
    proxied, other = Side(daemon.port, "p"), Side(PORT, "o")
    stop = threading.Event()

    def toggle():
        other.exchange("SELECT %s" % MAILBOX)
        i = 0
        while not stop.is_set() and i < 2000:
            other.exchange("STORE 1:* %sFLAGS.SILENT (\\Flagged)" % ("+" if i % 2 == 0 else "-"))
            i += 1

    try:
        make_mailbox(other, 60)
        proxied.exchange("SELECT %s" % MAILBOX)
        thread = threading.Thread(target=toggle)
        thread.start()
        walked = daemon.wait_log(DONE, timeout=60) is not None
        stop.set()
        thread.join()
        # the held lines are released before the NOOP's own; count those
        proxied.conn.send(b"p99 NOOP\r\n")
        got = proxied.read(b"p99 ")
        seqs = [int(m.group(1)) for m in (re.match(rb"\* (\d+) FETCH \(FLAGS", l) for l in got) if m]
        check("merged: the walk ran while flags changed", walked)
        check("merged: each message's update at most twice (held, then the NOOP's)",
              all(seqs.count(s) <= 2 for s in set(seqs)), "%d lines for %d messages" % (len(seqs), len(set(seqs))))
    finally:
        stop.set()
        daemon.stop()
        relay.close()


def main():
    held_before_noop()
    held_before_fetch()
    held_before_select()
    held_before_literal_append()
    held_before_literal_select()
    idle_pipeline()
    idle_done_during_pause()
    idle_done_during_pause(b"XYZ")
    idle_empty_mailbox()
    held_updates_merged()
    other = Side(PORT, "c")
    other.exchange("DELETE %s" % MAILBOX)
    return summary()


if __name__ == "__main__":
    sys.exit(main())
