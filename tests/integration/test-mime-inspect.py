#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""imapcachectl inspect as a user sees it: the --json object issue 4
specifies (keys, section numbers, params, SHA-256 of decoded payloads,
defects), the single-answer options, and clear errors with sysexits codes
for bad usage, missing files and missing parts."""
import hashlib
import json
import os
import subprocess
import sys
import tempfile

from checks import check, summary

HERE = os.path.dirname(os.path.abspath(__file__))
CTL = os.path.join(os.environ.get("top_builddir", os.path.join(HERE, "..", "..")), "daemon", "imapcachectl")
TIMEOUT = 30  # seconds for one run
MESSAGE = (b"From: Alice <alice@example.org>\r\n"
           b"Subject: =?utf-8?q?caf=C3=A9?=\r\n"
           b"Content-Type: multipart/mixed; boundary=\"b\"\r\n"
           b"\r\n"
           b"--b\r\n"
           b"Content-Type: text/plain; charset=UTF-8\r\n"
           b"Content-Transfer-Encoding: base64\r\n"
           b"\r\n"
           b"Y2Fmw6k=\r\n"
           b"--b\r\n"
           b"Content-Type: message/rfc822\r\n"
           b"\r\n"
           b"Subject: inner\r\n"
           b"Content-Type: application/octet-stream; name*=utf-8''r%C3%A9sum%C3%A9.pdf\r\n"
           b"\r\n"
           b"raw\r\n"
           b"--b\r\n")  # no close boundary: a defect



def run(*args, data=None):
    return subprocess.run([CTL] + list(args), input=data, capture_output=True, timeout=TIMEOUT)


def main():
    with tempfile.NamedTemporaryFile(suffix=".eml", delete=False) as f:
        f.write(MESSAGE)
        path = f.name
    try:
        result = run("inspect", "--json", path)
        check("inspect --json exits 0", result.returncode == 0, result.stderr)
        report = json.loads(result.stdout)
        check("top-level keys", sorted(report) == ["bodystructure", "defects", "envelope", "parts"],
              sorted(report))
        check("envelope is the IMAP string", report["envelope"].startswith('(NIL "=?utf-8?q?caf=C3=A9?="'),
              report["envelope"][:80])
        check("bodystructure is the IMAP string", report["bodystructure"].endswith('"mixed" ("boundary" "b") NIL NIL NIL)'),
              report["bodystructure"][-60:])
        parts = report["parts"]
        check("sections in walk order (an empty part after the last separator, as Python)",
              [p["section"] for p in parts] == ["", "1", "2", "2", "3"],
              [p["section"] for p in parts])
        check("part keys", set(parts[0]) == {"section", "content_type", "params", "filename", "boundary",
                                             "charset", "cte", "is_multipart", "defects", "payload_sha256"},
              sorted(parts[0]))
        check("root is multipart with the close-boundary defect",
              parts[0]["is_multipart"] and parts[0]["defects"] == ["CloseBoundaryNotFoundDefect"]
              and parts[0]["payload_sha256"] is None, parts[0])
        check("leaf decoded before hashing",
              parts[1]["payload_sha256"] == hashlib.sha256("café".encode()).hexdigest()
              and parts[1]["charset"] == "utf-8" and parts[1]["cte"] == "base64", parts[1])
        check("RFC 2231 name decoded into params and filename",
              parts[3]["params"] == {"name": "résumé.pdf"} and parts[3]["filename"] == "résumé.pdf", parts[3])
        result = run("inspect", "--json", "-", data=MESSAGE)
        check("- reads standard input", result.returncode == 0 and json.loads(result.stdout) == report)
        result = run("inspect", "--section", "1.MIME", path)
        check("--section 1.MIME", result.stdout == b"Content-Type: text/plain; charset=UTF-8\r\n"
              b"Content-Transfer-Encoding: base64\r\n\r\n", result.stdout)
        result = run("inspect", "--binary", "1", path)
        check("--binary 1 decodes", result.stdout == "café".encode(), result.stdout)
        result = run("inspect", "--imap", "BODY", path)
        check("--imap BODY has no extension data", result.returncode == 0 and b"boundary" not in result.stdout,
              result.stdout)
        result = run("inspect", path)
        check("text report names the defect", result.returncode == 0 and b"CloseBoundaryNotFoundDefect" in result.stdout)
        result = run("inspect", "--section", "7", path)
        check("missing part: exit 65 and a message", result.returncode == 65 and b"no such part" in result.stderr,
              (result.returncode, result.stderr))
        result = run("inspect", "--section", "1.BOGUS", path)
        check("bad section: exit 64", result.returncode == 64, result.returncode)
        result = run("inspect", "/nonexistent/message.eml")
        check("missing file: exit 66 naming it", result.returncode == 66 and b"/nonexistent/message.eml" in result.stderr,
              (result.returncode, result.stderr))
        result = run("inspect")
        check("no FILE: exit 64 with usage", result.returncode == 64 and b"usage:" in result.stderr)
        result = run("inspect", "--frobnicate", path)
        check("unknown option: exit 64", result.returncode == 64 and b"--frobnicate" in result.stderr)
        result = run("inspect", "--json", "--section", "1", path)
        check("exclusive options: exit 64", result.returncode == 64)
        result = run("purge-everything")
        check("unknown command: exit 64 naming it", result.returncode == 64 and b"purge-everything" in result.stderr)
        result = run()
        check("no command: exit 64 with usage", result.returncode == 64 and b"usage:" in result.stderr)
        result = run("--help")
        check("--help lists inspect", result.returncode == 0 and b"inspect" in result.stdout)
    finally:
        os.unlink(path)
    return summary()


if __name__ == "__main__":
    sys.exit(main())
