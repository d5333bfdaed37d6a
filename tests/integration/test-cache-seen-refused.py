#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""A non-PEEK body FETCH answered from the cache whose \\Seen STORE the
upstream refuses (issue 11 item 6: "If the STORE gets NO, answer as for
PEEK").

Before answering a non-PEEK body FETCH from the cache, imapcached stores
\\Seen upstream on its own tag and waits for the OK. Here a relay of the
test's own sits between imapcached and the test Dovecot and answers that
STORE itself with a tagged NO (the STORE never reaches Dovecot, so
nothing was stored, as a NO says). What the client gets must then be
the same bytes as Dovecot's direct answer to the BODY.PEEK form of the
same FETCH: no FLAGS, \\Seen not claimed; and afterwards the flags the
proxy reports (answered from its view) must still be Dovecot's, without
\\Seen. Cases: one message by UID, BODY[]; by sequence number, BODY[TEXT]
and BODY[1]; a set mixing unseen and seen messages with BODY[HEADER];
the same under CONDSTORE (no MODSEQ either). A control case lets the
STORE through and expects FLAGS (\\Seen) in the answer: the refused
cases went the same way up to the NO.

Each refused case also checks that the relay did refuse a STORE for it
and that the FETCH was answered from the cache (its log line)."""
import re
import socket
import sys
import threading

from checks import check, summary
import proxyfixture
from proxyfixture import HOST, PASS, PORT, USER, WAIT, Daemon, Raw, difference, quote, shutdown_all

# The proxy's own \Seen STORE (session-own.c): its tag, a set, "+FLAGS (\Seen)".
SEEN_STORE = re.compile(rb"^(\S+) STORE [0-9:,*]+ \+FLAGS(?:\.SILENT)? \(\\Seen\)$", re.I)
FROM_CACHE = r"FETCH answered from the cache"
NOT_SET = r"\\Seen of \d+ messages: not set"


class SeenRefuser:
    """A TCP relay from a free loopback port to Dovecot's plaintext port.
    While refusing, a line from the daemon that is its \\Seen STORE is not
    passed on: the relay answers it with a tagged NO itself. Every other
    byte passes as it comes. self.refused lists the STOREs refused,
    self.passed those let through."""

    def __init__(self):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.port = self.listener.getsockname()[1]
        self.refusing = True
        self.refused, self.passed = [], []
        self.sockets = []
        threading.Thread(target=self._accept, daemon=True).start()

    def upstream_entry(self):
        return '{ name = "dovecot"; host = "127.0.0.1"; port = %d; tls = "none"; }' % self.port

    def _accept(self):
        while True:
            try:
                down, _ = self.listener.accept()
                up = socket.create_connection((HOST, PORT), timeout=WAIT)
            except OSError:
                return
            up.settimeout(None)
            self.sockets += [down, up]
            lock = threading.Lock()  # the daemon's side is written by both threads
            threading.Thread(target=self._down, args=(up, down, lock), daemon=True).start()
            threading.Thread(target=self._up, args=(down, up, lock), daemon=True).start()

    @staticmethod
    def _down(up, down, lock):
        try:
            while True:
                data = up.recv(65536)
                if not data:
                    break
                with lock:
                    down.sendall(data)
        except OSError:
            pass
        shutdown_all((up, down))

    def _up(self, down, up, lock):
        """Passes the daemon's lines on, but its \\Seen STOREs while refusing.
        Bytes without a line end yet wait for it (a literal's bytes are
        passed as lines too: none of them is a STORE line)."""
        pending = b""
        try:
            while True:
                data = down.recv(65536)
                if not data:
                    break
                pending += data
                while b"\r\n" in pending:
                    line, pending = pending.split(b"\r\n", 1)
                    m = SEEN_STORE.match(line)
                    if m is not None and self.refusing:
                        self.refused.append(line)
                        with lock:
                            down.sendall(m.group(1) + b" NO [CANNOT] \\Seen refused by the test's relay\r\n")
                        continue
                    if m is not None:
                        self.passed.append(line)
                    up.sendall(line + b"\r\n")
        except OSError:
            pass
        shutdown_all((down, up))

    def close(self):
        self.listener.close()
        shutdown_all(self.sockets)


def connect(port, verb, enable=None):
    conn = Raw(port, greeting=True)
    commands = ["LOGIN %s %s" % (quote(USER), quote(PASS))] + (["ENABLE %s" % enable] if enable else [])
    for command in commands + ["%s INBOX" % verb]:
        line = conn.tagged("s", command)[-1]
        if not line.startswith("s OK"):
            raise RuntimeError("%s: %s" % (command, line))
    return conn


def flags_of(conn, uids):
    """{uid: flags text} from a direct UID FETCH FLAGS."""
    out = {}
    for response in conn.exchange("UID FETCH %s (FLAGS)" % ",".join(map(str, uids)))[:-1]:
        m = re.search(rb"UID (\d+)", response)
        f = re.search(rb"FLAGS \(([^)]*)\)", response)
        if m and f:
            out[int(m.group(1))] = f.group(1).decode()
    return out


def seq_of(conn, uid):
    response = conn.exchange("UID FETCH %d (UID)" % uid)[0]
    return int(response.split()[1])


class Case:
    def __init__(self, daemon, relay, via, direct):
        self.daemon, self.relay, self.via, self.direct = daemon, relay, via, direct

    def refused(self, name, command, peek, uids, unseen):
        """command through the proxy (its STORE refused) against peek direct;
        unseen: the UIDs whose \\Seen the FETCH would set."""
        refused, local = len(self.relay.refused), self.daemon.count_log(FROM_CACHE)
        got, want = self.via.exchange(command), self.direct.exchange(peek)
        check("%s: the answer equals Dovecot's to %s" % (name, peek), got == want, difference(got, want))
        check("... no FLAGS in it, \\Seen not claimed", not any(b"FLAGS" in r for r in got[:-1]), got[:2])
        check("... the relay refused the proxy's \\Seen STORE (%d)" % (len(self.relay.refused) - refused),
              len(self.relay.refused) == refused + 1, self.relay.refused[refused:])
        # the log line may reach the reader thread after the client's reply: wait for it
        check("... and the FETCH was answered from the cache",
              self.daemon.wait_log(FROM_CACHE, count=local + 1) is not None and
              self.daemon.count_log(FROM_CACHE) == local + 1, self.daemon.log()[-600:])
        direct_flags = flags_of(self.direct, uids)
        check("... Dovecot's flags have no \\Seen where it was refused",
              all("\\Seen" not in direct_flags[u] for u in unseen), direct_flags)
        got, want = self.via.exchange("UID FETCH %s (FLAGS)" % ",".join(map(str, uids))), \
            self.direct.exchange("UID FETCH %s (FLAGS)" % ",".join(map(str, uids)))
        check("... the flags the proxy tells afterwards equal Dovecot's", got == want, difference(got, want))
        # the next case counts log lines from here: this FETCH's own line must be in first
        check("... and were answered from the view", self.daemon.wait_log(FROM_CACHE, count=local + 2) is not None,
              self.daemon.log()[-600:])


def main():
    relay = SeenRefuser()
    config = 'cache = { dir = "%s"; prefetch = "off"; };\n' % proxyfixture.scratch_dir("test-cache-seen-refused.")
    daemon = Daemon(relay.upstream_entry(), extra=config)
    try:
        direct = connect(PORT, "EXAMINE")
        via = connect(daemon.port, "SELECT")
        unseen = [int(x) for x in direct.exchange("UID SEARCH UNSEEN")[0].split()[2:]]
        seen = [int(x) for x in direct.exchange("UID SEARCH SEEN")[0].split()[2:]]
        if len(unseen) < 8 or len(seen) < 2:
            raise RuntimeError("the corpus has too few unseen or seen messages: %d, %d" % (len(unseen), len(seen)))
        warm = ",".join(map(str, unseen[:8] + seen[:2]))
        answer = via.exchange("UID FETCH %s (BODY.PEEK[] BODYSTRUCTURE FLAGS)" % warm)
        check("the store holds the messages' bodies and structure", answer[-1].startswith(b"f OK"), answer[-1])
        case = Case(daemon, relay, via, direct)
        u = unseen
        case.refused("UID FETCH BODY[] of an unseen message", "UID FETCH %d BODY[]" % u[0],
                     "UID FETCH %d BODY.PEEK[]" % u[0], [u[0]], [u[0]])
        n = seq_of(direct, u[1])
        case.refused("FETCH BODY[TEXT] by number", "FETCH %d BODY[TEXT]" % n, "FETCH %d BODY.PEEK[TEXT]" % n,
                     [u[1]], [u[1]])
        n = seq_of(direct, u[2])
        case.refused("FETCH (UID BODY[1] RFC822.SIZE) by number", "FETCH %d (UID BODY[1] RFC822.SIZE)" % n,
                     "FETCH %d (UID BODY.PEEK[1] RFC822.SIZE)" % n, [u[2]], [u[2]])
        mixed = sorted([u[3], u[4], seen[0]])
        case.refused("UID FETCH BODY[HEADER] of unseen and seen messages",
                     "UID FETCH %s BODY[HEADER]" % ",".join(map(str, mixed)),
                     "UID FETCH %s BODY.PEEK[HEADER]" % ",".join(map(str, mixed)), mixed, [u[3], u[4]])
        check("the daemon logged the refused STOREs", daemon.count_log(NOT_SET) == len(relay.refused),
              (daemon.count_log(NOT_SET), len(relay.refused)))
        via.close()
        direct.close()

        # CONDSTORE: no MODSEQ for a \Seen not set
        direct = connect(PORT, "EXAMINE", enable="CONDSTORE")
        via = connect(daemon.port, "SELECT", enable="CONDSTORE")
        case = Case(daemon, relay, via, direct)
        case.refused("CONDSTORE: UID FETCH BODY[]", "UID FETCH %d BODY[]" % u[5],
                     "UID FETCH %d BODY.PEEK[]" % u[5], [u[5]], [u[5]])
        case.refused("CONDSTORE: UID FETCH (MODSEQ BODY[TEXT])", "UID FETCH %d (MODSEQ BODY[TEXT])" % u[6],
                     "UID FETCH %d (MODSEQ BODY.PEEK[TEXT])" % u[6], [u[6]], [u[6]])

        # control: the same path with the STORE let through sets \Seen and says so
        relay.refusing = False
        passed, local = len(relay.passed), daemon.count_log(FROM_CACHE)
        got = via.exchange("UID FETCH %d BODY[]" % u[7])
        check("control: with the STORE let through, the answer claims \\Seen",
              any(b"\\Seen" in r and b"FLAGS" in r for r in got[:-1]) and got[-1].startswith(b"f OK"), got[:1])
        check("... after the proxy's STORE went upstream, answered from the cache",
              len(relay.passed) == passed + 1 and daemon.wait_log(FROM_CACHE, count=local + 1) is not None and
              daemon.count_log(FROM_CACHE) == local + 1,
              (relay.passed[passed:], daemon.log()[-600:]))
        check("... and Dovecot has \\Seen", "\\Seen" in flags_of(direct, [u[7]])[u[7]])
        via.close()
        direct.close()
    finally:
        status = daemon.stop()
        relay.close()
    check("the daemon exited cleanly", status == 0, status)


if __name__ == "__main__":
    try:
        main()
    except Exception as e:
        check("the test ran to the end", False, repr(e))
    sys.exit(summary())
