#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Odd but possible FETCH and SEARCH commands get the upstream's answer
through a warm imapcached, byte for byte (issue 11 items 6 and 7, issue 12
item 1): the random differential tests draw from a grammar, and these are
the corners a grammar leaves out.

testuser straight to Dovecot and mirroruser (the same mailbox) through
imapcached, whose store first holds every message whole (cache.prefetch
"full"). Every command goes to both; the answers must be the same bytes,
Dovecot's timings stripped, and the proxied connection must live through
all of them. Among them:

- the number 4294967295 in a set: the largest UID there can be, which a
  set's "*" must not be taken for (once answered from the store with the
  last message);
- header names Dovecot takes though RFC 3501 does not ("A*B", "A%B",
  "A\\B") and echoes back unquoted: its answer once cut the upstream
  connection, the client core refusing the name;
- partials at and past 2^32 - 1, sections that name no part, duplicate
  items, macros, unknown items and modifiers;
- spaces where none belong (two before a command name were once read as
  one and answered from the store, LOGOUT too: Dovecot says BAD), and
  literal8 outside APPEND (once answered from the store too);
- SEARCH with sets and numbers at their limits, empty strings, odd dates
  and RETURN options;
- CONDSTORE-enabling commands that get BAD, which enable nothing (once
  the proxy's next sync enabled CONDSTORE upstream for them), and one
  that gets BAD after Dovecot enabled CONDSTORE;
- with CONDSTORE enabled: MODSEQ searches with each RETURN form (the
  MODSEQ of RETURN (MIN) was once every found message's highest, where
  Dovecot gives the MIN message's), CHANGEDSINCE at its limits.

The commands the store can answer must be answered from it (the log says
so), the two above among them."""
import re

from checks import check, summary
import proxyfixture
from proxyfixture import PASS, PASS3, PORT, USER, USER3, Daemon, Raw, quote_bytes, upstream_dovecot

DONE = r"prefetch: nothing more is missing"
LOCAL = r"FETCH answered from the cache|SEARCH answered from the cache"
TIMINGS = re.compile(rb" \(\d+\.\d+ \+ \d+\.\d+( \+ \d+\.\d+)? secs\)")

# (command, whether the store must answer it)
COMMANDS = [
    # the largest UID is no "*"
    (b"UID FETCH 4294967295 (UID)", True),
    (b"UID FETCH 4294967294:4294967295 (UID)", True),
    (b"UID FETCH 1:4294967295 (UID)", True),
    (b"UID FETCH 4294967295:* (UID)", True),
    (b"FETCH 4294967295 (UID)", False),
    (b"UID FETCH 4294967296 (UID)", False),
    (b"UID SEARCH UID 4294967295", False),
    (b"SEARCH UID 4294967295:*", False),
    (b"SEARCH 4294967295", False),
    # header names Dovecot takes and echoes unquoted
    (b"FETCH 1 (BODY.PEEK[HEADER.FIELDS (A*B)])", True),
    (b"FETCH 1 (BODY.PEEK[HEADER.FIELDS (Subject% Date)])", True),
    (b"FETCH 1 (BODY.PEEK[HEADER.FIELDS (A\\B)])", False),
    (b"FETCH 1 (BODY.PEEK[HEADER.FIELDS (A]B)])", False),
    (b'FETCH 1 (BODY.PEEK[HEADER.FIELDS ("a]b")])', False),
    (b"FETCH 1 (BODY.PEEK[HEADER.FIELDS (A[B)])", False),
    (b"FETCH 1 (BODY.PEEK[HEADER.FIELDS (Sub:ject)])", False),
    (b'FETCH 1 (BODY.PEEK[HEADER.FIELDS ("Subject" Date)])', False),
    (b'FETCH 1 (BODY.PEEK[HEADER.FIELDS ("Sub ject" subject)])', False),
    (b'FETCH 1 (BODY.PEEK[HEADER.FIELDS ("")])', False),
    (b"FETCH 1 (BODY.PEEK[HEADER.FIELDS ( subject)])", False),
    (b"FETCH 1 (BODY.PEEK[HEADER.FIELDS (subject  date)])", False),
    (b"FETCH 1 (BODY.PEEK[HEADER.FIELDS (subject )])", False),
    (b"FETCH 1 (BODY.PEEK[HEADER.FIELDS ({7+}\r\nSubject)])", False),
    (b"FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT SUBJECT)])", False),
    (b"FETCH 1 (BODY.PEEK[HEADER.FIELDS ()])", False),
    (b"FETCH 1 (BODY.PEEK[HEADER.FIELDS])", False),
    (b"fetch 1 (body.peek[header.fields (subject)])", False),
    (b"FETCH 1 BODY.PEEK[HEADER.FIELDS.NOT (Received Subject)]", False),
    (b"FETCH 1 BODY.PEEK[HEADER.FIELDS (SUBJECT)]<0.5>", False),
    # partials and sections
    (b"FETCH 1 BODY.PEEK[]<0.0>", False),
    (b"FETCH 1 BODY.PEEK[]<0.1>", False),
    (b"FETCH 1 BODY.PEEK[]<4294967295.10>", False),
    (b"FETCH 1 BODY.PEEK[]<10.4294967295>", False),
    (b"FETCH 1 BODY.PEEK[]<00010.5>", False),
    (b"FETCH 1 (BODY.PEEK[]<1>)", False),
    (b"FETCH 1 (BODY.PEEK[]<1.>)", False),
    (b"FETCH 1 BODY.PEEK[1]<0.10>", False),
    (b"FETCH 1 BINARY.PEEK[1]<0.10>", False),
    (b"FETCH 1 BINARY.SIZE[1]", False),
    (b"FETCH 1 BINARY.SIZE[]", False),
    (b"FETCH 1 (BINARY.SIZE[1]<0.5>)", False),
    (b"FETCH 1 (BINARY.PEEK[1.MIME])", False),
    (b"FETCH 1 (BINARY.PEEK[TEXT])", False),
    (b"FETCH 1 (BODY.PEEK[1.MIME])", False),
    (b"FETCH 1 (BODY.PEEK[1.HEADER])", False),
    (b"FETCH 1 (BODY.PEEK[2.MIME])", False),
    (b"FETCH 1 (BODY.PEEK[1.2.3])", False),
    (b"FETCH 1 (BODY.PEEK[0])", False),
    (b"FETCH 1 (BODY.PEEK[1.0])", False),
    (b"FETCH 1 (BODY.PEEK[TEXT.MIME])", False),
    (b"FETCH 1 (BODY.PEEK[ ])", False),
    (b"FETCH 1 (BODY.PEEK[header])", False),
    # items twice, macros, modifiers
    (b"FETCH 1 (RFC822.SIZE RFC822.SIZE)", False),
    (b"FETCH 1 (UID UID)", False),
    (b"FETCH 1 (FLAGS UID FLAGS)", False),
    (b"FETCH 1 (BODY.PEEK[HEADER] BODY.PEEK[HEADER])", False),
    (b"FETCH 1 ALL FAST", False),
    (b"FETCH 1 (ALL)", False),
    (b"FETCH 1 all", False),
    (b"FETCH 1 (FAST FLAGS)", False),
    (b"FETCH 1 (BODYSTRUCTURE BODY)", False),
    (b"FETCH 1 (MODSEQ)", False),
    (b"FETCH 1 (ENVELOPE) (CHANGEDSINCE 1)", False),
    (b"UID FETCH 1:* (UID) (CHANGEDSINCE 0)", False),
    (b"FETCH 1 (X-GM-MSGID)", False),
    (b"FETCH 1 (PREVIEW)", False),
    (b"FETCH 1 (EMAILID THREADID)", False),
    (b"FETCH $ (UID)", False),
    # sets
    (b"FETCH *:1 (UID)", False),
    (b"FETCH 2:1 (UID)", False),
    (b"FETCH 1,1,1 (UID)", False),
    (b"FETCH 1:2,2:3 (UID)", False),
    (b"FETCH 0 (UID)", False),
    (b"FETCH 1:0 (UID)", False),
    (b"FETCH 99999 (UID)", False),
    (b"UID FETCH 0 (UID)", False),
    (b"UID FETCH 0:1 (UID)", False),
    (b"UID FETCH *:* (UID)", False),
    # spaces and brackets where none belong: two before the command
    # name, or after UID, are Dovecot's BAD (the parser once read them as one)
    (b" FETCH 1 (UID)", False),
    (b" UID FETCH 1 (UID)", False),
    (b"UID  FETCH 1 (UID)", False),
    (b" SEARCH ALL", False),
    (b" LOGOUT", False),
    (b" CAPABILITY", False),
    # literal8 outside APPEND: Dovecot's BAD, then its bytes read as a line
    (b"SEARCH SUBJECT ~{3+}\r\nabc", False),
    (b"NOOP", False),
    (b"SEARCH CHARSET ~{5+}\r\nUTF-8 ALL", False),
    (b"NOOP", False),
    (b"FETCH 1 ( UID)", False),
    (b"FETCH 1  (UID)", False),
    (b"FETCH 1 (UID) ", False),
    (b"FETCH 1 (UID", False),
    (b"FETCH 1 UID)", False),
    (b"FETCH 1 ()", False),
    (b"FETCH 1", False),
    (b"FETCH  1 UID", False),
    # SEARCH at its limits
    (b"SEARCH 1:*", False),
    (b"SEARCH *", False),
    (b"SEARCH 0", False),
    (b"SEARCH UID 0", False),
    (b"SEARCH UID *", False),
    (b"SEARCH LARGER 4294967295", False),
    (b"SEARCH LARGER 4294967296", False),
    (b"SEARCH SMALLER 0", False),
    (b"SEARCH SINCE 1-Jan-1970", False),
    (b"SEARCH SINCE 01-JAN-2020", False),
    (b"SEARCH SINCE 1-jan-2020", False),
    (b'SEARCH SINCE "1-Jan-2020"', False),
    (b"SEARCH SINCE 1-Jan-20", False),
    (b"SEARCH SENTBEFORE 31-Dec-9999", False),
    (b"SEARCH ON 29-Feb-2021", False),
    (b'SEARCH HEADER "" ""', False),
    (b'SEARCH HEADER Subject ""', False),
    (b'SEARCH SUBJECT ""', False),
    (b'SEARCH BCC ""', False),
    (b'SEARCH FROM "@"', False),
    (b"SEARCH NOT NOT ALL", False),
    (b"SEARCH OR ALL", False),
    (b"SEARCH ()", False),
    (b"SEARCH (ALL", False),
    (b"SEARCH ALL)", False),
    (b"SEARCH RETURN () ALL", False),
    (b"SEARCH RETURN (MIN MAX) ALL", False),
    (b"SEARCH RETURN (COUNT) NOT ALL", False),
    (b"SEARCH RETURN (MIN) NOT ALL", False),
    (b"SEARCH RETURN (XYZ) ALL", False),
    (b"UID SEARCH RETURN (ALL) UID 1:*", False),
    (b"SEARCH CHARSET utf-8 ALL", False),
    (b"SEARCH CHARSET ISO-8859-1 SUBJECT \"a\"", False),
    (b"SEARCH KEYWORD \\Seen", False),
    (b"SEARCH UNKEYWORD nothing", False),
    (b"SEARCH RECENT OLD", False),
    (b"SEARCH $", False),
]

# On connections that enabled nothing: RFC 7162's CONDSTORE-enabling
# commands that get BAD, which Dovecot answers before it enables
# CONDSTORE (a SELECT's QRESYNC before ENABLE QRESYNC, a FETCH's set
# past the last message), so that the STOREs' answers carry no MODSEQ and
# a SELECT's no HIGHESTMODSEQ; once taken for enabled, the proxy's sync
# behind the next SELECT asked for MODSEQs and enabled it upstream. A
# FETCH whose MODSEQ comes before an unknown item gets BAD after Dovecot
# enabled CONDSTORE (its untagged HIGHESTMODSEQ says so): from then on the
# store answers MODSEQ.
BAD_ENABLERS = [
    (b"SELECT INBOX (QRESYNC (1 1))", False),
    (b"SELECT INBOX", False),
    (b"STORE 4 +FLAGS (\\Draft)", False),
    (b"FETCH 4294967295 (MODSEQ)", False),
    (b"SELECT INBOX", False),
    (b"STORE 4 -FLAGS (\\Draft)", False),
    (b"FETCH 1:4 (FLAGS)", True),
    # the same through a literal: sent upstream as its line came
    (b"FETCH 4294967295 (MODSEQ BODY.PEEK[HEADER.FIELDS ({7}\r\nSubject)])", False),
    (b"SELECT INBOX", False),
    (b"STORE 4 +FLAGS (\\Draft)", False),
    # a SELECT that would enable it itself, refused: Dovecot leaves no
    # mailbox selected, and the sync's MODSEQ commands behind it fail
    (b"SELECT INBOX (CONDSTORE QRESYNC (1 1))", False),
    (b"SELECT INBOX", False),
    (b"STORE 4 -FLAGS (\\Draft)", False),
    (b"FETCH 1 (MODSEQ BOGUS)", False),
    (b"SELECT INBOX", False),
    (b"FETCH 1:4 (FLAGS MODSEQ)", True),
    (b"STORE 4 +FLAGS (\\Draft)", False),
    (b"STORE 4 -FLAGS (\\Draft)", False),
]

# After ENABLE CONDSTORE and a new SELECT, on flags the commands before
# changed: a MODSEQ key's answer carries the highest MODSEQ of the
# messages it returns, which for RETURN (MIN), (MAX) or (MIN MAX) are
# those one or two alone (it once was every message found).
CONDSTORE_SETUP = [b"ENABLE CONDSTORE", b"SELECT INBOX", b"STORE 5 +FLAGS (\\Flagged)", b"STORE 2 +FLAGS (\\Answered)",
                   b"STORE 9 +FLAGS (\\Answered)", b"STORE 3 +FLAGS (\\Answered)"]
CONDSTORE_COMMANDS = [
    (b"FETCH 1:10 (MODSEQ)", True),
    (b"SEARCH RETURN (MIN) MODSEQ 1", True),
    (b"SEARCH RETURN (MAX) MODSEQ 1", True),
    (b"SEARCH RETURN (MIN MAX) MODSEQ 1", True),
    (b"SEARCH RETURN (MIN) ANSWERED MODSEQ 1", True),
    (b"SEARCH RETURN (MAX) ANSWERED MODSEQ 1", True),
    (b"SEARCH RETURN (MIN MAX) 2:9 MODSEQ 1", True),
    (b"UID SEARCH RETURN (MIN) 3:200 MODSEQ 1", True),
    (b"SEARCH RETURN (COUNT) MODSEQ 1", True),
    (b"SEARCH RETURN (MIN COUNT) MODSEQ 1", True),
    (b"SEARCH RETURN (MIN MAX COUNT) 2:9 MODSEQ 1", True),
    (b"SEARCH RETURN (MIN) NOT ALL MODSEQ 1", True),
    (b"SEARCH RETURN () MODSEQ 1", False),
    (b"SEARCH MODSEQ 4", True),
    (b"SEARCH MODSEQ 7", True),
    (b"FETCH 1:10 (FLAGS) (CHANGEDSINCE 3)", False),
    (b"FETCH 1:5 (FLAGS) (CHANGEDSINCE 18446744073709551615)", False),
    (b"FETCH 1:5 (FLAGS) (CHANGEDSINCE 18446744073709551616)", False),
    (b"FETCH 1:5 (FLAGS) (CHANGEDSINCE 1 CHANGEDSINCE 2)", False),
    (b"STORE 7 (UNCHANGEDSINCE 1) +FLAGS (\\Answered)", False),
]


class Conn(Raw):
    def __init__(self, port, user, password):
        super().__init__(port, greeting=True)
        self.count = 0
        self.exchange(b"LOGIN " + quote_bytes(user) + b" " + quote_bytes(password))

    def exchange(self, text):
        """Sends one command; its responses as bytes, timings stripped;
        a closed connection as one response of its own."""
        self.count += 1
        tag = b"t%d" % self.count
        self.send(tag + b" " + text + b"\r\n")
        responses = []
        try:
            while True:
                response = self.response()
                responses.append(TIMINGS.sub(b"", response))
                if response.startswith(tag + b" "):
                    return responses
        except (EOFError, OSError) as e:
            return responses + [b"<closed: %s>" % str(e).encode()[:100]]


def run(daemon, direct, proxied, commands):
    """Sends each (command, must be local) to both sides. Returns the
    (command, direct's last responses, proxied's) that differ, the
    commands the store should have answered and did not, and how many it
    answered; stops at a closed connection."""
    differ, local_missing, local = [], [], 0
    for command, must_be_local in commands:
        before = daemon.settled_count(LOCAL)
        want, got = direct.exchange(command), proxied.exchange(command)
        answered_here = daemon.settled_count(LOCAL) > before
        local += answered_here
        if want != got:
            differ.append((command, want[-3:], got[-3:]))
        if must_be_local and not answered_here:
            local_missing.append(command)
        if got and got[-1].startswith(b"<closed"):
            break
    return differ, local_missing, local


def main():
    cache = proxyfixture.scratch_dir("imapcached-odd.")
    daemon = Daemon(upstream_dovecot("none"), log_level="debug",
                    extra='cache = { dir = "%s"; prefetch = "full"; body_budget = 100000000; };\n' % cache)
    try:
        direct, proxied = Conn(PORT, USER, PASS), Conn(daemon.port, USER3, PASS3)
        for side in (direct, proxied):
            side.exchange(b"SELECT INBOX")
        check("prefetch filled the store", daemon.wait_log(DONE) is not None)
        differ, local_missing, local = run(daemon, direct, proxied, COMMANDS)
        check("every odd command got Dovecot's answer, byte for byte (%d commands)" % len(COMMANDS), not differ,
              differ[:3])
        check("the proxied connection lived through them all", not any(
            d[2] and d[2][-1].startswith(b"<closed") for d in differ), differ[-1:] if differ else "")
        check("the store answered what it holds: the largest UID, odd header names (%d answered)" % local,
              not local_missing, local_missing)
        plain = Conn(PORT, USER, PASS), Conn(daemon.port, USER3, PASS3)
        differ, local_missing, local = run(daemon, plain[0], plain[1], BAD_ENABLERS)
        check("CONDSTORE-enabling commands that got BAD enabled nothing through imapcached either (%d commands)"
              % len(BAD_ENABLERS), not differ, differ[:3])
        check("the store answered FLAGS, and MODSEQ once Dovecot enabled CONDSTORE (%d answered)" % local,
              not local_missing, local_missing)
        for side in plain:
            side.close()
        differ, _, _ = run(daemon, direct, proxied, [(c, False) for c in CONDSTORE_SETUP])
        check("CONDSTORE enabled and flags changed alike on both sides", not differ, differ[:3])
        differ, local_missing, local = run(daemon, direct, proxied, CONDSTORE_COMMANDS)
        check("with CONDSTORE: MODSEQ searches and CHANGEDSINCE got Dovecot's answers (%d commands)"
              % len(CONDSTORE_COMMANDS), not differ, differ[:3])
        check("with CONDSTORE: the store answered the MODSEQ searches (%d answered)" % local, not local_missing,
              local_missing)
        direct.close()
        proxied.close()
    finally:
        status = daemon.stop()
    check("the daemon exits 0 at SIGTERM", status == 0, status)
    return summary()


if __name__ == "__main__":
    raise SystemExit(main())
