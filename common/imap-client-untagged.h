/* SPDX-License-Identifier: MIT */
/* imap-client-untagged: untagged responses kept as shared, self-contained copies, and the imaplib-style response pool. */
#ifndef IMAPCACHE_IMAP_CLIENT_UNTAGGED_H
#define IMAPCACHE_IMAP_CLIENT_UNTAGGED_H

#include <stdbool.h>
#include <stdint.h>

#include "imap-parser.h"

#define IMAP_CLIENT_UNTAGGED_POOL_MAX 1000 /* imaplib-style response() pool; older entries are dropped */

/*
 * One untagged response ("* ..."). keyword is upper-cased: "EXISTS",
 * "FETCH", "CAPABILITY", "OK", "BYE"... For "* 12 FETCH (...)" number is
 * 12 and has_number is set. args are the arguments after the keyword
 * (read them with imap_arg_* from imap-parser.h); a literal that was
 * streamed appears as IMAP_ARG_LITERAL_STREAMED with its size only.
 * line is the whole line, to hand to imap_response_parse() for typed
 * views (FETCH items, ENVELOPE, STATUS...).
 * Status responses (OK NO BAD PREAUTH BYE) have no args but code (the
 * inside of "[...]", or NULL) and text. Read-only; shared between the
 * results that hold it, valid as long as one of them is.
 */
struct imap_client_untagged {
	/* The whole line as a LIST ("*", number, keyword, data...), for
	   imap_response_parse(); NULL for response codes in the pool. */
	const struct imap_arg *line;
	const char *keyword;
	bool has_number;
	uint32_t number;
	const struct imap_arg *args;
	unsigned int args_count;
	const char *code;
	const char *text;
	unsigned int refcount; /* private: use _ref/_unref */
};

/* A copy of one untagged line in a single allocation: line_args (count
   of them: "*", number, keyword, data...) with every string, and the
   data starting at first; code and text (may be NULL) for status
   responses. count 0 makes an entry without a line (a response code in
   the pool). keyword is upper-cased. The reference count starts at 1. */
struct imap_client_untagged *imap_client_untagged_new(const char *keyword, bool has_number,
						      uint32_t number, const struct imap_arg *line_args,
						      unsigned int count, unsigned int first,
						      const char *code, const char *text);
/* The same line without a copy, in storage of the caller's (untagged,
   line: the LIST that holds line_args; keyword_buf, keyword_size: the
   upper-cased keyword): it borrows line_args, code and text, and is
   valid only while they are. false when the keyword does not fit
   keyword_buf. Never ref or unref it. */
bool imap_client_untagged_borrow(struct imap_client_untagged *untagged, struct imap_arg *line, char *keyword_buf,
				 size_t keyword_size, const char *keyword, bool has_number, uint32_t number,
				 const struct imap_arg *line_args, unsigned int count, unsigned int first,
				 const char *code, const char *text);
void imap_client_untagged_ref(struct imap_client_untagged *untagged);
/* Drops a reference (frees at the last) and sets *untagged to NULL. */
void imap_client_untagged_unref(struct imap_client_untagged **untagged);

/* The pool: the newest IMAP_CLIENT_UNTAGGED_POOL_MAX entries, in order. */
/* Zero-initialised is empty; the array grows as entries come (a proxy's
   idle session holds a few, not IMAP_CLIENT_UNTAGGED_POOL_MAX slots). */
struct imap_client_untagged_pool {
	struct imap_client_untagged **entries;
	unsigned int count, capacity;
};
/* Adds a reference to untagged; drops the oldest entry when full. */
void imap_client_untagged_pool_add(struct imap_client_untagged_pool *pool,
				   struct imap_client_untagged *untagged);
/* Removes and returns the oldest entry with keyword (the caller owns that
   reference), or NULL. */
struct imap_client_untagged *imap_client_untagged_pool_pop(struct imap_client_untagged_pool *pool,
							   const char *keyword);
/* Drops every entry and frees the array; the pool is empty and usable. */
void imap_client_untagged_pool_clear(struct imap_client_untagged_pool *pool);

#endif
