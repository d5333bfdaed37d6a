/* SPDX-License-Identifier: MIT */
/* cache-pin: the rows a streaming answer has still to read stay until it is done; drops of them wait. */
#include "config.h"
#include "cache-private.h"
#include "log.h"

#include <stdlib.h>
#include <string.h>

/* The messages of one answer, in cache->pins. */
struct cache_pin {
	struct cache_pin *next;
	int64_t mailbox_id;
	bool bodies;                   /* the answer reads their bodies: eviction passes them by */
	size_t count;
	uint32_t uids[];               /* ascending */
};

static bool cache_pin_sorted(const uint32_t *uids, size_t count)
{
	for (size_t i = 1; i < count; i++) {
		if (uids[i - 1] > uids[i])
			return false;
	}
	return true;
}

struct cache_pin *cache_pin_messages(struct cache *cache, int64_t mailbox_id, const uint32_t *uids, size_t count,
				     bool bodies)
{
	struct cache_pin *pin = malloc(sizeof(*pin) + count * sizeof(pin->uids[0]));

	if (pin == NULL) {
		log_error("cache %s: out of memory keeping an answer's messages", cache->label);
		return NULL;
	}
	pin->mailbox_id = mailbox_id;
	pin->bodies = bodies;
	pin->count = count;
	if (count > 0)
		memcpy(pin->uids, uids, count * sizeof(pin->uids[0]));
	if (!cache_pin_sorted(pin->uids, count)) /* an answer is in sequence order: UIDs ascend */
		qsort(pin->uids, count, sizeof(pin->uids[0]), cache_uid_compare);
	pin->next = cache->pins;
	cache->pins = pin;
	return pin;
}

static bool cache_pin_holds(const struct cache_pin *pin, uint32_t uid)
{
	return bsearch(&uid, pin->uids, pin->count, sizeof(pin->uids[0]), cache_uid_compare) != NULL;
}

/* Whether a pin (of one that reads bodies, when bodies) holds mailbox_id's uid (0: any). */
static bool cache_pinned_by(const struct cache *cache, int64_t mailbox_id, uint32_t uid, bool bodies)
{
	for (const struct cache_pin *pin = cache->pins; pin != NULL; pin = pin->next) {
		if (pin->mailbox_id == mailbox_id && (!bodies || pin->bodies) && (uid == 0 || cache_pin_holds(pin, uid)))
			return true;
	}
	return false;
}

bool cache_pinned(const struct cache *cache, int64_t mailbox_id, uint32_t uid)
{
	return cache_pinned_by(cache, mailbox_id, uid, false);
}

bool cache_body_pinned(const struct cache *cache, int64_t mailbox_id, uint32_t uid)
{
	return cache_pinned_by(cache, mailbox_id, uid, true);
}

void cache_drops_forget(struct cache *cache, size_t held)
{
	if (held < cache->deferred_count)
		cache->deferred_count = held;
}

int cache_drop_defer(struct cache *cache, int64_t mailbox_id, uint32_t uid)
{
	if (cache->deferred_count == cache->deferred_alloc) {
		size_t alloc = cache->deferred_alloc > 0 ? 2 * cache->deferred_alloc : 16;
		struct cache_deferred *grown = realloc(cache->deferred, alloc * sizeof(*grown));

		if (grown == NULL) {
			log_error("cache %s: out of memory holding back a drop", cache->label);
			return -1;
		}
		cache->deferred = grown;
		cache->deferred_alloc = alloc;
	}
	cache->deferred[cache->deferred_count++] = (struct cache_deferred){ mailbox_id, uid };
	return 0;
}

/* Whether a held drop is no longer pinned. */
static bool cache_drops_due(const struct cache *cache)
{
	for (size_t i = 0; i < cache->deferred_count; i++) {
		if (!cache_pinned(cache, cache->deferred[i].mailbox_id, cache->deferred[i].uid))
			return true;
	}
	return false;
}

/* Carries out the held drops no pin keeps any more, in one savepoint;
   those still pinned stay held, and all stay while writes are off for
   a while (the next release tries again). A drop that fails is given up
   with a log line, as is every one when writes are off for good: what
   stays is a row no view lists (a body among them is evicted in its
   turn) or a dropped mailbox's, which the next open drops. */
static void cache_drops_run(struct cache *cache)
{
	size_t kept = 0;
	size_t done = 0;
	int result;

	if (!cache_drops_due(cache))
		return;
	cache_pending_flush(cache);
	if (cache->writes_off_for_good) {
		log_info("cache %s: %zu held drops given up: the store can't be written", cache->label,
			 cache->deferred_count);
		cache->deferred_count = 0;
		return;
	}
	if (!cache_write_allowed(cache) || cache_op_begin(cache) < 0)
		return;
	result = 0;
	for (size_t i = 0; i < cache->deferred_count; i++) {
		struct cache_deferred drop = cache->deferred[i];

		if (cache_pinned(cache, drop.mailbox_id, drop.uid)) {
			cache->deferred[kept++] = drop;
			continue;
		}
		if (result == 0)
			result = drop.uid == 0 ? cache_mailbox_drop_now(cache, drop.mailbox_id)
					       : cache_message_drop_now(cache, drop.mailbox_id, drop.uid);
		done++;
	}
	cache->deferred_count = kept;
	if (cache_op_end(cache, result) < 0) {
		cache_body_bytes_reload(cache);
		log_info("cache %s: %zu held drops given up: the store failed", cache->label, done);
	}
}

void cache_pin_release(struct cache *cache, struct cache_pin **pin_p)
{
	struct cache_pin *pin = *pin_p;

	if (pin == NULL)
		return;
	*pin_p = NULL;
	for (struct cache_pin **link = &cache->pins; *link != NULL; link = &(*link)->next) {
		if (*link == pin) {
			*link = pin->next;
			break;
		}
	}
	free(pin);
	if (cache->deferred_count > 0)
		cache_drops_run(cache);
}

void cache_pins_free(struct cache *cache)
{
	while (cache->pins != NULL) {
		struct cache_pin *pin = cache->pins;

		cache->pins = pin->next;
		free(pin);
	}
	free(cache->deferred);
	cache->deferred = NULL;
	cache->deferred_count = cache->deferred_alloc = 0;
}
