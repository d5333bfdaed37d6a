/* SPDX-License-Identifier: MIT */
/* cache-mailbox: an account's stored mailboxes, their UIDVALIDITY and state, and their UID lists. */
#include "config.h"
#include "cache-private.h"
#include "cache-checksum.h"
#include "log.h"

#include <inttypes.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CACHE_MAILBOX_MAX_UIDS (16u << 20) /* far past any real mailbox; a damaged list must not claim gigabytes */
#define CACHE_UID_RANGE_MAX_BYTES 10 /* a range is two LEB128 numbers of at most 5 bytes */

/* ---- mailboxes ---- */

/* RFC 3501 5.1: INBOX is case-insensitive; every other name is as given. */
static const char *cache_mailbox_name(const char *name)
{
	return strcasecmp(name, "INBOX") == 0 ? "INBOX" : name;
}

/* 1 with *mailbox_r when stored, 0 when not, -1 on error. */
static int cache_mailbox_get(struct cache *cache, const char *name, struct cache_mailbox *mailbox_r)
{
	sqlite3_stmt *stmt = cache_stmt(cache, CACHE_STMT_MAILBOX_GET);
	int rc;

	sqlite3_bind_text(stmt, 1, cache_mailbox_name(name), -1, SQLITE_STATIC);
	rc = sqlite3_step(stmt);
	if (rc == SQLITE_ROW) {
		mailbox_r->id = sqlite3_column_int64(stmt, 0);
		mailbox_r->uidvalidity = (uint32_t)sqlite3_column_int64(stmt, 1);
		mailbox_r->uidnext = (uint32_t)sqlite3_column_int64(stmt, 2);
		mailbox_r->highestmodseq = (uint64_t)sqlite3_column_int64(stmt, 3);
	}
	return cache_row_end(cache, stmt, rc, rc == SQLITE_ROW, "reading a mailbox");
}

int cache_mailbox_lookup(struct cache *cache, const char *name, struct cache_mailbox *mailbox_r)
{
	return cache_mailbox_get(cache, name, mailbox_r);
}

/* Deletes mailbox id with everything in it (the foreign keys cascade). */
int cache_mailbox_drop_now(struct cache *cache, int64_t id)
{
	sqlite3_stmt *stmt = cache_stmt(cache, CACHE_STMT_MAILBOX_BODY_BYTES);
	int64_t bytes = 0;

	sqlite3_bind_int64(stmt, 1, id);
	if (cache_run_integer(cache, stmt, "adding up a mailbox's bodies", &bytes) < 0)
		return -1;
	stmt = cache_stmt(cache, CACHE_STMT_MAILBOX_DELETE);
	sqlite3_bind_int64(stmt, 1, id);
	if (cache_run(cache, stmt, "dropping a mailbox") < 0)
		return -1;
	cache_body_bytes_sub(cache, bytes);
	return 0;
}

/* Drops mailbox id with everything in it; while an answer reads it, it
   is renamed to a BLOB (which no name, a TEXT, equals) and dropped when
   the answer is done. */
static int cache_mailbox_drop(struct cache *cache, int64_t id)
{
	sqlite3_stmt *stmt;

	if (!cache_pinned(cache, id, 0))
		return cache_mailbox_drop_now(cache, id);
	stmt = cache_stmt(cache, CACHE_STMT_MAILBOX_SET_ASIDE);
	sqlite3_bind_int64(stmt, 1, id);
	if (cache_run(cache, stmt, "setting a mailbox aside") < 0)
		return -1;
	return cache_drop_defer(cache, id, 0);
}

static int cache_mailbox_insert(struct cache *cache, const char *name, uint32_t uidvalidity,
				struct cache_mailbox *mailbox_r)
{
	sqlite3_stmt *stmt = cache_stmt(cache, CACHE_STMT_MAILBOX_INSERT);

	sqlite3_bind_text(stmt, 1, cache_mailbox_name(name), -1, SQLITE_STATIC);
	sqlite3_bind_int64(stmt, 2, uidvalidity);
	if (cache_run(cache, stmt, "adding a mailbox") < 0)
		return -1;
	memset(mailbox_r, 0, sizeof(*mailbox_r));
	mailbox_r->id = sqlite3_last_insert_rowid(cache->db);
	mailbox_r->uidvalidity = uidvalidity;
	return 0;
}

int cache_mailbox_open(struct cache *cache, const char *name, uint32_t uidvalidity,
		       struct cache_mailbox *mailbox_r, bool *reset_r)
{
	struct cache_mailbox stored;
	int found;
	int result;
	size_t held;

	if (reset_r != NULL)
		*reset_r = false;
	cache_pending_flush(cache); /* held rows land before a reset drops them */
	if (uidvalidity == 0) {
		log_warning("cache %s: mailbox %s: UIDVALIDITY 0 is not valid; not caching it", cache->label, name);
		return -1;
	}
	found = cache_mailbox_get(cache, name, &stored);
	if (found < 0)
		return -1;
	if (found > 0 && stored.uidvalidity == uidvalidity) {
		*mailbox_r = stored;
		return 0;
	}
	if (!cache_write_allowed(cache) || cache_op_begin(cache) < 0)
		return -1;
	held = cache->deferred_count;
	result = found > 0 ? cache_mailbox_drop(cache, stored.id) : 0;
	if (result == 0)
		result = cache_mailbox_insert(cache, name, uidvalidity, mailbox_r);
	result = cache_op_end(cache, result);
	if (result < 0) {
		cache_body_bytes_reload(cache);
		cache_drops_forget(cache, held);
		return -1;
	}
	if (found > 0) {
		log_info("cache %s: mailbox %s: UIDVALIDITY changed from %" PRIu32 " to %" PRIu32
			 "; its cache was dropped", cache->label, name, stored.uidvalidity, uidvalidity);
		if (reset_r != NULL)
			*reset_r = true;
	}
	return 0;
}

int cache_mailbox_set_state(struct cache *cache, int64_t mailbox_id, uint32_t uidnext, uint64_t highestmodseq)
{
	sqlite3_stmt *stmt = cache_stmt(cache, CACHE_STMT_MAILBOX_SET_STATE);

	if (highestmodseq > INT64_MAX) {
		log_warning("cache %s: HIGHESTMODSEQ %" PRIu64 " is out of range; not stored", cache->label,
			    highestmodseq);
		return -1;
	}
	if (!cache_write_allowed(cache))
		return -1;
	sqlite3_bind_int64(stmt, 1, mailbox_id);
	cache_bind_known(stmt, 2, uidnext);
	cache_bind_known(stmt, 3, highestmodseq);
	if (cache_run(cache, stmt, "storing a mailbox's state") < 0)
		return -1;
	return sqlite3_changes(cache->db) == 1 ? 0 : -1;
}

int cache_mailbox_delete(struct cache *cache, const char *name)
{
	struct cache_mailbox stored;
	int found;
	int result;
	size_t held;

	cache_pending_flush(cache);
	found = cache_mailbox_get(cache, name, &stored);
	if (found <= 0)
		return found;
	if (!cache_write_allowed(cache) || cache_op_begin(cache) < 0)
		return -1;
	held = cache->deferred_count;
	result = cache_op_end(cache, cache_mailbox_drop(cache, stored.id));
	if (result < 0) {
		cache_body_bytes_reload(cache);
		cache_drops_forget(cache, held);
	}
	return result;
}

/* ---- UID lists ----
 *
 * A UID list is stored as ranges, each two unsigned LEB128 numbers: the
 * gap from the end of the previous range (or from 0) to the range's first
 * UID, and the range's length less one. 1:100000 is 4 bytes.
 */

static size_t cache_leb128_put(unsigned char *out, uint32_t value)
{
	size_t len = 0;

	do {
		out[len] = value & 0x7f;
		value >>= 7;
		if (value != 0)
			out[len] |= 0x80;
		len++;
	} while (value != 0);
	return len;
}

/* Reads one number at *pos; false when it runs past end or over 32 bits. */
static bool cache_leb128_get(const unsigned char *data, size_t size, size_t *pos, uint32_t *value_r)
{
	uint64_t value = 0;

	for (unsigned int shift = 0; shift < 35; shift += 7) {
		if (*pos >= size)
			return false;
		value |= (uint64_t)(data[*pos] & 0x7f) << shift;
		if ((data[(*pos)++] & 0x80) == 0) {
			*value_r = (uint32_t)value;
			return value <= UINT32_MAX;
		}
	}
	return false;
}

/* Encodes count strictly ascending nonzero UIDs; *size_r bytes, malloc'd. */
static unsigned char *cache_uids_encode(const uint32_t *uids, size_t count, size_t *size_r)
{
	unsigned char *out = malloc(count * CACHE_UID_RANGE_MAX_BYTES + 1);
	uint32_t previous_end = 0;
	size_t len = 0;

	if (out == NULL)
		return NULL;
	for (size_t i = 0; i < count;) {
		size_t j = i;

		while (j + 1 < count && uids[j + 1] == uids[j] + 1)
			j++;
		len += cache_leb128_put(out + len, uids[i] - previous_end);
		len += cache_leb128_put(out + len, uids[j] - uids[i]);
		previous_end = uids[j];
		i = j + 1;
	}
	*size_r = len;
	return out;
}

/* Decodes a stored list; false when it is damaged (or out of memory). */
static bool cache_uids_decode(const unsigned char *data, size_t size, uint32_t **uids_r, size_t *count_r)
{
	uint32_t *uids = NULL;
	size_t count = 0;
	size_t capacity = 0;
	uint64_t previous_end = 0;

	for (size_t pos = 0; pos < size;) {
		uint32_t gap;
		uint32_t run;
		uint64_t first;

		if (!cache_leb128_get(data, size, &pos, &gap) || !cache_leb128_get(data, size, &pos, &run))
			goto fail;
		first = previous_end + gap;
		if (gap == 0 || first + run > UINT32_MAX || count + run + 1 > CACHE_MAILBOX_MAX_UIDS)
			goto fail;
		if (count + run + 1 > capacity) {
			size_t wanted = capacity * 2 > count + run + 1 ? capacity * 2 : count + run + 1;
			uint32_t *grown = realloc(uids, wanted * sizeof(*uids));

			if (grown == NULL)
				goto fail;
			uids = grown;
			capacity = wanted;
		}
		for (uint64_t uid = first; uid <= first + run; uid++)
			uids[count++] = (uint32_t)uid;
		previous_end = first + run;
	}
	*uids_r = uids;
	*count_r = count;
	return true;
fail:
	free(uids);
	return false;
}

static bool cache_uids_valid(const uint32_t *uids, size_t count)
{
	for (size_t i = 0; i < count; i++) {
		if (uids[i] == 0 || (i > 0 && uids[i] <= uids[i - 1]))
			return false;
	}
	return count <= CACHE_MAILBOX_MAX_UIDS;
}

/* Stores the list without the checks of cache_mailbox_set_uids. */
static int cache_uids_store(struct cache *cache, int64_t mailbox_id, const uint32_t *uids, size_t count)
{
	sqlite3_stmt *stmt = cache_stmt(cache, CACHE_STMT_MAILBOX_SET_UIDS);
	size_t size = 0;
	unsigned char *encoded = cache_uids_encode(uids, count, &size);
	int result;

	if (encoded == NULL) {
		log_error("cache %s: out of memory storing a UID list", cache->label);
		return -1;
	}
	sqlite3_bind_int64(stmt, 1, mailbox_id);
	cache_bind_value(stmt, 2, encoded, size);
	result = cache_run(cache, stmt, "storing a UID list");
	free(encoded);
	if (result == 0 && sqlite3_changes(cache->db) != 1)
		result = -1;
	return result;
}

int cache_mailbox_set_uids(struct cache *cache, int64_t mailbox_id, const uint32_t *uids, size_t count)
{
	if (!cache_uids_valid(uids, count)) {
		log_warning("cache %s: a UID list that is not strictly ascending, has 0 or is too long; not stored",
			    cache->label);
		return -1;
	}
	if (!cache_write_allowed(cache))
		return -1;
	return cache_uids_store(cache, mailbox_id, uids, count);
}

int cache_mailbox_get_uids(struct cache *cache, int64_t mailbox_id, uint32_t **uids_r, size_t *count_r)
{
	sqlite3_stmt *stmt = cache_stmt(cache, CACHE_STMT_MAILBOX_GET_UIDS);
	int rc;
	int result = 0;

	*uids_r = NULL;
	*count_r = 0;
	sqlite3_bind_int64(stmt, 1, mailbox_id);
	rc = sqlite3_step(stmt);
	if (rc == SQLITE_ROW && sqlite3_column_type(stmt, 0) != SQLITE_NULL) {
		result = cache_uids_decode(sqlite3_column_blob(stmt, 0), (size_t)sqlite3_column_bytes(stmt, 0),
					   uids_r, count_r) ? 1 : 0;
		if (result == 0)
			log_warning("cache %s: a stored UID list is damaged; counted as not known", cache->label);
	}
	return cache_row_end(cache, stmt, rc, result, "reading a UID list");
}

int cache_mailbox_set_flag_list(struct cache *cache, int64_t mailbox_id, const char *text)
{
	sqlite3_stmt *stmt = cache_stmt(cache, CACHE_STMT_MAILBOX_SET_FLAG_LIST);

	if (!cache_write_allowed(cache))
		return -1;
	sqlite3_bind_int64(stmt, 1, mailbox_id);
	sqlite3_bind_text(stmt, 2, text, -1, SQLITE_TRANSIENT);
	if (cache_run(cache, stmt, "storing a mailbox's FLAGS") < 0)
		return -1;
	return sqlite3_changes(cache->db) == 1 ? 0 : -1;
}

int cache_mailbox_get_flag_list(struct cache *cache, int64_t mailbox_id, char **text_r)
{
	sqlite3_stmt *stmt = cache_stmt(cache, CACHE_STMT_MAILBOX_GET_FLAG_LIST);
	int rc;
	int result = 0;

	*text_r = NULL;
	sqlite3_bind_int64(stmt, 1, mailbox_id);
	rc = sqlite3_step(stmt);
	if (rc == SQLITE_ROW && sqlite3_column_type(stmt, 0) == SQLITE_TEXT) {
		*text_r = strdup((const char *)sqlite3_column_text(stmt, 0));
		result = *text_r != NULL ? 1 : -1;
	}
	return cache_row_end(cache, stmt, rc, result, "reading a mailbox's FLAGS");
}

int cache_uid_compare(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a;
	uint32_t y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

int cache_message_drop_now(struct cache *cache, int64_t mailbox_id, uint32_t uid)
{
	sqlite3_stmt *stmt = cache_stmt(cache, CACHE_STMT_MESSAGE_DELETE);

	cache_bind_key(stmt, mailbox_id, uid);
	if (cache_run(cache, stmt, "dropping a message") < 0)
		return -1;
	return cache_body_delete(cache, mailbox_id, uid);
}

/* Drops uid's row and body, once no answer reads them. */
static int cache_message_remove(struct cache *cache, int64_t mailbox_id, uint32_t uid)
{
	if (cache_pinned(cache, mailbox_id, uid))
		return cache_drop_defer(cache, mailbox_id, uid);
	return cache_message_drop_now(cache, mailbox_id, uid);
}

/* Removes the sorted uids from the stored UID list, if one is stored. */
static int cache_uids_remove(struct cache *cache, int64_t mailbox_id, const uint32_t *gone, size_t gone_count)
{
	uint32_t *uids = NULL;
	size_t count = 0;
	size_t kept = 0;
	size_t j = 0;
	int known = cache_mailbox_get_uids(cache, mailbox_id, &uids, &count);
	int result;

	if (known <= 0)
		return known;
	for (size_t i = 0; i < count; i++) {
		while (j < gone_count && gone[j] < uids[i])
			j++;
		if (j >= gone_count || gone[j] != uids[i])
			uids[kept++] = uids[i];
	}
	result = kept == count ? 0 : cache_uids_store(cache, mailbox_id, uids, kept);
	free(uids);
	return result;
}

int cache_mailbox_remove_uids(struct cache *cache, int64_t mailbox_id, const uint32_t *uids, size_t count)
{
	uint32_t *sorted;
	int result = 0;
	size_t held;

	if (count == 0)
		return 0;
	cache_pending_flush(cache);
	if (!cache_write_allowed(cache))
		return -1;
	sorted = malloc(count * sizeof(*sorted));
	if (sorted == NULL) {
		log_error("cache %s: out of memory dropping expunged messages", cache->label);
		return -1;
	}
	memcpy(sorted, uids, count * sizeof(*sorted));
	qsort(sorted, count, sizeof(*sorted), cache_uid_compare);
	if (cache_op_begin(cache) < 0) {
		free(sorted);
		return -1;
	}
	held = cache->deferred_count;
	for (size_t i = 0; i < count && result == 0; i++)
		result = cache_message_remove(cache, mailbox_id, sorted[i]);
	if (result == 0)
		result = cache_uids_remove(cache, mailbox_id, sorted, count);
	free(sorted);
	result = cache_op_end(cache, result);
	if (result < 0) {
		cache_body_bytes_reload(cache);
		cache_drops_forget(cache, held);
	}
	return result;
}
