/* SPDX-License-Identifier: MIT */
/* cache-stats: the daemon's hit and miss counts per cached item kind, per account and mailbox and in all, since start. */
#include "config.h"
#include "cache-stats.h"

#include <assert.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

#define CACHE_STATS_NONE SIZE_MAX /* an id whose mailbox is not counted (gone, or past the limit) */

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

struct cache_stats_mailbox {
	char *account;
	char *mailbox;
	struct cache_stats_counts counts;
};

/* Which mailbox a store handle's mailbox id names. */
struct cache_stats_id {
	uint64_t serial;
	int64_t mailbox_id;
	size_t index;                  /* in cache_stats_mailboxes, or CACHE_STATS_NONE */
};

static struct cache_stats_counts cache_stats_total;
static struct cache_stats_mailbox *cache_stats_mailboxes;
static size_t cache_stats_mailbox_count, cache_stats_mailbox_capacity;
static struct cache_stats_id cache_stats_ids[CACHE_STATS_MAX_IDS];
static size_t cache_stats_id_count, cache_stats_id_last;

static void cache_stats_add(struct cache_stats_counts *counts, unsigned int items, bool hit, uint64_t bytes)
{
	for (unsigned int item = 0; item < CACHE_STATS_KINDS; item++) {
		if ((items & CACHE_HAS(item)) == 0)
			continue;
		if (hit)
			counts->hits[item]++;
		else
			counts->misses[item]++;
	}
	if (hit)
		counts->saved += bytes;
}

void cache_stats_count(enum cache_item item, bool hit, uint64_t bytes)
{
	assert((unsigned int)item < CACHE_STATS_KINDS);
	cache_stats_add(&cache_stats_total, CACHE_HAS(item), hit, bytes);
}

/* The index of account's mailbox, made when new; CACHE_STATS_NONE past the limit. */
static size_t cache_stats_mailbox_index(const char *account, const char *mailbox)
{
	struct cache_stats_mailbox *entry;

	for (size_t i = 0; i < cache_stats_mailbox_count; i++) {
		entry = &cache_stats_mailboxes[i];
		if (strcmp(entry->account, account) == 0 && strcmp(entry->mailbox, mailbox) == 0)
			return i;
	}
	if (cache_stats_mailbox_count == CACHE_STATS_MAX_MAILBOXES)
		return CACHE_STATS_NONE;
	if (cache_stats_mailbox_count == cache_stats_mailbox_capacity) {
		size_t capacity = cache_stats_mailbox_capacity == 0 ? 16 : cache_stats_mailbox_capacity * 2;
		struct cache_stats_mailbox *grown = realloc(cache_stats_mailboxes, capacity * sizeof(*grown));

		if (grown == NULL)
			return CACHE_STATS_NONE;
		cache_stats_mailboxes = grown;
		cache_stats_mailbox_capacity = capacity;
	}
	entry = &cache_stats_mailboxes[cache_stats_mailbox_count];
	memset(entry, 0, sizeof(*entry));
	entry->account = strdup(account);
	entry->mailbox = strdup(mailbox);
	if (entry->account == NULL || entry->mailbox == NULL) {
		free(entry->account);
		free(entry->mailbox);
		return CACHE_STATS_NONE;
	}
	return cache_stats_mailbox_count++;
}

/* The mailbox mailbox_id names in cache's store, looked up there. */
static size_t cache_stats_lookup(struct cache *cache, int64_t mailbox_id)
{
	sqlite3_stmt *stmt;
	size_t index = CACHE_STATS_NONE;

	if (sqlite3_prepare_v2(cache_sqlite_handle(cache), "SELECT name FROM mailboxes WHERE id = ?1 AND typeof(name) = 'text'", -1, &stmt,
			       NULL) != SQLITE_OK)
		return CACHE_STATS_NONE;
	sqlite3_bind_int64(stmt, 1, mailbox_id);
	if (sqlite3_step(stmt) == SQLITE_ROW && sqlite3_column_text(stmt, 0) != NULL)
		index = cache_stats_mailbox_index(cache_user(cache), (const char *)sqlite3_column_text(stmt, 0));
	sqlite3_finalize(stmt);
	return index;
}

/* The counts of the mailbox mailbox_id names in cache, or NULL. */
static struct cache_stats_counts *cache_stats_mailbox_counts(struct cache *cache, int64_t mailbox_id)
{
	uint64_t serial = cache_serial(cache);
	struct cache_stats_id *id = NULL;

	if (cache_stats_id_last < cache_stats_id_count && cache_stats_ids[cache_stats_id_last].serial == serial &&
	    cache_stats_ids[cache_stats_id_last].mailbox_id == mailbox_id)
		id = &cache_stats_ids[cache_stats_id_last];
	for (size_t i = 0; id == NULL && i < cache_stats_id_count; i++) {
		if (cache_stats_ids[i].serial == serial && cache_stats_ids[i].mailbox_id == mailbox_id) {
			id = &cache_stats_ids[i];
			cache_stats_id_last = i;
		}
	}
	if (id == NULL) {
		if (cache_stats_id_count == CACHE_STATS_MAX_IDS)
			cache_stats_id_count = 0; /* forget them all: the ones in use are looked up again */
		cache_stats_id_last = cache_stats_id_count++;
		id = &cache_stats_ids[cache_stats_id_last];
		*id = (struct cache_stats_id){ serial, mailbox_id, cache_stats_lookup(cache, mailbox_id) };
	}
	return id->index == CACHE_STATS_NONE ? NULL : &cache_stats_mailboxes[id->index].counts;
}

void cache_stats_count_items(struct cache *cache, int64_t mailbox_id, unsigned int items, bool hit,
			     uint64_t bytes)
{
	struct cache_stats_counts *counts = cache != NULL ? cache_stats_mailbox_counts(cache, mailbox_id) : NULL;

	cache_stats_add(&cache_stats_total, items, hit, bytes);
	if (counts != NULL)
		cache_stats_add(counts, items, hit, bytes);
}

void cache_stats_get(enum cache_item item, uint64_t *hits_r, uint64_t *misses_r)
{
	assert((unsigned int)item < CACHE_STATS_KINDS);
	*hits_r = cache_stats_total.hits[item];
	*misses_r = cache_stats_total.misses[item];
}

uint64_t cache_stats_saved_bytes(void)
{
	return cache_stats_total.saved;
}

void cache_stats_foreach(const char *account, const char *mailbox, cache_stats_mailbox_fn *fn, void *context)
{
	for (size_t i = 0; i < cache_stats_mailbox_count; i++) {
		const struct cache_stats_mailbox *entry = &cache_stats_mailboxes[i];

		if ((account == NULL || strcmp(entry->account, account) == 0) &&
		    (mailbox == NULL || strcmp(entry->mailbox, mailbox) == 0))
			fn(entry->account, entry->mailbox, &entry->counts, context);
	}
}

const char *cache_stats_kind_name(enum cache_item item)
{
	return (unsigned int)item < CACHE_STATS_KINDS ? cache_stats_names[item] : NULL;
}

void cache_stats_reset(void)
{
	for (size_t i = 0; i < cache_stats_mailbox_count; i++) {
		free(cache_stats_mailboxes[i].account);
		free(cache_stats_mailboxes[i].mailbox);
	}
	free(cache_stats_mailboxes);
	cache_stats_mailboxes = NULL;
	cache_stats_mailbox_count = cache_stats_mailbox_capacity = 0;
	cache_stats_id_count = cache_stats_id_last = 0;
	memset(&cache_stats_total, 0, sizeof(cache_stats_total));
}
