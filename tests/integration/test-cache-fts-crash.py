#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""kill -9 while the FTS5 index of cached bodies is being built (issue 12
item 2, with issue 11 item 9's crash safety).

A mailbox of its own ("Big": the corpus copied COPIES times, so that
indexing its text takes a few seconds) is filled whole through
imapcached; the daemon is killed with SIGKILL once the store shows the
index part-way (some bodies marked text_indexed, not all: read from the
store itself, not from the daemon's own counters). Then:

- the store left by the kill passes PRAGMA integrity_check and FTS5's
  own 'integrity-check' (on a copy), and each body is indexed or not,
  never half (its text's piece 0, written last, and its mark agree; no
  piece is left without its body);
- a new daemon on the same store, with a session of the account open and
  nothing else asked of it, finishes the index on its own: every body
  indexed, and its log says so for exactly the bodies left at the kill;
- while the store shows the index incomplete, every SEARCH TEXT/BODY
  goes upstream (its log line says why), and its answer equals Dovecot's;
- once complete, SEARCH and UID SEARCH with TEXT and BODY (terms of three
  characters or more, shorter ones, absent ones, header lines, UTF-8)
  are answered from the cache, and each answer is the same bytes as
  Dovecot's direct answer to the same command;
- after a clean stop, the store passes both checks again.

Runs as root or not; the daemon runs as this process's user."""
import os
import re
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
import urllib.parse

from checks import check, summary
import proxyfixture
from proxyfixture import PASS, PORT, USER, WAIT, Daemon, Raw, difference, quote, upstream_dovecot

COPIES = int(os.environ.get("IMAPTEST_FTS_COPIES", "4"))  # the corpus (6.8 MB) this many times: seconds of indexing
MAILBOX = "Big"
FILL = b"UID FETCH 1:* (BODY.PEEK[])"
KILL_SHARE = (0.2, 0.6)  # kill once this share of the bodies (at least, at most) is indexed
INDEXED_LINE = r"cache .+?: the text of (\d+) bodies indexed"
ROUTE_LINE = r"SEARCH (answered from the cache|goes upstream)"
LOCAL_LINE = r"SEARCH answered from the cache"
NOT_INDEXED = r"SEARCH goes upstream: a body not cached whole, not indexed yet"
MOVED_ASIDE = r"moved aside to \S+\.corrupt-"
# TEXT and BODY keys: words of the corpus, pieces across word ends, terms
# too short for a trigram, absent ones, header lines as TEXT sees them,
# UTF-8 (sent as LITERAL+ literals with CHARSET UTF-8).
STRINGS = ("proxy", "rollback proxy", "schedule p", "y latency", "li", "e", "zebra", "subject:",
           "content-type: text", "example.org", "boundary", "=C3", "réunion", "münchen", "山田", "Café")

tmp = proxyfixture.scratch_dir("test-cache-fts-crash.")


def store_path(cache):
    """The account's store (cache_file_path(); the names need no encoding)."""
    return os.path.join(cache, "dovecot", USER + ".sqlite")


def start(cache):
    config = 'cache = { dir = "%s"; prefetch = "off"; body_budget = "1G"; };\ntimeouts = { shutdown = 0; };\n' % cache
    return Daemon(upstream_dovecot("none"), extra=config, tmpdir=tmp)


def connect(port, verb):
    conn = Raw(port, greeting=True, timeout=WAIT * 3)
    for command in ("LOGIN %s %s" % (quote(USER), quote(PASS)), "%s %s" % (verb, MAILBOX)):
        line = conn.tagged("s", command)[-1]
        if not line.startswith("s OK"):
            raise RuntimeError("%s: %s" % (command, line))
    return conn


def search_command(uid, key, text):
    """SEARCH key "text": quoted when ASCII, else a LITERAL+ literal with CHARSET UTF-8."""
    data = text.encode()
    verb = b"UID SEARCH" if uid else b"SEARCH"
    if data.isascii():
        return b"%s %s %s" % (verb, key, quote(text).encode())
    return b"%s CHARSET UTF-8 %s {%d+}\r\n%s" % (verb, key, len(data), data)


def prepare_mailbox():
    """MAILBOX on Dovecot: INBOX copied COPIES times. Returns its message count."""
    conn = Raw(PORT, greeting=True, timeout=WAIT * 3)
    conn.tagged("a", "LOGIN %s %s" % (quote(USER), quote(PASS)))
    conn.tagged("b", "CREATE %s" % MAILBOX)
    conn.tagged("c", "SELECT INBOX")
    for _ in range(COPIES):
        line = conn.tagged("d", "COPY 1:* %s" % MAILBOX)[-1]
        if not line.startswith("d OK"):
            raise RuntimeError("COPY: %s" % line)
    exists = [l for l in conn.tagged("e", "EXAMINE %s" % MAILBOX) if l.endswith(" EXISTS")]
    conn.tagged("z", "LOGOUT")
    conn.close()
    return int(exists[0].split()[1])


class Store:
    """The store, read-only beside the running daemon: what it holds as
    committed, whatever the daemon's own counters say."""

    def __init__(self, path):
        self.db = sqlite3.connect("file:%s?mode=ro" % urllib.parse.quote(path), uri=True, timeout=WAIT)

    def progress(self):
        """(complete bodies, those indexed)."""
        return self.db.execute("SELECT count(*), coalesce(sum(text_indexed), 0) FROM bodies "
                               "WHERE complete = 1").fetchone()

    def close(self):
        self.db.close()


def sound(name, path):
    """Checks a copy of the store at path (and its WAL): integrity_check,
    FTS5's integrity-check, and that each body's mark and text row agree.
    Returns (complete bodies, indexed ones)."""
    copy = tempfile.mkdtemp(prefix="store.", dir=tmp)
    for suffix in ("", "-wal"):
        if os.path.exists(path + suffix):
            shutil.copy(path + suffix, os.path.join(copy, "store.sqlite" + suffix))
    db = sqlite3.connect(os.path.join(copy, "store.sqlite"))
    try:
        integrity = [row[0] for row in db.execute("PRAGMA integrity_check")]
        check(name + ": PRAGMA integrity_check says ok", integrity == ["ok"], integrity[:5])
        try:
            db.execute("INSERT INTO body_text(body_text, rank) VALUES('integrity-check', 1)")
            fts = "ok"
        except sqlite3.Error as e:
            fts = str(e)
        check(name + ": FTS5's integrity-check (index against its text) passes", fts == "ok", fts)
        # a body's text is in pieces, rowid ((mailbox_id << 32) | uid) << 8 | piece;
        # piece 0 is written last, with the mark
        marked_without_row = db.execute(
            "SELECT count(*) FROM bodies b WHERE b.text_indexed = 1 AND NOT EXISTS "
            "(SELECT 1 FROM body_text t WHERE t.rowid = ((b.mailbox_id << 32) | b.uid) << 8)").fetchone()[0]
        row_without_mark = db.execute(
            "SELECT count(*) FROM body_text t WHERE (t.rowid & 255) = 0 AND NOT EXISTS (SELECT 1 FROM bodies b "
            "WHERE b.text_indexed = 1 AND t.rowid = ((b.mailbox_id << 32) | b.uid) << 8)").fetchone()[0]
        orphans = db.execute(
            "SELECT count(*) FROM body_text t WHERE NOT EXISTS (SELECT 1 FROM bodies b "
            "WHERE t.rowid >> 8 = (b.mailbox_id << 32) | b.uid)").fetchone()[0]
        gaps = db.execute(
            "SELECT count(*) FROM (SELECT count(*) AS n, max(rowid & 255) AS last FROM body_text "
            "GROUP BY rowid >> 8 HAVING min(rowid & 255) = 0) WHERE n != last + 1").fetchone()[0]
        check(name + ": every body is indexed whole or not at all (mark and piece 0 agree, an indexed body's "
              "pieces run from 0 with no gap, no piece without its body)",
              marked_without_row == 0 and row_without_mark == 0 and orphans == 0 and gaps == 0,
              (marked_without_row, row_without_mark, orphans, gaps))
        return db.execute("SELECT count(*), coalesce(sum(text_indexed), 0) FROM bodies WHERE complete = 1").fetchone()
    finally:
        db.close()
        shutil.rmtree(copy, ignore_errors=True)


def fill_and_kill(cache, count):
    """Fills MAILBOX whole through a daemon, kills it with SIGKILL while
    its index is part-way. Returns (complete, indexed) seen last before the kill."""
    daemon = start(cache)
    try:
        conn = connect(daemon.port, "SELECT")  # stays logged in: the store (and its indexing) lives with a session
        answer = conn.exchange(FILL)
        check("the fill of %d messages ended OK" % count, answer[-1].startswith(b"f OK"), answer[-1])
        store = Store(store_path(cache))
        deadline, seen = time.monotonic() + WAIT * 3, (0, 0)
        first = store.progress()[1]  # runs may have ended during the fill; the one after it never ends part-way
        try:
            while time.monotonic() < deadline:
                seen = store.progress()
                if seen[0] == count and seen[1] > first and count * KILL_SHARE[0] <= seen[1] <= count * KILL_SHARE[1]:
                    daemon.signal(signal.SIGKILL)
                    break
                if seen[0] == count and seen[1] > count * KILL_SHARE[1]:
                    break  # too late
                time.sleep(0.005)
        finally:
            store.close()
        logged = sum(int(m.group(1)) for m in (re.search(INDEXED_LINE, l) for l in daemon.lines) if m)
        conn.close()
    finally:
        daemon.stop()
    check("kill -9 while the index was part-way (%d of %d bodies indexed, %d when the fill ended)" % (
          seen[1], seen[0], first), daemon.returncode == -signal.SIGKILL and first < seen[1] < count,
          (daemon.returncode, seen))
    # a run of batches may end while the fill goes on (a pause longer than
    # CACHE_FTS_QUIET_MS, as under sanitizers): its log line counts what it did
    check("... its log had not said every body indexed (%d logged)" % logged, logged < count, logged)
    return seen


def routed(daemon, before):
    """Waits for the route line of the SEARCH just answered (the before+1-th); its text."""
    found = daemon.wait_log(ROUTE_LINE, count=before + 1)
    if found is None:
        return None
    return [l for l in daemon.lines if re.search(ROUTE_LINE, l)][before]


def searches_while_indexing(daemon, via, direct, store, count):
    """TEXT/BODY searches from the restart on, until the store shows every
    body indexed: each one the store showed incomplete after its answer
    must have gone upstream. Returns how many such there were."""
    during, n = 0, 0
    deadline = time.monotonic() + WAIT * 3
    while time.monotonic() < deadline:
        text = STRINGS[n % len(STRINGS)]
        command = search_command(n % 2 == 1, b"TEXT" if n % 3 else b"BODY", text)
        n += 1
        before = daemon.count_log(ROUTE_LINE)
        got, want = via.exchange(command), direct.exchange(command)
        complete, indexed = store.progress()
        line = routed(daemon, before)
        if indexed < complete:
            during += 1
            check("index incomplete (%d of %d): %r goes upstream" % (indexed, complete, command[:60]),
                  line is not None and re.search(NOT_INDEXED, line), line)
        check("... %r equals direct" % command[:60], got == want, difference(got, want))
        if indexed == complete == count:
            break
    return during


def searches_indexed(daemon, via, direct):
    """Every TEXT/BODY search, SEARCH and UID SEARCH, answered from the cache and equal to direct."""
    commands = [search_command(uid, key, text) for text in STRINGS for key, uid in ((b"TEXT", False),
                                                                                   (b"BODY", True))]
    commands += [b'SEARCH TEXT "proxy" NOT BODY "cache"', b'UID SEARCH OR BODY "zebra" TEXT "li"',
                 b'SEARCH BODY "schedule" UNSEEN']
    local = 0
    for command in commands:
        before, local_before = daemon.count_log(ROUTE_LINE), daemon.count_log(LOCAL_LINE)
        got, want = via.exchange(command), direct.exchange(command)
        routed(daemon, before)
        is_local = daemon.count_log(LOCAL_LINE) > local_before
        local += is_local
        check("index complete: %r equals direct%s" % (command[:60], "" if is_local else " (NOT from the cache)"),
              got == want, difference(got, want))
    check("index complete: every TEXT/BODY search was answered from the cache (%d of %d)" % (local, len(commands)),
          local == len(commands))


def main():
    count = prepare_mailbox()
    cache = tempfile.mkdtemp(prefix="cache.", dir=tmp)
    complete, indexed = fill_and_kill(cache, count)
    path = store_path(cache)
    complete, indexed = sound("after kill -9", path)
    check("... the store holds every body whole, part of them indexed (%d of %d)" % (indexed, complete),
          complete == count and 0 < indexed < count, (complete, indexed))
    left = complete - indexed
    daemon = start(cache)
    try:
        via = connect(daemon.port, "SELECT")
        direct = connect(PORT, "EXAMINE")
        store = Store(path)
        try:
            during = searches_while_indexing(daemon, via, direct, store, count)
            check("restart: some TEXT/BODY searches ran while the index was incomplete (%d)" % during, during > 0)
            deadline = time.monotonic() + WAIT * 3
            while store.progress()[1] < count and time.monotonic() < deadline:
                time.sleep(0.1)
            check("restart: the index finished on its own (%d of %d bodies)" % (store.progress()[1], count),
                  store.progress() == (count, count), store.progress())
        finally:
            store.close()
        runs = daemon.wait_log(INDEXED_LINE)
        done = sum(int(m.group(1)) for m in (re.search(INDEXED_LINE, l) for l in daemon.lines) if m)
        check("... its log says so, for exactly the %d bodies left at the kill" % left,
              runs is not None and done == left, (done, left))
        check("... the store was opened as it was (not moved aside)", daemon.count_log(MOVED_ASIDE) == 0)
        searches_indexed(daemon, via, direct)
        via.close()
        direct.close()
    finally:
        status = daemon.stop()
    check("the daemon exited cleanly", status == 0, status)
    sound("after the restart's index and a clean stop", path)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # a broken step is a failure, not a crash of the test
        check("the test ran to the end", False, repr(e))
    sys.exit(summary())
