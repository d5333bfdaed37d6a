/* SPDX-License-Identifier: MIT */
/* cache-fts: the decoded text of cached bodies, indexed with FTS5 trigrams for BODY and TEXT. */
#include "config.h"
#include "cache-fts.h"

#include "cache-private.h"
#include "cache-worker.h"
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

/* Logs the end of a run of batches and starts the next count. */
static void cache_fts_run_ended(struct cache *cache)
{
	if (cache->fts_run_bodies > 0)
		log_info("cache %s: the text of %" PRIu64 " bodies indexed (%.1f MB in %.1f s)", cache->label,
			 cache->fts_run_bodies, (double)cache->fts_run_bytes / 1e6,
			 (double)(cache_fts_now_ms() - cache->fts_run_started) / 1000.0);
	cache->fts_run_started = 0;
	cache->fts_run_bodies = 0;
	cache->fts_run_bytes = 0;
}

/* A batch's turn on the loop (no worker): the next one is scheduled
   while some remain. */
static void cache_fts_loop_turn(struct cache *cache)
{
	int more = cache_fts_index_batch(cache, CACHE_FTS_BATCH_BYTES);

	if (more == 0 && cache->fts_merge_due)
		more = cache_fts_merge_step(cache);
	if (more != 0) {
		/* more to do, or a write that could not run now (a session's
		   transaction open, the disk full for a while): try again */
		cache_fts_schedule_in(cache, more > 0 ? CACHE_FTS_DELAY_MS : CACHE_FTS_RETRY_MS);
		return;
	}
	cache_fts_run_ended(cache);
}

/* With a worker: hands it the index (and the merge after deletes), then
   looks at it every CACHE_FTS_WATCH_MS until it found no body left to
   index after the last body arrived, to log that, and to give back the
   pages its merge freed. */
static void cache_fts_worker_turn(struct cache *cache, bool starting)
{
	struct cache_worker_counts counts = cache_worker_counts(cache->worker);

	if (starting) { /* the run's counts start from here */
		cache->fts_worker_bodies = counts.indexed_bodies;
		cache->fts_worker_bytes = counts.indexed_bytes;
	}
	cache->fts_run_bodies = counts.indexed_bodies - cache->fts_worker_bodies;
	cache->fts_run_bytes = counts.indexed_bytes - cache->fts_worker_bytes;
	if (counts.merge_steps != cache->fts_worker_merges) {
		cache->fts_worker_merges = counts.merge_steps;
		cache->vacuum_due = true;
		cache_vacuum_maybe(cache);
	}
	if (cache->fts_merge_due && cache_write_allowed(cache)) { /* rows went meanwhile: merge them too */
		cache->fts_merge_due = false;
		cache_worker_want(cache->worker, CACHE_WORKER_MERGE);
		counts.jobs |= CACHE_WORKER_MERGE;
	}
	if (counts.jobs == 0 && counts.last_error != SQLITE_OK && !cache->fts_worker_failed) {
		cache->fts_worker_failed = true;
		cache_fail_because(cache, counts.last_error, "indexing bodies' text (the store's worker)",
				   counts.last_error_text);
	}
	if (counts.jobs == 0 && counts.last_error == SQLITE_OK && counts.index_runs_done != cache->fts_handed_runs &&
	    cache->fts_arrivals == cache->fts_handed_arrivals) {
		cache_fts_run_ended(cache);
		return;
	}
	if (!(counts.jobs & CACHE_WORKER_INDEX)) {
		if (!cache_write_allowed(cache)) {
			cache_fts_schedule_in(cache, CACHE_FTS_RETRY_MS); /* the disk full for a while */
			return;
		}
		cache->fts_handed_runs = counts.index_runs_done;
		cache->fts_handed_arrivals = cache->fts_arrivals;
		cache->fts_worker_failed = false;
		cache_worker_want(cache->worker, CACHE_WORKER_INDEX);
	}
	cache_fts_schedule_in(cache, CACHE_FTS_WATCH_MS);
}

static void cache_fts_timer_fired(evutil_socket_t fd, short what, void *context)
{
	struct cache *cache = context;
	bool starting = cache->fts_run_started == 0;

	(void)fd;
	(void)what;
	if (starting)
		cache->fts_run_started = cache_fts_now_ms();
	if (cache->worker != NULL)
		cache_fts_worker_turn(cache, starting);
	else
		cache_fts_loop_turn(cache);
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
	cache->fts_arrivals++;
	if (cache->worker != NULL) /* the fill first: the worker's batch ends after its body */
		cache_worker_unwant(cache->worker, CACHE_WORKER_INDEX);
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

/* ---- indexing, on the loop's connection or a worker's ---- */

static const enum cache_stmt cache_fts_stmt_kinds[] = { CACHE_STMT_FTS_PENDING, CACHE_STMT_CHUNK_READ,
							 CACHE_STMT_FTS_INSERT, CACHE_STMT_FTS_MARK,
							 CACHE_STMT_FTS_MERGE };

/* The statements' slots in the order of cache_fts_stmt_kinds. */
static sqlite3_stmt **cache_fts_stmt_slot(struct cache_fts_statements *stmts, size_t i)
{
	sqlite3_stmt **slots[] = { &stmts->pending, &stmts->chunks, &stmts->insert, &stmts->mark, &stmts->merge };

	return slots[i];
}

int cache_fts_statements_prepare(sqlite3 *db, struct cache_fts_statements *stmts)
{
	*stmts = (struct cache_fts_statements){ .owned = true };
	for (size_t i = 0; i < sizeof(cache_fts_stmt_kinds) / sizeof(cache_fts_stmt_kinds[0]); i++) {
		int rc = sqlite3_prepare_v3(db, cache_stmt_text(cache_fts_stmt_kinds[i]), -1, SQLITE_PREPARE_PERSISTENT,
					    cache_fts_stmt_slot(stmts, i), NULL);

		if (rc != SQLITE_OK)
			return rc;
	}
	return SQLITE_OK;
}

void cache_fts_statements_free(struct cache_fts_statements *stmts)
{
	for (size_t i = 0; stmts->owned && i < sizeof(cache_fts_stmt_kinds) / sizeof(cache_fts_stmt_kinds[0]); i++)
		sqlite3_finalize(*cache_fts_stmt_slot(stmts, i));
	*stmts = (struct cache_fts_statements){ 0 };
}

/* The loop's own statements (borrowed from the store's). */
static struct cache_fts_statements cache_fts_loop_statements(struct cache *cache)
{
	struct cache_fts_statements stmts = { 0 };

	for (size_t i = 0; i < sizeof(cache_fts_stmt_kinds) / sizeof(cache_fts_stmt_kinds[0]); i++)
		*cache_fts_stmt_slot(&stmts, i) = cache_stmt(cache, cache_fts_stmt_kinds[i]);
	return stmts;
}

/* Indexes one body: its text row (empty and unsure when the body is
   damaged, or search-text can't vouch for it), and the mark on bodies.
   Returns SQLITE_OK or the error. */
static int cache_fts_index_one(const struct cache_fts_statements *stmts, int64_t mailbox_id, uint32_t uid,
			       uint64_t size)
{
	struct evbuffer *raw = evbuffer_new();
	struct mime_buffer head = { 0 }, body = { 0 };
	int found, sure = 0, rc = SQLITE_NOMEM;

	if (raw == NULL)
		return SQLITE_NOMEM;
	found = size > 0 ? cache_body_chunks_read(stmts->chunks, mailbox_id, uid, size, 0, size, raw, &rc) : 1;
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
	cache_bind_key(stmts->insert, mailbox_id, uid);
	sqlite3_bind_int(stmts->insert, 3, sure);
	sqlite3_bind_text(stmts->insert, 4, head.len > 0 ? (const char *)head.data : "", (int)head.len, SQLITE_STATIC);
	sqlite3_bind_text(stmts->insert, 5, body.len > 0 ? (const char *)body.data : "", (int)body.len, SQLITE_STATIC);
	rc = cache_step_plain(stmts->insert);
	if (rc == SQLITE_OK) {
		cache_bind_key(stmts->mark, mailbox_id, uid);
		rc = cache_step_plain(stmts->mark);
	}
out:
	evbuffer_free(raw);
	mime_buffer_free(&head);
	mime_buffer_free(&body);
	return rc;
}

/* A body waiting for its index. */
struct cache_fts_pending {
	int64_t mailbox_id;
	uint32_t uid;
	uint64_t size;
};

/* Reads up to CACHE_FTS_BATCH_ROWS bodies waiting into pending. Returns
   how many, or a negative SQLite code. */
static int cache_fts_read_pending(const struct cache_fts_statements *stmts, struct cache_fts_pending *pending)
{
	int count = 0, rc;

	sqlite3_bind_int(stmts->pending, 1, CACHE_FTS_BATCH_ROWS);
	while ((rc = sqlite3_step(stmts->pending)) == SQLITE_ROW) {
		pending[count].mailbox_id = sqlite3_column_int64(stmts->pending, 0);
		pending[count].uid = (uint32_t)sqlite3_column_int64(stmts->pending, 1);
		pending[count].size = (uint64_t)sqlite3_column_int64(stmts->pending, 2);
		count++;
	}
	sqlite3_reset(stmts->pending);
	return rc == SQLITE_DONE ? count : -rc;
}

int cache_fts_index_some(const struct cache_fts_statements *stmts, size_t max_bytes, cache_fts_stop_fn *stop,
			 void *context, uint64_t *bodies, uint64_t *bytes)
{
	struct cache_fts_pending pending[CACHE_FTS_BATCH_ROWS];
	uint64_t done_bytes = 0;
	int count = cache_fts_read_pending(stmts, pending), done = 0;

	if (count <= 0)
		return count;
	for (; done < count && (done == 0 || (done_bytes < max_bytes && (stop == NULL || !stop(context)))); done++) {
		int rc = cache_fts_index_one(stmts, pending[done].mailbox_id, pending[done].uid, pending[done].size);

		if (rc != SQLITE_OK)
			return -rc;
		done_bytes += pending[done].size;
	}
	*bodies += (uint64_t)done;
	*bytes += done_bytes;
	return done < count || count == CACHE_FTS_BATCH_ROWS ? 1 : 0;
}

int cache_fts_merge_some(const struct cache_fts_statements *stmts, int pages)
{
	sqlite3 *db = sqlite3_db_handle(stmts->merge);
	int changes = sqlite3_total_changes(db), rc;

	sqlite3_bind_int(stmts->merge, 1, pages);
	rc = cache_step_plain(stmts->merge);
	if (rc != SQLITE_OK)
		return -rc;
	return sqlite3_total_changes(db) - changes < 2 ? 0 : 1; /* FTS5's sign that nothing was left to merge */
}

int cache_fts_index_batch(struct cache *cache, size_t max_bytes)
{
	struct cache_fts_statements stmts = cache_fts_loop_statements(cache);
	uint64_t bodies = 0, bytes = 0;
	int result;

	cache_pending_flush(cache);
	cache_batch_begin(cache);
	if (!cache_write_allowed(cache)) { /* inside the batch: it begins the one transaction */
		cache_batch_rollback(cache);
		return -1;
	}
	result = cache_fts_index_some(&stmts, max_bytes, NULL, NULL, &bodies, &bytes);
	if (result < 0) {
		cache_fail(cache, -result, "indexing a body's text");
		cache_batch_rollback(cache);
		return -1;
	}
	if (cache_batch_end(cache) < 0)
		return -1;
	cache->fts_run_bodies += bodies;
	cache->fts_run_bytes += bytes;
	return result;
}

int cache_fts_merge_step(struct cache *cache)
{
	struct cache_fts_statements stmts = cache_fts_loop_statements(cache);
	int result;

	if (!sqlite3_get_autocommit(cache->db))
		return 1; /* a session's transaction is open: later, on its own */
	if (!cache_write_allowed(cache))
		return -1;
	result = cache_fts_merge_some(&stmts, CACHE_FTS_MERGE_PAGES);
	if (result < 0) {
		cache_fail(cache, -result, "merging the text index");
		return -1;
	}
	cache->vacuum_due = true;
	cache_vacuum_maybe(cache);
	if (result == 0)
		cache->fts_merge_due = false;
	return result;
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
