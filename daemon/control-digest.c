/* SPDX-License-Identifier: MIT */
/* control-digest: the DIGEST request, a digest of each value the store would serve of a mailbox's messages. */
#include "config.h"
#include "control-digest.h"

#include "cache-stats.h"
#include "cache.h"
#include "log.h"

#include <event2/buffer.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define CONTROL_DIGEST_HEX (2 * 32 + 1) /* a SHA-256 in hex, with its NUL */

/* What the store holds of one message, as digests. */
struct control_digest_row {
	uint32_t uid;
	unsigned int present, damaged; /* CACHE_HAS() of each */
	uint64_t size, modseq, message_size;
	char hex[CACHE_VALUE_ITEMS][CONTROL_DIGEST_HEX];
};

struct control_digest_rows {
	struct control_digest_row *rows;
	size_t count;
};

static void control_digest_hex(const unsigned char *digest, unsigned int size, char *hex)
{
	static const char digits[] = "0123456789abcdef";

	for (unsigned int i = 0; i < size; i++) {
		hex[2 * i] = digits[digest[i] >> 4];
		hex[2 * i + 1] = digits[digest[i] & 0xf];
	}
	hex[2 * size] = '\0';
}

static void control_digest_value(const struct cache_value *value, char *hex)
{
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned int size = 0;

	if (EVP_Digest(value->data, value->size, digest, &size, EVP_sha256(), NULL) != 1)
		size = 0;
	control_digest_hex(digest, size, hex);
}

/* cache_lookup_many's callback: keeps the digests of message's values. */
static void control_digest_keep(const struct cache_message *message, void *context)
{
	struct control_digest_rows *rows = context;
	struct control_digest_row *row = &rows->rows[rows->count++];

	row->uid = message->uid;
	row->present = message->present;
	row->damaged = message->damaged;
	row->size = message->size;
	row->modseq = message->modseq;
	row->message_size = message->message_size;
	for (unsigned int item = 0; item < CACHE_VALUE_ITEMS; item++) {
		if (message->present & CACHE_HAS(item))
			control_digest_value(&message->values[item], row->hex[item]);
	}
}

/* The UIDs with a row in mailbox_id from first_uid on, at most max of them,
   into uids (max entries). Returns how many, or -1. */
static long control_digest_uids(struct cache *cache, int64_t mailbox_id, uint32_t first_uid, uint32_t *uids,
				size_t max)
{
	sqlite3_stmt *stmt;
	long count = 0;
	int rc;

	if (sqlite3_prepare_v2(cache_sqlite_handle(cache),
			       "SELECT uid FROM messages WHERE mailbox_id = ?1 AND uid >= ?2 ORDER BY uid LIMIT ?3", -1,
			       &stmt, NULL) != SQLITE_OK)
		return -1;
	sqlite3_bind_int64(stmt, 1, mailbox_id);
	sqlite3_bind_int64(stmt, 2, first_uid);
	sqlite3_bind_int64(stmt, 3, (sqlite3_int64)max);
	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW)
		uids[count++] = (uint32_t)sqlite3_column_int64(stmt, 0);
	sqlite3_finalize(stmt);
	return rc == SQLITE_DONE ? count : -1;
}

/* The SHA-256 of uid's whole message into hex, read a piece at a time.
   Returns 1, 0 when it is damaged (the read dropped it), -1 on error. */
static int control_digest_message(struct cache *cache, int64_t mailbox_id, const struct control_digest_row *row,
				  char *hex)
{
	EVP_MD_CTX *sha = EVP_MD_CTX_new();
	struct evbuffer *piece = evbuffer_new();
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned int size = 0;
	int result = 1;

	if (sha == NULL || piece == NULL || EVP_DigestInit_ex(sha, EVP_sha256(), NULL) != 1)
		result = -1;
	for (uint64_t offset = 0; result == 1 && (offset < row->message_size || offset == 0);
	     offset += CONTROL_DIGEST_PIECE) {
		result = cache_body_read(cache, mailbox_id, row->uid, offset, CONTROL_DIGEST_PIECE, piece);
		if (result == 1 && EVP_DigestUpdate(sha, evbuffer_pullup(piece, -1), evbuffer_get_length(piece)) != 1)
			result = -1;
		evbuffer_drain(piece, evbuffer_get_length(piece));
		if (row->message_size == 0)
			break;
	}
	if (result == 1 && EVP_DigestFinal_ex(sha, digest, &size) != 1)
		result = -1;
	if (result == 1)
		control_digest_hex(digest, size, hex);
	EVP_MD_CTX_free(sha);
	if (piece != NULL)
		evbuffer_free(piece);
	return result;
}

/* Appends row's lines; message_hex NULL: its whole message is damaged. */
static void control_digest_write(const struct control_digest_row *row, const char *message_hex,
				 struct evbuffer *out)
{
	for (unsigned int item = 0; item < CACHE_VALUE_ITEMS; item++) {
		const char *name = cache_stats_kind_name((enum cache_item)item);

		if (row->present & CACHE_HAS(item))
			evbuffer_add_printf(out, "VALUE\t%" PRIu32 "\t%s\t%s\n", row->uid, name, row->hex[item]);
		else if (row->damaged & CACHE_HAS(item))
			evbuffer_add_printf(out, "DAMAGED\t%" PRIu32 "\t%s\n", row->uid, name);
	}
	if (row->present & CACHE_HAS(CACHE_ITEM_SIZE))
		evbuffer_add_printf(out, "VALUE\t%" PRIu32 "\tsize\t%" PRIu64 "\n", row->uid, row->size);
	if (row->present & CACHE_HAS(CACHE_ITEM_MODSEQ))
		evbuffer_add_printf(out, "VALUE\t%" PRIu32 "\tmodseq\t%" PRIu64 "\n", row->uid, row->modseq);
	if (message_hex != NULL)
		evbuffer_add_printf(out, "VALUE\t%" PRIu32 "\tmessage\t%s\n", row->uid, message_hex);
	else if ((row->present | row->damaged) & CACHE_HAS(CACHE_ITEM_MESSAGE))
		evbuffer_add_printf(out, "DAMAGED\t%" PRIu32 "\tmessage\n", row->uid);
}

/* Appends the line of uid's stored PREVIEW, when there is one. Returns 0 or -1. */
static int control_digest_preview(struct cache *cache, int64_t mailbox_id, uint32_t uid, struct evbuffer *out)
{
	struct evbuffer *value = evbuffer_new();
	struct cache_value stored;
	char hex[CONTROL_DIGEST_HEX];
	int found = value != NULL ? cache_lookup_preview(cache, mailbox_id, uid, value) : -1;

	if (found == 1) {
		stored = (struct cache_value){ evbuffer_pullup(value, -1), evbuffer_get_length(value) };
		control_digest_value(&stored, hex);
		evbuffer_add_printf(out, "VALUE\t%" PRIu32 "\tpreview\t%s\n", uid, hex);
	} else if (found == 2) {
		evbuffer_add_printf(out, "DAMAGED\t%" PRIu32 "\tpreview\n", uid);
	}
	if (value != NULL)
		evbuffer_free(value);
	return found < 0 ? -1 : 0;
}

/* Writes the rows' lines until the body budget of one answer is spent;
   NEXT for the rest. Returns 0 or -1. */
static int control_digest_rows(struct cache *cache, int64_t mailbox_id, const struct control_digest_rows *rows,
			       uint32_t next_uid, struct evbuffer *out)
{
	uint64_t body_bytes = 0;

	for (size_t i = 0; i < rows->count; i++) {
		const struct control_digest_row *row = &rows->rows[i];
		char message_hex[CONTROL_DIGEST_HEX];
		int found = 0;

		if (i > 0 && body_bytes >= CONTROL_DIGEST_BODY_BYTES) {
			next_uid = row->uid;
			break;
		}
		if (row->present & CACHE_HAS(CACHE_ITEM_MESSAGE)) {
			found = control_digest_message(cache, mailbox_id, row, message_hex);
			if (found < 0)
				return -1;
			body_bytes += row->message_size;
		}
		control_digest_write(row, found == 1 ? message_hex : NULL, out);
		if (control_digest_preview(cache, mailbox_id, row->uid, out) < 0)
			return -1;
	}
	if (next_uid != 0)
		evbuffer_add_printf(out, "NEXT\t%" PRIu32 "\n", next_uid);
	return 0;
}

/* The lines of up to CONTROL_DIGEST_MESSAGES messages from first_uid on
   into lines. Returns 0 or -1. */
static int control_digest_batch(struct cache *cache, int64_t mailbox_id, uint32_t first_uid, struct evbuffer *lines)
{
	struct control_digest_rows rows = { 0 };
	uint32_t uids[CONTROL_DIGEST_MESSAGES + 1];
	long count = control_digest_uids(cache, mailbox_id, first_uid, uids, CONTROL_DIGEST_MESSAGES + 1);
	size_t taken = count > CONTROL_DIGEST_MESSAGES ? CONTROL_DIGEST_MESSAGES : (size_t)(count > 0 ? count : 0);
	uint32_t next_uid = count > CONTROL_DIGEST_MESSAGES ? uids[CONTROL_DIGEST_MESSAGES] : 0;
	int result = -1;

	if (count <= 0)
		return count == 0 ? 0 : -1;
	rows.rows = calloc(taken, sizeof(*rows.rows));
	if (rows.rows != NULL && cache_lookup_many(cache, mailbox_id, uids, taken, control_digest_keep, &rows) >= 0)
		result = control_digest_rows(cache, mailbox_id, &rows, next_uid, lines);
	free(rows.rows);
	return result;
}

enum control_digest_result control_digest_mailbox(struct cache *cache, const char *mailbox, uint32_t first_uid,
						   struct evbuffer *out)
{
	struct cache_mailbox stored;
	struct evbuffer *lines;
	int found = cache_mailbox_lookup(cache, mailbox, &stored);

	if (found <= 0)
		return found == 0 ? CONTROL_DIGEST_NO_MAILBOX : CONTROL_DIGEST_FAILED;
	lines = evbuffer_new();
	if (lines == NULL)
		return CONTROL_DIGEST_FAILED;
	evbuffer_add_printf(lines, "MAILBOX\t%" PRIu32 "\t%" PRIu64 "\n", stored.uidvalidity, stored.highestmodseq);
	if (control_digest_batch(cache, stored.id, first_uid, lines) < 0) {
		log_warning("control: DIGEST of %s failed", mailbox);
		evbuffer_free(lines);
		return CONTROL_DIGEST_FAILED;
	}
	evbuffer_add_buffer(out, lines);
	evbuffer_free(lines);
	return CONTROL_DIGEST_DONE;
}
