#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Real mail clients through imapcached against the test Dovecot give the
same results through the proxy as direct:

- curl's IMAP (LIST, EXAMINE, FETCH, SEARCH): the same output;
- mbsync (a full pull into a Maildir): the same Maildir, once with the
  daemon's cache cold and once more into a fresh Maildir with it warm;
- offlineimap (offlineimap3): a read-only pull of testuser's account, the
  same Maildir; then a two-way sync of the twin accounts, testuser direct
  and mirroruser through the proxy (each its own copy of the corpus, so
  the two runs never change the same mailbox): the same Maildir at first,
  then the same flag changes and deletion made in both Maildirs and synced
  back must leave the same server state (UIDs and flags, seen directly).

- imapfilter: a Lua filter of searches (flags, sizes, dates, header and
  body strings, non-ASCII under CHARSET UTF-8), header matches, flag
  changes, a copy into a mailbox it creates, a move and a delete (all
  sparing UIDs 1 and 2, which curl fetches), then the searches again, on
  the twin accounts: the same printed results and the same server state.

offlineimap runs first: curl's FETCH sets \\Seen on testuser's messages
(mirroruser's stay as they were), and the two-way step needs the twins
still identical (imapfilter, next, needs them so too); its own changes
spare UIDs 1 and 2, which curl fetches,
and the clients after it see testuser's INBOX changed behind the back of
what the daemon cached during the pull.
Every client run is bounded by a timeout and talks to loopback only; a
client that is not installed is a failing check. The daemon runs on a
free loopback port and is stopped by its PID."""
import difflib
import hashlib
import imaplib
import os
import re
import shutil
import subprocess
import sys

from checks import check, summary
import proxyfixture
from proxyfixture import ENV, PASS, PASS3, PORT, USER, USER3, Daemon, upstream_dovecot

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
    (file names hold times and process ids: only contents and flags count).
    offlineimap adds no header to what it pulls (its X-OfflineIMAP goes
    only into messages it uploads, and these runs upload none), so only
    mbsync's needs taking out."""
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
    # the same pull again into a fresh Maildir: now the cache is warm
    warm = mbsync(port, "proxied-warm")
    check("mbsync through the proxy again (cache warm) works", warm[0] == 0, warm[:2])
    check("... and gives the same Maildir as direct", direct[2] == warm[2],
          difference_of(direct[2], warm[2]))


def difference_of(want, got):
    """What differs between two maildir_digest()s, briefly: per folder, the
    (digest, flags) pairs only one of them holds."""
    out = {}
    for folder in sorted(set(want) | set(got)):
        a, b = set(want.get(folder, ())), set(got.get(folder, ()))
        if a != b:
            out[folder] = {"only direct": sorted(a - b)[:5], "only proxied": sorted(b - a)[:5]}
    return out


def offlineimap(port, user, password, name, readonly=False):
    """A one-shot offlineimap sync (-o, quiet UI, its own config and state
    under tmp, never ~/.offlineimaprc) of user's account at port into the
    Maildir tmp/offlineimap-NAME, made on the first call and synced again
    on the next.
    readonly: the remote side is never changed (a pull). Returns the exit
    status, the output, and the Maildir's maildir_digest()."""
    base = os.path.join(tmp, "offlineimap-" + name)
    config = base + ".offlineimaprc"
    if not os.path.exists(config):
        with open(config, "w") as f:
            f.write("""[general]
accounts = test
metadata = %s.state
ui = quiet
socktimeout = 60

[Account test]
localrepository = local
remoterepository = remote

[Repository local]
type = Maildir
localfolders = %s

[Repository remote]
type = IMAP
remotehost = 127.0.0.1
remoteport = %d
remoteuser = %s
remotepass = %s
ssl = no
starttls = no
auth_mechanisms = LOGIN
maxconnections = 1
readonly = %s
""" % (base, base, port, user, password, readonly))
    result = subprocess.run(["offlineimap", "-c", config, "-o", "-u", "quiet"], capture_output=True,
                            stdin=subprocess.DEVNULL, timeout=RUN_TIMEOUT)
    output = (result.stdout + result.stderr).decode(errors="replace")
    return result.returncode, output[-2000:], maildir_digest(base)


def server_state(user, password):
    """{folder: {uid: sorted flags}} of user's account, seen directly (EXAMINE,
    UID FETCH 1:* (FLAGS)); \\Recent is left out: a session flag, which
    session gets it depends on who selected first, not on the mailbox."""
    conn = imaplib.IMAP4("127.0.0.1", PORT, timeout=RUN_TIMEOUT)
    try:
        conn.login(user, password)
        typ, lines = conn.list()
        if typ != "OK":
            raise RuntimeError("LIST: %r" % lines)
        folders = []
        for line in lines:
            m = re.match(rb'\(([^)]*)\) (?:"[^"]*"|NIL) (.*)$', line)
            if m is None or b"\\noselect" in m.group(1).lower():
                continue
            name = m.group(2).decode()
            folders.append(name[1:-1] if name.startswith('"') else name)
        state = {}
        for folder in folders:
            typ, data = conn.select('"%s"' % folder, readonly=True)
            if typ != "OK":
                raise RuntimeError("EXAMINE %s: %r" % (folder, data))
            typ, data = conn.uid("FETCH", "1:*", "(FLAGS)")
            if typ != "OK":
                raise RuntimeError("UID FETCH %s: %r" % (folder, data))
            messages = {}
            for item in data:
                if item is None:
                    continue
                uid = re.search(rb"UID (\d+)", item)
                flags = re.search(rb"FLAGS \(([^)]*)\)", item)
                if uid is None or flags is None:
                    raise RuntimeError("UID FETCH %s: %r" % (folder, item))
                messages[int(uid.group(1))] = sorted(f for f in flags.group(1).decode().split()
                                                     if f != "\\Recent")
            state[folder] = messages
        return state
    finally:
        try:
            conn.logout()
        except (OSError, imaplib.IMAP4.error):
            pass


MAILDIR_NAME = re.compile(r",U=(\d+),.*:2,([A-Za-z]*)$")  # offlineimap's name: ...,U=UID,FMD5=...:2,FLAGS


def change_maildir(root):
    """The same local changes in an offlineimap Maildir of the corpus, by
    UID (the twins' UIDs are the same): the lowest unflagged unseen UID
    above 2 becomes seen and flagged (moved to cur/, as a mail reader
    does), the lowest flagged UID above that loses \\Flagged, and the
    highest UID is deleted. Returns {uid: (old flags, new flags or None)}."""
    files = {}
    for sub in ("cur", "new"):
        directory = os.path.join(root, "INBOX", sub)
        for name in os.listdir(directory):
            m = MAILDIR_NAME.search(name)
            if m is None:
                raise RuntimeError("not an offlineimap Maildir name: " + name)
            files[int(m.group(1))] = (directory, name, m.group(2))
    uids = sorted(files)
    mark = next(u for u in uids if u > 2 and not set(files[u][2]) & set("SF"))
    unflag = next(u for u in uids if u > mark and "F" in files[u][2])
    delete = uids[-1]
    changes = {}
    for uid, new in ((mark, "".join(sorted(set(files[mark][2]) | set("FS")))),
                     (unflag, files[unflag][2].replace("F", ""))):
        directory, name, old = files[uid]
        os.rename(os.path.join(directory, name),
                  os.path.join(root, "INBOX", "cur", name[:len(name) - len(old)] + new))
        changes[uid] = (old, new)
    os.unlink(os.path.join(files[delete][0], files[delete][1]))
    changes[delete] = (files[delete][2], None)
    return changes


def test_offlineimap(port):
    # 1. a read-only pull of testuser's account, direct and through the proxy
    direct = offlineimap(PORT, USER, PASS, "pull-direct", readonly=True)
    proxied = offlineimap(port, USER, PASS, "pull-proxied", readonly=True)
    count = sum(len(v) for v in direct[2].values())
    check("offlineimap pull direct works (%d messages)" % count, direct[0] == 0 and count > 0, direct[:2])
    check("offlineimap pull through the proxy works", proxied[0] == 0, proxied[:2])
    check("... and gives the same Maildir", direct[2] == proxied[2], difference_of(direct[2], proxied[2]))
    pulled = direct[2]

    # 2. two-way: testuser direct, its twin mirroruser through the proxy
    before = server_state(USER, PASS), server_state(USER3, PASS3)
    inbox = len(before[0].get("INBOX", {}))
    check("the twin accounts are identical before the two-way sync (%d messages)" % inbox,
          before[0] == before[1] and inbox > 2, state_difference(before[0], before[1]))
    direct = offlineimap(PORT, USER, PASS, "twoway-direct")
    proxied = offlineimap(port, USER3, PASS3, "twoway-proxied")
    check("offlineimap two-way first sync direct works (the same Maildir as its pull)",
          direct[0] == 0 and direct[2] == pulled, direct[:2])
    check("offlineimap two-way first sync through the proxy works", proxied[0] == 0, proxied[:2])
    check("... and gives the same Maildir", direct[2] == proxied[2], difference_of(direct[2], proxied[2]))

    changes = change_maildir(os.path.join(tmp, "offlineimap-twoway-direct"))
    changes_proxied = change_maildir(os.path.join(tmp, "offlineimap-twoway-proxied"))
    check("the same local changes in both Maildirs: %s" % sorted(changes.items()),
          changes == changes_proxied, (changes, changes_proxied))
    direct = offlineimap(PORT, USER, PASS, "twoway-direct")
    proxied = offlineimap(port, USER3, PASS3, "twoway-proxied")
    check("offlineimap syncs the changes back direct", direct[0] == 0, direct[:2])
    check("offlineimap syncs the changes back through the proxy", proxied[0] == 0, proxied[:2])
    check("... and the Maildirs stay the same", direct[2] == proxied[2], difference_of(direct[2], proxied[2]))

    after = server_state(USER, PASS), server_state(USER3, PASS3)
    want = expected_state(before[0], changes)
    check("direct: the server holds the changes (UIDs and flags)", after[0] == want,
          state_difference(after[0], want))
    check("through the proxy: the twin's server state is the same as direct's", after[1] == after[0],
          state_difference(after[1], after[0]))


IMAPFILTER_QUERIES = """
show('unseen', box:is_unseen())
show('seen', box:is_seen())
show('flagged', box:is_flagged())
show('answered', box:is_answered())
show('larger 20000', box:is_larger(20000))
show('smaller 3000', box:is_smaller(3000))
show('subject meeting', box:contain_subject('meeting'))
show('subject café', box:contain_subject('café'))
show('from example.org', box:contain_from('example.org'))
show('from müller', box:contain_from('müller'))
show('to example', box:contain_to('example'))
show('body cache', box:contain_body('cache'))
show('body release', box:contain_body('release'))
show('message deploy', box:contain_message('deploy'))
show('sent since 2020', box:sent_since('01-Jan-2020'))
show('arrived before 2019-06', box:arrived_before('01-Jun-2019'))
show('unseen and subject summary', box:is_unseen() * box:contain_subject('summary'))
show('flagged or from carol', box:is_flagged() + box:contain_from('carol'))
show('query', box:send_query('OR FROM "bob" SUBJECT "ticket"'))
show('match ^Re: Summary', box:select_all():match_subject('^Re: Summary'))
fields('fields of subject café', box:contain_subject('café'))
"""

IMAPFILTER_SCRIPT = """
options.timeout = 60
options.starttls = false
options.certificates = false
options.hostnames = false
options.info = false
options.create = true
options.subscribe = false
options.charset = 'UTF-8'
acct = IMAP { server = '127.0.0.1', port = %(port)d, username = '%(user)s', password = '%(password)s' }
box = acct.INBOX

function show(label, results)
    local uids = {}
    for _, message in ipairs(results) do table.insert(uids, message[2]) end
    table.sort(uids)
    print(label .. ': ' .. table.concat(uids, ','))
end

function fields(label, results)
    local messages = {}
    for _, message in ipairs(results) do table.insert(messages, message) end
    table.sort(messages, function(a, b) return a[2] < b[2] end)
    for _, message in ipairs(messages) do
        local mailbox, uid = table.unpack(message)
        local header = mailbox[uid]:fetch_fields({ 'subject', 'from' }) or '(none)'
        print(label .. ' ' .. uid .. ': ' .. header:gsub('\\r', ''):gsub('\\n', ' | '))
    end
end

%(queries)s
print('-- changes')
curls = box:send_query('UID 1:2') -- curl's, next: kept as they are
show('kept for curl', curls)
changed = box:contain_from('carol') - curls
changed:mark_flagged()
changed = box:is_smaller(3000) * box:is_unseen() - curls
changed:mark_seen()
box:contain_subject('meeting'):copy_messages(acct['imapfilter-copied'])
changed = box:contain_from('dave') - curls
changed:move_messages(acct['imapfilter-moved'])
changed = box:contain_subject('invoice') - curls
changed:delete_messages()
print('-- after')
%(queries)s
box = acct['imapfilter-moved']
show('moved: all', box:select_all())
show('moved: body cache', box:contain_body('cache'))
box = acct['imapfilter-copied']
show('copied: all', box:select_all())
show('copied: subject café', box:contain_subject('café'))
"""


def imapfilter(port, user, password, name):
    """Runs the filter above as user at port (its HOME a directory of its
    own). Returns the exit status, the output and the errors."""
    home = os.path.join(tmp, "imapfilter-" + name)
    os.makedirs(home)
    config = os.path.join(home, "config.lua")
    with open(config, "w") as f:
        f.write(IMAPFILTER_SCRIPT % {"port": port, "user": user, "password": password,
                                     "queries": IMAPFILTER_QUERIES})
    result = subprocess.run(["imapfilter", "-c", config], capture_output=True, stdin=subprocess.DEVNULL,
                            timeout=RUN_TIMEOUT, env=dict(os.environ, HOME=home))
    return result.returncode, result.stdout.decode(errors="replace"), result.stderr.decode(errors="replace")[-2000:]


def test_imapfilter(port):
    before = server_state(USER, PASS), server_state(USER3, PASS3)
    check("the twin accounts are identical before imapfilter", before[0] == before[1],
          state_difference(before[0], before[1]))
    direct = imapfilter(PORT, USER, PASS, "direct")
    proxied = imapfilter(port, USER3, PASS3, "proxied")
    lines = direct[1].splitlines()
    found = [line for line in lines if re.match(r"[^:]+: \d", line)]
    check("imapfilter direct works (%d lines, %d with results)" % (len(lines), len(found)),
          direct[0] == 0 and "-- after" in lines and len(found) > 30, (direct[0], direct[2], lines[-3:]))
    check("imapfilter through the proxy works", proxied[0] == 0, (proxied[0], proxied[2]))
    check("... and prints the same results", direct[1] == proxied[1],
          "\n".join(difflib.unified_diff(lines, proxied[1].splitlines(), "direct", "proxied", lineterm="", n=1)))
    after = server_state(USER, PASS), server_state(USER3, PASS3)
    check("direct: the filter changed the account (%d folders)" % len(after[0]),
          after[0] != before[0] and "imapfilter-moved" in after[0] and "imapfilter-copied" in after[0],
          sorted(after[0]))
    check("through the proxy: the twin's server state is the same as direct's", after[1] == after[0],
          state_difference(after[1], after[0]))


def expected_state(state, changes):
    """state (from server_state()) after change_maildir()'s changes."""
    names = {"S": "\\Seen", "F": "\\Flagged", "R": "\\Answered", "D": "\\Draft", "T": "\\Deleted"}
    inbox = {uid: list(flags) for uid, flags in state["INBOX"].items()}
    for uid, (old, new) in changes.items():
        if new is None:
            del inbox[uid]
        else:
            # the Maildir flags offlineimap maps; keywords and the rest stay
            kept = [f for f in inbox[uid] if f not in names.values()]
            inbox[uid] = sorted(kept + [names[c] for c in new])
    return dict(state, INBOX=inbox)


def state_difference(got, want):
    """Where two server_state()s differ, briefly."""
    out = {}
    for folder in sorted(set(got) | set(want)):
        a, b = got.get(folder, {}), want.get(folder, {})
        diff = {uid: (a.get(uid), b.get(uid)) for uid in sorted(set(a) | set(b)) if a.get(uid) != b.get(uid)}
        if diff:
            out[folder] = dict(list(diff.items())[:10])
    return out


def main():
    daemon = Daemon(upstream_dovecot(), log_level=None, tmpdir=tmp)
    port = daemon.port
    try:
        # offlineimap first: see the docstring (curl's FETCH sets \\Seen)
        for test, tool in ((test_offlineimap, "offlineimap"), (test_imapfilter, "imapfilter"), (test_curl, "curl"),
                           (test_mbsync, "mbsync")):
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
