/* SPDX-License-Identifier: MIT */
/* cache-fts: the decoded text of cached bodies, indexed with FTS5 trigrams for BODY and TEXT. */
#include "config.h"
#include "cache-fts.h"

#include "cache-private.h"
#include "log.h"
#include "mime-buffer.h"
#include "search-text.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void cache_fts_schedule_in(struct cache *cache, unsigned int ms);

/* Milliseconds on a monotonic clock. */
static uint64_t cache_fts_now_ms(void)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (uint64_t)now.tv_sec * 1000 + (uint64_t)now.tv_nsec / 1000000;
}

/* A batch's turn: the next one is scheduled while some remain; the end
   of a run of batches is logged. */
static void cache_fts_timer_fired(evutil_socket_t fd, short what, void *context)
{
	struct cache *cache = context;
	int more;

	(void)fd;
	(void)what;
	if (cache->fts_run_started == 0)
		cache->fts_run_started = cache_fts_now_ms();
	more = cache_fts_index_batch(cache, CACHE_FTS_BATCH_BYTES);
	if (more == 0 && cache->fts_merge_due)
		more = cache_fts_merge_step(cache);
	if (more != 0) {
		/* more to do, or a write that could not run now (a session's
		   transaction open, the disk full for a while): try again */
		cache_fts_schedule_in(cache, more > 0 ? CACHE_FTS_DELAY_MS : CACHE_FTS_RETRY_MS);
		return;
	}
	if (cache->fts_run_bodies > 0)
		log_info("cache %s: the text of %" PRIu64 " bodies indexed (%.1f MB in %.1f s)", cache->label,
			 cache->fts_run_bodies, (double)cache->fts_run_bytes / 1e6,
			 (double)(cache_fts_now_ms() - cache->fts_run_started) / 1000.0);
	cache->fts_run_started = 0;
	cache->fts_run_bodies = 0;
	cache->fts_run_bytes = 0;
}

/* Arms the timer ms from now, unless it is armed already. */
static void cache_fts_schedule_in(struct cache *cache, unsigned int ms)
{
	struct timeval delay = { ms / 1000, (ms % 1000) * 1000 };

	if (cache->settings.base == NULL || cache->writes_off_for_good)
		return;
	if (cache->fts_timer == NULL)
		cache->fts_timer = evtimer_new(cache->settings.base, cache_fts_timer_fired, cache);
	if (cache->fts_timer != NULL && !evtimer_pending(cache->fts_timer, NULL))
		evtimer_add(cache->fts_timer, &delay);
}

void cache_fts_schedule(struct cache *cache)
{
	cache_fts_schedule_in(cache, CACHE_FTS_DELAY_MS);
}

void cache_fts_body_arrived(struct cache *cache)
{
	if (cache->fts_timer != NULL)
		evtimer_del(cache->fts_timer);
	cache_fts_schedule_in(cache, CACHE_FTS_QUIET_MS);
}

void cache_fts_stop(struct cache *cache)
{
	if (cache->fts_timer != NULL)
		event_free(cache->fts_timer);
	cache->fts_timer = NULL;
}

/* Indexes one body: its text row, and the mark on bodies. */
static int cache_fts_index_one(struct cache *cache, int64_t mailbox_id, uint32_t uid, uint64_t size)
{
	struct evbuffer *raw = evbuffer_new();
	struct mime_buffer head = { 0 }, body = { 0 };
	sqlite3_stmt *stmt;
	int found, sure = 0, result = -1;

	if (raw == NULL)
		return -1;
	found = cache_body_read_whole(cache, mailbox_id, uid, size, raw);
	if (found < 0)
		goto out;
	if (found > 0) {
		size_t len = evbuffer_get_length(raw);
		const unsigned char *data = len > 0 ? evbuffer_pullup(raw, -1) : (const unsigned char *)"";

		sure = data != NULL && search_text_extract(data, len, &head, &body) == 0;
	}
	if (!sure) {
		mime_buffer_reset(&head);
		mime_buffer_reset(&body);
	}
	stmt = cache_stmt(cache, CACHE_STMT_FTS_INSERT);
	cache_bind_key(stmt, mailbox_id, uid);
	sqlite3_bind_int(stmt, 3, sure);
	sqlite3_bind_text(stmt, 4, head.len > 0 ? (const char *)head.data : "", (int)head.len, SQLITE_STATIC);
	sqlite3_bind_text(stmt, 5, body.len > 0 ? (const char *)body.data : "", (int)body.len, SQLITE_STATIC);
	if (cache_run(cache, stmt, "indexing a body's text") < 0)
		goto out;
	stmt = cache_stmt(cache, CACHE_STMT_FTS_MARK);
	cache_bind_key(stmt, mailbox_id, uid);
	result = cache_run(cache, stmt, "marking a body indexed");
out:
	evbuffer_free(raw);
	mime_buffer_free(&head);
	mime_buffer_free(&body);
	return result;
}

/* A body waiting for its index. */
struct cache_fts_pending {
	int64_t mailbox_id;
	uint32_t uid;
	uint64_t size;
};

/* Reads up to CACHE_FTS_BATCH_ROWS bodies waiting. Returns how many, or -1. */
static int cache_fts_read_pending(struct cache *cache, struct cache_fts_pending *pending)
{
	sqlite3_stmt *stmt = cache_stmt(cache, CACHE_STMT_FTS_PENDING);
	int count = 0, rc;

	sqlite3_bind_int(stmt, 1, CACHE_FTS_BATCH_ROWS);
	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		pending[count].mailbox_id = sqlite3_column_int64(stmt, 0);
		pending[count].uid = (uint32_t)sqlite3_column_int64(stmt, 1);
		pending[count].size = (uint64_t)sqlite3_column_int64(stmt, 2);
		count++;
	}
	sqlite3_reset(stmt);
	if (rc != SQLITE_DONE) {
		cache_fail(cache, rc, "finding bodies to index");
		return -1;
	}
	return count;
}

int cache_fts_index_batch(struct cache *cache, size_t max_bytes)
{
	struct cache_fts_pending pending[CACHE_FTS_BATCH_ROWS];
	uint64_t bytes = 0;
	int count, done = 0, result;

	cache_pending_flush(cache);
	count = cache_fts_read_pending(cache, pending);
	if (count <= 0)
		return count;
	cache_batch_begin(cache);
	if (!cache_write_allowed(cache)) { /* inside the batch: it begins the one transaction */
		cache_batch_rollback(cache);
		return -1;
	}
	for (; done < count && (done == 0 || bytes < max_bytes); done++) {
		if (cache_fts_index_one(cache, pending[done].mailbox_id, pending[done].uid, pending[done].size) < 0) {
			cache_batch_rollback(cache);
			return -1;
		}
		bytes += pending[done].size;
	}
	result = cache_batch_end(cache);
	if (result < 0)
		return -1;
	cache->fts_run_bodies += (uint64_t)done;
	cache->fts_run_bytes += bytes;
	return done < count || count == CACHE_FTS_BATCH_ROWS ? 1 : 0;
}

int cache_fts_merge_step(struct cache *cache)
{
	sqlite3_stmt *stmt = cache_stmt(cache, CACHE_STMT_FTS_MERGE);
	int changes;

	if (!sqlite3_get_autocommit(cache->db))
		return 1; /* a session's transaction is open: later, on its own */
	if (!cache_write_allowed(cache))
		return -1;
	changes = sqlite3_total_changes(cache->db);
	sqlite3_bind_int(stmt, 1, CACHE_FTS_MERGE_PAGES);
	if (cache_run(cache, stmt, "merging the text index") < 0)
		return -1;
	cache->vacuum_due = true;
	cache_vacuum_maybe(cache);
	if (sqlite3_total_changes(cache->db) - changes < 2) { /* FTS5's sign that nothing was left to merge */
		cache->fts_merge_due = false;
		return 0;
	}
	return 1;
}

long cache_fts_each_state(struct cache *cache, int64_t mailbox_id, cache_fts_state_fn *fn, void *context)
{
	sqlite3_stmt *stmt = cache_stmt(cache, CACHE_STMT_FTS_STATES);
	long count = 0;
	int rc;

	cache_pending_flush(cache);
	sqlite3_bind_int64(stmt, 1, mailbox_id);
	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		fn((uint32_t)sqlite3_column_int64(stmt, 0), sqlite3_column_int(stmt, 1) == 1, context);
		count++;
	}
	sqlite3_reset(stmt);
	if (rc != SQLITE_DONE) {
		cache_fail(cache, rc, "reading which bodies are indexed");
		return -1;
	}
	return count;
}

/* The FTS5 query of needle: a phrase (its '"' doubled), in body only. */
static char *cache_fts_query(const unsigned char *needle, size_t len, bool body_only)
{
	struct mime_buffer query = { 0 };

	if (body_only)
		mime_buffer_append_str(&query, "body : ");
	mime_buffer_append_byte(&query, '"');
	for (size_t i = 0; i < len; i++) {
		if (needle[i] == '"')
			mime_buffer_append_byte(&query, '"');
		mime_buffer_append_byte(&query, needle[i]);
	}
	mime_buffer_append_byte(&query, '"');
	mime_buffer_append_byte(&query, '\0');
	return mime_buffer_steal(&query, NULL);
}

/* Characters (not bytes) of UTF-8 text. */
static size_t cache_fts_characters(const unsigned char *text, size_t len)
{
	size_t count = 0;

	for (size_t i = 0; i < len; i++)
		count += (text[i] & 0xc0) != 0x80;
	return count;
}

long cache_fts_find(struct cache *cache, int64_t mailbox_id, const unsigned char *needle, size_t len, bool body_only,
		    cache_fts_match_fn *fn, void *context)
{
	bool indexed = cache_fts_characters(needle, len) >= CACHE_FTS_TRIGRAM;
	sqlite3_stmt *stmt = cache_stmt(cache, indexed ? CACHE_STMT_FTS_MATCH : CACHE_STMT_FTS_SCAN);
	char *query = indexed ? cache_fts_query(needle, len, body_only) : NULL;
	long count = 0;
	int rc;

	if (indexed && query == NULL)
		return -1;
	cache_pending_flush(cache);
	sqlite3_bind_int64(stmt, 1, mailbox_id);
	if (indexed)
		sqlite3_bind_text(stmt, 2, query, -1, SQLITE_STATIC);
	sqlite3_bind_text(stmt, 3, (const char *)needle, (int)len, SQLITE_STATIC);
	sqlite3_bind_int(stmt, 4, !body_only);
	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		fn((uint32_t)sqlite3_column_int64(stmt, 0), context);
		count++;
	}
	sqlite3_reset(stmt);
	sqlite3_clear_bindings(stmt);
	free(query);
	if (rc != SQLITE_DONE) {
		cache_fail(cache, rc, "searching bodies' text");
		return -1;
	}
	return count;
}
