#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""What the log tells an operator: a client that gives up in the TLS
handshake (or closes without close_notify) is named as such, not as an
OpenSSL code; a session ended for an over-long line counts the bytes it
received; started in the background with no syslog daemon, imapcached
says on stderr that its log goes nowhere. Every daemon is stopped by its
PID."""
import os
import re
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time

from checks import check, summary
import proxyfixture
from proxyfixture import BINARY, ENV, PASS, USER

FIXTURE = ENV["IMAPTEST_DIR"]
CERT, KEY = (os.path.join(FIXTURE, name) for name in ("server.pem", "server.key"))
WAIT = 10  # seconds: the longest any single expectation may take
LINE_LIMIT = 65536  # the default limits.line
tmp = proxyfixture.scratch_dir("test-daemon-logs.")
PLAIN = '{ address = "127.0.0.1"; port = 0; tls = "none"; }'
IMPLICIT = '{ address = "127.0.0.1"; port = 0; tls = "implicit"; cert = "%s"; key = "%s"; }' % (CERT, KEY)
END = re.compile(r"session (\d+): end: client [^,]+, user ([^,]+), upstream [^,]+, (\d+) bytes in, "
                 r"\d+ bytes out, [0-9.]+ s: (.*)")


def start(listeners):
    return proxyfixture.Daemon(config="listen = ( %s );\nupstreams = ( %s );\nlog = { level = \"debug\"; };\n" % (
        ", ".join(listeners), proxyfixture.upstream_dovecot("starttls")), ports=len(listeners), tmpdir=tmp,
        timeout=WAIT)


def end_of(d, count):
    """The count-th session end line: (id, user, bytes in, reason), or None."""
    m = d.wait_log(END, count=count)
    return None if m is None else (int(m.group(1)), m.group(2), int(m.group(3)), m.group(4))


def test_tls_handshake_given_up():
    d = start([IMPLICIT])
    try:
        s = socket.create_connection(("127.0.0.1", d.port), timeout=WAIT)
        s.close()
        end = end_of(d, 1)
        check("a client that closes before its ClientHello: 'client closed during TLS handshake'",
              end is not None and end[3] == "client closed during TLS handshake", end)

        # A reset mid-handshake: libevent hands over SSL_ERROR_SYSCALL,
        # which printed as "error:00000005:lib(0)::reason(5)".
        s = socket.create_connection(("127.0.0.1", d.port), timeout=WAIT)
        s.send(b"\x16\x03\x01\x02\x00\x01\x00")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
        end = end_of(d, 2)
        check("a client that resets mid-handshake: 'client closed during TLS handshake'",
              end is not None and end[3] == "client closed during TLS handshake", end)

        context = ssl.create_default_context(cafile=os.path.join(FIXTURE, "ca.pem"))
        t = context.wrap_socket(socket.create_connection(("127.0.0.1", d.port), timeout=WAIT),
                                server_hostname="localhost")
        check("a TLS client reads the greeting", t.recv(4096).startswith(b"* OK "))
        socket.socket(fileno=t.detach()).close()  # no close_notify
        end = end_of(d, 3)
        check("a client that closes after the handshake without close_notify says so",
              end is not None and end[3] == "client closed the connection without TLS close_notify", end)
        check("no OpenSSL code for a peer that went away", "lib(0)" not in d.log() and
              "unexpected eof" not in d.log(), d.log())
    finally:
        d.stop()


def test_long_line_counted():
    d = start([PLAIN])
    try:
        c = proxyfixture.Raw(d.port, timeout=WAIT, greeting=True)
        c.send(b"x1 NOOP " + b"a" * (1 << 20) + b"\r\n")
        try:
            bye = c.line()
        except (EOFError, ConnectionResetError):
            bye = None
        check("a 1 MB line before login gets BYE", bye == "* BYE Command line too long", bye)
        c.close()
        end = end_of(d, 1)
        check("... and its end line counts the bytes received (more than limits.line)",
              end is not None and end[3] == "line too long" and end[2] > LINE_LIMIT, end)

        c = proxyfixture.Raw(d.port, timeout=WAIT, greeting=True)
        lines = c.tagged("l1", "LOGIN %s %s" % (proxyfixture.quote(USER), proxyfixture.quote(PASS)))
        check("LOGIN through the proxy", lines[-1].startswith("l1 OK"), lines)
        c.send(b"x2 FETCH 1 (" + b"a" * (1 << 20) + b")\r\n")
        bad = c.line()
        check("a 1 MB line after login gets the BAD Dovecot gives one over its limit, the session goes on",
              bad == "x2 BAD Error in IMAP command FETCH: Too long argument.", bad)
        check("... and reads the next command", c.tagged("x3", "LOGOUT")[-1].startswith("x3 OK"))
        c.close()
        end = end_of(d, 2)
        check("... and its end line counts the bytes received (more than limits.line)",
              end is not None and end[1] == USER and end[3].startswith("logged out") and end[2] > LINE_LIMIT, end)
        check("... and the log says the line was too long",
              d.wait_log(r"session \d+: command line longer than %d bytes" % LINE_LIMIT) is not None)
    finally:
        d.stop()


def syslog_listening():
    """Whether something takes datagrams or a stream on /dev/log, as syslog(3) tries."""
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        s = socket.socket(socket.AF_UNIX, kind)
        try:
            s.connect("/dev/log")
            return True
        except OSError:
            pass
        finally:
            s.close()
    return False


def daemon_pids(config_path):
    """PIDs of the imapcached processes started with this (unique) config path."""
    pids = []
    for entry in os.listdir("/proc"):
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if entry.isdigit() and argv and argv[0] == BINARY.encode() and config_path.encode() in argv:
            pids.append(int(entry))
    return pids


def test_background_without_syslog():
    path = os.path.join(tmp, "background.conf")
    with open(path, "w") as f:
        f.write("listen = ( %s );\nupstreams = ( %s );\n" % (PLAIN, proxyfixture.upstream_dovecot("none")))
    result = subprocess.run([BINARY, "-c", path], capture_output=True, text=True, timeout=WAIT)
    pids = daemon_pids(path)
    try:
        check("without -f the command exits 0 and leaves one daemon", result.returncode == 0 and len(pids) == 1,
              (result.returncode, result.stderr, pids))
        said = "nothing listens on /dev/log, so the log goes nowhere once detached" in result.stderr
        if syslog_listening():
            check("with a syslog daemon on /dev/log, start-up says nothing", result.stderr == "", result.stderr)
        else:
            check("with no syslog daemon on /dev/log, start-up says on stderr that the log goes nowhere",
                  said and "imapcached -f" in result.stderr, result.stderr)
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGTERM)
        deadline = time.time() + WAIT
        while daemon_pids(path) and time.time() < deadline:
            time.sleep(0.05)
        check("the background daemon exits on SIGTERM", not daemon_pids(path))


test_tls_handshake_given_up()
test_long_line_counted()
test_background_without_syslog()
status = summary()
subprocess.run(["rm", "-rf", tmp])
sys.exit(status)
