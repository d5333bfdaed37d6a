#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""A session's bad input and login edge cases, through imapcached in front
of the test Dovecot, with raw sockets: LOGIN with literal arguments
({N} and {N+}, answered like Dovecot answers them direct), over the
pre-login literal limit (BAD or BYE, the literal never read as commands),
a literal announced and never sent before and after login (BYE after
timeouts.literal, the upstream APPEND abandoned; a slow reader whose "+"
waited behind unread output is not cut off), an over-limit literal
after login, lines over limits.line after login (Dovecot's BAD, the
session going on; BYE once part went upstream), an upstream whose host
name never resolves (NO [UNAVAILABLE],
the loop not blocked) and one named "localhost", and ID before login.
Every case checks the daemon's log line and that a second session, open
at the same time, keeps working. The daemon runs on a free loopback port
and is stopped by its PID."""
import json
import re
import socket
import sys
import time

from checks import check, summary
import proxyfixture
from proxyfixture import (MANIFEST, PASS, PASS2, PORT, USER, USER2, Daemon, quote, run_steps, untag,
                          upstream_dovecot)

LITERAL_TIMEOUT = 2  # timeouts.literal of the test daemon
PREAUTH_LIMIT = 64  # limits.literal_preauth
LITERAL_LIMIT = 1024  # limits.literal (its minimum)
SLOW_RCVBUF = 4096  # the slow reader's SO_RCVBUF: little waits in its kernel
SLOW_MSS = 536  # its TCP_MAXSEG: keeps the proxy's send buffer for it near 100 KB
SLOW_BACKLOG = 230000  # bytes of FETCH it leaves unread: more than both buffers
                       # hold, less than the proxy's 256 KiB output high-water mark
tmp = proxyfixture.scratch_dir("test-session-input.")


class Raw(proxyfixture.Raw):
    """A connection that has read the greeting, with TCP_NODELAY: the
    tests time and split their writes."""

    def __init__(self, port):
        super().__init__(port, greeting=True, nodelay=True)

    def reply(self, tag, text):
        """Sends one command line and returns its tagged reply line."""
        return self.tagged(tag, text)[-1]


def literal(data, plus=False):
    return b"{%d%s}\r\n" % (len(data), b"+" if plus else b"")


def login_sync(port, user, password):
    """LOGIN with both arguments as synchronizing literals; returns the
    two continuation lines and the tagged reply."""
    c = Raw(port)
    user, password = user.encode(), password.encode()
    c.send(b"a LOGIN " + literal(user))
    first = c.line()
    c.send(user + b" " + literal(password))
    second = c.line()
    c.send(password + b"\r\n")
    reply = c.until_tagged("a")[-1]
    c.reply("z", "LOGOUT")
    c.close()
    return first, second, reply


def login_nonsync(port, user, password, byte_at_a_time=False, split=None):
    """LOGIN with both arguments as {N+} literals, whole, one byte at a
    time or in two pieces split at offset split; returns the tagged reply."""
    c = Raw(port)
    user, password = user.encode(), password.encode()
    data = b"a LOGIN " + literal(user, True) + user + b" " + literal(password, True) + password + b"\r\n"
    if byte_at_a_time:
        for i in range(len(data)):
            c.send(data[i:i + 1])
            time.sleep(0.002)
    elif split is not None:
        c.send(data[:split])
        time.sleep(0.01)
        c.send(data[split:])
    else:
        c.send(data)
    reply = c.until_tagged("a")[-1]
    c.close()
    return reply


def test_login_literals(daemon):
    for name, port in (("direct", PORT), ("proxy", daemon.port)):
        first, second, reply = login_sync(port, USER, PASS)
        check("%s: LOGIN {N} user {N} password: '+' for each literal" % name,
              first.startswith("+") and second.startswith("+"), (first, second))
        check("%s: LOGIN with synchronizing literals logs in" % name, reply.startswith("a OK"), reply)
    direct = login_sync(PORT, USER, "wrong" + PASS)[2]
    proxied = login_sync(daemon.port, USER, "wrong" + PASS)[2]
    check("a wrong password in a literal: the proxy says what Dovecot says",
          untag(direct) == untag(proxied) and direct.startswith("a NO"), (direct, proxied))
    for name, port in (("direct", PORT), ("proxy", daemon.port)):
        reply = login_nonsync(port, USER2, PASS2)
        check("%s: LOGIN with {N+} literals logs in" % name, reply.startswith("a OK"), reply)
    reply = login_nonsync(daemon.port, USER2, PASS2, byte_at_a_time=True)
    check("proxy: LOGIN with {N+} literals sent one byte at a time logs in", reply.startswith("a OK"), reply)
    size = len("a LOGIN {%d+}\r\n%s {%d+}\r\n%s\r\n" % (len(USER2), USER2, len(PASS2), PASS2))
    replies = [login_nonsync(daemon.port, USER2, PASS2, split=i) for i in range(1, size)]
    check("proxy: LOGIN with {N+} literals split at every offset logs in",
          all(r.startswith("a OK") for r in replies), [r for r in replies if not r.startswith("a OK")])

    c = Raw(daemon.port)
    c.send(b'a LOGIN "%s" %s' % (USER.encode(), literal(PASS.encode())))
    cont = c.line()
    c.send(PASS.encode() + b"\r\n")
    reply = c.until_tagged("a")[-1]
    check("proxy: LOGIN with a quoted user name and a literal password", cont.startswith("+") and
          reply.startswith("a OK"), (cont, reply))
    c.close()

    # Three literals: LOGIN has two arguments, so the third gets no "+".
    c = Raw(daemon.port)
    c.send(b"a LOGIN {1}\r\n")
    c.line()
    c.send(b"u {1}\r\n")
    c.line()
    c.send(b"p {1}\r\n")
    reply = c.line()
    check("a third LOGIN literal: BAD, no '+'", reply.startswith("a BAD"), reply)
    check("after it the session still answers", c.reply("b", "NOOP").startswith("b OK"))
    c.close()


def test_preauth_limit(daemon):
    other = Raw(daemon.port)
    big = b"x" * (PREAUTH_LIMIT + 1)
    c = Raw(daemon.port)
    c.send(b"a LOGIN " + literal(big))
    reply = c.line()
    check("LOGIN {N} over limits.literal_preauth: BAD, no '+'", reply.startswith("a BAD"), reply)
    check("after it the session still answers", c.reply("b", "NOOP").startswith("b OK"))
    c.send(b"c LOGIN user " + literal(big))
    reply = c.line()
    check("the password's {N} over the limit: BAD, no '+'", reply.startswith("c BAD"), reply)
    c.close()

    # {N+} over the limit: the bytes are on their way and hold commands;
    # none of them may be run.
    c = Raw(daemon.port)
    payload = (b"z1 CAPABILITY\r\n" * 10)[:PREAUTH_LIMIT + 10]
    c.send(b"a LOGIN user " + literal(payload, True) + payload + b"\r\n")
    text, closed = c.rest()
    check("LOGIN {N+} over the limit: BYE and the connection closed",
          closed and "* BYE" in text, text)
    check("LOGIN {N+} over the limit: no byte of the literal run as a command", "z1 " not in text, text)
    check("the over-limit literal before login is logged",
          daemon.wait_log(r"literal of %d bytes before login, over the limit" % len(payload)) is not None)
    check("a second session open meanwhile still works", other.reply("o", "NOOP").startswith("o OK"))
    other.close()


def logged_in(port, user=USER, password=PASS):
    c = Raw(port)
    reply = c.reply("l", "LOGIN %s %s" % (quote(user), quote(password)))
    if not reply.startswith("l OK"):
        raise RuntimeError("login failed: %s" % reply)
    return c


def inbox_count(c, tag):
    c.send(("%s STATUS INBOX (MESSAGES)\r\n" % tag).encode())
    for line in c.until_tagged(tag):
        m = re.search(r"MESSAGES (\d+)", line)
        if m:
            return int(m.group(1))
    return -1


def expect_literal_bye(c, started):
    text, closed = c.rest()
    elapsed = time.monotonic() - started
    return text, closed, elapsed


def test_literal_timeout(daemon):
    other = logged_in(daemon.port, USER2, PASS2)
    before = inbox_count(other, "s1")

    # Before login: "+" sent, the literal never comes.
    c = Raw(daemon.port)
    c.send(b"a LOGIN {5}\r\n")
    cont = c.line()
    started = time.monotonic()
    check("a LOGIN literal: '+'", cont.startswith("+"), cont)
    time.sleep(LITERAL_TIMEOUT / 2)
    check("meanwhile a second session works", other.reply("o1", "NOOP").startswith("o1 OK"))
    text, closed, elapsed = expect_literal_bye(c, started)
    check("a LOGIN literal never sent: BYE after timeouts.literal",
          closed and "* BYE Literal not sent in time" in text and
          LITERAL_TIMEOUT - 0.5 <= elapsed < LITERAL_TIMEOUT + 5, (text, elapsed))
    c.close()

    # After login, {N}: the upstream's "+" came, part of the message is
    # sent in pieces (each within the timeout), then nothing more.
    c = logged_in(daemon.port, USER2, PASS2)
    c.send(b"b APPEND INBOX {60}\r\n")
    cont = c.line()
    check("APPEND {N}: the upstream's '+' comes through", cont.startswith("+"), cont)
    for _ in range(3):
        c.send(b"Subject: x\r\n")
        time.sleep(LITERAL_TIMEOUT / 2)
    started = time.monotonic()
    check("a literal that keeps coming is not cut off", other.reply("o2", "NOOP").startswith("o2 OK")
          and c.buf == b"")
    text, closed, elapsed = expect_literal_bye(c, started)
    check("APPEND {N} stalled: BYE after timeouts.literal",
          closed and "* BYE Literal not sent in time" in text and elapsed < LITERAL_TIMEOUT + 5,
          (text, elapsed))
    c.close()

    # After login, {N+}.
    c = logged_in(daemon.port, USER2, PASS2)
    c.send(b"c APPEND INBOX {60+}\r\nSubject: y\r\n")
    started = time.monotonic()
    text, closed, elapsed = expect_literal_bye(c, started)
    check("APPEND {N+} stalled: BYE after timeouts.literal",
          closed and "* BYE Literal not sent in time" in text and
          LITERAL_TIMEOUT - 0.5 <= elapsed < LITERAL_TIMEOUT + 5, (text, elapsed))
    c.close()

    check("the stalled literal is logged",
          daemon.wait_log(r"a literal got no data for %d s" % LITERAL_TIMEOUT) is not None)
    check("the session end says why",
          daemon.wait_log(r"end: .*literal not sent in time") is not None)
    check("the second session still works", other.reply("o3", "NOOP").startswith("o3 OK"))
    after = inbox_count(other, "s2")
    check("the abandoned APPENDs stored nothing upstream", before >= 0 and after == before, (before, after))
    other.close()


def slow_reader(port):
    """A logged-in connection (the corpus owner, INBOX selected) whose
    kernel buffers hold little: a small receive buffer and a small
    MSS, which also keeps imapcached's send buffer for it small, so a
    reply of a few hundred KB waits in imapcached's own output queue
    while the client does not read."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SLOW_RCVBUF)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, SLOW_MSS)
    sock.settimeout(proxyfixture.WAIT)
    sock.connect(("127.0.0.1", port))
    c = proxyfixture.Raw(port, greeting=True, nodelay=True, sock=sock)
    for tag, command in (("l", "LOGIN %s %s" % (quote(USER), quote(PASS))), ("s", "SELECT INBOX")):
        c.send(("%s %s\r\n" % (tag, command)).encode())
        c.expect_ok(tag, command.split()[0])
    c.skip_literals = True  # the FETCH below: its literal is skipped, not split into lines
    return c


def test_literal_timeout_slow_reader(daemon):
    """A client with a backlog of unread output when the upstream's "+"
    is queued behind it: timeouts.literal runs only once that output is
    written to the client's socket."""
    with open(MANIFEST) as f:
        big = max(json.load(f)["messages"], key=lambda m: m["rfc822_size"])
    if big["rfc822_size"] < SLOW_BACKLOG:
        check("the corpus has a message of %d bytes for the slow reader" % SLOW_BACKLOG, False, big)
        return
    message = b"Subject: slow reader\r\n\r\n" + b"x" * 32 + b"\r\n"
    for stalls in (False, True):
        c = slow_reader(daemon.port)
        c.send(b"f UID FETCH %d BODY.PEEK[]<0.%d>\r\nb APPEND INBOX {%d}\r\n"
               % (big["uid"], SLOW_BACKLOG, len(message)))
        time.sleep(2 * LITERAL_TIMEOUT)  # reads nothing for twice the timeout
        lines = []
        try:
            while not lines or not lines[-1].startswith("f "):
                lines.append(c.line())
            lines.append(c.line())
            read_at = time.monotonic()
            if not stalls:
                c.send(message + b"\r\n")
                while not lines[-1].startswith("b "):
                    lines.append(c.line())
        except (EOFError, OSError) as e:  # closed early
            lines.append(repr(e))
        if not stalls:
            check("a slow reader with %d bytes unread when '+' came: the FETCH is all there" % SLOW_BACKLOG,
                  lines[0].startswith("* ") and any(l.startswith("f OK") for l in lines), lines[-4:])
            check("a slow reader not cut off by timeouts.literal before it read the '+': APPEND completes",
                  any(l.startswith("+") for l in lines) and lines[-1].startswith("b OK"), lines[-4:])
            check("the '+' was queued behind unsent output (what this case is about)",
                  daemon.wait_log(r'"\+" queued behind \d+ bytes of unsent output') is not None)
        else:
            text, closed = c.rest()
            elapsed = time.monotonic() - read_at
            check("once the backlog is written, a literal not sent still gets BYE after timeouts.literal",
                  lines[-1].startswith("+") and closed and "* BYE Literal not sent in time" in text and
                  LITERAL_TIMEOUT - 0.5 <= elapsed < LITERAL_TIMEOUT + 5, (lines[-2:], text, elapsed))
        c.close()


def test_literal_limit(daemon):
    other = logged_in(daemon.port, USER2, PASS2)
    c = logged_in(daemon.port)
    big = LITERAL_LIMIT + 1
    c.send(b"a APPEND INBOX {%d}\r\n" % big)
    reply = c.line()
    check("APPEND {N} over limits.literal: tagged BAD, no '+'", reply.startswith("a BAD"), reply)
    check("after it the session goes on", c.reply("b", "NOOP").startswith("b OK"))
    check("the refused {N} is logged",
          daemon.wait_log(r"literal of %d bytes refused, over the limit of %d" % (big, LITERAL_LIMIT))
          is not None)

    payload = (b"z1 NOOP\r\n" * 200)[:big]
    c.send(b"c APPEND INBOX {%d+}\r\n" % big + payload + b"\r\n")
    text, closed = c.rest()
    check("APPEND {N+} over limits.literal: BYE and closed", closed and "* BYE Literal too large" in text,
          text)
    check("no byte of the over-limit literal run as a command", "z1 " not in text, text)
    check("the over-limit {N+} is logged",
          daemon.wait_log(r"literal of %d bytes, over the limit of %d" % (big, LITERAL_LIMIT)) is not None)
    check("a second session open meanwhile still works", other.reply("o", "NOOP").startswith("o OK"))
    c.close()
    other.close()


STRAY_RUN = 20  # Dovecot's CLIENT_MAX_BAD_COMMANDS: the run of bad lines that ends a session after login


def test_stray_lines(daemon):
    """Lines with no tag after login (a blank line some clients send
    after a literal or DONE) get an untagged BAD each; only a run of
    twenty ends the session, as a run of twenty ends Dovecot's. They once
    counted over the session's whole life (its tenth closed it), then a
    run of ten did."""
    c = logged_in(daemon.port)
    for round in range(3):
        c.send(b"\r\n" * (STRAY_RUN - 1))
        replies = [c.line() for _ in range(STRAY_RUN - 1)]
        check("after login, %d blank lines in a row get BAD each (round %d)" % (STRAY_RUN - 1, round),
              replies == ["* BAD Invalid tag"] * (STRAY_RUN - 1), replies)
        reply = c.reply("n%d" % round, "NOOP")
        check("... and the NOOP after them is answered (round %d)" % round, reply.startswith("n%d OK" % round),
              reply)
    c.send(b"\r\n" * STRAY_RUN)
    text, closed = c.rest()
    check("%d blank lines in a row end the session with BYE" % STRAY_RUN,
          closed and text.count("* BAD Invalid tag") == STRAY_RUN and
          text.endswith("* BYE Too many invalid commands\r\n"), text)
    c.close()
    direct = Raw(PORT)
    direct.reply("l", "LOGIN %s %s" % (quote(USER), quote(PASS)))
    direct.send(b"\r\n" * STRAY_RUN)
    text, closed = direct.rest()
    check("... as straight to Dovecot: %d BADs, then BYE" % STRAY_RUN,
          closed and text.count("* BAD") == STRAY_RUN and "* BYE" in text, text)
    direct.close()


def test_id(daemon):
    c = Raw(daemon.port)
    c.send(b"a CAPABILITY\r\n")
    caps = c.until_tagged("a")
    check("the pre-login CAPABILITY lists ID", any(re.search(r"^\* CAPABILITY .* ID( |$)", l) for l in caps),
          caps)
    c.send(b'b ID ("name" "test-session-input")\r\n')
    lines = c.until_tagged("b")
    check("ID before login: the proxy's name and version, then OK",
          len(lines) == 2 and re.match(r'^\* ID \("name" "imapcached" "version" "[^"]+"\)$', lines[0])
          and lines[1].startswith("b OK"), lines)
    reply = c.reply("c", "ID NIL")
    check("ID NIL before login: OK", reply.startswith("c OK"), reply)
    reply = c.reply("d", "ID garbage")
    check("ID with a bad argument: BAD", reply.startswith("d BAD"), reply)
    c.close()


# Malformed command lines before login: Dovecot's imap-login answers each
# with a BAD, tagged once it has read a tag, and reads the next command.
MALFORMED = (b'a NOOP "x', b"a NOOP )", b"a LOGIN (x", b'a LOGIN "x', b"a\x01 NOOP", b"a NOOP \x01",
             b"a LOGIN a b c", b'a AUTHENTICATE PLAIN "abc"', b'a ID ("a" "b"', b"a NOOP {abc}",
             b"a BODY[ x", b"* NOOP", b"+ NOOP", b"\x00\x01")


def bad_shape(line):
    """What kind of answer a line is: tagged BAD, untagged BAD or other."""
    if line.startswith("a BAD "):
        return "tagged BAD"
    return "untagged BAD" if line.startswith("* BAD ") else line


def test_malformed_prelogin(daemon):
    """Each malformed line gets the kind of BAD Dovecot gives it, and the
    session reads the next command in step; a line refused early whose
    rest comes later is dropped to its end, one answer only."""
    for line in MALFORMED:
        answers = []
        for port in (PORT, daemon.port):
            c = Raw(port)
            c.send(line + b"\r\nb NOOP\r\n")
            lines = c.until_tagged("b")
            answers.append(lines)
            c.close()
        direct, proxied = answers
        check("%r: the kind of BAD Dovecot gives, then the next command" % line,
              [bad_shape(x) for x in proxied[:-1]] == [bad_shape(x) for x in direct[:-1]] and
              proxied[-1].startswith("b OK") and len(proxied) == len(direct), (direct, proxied))
    c = Raw(daemon.port)
    c.send(b"a NOOP ) and more")
    time.sleep(0.2)
    c.send(b" of the same line {5}\r\nb NOOP\r\n")
    lines = c.until_tagged("b")
    check("a line refused early is dropped to its end, however it comes, and answered once",
          lines == ["a BAD Unexpected ')' with no open list", "b OK NOOP completed"], lines)
    c.send(b"c NOOP )" + b"x" * (70000))
    text, closed = c.rest()
    check("... but no further than limits.line: BYE", closed and "* BYE Command line too long" in text, text)
    c.close()
    c = Raw(daemon.port)
    c.send(("a LOGIN %s %s\r\n" % (quote(USER), quote(PASS))).encode())
    reply = c.until_tagged("a")[-1]
    check("LOGIN with quoted strings is read by the same parser", reply.startswith("a OK"), reply)
    c.close()


# Lines a parser refuses, each sent in pieces with pauses between (the
# refusal comes before the line's end has), then a NOOP: (name, pieces).
REFUSED_LINES = [
    ("a NUL in the command name", [b"a1 NOOP\x00x", b"\r\n"]),
    ("a literal size followed by no CRLF", [b"a1 FETCH 1 (BODY[] {3}x", b"yz\r\n"]),
    ("a control character in an atom", [b"a1 FETCH 1 (UID\x01", b")\r\n"]),
    ("{2+} where the tag goes", [b"{2+}\r\nab NOOP\r\n"]),
    ("{2} where the tag goes", [b"{2}\r\n", b"ab NOOP\r\n"]),
    ("a tag with {2} in it", [b"a{2}\r\n"]),
    ("a tag with {2+} in it", [b"a{2+}\r\nab NOOP\r\n"]),
    ("a list where the tag goes, a literal in it", [b"({2}\r\n", b"ab) NOOP\r\n"]),
    ("a quoted tag", [b'"a" NOOP\r\n']),
    ("a NUL where the tag goes", [b"\x00a NOOP\r\n"]),
    ("a tag and nothing more", [b"a\r\n"]),
    ("a space before the tag", [b" a NOOP\r\n"]),
]
# A literal is no part of a line's length: 2,500 bytes after the refusal
# are within a limits.line of 8 KiB, though 8,500 came since the line
# began (they once ended the session). After login, on a daemon of its own.
LITERAL_THEN_REFUSED = [b"a1 APPEND INBOX {6000+}\r\n" + b"m" * 6000 + b" (\\Seen \x01", b"z" * 2500 + b")\r\n"]
SHORT_LINE_LIMIT = 8192
PIECE_PAUSE = 0.2  # between the pieces of a refused line: each reaches the daemon alone
DOVECOT_TAG_BAD = re.compile(r"^\* BAD Error in IMAP tag: .*$", re.M)


def uid_set(size):
    """A set of odd UIDs, "1,3,5,...", of at least size bytes: no range
    shortens it, as a client's set of scattered messages."""
    parts, uid, length = [], 1, 0
    while length < size:
        parts.append(b"%d" % uid)
        length += len(parts[-1]) + 1
        uid += 2
    return b",".join(parts)


def halves(line):
    """line (CRLF added) in two pieces, the cut past the first 40 KB."""
    line += b"\r\n"
    return [line[:40000], line[40000:]]


# Lines over limits.line (64 KiB, Dovecot's own imap_max_line_length)
# after login, each in two pieces: (name, pieces, whether Dovecot's text
# is imapcached's). Dovecot answers BAD at the line's end and reads on.
LONG_LINES = [
    ("a UID FETCH of a 70 KB set", halves(b"a1 UID FETCH " + uid_set(70000) + b" (UID)"), True),
    ("a UID STORE of a 200 KB set", halves(b"a1 UID STORE " + uid_set(200000) + b" +FLAGS (\\Flagged)"), True),
    ("a 70 KB quoted header name", halves(b'a1 FETCH 1 BODY.PEEK[HEADER.FIELDS ("' + b"x" * 70000 + b'")]'), True),
    ("a 70 KB command name", halves(b"a1 " + b"A" * 70000), True),
    ("a 70 KB tag", halves(b"X" * 70000), True),
    ("a 300-character tag", halves(b"T" * 300 + b" UID FETCH " + uid_set(70000) + b" (UID)"), True),
    ("a SEARCH of 15,000 short keys", halves(b"a1 UID SEARCH " + b" ".join([b"OR UID 1 UID 2"] * 15000)), False),
    ("a line refused early that goes past the limit", halves(b"a1 FETCH 1 (UID\x01" + b"x" * 70000 + b")"), False),
]


def test_long_lines(daemon):
    """A line over limits.line after login once ended the session ("BYE
    Command line too long"); Dovecot answers BAD and reads the next
    command, and so does imapcached now, with Dovecot's text where it
    can tell which of Dovecot's it is. Nothing of such a line goes
    upstream (no STORE is run) and the upstream connection stays poolable."""
    for name, pieces, same_text in LONG_LINES:
        direct = refused_line_replies(PORT, pieces, True)
        proxied = refused_line_replies(daemon.port, pieces, True)
        if same_text:
            check("after login, %s: Dovecot's answers" % name, proxied is not None and proxied == direct,
                  (proxied, direct))
            continue
        check("after login, %s: a tagged BAD, as Dovecot's, and the session reads on" % name,
              proxied is not None and direct is not None and len(proxied.split("\n")) == len(direct.split("\n"))
              and proxied.split("\n")[-2].startswith("a1 BAD ") and direct.split("\n")[-2].startswith("a1 BAD ")
              and proxied.split("\n")[-1].startswith("zz OK NOOP completed"), (proxied, direct))
    c = logged_in(daemon.port)
    c.reply("s", "SELECT INBOX")
    flagged = c.tagged("f", "UID SEARCH FLAGGED")
    c.close()
    check("... and no STORE of those went upstream", "1 3" not in " ".join(flagged) and flagged[-1].startswith("f OK"),
          flagged)


# Lines over limits.line during IDLE, in two pieces: Dovecot answers the
# IDLE "BAD Expected DONE" once its buffer is full, skips the rest of the
# line and reads on.
IDLE_LONG_LINES = [
    ("a 70 KB line", halves(b"x" * 70000)),
    ("DONE and 70 KB of spaces", halves(b"DONE" + b" " * 70000)),
    ("a 200 KB line", halves(b"DONE" + b"y" * 200000)),
]


def test_long_line_during_idle(daemon):
    """A line over limits.line during IDLE once ended the session ("BYE
    Command line too long"); Dovecot ends the IDLE with BAD and reads the
    next command, and so does imapcached now, with the same answers."""
    for name, pieces in IDLE_LONG_LINES:
        direct = refused_line_replies(PORT, pieces, True, idle=True)
        proxied = refused_line_replies(daemon.port, pieces, True, idle=True)
        check("during IDLE, %s: Dovecot's answers, and the session reads on" % name,
              proxied is not None and proxied == direct and "i BAD Expected DONE" in proxied
              and proxied.split("\n")[-1].startswith("zz OK NOOP completed"), (proxied, direct))


def test_long_line_after_literal(daemon):
    """A line whose start went upstream already (a synchronizing literal
    was sent) can't be answered BAD without running what came of it: when
    it passes limits.line the session ends, and the upstream, its command
    cut, stores nothing."""
    c = logged_in(daemon.port)
    before = inbox_count(c, "c0")
    c.send(b"a1 APPEND INBOX {5}\r\n")
    go = c.line()
    c.send(b"hello " + b"x" * 70000 + b"\r\n")
    text, closed = c.rest()
    c.close()
    check("a line past limits.line after its literal went upstream: BYE", go.startswith("+") and closed and
          "* BYE Command line too long" in text, (go, text))
    c = logged_in(daemon.port)
    check("... and nothing was appended", inbox_count(c, "c1") == before, before)
    c.close()



def refused_line_replies(port, pieces, login, idle=False):
    """What a connection to port reads for pieces sent one by one (logged
    in first when login; with idle, into an IDLE), up to a NOOP's OK after
    them; None when the connection closed first. Dovecot's timings and its
    text of a tag's BAD are cut to what imapcached writes."""
    c = logged_in(port) if login else Raw(port)
    try:
        if login:
            c.reply("s", "SELECT INBOX")
        if idle:
            c.send(b"i IDLE\r\n")
            if not c.line().startswith("+ "):
                return None
        for piece in pieces:
            c.send(piece)
            time.sleep(PIECE_PAUSE)
        c.send(b"zz NOOP\r\n")
        text = "\n".join(c.until_tagged("zz"))
    except (EOFError, OSError):
        return None
    finally:
        c.close()
    text = DOVECOT_TAG_BAD.sub("* BAD Invalid tag", proxyfixture.TIMINGS.sub("", text))
    return text


def test_refused_lines(daemon):
    """Lines that can't be read: Dovecot answers BAD at their end, and
    drops a line with no valid tag whole (a literal where the tag goes is
    none). A refusal found before the line's end had come once ended the
    session ("BYE Invalid command line"), and "{2+}" where the tag goes was
    read as a literal, swallowing the next command. After login each gets
    Dovecot's own answer through imapcached; before login imapcached
    answers, in the same way."""
    for name, pieces in REFUSED_LINES:
        direct = refused_line_replies(PORT, pieces, True)
        proxied = refused_line_replies(daemon.port, pieces, True)
        check("after login, %s: the answers through imapcached are Dovecot's" % name,
              proxied is not None and proxied == direct, (proxied, direct))
        before = refused_line_replies(daemon.port, pieces, False)
        check("before login, %s: BAD, and the session goes on" % name,
              before is not None and ("BAD" in before.split("\n")[0]) and before.endswith("zz OK NOOP completed")
              and ("ab NOOP" not in b"".join(pieces).decode(errors="replace") or "ab OK" in before), before)


def test_refused_extensions(daemon):
    """COMPRESS and NOTIFY, which imapcached does not advertise and cannot
    carry (compressed bytes past the proxy's reading; news pushed outside
    any command), get NO [CANNOT] from imapcached whatever their arguments.
    They once went upstream: the parser knows neither verb, and only a
    parsed command reached the refusal. Forwarded, COMPRESS DEFLATE to a
    server that offers it cut the session. With a synchronizing literal
    the refusal comes instead of the "+" (RFC 3501 7.5: the client sends
    no more of the line): such a command went upstream before its line
    ended, and Dovecot said "+ OK" to a NOTIFY."""
    c = logged_in(daemon.port)
    for tag, command, verb in (("c1", "COMPRESS DEFLATE", "COMPRESS"), ("n1", "NOTIFY NONE", "NOTIFY"),
                               ("n2", "NOTIFY SET (selected (MessageNew (UID) MessageExpunge))", "NOTIFY")):
        reply = c.reply(tag, command)
        check("%s: NO [CANNOT] from imapcached" % command,
              reply == "%s NO [CANNOT] imapcached does not carry %s" % (tag, verb), reply)
    for tag, start, verb in (("n3", "NOTIFY SET (mailboxes {5}", "NOTIFY"), ("c2", "COMPRESS {7}", "COMPRESS")):
        c.send(("%s %s\r\n" % (tag, start)).encode())
        reply = c.line()
        check("%s: NO [CANNOT] instead of the literal's \"+\"" % start,
              reply == "%s NO [CANNOT] imapcached does not carry %s" % (tag, verb), reply)
    # {N+} literals (each within limits.literal) past what a line may
    # hold before it goes upstream (64 KB), a CRLF in each: read to the
    # line's end and refused
    name = b"x" * (LITERAL_LIMIT - 26) + b"\r\n"
    c.send(b"n4 NOTIFY SET (mailboxes (" + b" ".join(literal(name, True) + name for _ in range(70)) +
           b") (MessageNew))\r\n")
    reply = c.line()
    check("NOTIFY with 70 KB of LITERAL+ mailbox names: NO [CANNOT], not sent upstream",
          reply == "n4 NO [CANNOT] imapcached does not carry NOTIFY", reply[:200])
    check("... and the session goes on", c.reply("o", "NOOP").startswith("o OK"))
    c.close()


def test_refused_after_literal():
    daemon = Daemon(upstream_dovecot("none"), "limits = { line = %d; };\n" % SHORT_LINE_LIMIT, tmpdir=tmp)
    try:
        direct = refused_line_replies(PORT, LITERAL_THEN_REFUSED, True)
        proxied = refused_line_replies(daemon.port, LITERAL_THEN_REFUSED, True)
        check("a line refused after its literal, longer than limits.line with the literal but not without: "
              "Dovecot's answers", proxied is not None and proxied == direct, (proxied, direct))
    finally:
        daemon.stop()


def test_dns():
    daemon = Daemon('{ name = "nowhere"; host = "imap.imapcached-test.invalid"; port = 143; tls = "none"; '
                    'users = [ "*@nowhere.test" ]; }, '
                    '{ name = "local"; host = "localhost"; port = %d; tls = "none"; }' % PORT,
                    "timeouts = { upstream_connect = 3; };\n", tmpdir=tmp)
    try:
        c = Raw(daemon.port)
        reply = c.reply("a", "LOGIN %s %s" % (USER, PASS))
        check("an upstream named localhost: the login works", reply.startswith("a OK"), reply)
        check("and a command goes through", c.reply("b", "SELECT INBOX").startswith("b OK"))
        c.close()

        c = Raw(daemon.port)
        other = Raw(daemon.port)
        started = time.monotonic()
        c.send(b"a LOGIN someone@nowhere.test secret\r\n")
        t = time.monotonic()
        reply = other.reply("o", "NOOP")
        quick = time.monotonic() - t
        check("while the name is looked up another session is answered at once",
              reply.startswith("o OK") and quick < 1.0, (reply, quick))
        reply = c.until_tagged("a")[-1]
        elapsed = time.monotonic() - started
        check("an upstream host under .invalid: NO [UNAVAILABLE], within the connect timeout",
              reply.startswith("a NO [UNAVAILABLE]") and elapsed < 3 + 5, (reply, elapsed))
        check("the failed lookup is logged with the name",
              daemon.wait_log(r"cannot reach upstream nowhere: (cannot resolve |timed out.*)"
                              r"imap\.imapcached-test\.invalid") is not None, daemon.log()[-600:])
        check("the session can try again", c.reply("b", "NOOP").startswith("b OK"))
        c.close()
        other.close()
    finally:
        daemon.stop()


def main():
    daemon = Daemon(upstream_dovecot("none"),
                    "timeouts = { literal = %d; };\nlimits = { literal_preauth = %d; literal = %d; };\n"
                    % (LITERAL_TIMEOUT, PREAUTH_LIMIT, LITERAL_LIMIT), tmpdir=tmp)
    try:
        run_steps((test_login_literals, test_preauth_limit, test_literal_timeout, test_literal_timeout_slow_reader,
                   test_literal_limit, test_stray_lines, test_refused_lines, test_long_lines, test_long_line_during_idle,
                   test_long_line_after_literal,
                   test_refused_extensions, test_id, test_malformed_prelogin),
                  daemon)
    finally:
        daemon.stop()
    run_steps((test_refused_after_literal, test_dns))
    check("the daemon never logged a password", PASS not in daemon.log() and PASS2 not in daemon.log())
    return summary()


if __name__ == "__main__":
    sys.exit(main())
