#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The SELECT's sync in its CONDSTORE and QRESYNC forms (issue 11 item 4,
doc/cache.md): once the store holds a mailbox's HIGHESTMODSEQ, a client
that enabled QRESYNC gets a sync of "UID FETCH 1:* (FLAGS) (CHANGEDSINCE
m VANISHED)", one that enabled CONDSTORE "(CHANGEDSINCE m)" and "UID
SEARCH RETURN (ALL) ALL", one that enabled nothing one "UID SEARCH
RETURN (ALL) flag" per system flag after the map when the mailbox's
stored FLAGS hold no keyword (a keyword made since: the full form after
them), else the full "UID FETCH 1:* (FLAGS)"; the flags and MODSEQs of the messages not named come from
the store, so that FETCH (UID FLAGS MODSEQ) is answered from it byte for
byte as Dovecot answers it. A SELECT that contradicts the store (a new
UIDVALIDITY) gets the full form behind the CHANGEDSINCE one, and a
.SILENT STORE through the proxy leaves no stored flags behind it.

Two accounts get the same mailbox (testuser straight to Dovecot,
mirroruser through imapcached, which reaches Dovecot through a relay that
records its commands); every command goes to both, answers must be the
same bytes (Dovecot's timings stripped, UIDVALIDITY masked)."""
import os
import re
import shutil
import sqlite3
import subprocess
import time

from checks import check, summary
import proxyfixture
from proxyfixture import ENV, PASS, PASS3, PORT, USER, USER3, Daemon, Relay, Session

MAILBOX = "resync"
UIDVALIDITY = re.compile(rb"\[UIDVALIDITY \d+\]")
DATE = b'"05-Mar-2024 10:11:12 +0100"'
SYNC = re.compile(r"^(?!s\d+ )\S+ (UID FETCH 1:\* \(FLAGS( MODSEQ)?\).*|"
                  r"UID SEARCH RETURN \(ALL\) (ALL|ANSWERED|FLAGGED|DELETED|SEEN|DRAFT|KEYWORD \S+))$")
# a plain client's sync of a mailbox without keywords: the map, then one ESEARCH per system flag
FLAG_SEARCHES = ["UID SEARCH RETURN (ALL) " + key for key in ("ALL", "ANSWERED", "FLAGGED", "DELETED", "SEEN", "DRAFT")]
FULL = "UID FETCH 1:* (FLAGS)"
FULL_MODSEQ = "UID FETCH 1:* (FLAGS MODSEQ)"  # the full form for a client that enabled CONDSTORE


def message(n):
    return b"From: n%d@example.org\r\nSubject: message %d\r\n\r\nbody %d\r\n" % (n, n, n)


Side = Session  # one logged-in connection of the test


def both(direct, proxied, command, name=None):
    want = [UIDVALIDITY.sub(b"[UIDVALIDITY]", r) for r in direct.exchange(command)]
    got = [UIDVALIDITY.sub(b"[UIDVALIDITY]", r) for r in proxied.exchange(command)]
    if name is not None:
        check(name, got == want, "\n  got  %r\n  want %r" % (got, want))
    return got


def on_both_accounts(*commands, appends=0, first=1):
    """Commands straight to each account (another client), then APPENDs."""
    for user, password in ((USER, PASS), (USER3, PASS3)):
        side = Side(PORT, user, password)
        for command in commands:
            side.exchange(command)
        for n in range(first, first + appends):
            side.exchange("APPEND %s () %s" % (MAILBOX, DATE.decode()), literal=message(n))
        side.close(logout=True)


def session(daemon, relay, name, enable, select="SELECT %s" % MAILBOX, expect=None, then=()):
    """A session on both sides: enable, SELECT, FETCH of every message's
    UID, FLAGS (and MODSEQ); checks the proxy's sync (expect: a function of
    its lines) and that the FETCH was answered from the store."""
    direct, proxied = Side(PORT, USER, PASS), Side(daemon.port, USER3, PASS3)
    if enable:
        both(direct, proxied, enable, "%s: %s" % (name, enable))
    since = len(relay.recorded())
    both(direct, proxied, select, "%s: %s is Dovecot's answer" % (name, select))
    syncs = [c.line.split(" ", 1)[1] for c in relay.recorded()[since:] if SYNC.match(c.line)]
    if expect is not None:
        check("%s: the sync was %s" % (name, expect.__doc__), expect(syncs), syncs)
    both(direct, proxied, "FETCH 1:* (RFC822.SIZE)")  # every message gets a row in the store
    items = "UID FLAGS MODSEQ" if enable or "CONDSTORE" in select else "UID FLAGS"
    since = len(relay.recorded())
    both(direct, proxied, "FETCH 1:* (%s)" % items, "%s: FETCH 1:* (%s) is Dovecot's answer" % (name, items))
    forwarded = [c.line for c in relay.recorded()[since:] if re.match(r"s\d+ ", c.line)]
    check("%s: FETCH 1:* (%s) was answered from the store" % (name, items), not forwarded, forwarded)
    for command in then:
        both(direct, proxied, command, "%s: %s is Dovecot's answer" % (name, command))
    direct.close(logout=True)
    proxied.close(logout=True)
    time.sleep(0.2)  # the store's flag rows go a chunk per event-loop turn


def swap_flag_search_replies(relay, number):
    """The relay's reply filter: holds the tagged reply of the sync's
    ANSWERED search until the one of its FLAGGED search has passed, as a
    server may answer pipelined commands out of order (RFC 3501 5.5;
    Dovecot runs searches side by side). relay.swapped counts the swaps."""
    state = {"buf": b"", "held": None}

    def tags():
        found = {}
        for c in relay.recorded():
            m = re.match(r"(\S+) UID SEARCH RETURN \(ALL\) (ANSWERED|FLAGGED)$", c.line)
            if c.connection == number and m:
                found[m.group(2)] = m.group(1).encode() + b" "
        return found

    def feed(data):
        state["buf"] += data
        out = b""
        while b"\r\n" in state["buf"]:
            line, state["buf"] = state["buf"].split(b"\r\n", 1)
            line += b"\r\n"
            sent = tags()
            if state["held"] is None and len(sent) == 2 and line.startswith(sent["ANSWERED"]):
                state["held"] = line
                continue
            out += line
            if state["held"] is not None and line.startswith(sent.get("FLAGGED", b"\0")):
                out += state["held"]
                state["held"] = None
                relay.swapped += 1
        return out
    return feed


def out_of_order():
    """A plain client's SEARCH form whose searches the upstream answers out
    of order: the proxy takes each reply as its own, and the view it loads
    answers FETCH as Dovecot does."""
    relay = Relay(reply_filter=swap_flag_search_replies)
    relay.swapped = 0
    store_dir = proxyfixture.scratch_dir("imapcached-resync-order.")
    daemon = Daemon(relay.upstream_entry(), extra='cache = { dir = "%s"; prefetch = "off"; };\n' % store_dir)
    try:
        on_both_accounts("DELETE %s" % MAILBOX, "CREATE %s" % MAILBOX, appends=4, first=20)
        on_both_accounts("SELECT %s" % MAILBOX, "STORE 2 +FLAGS.SILENT (\\Answered)",
                         "STORE 3 +FLAGS.SILENT (\\Flagged \\Seen)")
        session(daemon, relay, "out of order: a first plain session", None, expect=full)
        session(daemon, relay, "out of order: the searches answered out of order", None, expect=searched)
        check("out of order: the relay answered FLAGGED before ANSWERED", relay.swapped == 1, relay.swapped)
    finally:
        check("out of order: the daemon exited cleanly", daemon.stop() == 0)
        relay.close()


def enabled_by_upstream(extension):
    """A reply filter: the upstream's OK to a client's "ENABLE extension"
    gets "* ENABLED extension" before it, as a server that has it answers
    (Dovecot 2.3 has none of IMAP4rev2, UTF8=ACCEPT or UIDONLY; the ENABLE
    and everything else pass as Dovecot answers them)."""
    def make(relay, number):
        state = {"buf": b""}

        def enabling(tag):
            return any(c.connection == number and c.line == "%s ENABLE %s" % (tag, extension)
                       for c in relay.recorded())

        def feed(data):
            state["buf"] += data
            out = b""
            while b"\r\n" in state["buf"]:
                line, state["buf"] = state["buf"].split(b"\r\n", 1)
                m = re.match(rb"(\S+) OK ", line)
                if m is not None and enabling(m.group(1).decode()):
                    out += b"* ENABLED %s\r\n" % extension.encode()
                out += line + b"\r\n"
            return out
        return feed
    return make


def forwarded_since(relay, since):
    """The client commands (tags s<n>) the relay carried since."""
    return [c.line for c in relay.recorded()[since:] if re.match(r"s\d+ ", c.line)]


def enabled_other():
    """A client that enabled an extension the store's answers do not
    follow (IMAP4rev2, UTF8=ACCEPT, UIDONLY change SEARCH's form,
    \\Recent, ENVELOPE's strings, sequence numbers) got answers from the
    store in the form it had not asked for. Once the upstream says ENABLED
    for one, the session is a plain proxy: FETCH and SEARCH go upstream,
    selected or not, and no sync goes behind its next SELECT."""
    relay = Relay(reply_filter=enabled_by_upstream("UTF8=ACCEPT"))
    store_dir = proxyfixture.scratch_dir("imapcached-resync-enabled.")
    daemon = Daemon(relay.upstream_entry(), extra='cache = { dir = "%s"; prefetch = "off"; };\n' % store_dir)
    try:
        on_both_accounts("DELETE %s" % MAILBOX, "CREATE %s" % MAILBOX, appends=3, first=30)
        session(daemon, relay, "enabled other: a plain session fills the store", None)
        direct, proxied = Side(PORT, USER, PASS), Side(daemon.port, USER3, PASS3)
        both(direct, proxied, "SELECT %s" % MAILBOX)
        since = len(relay.recorded())
        both(direct, proxied, "FETCH 1:* (UID FLAGS)")
        check("enabled other: before the ENABLE, FETCH is answered from the store",
              not forwarded_since(relay, since), forwarded_since(relay, since))
        enabled = proxied.exchange("ENABLE UTF8=ACCEPT")
        check("enabled other: the upstream says ENABLED UTF8=ACCEPT", b"* ENABLED UTF8=ACCEPT\r\n" in enabled, enabled)
        direct.exchange("ENABLE UTF8=ACCEPT")
        for command in ("FETCH 1:* (UID FLAGS)", "UID SEARCH ALL"):
            since = len(relay.recorded())
            both(direct, proxied, command, "enabled other, selected: %s is Dovecot's answer" % command)
            check("enabled other, selected: %s goes upstream" % command, forwarded_since(relay, since), command)
        direct.close(logout=True)
        proxied.close(logout=True)
        check("enabled other: the log says the session forwards only",
              daemon.wait_log(r"session \d+: the client enabled UTF8=ACCEPT, which the cache's answers do not "
                              r"follow: forwarding only") is not None)

        direct, proxied = Side(PORT, USER, PASS), Side(daemon.port, USER3, PASS3)
        proxied.exchange("ENABLE UTF8=ACCEPT")
        direct.exchange("ENABLE UTF8=ACCEPT")
        since = len(relay.recorded())
        both(direct, proxied, "SELECT %s" % MAILBOX, "enabled other, then SELECT: Dovecot's answer")
        syncs = [c.line for c in relay.recorded()[since:] if SYNC.match(c.line)]
        check("enabled other, then SELECT: no sync behind it", not syncs, syncs)
        since = len(relay.recorded())
        both(direct, proxied, "FETCH 1:* (UID FLAGS)", "enabled other, then SELECT: FETCH is Dovecot's answer")
        check("enabled other, then SELECT: FETCH goes upstream", forwarded_since(relay, since))
        direct.close(logout=True)
        proxied.close(logout=True)
    finally:
        check("enabled other: the daemon exited cleanly", daemon.stop() == 0)
        relay.close()


KEYWORD_MAILBOX = "kwslow"
KEYWORD_MESSAGES = 1000  # their full form's FETCH, 40 KB, is a sample of the link (link.h)


def slow_link_keywords():
    """A plain client's SELECT of a mailbox with keywords over a slow link
    (20 ms each way, 100 KB/s): the first SELECT's full form measures the
    link, after which every message's FLAGS (40 KB, 400 ms) cost more than
    a round trip, so the keywords the SELECT's FLAGS name are searched in
    a flight of their own after the system flags' (keywords made since
    included), and FETCH FLAGS is answered from the store as Dovecot does."""
    relay = Relay(delay=0.02, rate=100000)
    store_dir = proxyfixture.scratch_dir("imapcached-resync-keywords.")
    daemon = Daemon(relay.upstream_entry(), extra='cache = { dir = "%s"; prefetch = "off"; };\n' % store_dir)
    select = "SELECT %s" % KEYWORD_MAILBOX
    try:
        for user, password in ((USER, PASS), (USER3, PASS3)):
            side = Side(PORT, user, password)
            side.exchange("DELETE %s" % KEYWORD_MAILBOX)
            side.exchange("CREATE %s" % KEYWORD_MAILBOX)
            for n in range(KEYWORD_MESSAGES):
                side.exchange("APPEND %s () %s" % (KEYWORD_MAILBOX, DATE.decode()), literal=message(n))
            for command in ("SELECT %s" % KEYWORD_MAILBOX, "STORE 1:300 +FLAGS.SILENT ($Junk)",
                            "STORE 200:500 +FLAGS.SILENT ($Forwarded \\Seen)", "STORE 7,9,600:700 +FLAGS.SILENT (\\Flagged)"):
                side.exchange(command)
            side.close(logout=True)

        def keywords(*names):
            def expect(lines):
                return lines == FLAG_SEARCHES + ["UID SEARCH RETURN (ALL) KEYWORD " + k for k in names]
            expect.__doc__ = "one ESEARCH per system flag, then one per keyword (%s)" % " ".join(names)
            return expect
        session(daemon, relay, "slow link: the first plain session", None, select=select, expect=full)
        session(daemon, relay, "slow link: keywords searched", None, select=select, expect=keywords("$Junk", "$Forwarded"))
        on_both_accounts("SELECT %s" % KEYWORD_MAILBOX, "STORE 3,998 +FLAGS.SILENT ($Label1)",
                         "STORE 250 -FLAGS.SILENT ($Junk)")
        session(daemon, relay, "slow link: a keyword made since", None, select=select,
                expect=keywords("$Junk", "$Forwarded", "$Label1"))
    finally:
        if os.environ.get("RESYNC_LOG"):
            print("\n".join(l for l in daemon.log().splitlines() if "link" in l or "round trip" in l or "sync kwslow" in l))
        check("slow link: the daemon exited cleanly", daemon.stop() == 0)
        relay.close()


def full(lines):
    """the full form alone"""
    return lines == [FULL]


def searched(lines):
    """one ESEARCH per system flag"""
    return lines == FLAG_SEARCHES


def searched_then_full(lines):
    """one ESEARCH per system flag, then the full form (the SELECT's FLAGS had a keyword the store's did not)"""
    return lines == FLAG_SEARCHES + [FULL]


def full_modseq(lines):
    """the full form with MODSEQ alone"""
    return lines == [FULL_MODSEQ]


def qresync(lines):
    """the QRESYNC form alone"""
    return len(lines) == 1 and re.match(r"^UID FETCH 1:\* \(FLAGS\) \(CHANGEDSINCE \d+ VANISHED\)$", lines[0])


def condstore(lines):
    """the CONDSTORE form alone"""
    return (len(lines) == 2 and re.match(r"^UID FETCH 1:\* \(FLAGS\) \(CHANGEDSINCE \d+\)$", lines[0]) and
            lines[1] == "UID SEARCH RETURN (ALL) ALL")


def condstore_then_full(lines):
    """the CONDSTORE form, then the full form with MODSEQ"""
    return len(lines) == 3 and condstore(lines[:2]) and lines[2] == FULL_MODSEQ


def qresync_then_full(lines):
    """the QRESYNC form, then the full form"""
    return len(lines) == 2 and qresync(lines[:1]) and lines[1] == FULL_MODSEQ


def mailbox_dir(user):
    """MAILBOX's Maildir++ folder of user in with-dovecot's Dovecot."""
    return os.path.join(ENV["IMAPTEST_DIR"], "mail", user, "." + MAILBOX)


def server_went_back(daemon, relay):
    """A server brought back to an older state of the mailbox (a restore
    from a backup) under its UIDVALIDITY: it reports the HIGHESTMODSEQ the
    store holds, while the store holds a flag change, and its MODSEQ, made
    after it. The CONDSTORE form finds nothing changed; a stored MODSEQ
    above the upstream's HIGHESTMODSEQ sends the sync to the full form."""
    backup = proxyfixture.scratch_dir("imapcached-resync-backup.")
    for user in (USER, USER3):  # cp -a: Dovecot's files stay its user's
        subprocess.run(["cp", "-a", mailbox_dir(user), os.path.join(backup, user)], check=True)
    session(daemon, relay, "CONDSTORE before the server goes back", "ENABLE CONDSTORE", expect=condstore,
            then=("STORE 1 +FLAGS (\\Answered)",))
    for user in (USER, USER3):
        shutil.rmtree(mailbox_dir(user))
        subprocess.run(["cp", "-a", os.path.join(backup, user), mailbox_dir(user)], check=True)
    session(daemon, relay, "CONDSTORE after the server went back", "ENABLE CONDSTORE", expect=condstore_then_full)


def stored_flags(store_dir, uid):
    """The store's flags of uid in MAILBOX (None: not known), read as another process would."""
    path = os.path.join(store_dir, "relay", USER3 + ".sqlite")
    db = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    try:
        row = db.execute("SELECT m.flags FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id "
                         "WHERE b.name = ? AND m.uid = ?", (MAILBOX, uid)).fetchone()
    finally:
        db.close()
    return None if row is None or row[0] is None else bytes(row[0])


def vanished_unknown():
    """Two messages came (EXISTS, their UIDs not fetched), another client
    flagged the second and expunged the first: the VANISHED to a QRESYNC
    client named a UID the session's view had not learned. The view kept
    one message too many, and a message that came next got the flagged
    one's FLAGS and MODSEQ from the store (a sweep's finding). Now such a
    selection is not vouched for: every answer is Dovecot's."""
    relay = Relay()
    store_dir = proxyfixture.scratch_dir("imapcached-resync-vanished.")
    daemon = Daemon(relay.upstream_entry(), extra='cache = { dir = "%s"; prefetch = "off"; };\n' % store_dir)
    try:
        on_both_accounts("DELETE %s" % MAILBOX, "CREATE %s" % MAILBOX, appends=4, first=40)
        direct, proxied = Side(PORT, USER, PASS), Side(daemon.port, USER3, PASS3)
        both(direct, proxied, "ENABLE QRESYNC")
        both(direct, proxied, "SELECT %s" % MAILBOX)
        both(direct, proxied, "UID FETCH 1:* (FLAGS)")
        on_both_accounts(appends=2, first=44)  # UIDs 5 and 6
        both(direct, proxied, "NOOP", "vanished unknown: two new messages' EXISTS")
        on_both_accounts("SELECT %s" % MAILBOX, "UID STORE 6 +FLAGS (\\Flagged)")
        both(direct, proxied, "NOOP", "vanished unknown: the second one's flag, its UID with it")
        on_both_accounts("SELECT %s" % MAILBOX, "UID STORE 5 +FLAGS.SILENT (\\Deleted)", "UID EXPUNGE 5")
        both(direct, proxied, "NOOP", "vanished unknown: the first one's VANISHED, its UID never told")
        on_both_accounts(appends=1, first=46)  # UID 7
        both(direct, proxied, "NOOP", "vanished unknown: one more new message")
        for command in ("FETCH 5:6 (UID RFC822.SIZE)", "FETCH 6 (FLAGS MODSEQ)", "UID FETCH 7 (FLAGS MODSEQ)",
                        "UID FETCH 1:* (FLAGS MODSEQ)", "SEARCH FLAGGED"):
            both(direct, proxied, command, "vanished unknown: %s is Dovecot's answer" % command)
        direct.close(logout=True)
        proxied.close(logout=True)
    finally:
        check("vanished unknown: the daemon exited cleanly", daemon.stop() == 0)
        relay.close()


def main():
    relay = Relay()
    store_dir = proxyfixture.scratch_dir("imapcached-resync.")
    daemon = Daemon(relay.upstream_entry(), extra='cache = { dir = "%s"; prefetch = "off"; };\n' % store_dir)
    try:
        on_both_accounts("DELETE %s" % MAILBOX, "CREATE %s" % MAILBOX, appends=4)
        session(daemon, relay, "first QRESYNC session", "ENABLE QRESYNC", expect=full_modseq)
        on_both_accounts("SELECT %s" % MAILBOX, "STORE 2 +FLAGS.SILENT (\\Flagged)", "STORE 3 +FLAGS.SILENT (\\Deleted)",
                         "EXPUNGE", appends=1, first=5)
        session(daemon, relay, "QRESYNC after changes", "ENABLE QRESYNC", expect=qresync)
        on_both_accounts("SELECT %s" % MAILBOX, "STORE 4 +FLAGS.SILENT (\\Seen \\Draft \\Answered)")
        session(daemon, relay, "a client that enabled nothing, no keyword in the mailbox", None, expect=searched)
        on_both_accounts("SELECT %s" % MAILBOX, "STORE 1 +FLAGS.SILENT ($Label1)", appends=1, first=6)
        session(daemon, relay, "a client that enabled nothing, a keyword made since", None, expect=searched_then_full)
        session(daemon, relay, "a client that enabled nothing", None, expect=full)
        session(daemon, relay, "CONDSTORE by SELECT", None, select="SELECT %s (CONDSTORE)" % MAILBOX,
                expect=condstore, then=("STORE 2 +FLAGS.SILENT (\\Answered)",))
        check("a .SILENT STORE through the proxy: the store forgot the message's flags",
              stored_flags(store_dir, 2) is None, stored_flags(store_dir, 2))
        check("the other messages' flags stay stored", stored_flags(store_dir, 1) is not None)
        # Dovecot finds nothing for NOT MODSEQ past the mailbox's highest
        # (RFC 7162 would say every message): its answer, not the store's
        session(daemon, relay, "CONDSTORE after the STORE", "ENABLE CONDSTORE", expect=condstore,
                then=("SEARCH NOT MODSEQ 1000000", "SEARCH RETURN (COUNT) NOT MODSEQ 1000000",
                      "SEARCH NOT MODSEQ 1"))
        on_both_accounts("DELETE %s" % MAILBOX, "CREATE %s" % MAILBOX, appends=3, first=10)
        session(daemon, relay, "QRESYNC after a new UIDVALIDITY", "ENABLE QRESYNC", expect=qresync_then_full)
        session(daemon, relay, "QRESYNC once more", "ENABLE QRESYNC", expect=qresync)
        server_went_back(daemon, relay)
    finally:
        check("the daemon exited cleanly", daemon.stop() == 0)
        relay.close()
    out_of_order()
    enabled_other()
    slow_link_keywords()
    vanished_unknown()
    return summary()


if __name__ == "__main__":
    raise SystemExit(main())
