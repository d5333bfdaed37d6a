#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Several sessions of one account through imapcached, on one mailbox at
once, as imaptest's stress mode drives a server: each session sends random
FETCH, STORE, EXPUNGE, UID EXPUNGE, APPEND, COPY, MOVE, SEARCH, IDLE and
(under CONDSTORE or QRESYNC) CHANGEDSINCE, VANISHED and UNCHANGEDSINCE
commands while the others change the mailbox, and checks what the
answers must hold whatever the others did:

- no BYE before LOGOUT, and every tagged answer OK (or NO [EXPUNGEISSUED],
  Dovecot's answer for a message another session expunged, or Dovecot's
  own NO [SERVERBUG] of a lock timeout in its maildir, counted and shown);
- every sequence number within what the session was told exists, each
  message keeping its UID, UIDs ascending with sequence numbers, and
  VANISHED only to a session that enabled QRESYNC;
- a UID's BODY[], BODY[HEADER], BODY[TEXT]<0>, RFC822.SIZE and ENVELOPE
  the same bytes in every session, cached or not (but in an answer that
  ends [EXPUNGEISSUED], where Dovecot gives RFC822.SIZE 0 and NIL for a
  message another session expunged);
- at the end of a round, the session's message list equal to its UID
  SEARCH ALL, and (after every session stopped) its FLAGS equal to what a
  connection straight to Dovecot reads.

The daemon's body budget is small (evictions all along), prefetch is
"full", and some sessions read slowly (in 2 KB pieces, now and then
pausing), so that large local answers span many turns of the daemon's
loop while other sessions' expunges reach the store. Without answers
pinning their messages (doc/cache.md, "Pins") about every other run of
the default seeds ends a session with "BYE Internal error reading the
cache" there (the race needs its timing).

Dovecot 2.3.19's imap process was once seen to die with signal 11 under
this load (a bug of its own; not reproduced in 30 runs since): the proxy
then rightly says "BYE Upstream server connection lost", which this test
accepts for a session whose upstream process Dovecot's log shows killed.

IMAPTEST_STRESS_SEEDS (default "1 2"), IMAPTEST_STRESS_STEPS (commands
per session and round, default 250); doc/testing.md has a longer run."""
import hashlib
import os
import random
import re
import sys
import threading

from checks import check, summary
import proxyfixture
from proxyfixture import ENV, PASS3, PORT, USER3, Daemon, Raw, quote, upstream_dovecot

MAILBOX = "stress"
SESSIONS = 5
ROUNDS = 2
FIRST_MESSAGES = 60
SEEDS = [int(s) for s in ENV.get("IMAPTEST_STRESS_SEEDS", "1 2").split()]
STEPS = int(ENV.get("IMAPTEST_STRESS_STEPS", "250"))
SIZES = (200, 2000, 20000, 200000)  # bytes of a message, about
SLOW_SHARE = 0.5                    # of sessions that read in small pieces
SLOW_READ = 2048                    # bytes per recv() of a slow session
SLOW_PAUSE = 0.002                  # seconds, before one in SLOW_PAUSE_EVERY of its reads
SLOW_PAUSE_EVERY = 20
IDLE_WAIT = 0.05                    # seconds an IDLE listens before DONE
# Dovecot's maildir under this load (several imap processes appending,
# expunging and re-reading dovecot-uidlist; its log then warns of a
# "Duplicate file entry" and an "Expunged message reappeared") may answer
# a command with this NO of its own: seen once in CI under the
# sanitizers, on a UID SEARCH the proxy had sent upstream as it was
DOVECOT_LOCK_TIMEOUT = re.compile(rb"NO \[SERVERBUG\] Timeout while waiting for lock \(")
UPSTREAM_LOST = b"* BYE Upstream server connection lost"
HISTORY = 40                        # exchanges kept per session, shown with its first problem
BARRIER_WAIT = 600                  # seconds a session waits for the others at the end of a round


def message(rng, n):
    size = rng.choice(SIZES)
    line = b"line of message %d padding padding padding\r\n" % n
    return (b"From: s%d@example.org\r\nTo: t@example.org\r\nSubject: stress %d\r\nMessage-ID: <%d@x>\r\n\r\n"
            % (n, n, n) + line * (size // len(line)))


class Round:
    """What the sessions of one round share: the bodies seen by UID and the problems found."""

    def __init__(self):
        self.lock = threading.Lock()
        self.bodies = set()  # UIDs whose BODY[] was seen
        self.values = {}     # (UID, item): digest of its value
        self.problems = []  # (session name, text)
        self.lock_timeouts = 0  # Dovecot's NO of a lock timeout (DOVECOT_LOCK_TIMEOUT)

    def problem(self, session, text):
        with self.lock:
            first = not any(name == session.name for name, _ in self.problems)
            self.problems.append((session.name, text))
        if first:
            print("%s: %s" % (session.name, text[:300]), flush=True)
            for command, response in session.history:
                print("    %-48s %r" % (command[:48], response[:110]))

    def value_seen(self, uid, item, digest):
        """Whether digest is what every session saw of uid's item so far."""
        with self.lock:
            if item == b"BODY[]":
                self.bodies.add(uid)
            return self.values.setdefault((uid, item), digest) == digest


class Session:
    """One proxied session that checks every response it reads."""

    def __init__(self, port, name, rng, shared):
        self.name, self.rng, self.shared = name, rng, shared
        self.conn = Raw(port, greeting=True)
        self.tag = 0
        self.uids = []          # by sequence number; 0: a message not yet seen with its UID
        self.starting = False
        self.unknown_gone = False
        self.at_search = []
        self.history = []
        self.values = []        # (UID, item, digest) of the command being answered
        if rng.random() < SLOW_SHARE:
            self.read_slowly()
        self.run("LOGIN %s %s" % (quote(USER3), quote(PASS3)))
        mode = rng.random()
        self.qresync = mode < 0.2
        self.condstore = mode < 0.5
        if self.qresync:
            self.run("ENABLE QRESYNC")
        self.run("SELECT %s%s" % (MAILBOX, " (CONDSTORE)" if self.condstore and not self.qresync else ""))
        self.relist()

    def relist(self):
        """Its message list from UID SEARCH ALL (after a VANISHED of a
        UID it had not seen, it can't tell which message went)."""
        self.starting = True
        self.run("UID SEARCH ALL")
        self.starting = False
        self.unknown_gone = False

    def read_slowly(self):
        fill = self.conn._fill
        rng = self.rng

        def slow_fill():
            if rng.randrange(SLOW_PAUSE_EVERY) == 0:
                threading.Event().wait(SLOW_PAUSE)
            fill()
        self.conn.recv_size = SLOW_READ
        self.conn._fill = slow_fill

    def run(self, command, literal=None):
        self.tag += 1
        tag = b"t%d" % self.tag
        if literal is None:
            self.conn.send(tag + b" " + command.encode() + b"\r\n")
        else:
            self.conn.send(tag + b" " + command.encode() + b" {%d+}\r\n" % len(literal) + literal + b"\r\n")
        lines = []
        while True:
            response = self.read(command)
            if response.startswith(tag + b" "):
                if DOVECOT_LOCK_TIMEOUT.match(response[len(tag) + 1:]):
                    with self.shared.lock:  # Dovecot's own answer, passed on as it is
                        self.shared.lock_timeouts += 1
                elif not response.startswith(tag + b" OK") and b"[EXPUNGEISSUED]" not in response:
                    self.shared.problem(self, "%s: %r" % (command, response))
                self.compare_values(response)
                return lines
            self.untagged(command, response)
            lines.append(response)

    def read(self, command):
        try:
            response = self.conn.response()
        except EOFError as e:
            self.shared.problem(self, "closed during %s: %s" % (command, e))
            raise
        self.history.append((command, response[:150]))
        del self.history[:-HISTORY]
        return response

    def untagged(self, command, response):
        if response.startswith(b"* BYE") and command != "LOGOUT":
            self.shared.problem(self, "BYE during %s: %r" % (command, response[:200]))
        if response.startswith(b"* SEARCH"):
            self.at_search = list(self.uids)
            if self.starting:
                self.uids = [int(x) for x in response.split()[2:]]
        if response.startswith(b"* VANISHED "):
            self.vanished(command, response)
        m = re.match(rb"\* (\d+) (EXISTS|EXPUNGE|FETCH)", response)
        if m is None:
            return
        n, what = int(m.group(1)), m.group(2)
        if what == b"EXISTS":
            if n < len(self.uids) and not self.unknown_gone:
                self.shared.problem(self, "EXISTS %d with %d messages known" % (n, len(self.uids)))
            self.uids += [0] * (n - len(self.uids))
        elif not 1 <= n <= len(self.uids):
            self.shared.problem(self, "%s %d of %d messages during %s" % (what.decode(), n, len(self.uids), command))
        elif what == b"EXPUNGE":
            del self.uids[n - 1]
        else:
            self.fetched(command, n, response)

    def vanished(self, command, response):
        """VANISHED (QRESYNC's EXPUNGE): its UIDs leave the list. VANISHED
        (EARLIER), the answer to CHANGEDSINCE ... VANISHED, is Dovecot's
        own (that modifier goes upstream) and is left alone."""
        words = response.split()
        if not self.qresync:
            self.shared.problem(self, "VANISHED to a session that did not enable QRESYNC: %r" % response[:100])
            return
        if words[2] == b"(EARLIER)":
            return
        gone = set(uid_set(words[-1]))
        known = set(self.uids)
        self.uids = [u for u in self.uids if u not in gone]
        for uid in sorted(gone - known, reverse=True):
            self.placeholder_gone(uid)

    def placeholder_gone(self, uid):
        """A UID it had not seen went: its message is one of the messages
        of unknown UID (0) between the known UIDs below and above it, all
        alike, so any one of them goes. None there (it was never told of
        the message): which went is unknown until relist()."""
        below = max((i for i, u in enumerate(self.uids) if u and u < uid), default=-1)
        above = min((i for i, u in enumerate(self.uids) if u and u > uid), default=len(self.uids))
        if above - below > 1:
            del self.uids[below + 1]
        else:
            self.unknown_gone = True

    def fetched(self, command, n, response):
        found = re.search(rb"[( ]UID (\d+)", response[:200])
        if found is None or self.unknown_gone:  # numbers can't be checked until relist()
            return
        uid = int(found.group(1))
        if self.uids[n - 1] not in (0, uid):
            self.shared.problem(self, "message %d is UID %d, was UID %d (%s)" % (n, uid, self.uids[n - 1], command))
        self.uids[n - 1] = uid
        before = [u for u in self.uids[:n - 1] if u][-1:]
        after = [u for u in self.uids[n:] if u][:1]
        if (before and before[0] >= uid) or (after and after[0] <= uid):
            self.shared.problem(self, "UIDs out of order at message %d (UID %d)" % (n, uid))
        for item, value in item_values(response):
            self.values.append((uid, item, hashlib.sha1(value).hexdigest()))

    def compare_values(self, tagged):
        """The values of the command's answer against every session's, unless
        it ended [EXPUNGEISSUED]: Dovecot then gives what its index still
        has of a message another session expunged (RFC822.SIZE 0, NIL)."""
        values, self.values = self.values, []
        if b"[EXPUNGEISSUED]" in tagged:
            return
        for uid, item, digest in values:
            if not self.shared.value_seen(uid, item, digest):
                self.shared.problem(self, "UID %d: %s differs from another session's" % (uid, item.decode()))

    def step(self, number):
        if self.unknown_gone:
            self.relist()
        rng, count = self.rng, len(self.uids)
        pick = rng.random()
        one = rng.randint(1, count) if count else 0
        if count == 0 or pick < 0.05:
            self.run("APPEND %s ()" % MAILBOX, message(rng, number))
        elif pick < 0.35:
            self.run("FETCH %d:%d (UID FLAGS BODY.PEEK[])" % (one, min(count, one + rng.randint(0, 30))))
        elif pick < 0.50:
            self.run("UID FETCH 1:* (UID FLAGS ENVELOPE RFC822.SIZE BODY.PEEK[HEADER])")
        elif pick < 0.65:
            self.run("STORE %d %sFLAGS (%s)" % (one, rng.choice("+-"), rng.choice(["\\Flagged", "$x", "\\Seen"])))
        elif pick < 0.70:
            self.run("STORE %d +FLAGS.SILENT (\\Deleted)" % one)
            self.run("EXPUNGE")
        elif pick < 0.72 and self.uids[one - 1]:
            uid = self.uids[one - 1]
            self.run("UID STORE %d +FLAGS.SILENT (\\Deleted)" % uid)
            self.run("UID EXPUNGE %d" % uid)
        elif pick < 0.85:
            self.run(rng.choice(["SEARCH FLAGGED", "UID SEARCH UNSEEN", "SEARCH SUBJECT stress", "SEARCH ALL"]))
        elif pick < 0.88:
            self.run("FETCH %d (UID BODY[TEXT]<0.100> FLAGS)" % one)
        elif pick < 0.90:
            self.run("COPY %d %s" % (one, MAILBOX))
        elif pick < 0.92:
            self.run("MOVE %d %s" % (one, MAILBOX))
        elif pick < 0.93 and self.condstore:
            self.run("UID FETCH 1:* (UID FLAGS) (CHANGEDSINCE %d%s)" % (rng.randint(1, 50),
                                                                       " VANISHED" if self.qresync else ""))
        elif pick < 0.94 and self.condstore:
            self.run("STORE %d (UNCHANGEDSINCE %d) +FLAGS ($y)" % (one, rng.randint(1, 400)))
        elif pick < 0.96:
            self.run(rng.choice(['SEARCH TEXT padding', 'SEARCH BODY "message 1"', "UID SEARCH LARGER 10000"]))
        elif pick < 0.98:
            self.idle()
        else:
            self.run("NOOP")

    def idle(self):
        self.tag += 1
        tag = b"t%d" % self.tag
        self.conn.send(tag + b" IDLE\r\n")
        response = self.read("IDLE")
        while not response.startswith(b"+"):
            self.untagged("IDLE", response)
            response = self.read("IDLE")
        threading.Event().wait(IDLE_WAIT)
        self.conn.send(b"DONE\r\n")
        while True:
            response = self.read("IDLE")
            if response.startswith(tag + b" "):
                if not response.startswith(tag + b" OK"):
                    self.shared.problem(self, "IDLE: %r" % response)
                self.compare_values(response)
                return
            self.untagged("IDLE", response)

    def check_list(self):
        """Its message list against UID SEARCH ALL (as the list stood
        when the SEARCH line came: an EXPUNGE may follow it)."""
        uids = []
        for line in self.run("UID SEARCH ALL"):
            if line.startswith(b"* SEARCH"):
                uids = [int(x) for x in line.split()[2:]]
        if len(uids) != len(self.at_search) or any(a and a != b for a, b in zip(self.at_search, uids)):
            first = next((i for i, (a, b) in enumerate(zip(self.at_search, uids)) if a and a != b), None)
            self.shared.problem(self, "its %d messages are not the %d of UID SEARCH ALL%s" % (
                len(self.at_search), len(uids), "" if first is None else
                " (from number %d: it has %r, the SEARCH %r)" % (first + 1, self.at_search[first:first + 4],
                                                               uids[first:first + 4])))

    def flags(self):
        return flag_list(self.run("UID FETCH 1:* (UID FLAGS)"))


LITERAL_ITEM = re.compile(rb"(BODY\[\]|BODY\[HEADER\]|BODY\[TEXT\]<0>) \{(\d+)\}\r\n")
ENVELOPE_ITEM = re.compile(rb"RFC822\.SIZE (\d+) ENVELOPE (\(.*?\)) BODY\[HEADER\] \{")


def item_values(response):
    """(item, value) of the items whose value must be the same in every
    session: the literals of BODY[], BODY[HEADER] and BODY[TEXT]<0>, and
    RFC822.SIZE with ENVELOPE as the headers FETCH writes them."""
    values = [(m.group(1), response[m.end():m.end() + int(m.group(2))]) for m in LITERAL_ITEM.finditer(response)]
    envelope = ENVELOPE_ITEM.search(response)
    if envelope is not None:
        values.append((b"RFC822.SIZE ENVELOPE", envelope.group(1) + b" " + envelope.group(2)))
    return values


def uid_set(text):
    """The UIDs of a sequence set of UIDs such as b"3:5,9"."""
    uids = []
    for part in text.split(b","):
        first, _, last = part.partition(b":")
        low, high = sorted((int(first), int(last or first)))
        uids.extend(range(low, high + 1))
    return uids


def flag_list(lines):
    """[(UID, sorted flags without \\Recent)] of FETCH lines."""
    out = []
    for line in lines:
        m = re.match(rb"\* \d+ FETCH \(UID (\d+) FLAGS \(([^)]*)\)\)", line)
        if m:
            out.append((int(m.group(1)), sorted(f for f in m.group(2).split() if f != b"\\Recent")))
    return out


def direct_flags():
    conn = Raw(PORT, greeting=True)
    conn.tagged("l", "LOGIN %s %s" % (quote(USER3), quote(PASS3)))
    conn.tagged("e", "EXAMINE %s" % MAILBOX)
    lines = [line.encode() for line in conn.tagged("f", "UID FETCH 1:* (UID FLAGS)")]
    conn.tagged("z", "LOGOUT")
    return flag_list(lines)


def worker(port, seed, rnd, index, shared, barrier):
    """One session's round; whatever it raises is a problem of its own,
    never a thread gone before the barrier (the others would wait)."""
    rng = random.Random(seed * 1000 + rnd * 100 + index)
    name = "seed %d round %d session %d" % (seed, rnd, index)
    session = None
    try:
        session = Session(port, name, rng, shared)
        for k in range(STEPS):
            session.step(seed * 1000000 + rnd * 100000 + index * 10000 + k)
        session.run("NOOP")
        session.check_list()
    except Exception as e:  # noqa: BLE001 (any failure is reported, and the barrier still reached)
        shared.problem(session or Unstarted(name), "stopped: %r" % e)
        session = None
    try:
        barrier.wait(BARRIER_WAIT)
    except threading.BrokenBarrierError:
        shared.problem(session or Unstarted(name), "the other sessions did not finish within %d s" % BARRIER_WAIT)
        return
    if session is None:
        return
    try:
        session.run("NOOP")
        got, want = session.flags(), direct_flags()
        if got != want:
            shared.problem(session, "FLAGS after the round are not Dovecot's: %r" %
                           [(a, b) for a, b in zip(got, want) if a != b][:3] if len(got) == len(want) else
                           "%d messages, Dovecot has %d" % (len(got), len(want)))
        session.run("LOGOUT")
    except Exception as e:  # noqa: BLE001
        shared.problem(session, "stopped at the end: %r" % e)


class Unstarted:
    """A session that failed before it was made, for Round.problem."""

    def __init__(self, name):
        self.name = name
        self.history = []


def fresh_mailbox(rng):
    conn = Raw(PORT, greeting=True)
    conn.tagged("l", "LOGIN %s %s" % (quote(USER3), quote(PASS3)))
    conn.tagged("d", "DELETE %s" % MAILBOX)
    conn.tagged("c", "CREATE %s" % MAILBOX)
    for n in range(FIRST_MESSAGES):
        body = message(rng, n)
        conn.send(b"a APPEND %s () {%d+}\r\n" % (MAILBOX.encode(), len(body)) + body + b"\r\n")
        conn.until_tagged("a")
    conn.tagged("z", "LOGOUT")


def dovecot_crashes():
    """Lines of Dovecot's log that say an imap process was killed."""
    try:
        with open(os.path.join(ENV["IMAPTEST_DIR"], "dovecot.log"), errors="replace") as f:
            return [line for line in f if re.search(r"imap\).* killed with signal", line)]
    except (KeyError, OSError):
        return []


def excused(problems, crashed):
    """The problems of sessions whose first was the proxy's BYE for a lost
    upstream, when Dovecot's log shows one of its imap processes killed."""
    if not crashed:
        return set()
    first = {}
    for name, text in problems:
        first.setdefault(name, text)
    return {name for name, text in first.items() if UPSTREAM_LOST.decode() in text}


def run_seed(daemon, seed):
    fresh_mailbox(random.Random(seed))
    for rnd in range(ROUNDS):
        shared = Round()
        crashed_before = len(dovecot_crashes())
        barrier = threading.Barrier(SESSIONS)
        threads = [threading.Thread(target=worker, args=(daemon.port, seed, rnd, i, shared, barrier), daemon=True)
                   for i in range(SESSIONS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(BARRIER_WAIT + proxyfixture.WAIT)
        check("seed %d round %d: every session ended" % (seed, rnd), not any(t.is_alive() for t in threads))
        crashed = dovecot_crashes()[crashed_before:]
        lost = excused(shared.problems, crashed)
        for line in crashed:
            print("note: Dovecot's own crash, not the proxy's: %s" % line.strip())
        if shared.lock_timeouts:
            print("note: Dovecot answered %d commands with its own lock timeout (NO [SERVERBUG])"
                  % shared.lock_timeouts)
        left = [(name, text) for name, text in shared.problems if name not in lost]
        check("seed %d round %d: %d sessions, %d commands each: every answer holds" % (seed, rnd, SESSIONS, STEPS),
              not left, left[:3])
        kinds = {item for _, item in shared.values}
        check("seed %d round %d: values compared across sessions: %d of %d kinds (%d UIDs with BODY[])"
              % (seed, rnd, len(shared.values), len(kinds), len(shared.bodies)), len(kinds) == 4 and shared.bodies)


def main():
    cache_dir = proxyfixture.scratch_dir("imapcached-stress.")
    config = 'cache = { dir = "%s"; prefetch = "full"; body_budget = "3M"; };\n' % cache_dir
    daemon = Daemon(upstream_dovecot(), extra=config)
    try:
        for seed in SEEDS:
            run_seed(daemon, seed)
        check("some answers came from the cache", daemon.settled_count(r"answered from the cache") > 0)
        check("bodies were evicted along the way", daemon.count_log(r"evicted \d+ whole messages") > 0)
    finally:
        daemon.stop()
    return summary()


if __name__ == "__main__":
    sys.exit(main())
