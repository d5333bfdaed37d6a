# SPDX-License-Identifier: MIT
"""proxyfixture: imapcached in front of the test Dovecot, for Python tests
and benchmarks: the IMAPTEST_* environment, a Daemon (one imapcached in
the foreground, its log collected), a Raw line-based IMAP socket client
(lines as text, or whole responses as bytes), a Relay for the daemon's
upstream (counts and records what passes, can play a remote server),
quote()/untag(), and run_steps() for a test's sequence of steps.

Tests under tests/integration/ import it like checks.py; scripts under
tests/bench/ put tests/integration/ on sys.path first (with
sys.dont_write_bytecode set, so the source tree stays clean). What only
one script needs stays in that script, as a subclass or a parameter."""
import atexit
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from checks import check

ENV = os.environ


def _env_int(name):
    return int(ENV[name]) if name in ENV else None


# Where with-dovecot's Dovecot is and who may log in (see its header);
# None when a variable is not set.
HOST = ENV.get("IMAPTEST_HOST")
PORT = _env_int("IMAPTEST_PORT")
TLS_PORT = _env_int("IMAPTEST_TLS_PORT")
CA = ENV.get("IMAPTEST_CA")
USER, PASS = ENV.get("IMAPTEST_USER"), ENV.get("IMAPTEST_PASS")
USER2, PASS2 = ENV.get("IMAPTEST_USER2"), ENV.get("IMAPTEST_PASS2")
USER3, PASS3 = ENV.get("IMAPTEST_USER3"), ENV.get("IMAPTEST_PASS3")  # a twin of USER's mailbox
MANIFEST = ENV.get("IMAPTEST_MANIFEST")
BUILD = ENV.get("top_builddir", ".")
BINARY = os.path.join(BUILD, "daemon", "imapcached")
WAIT = 20  # seconds: the longest any single expectation of a test may take
LISTEN_LOCAL = '{ address = "127.0.0.1"; port = 0; tls = "none"; }'  # a free loopback port, plaintext
LISTENING = re.compile(r"listening on (?:\[[0-9a-f:]+\]|[0-9.]+):(\d+)")  # a bound port, IPv4 or [IPv6]
TIMINGS = re.compile(r" \(\d+\.\d+ \+ \d+\.\d+( \+ \d+\.\d+)? secs\)")  # Dovecot's "(0.001 + 0.000 secs)"
TIMINGS_BYTES = re.compile(TIMINGS.pattern.encode())


def upstream_dovecot(tls="starttls"):
    """The upstreams entry for the test Dovecot: tls "starttls" or "none"
    on IMAPTEST_PORT, "implicit" on IMAPTEST_TLS_PORT, the test CA."""
    if tls == "implicit":
        return '{ name = "dovecot"; host = "%s"; port = %d; tls = "implicit"; ca_file = "%s"; }' % (
            HOST, TLS_PORT, CA)
    if tls == "none":
        return '{ name = "dovecot"; host = "%s"; port = %d; tls = "none"; }' % (HOST, PORT)
    return '{ name = "dovecot"; host = "%s"; port = %d; tls = "%s"; ca_file = "%s"; }' % (HOST, PORT, tls, CA)


DAEMON_LOGS = os.path.join(BUILD, "tests", "daemon-logs")  # every daemon's whole log, for test-secrets-in-logs
DAEMON_LOG_MAX = 64 << 20  # bytes of one daemon's log kept there: a load test at debug level stays far below


def open_daemon_log(pid):
    """A file for the whole log of the daemon of pid (DAEMON_LOGS/SCRIPT-PID.log,
    line-buffered), or None where it can't be made."""
    script = os.path.splitext(os.path.basename(sys.argv[0] or "python"))[0]
    try:
        os.makedirs(DAEMON_LOGS, exist_ok=True)
        return open(os.path.join(DAEMON_LOGS, "%s-%d.log" % (script, pid)), "w", buffering=1)
    except OSError:
        return None


def scratch_dir(prefix):
    """A new temporary directory, removed with all it holds when this
    Python process exits (a test's daemons are stopped by then)."""
    path = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


class Daemon:
    """One imapcached in the foreground (`imapcached -f -c CONFIG`), its
    stderr collected line by line by a thread, stopped by its PID.

    The configuration is config (the whole text) or, when config is None,
    built from its parts in this order: listen = ( listen );, upstreams =
    ( upstreams );, log = { level = log_level; }; (left out when log_level
    is None), then extra verbatim. Either way, a config without a cache
    group gets one with a new temporary directory. It is written to path, or to a new file
    in tmpdir (a fresh temporary directory when None); self.path names it,
    for a test that rewrites it and sends SIGHUP. argv is appended to the
    command line; env holds variables set on top of this process's
    environment, and JOURNAL_STREAM and NOTIFY_SOCKET are always taken
    out, so the daemon logs to stderr and never talks to systemd (unless
    env sets them again); preexec_fn runs in the child before the daemon
    (e.g. to lower a resource limit).

    The constructor waits (up to timeout seconds) until the daemon has
    logged "listening on ADDRESS:PORT" ports times; self.ports are those
    ports in order, self.port the first. If it does not, the daemon is
    stopped and start_error is raised. timeout is also the default wait of
    wait_log() and how long stop() waits before SIGKILL. keep_lines, when
    set, keeps only that many of the latest log lines (for daemons that
    log a lot for a long time); on_line() sees every line either way."""

    start_error = RuntimeError  # raised when the daemon does not start

    def __init__(self, upstreams=None, extra="", config=None, listen=LISTEN_LOCAL, log_level="debug",
                 ports=1, argv=(), env=None, tmpdir=None, timeout=WAIT, keep_lines=None, path=None,
                 preexec_fn=None):
        if config is None:
            if upstreams is None:
                raise ValueError("Daemon: give config or upstreams")
            config = "listen = ( %s );\nupstreams = ( %s );\n" % (listen, upstreams)
            if log_level is not None:
                config += 'log = { level = "%s"; };\n' % log_level
            config += extra
        if not re.search(r"^\s*cache\s*[=:]", config, re.M):
            # a store of its own, never the system's /var/cache
            config += '\ncache = { dir = "%s"; };\n' % scratch_dir("imapcached-cache.")
        if path is None:
            if tmpdir is None:
                tmpdir = scratch_dir("imapcached-daemon.")
            path = os.path.join(tmpdir, "imapcached-%d.conf" % time.monotonic_ns())
        self.path = path
        with open(self.path, "w") as f:
            f.write(config)
        full_env = dict(ENV)
        full_env.pop("JOURNAL_STREAM", None)
        full_env.pop("NOTIFY_SOCKET", None)
        full_env.update(env or {})
        self.timeout = timeout
        self.keep_lines = keep_lines
        self.lines = []
        self.lock = threading.Condition()
        self.proc = subprocess.Popen([BINARY, "-f", "-c", self.path, *argv], stderr=subprocess.PIPE,
                                     env=full_env, preexec_fn=preexec_fn)
        self.pid = self.proc.pid
        self.log_file = open_daemon_log(self.pid)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        found = self.wait_log(LISTENING, count=ports)
        if found is None:
            self.stop()
            raise self.start_error("imapcached did not start: %s" % self.lines[-20:])
        with self.lock:
            self.ports = [int(m.group(1)) for m in (LISTENING.search(l) for l in self.lines) if m][:ports]
        self.port = self.ports[0]

    def _read(self):
        for raw in self.proc.stderr:
            with self.lock:
                line = raw.decode(errors="replace").rstrip("\n")
                if self.log_file is not None and self.log_file.tell() < DAEMON_LOG_MAX:
                    self.log_file.write(line + "\n")
                self.lines.append(line)
                self.on_line(line)
                if self.keep_lines is not None:
                    del self.lines[:-self.keep_lines]
                self.lock.notify_all()

    def on_line(self, line):
        """Called with each log line as it arrives, the lock held; does
        nothing here (subclasses count things in it)."""

    def count_log(self, pattern):
        """How many log lines so far match pattern."""
        with self.lock:
            return sum(1 for line in self.lines if re.search(pattern, line))

    def wait_log(self, pattern, count=1, timeout=None):
        """The match of the count-th log line matching pattern, once it is
        there; None after timeout seconds (default: the daemon's), or once
        the daemon has exited and its log is read to the end."""
        deadline = time.time() + (self.timeout if timeout is None else timeout)
        with self.lock:
            while True:
                found = [m for m in (re.search(pattern, line) for line in self.lines) if m]
                if len(found) >= count:
                    return found[count - 1]
                left = deadline - time.time()
                if left <= 0 or (self.proc.poll() is not None and not self.reader.is_alive()):
                    return None
                self.lock.wait(min(left, 0.2))

    def settled_count(self, pattern):
        """How many log lines match pattern once every line logged so far
        has been read: the log is one stream, written in order, and a new
        connection's "start" line is the barrier. count_log() alone may
        run ahead of the reader thread (a line logged before the reply the
        test just read is not always read yet)."""
        conn = Raw(self.port, greeting=True)
        try:
            barrier = self.wait_log(r"session \d+: start: client 127\.0\.0\.1:%d " % conn.sock.getsockname()[1])
        finally:
            conn.close()
        if barrier is None:
            raise RuntimeError("the daemon did not log a new connection")
        return self.count_log(pattern)

    def log(self):
        """The log so far, one string."""
        with self.lock:
            return "\n".join(self.lines)

    def signal(self, number):
        """Sends signal number to the daemon's PID."""
        os.kill(self.pid, number)

    def wait_exit(self, timeout=None):
        """The exit status once the daemon exits, waiting up to timeout
        seconds (default: the daemon's); None if it is still running."""
        try:
            return self.proc.wait(self.timeout if timeout is None else timeout)
        except subprocess.TimeoutExpired:
            return None

    @property
    def returncode(self):
        """The exit status once the daemon has exited (-N: killed by
        signal N), else None."""
        return self.proc.poll()

    def stop(self):
        """SIGTERM to the daemon's PID, SIGKILL if it has not exited after
        the timeout; waits for the log reader; returns the exit status."""
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(self.timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait()
        self.reader.join(self.timeout)
        if self.log_file is not None:
            self.log_file.close()
            self.log_file = None
        return self.proc.returncode


class Raw:
    """A line-based IMAP connection with timeouts, to host:port (or on sock,
    already connected, e.g. TLS-wrapped). greeting=True reads the greeting
    line into self.greeting; nodelay=True sets TCP_NODELAY (for tests that
    time or split their writes). self.buf holds what was received and not
    yet read as lines.

    With skip_literals=True, line() skips each {N} literal by its announced
    size and returns the line with the literal's bytes left out, so the
    cost stays linear in the bytes (benchmarks reading megabytes).
    error is the exception raised when the peer closes mid-line and by
    expect_ok(); subclasses set their own."""

    error = EOFError
    recv_size = 65536  # bytes per recv(): a subclass reading megabytes may want more
    LITERAL = re.compile(rb"\{(\d+)\}$")

    def __init__(self, port, host="127.0.0.1", timeout=WAIT, greeting=False, nodelay=False,
                 skip_literals=False, sock=None):
        self.sock = sock if sock is not None else socket.create_connection((host, port), timeout=timeout)
        if nodelay:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.skip_literals = skip_literals
        self.buf = b""
        self.tag = 0
        if greeting:
            self.greeting = self.line()

    def send(self, data):
        """Sends all of data (bytes)."""
        self.sock.sendall(data)

    def _fill(self):
        data = self.sock.recv(self.recv_size)
        if not data:
            raise self.error("connection closed; have %r" % self.buf[-200:])
        self.buf += data

    def _raw_line(self):
        while True:
            end = self.buf.find(b"\r\n")
            if end >= 0:
                line, self.buf = self.buf[:end], self.buf[end + 2:]
                return line
            self._fill()

    def _skip(self, size):
        take = min(size, len(self.buf))
        self.buf = self.buf[take:]
        size -= take
        while size > 0:
            data = self.sock.recv(self.recv_size)
            if not data:
                raise self.error("connection closed inside a literal, %d bytes short" % size)
            if len(data) > size:
                self.buf = data[size:]
            size -= min(size, len(data))

    def line(self):
        """The next line, without its CRLF, decoded (errors replaced);
        raises error if the peer closes first."""
        parts = []
        while True:
            part = self._raw_line()
            parts.append(part)
            m = self.LITERAL.search(part) if self.skip_literals else None
            if m is None:
                return b"".join(parts).decode(errors="replace")
            self._skip(int(m.group(1)))

    def _take(self, size):
        while len(self.buf) < size:
            self._fill()
        data, self.buf = self.buf[:size], self.buf[size:]
        return data

    def response(self):
        """The next response as the bytes received, CRLFs included: a line
        and, while a line ends in a literal ({N} or RFC 3516's ~{N}), the
        literal's N bytes and the line after them. For byte-exact
        comparisons; raises error if the peer closes first."""
        data = b""
        while True:
            line = self._raw_line()
            data += line + b"\r\n"
            m = self.LITERAL.search(line)
            if m is None:
                return data
            data += self._take(int(m.group(1)))

    def until_tagged(self, tag):
        """The lines up to and including the one tagged tag."""
        lines = []
        while True:
            line = self.line()
            lines.append(line)
            if line.startswith(tag + " "):
                return lines

    def tagged(self, tag, text):
        """Sends "tag text" as one command line; returns its lines, the
        tagged one last."""
        self.send(("%s %s\r\n" % (tag, text)).encode())
        return self.until_tagged(tag)

    def exchange(self, command, tag=b"f"):
        """Sends command (str or bytes) under tag; returns its responses as
        bytes (literals included), Dovecot's timings cut from the tagged one."""
        command = command.encode() if isinstance(command, str) else command
        self.send(tag + b" " + command + b"\r\n")
        responses = []
        while True:
            response = self.response()
            if response.startswith(tag + b" "):
                return responses + [TIMINGS_BYTES.sub(b"", response)]
            responses.append(response)

    def command(self, text):
        """Sends text as a command under the next tag of p1, p2, ...;
        returns its lines, the tagged one last."""
        self.tag += 1
        return self.tagged("p%d" % self.tag, text)

    def expect_ok(self, tag, what):
        """Reads up to the line tagged tag; raises error naming what
        unless it is OK."""
        line = self.until_tagged(tag)[-1]
        if not line.startswith(tag + " OK"):
            raise self.error("%s: %s" % (what, line))

    def at_eof(self):
        """Whether the peer closes (or resets) before the timeout; what
        comes before goes to self.buf."""
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return True
                self.buf += data
        except ConnectionResetError:
            return True  # closed with our unread bytes in its buffer: a reset
        except OSError:
            return False

    def rest(self):
        """Everything until the peer closes, decoded, and whether it did
        close (False: the timeout or another error came first)."""
        data = self.buf
        self.buf = b""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return data.decode(errors="replace"), True
                data += chunk
        except ConnectionResetError:
            return data.decode(errors="replace"), True
        except OSError:
            return data.decode(errors="replace"), False

    def close(self):
        self.sock.close()


class Session:
    """One logged-in connection (a Raw): exchange() sends a command (and a
    LITERAL+ literal after it) under the next tag s1, s2, ... and returns
    its responses as bytes, Dovecot's timings taken out of the tagged one;
    close(logout=True) says LOGOUT first."""

    def __init__(self, port, user, password):
        self.conn = Raw(port, greeting=True)
        self.tag = 0
        ok = self.exchange("LOGIN %s %s" % (quote(user), quote(password)))[-1]
        if b" OK " not in ok:
            raise RuntimeError("login: %r" % ok)

    def exchange(self, command, literal=None):
        self.tag += 1
        tag = b"s%d" % self.tag
        if literal is None:
            self.conn.send(tag + b" " + command.encode() + b"\r\n")
        else:
            self.conn.send(tag + b" " + command.encode() + b" {%d+}\r\n" % len(literal) + literal + b"\r\n")
        responses = []
        while True:
            response = self.conn.response()
            if response.startswith(tag + b" "):
                responses.append(TIMINGS_BYTES.sub(b"", response))
                return responses
            responses.append(response)

    def close(self, logout=False):
        if logout:
            self.exchange("LOGOUT")
        self.conn.close()


class LineReader:
    """Splits one direction of an IMAP stream into its lines as they come:
    feed(data) returns the lines that data completes, as text without
    CRLF, each literal's bytes left out (its {N} stays, so a line that
    goes on after a literal reads "A1 APPEND INBOX {310}"). Memory stays
    bounded: at most LINE_MAX bytes of one line are kept."""

    LINE_MAX = 1 << 20  # bytes kept of one line: a FETCH line's text without its literals is far shorter
    LITERAL = re.compile(rb"~?\{(\d+)\+?\}$")

    def __init__(self):
        self.partial = bytearray()
        self.literal = 0  # literal bytes still to skip
        self.skipped = 0  # how much of the line in partial was read before its last literal

    def feed(self, data):
        lines = []
        pos, size = 0, len(data)
        while pos < size:
            if self.literal:
                take = min(self.literal, size - pos)
                self.literal -= take
                pos += take
                continue
            end = data.find(b"\n", pos)
            if end < 0:
                self.partial += data[pos:pos + max(0, self.LINE_MAX - len(self.partial))]
                break
            self.partial += data[pos:end + 1][:max(0, self.LINE_MAX - len(self.partial))]
            pos = end + 1
            line = bytes(self.partial).rstrip(b"\r\n")
            m = self.LITERAL.search(line)
            if m is not None and m.end() > self.skipped:  # a new {N}, not one whose bytes are skipped already
                self.literal = int(m.group(1))
                self.partial = bytearray(line)
                self.skipped = len(line)
                continue
            self.skipped = 0
            lines.append(line.decode(errors="replace"))
            self.partial = bytearray()
        return lines


def pump(a, b, flowing=None, delay=0.0):
    """Copies what socket a receives to socket b until either ends, then
    shuts both down; each chunk waits delay seconds, and while flowing (a
    threading.Event) is clear."""
    try:
        while True:
            data = a.recv(65536)
            if not data:
                break
            if delay:
                time.sleep(delay)
            if flowing is not None:
                flowing.wait()
            b.sendall(data)
    except OSError:
        pass
    shutdown_all((a, b))


def shutdown_all(sockets):
    """Shuts each socket down both ways, whatever state it is in."""
    for s in sockets:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class Forwarder:
    """A plain TCP forwarder from a free port on listen_host to target
    ((host, port); Dovecot's plain port by default): each connection is
    relayed both ways as it comes, nothing recorded or delayed (Relay does
    that). With listening=False the port is bound but refuses connections
    until up(). cut() ends every connection made so far; close() the
    listener too."""

    def __init__(self, target=None, listen_host="127.0.0.1", listening=True):
        self.target = target or (HOST, PORT)
        self.listener = socket.socket(socket.AF_INET6 if ":" in listen_host else socket.AF_INET)
        self.listener.bind((listen_host, 0))
        self.port = self.listener.getsockname()[1]
        self.sockets = []
        if listening:
            self.up()

    def up(self):
        self.listener.listen(8)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                down, _ = self.listener.accept()
                up = socket.create_connection(self.target, timeout=WAIT)
            except OSError:
                return
            self.sockets += [down, up]
            for a, b in ((down, up), (up, down)):
                threading.Thread(target=pump, args=(a, b), daemon=True).start()

    def cut(self):
        shutdown_all(self.sockets)

    def close(self):
        self.cut()
        for s in [self.listener] + self.sockets:
            try:
                s.close()
            except OSError:
                pass


class RelayCommand:
    """A command line the daemon sent upstream through a Relay: the
    connection's number (in accept order, from 0), the line (literals
    left out, see LineReader), and the capabilities the upstream had
    last advertised on that connection when it was sent (upper case)."""

    def __init__(self, connection, line, capabilities):
        self.connection, self.line, self.capabilities = connection, line, capabilities

    def __repr__(self):
        return "#%d %r" % (self.connection, self.line)


class RelayFault:
    """A fault a Relay plays on a connection: once pattern (bytes) has
    passed in its direction (upward: daemon to upstream; else upstream to
    daemon), after more bytes pass too, then the connection is cut (action
    "cut": both sockets shut down) or stalls ("stall": nothing more passes
    either way, the sockets stay open until the relay closes). It applies
    to the connections numbered in connections (None: every one)."""

    def __init__(self, pattern, after=0, upward=False, action="cut", connections=None):
        assert action in ("cut", "stall")
        self.pattern, self.after, self.upward, self.action = pattern, after, upward, action
        self.connections = connections

    def matcher(self):
        """A fresh state to feed one direction's chunks to: feed(data)
        returns (the part of data to pass, whether the fault fires now)."""
        fault = self
        state = {"tail": b"", "left": None}

        def feed(data):
            if state["left"] is None:
                window = state["tail"] + data
                at = window.find(fault.pattern)
                if at < 0:
                    state["tail"] = window[-max(len(fault.pattern) - 1, 1):]
                    return data, False
                state["left"] = fault.after + (at + len(fault.pattern) - len(state["tail"]))
            if len(data) >= state["left"]:
                return data[:state["left"]], True
            state["left"] -= len(data)
            return data, False
        return feed


class Relay:
    """A TCP relay on loopback between a daemon and an upstream (default:
    the test Dovecot's plaintext port), for the daemon's upstreams entry
    (upstream_entry()). It counts the bytes each way, records every
    command line the daemon sends (RelayCommand) and every capability
    list the upstream advertises, and can play a remote server:

      delay           seconds every chunk is held, each way; chunks are
                      pipelined (a chunk waits for its own delay, not for
                      the ones before it), as on a long link;
      handshake_rtts  round trips (2 * delay each) before a new
                      connection reaches the upstream: TCP's handshake;
      rate            bytes per second each way at most (None: no cap),
                      a chunk's bytes passing in slices of a millisecond's
                      worth, its first before its last, as on a link.

    record=False skips the recording (benchmarks moving megabytes).
    fault, a RelayFault, is played on the connections it names (without
    delay or rate); self.fired counts the faults played so far.
    reply_filter(relay, number), when given, makes for each connection a
    feed(data) -> the bytes to pass on now of what the upstream sent (a
    test that reorders the upstream's replies, as a server may).
    close() stops accepting and cuts every connection."""

    CAPABILITY = re.compile(r"^\* CAPABILITY (.*)$|\[CAPABILITY ([^\]]*)\]", re.I)

    def __init__(self, host=None, port=None, delay=0.0, handshake_rtts=1.5, rate=None, record=True, fault=None,
                 reply_filter=None):
        self.target = (host or HOST, port or PORT)
        self.fault, self.fired = fault, 0
        self.reply_filter = reply_filter
        self.delay, self.connect_delay, self.rate = delay, handshake_rtts * 2 * delay, rate
        self.record = record
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.sockets = []
        self.up_bytes = self.down_bytes = 0  # daemon to upstream, upstream to daemon
        self.accepted = 0
        self.commands = []                   # RelayCommand, in the order sent
        self.capabilities = {}               # connection -> the list it last advertised (a tuple)
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def upstream_entry(self, name="relay"):
        """The daemon's upstreams entry for this relay (plaintext: the
        relay must read what passes)."""
        return '{ name = "%s"; host = "127.0.0.1"; port = %d; tls = "none"; }' % (name, self.port)

    def totals(self):
        """(bytes the daemon sent upstream, bytes the upstream sent the
        daemon) so far, over every connection."""
        with self.lock:
            return self.up_bytes, self.down_bytes

    def recorded(self):
        """The RelayCommands so far (a copy)."""
        with self.lock:
            return list(self.commands)

    def _accept(self):
        while True:
            try:
                down, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                number = self.accepted
                self.accepted += 1
                self.sockets.append(down)
            threading.Thread(target=self._connect, args=(number, down), daemon=True).start()

    def _connect(self, number, down):
        time.sleep(self.connect_delay)
        try:
            up = socket.create_connection(self.target, timeout=WAIT)
        except OSError:
            down.close()
            return
        up.settimeout(None)  # a pooled connection is silent for as long as it likes
        for s in (down, up):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.lock:
            self.sockets.append(up)
            if self.closed:
                self._cut((down, up))
                return
        fault = self.fault
        if fault is not None and (fault.connections is None or number in fault.connections):
            stalled = threading.Event()  # set once a stall fault fires: nothing passes either way
            for upward, source, sink in ((True, down, up), (False, up, down)):
                feed = fault.matcher() if fault.upward == upward else None
                threading.Thread(target=self._pump_faulty, args=(number, source, sink, upward, feed, fault.action,
                                                                 stalled), daemon=True).start()
            return
        self._direction(number, down, up, True)
        self._direction(number, up, down, False)

    def _pump_faulty(self, number, source, sink, upward, feed, action, stalled):
        """_pump without delays, playing a fault: feed (a RelayFault
        matcher, or None for the direction without one) says when."""
        lines = LineReader() if self.record else None
        try:
            while True:
                data = source.recv(1 << 16)
                if not data:
                    break
                if stalled.is_set():
                    continue  # read and dropped: the peer sees a silent link
                fired = False
                if feed is not None:
                    data, fired = feed(data)
                self._note(number, data, upward, lines)
                sink.sendall(data)
                if fired:
                    with self.lock:
                        self.fired += 1
                    if action == "cut":
                        break
                    stalled.set()
        except OSError:
            pass
        if not stalled.is_set():
            self._cut((source, sink))

    def _direction(self, number, source, sink, upward):
        lines = LineReader() if self.record else None
        feed = self.reply_filter(self, number) if self.reply_filter is not None and not upward else None
        if self.delay == 0 and self.rate is None:
            threading.Thread(target=self._pump, args=(number, source, sink, upward, lines, None, feed),
                             daemon=True).start()
            return
        chunks = queue.Queue()
        threading.Thread(target=self._pump, args=(number, source, sink, upward, lines, chunks, feed),
                         daemon=True).start()
        threading.Thread(target=self._deliver, args=(source, sink, chunks), daemon=True).start()

    def _note(self, number, data, upward, lines):
        with self.lock:
            if upward:
                self.up_bytes += len(data)
            else:
                self.down_bytes += len(data)
            if lines is None:
                return
            for line in lines.feed(data):
                if upward:
                    self.commands.append(RelayCommand(number, line, self.capabilities.get(number, ())))
                    continue
                m = self.CAPABILITY.search(line)
                if m is not None:
                    self.capabilities[number] = tuple((m.group(1) or m.group(2)).upper().split())

    def _pump(self, number, source, sink, upward, lines, chunks, feed=None):
        """Reads source; counts and records each chunk, then passes it
        (through feed, if any) to sink (or, when delayed, to chunks with
        its time of delivery)."""
        try:
            while True:
                data = source.recv(1 << 16)
                if not data:
                    break
                self._note(number, data, upward, lines)
                if feed is not None:
                    data = feed(data)
                    if not data:
                        continue
                if chunks is None:
                    sink.sendall(data)
                else:
                    chunks.put((time.monotonic() + self.delay, data))
        except OSError:
            pass
        if chunks is None:
            self._cut((source, sink))
        else:
            chunks.put(None)

    def _deliver(self, source, sink, chunks):
        free_at = 0.0  # when the capped link is free again
        try:
            while True:
                item = chunks.get()
                if item is None:
                    break
                due, data = item
                if self.rate is None:
                    self._deliver_at(sink, due, data)
                    continue
                # a capped link carries a chunk's bytes one after another:
                # its first ones arrive before its last, in slices of about
                # a millisecond's worth (at least 4 KiB)
                size = max(4096, int(self.rate / 1000))
                for at in range(0, len(data), size):
                    piece = data[at:at + size]
                    free_at = max(free_at, due) + len(piece) / self.rate
                    self._deliver_at(sink, free_at, piece)
        except OSError:
            pass
        self._cut((source, sink))

    @staticmethod
    def _deliver_at(sink, due, data):
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        sink.sendall(data)

    @staticmethod
    def _cut(sockets):
        shutdown_all(sockets)

    def close(self):
        self.listener.close()
        with self.lock:
            self.closed = True
            sockets = list(self.sockets)
        self._cut(sockets)
        for s in sockets:
            s.close()


def difference(got, want):
    """Where two lists of responses (bytes) part, for a failed check."""
    for i, (a, b) in enumerate(zip(got, want)):
        if a != b:
            at = next((j for j in range(min(len(a), len(b))) if a[j] != b[j]), min(len(a), len(b)))
            return "response %d at byte %d: got %r, want %r" % (i, at, a[max(0, at - 40):at + 40],
                                                                b[max(0, at - 40):at + 40])
    return "got %d responses, want %d (last: %r / %r)" % (len(got), len(want), got[-1:], want[-1:])


def quote(text):
    """text (str) as an IMAP quoted string (str)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_bytes(text):
    """text (str) as an IMAP quoted string, UTF-8 bytes to send."""
    return quote(text).encode()


def untag(line):
    """A response line without its tag; untagged ("* ") and continuation
    ("+ ") lines as they are."""
    if line.startswith("* ") or line.startswith("+ ") or " " not in line:
        return line
    return line.split(" ", 1)[1]


def strip_timings(line):
    """A line without Dovecot's command timings ("(0.001 + 0.000 secs)")."""
    return TIMINGS.sub("", line)


def run_steps(steps, *args):
    """Calls each of steps with args, in order. One that raises is reported
    as a failed check "NAME ran to the end" (NAME: the function's name) and
    the others still run: one broken step must not hide the others.
    Returns what the steps that did not raise returned, in order."""
    results = []
    for step in steps:
        try:
            results.append(step(*args))
        except Exception as e:
            check("%s ran to the end" % step.__name__, False, repr(e))
    return results
