/* SPDX-License-Identifier: MIT */
/* search: SEARCH and UID SEARCH answered from a synced view and the store with the upstream's exact answer, or sent upstream. */
#ifndef IMAPCACHED_SEARCH_H
#define IMAPCACHED_SEARCH_H

#include "imap-command.h"
#include "mailbox-view.h"

#include <stdint.h>

struct cache;
struct evbuffer;

#define SEARCH_OK_TEXT "Search completed." /* Dovecot 2.3's, less its timings */

/*
 * What is answered here (doc/cache.md, "Local SEARCH"): a program of
 * ALL, the flag keys (ANSWERED ... UNSEEN, and RECENT, NEW and OLD from
 * the view's \Recent),
 * KEYWORD and UNKEYWORD of a keyword some message has (Dovecot adds any
 * other to the mailbox and says FLAGS), LARGER and SMALLER (RFC822.SIZE), BEFORE, ON and
 * SINCE (the INTERNALDATE's own day, as Dovecot compares it), SENTBEFORE,
 * SENTON and SENTSINCE (the Date field's day as written), FROM, TO, CC,
 * BCC, SUBJECT and HEADER (search-string.h: the header block matched as
 * Dovecot matches it), BODY and TEXT when every message's text is
 * indexed and sure (cache-fts.h, search-text.h), MODSEQ without an entry name once the client has
 * enabled CONDSTORE (the answer then ends with the highest MODSEQ found,
 * as RFC 7162 3.1.5 and Dovecot write it), UID, sequence sets, NOT, OR and parentheses, with
 * no CHARSET or one of US-ASCII and UTF-8; without RETURN, or with RETURN (MIN MAX ALL COUNT) when the
 * upstream offers ESEARCH (RETURN SAVE goes upstream). Everything else goes upstream unchanged, and so does
 * a program on a view that can't answer it exactly: a held expunge, an
 * empty mailbox, a message whose UID is not known, whose flags are not
 * known (a STORE not confirmed yet) when a flag key is used, whose size,
 * INTERNALDATE or header block is not in the store when a key needs it,
 * whose header or Date field search-string can't read as Dovecot does, a sequence number
 * past the last message, "$", a "*" in a set of several ranges, a NOT of
 * a parenthesised group or an OR; and two negated keys of one type among
 * LARGER, SMALLER, BEFORE, SINCE, SENTBEFORE and SENTSINCE, which
 * Dovecot merges into one. (Dovecot's
 * answers to these are not always RFC 3501's, but they are the ones to give.)
 */

struct search_facts {
	struct cache *cache;             /* the account's store; NULL: only keys the view answers */
	int64_t mailbox_id;              /* the selected mailbox's id in the store */
	const struct mailbox_view *view; /* vouched for (sync_is_ready) */
	bool esearch;                    /* the upstream advertised ESEARCH (RFC 4731) */
	bool condstore;                  /* the client enabled CONDSTORE: MODSEQ keys are answered here */
};

enum search_route {
	SEARCH_ROUTE_LOCAL,    /* the answer was appended */
	SEARCH_ROUTE_UPSTREAM, /* nothing appended; *why_r says why */
};

/* Plans command (IMAP_COMMAND_SEARCH; UID SEARCH when command->uid; tag,
   the client's, for ESEARCH's TAG) on facts. LOCAL: the untagged
   "* SEARCH ..." or "* ESEARCH ..." line, as Dovecot writes it, is
   appended to out (the caller adds the tagged OK with SEARCH_OK_TEXT).
   UPSTREAM: out is unchanged and *why_r is a static text for the log
   (also when memory or the store fails). */
enum search_route search_answer(const struct imap_command *command, const char *tag,
				const struct search_facts *facts, struct evbuffer *out, const char **why_r);

#endif
