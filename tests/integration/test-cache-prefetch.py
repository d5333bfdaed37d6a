#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Prefetch (issue 12 item 3): after a SELECT, while its client is between
commands, a session fetches on its own, with .PEEK and in batches, what the
store lacks, newest first: cache.prefetch = "headers" (the default) the
fixed items and header blocks, "full" whole messages too, "off" nothing.

Checked through a relay that records the daemon's upstream commands:
 - "headers": the batches come newest first and stop once everything is
   there; then a client's FETCH of headers, structure and HEADER.FIELDS is
   answered from the cache, the same bytes as Dovecot's;
 - what the client receives is Dovecot's: a NOOP right behind the SELECT
   gets the same lines as direct, no prefetch data reaches the client,
   and a flag change and a new message made by another connection while
   the batches run reach the client at its next command, not while it is
   idle;
 - what the upstream said during the batches while the client sat
   between commands reaches it after its IDLE's "+", as a direct
   session gets it;
 - "full": bodies are fetched too, within body_budget (measured in the
   store, not by the daemon's counter), with BODY.PEEK (no \\Seen);
 - a client command waits behind at most one batch, and a session that
   ends (LOGOUT) sends no batch after it;
 - "off": nothing is fetched.
"""
import os
import re
import socket
import sqlite3
import time

from checks import check, summary
import proxyfixture
from proxyfixture import PASS, PORT, USER, Daemon, Raw, Relay, quote

TIMINGS = re.compile(rb" \(\d+\.\d+ \+ \d+\.\d+( \+ \d+\.\d+)? secs\)")
PREFETCH = re.compile(r"^\S+ FETCH (\S+) \(UID INTERNALDATE ")
DONE = r"prefetch: nothing more is missing"
HEADERS = "UID FETCH 1:* (UID INTERNALDATE RFC822.SIZE ENVELOPE BODYSTRUCTURE BODY.PEEK[HEADER.FIELDS (FROM SUBJECT)])"


class Side:
    """One logged-in connection; exchange() returns a command's responses."""

    def __init__(self, port):
        self.conn = Raw(port, greeting=True)
        self.tag = 0
        self.exchange("LOGIN %s %s" % (quote(USER), quote(PASS)))

    def send(self, command):
        self.tag += 1
        self.conn.send(b"t%d %s\r\n" % (self.tag, command.encode()))
        return b"t%d " % self.tag

    def read(self, tag):
        responses = []
        while True:
            response = self.conn.response()
            responses.append(TIMINGS.sub(b"", response))
            if response.startswith(tag):
                return responses

    def exchange(self, command):
        return self.read(self.send(command))


def idle_silence(side, seconds=0.3):
    """Whether nothing arrives on side's connection for seconds."""
    if side.conn.buf:
        return False
    side.conn.sock.settimeout(seconds)
    try:
        data = side.conn.sock.recv(4096)
    except socket.timeout:
        return True
    finally:
        side.conn.sock.settimeout(20)
    side.conn.buf += data
    return False


def start(prefetch, extra=""):
    relay = Relay()
    cache = proxyfixture.scratch_dir("imapcached-prefetch.")
    config = 'cache = { dir = "%s"; prefetch = "%s"; %s };\ntimeouts = { shutdown = 0; };\n' % (cache, prefetch, extra)
    return relay, Daemon(relay.upstream_entry(), extra=config), cache


def store_file(cache):
    for root, _, files in os.walk(cache):
        for name in files:
            if name.endswith(".sqlite"):
                return os.path.join(root, name)
    return None


def untag(responses):
    """responses with the tagged one's tag left out (two connections' tags differ)."""
    return responses[:-1] + [responses[-1].split(b" ", 1)[1]]


def prefetch_sets(relay):
    return [m.group(1) for m in (PREFETCH.match(c.line) for c in relay.recorded()) if m]


def first_uid(uid_set):
    return int(re.split(r"[:,]", uid_set)[0])


def last_uid(uid_set):
    return int(re.split(r"[:,]", uid_set)[-1])


def test_headers():
    relay, daemon, cache = start("headers")
    direct, proxied = Side(PORT), Side(daemon.port)
    try:
        want = direct.exchange("SELECT INBOX")
        # the NOOP is pipelined right behind the SELECT: it waits for at most one batch
        tag = proxied.send("SELECT INBOX")
        noop = proxied.send("NOOP")
        got = proxied.read(tag)
        check("headers: the SELECT is Dovecot's", got == want, (got, want))
        got, want = proxied.read(noop), direct.exchange("NOOP")
        check("headers: the NOOP behind it is Dovecot's (no prefetch data)", got == want, (got, want))
        check("headers: prefetch ran out", daemon.wait_log(DONE) is not None)
        sets = prefetch_sets(relay)
        check("headers: newest first, in batches of 200 at most",
              len(sets) >= 1 and all(last_uid(a) >= last_uid(b) for a, b in zip(sets, sets[1:])) and
              last_uid(sets[0]) == 200, sets)
        since = len(relay.recorded())
        got, want = proxied.exchange(HEADERS), direct.exchange(HEADERS)
        check("headers: a FETCH of headers and structure afterwards is Dovecot's", got == want,
              (got[:2], want[:2]))
        asked = [c.line for c in relay.recorded()[since:] if " FETCH " in c.line]
        check("headers: ... and answered from the cache", not asked, asked)
    finally:
        status = daemon.stop()
        check("headers: the daemon exited cleanly", status == 0, (status, daemon.log()[-1500:]))
        relay.close()


def test_full_and_updates():
    budget = 600 * 1024
    relay, daemon, cache = start("full", 'body_budget = %d;' % budget)
    proxied, other = Side(daemon.port), Side(PORT)
    try:
        proxied.exchange("SELECT INBOX")
        other.exchange("SELECT INBOX")
        # while the batches run: a flag changes and a message arrives
        time.sleep(0.05)
        other.exchange("STORE 3 +FLAGS (\\Flagged)")
        appended = other.exchange("APPEND INBOX {12+}\r\nSubject: x\r\n")
        check("full: prefetch ran out", daemon.wait_log(DONE) is not None)
        check("full: nothing reached the idle client (RFC 3501 7.4.1: no command in progress)",
              idle_silence(proxied), proxied.conn.buf)
        seen = proxied.exchange("NOOP")
        fetched = [r for r in seen if re.match(rb"\* \d+ FETCH ", r)]
        check("full: the flag change reached the client",
              any(re.match(rb"\* 3 FETCH \(FLAGS \([^)]*\\Flagged", r) for r in seen), seen)
        check("full: the new message reached the client", any(r.rstrip().endswith(b" EXISTS") for r in seen), seen)
        check("full: no prefetch data reached the client", all(b"INTERNALDATE" not in r for r in fetched),
              fetched)
        lines = [c.line for c in relay.recorded()]
        check("full: bodies were fetched, with BODY.PEEK", any("BODY.PEEK[])" in l for l in lines), lines[-5:])
        check("full: nothing set \\Seen", not any(re.search(r"FETCH .*BODY\[", l) for l in lines), lines)
        db = sqlite3.connect(store_file(cache))
        stored = db.execute("SELECT COALESCE(SUM(length(data)), 0) FROM body_chunks").fetchone()[0]
        db.close()
        check("full: the bodies stored stay within body_budget (%d of %d bytes)" % (stored, budget),
              0 < stored <= budget, stored)
        m = re.search(rb"APPENDUID \d+ (\d+)", appended[-1])
        other.exchange("STORE 3 -FLAGS (\\Flagged)")
        if m:
            other.exchange("UID STORE %s +FLAGS.SILENT (\\Deleted)" % m.group(1).decode())
            other.exchange("UID EXPUNGE %s" % m.group(1).decode())
    finally:
        status = daemon.stop()
        check("full: the daemon exited cleanly", status == 0, (status, daemon.log()[-1500:]))
        relay.close()


def test_idle():
    """A client in IDLE: the proxy pauses its IDLE upstream for each batch
    (DONE, the batch, IDLE again under the client's tag); the client sees
    none of it, gets what the upstream says in IDLE at once, and its DONE
    gets its IDLE's tagged OK."""
    relay, daemon, cache = start("headers")
    proxied, other = Side(daemon.port), Side(PORT)
    try:
        proxied.exchange("SELECT INBOX")
        tag = proxied.send("IDLE")  # at once: no quiet moment before it
        check("idle: the client's IDLE is accepted", proxied.conn.response().startswith(b"+ "))
        check("idle: prefetch ran while the client idled", daemon.wait_log(DONE) is not None)
        check("idle: nothing reached the idling client", idle_silence(proxied), proxied.conn.buf)
        lines = [c.line for c in relay.recorded()]
        idles = [l for l in lines if l == tag.decode() + "IDLE"]
        batches = [l for l in lines if PREFETCH.match(l)]
        check("idle: IDLE was paused upstream for the batch and started again under the client's tag",
              len(idles) >= 2 and "DONE" in lines and batches and
              lines.index("DONE") < lines.index(batches[0]) < len(lines) - 1 - lines[::-1].index(idles[-1]), lines)
        other.exchange("APPEND INBOX {12+}\r\nSubject: x\r\n")
        proxied.conn.sock.settimeout(10)
        update = proxied.conn.response()
        check("idle: a new message reaches the idling client at once", update.rstrip().endswith(b" EXISTS"), update)
        proxied.conn.send(b"DONE\r\n")
        done = proxied.read(tag)
        check("idle: DONE gets the IDLE's tagged OK", done[-1].startswith(tag + b"OK "), done)
        direct = Side(PORT)
        direct.exchange("SELECT INBOX")
        got, want = untag(proxied.exchange(HEADERS)), untag(direct.exchange(HEADERS))
        check("idle: the headers fetched meanwhile answer a FETCH as Dovecot does", got == want,
              [(a, b) for a, b in zip(got, want) if a != b][:2] or (len(got), len(want)))
        other.exchange("SELECT INBOX")
        other.exchange("STORE 201 +FLAGS.SILENT (\\Deleted)")
        other.exchange("EXPUNGE")
    finally:
        status = daemon.stop()
        check("idle: the daemon exited cleanly", status == 0, (status, daemon.log()[-1500:]))
        relay.close()


def batch_lines(lines):
    return [l for l in lines if PREFETCH.match(l)]


def told_state(lines):
    """(message 3's flags, the message count) as the last lines told of them."""
    flags = [m.group(1) for m in (re.match(rb"\* 3 FETCH \(FLAGS (\([^)]*\))", l) for l in lines) if m]
    counts = [m.group(1) for m in (re.match(rb"\* (\d+) EXISTS", l) for l in lines) if m]
    return (flags[-1] if flags else None, counts[-1] if counts else None)


def test_idle_after_held(pipelined):
    """Updates the upstream sent during the batches while the client sat
    between commands reach it after its IDLE's "+", where Dovecot puts
    what changed before an IDLE, also when the client sent its DONE
    right behind the IDLE: a direct session in the same steps is the
    judge."""
    name = "idle after held%s" % (", DONE pipelined" if pipelined else "")
    relay = Relay(delay=0.02)
    cache = proxyfixture.scratch_dir("imapcached-prefetch.")
    config = ('cache = { dir = "%s"; prefetch = "full"; body_budget = 100000000; };\n'
              'timeouts = { shutdown = 0; };\n' % cache)
    daemon = Daemon(relay.upstream_entry(), extra=config)
    proxied, direct, other = Side(daemon.port), Side(PORT), Side(PORT)
    try:
        for side in (proxied, direct, other):
            side.exchange("SELECT INBOX")
        deadline = time.monotonic() + 20
        while not batch_lines(c.line for c in relay.recorded()) and time.monotonic() < deadline:
            time.sleep(0.01)
        batches = len(batch_lines(c.line for c in relay.recorded()))
        other.exchange("STORE 3 +FLAGS (\\Flagged)")  # during the batches: held for the proxied client
        other.exchange("APPEND INBOX {12+}\r\nSubject: x\r\n")
        time.sleep(0.3)
        check("%s: a batch ran after the changes, so the proxy holds them" % name,
              len(batch_lines(c.line for c in relay.recorded())) > batches)
        check("%s: nothing reached the client between commands" % name, idle_silence(proxied), proxied.conn.buf)
        if pipelined:
            # after the batches: the upstream tells this one in the IDLE,
            # after what it said during them, which is older
            check("%s: prefetch ran out" % name, daemon.wait_log(DONE) is not None)
            other.exchange("STORE 3 -FLAGS (\\Flagged)")
        seen = {}
        for side_name, side in (("direct", direct), ("proxied", proxied)):
            side.conn.sock.settimeout(10)
            if pipelined:
                side.tag += 1
                tag = b"t%d " % side.tag
                side.conn.send(tag + b"IDLE\r\nDONE\r\n")
                seen[side_name] = untag(side.read(tag))
                continue
            tag = side.send("IDLE")
            lines = [side.conn.response()]
            while not lines[-1].rstrip().endswith(b" EXISTS"):
                lines.append(side.conn.response())
            side.conn.send(b"DONE\r\n")
            side.read(tag)
            seen[side_name] = lines
        if pipelined:  # the lines differ (the proxy's tell the older state too); the state they leave may not
            check("%s: \"+\" first, and the flags and count the client is left with are direct's" % name,
                  seen["proxied"][0].startswith(b"+ ") and told_state(seen["proxied"]) == told_state(seen["direct"])
                  and told_state(seen["direct"]) == (b"()", b"201"), seen)
        else:
            check("%s: the client sees \"+\" first, then the updates, as direct" % name,
                  seen["proxied"] == seen["direct"] and seen["direct"][0].startswith(b"+ ") and
                  any(l.rstrip().endswith(b" EXISTS") for l in seen["direct"]), seen)
            other.exchange("STORE 3 -FLAGS (\\Flagged)")
        other.exchange("STORE * +FLAGS.SILENT (\\Deleted)")
        other.exchange("EXPUNGE")
    finally:
        status = daemon.stop()
        check("%s: the daemon exited cleanly" % name, status == 0, (status, daemon.log()[-1500:]))
        relay.close()

def test_waits_and_ends():
    """A client command waits behind at most one batch (the one on its
    way when it came), and a session that ends stops its prefetch. Whole
    bodies through a relay with a 20 ms delay each way, so that the walk
    takes many batches."""
    relay = Relay(delay=0.02)
    cache = proxyfixture.scratch_dir("imapcached-prefetch.")
    config = ('cache = { dir = "%s"; prefetch = "full"; body_budget = 100000000; };\n'
              'timeouts = { shutdown = 0; };\n' % cache)
    daemon = Daemon(relay.upstream_entry(), extra=config)
    try:
        proxied = Side(daemon.port)
        proxied.exchange("SELECT INBOX")
        deadline = time.monotonic() + 20
        while len(batch_lines(c.line for c in relay.recorded())) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        before = len(relay.recorded())
        tag = proxied.send("NOOP")
        proxied.read(tag)
        lines = [c.line for c in relay.recorded()[before:]]
        noop = next((i for i, l in enumerate(lines) if l == tag.decode() + "NOOP"), None)
        waited = batch_lines(lines[:noop]) if noop is not None else lines
        check("waits: prefetch was running when the NOOP came (%d batches sent)" % len(
            batch_lines(c.line for c in relay.recorded()[:before])), before > 0 and noop is not None, lines[:5])
        check("waits: the NOOP went upstream behind at most one batch", len(waited) <= 1, waited)
        deadline = time.monotonic() + 20
        while len(batch_lines(c.line for c in relay.recorded())) <= 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        check("waits: the walk goes on after it", len(batch_lines(c.line for c in relay.recorded())) > 2)
        proxied.exchange("LOGOUT")
        ended = len(relay.recorded())
        time.sleep(1.0)
        after = batch_lines(c.line for c in relay.recorded()[ended:])
        check("ends: no batch after the session's LOGOUT", after == [], after)
    finally:
        status = daemon.stop()
        check("waits: the daemon exited cleanly", status == 0, (status, daemon.log()[-1500:]))
        relay.close()


def test_off():
    relay, daemon, cache = start("off")
    proxied = Side(daemon.port)
    try:
        proxied.exchange("SELECT INBOX")
        proxied.exchange("NOOP")
        time.sleep(0.3)
        proxied.exchange("NOOP")
        check("off: nothing prefetched", not prefetch_sets(relay), prefetch_sets(relay))
    finally:
        status = daemon.stop()
        check("off: the daemon exited cleanly", status == 0, (status, daemon.log()[-1500:]))
        relay.close()


def main():
    test_headers()
    test_full_and_updates()
    test_idle()
    test_idle_after_held(pipelined=False)
    test_idle_after_held(pipelined=True)
    test_waits_and_ends()
    test_off()
    return summary()


if __name__ == "__main__":
    raise SystemExit(main())
