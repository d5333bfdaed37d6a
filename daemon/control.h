/* SPDX-License-Identifier: MIT */
/* control: the UNIX control socket through which imapcachectl reads and changes the live cache. */
#ifndef IMAPCACHED_CONTROL_H
#define IMAPCACHED_CONTROL_H

#include "conf.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <stddef.h>
#include <stdint.h>

/*
 * The protocol: one request per connection. The client sends one line,
 * fields separated by TAB, ended by LF (at most CONTROL_MAX_REQUEST bytes
 * with the LF; no NUL, CR or TAB inside a field):
 *
 *   STATS [ACCOUNT [MAILBOX]]   ACCOUNT is the login name of an account
 *   PURGE ACCOUNT [MAILBOX]
 *   DIGEST ACCOUNT MAILBOX [UID] what the store would serve of MAILBOX's
 *                               messages, from UID (default 1) on
 *
 * The daemon answers with zero or more data lines, then one final line,
 * and closes:
 *
 *   MAILBOX TAB account TAB mailbox TAB messages TAB whole TAB bytes
 *       (STATS: one per stored mailbox; whole: messages cached whole;
 *        bytes: the bytes of those whole messages)
 *       (STATS without ACCOUNT: of every account counted since start)
 *   MAILBOXITEM TAB account TAB mailbox TAB kind TAB hits TAB misses
 *       (STATS: per mailbox counted since start and item kind counted)
 *   MAILBOXSAVED TAB account TAB mailbox TAB bytes
 *       (STATS: upstream bytes the mailbox's hits saved since start)
 *   ITEM TAB kind TAB hits TAB misses   (STATS: per item kind, daemon-wide
 *        since start; kinds as cache_stats_kind_name gives them)
 *   SAVED TAB bytes                     (STATS: upstream bytes saved since start)
 *   PURGED TAB account TAB mailbox      (PURGE: one per mailbox dropped)
 *   (DIGEST: see control-digest.h)
 *   OK
 *   NO TAB code TAB text                code: USAGE (a bad request),
 *                                       NOUSER (no store for the
 *                                       account), NOTFOUND (no such
 *                                       mailbox in the store), SOFTWARE
 *                                       (the store failed)
 */
#define CONTROL_MAX_REQUEST 4096 /* a verb and two names; mailbox names are well under 1 KiB in practice */
#define CONTROL_MAX_FIELDS 4     /* the verb, up to two names and a UID */
#define CONTROL_TIMEOUT_SECONDS 10 /* a client that sends no full request in time is dropped */

struct control;

enum control_verb {
	CONTROL_VERB_STATS,
	CONTROL_VERB_PURGE,
	CONTROL_VERB_DIGEST,
};

struct control_request {
	enum control_verb verb;
	char *account;  /* NULL: every account (STATS only) */
	char *mailbox;  /* NULL: every mailbox of account */
	uint32_t first_uid; /* DIGEST: the lowest UID wanted (1 when not given) */
};

enum control_parse_result {
	CONTROL_PARSE_DONE,
	CONTROL_PARSE_NEED_MORE,
	CONTROL_PARSE_ERROR,
};

/* Parses the request at the start of input (size bytes, not necessarily
   NUL-terminated). DONE fills *request_r (free with
   control_request_clear); NEED_MORE when no LF came yet and size is within
   CONTROL_MAX_REQUEST; ERROR with *error_r (static text) otherwise. */
enum control_parse_result control_parse_request(const char *input, size_t size,
						struct control_request *request_r, const char **error_r);
/* Frees request's strings and zeroes it. */
void control_request_clear(struct control_request *request);

/* Runs request against the stores under config's cache.dir (the account's
   upstream found as for a login), appending the answer (data lines and
   the final line) to out. Opens each store through cache_open, so the
   handle is the one live sessions share: a PURGE drops the mailbox while
   they use it, and a session holding the old mailbox id then finds
   nothing in the store and goes upstream. Returns 0, or -1 when the
   final line is NO. */
int control_handle_request(const struct conf *config, const struct control_request *request,
			   struct evbuffer *out);

/* Makes the socket at path (a stale socket there is replaced; a socket
   another process listens on, or any other file, is refused), mode 0600,
   listening. Returns it, or NULL with
   *error_r (static text, valid until the next call). */
struct control *control_new(const char *path, const char **error_r);
/* Starts answering on base, with config (referenced; see control_set_conf). */
int control_start(struct control *control, struct event_base *base, struct conf *config);
/* The config for requests from now on (after a reload); takes a reference. */
void control_set_conf(struct control *control, struct conf *config);
/* Closes the socket and the connections, removes the socket file, frees,
   and sets *control to NULL. NULL is fine. */
void control_free(struct control **control);

#endif
