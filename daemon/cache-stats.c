/* SPDX-License-Identifier: MIT */
/* cache-stats: the daemon's hit and miss counts per cached item kind, since start. */
#include "config.h"
#include "cache-stats.h"

#include <assert.h>
#include <string.h>

#define CACHE_STATS_KINDS (CACHE_ITEM_MESSAGE + 1) /* every enum cache_item */

static const char *const cache_stats_names[CACHE_STATS_KINDS] = {
	[CACHE_ITEM_INTERNALDATE] = "internaldate",
	[CACHE_ITEM_ENVELOPE] = "envelope",
	[CACHE_ITEM_BODYSTRUCTURE] = "bodystructure",
	[CACHE_ITEM_BODY] = "body",
	[CACHE_ITEM_HEADER] = "header",
	[CACHE_ITEM_FLAGS] = "flags",
	[CACHE_ITEM_SIZE] = "size",
	[CACHE_ITEM_MODSEQ] = "modseq",
	[CACHE_ITEM_STRUCTURE_AGREES] = "structure",
	[CACHE_ITEM_MESSAGE] = "message",
};

static struct {
	uint64_t hits[CACHE_STATS_KINDS];
	uint64_t misses[CACHE_STATS_KINDS];
	uint64_t saved;
} cache_stats;

void cache_stats_count(enum cache_item item, bool hit, uint64_t bytes)
{
	assert((unsigned int)item < CACHE_STATS_KINDS);
	if (hit) {
		cache_stats.hits[item]++;
		cache_stats.saved += bytes;
	} else {
		cache_stats.misses[item]++;
	}
}

void cache_stats_count_items(unsigned int items, bool hit, uint64_t bytes)
{
	for (unsigned int item = 0; item < CACHE_STATS_KINDS; item++) {
		if ((items & CACHE_HAS(item)) != 0)
			cache_stats_count((enum cache_item)item, hit, 0);
	}
	if (hit)
		cache_stats.saved += bytes;
}

void cache_stats_get(enum cache_item item, uint64_t *hits_r, uint64_t *misses_r)
{
	assert((unsigned int)item < CACHE_STATS_KINDS);
	*hits_r = cache_stats.hits[item];
	*misses_r = cache_stats.misses[item];
}

uint64_t cache_stats_saved_bytes(void)
{
	return cache_stats.saved;
}

const char *cache_stats_kind_name(enum cache_item item)
{
	return (unsigned int)item < CACHE_STATS_KINDS ? cache_stats_names[item] : NULL;
}

void cache_stats_reset(void)
{
	memset(&cache_stats, 0, sizeof(cache_stats));
}
