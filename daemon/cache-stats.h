/* SPDX-License-Identifier: MIT */
/* cache-stats: the daemon's hit and miss counts per cached item kind, per account and mailbox and in all, since start. */
#ifndef IMAPCACHED_CACHE_STATS_H
#define IMAPCACHED_CACHE_STATS_H

#include "cache.h"

#include <stdbool.h>
#include <stdint.h>

#define CACHE_STATS_KINDS (CACHE_ITEM_MESSAGE + 1) /* every enum cache_item */
#define CACHE_STATS_MAX_MAILBOXES 10000 /* about 200 bytes each; past it only the daemon-wide counts grow */
#define CACHE_STATS_MAX_IDS 1024 /* (store, mailbox id) pairs remembered; past it they are looked up anew */

/* The counts of one mailbox, or of the whole daemon. */
struct cache_stats_counts {
	uint64_t hits[CACHE_STATS_KINDS];
	uint64_t misses[CACHE_STATS_KINDS];
	uint64_t saved;                /* upstream bytes saved by hits */
};

/* Counts one fetch item answered from the store (hit) or from upstream
   (miss), daemon-wide only; bytes: the value's bytes a hit spared the
   upstream (0 for a miss). One event loop: not thread-safe. */
void cache_stats_count(enum cache_item item, bool hit, uint64_t bytes);

/* Counts each item of items (a CACHE_HAS mask) once, as cache_stats_count
   does; bytes (for a hit) go to the saved bytes once, not per item. The
   counts go to the daemon-wide ones and to those of the account
   (cache_user) and mailbox (its name in the store: looked up once per
   store handle and mailbox_id) of cache; cache NULL: daemon-wide only. */
void cache_stats_count_items(struct cache *cache, int64_t mailbox_id, unsigned int items, bool hit,
			     uint64_t bytes);

/* The daemon-wide counts of item so far. */
void cache_stats_get(enum cache_item item, uint64_t *hits_r, uint64_t *misses_r);
/* Upstream bytes saved by hits so far, daemon-wide. */
uint64_t cache_stats_saved_bytes(void);

/* Called per mailbox counted since start, in the order they were first
   counted; counts is valid during the call. */
typedef void cache_stats_mailbox_fn(const char *account, const char *mailbox, const struct cache_stats_counts *counts,
				    void *context);
/* Calls fn for each mailbox of account (NULL: every account) named
   mailbox (NULL: every mailbox) that has counts. */
void cache_stats_foreach(const char *account, const char *mailbox, cache_stats_mailbox_fn *fn, void *context);

/* The kind's name in lower case ("envelope", "message", ...), or NULL past
   the last item. */
const char *cache_stats_kind_name(enum cache_item item);
/* Zeroes every count and forgets every mailbox (for tests). */
void cache_stats_reset(void);

#endif
