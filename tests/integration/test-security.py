#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Security properties of imapcached (issue 13 item 4), each checked so
that it fails when the property breaks (doc/threat-model.md says why each
matters):

- isolation: testuser and mirroruser have the same INBOX (UIDVALIDITY,
  UIDs); each gets a message of its own at the same new UID and flags of
  its own. With a warm cache for both, every FETCH item kind, SEARCH and
  UID SEARCH through the proxy equals the same account's answer straight
  from Dovecot; `imapcachectl stats` of each account counts only its own
  store, and neither store file holds the other's message;
- a master user logging in as testuser and then as mirroruser (SASL
  PLAIN's authorization id) gets each account's own answers, and the
  stores are the accounts', not the master user's;
- a wrong password with a warm cache gets Dovecot's NO and no data; a
  password changed upstream (in the fixture's passwd file) stops the old
  one at once without the pool, and once pool.max_age has passed with it
  (within max_age the pooled connection still serves it, as documented);
- the store's files are 0600 and its directories 0700; a cache.dir that
  is group- or world-writable, or another user's, stops the daemon at
  start with exit 78 and a message that says what to do;
- started as root with user = "nobody", the daemon binds a port below
  1024 and then runs as nobody (uid, gid and groups in /proc/PID/status),
  before it says ready; its cache and control socket are nobody's;
- upstream TLS: an untrusted CA or the system store (which lacks the test
  CA) is refused, also for STARTTLS; verify = false accepts it; the test
  CA as ca_file verifies; a host name the certificate does not name
  (127.0.0.2, through a forwarder) is refused;
- STARTTLS injection from the upstream: a fake upstream sends plain-text
  responses right behind its "OK Begin TLS"; none of them reaches the
  client (test-daemon.py checks the client's side: commands pipelined
  behind the client's STARTTLS are dropped).

Every daemon runs on free loopback ports and is stopped by its PID."""
import base64
import json
import os
import pwd
import re
import select
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from checks import check, summary  # noqa: E402
import proxyfixture  # noqa: E402 (needs the path above)
from proxyfixture import (BUILD, CA, ENV, HOST, Forwarder, PASS, PASS3, PORT, TIMINGS_BYTES, TLS_PORT, USER, USER3,  # noqa: E402
                          Daemon, Raw, quote, run_steps, upstream_dovecot)

CTL = os.path.join(BUILD, "daemon", "imapcachectl")
UNTRUSTED_CA = ENV["IMAPTEST_UNTRUSTED_CA"]
MASTER_USER, MASTER_PASS = ENV["IMAPTEST_MASTER_USER"], ENV["IMAPTEST_MASTER_PASS"]
FIXTURE = ENV["IMAPTEST_DIR"]
tmp = proxyfixture.scratch_dir("test-security.")
os.chmod(tmp, 0o755)
ROOT = os.geteuid() == 0


class Side:
    """A logged-in connection (direct or through the proxy);
    exchange() returns a command's responses as bytes, the tagged one's
    timings cut."""

    def __init__(self, port, user, password, select="EXAMINE INBOX"):
        self.conn = Raw(port, greeting=True)
        self.tag = 0
        self.login = self.exchange("LOGIN %s %s" % (quote(user), quote(password)))
        if select is not None and b" OK " in self.login[-1]:
            self.exchange(select)

    def exchange(self, command):
        self.tag += 1
        tag = b"x%d" % self.tag
        self.conn.send(tag + b" " + command.encode() + b"\r\n")
        out = []
        while True:
            response = self.conn.response()
            out.append(TIMINGS_BYTES.sub(b"", response))
            if response.startswith(tag + b" "):
                return out

    def close(self):
        try:
            self.exchange("LOGOUT")
        except (EOFError, OSError):
            pass
        self.conn.close()


def untagged(responses):
    """The untagged responses and the tagged line's status word."""
    return [r for r in responses[:-1]], responses[-1].split(b" ")[1]


# ---- isolation ----

def message(user, n):
    return ("From: %s <%s@example.org>\r\nTo: someone@example.org\r\nSubject: only-%s-%d\r\n"
            "Date: Mon, %d Jan 2024 10:00:00 +0000\r\nMessage-ID: <%s-%d@example.org>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b-%s\"\r\n\r\n"
            "--b-%s\r\nContent-Type: text/plain\r\n\r\nsecret of %s %s\r\n--b-%s\r\n"
            "Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n%s\r\n"
            "--b-%s--\r\n" % (user, user, user, n, n + 1, user, n, user, user, user, "x" * (n * 7 + len(user)),
                              user, "QUJD" * (n + len(user)), user)).encode()


def append(port, user, password, count, day):
    """APPENDs count messages of user's own straight to Dovecot; returns
    their UIDs and the INBOX's UIDVALIDITY."""
    c = Side(port, user, password, select=None)
    uids = []
    for n in range(count):
        data = message(user, n)
        date = '"%02d-Mar-2023 12:00:00 +0000"' % (day + n)
        c.conn.send(b"a APPEND INBOX (%s) %s {%d+}\r\n" % (b"$Only" + user.encode(), date.encode(), len(data))
                    + data + b"\r\n")
        line = c.conn.until_tagged("a")[-1]
        m = re.search(r"APPENDUID (\d+) (\d+)", line)
        uids.append(int(m.group(2)) if m else None)
        validity = m.group(1) if m else None
    c.exchange("SELECT INBOX")
    c.exchange("UID STORE 1 +FLAGS (\\Flagged $Mark%s)" % user)  # a flag change of this account only
    c.close()
    return uids, validity


FETCHES = [
    "UID FETCH %(new)s (UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODYSTRUCTURE BODY)",
    "UID FETCH %(new)s (BODY.PEEK[])", "UID FETCH %(new)s (BODY.PEEK[HEADER])",
    "UID FETCH %(new)s (BODY.PEEK[TEXT])", "UID FETCH %(new)s (BODY.PEEK[1])",
    "UID FETCH %(new)s (BODY.PEEK[2]<0.10>)", "UID FETCH %(new)s (BODY.PEEK[1.MIME])",
    "UID FETCH %(new)s (BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)])",
    "UID FETCH %(new)s (BODY.PEEK[HEADER.FIELDS.NOT (SUBJECT)])",
    "UID FETCH %(new)s (BINARY.PEEK[2] BINARY.SIZE[2])", "UID FETCH %(new)s (RFC822.HEADER)",
    "UID FETCH %(new)s FAST", "UID FETCH %(new)s ALL", "UID FETCH %(new)s FULL",
    "FETCH 1:5 (FLAGS ENVELOPE)", "FETCH *:* (UID FLAGS RFC822.SIZE)",
]
SEARCHES = [
    "UID SEARCH ALL", "SEARCH FLAGGED", "SEARCH KEYWORD $Mark%(user)s", "SEARCH KEYWORD $Only%(user)s",
    "UID SEARCH SUBJECT only-%(user)s", "UID SEARCH SUBJECT only-%(other)s", "SEARCH LARGER 1000 UID %(new)s",
    "SEARCH ON 05-Mar-2023", "SEARCH ON 07-Mar-2023", "UID SEARCH BODY \"secret of\"",
    "SEARCH SENTON 2-Jan-2024", "UID SEARCH UID %(new)s NOT FLAGGED",
]


def compare(daemon, accounts, label):
    """Every FETCH and SEARCH through the daemon equals the same account's
    direct answer; returns how many differed."""
    differences = 0
    for user, password, other, new in accounts:
        direct = Side(PORT, user, password)
        proxied = Side(daemon.port, user, password)
        values = {"new": new, "user": user, "other": other}
        for command in FETCHES + SEARCHES:
            command = command % values
            want, got = direct.exchange(command), proxied.exchange(command)
            if untagged(want) != untagged(got):
                differences += 1
                check("%s: %s as %s equals direct" % (label, command, user), False, (want[:3], got[:3]))
        direct.close()
        proxied.close()
    return differences


NEW_UIDS = []  # the UIDs test_isolation gave each twin a message of its own at


def test_isolation(daemon):
    new1, validity1 = append(PORT, USER, PASS, 2, 5)
    new3, validity3 = append(PORT, USER3, PASS3, 2, 7)
    check("the twins' INBOXes share UIDVALIDITY and the new UIDs", validity1 == validity3 and new1 == new3,
          (validity1, validity3, new1, new3))
    new = "%d:%d" % (new1[0], new1[-1])
    NEW_UIDS[:] = new1
    accounts = [(USER, PASS, USER3, new), (USER3, PASS3, USER, new)]
    # testuser warms the cache, twice, then mirroruser's first (cold) answers must be its own
    check("testuser, cold then warm: every answer is testuser's own",
          compare(daemon, accounts[:1], "cold") + compare(daemon, accounts[:1], "warm") == 0)
    hits = daemon.count_log(r"answered from the cache")
    check("mirroruser after testuser's warm-up: every answer is mirroruser's own",
          compare(daemon, accounts[1:], "other account") == 0)
    check("both warm: every answer is the account's own", compare(daemon, accounts, "both warm") == 0)
    check("... and the warm passes were answered from the cache",
          daemon.count_log(r"answered from the cache") > hits + len(FETCHES), daemon.count_log("answered"))
    stores = {u: os.path.join(daemon.cache, "dovecot", u + ".sqlite") for u in (USER, USER3)}
    for user, other in ((USER, USER3), (USER3, USER)):
        with open(stores[user], "rb") as f:
            data = f.read()
        wal = stores[user] + "-wal"
        if os.path.exists(wal):
            with open(wal, "rb") as f:
                data += f.read()
        check("%s's store holds its own message and not %s's" % (user, other),
              ("secret of %s" % user).encode() in data and ("secret of %s" % other).encode() not in data)
    stats = {}
    for user in (USER, USER3):
        result = subprocess.run([CTL, "--socket", daemon.socket, "stats", "--json", user, "INBOX"],
                                capture_output=True, text=True, timeout=30)
        stats[user] = json.loads(result.stdout)["mailboxes"][0] if result.returncode == 0 else result.stderr
    check("imapcachectl stats: each account's bytes are its own store's",
          isinstance(stats[USER], dict) and isinstance(stats[USER3], dict) and
          stats[USER]["bytes"] != stats[USER3]["bytes"] and stats[USER]["whole"] == stats[USER3]["whole"], stats)


def test_modes(daemon):
    bad = []
    for root, dirs, files in os.walk(daemon.cache):
        for name in dirs + [""]:
            mode = os.stat(os.path.join(root, name)).st_mode & 0o7777
            if mode != 0o700:
                bad.append((os.path.join(root, name), oct(mode)))
        for name in files:
            mode = os.stat(os.path.join(root, name)).st_mode & 0o7777
            if mode != 0o600:
                bad.append((os.path.join(root, name), oct(mode)))
    files = sum(len(f) for _, _, f in os.walk(daemon.cache))
    check("cache: %d files, every one 0600, every directory 0700" % files, files >= 2 and not bad, bad)
    mode = os.stat(daemon.socket).st_mode & 0o7777
    check("the control socket is 0600", mode == 0o600, oct(mode))


def master_login(port, user):
    """A connection through port, logged in as user by the fixture's master
    user (SASL PLAIN with an authorization id), INBOX examined."""
    conn = Raw(port, greeting=True)
    response = base64.b64encode(b"%s\0%s\0%s" % (user.encode(), MASTER_USER.encode(), MASTER_PASS.encode()))
    c = Side.__new__(Side)
    c.conn, c.tag = conn, 0
    c.login = c.exchange("AUTHENTICATE PLAIN " + response.decode())
    c.exchange("EXAMINE INBOX")
    return c


def test_master_user():
    """A master user logging in as testuser, then as mirroruser: each
    session gets its own account's cache, not the master user's."""
    if not NEW_UIDS:
        check("master user: skipped, test_isolation made no messages", False)
        return
    new = "%d:%d" % (NEW_UIDS[0], NEW_UIDS[-1])
    d = Daemon(upstream_dovecot("none"), extra="timeouts = { shutdown = 0; };\n", tmpdir=tmp)
    try:
        for user, password in ((USER, PASS), (USER3, PASS3), (USER, PASS)):
            direct = Side(PORT, user, password)
            for _ in range(2):  # the second from the cache
                proxied = master_login(d.port, user)
                check("master user as %s: logged in" % user, untagged(proxied.login)[1] == b"OK", proxied.login)
                for command in ("UID FETCH %s (BODY.PEEK[] ENVELOPE RFC822.SIZE)" % new,
                                "UID SEARCH SUBJECT only-%s" % user):
                    want, got = direct.exchange(command), proxied.exchange(command)
                    check("master user as %s: %s equals %s's own answer" % (user, command.split(" (")[0], user),
                          untagged(want) == untagged(got), (want[:2], got[:2]))
                proxied.close()
            direct.close()
        cache = re.search(r'cache = \{ dir = "([^"]+)"', open(d.path).read()).group(1)
        stores = sorted(os.listdir(os.path.join(cache, "dovecot")))
        check("the stores are the accounts', none the master user's",
              not any(name.startswith(MASTER_USER) for name in stores), stores)
    finally:
        d.stop()


# ---- passwords ----

def refused(port, user, password, want):
    """Logs in with a wrong password; the NO must be Dovecot's and nothing
    after it may carry data."""
    c = Side(port, user, password, select=None)
    ok = untagged(c.login)[1] == b"NO" and c.login[-1].split(b" ", 1)[1].rstrip() == want.split(b" ", 1)[1].rstrip()
    data = []
    for command in ("SELECT INBOX", "FETCH 1:* (BODY.PEEK[] FLAGS)", "UID SEARCH ALL", "STATUS INBOX (MESSAGES)"):
        lines = c.exchange(command)
        data += lines[:-1]
        ok = ok and untagged(lines)[1] in (b"BAD", b"NO")
    c.conn.close()
    return ok and not data, (c.login, data)


def direct_no(user, password):
    c = Raw(PORT, greeting=True)
    line = c.tagged("x1", "LOGIN %s %s" % (quote(user), quote(password)))[-1]
    c.close()
    return TIMINGS_BYTES.sub(b"", line.encode())


def test_wrong_password(daemon):
    # the cache is warm (test_isolation) and testuser's connection pooled
    ok, detail = refused(daemon.port, USER, "wrong-" + PASS, direct_no(USER, "wrong-" + PASS))
    check("a wrong password with a warm cache and a pooled connection: Dovecot's NO, then no data", ok, detail)


def set_password(user, password):
    """Sets user's password in the fixture's passwd file; Dovecot looks
    at the file again at most once a second, so this waits that long."""
    path = os.path.join(FIXTURE, "passwd")
    with open(path) as f:
        lines = f.read().splitlines()
    with open(path + ".new", "w") as f:
        for line in lines:
            if line.startswith(user + ":"):
                line = "%s:{PLAIN}%s::::::" % (user, password)
            f.write(line + "\n")
    os.rename(path + ".new", path)
    time.sleep(1.2)


def warm_and_pool(port, user, password):
    c = Side(port, user, password)
    c.exchange("FETCH 1:3 (BODY.PEEK[])")
    c.exchange("FETCH 1:3 (BODY.PEEK[])")
    c.close()


MAX_AGE = 6  # seconds: pool.max_age of the pooled daemon below


def test_password_change():
    new = "changed-" + PASS
    quick = "timeouts = { shutdown = 0; };\n"
    pooled = Daemon(upstream_dovecot("none"), extra="pool = { size = 4; max_age = %d; };\n%s" % (MAX_AGE, quick),
                    tmpdir=tmp)
    unpooled = Daemon(upstream_dovecot("none"), extra="pool = 0;\n" + quick, tmpdir=tmp)
    try:
        started = time.monotonic()
        warm_and_pool(pooled.port, USER, PASS)
        warm_and_pool(unpooled.port, USER, PASS)
        kept = pooled.wait_log(r"upstream pool: keeping the connection of %s" % USER)
        set_password(USER, new)
        if kept is not None and time.monotonic() - started < MAX_AGE - 1:
            c = Side(pooled.port, USER, PASS, select=None)
            check("within pool.max_age the pooled connection still serves the old password (documented)",
                  untagged(c.login)[1] == b"OK", c.login)
            c.conn.close()
        want = direct_no(USER, PASS)
        check("Dovecot refuses the old password once it changed", b" NO " in want, want)
        ok, detail = refused(unpooled.port, USER, PASS, want)
        check("without the pool, the old password gets Dovecot's NO at once, and no data", ok, detail)
        time.sleep(max(0.0, started + MAX_AGE + 1.5 - time.monotonic()))
        ok, detail = refused(pooled.port, USER, PASS, want)
        check("once pool.max_age has passed, the old password gets Dovecot's NO, and no data", ok, detail)
        c = Side(pooled.port, USER, new)
        lines = c.exchange("FETCH 1 (BODY.PEEK[])")
        check("the new password works, the cache with it", untagged(lines)[1] == b"OK" and len(lines) > 1, lines)
        c.close()
    finally:
        set_password(USER, PASS)
        pooled.stop()
        unpooled.stop()


# ---- the cache directory ----

def start_status(config_extra, preexec_fn=None):
    """Starts a daemon that should refuse to start; returns (exit status, its stderr)."""
    path = os.path.join(tmp, "refuse-%d.conf" % time.monotonic_ns())
    with open(path, "w") as f:
        f.write('listen = ( { address = "127.0.0.1"; port = 0; tls = "none"; } );\nupstreams = ( %s );\n%s'
                % (upstream_dovecot("none"), config_extra))
    result = subprocess.run([os.path.join(BUILD, "daemon", "imapcached"), "-f", "-c", path],
                            capture_output=True, text=True, timeout=20, preexec_fn=preexec_fn)
    return result.returncode, result.stderr


def test_cache_dir_refused():
    for mode, what in ((0o770, "group-writable"), (0o703, "world-writable"), (0o777, "writable by all")):
        cache = tempfile.mkdtemp(prefix="cache.", dir=tmp)
        os.chmod(cache, mode)
        status, err = start_status('cache = { dir = "%s"; };\n' % cache)
        check("a %s cache.dir (%04o): exit 78 with a message naming it and what to do" % (what, mode),
              status == 78 and cache in err and "chmod 0700" in err, (status, err))
    if not ROOT:
        check("another user's cache.dir: skipped, not root", True)
        return
    cache = tempfile.mkdtemp(prefix="cache.", dir=tmp)
    nobody = pwd.getpwnam("nobody")
    os.chown(cache, nobody.pw_uid, nobody.pw_gid)
    status, err = start_status('cache = { dir = "%s"; };\n' % cache)
    check("another user's cache.dir: exit 78, the message names the owner and says chown",
          status == 78 and "belongs to uid %d" % nobody.pw_uid in err and "chown" in err, (status, err))
    cache = tempfile.mkdtemp(prefix="cache.", dir=tmp)
    os.chmod(cache, 0o750)
    d = Daemon(upstream_dovecot("none"), extra='cache = { dir = "%s"; };\n' % cache, tmpdir=tmp)
    check("a group-readable (not writable) cache.dir still starts", d.port > 0)
    d.stop()


# ---- privileges ----

def low_port():
    for port in range(1000, 900, -1):
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    return None


def status_ids(pid):
    ids = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("Uid", "Gid", "Groups"):
                ids[key] = [int(v) for v in value.split()]
    return ids


def test_drop_privileges():
    if not ROOT:
        check("privilege drop: skipped, not root", True)
        return
    nobody = pwd.getpwnam("nobody")
    status, err = start_status('user = "no-such-user-imapcached";\n')
    check("an unknown user: exit 78, the message names it", status == 78 and "no-such-user-imapcached" in err,
          (status, err))
    port = low_port()
    run = tempfile.mkdtemp(prefix="run.", dir=tmp)
    os.chmod(run, 0o755)
    cache = os.path.join(tmp, "cache-made-for-nobody")
    socket_path = os.path.join(run, "control")
    d = Daemon(upstream_dovecot("none"), listen='{ address = "127.0.0.1"; port = %d; tls = "none"; }' % port,
               extra='user = "nobody";\ncache = { dir = "%s"; };\ncontrol = { socket = "%s"; };\n'
               'timeouts = { shutdown = 0; };\n'
               % (cache, socket_path), tmpdir=tmp)
    try:
        d.wait_log(r"ready \(config")
        check("root binds port %d, below 1024" % port, d.port == port, d.port)
        ids = status_ids(d.pid)
        want_groups = sorted(os.getgrouplist("nobody", nobody.pw_gid))
        check("then runs as nobody: real, effective, saved and fs uid and gid (/proc/PID/status)",
              ids["Uid"] == [nobody.pw_uid] * 4 and ids["Gid"] == [nobody.pw_gid] * 4, ids)
        check("... with nobody's groups only", sorted(ids["Groups"]) == want_groups, (ids, want_groups))
        log = d.log()
        order = [log.find("listening on"), log.find("control socket"), log.find("running as user nobody"),
                 log.find("ready (config")]
        check("bound and control socket made before the drop, the drop before ready",
              -1 not in order and order == sorted(order), (order, log))
        st = os.stat(cache)
        check("the cache.dir it made is nobody's, 0700",
              st.st_uid == nobody.pw_uid and st.st_mode & 0o7777 == 0o700, (st.st_uid, oct(st.st_mode)))
        st = os.stat(socket_path)
        check("the control socket is nobody's, 0600",
              st.st_uid == nobody.pw_uid and st.st_mode & 0o7777 == 0o600, (st.st_uid, oct(st.st_mode)))
        c = Side(port, USER, PASS)
        lines = c.login + c.exchange("FETCH 1 (BODY.PEEK[])")
        c.close()
        store = os.path.join(cache, "dovecot", USER + ".sqlite")
        st = os.stat(store) if os.path.exists(store) else None
        check("a session's store is made by nobody, 0600",
              untagged(lines)[1] == b"OK" and st is not None and st.st_uid == nobody.pw_uid and
              st.st_mode & 0o7777 == 0o600, (lines[:1], lines[-1:], st, d.log()[-2000:]))
    finally:
        d.stop()


# ---- upstream TLS ----

def login_through(upstream):
    """The login's answer through a daemon with upstream, and the daemon's
    whole log (read after it stopped: a line logged as the answer went out
    may not have been read yet when the answer came)."""
    d = Daemon(upstream, extra="timeouts = { shutdown = 0; };\n", tmpdir=tmp)
    try:
        c = Side(d.port, USER, PASS, select=None)
        c.conn.close()
        answer = untagged(c.login)[1]
    finally:
        d.stop()
    return answer, d.log()


def test_upstream_tls():
    implicit = '{ name = "dovecot"; host = "%s"; port = %d; tls = "%s"; %s }'
    cases = [
        ("an untrusted CA, implicit TLS", implicit % (HOST, TLS_PORT, "implicit", 'ca_file = "%s";' % UNTRUSTED_CA),
         b"NO"),
        ("an untrusted CA, STARTTLS", implicit % (HOST, PORT, "starttls", 'ca_file = "%s";' % UNTRUSTED_CA), b"NO"),
        ("the system CA store (without the test CA)", implicit % (HOST, TLS_PORT, "implicit", ""), b"NO"),
        ("an untrusted CA with verify = false", implicit % (HOST, TLS_PORT, "implicit",
                                                           'ca_file = "%s"; verify = false;' % UNTRUSTED_CA), b"OK"),
        ("the test CA as ca_file", implicit % (HOST, TLS_PORT, "implicit", 'ca_file = "%s";' % CA), b"OK"),
    ]
    other = Forwarder((HOST, TLS_PORT), listen_host="127.0.0.2").port
    cases += [
        ("a host name the certificate does not name (127.0.0.2)",
         implicit % ("127.0.0.2", other, "implicit", 'ca_file = "%s";' % CA), b"NO"),
        ("... accepted with verify = false",
         implicit % ("127.0.0.2", other, "implicit", 'ca_file = "%s"; verify = false;' % CA), b"OK"),
    ]
    for name, upstream, want in cases:
        got, log = login_through(upstream)
        check("upstream TLS with %s: LOGIN %s" % (name, want.decode()), got == want, log[-1500:])
        if want == b"NO":
            check("... the log says the certificate did not verify",
                  re.search(r"verif|certificate", log, re.I) is not None, log[-1500:])


# ---- STARTTLS injection from the upstream ----

INJECTED = (b"* CAPABILITY IMAP4rev1 AUTH=PLAIN INJECTED\r\n* OK [ALERT] INJECTED alert\r\n"
            b"* 99 EXISTS\r\n* BYE INJECTED bye\r\n")


def relay_tls(tls, plain):
    """Copies both ways between a TLS socket and a plain one in this one
    thread (an SSL object must not be read and written from two threads at
    once: that hung this test under load), until either ends or neither
    says anything for 20 s."""
    while True:
        ready = [tls] if tls.pending() else select.select([tls, plain], [], [], 20)[0]
        if not ready:
            return
        for source, sink in ((tls, plain), (plain, tls)):
            if source in ready:
                data = source.recv(65536)
                if not data:
                    return
                sink.sendall(data)


def fake_upstream(seen):
    """Loopback upstream that answers STARTTLS with OK plus INJECTED in the
    same write, then speaks TLS (the fixture's certificate) and relays to
    Dovecot's plain port, whose greeting it swallows. Returns its port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(os.path.join(FIXTURE, "server.pem"), os.path.join(FIXTURE, "server.key"))

    def serve(conn):
        try:
            conn.settimeout(20)
            conn.sendall(b"* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] fake ready\r\n")
            buf = b""
            while True:
                while b"\r\n" not in buf:
                    data = conn.recv(4096)
                    if not data:
                        return
                    buf += data
                line, buf = buf.split(b"\r\n", 1)
                tag, _, command = line.partition(b" ")
                if command.upper() == b"CAPABILITY":
                    conn.sendall(b"* CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED\r\n%s OK done\r\n" % tag)
                elif command.upper() == b"STARTTLS":
                    conn.sendall(tag + b" OK Begin TLS negotiation now\r\n" + INJECTED)
                    seen.append("injected")
                    break
                else:
                    conn.sendall(tag + b" BAD not before STARTTLS\r\n")
            tls = context.wrap_socket(conn, server_side=True)
            up = socket.create_connection((HOST, PORT), timeout=20)
            greeting = b""
            while b"\r\n" not in greeting:
                greeting += up.recv(4096)
            rest = greeting.split(b"\r\n", 1)[1]
            if rest:
                tls.sendall(rest)

            relay_tls(tls, up)
        except (OSError, ssl.SSLError):
            pass

    def accept():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return listener.getsockname()[1]


def test_upstream_starttls_injection():
    seen = []
    port = fake_upstream(seen)
    d = Daemon('{ name = "fake"; host = "127.0.0.1"; port = %d; tls = "starttls"; ca_file = "%s"; }' % (port, CA),
               tmpdir=tmp)
    try:
        c = Raw(d.port, greeting=True)
        capability = c.tagged("c1", "CAPABILITY")
        login = c.tagged("c2", "LOGIN %s %s" % (quote(USER), quote(PASS)))
        select = c.tagged("c3", "SELECT INBOX")
        noop = c.tagged("c4", "NOOP")
        c.close()
        everything = "\n".join([c.greeting] + capability + login + select + noop)
        check("the fake upstream injected behind its STARTTLS OK", len(seen) >= 1, seen)
        check("the login through it works", login[-1].startswith("c2 OK") and select[-1].startswith("c3 OK"),
              (login, select))
        check("nothing injected reaches the client (CAPABILITY, ALERT, EXISTS, BYE)",
              "INJECTED" not in everything and "* 99 EXISTS" not in everything, everything)
    finally:
        d.stop()


def main():
    socket_dir = tempfile.mkdtemp(prefix="run.", dir=tmp)
    cache = tempfile.mkdtemp(prefix="cache.", dir=tmp)
    daemon = Daemon(upstream_dovecot("none"), tmpdir=tmp,
                    extra='cache = { dir = "%s"; prefetch = "off"; };\ncontrol = { socket = "%s"; };\n'
                    'timeouts = { shutdown = 0; };\n'
                    % (cache, os.path.join(socket_dir, "control")))
    daemon.cache, daemon.socket = cache, os.path.join(socket_dir, "control")
    try:
        run_steps([test_isolation, test_modes, test_wrong_password], daemon)
    finally:
        daemon.stop()
    run_steps([test_master_user, test_password_change, test_cache_dir_refused, test_drop_privileges, test_upstream_tls,
               test_upstream_starttls_injection])
    return summary()


if __name__ == "__main__":
    sys.exit(main())
