/* SPDX-License-Identifier: MIT */
/* cache-stats: the daemon's hit and miss counts per cached item kind, since start. */
#ifndef IMAPCACHED_CACHE_STATS_H
#define IMAPCACHED_CACHE_STATS_H

#include "cache.h"

#include <stdbool.h>
#include <stdint.h>

/* Counts one fetch item answered from the store (hit) or from upstream
   (miss); bytes: the value's bytes a hit spared the upstream (0 for a
   miss). item is an enum cache_item. One event loop: not thread-safe. */
void cache_stats_count(enum cache_item item, bool hit, uint64_t bytes);

/* Counts each item of items (a CACHE_HAS mask) once, as cache_stats_count
   does; bytes (for a hit) go to the saved bytes once, not per item. */
void cache_stats_count_items(unsigned int items, bool hit, uint64_t bytes);

/* The counts of item so far. */
void cache_stats_get(enum cache_item item, uint64_t *hits_r, uint64_t *misses_r);
/* Upstream bytes saved by hits so far. */
uint64_t cache_stats_saved_bytes(void);
/* The kind's name in lower case ("envelope", "message", ...), or NULL past
   the last item. */
const char *cache_stats_kind_name(enum cache_item item);
/* Zeroes every count (for tests). */
void cache_stats_reset(void);

#endif
