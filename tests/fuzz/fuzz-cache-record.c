/* SPDX-License-Identifier: MIT */
/* fuzz-cache-record: any bytes in a stored row never crash a lookup; a value that fails its checksum, a damaged body or UID list counts as missing. */
#include "config.h"
#include "cache-checksum.h"
#include "cache-private.h"
#include "log.h"

#include <event2/buffer.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * The input is read as a list of choices (fuzz_take_*): for up to
 * FUZZ_RECORD_ROWS messages, each column's type and bytes, each checksum
 * right or wrong, a body's row and pieces; then the mailbox's UID list.
 * They are written with raw SQL, as damage on disk would leave them,
 * and then the daemon's lookups run: body reads first (so that nothing
 * was dropped yet), cache_lookup, cache_lookup_many, presence, flags and
 * the UID list. What each may return is checked against what was written.
 */

#define FUZZ_RECORD_ROWS 4         /* rows per input: enough for dense and sparse lookups */
#define FUZZ_RECORD_CHUNKS 4       /* body pieces per message */
#define FUZZ_RECORD_VALUE_MAX 64   /* bytes of a column from the input */
#define FUZZ_RECORD_UIDS_LIST_MAX 4096 /* a decoded UID list the reference holds; longer ones are not compared */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The input, consumed from the front; zeros once it runs out. */
struct fuzz_input {
	const uint8_t *data;
	size_t size;
};

static uint8_t fuzz_take_byte(struct fuzz_input *input)
{
	if (input->size == 0)
		return 0;
	input->size--;
	return *input->data++;
}

static int64_t fuzz_take_int64(struct fuzz_input *input)
{
	uint64_t value = 0;

	for (int i = 0; i < 8; i++)
		value = value << 8 | fuzz_take_byte(input);
	return (int64_t)value;
}

/* Up to max bytes (the count taken first); returns how many, *bytes_r
   pointing into the input. */
static size_t fuzz_take_bytes(struct fuzz_input *input, size_t max, const uint8_t **bytes_r)
{
	size_t len = fuzz_take_byte(input) % (max + 1);

	len = len < input->size ? len : input->size;
	*bytes_r = input->data;
	input->data += len;
	input->size -= len;
	return len;
}

enum fuzz_kind { FUZZ_NULL, FUZZ_BLOB, FUZZ_INTEGER, FUZZ_TEXT, FUZZ_REAL, FUZZ_KINDS };
enum fuzz_sum { FUZZ_SUM_NULL, FUZZ_SUM_RIGHT, FUZZ_SUM_NUMBER, FUZZ_SUM_BLOB, FUZZ_SUMS };

/* A column as written. */
struct fuzz_column {
	enum fuzz_kind kind;
	const uint8_t *bytes;      /* BLOB and TEXT */
	size_t len;
	int64_t number;            /* INTEGER; REAL is number / 7.0 */
};

struct fuzz_chunk {
	int64_t index;
	unsigned char *data;
	size_t len;
	bool sum_right;
};

/* What was written of one message. */
struct fuzz_row {
	uint32_t uid;
	struct fuzz_column values[CACHE_VALUE_ITEMS];     /* INTERNALDATE .. FLAGS */
	enum fuzz_sum sums[CACHE_SUMMED_ITEMS];
	int64_t sum_numbers[CACHE_SUMMED_ITEMS];
	struct fuzz_column numbers[3];                    /* size, modseq, structure_agrees */
	bool has_body;
	int64_t body_size;
	int64_t body_complete;
	struct fuzz_chunk chunks[FUZZ_RECORD_CHUNKS];
	unsigned int chunk_count;
};

static const char *const fuzz_value_columns[CACHE_VALUE_ITEMS] = {
	"internaldate", "envelope", "bodystructure", "body_item", "header", "flags",
};
static const uint32_t fuzz_uids[] = { 1, 2, 3, 4, 5, 6, 50, 4000000000u };

static struct cache *store;
static uint32_t store_uidvalidity;
static char store_dir[64];

/* The store's log lines: dropped, or with FUZZ_CACHE_RECORD_VERBOSE set printed. */
static void fuzz_log_drop(enum log_level level, const char *line, void *context)
{
	(void)level;
	(void)context;
	if (getenv("FUZZ_CACHE_RECORD_VERBOSE") != NULL)
		fprintf(stderr, "log: %s\n", line);
}

static void fuzz_open_store(void)
{
	struct cache_settings settings = { .body_budget = 1 << 24, .body_max_size = 1 << 24 };
	char dir[128];
	const char *error;

	snprintf(dir, sizeof(dir), "%s/cache", store_dir);
	settings.dir = dir;
	store = cache_open(&settings, "up", "fuzz", &error);
	if (store == NULL)
		abort();
}

static void fuzz_remove_store(void)
{
	char command[128];

	cache_unref(&store);
	snprintf(command, sizeof(command), "rm -rf '%s'", store_dir);
	if (system(command) != 0)
		fprintf(stderr, "fuzz-cache-record: could not remove %s\n", store_dir);
}

/* ---- writing the rows ---- */

static void fuzz_take_column(struct fuzz_input *input, struct fuzz_column *column)
{
	column->kind = (enum fuzz_kind)(fuzz_take_byte(input) % FUZZ_KINDS);
	if (column->kind == FUZZ_BLOB || column->kind == FUZZ_TEXT)
		column->len = fuzz_take_bytes(input, FUZZ_RECORD_VALUE_MAX, &column->bytes);
	else if (column->kind == FUZZ_INTEGER || column->kind == FUZZ_REAL)
		column->number = fuzz_take_byte(input) < 128 ? (int8_t)fuzz_take_byte(input) : fuzz_take_int64(input);
}

static void fuzz_bind_column(sqlite3_stmt *stmt, int index, const struct fuzz_column *column)
{
	switch (column->kind) {
	case FUZZ_NULL: sqlite3_bind_null(stmt, index); break;
	case FUZZ_BLOB: sqlite3_bind_blob(stmt, index, column->len > 0 ? column->bytes : (const void *)"", (int)column->len,
					  SQLITE_STATIC); break;
	case FUZZ_TEXT: sqlite3_bind_text(stmt, index, column->len > 0 ? (const char *)column->bytes : "", (int)column->len,
					  SQLITE_STATIC); break;
	case FUZZ_INTEGER: sqlite3_bind_int64(stmt, index, column->number); break;
	default: sqlite3_bind_double(stmt, index, (double)column->number / 7.0); break;
	}
}

/* Runs one SQL statement with the row's key as ?1, ?2; errors (a foreign
   key, a type) only mean the row is not as planned, which the checks
   allow for by reading nothing into it. */
static int fuzz_exec(const char *sql, const struct fuzz_row *row, int64_t mailbox_id,
		     void (*bind)(sqlite3_stmt *stmt, const struct fuzz_row *row, const void *extra), const void *extra)
{
	sqlite3 *db = cache_sqlite_handle(store);
	sqlite3_stmt *stmt;
	int rc;

	if (sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) != SQLITE_OK)
		abort();
	sqlite3_bind_int64(stmt, 1, mailbox_id);
	sqlite3_bind_int64(stmt, 2, row->uid);
	if (bind != NULL)
		bind(stmt, row, extra);
	rc = sqlite3_step(stmt);
	sqlite3_finalize(stmt);
	return rc == SQLITE_DONE ? 0 : -1;
}

static void fuzz_bind_message(sqlite3_stmt *stmt, const struct fuzz_row *row, const void *extra)
{
	(void)extra;
	for (int i = 0; i < CACHE_VALUE_ITEMS; i++)
		fuzz_bind_column(stmt, 3 + i, &row->values[i]);
	for (int i = 0; i < 3; i++)
		fuzz_bind_column(stmt, 3 + CACHE_VALUE_ITEMS + i, &row->numbers[i]);
	for (int i = 0; i < CACHE_SUMMED_ITEMS; i++) {
		int index = 6 + CACHE_VALUE_ITEMS + i;

		if (row->sums[i] == FUZZ_SUM_NUMBER)
			sqlite3_bind_int64(stmt, index, row->sum_numbers[i]);
		else if (row->sums[i] == FUZZ_SUM_BLOB)
			sqlite3_bind_blob(stmt, index, &row->sum_numbers[i], sizeof(row->sum_numbers[i]), SQLITE_STATIC);
		else
			sqlite3_bind_null(stmt, index);
	}
}

static void fuzz_bind_body(sqlite3_stmt *stmt, const struct fuzz_row *row, const void *extra)
{
	(void)extra;
	sqlite3_bind_int64(stmt, 3, row->body_size);
	sqlite3_bind_int64(stmt, 4, row->body_complete);
}

static void fuzz_bind_chunk(sqlite3_stmt *stmt, const struct fuzz_row *row, const void *extra)
{
	const struct fuzz_chunk *chunk = extra;

	(void)row;
	sqlite3_bind_int64(stmt, 3, chunk->index);
	sqlite3_bind_blob(stmt, 4, chunk->len > 0 ? chunk->data : (const void *)"", (int)chunk->len, SQLITE_STATIC);
	if (chunk->sum_right)
		sqlite3_bind_int64(stmt, 5, cache_checksum_column(chunk->data, chunk->len));
	else
		sqlite3_bind_int64(stmt, 5, cache_checksum_column(chunk->data, chunk->len) ^ 1);
}

/* Reads a message's columns from the input and writes its row. */
static void fuzz_write_message(struct fuzz_input *input, struct fuzz_row *row, int64_t mailbox_id)
{
	char sql[256];

	for (int i = 0; i < CACHE_VALUE_ITEMS; i++)
		fuzz_take_column(input, &row->values[i]);
	for (int i = 0; i < 3; i++)
		fuzz_take_column(input, &row->numbers[i]);
	for (int i = 0; i < CACHE_SUMMED_ITEMS; i++) {
		row->sums[i] = (enum fuzz_sum)(fuzz_take_byte(input) % FUZZ_SUMS);
		if (row->sums[i] == FUZZ_SUM_NUMBER || row->sums[i] == FUZZ_SUM_BLOB)
			row->sum_numbers[i] = fuzz_take_int64(input);
	}
	if (fuzz_exec("INSERT INTO messages(mailbox_id, uid, internaldate, envelope, bodystructure, body_item, header,"
		      " flags, size, modseq, structure_agrees, internaldate_sum, envelope_sum, bodystructure_sum,"
		      " body_item_sum, header_sum) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15,"
		      " ?16)", row, mailbox_id, fuzz_bind_message, NULL) < 0)
		abort();
	for (int i = 0; i < CACHE_SUMMED_ITEMS; i++) {
		if (row->sums[i] != FUZZ_SUM_RIGHT)
			continue;
		/* the store's own SQL function, as its migration computes them */
		snprintf(sql, sizeof(sql), "UPDATE messages SET %s_sum = imapcached_checksum(%s) WHERE mailbox_id = ?1"
			 " AND uid = ?2", fuzz_value_columns[i], fuzz_value_columns[i]);
		if (fuzz_exec(sql, row, mailbox_id, NULL, NULL) < 0)
			abort();
	}
}

/* Reads a body's row and pieces from the input and writes them. */
static void fuzz_write_body(struct fuzz_input *input, struct fuzz_row *row, int64_t mailbox_id)
{
	uint64_t total = 0;
	uint8_t size_kind;

	row->chunk_count = fuzz_take_byte(input) % (FUZZ_RECORD_CHUNKS + 1);
	for (unsigned int i = 0; i < row->chunk_count; i++) {
		struct fuzz_chunk *chunk = &row->chunks[i];
		uint8_t how = fuzz_take_byte(input);
		const uint8_t *bytes;

		chunk->index = how % 8 < 6 ? (int64_t)i : how % 8 == 6 ? (int64_t)(i + 1) : fuzz_take_int64(input);
		for (unsigned int j = 0; j < i; j++) {
			if (row->chunks[j].index == chunk->index) {
				chunk->index = (int64_t)((uint64_t)chunk->index + 1); /* the key is unique: the next one free */
				j = (unsigned int)-1;
			}
		}
		chunk->sum_right = (how & 0x30) != 0x30;
		if ((how & 0x40) != 0) {
			/* a whole piece, so that bodies of several pieces can be sound */
			chunk->len = CACHE_BODY_CHUNK_SIZE - ((how & 0x80) != 0);
			chunk->data = malloc(chunk->len);
			if (chunk->data == NULL)
				abort();
			memset(chunk->data, fuzz_take_byte(input), chunk->len);
		} else {
			chunk->len = fuzz_take_bytes(input, FUZZ_RECORD_VALUE_MAX, &bytes);
			chunk->data = malloc(chunk->len + 1);
			if (chunk->data == NULL)
				abort();
			memcpy(chunk->data, bytes, chunk->len);
		}
		total += chunk->len;
	}
	size_kind = fuzz_take_byte(input);
	row->body_size = size_kind % 4 == 0 ? (int64_t)total : size_kind % 4 == 1 ? (int64_t)(size_kind >> 2) :
			 size_kind % 4 == 2 ? fuzz_take_int64(input) : -(int64_t)(size_kind >> 2);
	row->body_complete = fuzz_take_byte(input) % 3 == 0 ? 0 : 1;
	if (fuzz_exec("INSERT INTO bodies(mailbox_id, uid, size, complete, last_used) VALUES(?1, ?2, ?3, ?4, 0)", row,
		      mailbox_id, fuzz_bind_body, NULL) < 0)
		abort();
	for (unsigned int i = 0; i < row->chunk_count; i++) {
		if (fuzz_exec("INSERT INTO body_chunks(mailbox_id, uid, chunk, data, sum) VALUES(?1, ?2, ?3, ?4, ?5)", row,
			      mailbox_id, fuzz_bind_chunk, &row->chunks[i]) < 0)
			abort();
	}
	row->has_body = true;
}

/* ---- the checks ---- */

/* Whether a summed value of row is sound as written: a value with the
   right checksum (a number that happens to equal it counts too). */
static bool fuzz_value_sound(const struct fuzz_row *row, unsigned int item)
{
	const struct fuzz_column *value = &row->values[item];

	if (value->kind == FUZZ_NULL)
		return false;
	if (item >= CACHE_SUMMED_ITEMS || row->sums[item] == FUZZ_SUM_RIGHT)
		return true;
	return row->sums[item] == FUZZ_SUM_NUMBER && (value->kind == FUZZ_BLOB || value->kind == FUZZ_TEXT) &&
	       row->sum_numbers[item] == cache_checksum_column(value->len > 0 ? value->bytes : (const uint8_t *)"",
							       value->len);
}

/* A looked-up message agrees with its row: exactly the sound values are
   there, blob and text ones byte for byte. */
static void fuzz_check_message(const struct fuzz_row *row, const struct cache_message *message)
{
	if (message->uid != row->uid)
		abort();
	for (unsigned int item = 0; item < CACHE_VALUE_ITEMS; item++) {
		const struct fuzz_column *value = &row->values[item];
		bool present = (message->present & CACHE_HAS(item)) != 0;

		if (present != fuzz_value_sound(row, item) || present != (message->values[item].data != NULL))
			abort();
		if (present && (value->kind == FUZZ_BLOB || value->kind == FUZZ_TEXT) &&
		    (message->values[item].size != value->len ||
		     (value->len > 0 && memcmp(message->values[item].data, value->bytes, value->len) != 0)))
			abort();
	}
}

/* The bytes [offset, end) of row's body when every piece that holds them
   is sound, in out; false when one is missing or damaged. */
static bool fuzz_body_expected(const struct fuzz_row *row, uint64_t size, uint64_t offset, uint64_t end,
			       struct evbuffer *out)
{
	uint64_t first = offset / CACHE_BODY_CHUNK_SIZE, last = (end - 1) / CACHE_BODY_CHUNK_SIZE;

	if (last - first >= FUZZ_RECORD_CHUNKS)
		return false; /* more pieces than were written */
	for (uint64_t index = first; index <= last; index++) {
		uint64_t start = index * CACHE_BODY_CHUNK_SIZE;
		uint64_t length = size - start < CACHE_BODY_CHUNK_SIZE ? size - start : CACHE_BODY_CHUNK_SIZE;
		const struct fuzz_chunk *chunk = NULL;

		for (unsigned int i = 0; i < row->chunk_count; i++) {
			if (row->chunks[i].index == (int64_t)index)
				chunk = &row->chunks[i];
		}
		if (chunk == NULL || chunk->len != length || !chunk->sum_right)
			return false;
		uint64_t from = offset > start ? offset - start : 0;
		uint64_t to = end - start < length ? end - start : length;
		evbuffer_add(out, chunk->data + from, (size_t)(to - from));
	}
	return true;
}

/* A lookup's whole message is there only when complete and sound. */
static void fuzz_check_message_body(const struct fuzz_row *row, const struct cache_message *message)
{
	uint64_t size = (uint64_t)row->body_size;
	struct evbuffer *whole;

	if ((message->present & CACHE_HAS(CACHE_ITEM_MESSAGE)) == 0)
		return;
	whole = evbuffer_new();
	if (!row->has_body || row->body_complete != 1 || message->message_size != size ||
	    (size > 0 && !fuzz_body_expected(row, size, 0, size, whole)))
		abort();
	evbuffer_free(whole);
}

/* Reads [offset, offset + length) of row's body and checks the answer. */
static void fuzz_check_body_read(const struct fuzz_row *row, int64_t mailbox_id, uint64_t offset, uint64_t length)
{
	struct evbuffer *got = evbuffer_new(), *expected = evbuffer_new();
	bool complete = row->has_body && row->body_complete == 1;
	uint64_t size = row->body_size > 0 ? (uint64_t)row->body_size : 0;
	uint64_t end = length > size - (offset < size ? offset : size) ? size : offset + length;
	bool sound = offset >= end || fuzz_body_expected(row, size, offset, end, expected);
	int result = cache_body_read(store, mailbox_id, row->uid, offset, length, got);

	if (result != (complete && sound ? 1 : 0))
		abort();
	if (evbuffer_get_length(got) != (result == 1 ? evbuffer_get_length(expected) : 0))
		abort();
	if (result == 1 && evbuffer_get_length(got) > 0 &&
	    memcmp(evbuffer_pullup(got, -1), evbuffer_pullup(expected, -1), evbuffer_get_length(got)) != 0)
		abort();
	evbuffer_free(got);
	evbuffer_free(expected);
}

struct fuzz_many {
	const struct cache_message *looked_up; /* cache_lookup's answers, per row */
	const struct fuzz_row *rows;
	size_t count;
	long calls;
};

/* cache_lookup_many's callback: the same as cache_lookup said. */
static void fuzz_take_many(const struct cache_message *message, void *context)
{
	struct fuzz_many *many = context;
	size_t i = 0;

	while (i < many->count && many->rows[i].uid != message->uid)
		i++;
	if (i == many->count)
		abort(); /* a UID that has no row */
	fuzz_check_message(&many->rows[i], message);
	if (message->present != many->looked_up[i].present)
		abort();
	many->calls++;
}

struct fuzz_presence {
	const struct cache_message *looked_up;
	const struct fuzz_row *rows;
	size_t count;
};

/* After a lookup, damaged values are gone from the store: what presence
   reports is what the lookup found. */
static void fuzz_take_presence(const struct cache_presence *presence, void *context)
{
	const struct fuzz_presence *all = context;
	unsigned int values = CACHE_HAS(CACHE_VALUE_ITEMS) - 1;

	for (size_t i = 0; i < all->count; i++) {
		if (all->rows[i].uid == presence->uid &&
		    (presence->present & values) != (all->looked_up[i].present & values))
			abort();
	}
}

static void fuzz_take_flags(uint32_t uid, const char *flags, size_t len, uint64_t modseq, void *context)
{
	volatile size_t *sum = context;

	*sum += uid + modseq + (len > 0 ? (unsigned char)flags[0] + (unsigned char)flags[len - 1] : 0);
}

/* The UID list as the store's ranges encode it (two LEB128 numbers per
   range: the gap from the previous end, the length less one); false when
   it does not read as one or holds more than max UIDs. */
static bool fuzz_decode_uids(const uint8_t *data, size_t size, uint32_t *uids, size_t max, size_t *count_r)
{
	uint64_t previous_end = 0;
	size_t count = 0;

	for (size_t pos = 0; pos < size;) {
		uint64_t numbers[2] = { 0, 0 };

		for (int n = 0; n < 2; n++) {
			unsigned int shift = 0;

			for (;;) {
				if (pos >= size || shift >= 35)
					return false;
				numbers[n] |= (uint64_t)(data[pos] & 0x7f) << shift;
				shift += 7;
				if ((data[pos++] & 0x80) == 0)
					break;
			}
			if (numbers[n] > UINT32_MAX)
				return false;
		}
		if (numbers[0] == 0 || previous_end + numbers[0] + numbers[1] > UINT32_MAX ||
		    count + numbers[1] + 1 > max)
			return false;
		for (uint64_t uid = previous_end + numbers[0]; uid <= previous_end + numbers[0] + numbers[1]; uid++)
			uids[count++] = (uint32_t)uid;
		previous_end += numbers[0] + numbers[1];
	}
	*count_r = count;
	return true;
}

/* Writes the input's bytes as the mailbox's UID list and reads it back. */
static void fuzz_check_uids(struct fuzz_input *input, int64_t mailbox_id)
{
	static uint32_t expected[FUZZ_RECORD_UIDS_LIST_MAX];
	const uint8_t *bytes;
	size_t len = fuzz_take_bytes(input, FUZZ_RECORD_VALUE_MAX, &bytes), count = 0, expected_count = 0;
	uint32_t *uids = NULL;
	bool decodes = fuzz_decode_uids(bytes, len, expected, FUZZ_RECORD_UIDS_LIST_MAX, &expected_count);
	struct fuzz_column column = { .kind = FUZZ_BLOB, .bytes = bytes, .len = len };
	sqlite3_stmt *stmt;
	int result;

	if (sqlite3_prepare_v2(cache_sqlite_handle(store), "UPDATE mailboxes SET uids = ?2 WHERE id = ?1", -1, &stmt,
			       NULL) != SQLITE_OK)
		abort();
	sqlite3_bind_int64(stmt, 1, mailbox_id);
	fuzz_bind_column(stmt, 2, &column);
	if (sqlite3_step(stmt) != SQLITE_DONE)
		abort();
	sqlite3_finalize(stmt);
	result = cache_mailbox_get_uids(store, mailbox_id, &uids, &count);
	if (result == 1) {
		for (size_t i = 0; i < count; i++) {
			if (uids[i] == 0 || (i > 0 && uids[i] <= uids[i - 1]))
				abort();
		}
		if (count <= FUZZ_RECORD_UIDS_LIST_MAX &&
		    (!decodes || count != expected_count || (count > 0 && memcmp(uids, expected, count * 4) != 0)))
			abort();
	} else if (result != 0 || decodes) {
		abort(); /* a list that reads as one is known */
	}
	free(uids);
}

/* Opens the store at the first run, and anew after one found corrupt
   (which is moved aside at its close). */
static void fuzz_store_ready(void)
{
	if (store == NULL) {
		log_set_sink(fuzz_log_drop, NULL);
		snprintf(store_dir, sizeof(store_dir), "/tmp/fuzz-cache-record-XXXXXX");
		if (mkdtemp(store_dir) == NULL)
			abort();
		atexit(fuzz_remove_store);
		fuzz_open_store();
	}
	if (cache_writes_off(store)) {
		cache_unref(&store);
		fuzz_open_store();
	}
}

/* Writes the input's rows, in ascending UID order, each UID once, in one
   transaction. Returns how many. */
static size_t fuzz_write_rows(struct fuzz_input *input, struct fuzz_row rows[FUZZ_RECORD_ROWS], int64_t mailbox_id)
{
	size_t count = 0, wanted = fuzz_take_byte(input) % FUZZ_RECORD_ROWS + 1;

	memset(rows, 0, FUZZ_RECORD_ROWS * sizeof(rows[0]));
	if (sqlite3_exec(cache_sqlite_handle(store), "BEGIN", NULL, NULL, NULL) != SQLITE_OK)
		abort();
	for (size_t i = 0; i < wanted; i++) {
		uint32_t uid = fuzz_uids[fuzz_take_byte(input) % (sizeof(fuzz_uids) / sizeof(fuzz_uids[0]))];

		if (count > 0 && uid <= rows[count - 1].uid)
			continue;
		rows[count].uid = uid;
		fuzz_write_message(input, &rows[count], mailbox_id);
		if (fuzz_take_byte(input) % 2 == 1)
			fuzz_write_body(input, &rows[count], mailbox_id);
		count++;
	}
	if (sqlite3_exec(cache_sqlite_handle(store), "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
		abort();
	cache_body_bytes_reload(store); /* as an open of the damaged file would */
	return count;
}

/* Each body's size and a read of part of it, at offsets from the input. */
static void fuzz_check_bodies(struct fuzz_input *input, const struct fuzz_row *rows, size_t count, int64_t mailbox_id)
{
	for (size_t i = 0; i < count; i++) {
		uint64_t offset = fuzz_take_byte(input), length = fuzz_take_byte(input), body_size;
		int found = cache_body_size(store, mailbox_id, rows[i].uid, &body_size);

		if (found != (rows[i].has_body && rows[i].body_complete == 1) ||
		    (found == 1 && body_size != (rows[i].body_size > 0 ? (uint64_t)rows[i].body_size : 0)))
			abort();
		offset = offset >= 0xf0 ? CACHE_BODY_CHUNK_SIZE * (offset & 0x0f) - 1 : offset * 3;
		length = length == 0xff ? UINT64_MAX : length >= 0xf0 ? CACHE_BODY_CHUNK_SIZE * (length & 0x0f) : length * 5;
		fuzz_check_body_read(&rows[i], mailbox_id, offset, length);
	}
}

/* cache_lookup of each row, then the lookups of many rows at once, which
   must agree with it. */
static void fuzz_check_lookups(const struct fuzz_row *rows, size_t count, int64_t mailbox_id)
{
	struct cache_message looked_up[FUZZ_RECORD_ROWS];
	uint32_t uids[FUZZ_RECORD_ROWS + 1];
	struct fuzz_many many = { looked_up, rows, count, 0 };
	struct fuzz_presence presence = { looked_up, rows, count };
	volatile size_t flags_sum = 0;

	for (size_t i = 0; i < count; i++) {
		if (cache_lookup(store, mailbox_id, rows[i].uid, &looked_up[i]) != 1)
			abort();
		fuzz_check_message(&rows[i], &looked_up[i]);
		fuzz_check_message_body(&rows[i], &looked_up[i]);
		uids[i] = rows[i].uid;
	}
	uids[count] = UINT32_MAX; /* a UID without a row */
	if (cache_lookup_many(store, mailbox_id, uids, count + 1, fuzz_take_many, &many) != (long)count ||
	    many.calls != (long)count)
		abort();
	if (cache_lookup_presence(store, mailbox_id, 1, UINT32_MAX, fuzz_take_presence, &presence) != (long)count)
		abort();
	if (cache_lookup_flags(store, mailbox_id, 1, UINT32_MAX, fuzz_take_flags, (void *)&flags_sum) < 0)
		abort();
	for (size_t i = 0; i < count; i++)
		cache_message_clear(&looked_up[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_input input = { data, size };
	struct fuzz_row rows[FUZZ_RECORD_ROWS];
	struct cache_mailbox mailbox;
	size_t count;

	fuzz_store_ready();
	/* a new UIDVALIDITY: the last input's mailbox is dropped, damaged rows and all */
	if (cache_mailbox_open(store, "INBOX", ++store_uidvalidity, &mailbox, NULL) < 0)
		abort();
	count = fuzz_write_rows(&input, rows, mailbox.id);
	fuzz_check_bodies(&input, rows, count, mailbox.id); /* first: nothing was dropped yet */
	fuzz_check_lookups(rows, count, mailbox.id);
	fuzz_check_uids(&input, mailbox.id);
	for (size_t i = 0; i < count; i++) {
		for (unsigned int c = 0; c < rows[i].chunk_count; c++)
			free(rows[i].chunks[c].data);
	}
	return 0;
}
