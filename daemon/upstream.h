/* SPDX-License-Identifier: MIT */
/* upstream: a client-core connection to the upstream server chosen for a login, and what the proxy may advertise before and after login. */
#ifndef IMAPCACHED_UPSTREAM_H
#define IMAPCACHED_UPSTREAM_H

#include "conf.h"
#include "imap-client.h"

#include <stdbool.h>
#include <stddef.h>

struct event_base;
struct evdns_base;

/* Sets the resolver that later upstream_client_new calls use for host
   names (not owned; it must outlive every upstream client made with it).
   NULL: a blocking getaddrinfo. The daemon makes one at start. */
void upstream_set_resolver(struct evdns_base *dns_base);

#define UPSTREAM_CAPABILITY_MAX 4096 /* Dovecot's list after login is under 700 bytes */

/* A client core set up for upstream (host, port, TLS mode, CA file and
   verification as configured, the connect timeout of conf, which also
   bounds resolving the host name; the resolver of upstream_set_resolver),
   not yet connected. Returns NULL with *error_r when its TLS context can't be
   made (a bad ca_file). */
struct imap_client *upstream_client_new(struct event_base *base, const struct conf *conf,
					const struct conf_upstream *upstream, const char **error_r);
/* The settings upstream_client_new uses (they point into conf and
   upstream), for a tool that drives the client core itself
   (imapcachectl verify, with imap_client_sync). */
void upstream_client_settings(const struct conf *conf, const struct conf_upstream *upstream,
			      struct imap_client_settings *settings_r);

/* Whether the proxy can carry capability (case-insensitive; "THREAD=REFS"
   and other "NAME=value" forms are judged by NAME=) between a client and
   the upstream once logged in: commands forwarded byte for byte whose
   responses come back tagged. Never: STARTTLS, LOGINDISABLED, AUTH=,
   SASL-IR (login is over), COMPRESS= (would change the byte stream),
   NOTIFY and UNAUTHENTICATE (events and states outside a command), and
   anything not known. */
bool upstream_capability_is_carried(const char *capability);

/* Writes into buf (size bytes, NUL-terminated, truncated at a word) the
   space-separated words of capabilities that upstream_capability_is_carried
   keeps, in their order and case. "IMAP4rev1" (or "IMAP4rev2") is always
   kept. */
void upstream_filter_capabilities(const char *capabilities, char *buf, size_t size);

/* What the proxy offers before login when it does not know what the
   upstream offers: its own commands, and the login mechanisms it can
   always pass on (AUTHENTICATE LOGIN goes upstream as LOGIN; AUTH=PLAIN is
   every server's). */
#define UPSTREAM_PRELOGIN_FALLBACK "IMAP4rev1 SASL-IR ID AUTH=PLAIN AUTH=LOGIN"

/* Writes into buf (size bytes, NUL-terminated, truncated at a word) the
   proxy's own pre-login capability list, built from learned: the
   pre-login lists (after TLS or STARTTLS) of the count upstreams a login
   may go to; count 0 (nothing learned) takes UPSTREAM_PRELOGIN_FALLBACK
   for them. Kept, in the first list's order, are the words that every
   list has (case-insensitively) and that the proxy can honour: what
   upstream_capability_is_carried keeps, SASL-IR, and AUTH=PLAIN,
   AUTH=LOGIN, AUTH=XOAUTH2 and AUTH=OAUTHBEARER (imap-sasl's
   imap_sasl_user_mechanism_is_known), the AUTH= ones only when
   plaintext_refused is false. Added: IMAP4rev1 first when no version is
   kept (IMAP4REV1 and IMAP4REV2 are written IMAP4rev1 and IMAP4rev2), ID
   after the version when it was not kept (the proxy answers it itself),
   and STARTTLS (offer_starttls) and LOGINDISABLED (plaintext_refused)
   before the first AUTH= word of the list, or at its end, where Dovecot
   puts them. */
void upstream_format_prelogin_capabilities(const char *const *learned, size_t count, bool offer_starttls,
					   bool plaintext_refused, char *buf, size_t size);

#endif
