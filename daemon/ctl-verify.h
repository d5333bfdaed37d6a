/* SPDX-License-Identifier: MIT */
/* ctl-verify: "imapcachectl verify", which compares what the cache would answer of a mailbox with what the upstream answers. */
#ifndef IMAPCACHE_CTL_VERIFY_H
#define IMAPCACHE_CTL_VERIFY_H

#include "ctl-client.h"

#include <stdio.h>

#define CTL_VERIFY_BATCH 200       /* messages per UID FETCH of the fixed items */
#define CTL_VERIFY_BODY_BATCH 20   /* messages per UID FETCH of whole messages */
#define CTL_VERIFY_EXIT_DIFFERENT 1 /* a difference was found (as cmp(1) and diff(1) say it) */

/* Runs "verify [--password-file FILE] ACCOUNT MAILBOX" (argv[0] =
   "verify"): asks the daemon (DIGEST, see control-digest.h) for a digest
   of every value its store holds of MAILBOX, logs in to ACCOUNT's
   upstream (found in the configuration, as the daemon finds it; the
   password as ctl_warm_read_password takes it), EXAMINEs MAILBOX, fetches
   the same items of the same messages with .PEEK, and compares them byte
   for byte as the store keeps them. Writes one line per difference, per
   damaged value and per stale value (flags changed, or a message
   expunged, upstream since the daemon last synced), then a summary, to
   out. Returns 0 when every value the cache would serve equals the
   upstream's, CTL_VERIFY_EXIT_DIFFERENT when one differs or is damaged,
   or a sysexits code: 66 no such mailbox in the store, 67 no store for
   the account (or no upstream for it in the configuration), 69 the
   daemon or the upstream can't be reached, 77 the socket may not be
   opened or the upstream refused the login, 65 the upstream can't
   EXAMINE the mailbox, 75 the mailbox's
   UIDVALIDITY changed since the daemon last synced it (nothing can be
   compared), 78 the configuration can't be read, 64 bad usage. */
int ctl_verify_run(const struct ctl_client_options *options, int argc, char **argv, FILE *out, FILE *err);

extern const char ctl_verify_usage[];

#endif
