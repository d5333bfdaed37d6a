#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The cache under crashes, bad storage and bad input (issue 11, item 9).
Every case compares what a client gets through imapcached with what it
gets straight from the test Dovecot (raw responses, Dovecot's timings cut
from the tagged line), and checks the daemon's log and the store (opened
read-only with Python's sqlite3: integrity_check, row counts).

Crash and storage: SIGKILL part-way through a heavy fill, then a new
daemon on the same store; a store file of garbage, one damaged past its
first page, one with a byte flipped inside a body and inside an
ENVELOPE (caught by the values' checksums), one its owner can't read; a
full store (a small tmpfs, when the test may mount one); a read-only cache directory; the store file
replaced by rename, removed, or overwritten in place under a running
daemon.
Bad input: an upstream FETCH that lacks an item asked for (Dovecot's
NO [UNKNOWN-CTE] after a partial FETCH line); a UIDVALIDITY that changes
between two SELECTs of one session; two sessions of one account filling
the same mailbox at once; a message whose structure our MIME library
reads otherwise than Dovecot.

Run as root, the daemons run as nobody, so that file modes bind them as
they bind the daemon's own user in production."""
import json
import os
import pwd
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

from checks import check, summary
import proxyfixture
from proxyfixture import (MANIFEST, PASS, PASS2, PORT, TIMINGS, USER, USER2, WAIT, Daemon, Raw, difference, quote,
                          run_steps, upstream_dovecot)

tmp = proxyfixture.scratch_dir("test-cache-faults.")
os.chmod(tmp, 0o755)  # the daemon's user reads its configuration here
FULL_SIZE = "2m"  # the tmpfs of the full-store case: the schema and a few turns' batches (256 KiB a read) fit, the corpus does not
TIMINGS_BYTES = re.compile(TIMINGS.pattern.encode())
FILL = "UID FETCH 1:* (BODY.PEEK[] ENVELOPE BODYSTRUCTURE)"  # every message's body and structure
FEW = "FETCH 1:30 (BODY.PEEK[] ENVELOPE)"  # 2.4 MB: less than SQLite's WAL holds before a checkpoint
FROM_CACHE = r"FETCH answered from the cache"
REPLACED = r"was replaced or removed while open; its WAL goes too"
CLOSED = b"(the connection closed)"
MOVED_ASIDE = r"moved aside to \S+\.corrupt-"
NOT_A_DATABASE = r"is not a database, or a damaged one; "

if os.geteuid() == 0:
    _nobody = pwd.getpwnam("nobody")
    DAEMON_UID, DAEMON_GID = _nobody.pw_uid, _nobody.pw_gid
else:
    DAEMON_UID, DAEMON_GID = os.geteuid(), os.getegid()


def drop_privileges():
    """In the daemon's child before exec: become the unprivileged user."""
    os.setgroups([])
    os.setgid(DAEMON_GID)
    os.setuid(DAEMON_UID)


def give(path):
    """path belongs to the daemon's user."""
    os.chown(path, DAEMON_UID, DAEMON_GID)


def cache_dir():
    """A new cache directory of the daemon's user."""
    path = tempfile.mkdtemp(prefix="cache.", dir=tmp)
    give(path)
    return path


def store_path(cache, user=USER):
    """cache_file_path() of the test Dovecot's account (the names need no encoding)."""
    return os.path.join(cache, "dovecot", user + ".sqlite")


def start(cache, cache_settings="", upstream=None):
    """An imapcached on cache, logging at debug, as the daemon's user; upstream:
    its upstreams entry (the test Dovecot's, named "dovecot", by default)."""
    # stop() ends sessions at once; no prefetch: the checks count what the sessions stored
    config = 'cache = { dir = "%s"; prefetch = "off"; %s };\ntimeouts = { shutdown = 0; };\n' % (cache, cache_settings)
    return Daemon(upstream or upstream_dovecot("none"), extra=config, tmpdir=tmp,
                  preexec_fn=drop_privileges if os.geteuid() == 0 else None)


def stop(daemon):
    """Stops the daemon; checks that it exited 0 (no crash, no assertion)."""
    status = daemon.stop()
    check("... the daemon (pid %d) exited cleanly" % daemon.pid, status == 0, status)


def connect(port, mailbox=None, user=USER, password=PASS, verb="SELECT"):
    """A logged-in connection, with mailbox selected (or examined)."""
    conn = Raw(port, greeting=True)
    for command in ["LOGIN %s %s" % (quote(user), quote(password))] + (
            ["%s %s" % (verb, quote(mailbox))] if mailbox else []):
        line = conn.tagged("s", command)[-1]
        if not line.startswith("s OK"):
            raise RuntimeError("%s: %s" % (command.split()[0], line))
    return conn


def exchange(conn, command, until_closed=False):
    """command's responses as bytes, the tagged one without Dovecot's
    timings; with until_closed, CLOSED last when the peer closes first."""
    conn.send(b"f " + command.encode() + b"\r\n")
    responses = []
    while True:
        try:
            response = conn.response()
        except (conn.error, ConnectionResetError):
            if not until_closed:
                raise
            return responses + [CLOSED]
        if response.startswith(b"f "):
            responses.append(TIMINGS_BYTES.sub(b"", response))
            return responses
        responses.append(response)


def same(name, via, direct, command):
    """Checks that command gets the same answer through the proxy as direct; returns the answer."""
    got, want = exchange(via, command), exchange(direct, command)
    check(name, got == want, difference(got, want))
    return got


def append(conn, mailbox, message):
    line = conn.tagged("a", "APPEND %s {%d+}\r\n%s" % (quote(mailbox), len(message), message.decode()))[-1]
    if not line.startswith("a OK"):
        raise RuntimeError("APPEND: %s" % line)


def admin(commands):
    """Runs commands on a direct connection of USER (each must succeed)."""
    conn = connect(PORT)
    for command in commands:
        line = conn.tagged("m", command)[-1]
        if not line.startswith("m OK"):
            raise RuntimeError("%s: %s" % (command, line))
    return conn


def inspect(path, running=True):
    """The store at path, read-only: integrity, foreign keys and row counts.
    A stopped daemon left no WAL: then immutable, so nothing is made beside it."""
    uri = "file:%s?mode=ro%s" % (urllib.parse.quote(path), "" if running else "&immutable=1")
    db = sqlite3.connect(uri, uri=True, timeout=WAIT)
    try:
        one = lambda sql: db.execute(sql).fetchone()[0]
        return {
            "integrity": [row[0] for row in db.execute("PRAGMA integrity_check")],
            "foreign_keys": db.execute("PRAGMA foreign_key_check").fetchall(),
            "messages": one("SELECT count(*) FROM messages"),
            "complete": one("SELECT count(*) FROM bodies WHERE complete = 1"),
            "incomplete": one("SELECT count(*) FROM bodies WHERE complete = 0"),
            "short": one("SELECT count(*) FROM bodies b WHERE complete = 1 AND size != (SELECT "
                         "coalesce(sum(length(data)), 0) FROM body_chunks c WHERE c.mailbox_id = b.mailbox_id "
                         "AND c.uid = b.uid)"),
            "inbox_bodies": [row[0] for row in db.execute(
                "SELECT b.uid FROM bodies b JOIN mailboxes m ON m.id = b.mailbox_id "
                "WHERE m.name = 'INBOX' AND b.complete = 1 ORDER BY b.uid")],
            "mailboxes": dict((row[0], row[1]) for row in db.execute("SELECT name, uidvalidity FROM mailboxes")),
        }
    finally:
        db.close()


def checkpoint(path):
    """Copies the running daemon's WAL into the store file and empties it
    (a TRUNCATE checkpoint from a connection of our own, tried again while
    the daemon's worker holds the store): from then on, a page the daemon
    does not hold in memory is read from the file itself."""
    db = sqlite3.connect(path, timeout=WAIT)
    try:
        deadline = time.monotonic() + WAIT
        while True:
            busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if busy == 0 or time.monotonic() > deadline:
                return busy == 0
            time.sleep(0.05)
    finally:
        db.close()


def check_sound(name, state):
    check(name + ": integrity_check says ok", state["integrity"] == ["ok"], state["integrity"][:5])
    check(name + ": no foreign key is broken", state["foreign_keys"] == [], state["foreign_keys"][:5])
    check(name + ": every complete body has all its bytes", state["short"] == 0, state)


def uid_set(uids):
    """A UID set of ranges."""
    ranges = []
    for uid in uids:
        if ranges and ranges[-1][1] == uid - 1:
            ranges[-1][1] = uid
        else:
            ranges.append([uid, uid])
    return ",".join(str(a) if a == b else "%d:%d" % (a, b) for a, b in ranges)


def fill(daemon, command=FILL, mailbox="INBOX"):
    """One session of the daemon runs command (to fill the store), then logs out."""
    conn = connect(daemon.port, mailbox)
    answer = exchange(conn, command)
    if not answer[-1].startswith(b"f OK"):
        raise RuntimeError("%s: %r" % (command, answer[-1]))
    conn.tagged("z", "LOGOUT")
    conn.close()


def garbage(size, seed):
    return random.Random(seed).randbytes(size)


def log_count(daemon, pattern):
    """How many log lines match pattern, once every line logged so far has been read."""
    return daemon.settled_count(pattern)


# The store's answer is not vouched for: the FETCH went upstream, or the
# items it can't vouch for were fetched alone (spliced, doc/cache.md).
NOT_VOUCHED = (r"FETCH goes upstream|FETCH: \d+ messages' \(\d+ FETCH\) items fetched alone first|"
               r"messages a FETCH lacked: fetched")


def from_cache(daemon):
    return log_count(daemon, FROM_CACHE)


# ---- crash and storage ----

def largest_message():
    return max(json.load(open(MANIFEST))["messages"], key=lambda m: m["rfc822_size"])


def test_kill_during_fill():
    """The upstream stalls half-way through the corpus's largest message
    (a relay holds the rest back), so that its body is surely being
    written when the kill comes: counting the bytes the client read is
    not enough, since the daemon may be megabytes ahead of a slow client
    (in the kernel's buffers), with the body finished and committed."""
    largest = largest_message()
    size = largest["rfc822_size"]
    relay = proxyfixture.Relay(record=False, fault=proxyfixture.RelayFault(b"{%d}\r\n" % size, after=size // 2,
                                                                           action="stall"))
    cache = cache_dir()
    path = store_path(cache)
    daemon = start(cache, upstream=relay.upstream_entry("dovecot"))
    received, unfinished = 0, False
    try:
        conn = connect(daemon.port, "INBOX")
        conn.send(b"f " + FILL.encode() + b"\r\n")
        conn.sock.settimeout(0.05)
        deadline = time.monotonic() + WAIT
        while not unfinished and time.monotonic() < deadline:
            try:
                data = conn.sock.recv(65536)
                if not data:
                    break
                received += len(data)
            except socket.timeout:
                pass
            # the held batch that began the body commits within CACHE_BATCH_HOLD_MS
            unfinished = relay.fired > 0 and inspect(path)["incomplete"] == 1
        daemon.signal(signal.SIGKILL)
        conn.close()
    finally:
        daemon.stop()
        relay.close()
    check("kill -9 during a heavy fill: the daemon died part-way, in UID %d's body (%d KB read)"
          % (largest["uid"], received >> 10), relay.fired == 1 and daemon.returncode == -signal.SIGKILL,
          (relay.fired, daemon.returncode))
    state = inspect(store_path(cache))
    check("... it left the body being written unfinished", unfinished and state["incomplete"] == 1, state)
    daemon = start(cache)
    try:
        via, direct = connect(daemon.port, "INBOX"), connect(PORT, "INBOX", verb="EXAMINE")
        state = inspect(store_path(cache))
        check_sound("after kill -9 and a restart", state)
        check("... the store opened as it was (not moved aside)", log_count(daemon, MOVED_ASIDE) == 0,
              daemon.log()[-2000:])
        check("... bodies unfinished at the kill were dropped", state["incomplete"] == 0, state)
        check("... bodies finished before the kill were kept", 0 < len(state["inbox_bodies"]) < 200, state)
        before = from_cache(daemon)
        same("... the kept bodies equal direct", via, direct,
             "UID FETCH %s (BODY.PEEK[])" % uid_set(state["inbox_bodies"]))
        check("... and were answered from the cache", from_cache(daemon) == before + 1, daemon.log()[-1000:])
        same("... the whole fill again equals direct", via, direct, FILL)
        same("... and a third time, from the cache", via, direct, FILL)
        check("... which the cache answered", from_cache(daemon) == before + 2, daemon.log()[-1000:])
        check_sound("... the store after the refill", inspect(store_path(cache)))
    finally:
        stop(daemon)


def test_garbage_file():
    cache = cache_dir()
    path = store_path(cache)
    os.mkdir(os.path.dirname(path), 0o700)
    give(os.path.dirname(path))
    bad = garbage(64 << 10, 1)
    with open(path, "wb") as f:
        f.write(bad)
    give(path)
    daemon = start(cache)
    try:
        via, direct = connect(daemon.port, "INBOX"), connect(PORT, "INBOX", verb="EXAMINE")
        same("a store file of garbage: FETCH equals direct", via, direct, "FETCH 1:20 (BODY.PEEK[] ENVELOPE)")
        check("... it was moved aside with a log line", log_count(daemon, NOT_A_DATABASE + MOVED_ASIDE) == 1,
              daemon.log()[-2000:])
        asides = [name for name in os.listdir(os.path.dirname(path)) if ".corrupt-" in name]
        check("... where it is kept as it was", len(asides) == 1 and open(
            os.path.join(os.path.dirname(path), asides[0]), "rb").read() == bad, asides)
        before = from_cache(daemon)
        same("... a new store began: the same FETCH equals direct", via, direct,
             "FETCH 1:20 (BODY.PEEK[] ENVELOPE)")
        check("... answered from it", from_cache(daemon) == before + 1)
        check_sound("... the new store", inspect(path))
    finally:
        stop(daemon)


def filled_store():
    """A cache directory whose store holds INBOX's first 40 messages, the daemon stopped."""
    cache = cache_dir()
    daemon = start(cache)
    try:
        fill(daemon, "UID FETCH 1:40 (BODY.PEEK[] ENVELOPE BODYSTRUCTURE)")
    finally:
        stop(daemon)
    return cache


def test_damaged_file():
    cache = filled_store()
    path = store_path(cache)
    size = os.path.getsize(path)
    with open(path, "r+b") as f:  # page 1 (header, schema) stays: SQLite opens it
        page = int.from_bytes(f.read(18)[16:18], "big") or 65536
        f.seek(page)
        f.write(garbage(size - page, 2))
    daemon = start(cache)
    try:
        via, direct = connect(daemon.port, "INBOX"), connect(PORT, "INBOX", verb="EXAMINE")
        same("a store damaged past its first page: FETCH equals direct", via, direct,
             "FETCH 1:40 (BODY.PEEK[] ENVELOPE BODYSTRUCTURE)")
        via.tagged("z", "LOGOUT")
        check("... it was moved aside with a log line", daemon.wait_log(MOVED_ASIDE) is not None,
              daemon.log()[-2000:])
        via = connect(daemon.port, "INBOX")
        same("... and a new store began: FETCH equals direct", via, direct, "FETCH 1:40 (BODY.PEEK[] ENVELOPE)")
        before = from_cache(daemon)
        same("... again, from the new store", via, direct, "FETCH 1:40 (BODY.PEEK[] ENVELOPE)")
        check("... answered from it", from_cache(daemon) == before + 1)
        check_sound("... the new store", inspect(path))
    finally:
        stop(daemon)


def flip_inside(path, value, name):
    """Flips one byte in the middle of value's only copy in the file at
    path (the daemon stopped): damage SQLite reads without a complaint."""
    data = open(path, "rb").read()
    middle = len(value) // 2
    probe = value[middle - 32:middle + 32]
    at = data.find(probe)
    if at < 0 or data.find(probe, at + 1) >= 0:
        raise RuntimeError("%s: its bytes are not in the file exactly once" % name)
    with open(path, "r+b") as f:
        f.seek(at + 32)
        f.write(bytes([data[at + 32] ^ 0x01]))


def test_damage_inside_values():
    """A byte flipped inside a stored body (in an overflow page, which
    SQLite never checks) and inside a stored ENVELOPE: each fails its
    checksum, counts as missing, is fetched afresh and stored anew."""
    cache = filled_store()
    path = store_path(cache)
    db = sqlite3.connect("file:%s?mode=ro&immutable=1" % urllib.parse.quote(path), uri=True)
    try:
        uid, chunk = db.execute("SELECT c.uid, c.data FROM body_chunks c JOIN bodies b USING (mailbox_id, uid) "
                                "WHERE b.complete = 1 AND c.chunk = 0 AND length(c.data) > 20000 "
                                "ORDER BY c.uid LIMIT 1").fetchone()
        envelope_uid, envelope = db.execute("SELECT uid, envelope FROM messages WHERE uid != ? AND "
                                            "length(envelope) > 300 ORDER BY uid LIMIT 1", (uid,)).fetchone()
    finally:
        db.close()
    flip_inside(path, chunk, "a body's piece")
    flip_inside(path, envelope, "an ENVELOPE")
    daemon = start(cache)
    try:
        via, direct = connect(daemon.port, "INBOX"), connect(PORT, "INBOX", verb="EXAMINE")
        for command in ("UID FETCH %d (BODY.PEEK[])" % uid, "UID FETCH %d (ENVELOPE)" % envelope_uid):
            same("a byte flipped inside a stored value is not served: %s equals direct" % command, via, direct,
                 command)
        check("... the damaged body was logged", daemon.wait_log(
            r"the stored body of UID %d is damaged .*failing its checksum" % uid) is not None, daemon.log()[-2000:])
        check("... the damaged ENVELOPE was logged", daemon.wait_log(
            r"a stored value of UID %d \(items 0x2\) fails its checksum" % envelope_uid) is not None,
            daemon.log()[-2000:])
        before = from_cache(daemon)
        for command in ("UID FETCH %d (BODY.PEEK[])" % uid, "UID FETCH %d (ENVELOPE)" % envelope_uid):
            same("... fetched afresh and stored: %s again equals direct" % command, via, direct, command)
        check("... answered from the store again", from_cache(daemon) == before + 2, daemon.log()[-2000:])
        via.tagged("z", "LOGOUT")
        check_sound("... the store", inspect(path))
    finally:
        stop(daemon)


OPEN = "UID FETCH 1:* (UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODYSTRUCTURE)"  # fixed items only
CHECKED_FIRST = 100  # FETCH_CHECKED_FIRST: an answer of fixed items checks these before its first line


def test_damage_past_first_checked():
    """An answer of fixed items checks its first 100 messages value by value
    and reads the rest as it writes them (doc/cache.md): a flipped byte in
    the ENVELOPE of a later message ends that session with BYE after the
    lines before it, equal to Dovecot's; the value is dropped and logged,
    and the next session's same FETCH equals direct again."""
    cache = cache_dir()
    daemon = start(cache)
    try:
        fill(daemon, OPEN)
    finally:
        stop(daemon)
    path = store_path(cache)
    db = sqlite3.connect("file:%s?mode=ro&immutable=1" % urllib.parse.quote(path), uri=True)
    try:
        uids = [row[0] for row in db.execute("SELECT uid FROM messages_fixed ORDER BY uid")]
        late = [uid for uid, in db.execute("SELECT uid FROM messages WHERE length(envelope) > 300 ORDER BY uid")
                if uid in uids[CHECKED_FIRST + 10:]]
        if len(uids) < CHECKED_FIRST + 20 or not late:
            raise RuntimeError("the corpus has too few messages past the first %d: %d" % (CHECKED_FIRST, len(uids)))
        envelopes = {uid: db.execute("SELECT envelope FROM messages WHERE uid = ?", (uid,)).fetchone()[0]
                     for uid in late}
    finally:
        db.close()
    while True:  # the first whose middle bytes are nowhere else in the file
        try:
            flip_inside(path, envelopes[late[0]], "an ENVELOPE past the first messages")
            break
        except RuntimeError:
            if len(late) == 1:
                raise
            late.pop(0)
    daemon = start(cache)
    try:
        via, direct = connect(daemon.port, "INBOX"), connect(PORT, "INBOX", verb="EXAMINE")
        got, want = exchange(via, OPEN, until_closed=True), exchange(direct, OPEN)
        before = uids.index(late[0])
        check("a byte flipped in the ENVELOPE of UID %d, message %d of the answer: the lines before it equal "
              "Dovecot's" % (late[0], before + 1), got[:before] == want[:before], difference(got[:before], want[:before]))
        check("... then BYE, and the connection closes", got[before:] == [b"* BYE Internal error reading the cache\r\n",
                                                                         CLOSED], got[before:before + 2])
        check("... the damaged ENVELOPE was logged", daemon.wait_log(
            r"a stored value of UID %d \(items 0x2\) fails its checksum" % late[0]) is not None, daemon.log()[-2000:])
        via = connect(daemon.port, "INBOX")
        same("... a new session's same FETCH equals direct", via, direct, OPEN)
        check_sound("... the store", inspect(path))
    finally:
        stop(daemon)


def test_unreadable_file():
    cache = filled_store()
    path = store_path(cache)
    os.chmod(path, 0)
    daemon = start(cache)
    try:
        via, direct = connect(daemon.port, "INBOX"), connect(PORT, "INBOX", verb="EXAMINE")
        same("a store file its owner can't read (mode 0000): FETCH equals direct", via, direct,
             "FETCH 1:20 (BODY.PEEK[] ENVELOPE)")
        check("... it was moved aside with a log line", log_count(daemon, MOVED_ASIDE) == 1, daemon.log()[-2000:])
        before = from_cache(daemon)
        same("... and a new store began: the same FETCH equals direct", via, direct,
             "FETCH 1:20 (BODY.PEEK[] ENVELOPE)")
        check("... answered from it", from_cache(daemon) == before + 1, daemon.log()[-2000:])
    finally:
        stop(daemon)


def mount_tmpfs(where, size):
    """Mounts a tmpfs of size at where for the daemon's user; an error text, or None."""
    if os.geteuid() != 0:
        return "not root"
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0700,uid=%d,gid=%d" % (
        size, DAEMON_UID, DAEMON_GID), "tmpfs", where], capture_output=True, text=True)
    return None if result.returncode == 0 else result.stderr.strip() or "mount failed"


def test_full_store():
    where = tempfile.mkdtemp(prefix="full.", dir=tmp)
    error = mount_tmpfs(where, FULL_SIZE)
    if error is not None:
        print("SKIP: a full store needs a small tmpfs, and mounting one failed (%s)" % error, flush=True)
        return
    daemon = None
    try:
        daemon = start(where)
        via, direct = connect(daemon.port, "INBOX"), connect(PORT, "INBOX", verb="EXAMINE")
        same("a full store (a %s tmpfs): the heavy fill equals direct" % FULL_SIZE, via, direct, FILL)
        check("... the store said it is full, with a log line",
              log_count(daemon, r"cache .*(database or disk is full).*caching no more for a while, "
                               r"proxying goes on") == 1, daemon.log()[-3000:])
        same("... the fill again equals direct", via, direct, FILL)
        other = connect(daemon.port, "INBOX")
        same("... and so does another session's", other, direct, "FETCH 1:* (ENVELOPE BODY.PEEK[])")
        state = inspect(store_path(where))
        check_sound("... the full store", state)
        check("... which holds some bodies, not all", 0 < state["complete"] < 200, state)
    finally:
        if daemon is not None:
            stop(daemon)
        subprocess.run(["umount", where], check=False)


def test_read_only_dir():
    cache = filled_store()
    path = store_path(cache)
    before_state = inspect(path, running=False)
    os.chmod(os.path.dirname(path), 0o500)
    daemon = start(cache)
    try:
        via, direct = connect(daemon.port, "INBOX"), connect(PORT, "INBOX", verb="EXAMINE")
        check("a read-only cache directory: the store is opened for reading, with a log line",
              log_count(daemon, r"read-only; reading what it holds; caching no more until the store is opened "
                               r"again, proxying goes on") == 1, daemon.log()[-2000:])
        before = from_cache(daemon)
        same("... FETCH of what it holds equals direct", via, direct, "FETCH 1:40 (BODY.PEEK[] ENVELOPE)")
        check("... answered from it", from_cache(daemon) == before + 1, daemon.log()[-2000:])
        same("... FETCH of more equals direct", via, direct, "FETCH 1:80 (BODY.PEEK[] ENVELOPE)")
        via.tagged("z", "LOGOUT")
        state = inspect(path, running=False)
        check("... the store did not change", state == before_state, (before_state, state))
        # an account with no store yet: none can be made
        direct2 = connect(PORT, user=USER2, password=PASS2)
        append(direct2, "INBOX", b"Subject: read-only\r\n\r\nnothing to cache it in\r\n")
        direct2.tagged("m", "LOGOUT")
        via2 = connect(daemon.port, "INBOX", USER2, PASS2)
        direct2 = connect(PORT, "INBOX", USER2, PASS2, verb="EXAMINE")
        same("... another account, whose store can't be made: FETCH equals direct", via2, direct2,
             "FETCH 1:* (BODY.PEEK[] ENVELOPE)")
        check("... and the session says it proxies without a cache",
              log_count(daemon, r"no cache for %s on upstream dovecot \(.*\): proxying only" % USER2) == 1,
              daemon.log()[-2000:])
    finally:
        stop(daemon)
        os.chmod(os.path.dirname(path), 0o700)


def test_replaced_by_rename():
    cache = cache_dir()
    path = store_path(cache)
    daemon = start(cache)
    try:
        holder = connect(daemon.port, "INBOX")
        exchange(holder, FEW)  # all of the store still in its WAL: the new file would pass for it
        with open(path + ".new", "wb") as f:
            f.write(garbage(32 << 10, 3))
        give(path + ".new")
        os.rename(path + ".new", path)
        via, direct = connect(daemon.port, "INBOX"), connect(PORT, "INBOX", verb="EXAMINE")
        same("the store file replaced by rename under a running daemon: FETCH equals direct", via, direct,
             FEW)
        for conn in (holder, via):
            conn.tagged("z", "LOGOUT")
        via = connect(daemon.port, "INBOX")
        check("... once its sessions ended, the store's WAL went too, with a log line",
              log_count(daemon, REPLACED) == 1, daemon.log()[-2000:])
        check("... and the next session moved the new file aside, with a log line",
              daemon.wait_log(NOT_A_DATABASE + MOVED_ASIDE) is not None, daemon.log()[-2000:])
        state = inspect(path)
        check("... and began a new store, with nothing of the old one", state["messages"] == 0, state)
        same("... FETCH equals direct", via, direct, FILL)
        check_sound("... the new store", inspect(path))
    finally:
        stop(daemon)


def test_removed_under_daemon():
    cache = cache_dir()
    path = store_path(cache)
    daemon = start(cache)
    try:
        holder = connect(daemon.port, "INBOX")
        exchange(holder, FEW)
        os.unlink(path)
        via, direct = connect(daemon.port, "INBOX"), connect(PORT, "INBOX", verb="EXAMINE")
        same("the store file removed under a running daemon: FETCH equals direct", via, direct,
             FEW)
        for conn in (holder, via):
            conn.tagged("z", "LOGOUT")
        via = connect(daemon.port, "INBOX")
        check("... once its sessions ended, the store's WAL went too, with a log line",
              log_count(daemon, REPLACED) == 1, daemon.log()[-2000:])
        state = inspect(path)
        check("... a new store began, with nothing of the old one",
              state["messages"] == 0 and state["complete"] == 0, state)
        same("... FETCH equals direct", via, direct, FILL)
        check_sound("... the new store", inspect(path))
    finally:
        stop(daemon)


def test_overwritten_in_place():
    cache = cache_dir()
    path = store_path(cache)
    daemon = start(cache)
    try:
        holder = connect(daemon.port, "INBOX")
        exchange(holder, FILL)
        # what the fill wrote, in the file: were it still in the WAL, the
        # garbage below would never be read, and nothing found damaged
        check("the store file overwritten in place under a running daemon: its WAL was checkpointed first",
              checkpoint(path))
        size = os.path.getsize(path)
        with open(path, "r+b") as f:
            f.write(garbage(size, 4))
        direct = connect(PORT, "INBOX", verb="EXAMINE")
        # The open session may be answered from pages SQLite still holds
        # (in memory, in the WAL) until it meets the garbage; then, as
        # Dovecot does when a FETCH fails mid-way, it gets BYE.
        got, want = exchange(holder, FILL, until_closed=True), exchange(direct, FILL)
        cut = got[-1] == CLOSED and len(got) >= 2 and got[-2].startswith(b"* BYE ")
        check("the store file overwritten in place under a running daemon: the open session's fill equals "
              "direct, or is direct's first lines and then BYE",
              got == want or (cut and got[:-2] == want[:len(got) - 2]), difference(got, want))
        via = connect(daemon.port, "INBOX")
        same("... a new session's fill equals direct", via, direct, FILL)
        same("... and again", via, direct, FILL)
        check("... the daemon said the store is damaged, with a log line",
              log_count(daemon, r"(malformed|not a database); it is read what can be read, and moved aside when "
                                 r"closed") == 1,
              daemon.log()[-2000:])
        for conn in (holder, via):
            if not cut or conn is via:
                conn.tagged("z", "LOGOUT")
        via = connect(daemon.port, "INBOX")
        check("... once its sessions ended, it was moved aside", daemon.wait_log(
            r"is damaged \(found while reading it\); " + MOVED_ASIDE) is not None, daemon.log()[-2000:])
        same("... and FETCH equals direct", via, direct, FEW)
        check_sound("... the new store", inspect(path))
    finally:
        stop(daemon)


BUDGET = 3 << 20  # body_budget "3M": less than half of INBOX's 6.9 MB, more than its largest message
FREE_MAX = 8 << 20  # CACHE_FREE_MAX: free pages the file keeps for new bodies
ROWS_MAX = 2 << 20  # the rows of INBOX's 200 messages, and SQLite's own pages, with room to spare
INDEX_FACTOR = 3    # the bodies' text index: at most about 3 times the bodies (imapcached.conf(5))
# imapcached.conf(5): the WAL is cut back to 16 MB after a checkpoint, and
# is larger only while a burst of bodies outruns the checkpoints, never
# much past 16 MB (CACHE_CHECKPOINT_RESTART_PAGES; fills pause there
# while the worker makes it start afresh): what a session's batch and
# one read hold besides, 12 MB at most.
WAL_MAX = (16 << 20) + (12 << 20)
SAMPLE_EVERY = 0.02  # seconds between the StoreSampler's samples


class StoreSampler(threading.Thread):
    """Reads the store's body bytes (SUM(length(data)) of its pieces, not
    the daemon's count) and its files' sizes every SAMPLE_EVERY s, and
    keeps the largest of each, until stopped."""

    def __init__(self, path):
        super().__init__(daemon=True)
        self.path, self.stopping = path, threading.Event()
        self.max_bytes = self.max_file = self.max_wal = self.samples = 0

    def run(self):
        while not os.path.exists(self.path) and not self.stopping.is_set():
            self.stopping.wait(0.01)
        db = sqlite3.connect("file:%s?mode=ro" % urllib.parse.quote(self.path), uri=True, timeout=WAIT)
        try:
            while not self.stopping.is_set():
                try:
                    got = db.execute("SELECT coalesce(sum(length(data)), 0) FROM body_chunks").fetchone()[0]
                except sqlite3.OperationalError:  # the schema is being made, or busy
                    got = 0
                self.max_bytes = max(self.max_bytes, got)
                self.max_file = max(self.max_file, os.path.getsize(self.path))
                if os.path.exists(self.path + "-wal"):
                    self.max_wal = max(self.max_wal, os.path.getsize(self.path + "-wal"))
                self.samples += 1
                # not much more often: each sample's read transaction keeps
                # the daemon's checkpoint from resetting the WAL, which the
                # WAL check below would then blame on the daemon (a sampler
                # that never waits took it to 20 MB, its limit 21)
                self.stopping.wait(SAMPLE_EVERY)
        finally:
            db.close()

    def stop(self):
        self.stopping.set()
        self.join()


def bodies(path):
    """{uid: (last_used, size)} of INBOX's complete bodies."""
    db = sqlite3.connect("file:%s?mode=ro" % urllib.parse.quote(path), uri=True, timeout=WAIT)
    try:
        return dict((uid, (last_used, size)) for uid, last_used, size in db.execute(
            "SELECT b.uid, b.last_used, b.size FROM bodies b JOIN mailboxes m ON m.id = b.mailbox_id "
            "WHERE m.name = 'INBOX' AND b.complete = 1"))
    finally:
        db.close()


def test_budget():
    """cache.body_budget holds at every moment, measured in the store
    (not by the daemon's count): two sessions filling at once, a read
    that saves a body from eviction, a restart with a lower budget; the
    file stays within budget + free pages kept + rows; the answers are
    the upstream's."""
    cache = cache_dir()
    path = store_path(cache)
    sampler = StoreSampler(path)
    sampler.start()
    daemon = start(cache, 'body_budget = "3M";')
    try:
        direct = connect(PORT, "INBOX", verb="EXAMINE")
        sessions = [connect(daemon.port, "INBOX") for _ in range(2)]
        answers = [None, None]
        commands = ["UID FETCH 1:* (BODY.PEEK[])", "UID FETCH 200:1 (BODY.PEEK[] ENVELOPE)"]
        threads = [threading.Thread(target=lambda i=i: answers.__setitem__(i, exchange(sessions[i], commands[i])))
                   for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for i in range(2):
            want = exchange(direct, commands[i])
            check("two sessions filling at once: %s equals direct" % commands[i], answers[i] == want,
                  difference(answers[i], want))
        check("... the daemon evicted bodies to stay within the budget, with a log line",
              daemon.wait_log(r"evicted \d+ whole messages \(\d+ bytes\), least recently used") is not None,
              daemon.log()[-2000:])
        kept = bodies(path)
        # A read is a use: the least recently used body, read now, stays
        # while the next fill evicts others.
        oldest = min(kept, key=lambda uid: (kept[uid][0], kept[uid][1], uid))  # the smallest of the oldest
        time.sleep(1.1)  # last_used counts seconds: the read below is then later than every body stored
        before = from_cache(daemon)
        same("a read of the least recently used body (UID %d) equals direct" % oldest, sessions[0], direct,
             "UID FETCH %d (BODY.PEEK[])" % oldest)
        check("... answered from the store", from_cache(daemon) == before + 1, daemon.log()[-2000:])
        time.sleep(3.1)  # past CACHE_EVICT_IN_USE_SECONDS, and a second of last_used's granularity
        # Messages not stored, half as large as the other bodies stored: some must go, not all.
        sizes = dict((m["uid"], m["rfc822_size"]) for m in json.load(open(MANIFEST))["messages"])
        room = sum(size for uid, (_, size) in kept.items() if uid != oldest) // 2
        missing, total = [], 0
        for uid in sorted(set(sizes) - set(kept), key=lambda uid: sizes[uid]):
            if total + sizes[uid] > room:
                break
            missing.append(uid)
            total += sizes[uid]
        same("then a fill of %d messages not stored (%d bytes) equals direct" % (len(missing), total), sessions[1],
             direct, "UID FETCH %s (BODY.PEEK[])" % uid_set(sorted(missing)))
        after = bodies(path)
        check("... the body read stayed", oldest in after, (oldest, sorted(after)))
        check("... bodies not used since went", len(set(kept) - set(after)) > 0, (sorted(kept), sorted(after)))
        for conn in sessions:
            conn.tagged("z", "LOGOUT")
    finally:
        stop(daemon)
    # A restart with a lower budget: evicted down to it at the first login.
    daemon = start(cache, 'body_budget = "1M";')
    try:
        via = connect(daemon.port, "INBOX")
        same("after a restart with body_budget 1M: a FETCH equals direct", via, direct, "FETCH 1:20 (ENVELOPE)")
        state = inspect(path)
        check("... the store holds at most 1M of bodies", sum_of_bodies(path) <= 1 << 20, sum_of_bodies(path))
        check_sound("... the store", state)
        # the evicted bodies' text leaves the index as it merges, behind them
        bound = (1 << 20) * (1 + INDEX_FACTOR) + FREE_MAX + ROWS_MAX
        deadline = time.monotonic() + 10
        while os.path.getsize(path) > bound and time.monotonic() < deadline:
            time.sleep(0.1)
        via.tagged("z", "LOGOUT")
    finally:
        stop(daemon)
    sampler.stop()
    check("the budget held at every moment: at most %d bytes of bodies in %d samples" % (BUDGET, sampler.samples),
          sampler.samples > 20 and sampler.max_bytes <= BUDGET, sampler.max_bytes)
    check("the file stayed within budget + %dx it of text index + %d bytes of free pages + %d bytes of rows"
          % (INDEX_FACTOR, FREE_MAX, ROWS_MAX),
          sampler.max_file <= BUDGET * (1 + INDEX_FACTOR) + FREE_MAX + ROWS_MAX, sampler.max_file)
    check("its WAL within %d bytes (%d at most)" % (WAL_MAX, sampler.max_wal), sampler.max_wal <= WAL_MAX, sampler.max_wal)
    check("after the restart, the file shrank to the new budget + its text index + free pages + rows",
          os.path.getsize(path) <= bound, os.path.getsize(path))


LARGE_MAILBOX = "WalFill"
LARGE_COUNT, LARGE_SIZE = 80, 1 << 20  # 80 MB of bodies: five times past the WAL's restart mark
WAL_FILL_BUDGET = "200M"  # more than the fill: nothing is evicted
WAL_FILL_MAX = (16 << 20) + (12 << 20)
WAL_FILL_MARK = 16 << 20  # CACHE_CHECKPOINT_RESTART_PAGES


def large_message(n):
    line = (b"%06d " % n) + b"abcdefghijklmnopqrstuvwxyz" * 2 + b"\r\n"
    body = line * (LARGE_SIZE // len(line))
    return b"From: a@example.org\r\nSubject: large %d\r\n\r\n" % n + body


def test_wal_restarts_in_a_fill():
    """One FETCH that streams 80 MB of bodies into the store: its
    transactions follow one another with no gap, so the worker's
    checkpoints alone never let the WAL start afresh (a warm's once grew
    by every byte it stored). Past the restart mark the filling session
    pauses its reading for a moment while the WAL starts afresh: the WAL
    stays within the mark plus a few MB, the answer is the upstream's,
    and every body is stored."""
    direct = connect(PORT)
    direct.tagged("c", "CREATE %s" % LARGE_MAILBOX)
    for n in range(LARGE_COUNT):
        data = large_message(n)
        direct.send(b"a APPEND %s {%d+}\r\n%s\r\n" % (LARGE_MAILBOX.encode(), len(data), data))
        direct.until_tagged("a")
    direct.tagged("s", "EXAMINE %s" % LARGE_MAILBOX)
    cache = cache_dir()
    path = store_path(cache)
    daemon = start(cache, 'body_budget = "%s";' % WAL_FILL_BUDGET)
    sampler = StoreSampler(path)
    sampler.start()
    try:
        via = connect(daemon.port, LARGE_MAILBOX, verb="EXAMINE")
        same("80 MB of bodies streamed through imapcached: the upstream's answer", via, direct,
             "UID FETCH 1:* BODY.PEEK[]")
        via.tagged("z", "LOGOUT")
    finally:
        sampler.stop()
        stop(daemon)
        direct.tagged("u", "UNSELECT")
        direct.tagged("d", "DELETE %s" % LARGE_MAILBOX)
        direct.close()
    check("... the WAL within %d bytes (%d at most)" % (WAL_FILL_MAX, sampler.max_wal),
          0 < sampler.max_wal <= WAL_FILL_MAX, sampler.max_wal)
    # under AddressSanitizer the fill can be slow enough for the worker's
    # checkpoints to let the WAL start afresh by themselves: a pause is
    # owed only once the WAL has passed the mark
    check("... the session paused while the WAL started afresh (the WAL at most %d bytes)" % sampler.max_wal,
          sampler.max_wal < WAL_FILL_MARK or
          re.search(r"fills paused \d+ ms while the WAL started afresh", daemon.log()) is not None,
          daemon.log()[-1500:])
    db = sqlite3.connect("file:%s?mode=ro" % urllib.parse.quote(path), uri=True)
    try:
        stored = db.execute("SELECT count(*) FROM bodies b JOIN mailboxes m ON m.id = b.mailbox_id "
                            "WHERE m.name = ? AND b.complete = 1", (LARGE_MAILBOX,)).fetchone()[0]
    finally:
        db.close()
    check("... and every body stored (%d of %d)" % (stored, LARGE_COUNT), stored == LARGE_COUNT, stored)


def sum_of_bodies(path):
    db = sqlite3.connect("file:%s?mode=ro" % urllib.parse.quote(path), uri=True, timeout=WAIT)
    try:
        return db.execute("SELECT coalesce(sum(length(data)), 0) FROM body_chunks").fetchone()[0]
    finally:
        db.close()


# ---- bad input ----

CTE_MESSAGE = (b"From: cte@example.com\r\nSubject: unknown encoding\r\nMIME-Version: 1.0\r\n"
               b"Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n"
               b"--b\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: x-unknown\r\n\r\nhello\r\n"
               b"--b\r\nContent-Type: text/plain\r\n\r\nplain part\r\n--b--\r\n")


def test_missing_item(daemon):
    admin(["CREATE faults-cte"]).close()
    conn = connect(PORT)
    append(conn, "faults-cte", CTE_MESSAGE)
    conn.close()
    via, direct = connect(daemon.port, "faults-cte"), connect(PORT, "faults-cte", verb="EXAMINE")
    answer = same("an upstream FETCH that lacks an item asked for (NO [UNKNOWN-CTE]) equals direct", via, direct,
                  "FETCH 1 (ENVELOPE BINARY.PEEK[1])")
    check("... Dovecot's line lacks BINARY[1]", len(answer) == 2 and b"BINARY[1]" not in answer[0] and
          b"UNKNOWN-CTE" in answer[1], answer)
    upstream = log_count(daemon, NOT_VOUCHED)
    same("... asked again, it equals direct", via, direct, "FETCH 1 (ENVELOPE BINARY.PEEK[1])")
    check("... and went upstream", log_count(daemon, NOT_VOUCHED) == upstream + 1)
    before = from_cache(daemon)
    same("... the item the line had equals direct", via, direct, "FETCH 1 (ENVELOPE)")
    check("... answered from the cache", from_cache(daemon) == before + 1)
    same("... a line with neither item asked for equals direct", via, direct, "FETCH 1 (BINARY.PEEK[1] ENVELOPE)")
    same("... the whole message and its structure equal direct", via, direct, "FETCH 1 (BODY.PEEK[] BODYSTRUCTURE)")
    for command in ("FETCH 1 (BINARY.PEEK[1])", "FETCH 1 (BINARY.SIZE[1])", "FETCH 1 (BINARY.PEEK[1]<0.3>)"):
        upstream = log_count(daemon, NOT_VOUCHED)
        same("... with the message stored, %s equals direct" % command, via, direct, command)
        check("... it went upstream (or what the store can't vouch for did)", log_count(daemon, NOT_VOUCHED) > upstream)
    before = from_cache(daemon)
    same("... BINARY of the part Dovecot decodes equals direct", via, direct, "FETCH 1 (BINARY.PEEK[2])")
    check("... from the cache", from_cache(daemon) == before + 1)


def mailbox_messages(tag, count):
    return [("From: %s@example.com\r\nSubject: %s message %d\r\nMessage-ID: <%s.%d@example.com>\r\n\r\n"
             "%s body %d%s\r\n" % (tag, tag, i, tag, i, tag, i, "." * (i * 7))).encode() for i in range(1, count + 1)]


def test_uidvalidity_change(daemon):
    name = "faults-uidvalidity"
    conn = admin(["CREATE " + name])
    for message in mailbox_messages("old", 3):
        append(conn, name, message)
    via, direct = connect(daemon.port, name), connect(PORT, name, verb="EXAMINE")
    same("UIDVALIDITY change: the old mailbox's fill equals direct", via, direct, FILL)
    before = from_cache(daemon)
    same("... and again, from the cache", via, direct, FILL)
    check("... answered from the cache", from_cache(daemon) == before + 1)
    old = inspect(store_path(daemon.cache))["mailboxes"].get(name)
    for c in (via, direct):
        exchange(c, "UNSELECT")
    for command in ("DELETE " + name, "CREATE " + name):
        line = conn.tagged("m", command)[-1]
        if not line.startswith("m OK"):
            raise RuntimeError(line)
    for message in mailbox_messages("new", 3):
        append(conn, name, message)
    conn.close()
    for c, verb in ((via, "SELECT"), (direct, "EXAMINE")):
        exchange(c, "%s %s" % (verb, name))
    before = from_cache(daemon)
    answer = same("... the same session's second SELECT: the new mailbox's FETCH equals direct", via, direct, FILL)
    check("... it is the new messages", b"new message 1" in answer[0] and b"old message" not in b"".join(answer))
    check("... none answered from the cache", from_cache(daemon) == before)
    new = inspect(store_path(daemon.cache))["mailboxes"].get(name)
    check("... the log says the UIDVALIDITY changed and the mailbox's cache was dropped",
          log_count(daemon, r"mailbox %s: UIDVALIDITY changed from %s to %s; its cache was dropped" % (
              name, old, new)) == 1, (old, new, daemon.log()[-2000:]))
    same("... the FETCH again equals direct", via, direct, FILL)
    check("... now answered from the cache", from_cache(daemon) == before + 1)
    same("... and a section of it", via, direct, "UID FETCH 1:* (BODY.PEEK[TEXT] BODY.PEEK[1])")


def test_concurrent_fill(daemon):
    sessions = [connect(daemon.port, "INBOX") for _ in range(2)]
    commands = [FILL, "UID FETCH 1:* (BODY.PEEK[])"]
    answers = [None, None]

    def read(i):
        try:
            answers[i] = exchange(sessions[i], commands[i])
        except Exception as e:  # reported by the check below
            answers[i] = [repr(e).encode()]

    threads = [threading.Thread(target=read, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(4 * WAIT)
    direct = connect(PORT, "INBOX", verb="EXAMINE")
    for i in range(2):
        want = exchange(direct, commands[i])
        check("two sessions of one account filling INBOX at once: session %d's answer equals direct" % (i + 1),
              answers[i] == want, difference(answers[i] or [b""], want))
    third = connect(daemon.port, "INBOX")
    before = from_cache(daemon)
    same("... a third session's FETCH equals direct", third, direct, FILL)
    check("... answered from the cache", from_cache(daemon) == before + 1, daemon.log()[-2000:])
    state = inspect(store_path(daemon.cache))
    check_sound("... the store", state)
    check("... holds every body once, each complete", state["inbox_bodies"] == list(range(1, 201)) and
          state["incomplete"] == 0, state)


# Dovecot counts an empty part between two boundary lines, our library
# skips it (mime-dovecot-disagreements.txt, msg_37.txt): every section differs.
DISAGREEING = (b"From: mime@example.com\r\nSubject: empty part\r\nMIME-Version: 1.0\r\n"
               b"Content-Type: multipart/mixed; boundary=\"XX\"\r\n\r\npreamble\r\n"
               b"--XX\r\n--XX\r\nContent-Type: text/plain\r\n\r\nsecond\r\n"
               b"--XX\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\ndGhpcmQ=\r\n--XX--\r\n")
AGREEING = DISAGREEING.replace(b"--XX\r\n--XX\r\n", b"--XX\r\n").replace(b"empty part", b"no empty part")
# BODY[HEADER] last: the header block it brings is stored, and TEXT and
# HEADER.FIELDS are then answered from it (they need no structure of ours).
SECTIONS = ("BODY.PEEK[1]", "BODY.PEEK[2]", "BODY.PEEK[1.MIME]", "BINARY.PEEK[1]", "BINARY.PEEK[2]",
            "BODY.PEEK[HEADER.FIELDS (Subject)]", "BODY.PEEK[TEXT]", "BODY.PEEK[HEADER]")
FROM_HEADER_BLOCK = ("BODY.PEEK[HEADER.FIELDS (Subject)]", "BODY.PEEK[TEXT]", "BODY.PEEK[HEADER]")


def test_structure_disagrees(daemon):
    name = "faults-structure"
    conn = admin(["CREATE " + name])
    for message in (DISAGREEING, AGREEING, DISAGREEING):
        append(conn, name, message)
    conn.close()
    via, direct = connect(daemon.port, name), connect(PORT, name, verb="EXAMINE")
    differs = log_count(daemon, r"our BODYSTRUCTURE differs")
    same("a message our library reads otherwise: its whole message and structure equal direct", via, direct,
         "FETCH 1:2 (BODY.PEEK[] BODYSTRUCTURE)")
    same("... a third message's whole message alone equals direct", via, direct, "FETCH 3 (BODY.PEEK[])")
    check("... the fill found our structure differs for one", log_count(daemon, r"our BODYSTRUCTURE differs") ==
          differs + 1, daemon.log()[-2000:])
    for seq, why in ((1, "the structures differ"), (3, "no structure known")):
        for section in SECTIONS:
            upstream = log_count(daemon, NOT_VOUCHED)
            same("... message %d (%s): %s equals direct" % (seq, why, section), via, direct,
                 "FETCH %d (%s)" % (seq, section))
            # the header block, once fetched and stored, serves these
            if section not in FROM_HEADER_BLOCK:
                check("... it went upstream (or what the store can't vouch for did)",
                      log_count(daemon, NOT_VOUCHED) > upstream, daemon.log()[-3000:])
    before = from_cache(daemon)
    for section in ("BODY.PEEK[TEXT]", "BODY.PEEK[HEADER.FIELDS (Subject)]"):
        same("... message 1, with the header block BODY[HEADER] brought: %s equals direct" % section, via, direct,
             "FETCH 1 (%s)" % section)
    check("... answered from that header block", from_cache(daemon) == before + 2, daemon.log()[-3000:])
    before = from_cache(daemon)
    for section in SECTIONS:
        same("... message 2 (they agree): %s equals direct" % section, via, direct, "FETCH 2 (%s)" % section)
    check("... answered from the cache", from_cache(daemon) == before + len(SECTIONS), daemon.log()[-3000:])
    before = from_cache(daemon)
    same("... message 1's whole message equals direct", via, direct, "FETCH 1 (BODY.PEEK[])")
    check("... from the cache", from_cache(daemon) == before + 1)


def main():
    try:
        run_steps((test_kill_during_fill, test_garbage_file, test_damaged_file, test_damage_inside_values,
                   test_damage_past_first_checked, test_unreadable_file, test_full_store, test_budget, test_read_only_dir, test_replaced_by_rename, test_removed_under_daemon,
                   test_overwritten_in_place, test_wal_restarts_in_a_fill))
        cache = cache_dir()
        daemon = start(cache)
        daemon.cache = cache  # the bad-input steps share one daemon and store
        try:
            run_steps((test_missing_item, test_uidvalidity_change, test_concurrent_fill, test_structure_disagrees),
                      daemon)
        finally:
            stop(daemon)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # tens of MB of stores
    return summary()


if __name__ == "__main__":
    sys.exit(main())
