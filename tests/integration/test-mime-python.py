#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Differential test of the MIME library against Python's email package
(compat32): for every CPython test_email message (msg_*.txt) and every
message of the generated corpus, `imapcachectl inspect --json` must agree
with what email.message_from_bytes computes: walk order, content types,
params, filenames, boundaries, charsets, transfer encodings, whether each
part is multipart, decoded payload SHA-256 and defect kinds. Disagreements
that are right per the RFCs are listed, with the reason, in
mime-python-disagreements.txt; any other disagreement fails the test, and
so does a listed one that no longer happens."""
import email
import email.utils
import hashlib
import json
import os
import subprocess
import sys
import tempfile

from checks import check, summary

HERE = os.path.dirname(os.path.abspath(__file__))
TOP_BUILDDIR = os.environ.get("top_builddir", os.path.join(HERE, "..", ".."))
TOP_SRCDIR = os.environ.get("top_srcdir", os.path.join(HERE, "..", ".."))
CTL = os.path.join(TOP_BUILDDIR, "daemon", "imapcachectl")
DISAGREEMENTS = os.path.join(HERE, "mime-python-disagreements.txt")
TIMEOUT = 60  # seconds for one inspect run; the biggest corpus message is 2 MB

# Kinds the library records that compat32 never reports (its own bounds,
# and an empty header value); they are not part of the comparison.
LIBRARY_ONLY_DEFECTS = {"HeaderMissingValueDefect", "NestingTooDeepDefect",
                        "TooManyPartsDefect", "TooManyHeadersDefect"}



def norm(value):
    """One spelling for text that may hold raw bytes: valid UTF-8 as
    characters, other bytes as surrogates (how inspect writes them)."""
    if value is None:
        return None
    if not isinstance(value, str):
        value = str(value)
    raw = value.encode("utf-8", "surrogateescape")
    return raw.decode("utf-8", "surrogateescape")


def sections(msg):
    """IMAP section numbers (RFC 3501 6.4.5) in walk order, as imapcachectl(1)
    defines them: only multipart and message/rfc822 have numbered sub-parts;
    what compat32 parses inside other types (the header blocks of a
    message/delivery-status) is no IMAP part and has None."""
    out = []

    def visit(part, section):
        out.append(section)
        if not part.is_multipart():
            return
        ctype = part.get_content_type()
        for i, sub in enumerate(part.get_payload(), 1):
            if section is None:
                visit(sub, None)
            elif ctype.startswith("multipart/"):
                visit(sub, "%s.%d" % (section, i) if section else str(i))
            elif ctype == "message/rfc822":
                visit(sub, section if section else "1")
            else:
                visit(sub, None)
    visit(msg, "")
    return out


def python_view(data):
    msg = email.message_from_bytes(data)
    parts = list(msg.walk())
    digests = []
    for part in parts:  # decode first: base64 defects are recorded then
        if part.is_multipart():
            digests.append(None)
        else:
            payload = part.get_payload(decode=True)
            digests.append(hashlib.sha256(payload).hexdigest() if payload is not None else None)
    view = []
    for part, section, digest in zip(parts, sections(msg), digests):
        params = {}
        for key, value in (part.get_params() or [])[1:]:
            if isinstance(value, tuple):
                value = email.utils.collapse_rfc2231_value(value)
            params[norm(key)] = norm(value)
        cte = part.get("content-transfer-encoding")
        if cte is not None:
            cte = str(cte).replace("\r", "").replace("\n", "").strip().lower()
        view.append({
            "section": section,
            "content_type": part.get_content_type(),
            "params": params,
            "filename": norm(part.get_filename()),
            "boundary": norm(part.get_boundary()),
            "charset": norm(part.get_content_charset()),
            "cte": norm(cte),
            "is_multipart": part.is_multipart(),
            "defects": sorted(type(d).__name__ for d in part.defects),
            "payload_sha256": digest,
        })
    return sorted(type(d).__name__ for d in msg.defects), view


def library_view(path):
    run = subprocess.run([CTL, "inspect", "--json", path], capture_output=True, timeout=TIMEOUT)
    if run.returncode != 0:
        raise RuntimeError("inspect exited %d: %s" % (run.returncode, run.stderr.decode(errors="replace")))
    report = json.loads(run.stdout)
    view = []
    for part in report["parts"]:
        part = dict(part)
        part["params"] = {norm(k): norm(v) for k, v in part["params"].items()}
        for key in ("filename", "boundary", "charset", "cte"):
            part[key] = norm(part[key])
        part["defects"] = sorted(d for d in part["defects"] if d not in LIBRARY_ONLY_DEFECTS)
        view.append(part)
    root = sorted(d for d in report["defects"] if d not in LIBRARY_ONLY_DEFECTS)
    return root, view, report


def differences(expected, got):
    """Field-level differences as (section, field) keys with details."""
    out = {}
    exp_root, exp_parts = expected
    got_root, got_parts = got
    if exp_root != got_root:
        out[("", "root-defects")] = (exp_root, got_root)
    if [p["section"] for p in exp_parts] != [p["section"] for p in got_parts] or \
            [p["content_type"] for p in exp_parts] != [p["content_type"] for p in got_parts]:
        out[("", "walk")] = ([(p["section"], p["content_type"]) for p in exp_parts],
                             [(p["section"], p["content_type"]) for p in got_parts])
        return out
    for exp, lib in zip(exp_parts, got_parts):
        for key in exp:
            if exp[key] != lib.get(key):
                out[(exp["section"], key)] = (exp[key], lib.get(key))
    return out


def load_disagreements():
    """Lines: NAME SECTION FIELD REASON... ('-' for the root section)."""
    listed = {}
    with open(DISAGREEMENTS, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name, section, field, reason = line.split(None, 3)
            listed[(name, "" if section == "-" else section, field)] = reason
    return listed


def cpython_messages():
    import test
    source = os.path.join(os.path.dirname(test.__file__), "test_email", "data")
    if not os.path.isdir(source):
        return None
    return [(n, os.path.join(source, n)) for n in sorted(os.listdir(source))
            if n.startswith("msg_") and n.endswith(".txt")]


def corpus_messages():
    manifest_path = os.environ.get("IMAPTEST_MANIFEST")
    tmp = None
    if not manifest_path:
        tmp = tempfile.mkdtemp(prefix="mime-corpus.")
        subprocess.run([sys.executable, os.path.join(TOP_SRCDIR, "tests", "data", "gen-corpus"),
                        "--seed", "1", "--count", "200", "--out", os.path.join(tmp, "c")],
                       check=True, capture_output=True)
        manifest_path = os.path.join(tmp, "c", "manifest.json")
    manifest = json.load(open(manifest_path))
    base = os.path.join(os.path.dirname(manifest_path), "Maildir")
    return [("%s:uid%d" % (m["source"], m["uid"]), os.path.join(base, m["file"]))
            for m in manifest["messages"] if m["source"] == "generated"]


def main():
    if not os.access(CTL, os.X_OK):
        print("FAIL: %s is not built" % CTL)
        return 1
    listed = load_disagreements()
    seen = set()
    cpython = cpython_messages()
    if cpython is None:
        print("SKIP: no CPython test_email data (apt-get install libpython3.11-testsuite)")
        return 77
    for name, path in cpython:
        data = open(path, "rb").read()
        try:
            expected = python_view(data)
        except Exception as error:  # Python itself can't: nothing to compare
            print("note: Python's email fails on %s (%s)" % (name, error))
            continue
        root, view, _ = library_view(path)
        diff = differences(expected, (root, view))
        unexplained = {}
        for (section, field), detail in diff.items():
            if (name, section, field) in listed:
                seen.add((name, section, field))
            else:
                unexplained[(section, field)] = detail
        check("cpython %s agrees with email (or is listed)" % name, not unexplained,
              json.dumps({"%s/%s" % k: v for k, v in unexplained.items()}, default=str)[:2000])
    stale = [k for k in listed if k not in seen]
    check("every listed CPython disagreement still happens", not stale, stale)
    corpus = corpus_messages()
    agree = 0
    for name, path in corpus:
        expected = python_view(open(path, "rb").read())
        root, view, _ = library_view(path)
        diff = differences(expected, (root, view))
        if diff:
            print("FAIL: corpus %s disagrees: %s" % (name, json.dumps(
                {"%s/%s" % k: v for k, v in diff.items()}, default=str)[:2000]))
        else:
            agree += 1
    check("generated corpus: %d of %d messages agree (100%% required)" % (agree, len(corpus)),
          agree == len(corpus) and corpus)
    return summary()


if __name__ == "__main__":
    sys.exit(main())
