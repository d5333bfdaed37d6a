#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""What the forwarding path must carry exactly as the upstream sends it,
direct to the test Dovecot and through imapcached side by side, raw
lines compared (tags and Dovecot's timings aside):

- tags that responses name: RFC 4731's ESEARCH correlator (TAG "t") for
  SEARCH, UID SEARCH, SORT RETURN, PARTIAL; RFC 5267 CONTEXT=SEARCH
  updates after the tagged OK, CANCELUPDATE and the "duplicate update
  tag" BAD; a 2,000-character tag; a tag with "]" (which RFC 3501
  allows and Dovecot refuses with an untagged BAD: the client gets that);
- a LITERAL+ command the upstream refuses before its literal crossed:
  the literal still goes upstream (RFC 7888), so the next command is
  answered: APPEND, SEARCH, LOGIN after login, and LOGIN before it;
- a valid tag with no command, or an unknown one, gets a tagged BAD;
- lines that grow with the mailbox: a FLAGS line of 2,700 keywords (past
  64 KiB, as a SEARCH of 12,000 UIDs is) in SELECT and FETCH, and a THREAD
  nested 40 deep, and the connection goes on.

Each side works in a mailbox of its own, made and filled alike, so the
two sides' answers can only differ by what the proxy did. A third
connection, straight to Dovecot, makes the changes that updates report."""
import re
import sys
import time

from checks import check, summary
import proxyfixture
from proxyfixture import (HOST, PASS, PORT, USER, Daemon, run_steps, strip_timings, upstream_dovecot)

LONG_TAG = "t" * 2000
DEEP_MESSAGES = 81  # a THREAD of 40 levels
KEYWORD_STORES = 3  # of 900 keywords of 27 characters: a FLAGS line of 75 KB
PAUSE = 0.1  # between a {N+} command line and its literal: the upstream answers first
MESSAGE = (b"From: a@example.org\r\nTo: b@example.org\r\nSubject: forwarding %d\r\n"
           b"Date: Fri, 4 Dec 2026 10:00:00 +0000\r\nMessage-ID: <fwd%d@example.org>\r\n\r\nbody %d\r\n")


class Raw(proxyfixture.Raw):
    def __init__(self, port):
        super().__init__(port, host=HOST, greeting=True, nodelay=True)

    def login(self):
        self.send(b"l0 LOGIN %s %s\r\n" % (proxyfixture.quote_bytes(USER), proxyfixture.quote_bytes(PASS)))
        self.expect_ok("l0", "LOGIN")

    def lines(self, tag, data):
        """Sends data (bytes, whole command lines) and returns the lines up
        to the one tagged tag, timings taken out."""
        self.send(data)
        return [strip_timings(line) for line in self.until_tagged(tag)]


def message(n):
    return MESSAGE % (n, n, n)


def append(conn, mailbox, n, tag="ap"):
    data = message(n)
    conn.send(b'%s APPEND %s (\\Seen) "04-Dec-2026 10:00:00 +0000" {%d+}\r\n%s\r\n' % (
        tag.encode(), mailbox.encode(), len(data), data))
    conn.expect_ok(tag, "APPEND")


class Sides:
    """A direct and a proxied connection, each logged in, each with a
    mailbox of its own (fwd-direct, fwd-proxy) holding the same messages,
    and a third connection straight to Dovecot."""

    def __init__(self, daemon, run):
        self.run = run
        self.direct, self.proxy, self.third = Raw(PORT), Raw(daemon.port), Raw(PORT)
        self.names = {}
        for conn, side in ((self.direct, "direct"), (self.proxy, "proxy")):
            conn.login()
            name = "fwd-%s-%d" % (side, run)
            self.names[conn] = name
            conn.tagged("mk", "CREATE %s" % name)
        self.third.login()
        for n in range(1, 6):
            for conn in (self.direct, self.proxy):
                append(self.third, self.names[conn], n)

    def both(self, make):
        """make(conn, mailbox) -> (tag, bytes) on each side; returns the two
        sides' lines, each side's mailbox name replaced by MBOX."""
        out = []
        for conn in (self.direct, self.proxy):
            tag, data = make(conn, self.names[conn])
            out.append([re.sub(r"UIDVALIDITY \d+", "UIDVALIDITY N", line.replace(self.names[conn], "MBOX"))
                        for line in conn.lines(tag, data)])
        return out

    def same(self, what, make):
        direct, proxied = self.both(make)
        check(what, direct == proxied, "direct %r, through imapcached %r" % (direct, proxied))
        return direct, proxied

    def change(self, n):
        """The third connection appends message n to both mailboxes."""
        for conn in (self.direct, self.proxy):
            append(self.third, self.names[conn], n)

    def close(self):
        for conn in (self.direct, self.proxy, self.third):
            conn.close()


def select(sides):
    sides.same("SELECT answers alike", lambda c, m: ("s1", b"s1 SELECT %s\r\n" % m.encode()))


def step_esearch_tags(sides):
    for tag in ("a1", LONG_TAG):
        for command in ("SEARCH RETURN (ALL) ALL", "UID SEARCH RETURN (MIN MAX COUNT) ALL",
                        "SORT RETURN (ALL COUNT) (REVERSE ARRIVAL) UTF-8 ALL",
                        "SEARCH RETURN (PARTIAL 1:3) ALL", "UID SEARCH RETURN () SUBJECT forwarding"):
            direct, _ = sides.same("%s with a %d-character tag: the correlator names the client's tag" % (
                command.split(" RETURN")[0], len(tag)),
                lambda c, m: (tag, b"%s %s\r\n" % (tag.encode(), command.encode())))
            check("... and it is the client's tag direct too (%s)" % command,
                  any(('(TAG "%s")' % tag) in line for line in direct), direct)


def step_odd_tags(sides):
    """RFC 3501 allows "]" in a tag, Dovecot refuses it with an untagged
    BAD; the proxy passes it on and the client gets the upstream's verdict.
    Tags with other punctuation are named in the correlator as they are."""
    for conn in (sides.direct, sides.proxy):
        conn.send(b"x]1 SEARCH RETURN (ALL) ALL\r\n")
    direct, proxied = (c.lines("z1", b"z1 NOOP\r\n") for c in (sides.direct, sides.proxy))
    check("a tag with ']' gets the upstream's answer, and the next command too", direct == proxied,
          (direct, proxied))
    for tag in ("q.1", "q[3", "u:1.a"):
        sides.same("ESEARCH names the tag %s" % tag,
                   lambda c, m: (tag, b"%s SEARCH RETURN (MIN) ALL\r\n" % tag.encode()))


def step_context_updates(sides):
    """RFC 5267: updates arrive after the tagged OK, name the command's
    tag, stop at CANCELUPDATE, and a tag still in use is a duplicate."""
    sides.same("SEARCH RETURN (UPDATE)", lambda c, m: ("u1", b"u1 SEARCH RETURN (UPDATE ALL) SUBJECT forwarding\r\n"))
    sides.same("a second context", lambda c, m: ("u[2", b"u[2 SEARCH RETURN (UPDATE ALL) SUBJECT forwarding\r\n"))
    sides.same("a reused update tag gets the upstream's BAD",
               lambda c, m: ("u1", b"u1 SEARCH RETURN (UPDATE) SUBJECT forwarding\r\n"))
    sides.change(6)
    direct, proxied = sides.same("updates after a third connection's APPEND",
                                 lambda c, m: ("n1", b"n1 NOOP\r\n"))
    check("... naming the client's tags", any('(TAG "u1") ADDTO' in line for line in proxied) and
          any('(TAG "u[2") ADDTO' in line for line in proxied), proxied)
    sides.same("CANCELUPDATE", lambda c, m: ("c1", b'c1 CANCELUPDATE "u1" "u[2"\r\n'))
    sides.change(7)
    direct, proxied = sides.same("no update after CANCELUPDATE", lambda c, m: ("n2", b"n2 NOOP\r\n"))
    check("... none at all", not any("ESEARCH" in line for line in proxied), proxied)


def refused_literal(sides, what, tag, line, literal, rest=b"\r\n"):
    """line announces literal as {N+}; the upstream refuses it first. The
    literal follows PAUSE later, then rest, then a NOOP that must be
    answered."""
    for conn, mailbox in ((sides.direct, "direct"), (sides.proxy, "proxy")):
        conn.send(line)
    time.sleep(PAUSE)
    direct, proxied = [], []
    for conn, out in ((sides.direct, direct), (sides.proxy, proxied)):
        conn.send(literal + rest + b"z1 NOOP\r\n")
        out += [strip_timings(l) for l in conn.until_tagged(tag)]
        out += [strip_timings(l) for l in conn.until_tagged("z1")]
    check("%s: refused before its {N+} literal, the next command is answered alike" % what,
          direct == proxied and direct[-1].startswith("z1 OK"), (direct, proxied))


def step_refused_literals(sides):
    data = message(93)
    refused_literal(sides, "APPEND", "b", b"b APPEND nonexistent {%d+}\r\n" % len(data), data)
    refused_literal(sides, "APPEND with two literals", "b2",
                    b"b2 APPEND nonexistent {%d+}\r\n" % len(data), data, b" {3+}\r\nabc\r\n")
    sides.direct.lines("u0", b"u0 UNSELECT\r\n")
    sides.proxy.lines("u0", b"u0 UNSELECT\r\n")
    refused_literal(sides, "SEARCH with no mailbox selected", "s", b"s SEARCH TEXT {5+}\r\n", b"hello")
    refused_literal(sides, "LOGIN after login", "l", b"l LOGIN {%d+}\r\n" % len(USER),
                    USER.encode(), b" {4+}\r\nnope\r\n")


def step_missing_command(sides):
    sides.same("a tag and no command gets the upstream's tagged BAD", lambda c, m: ("hello", b"hello\r\n"))
    sides.same("an unknown command gets the upstream's tagged BAD", lambda c, m: ("t1", b"t1 FROBNICATE\r\n"))
    sides.same("a 2,000-character tag is carried", lambda c, m: (LONG_TAG, LONG_TAG.encode() + b" NOOP\r\n"))


def deep_thread_message(n):
    """Message n of a discussion in which 2k and 2k+1 both answer 2k-2
    (1 for k = 1): every level branches, so THREAD nests a list per level."""
    parent = None if n == 1 else max(1, 2 * (n // 2 - 1))
    refs = b"" if parent is None else b"References: <deep%d@fwd.example>\r\n" % parent
    return (b"From: a@example.org\r\nSubject: deep\r\nDate: Fri, 4 Dec 2026 11:%02d:%02d +0000\r\n"
            b"Message-ID: <deep%d@fwd.example>\r\n%s\r\nbody %d\r\n") % (n // 60, n % 60, n, refs, n)


def nesting(line):
    deepest = depth = 0
    for c in line:
        depth += {"(": 1, ")": -1}.get(c, 0)
        deepest = max(deepest, depth)
    return deepest


def step_long_lines(sides):
    """A server's lines grow with its mailboxes: a FLAGS line of 2,700
    keywords (past 64 KiB, as a SEARCH of 12,000 UIDs would be) and a
    THREAD nested 40 deep pass as the upstream sent them, and the
    connection goes on."""
    names = {}
    for conn, side in ((sides.direct, "direct"), (sides.proxy, "proxy")):
        names[conn] = "fwd-long-%s-%d" % (side, sides.run)
        conn.tagged("mk", "CREATE %s" % names[conn])
        for n in range(1, DEEP_MESSAGES + 1):
            data = deep_thread_message(n)
            sides.third.send(b'ap APPEND %s {%d+}\r\n%s\r\n' % (names[conn].encode(), len(data), data))
            sides.third.expect_ok("ap", "APPEND")
        sides.third.tagged("s", "SELECT %s" % names[conn])
        for chunk in range(KEYWORD_STORES):
            keywords = " ".join("keyword_%04d_abcdefghijklmn" % (chunk * 900 + i) for i in range(900))
            sides.third.tagged("k", "STORE 1 +FLAGS.SILENT (%s)" % keywords)
    saved = sides.names
    sides.names = names
    try:
        direct, _ = sides.same("SELECT of a mailbox whose FLAGS line is past 64 KiB",
                               lambda c, m: ("s2", b"s2 SELECT %s\r\n" % m.encode()))
        check("... and it is past 64 KiB direct", max(len(line) for line in direct) > 65536,
              [len(line) for line in direct])
        sides.same("FETCH FLAGS of 2,700 keywords", lambda c, m: ("f1", b"f1 FETCH 1 (FLAGS)\r\n"))
        direct, _ = sides.same("THREAD nested 40 deep", lambda c, m: ("t1", b"t1 UID THREAD REFERENCES UTF-8 ALL\r\n"))
        check("... and nested past 32 lists direct", max(nesting(line) for line in direct) > 32,
              [nesting(line) for line in direct])
        sides.same("then a NOOP", lambda c, m: ("n3", b"n3 NOOP\r\n"))
    finally:
        sides.names = saved


def step_prelogin(daemon):
    """Before login the proxy answers itself: a tag without a command gets
    a tagged BAD; a LOGIN whose {N+} literals come a moment after the line
    is answered, and so is the next command."""
    c = Raw(daemon.port)
    lines = c.lines("hello", b"hello\r\n")
    check("before login, a tag alone gets a tagged BAD", lines == ["hello BAD Missing command"], lines)
    tag = "t" * 126  # Dovecot's imap-login takes tags of up to 126 characters
    lines = c.lines(tag, tag.encode() + b" NOOP\r\n")
    check("before login, a 126-character tag is taken", lines == [tag + " OK NOOP completed"], lines)
    c.send(b"u" * 127 + b" NOOP\r\n")
    line = c.line()
    check("... and a 127-character one is not", line == "* BAD Invalid tag", line)
    c.send(b"l LOGIN {%d+}\r\n" % len(USER))
    time.sleep(PAUSE)
    c.send(USER.encode() + b" {5+}\r\n")
    time.sleep(PAUSE)
    c.send(b"wrong\r\nz NOOP\r\n")
    login = c.until_tagged("l")
    noop = c.until_tagged("z")
    check("before login, LOGIN with late {N+} literals is answered, then NOOP",
          login[-1].startswith("l NO") and noop == ["z OK NOOP completed"], (login, noop))
    c.close()


def main():
    daemon = Daemon(upstream_dovecot("none"), extra="pool = { size = 0; };\n")
    try:
        sides = Sides(daemon, int(time.time()))
        try:
            run_steps([select, step_esearch_tags, step_odd_tags, step_context_updates, step_refused_literals,
                       step_missing_command, step_long_lines], sides)
        finally:
            sides.close()
        run_steps([step_prelogin], daemon)
    finally:
        daemon.stop()
    if proxyfixture.ENV.get("TEST_DEBUG"):
        print(daemon.log())
    return summary()


if __name__ == "__main__":
    sys.exit(main())
