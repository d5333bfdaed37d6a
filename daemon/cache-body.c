/* SPDX-License-Identifier: MIT */
/* cache-body: whole messages in the store, written piece by piece as they arrive, read by range, kept within the budget. */
#include "config.h"
#include "cache-private.h"
#include "cache-fts.h"
#include "cache-checksum.h"
#include "log.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <inttypes.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const struct timeval cache_touch_delay = { 0, CACHE_PENDING_DELAY_MS * 1000 };

/* A body being stored: in cache->writers, holding a reference to cache. */
struct cache_body_writer {
	struct cache_body_writer *next; /* in cache->writers */
	struct cache *cache;
	int64_t mailbox_id;
	uint32_t uid;
	uint64_t size;                 /* announced */
	uint64_t received;             /* bytes given to cache_body_write */
	int64_t next_chunk;
	bool failed;
	size_t pending_size;
	unsigned char pending[];       /* min(size, CACHE_BODY_CHUNK_SIZE) bytes */
};

/* ---- accounting ---- */

void cache_body_bytes_reload(struct cache *cache)
{
	int64_t total = 0;

	if (cache_run_integer(cache, cache_stmt(cache, CACHE_STMT_BODY_TOTAL), "adding up bodies", &total) >= 0)
		cache->body_bytes = total > 0 ? (uint64_t)total : 0;
}

void cache_body_bytes_sub(struct cache *cache, int64_t size)
{
	cache->vacuum_due = true;
	cache->fts_merge_due = true; /* its text row, if any, went with it */
	cache_fts_schedule(cache);
	if (size > 0)
		cache->body_bytes -= (uint64_t)size <= cache->body_bytes ? (uint64_t)size : cache->body_bytes;
}

uint64_t cache_body_bytes(const struct cache *cache)
{
	return cache->body_bytes;
}

int cache_body_delete(struct cache *cache, int64_t mailbox_id, uint32_t uid)
{
	sqlite3_stmt *stmt = cache_stmt(cache, CACHE_STMT_BODY_DELETE);
	int64_t size = 0;
	int found;

	cache_bind_key(stmt, mailbox_id, uid);
	found = cache_run_integer(cache, stmt, "dropping a body", &size);
	if (found > 0)
		cache_body_bytes_sub(cache, size);
	return found < 0 ? -1 : 0;
}

/* ---- writing ---- */

static struct cache_body_writer *cache_body_writer_find(struct cache *cache, int64_t mailbox_id, uint32_t uid)
{
	for (struct cache_body_writer *writer = cache->writers; writer != NULL; writer = writer->next) {
		if (writer->mailbox_id == mailbox_id && writer->uid == uid)
			return writer;
	}
	return NULL;
}

/* Why a body of size can't be stored now, or -1 when it can. */
static int cache_body_refusal(struct cache *cache, int64_t mailbox_id, uint32_t uid, uint64_t size)
{
	if (!cache_message_key_valid(cache, uid))
		return CACHE_BODY_REFUSED_ERROR;
	if (size > cache->settings.body_max_size)
		return CACHE_BODY_REFUSED_TOO_BIG;
	if (!cache_write_allowed(cache))
		return CACHE_BODY_REFUSED_WRITES_OFF;
	if (cache_body_writer_find(cache, mailbox_id, uid) != NULL)
		return CACHE_BODY_REFUSED_PRESENT;
	if (cache->settings.body_budget == 0 || size > cache->settings.body_budget)
		return CACHE_BODY_REFUSED_BUDGET;
	return -1;
}

/* ---- eviction ---- */

#define CACHE_EVICT_STEP 32 /* bodies dropped per look at the least recently used */

/* Records a read of uid's body, for cache_body_in_use. */
static void cache_body_note_read(struct cache *cache, int64_t mailbox_id, uint32_t uid)
{
	cache->recent_reads[cache->recent_reads_next] = (struct cache_body_use){ mailbox_id, uid, cache_wall_now(cache) };
	cache->recent_reads_next = (cache->recent_reads_next + 1) % CACHE_RECENT_READS;
}

/* Whether uid's body was read in the last CACHE_EVICT_IN_USE_SECONDS, or
   an answer being written is still to read it. */
static bool cache_body_in_use(struct cache *cache, int64_t mailbox_id, uint32_t uid)
{
	int64_t since = cache_wall_now(cache) - CACHE_EVICT_IN_USE_SECONDS;

	if (cache_body_pinned(cache, mailbox_id, uid))
		return true;
	for (unsigned int i = 0; i < CACHE_RECENT_READS; i++) {
		const struct cache_body_use *use = &cache->recent_reads[i];

		if (use->uid == uid && use->mailbox_id == mailbox_id && use->at > since)
			return true;
	}
	return false;
}

/* Where the look at the least recently used bodies has got to: the key
   of the last body looked at (dropped or spared), in the order of
   CACHE_STMT_BODY_LRU. */
struct cache_evict_cursor {
	int64_t last_used, mailbox_id, uid;
};

/* Looks at the next CACHE_EVICT_STEP least recently used complete bodies
   past the cursor, dropping them while body_bytes is over the budget, but
   for those in use (spare_in_use), which are kept. Returns how many it
   looked at, or -1. */
static int cache_body_evict_step(struct cache *cache, bool spare_in_use, struct cache_evict_cursor *cursor,
				 unsigned int *evicted)
{
	sqlite3_stmt *stmt = cache_stmt(cache, CACHE_STMT_BODY_LRU);
	struct cache_evict_cursor keys[CACHE_EVICT_STEP];
	int count = 0;
	int rc;

	sqlite3_bind_int(stmt, 1, CACHE_EVICT_STEP);
	sqlite3_bind_int64(stmt, 2, cursor->last_used);
	sqlite3_bind_int64(stmt, 3, cursor->mailbox_id);
	sqlite3_bind_int64(stmt, 4, cursor->uid);
	while (count < CACHE_EVICT_STEP && (rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		keys[count].mailbox_id = sqlite3_column_int64(stmt, 0);
		keys[count].uid = sqlite3_column_int64(stmt, 1);
		keys[count].last_used = sqlite3_column_int64(stmt, 2);
		count++;
	}
	if (count == CACHE_EVICT_STEP)
		rc = SQLITE_ROW;
	sqlite3_reset(stmt);
	sqlite3_clear_bindings(stmt);
	if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
		cache_fail(cache, rc, "choosing bodies to evict");
		return -1;
	}
	for (int i = 0; i < count && cache->body_bytes > cache->settings.body_budget; i++) {
		*cursor = keys[i];
		if (spare_in_use && cache_body_in_use(cache, keys[i].mailbox_id, (uint32_t)keys[i].uid))
			continue;
		if (cache_body_delete(cache, keys[i].mailbox_id, (uint32_t)keys[i].uid) < 0)
			return -1;
		(*evicted)++;
	}
	return count;
}

int cache_body_fit_budget(struct cache *cache, bool spare_in_use)
{
	struct cache_evict_cursor cursor = { INT64_MIN, INT64_MIN, INT64_MIN };
	uint64_t before = cache->body_bytes;
	unsigned int evicted = 0;
	int count = CACHE_EVICT_STEP;

	cache_body_touches_flush(cache); /* held uses count */
	/* A step that looked at fewer rows than it asked for saw the last of
	   them; one that saw a full step dropped or passed every row in it
	   (or reached the budget), and the next starts past its last key: a
	   look costs the rows it sees once, however many are in use (an
	   answer's pins may be many). */
	while (cache->body_bytes > cache->settings.body_budget && count == CACHE_EVICT_STEP)
		count = cache_body_evict_step(cache, spare_in_use, &cursor, &evicted);
	if (evicted > 0)
		log_debug("cache %s: evicted %u whole messages (%" PRIu64 " bytes), least recently used, to stay "
			  "within body_budget (%" PRIu64 " bytes)", cache->label, evicted, before - cache->body_bytes,
			  cache->settings.body_budget);
	if (count < 0)
		return -1;
	return cache->body_bytes > cache->settings.body_budget ? 1 : 0;
}

/* Adds the incomplete body row (and the message's row, so that
   cache_lookup finds it), counting size in body_bytes, and evicts what
   the budget then needs, all or nothing. 1 when added, 0 when a body is
   there, 2 when no room could be made, -1. */
static int cache_body_insert(struct cache *cache, int64_t mailbox_id, uint32_t uid, uint64_t size)
{
	sqlite3_stmt *stmt = cache_stmt(cache, CACHE_STMT_BODY_INSERT);
	bool added = false;
	int fits = 0;
	int result;

	if (cache_op_begin(cache) < 0)
		return -1;
	cache_bind_key(stmt, mailbox_id, uid);
	sqlite3_bind_int64(stmt, 3, (int64_t)size);
	sqlite3_bind_int64(stmt, 4, cache_wall_now(cache));
	result = cache_run(cache, stmt, "starting a body");
	if (result == 0 && sqlite3_changes(cache->db) == 1) {
		added = true;
		cache->body_bytes += size;
		stmt = cache_stmt(cache, CACHE_STMT_MESSAGE_ENSURE);
		cache_bind_key(stmt, mailbox_id, uid);
		result = cache_run(cache, stmt, "starting a body");
	}
	if (result == 0 && added)
		fits = cache_body_fit_budget(cache, true);
	if (cache_op_end(cache, fits == 0 ? result : -1) < 0) {
		if (added)
			cache_body_bytes_reload(cache); /* the evictions and the new row were undone */
		return fits > 0 ? 2 : -1;
	}
	return added ? 1 : 0;
}

struct cache_body_writer *cache_body_begin(struct cache *cache, int64_t mailbox_id, uint32_t uid, uint64_t size,
					   enum cache_body_refusal *refusal_r)
{
	struct cache_body_writer *writer;
	size_t buffer = size < CACHE_BODY_CHUNK_SIZE ? (size_t)size : CACHE_BODY_CHUNK_SIZE;
	int refusal = cache_body_refusal(cache, mailbox_id, uid, size);
	int added;

	if (refusal < 0 && size > INT64_MAX)
		refusal = CACHE_BODY_REFUSED_TOO_BIG;
	if (refusal >= 0) {
		if (refusal_r != NULL)
			*refusal_r = (enum cache_body_refusal)refusal;
		return NULL;
	}
	writer = calloc(1, sizeof(*writer) + buffer);
	added = writer != NULL ? cache_body_insert(cache, mailbox_id, uid, size) : -1;
	if (added != 1) {
		if (writer == NULL)
			log_error("cache %s: out of memory starting a body", cache->label);
		free(writer);
		if (refusal_r != NULL)
			*refusal_r = added == 0 ? CACHE_BODY_REFUSED_PRESENT
				     : added == 2 ? CACHE_BODY_REFUSED_BUDGET : CACHE_BODY_REFUSED_ERROR;
		return NULL;
	}
	writer->cache = cache;
	writer->mailbox_id = mailbox_id;
	writer->uid = uid;
	writer->size = size;
	writer->next = cache->writers;
	cache->writers = writer;
	cache->refcount++;
	return writer;
}

/* Stores one piece; marks the writer failed when it can't. */
static int cache_body_put_chunk(struct cache_body_writer *writer, const void *data, size_t size)
{
	struct cache *cache = writer->cache;
	sqlite3_stmt *stmt = cache_stmt(cache, CACHE_STMT_CHUNK_INSERT);

	if (!cache_write_allowed(cache)) {
		writer->failed = true;
		return -1;
	}
	cache_bind_key(stmt, writer->mailbox_id, writer->uid);
	sqlite3_bind_int64(stmt, 3, writer->next_chunk);
	cache_bind_value(stmt, 4, data, size);
	cache_bind_checksum(stmt, 5, data, size);
	if (cache_run(cache, stmt, "storing a piece of a body") < 0) {
		writer->failed = true;
		return -1;
	}
	cache->batch_bytes += size; /* cache_batch_end_soon commits past CACHE_BATCH_HOLD_BYTES */
	writer->next_chunk++;
	return 0;
}

int cache_body_write(struct cache_body_writer *writer, const void *data, size_t size)
{
	const unsigned char *p = data;

	if (writer->failed)
		return -1;
	if (size > writer->size - writer->received) {
		log_warning("cache %s: a body of UID %" PRIu32 " is longer than the %" PRIu64 " bytes announced; "
			    "not stored", writer->cache->label, writer->uid, writer->size);
		writer->failed = true;
		return -1;
	}
	writer->received += size;
	while (size > 0) {
		size_t take;

		if (writer->pending_size == 0 && size >= CACHE_BODY_CHUNK_SIZE) {
			/* A whole piece straight from the caller's bytes, without a copy. */
			if (cache_body_put_chunk(writer, p, CACHE_BODY_CHUNK_SIZE) < 0)
				return -1;
			p += CACHE_BODY_CHUNK_SIZE;
			size -= CACHE_BODY_CHUNK_SIZE;
			continue;
		}
		take = CACHE_BODY_CHUNK_SIZE - writer->pending_size;
		take = take < size ? take : size;
		memcpy(writer->pending + writer->pending_size, p, take);
		writer->pending_size += take;
		p += take;
		size -= take;
		if (writer->pending_size == CACHE_BODY_CHUNK_SIZE) {
			writer->pending_size = 0;
			if (cache_body_put_chunk(writer, writer->pending, CACHE_BODY_CHUNK_SIZE) < 0)
				return -1;
		}
	}
	return 0;
}

/* Unlinks writer from its cache and frees it, dropping its reference. */
static void cache_body_writer_free(struct cache_body_writer *writer)
{
	struct cache *cache = writer->cache;

	for (struct cache_body_writer **link = &cache->writers; *link != NULL; link = &(*link)->next) {
		if (*link == writer) {
			*link = writer->next;
			break;
		}
	}
	free(writer);
	cache_unref(&cache);
}

/* The number of pieces a body of size bytes is stored in. */
static int64_t cache_body_chunk_count(uint64_t size)
{
	return (int64_t)((size + CACHE_BODY_CHUNK_SIZE - 1) / CACHE_BODY_CHUNK_SIZE);
}

/* Checks every piece is there (a rolled-back batch may have taken some)
   and marks the body complete. */
static int cache_body_complete(struct cache_body_writer *writer)
{
	struct cache *cache = writer->cache;
	sqlite3_stmt *stmt = cache_stmt(cache, CACHE_STMT_CHUNK_STATS);
	int64_t count;
	int64_t bytes;
	int rc;

	cache_bind_key(stmt, writer->mailbox_id, writer->uid);
	rc = sqlite3_step(stmt);
	count = sqlite3_column_int64(stmt, 0);
	bytes = sqlite3_column_int64(stmt, 1);
	sqlite3_reset(stmt);
	sqlite3_clear_bindings(stmt);
	if (rc != SQLITE_ROW) {
		cache_fail(cache, rc, "checking a body");
		return -1;
	}
	if (count != cache_body_chunk_count(writer->size) || (uint64_t)bytes != writer->size) {
		log_debug("cache %s: a body of UID %" PRIu32 " lost pieces (a batch rolled back)", cache->label,
			  writer->uid);
		return -1;
	}
	stmt = cache_stmt(cache, CACHE_STMT_BODY_COMPLETE);
	cache_bind_key(stmt, writer->mailbox_id, writer->uid);
	sqlite3_bind_int64(stmt, 3, (int64_t)writer->size);
	if (cache_run(cache, stmt, "completing a body") < 0)
		return -1;
	return sqlite3_changes(cache->db) == 1 ? 0 : -1;
}

int cache_body_finish(struct cache_body_writer **writerp)
{
	struct cache_body_writer *writer = *writerp;
	struct cache *cache = writer->cache;
	int result = -1;

	if (!writer->failed && writer->received != writer->size)
		log_warning("cache %s: a body of UID %" PRIu32 " ended after %" PRIu64 " of the %" PRIu64
			    " bytes announced; not stored", cache->label, writer->uid, writer->received, writer->size);
	else if (!writer->failed && cache_write_allowed(cache) &&
		 (writer->pending_size == 0 || cache_body_put_chunk(writer, writer->pending, writer->pending_size) == 0) &&
		 cache_op_begin(cache) == 0)
		/* the last piece goes in as the others, a statement of its own:
		   in the op's savepoint its pages and the body row's together
		   spilled the savepoint's journal to a file (CACHE_SUBJOURNAL_SPILL) */
		result = cache_op_end(cache, cache_body_complete(writer));
	if (result < 0) {
		cache_body_abort(writerp);
		return -1;
	}
	*writerp = NULL;
	cache_body_writer_free(writer);
	cache_fts_body_arrived(cache);
	return 0;
}

void cache_body_abort(struct cache_body_writer **writerp)
{
	struct cache_body_writer *writer = *writerp;
	struct cache *cache;
	sqlite3_stmt *stmt;
	int64_t size = 0;

	if (writer == NULL)
		return;
	*writerp = NULL;
	cache = writer->cache;
	/* Tried even with writes off: deleting frees space. What stays is
	   dropped at the next open. */
	if (!cache->writes_off_for_good) {
		stmt = cache_stmt(cache, CACHE_STMT_BODY_ABORT);
		cache_bind_key(stmt, writer->mailbox_id, writer->uid);
		if (cache_run_integer(cache, stmt, "dropping an unfinished body", &size) > 0)
			cache_body_bytes_sub(cache, size);
	}
	cache_body_writer_free(writer);
}

/* ---- reading ---- */

/* 1 with *size_r and *last_used_r when a complete body is stored, 0 when
   not (or unreadable), -1 on error. */
static int cache_body_get(struct cache *cache, int64_t mailbox_id, uint32_t uid, uint64_t *size_r,
			  int64_t *last_used_r)
{
	sqlite3_stmt *stmt = cache_stmt(cache, CACHE_STMT_BODY_GET);
	int rc;

	cache_bind_key(stmt, mailbox_id, uid);
	rc = sqlite3_step(stmt);
	if (rc == SQLITE_ROW) {
		int64_t size = sqlite3_column_int64(stmt, 0);

		*size_r = size > 0 ? (uint64_t)size : 0;
		*last_used_r = sqlite3_column_int64(stmt, 1);
	}
	return cache_row_end(cache, stmt, rc, rc == SQLITE_ROW, "reading a body");
}

int cache_body_size(struct cache *cache, int64_t mailbox_id, uint32_t uid, uint64_t *size_r)
{
	int64_t last_used;

	return cache_body_get(cache, mailbox_id, uid, size_r, &last_used);
}

/* cache_body_chunks_read with the store's own statement. */
static int cache_body_read_chunks(struct cache *cache, int64_t mailbox_id, uint32_t uid, uint64_t size,
				  uint64_t offset, uint64_t end, struct evbuffer *out, int *rc_r)
{
	return cache_body_chunks_read(cache_stmt(cache, CACHE_STMT_CHUNK_READ), mailbox_id, uid, size, offset, end, out,
				      rc_r);
}

int cache_body_chunks_read(sqlite3_stmt *stmt, int64_t mailbox_id, uint32_t uid, uint64_t size, uint64_t offset,
			   uint64_t end, struct evbuffer *out, int *rc_r)
{
	int64_t first = (int64_t)(offset / CACHE_BODY_CHUNK_SIZE);
	int64_t last = (int64_t)((end - 1) / CACHE_BODY_CHUNK_SIZE);
	int64_t expected = first;
	int result = 1;
	int rc;

	cache_bind_key(stmt, mailbox_id, uid);
	sqlite3_bind_int64(stmt, 3, first);
	sqlite3_bind_int64(stmt, 4, last);
	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		uint64_t start = (uint64_t)expected * CACHE_BODY_CHUNK_SIZE;
		uint64_t length = size - start < CACHE_BODY_CHUNK_SIZE ? size - start : CACHE_BODY_CHUNK_SIZE;
		const unsigned char *data = sqlite3_column_blob(stmt, 1);
		uint64_t from = offset > start ? offset - start : 0;
		uint64_t to = end < start + length ? end - start : length;

		if (sqlite3_column_int64(stmt, 0) != expected || (uint64_t)sqlite3_column_bytes(stmt, 1) != length ||
		    data == NULL || !cache_column_vouches(stmt, 2, data, (size_t)length)) {
			result = 0;
			break;
		}
		if (out != NULL && evbuffer_add(out, data + from, (size_t)(to - from)) < 0) {
			result = -1;
			rc = SQLITE_NOMEM;
			break;
		}
		expected++;
	}
	sqlite3_reset(stmt);
	sqlite3_clear_bindings(stmt);
	if (result == 1 && rc != SQLITE_DONE)
		result = -1; /* SQLite failed: rc says how */
	*rc_r = result == -1 ? rc : SQLITE_OK;
	if (result == -1)
		return -1;
	return result == 1 && expected != last + 1 ? 0 : result;
}

int cache_body_verify(struct cache *cache, int64_t mailbox_id, uint32_t uid, uint64_t size, struct evbuffer *out)
{
	int rc = SQLITE_OK;
	int result = size > 0 ? cache_body_read_chunks(cache, mailbox_id, uid, size, 0, size, out, &rc) : 1;

	if (result < 0 && rc != SQLITE_OK) {
		cache_fail(cache, rc, "checking a body");
		return (rc & 0xff) == SQLITE_CORRUPT ? 0 : -1;
	}
	if (result == 0)
		log_warning("cache %s: the stored body of UID %" PRIu32 " is damaged (a piece missing, short, or failing "
			    "its checksum); counted as missing, fetched afresh and dropped", cache->label, uid);
	return result;
}

/* Deletes a body found damaged, so that it is fetched and stored anew. */
void cache_body_drop_damaged(struct cache *cache, int64_t mailbox_id, uint32_t uid)
{
	if (cache_write_allowed(cache))
		cache_body_delete(cache, mailbox_id, uid);
}

/* Writes last_used of one body. */
static void cache_body_touch_write(struct cache *cache, int64_t mailbox_id, uint32_t uid, int64_t at)
{
	sqlite3_stmt *stmt = cache_stmt(cache, CACHE_STMT_BODY_TOUCH);

	cache_bind_key(stmt, mailbox_id, uid);
	sqlite3_bind_int64(stmt, 3, at);
	cache_run(cache, stmt, "recording a body's use");
}

void cache_body_touches_flush(struct cache *cache)
{
	size_t count = cache->touch_count;

	cache->touch_count = 0;
	if (count == 0 || !cache_write_allowed(cache))
		return;
	for (size_t i = 0; i < count; i++)
		cache_body_touch_write(cache, cache->touches[i].mailbox_id, cache->touches[i].uid, cache->touches[i].at);
}

/* Whether a use of the body at `at` is held already. */
static bool cache_body_touch_held(const struct cache *cache, int64_t mailbox_id, uint32_t uid, int64_t at)
{
	for (size_t i = 0; i < cache->touch_count; i++) {
		const struct cache_touch *touch = &cache->touches[i];

		if (touch->uid == uid && touch->mailbox_id == mailbox_id && touch->at == at)
			return true;
	}
	return false;
}

/* Records a use of the body (eviction drops the least recently used),
   at most once a second per body: held with the held rows when there is
   an event base (written with them, before any eviction), else at once. */
static void cache_body_touch(struct cache *cache, int64_t mailbox_id, uint32_t uid, int64_t last_used)
{
	int64_t now = cache_wall_now(cache);

	if (now == last_used || cache_writes_off(cache) || cache_body_touch_held(cache, mailbox_id, uid, now))
		return;
	if (cache->pending_timer == NULL) {
		if (cache_write_allowed(cache))
			cache_body_touch_write(cache, mailbox_id, uid, now);
		return;
	}
	if (cache->touch_count == CACHE_TOUCHES_MAX)
		cache_pending_flush(cache);
	cache->touches[cache->touch_count++] = (struct cache_touch){ mailbox_id, uid, now };
	if (!evtimer_pending(cache->pending_timer, NULL))
		evtimer_add(cache->pending_timer, &cache_touch_delay);
}

int cache_body_read(struct cache *cache, int64_t mailbox_id, uint32_t uid, uint64_t offset, uint64_t length,
		    struct evbuffer *out)
{
	uint64_t size = 0;
	int64_t last_used = 0;
	int found = cache_body_get(cache, mailbox_id, uid, &size, &last_used);
	uint64_t end;
	struct evbuffer *piece;
	int rc = SQLITE_OK;
	int read;

	if (found <= 0)
		return found;
	end = length > size - (offset < size ? offset : size) ? size : offset + length;
	if (offset < end) {
		piece = evbuffer_new();
		read = piece != NULL ? cache_body_read_chunks(cache, mailbox_id, uid, size, offset, end, piece, &rc) : -1;
		if (read > 0)
			evbuffer_add_buffer(out, piece);
		if (piece != NULL)
			evbuffer_free(piece);
		if (read < 0 && rc != SQLITE_OK) {
			cache_fail(cache, rc, "reading a body");
			return (rc & 0xff) == SQLITE_CORRUPT ? 0 : -1;
		}
		if (read < 0) {
			log_error("cache %s: out of memory reading a body", cache->label);
			return -1;
		}
		if (read == 0) {
			log_warning("cache %s: the stored body of UID %" PRIu32 " is damaged (a piece missing, short, or "
				    "failing its checksum); counted as missing, fetched afresh and dropped", cache->label, uid);
			cache_body_drop_damaged(cache, mailbox_id, uid);
			return 0;
		}
	}
	cache_body_note_read(cache, mailbox_id, uid);
	cache_body_touch(cache, mailbox_id, uid, last_used);
	return 1;
}

void cache_body_used(struct cache *cache, int64_t mailbox_id, uint32_t uid)
{
	cache_body_note_read(cache, mailbox_id, uid);
	cache_body_touch(cache, mailbox_id, uid, -1); /* last_used not known: a held use is not held twice */
}
