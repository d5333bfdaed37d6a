#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Real mail clients through imapcached against the test Dovecot: curl's
IMAP (LIST, EXAMINE, FETCH) and mbsync (a full sync) give the same results
through the proxy as direct. The daemon runs on a free loopback port and
is stopped by its PID."""
import hashlib
import os
import re
import shutil
import subprocess
import sys

from checks import check, summary
import proxyfixture
from proxyfixture import ENV, PASS, PORT, USER, Daemon, upstream_dovecot

RUN_TIMEOUT = 120  # seconds for one client run
tmp = proxyfixture.scratch_dir("test-real-clients.")


def curl(port, path, request=None):
    args = ["curl", "-sS", "--max-time", "60", "--user", "%s:%s" % (USER, PASS)]
    if request:
        args += ["-X", request]
    args.append("imap://127.0.0.1:%d/%s" % (port, path))
    result = subprocess.run(args, capture_output=True, timeout=RUN_TIMEOUT)
    return result.returncode, result.stdout


def test_curl(port):
    for label, path, request in (("LIST", "", None),
                                 ("EXAMINE", "INBOX", "EXAMINE INBOX"),
                                 ("FETCH", "INBOX;UID=1", None),
                                 ("FETCH a section", "INBOX;UID=2/;SECTION=HEADER", None),
                                 ("SEARCH", "INBOX?ALL", None)):
        direct = curl(PORT, path, request)
        proxied = curl(port, path, request)
        check("curl %s: same output through the proxy (%d bytes)" % (label, len(direct[1])),
              direct[0] == 0 and direct == proxied and len(direct[1]) > 0,
              (direct[0], proxied[0], direct[1][:200], proxied[1][:200]))


def maildir_digest(root):
    """{folder: sorted digests of its messages' bytes} for a Maildir tree
    (file names hold times and process ids: only contents and flags count)."""
    result = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if os.path.basename(dirpath) not in ("cur", "new"):
            continue
        folder = os.path.relpath(os.path.dirname(dirpath), root)
        for name in filenames:
            with open(os.path.join(dirpath, name), "rb") as f:
                # mbsync marks each message it stores with a random X-TUID
                data = re.sub(rb"(?m)^X-TUID: [^\r\n]*\r?\n", b"", f.read(), count=1)
            flags = name.split(":2,", 1)[1] if ":2," in name else ""
            result.setdefault(folder, []).append((hashlib.sha256(data).hexdigest(), flags))
    return {k: sorted(v) for k, v in result.items()}


def mbsync(port, name):
    root = os.path.join(tmp, name)
    os.makedirs(root)
    config = os.path.join(tmp, name + ".mbsyncrc")
    with open(config, "w") as f:
        f.write("""IMAPAccount far
Host 127.0.0.1
Port %d
User %s
Pass "%s"
SSLType None
AuthMechs LOGIN

IMAPStore far
Account far

MaildirStore near
Path %s/
Inbox %s/INBOX
SubFolders Verbatim

Channel all
Far :far:
Near :near:
Patterns *
Create Near
Sync Pull
SyncState *
""" % (port, USER, PASS, root, root))
    result = subprocess.run(["mbsync", "-c", config, "-a"], capture_output=True, timeout=RUN_TIMEOUT)
    return result.returncode, result.stderr.decode(errors="replace"), maildir_digest(root)


def test_mbsync(port):
    direct = mbsync(PORT, "direct")
    proxied = mbsync(port, "proxied")
    count = sum(len(v) for v in direct[2].values())
    check("mbsync direct works (%d messages)" % count, direct[0] == 0 and count > 0, direct[:2])
    check("mbsync through the proxy works", proxied[0] == 0, proxied[:2])
    check("... and gives the same Maildir", direct[2] == proxied[2],
          (sorted(direct[2]), sorted(proxied[2])))


def main():
    daemon = Daemon(upstream_dovecot(), log_level=None, tmpdir=tmp)
    port = daemon.port
    try:
        for test, tool in ((test_curl, "curl"), (test_mbsync, "mbsync")):
            if shutil.which(tool) is None:
                check("%s is installed (./dev.sh deps installs it)" % tool, False)
                continue
            try:
                test(port)
            except Exception as e:  # one broken client must not hide the others
                check("%s ran to the end" % test.__name__, False, repr(e))
    finally:
        daemon.stop()
        if "TEST_KEEP" not in ENV:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print("kept " + tmp)
    return summary()


if __name__ == "__main__":
    sys.exit(main())
