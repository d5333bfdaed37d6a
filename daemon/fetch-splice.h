/* SPDX-License-Identifier: MIT */
/* fetch-splice: the values of the proxy's own FETCH of items a local answer can't vouch for, captured as the upstream wrote them. */
#ifndef IMAPCACHED_FETCH_SPLICE_H
#define IMAPCACHED_FETCH_SPLICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FETCH_SPLICE_BYTES_MAX (4 * 1024 * 1024) /* captured values of one answer: beyond, the FETCH goes upstream whole */

struct fetch_splice;

/* An empty capture; NULL when memory runs out. */
struct fetch_splice *fetch_splice_new(void);
/* Frees *splice and sets it to NULL; NULL is fine. */
void fetch_splice_free(struct fetch_splice **splice);

/*
 * Feeds the raw bytes of an untagged line of the proxy's own FETCH (as
 * imap_client_raw_fn gives them: whole or in parts, the last with
 * line_end). The line must name its UID before any other item ("* n
 * FETCH (UID u ..."). Each other item's value is kept exactly as written
 * (a literal with its "{n}\r\n" or "~{n}\r\n", a quoted string with its
 * quotes, NIL, a list), under the line's UID and the item's name as
 * written. A line that does not parse, or names no UID first, keeps
 * nothing; once the values pass FETCH_SPLICE_BYTES_MAX, none is kept
 * any more (every lookup fails).
 */
void fetch_splice_feed(struct fetch_splice *splice, const unsigned char *data, size_t len, bool line_end);

/* The value captured for the message uid's item name (as the upstream
   named it: "BODY[1]<0>", "BINARY.SIZE[2]"): true with *value_r,
   *len_r (valid until the splice is fed or freed), false when none. */
bool fetch_splice_lookup(const struct fetch_splice *splice, uint32_t uid, const char *name,
			 const unsigned char **value_r, size_t *len_r);

/* How many values it holds (for logs and tests). */
size_t fetch_splice_count(const struct fetch_splice *splice);

#endif
