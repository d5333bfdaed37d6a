/* SPDX-License-Identifier: MIT */
/* search-string: SEARCH's header string keys matched in a stored header block as Dovecot 2.3 matches them. */
#ifndef IMAPCACHED_SEARCH_STRING_H
#define IMAPCACHED_SEARCH_STRING_H

#include "mime-buffer.h"

#include <stdbool.h>
#include <stddef.h>

/*
 * What Dovecot 2.3 (index-search.c) compares, learnt from its sources and
 * checked against it (doc/cache.md, "Local SEARCH"):
 *   - each occurrence of the field (name without regard to ASCII case)
 *     counts on its own, and one match is enough; an empty key asks only
 *     whether the field is there;
 *   - the value is the line after the colon less one space or tab, the
 *     continuation lines appended without their line break (a leading tab
 *     becomes a space);
 *   - FROM, TO, CC, BCC match the address list as Dovecot rewrites it:
 *     `"Display Name" <local@domain>` (the name quoted when it holds
 *     anything but atext, with \ before " \ and '; as it is when it holds
 *     an encoded word), `<local@domain>` without one, joined by ", ";
 *   - SUBJECT matches its value with each run of spaces and tabs made
 *     one space (a leading one dropped);
 *   - HEADER matches the value as it is;
 *   - then RFC 2047 words are decoded (anywhere, even inside a word;
 *     white space between two of them and before the first dropped), and
 *     the text and the key are compared in casemap form (common/casemap.h)
 *     as a substring.
 * Whatever this module can't vouch for comes back SEARCH_STRING_UNSURE,
 * and the SEARCH goes upstream: a header line without a colon, a NUL,
 * a line longer than SEARCH_STRING_LINE_MAX, bytes that are not UTF-8,
 * an "=?" that is not a well-formed word in UTF-8, US-ASCII or
 * ISO-8859-1 with clean B or Q text, an address list with comments,
 * groups, routes, quoted local parts, domain literals or anything else
 * outside `[phrase] <addr-spec>` / `addr-spec`.
 */

#define SEARCH_STRING_LINE_MAX 4000 /* Dovecot splits longer header lines at its stream buffer's end */

enum search_string_kind {
	SEARCH_STRING_HEADER,   /* HEADER name value */
	SEARCH_STRING_ADDRESS,  /* FROM, TO, CC, BCC */
	SEARCH_STRING_SUBJECT,  /* SUBJECT */
};

enum search_string_result {
	SEARCH_STRING_UNSURE = -1,
	SEARCH_STRING_NO = 0,
	SEARCH_STRING_YES = 1,
};

/* Puts the casemap form of a key (len bytes, the client's string) in
   *needle (reset first). Returns 0, or -1 when the key is not UTF-8 or
   holds a CR or LF (Dovecot's match may then run across lines). */
/* Some bytes of a block: a line, a header field, a part. */
struct search_string_span {
	const unsigned char *data;
	size_t len;
};

/* The line at *pos of block (size bytes) in *line_r, without its LF and a
   CR before it (the last may end at the block's end); *pos moves past
   it. Returns false at the block's end. */
bool search_string_next_line(const unsigned char *block, size_t size, size_t *pos, struct search_string_span *line_r);

int search_string_prepare_key(const char *key, size_t len, struct mime_buffer *needle);

/* Whether the header block (size bytes, BODY[HEADER] as stored) has a
   field named field (NUL-terminated) whose value, as kind reads it,
   contains needle (from search_string_prepare_key; empty: whether the
   field is there at all). */
enum search_string_result search_string_match_header(const unsigned char *block, size_t size, const char *field,
						     enum search_string_kind kind, const struct mime_buffer *needle);

/* Appends the casemap form of a header value (len bytes, unfolded) with
   its encoded words decoded as Dovecot's message_header_decode_utf8
   does: a word may start anywhere, and a piece of only white space
   before a word is dropped. Returns 0, or -1 when unsure (as above). */
int search_string_decode(const unsigned char *text, size_t len, struct mime_buffer *out);

/* The day written in the header block's Date field ("Tue, 1 Jan 2019
   23:30:00 -0500" is 1 Jan 2019: Dovecot's SENT* keys compare the
   Date's time plus its own zone's offset, its day as written). Returns
   0, or -1 when there is no Date, more than one, or one not in the plain
   "[Ddd, ]D Mmm YYYY HH:MM[:SS] +HHMM" form (Dovecot takes a missing or
   unparsable Date as time 0 on one path and as no match on another). */
int search_string_sent_date(const unsigned char *block, size_t size, int *year_r, int *month_r, int *day_r);

#endif
