#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""SIGHUP as an operator renewing a certificate uses it: new certificate
and key copied over the files, then a reload, with listen changed or
not, with the listener gone from the config, and with a broken
certificate; timeouts.shutdown = 0; a detached daemon started with a
relative -c path reloads that file. Every daemon is stopped by its PID."""
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import sys
import time

from checks import check, summary
import proxyfixture
from proxyfixture import BINARY, ENV

FIXTURE = ENV["IMAPTEST_DIR"]
WAIT = 10  # seconds: the longest any single expectation may take
tmp = proxyfixture.scratch_dir("test-conf-reload.")
PLAIN = '{ address = "127.0.0.1"; port = 0; tls = "none"; }'
UPSTREAM = proxyfixture.upstream_dovecot("starttls")


def config_text(listeners, extra=""):
    return "listen = ( %s );\nupstreams = ( %s );\nlog = { level = \"debug\"; };\n%s" % (
        ", ".join(listeners), UPSTREAM, extra)


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def first_certificate_der(path):
    """The first certificate of a PEM file, DER-encoded."""
    with open(path) as f:
        pem = f.read()
    end = "-----END CERTIFICATE-----"
    return ssl.PEM_cert_to_DER_cert(pem[pem.index("-----BEGIN CERTIFICATE-----"):pem.index(end) + len(end)])


def served_certificate(port):
    """The certificate an implicit-TLS listener shows, DER-encoded (None if
    the handshake fails)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=WAIT)) as t:
            return t.getpeercert(binary_form=True)
    except OSError:
        return None


def make_second_certificate():
    """A self-signed certificate and key for localhost that are not the
    fixture's: (cert path, key path)."""
    cert, key = os.path.join(tmp, "second.pem"), os.path.join(tmp, "second.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "2", "-subj", "/CN=localhost", "-keyout", key, "-out", cert],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def test_reload_certificates():
    first = (os.path.join(FIXTURE, "server.pem"), os.path.join(FIXTURE, "server.key"))
    second = make_second_certificate()
    cert, key = os.path.join(tmp, "listener.pem"), os.path.join(tmp, "listener.key")

    def install(pair):
        shutil.copyfile(pair[0], cert)
        shutil.copyfile(pair[1], key)

    install(first)
    implicit = '{ address = "127.0.0.1"; port = 0; tls = "implicit"; cert = "%s"; key = "%s"; }' % (cert, key)
    path = os.path.join(tmp, "reload.conf")
    write(path, config_text([implicit]))
    d = proxyfixture.Daemon(config=open(path).read(), path=path, timeout=WAIT)
    reloads = 0

    def reload(listeners, what):
        nonlocal reloads
        write(path, config_text(listeners))
        reloads += 1
        d.signal(signal.SIGHUP)
        check("%s: SIGHUP reloads" % what, d.wait_log(r"reloaded .*reload\.conf", count=reloads) is not None,
              d.log()[-2000:])

    try:
        check("the listener shows the first certificate", served_certificate(d.port) == first_certificate_der(first[0]))

        install(second)
        reload([PLAIN, implicit], "a listener added")
        check("... which says that listen changed",
              d.wait_log(r"listen changed; listeners change only on restart") is not None, d.log()[-2000:])
        check("... and the bound listener shows the new certificate",
              served_certificate(d.port) == first_certificate_der(second[0]))
        check("... and logs that it read it again",
              d.wait_log(r"reload: 127\.0\.0\.1:%d: read %s again" % (d.port, cert)) is not None, d.log()[-2000:])

        install(first)
        reload([implicit], "listen as bound")
        check("... the listener shows the certificate now in the files",
              served_certificate(d.port) == first_certificate_der(first[0]))

        install(second)
        reload([PLAIN], "the TLS listener left out of listen")
        check("... it still listens, with its files read again",
              served_certificate(d.port) == first_certificate_der(second[0]))

        write(cert, "not a certificate\n")
        write(path, config_text([PLAIN, implicit]))
        d.signal(signal.SIGHUP)
        check("a certificate that cannot be loaded fails the reload, naming the listener",
              d.wait_log(r"reload\.conf:\d+: listen\[1\]: ") is not None and
              d.wait_log(r"reload failed: keeping the configuration in use") is not None, d.log()[-2000:])
        check("... and the certificate in use stays",
              served_certificate(d.port) == first_certificate_der(second[0]))
        check("the daemon still runs", d.returncode is None)
    finally:
        d.stop()


def test_shutdown_zero():
    d = proxyfixture.Daemon(config=config_text([PLAIN], "timeouts = { shutdown = 0; };\n"), tmpdir=tmp,
                            timeout=WAIT)
    try:
        c = proxyfixture.Raw(d.port, timeout=WAIT, greeting=True)
        started = time.time()
        d.signal(signal.SIGTERM)
        try:
            bye = c.line()
        except (EOFError, ConnectionResetError):
            bye = None
        check("timeouts.shutdown = 0: SIGTERM sends BYE at once",
              bye == "* BYE imapcached is shutting down" and time.time() - started < 3, bye)
        check("... and the daemon exits 0", d.wait_exit() == 0, d.returncode)
        c.close()
    finally:
        d.stop()


def daemon_pids(config_argument):
    """PIDs of the imapcached processes with this (unique) -c argument."""
    pids = []
    for entry in os.listdir("/proc"):
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if entry.isdigit() and argv and argv[0] == BINARY.encode() and config_argument.encode() in argv:
            pids.append(int(entry))
    return pids


def caught_signals(pid):
    """The signals pid has handlers for (SigCgt of /proc/PID/status), a mask."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("SigCgt:"):
                return int(line.split()[1], 16)
    return 0


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def preauth_bye_within(port, seconds):
    """Whether a new client is sent BYE for idling within seconds."""
    try:
        c = proxyfixture.Raw(port, timeout=seconds + 1, greeting=True)
    except (OSError, EOFError) as e:
        print("  (connecting while the reload runs: %s; trying again)" % e)
        return False
    try:
        return c.line() == "* BYE Idle for too long, closing"
    except (OSError, EOFError):
        return False
    finally:
        c.close()


def test_detached_relative_path():
    """A detached daemon runs in "/": it must still find a config given as
    a relative path when SIGHUP comes."""
    name = "relative-%d.conf" % os.getpid()
    port = free_port()
    listen = '{ address = "127.0.0.1"; port = %d; tls = "none"; }' % port
    write(os.path.join(tmp, name), config_text([listen]))
    # stderr to a file, not a pipe: run() would wait for the daemon to
    # close the pipe too, not just for the start command to return
    with tempfile.TemporaryFile("w+") as err:
        result = subprocess.run([BINARY, "-c", name], cwd=tmp, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                text=True, timeout=WAIT)
        pids = daemon_pids(name)
        caught = [caught_signals(pid) for pid in pids]
        err.seek(0)
        result.stderr = err.read()
    try:
        check("started detached from %s with -c %s" % (tmp, name), result.returncode == 0 and len(pids) == 1,
              (result.returncode, result.stderr, pids))
        # The start command returns once the daemon is ready: a SIGHUP
        # sent at once finds its handler (it used to return at the fork,
        # and a SIGHUP that came first killed the daemon).
        check("... and returned once the daemon catches SIGHUP",
              caught and all(mask & (1 << (signal.SIGHUP - 1)) for mask in caught), caught)
        write(os.path.join(tmp, name), config_text([listen], "timeouts = { preauth = 1; };\n"))
        for pid in pids:
            os.kill(pid, signal.SIGHUP)
        deadline = time.time() + WAIT
        reloaded = False
        while not reloaded and time.time() < deadline:
            reloaded = preauth_bye_within(port, 2)
        check("SIGHUP reloads the relative path (new sessions get the 1 s pre-login timeout)", reloaded)
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:  # it died: the checks above say so
                pass
        deadline = time.time() + WAIT
        while daemon_pids(name) and time.time() < deadline:
            time.sleep(0.05)
        check("the detached daemon exits on SIGTERM", not daemon_pids(name))


test_reload_certificates()
test_shutdown_zero()
test_detached_relative_path()
status = summary()
subprocess.run(["rm", "-rf", tmp])
sys.exit(status)
