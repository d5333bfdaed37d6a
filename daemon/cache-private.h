/* SPDX-License-Identifier: MIT */
/* cache-private: what cache.c, cache-mailbox.c, cache-message.c and cache-body.c share of an account's store. */
#ifndef IMAPCACHED_CACHE_PRIVATE_H
#define IMAPCACHED_CACHE_PRIVATE_H

#include "cache.h"

#include <sqlite3.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* ---- statements ---- */

/* What cache_lookup and cache_lookup_many select of a message. */
#define CACHE_MESSAGE_COLUMNS \
	"m.uid, m.internaldate, m.envelope, m.bodystructure, m.body_item, m.header, m.flags, " \
	"m.size, m.modseq, m.structure_agrees, b.size"

/* The columns CACHE_MESSAGE_COLUMNS selects, in order. */
enum cache_column {
	CACHE_COLUMN_UID,
	CACHE_COLUMN_VALUES, /* CACHE_VALUE_ITEMS of them, in enum cache_item order */
	CACHE_COLUMN_SIZE = CACHE_COLUMN_VALUES + CACHE_VALUE_ITEMS,
	CACHE_COLUMN_MODSEQ,
	CACHE_COLUMN_STRUCTURE_AGREES,
	CACHE_COLUMN_BODY_SIZE,
};

/* The prepared statements of a store; their SQL is in cache.c. */
enum cache_stmt {
	CACHE_STMT_BEGIN,
	CACHE_STMT_COMMIT,
	CACHE_STMT_ROLLBACK,
	CACHE_STMT_SAVEPOINT,
	CACHE_STMT_RELEASE,
	CACHE_STMT_ROLLBACK_TO,
	CACHE_STMT_MAILBOX_GET,
	CACHE_STMT_MAILBOX_INSERT,
	CACHE_STMT_MAILBOX_DELETE,
	CACHE_STMT_MAILBOX_BODY_BYTES,
	CACHE_STMT_MAILBOX_SET_STATE,
	CACHE_STMT_MAILBOX_SET_UIDS,
	CACHE_STMT_MAILBOX_GET_UIDS,
	CACHE_STMT_STORE_INTERNALDATE, /* in enum cache_item order, up to CACHE_ITEM_HEADER */
	CACHE_STMT_STORE_ENVELOPE,
	CACHE_STMT_STORE_BODYSTRUCTURE,
	CACHE_STMT_STORE_BODY,
	CACHE_STMT_STORE_HEADER,
	CACHE_STMT_STORE_FLAGS,
	CACHE_STMT_STORE_SIZE,
	CACHE_STMT_STORE_AGREES,
	CACHE_STMT_MESSAGE_ENSURE,
	CACHE_STMT_MESSAGE_DELETE,
	CACHE_STMT_LOOKUP_ONE,
	CACHE_STMT_LOOKUP_RANGE,
	CACHE_STMT_PRESENCE_RANGE,
	CACHE_STMT_FLAGS_RANGE,
	CACHE_STMT_FORGET_FLAGS,
	CACHE_STMT_BODY_INSERT,
	CACHE_STMT_BODY_DELETE,
	CACHE_STMT_BODY_ABORT,
	CACHE_STMT_BODY_COMPLETE,
	CACHE_STMT_BODY_GET,
	CACHE_STMT_BODY_TOUCH,
	CACHE_STMT_BODY_TOTAL,
	CACHE_STMT_CHUNK_INSERT,
	CACHE_STMT_CHUNK_STATS,
	CACHE_STMT_CHUNK_READ,
	CACHE_STMT_COUNT,
};

/* ---- state ---- */

#define CACHE_WAL_FILES 2 /* the -wal and -shm files SQLite keeps beside a store in WAL mode */

/* Which file a name led to when it was looked at. */
struct cache_file_id {
	dev_t dev;
	ino_t ino;
	bool known;
};

struct cache {
	struct cache *next;            /* in cache_registry */
	unsigned int refcount;
	char *path;
	char *upstream;
	char *user;
	char *label;                   /* "USER on UPSTREAM", for log lines */
	struct cache_settings settings; /* settings.dir is not kept */
	sqlite3 *db;
	sqlite3_stmt *stmts[CACHE_STMT_COUNT];

	unsigned int batch_depth;
	bool batch_in_transaction;     /* the outermost begin started one */
	bool batch_doomed;             /* a level rolled back, or the transaction was lost */

	bool writes_off;
	bool writes_off_for_good;      /* read-only handle, or corrupt store */
	bool corrupt;                  /* move the file aside at close */
	uint64_t writes_retry_at;      /* settings.now() seconds */

	struct cache_file_id wal_files[CACHE_WAL_FILES]; /* this store's -wal and -shm, as opened */

	uint64_t body_bytes;           /* == SUM(bodies.size) */
	struct cache_body_writer *writers; /* cache-body.c's, each holding a reference */
};

/* ---- cache.c: errors and statement helpers ---- */

/* Logs a failed SQLite call (rc, about what) and decides what it means
   for the store: writes off for a while (full, I/O), for good (corrupt),
   nothing (busy); a batch whose transaction it took is doomed. */
void cache_fail(struct cache *cache, int rc, const char *what);
/* Whether a write may run now (not off, not in a batch that is lost). */
bool cache_write_allowed(struct cache *cache);

/* The prepared statement which of cache. */
static inline sqlite3_stmt *cache_stmt(struct cache *cache, enum cache_stmt which)
{
	return cache->stmts[which];
}
/* Runs a statement that returns no rows; resets it and clears its
   bindings. Returns 0, or -1 (cache_fail'd). */
int cache_run(struct cache *cache, sqlite3_stmt *stmt, const char *what);
/* Runs a statement that returns at most one integer row; resets it.
   Returns 1 with *value_r, 0 without a row, -1 (cache_fail'd). */
int cache_run_integer(struct cache *cache, sqlite3_stmt *stmt, const char *what, int64_t *value_r);
/* Binds size bytes at data (SQLITE_STATIC: keep them until the run);
   NULL data binds NULL, a 0-byte value an empty blob. */
void cache_bind_value(sqlite3_stmt *stmt, int index, const void *data, size_t size);
/* Binds ?1 to mailbox_id and ?2 to uid, the key of every message table. */
void cache_bind_key(sqlite3_stmt *stmt, int64_t mailbox_id, uint32_t uid);
/* Binds a number that 0 means "not known" for: NULL. */
void cache_bind_known(sqlite3_stmt *stmt, int index, uint64_t value);
/* Starts a savepoint around the statements of one call, so that each call
   is all or nothing, inside a batch or alone. Returns 0 or -1. */
int cache_op_begin(struct cache *cache);
/* Ends cache_op_begin's savepoint: kept when result is 0, undone when not
   (and outside a batch no transaction is left open). Returns result, or
   -1 when keeping it failed. */
int cache_op_end(struct cache *cache, int result);

/* ---- cache-message.c ---- */

/* Whether uid may key a message (nonzero); logs when not. */
bool cache_message_key_valid(struct cache *cache, uint32_t uid);

/* ---- cache-body.c: the accounting of whole messages ---- */

/* Sets body_bytes from the store, after a rollback undid some of its changes. */
void cache_body_bytes_reload(struct cache *cache);
/* Takes size (a dropped body's, or a mailbox's bodies') off body_bytes. */
void cache_body_bytes_sub(struct cache *cache, int64_t size);
/* Drops uid's body, complete or not (its pieces go with it), off
   body_bytes too. Returns 0 (also when there was none), or -1. */
int cache_body_delete(struct cache *cache, int64_t mailbox_id, uint32_t uid);

#endif
