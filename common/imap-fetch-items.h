/* SPDX-License-Identifier: MIT */
/* imap-fetch-items: splits one untagged FETCH response line, fed in parts, into its items' names and exact value bytes. */
#ifndef IMAPCACHE_IMAP_FETCH_ITEMS_H
#define IMAPCACHE_IMAP_FETCH_ITEMS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * The line is "* n FETCH (item value item value ...)" and CRLF, fed as
 * the raw bytes the server sent (as imap_client_raw_fn delivers them:
 * the whole line at once, or parts split anywhere, the last one with
 * line_end). Each item is reported with its name as written
 * ("BODY[HEADER.FIELDS (SUBJECT FROM)]", "BODY[]<0>", "BINARY[1]") and
 * the exact bytes of its value: a number, NIL, an atom, a quoted string
 * (quotes and escapes kept), a literal "{n}\r\n..." or literal8
 * "~{n}\r\n...", or a parenthesised list with whatever it nests (an
 * ENVELOPE, a BODYSTRUCTURE, FLAGS).
 *
 * A literal value of more than IMAP_FETCH_ITEMS_STREAM_THRESHOLD bytes
 * is not held: it is reported as LITERAL_BEGIN (its size), LITERAL_DATA
 * pieces pointing into the bytes fed, and LITERAL_END. Every other value
 * is held until it is whole and reported once as ITEM.
 *
 * Events are provisional until the line ends: a consumer commits what
 * it gathered only when feed returns IMAP_FETCH_ITEMS_COMPLETE. Any
 * split of the same bytes gives the same events (literal pieces aside,
 * which follow the feed's boundaries) and the same result.
 */

#define IMAP_FETCH_ITEMS_STREAM_THRESHOLD (64 * 1024) /* a larger literal value streams: a 2 MB BODY[] is never held */
#define IMAP_FETCH_ITEMS_VALUE_MAX (1024 * 1024)      /* a held value (BODYSTRUCTURE of thousands of parts fits) */
#define IMAP_FETCH_ITEMS_NAME_MAX (16 * 1024)         /* an item name: HEADER.FIELDS with hundreds of names fits */
#define IMAP_FETCH_ITEMS_MAX_DEPTH 256                /* list nesting; a BODYSTRUCTURE nests 2 per MIME level (100) */

enum imap_fetch_items_value_type {
	IMAP_FETCH_VALUE_NIL,
	IMAP_FETCH_VALUE_NUMBER,
	IMAP_FETCH_VALUE_ATOM,
	IMAP_FETCH_VALUE_QUOTED,
	IMAP_FETCH_VALUE_LITERAL,
	IMAP_FETCH_VALUE_LITERAL8,
	IMAP_FETCH_VALUE_LIST,
};

enum imap_fetch_items_event_type {
	IMAP_FETCH_ITEMS_EVENT_ITEM,          /* an item and its whole value */
	IMAP_FETCH_ITEMS_EVENT_LITERAL_BEGIN, /* an item whose literal value streams */
	IMAP_FETCH_ITEMS_EVENT_LITERAL_DATA,  /* the next bytes of that literal */
	IMAP_FETCH_ITEMS_EVENT_LITERAL_END,   /* its last byte came */
};

struct imap_fetch_items_event {
	enum imap_fetch_items_event_type type;
	uint32_t seq;                      /* the line's message sequence number */
	const char *name;                  /* the item's name as written (NUL-terminated) */
	size_t name_len;
	enum imap_fetch_items_value_type value_type; /* ITEM; LITERAL_BEGIN: LITERAL or LITERAL8 */
	/* ITEM: the value's exact bytes. LITERAL_DATA: the piece. */
	const unsigned char *value;
	size_t value_len;
	/* ITEM: a literal's bytes after "{n}\r\n"; a quoted string's bytes
	   between its quotes (escapes as written); else the value again. */
	const unsigned char *content;
	size_t content_len;
	uint64_t literal_size;             /* LITERAL_BEGIN: the announced size */
};

/* Called for every event; event and what it points to are valid only
   during the call. */
typedef void imap_fetch_items_fn(const struct imap_fetch_items_event *event, void *context);

enum imap_fetch_items_result {
	IMAP_FETCH_ITEMS_NEED_MORE, /* the line goes on: feed its next part */
	IMAP_FETCH_ITEMS_COMPLETE,  /* the line ended, a well-formed FETCH */
	IMAP_FETCH_ITEMS_NOT_FETCH, /* the line is no "* n FETCH (": nothing was reported */
	IMAP_FETCH_ITEMS_MALFORMED, /* a FETCH line against the grammar, or one that ended short */
	IMAP_FETCH_ITEMS_TOO_BIG,   /* a name or held value past its limit */
};

struct imap_fetch_items;

/* A splitter reporting to callback. Returns NULL when memory runs out. */
struct imap_fetch_items *imap_fetch_items_new(imap_fetch_items_fn *callback, void *context);
/* Frees *items and sets it to NULL; NULL is fine. */
void imap_fetch_items_free(struct imap_fetch_items **items);

/* Feeds the next len bytes of the current line; line_end says they end
   it. Returns NEED_MORE while the line goes on (line_end false), and
   COMPLETE once it ended well-formed (line_end true). An error (NOT_FETCH,
   MALFORMED, TOO_BIG) is returned as soon as it is known, and again for
   every later part of the same line, which is skipped without events.
   After a part with line_end, the next feed starts a new line. */
enum imap_fetch_items_result imap_fetch_items_feed(struct imap_fetch_items *items, const unsigned char *data,
						   size_t len, bool line_end);
/* Forgets the line being split (its connection was lost): the next feed
   starts a new line. */
void imap_fetch_items_reset(struct imap_fetch_items *items);

/* "COMPLETE", "MALFORMED"...: for logs and tests. */
const char *imap_fetch_items_result_name(enum imap_fetch_items_result result);

/* Whether the event's item name is name (ASCII, any case). */
bool imap_fetch_items_name_is(const struct imap_fetch_items_event *event, const char *name);

/* The decimal number of len bytes (1 to 19 digits, nothing else), or false. */
bool imap_fetch_items_parse_number(const unsigned char *data, size_t len, uint64_t *number_r);

#endif
