# SPDX-License-Identifier: MIT
"""loaddriver: many concurrent IMAP clients with a mixed workload, every
answer checked (issue 13 item 3). Used by tests/integration/test-load.py
(a short run in make check) and tests/bench/bench-load.py (200 clients,
through imapcached beside straight to Dovecot).

Each client is bound to one of with-dovecot's load accounts
(IMAPTEST_LOAD_USERS, each a copy of the corpus as INBOX) and loops until
the deadline over: SELECT/EXAMINE; FETCH of every kind by UID and by
sequence number (FLAGS, UID, ENVELOPE, BODYSTRUCTURE, BODY, RFC822.SIZE,
INTERNALDATE, HEADER.FIELDS(.NOT), HEADER, TEXT, part 1 and 1.MIME,
BODY.PEEK[], BODY[] and partials); SEARCH on sizes; STORE of flags and
keywords; APPEND into the run's Kept mailbox (nobody expunges it) and of
scratch messages into INBOX, which are later expunged, moved to the run's
Moved mailbox, or kept; IDLE; NOOP; LOGOUT and a new LOGIN.

What is checked while it runs: a corpus message's BODY[] hashes to the
manifest's SHA-256 and its partials are slices of it; every other item of
a corpus message equals Dovecot's own answer, fetched straight from
Dovecot before the run; a scratch message's body is the one its X-Load-Id
names; FETCH n of a corpus message (n <= corpus count: scratch messages
come after) carries UID n; SEARCH LARGER/SMALLER over the corpus's UIDs
equals the manifest's sizes; APPENDUIDs are unique; every command ends in
OK within COMMAND_WAIT seconds (scratch messages are moved and marked
\\Deleted only by the client that appended them, so none is gone under
another's command).
After the run, on connections straight to Dovecot and through the target:
Kept holds exactly the messages whose APPEND said OK, each once, at its
APPENDUID; every scratch message a client moved is in Moved once and not
in INBOX, every one it kept is in INBOX once; no scratch message
marked \\Deleted and expunged survives; and both sides see the same
message list and flags in INBOX, Kept and Moved.

run() returns a Result: the failures (each a command sequence, what was
expected and what came), the commands answered, and their rate."""
import asyncio
import hashlib
import json
import os
import random
import re
import time

from proxyfixture import ENV, HOST, MANIFEST, PORT, quote

COMMAND_WAIT = 30  # seconds: the longest one command may take under load before it counts as a hang
LOAD_USERS = int(ENV.get("IMAPTEST_LOAD_USERS", "0") or 0)
LOAD_PREFIX = ENV.get("IMAPTEST_LOAD_USER_PREFIX", "loaduser")
LOAD_PASS = ENV.get("IMAPTEST_LOAD_PASS", "loadpass")
FAILURES_KEPT = 50  # failures reported in full: the first ones say enough
REFERENCE_ITEMS = ("ENVELOPE", "BODYSTRUCTURE", "BODY", "RFC822.SIZE", "INTERNALDATE",
                   "BODY.PEEK[HEADER.FIELDS (SUBJECT FROM DATE MESSAGE-ID)]",
                   "BODY.PEEK[HEADER.FIELDS.NOT (RECEIVED SUBJECT)]", "BODY.PEEK[HEADER]",
                   "BODY.PEEK[TEXT]", "BODY.PEEK[1]", "BODY.PEEK[1.MIME]", "RFC822.HEADER")
LITERAL_END = re.compile(rb"\{(\d+)\}\r\n$")


def accounts(count=None):
    """The load accounts (user, password) with-dovecot made, the first
    count of them (default: all)."""
    users = ["%s%02d" % (LOAD_PREFIX, i) for i in range(1, LOAD_USERS + 1)]
    return [(u, LOAD_PASS) for u in users[:count]]


def served(data):
    """data as IMAP serves it in BODY[]: bare LFs as CRLF."""
    return re.sub(rb"(?<!\r)\n", b"\r\n", data)


class Corpus:
    """The manifest and each message's bytes as served, by UID."""

    def __init__(self, manifest=MANIFEST):
        with open(manifest) as f:
            self.manifest = json.load(f)
        base = os.path.join(os.path.dirname(manifest), "Maildir")
        self.messages = {}
        self.sizes = {}
        for m in self.manifest["messages"]:
            with open(os.path.join(base, m["file"]), "rb") as f:
                self.messages[m["uid"]] = served(f.read())
            self.sizes[m["uid"]] = m["rfc822_size"]
        self.sha256 = {m["uid"]: m["sha256"] for m in self.manifest["messages"]}
        self.count = len(self.messages)
        for uid, data in self.messages.items():
            if hashlib.sha256(data).hexdigest() != self.sha256[uid]:
                raise RuntimeError("corpus message %d does not hash to the manifest's SHA-256" % uid)


def scratch_message(token):
    """The message whose X-Load-Id is token: its bytes depend only on it."""
    rng = random.Random(token)
    lines = ["line %d of %s: %s" % (i, token, "x" * rng.randrange(0, 70)) for i in range(rng.randrange(1, 300))]
    return ("From: Load <load@example.invalid>\r\nTo: <load@example.invalid>\r\nSubject: load %s\r\n"
            "Message-ID: <%s@load.invalid>\r\nX-Load-Id: %s\r\nDate: Fri, 04 Dec 2026 12:00:00 +0000\r\n"
            "\r\n%s\r\n" % (token, token, token, "\r\n".join(lines))).encode()


# A small parser of response data: lists, strings (quoted or literal),
# NIL, atoms (with a [section] and <origin> kept in the atom).
class Atom(str):
    pass


def parse_value(b, i):
    c = b[i:i + 1]
    if c == b"(":
        items, i = [], i + 1
        while True:
            while b[i:i + 1] == b" ":
                i += 1
            if b[i:i + 1] == b")":
                return items, i + 1
            if i >= len(b):
                raise ValueError("list not closed")
            value, i = parse_value(b, i)
            items.append(value)
    if c == b'"':
        out, i = bytearray(), i + 1
        while b[i:i + 1] != b'"':
            if i >= len(b):
                raise ValueError("string not closed")
            if b[i:i + 1] == b"\\":
                i += 1
            out += b[i:i + 1]
            i += 1
        return bytes(out), i + 1
    if c in (b"{", b"~"):
        start = b.index(b"{", i)
        end = b.index(b"}", start)
        size = int(b[start + 1:end])
        data_at = end + 3  # "}\r\n"
        return b[data_at:data_at + size], data_at + size
    start = i
    while i < len(b) and b[i:i + 1] not in (b" ", b")", b"\r"):
        if b[i:i + 1] == b"[":
            i = b.index(b"]", i)
        i += 1
    atom = b[start:i].decode()
    if atom.upper() == "NIL":
        return None, i
    if start == i:
        raise ValueError("nothing to read at %d" % i)
    return Atom(atom), i


def parse_fetch(response):
    """(sequence number, {ITEM NAME: value}) of an untagged FETCH response
    (bytes), or None when it is not one."""
    m = re.match(rb"\* (\d+) FETCH ", response)
    if m is None:
        return None
    values, _ = parse_value(response, m.end())
    items = {}
    for k in range(0, len(values) - 1, 2):
        items[str(values[k]).upper()] = values[k + 1]
    return int(m.group(1)), items


def response_name(item):
    """The name a FETCH response gives item: BODY.PEEK[X]<a.b> is BODY[X]<a>."""
    name = item.upper().replace(".PEEK[", "[")
    return re.sub(r"<(\d+)\.\d+>$", r"<\1>", name)


class Failure(Exception):
    pass


class Conn:
    """One asyncio IMAP connection; history keeps its last commands."""

    def __init__(self, name):
        self.name = name
        self.tag = 0
        self.history = []
        self.reader = self.writer = None

    async def open(self, port, host="127.0.0.1"):
        self.reader, self.writer = await asyncio.open_connection(host, port, limit=1 << 22)
        greeting = await self.read_response()
        if not greeting.startswith(b"* OK"):
            raise Failure("greeting: %r" % greeting[:200])

    async def read_response(self):
        data = await self.reader.readuntil(b"\r\n")
        while True:
            m = LITERAL_END.search(data)
            if m is None:
                return data
            data += await self.reader.readexactly(int(m.group(1)))
            data += await self.reader.readuntil(b"\r\n")

    def note(self, text):
        self.history.append(text[:160])
        del self.history[:-8]

    async def command(self, text, literal=None):
        """(untagged responses, the tagged line) of text; with literal, it
        is sent as a synchronizing literal after text."""
        self.tag += 1
        tag = b"L%d" % self.tag
        self.note(text)
        return await asyncio.wait_for(self._exchange(tag, text, literal), COMMAND_WAIT)

    async def _exchange(self, tag, text, literal):
        if literal is None:
            self.writer.write(tag + b" " + text.encode() + b"\r\n")
        else:
            self.writer.write(tag + b" " + text.encode() + b" {%d}\r\n" % len(literal))
            await self.writer.drain()
            while True:
                line = await self.read_response()
                if line.startswith(b"+"):
                    break
                if line.startswith(tag + b" "):
                    return [], line
            self.writer.write(literal + b"\r\n")
        await self.writer.drain()
        untagged = []
        while True:
            response = await self.read_response()
            if response.startswith(tag + b" "):
                return untagged, response
            untagged.append(response)

    async def idle(self, seconds):
        self.tag += 1
        tag = b"L%d" % self.tag
        self.note("IDLE (%.1f s)" % seconds)
        self.writer.write(tag + b" IDLE\r\n")
        await self.writer.drain()
        line = await asyncio.wait_for(self.read_response(), COMMAND_WAIT)
        while line.startswith(b"* "):
            line = await asyncio.wait_for(self.read_response(), COMMAND_WAIT)
        if not line.startswith(b"+"):
            return [], line
        await asyncio.sleep(seconds)
        self.writer.write(b"DONE\r\n")
        await self.writer.drain()

        async def rest():
            untagged = []
            while True:
                response = await self.read_response()
                if response.startswith(tag + b" "):
                    return untagged, response
                untagged.append(response)
        return await asyncio.wait_for(rest(), COMMAND_WAIT)

    def close(self):
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def uid_set(uids):
    return ",".join(str(u) for u in sorted(uids))


class Account:
    """What the run knows of one account: scratch messages by fate, Kept's
    APPENDUIDs."""

    def __init__(self, user, password):
        self.user, self.password = user, password
        self.kept = {}          # token -> (uidvalidity, uid) of each APPEND to Kept that said OK
        self.appenduids = set()  # (mailbox, uidvalidity, uid): every APPENDUID seen
        self.moved, self.stayed, self.deleted = set(), set(), set()  # scratch tokens by fate


class Run:
    """One run of the workload against port (imapcached or Dovecot)."""

    def __init__(self, port, corpus, reference, account_list, clients, seconds, label, seed=1):
        self.port, self.corpus, self.reference = port, corpus, reference
        self.accounts = [Account(u, p) for u, p in account_list]
        self.clients, self.seconds, self.label, self.seed = clients, seconds, label, seed
        self.kept_box, self.moved_box = "Kept-%s" % label, "Moved-%s" % label
        self.failures = []
        self.failure_count = 0
        self.commands = 0
        self.counts = {}

    def fail(self, conn, what, expected, got):
        self.failure_count += 1
        if len(self.failures) < FAILURES_KEPT:
            self.failures.append("%s: %s\n    commands: %s\n    expected: %s\n    got: %s" % (
                conn.name if conn else "-", what, " | ".join(conn.history) if conn else "-",
                str(expected)[:400], str(got)[:400]))

    async def login(self, conn, account):
        await conn.open(self.port)
        _, ok = await conn.command("LOGIN %s %s" % (quote(account.user), quote(account.password)))
        if b" OK" not in ok[:12]:
            raise Failure("LOGIN: %r" % ok)

    def counted(self, kind):
        self.commands += 1
        self.counts[kind] = self.counts.get(kind, 0) + 1

    async def ok(self, conn, kind, text, literal=None):
        untagged, tagged = await conn.command(text, literal)
        self.counted(kind)
        status = tagged.split(b" ", 2)[1:2]
        if status != [b"OK"]:
            self.fail(conn, "%s not OK" % kind, "OK", tagged)
        return untagged, tagged

    # The checks of FETCH answers.
    def check_item(self, conn, uid, name, value):
        if name == "UID" or name == "FLAGS" or name == "MODSEQ":
            return
        if uid > self.corpus.count:
            self.check_scratch_item(conn, uid, name, value)
            return
        body = self.corpus.messages[uid]
        if name in ("BODY[]", "RFC822"):
            if value is None or hashlib.sha256(value).hexdigest() != self.corpus.sha256[uid]:
                self.fail(conn, "BODY[] of UID %d" % uid, "sha256 %s (%d bytes)" % (
                    self.corpus.sha256[uid], len(body)), "%d bytes: %r" % (len(value or b""), (value or b"")[:80]))
            return
        m = re.match(r"BODY\[\]<(\d+)>$", name)
        if m is not None:
            return self.check_partial(conn, uid, name, value, body, int(m.group(1)))
        m = re.match(r"BODY\[TEXT\]<(\d+)>$", name)
        if m is not None:
            text = self.reference[uid].get("BODY[TEXT]")
            return self.check_partial(conn, uid, name, value, text, int(m.group(1)))
        want = self.reference[uid].get(name, KeyError)
        if want is KeyError:
            self.fail(conn, "item %s of UID %d" % (name, uid), "an item asked for", "one not asked for")
        elif value != want:
            self.fail(conn, "%s of UID %d" % (name, uid), want, value)

    def check_partial(self, conn, uid, name, value, whole, origin):
        length = self.partial_lengths.get(conn, {}).get((uid, name))
        want = whole[origin:origin + length] if length is not None else None
        if length is not None and value != want:
            self.fail(conn, "%s of UID %d (length %d)" % (name, uid, length), want[:100], (value or b"")[:100])

    def check_scratch_item(self, conn, uid, name, value):
        if name not in ("BODY[]", "RFC822.SIZE"):
            return
        if name == "RFC822.SIZE":
            return  # checked with the body when both are asked for
        m = re.search(rb"\r\nX-Load-Id: (\S+)\r\n", value or b"")
        if m is None or value != scratch_message(m.group(1).decode()):
            self.fail(conn, "BODY[] of scratch UID %d" % uid, "the message its X-Load-Id names",
                      (value or b"")[:200])

    def check_fetch(self, conn, untagged, items, by_seq=None):
        seen = set()
        names = [response_name(i) for i in items]
        for response in untagged:
            try:
                parsed = parse_fetch(response)
            except (ValueError, IndexError) as e:
                self.fail(conn, "a FETCH response that parses", "IMAP syntax", "%s: %r" % (e, response[:300]))
                continue
            if parsed is None:
                continue
            seq, values = parsed
            uid = values.get("UID")
            if uid is None:
                continue  # an unsolicited FLAGS update (another session's STORE)
            uid = int(uid)
            if by_seq is not None and seq <= self.corpus.count and uid != seq:
                self.fail(conn, "FETCH %d" % seq, "UID %d (corpus messages keep their numbers)" % seq, uid)
            for name in names:
                if name in values:
                    self.check_item(conn, uid, name, values[name])
                    seen.add(uid)
        return seen

    # The workload's pieces; each takes the client's state.
    async def op_fetch(self, c):
        rng = c.rng
        kinds = [["FLAGS"], ["ENVELOPE"], ["BODYSTRUCTURE"], ["BODY"], ["RFC822.SIZE", "INTERNALDATE"],
                 ["BODY.PEEK[HEADER.FIELDS (SUBJECT FROM DATE MESSAGE-ID)]"],
                 ["BODY.PEEK[HEADER.FIELDS.NOT (RECEIVED SUBJECT)]"], ["BODY.PEEK[HEADER]", "RFC822.HEADER"],
                 ["BODY.PEEK[TEXT]"], ["BODY.PEEK[1]", "BODY.PEEK[1.MIME]"], ["BODY.PEEK[]"], ["BODY[]"],
                 ["PARTIAL"], ["TEXTPARTIAL"], ["FLAGS", "ENVELOPE", "BODYSTRUCTURE", "RFC822.SIZE"]]
        items = list(rng.choice(kinds))
        big = any(i in ("BODY.PEEK[]", "BODY[]", "BODY.PEEK[TEXT]", "BODY.PEEK[1]") for i in items)
        uids = rng.sample(range(1, self.corpus.count + 1), rng.randint(1, 2 if big else 12))
        lengths = self.partial_lengths.setdefault(c.conn, {})
        lengths.clear()
        if items == ["PARTIAL"] or items == ["TEXTPARTIAL"]:
            text = items == ["TEXTPARTIAL"]
            origin, length = rng.choice([0, 1, 100, 5000]), rng.choice([1, 10, 200, 70000])
            items = ["BODY.PEEK[%s]<%d.%d>" % ("TEXT" if text else "", origin, length)]
            for u in uids:
                lengths[(u, response_name(items[0]))] = length
        by_seq = rng.random() < 0.3
        command = "%sFETCH %s (UID %s)" % ("" if by_seq else "UID ", uid_set(uids), " ".join(items))
        untagged, _ = await self.ok(c.conn, "FETCH", command)
        seen = self.check_fetch(c.conn, untagged, items, by_seq)
        if items != ["FLAGS"] and seen != set(uids):
            self.fail(c.conn, "FETCH answered every message asked for", sorted(uids), sorted(seen))

    async def op_fetch_scratch(self, c):
        if not c.mine:
            return
        token, uid = c.rng.choice(sorted(c.mine.items()))
        untagged, _ = await self.ok(c.conn, "FETCH", "UID FETCH %d (UID RFC822.SIZE BODY.PEEK[])" % uid)
        seen = self.check_fetch(c.conn, untagged, ["BODY.PEEK[]"])
        if seen != {uid}:
            self.fail(c.conn, "UID FETCH of our own scratch message %s" % token, uid, sorted(seen))

    async def op_search(self, c):
        size = c.rng.choice(sorted(self.corpus.sizes.values()))
        key = c.rng.choice(["LARGER", "SMALLER"])
        untagged, _ = await self.ok(c.conn, "SEARCH", "UID SEARCH UID 1:%d %s %d" % (self.corpus.count, key, size))
        got = set()
        for r in untagged:
            if r.startswith(b"* SEARCH"):
                got |= {int(x) for x in r[8:].split()}
        want = {u for u, s in self.corpus.sizes.items() if (s > size if key == "LARGER" else s < size)}
        if got != want:
            self.fail(c.conn, "SEARCH %s %d" % (key, size), sorted(want)[:40], sorted(got)[:40])

    async def op_store(self, c):
        uids = c.rng.sample(range(1, self.corpus.count + 1), c.rng.randint(1, 5))
        flags = c.rng.choice(["\\Flagged", "$Load", "\\Answered $Load2", "\\Seen"])
        sign = c.rng.choice("+-")
        silent = c.rng.choice(["", ".SILENT"])
        await self.ok(c.conn, "STORE", "UID STORE %s %sFLAGS%s (%s)" % (uid_set(uids), sign, silent, flags))

    def token(self, c, kind):
        c.counter += 1
        return "%s-%s-c%d-%d" % (self.label, kind, c.number, c.counter)

    async def op_append_kept(self, c):
        token = self.token(c, "kept")
        untagged, tagged = await self.ok(c.conn, "APPEND", "APPEND %s (\\Seen)" % self.kept_box,
                                         scratch_message(token))
        m = re.search(rb"\[APPENDUID (\d+) (\d+)\]", tagged)
        if m is None:
            if b" OK" in tagged[:12]:
                self.fail(c.conn, "APPEND to Kept", "[APPENDUID ...]", tagged)
            return
        key = (self.kept_box, int(m.group(1)), int(m.group(2)))
        if key in c.account.appenduids:
            self.fail(c.conn, "APPENDUID unique", "a new UID", key)
        c.account.appenduids.add(key)
        c.account.kept[token] = key[1:]

    async def op_append_scratch(self, c):
        if not c.selected:
            return
        token = self.token(c, "scratch")
        _, tagged = await self.ok(c.conn, "APPEND", "APPEND INBOX", scratch_message(token))
        m = re.search(rb"\[APPENDUID (\d+) (\d+)\]", tagged)
        if m is None:
            if b" OK" in tagged[:12]:
                self.fail(c.conn, "APPEND to INBOX", "[APPENDUID ...]", tagged)
            return
        key = ("INBOX", int(m.group(1)), int(m.group(2)))
        if key in c.account.appenduids:
            self.fail(c.conn, "APPENDUID unique", "a new UID", key)
        c.account.appenduids.add(key)
        c.mine[token] = key[2]

    async def op_settle_scratch(self, c):
        """One of our scratch messages: expunged, moved, or kept for good."""
        if not c.mine or c.examined:
            return
        token = c.rng.choice(sorted(c.mine))
        uid = c.mine.pop(token)
        fate = c.rng.choice(["delete", "uidexpunge", "move", "stay"])
        if fate == "stay":
            c.account.stayed.add(token)
        elif fate == "move":
            _, tagged = await self.ok(c.conn, "MOVE", "UID MOVE %d %s" % (uid, self.moved_box))
            if b" OK" in tagged[:12]:
                c.account.moved.add(token)
        else:
            _, stored = await self.ok(c.conn, "STORE", "UID STORE %d +FLAGS.SILENT (\\Deleted)" % uid)
            if fate == "uidexpunge":
                _, tagged = await self.ok(c.conn, "EXPUNGE", "UID EXPUNGE %d" % uid)
            else:
                _, tagged = await self.ok(c.conn, "EXPUNGE", "EXPUNGE")
            if b" OK" in stored[:12] and b" OK" in tagged[:12]:
                c.account.deleted.add(token)

    async def op_select(self, c):
        if c.mine:
            return  # keep our scratch messages' mailbox selected
        c.examined = c.rng.random() < 0.2
        untagged, _ = await self.ok(c.conn, "SELECT", "%s INBOX" % ("EXAMINE" if c.examined else "SELECT"))
        exists = [int(r.split()[1]) for r in untagged if r.endswith(b" EXISTS\r\n")]
        if not exists or exists[0] < self.corpus.count:
            self.fail(c.conn, "SELECT's EXISTS", ">= %d" % self.corpus.count, exists)
        c.selected = True

    async def op_idle(self, c):
        untagged, tagged = await c.conn.idle(c.rng.uniform(0.05, 0.5))
        self.counted("IDLE")
        if not tagged.split(b" ", 2)[1:2] == [b"OK"]:
            self.fail(c.conn, "IDLE not OK", "OK", tagged)

    async def op_noop(self, c):
        await self.ok(c.conn, "NOOP", "NOOP")

    async def op_relogin(self, c):
        if c.mine:
            return
        await self.ok(c.conn, "LOGOUT", "LOGOUT")
        c.conn.close()
        c.conn = Conn(c.conn.name)
        await self.login(c.conn, c.account)
        self.counted("LOGIN")
        c.selected = False
        await self.op_select(c)

    OPS = (("op_fetch", 40), ("op_fetch_scratch", 4), ("op_search", 6), ("op_store", 10), ("op_append_kept", 5),
           ("op_append_scratch", 6), ("op_settle_scratch", 6), ("op_select", 3), ("op_idle", 3),
           ("op_noop", 4), ("op_relogin", 2))

    async def client(self, number, deadline):
        class State:
            pass
        c = State()
        c.number, c.counter = number, 0
        c.rng = random.Random("%s-%d-%d" % (self.label, self.seed, number))
        c.account = self.accounts[number % len(self.accounts)]
        c.mine = {}  # our scratch messages not settled yet: token -> UID
        c.selected = c.examined = False
        c.conn = Conn("client %d (%s)" % (number, c.account.user))
        names = [n for n, w in self.OPS for _ in range(w)]
        try:
            await asyncio.sleep(c.rng.uniform(0, 0.5))
            await self.login(c.conn, c.account)
            await self.op_select(c)
            while time.monotonic() < deadline:
                name = c.rng.choice(names)
                if c.examined and name in ("op_append_scratch", "op_store"):
                    continue
                await getattr(self, name)(c)
            for token in list(c.mine):
                c.account.stayed.add(token)
            await self.ok(c.conn, "LOGOUT", "LOGOUT")
        except asyncio.TimeoutError:
            self.fail(c.conn, "an answer within %d s" % COMMAND_WAIT, "the tagged response", "nothing (a hang)")
        except (Failure, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
            self.fail(c.conn, "the connection to stay up", "answers", repr(e)[:300])
        finally:
            for token in c.mine:
                c.account.stayed.add(token)
            c.conn.close()

    async def prepare(self):
        for account in self.accounts:
            conn = Conn("setup")
            await self.login(conn, account)
            for box in (self.kept_box, self.moved_box):
                await conn.command("CREATE %s" % box)
            await conn.command("LOGOUT")
            conn.close()

    async def main(self):
        self.partial_lengths = {}
        await self.prepare()
        started = time.monotonic()
        deadline = started + self.seconds
        await asyncio.gather(*(self.client(n, deadline) for n in range(self.clients)))
        self.elapsed = time.monotonic() - started


async def mailbox_state(port, account, box):
    """{UID: (frozenset of flags, X-Load-Id or None)} of box, and its
    UIDVALIDITY, seen on a new connection to port."""
    conn = Conn("final %s %s" % (account.user, box))
    await conn.open(port)
    await conn.command("LOGIN %s %s" % (quote(account.user), quote(account.password)))
    untagged, tagged = await conn.command("EXAMINE %s" % box)
    validity = None
    for r in untagged:
        m = re.search(rb"\[UIDVALIDITY (\d+)\]", r)
        if m:
            validity = int(m.group(1))
    untagged, tagged = await conn.command("UID FETCH 1:* (UID FLAGS BODY.PEEK[HEADER.FIELDS (X-LOAD-ID)])")
    state = {}
    for r in untagged:
        parsed = parse_fetch(r)
        if parsed is None:
            continue
        values = parsed[1]
        header = values.get("BODY[HEADER.FIELDS (X-LOAD-ID)]") or b""
        m = re.search(rb"X-Load-Id: (\S+)", header)
        # \Recent belongs to one session by definition: left out
        state[int(values["UID"])] = (frozenset(str(f) for f in values["FLAGS"] if f.upper() != "\\RECENT"),
                                     m.group(1).decode() if m else None)
    await conn.command("LOGOUT")
    conn.close()
    return state, validity


async def reference_answers(port, account, corpus):
    """{UID: {ITEM NAME: value}} of REFERENCE_ITEMS for every corpus
    message, straight from Dovecot (port)."""
    conn = Conn("reference")
    await conn.open(port)
    await conn.command("LOGIN %s %s" % (quote(account[0]), quote(account[1])))
    await conn.command("EXAMINE INBOX")
    reference = {}
    for first in range(1, corpus.count + 1, 20):
        last = min(corpus.count, first + 19)
        untagged, tagged = await conn.command("UID FETCH %d:%d (UID %s)" % (first, last, " ".join(REFERENCE_ITEMS)))
        if b" OK" not in tagged[:12]:
            raise RuntimeError("reference FETCH: %r" % tagged)
        for r in untagged:
            parsed = parse_fetch(r)
            if parsed is not None and "UID" in parsed[1]:
                reference[int(parsed[1]["UID"])] = parsed[1]
    conn.close()
    if len(reference) != corpus.count:
        raise RuntimeError("reference FETCH answered %d of %d messages" % (len(reference), corpus.count))
    return reference


async def final_checks(run, direct_port):
    """The checks after the run (see the module's docstring)."""
    for account in run.accounts:
        views = {}
        for box in ("INBOX", run.kept_box, run.moved_box):
            direct, validity = await mailbox_state(direct_port, account, box)
            via, _ = await mailbox_state(run.port, account, box)
            views[box] = direct
            if direct != via:
                diff = sorted((u, direct.get(u), via.get(u)) for u in set(direct) | set(via)
                              if direct.get(u) != via.get(u))
                run.fail(None, "%s %s through the target equals direct (UID, direct, through)" % (
                    account.user, box), "no differences", diff[:10])
        kept = {}
        for uid, (_, token) in views[run.kept_box].items():
            kept.setdefault(token, []).append(uid)
        for token, key in account.kept.items():
            if kept.get(token) != [key[1]]:
                run.fail(None, "%s: APPEND %s to Kept" % (account.user, token), "once at UID %d" % key[1],
                         kept.get(token))
        extra = set(kept) - set(account.kept)
        if extra:
            run.fail(None, "%s: Kept holds only what APPEND said OK to" % account.user, "nothing else", sorted(extra)[:10])
        inbox = {}
        for uid, (_, token) in views["INBOX"].items():
            if token is not None:
                inbox.setdefault(token, []).append(uid)
        moved = {}
        for uid, (_, token) in views[run.moved_box].items():
            moved.setdefault(token, []).append(uid)
        for token in account.moved:
            if len(moved.get(token, [])) != 1 or token in inbox:
                run.fail(None, "%s: moved %s" % (account.user, token), "once in Moved, not in INBOX",
                         "Moved %s, INBOX %s" % (moved.get(token), inbox.get(token)))
        for token in account.stayed:
            if len(inbox.get(token, [])) != 1:
                run.fail(None, "%s: scratch %s kept in INBOX" % (account.user, token), "once", inbox.get(token))
        for token in account.deleted:
            if token in inbox or token in moved:
                run.fail(None, "%s: scratch %s expunged" % (account.user, token), "gone",
                         "INBOX %s, Moved %s" % (inbox.get(token), moved.get(token)))
        corpus_uids = {u for u in views["INBOX"] if u <= run.corpus.count}
        if corpus_uids != set(range(1, run.corpus.count + 1)):
            run.fail(None, "%s: the corpus messages still in INBOX" % account.user, run.corpus.count, len(corpus_uids))


class Result:
    def __init__(self, run):
        self.failures, self.failure_count = run.failures, run.failure_count
        self.commands, self.counts, self.elapsed = run.commands, run.counts, run.elapsed
        self.rate = run.commands / run.elapsed if run.elapsed else 0.0


def run(port, corpus, reference, account_list, clients, seconds, label, direct_port=PORT, seed=1):
    """Runs the workload against port and the final checks (with
    direct_port as the truth); returns a Result."""
    r = Run(port, corpus, reference, account_list, clients, seconds, label, seed)

    async def everything():
        await r.main()
        await final_checks(r, direct_port)
    asyncio.run(everything())
    return Result(r)


def reference(corpus, account_list, port=PORT, host=HOST):
    """The reference answers, fetched straight from Dovecot."""
    return asyncio.run(reference_answers(port, account_list[0], corpus))


def vm_hwm(pid):
    """The peak resident set size of process pid, in kB (VmHWM)."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return None
