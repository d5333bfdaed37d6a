#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The steps before a FETCH is answered from the cache (issue 11 item 6):
fetching first what a few of its messages lack, and setting \\Seen.

Partly cached: when up to half of a FETCH's messages lack what it asks
for, imapcached fetches just that on its own tag (by sequence number,
with .PEEK), stores it, and answers the whole FETCH from the
store; more than that, and the FETCH goes upstream as it is.

A non-PEEK body fetch on a read-write mailbox sets \\Seen. imapcached
answers it from the store only after the upstream has set \\Seen itself:
it sends STORE +FLAGS (\\Seen) on its own tag, waits for the OK, then
answers with FLAGS where \\Seen changed (and, under CONDSTORE, the new
MODSEQ in lines of their own, as Dovecot writes them). After EXAMINE
nothing is stored upstream.

Two accounts get the same mailbox of the same messages: testuser straight
to Dovecot, mirroruser through imapcached, which reaches Dovecot through a
relay that records its commands. Every command goes to both, and the
answers must be byte for byte the same (Dovecot's timings stripped). The
relay proves the answers local: no body FETCH goes upstream after the
cache was filled, and the \\Seen STOREs that did are the proxy's own.

Spliced (issue 11 item 7): an item the store can't vouch for for a
message (BINARY.SIZE, PREVIEW, a derived item of a message our MIME
library reads otherwise) no longer sends the whole FETCH upstream: the
proxy fetches only those (message, item) pairs on its own tag, in PEEK
forms, and writes the whole answer here with their values in place."""
import re

from checks import check, summary
import proxyfixture
from proxyfixture import ENV, PASS, PASS3, PORT, USER, USER3, Daemon, Relay, Session

MAILBOX = "seen-step"
DATE = b'"05-Mar-2024 10:11:12 +0100"'
MESSAGES = [
    b"From: a@example.org\r\nSubject: one\r\n\r\nfirst body\r\n",
    b"From: b@example.org\r\nSubject: two\r\nContent-Type: multipart/mixed; boundary=\"x\"\r\n\r\n"
    b"--x\r\nContent-Type: text/plain\r\n\r\npart one\r\n--x\r\nContent-Type: text/plain\r\n\r\npart two\r\n--x--\r\n",
    b"From: c@example.org\r\nSubject: three\r\n\r\nthird body\r\n",
    b"From: d@example.org\r\nSubject: four\r\n\r\nfourth body, a little longer\r\n",
]
# (command, modes it runs in): every one sets \Seen on some message that lacks it
FETCHES = [
    ("FETCH 2 (BODY[TEXT])", None),
    ("FETCH 1:3 (UID RFC822.SIZE BODY[1])", None),
    ("UID FETCH 2:4 (BODY[] FLAGS)", None),
    ("FETCH 2 (RFC822.HEADER)", None),
    ("FETCH 2,4 (BODY[TEXT] BODY.PEEK[TEXT] INTERNALDATE)", None),
    ("FETCH 1:4 (MODSEQ BODY[1])", ("condstore", "qresync")),
    ("UID FETCH 1:* (RFC822.TEXT UID MODSEQ)", ("condstore", "qresync")),
    ("FETCH 3 (BINARY[1])", None),
    ("FETCH 1:4 (RFC822)", None),
]
ENABLE = {"none": None, "condstore": "ENABLE CONDSTORE", "qresync": "ENABLE QRESYNC"}


Side = Session  # one logged-in connection of the test
UIDVALIDITY = re.compile(rb"\[UIDVALIDITY \d+\]|(?<=\[APPENDUID )\d+")


def both(direct, proxied, command, name=None, literal=None):
    """Sends command to both; checks the answers are the same bytes (but
    UIDVALIDITY: each account made its mailbox in a second of its own)."""
    want = [UIDVALIDITY.sub(b"<UIDVALIDITY>", r) for r in direct.exchange(command, literal)]
    got = [UIDVALIDITY.sub(b"<UIDVALIDITY>", r) for r in proxied.exchange(command, literal)]
    if name is not None:
        check(name, got == want, "\n  got  %r\n  want %r" % (got, want))
    return got


def make_mailbox(port):
    """The same new mailbox of MESSAGES in both accounts."""
    direct, proxied = Side(PORT, USER, PASS), Side(port, USER3, PASS3)
    for side in (direct, proxied):
        side.exchange("DELETE %s" % MAILBOX)
        side.exchange("CREATE %s" % MAILBOX)
        for message in MESSAGES:
            ok = side.exchange("APPEND %s () %s" % (MAILBOX, DATE.decode()), literal=message)[-1]
            check("APPEND to %s" % MAILBOX, b" OK " in ok, ok)
        side.close()


def body_fetches(relay, since):
    """The proxy's upstream FETCH commands that ask for a body, since the
    relay's command number since; and its STOREs of \\Seen."""
    lines = [c.line for c in relay.recorded()[since:]]
    fetches = [line for line in lines if re.search(r"FETCH .*(BODY|RFC822|BINARY)", line, re.I)]
    stores = [line for line in lines if re.search(r" STORE [0-9:,*]+ \+FLAGS \(\\Seen\)$", line, re.I)]
    return fetches, stores


def run_mode(daemon, relay, mode):
    direct, proxied = Side(PORT, USER, PASS), Side(daemon.port, USER3, PASS3)
    if ENABLE[mode]:
        both(direct, proxied, ENABLE[mode], "%s: %s" % (mode, ENABLE[mode]))
    both(direct, proxied, "SELECT %s" % MAILBOX, "%s: SELECT" % mode)
    # the cache is filled through the proxy: every message whole, its structure
    both(direct, proxied, "FETCH 1:* (BODY.PEEK[] BODYSTRUCTURE INTERNALDATE RFC822.SIZE)",
         "%s: the fill" % mode)
    for command, modes in FETCHES:
        if modes is not None and mode not in modes:
            continue
        both(direct, proxied, "STORE 1:* -FLAGS (\\Seen)")  # not .SILENT: the view learns the flags
        both(direct, proxied, "STORE 1 +FLAGS (\\Seen)")  # one seen, the rest not
        since = len(relay.recorded())
        both(direct, proxied, command, "%s: %s is Dovecot's answer" % (mode, command))
        fetches, stores = body_fetches(relay, since)
        check("%s: %s was answered from the cache" % (mode, command), not fetches, fetches)
        setting = "RFC822.HEADER" not in command
        check("%s: %s: \\Seen %s upstream first" % (mode, command, "set" if setting else "not set"),
              len(stores) == (1 if setting else 0), stores)
        both(direct, proxied, "FETCH 1:* (FLAGS)", "%s: the flags after %s" % (mode, command))
    # EXAMINE: nothing is stored; the answer has no FLAGS
    both(direct, proxied, "STORE 1:* -FLAGS (\\Seen)")  # not .SILENT: the view learns the flags
    both(direct, proxied, "EXAMINE %s" % MAILBOX, "%s: EXAMINE" % mode)
    since = len(relay.recorded())
    both(direct, proxied, "FETCH 1:2 (BODY[TEXT])", "%s: FETCH after EXAMINE is Dovecot's answer" % mode)
    fetches, stores = body_fetches(relay, since)
    check("%s: after EXAMINE, answered from the cache with no STORE" % mode, not fetches and not stores,
          (fetches, stores))
    both(direct, proxied, "FETCH 1:* (FLAGS)", "%s: the flags after EXAMINE" % mode)
    direct.close()
    proxied.close()


def run_stale_seen(daemon, relay):
    """Another client takes \\Seen away; this client's view still has it
    (no command of its own went upstream since). A non-PEEK FETCH must still
    set \\Seen upstream (RFC 3501 6.4.5), and show FLAGS only because the
    upstream changed it."""
    proxied = Side(daemon.port, USER3, PASS3)
    other = Side(PORT, USER3, PASS3)
    proxied.exchange("SELECT %s" % MAILBOX)
    proxied.exchange("FETCH 1:2 (BODY.PEEK[] BODYSTRUCTURE)")
    proxied.exchange("STORE 1:2 +FLAGS (\\Seen)")
    other.exchange("SELECT %s" % MAILBOX)
    other.exchange("STORE 1 -FLAGS.SILENT (\\Seen)")
    since = len(relay.recorded())
    got = proxied.exchange("FETCH 1:2 (BODY[TEXT])")
    fetches, stores = body_fetches(relay, since)
    check("stale \\Seen: answered from the cache after a STORE of both messages",
          not fetches and len(stores) == 1 and re.search(r" STORE 1:2 ", stores[0]) is not None, (fetches, stores))
    lines = [r for r in got if r.startswith(b"* ")]
    check("stale \\Seen: FLAGS in the line only for the message whose \\Seen the upstream set, "
          "and Dovecot's report of the other client's change after the lines",
          len(lines) == 3 and b"FLAGS (\\Seen" in lines[0] and b"FLAGS" not in lines[1] and
          lines[2].startswith(b"* 1 FETCH (FLAGS (\\Seen"), got)
    flags = other.exchange("FETCH 1 (FLAGS)")
    check("stale \\Seen: the upstream has \\Seen again", any(b"\\Seen" in r for r in flags[:-1]), flags)
    # MODSEQ the view does not know (no CONDSTORE at SELECT): fetched, not the whole FETCH upstream
    proxied.exchange("ENABLE CONDSTORE")
    since = len(relay.recorded())
    got = proxied.exchange("FETCH 1:2 (MODSEQ BODY.PEEK[HEADER])")
    own = own_fetches(relay, since)
    forwarded = [c.line for c in relay.recorded()[since:] if re.match(r"s\d+ ", c.line)]
    check("unknown MODSEQ: only MODSEQ was fetched, then answered here",
          not forwarded and len(own) == 1 and re.search(r"FETCH 1:2 \(UID RFC822\.SIZE MODSEQ\)$", own[0]),
          (own, forwarded))
    check("unknown MODSEQ: the answer has each MODSEQ",
          len([r for r in got if re.match(rb"\* \d FETCH \(MODSEQ \(\d+\) BODY\[HEADER\]", r)]) == 2, got)
    other.close()
    proxied.close()


def run_outside_changes(daemon, relay, mode):
    """Another client changes flags (the twins alike) just before a
    non-PEEK FETCH: the answer shows FLAGS in the line only where the
    fetch set \\Seen, and Dovecot's own report of the other client's
    change after the lines (with MODSEQ, and the UID under QRESYNC)."""
    direct, proxied = Side(PORT, USER, PASS), Side(daemon.port, USER3, PASS3)
    other_direct, other_proxied = Side(PORT, USER, PASS), Side(PORT, USER3, PASS3)
    if ENABLE[mode]:
        both(direct, proxied, ENABLE[mode])
    both(direct, proxied, "SELECT %s" % MAILBOX)
    both(direct, proxied, "FETCH 1:* (BODY.PEEK[] BODYSTRUCTURE INTERNALDATE RFC822.SIZE)")
    for other in (other_direct, other_proxied):
        other.exchange("SELECT %s" % MAILBOX)

    def step(command, change):
        for other in (other_direct, other_proxied):
            other.exchange(change)
        since = len(relay.recorded())
        both(direct, proxied, command, "%s: %s after another client's %s" % (mode, command, change))
        fetches, _ = body_fetches(relay, since)
        check("%s: %s after %s answered from the cache" % (mode, command, change), not fetches, fetches)
        both(direct, proxied, "NOOP", "%s: NOOP after it" % mode)

    both(direct, proxied, "STORE 1:* -FLAGS (\\Seen)")
    step("FETCH 1:3 (BODY[TEXT])", "STORE 1 +FLAGS.SILENT (\\Draft)")
    step("FETCH 1:3 (BODY[TEXT])", "STORE 1:3 -FLAGS.SILENT (\\Seen)")
    both(direct, proxied, "STORE 1:3 +FLAGS (\\Seen)")
    step("FETCH 1:3 (BODY[TEXT])", "STORE 2 +FLAGS.SILENT (\\Flagged)")
    for side in (direct, proxied, other_direct, other_proxied):
        side.close()


def run_vanished(daemon, relay):
    """UID FETCH with (CHANGEDSINCE m VANISHED), the client enabled
    QRESYNC: which UIDs went only the upstream knows, so the proxy asks
    it the same UID FETCH with (UID RFC822.SIZE) for items on its own tag,
    writes the "* VANISHED (EARLIER)" it got first, and the lines from
    the store after it; when the upstream named other messages than the
    view's MODSEQs would, or the client may not use VANISHED, the FETCH
    goes upstream as it is."""
    direct, proxied = Side(PORT, USER, PASS), Side(daemon.port, USER3, PASS3)
    other_direct, other_proxied = Side(PORT, USER, PASS), Side(PORT, USER3, PASS3)
    both(direct, proxied, "ENABLE QRESYNC", "vanished: ENABLE QRESYNC")
    selected = both(direct, proxied, "SELECT %s" % MAILBOX, "vanished: SELECT")
    modseq = int(re.search(rb"HIGHESTMODSEQ (\d+)", b"".join(selected)).group(1))
    both(direct, proxied, "FETCH 1:* (BODY.PEEK[] BODYSTRUCTURE ENVELOPE INTERNALDATE RFC822.SIZE)",
         "vanished: the fill")
    for other in (other_direct, other_proxied):
        other.exchange("SELECT %s" % MAILBOX)
        other.exchange("STORE 2 +FLAGS.SILENT (\\Flagged)")
        other.exchange("STORE 3 +FLAGS.SILENT (\\Deleted)")
        other.exchange("EXPUNGE")
    both(direct, proxied, "NOOP", "vanished: NOOP tells of the flag and the expunge")
    for command, local, first in (
            ("UID FETCH 1:* (FLAGS ENVELOPE) (CHANGEDSINCE %d VANISHED)" % modseq, True, b"* VANISHED (EARLIER) 3"),
            ("UID FETCH 1:2 (BODY.PEEK[TEXT] UID) (CHANGEDSINCE %d VANISHED)" % modseq, True, b"* 2 FETCH "),
            ("UID FETCH 3:4 (INTERNALDATE) (VANISHED CHANGEDSINCE %d)" % modseq, True, b"* VANISHED (EARLIER) 3"),
            ("UID FETCH 1:* (BODY[TEXT]) (CHANGEDSINCE %d VANISHED)" % modseq, True, b"* VANISHED (EARLIER) 3"),
            ("FETCH 1:2 (FLAGS) (CHANGEDSINCE %d VANISHED)" % modseq, False, None)):  # Dovecot's BAD
        since = len(relay.recorded())
        got = both(direct, proxied, command, "vanished: %s is Dovecot's answer" % command)
        forwarded = [c.line for c in relay.recorded()[since:] if re.match(r"s\d+ ", c.line)]
        own = own_fetches(relay, since)
        if first is not None:
            check("vanished: %s begins as Dovecot's does" % command, got and got[0].startswith(first), got)
        if local:
            check("vanished: %s was answered from the cache, after one own FETCH of the VANISHED" % command,
                  not forwarded and len(own) == 1 and re.search(r"UID FETCH \S+ \(UID RFC822\.SIZE\) "
                                                                r"\(CHANGEDSINCE %d VANISHED\)$" % modseq, own[0]),
                  (own, forwarded))
        else:
            check("vanished: %s went upstream as it is" % command, len(forwarded) == 1 and not own, (own, forwarded))
        both(direct, proxied, "NOOP", "vanished: NOOP after %s" % command)
    for side in (direct, proxied, other_direct, other_proxied):
        side.close()


def own_fetches(relay, since):
    """The proxy's own FETCH commands (tags not the test's) since command number since."""
    return [c.line for c in relay.recorded()[since:] if re.match(r"\S+ (UID )?FETCH ", c.line) and
            not re.match(r"s\d+ ", c.line)]


def run_partial(daemon, relay):
    """Partly cached FETCHes: only what lacks is fetched, then answered here."""
    direct, proxied = Side(PORT, USER, PASS), Side(daemon.port, USER3, PASS3)
    both(direct, proxied, "SELECT %s" % MAILBOX, "partial: SELECT")
    both(direct, proxied, "FETCH 1:3 (BODY.PEEK[] BODYSTRUCTURE ENVELOPE INTERNALDATE RFC822.SIZE)",
         "partial: messages 1 to 3 are filled")
    both(direct, proxied, "FETCH 4 (RFC822.SIZE)", "partial: message 4's size")
    for command, lacking in (("FETCH 1:4 (ENVELOPE BODY.PEEK[TEXT] UID)",
                              r"^\S+ FETCH 4 \(UID ENVELOPE BODYSTRUCTURE BODY\.PEEK\[HEADER\] BODY\.PEEK\[\]\)$"),
                             ("UID FETCH 1:* (INTERNALDATE BODY.PEEK[HEADER.FIELDS (SUBJECT)])",
                              r"^\S+ FETCH 4 \(UID INTERNALDATE\)$")):
        since = len(relay.recorded())
        both(direct, proxied, command, "partial: %s is Dovecot's answer" % command)
        forwarded = [c.line for c in relay.recorded()[since:] if re.match(r"s\d+ ", c.line)]
        own = own_fetches(relay, since)
        check("partial: %s was answered from the cache" % command, not forwarded, forwarded)
        check("partial: %s: only what lacked was fetched first" % command,
              not own if lacking is None else len(own) == 1 and re.search(lacking, own[0]) is not None, own)
    # a new message: it alone is fetched
    both(direct, proxied, "APPEND %s () %s {%d+}\r\n%s" % (MAILBOX, DATE.decode(), len(MESSAGES[0]),
                                                          MESSAGES[0].decode()), "partial: APPEND")
    both(direct, proxied, "UID FETCH 1:* (UID FLAGS)", "partial: the new message's UID")
    since = len(relay.recorded())
    both(direct, proxied, "FETCH 1:* (INTERNALDATE ENVELOPE)", "partial: FETCH 1:* after the APPEND is Dovecot's")
    own = own_fetches(relay, since)
    check("partial: only the new message was fetched first",
          len(own) == 1 and re.search(r"^\S+ FETCH 5 \(UID INTERNALDATE ENVELOPE\)$", own[0]) is not None, own)
    # most of a FETCH lacking: it goes upstream as it is
    since = len(relay.recorded())
    both(direct, proxied, "FETCH 3:5 (BODY)", "partial: FETCH 3:5 (BODY) is Dovecot's")
    forwarded = [c.line for c in relay.recorded()[since:] if re.match(r"s\d+ ", c.line)]
    check("partial: most of it lacking, it went upstream as it is",
          forwarded == ["s%d FETCH 3:5 (BODY)" % proxied.tag] and not own_fetches(relay, since), forwarded)
    direct.close()
    proxied.close()


# (command, the proxy's own FETCH it needs): cached items mixed with spliced ones
SPLICED = [
    ("FETCH 1:4 (UID BINARY.SIZE[1] BODY.PEEK[1] RFC822.SIZE ENVELOPE)", r"FETCH 1:4 \(UID BINARY\.SIZE\[1\]\)"),
    ("FETCH 2,4 (BINARY.SIZE[2] PREVIEW BODY.PEEK[TEXT]<2.5>)", r"FETCH 2,4 \(UID PREVIEW BINARY\.SIZE\[2\]\)"),
    # PREVIEW of 2 was kept from the one before: 3's alone
    ("UID FETCH 2:3 (FLAGS PREVIEW BODY.PEEK[HEADER] INTERNALDATE)", r"FETCH 3 \(UID PREVIEW\)"),
    # the store kept the PREVIEWs the upstream gave: answered here ("")
    ("UID FETCH 2:4 (PREVIEW ENVELOPE)", ""),
    ("FETCH 1:4 (PREVIEW)", r"FETCH 1 \(UID PREVIEW\)"),
    # sets \Seen and decodes upstream: as it is (Dovecot's BYE on a part it can't
    # decode comes after it set \Seen on the messages before, which the proxy could not)
    ("FETCH 2 (BODY[1] BINARY.SIZE[1])", None),
    ("STORE 2 +FLAGS (\\Seen)", None),  # not .SILENT: the view learns the flags
    ("FETCH 2 (BODY[1] BINARY.SIZE[1])", r"FETCH 2 \(UID BINARY\.SIZE\[1\]\)"),  # now seen: spliced
]


def run_splice(daemon, relay):
    """FETCHes mixing spliced items with cached ones: only the spliced pairs
    go upstream, the answer is Dovecot's byte for byte."""
    direct, proxied = Side(PORT, USER, PASS), Side(daemon.port, USER3, PASS3)
    both(direct, proxied, "SELECT %s" % MAILBOX, "splice: SELECT")
    both(direct, proxied, "FETCH 1:* (BODY.PEEK[] BODYSTRUCTURE ENVELOPE INTERNALDATE RFC822.SIZE)",
         "splice: the fill")
    for command, own_wanted in SPLICED:
        if command.startswith("STORE"):
            both(direct, proxied, command, "splice: %s" % command)
            continue
        since = len(relay.recorded())
        both(direct, proxied, command, "splice: %s is Dovecot's answer" % command)
        forwarded = [c.line for c in relay.recorded()[since:] if re.match(r"s\d+ ", c.line)]
        own = own_fetches(relay, since)
        if own_wanted is None:
            check("splice: %s: went upstream as it is" % command,
                  forwarded == ["s%d %s" % (proxied.tag, command)] and not own, (forwarded, own))
            continue
        check("splice: %s: nothing of it went upstream as it is" % command, not forwarded, forwarded)
        if own_wanted == "":
            check("splice: %s: answered from the cache alone" % command, not own, own)
            continue
        check("splice: %s: only the spliced pairs were fetched" % command,
              len(own) == 1 and re.search(r"^\S+ %s$" % own_wanted, own[0]) is not None, own)
    both(direct, proxied, "FETCH 1:* (FLAGS)", "splice: the flags after")
    # Dovecot reads "PREVIEW (...)" as PREVIEW's own modifiers (RFC 8970):
    # a BAD, and CONDSTORE stays off; the proxy must not answer it
    for mode in ("none", "condstore"):
        if mode == "condstore":
            both(direct, proxied, "ENABLE CONDSTORE")
        command = "FETCH 1:2 PREVIEW (CHANGEDSINCE 1)"
        got = both(direct, proxied, command, "splice: %s: %s is Dovecot's answer" % (mode, command))
        check("splice: %s: %s: Dovecot says BAD" % (mode, command), got and b" BAD " in got[-1], got)
        both(direct, proxied, "FETCH 1 (FLAGS)", "splice: %s: the flags after %s" % (mode, command))
    direct.close()
    proxied.close()


# Dovecot 2.3 keeps one message's whole BINARY stream after a BINARY.SIZE
# of it, and writes BINARY[] of that message as "~{n}" though nothing was
# decoded; reading another BINARY stream frees it. None of these messages
# has an encoded part.
BINARY_STREAM = [
    "FETCH 1 (BINARY.SIZE[])",
    "FETCH 1 (BINARY.PEEK[])",
    "FETCH 2 (BINARY.PEEK[1])",
    "FETCH 1 (BINARY.PEEK[])",
    "FETCH 3 (BINARY.SIZE[1])",
    "FETCH 4 (BINARY.PEEK[] UID)",
    "FETCH 3 (BINARY.PEEK[])",
    "FETCH 4 (BINARY.SIZE[])",
    "FETCH 3:4 (BINARY.PEEK[])",
]


def run_binary_stream(daemon, relay):
    """BINARY[] after BINARY.SIZE and other BINARY reads: Dovecot's bytes."""
    direct, proxied = Side(PORT, USER, PASS), Side(daemon.port, USER3, PASS3)
    both(direct, proxied, "SELECT %s" % MAILBOX, "binary stream: SELECT")
    both(direct, proxied, "FETCH 1:* (BODY.PEEK[] BODYSTRUCTURE ENVELOPE INTERNALDATE RFC822.SIZE)",
         "binary stream: the fill")
    for command in BINARY_STREAM:
        both(direct, proxied, command, "binary stream: %s is Dovecot's answer" % command)
    direct.close()
    proxied.close()


# A part whose base64 ends part-way: Dovecot writes the lines of the
# messages before it, that message's line up to the item it fails on
# ("UID n" when none), and ends the connection with BYE
BROKEN = (b"From: e@example.org\r\nSubject: broken\r\nMIME-Version: 1.0\r\n"
          b"Content-Type: multipart/mixed; boundary=xx\r\n\r\n--xx\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
          b"--xx\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
          b"QUJDRA\r\n--xx--\r\n")
CUT = [
    "FETCH 1:5 (BINARY.SIZE[] INTERNALDATE)",
    "FETCH 3:5 (UID BODY.PEEK[1] BINARY.SIZE[2] BODYSTRUCTURE)",
    "UID FETCH 4:5 (BINARY.SIZE[2])",
    "FETCH 2:5 (ENVELOPE BINARY.SIZE[1] PREVIEW)",
    # not PEEK, every message seen already (the STORE first tells the view)
    "STORE 1:* +FLAGS (\\Seen)|FETCH 3:5 (BODY[1] BINARY.SIZE[2] RFC822.SIZE)",
    # two own FETCHes (BODY[2] of 6 too: our library reads it otherwise),
    # the first one's message the one Dovecot fails on
    "FETCH 5:6 (BODY.PEEK[2] BINARY.SIZE[2])",
    # BINARY of messages our library reads otherwise, fetched alone; Dovecot
    # fails on message 7's (in its reading the base64 part is part 2)
    "FETCH 6:7 (BINARY.PEEK[2])",
    "FETCH 6:7 (BODY.PEEK[1] BINARY.PEEK[2] RFC822.SIZE)",
    "FETCH 6:7 (BINARY.PEEK[] BINARY.PEEK[2])",
]
# a message our library reads otherwise than Dovecot (an empty part): its
# derived items are spliced, the others' not
DISAGREEING = (b"From: mime@example.com\r\nSubject: empty part\r\nMIME-Version: 1.0\r\n"
               b"Content-Type: multipart/mixed; boundary=\"XX\"\r\n\r\npreamble\r\n"
               b"--XX\r\n--XX\r\nContent-Type: text/plain\r\n\r\nsecond\r\n--XX--\r\n")
# the same, with a base64 part that ends part-way: Dovecot's part 2, our 1
DISAGREEING_BROKEN = (b"From: mime@example.com\r\nSubject: empty part, broken\r\nMIME-Version: 1.0\r\n"
                      b"Content-Type: multipart/mixed; boundary=\"XX\"\r\n\r\npreamble\r\n--XX\r\n--XX\r\n"
                      b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                      b"QUJDRA\r\n--XX--\r\n")
BYE_TIME = re.compile(rb" \[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\]")


def until_close(side, command):
    """Sends command; its responses up to the tagged one or the end of
    the connection, Dovecot's time in a BYE cut."""
    side.tag += 1
    tag = b"s%d" % side.tag
    side.conn.send(tag + b" " + command.encode() + b"\r\n")
    responses = []
    while True:
        try:
            response = side.conn.response()
        except Exception:  # the peer closed: what came before is the answer
            return responses + [b"<closed>"]
        responses.append(BYE_TIME.sub(b"", response))
        if response.startswith(tag + b" "):
            return responses


def run_splice_cut(daemon, relay):
    """The upstream ends a splice step with BYE (a message it can't
    decode): the client gets what Dovecot writes before its BYE, also
    when the step was several own FETCHes and the failing one's message
    comes first."""
    for commands in CUT:
        *before, command = commands.split("|")
        make_mailbox(daemon.port)
        direct, proxied = Side(PORT, USER, PASS), Side(daemon.port, USER3, PASS3)
        for side in (direct, proxied):
            for message in (BROKEN, DISAGREEING, DISAGREEING_BROKEN):  # 5 to 7
                ok = side.exchange("APPEND %s (\\Seen) %s" % (MAILBOX, DATE.decode()), literal=message)[-1]
                check("cut: APPEND of the broken message and one read otherwise", b" OK " in ok, ok)
        both(direct, proxied, "SELECT %s" % MAILBOX, "cut: SELECT")
        both(direct, proxied, "FETCH 1:* (BODY.PEEK[] BODYSTRUCTURE ENVELOPE INTERNALDATE RFC822.SIZE)",
             "cut: the fill")
        for line in before:
            both(direct, proxied, line, "cut: %s" % line)
        since = len(relay.recorded())
        want, got = until_close(direct, command), until_close(proxied, command)
        check("cut: %s: the lines before Dovecot's BYE, and the BYE" % command, got == want,
              "\n  got  %r\n  want %r" % (got, want))
        check("cut: %s: Dovecot ended it with BYE" % command, len(want) >= 2 and want[-2].startswith(b"* BYE "),
              want[-2:])
        forwarded = [c.line for c in relay.recorded()[since:] if re.match(r"s\d+ ", c.line)]
        check("cut: %s: the FETCH itself did not go upstream" % command, not forwarded, forwarded)
        direct.close()
        proxied.close()


def main():
    relay = Relay()
    # no prefetch: what is stored is only what these commands stored
    daemon = Daemon(relay.upstream_entry(),
                    extra='cache = { dir = "%s"; prefetch = "off"; };\n' % proxyfixture.scratch_dir("imapcached-steps."))
    try:
        make_mailbox(daemon.port)
        for mode in ("none", "condstore", "qresync"):
            run_mode(daemon, relay, mode)
        make_mailbox(daemon.port)
        run_partial(daemon, relay)
        make_mailbox(daemon.port)
        run_splice(daemon, relay)
        run_splice_cut(daemon, relay)
        make_mailbox(daemon.port)
        run_binary_stream(daemon, relay)
        make_mailbox(daemon.port)
        run_vanished(daemon, relay)
        make_mailbox(daemon.port)
        run_stale_seen(daemon, relay)
        for mode in ("none", "condstore", "qresync"):
            make_mailbox(daemon.port)
            run_outside_changes(daemon, relay, mode)
    finally:
        if ENV.get("IMAPTEST_VERBOSE"):
            print("\n".join(l for l in daemon.log().splitlines() if "upstream:" in l or "Seen" in l))
        check("the daemon exited cleanly", daemon.stop() == 0)
        relay.close()
    return summary()


if __name__ == "__main__":
    raise SystemExit(main())
