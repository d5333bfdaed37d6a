#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Starts the real imapcached on free loopback ports and checks what a
client and an operator see before login: the greeting and CAPABILITY,
STARTTLS and implicit TLS with a test-made certificate, LOGIN refused
cleanly, -t on good and bad configs, SIGHUP reloads (good and bad),
SIGTERM, over-long lines, literals and garbage, the session limit,
sd_notify and journal priorities. Every daemon is stopped by its PID."""
import imaplib
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time

from checks import check, summary
import proxyfixture
from proxyfixture import BINARY, BUILD, ENV

SRC = ENV.get("top_srcdir", ".")
FIXTURE = ENV["IMAPTEST_DIR"]
CERT, KEY, CA = (os.path.join(FIXTURE, name) for name in ("server.pem", "server.key", "ca.pem"))
PASSWORD = "s3cret-never-logged"
# What the proxy offers before login on TLS or loopback (login goes upstream),
# once it has learned what the test Dovecot offers after STARTTLS.
PRELOGIN_CAPABILITY = "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ AUTH=PLAIN AUTH=LOGIN"
LEARNED = r"upstream test: offers before login: "  # the log line that says it has
WAIT = 10  # seconds: the longest any single expectation may take
tmp = proxyfixture.scratch_dir("test-daemon.")


def write_config(name, text):
    path = os.path.join(tmp, name)
    with open(path, "w") as f:
        f.write(text)
    return path


UPSTREAM = 'upstreams = ( { name = "test"; host = "%s"; port = %s; tls = "starttls"; ca_file = "%s"; } );\n' % (
    ENV["IMAPTEST_HOST"], ENV["IMAPTEST_PORT"], CA)


def config_text(listeners, extra=""):
    return "listen = ( %s );\n%s%s" % (", ".join(listeners), UPSTREAM, extra)


PLAIN = '{ address = "127.0.0.1"; port = 0; tls = "none"; }'
STARTTLS = '{ address = "127.0.0.1"; port = 0; tls = "starttls"; cert = "%s"; key = "%s"; }' % (CERT, KEY)
IMPLICIT = '{ address = "127.0.0.1"; port = 0; tls = "implicit"; cert = "%s"; key = "%s"; }' % (CERT, KEY)
PLAIN6 = '{ address = "::1"; port = 0; tls = "none"; }'


class Daemon(proxyfixture.Daemon):
    """One imapcached in the foreground on config (the whole text, in a
    file of its own under tmp, or in path), ready once it has said so."""

    def __init__(self, config, env_extra=None, listeners=1, path=None, preexec_fn=None):
        super().__init__(config=config, ports=listeners, env=env_extra, tmpdir=tmp, timeout=WAIT, path=path,
                         preexec_fn=preexec_fn)
        if self.wait_log(r"ready \(config") is None:
            self.stop()
            raise RuntimeError("imapcached did not say ready: %s" % self.lines)


class Client(proxyfixture.Raw):
    """A raw line-based IMAP client with timeouts whose line() is None at
    EOF (also a reset or the timeout): these tests check how a session
    ends."""

    def __init__(self, port, host="127.0.0.1"):
        super().__init__(port, host=host, timeout=WAIT)

    def line(self):
        """One line, or None at EOF."""
        try:
            return super().line()
        except (EOFError, ConnectionResetError, socket.timeout):
            return None

    def until_tagged(self, tag):
        """All lines up to and including the one tagged tag (fewer at EOF)."""
        lines = []
        while True:
            line = self.line()
            if line is None:
                return lines
            lines.append(line)
            if line.startswith(tag + " "):
                return lines


def tls_context():
    return ssl.create_default_context(cafile=CA)


def test_greeting_capability_login():
    d = Daemon(config_text([PLAIN, PLAIN6]), listeners=2)
    try:
        check("the upstream's pre-login capabilities are learned at start", d.wait_log(LEARNED) is not None)
        c = Client(d.ports[0])
        greeting = c.line()
        check("greeting is OK with the pre-login capabilities",
              greeting == "* OK [CAPABILITY %s] imapcached ready" % PRELOGIN_CAPABILITY, greeting)
        lines = c.tagged("a1", "CAPABILITY")
        check("CAPABILITY on plaintext loopback: IMAP4rev1 and the login mechanisms, no STARTTLS, "
              "no LOGINDISABLED",
              lines == ["* CAPABILITY " + PRELOGIN_CAPABILITY, "a1 OK CAPABILITY completed"], lines)
        lines = c.tagged("a2", "LOGIN testuser %s" % PASSWORD)
        check("a wrong password: the upstream's NO [AUTHENTICATIONFAILED]",
              len(lines) == 1 and lines[0].startswith("a2 NO [AUTHENTICATIONFAILED] "), lines)
        lines = c.tagged("a3", "AUTHENTICATE PLAIN AHRlc3R1c2VyAHNlY3JldA==")
        check("AUTHENTICATE is refused the same way",
              len(lines) == 1 and lines[0].startswith("a3 NO [AUTHENTICATIONFAILED]"), lines)
        lines = c.tagged("a4", "NOOP")
        check("the session goes on after a refused LOGIN", lines == ["a4 OK NOOP completed"], lines)
        lines = c.tagged("a5", "SELECT INBOX")
        check("SELECT before login is BAD", lines == ["a5 BAD SELECT needs a login first"], lines)
        lines = c.tagged("a6", "LOGOUT")
        check("LOGOUT says BYE then OK, then the connection closes",
              lines == ["* BYE imapcached logging out", "a6 OK LOGOUT completed"] and c.at_eof(), lines)
        c.close()

        c6 = Client(d.ports[1], host="::1")
        check("the IPv6 loopback listener greets", (c6.line() or "").startswith("* OK "))
        c6.close()

        # imaplib, a real client library, sees the same.
        m = imaplib.IMAP4("127.0.0.1", d.ports[0])
        check("imaplib connects and reads the capabilities", "IMAP4REV1" in m.capabilities, m.capabilities)
        try:
            m.login("testuser", PASSWORD)
            check("imaplib LOGIN is refused", False)
        except imaplib.IMAP4.error as e:
            check("imaplib LOGIN is refused with the upstream's code", "AUTHENTICATIONFAILED" in str(e), e)
        m.logout()
        # Session 1 (the raw client above) ended first; imaplib's is the second.
        end = d.wait_log(r"session \d+: end: client 127\.0\.0\.1:\d+, user -, upstream -, (\d+) bytes in, (\d+) bytes out",
                         count=2)
        check("one end line per session, with byte counts", end is not None and int(end.group(1)) > 0, d.log())
        check("the password never reaches the log", PASSWORD not in d.log())
        # Lines reach d.log() through a reader thread: wait for the third.
        check("one start line per session", d.wait_log(r"session \d+: start: ", count=3) is not None and
              len(re.findall(r"session \d+: start: ", d.log())) == 3, d.log())
    finally:
        d.stop()
    check("the password never reaches the log, first to last line", PASSWORD not in d.log())


def test_starttls_and_implicit_tls():
    d = Daemon(config_text([STARTTLS, IMPLICIT]), listeners=2)
    try:
        check("the upstream's pre-login capabilities are learned at start", d.wait_log(LEARNED) is not None)
        c = Client(d.ports[0])
        greeting = c.line()
        check("a starttls listener offers STARTTLS", "STARTTLS" in greeting and "LOGINDISABLED" not in greeting,
              greeting)
        # Plaintext sent right after STARTTLS, before the handshake, is dropped.
        c.send(b"t1 STARTTLS\r\nt2 NOOP\r\n")
        check("STARTTLS gets OK", c.line() == "t1 OK Begin TLS negotiation now")
        tls = tls_context().wrap_socket(c.sock, server_hostname="localhost")
        tls.sendall(b"t3 CAPABILITY\r\n")
        reply = b""
        while not reply.endswith(b"t3 OK CAPABILITY completed\r\n") and len(reply) < 4096:
            chunk = tls.recv(4096)
            if not chunk:
                break
            reply += chunk
        check("after the handshake CAPABILITY no longer offers STARTTLS",
              reply == b"* CAPABILITY %s\r\nt3 OK CAPABILITY completed\r\n" % PRELOGIN_CAPABILITY.encode(),
              reply)
        check("the command injected before the handshake was dropped, not answered",
              b"t2" not in reply and d.wait_log(r"dropped \d+ bytes sent after STARTTLS") is not None, d.log())
        tls.sendall(b"t4 STARTTLS\r\n")
        check("a second STARTTLS is BAD", tls.recv(4096).startswith(b"t4 BAD "))
        tls.close()

        m = imaplib.IMAP4("127.0.0.1", d.ports[0])
        m.starttls(tls_context())
        try:
            m.login("testuser", PASSWORD)
            check("LOGIN after imaplib's STARTTLS is refused cleanly", False)
        except imaplib.IMAP4.error as e:
            check("LOGIN after imaplib's STARTTLS is refused cleanly", "AUTHENTICATIONFAILED" in str(e), e)
        m.logout()

        m = imaplib.IMAP4_SSL("127.0.0.1", d.ports[1], ssl_context=tls_context())
        check("implicit TLS: imaplib verifies the certificate and reads the greeting",
              "IMAP4REV1" in m.capabilities and "STARTTLS" not in m.capabilities, m.capabilities)
        m.logout()

        raw = Client(d.ports[1])
        raw.send(b"a1 CAPABILITY\r\n")
        check("implicit TLS: plaintext instead of a handshake is dropped", raw.at_eof())
        raw.close()
        check("the failed handshake is logged as a TLS error",
              d.wait_log(r"end: .*TLS error|end: .*wrong version|end: .*http request") is not None, d.log())
        check("the password never reaches the log", PASSWORD not in d.log())
    finally:
        d.stop()


def run_check(args, env_extra=None):
    env = dict(ENV)
    env.update(env_extra or {})
    return subprocess.run([BINARY] + args, capture_output=True, text=True, timeout=WAIT, env=env)


def test_check_option():
    good = write_config("good.conf", config_text([STARTTLS]))
    result = run_check(["-t", "-c", good])
    check("-t on a good config: exit 0", result.returncode == 0 and "valid" in result.stdout,
          (result.returncode, result.stdout, result.stderr))
    example = os.path.join(SRC, "conf", "imapcached.conf")
    result = run_check(["-t", "-c", example])
    check("-t accepts the example config", result.returncode == 0, (result.returncode, result.stderr))

    bad = write_config("bad.conf", config_text([PLAIN]) + "\nlog = { level = \"chatty\"; };\n")
    result = run_check(["-t", "-c", bad])
    check("-t on a bad value: exit 78 and file:line: what is wrong", result.returncode == 78 and
          "%s:4: log.level: must be" % bad in result.stderr, (result.returncode, result.stderr))
    bad = write_config("unknown.conf", config_text([PLAIN]) + "cache = { directory = \"/x\"; };\n")
    result = run_check(["-t", "-c", bad])
    check("-t on an unknown key: exit 78 and file:line:", result.returncode == 78 and
          "%s:3: cache.directory: unknown key" % bad in result.stderr, (result.returncode, result.stderr))
    bad = write_config("syntax.conf", "listen = ( { port = ; } );\n")
    result = run_check(["-t", "-c", bad])
    check("-t on a syntax error: exit 78 and file:line:", result.returncode == 78 and
          "%s:1: syntax error" % bad in result.stderr, (result.returncode, result.stderr))
    bad = write_config("nocert.conf", config_text([
        '{ address = "127.0.0.1"; port = 0; tls = "implicit"; cert = "%s/missing.pem"; key = "%s"; }' % (tmp, KEY)]))
    result = run_check(["-t", "-c", bad])
    check("-t on a missing certificate: exit 78, naming the listener's line and the file",
          result.returncode == 78 and ("%s:1: listen[0]:" % bad) in result.stderr and "missing.pem" in result.stderr,
          (result.returncode, result.stderr))
    result = run_check(["-t", "-c", os.path.join(tmp, "absent.conf")])
    check("-t on a missing file: exit 78", result.returncode == 78 and "absent.conf: cannot read" in result.stderr,
          (result.returncode, result.stderr))
    result = run_check(["-f", "-c", bad])
    check("starting on a bad config exits 78 too", result.returncode == 78, result.returncode)
    result = run_check(["-x"])
    check("an unknown option: usage and exit 64", result.returncode == 64 and "usage:" in result.stderr)
    result = run_check(["-h"])
    check("-h prints the usage", result.returncode == 0 and "-c FILE" in result.stdout)
    result = run_check(["-V"])
    check("-V prints the version", result.returncode == 0 and re.match(r"imapcached \d", result.stdout))

    # A port that is taken: a clear message and a non-zero exit, not a hang.
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    busy = write_config("busy.conf", config_text(['{ address = "127.0.0.1"; port = %d; }' % holder.getsockname()[1]]))
    result = run_check(["-f", "-c", busy])
    holder.close()
    check("a busy port: exit 69 naming the address", result.returncode == 69 and
          "Address already in use" in result.stderr, (result.returncode, result.stderr))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def pids_running(config_path):
    """PIDs of the imapcached processes started with this (unique) config path."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and argv[0] == BINARY.encode() and config_path.encode() in argv:
            pids.append(int(entry))
    return pids


def test_detach():
    """Without -f the daemon binds, detaches and the command exits 0."""
    port = free_port()
    path = write_config("detach.conf", config_text(['{ address = "127.0.0.1"; port = %d; }' % port]))
    result = run_check(["-c", path])
    pids = pids_running(path)
    try:
        check("without -f the command returns 0 at once, leaving one daemon", result.returncode == 0 and
              len(pids) == 1, (result.returncode, result.stderr, pids))
        c = Client(port)
        greeting = c.line()
        check("the detached daemon serves", (greeting or "").startswith("* OK "), greeting)
        c.close()
        if pids:
            with open("/proc/%d/stat" % pids[0]) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            check("the detached daemon leads its own session (setsid)", int(fields[3]) == pids[0], fields[:4])
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGTERM)
        deadline = time.time() + WAIT
        while pids and any(os.path.exists("/proc/%d" % pid) for pid in pids) and time.time() < deadline:
            time.sleep(0.05)
        check("the detached daemon exits on SIGTERM", not pids_running(path))


def test_reload():
    d = Daemon(config_text([PLAIN]), path=os.path.join(tmp, "reload.conf"))
    try:
        before = Client(d.ports[0])
        before.line()
        write_config("reload.conf", config_text([PLAIN], "timeouts = { preauth = 1; };\n"))
        d.signal(signal.SIGHUP)
        check("SIGHUP with a good config: reloaded", d.wait_log(r"reloaded .*reload\.conf") is not None, d.log())
        after = Client(d.ports[0])
        after.line()
        started = time.time()
        bye = after.line()
        check("a session started after the reload uses the new timeout",
              bye == "* BYE Idle for too long, closing" and time.time() - started < 5, (bye, time.time() - started))
        lines = before.tagged("b1", "NOOP")
        check("a session from before the reload keeps its config", lines == ["b1 OK NOOP completed"], lines)

        write_config("reload.conf", config_text([PLAIN], "limits = { sessions = \"many\"; };\n"))
        d.signal(signal.SIGHUP)
        check("SIGHUP with a bad config: the error is logged with file:line",
              d.wait_log(r"reload\.conf:3: limits\.sessions: must be an integer") is not None, d.log())
        check("... and the old config is kept", d.wait_log(r"reload failed: keeping") is not None, d.log())
        third = Client(d.ports[0])
        third.line()
        started = time.time()
        bye = third.line()
        check("new sessions still get the last good config (1 s pre-login timeout)",
              bye == "* BYE Idle for too long, closing" and time.time() - started < 5, bye)
        write_config("reload.conf", config_text([PLAIN, PLAIN]))
        d.signal(signal.SIGHUP)
        check("a reload that changes listen says it needs a restart",
              d.wait_log(r"listen changed; listeners change only on restart") is not None, d.log())
        write_config("reload.conf", config_text([PLAIN, PLAIN], "log = { level = \"debug\"; };\n"))
        d.signal(signal.SIGHUP)
        check("... and says so again on the next reload, comparing with what is bound",
              d.wait_log(r"listen changed; listeners change only on restart", count=2) is not None, d.log())
        check("the daemon still runs after four reloads", d.proc.poll() is None)
        lines = before.tagged("b2", "NOOP")
        check("... and still serves", lines == ["b2 OK NOOP completed"], lines)
        for c in (before, after, third):
            c.close()
    finally:
        d.stop()


def flood_without_reading(port, command, seconds):
    """A client, past the greeting, that sends command over and over for
    seconds (or until the daemon drops it) and reads nothing, with a small
    receive buffer so that its unread replies back up at once."""
    c = Client(port)
    c.line()
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    c.sock.setblocking(False)
    chunk = command * 4096
    sent = 0
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            # Resume where a short send stopped, so the stream stays whole.
            sent += c.sock.send(chunk[sent % len(chunk):])
        except BlockingIOError:
            time.sleep(0.05)
        except OSError:
            break
    return c


def test_sigterm():
    d = Daemon(config_text([PLAIN], "timeouts = { shutdown = 20; };\n"))
    try:
        c = Client(d.ports[0])
        c.line()
        d.signal(signal.SIGTERM)
        check("SIGTERM: stops accepting", d.wait_log(r"stopped accepting") is not None, d.log())
        try:
            socket.create_connection(("127.0.0.1", d.ports[0]), timeout=2).close()
            check("SIGTERM: the listening socket is closed", False)
        except OSError:
            check("SIGTERM: the listening socket is closed", True)
        lines = c.tagged("s1", "NOOP")
        check("SIGTERM: a running session keeps working", lines == ["s1 OK NOOP completed"], lines)
        started = time.time()
        c.tagged("s2", "LOGOUT")
        status = d.wait_exit(5)
        check("SIGTERM: exits 0 promptly once the last session ends",
              status == 0 and time.time() - started < 3, (status, time.time() - started))
        c.close()
    finally:
        d.stop()

    d = Daemon(config_text([PLAIN], "timeouts = { shutdown = 1; };\n"))
    try:
        c = Client(d.ports[0])
        c.line()
        started = time.time()
        d.signal(signal.SIGTERM)
        bye = c.line()
        status = d.wait_exit(5)
        check("SIGTERM: an idle session gets BYE after the shutdown timeout, then exit 0",
              bye == "* BYE imapcached is shutting down" and status == 0 and time.time() - started < 4,
              (bye, status, time.time() - started))
        c.close()
    finally:
        d.stop()

    # A client that reads nothing cannot hold the shutdown up: its BYE gets
    # SESSION_CLOSE_TIMEOUT (5 s) to go out, then the session is dropped.
    d = Daemon(config_text([PLAIN], "timeouts = { shutdown = 1; };\n"))
    try:
        c = flood_without_reading(d.ports[0], b"t CAPABILITY\r\n", 3)
        started = time.time()
        d.signal(signal.SIGTERM)
        status = d.wait_exit(15)
        check("SIGTERM: a client that reads nothing is dropped and the daemon exits 0",
              status == 0 and time.time() - started < 10, (status, time.time() - started))
        c.close()
    finally:
        d.stop()

    d = Daemon(config_text([PLAIN]))
    started = time.time()
    d.signal(signal.SIGTERM)
    status = d.wait_exit(5)
    check("SIGTERM with no sessions: exit 0 at once", status == 0 and time.time() - started < 2, status)
    d.stop()


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def test_client_that_does_not_read(d):
    """A client that pipelines commands and reads nothing: the daemon stops
    reading once its unsent replies pass the high-water mark, so the client's
    sends stall after a bounded amount, and nothing is lost once it reads."""
    c = Client(d.ports[0])
    c.line()
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    rss_before = rss_kib(d.proc.pid)
    command = b"r CAPABILITY\r\n"
    chunk = command * 4096
    sent = 0
    c.sock.setblocking(False)
    deadline = time.time() + 5
    stalled_since = None
    while time.time() < deadline and sent < 200 * 1024 * 1024:
        try:
            # Resume where a short send stopped, so the stream stays whole.
            sent += c.sock.send(chunk[sent % len(chunk):])
            stalled_since = None
        except BlockingIOError:
            stalled_since = stalled_since or time.time()
            if time.time() - stalled_since > 1:
                break
            time.sleep(0.01)
    rss_growth = rss_kib(d.proc.pid) - rss_before
    check("a client that reads nothing is stopped after a bounded amount",
          stalled_since is not None and sent < 32 * 1024 * 1024, sent)
    check("... and the daemon's memory stays bounded (RSS grew %d KiB)" % rss_growth, rss_growth < 16 * 1024)
    c.sock.setblocking(True)
    c.sock.settimeout(WAIT)
    answered = 0
    while answered < sent // len(command):
        line = c.line()
        if line is None:
            break
        if line == "r OK CAPABILITY completed":
            answered += 1
    check("once it reads, every one of its %d commands is answered" % (sent // len(command)),
          answered == sent // len(command), answered)
    c.close()


def test_client_that_never_reads():
    """A client that floods and then never reads is dropped after the idle
    timeout (here 1 s), with a log line, instead of being kept forever."""
    d = Daemon(config_text([PLAIN], "timeouts = { preauth = 1; };\n"))
    try:
        c = flood_without_reading(d.ports[0], b"n CAPABILITY\r\n", 5)
        end = d.wait_log(r"end: .*: client stopped reading its replies")
        check("a client that never reads is dropped after the idle timeout", end is not None, d.log()[-500:])
        c.close()
        bystander = Client(d.ports[0])
        check("the daemon serves others afterwards", (bystander.line() or "").startswith("* OK"))
        bystander.close()
    finally:
        d.stop()


def test_out_of_descriptors():
    """With its descriptors used up, the daemon logs the failed accept, pauses
    the listener instead of spinning, and serves again once clients leave."""
    import resource

    def low_fd_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (24, 24))

    d = proxyfixture.Daemon(config=config_text([PLAIN]), tmpdir=tmp, timeout=WAIT, preexec_fn=low_fd_limit)
    clients = []
    try:
        port = d.port
        for _ in range(30):
            clients.append(Client(port))
        check("out of descriptors: the failed accept is logged and the listener paused",
              d.wait_log(r"accept failed: .*pausing for 1 s") is not None, d.log()[-300:])
        cpu_before = sum(int(x) for x in open("/proc/%d/stat" % d.proc.pid).read().rsplit(")", 1)[1].split()[11:13])
        time.sleep(1)
        cpu_after = sum(int(x) for x in open("/proc/%d/stat" % d.proc.pid).read().rsplit(")", 1)[1].split()[11:13])
        check("... without spinning (%d ticks of CPU in 1 s)" % (cpu_after - cpu_before), cpu_after - cpu_before < 50)
        for c in clients:
            c.close()
        clients = []
        deadline = time.time() + WAIT
        greeting = None
        while time.time() < deadline and greeting is None:
            c = Client(port)
            greeting = c.line()
            c.close()
        check("... and serves again once clients leave", (greeting or "").startswith("* OK"), greeting)
    finally:
        for c in clients:
            c.close()
        d.stop()


def test_bad_input():
    d = Daemon(config_text([PLAIN], "limits = { sessions = 4; };\n"))
    try:
        bystander = Client(d.ports[0])
        bystander.line()

        c = Client(d.ports[0])
        c.line()
        c.send(b"x1 NOOP " + b"a" * 70000)
        bye = c.line()
        check("an over-long line gets BYE and the connection closes",
              bye == "* BYE Command line too long" and c.at_eof(), bye)
        c.close()
        check("... and is logged", d.wait_log(r"command line longer than 65536 bytes") is not None)
        lines = bystander.tagged("y1", "NOOP")
        check("another session keeps working after the over-long line", lines == ["y1 OK NOOP completed"], lines)

        c = Client(d.ports[0])
        c.line()
        c.send(b"\x16\x03\x01\x02\xa5garbage\r\n")
        reply = c.line()
        check("binary garbage before login gets an untagged BAD", reply == "* BAD Invalid tag",
              reply)
        c.send(b"\x00\x01\x02\r\n")
        check("NUL bytes get BAD", c.line() == "* BAD NUL bytes are not allowed in a command")
        lines = c.tagged("g1", "NOOP")
        check("the session survives a little garbage", lines == ["g1 OK NOOP completed"], lines)
        c.send(b"nonsense\r\n" * 10)
        replies = [c.line() for _ in range(8)]
        bye = c.line()
        check("too much garbage ends the session with BYE",
              all(r == "nonsense BAD Missing command" for r in replies) and
              bye == "* BYE Too many invalid commands" and c.at_eof(), (replies, bye))
        c.close()

        c = Client(d.ports[0])
        c.line()
        # (LOGIN takes literals: tests/integration/test-session-input.py)
        lines = c.tagged("l1", "SELECT {5}")
        check("a synchronizing literal before login is refused without '+'",
              lines == ["l1 BAD Literals are not accepted before login"], lines)
        c.send(b"l2 SELECT {5+}\r\nINBOX {6+}\r\nl9 NOOP\r\n")
        lines = c.until_tagged("l2")
        check("non-synchronizing literals are skipped, then the command answered",
              lines == ["l2 BAD Literals are not accepted before login"], lines)
        lines = c.tagged("l3", "NOOP")
        check("... and the session is in step afterwards", lines == ["l3 OK NOOP completed"], lines)
        c.send(b"l4 LOGIN {99999999+}\r\n")
        bye = c.line()
        check("an over-limit literal before login gets BYE", bye == "* BYE Literal too large before login", bye)
        c.close()

        c = Client(d.ports[0])
        c.line()
        c.send(b"".join(b"p%d NOOP\r\n" % i for i in range(1000)))
        replies = c.until_tagged("p999")
        check("1,000 pipelined commands get 1,000 answers in order",
              replies == ["p%d OK NOOP completed" % i for i in range(1000)], replies[-3:])
        c.close()

        # Four sessions have ended (over-long, garbage, literals, pipeline):
        # wait for the daemon to see the last one go before filling up.
        check("every closed session has been counted out",
              d.wait_log(r"session \d+: end: ", count=4) is not None, d.log())
        test_client_that_does_not_read(d)
        check("every closed session has been counted out (again)",
              d.wait_log(r"session \d+: end: ", count=5) is not None, d.log())
        fill = [Client(d.ports[0]) for _ in range(3)]
        greetings = [f.line() for f in fill]
        check("up to limits.sessions clients are served",
              all(g.startswith("* OK ") for g in greetings), greetings)
        over = Client(d.ports[0])
        bye = over.line()
        check("past limits.sessions a client gets BYE", bye == "* BYE Too many connections, try again later", bye)
        over.close()
        for f in fill:
            f.close()
        lines = bystander.tagged("y2", "NOOP")
        check("the first session still works after all that", lines == ["y2 OK NOOP completed"], lines)
        bystander.close()
    finally:
        d.stop()


def built_with_systemd():
    try:
        with open(os.path.join(BUILD, "config.h")) as f:
            return "#define HAVE_SYSTEMD 1" in f.read()
    except OSError:
        return False


def test_notify_and_journal():
    if not built_with_systemd():
        print("ok: # skipped sd_notify: built without libsystemd")
        return
    path = os.path.join(tmp, "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(WAIT)
    d = Daemon(config_text([PLAIN]),
               {"NOTIFY_SOCKET": path, "JOURNAL_STREAM": "8:12345"})
    try:
        messages = []

        def receive_until(text):
            while not any(text in m for m in messages):
                try:
                    messages.append(sock.recv(4096).decode())
                except socket.timeout:
                    return False
            return True

        check("READY=1 once the listeners are bound", receive_until("READY=1"), messages)
        c = Client(d.ports[0])
        c.line()
        check("STATUS= with the session count", receive_until("STATUS=Serving, 1 session"), messages)
        c.close()
        check("STATUS= when it ends", receive_until("STATUS=Serving, 0 sessions"), messages)
        d.signal(signal.SIGHUP)
        check("RELOADING=1 then READY=1 on SIGHUP", receive_until("RELOADING=1") and
              receive_until("READY=1\nSTATUS=Serving, 0 sessions"), messages)
        d.signal(signal.SIGTERM)
        check("STOPPING=1 on SIGTERM", receive_until("STOPPING=1"), messages)
        d.wait_exit()
        log = d.log().splitlines()
        check("under systemd (JOURNAL_STREAM) lines carry journal priorities",
              any(line.startswith("<6>listening on") for line in log) and
              not any(line.startswith("imapcached:") for line in log), log[:3])
    finally:
        d.stop()
        sock.close()


test_greeting_capability_login()
test_starttls_and_implicit_tls()
test_check_option()
test_detach()
test_reload()
test_sigterm()
test_bad_input()
test_client_that_never_reads()
test_out_of_descriptors()
test_notify_and_journal()
status = summary()
subprocess.run(["rm", "-rf", tmp])
sys.exit(status)
