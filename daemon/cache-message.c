/* SPDX-License-Identifier: MIT */
/* cache-message: a stored message's items and flags, written one value at a time and read by UID. */
#include "config.h"
#include "cache-private.h"
#include "cache-checksum.h"
#include "log.h"
#include "mime-imap.h"

#include <assert.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <inttypes.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CACHE_LOOKUP_DENSE_FACTOR 4 /* a UID list covering at least 1/4 of its span is read as one range */

static const struct timeval cache_pending_delay = { 0, CACHE_PENDING_DELAY_MS * 1000 };

/* What an empty stored value points at: a value is never NULL. */
static const unsigned char cache_empty_value[1];

#define CACHE_ALL_VALUES ((1u << CACHE_VALUE_ITEMS) - 1) /* CACHE_HAS of every value item */
#define CACHE_LOOKUP_SQL_MAX 1024 /* a lookup's SQL with every column named fits twice over */

/* ---- messages ---- */

bool cache_message_key_valid(struct cache *cache, uint32_t uid)
{
	if (uid != 0)
		return true;
	log_warning("cache %s: UID 0 is not a UID; not stored", cache->label);
	return false;
}

/* How a write changed the four fixed items messages_fixed tracks. */
enum cache_fixed_change {
	CACHE_FIXED_ALL,     /* it wrote all four */
	CACHE_FIXED_SOME,    /* it wrote some: the row may be complete now */
	CACHE_FIXED_DROPPED, /* it dropped one */
};

/* Keeps messages_fixed's entry of the message as the write left its row. */
static int cache_fixed_note(struct cache *cache, int64_t mailbox_id, uint32_t uid, enum cache_fixed_change change)
{
	static const enum cache_stmt stmts[] = {
		[CACHE_FIXED_ALL] = CACHE_STMT_FIXED_SET,
		[CACHE_FIXED_SOME] = CACHE_STMT_FIXED_CHECK,
		[CACHE_FIXED_DROPPED] = CACHE_STMT_FIXED_UNSET,
	};
	sqlite3_stmt *stmt = cache_stmt(cache, stmts[change]);

	cache_bind_key(stmt, mailbox_id, uid);
	return cache_run(cache, stmt, "noting a message's fixed items");
}

/* Keeps messages_plain_header's entry of the message as a write of its
   header block (data; NULL: dropped) left it. */
static int cache_plain_header_note(struct cache *cache, int64_t mailbox_id, uint32_t uid, const void *data, size_t size)
{
	bool plain = data != NULL && mime_imap_header_is_plain(data, size);
	sqlite3_stmt *stmt = cache_stmt(cache, plain ? CACHE_STMT_PLAIN_HEADER_SET : CACHE_STMT_PLAIN_HEADER_UNSET);

	cache_bind_key(stmt, mailbox_id, uid);
	return cache_run(cache, stmt, "noting a message's plain header block");
}

/* What a fetched line's write does to the fixed items; -1: nothing. */
static int cache_fetched_fixed(const struct cache_fetched *fetched)
{
	unsigned int brought = (fetched->has_size ? 1 : 0) + (fetched->values[CACHE_ITEM_INTERNALDATE].data != NULL) +
			       (fetched->values[CACHE_ITEM_ENVELOPE].data != NULL) +
			       (fetched->values[CACHE_ITEM_BODYSTRUCTURE].data != NULL);

	return brought == 4 ? CACHE_FIXED_ALL : brought > 0 ? CACHE_FIXED_SOME : -1;
}

int cache_store_item(struct cache *cache, int64_t mailbox_id, uint32_t uid, enum cache_item item,
		     const void *data, size_t size)
{
	sqlite3_stmt *stmt;

	assert(item <= CACHE_ITEM_HEADER);
	cache_pending_flush(cache);
	if (!cache_message_key_valid(cache, uid) || !cache_write_allowed(cache))
		return -1;
	if (data == NULL && item <= CACHE_ITEM_BODYSTRUCTURE &&
	    cache_fixed_note(cache, mailbox_id, uid, CACHE_FIXED_DROPPED) < 0)
		return -1;
	stmt = cache_stmt(cache, CACHE_STMT_STORE_INTERNALDATE + item);
	cache_bind_key(stmt, mailbox_id, uid);
	cache_bind_value(stmt, 3, data, size);
	cache_bind_checksum(stmt, 4, data, size);
	if (cache_run(cache, stmt, "storing a message item") < 0)
		return -1;
	if (item == CACHE_ITEM_HEADER)
		return cache_plain_header_note(cache, mailbox_id, uid, data, size);
	return data != NULL && item <= CACHE_ITEM_BODYSTRUCTURE ? cache_fixed_note(cache, mailbox_id, uid, CACHE_FIXED_SOME)
								: 0;
}

/* Writes one row of cache_store_fetched now. */
static char *cache_flags_without_recent(const char *flags);

static int cache_fetched_write(struct cache *cache, int64_t mailbox_id, uint32_t uid,
			       const struct cache_fetched *fetched)
{
	/* with FLAGS, one statement writes them with the values (the second
	   one per row was a third of a cold fill's writing) */
	sqlite3_stmt *stmt =
		cache_stmt(cache, fetched->flags != NULL ? CACHE_STMT_STORE_FETCHED_FLAGS : CACHE_STMT_STORE_FETCHED);
	const char *flags = fetched->flags;
	char *without_recent = NULL;
	bool values = fetched->has_size || flags != NULL || fetched->preview.data != NULL;
	int result = 0;

	if (flags != NULL && strcasestr(flags, "\\Recent") != NULL) {
		flags = without_recent = cache_flags_without_recent(flags);
		if (flags == NULL) {
			log_error("cache %s: out of memory storing flags", cache->label);
			return -1;
		}
	}
	for (unsigned int item = 0; item < CACHE_SUMMED_ITEMS; item++) {
		const struct cache_value *value = &fetched->values[item];

		cache_bind_value(stmt, 3 + (int)item, value->data, value->size);
		cache_bind_checksum(stmt, 4 + CACHE_SUMMED_ITEMS + (int)item, value->data, value->size);
		values |= value->data != NULL;
	}
	if (fetched->has_size)
		sqlite3_bind_int64(stmt, 3 + CACHE_SUMMED_ITEMS, (int64_t)fetched->size);
	if (flags != NULL) {
		cache_bind_value(stmt, 4 + 2 * CACHE_SUMMED_ITEMS, flags, strlen(flags));
		cache_bind_known(stmt, 5 + 2 * CACHE_SUMMED_ITEMS, fetched->modseq);
	}
	cache_bind_key(stmt, mailbox_id, uid);
	if (values && cache_write_allowed(cache)) {
		int fixed = cache_fetched_fixed(fetched);

		const struct cache_value *header = &fetched->values[CACHE_ITEM_HEADER];

		result = cache_run(cache, stmt, "storing a message's items");
		if (result == 0 && fixed >= 0)
			result = cache_fixed_note(cache, mailbox_id, uid, (enum cache_fixed_change)fixed);
		if (result == 0 && header->data != NULL)
			result = cache_plain_header_note(cache, mailbox_id, uid, header->data, header->size);
		if (result == 0 && fetched->preview.data != NULL)
			result = cache_preview_write(cache, mailbox_id, uid, &fetched->preview);
	} else {
		sqlite3_clear_bindings(stmt);
		result = values ? -1 : 0;
	}
	free(without_recent);
	return result;
}

/* A copy of fetched in one allocation, for the queue. */
/* Points copy at a copy of value made at *p (when value has data), and
   moves *p past it. */
static void cache_pending_copy(struct cache_value *copy, const struct cache_value *value, unsigned char **p)
{
	if (value->data == NULL)
		return;
	copy->data = value->size > 0 ? memcpy(*p, value->data, value->size) : (unsigned char *)cache_empty_value;
	*p += value->size;
}

static struct cache_pending *cache_pending_new(int64_t mailbox_id, uint32_t uid, const struct cache_fetched *fetched,
					       size_t *size_r)
{
	size_t size = sizeof(struct cache_pending) + (fetched->flags != NULL ? strlen(fetched->flags) + 1 : 0);
	struct cache_pending *pending;
	unsigned char *p;

	for (unsigned int item = 0; item <= CACHE_ITEM_HEADER; item++)
		size += fetched->values[item].size;
	size += fetched->preview.size;
	pending = malloc(size);
	if (pending == NULL)
		return NULL;
	pending->next = NULL;
	pending->mailbox_id = mailbox_id;
	pending->uid = uid;
	pending->fetched = *fetched;
	p = pending->data;
	for (unsigned int item = 0; item <= CACHE_ITEM_HEADER; item++)
		cache_pending_copy(&pending->fetched.values[item], &fetched->values[item], &p);
	cache_pending_copy(&pending->fetched.preview, &fetched->preview, &p);
	if (fetched->flags != NULL)
		pending->fetched.flags = strcpy((char *)p, fetched->flags);
	*size_r = size;
	return pending;
}

int cache_store_fetched(struct cache *cache, int64_t mailbox_id, uint32_t uid, const struct cache_fetched *fetched)
{
	struct cache_pending *pending;
	size_t size;

	if ((fetched->has_size && fetched->size > INT64_MAX) || fetched->modseq > INT64_MAX) {
		log_warning("cache %s: RFC822.SIZE or MODSEQ out of range; not stored", cache->label);
		return -1;
	}
	if (!cache_message_key_valid(cache, uid) || cache_writes_off(cache))
		return -1;
	if (cache->pending_timer == NULL)
		return cache_fetched_write(cache, mailbox_id, uid, fetched);
	pending = cache_pending_new(mailbox_id, uid, fetched, &size);
	if (pending == NULL) {
		log_error("cache %s: out of memory holding a message's items", cache->label);
		return -1;
	}
	*cache->pending_tail = pending;
	cache->pending_tail = &pending->next;
	cache->pending_bytes += size;
	if (cache->pending_bytes >= CACHE_PENDING_MAX)
		cache_pending_flush(cache);
	else if (!evtimer_pending(cache->pending_timer, NULL))
		evtimer_add(cache->pending_timer, &cache_pending_delay);
	return 0;
}

/* Unlinks and returns the oldest held row, or NULL. */
static struct cache_pending *cache_pending_take(struct cache *cache)
{
	struct cache_pending *pending = cache->pending;

	if (pending == NULL)
		return NULL;
	cache->pending = pending->next;
	if (cache->pending == NULL) {
		cache->pending_tail = &cache->pending;
		cache->pending_bytes = 0;
	}
	return pending;
}

void cache_pending_flush(struct cache *cache)
{
	struct cache_pending *pending;

	if ((cache->pending == NULL && cache->touch_count == 0) || cache->pending_flushing)
		return;
	cache->pending_flushing = true;
	evtimer_del(cache->pending_timer);
	cache_batch_begin(cache);
	cache_body_touches_flush(cache);
	while ((pending = cache_pending_take(cache)) != NULL) {
		(void)cache_fetched_write(cache, pending->mailbox_id, pending->uid, &pending->fetched);
		free(pending);
	}
	(void)cache_batch_end(cache);
	cache->pending_flushing = false;
}

/* Writes the held rows before a read (they count as stored); held uses
   of bodies wait for their timer: a read sees nothing of them, and
   writing them at every lookup cost read-200 a commit per read. */
void cache_pending_flush_rows(struct cache *cache)
{
	if (cache->pending != NULL)
		cache_pending_flush(cache);
}

void cache_pending_drop(struct cache *cache)
{
	struct cache_pending *pending;

	while ((pending = cache_pending_take(cache)) != NULL)
		free(pending);
	cache->touch_count = 0;
	if (cache->pending_timer != NULL)
		evtimer_del(cache->pending_timer);
}

/* Stores one number column (CACHE_STMT_STORE_SIZE or _AGREES). */
static int cache_store_number(struct cache *cache, enum cache_stmt which, int64_t mailbox_id, uint32_t uid,
			      int64_t value)
{
	sqlite3_stmt *stmt;

	cache_pending_flush(cache);
	if (!cache_message_key_valid(cache, uid) || !cache_write_allowed(cache))
		return -1;
	stmt = cache_stmt(cache, which);
	cache_bind_key(stmt, mailbox_id, uid);
	sqlite3_bind_int64(stmt, 3, value);
	return cache_run(cache, stmt, "storing a message item");
}

int cache_store_size(struct cache *cache, int64_t mailbox_id, uint32_t uid, uint64_t size)
{
	if (size > INT64_MAX) {
		log_warning("cache %s: RFC822.SIZE %" PRIu64 " is out of range; not stored", cache->label, size);
		return -1;
	}
	if (cache_store_number(cache, CACHE_STMT_STORE_SIZE, mailbox_id, uid, (int64_t)size) < 0)
		return -1;
	return cache_fixed_note(cache, mailbox_id, uid, CACHE_FIXED_SOME);
}

int cache_set_structure_agrees(struct cache *cache, int64_t mailbox_id, uint32_t uid, bool agrees)
{
	return cache_store_number(cache, CACHE_STMT_STORE_AGREES, mailbox_id, uid, agrees ? 1 : 0);
}

/* flags without \Recent, which belongs to one session (RFC 3501 2.3.2) and
   is never stored; the others keep their order. malloc'd, or NULL. */
static char *cache_flags_without_recent(const char *flags)
{
	char *out = malloc(strlen(flags) + 1);
	size_t len = 0;

	if (out == NULL)
		return NULL;
	for (const char *p = flags; *p != '\0';) {
		size_t n;

		p += strspn(p, " ");
		n = strcspn(p, " ");
		if (n > 0 && !(n == strlen("\\Recent") && strncasecmp(p, "\\Recent", n) == 0)) {
			if (len > 0)
				out[len++] = ' ';
			memcpy(out + len, p, n);
			len += n;
		}
		p += n;
	}
	out[len] = '\0';
	return out;
}

int cache_store_flags(struct cache *cache, int64_t mailbox_id, uint32_t uid, const char *flags, uint64_t modseq)
{
	char *without_recent = NULL;
	sqlite3_stmt *stmt;
	int result;

	cache_pending_flush(cache); /* held flags are older than these */
	if (modseq > INT64_MAX) {
		log_warning("cache %s: MODSEQ %" PRIu64 " is out of range; not stored", cache->label, modseq);
		return -1;
	}
	if (!cache_message_key_valid(cache, uid) || !cache_write_allowed(cache))
		return -1;
	if (flags != NULL && strcasestr(flags, "\\Recent") != NULL) {
		flags = without_recent = cache_flags_without_recent(flags);
		if (flags == NULL) {
			log_error("cache %s: out of memory storing flags", cache->label);
			return -1;
		}
	}
	stmt = cache_stmt(cache, CACHE_STMT_STORE_FLAGS);
	cache_bind_key(stmt, mailbox_id, uid);
	cache_bind_value(stmt, 3, flags, flags != NULL ? strlen(flags) : 0);
	cache_bind_known(stmt, 4, modseq);
	result = cache_run(cache, stmt, "storing flags");
	free(without_recent);
	return result;
}

/* Whether value (of item, in the current row of a lookup statement)
   matches its stored checksum; a value without one is not vouched for. */
static bool cache_value_sound(sqlite3_stmt *stmt, unsigned int item, const struct cache_value *value)
{
	int column = CACHE_COLUMN_SUMS + (int)item;

	if (item >= CACHE_SUMMED_ITEMS)
		return true;
	return cache_column_vouches(stmt, column, value->data, value->size);
}

/* Notes that values (CACHE_HAS() of each) of uid failed their checksum:
   logged now, dropped by cache_damaged_drop once the lookup is done. */
static void cache_damaged_note(struct cache *cache, int64_t mailbox_id, uint32_t uid, unsigned int items)
{
	if ((items & ~CACHE_HAS(CACHE_ITEM_MESSAGE)) != 0)
		log_warning("cache %s: a stored value of UID %" PRIu32 " (items 0x%x) fails its checksum; "
			    "counted as missing, fetched afresh and dropped", cache->label, uid,
			    items & ~CACHE_HAS(CACHE_ITEM_MESSAGE));
	if (cache->damaged_count < CACHE_DAMAGED_MAX)
		cache->damaged[cache->damaged_count++] = (struct cache_damaged){ mailbox_id, uid, items };
}

/* Drops the values cache_damaged_note noted, so that the next fill
   stores them anew. */
static void cache_damaged_drop(struct cache *cache)
{
	size_t count = cache->damaged_count;

	cache->damaged_count = 0;
	for (size_t i = 0; i < count && cache_write_allowed(cache); i++) {
		const struct cache_damaged *damaged = &cache->damaged[i];

		if (damaged->items & CACHE_HAS(CACHE_ITEM_MESSAGE))
			cache_body_drop_damaged(cache, damaged->mailbox_id, damaged->uid);
		for (unsigned int item = 0; item < CACHE_SUMMED_ITEMS; item++) {
			if (damaged->items & CACHE_HAS(item))
				(void)cache_store_item(cache, damaged->mailbox_id, damaged->uid, (enum cache_item)item,
						       NULL, 0);
		}
	}
}

/* Fills message from the current row of a lookup statement with the
   values whose CACHE_HAS bit is in values; they point into SQLite's
   memory. A value that fails its checksum is absent (and noted for
   cache_damaged_drop). */
static void cache_message_fill(struct cache *cache, int64_t mailbox_id, sqlite3_stmt *stmt, bool verify_body,
			       unsigned int values, struct cache_message *message)
{
	unsigned int damaged = 0;

	memset(message, 0, sizeof(*message));
	message->uid = (uint32_t)sqlite3_column_int64(stmt, CACHE_COLUMN_UID);
	for (unsigned int item = 0; item < CACHE_VALUE_ITEMS; item++) {
		int column = CACHE_COLUMN_VALUES + (int)item;
		struct cache_value *value = &message->values[item];
		const void *data;

		if ((values & CACHE_HAS(item)) == 0 || sqlite3_column_type(stmt, column) == SQLITE_NULL)
			continue;
		data = sqlite3_column_blob(stmt, column);
		value->size = (size_t)sqlite3_column_bytes(stmt, column);
		value->data = (unsigned char *)(data != NULL ? data : cache_empty_value);
		if (!cache_value_sound(stmt, item, value)) {
			*value = (struct cache_value){ NULL, 0 };
			damaged |= CACHE_HAS(item);
			continue;
		}
		message->present |= CACHE_HAS(item);
	}

	if (sqlite3_column_type(stmt, CACHE_COLUMN_SIZE) == SQLITE_INTEGER &&
	    sqlite3_column_int64(stmt, CACHE_COLUMN_SIZE) >= 0) {
		message->size = (uint64_t)sqlite3_column_int64(stmt, CACHE_COLUMN_SIZE);
		message->present |= CACHE_HAS(CACHE_ITEM_SIZE);
	}
	if (sqlite3_column_type(stmt, CACHE_COLUMN_MODSEQ) == SQLITE_INTEGER &&
	    sqlite3_column_int64(stmt, CACHE_COLUMN_MODSEQ) > 0) {
		message->modseq = (uint64_t)sqlite3_column_int64(stmt, CACHE_COLUMN_MODSEQ);
		message->present |= CACHE_HAS(CACHE_ITEM_MODSEQ);
	}
	if (sqlite3_column_type(stmt, CACHE_COLUMN_STRUCTURE_AGREES) == SQLITE_INTEGER) {
		message->structure_agrees = sqlite3_column_int64(stmt, CACHE_COLUMN_STRUCTURE_AGREES) != 0;
		message->present |= CACHE_HAS(CACHE_ITEM_STRUCTURE_AGREES);
	}
	if (sqlite3_column_type(stmt, CACHE_COLUMN_BODY_SIZE) == SQLITE_INTEGER) {
		message->message_size = (uint64_t)sqlite3_column_int64(stmt, CACHE_COLUMN_BODY_SIZE);
		/* the bytes checked are kept for a caller that asked for them (out of memory: only checked) */
		if (verify_body && (values & CACHE_HAS(CACHE_ITEM_MESSAGE)) != 0)
			message->body = evbuffer_new();
		if (!verify_body ||
		    cache_body_verify(cache, mailbox_id, message->uid, message->message_size, message->body) == 1) {
			message->present |= CACHE_HAS(CACHE_ITEM_MESSAGE);
		} else {
			damaged |= CACHE_HAS(CACHE_ITEM_MESSAGE);
			if (message->body != NULL)
				evbuffer_free(message->body);
			message->body = NULL;
		}
	}
	message->damaged = damaged;
	if (damaged != 0)
		cache_damaged_note(cache, mailbox_id, message->uid, damaged);
}

/* Copies message's values into memory of its own (each with a NUL after it). */
static bool cache_message_copy(struct cache_message *message)
{
	bool ok = true;

	for (unsigned int item = 0; item < CACHE_VALUE_ITEMS; item++) {
		struct cache_value *value = &message->values[item];
		unsigned char *copy;

		if (value->data == NULL)
			continue;
		copy = ok ? malloc(value->size + 1) : NULL;
		if (copy != NULL) {
			memcpy(copy, value->data, value->size);
			copy[value->size] = '\0';
		}
		ok = copy != NULL;
		value->data = copy;
	}
	if (!ok)
		cache_message_clear(message);
	return ok;
}

int cache_lookup(struct cache *cache, int64_t mailbox_id, uint32_t uid, struct cache_message *message_r)
{
	sqlite3_stmt *stmt = cache_stmt(cache, CACHE_STMT_LOOKUP_ONE);
	int rc;
	int result = 0;

	cache_pending_flush(cache);
	memset(message_r, 0, sizeof(*message_r));
	cache_bind_key(stmt, mailbox_id, uid);
	rc = sqlite3_step(stmt);
	if (rc == SQLITE_ROW) {
		cache_message_fill(cache, mailbox_id, stmt, true, CACHE_ALL_VALUES, message_r);
		result = cache_message_copy(message_r) ? 1 : -1;
		if (result < 0)
			log_error("cache %s: out of memory reading a message", cache->label);
	}
	sqlite3_reset(stmt);
	sqlite3_clear_bindings(stmt);
	cache_damaged_drop(cache);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		cache_fail(cache, rc, "reading a message");
		return (rc & 0xff) == SQLITE_CORRUPT ? 0 : -1;
	}
	return result;
}

void cache_message_clear(struct cache_message *message)
{
	for (unsigned int item = 0; item < CACHE_VALUE_ITEMS; item++)
		free(message->values[item].data);
	if (message->body != NULL)
		evbuffer_free(message->body);
	memset(message, 0, sizeof(*message));
}

/* Steps a lookup statement to its end, calling back for the rows whose UID
   is in uids[*next..count), which advances. Returns the SQLite code. */
static int cache_lookup_rows(struct cache *cache, int64_t mailbox_id, sqlite3_stmt *stmt, const uint32_t *uids,
			     size_t count, size_t *next, unsigned int values, bool check_bodies,
			     cache_lookup_fn *callback, void *context, long *calls)
{
	bool verify_bodies = check_bodies && count <= CACHE_VERIFY_BODIES_MAX;
	struct cache_message message;
	int rc;

	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW && *next < count) {
		uint32_t uid = (uint32_t)sqlite3_column_int64(stmt, CACHE_COLUMN_UID);

		while (*next < count && uids[*next] < uid)
			(*next)++;
		if (*next < count && uids[*next] == uid) {
			cache_message_fill(cache, mailbox_id, stmt, verify_bodies, values, &message);
			callback(&message, context);
			if (message.body != NULL)
				evbuffer_free(message.body);
			(*calls)++;
			(*next)++;
		}
	}
	return rc == SQLITE_ROW ? SQLITE_DONE : rc;
}

long cache_lookup_many(struct cache *cache, int64_t mailbox_id, const uint32_t *uids, size_t count,
		       cache_lookup_fn *callback, void *context)
{
	return cache_lookup_values(cache, mailbox_id, uids, count, CACHE_ALL_VALUES, callback, context);
}

void cache_lookup_stmts_free(struct cache *cache)
{
	for (unsigned int range = 0; range < 2; range++) {
		for (unsigned int values = 0; values <= CACHE_ALL_VALUES; values++) {
			sqlite3_finalize(cache->lookup_stmts[range][values]);
			cache->lookup_stmts[range][values] = NULL;
		}
	}
}

/* The SQL of a lookup (of a range or of one UID) of values: the columns of
   CACHE_MESSAGE_COLUMNS in their places, NULL for values not wanted. */
static void cache_lookup_sql(bool range, unsigned int values, char *sql, size_t size)
{
	static const char *const names[CACHE_VALUE_ITEMS] = {
		"m.internaldate", "m.envelope", "m.bodystructure", "m.body_item", "m.header", "m.flags",
	};
	size_t used = (size_t)snprintf(sql, size, "SELECT m.uid");

	_Static_assert(CACHE_VALUE_ITEMS == 6 && CACHE_SUMMED_ITEMS == 5, "names follows CACHE_MESSAGE_COLUMNS");
	for (unsigned int item = 0; item < CACHE_VALUE_ITEMS; item++)
		used += (size_t)snprintf(sql + used, size - used, ", %s", (values & CACHE_HAS(item)) ? names[item] : "NULL");
	used += (size_t)snprintf(sql + used, size - used, ", m.size, m.modseq, m.structure_agrees, b.size");
	for (unsigned int item = 0; item < CACHE_SUMMED_ITEMS; item++)
		used += (size_t)snprintf(sql + used, size - used, (values & CACHE_HAS(item)) ? ", %s_sum" : ", NULL",
					 names[item]);
	snprintf(sql + used, size - used, "%s%s", CACHE_MESSAGE_FROM,
		 range ? " WHERE m.mailbox_id = ?1 AND m.uid BETWEEN ?2 AND ?3 ORDER BY m.uid"
		       : " WHERE m.mailbox_id = ?1 AND m.uid = ?2");
}

/* The lookup statement for values: the one of all values, or one
   selecting only those (prepared once, kept; the full one if that fails). */
static sqlite3_stmt *cache_lookup_stmt(struct cache *cache, bool range, unsigned int values)
{
	sqlite3_stmt *full = cache_stmt(cache, range ? CACHE_STMT_LOOKUP_RANGE : CACHE_STMT_LOOKUP_ONE);
	sqlite3_stmt **slot = &cache->lookup_stmts[range][values & CACHE_ALL_VALUES];
	char sql[CACHE_LOOKUP_SQL_MAX];

	if ((values & CACHE_ALL_VALUES) == CACHE_ALL_VALUES)
		return full;
	if (*slot != NULL)
		return *slot;
	cache_lookup_sql(range, values, sql, sizeof(sql));
	if (sqlite3_prepare_v3(cache->db, sql, -1, SQLITE_PREPARE_PERSISTENT, slot, NULL) != SQLITE_OK) {
		log_warning("cache %s: preparing a lookup of some values: %s; reading all", cache->label,
			    sqlite3_errmsg(cache->db));
		sqlite3_finalize(*slot);
		*slot = NULL;
		return full;
	}
	return *slot;
}

/* cache_lookup_values, checking bodies (of a few UIDs) or not. */
static long cache_lookup_run(struct cache *cache, int64_t mailbox_id, const uint32_t *uids, size_t count,
			     unsigned int values, bool check_bodies, cache_lookup_fn *callback, void *context)
{
	bool dense = count > 0 && (uint64_t)(uids[count - 1] - uids[0]) < (uint64_t)count * CACHE_LOOKUP_DENSE_FACTOR;
	sqlite3_stmt *stmt = cache_lookup_stmt(cache, dense, values);
	size_t next = 0;
	long calls = 0;
	int rc = SQLITE_DONE;

	for (size_t i = 1; i < count; i++)
		assert(uids[i] > uids[i - 1]);
	cache_pending_flush_rows(cache);
	if (dense) {
		cache_bind_key(stmt, mailbox_id, uids[0]);
		sqlite3_bind_int64(stmt, 3, uids[count - 1]);
		rc = cache_lookup_rows(cache, mailbox_id, stmt, uids, count, &next, values, check_bodies, callback,
				       context, &calls);
		sqlite3_reset(stmt);
	}
	for (size_t i = 0; !dense && i < count && rc == SQLITE_DONE; i++) {
		next = i;
		cache_bind_key(stmt, mailbox_id, uids[i]);
		rc = cache_lookup_rows(cache, mailbox_id, stmt, uids, count, &next, values, check_bodies, callback,
				       context, &calls);
		sqlite3_reset(stmt);
	}
	sqlite3_clear_bindings(stmt);
	cache_damaged_drop(cache);
	if (rc == SQLITE_DONE)
		return calls;
	cache_fail(cache, rc, "reading messages");
	return (rc & 0xff) == SQLITE_CORRUPT ? calls : -1;
}

long cache_lookup_values(struct cache *cache, int64_t mailbox_id, const uint32_t *uids, size_t count,
			 unsigned int values, cache_lookup_fn *callback, void *context)
{
	return cache_lookup_run(cache, mailbox_id, uids, count, values, true, callback, context);
}

long cache_lookup_unchecked(struct cache *cache, int64_t mailbox_id, uint32_t uid, unsigned int values,
			    cache_lookup_fn *callback, void *context)
{
	return cache_lookup_run(cache, mailbox_id, &uid, 1, values & ~CACHE_HAS(CACHE_ITEM_MESSAGE), false, callback,
				context);
}


/* The values of item over a range of UIDs, by which (a statement
   selecting uid, the value and its checksum; only rows that have one),
   each one its checksum vouches for; a damaged one is noted and dropped,
   as cache_lookup_values does, and counts as not stored. */
static long cache_lookup_checked(struct cache *cache, enum cache_stmt which, enum cache_item item, const char *what,
				 int64_t mailbox_id, uint32_t first, uint32_t last, cache_value_fn *callback,
				 void *context)
{
	sqlite3_stmt *stmt;
	long calls = 0;
	int rc;

	cache_pending_flush_rows(cache); /* held rows count as stored */
	stmt = cache_range_begin(cache, which, mailbox_id, first, last);
	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		uint32_t uid = (uint32_t)sqlite3_column_int64(stmt, 0);
		const unsigned char *data = sqlite3_column_blob(stmt, 1);
		size_t size = (size_t)sqlite3_column_bytes(stmt, 1);

		if (data == NULL && size > 0)
			continue; /* out of memory: as if not stored */
		if (!cache_column_vouches(stmt, 2, data, size)) {
			cache_damaged_note(cache, mailbox_id, uid, CACHE_HAS(item));
			continue;
		}
		callback(uid, data != NULL ? data : cache_empty_value, size, context);
		calls++;
	}
	calls = cache_range_end(cache, stmt, rc, calls, what, false);
	cache_damaged_drop(cache);
	return calls;
}

long cache_lookup_internaldates(struct cache *cache, int64_t mailbox_id, uint32_t first, uint32_t last,
				cache_value_fn *callback, void *context)
{
	return cache_lookup_checked(cache, CACHE_STMT_INTERNALDATES_RANGE, CACHE_ITEM_INTERNALDATE,
				    "reading the INTERNALDATEs of messages", mailbox_id, first, last, callback, context);
}

long cache_lookup_headers(struct cache *cache, int64_t mailbox_id, uint32_t first, uint32_t last,
			  cache_value_fn *callback, void *context)
{
	return cache_lookup_checked(cache, CACHE_STMT_HEADERS_RANGE, CACHE_ITEM_HEADER,
				    "reading the header blocks of messages", mailbox_id, first, last, callback, context);
}

long cache_lookup_sizes(struct cache *cache, int64_t mailbox_id, uint32_t first, uint32_t last,
			cache_size_fn *callback, void *context)
{
	sqlite3_stmt *stmt;
	long calls = 0;
	int rc;

	cache_pending_flush_rows(cache); /* held rows count as stored */
	stmt = cache_range_begin(cache, CACHE_STMT_SIZES_RANGE, mailbox_id, first, last);
	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		int64_t size = sqlite3_column_int64(stmt, 1);

		callback((uint32_t)sqlite3_column_int64(stmt, 0), size > 0 ? (uint64_t)size : 0, context);
		calls++;
	}
	return cache_range_end(cache, stmt, rc, calls, "reading the sizes of messages", false);
}

long cache_lookup_presence(struct cache *cache, int64_t mailbox_id, uint32_t first, uint32_t last,
			   cache_presence_fn *callback, void *context)
{
	sqlite3_stmt *stmt;
	long calls = 0;
	int rc;

	cache_pending_flush_rows(cache);
	stmt = cache_range_begin(cache, CACHE_STMT_PRESENCE_RANGE, mailbox_id, first, last);
	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		struct cache_presence presence = { .uid = (uint32_t)sqlite3_column_int64(stmt, 0) };

		for (int item = CACHE_ITEM_INTERNALDATE; item < CACHE_VALUE_ITEMS; item++) {
			if (sqlite3_column_int(stmt, 1 + item - CACHE_ITEM_INTERNALDATE) != 0)
				presence.present |= CACHE_HAS(item);
		}
		if (sqlite3_column_type(stmt, 1 + CACHE_VALUE_ITEMS) != SQLITE_NULL) {
			presence.present |= CACHE_HAS(CACHE_ITEM_SIZE);
			presence.size = (uint64_t)sqlite3_column_int64(stmt, 1 + CACHE_VALUE_ITEMS);
		}
		if (sqlite3_column_type(stmt, 2 + CACHE_VALUE_ITEMS) != SQLITE_NULL)
			presence.present |= CACHE_HAS(CACHE_ITEM_MESSAGE);
		callback(&presence, context);
		calls++;
	}
	return cache_range_end(cache, stmt, rc, calls, "reading what is stored of messages", false);
}

/* The UIDs of [first, last] a table of keys lists (which: its range statement). */
static long cache_lookup_keys(struct cache *cache, enum cache_stmt which, const char *what, int64_t mailbox_id,
			      uint32_t first, uint32_t last, cache_fixed_fn *callback, void *context)
{
	sqlite3_stmt *stmt;
	long calls = 0;
	int rc;

	cache_pending_flush_rows(cache);
	stmt = cache_range_begin(cache, which, mailbox_id, first, last);
	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		callback((uint32_t)sqlite3_column_int64(stmt, 0), context);
		calls++;
	}
	return cache_range_end(cache, stmt, rc, calls, what, false);
}

long cache_lookup_fixed(struct cache *cache, int64_t mailbox_id, uint32_t first, uint32_t last,
			cache_fixed_fn *callback, void *context)
{
	return cache_lookup_keys(cache, CACHE_STMT_FIXED_RANGE, "reading which messages have their fixed items",
				 mailbox_id, first, last, callback, context);
}

long cache_lookup_plain_headers(struct cache *cache, int64_t mailbox_id, uint32_t first, uint32_t last,
				cache_fixed_fn *callback, void *context)
{
	return cache_lookup_keys(cache, CACHE_STMT_PLAIN_HEADER_RANGE,
				 "reading which messages have a plain header block", mailbox_id, first, last, callback,
				 context);
}

long cache_lookup_flags(struct cache *cache, int64_t mailbox_id, uint32_t first, uint32_t last,
			cache_flags_fn *callback, void *context)
{
	sqlite3_stmt *stmt = cache_range_begin(cache, CACHE_STMT_FLAGS_RANGE, mailbox_id, first, last);
	long calls = 0;
	int rc;

	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		const char *flags = (const char *)sqlite3_column_blob(stmt, 1);
		size_t len = (size_t)sqlite3_column_bytes(stmt, 1);

		callback((uint32_t)sqlite3_column_int64(stmt, 0), flags != NULL ? flags : "", len,
			 (uint64_t)sqlite3_column_int64(stmt, 2), context);
		calls++;
	}
	return cache_range_end(cache, stmt, rc, calls, "reading stored flags", true);
}

int cache_forget_flags(struct cache *cache, int64_t mailbox_id, uint32_t first, uint32_t last)
{
	sqlite3_stmt *stmt = cache_stmt(cache, CACHE_STMT_FORGET_FLAGS);

	if (!cache_write_allowed(cache))
		return -1;
	cache_bind_key(stmt, mailbox_id, first);
	sqlite3_bind_int64(stmt, 3, last);
	return cache_run(cache, stmt, "forgetting stored flags");
}
