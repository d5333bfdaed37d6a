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
		log_info("cache %s: the text of %" PRIu64 " bodies indexed (%.1f MB in %.1f s; "
			 "a write waited for it %" PRIu64 " ms at most)", cache->label, cache->fts_run_bodies,
			 (double)cache->fts_run_bytes / 1e6, (double)(cache_fts_now_ms() - cache->fts_run_started) / 1000.0,
			 cache->fts_longest_wait_ms);
	cache->fts_run_started = 0;
	cache->fts_longest_wait_ms = 0;
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
	if (starting) {
		cache->fts_run_started = cache_fts_now_ms();
		cache->fts_longest_wait_ms = 0;
	}
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

bool cache_fts_busy(const struct cache *cache)
{
	return cache->fts_run_started != 0 || (cache->fts_timer != NULL && evtimer_pending(cache->fts_timer, NULL));
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
							 CACHE_STMT_FTS_MERGE, CACHE_STMT_FTS_STILL_PENDING,
							 CACHE_STMT_FTS_PIECES, CACHE_STMT_FTS_CLEAR };

/* The statements' slots in the order of cache_fts_stmt_kinds. */
static sqlite3_stmt **cache_fts_stmt_slot(struct cache_fts_statements *stmts, size_t i)
{
	sqlite3_stmt **slots[] = { &stmts->pending, &stmts->chunks, &stmts->insert, &stmts->mark, &stmts->merge,
				   &stmts->still_pending, &stmts->pieces, &stmts->clear };

	return slots[i];
}

int cache_fts_statements_prepare(sqlite3 *db, struct cache_fts_statements *stmts)
{
	*stmts = (struct cache_fts_statements){ .owned = true, .cursor = calloc(1, sizeof(*stmts->cursor)) };
	if (stmts->cursor == NULL)
		return SQLITE_NOMEM;
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
	if (stmts->owned && stmts->cursor != NULL) {
		cache_fts_cursor_reset(stmts->cursor);
		free(stmts->cursor);
	}
	*stmts = (struct cache_fts_statements){ 0 };
}

/* The loop's own statements (borrowed from the store's), and its cursor. */
static struct cache_fts_statements cache_fts_loop_statements(struct cache *cache)
{
	struct cache_fts_statements stmts = { .cursor = &cache->fts_cursor };

	for (size_t i = 0; i < sizeof(cache_fts_stmt_kinds) / sizeof(cache_fts_stmt_kinds[0]); i++)
		*cache_fts_stmt_slot(&stmts, i) = cache_stmt(cache, cache_fts_stmt_kinds[i]);
	return stmts;
}

void cache_fts_cursor_reset(struct cache_fts_cursor *cursor)
{
	mime_buffer_free(&cursor->head);
	mime_buffer_free(&cursor->body);
	*cursor = (struct cache_fts_cursor){ 0 };
}

/* The start of the character at or before byte at of UTF-8 text (len
   bytes); len at or past the end. */
static size_t cache_fts_char_start(const unsigned char *text, size_t len, size_t at)
{
	if (at >= len)
		return len;
	while (at > 0 && (text[at] & 0xc0) == 0x80)
		at--;
	return at;
}

/* [*start, *end) of the cursor's body text in piece i: it ends where
   piece i + 1 begins, and begins CACHE_FTS_OVERLAP bytes or more before
   where piece i - 1 ended, so that a key of CACHE_FTS_KEY_MAX bytes lies
   whole in one piece wherever it is. */
static void cache_fts_piece_bounds(const struct cache_fts_cursor *cursor, unsigned int i, size_t *start,
				   size_t *end)
{
	const unsigned char *text = cursor->body.data;
	size_t len = cursor->body.len;
	size_t begins = cache_fts_char_start(text, len, (size_t)i * cursor->step);

	*end = i + 1 >= cursor->pieces ? len : cache_fts_char_start(text, len, (size_t)(i + 1) * cursor->step);
	*start = i == 0 ? 0 : cache_fts_char_start(text, len, begins > CACHE_FTS_OVERLAP ? begins - CACHE_FTS_OVERLAP : 0);
}

unsigned int cache_fts_piece_plan(size_t len, size_t *step_r)
{
	size_t step = CACHE_FTS_PIECE_BYTES;

	if (len / CACHE_FTS_PIECES_MAX >= step)
		step = len / CACHE_FTS_PIECES_MAX + 1; /* then len / step < CACHE_FTS_PIECES_MAX */
	*step_r = step;
	return len == 0 ? 1 : (unsigned int)((len + step - 1) / step);
}

/* Takes the text of the body waiting (mailbox_id, uid, size) into the
   cursor: empty and unsure when the body is damaged, or search-text
   can't vouch for it. Returns SQLITE_OK or the error. */
static int cache_fts_cursor_take(const struct cache_fts_statements *stmts, struct cache_fts_cursor *cursor,
				 int64_t mailbox_id, uint32_t uid, uint64_t size)
{
	struct evbuffer *raw = evbuffer_new();
	int found, rc = SQLITE_OK;

	if (raw == NULL)
		return SQLITE_NOMEM;
	cache_fts_cursor_reset(cursor); /* a text read before (unsure) goes */
	*cursor = (struct cache_fts_cursor){ .active = true, .mailbox_id = mailbox_id, .uid = uid, .size = size };
	found = size > 0 ? cache_body_chunks_read(stmts->chunks, mailbox_id, uid, size, 0, size, raw, &rc) : 1;
	if (found > 0) {
		size_t len = evbuffer_get_length(raw);
		const unsigned char *data = len > 0 ? evbuffer_pullup(raw, -1) : (const unsigned char *)"";

		cursor->sure = data != NULL && search_text_extract(data, len, &cursor->head, &cursor->body) == 0;
	}
	evbuffer_free(raw);
	if (found < 0) {
		cache_fts_cursor_reset(cursor);
		return rc;
	}
	if (!cursor->sure) {
		mime_buffer_reset(&cursor->head);
		mime_buffer_reset(&cursor->body);
	}
	cursor->pieces = cache_fts_piece_plan(cursor->body.len, &cursor->step);
	cursor->next = cursor->pieces > 1 ? 1 : 0;
	return SQLITE_OK;
}

/* cache_fts_cursor_load, inside the caller's write transaction or not
   (under_lock): a text read outside that looks unsure is read again
   inside. */
static int cache_fts_cursor_load_next(const struct cache_fts_statements *stmts, struct cache_fts_cursor *cursor,
				      bool under_lock)
{
	int64_t mailbox_id;
	uint32_t uid;
	uint64_t size;
	int rc = sqlite3_step(stmts->pending);

	if (rc != SQLITE_ROW) {
		sqlite3_reset(stmts->pending);
		return rc == SQLITE_DONE ? 0 : -rc;
	}
	mailbox_id = sqlite3_column_int64(stmts->pending, 0);
	uid = (uint32_t)sqlite3_column_int64(stmts->pending, 1);
	size = (uint64_t)sqlite3_column_int64(stmts->pending, 2);
	sqlite3_reset(stmts->pending);
	rc = cache_fts_cursor_take(stmts, cursor, mailbox_id, uid, size);
	cursor->read_under_lock = under_lock;
	return rc == SQLITE_OK ? 1 : -rc;
}

int cache_fts_cursor_load(const struct cache_fts_statements *stmts, struct cache_fts_cursor *cursor)
{
	return cache_fts_cursor_load_next(stmts, cursor, false);
}

/* The integer the statement's one row holds, for the cursor's body (its
   key bound); -1 on error (*rc_r). */
static int64_t cache_fts_body_query(sqlite3_stmt *stmt, const struct cache_fts_cursor *cursor, int *rc_r)
{
	int64_t value = 0;
	int rc;

	cache_bind_key(stmt, cursor->mailbox_id, cursor->uid);
	rc = sqlite3_step(stmt);
	if (rc == SQLITE_ROW)
		value = sqlite3_column_int64(stmt, 0);
	sqlite3_reset(stmt);
	*rc_r = rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
	return *rc_r == SQLITE_OK ? value : -1;
}

/* Writes piece i of the cursor's body (the head goes with piece 0).
   Returns SQLITE_OK or the error. */
static int cache_fts_write_piece(const struct cache_fts_statements *stmts, const struct cache_fts_cursor *cursor,
				 unsigned int i, size_t *written)
{
	size_t start, end;
	const struct mime_buffer *head = &cursor->head;

	cache_fts_piece_bounds(cursor, i, &start, &end);
	*written += end - start + (i == 0 ? head->len : 0) + CACHE_FTS_PIECE_COST;
	if (cursor->mailbox_id >= CACHE_FTS_MAILBOX_MAX)
		return SQLITE_OK; /* no rowid for it: its mailbox's BODY and TEXT go upstream */
	cache_bind_key(stmts->insert, cursor->mailbox_id, cursor->uid);
	sqlite3_bind_int(stmts->insert, 3, cursor->sure);
	sqlite3_bind_text(stmts->insert, 4, i == 0 && head->len > 0 ? (const char *)head->data : "",
			  i == 0 ? (int)head->len : 0, SQLITE_STATIC);
	sqlite3_bind_text(stmts->insert, 5, end > start ? (const char *)cursor->body.data + start : "", (int)(end - start),
			  SQLITE_STATIC);
	sqlite3_bind_int(stmts->insert, 6, (int)i);
	return cache_step_plain(stmts->insert);
}

/* One step of the cursor's body: its next piece, and after pieces 1 and
   up its piece 0 and the mark on bodies, which alone say it is indexed.
   A body that is no longer waiting (evicted, purged, reset, indexed by
   another connection) is let go, and one whose pieces went meanwhile
   (evicted and stored again) starts over. Returns SQLITE_OK or the
   error; the cursor is let go when its body is done. */
static int cache_fts_cursor_step(const struct cache_fts_statements *stmts, struct cache_fts_cursor *cursor,
				 size_t *written, uint64_t *bodies, uint64_t *bytes)
{
	int rc;
	int64_t waiting = cache_fts_body_query(stmts->still_pending, cursor, &rc);

	if (waiting <= 0) {
		cache_fts_cursor_reset(cursor);
		return rc;
	}
	if (!cursor->sure && !cursor->read_under_lock) {
		/* read outside the lock, a body dropped and stored again meanwhile
		   may have looked damaged: read it again, as it is now */
		rc = cache_fts_cursor_take(stmts, cursor, cursor->mailbox_id, cursor->uid, cursor->size);
		if (rc != SQLITE_OK)
			return rc;
		cursor->read_under_lock = true;
	}
	if (!cursor->started && cursor->mailbox_id < CACHE_FTS_MAILBOX_MAX) {
		/* pieces an earlier try left (a crash, a build that cut them otherwise) */
		cache_bind_key(stmts->clear, cursor->mailbox_id, cursor->uid);
		rc = cache_step_plain(stmts->clear);
		if (rc != SQLITE_OK)
			return rc;
	}
	cursor->started = true;
	if (cursor->next == 0 && cursor->pieces > 1 && cursor->mailbox_id < CACHE_FTS_MAILBOX_MAX) {
		int64_t present = cache_fts_body_query(stmts->pieces, cursor, &rc);

		if (present != (int64_t)cursor->pieces - 1) {
			cache_fts_cursor_reset(cursor);
			return rc;
		}
	}
	rc = cache_fts_write_piece(stmts, cursor, cursor->next, written);
	if (rc != SQLITE_OK || cursor->next != 0) {
		cursor->next = cursor->next + 1 < cursor->pieces ? cursor->next + 1 : 0;
		return rc;
	}
	cache_bind_key(stmts->mark, cursor->mailbox_id, cursor->uid);
	rc = cache_step_plain(stmts->mark);
	if (rc == SQLITE_OK) {
		(*bodies)++;
		*bytes += cursor->size;
	}
	cache_fts_cursor_reset(cursor);
	return rc;
}

int cache_fts_index_some(const struct cache_fts_statements *stmts, size_t max_bytes, cache_fts_stop_fn *stop,
			 void *context, uint64_t *bodies, uint64_t *bytes)
{
	struct cache_fts_cursor *cursor = stmts->cursor;
	size_t written = 0;

	for (bool first = true;; first = false) {
		int rc;

		if (!first && (written >= max_bytes || (stop != NULL && stop(context))))
			return 1;
		if (!cursor->active) {
			int loaded = cache_fts_cursor_load_next(stmts, cursor, true);

			if (loaded <= 0)
				return loaded;
		}
		rc = cache_fts_cursor_step(stmts, cursor, &written, bodies, bytes);
		if (rc != SQLITE_OK) {
			cache_fts_cursor_reset(cursor);
			return -rc;
		}
	}
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
	if (cache_batch_end(cache) < 0) {
		cache_fts_cursor_reset(&cache->fts_cursor); /* its pieces went with the batch */
		return -1;
	}
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

	if (mailbox_id <= 0 || mailbox_id >= CACHE_FTS_MAILBOX_MAX)
		return 0; /* no rowids of its own: none indexed (SQLite's << would wrap onto another's) */
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

	if (mailbox_id <= 0 || mailbox_id >= CACHE_FTS_MAILBOX_MAX) {
		free(query);
		return 0;
	}
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
