#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Every capability imapcached advertises after login is carried, and
proven: the proxy's post-login CAPABILITY is the test Dovecot's filtered by
the carried list of daemon/upstream.c and holds every extension of issue
10; then, for each advertised capability, one or more steps run the same
commands direct and through the proxy, and the raw responses (untagged and
unsolicited data, continuations and literals included) must be the same
bytes once what must differ is normalised. A capability advertised without
a step fails the test.

Both sides log in as testuser. Steps that change mail work in scratch
mailboxes of their own side (T-direct-N, T-proxy-N), filled by the same
APPENDs with fixed INTERNALDATEs, so UIDs and MODSEQs line up; a third
connection, always direct, makes the changes another client would.

Normalised: Dovecot's command timings; the side's name in mailbox names;
the side's own port in URLs; UIDVALIDITY values (time-based) to
placeholders numbered by first appearance in the step, so equal values
stay equal; SAVEDATE values (the time of the APPEND); and on the direct
side, the CAPABILITY response filtered by the carried list. Tags are not
normalised: both sides send the same ones.

Each step also checks that Dovecot's own answer shows what the step is
about (a step that proves nothing fails)."""
import base64
import difflib
import os
import re
import sys
import time

from checks import check, summary
from proxyfixture import PASS, PORT, USER, Daemon, Raw, quote_bytes, upstream_dovecot

# Issue 10: what the proxy must advertise after login against the test Dovecot.
ISSUE_CAPABILITIES = (
    "IMAP4rev1 LOGIN-REFERRALS ID ENABLE IDLE SORT SORT=DISPLAY THREAD=REFERENCES THREAD=REFS "
    "THREAD=ORDEREDSUBJECT MULTIAPPEND URL-PARTIAL CATENATE UNSELECT CHILDREN NAMESPACE UIDPLUS "
    "LIST-EXTENDED I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH ESORT SEARCHRES WITHIN CONTEXT=SEARCH "
    "LIST-STATUS BINARY MOVE SNIPPET=FUZZY PREVIEW=FUZZY PREVIEW STATUS=SIZE SAVEDATE LITERAL+").split()
UPSTREAM_C = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "daemon", "upstream.c")
STEP_TIMEOUT = 5  # seconds for one response: Dovecot answers in milliseconds; a hung side must not cost a minute
LONG_TAG = "L" * 2000  # legal (RFC 3501 sets no limit) and longer than any buffer sized for "usual" tags
TIMINGS = re.compile(rb" \(\d+\.\d+ \+ \d+\.\d+( \+ \d+\.\d+)? secs\)")
UIDVALIDITY = re.compile(rb"(UIDVALIDITY[ =]|APPENDUID |COPYUID )(\d+)")
SAVEDATE = re.compile(rb'SAVEDATE "[^"]*"')


def carried_names():
    """The names of upstream_capability_is_carried's list, read from
    daemon/upstream.c so that this test and the daemon can't disagree."""
    with open(UPSTREAM_C) as f:
        text = f.read()
    block = re.search(r"carried\[\] = \{(.*?)NULL", text, re.S)
    return re.findall(r'"([^"]+)"', block.group(1)) if block else []


def is_carried(capability, names):
    """upstream_capability_is_carried: a name ending in "=" stands for every value."""
    for name in names:
        if name.endswith("="):
            if len(capability) > len(name) and capability.upper().startswith(name.upper()):
                return True
        elif capability.upper() == name.upper():
            return True
    return False


def message(headers, body):
    return b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body


BINARY_PART = bytes(range(0, 256)) + b"\r\nbinary, with NUL bytes\r\n"
# The scratch messages: two threads, a base64 part with NUL bytes once
# decoded, an encoded UTF-8 subject; flags and INTERNALDATEs fixed.
MESSAGES = [
    (br"(\Seen)", b"01-Jan-2024 10:00:00 +0000", message(
        [b"From: Alice <alice@example.com>", b"To: Team <team@example.com>", b"Subject: Plan",
         b"Date: Mon, 01 Jan 2024 10:00:00 +0000", b"Message-ID: <plan@example.com>"],
        b"The plan for the week: ship the proxy.\r\nThen test it.\r\n")),
    (br"(\Seen \Answered)", b"02-Jan-2024 10:00:00 +0000", message(
        [b"From: Bob <bob@example.com>", b"To: Alice <alice@example.com>", b"Subject: Re: Plan",
         b"Date: Tue, 02 Jan 2024 10:00:00 +0000", b"Message-ID: <re-plan@example.com>",
         b"In-Reply-To: <plan@example.com>", b"References: <plan@example.com>"],
        b"Agreed.\r\n")),
    (b"()", b"03-Jan-2024 10:00:00 +0000", message(
        [b"From: Zed <carol@example.com>", b"To: Bob <bob@example.com>", b"Subject: Photos",
         b"Date: Wed, 03 Jan 2024 10:00:00 +0000", b"Message-ID: <photos@example.com>",
         b"MIME-Version: 1.0", b'Content-Type: multipart/mixed; boundary="b1"'],
        b"--b1\r\nContent-Type: text/plain\r\n\r\nThe photos are attached.\r\n"
        b"--b1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
        base64.encodebytes(BINARY_PART).replace(b"\n", b"\r\n") + b"--b1--\r\n")),
    (br"(\Flagged)", b"04-Jan-2024 10:00:00 +0000", message(
        [b"From: Dave <dave@example.com>", b"To: Zed <carol@example.com>", b"Subject: Re: Photos",
         b"Date: Thu, 04 Jan 2024 10:00:00 +0000", b"Message-ID: <re-photos@example.com>",
         b"In-Reply-To: <photos@example.com>", b"References: <photos@example.com>"],
        b"Nice photos.\r\n")),
    (b"()", b"05-Jan-2024 10:00:00 +0000", message(
        [b"From: Alice <alice@example.com>", b"To: Team <team@example.com>",
         b"Subject: =?UTF-8?Q?Caf=C3=A9_cr=C3=A8me?=", b"Date: Fri, 05 Jan 2024 10:00:00 +0000",
         b"Message-ID: <cafe@example.com>", b"MIME-Version: 1.0",
         b"Content-Type: text/plain; charset=utf-8", b"Content-Transfer-Encoding: 8bit"],
        "Crème brûlée at the café.\r\n".encode())),
]
LATE_MESSAGE = message(  # what a third connection appends
    [b"From: Alice <alice@example.com>", b"Subject: Late news", b"Message-ID: <late@example.com>"],
    b"Something new.\r\n")


class StepError(Exception):
    """A side's step could not go on (no answer, closed, an unexpected refusal)."""


class Conn(Raw):
    """A logged-in connection with short timeouts, reading whole responses."""

    error = StepError

    def __init__(self, port):
        super().__init__(port, timeout=STEP_TIMEOUT)
        self.line()
        self.send(b"login LOGIN %s %s\r\n" % (quote_bytes(USER), quote_bytes(PASS)))
        self.login = self.until_tagged("login")[-1]
        if not self.login.startswith("login OK"):
            raise StepError("LOGIN refused: %s" % self.login)

    def until(self, tag):
        """Responses up to the one tagged tag, or an untagged BAD (the
        answer to a line whose tag the server could not read)."""
        responses = []
        while True:
            response = self.response()
            responses.append(response)
            if response.startswith(tag.encode() + b" ") or response.startswith(b"* BAD "):
                return responses


class Side:
    """Where a client connects: Dovecot itself or imapcached in front of it."""

    def __init__(self, name, port, capability_filter=None):
        self.name = name
        self.port = port
        self.capability_filter = capability_filter  # on the direct side: what the proxy carries

    def normalise(self, responses):
        """The responses with what must differ between sides made equal
        (see the file's header)."""
        uidvalidities = {}

        def placeholder(m):
            number = uidvalidities.setdefault(m.group(2), len(uidvalidities) + 1)
            return m.group(1) + b"UIDVALIDITY-%d" % number

        out = []
        for response in responses:
            response = TIMINGS.sub(b"", response)
            response = response.replace(b"T-%s-" % self.name.encode(), b"T-SIDE-")
            response = response.replace(b"@127.0.0.1:%d/" % self.port, b"@SERVER/")
            response = UIDVALIDITY.sub(placeholder, response)
            response = SAVEDATE.sub(b'SAVEDATE "WHEN-SAVED"', response)
            if self.capability_filter is not None and response.startswith(b"* CAPABILITY "):
                words = response[len(b"* CAPABILITY "):-2].decode().split()
                response = b"* CAPABILITY %s\r\n" % " ".join(w for w in words if self.capability_filter(w)).encode()
            out.append(response)
        return out


class Run:
    """One side of one step: a connection of its own, logged in, whose
    every response goes to self.out; a third connection (direct, not
    recorded) for other clients' changes, opened when first asked for."""

    def __init__(self, side, number):
        self.side = side
        self.number = number
        self.out = []
        self.tag_count = 0
        self.conn = Conn(side.port)
        self.other_conn = None

    def box(self, suffix=""):
        """This step's scratch mailbox on this side (with suffix: another one)."""
        return "T-%s-%d%s" % (self.side.name, self.number, suffix)

    def next_tag(self):
        self.tag_count += 1
        return "s%d" % self.tag_count

    def command(self, *pieces, tag=None, conn=None, record=True):
        """Sends one command: pieces (str or bytes) are its line and, after
        each part that ends in a literal ({N}, {N+}, ~{N}), the literal's
        bytes; a synchronizing literal is sent after the server's "+" only.
        Returns (and records) the responses up to the tagged one."""
        conn = conn or self.conn
        tag = tag or self.next_tag()
        pieces = [p.encode() if isinstance(p, str) else p for p in pieces]
        responses = []
        line = tag.encode() + b" " + pieces[0]
        rest = pieces[1:]
        while True:
            conn.send(line + b"\r\n")
            if not rest:
                break
            if not line.endswith(b"+}"):
                while True:
                    response = conn.response()
                    responses.append(response)
                    if not response.startswith(b"* ") or response.startswith(b"* BAD "):
                        break
                if not response.startswith(b"+"):
                    break  # refused: the literal is not sent
            literal, line = rest[0], rest[1] if len(rest) > 1 else b""
            conn.send(literal)
            rest = rest[2:]
            if not rest:
                conn.send(line + b"\r\n")
                break
        if not responses or responses[-1].startswith(b"+"):
            responses += conn.until(tag)
        if record:
            self.out += responses
        return responses

    def other(self, *pieces):
        """A command on the third connection; its answer must be OK."""
        if self.other_conn is None:
            self.other_conn = Conn(PORT)
        responses = self.command(*pieces, conn=self.other_conn, record=False)
        if b" OK " not in responses[-1]:
            raise StepError("the third connection's %r got %r" % (pieces[0], responses[-1]))
        return responses

    def send(self, data):
        """Raw bytes to the step's connection (DONE)."""
        self.conn.send(data)

    def read_until(self, pattern=None, tag=None):
        """Records responses until one matches pattern (bytes regex) or
        is tagged tag."""
        while True:
            response = self.conn.response()
            self.out.append(response)
            if (pattern is not None and re.search(pattern, response)) or \
                    (tag is not None and response.startswith(tag.encode() + b" ")):
                return response

    def fill(self, suffix="", count=len(MESSAGES)):
        """Creates a scratch mailbox and appends the first count MESSAGES."""
        box = self.box(suffix)
        self.command("CREATE %s" % box)
        for flags, date, body in MESSAGES[:count]:
            self.command(b'APPEND %s %s "%s" {%d}' % (box.encode(), flags, date, len(body)), body)
        return box

    def select(self, box, extra=""):
        """SELECT box; returns (UIDVALIDITY, HIGHESTMODSEQ or None) as strings."""
        responses = self.command("SELECT %s%s" % (box, extra))
        text = b"".join(responses).decode(errors="replace")
        uidvalidity = re.search(r"\[UIDVALIDITY (\d+)\]", text)
        modseq = re.search(r"\[HIGHESTMODSEQ (\d+)\]", text)
        if uidvalidity is None:
            raise StepError("SELECT %s: no UIDVALIDITY in %r" % (box, text[-300:]))
        return uidvalidity.group(1), modseq.group(1) if modseq else None

    def close(self):
        for conn in (self.conn, self.other_conn):
            if conn is not None:
                conn.close()


# ---- the steps: STEPS maps a capability to its steps, in order ----

STEPS = {}


def step(capability, *shows):
    """Registers a step for capability (a name ending in "=" stands for
    every value; the step then gets the value). shows: regular
    expressions (bytes) Dovecot's answer must match, so the step is known
    to exercise what it is about."""
    def register(function):
        function.shows = shows
        STEPS.setdefault(capability, []).append(function)
        return function
    return register


def steps_for(capability):
    """[(step, argument)] for an advertised capability."""
    if capability in STEPS:
        return [(function, None) for function in STEPS[capability]]
    name, sep, value = capability.partition("=")
    return [(function, value) for function in STEPS.get(name + sep, [])] if sep else []


@step("IMAP4rev1", rb"\* CAPABILITY IMAP4rev1 ", rb"\* 1 FETCH \(FLAGS \(")
def step_rev1_basics(r, _):
    r.command("CAPABILITY")
    r.command("EXAMINE INBOX")
    r.command("FETCH 1:3 (FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODYSTRUCTURE)")
    r.command("UID FETCH 1:2 (BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)] BODY.PEEK[TEXT]<0.20>)")
    r.command('UID SEARCH SUBJECT "a" SINCE 1-Jan-2019')
    r.command("NOOP")


@step("IMAP4rev1", rb"Error in IMAP tag", rb'^x\[1 OK')
def step_rev1_tags(r, _):
    # "]" is legal in a tag (RFC 3501: ASTRING-CHAR except "+") but this
    # Dovecot refuses it: the client must see that refusal, not the
    # proxy's own idea; "[" it takes.
    r.command("NOOP", tag="x]1")
    r.command("NOOP", tag="x[1")
    r.command("NOOP", tag=LONG_TAG)
    r.command("NOOP", tag="a.b-c_d:e'f")


@step("LOGIN-REFERRALS")
def step_login_referrals(r, _):
    # Nothing to show: Dovecot sends [REFERRAL] only when its passdb says
    # so, and the fixture's does not. Advertised is all there is to check
    # (the capability check at the start).
    pass


@step("ID", rb'\* ID \("name" "Dovecot"\)')
def step_id(r, _):
    r.command('ID ("name" "test-extensions" "version" "1")')
    r.command("ID NIL")


@step("ENABLE", rb"\* ENABLED CONDSTORE\r", rb"\* ENABLED QRESYNC\r", rb"\* 1 FETCH \(UID 1 MODSEQ \(\d+\)")
def step_enable(r, _):
    box = r.fill()
    r.command("ENABLE CONDSTORE")
    r.command("ENABLE QRESYNC X-NOSUCH")
    r.command("ENABLE CONDSTORE")
    r.select(box)
    r.command(r"STORE 1 +FLAGS (\Flagged)")  # enabled: its FETCH carries MODSEQ


@step("IDLE", rb"^\+ idling", rb"^\* 6 EXISTS")
def step_idle(r, _):
    box = r.fill()
    r.select(box)
    tag = r.next_tag()
    r.send(b"%s IDLE\r\n" % tag.encode())
    r.read_until(rb"^\+ ")
    r.other(b'APPEND %s {%d}' % (box.encode(), len(LATE_MESSAGE)), LATE_MESSAGE)
    r.read_until(rb"^\* 6 EXISTS")
    r.send(b"DONE\r\n")
    r.read_until(tag=tag)
    r.command("NOOP")


@step("NAMESPACE", rb"\* NAMESPACE \(\(")
def step_namespace(r, _):
    r.command("NAMESPACE")


@step("CHILDREN", rb"\\HasChildren", rb"\\HasNoChildren")
def step_children(r, _):
    for suffix in ("", ".child", ".child.grandchild", ".other"):
        r.command("CREATE %s" % r.box(suffix))
    r.command('LIST "" %s*' % r.box())
    r.command('LIST "" %s%%' % r.box())
    r.command('LIST "" %s.%%' % r.box())


@step("LIST-EXTENDED", rb'\(CHILDINFO \("SUBSCRIBED"\)\)', rb"\\Subscribed")
def step_list_extended(r, _):
    for suffix in ("", ".a", ".a.deep", ".b"):
        r.command("CREATE %s" % r.box(suffix))
    r.command("SUBSCRIBE %s" % r.box(".a.deep"))
    r.command("SUBSCRIBE %s" % r.box(".b"))
    r.command('LIST (SUBSCRIBED RECURSIVEMATCH) "" %s*' % r.box())
    r.command('LIST (SUBSCRIBED RECURSIVEMATCH) "" %s%%' % r.box())
    r.command('LIST "" (%s %s) RETURN (CHILDREN SUBSCRIBED)' % (r.box(), r.box(".b")))
    r.command('LIST (SUBSCRIBED) "" %s* RETURN (CHILDREN)' % r.box())
    r.command('LIST () "" %s.a*' % r.box())


@step("LIST-STATUS", rb"\* STATUS \S+ \(MESSAGES 5 ")
def step_list_status(r, _):
    r.fill()
    r.command("CREATE %s" % r.box(".empty"))
    r.command('LIST "" %s* RETURN (STATUS (MESSAGES UNSEEN UIDNEXT UIDVALIDITY RECENT SIZE HIGHESTMODSEQ))' %
              r.box())


@step("STATUS=SIZE", rb"\* STATUS \S+ \(MESSAGES 5 SIZE \d+\)")
def step_status_size(r, _):
    box = r.fill()
    r.command("STATUS %s (MESSAGES SIZE)" % box)
    r.command("STATUS %s (SIZE UIDVALIDITY UIDNEXT UNSEEN DELETED)" % box)


@step("SAVEDATE", rb'SAVEDATE "WHEN-SAVED"', rb"\* SEARCH 1 2 3 4 5\r")
def step_savedate(r, _):
    box = r.fill()
    r.select(box)
    r.command("FETCH 1:* (SAVEDATE)")
    r.command("SEARCH SAVEDSINCE 1-Jan-2020")
    r.command("SEARCH SAVEDBEFORE 1-Jan-2020")
    r.command("SEARCH SAVEDATESUPPORTED")


@step("SNIPPET=FUZZY", rb'SNIPPET \(FUZZY "The plan')
def step_snippet(r, _):
    box = r.fill()
    r.select(box)
    r.command("FETCH 1:* (SNIPPET (FUZZY))")
    r.command("FETCH 1 (SNIPPET)")


@step("PREVIEW=FUZZY", rb'PREVIEW \(FUZZY "The plan')
def step_preview_fuzzy(r, _):
    box = r.fill()
    r.select(box)
    r.command("FETCH 1:* (PREVIEW (FUZZY))")


@step("PREVIEW", rb'PREVIEW "The plan')
def step_preview(r, _):
    box = r.fill()
    r.select(box)
    r.command("FETCH 1:* (PREVIEW (LAZY))")
    r.command("FETCH 1:* (PREVIEW)")
    r.command("FETCH 1:2 (PREVIEW (LAZY))")


@step("SORT", rb"\* SORT \d+ \d+")
def step_sort(r, _):
    r.command("EXAMINE INBOX")
    r.command("SORT (REVERSE ARRIVAL) UTF-8 ALL")
    r.command("UID SORT (SUBJECT DATE) UTF-8 SINCE 1-Jan-2019")
    r.command("SORT (FROM CC TO SIZE) US-ASCII UNSEEN")
    r.command("SORT (SUBJECT) X-NOSUCH ALL")


@step("SORT=DISPLAY", rb"\* SORT 1 5 2 4 3\r")
def step_sort_display(r, _):
    box = r.fill()
    r.select(box)
    r.command("SORT (DISPLAYFROM) UTF-8 ALL")
    r.command("SORT (FROM) UTF-8 ALL")
    r.command("UID SORT (DISPLAYTO REVERSE DISPLAYFROM) US-ASCII ALL")


@step("ESORT", rb'\* ESEARCH \(TAG "L{2000}"\) UID ALL', rb'\* ESEARCH \(TAG "e\.1"\) MIN')
def step_esort(r, _):
    r.command("EXAMINE INBOX")
    r.command("SORT RETURN (MIN MAX COUNT) (SUBJECT) UTF-8 ALL", tag="e.1")
    r.command("UID SORT RETURN (ALL) (DATE) UTF-8 SINCE 1-Jan-2019", tag=LONG_TAG)
    r.command("SORT RETURN (COUNT) (ARRIVAL) UTF-8 ALL", tag="e]2")
    r.command("SORT RETURN () (REVERSE SIZE) UTF-8 FLAGGED", tag="e[3")


@step("THREAD=", rb"\* THREAD \(")
def step_thread(r, algorithm):
    box = r.fill()
    r.select(box)
    r.command("THREAD %s UTF-8 ALL" % algorithm)
    r.command("UID THREAD %s UTF-8 NOT FLAGGED" % algorithm)
    r.command("EXAMINE INBOX")
    r.command("THREAD %s UTF-8 ALL" % algorithm)


@step("MULTIAPPEND", rb"APPENDUID \S+ 1:3\]", rb"^\+ ")
def step_multiappend(r, _):
    box = r.box()
    r.command("CREATE %s" % box)
    pieces = ["APPEND %s" % box]
    for flags, date, body in MESSAGES[:3]:
        pieces[-1] += ' %s "%s" {%d}' % (flags.decode(), date.decode(), len(body))
        pieces += [body, ""]
    r.command(*pieces)
    r.select(box)
    r.command("FETCH 1:* (FLAGS INTERNALDATE RFC822.SIZE)")


@step("URL-PARTIAL", rb"APPENDUID", rb"BODY\[\] \{\d+\}\r\nSubject: partial\r\n\r\nplan for t")
def step_url_partial(r, _):
    box = r.fill()
    uidvalidity, _ = r.select(box)
    header = b"Subject: partial\r\n\r\n"
    r.command(b"APPEND %s CATENATE (TEXT {%d}" % (box.encode(), len(header)), header,
              ' URL "/%s;UIDVALIDITY=%s/;UID=1/;SECTION=TEXT/;PARTIAL=4.10")' % (box, uidvalidity))
    r.command('APPEND %s CATENATE (URL "/%s;UIDVALIDITY=%s/;UID=1/;PARTIAL=0.30")' % (box, box, uidvalidity))
    r.command('APPEND %s CATENATE (URL "/%s;UIDVALIDITY=%s/;UID=1/;PARTIAL=99999.5")' % (box, box, uidvalidity))
    r.command("NOOP")
    r.command("FETCH 6:* (BODY.PEEK[])")


@step("CATENATE", rb"\[BADURL imap://testuser@SERVER/", rb"Relative URL required", rb"BODY\[\] \{\d+\}\r\nX-Cat: 1")
def step_catenate(r, _):
    # A URL naming the server the client connected to: Dovecot itself
    # direct, the proxy through it. Dovecot takes only relative URLs in
    # CATENATE and refuses every absolute one ("Relative URL required"),
    # even one naming itself or no port, so a client sees the same [BADURL]
    # either way: nothing for the proxy to rewrite here. (An upstream that
    # resolved absolute URLs naming itself would need the proxy to rewrite
    # their authority; this Dovecot can't show it.)
    box = r.fill()
    uidvalidity, _ = r.select(box)
    header = b"X-Cat: 1\r\n"
    r.command(b"APPEND %s CATENATE (TEXT {%d}" % (box.encode(), len(header)), header,
              ' URL "/%s;UIDVALIDITY=%s/;UID=2/;SECTION=HEADER" URL "/%s;UIDVALIDITY=%s/;UID=2/;SECTION=TEXT"'
              ' TEXT {9}' % (box, uidvalidity, box, uidvalidity), b"\r\nThanks.", ")")
    r.command('APPEND %s CATENATE (URL "imap://testuser@127.0.0.1:%d/%s;UIDVALIDITY=%s/;UID=1")' %
              (box, r.side.port, box, uidvalidity))
    r.command('APPEND %s CATENATE (URL "imap://testuser@127.0.0.1/%s/;UID=1/;SECTION=TEXT")' % (box, box))
    r.command('APPEND %s CATENATE (URL ";UID=3/;SECTION=1")' % box)
    r.command('APPEND %s CATENATE (URL "/%s;UIDVALIDITY=1/;UID=1")' % (box, box))
    r.command("NOOP")
    r.command("FETCH 6:* (BODY.PEEK[])")


@step("UNSELECT", rb"OK Unselect completed", rb"\* 5 EXISTS")
def step_unselect(r, _):
    box = r.fill()
    r.select(box)
    r.command(r"STORE 1:2 +FLAGS.SILENT (\Deleted)")
    r.command("UNSELECT")
    r.command("FETCH 1 (FLAGS)")
    r.select(box)
    r.command("FETCH 1:2 (FLAGS)")
    r.command("UNSELECT")
    r.command("UNSELECT")


@step("UIDPLUS", rb"OK \[COPYUID \S+ 2:3 1:2\]", rb"OK \[APPENDUID \S+ 6\]", rb"\* 1 EXPUNGE")
def step_uidplus(r, _):
    box = r.fill()
    r.command("CREATE %s" % r.box("-copy"))
    r.select(box)
    r.command("UID COPY 2:3 %s" % r.box("-copy"))
    r.command("COPY 5 %s" % r.box("-copy"))
    r.command(b"APPEND %s {%d}" % (box.encode(), len(LATE_MESSAGE)), LATE_MESSAGE)
    r.command(r"STORE 1:2 +FLAGS.SILENT (\Deleted)")
    r.command("UID EXPUNGE 1")
    r.command("UID EXPUNGE 1:*")
    r.command("UID COPY 99 %s" % r.box("-copy"))


@step("MOVE", rb"\* OK \[COPYUID \S+ 2:3 1:2\]", rb"\* 2 EXPUNGE")
def step_move(r, _):
    box = r.fill()
    r.command("CREATE %s" % r.box("-dest"))
    r.select(box)
    r.command("MOVE 2:3 %s" % r.box("-dest"))
    r.command("UID MOVE 5 %s" % r.box("-dest"))
    r.command("MOVE 1 %s" % r.box("-nosuch"))
    r.command("STATUS %s (MESSAGES UIDNEXT)" % r.box("-dest"))


@step("CONDSTORE", rb"OK \[MODIFIED 1\]", rb"\[HIGHESTMODSEQ \d+\]", rb"\* SEARCH [\d ]+ \(MODSEQ \d+\)")
def step_condstore(r, _):
    box = r.fill()
    _, highest = r.select(box, " (CONDSTORE)")
    r.command("FETCH 1:* (FLAGS) (CHANGEDSINCE 1)")
    r.command(r"STORE 1 +FLAGS (\Flagged)")
    r.command(r"STORE 1:2 (UNCHANGEDSINCE %s) +FLAGS (\Answered)" % highest)
    r.command(r"UID STORE 3 (UNCHANGEDSINCE 1) -FLAGS (\Seen)")
    r.command("SEARCH MODSEQ %s" % highest)
    r.command("FETCH 1:* (MODSEQ)")


@step("QRESYNC", rb"\* VANISHED \(EARLIER\) 2:3", rb"\* VANISHED 1\r")
def step_qresync(r, _):
    box = r.fill()
    r.command("ENABLE QRESYNC")
    uidvalidity, highest = r.select(box)
    r.command("UNSELECT")
    r.other("SELECT %s" % box)
    r.other(r"STORE 2:3 +FLAGS.SILENT (\Deleted)")
    r.other("EXPUNGE")
    r.other(r"STORE 2 +FLAGS (\Seen)")
    r.other("UNSELECT")
    r.select(box, " (QRESYNC (%s %s 1:5))" % (uidvalidity, highest))
    r.command("UID FETCH 1:* (FLAGS) (CHANGEDSINCE %s VANISHED)" % highest)
    r.command(r"STORE 1 +FLAGS.SILENT (\Deleted)")
    r.command("EXPUNGE")
    r.command("UNSELECT")
    r.command("SELECT %s (QRESYNC (%s %s 1:5 (1:2 4:5)))" % (box, uidvalidity, highest))
    r.command("SELECT %s (QRESYNC (1 %s))" % (box, highest))  # another UIDVALIDITY: a plain SELECT


@step("ESEARCH", rb'\* ESEARCH \(TAG "L{2000}"\) UID ALL', rb'\* ESEARCH \(TAG "q\.1"\) MIN 1 MAX \d+ COUNT')
def step_esearch(r, _):
    r.command("EXAMINE INBOX")
    r.command("SEARCH RETURN (MIN MAX COUNT) ALL", tag="q.1")
    r.command('UID SEARCH RETURN (ALL) SUBJECT "a"', tag=LONG_TAG)
    r.command("SEARCH RETURN (COUNT) ALL", tag="q]2")
    r.command("SEARCH RETURN () UNSEEN", tag="q[3")
    r.command('UID SEARCH RETURN (MIN) SUBJECT "no such subject at all"', tag="q-4")


@step("SEARCHRES", rb"\* 1 FETCH \(UID 1 FLAGS", rb"\* SEARCH 1 5\r")
def step_searchres(r, _):
    box = r.fill()
    r.select(box)
    r.command('SEARCH RETURN (SAVE) FROM "alice"')
    r.command("FETCH $ (UID FLAGS)")
    r.command("SEARCH UID $")
    r.command('UID SEARCH RETURN (SAVE MIN) SUBJECT "Re:"')
    r.command(r"UID STORE $ +FLAGS (\Draft)")
    r.command("SEARCH $ DRAFT")


@step("WITHIN", rb"\* SEARCH 6\r", rb"\* SEARCH 1 2 3 4 5\r")
def step_within(r, _):
    box = r.fill()
    r.command(b"APPEND %s {%d}" % (box.encode(), len(LATE_MESSAGE)), LATE_MESSAGE)  # INTERNALDATE now
    r.select(box)
    r.command("SEARCH YOUNGER 3600")
    r.command("SEARCH OLDER 3600")
    r.command("UID SEARCH RETURN (COUNT) YOUNGER 3600")  # not OLDER 1: the two sides may straddle a second


@step("CONTEXT=SEARCH", rb'\* ESEARCH \(TAG "u:1\.a"\) ADDTO \(0 6\)', rb'\* ESEARCH \(TAG "u:1\.a"\) REMOVEFROM')
def step_context_search(r, _):
    box = r.fill()
    r.select(box)
    r.command('SEARCH RETURN (UPDATE) FROM "alice"', tag="u:1.a")
    r.command('UID SEARCH RETURN (UPDATE COUNT) UNSEEN', tag=LONG_TAG)
    r.other(b"APPEND %s {%d}" % (box.encode(), len(LATE_MESSAGE)), LATE_MESSAGE)
    r.command("NOOP")  # the update comes with the EXISTS, at this NOOP
    r.other("SELECT %s" % box)
    r.other(r"STORE 1 +FLAGS.SILENT (\Deleted)")
    r.other("EXPUNGE")
    r.command("NOOP")
    r.command('CANCELUPDATE "u:1.a"')
    r.command('CANCELUPDATE "%s"' % LONG_TAG)
    r.other(b"APPEND %s {%d}" % (box.encode(), len(LATE_MESSAGE)), LATE_MESSAGE)
    r.command("NOOP")


@step("BINARY", rb"BINARY\[2\] ~\{%d\}\r\n\x00\x01" % len(BINARY_PART), rb"^\+ ",
      rb"BINARY\.SIZE\[2\] %d" % len(BINARY_PART))
def step_binary(r, _):
    box = r.fill()
    r.select(box)
    r.command("FETCH 3 (BINARY.PEEK[2] BINARY.SIZE[2])")
    r.command("FETCH 3 (BINARY.PEEK[2]<0.8> BINARY.PEEK[1])")
    r.command("UID FETCH 3 (BINARY.SIZE[1] BINARY.PEEK[2.MIME])")
    binary = (b"Subject: binary\r\nMIME-Version: 1.0\r\nContent-Type: application/octet-stream\r\n"
              b"Content-Transfer-Encoding: binary\r\n\r\n" + BINARY_PART)
    r.command(b"APPEND %s ~{%d}" % (box.encode(), len(binary)), binary)
    r.command(b"APPEND %s ~{%d+}" % (box.encode(), len(binary)), binary)
    r.command("NOOP")
    r.command("FETCH 6:7 (BINARY.PEEK[1] BINARY.SIZE[1] RFC822.SIZE)")
    r.command("FETCH 6 (BODY.PEEK[])")


@step("I18NLEVEL=1", rb"\* SEARCH 5\r")
def step_i18nlevel(r, _):
    box = r.fill()
    r.select(box)
    cafe = "CAFÉ CRÈME".encode()
    r.command(b"SEARCH CHARSET UTF-8 SUBJECT {%d}" % len(cafe), cafe, b"")
    r.command(b"SEARCH CHARSET UTF-8 BODY {%d+}" % len("BRÛLÉE".encode()), "BRÛLÉE".encode(), b"")
    r.command("SORT (SUBJECT) UTF-8 ALL")
    r.command("COMPARATOR")


@step("LITERAL+", rb"OK \[APPENDUID \S+ 1\]", rb"NO \[TRYCREATE\]")
def step_literal_plus(r, _):
    box = r.box()
    r.command(b"CREATE {%d+}" % len(box), box.encode(), b"")
    r.command(b"APPEND %s {%d+}" % (box.encode(), len(LATE_MESSAGE)), LATE_MESSAGE)
    # refused commands: the literal is still the command's, never a command
    decoy = b"x1 CREATE %s\r\n" % r.box("-decoy").encode()
    r.command(b"APPEND %s {%d+}" % (r.box("-nosuch").encode(), len(decoy)), decoy)
    r.command("NOOP")
    big = (b"Subject: big\r\n\r\n" + decoy * 20000)[:400000]
    r.command(b"APPEND %s {%d+}" % (r.box("-nosuch").encode(), len(big)), big)
    r.command("NOOP")
    r.command('LIST "" %s*' % r.box())
    r.command(b"STATUS {%d+}" % len(box), box.encode(), b" (MESSAGES)")


def test_capabilities(direct, proxy, names):
    """The post-login capabilities: the proxy's are Dovecot's filtered by
    the carried list, and hold every extension of the issue."""
    lists = []
    for side in (direct, proxy):
        conn = Conn(side.port)
        m = re.match(r"login OK \[CAPABILITY ([^\]]*)\]", conn.login)
        lists.append(m.group(1).split() if m else [])
        conn.close()
    want = [c for c in lists[0] if is_carried(c, names)]
    check("the carried list was read from daemon/upstream.c (%d names)" % len(names), len(names) > 30, names)
    check("the proxy's post-login CAPABILITY is Dovecot's, filtered by the carried list",
          lists[1] == want, (lists[1], want))
    missing = [c for c in ISSUE_CAPABILITIES if c not in lists[1]]
    check("... and holds every extension of issue 10", not missing, missing)
    return lists[1]


def diff(direct, proxy):
    """A unified diff of two normalised transcripts, one repr per response, trimmed."""
    def show(responses):
        return [repr(r)[:300] for r in responses]
    lines = list(difflib.unified_diff(show(direct), show(proxy), "direct", "proxy", lineterm="", n=2))
    return "\n" + "\n".join(lines[:60])


def run_step(number, capability, function, argument, sides):
    """Runs one step on both sides, compares, and checks what it shows."""
    name = "step %d, %s (%s)" % (number, capability, function.__name__)
    transcripts = []
    for side in sides:
        try:
            run = Run(side, number)
        except Exception as e:
            transcripts.append([b"<no session: %r>" % e])
            continue
        try:
            function(run, argument)
        except Exception as e:
            run.out.append(b"<step stopped: %s>" % repr(e).encode())
        finally:
            run.close()
        transcripts.append(side.normalise(run.out))
    direct, proxy = transcripts
    check("%s: the same responses direct and through imapcached (%d)" % (name, len(direct)),
          direct == proxy, diff(direct, proxy))
    whole = b"".join(direct)
    for pattern in function.shows:
        check("%s: Dovecot's answer shows %s" % (name, pattern.decode(errors="replace")),
              re.search(pattern, whole, re.M) is not None, whole[-400:])


def main():
    started = time.monotonic()
    number = 0
    names = carried_names()
    daemon = Daemon(upstream_dovecot(), log_level="info")
    try:
        direct = Side("direct", PORT, capability_filter=lambda c: is_carried(c, names))
        proxy = Side("proxy", daemon.port)
        advertised = test_capabilities(direct, proxy, names)
        for capability in advertised:
            steps = steps_for(capability)
            check("%s, advertised, has a differential step" % capability, steps, sorted(STEPS))
            for function, argument in steps:
                number += 1
                run_step(number, capability, function, argument if argument is not None else capability,
                         (direct, proxy))
    finally:
        daemon.stop()
    print("%d steps in %.1f s" % (number, time.monotonic() - started))
    return summary()


if __name__ == "__main__":
    sys.exit(main())
