/* SPDX-License-Identifier: MIT */
/* cache-preview: the upstream's PREVIEW of a message, kept as it wrote it (cache.h). */
#include "config.h"
#include "cache.h"
#include "cache-checksum.h"
#include "cache-private.h"
#include "log.h"

#include <event2/buffer.h>
#include <inttypes.h>
#include <sqlite3.h>

int cache_store_preview(struct cache *cache, int64_t mailbox_id, uint32_t uid, const void *value, size_t size)
{
	struct cache_fetched fetched = { .preview = { (unsigned char *)value, size } };

	return value != NULL ? cache_store_fetched(cache, mailbox_id, uid, &fetched) : -1;
}

int cache_preview_write(struct cache *cache, int64_t mailbox_id, uint32_t uid, const struct cache_value *preview)
{
	sqlite3_stmt *stmt = cache_stmt(cache, CACHE_STMT_PREVIEW_STORE);

	cache_bind_key(stmt, mailbox_id, uid);
	cache_bind_value(stmt, 3, preview->data, preview->size);
	cache_bind_checksum(stmt, 4, preview->data, preview->size);
	return cache_run(cache, stmt, "storing a message's PREVIEW");
}

/* Drops a stored PREVIEW that failed its checksum. */
static void cache_preview_drop(struct cache *cache, int64_t mailbox_id, uint32_t uid)
{
	sqlite3_stmt *stmt;

	log_warning("cache %s: the stored PREVIEW of UID %" PRIu32 " fails its checksum; fetched afresh and dropped",
		    cache->label, uid);
	if (!cache_write_allowed(cache))
		return;
	stmt = cache_stmt(cache, CACHE_STMT_PREVIEW_DROP);
	cache_bind_key(stmt, mailbox_id, uid);
	(void)cache_run(cache, stmt, "dropping a damaged PREVIEW");
}

int cache_lookup_preview(struct cache *cache, int64_t mailbox_id, uint32_t uid, struct evbuffer *out)
{
	sqlite3_stmt *stmt = cache_stmt(cache, CACHE_STMT_PREVIEW_GET);
	const void *value;
	int size, rc, result = 0;

	cache_pending_flush_rows(cache); /* a held row's PREVIEW counts as stored */
	cache_bind_key(stmt, mailbox_id, uid);
	rc = sqlite3_step(stmt);
	if (rc == SQLITE_ROW) {
		value = sqlite3_column_blob(stmt, 0);
		size = sqlite3_column_bytes(stmt, 0);
		if (size > 0 && cache_column_vouches(stmt, 1, value, (size_t)size))
			result = evbuffer_add(out, value, (size_t)size) == 0 ? 1 : -1;
		else
			result = 2; /* damaged: dropped once the statement is reset */
	} else if (rc != SQLITE_DONE) {
		result = -1;
	}
	sqlite3_reset(stmt);
	sqlite3_clear_bindings(stmt);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		cache_fail(cache, rc, "reading a message's PREVIEW");
	if (result == 2)
		cache_preview_drop(cache, mailbox_id, uid);
	return result;
}
