/* SPDX-License-Identifier: MIT */
/* cache-message: a stored message's items and flags, written one value at a time and read by UID. */
#include "config.h"
#include "cache-private.h"
#include "log.h"

#include <assert.h>
#include <inttypes.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CACHE_LOOKUP_DENSE_FACTOR 4 /* a UID list covering at least 1/4 of its span is read as one range */

/* What an empty stored value points at: a value is never NULL. */
static const unsigned char cache_empty_value[1];

/* ---- messages ---- */

bool cache_message_key_valid(struct cache *cache, uint32_t uid)
{
	if (uid != 0)
		return true;
	log_warning("cache %s: UID 0 is not a UID; not stored", cache->label);
	return false;
}

int cache_store_item(struct cache *cache, int64_t mailbox_id, uint32_t uid, enum cache_item item,
		     const void *data, size_t size)
{
	sqlite3_stmt *stmt;

	assert(item <= CACHE_ITEM_HEADER);
	if (!cache_message_key_valid(cache, uid) || !cache_write_allowed(cache))
		return -1;
	stmt = cache_stmt(cache, CACHE_STMT_STORE_INTERNALDATE + item);
	cache_bind_key(stmt, mailbox_id, uid);
	cache_bind_value(stmt, 3, data, size);
	return cache_run(cache, stmt, "storing a message item");
}

/* Stores one number column (CACHE_STMT_STORE_SIZE or _AGREES). */
static int cache_store_number(struct cache *cache, enum cache_stmt which, int64_t mailbox_id, uint32_t uid,
			      int64_t value)
{
	sqlite3_stmt *stmt;

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
	return cache_store_number(cache, CACHE_STMT_STORE_SIZE, mailbox_id, uid, (int64_t)size);
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

/* Fills message from the current row of a lookup statement; values point
   into SQLite's memory. */
static void cache_message_fill(sqlite3_stmt *stmt, struct cache_message *message)
{
	memset(message, 0, sizeof(*message));
	message->uid = (uint32_t)sqlite3_column_int64(stmt, CACHE_COLUMN_UID);
	for (unsigned int item = 0; item < CACHE_VALUE_ITEMS; item++) {
		int column = CACHE_COLUMN_VALUES + (int)item;
		const void *data;

		if (sqlite3_column_type(stmt, column) == SQLITE_NULL)
			continue;
		data = sqlite3_column_blob(stmt, column);
		message->values[item].size = (size_t)sqlite3_column_bytes(stmt, column);
		message->values[item].data = (unsigned char *)(data != NULL ? data : cache_empty_value);
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
		message->present |= CACHE_HAS(CACHE_ITEM_MESSAGE);
	}
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

	memset(message_r, 0, sizeof(*message_r));
	cache_bind_key(stmt, mailbox_id, uid);
	rc = sqlite3_step(stmt);
	if (rc == SQLITE_ROW) {
		cache_message_fill(stmt, message_r);
		result = cache_message_copy(message_r) ? 1 : -1;
		if (result < 0)
			log_error("cache %s: out of memory reading a message", cache->label);
	}
	sqlite3_reset(stmt);
	sqlite3_clear_bindings(stmt);
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
	memset(message, 0, sizeof(*message));
}

/* Steps a lookup statement to its end, calling back for the rows whose UID
   is in uids[*next..count), which advances. Returns the SQLite code. */
static int cache_lookup_rows(sqlite3_stmt *stmt, const uint32_t *uids, size_t count, size_t *next,
			     cache_lookup_fn *callback, void *context, long *calls)
{
	struct cache_message message;
	int rc;

	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW && *next < count) {
		uint32_t uid = (uint32_t)sqlite3_column_int64(stmt, CACHE_COLUMN_UID);

		while (*next < count && uids[*next] < uid)
			(*next)++;
		if (*next < count && uids[*next] == uid) {
			cache_message_fill(stmt, &message);
			callback(&message, context);
			(*calls)++;
			(*next)++;
		}
	}
	return rc == SQLITE_ROW ? SQLITE_DONE : rc;
}

long cache_lookup_many(struct cache *cache, int64_t mailbox_id, const uint32_t *uids, size_t count,
		       cache_lookup_fn *callback, void *context)
{
	bool dense = count > 0 && (uint64_t)(uids[count - 1] - uids[0]) < (uint64_t)count * CACHE_LOOKUP_DENSE_FACTOR;
	sqlite3_stmt *stmt = cache_stmt(cache, dense ? CACHE_STMT_LOOKUP_RANGE : CACHE_STMT_LOOKUP_ONE);
	size_t next = 0;
	long calls = 0;
	int rc = SQLITE_DONE;

	for (size_t i = 1; i < count; i++)
		assert(uids[i] > uids[i - 1]);
	if (dense) {
		cache_bind_key(stmt, mailbox_id, uids[0]);
		sqlite3_bind_int64(stmt, 3, uids[count - 1]);
		rc = cache_lookup_rows(stmt, uids, count, &next, callback, context, &calls);
		sqlite3_reset(stmt);
	}
	for (size_t i = 0; !dense && i < count && rc == SQLITE_DONE; i++) {
		next = i;
		cache_bind_key(stmt, mailbox_id, uids[i]);
		rc = cache_lookup_rows(stmt, uids, count, &next, callback, context, &calls);
		sqlite3_reset(stmt);
	}
	sqlite3_clear_bindings(stmt);
	if (rc == SQLITE_DONE)
		return calls;
	cache_fail(cache, rc, "reading messages");
	return (rc & 0xff) == SQLITE_CORRUPT ? calls : -1;
}


long cache_lookup_presence(struct cache *cache, int64_t mailbox_id, uint32_t first, uint32_t last,
			   cache_presence_fn *callback, void *context)
{
	sqlite3_stmt *stmt = cache_stmt(cache, CACHE_STMT_PRESENCE_RANGE);
	long calls = 0;
	int rc;

	cache_bind_key(stmt, mailbox_id, first);
	sqlite3_bind_int64(stmt, 3, last);
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
	sqlite3_reset(stmt);
	sqlite3_clear_bindings(stmt);
	if (rc == SQLITE_DONE)
		return calls;
	cache_fail(cache, rc, "reading what is stored of messages");
	return -1;
}

long cache_lookup_flags(struct cache *cache, int64_t mailbox_id, uint32_t first, uint32_t last,
			cache_flags_fn *callback, void *context)
{
	sqlite3_stmt *stmt = cache_stmt(cache, CACHE_STMT_FLAGS_RANGE);
	long calls = 0;
	int rc;

	cache_bind_key(stmt, mailbox_id, first);
	sqlite3_bind_int64(stmt, 3, last);
	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		const char *flags = (const char *)sqlite3_column_blob(stmt, 1);
		size_t len = (size_t)sqlite3_column_bytes(stmt, 1);

		callback((uint32_t)sqlite3_column_int64(stmt, 0), flags != NULL ? flags : "", len,
			 (uint64_t)sqlite3_column_int64(stmt, 2), context);
		calls++;
	}
	sqlite3_reset(stmt);
	sqlite3_clear_bindings(stmt);
	if (rc == SQLITE_DONE)
		return calls;
	cache_fail(cache, rc, "reading stored flags");
	return (rc & 0xff) == SQLITE_CORRUPT ? calls : -1;
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
