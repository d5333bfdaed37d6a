#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Two sessions of one account through imapcached, one changing what the
other has selected, get the answers two sessions straight to Dovecot get
(doc/cache.md "News from the account's other sessions").

Each scenario runs twice side by side: two connections of USER straight
to Dovecot, and two connections of USER3 (a twin account) through the
daemon, each pair on a new mailbox of the same messages. Every response
line of every command, untagged and unsolicited included, is compared
after the tags. Cold (the daemon's store empty for the mailbox) and warm
(another session fetched everything first; the direct side makes the same
fetch, so that Dovecot's own caches are alike on both sides).

Before imapcached counted the changes one session makes for the others, a
session answered FETCH and SEARCH from its older view: old flags, a
SEARCH KEYWORD missing the new keyword, expunged messages still listed
after a UID FETCH that Dovecot ends with their EXPUNGEs (21 differences
over these scenarios).

Then a local answer of 24 MB, still being written, outlives an expunge
of its last message that another session learns of, and a purge of its
mailbox: whole, no BYE, and the rows go after it (doc/cache.md, "Pins")."""
import os
import random
import re
import select
import subprocess
import sys
import time

from checks import check, summary
import proxyfixture
from proxyfixture import PASS, PASS3, PORT, TIMINGS_BYTES, USER, USER3, Daemon, Session, upstream_dovecot

CTL = os.path.join(os.environ.get("top_builddir", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")),
                   "daemon", "imapcachectl")

MAILBOX = "sessions"
DATE = '"24-Mar-2007 23:00:00 +0200"'
MESSAGES = [
    b"From: User1 <user1@example.org>\r\nDate: Sat, 24 Mar 2007 23:00:00 +0200\r\nSubject: s1\r\n\r\nbody1\r\n\r\n",
    b"From: User2 <user2@example.org>\r\nSubject: s2\r\n\r\nbody22\r\n",
    b"From: User3 <user3@example.org>\r\nSubject: s3\r\n\r\nbody3\r\n\r\n",
    b"From: sub@example.org\r\nMime-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n"
    b"--b\r\nContent-Type: text/plain\r\n\r\npart one\r\n--b\r\nContent-Type: text/plain\r\n\r\npart two\r\n--b--\r\n",
    b"From: a@example.org\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    b"aMOpbGxvIHfDtnJsZAo=\r\n",
    b"From: x@example.org\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\n\r\nsix\r\n",
]
WARM = "FETCH 1:* (UID FLAGS ENVELOPE BODYSTRUCTURE BODY RFC822.SIZE INTERNALDATE BODY.PEEK[])"

# (connection, command[, literal]): connection 1 changes, connection 2 has been told nothing yet;
# (connection, IDLE, steps): the steps run on the other connection while this one idles
IDLE = "IDLE"
IDLE_SETTLE = 0.5  # seconds for the upstream's IDLE updates to reach the idler before its DONE
IDLE_SETTLE_DIRECT = 1.5  # the same for the direct side, whose count the proxied side then waits for:
                          # Dovecot's own notice took over 0.5 s on a busy machine
IDLE_WAIT_MAX = 10  # seconds the proxied idler waits for as many updates as the direct one got; then its
                    # DONE, and a scenario that differed after such a wait runs once more. A CI run's idler
                    # waited 40 s in vain; the likeliest cause is Dovecot's own race: which of two sessions
                    # claims a new message's \Recent (whose IDLE then gets "* 1 RECENT") turns on timing
# steps of connection 0 run on both first, in place of a plain SELECT
SELECT_CONDSTORE = (0, "SELECT %s (CONDSTORE)" % MAILBOX)
ENABLE_QRESYNC = (0, "ENABLE QRESYNC")
SCENARIOS = {
    "flags": [
        (1, "STORE 1:3 FLAGS (\\Seen)"), (2, "FETCH 1:3 (FLAGS)"), (2, "FETCH 1:3 (FLAGS)"),
        (1, "STORE 4 +FLAGS.SILENT (\\Flagged)"), (2, "SEARCH FLAGGED"), (2, "SEARCH FLAGGED"),
        (1, "STORE 2,4 +FLAGS ($hello $world)"), (2, "SEARCH KEYWORD $hello"), (2, "FETCH 1:* (FLAGS)"),
        (1, "STORE 1 +FLAGS (\\Draft)"), (2, "STORE 1 -FLAGS (\\Seen)"), (1, "CHECK"), (2, "CHECK"),
        (1, "FETCH 1 FLAGS"), (2, "FETCH 1 FLAGS"), (2, "UID SEARCH SEEN"),
    ],
    "seen": [
        (1, "FETCH 2 (BODY[TEXT])"), (2, "FETCH 2 (FLAGS BODY.PEEK[TEXT])"), (2, "SEARCH UNSEEN"),
        (2, "FETCH 3 (RFC822.TEXT)"), (1, "FETCH 1:4 (FLAGS)"), (1, "NOOP"),
    ],
    "expunge": [
        (1, "FETCH 2,4 (UID)"), (1, "STORE 1,3 +FLAGS (\\Deleted)"), (1, "EXPUNGE"),
        (2, "UID FETCH 2,4 (UID)"), (2, "FETCH 1:* (UID FLAGS)"), (2, "SEARCH ALL"), (2, "NOOP"),
        (1, "STORE 1 +FLAGS.SILENT (\\Deleted)"), (1, "EXPUNGE"), (2, "FETCH 2:* (UID ENVELOPE)"),
        (2, "UID SEARCH ALL"), (2, "CHECK"), (2, "FETCH 1:* (UID FLAGS)"),
    ],
    "append": [
        (1, "APPEND %s (\\Flagged) %s" % (MAILBOX, DATE), b"Subject: new\r\n\r\nhi\r\n"),
        (2, "FETCH 1:* (UID FLAGS)"), (2, "SEARCH FLAGGED"), (2, "NOOP"), (2, "FETCH 7 (ENVELOPE)"),
        (1, "COPY 1 %s" % MAILBOX), (2, "UID FETCH 1:* (UID)"), (2, "SEARCH ALL"),
        (1, "MOVE 2 %s" % MAILBOX), (2, "UID FETCH 1:* (FLAGS)"), (2, "NOOP"),
    ],
    "idle": [
        (2, "FETCH 1:* (FLAGS)"), (2, IDLE, [(1, "STORE 1:2 +FLAGS (\\Seen)"), (1, "STORE 3 +FLAGS.SILENT (\\Flagged)")]),
        (2, "FETCH 1:* (FLAGS)"), (2, "SEARCH SEEN"), (1, "FETCH 1:* (FLAGS)"),
        (1, IDLE, [(2, "STORE 4 +FLAGS (\\Answered)"), (2, "APPEND %s () %s" % (MAILBOX, DATE), b"Subject: idle\r\n\r\nx\r\n")]),
        (1, "FETCH 1:* (UID FLAGS)"), (2, "FETCH 1:* (UID FLAGS)"),
    ],
    "recreated": [
        (2, "FETCH 1:* (UID FLAGS)"), (1, "UNSELECT"), (1, "DELETE %s" % MAILBOX), (1, "CREATE %s" % MAILBOX),
        (1, "APPEND %s () %s" % (MAILBOX, DATE), b"Subject: reborn\r\n\r\nnew\r\n"),
        (2, "FETCH 1:* (UID FLAGS ENVELOPE)"), (2, "NOOP"), (2, "FETCH 1:* (UID ENVELOPE)"),
    ],
    "deleted": [
        (2, "FETCH 1:* (UID FLAGS)"), (1, "UNSELECT"), (1, "DELETE %s" % MAILBOX), (2, "FETCH 1:* (UID FLAGS ENVELOPE)"),
        (2, "NOOP"),
    ],
    "renamed": [
        (2, "FETCH 1:* (UID FLAGS)"), (1, "UNSELECT"), (1, "RENAME %s %s-2" % (MAILBOX, MAILBOX)),
        (2, "FETCH 1:* (UID FLAGS ENVELOPE)"), (2, "NOOP"), (1, "DELETE %s-2" % MAILBOX),
    ],
    "close": [
        (1, "STORE 5 +FLAGS.SILENT (\\Deleted)"), (1, "CLOSE"), (2, "FETCH 1:* (UID)"), (2, "UID SEARCH ALL"),
        (2, "NOOP"), (2, "FETCH 1:* (UID FLAGS)"),
    ],
}
RANDOM_SEEDS = [int(x) for x in os.environ.get("IMAPTEST_SESSIONS_SEEDS", "1 2 3").split()]
RANDOM_STEPS = int(os.environ.get("IMAPTEST_SESSIONS_STEPS", "60"))
FLAGS = ["\\Seen", "\\Flagged", "\\Answered", "\\Draft", "$label1", "$label2"]
SETS = ["1", "2", "3", "1:3", "2:*", "*", "1:*", "4,1", "5:6", "9"]
ITEMS = ["FLAGS", "UID FLAGS", "UID RFC822.SIZE", "ENVELOPE", "BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)]",
         "BODYSTRUCTURE", "BODY.PEEK[TEXT]", "BODY.PEEK[1]", "FLAGS BODY[TEXT]", "INTERNALDATE FLAGS", "FAST"]
KEYS = ["ALL", "SEEN", "UNSEEN", "FLAGGED", "KEYWORD $label1", "NOT KEYWORD $label2", "DELETED", "ANSWERED DRAFT",
        "OR SEEN FLAGGED", "UID 1:4", "LARGER 60", "NEW", "RECENT"]


def random_step(rng, condstore=False):
    """One (connection, command[, literal]) of the random scenarios; with
    condstore, MODSEQ in FETCH and SEARCH and CHANGEDSINCE too."""
    n = rng.choice((1, 2))
    kinds = ["store", "fetch", "uid fetch", "search", "uid search", "noop", "expunge", "uid expunge", "append",
             "copy", "move"]
    weights = [6, 6, 3, 4, 2, 2, 1, 1, 1, 1, 1]
    if condstore:
        kinds += ["modseq fetch", "changedsince", "modseq search"]
        weights += [2, 2, 1]
    kind = rng.choices(kinds, weights)[0]
    if kind == "modseq fetch":
        return (n, "FETCH %s (FLAGS MODSEQ)" % rng.choice(SETS))
    if kind == "changedsince":
        return (n, "UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d)" % rng.randint(1, 12))
    if kind == "modseq search":
        return (n, "SEARCH MODSEQ %d" % rng.randint(1, 12))
    if kind == "uid expunge":
        return (n, "UID EXPUNGE %s" % rng.choice(("1:*", "2:4", "7")))
    if kind == "move":
        return (n, "MOVE %s %s" % (rng.choice(SETS), MAILBOX))
    if kind == "store":
        flags = " ".join(rng.sample(FLAGS, rng.randint(1, 2)))
        return (n, "STORE %s %sFLAGS%s (%s)" % (rng.choice(SETS), rng.choice("+-"), rng.choice(("", ".SILENT")), flags))
    if kind in ("fetch", "uid fetch"):
        return (n, "%s %s (%s)" % (kind.upper(), rng.choice(SETS), rng.choice(ITEMS)))
    if kind in ("search", "uid search"):
        return (n, "%s %s" % (kind.upper(), rng.choice(KEYS)))
    if kind == "noop":
        return (n, rng.choice(("NOOP", "CHECK")))
    if kind == "expunge":
        return (n, "EXPUNGE")
    if kind == "append":
        return (n, "APPEND %s (%s) %s" % (MAILBOX, rng.choice(FLAGS), DATE),
                b"Subject: appended %d\r\n\r\nnew\r\n" % rng.randint(1, 99))
    return (n, "COPY %s %s" % (rng.choice(SETS), MAILBOX))


for seed in RANDOM_SEEDS:
    rng = random.Random(seed)
    SCENARIOS["random seed %d" % seed] = [random_step(rng) for _ in range(RANDOM_STEPS)]
    rng = random.Random(seed)
    SCENARIOS["random CONDSTORE seed %d" % seed] = [SELECT_CONDSTORE] + [random_step(rng, True)
                                                                       for _ in range(RANDOM_STEPS)]
    rng = random.Random(seed)
    SCENARIOS["random QRESYNC seed %d" % seed] = [ENABLE_QRESYNC] + [random_step(rng, True)
                                                                   for _ in range(RANDOM_STEPS)]

TAG = re.compile(rb"^s\d+ ")
CLOSED = b"<connection closed>"
BYE = re.compile(rb"^\* BYE .*", re.S)
UIDVALIDITY = re.compile(rb"(UIDVALIDITY|APPENDUID|COPYUID) \d+")  # the mailboxes' own, made at CREATE


def normalised(lines):
    """lines without what differs between any two Dovecot sessions: tags,
    timings, the mailboxes' UIDVALIDITY, and a BYE's text (for a mailbox
    deleted under a session, "Mailbox was deleted under us" or "Internal
    error occurred", as Dovecot's timing has it)."""
    return [BYE.sub(b"* BYE ...", UIDVALIDITY.sub(rb"\1 v", TAG.sub(b"T ", TIMINGS_BYTES.sub(b"", line))))
            for line in lines]


def fresh_mailbox(user, password):
    """MAILBOX made anew, straight at Dovecot, with MESSAGES."""
    s = Session(PORT, user, password)
    s.exchange("DELETE %s" % MAILBOX)
    s.exchange("CREATE %s" % MAILBOX)
    for message in MESSAGES:
        s.exchange("APPEND %s () %s" % (MAILBOX, DATE), message)
    s.close(logout=True)


def exchange(session, command, *literal):
    """session.exchange, but a connection the server closes ends the
    answer with CLOSED instead of raising (a BYE for a deleted mailbox)."""
    if getattr(session, "closed", False):
        return [CLOSED]
    session.tag += 1
    tag = b"s%d" % session.tag
    if literal:
        session.conn.send(tag + b" " + command.encode() + b" {%d+}\r\n" % len(literal[0]) + literal[0] + b"\r\n")
    else:
        session.conn.send(tag + b" " + command.encode() + b"\r\n")
    lines = []
    try:
        while not lines or not lines[-1].startswith(tag + b" "):
            lines.append(session.conn.response())
    except EOFError:
        session.closed = True
        lines.append(CLOSED)
    return lines


def updates_within(conn, lines, expect, seconds):
    """Whether lines (an IDLE's "+" first) reached expect updates within
    seconds; the responses read are appended to lines."""
    deadline = time.monotonic() + seconds
    while len(lines) - 1 < expect:
        if b"\r\n" not in conn.buf:
            ready, _, _ = select.select([conn.sock], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                return False
        lines.append(conn.response())
    return True


def idle(idler, sessions, steps, expect=None, lags=None):
    """IDLE on idler while steps run on the others; what the idler got
    (read line by line, so its wait is bounded by the fixture's timeout)
    after its DONE, as one step. With expect, the DONE waits until that
    many updates came (what the direct side got: through the proxy they
    cross one more connection, later on a busy machine), or IDLE_WAIT_MAX;
    an IDLE that waited that long is noted in lags."""
    idler.tag += 1
    tag = b"s%d" % idler.tag
    idler.conn.send(tag + b" IDLE\r\n")
    lines = [idler.conn.response()]
    out = []
    for n, command, *literal in steps:
        out.append(("%d %s" % (n, command), exchange(sessions[n], command, *literal)))
    if expect is not None and not updates_within(idler.conn, lines, expect, IDLE_WAIT_MAX):
        lags.append("an idler had %d of %d updates after %d s: %r" % (len(lines) - 1, expect, IDLE_WAIT_MAX, lines))
    time.sleep(IDLE_SETTLE if expect is not None else IDLE_SETTLE_DIRECT)
    idler.conn.send(b"DONE\r\n")
    while not lines[-1].startswith(tag + b" "):
        lines.append(idler.conn.response())
    return out + [("IDLE", lines)]


def idle_updates(answers):
    """How many updates each IDLE of a run's answers got (its untagged lines)."""
    return [sum(1 for line in lines if line.startswith(b"* ")) for step, lines in answers if step == "IDLE"]


def run(port, user, password, steps, warm, idle_expect=(), lags=None):
    """Every step's response lines, the two connections' SELECTs first;
    idle_expect: the updates to wait for in each IDLE (idle), lags: where
    an IDLE that waited for them in vain is noted."""
    idle_expect = list(idle_expect)
    fresh_mailbox(user, password)
    if warm:
        w = Session(port, user, password)
        w.exchange("EXAMINE %s" % MAILBOX)
        w.exchange(WARM)
        w.close(logout=True)
    sessions = {1: Session(port, user, password), 2: Session(port, user, password)}
    preamble = [step[1] for step in steps if step[0] == 0]
    if not any(command.startswith("SELECT") for command in preamble):
        preamble.append("SELECT %s" % MAILBOX)
    out = [("%d %s" % (n, command), sessions[n].exchange(command)) for n in (1, 2) for command in preamble]
    steps = [step for step in steps if step[0] != 0]
    for n, command, *rest in steps:
        if command == IDLE:
            out += idle(sessions[n], sessions, rest[0], idle_expect.pop(0) if idle_expect else None, lags)
        else:
            out.append(("%d %s" % (n, command), exchange(sessions[n], command, *rest)))
    for s in sessions.values():
        if not getattr(s, "closed", False):
            s.close(logout=True)
    return out


def comparable(lines):
    """lines, or of an answer that ends the connection only that it did:
    what Dovecot sends before a BYE for a mailbox deleted under a session
    (the FETCH lines it got to) depends on its timing."""
    return [b"* BYE ...", CLOSED] if lines[-2:] == [b"* BYE ...", CLOSED] else lines


def differences(name, warm, port):
    """The steps whose answers differ between the two sides, and what
    kept a proxied idler waiting in vain."""
    lags = []
    direct = run(PORT, USER, PASS, SCENARIOS[name], warm)
    proxied = run(port, USER3, PASS3, SCENARIOS[name], warm, idle_updates(direct), lags)
    return [(step, normalised(a), normalised(b)) for (step, a), (_, b) in zip(direct, proxied)
            if comparable(normalised(a)) != comparable(normalised(b))], lags


def compare(name, warm, daemon):
    """One scenario on both sides; once more if they differed after a
    proxied idler waited in vain (IDLE_WAIT_MAX): a second miss of
    Dovecot's notice on the same step fails as any difference does."""
    label = "%s, %s" % (name, "warm" if warm else "cold")
    differ, lags = differences(name, warm, daemon.port)
    if differ and lags:
        print("note: %s: %s; the scenario runs again" % (label, "; ".join(lags)))
        differ, lags = differences(name, warm, daemon.port)
    check("%s: every answer is Dovecot's" % label, not differ,
          "".join("\n  %s\n    direct:  %r\n    proxied: %r" % d for d in differ[:3]))


def selected_after_outside_expunge(port, user, password, message):
    """A session on port with MAILBOX made anew, selected and fetched
    whole (WARM), after which a client straight to Dovecot expunged
    message: the session has been told nothing of it."""
    fresh_mailbox(user, password)
    session = Session(port, user, password)
    session.exchange("SELECT %s" % MAILBOX)
    session.exchange(WARM)
    outsider = Session(PORT, user, password)
    outsider.exchange("SELECT %s" % MAILBOX)
    outsider.exchange("STORE %d +FLAGS.SILENT (\\Deleted)" % message)
    outsider.exchange("EXPUNGE")
    outsider.close(logout=True)
    return session


def outside_expunge(daemon):
    """A client that bypasses the proxy expunges message 2 while a proxied
    session has the mailbox selected (doc/cache.md, "Where a local answer
    is not Dovecot's"): until a command that lets the upstream report it,
    the session's local answers give message 2 as it was (Dovecot: NIL and
    [EXPUNGEISSUED]); its NOOP then gets Dovecot's EXPUNGE, and from there
    every answer is Dovecot's again."""
    sides = {}
    for label, port, user, password in (("direct", PORT, USER, PASS), ("proxied", daemon.port, USER3, PASS3)):
        session = selected_after_outside_expunge(port, user, password, 2)
        sides[label] = [normalised(session.exchange(command)) for command in
                        ("FETCH 2 (BODY.PEEK[TEXT])", "NOOP", "FETCH 1:* (UID FLAGS)", "SEARCH ALL",
                         "FETCH 2 (BODY.PEEK[TEXT])")]
        session.close(logout=True)
    before, noop, *after = sides["proxied"]
    check("outside expunge: the proxied session still reads message 2 as it was",
          before[0].startswith(b"* 2 FETCH (BODY[TEXT] {8}") and b"body22" in before[0] and
          before[-1] == b"T OK Fetch completed.\r\n", before)
    check("outside expunge: Dovecot answers NIL and EXPUNGEISSUED there (the known difference)",
          b"NIL" in sides["direct"][0][0] and b"EXPUNGEISSUED" in sides["direct"][0][-1], sides["direct"][0])
    check("outside expunge: the NOOP then reports it", noop[0] == b"* 2 EXPUNGE\r\n", noop)
    check("outside expunge: after it every answer is Dovecot's", after == sides["direct"][2:],
          (after, sides["direct"][2:]))


OTHER = "sessions-other"


def outside_expunge_move(daemon, answered_here):
    """A client that bypasses the proxy expunges UID 3; then UID MOVE 1:3.
    Straight to Dovecot the session's UID FETCH in between (answered_here)
    reports the expunge, and the move goes through; through the proxy that
    FETCH is answered from the cache, the upstream session had reported
    nothing, and Dovecot refused the move whole, NO [EXPUNGEISSUED]: the
    proxy now sends it again, and the messages move as they do direct.
    Without a command in between, Dovecot refuses the move to a direct
    client too, and so does the proxy."""
    label = "outside expunge, UID MOVE%s" % (" after a local answer" if answered_here else " at once")
    sides = {}
    for side, port, user, password in (("direct", PORT, USER, PASS), ("proxied", daemon.port, USER3, PASS3)):
        maker = Session(PORT, user, password)
        maker.exchange("DELETE %s" % OTHER)
        maker.exchange("CREATE %s" % OTHER)
        maker.close(logout=True)
        session = selected_after_outside_expunge(port, user, password, 3)
        commands = (["UID FETCH 2 (ENVELOPE)"] if answered_here else []) + [
            "UID MOVE 1:3 %s" % OTHER, "NOOP", "UID FETCH 1:* (FLAGS)", "STATUS %s (MESSAGES)" % OTHER]
        answers = [normalised(session.exchange(command)) for command in commands]
        session.close(logout=True)
        sides[side] = dict(zip(commands, answers))
    move = "UID MOVE 1:3 %s" % OTHER
    direct, proxied = sides["direct"][move], sides["proxied"][move]
    if answered_here:
        # what Dovecot told the direct session at its UID FETCH (the
        # EXPUNGE, RECENT) comes to the proxied one first in the move
        news = [line for line in sides["direct"]["UID FETCH 2 (ENVELOPE)"]
                if not line.startswith((b"* 2 FETCH", b"T "))]
        check("%s: moved as straight to Dovecot (the expunge told during the move)" % label,
              direct[-1] == b"T OK Move completed.\r\n" and b"* 3 EXPUNGE\r\n" in news and
              proxied == news + direct, (news, direct, proxied))
    else:
        check("%s: refused as straight to Dovecot" % label,
              direct == proxied and b"NO [EXPUNGEISSUED]" in direct[-1], (direct, proxied))
    for command in ("UID FETCH 1:* (FLAGS)", "STATUS %s (MESSAGES)" % OTHER):
        check("%s: %s as straight to Dovecot" % (label, command),
              sides["direct"][command] == sides["proxied"][command], (sides["direct"][command], sides["proxied"][command]))


def behind_after_local_answer(daemon, message):
    """A session of USER3 through daemon, OTHER made anew, after
    selected_after_outside_expunge(message) and a UID FETCH answered from
    the cache: the upstream session has reported nothing."""
    maker = Session(PORT, USER3, PASS3)
    maker.exchange("DELETE %s" % OTHER)
    maker.exchange("CREATE %s" % OTHER)
    maker.close(logout=True)
    session = selected_after_outside_expunge(daemon.port, USER3, PASS3, message)
    session.exchange("UID FETCH 2 (ENVELOPE)")
    return session


def outside_expunge_move_by_number(daemon):
    """As outside_expunge_move, with MOVE 1:3: the client's numbers, whose
    3 is the message expunged, which it was not told of. Refused as
    NO [EXPUNGEISSUED], the move goes again in UID form, the UIDs those
    numbers were in the client's view (1:3): the messages it saw, less
    the one gone. (A direct session, told of the expunge by its UID
    FETCH, numbers the messages anew: its MOVE 1:3 moves UIDs 1, 2, 4.)"""
    label = "outside expunge, MOVE by number after a local answer"
    session = behind_after_local_answer(daemon, 3)
    move = normalised(session.exchange("MOVE 1:3 %s" % OTHER))
    session.close(logout=True)
    check("%s: the expunge told, then UIDs 1 and 2 moved" % label,
          move[0] == b"* 3 EXPUNGE\r\n" and b"* OK [COPYUID v 1:2 1:2] Moved UIDs.\r\n" in move and
          move[-1] == b"T OK Move completed.\r\n", move)
    truth = Session(PORT, USER3, PASS3)
    left = normalised(truth.exchange("EXAMINE %s" % MAILBOX) and truth.exchange("UID SEARCH ALL"))
    moved = normalised(truth.exchange("STATUS %s (MESSAGES)" % OTHER))
    truth.close(logout=True)
    check("%s: UIDs 4 to 6 stay, two moved" % label,
          left[0] == b"* SEARCH 4 5 6\r\n" and moved[0] == b"* STATUS %s (MESSAGES 2)\r\n" % OTHER.encode(),
          (left, moved))


def outside_expunge_copy_star(daemon):
    """UID COPY 6:* after a local answer, the message expunged being the
    last (UID 6): refused NO [EXPUNGEISSUED], it is not sent again, since
    once the expunge is reported "*" is UID 5, a message the client did
    not name."""
    label = "outside expunge of the last message, UID COPY 6:* after a local answer"
    session = behind_after_local_answer(daemon, 6)
    copy = normalised(session.exchange("UID COPY 6:* %s" % OTHER))
    status = normalised(session.exchange("STATUS %s (MESSAGES)" % OTHER))
    session.close(logout=True)
    check("%s: refused, not sent again" % label,
          b"NO [EXPUNGEISSUED]" in copy[-1] and status[0] == b"* STATUS %s (MESSAGES 0)\r\n" % OTHER.encode(),
          (copy, status))


STREAMED = "streamed"
STREAMED_COUNT = 24
STREAMED_LINE = b"%06d the quick brown fox jumps over the lazy dog, message %02d\r\n"
STREAMED_LINES = 16000  # about 1 MB a message: 24 MB outgrow every socket buffer between daemon and client


def streamed_message(n):
    return (b"From: big@example.org\r\nSubject: big %d\r\n\r\n" % n +
            b"".join(STREAMED_LINE % (i, n) for i in range(STREAMED_LINES)))


def store_rows(cache_dir, uid=None):
    """Rows in the account's store of the streamed mailbox, or of one set
    aside for a drop (a BLOB name); only uid's when given. Read-only."""
    import sqlite3
    count = 0
    for root, _, files in os.walk(cache_dir):
        for name in files:
            if name.endswith(".sqlite"):
                db = sqlite3.connect("file:%s?mode=ro" % os.path.join(root, name), uri=True, timeout=10)
                try:
                    count += db.execute("SELECT count(*) FROM messages m JOIN mailboxes mb ON mb.id = m.mailbox_id"
                                        " WHERE (mb.name = ?1 OR typeof(mb.name) = 'blob')"
                                        " AND (?2 IS NULL OR m.uid = ?2)", (STREAMED, uid)).fetchone()[0]
                finally:
                    db.close()
    return count


def expunge_last(daemon, cache_dir):
    """The last message expunged straight at Dovecot, and learned by
    another session's SELECT through the daemon."""
    outsider = Session(PORT, USER3, PASS3)
    outsider.exchange("SELECT %s" % STREAMED)
    outsider.exchange("UID STORE %d +FLAGS.SILENT (\\Deleted)" % STREAMED_COUNT)
    outsider.exchange("EXPUNGE")
    outsider.close(logout=True)
    other = Session(daemon.port, USER3, PASS3)
    learned = other.exchange("SELECT %s" % STREAMED)
    other.close(logout=True)
    check("expunge during an answer: the other session was told of %d messages" % (STREAMED_COUNT - 1),
          b"* %d EXISTS\r\n" % (STREAMED_COUNT - 1) in learned, learned)
    check("expunge during an answer: its row stays while the answer is still to read it",
          store_rows(cache_dir, STREAMED_COUNT) == 1)


def purge(daemon, cache_dir):
    """imapcachectl purge of the mailbox."""
    result = subprocess.run([CTL, "-c", daemon.path, "purge", USER3, STREAMED], capture_output=True, text=True,
                            timeout=30)
    check("purge during an answer: exit 0", result.returncode == 0, (result.returncode, result.stderr))


def change_during_answer(daemon, cache_dir, label, change, rows_after):
    """A local answer too large for the sockets is still being written
    when change drops rows it has still to read (doc/cache.md, "Pins"):
    another session learns that its last message was expunged, or
    `imapcachectl purge` drops its mailbox. The answer still ends whole,
    the last message as it was (the session was told of no expunge, as
    Dovecot would answer it), and the rows go once it is done (rows_after
    left). Before pins, the answer found its row gone and ended with BYE."""
    s = Session(PORT, USER3, PASS3)
    s.exchange("DELETE %s" % STREAMED)
    s.exchange("CREATE %s" % STREAMED)
    for n in range(1, STREAMED_COUNT + 1):
        s.exchange("APPEND %s ()" % STREAMED, streamed_message(n))
    s.close(logout=True)
    reader = Session(daemon.port, USER3, PASS3)
    reader.exchange("SELECT %s" % STREAMED)
    reader.exchange("FETCH 1:* (BODY.PEEK[])")  # fills the store
    local_before = daemon.settled_count(r"answered from the cache")
    reader.tag += 1
    reader.conn.send(b"s%d FETCH 1:* (UID BODY.PEEK[])\r\n" % reader.tag)
    first = reader.conn.sock.recv(4096)  # the answer has begun; the rest waits in the sockets and the daemon
    change(daemon, cache_dir)
    reader.conn.buf = first + reader.conn.buf
    answer = []
    try:
        while not answer or not answer[-1].startswith(b"s%d " % reader.tag):
            answer.append(reader.conn.response())
    except EOFError as e:
        answer.append(b"CLOSED: %s" % str(e).encode()[:200])
    reader.close()
    check("%s during an answer: it was answered from the cache" % label,
          daemon.settled_count(r"answered from the cache") > local_before)
    fetches = [line for line in answer if re.match(rb"\* \d+ FETCH ", line)]
    last = fetches[-1] if fetches else b""
    check("%s during an answer: every message, then OK, no BYE" % label,
          len(fetches) == STREAMED_COUNT and answer[-1].startswith(b"s%d OK " % reader.tag) and
          not any(line.startswith(b"* BYE") for line in answer), [line[:80] for line in answer[-3:]])
    check("%s during an answer: the last message as it was" % label,
          last.endswith(streamed_message(STREAMED_COUNT) + b")\r\n") and
          b"(UID %d BODY[] {" % STREAMED_COUNT in last[:80], last[:80])
    deadline = time.monotonic() + 10
    while store_rows(cache_dir) != rows_after and time.monotonic() < deadline:
        time.sleep(0.05)
    check("%s during an answer: the rows went once the answer was done" % label,
          store_rows(cache_dir) == rows_after, (store_rows(cache_dir), rows_after))


def main():
    cache_dir = proxyfixture.scratch_dir("imapcached-sessions.")
    config = ('cache = { dir = "%s"; prefetch = "off"; };\ncontrol = { socket = "%s/control"; };\n'
              % (cache_dir, proxyfixture.scratch_dir("imapcached-sessions-run.")))
    daemon = Daemon(upstream_dovecot(), extra=config)
    try:
        for name in SCENARIOS:
            for warm in (False, True):
                compare(name, warm, daemon)
        outside_expunge(daemon)
        outside_expunge_move(daemon, answered_here=True)
        outside_expunge_move(daemon, answered_here=False)
        outside_expunge_move_by_number(daemon)
        outside_expunge_copy_star(daemon)
        change_during_answer(daemon, cache_dir, "expunge", expunge_last, STREAMED_COUNT - 1)
        change_during_answer(daemon, cache_dir, "purge", purge, 0)
        check("some answers came from the cache (the scenarios reach it)",
              daemon.count_log(r"answered from the cache") > 0)
        check("some went upstream because another session changed the mailbox",
              daemon.count_log(r"another session changed the mailbox") > 0)
    finally:
        daemon.stop()
    return summary()


if __name__ == "__main__":
    sys.exit(main())
