/* SPDX-License-Identifier: MIT */
/* fetch-fill: stores what the untagged FETCH lines passing to a client carry, at no extra traffic. */
#ifndef IMAPCACHED_FETCH_FILL_H
#define IMAPCACHED_FETCH_FILL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "imap-fetch-items.h"

struct cache;
struct fetch_fill;
struct mailbox_view;

/*
 * One per session. Every untagged line from the upstream is fed to it as
 * the client core's raw callback delivers it (imap_client_raw_fn: a
 * whole line, or parts of a long one, line_end on the last); lines that
 * are no FETCH are ignored. Of a FETCH line it stores, for the message's
 * UID (the line's UID item, else the view's UID of its number):
 *
 *   INTERNALDATE, RFC822.SIZE, ENVELOPE, BODYSTRUCTURE, BODY   as written
 *   BODY[HEADER], BODY.PEEK[HEADER], RFC822.HEADER             the header block
 *   FLAGS (with MODSEQ when the line has it)                  cache_store_flags
 *   BODY[], BODY.PEEK[], RFC822 (no partial)                  the whole message
 *   PREVIEW (a quoted string or a literal)                    as written
 *
 * NIL values and every other item (partials, other sections, BINARY,
 * which is decoded) are not stored. A whole message streams into the
 * store as it arrives (cache_body_begin/write, at most one chunk held),
 * and is finished only when its line ends well-formed; a line that ends
 * short, is malformed, or never ends (fetch_fill_abort) stores nothing
 * of itself. The rest of a line is written in one cache batch when the
 * line ends. After a whole message is stored, or a BODYSTRUCTURE (or
 * BODY) for a message whose whole message is, the message is parsed with
 * the MIME library and cache_set_structure_agrees records whether our
 * BODYSTRUCTURE (BODY) equals the upstream's bytes.
 *
 * The view is told what the upstream told this session: the UID of the
 * line's message (mailbox_view_set_uid), its FLAGS (the text as written,
 * \Recent included, and mailbox_view_set_recent) and MODSEQ. The line's
 * number is the upstream's; it is translated with
 * mailbox_view_client_seq.
 */

/* A fill that stores nothing until fetch_fill_set_mailbox. NULL when
   memory runs out. */
struct fetch_fill *fetch_fill_new(void);
/* Aborts a message being stored; frees *fill and sets it to NULL. NULL
   is fine. */
void fetch_fill_free(struct fetch_fill **fill);

/* The selected mailbox the following lines are about: cache (NULL: no
   store; the fill then only tells the view), its mailbox_id
   (cache_mailbox_open), and the session's view (NULL: none; a line then
   needs its UID item). Neither is owned: the caller keeps both alive
   until it sets others (or NULL, at CLOSE, UNSELECT, or a mailbox
   change) or frees the fill. A line being fed is aborted. */
void fetch_fill_set_mailbox(struct fetch_fill *fill, struct cache *cache, int64_t mailbox_id,
			    struct mailbox_view *view);

/* Feeds bytes of the current untagged line; line_end says they end it.
   Returns the splitter's verdict on the line so far: NEED_MORE while it
   goes on, COMPLETE when a FETCH line ended (and was stored), NOT_FETCH
   for other lines, MALFORMED or TOO_BIG for a FETCH line that stored
   nothing. */
enum imap_fetch_items_result fetch_fill_feed(struct fetch_fill *fill, const unsigned char *data, size_t len,
					     bool line_end);
/* The line being fed will never end (the connection was lost mid-line):
   drops what it gathered and the message being stored. */
void fetch_fill_abort(struct fetch_fill *fill);

/* What the last FETCH line told of its message's state, for the sync
   (sync_update_fetch_line): valid from fetch_fill_feed's COMPLETE until
   the next feed. */
struct fetch_fill_line {
	uint32_t seq;          /* the upstream's number */
	uint32_t uid;          /* 0: no UID item */
	uint64_t modseq;       /* 0: no MODSEQ item */
	const char *flags;     /* the FLAGS list's inside as written, NUL-terminated; NULL: no FLAGS item */
	size_t flags_len;
};
/* Fills *line_r and returns true when the last line fed was a whole FETCH
   line all of whose UID, FLAGS and MODSEQ items were kept (false after
   any other line, or when memory ran out on it). */
bool fetch_fill_last_line(const struct fetch_fill *fill, struct fetch_fill_line *line_r);

#endif
