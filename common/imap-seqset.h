/* SPDX-License-Identifier: MIT */
/* imap-seqset: IMAP sequence sets ("1:3,5,7:*", "$") parsed into ranges. */
#ifndef IMAPCACHE_IMAP_SEQSET_H
#define IMAPCACHE_IMAP_SEQSET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* "*": the largest number in use; resolved by the caller, who knows it.
   A range's end that is "*" holds this value and says so in its flag:
   the number 4294967295 is a valid UID of its own, not "*". */
#define IMAP_SEQSET_STAR UINT32_MAX
/* A set longer than this many ranges is refused; 64 KiB lines hold fewer. */
#define IMAP_SEQSET_MAX_RANGES 20000

enum imap_seqset_error {
	IMAP_SEQSET_ERROR_NONE,
	IMAP_SEQSET_ERROR_EMPTY,        /* "" or an empty element (",," or a trailing ",") */
	IMAP_SEQSET_ERROR_ZERO,         /* 0 is no sequence number or UID */
	IMAP_SEQSET_ERROR_OVERFLOW,     /* a number above 2^32 - 1 */
	IMAP_SEQSET_ERROR_SYNTAX,       /* anything else: "1:", "a", "1:2:3", "$,1" */
	IMAP_SEQSET_ERROR_STAR,         /* "*" where the grammar has none (uid-set) */
	IMAP_SEQSET_ERROR_SAVED,        /* "$" where SEARCHRES is not allowed */
	IMAP_SEQSET_ERROR_TOO_MANY,     /* more than IMAP_SEQSET_MAX_RANGES ranges */
	IMAP_SEQSET_ERROR_OUT_OF_MEMORY,
};

/* One range; first <= last ("5:2" is stored as 2..5; "*" as
   IMAP_SEQSET_STAR with its flag set). */
struct imap_seqset_range {
	uint32_t first;
	uint32_t last;
	bool first_star;
	bool last_star;
};

/* A parsed set, in the order given. Initialise with {0} (or
   IMAP_SEQSET_INIT); free with imap_seqset_free(). Reusable: parsing again
   overwrites and keeps the memory. */
struct imap_seqset {
	struct imap_seqset_range *ranges;
	unsigned int count;
	unsigned int capacity;
	bool saved;             /* the set was "$" (RFC 5182 SEARCHRES) */
};
#define IMAP_SEQSET_INIT { NULL, 0, 0, false }

/* What a set may hold. */
#define IMAP_SEQSET_ALLOW_STAR 0x01  /* sequence-set allows "*"; uid-set does not */
#define IMAP_SEQSET_ALLOW_SAVED 0x02 /* "$" alone (commands, with SEARCHRES) */

/* Parses str (len bytes, no NUL needed) into set. Returns 0, or -1 with
   *error_r set (set is then empty). */
int imap_seqset_parse(struct imap_seqset *set, const char *str, size_t len, unsigned int allow,
		      enum imap_seqset_error *error_r);
/* A one-line message for an error, for a BAD text. */
const char *imap_seqset_error_message(enum imap_seqset_error error);

/* The first (last) number of range, "*" standing for star. */
uint32_t imap_seqset_range_first(const struct imap_seqset_range *range, uint32_t star);
uint32_t imap_seqset_range_last(const struct imap_seqset_range *range, uint32_t star);
/* Whether range has a "*" at either end. */
bool imap_seqset_range_has_star(const struct imap_seqset_range *range);

/* Whether number is in set, with "*" standing for star (the largest
   number in use). A "$" set contains nothing here; resolve it first. */
bool imap_seqset_contains(const struct imap_seqset *set, uint32_t number, uint32_t star);
/* The set's ranges with "*" as star, each first <= last, sorted and
   merged (no flags set), *count_r of them in a malloc'd array; NULL when
   memory runs out. A "$" set has none. */
struct imap_seqset_range *imap_seqset_resolve(const struct imap_seqset *set, uint32_t star, unsigned int *count_r);
/* Number of distinct values in the set with "*" as star (overlaps counted
   once; at most 2^32 - 1). 0 for "$", and when memory runs out. */
uint64_t imap_seqset_count(const struct imap_seqset *set, uint32_t star);

/* Writes count numbers (strictly ascending, none 0) as a set, runs as
   ranges ("1:3,7,9:10"), into buf (size bytes, NUL-terminated when size
   > 0). Returns the length of the whole text, as snprintf: a result of
   size or more means it was cut. */
size_t imap_seqset_format(char *buf, size_t size, const uint32_t *numbers, size_t count);

void imap_seqset_free(struct imap_seqset *set);

#endif
