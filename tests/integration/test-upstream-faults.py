#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""imapcached when its upstream or its client fails part-way (issue 13
item 2), each case through a Relay that plays the fault (RelayFault) and
checked against the corpus manifest and a connection straight to Dovecot:

- the upstream closes during LOGIN, in the middle of a FETCH's body
  literal, and in the middle of the FETCH with which SELECT brings a
  known mailbox up to date: the client gets NO or BYE (never a wrong or
  half answer), and a new session gets the right answers (nothing half
  read was stored as whole);
- the upstream stalls during LOGIN (timeouts.upstream_connect fires: NO)
  and in the middle of a FETCH (timeouts.idle ends the session with BYE):
  nothing hangs;
- a client goes away in the middle of an APPEND's literal (no message,
  whole or partial, reaches the mailbox) and in the middle of a large
  body's FETCH (the store holds no incomplete body as complete; the next
  FETCH is right);
- SIGKILL while 20 clients run loaddriver's workload, then a new daemon
  on the same store: PRAGMA integrity_check says ok, and a new run of
  the workload gets only right answers.
The test_kill_during_fill of test-cache-faults.py covers SIGKILL during
one session's fill; test-proxy.py's test_upstream_dies an upstream that
closes between commands."""
import hashlib
import json
import os
import re
import shutil
import signal
import sqlite3
import sys
import tempfile
import threading
import time
import urllib.parse

import loaddriver
from checks import check, summary
import proxyfixture
from proxyfixture import (MANIFEST, PASS, PORT, USER, WAIT, Daemon, Raw, Relay, RelayFault, quote, run_steps,
                          upstream_dovecot)

tmp = proxyfixture.scratch_dir("test-upstream-faults.")
STALL_TIMEOUT = 2  # seconds: the timeouts of the stall cases, short so the test stays short
with open(MANIFEST) as f:
    MESSAGES = json.load(f)["messages"]
SHA256 = {m["uid"]: m["sha256"] for m in MESSAGES}
LARGEST = max(MESSAGES, key=lambda m: m["size"])["uid"]  # about 2 MB


def start(relay=None, cache=None, extra="", fault=None):
    """A daemon on a new store (or cache), its upstream Dovecot or relay;
    fault, once the daemon has learned what the relay offers before login
    (its own connection), is played on the relay's next connection."""
    cache = cache or tempfile.mkdtemp(prefix="cache.", dir=tmp)
    upstream = relay.upstream_entry() if relay else upstream_dovecot("none")
    # no pool: every session is a new upstream connection, for the relay to number
    config = 'cache = { dir = "%s"; prefetch = "off"; };\npool = { size = 0; };\n%s' % (cache, extra)
    daemon = Daemon(upstream, extra=config, tmpdir=tmp)
    daemon.cache = cache
    if relay is not None and daemon.wait_log(r"upstream relay: offers before login: ") is None:
        raise RuntimeError("the daemon did not ask the relay what it offers: %s" % daemon.log()[-1000:])
    if fault is not None:
        fault.connections = {relay.accepted}
        relay.fault = fault
    return daemon


def login(port, mailbox="INBOX"):
    conn = Raw(port, greeting=True)
    for command in ["LOGIN %s %s" % (quote(USER), quote(PASS))] + (["SELECT " + mailbox] if mailbox else []):
        line = conn.tagged("s", command)[-1]
        if not line.startswith("s OK"):
            raise RuntimeError("%s: %s" % (command, line))
    return conn


def responses(conn, command):
    """command's responses (bytes) up to its tagged one, or up to the
    connection's end (then the last item is None)."""
    conn.send(b"f " + command.encode() + b"\r\n")
    got = []
    while True:
        try:
            response = conn.response()
        except (EOFError, ConnectionResetError):
            return got + [None]
        got.append(response)
        if response.startswith(b"f "):
            return got


def bodies_of(response_list):
    """{UID: BODY[] bytes} of the FETCH responses in response_list."""
    found = {}
    for r in response_list:
        parsed = loaddriver.parse_fetch(r) if r else None
        if parsed and "UID" in parsed[1] and "BODY[]" in parsed[1]:
            found[int(parsed[1]["UID"])] = parsed[1]["BODY[]"]
    return found


def check_bodies(name, found):
    wrong = [uid for uid, body in found.items() if hashlib.sha256(body).hexdigest() != SHA256[uid]]
    check(name + ": every body the client got is whole and right", not wrong, wrong)


def stored_bodies(path):
    """{UID: SHA-256 of the stored bytes} of INBOX's complete bodies, and
    integrity_check's answer."""
    db = sqlite3.connect("file:%s?mode=ro" % urllib.parse.quote(path), uri=True, timeout=WAIT)
    try:
        integrity = [row[0] for row in db.execute("PRAGMA integrity_check")]
        stored = {}
        for (uid,) in db.execute("SELECT b.uid FROM bodies b JOIN mailboxes m ON m.id = b.mailbox_id "
                                 "WHERE m.name = 'INBOX' AND b.complete = 1"):
            data = b"".join(row[0] for row in db.execute(
                "SELECT c.data FROM body_chunks c JOIN mailboxes m ON m.id = c.mailbox_id "
                "WHERE m.name = 'INBOX' AND c.uid = ? ORDER BY c.chunk", (uid,)))
            stored[uid] = hashlib.sha256(data).hexdigest()
        return stored, integrity
    finally:
        db.close()


def check_store(name, daemon):
    path = os.path.join(daemon.cache, "relay", USER + ".sqlite")
    if not os.path.exists(path):
        return
    stored, integrity = stored_bodies(path)
    check(name + ": integrity_check says ok", integrity == ["ok"], integrity[:5])
    wrong = [uid for uid, sha in stored.items() if sha != SHA256.get(uid)]
    check(name + ": every body stored as complete is whole", not wrong, wrong)


def refetch(name, daemon, uids):
    """A new session through daemon gets every body of uids right."""
    conn = login(daemon.port)
    got = responses(conn, "UID FETCH %s (UID BODY.PEEK[])" % ",".join(map(str, uids)))
    conn.close()
    found = bodies_of(got)
    check(name + ": a new session then gets the bodies", sorted(found) == sorted(uids) and
          got[-1] is not None and got[-1].startswith(b"f OK"), (sorted(found), got[-1:]))
    check_bodies(name + ": ... and they", found)


def ended_cleanly(name, got):
    """The last thing the client saw is a tagged NO/BAD, a BYE, or the
    connection's end: never a tagged OK after a half answer."""
    last = got[-1]
    byes = [r for r in got if r and r.startswith(b"* BYE")]
    check(name + ": the client gets NO or BYE, not OK", last is None or byes or last.startswith((b"f NO", b"f BAD")),
          [r[:200] if r else r for r in got[-2:]])


def test_cut_during_login():
    relay = Relay()
    daemon = start(relay, fault=RelayFault(b" LOGIN ", upward=True))
    try:
        conn = Raw(daemon.port, greeting=True)
        got = responses(conn, "LOGIN %s %s" % (quote(USER), quote(PASS)))
        conn.close()
        check("cut during LOGIN: the relay cut", relay.fired == 1, relay.fired)
        ended_cleanly("cut during LOGIN", got)
        conn = login(daemon.port)  # connection 1: no fault
        check("cut during LOGIN: the next LOGIN works", True)
        conn.close()
        check("cut during LOGIN: the daemon runs on", daemon.returncode is None)
    finally:
        relay.close()
        check("cut during LOGIN: the daemon exits cleanly", daemon.stop() == 0)


def test_cut_mid_literal():
    """The upstream goes away 1000 bytes into the largest body's literal."""
    uids = [1, LARGEST, 2]
    relay = Relay()
    daemon = start(relay, fault=RelayFault(b"BODY[] {", after=1000))
    try:
        conn = login(daemon.port)
        got = responses(conn, "UID FETCH %s (UID BODY.PEEK[])" % ",".join(map(str, sorted(uids))))
        conn.close()
        check("cut mid-literal: the relay cut", relay.fired == 1, relay.fired)
        ended_cleanly("cut mid-literal", got)
        check_bodies("cut mid-literal", bodies_of(got))
        refetch("cut mid-literal", daemon, uids)
        check_store("cut mid-literal", daemon)
    finally:
        relay.close()
        check("cut mid-literal: the daemon exits cleanly", daemon.stop() == 0)


def test_cut_mid_fetch():
    """The upstream goes away between two FETCH responses of one command."""
    relay = Relay()
    daemon = start(relay, fault=RelayFault(b"* 3 FETCH (UID 3 ENVELOPE "))
    try:
        conn = login(daemon.port)
        got = responses(conn, "FETCH 1:6 (UID ENVELOPE BODY.PEEK[])")
        conn.close()
        check("cut mid-FETCH: the relay cut", relay.fired == 1, relay.fired)
        ended_cleanly("cut mid-FETCH", got)
        check_bodies("cut mid-FETCH", bodies_of(got))
        refetch("cut mid-FETCH", daemon, list(range(1, 7)))
        check_store("cut mid-FETCH", daemon)
    finally:
        relay.close()
        check("cut mid-FETCH: the daemon exits cleanly", daemon.stop() == 0)


def test_cut_mid_sync():
    """A known mailbox: the second SELECT brings the store up to date
    with a FETCH the relay cuts part-way."""
    relay = Relay()
    daemon = start(relay)
    try:
        conn = login(daemon.port)
        responses(conn, "FETCH 1:* (UID FLAGS ENVELOPE)")  # the store knows the mailbox
        conn.close()
        direct = login(PORT)  # a change the next SELECT must learn
        direct.tagged("s", "STORE 1:20 +FLAGS (\\Flagged $Sync)")
        relay.fault = RelayFault(b" FETCH (", after=500, connections={relay.accepted})
        conn = Raw(daemon.port, greeting=True)
        conn.tagged("s", "LOGIN %s %s" % (quote(USER), quote(PASS)))
        got = responses(conn, "SELECT INBOX")
        conn.close()
        fired = relay.fired
        relay.fault = None
        check("cut mid-sync: the relay cut during SELECT", fired == 1, (fired, [c.line for c in relay.recorded()][-6:]))
        ended_cleanly("cut mid-sync", got)
        conn = login(daemon.port)
        via = responses(conn, "FETCH 1:* (UID FLAGS)")
        conn.close()
        want = responses(direct, "FETCH 1:* (UID FLAGS)")
        direct.tagged("s", "STORE 1:20 -FLAGS (\\Flagged $Sync)")
        direct.close()
        check("cut mid-sync: a new session's flags equal direct's", via[:-1] == want[:-1],
              [(a, b) for a, b in zip(via, want) if a != b][:3])
    finally:
        relay.close()
        check("cut mid-sync: the daemon exits cleanly", daemon.stop() == 0)


def test_stall_during_login():
    relay = Relay()
    daemon = start(relay, extra="timeouts = { upstream_connect = %d; };\n" % STALL_TIMEOUT,
                   fault=RelayFault(b" LOGIN ", upward=True, action="stall"))
    try:
        conn = Raw(daemon.port, greeting=True, timeout=STALL_TIMEOUT + WAIT)
        started = time.monotonic()
        got = responses(conn, "LOGIN %s %s" % (quote(USER), quote(PASS)))
        took = time.monotonic() - started
        conn.close()
        check("stall during LOGIN: the relay stalled", relay.fired == 1, relay.fired)
        ended_cleanly("stall during LOGIN", got)
        check("stall during LOGIN: the answer came after about upstream_connect", took < STALL_TIMEOUT + 5, took)
        login(daemon.port).close()
    finally:
        relay.close()
        check("stall during LOGIN: the daemon exits cleanly", daemon.stop() == 0)


def stall_mid_fetch(label, timeout):
    """The upstream stalls in the middle of a body; the setting timeouts.TIMEOUT,
    set short, ends the session: BYE, nothing half stored, a good refetch."""
    relay = Relay()
    daemon = start(relay, extra="timeouts = { %s = %d; };\n" % (timeout, STALL_TIMEOUT),
                   fault=RelayFault(b"BODY[] {", after=1000, action="stall"))
    try:
        conn = login(daemon.port)
        conn.sock.settimeout(STALL_TIMEOUT + WAIT)
        started = time.monotonic()
        got = responses(conn, "UID FETCH %d (UID BODY.PEEK[])" % LARGEST)
        took = time.monotonic() - started
        conn.close()
        check("%s: the relay stalled" % label, relay.fired == 1, relay.fired)
        ended_cleanly(label, got)
        check("%s: the session ended after about timeouts.%s" % (label, timeout), took < STALL_TIMEOUT + 5, took)
        check_bodies(label, bodies_of(got))
        refetch(label, daemon, [LARGEST])
        check_store(label, daemon)
    finally:
        relay.close()
        check("%s: the daemon exits cleanly" % label, daemon.stop() == 0)


def test_stall_mid_fetch():
    stall_mid_fetch("stall mid-FETCH", "idle")


def test_stall_mid_fetch_command_timeout():
    """The client's idle timeout long: the upstream's own silence ends it."""
    stall_mid_fetch("stall, upstream_command", "upstream_command")


def test_client_gone_mid_append():
    box = "Faults-append-%d" % os.getpid()
    direct = login(PORT, mailbox=None)
    direct.tagged("s", "CREATE " + box)
    daemon = start()
    try:
        conn = login(daemon.port, mailbox=None)
        message = loaddriver.scratch_message("mid-append") * 50
        conn.send(b"a APPEND %s {%d}\r\n" % (box.encode(), len(message)))
        line = conn.line()
        check("client gone mid-APPEND: the daemon asks for the literal", line.startswith("+"), line)
        conn.send(message[:len(message) // 2])
        time.sleep(0.3)
        conn.close()
        time.sleep(1)
        status = direct.tagged("s", "STATUS %s (MESSAGES)" % box)
        check("client gone mid-APPEND: no message reached the mailbox",
              any("(MESSAGES 0)" in l for l in status), status)
        via = login(daemon.port, mailbox=None)
        line = via.tagged("s", "NOOP")[-1]
        check("client gone mid-APPEND: a new session works", line.startswith("s OK"), line)
        via.close()
    finally:
        direct.tagged("s", "DELETE " + box)
        direct.close()
        check("client gone mid-APPEND: the daemon exits cleanly", daemon.stop() == 0)


def test_client_gone_mid_fetch():
    daemon = start()
    try:
        conn = login(daemon.port)
        conn.send(b"f UID FETCH %d (UID BODY.PEEK[])\r\n" % LARGEST)
        got = conn.sock.recv(1000)
        check("client gone mid-FETCH: the body started", len(got) > 0)
        conn.close()
        time.sleep(1)
        refetch("client gone mid-FETCH", daemon, [LARGEST])
        path = os.path.join(daemon.cache, "dovecot", USER + ".sqlite")
        if os.path.exists(path):
            stored, integrity = stored_bodies(path)
            check("client gone mid-FETCH: integrity_check says ok", integrity == ["ok"], integrity[:5])
            wrong = [uid for uid, sha in stored.items() if sha != SHA256.get(uid)]
            check("client gone mid-FETCH: every body stored as complete is whole", not wrong, wrong)
    finally:
        check("client gone mid-FETCH: the daemon exits cleanly", daemon.stop() == 0)


def test_kill_under_load():
    accounts = loaddriver.accounts(5)
    if not accounts:
        check("kill under load: load accounts (IMAPTEST_LOAD_USERS)", False)
        return
    corpus = loaddriver.Corpus()
    reference = loaddriver.reference(corpus, accounts)
    daemon = start()
    cache = daemon.cache
    timer = threading.Timer(3.0, daemon.signal, (signal.SIGKILL,))
    timer.start()
    try:
        loaddriver.run(daemon.port, corpus, reference, accounts, 20, 5, "killed")  # its answers end with the daemon
    except OSError:
        pass
    timer.join()
    check("kill under load: the daemon was killed", daemon.wait_exit() == -signal.SIGKILL, daemon.returncode)
    daemon.stop()
    stores = [os.path.join(cache, "dovecot", u + ".sqlite") for u, _ in accounts]
    for path in stores:
        if os.path.exists(path):
            _, integrity = stored_bodies(path)
            check("kill under load: %s integrity_check says ok" % os.path.basename(path), integrity == ["ok"],
                  integrity[:5])
    daemon = start(cache=cache)
    try:
        result = loaddriver.run(daemon.port, corpus, reference, accounts, 20, 5, "restarted")
        for failure in result.failures:
            print("FAIL: " + failure)
        check("kill under load: after the restart every answer is right (%d wrong, %d commands)" % (
            result.failure_count, result.commands), result.failure_count == 0 and result.commands > 0)
    finally:
        check("kill under load: the restarted daemon exits cleanly", daemon.stop() == 0)


def main():
    try:
        run_steps((test_cut_during_login, test_cut_mid_literal, test_cut_mid_fetch, test_cut_mid_sync,
                   test_stall_during_login, test_stall_mid_fetch, test_stall_mid_fetch_command_timeout,
                   test_client_gone_mid_append,
                   test_client_gone_mid_fetch, test_kill_under_load))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return summary()


if __name__ == "__main__":
    sys.exit(main())
