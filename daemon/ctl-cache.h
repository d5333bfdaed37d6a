/* SPDX-License-Identifier: MIT */
/* ctl-cache: "imapcachectl stats" and "imapcachectl purge", on the running daemon's cache. */
#ifndef IMAPCACHE_CTL_CACHE_H
#define IMAPCACHE_CTL_CACHE_H

#include "ctl-client.h"

#include <stdio.h>

/* Runs "stats [--json] [ACCOUNT [MAILBOX]]" (argv[0] = "stats") against
   the daemon options lead to. Returns 0 or a sysexits code (see
   ctl_client_request; 64 for bad usage). */
int ctl_cache_stats(const struct ctl_client_options *options, int argc, char **argv, FILE *out, FILE *err);
/* Runs "purge ACCOUNT [MAILBOX]"; one line per mailbox dropped. */
int ctl_cache_purge(const struct ctl_client_options *options, int argc, char **argv, FILE *out, FILE *err);

extern const char ctl_cache_stats_usage[];
extern const char ctl_cache_purge_usage[];

#endif
