/* SPDX-License-Identifier: MIT */
/* cache-pause: the fills' short pause while the store's WAL starts afresh (cache-worker.h's RESTART checkpoint). */
#include "config.h"
#include "cache.h"

#include "cache-private.h"
#include "cache-worker.h"
#include "log.h"

#include <event2/event.h>
#include <inttypes.h>
#include <stdlib.h>

bool cache_batch_writing(const struct cache *cache)
{
	return cache->batch_in_transaction;
}

bool cache_wants_pause(struct cache *cache)
{
	return cache->worker != NULL && cache_worker_wants_gap(cache->worker);
}

/* Tells every waiter that the pause is over (its time is up, or the
   worker is done). A resume may register again. */
static void cache_pause_end(struct cache *cache)
{
	struct cache_pause_waiter *waiters = cache->pause_waiters;
	size_t count = cache->pause_waiter_count;

	cache->pause_waiters = NULL;
	cache->pause_waiter_count = cache->pause_waiter_capacity = 0;
	for (size_t i = 0; i < count; i++)
		waiters[i].resume(waiters[i].context);
	free(waiters);
}

static void cache_pause_look(evutil_socket_t fd, short what, void *context)
{
	struct cache *cache = context;
	struct timeval again = { 0, CACHE_PAUSE_POLL_US };

	uint64_t paused_ms = cache_monotonic_ms() - cache->pause_began_ms;
	bool wanted = cache_wants_pause(cache);

	(void)fd;
	(void)what;
	if (wanted && paused_ms < CACHE_PAUSE_MAX_MS) {
		/* the fills have paused: what the loop holds commits, and the
		   RESTART may begin with no transaction of the loop's to wait for */
		cache_batch_commit_held(cache);
		if (cache->batch_depth == 0 && !cache->batch_held)
			cache_worker_restart_go(cache->worker);
		evtimer_add(cache->pause_timer, &again);
		return;
	}
	if (wanted) {
		cache_worker_restart_give_up(cache->worker);
		log_info("cache %s: the WAL did not start afresh within %u ms: fills go on", cache->label,
			 CACHE_PAUSE_MAX_MS);
	} else
		log_debug("cache %s: fills paused %" PRIu64 " ms while the WAL started afresh", cache->label, paused_ms);
	cache_pause_end(cache);
}

int cache_pause_wait(struct cache *cache, void (*resume)(void *context), void *context)
{
	struct timeval first = { 0, CACHE_PAUSE_POLL_US };

	if (cache->settings.base == NULL)
		return -1;
	if (cache->pause_timer == NULL &&
	    (cache->pause_timer = evtimer_new(cache->settings.base, cache_pause_look, cache)) == NULL)
		return -1;
	if (cache->pause_waiter_count == cache->pause_waiter_capacity) {
		size_t capacity = cache->pause_waiter_capacity ? cache->pause_waiter_capacity * 2 : 4;
		struct cache_pause_waiter *grown = realloc(cache->pause_waiters, capacity * sizeof(*grown));

		if (grown == NULL)
			return -1;
		cache->pause_waiters = grown;
		cache->pause_waiter_capacity = capacity;
	}
	cache->pause_waiters[cache->pause_waiter_count++] = (struct cache_pause_waiter){ resume, context };
	if (!evtimer_pending(cache->pause_timer, NULL)) {
		cache->pause_began_ms = cache_monotonic_ms();
		evtimer_add(cache->pause_timer, &first);
	}
	return 0;
}

void cache_pause_forget(struct cache *cache, void *context)
{
	size_t kept = 0;

	for (size_t i = 0; i < cache->pause_waiter_count; i++) {
		if (cache->pause_waiters[i].context != context)
			cache->pause_waiters[kept++] = cache->pause_waiters[i];
	}
	cache->pause_waiter_count = kept;
}
