/* SPDX-License-Identifier: MIT */
/* ctl-client: imapcachectl's side of the daemon's control socket (see control.h for the protocol). */
#ifndef IMAPCACHE_CTL_CLIENT_H
#define IMAPCACHE_CTL_CLIENT_H

#include <stdio.h>

#define CTL_CLIENT_MAX_ANSWER (16 * 1024 * 1024) /* STATS of an account with very many mailboxes */
#define CTL_CLIENT_TIMEOUT_SECONDS 30 /* a daemon that accepts but never answers */

/* Where to reach the daemon: --socket, else control.socket of the config
   (-c FILE, else the default config), else the default path. */
struct ctl_client_options {
	const char *socket_path;  /* NULL: from the config */
	const char *config_path;  /* NULL: the default config */
};

/* The socket path for options (malloc'd). A config that can't be read is
   not an error (the default path is used) unless config_path was given:
   then NULL, with the problems on err. */
char *ctl_client_socket_path(const struct ctl_client_options *options, FILE *err);

/* Sends one request (fields joined by TAB; count of them) and reads the
   whole answer into *answer_r (malloc'd, NUL-terminated). Returns 0 when
   the final line is OK, else a sysexits code with one clear line on err:
   69 (EX_UNAVAILABLE) when no daemon listens at the socket, 77 (EX_NOPERM)
   when it may not be opened, 64 (NO USAGE), 67 (NO NOUSER), 66 (NO
   NOTFOUND), 70 (NO SOFTWARE), 74 on an I/O error or a cut answer. */
int ctl_client_request(const char *socket_path, const char *const *fields, int count, char **answer_r, FILE *err);

#endif
