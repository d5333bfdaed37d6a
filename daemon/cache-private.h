/* SPDX-License-Identifier: MIT */
/* cache-private: what cache.c, cache-mailbox.c, cache-message.c and cache-body.c share of an account's store. */
#ifndef IMAPCACHED_CACHE_PRIVATE_H
#define IMAPCACHED_CACHE_PRIVATE_H

#include "cache.h"
#include "cache-checksum.h"
#include "cache-fts.h"

#include <sqlite3.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* ---- statements ---- */

/* What cache_lookup and cache_lookup_many select of a message. */
#define CACHE_MESSAGE_COLUMNS \
	"m.uid, m.internaldate, m.envelope, m.bodystructure, m.body_item, m.header, m.flags, " \
	"m.size, m.modseq, m.structure_agrees, b.size, " \
	"m.internaldate_sum, m.envelope_sum, m.bodystructure_sum, m.body_item_sum, m.header_sum"

/* Where they come from: a message's row and its complete body, if any. */
#define CACHE_MESSAGE_FROM \
	" FROM messages m LEFT JOIN bodies b ON b.mailbox_id = m.mailbox_id AND b.uid = m.uid AND b.complete = 1"

/* The columns CACHE_MESSAGE_COLUMNS selects, in order. */
enum cache_column {
	CACHE_COLUMN_UID,
	CACHE_COLUMN_VALUES, /* CACHE_VALUE_ITEMS of them, in enum cache_item order */
	CACHE_COLUMN_SIZE = CACHE_COLUMN_VALUES + CACHE_VALUE_ITEMS,
	CACHE_COLUMN_MODSEQ,
	CACHE_COLUMN_STRUCTURE_AGREES,
	CACHE_COLUMN_BODY_SIZE,
	CACHE_COLUMN_SUMS,   /* the checksums of INTERNALDATE .. HEADER (cache-checksum.h) */
};
#define CACHE_SUMMED_ITEMS (CACHE_ITEM_HEADER + 1) /* the values that carry a checksum; FLAGS does not */

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
	CACHE_STMT_MAILBOX_SET_ASIDE,
	CACHE_STMT_MAILBOX_BODY_BYTES,
	CACHE_STMT_MAILBOX_SET_STATE,
	CACHE_STMT_MAILBOX_SET_UIDS,
	CACHE_STMT_MAILBOX_GET_UIDS,
	CACHE_STMT_MAILBOX_SET_FLAG_LIST,
	CACHE_STMT_MAILBOX_GET_FLAG_LIST,
	CACHE_STMT_STORE_INTERNALDATE, /* in enum cache_item order, up to CACHE_ITEM_HEADER */
	CACHE_STMT_STORE_ENVELOPE,
	CACHE_STMT_STORE_BODYSTRUCTURE,
	CACHE_STMT_STORE_BODY,
	CACHE_STMT_STORE_HEADER,
	CACHE_STMT_STORE_FLAGS,
	CACHE_STMT_STORE_SIZE,
	CACHE_STMT_STORE_AGREES,
	CACHE_STMT_STORE_FETCHED,
	CACHE_STMT_STORE_FETCHED_FLAGS,
	CACHE_STMT_MESSAGE_ENSURE,
	CACHE_STMT_MESSAGE_DELETE,
	CACHE_STMT_LOOKUP_ONE,
	CACHE_STMT_LOOKUP_RANGE,
	CACHE_STMT_PRESENCE_RANGE,
	CACHE_STMT_FIXED_SET,
	CACHE_STMT_FIXED_UNSET,
	CACHE_STMT_FIXED_CHECK,
	CACHE_STMT_FIXED_RANGE,
	CACHE_STMT_PLAIN_HEADER_SET,
	CACHE_STMT_PLAIN_HEADER_UNSET,
	CACHE_STMT_PLAIN_HEADER_RANGE,
	CACHE_STMT_FLAGS_RANGE,
	CACHE_STMT_FORGET_FLAGS,
	CACHE_STMT_BODY_INSERT,
	CACHE_STMT_BODY_DELETE,
	CACHE_STMT_BODY_ABORT,
	CACHE_STMT_BODY_COMPLETE,
	CACHE_STMT_BODY_GET,
	CACHE_STMT_BODY_TOUCH,
	CACHE_STMT_BODY_TOTAL,
	CACHE_STMT_BODY_LRU,
	CACHE_STMT_CHUNK_INSERT,
	CACHE_STMT_CHUNK_STATS,
	CACHE_STMT_CHUNK_READ,
	CACHE_STMT_FTS_PENDING,        /* cache-fts.c's */
	CACHE_STMT_FTS_STILL_PENDING,
	CACHE_STMT_FTS_INSERT,
	CACHE_STMT_FTS_PIECES,
	CACHE_STMT_FTS_CLEAR,
	CACHE_STMT_FTS_MARK,
	CACHE_STMT_FTS_STATES,
	CACHE_STMT_FTS_MATCH,
	CACHE_STMT_FTS_SCAN,
	CACHE_STMT_FTS_MERGE,
	CACHE_STMT_SIZES_RANGE,
	CACHE_STMT_INTERNALDATES_RANGE, /* cache-message.c's: from messages_internaldate alone */
	CACHE_STMT_HEADERS_RANGE,       /* cache-message.c's: the header blocks, no body joined */
	CACHE_STMT_PREVIEW_STORE,      /* cache-preview.c's */
	CACHE_STMT_PREVIEW_GET,
	CACHE_STMT_PREVIEW_DROP,
	CACHE_STMT_COUNT,
};

/* ---- state ---- */

/* A row write of cache_store_fetched, held until cache_pending_flush. */
struct cache_pending {
	struct cache_pending *next;
	int64_t mailbox_id;
	uint32_t uid;
	struct cache_fetched fetched;  /* its values and flags point into data */
	unsigned char data[];
};

/* A read's use of a body, held until cache_pending_flush writes its last_used. */
struct cache_touch {
	int64_t mailbox_id;
	uint32_t uid;
	int64_t at;                    /* cache_wall_now() seconds */
};
#define CACHE_TOUCHES_MAX 64 /* uses held between flushes: a burst of reads writes its uses in one commit */

#define CACHE_DAMAGED_MAX 64 /* damaged values dropped after one lookup; more are dropped when read again */
#define CACHE_VERIFY_BODIES_MAX 16 /* a lookup of at most this many checks their bodies whole (a client reading
				      a few messages); a larger one leaves it to the read, which may then fail mid-answer */

/* Values found damaged during a lookup, dropped once its statement is done. */
struct cache_damaged {
	int64_t mailbox_id;
	uint32_t uid;
	unsigned int items;            /* CACHE_HAS() of each; CACHE_ITEM_MESSAGE: the body */
};

#define CACHE_RECENT_READS 64 /* body reads remembered: more bodies than a session's answer reads at once */

/* A body read at a moment (cache_wall_now): eviction spares it for
   CACHE_EVICT_IN_USE_SECONDS, as it may be mid-answer. */
struct cache_body_use {
	int64_t mailbox_id;
	uint32_t uid;
	int64_t at;
};

#define CACHE_WAL_FILES 2 /* the -wal and -shm files SQLite keeps beside a store in WAL mode */

/* Which file a name led to when it was looked at. */
struct cache_file_id {
	dev_t dev;
	ino_t ino;
	bool known;
};

/* Milliseconds on a monotonic clock (never the settings' test clocks). */
uint64_t cache_monotonic_ms(void);

#define CACHE_PAGE_SIZE 16384 /* a message's row (900 bytes on average) stays in its page: 4 KiB pages overflow past 1,000 */
#define CACHE_PAGE_SIZE_TEXT "16384" /* CACHE_PAGE_SIZE, for SQL */

struct cache_pause_waiter {
	void (*resume)(void *context);
	void *context;
};

struct cache {
	struct cache *next;            /* in cache_registry */
	unsigned int refcount;
	char *path;
	char *upstream;
	char *user;
	char *label;                   /* "USER on UPSTREAM", for log lines */
	uint64_t serial;               /* cache_serial */
	struct cache_settings settings; /* settings.dir is not kept */
	sqlite3 *db;
	sqlite3_stmt *stmts[CACHE_STMT_COUNT];

	unsigned int batch_depth;
	bool batch_started;            /* its first write tried to begin the transaction */
	bool batch_in_transaction;     /* and did */
	bool batch_doomed;             /* a level rolled back, or the transaction was lost */
	bool batch_held;               /* no batch open, its transaction is (cache_batch_end_soon) */
	const void *batch_owner;       /* cache_batch_begin_for's: only its next batch goes on in the held one */
	uint64_t batch_began_ms;       /* when the open transaction began (cache_monotonic_ms) */
	uint64_t batch_bytes;          /* bytes of bodies the open transaction wrote */
	struct event *batch_timer;     /* settings.base's: commits the held transaction */

	/* Sessions that paused their fill while the WAL is to start afresh
	   (cache_wants_pause), told when that is done. */
	struct cache_pause_waiter *pause_waiters;
	size_t pause_waiter_count, pause_waiter_capacity;
	uint64_t pause_began_ms;
	struct event *pause_timer;     /* settings.base's: looks whether the pause is over */

	bool writes_off;
	bool writes_off_for_good;      /* read-only handle, or corrupt store */
	bool corrupt;                  /* move the file aside at close */
	uint64_t writes_retry_at;      /* settings.now() seconds */

	struct cache_file_id wal_files[CACHE_WAL_FILES]; /* this store's -wal and -shm, as opened */
	struct cache_worker *worker;   /* checkpoints and the text index, off the loop (cache-worker.h); NULL: none */
	uint64_t busy_since_ms;        /* when the loop's connection found the write lock taken (cache_busy_wait) */
	bool op_transaction;           /* the running cache_op_begin began the transaction itself */

	struct cache_pending *pending; /* held row writes, oldest first */
	struct cache_pending **pending_tail;
	size_t pending_bytes;
	bool pending_flushing;
	struct event *pending_timer;   /* settings.base's; NULL: nothing is held */
	struct event *linger_timer;    /* settings.base's: closes the store no session uses */
	/* Lookups selecting NULL for the values not wanted (SQLite copies every
	   column it steps over), by [range][wanted values]; prepared when first
	   used, NULL until then. */
	sqlite3_stmt *lookup_stmts[2][1u << CACHE_VALUE_ITEMS];
	struct cache_touch touches[CACHE_TOUCHES_MAX]; /* held uses of bodies, oldest first */
	size_t touch_count;

	struct cache_damaged damaged[CACHE_DAMAGED_MAX];
	size_t damaged_count;

	uint64_t body_bytes;           /* == SUM(bodies.size) */
	struct cache_body_use recent_reads[CACHE_RECENT_READS]; /* the latest body reads, a ring */
	unsigned int recent_reads_next;
	bool vacuum_due;               /* pages were freed since the last look at the free list */
	struct cache_body_writer *writers; /* cache-body.c's, each holding a reference */
	struct event *fts_timer;       /* settings.base's: the next indexing batch (cache-fts.c) */
	uint64_t fts_run_started;      /* ms (monotonic) the batches running now began at; 0: none run */
	uint64_t fts_run_bodies, fts_run_bytes; /* indexed by them so far */
	uint64_t fts_longest_wait_ms;  /* the longest a write of the loop waited for the worker in this run */
	bool fts_merge_due;            /* rows were deleted: the index keeps them as tombstones until merged */
	struct cache_fts_cursor fts_cursor; /* the body the loop's own batches are on (no worker) */
	uint64_t fts_arrivals;         /* bodies stored since the store opened (cache_fts_body_arrived) */
	uint64_t fts_handed_arrivals;  /* fts_arrivals when the index was last handed to the worker */
	uint64_t fts_handed_runs;      /* the worker's index_runs_done then */
	uint64_t fts_worker_bodies, fts_worker_bytes; /* the worker's counts when the run began */
	uint64_t fts_worker_merges;    /* its merge steps the loop has seen */
	bool fts_worker_failed;        /* its error was told (cache_fail) */
	struct cache_pin *pins;        /* the messages of answers being written (cache-pin.c) */
	struct cache_deferred *deferred; /* drops held back until no pin keeps their rows */
	size_t deferred_count, deferred_alloc;
};

/* ---- cache.c: errors and statement helpers ---- */

/* Logs a failed SQLite call (rc, about what) and decides what it means
   for the store: writes off for a while (full, I/O), for good (corrupt),
   nothing (busy); a batch whose transaction it took is doomed. */
void cache_fail(struct cache *cache, int rc, const char *what);
/* cache_fail with why, what another connection said of rc, in place of
   what the store's own connection says. */
void cache_fail_because(struct cache *cache, int rc, const char *what, const char *why);
/* Whether a write may run now (not off, not in a batch that is lost). */
bool cache_write_allowed(struct cache *cache);

/* Whether column sum of stmt's current row holds the checksum of the
   size bytes at data, the value it was stored with: a sum not stored
   vouches for nothing. */
static inline bool cache_column_vouches(sqlite3_stmt *stmt, int sum, const void *data, size_t size)
{
	return sqlite3_column_type(stmt, sum) == SQLITE_INTEGER &&
	       sqlite3_column_int64(stmt, sum) == cache_checksum_column(data, size);
}

/* Runs a statement that returns no rows, on any connection (cache_run
   is the loop's, with its error handling); resets it and clears its
   bindings. Returns SQLITE_OK or the error. */
static inline int cache_step_plain(sqlite3_stmt *stmt)
{
	int rc = sqlite3_step(stmt);

	sqlite3_reset(stmt);
	sqlite3_clear_bindings(stmt);
	return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* The SQL of statement which (a worker prepares its own). */
const char *cache_stmt_text(enum cache_stmt which);
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
/* Statement which, a scan of mailbox_id's UIDs [first, last] (?1, ?2, ?3),
   bound and ready to step. */
sqlite3_stmt *cache_range_begin(struct cache *cache, enum cache_stmt which, int64_t mailbox_id, uint32_t first,
				uint32_t last);
/* Ends a scan whose last step gave rc after calls rows: resets stmt and
   clears its bindings. Returns calls when it ran to the end; else logs
   what failed (cache_fail) and returns -1, or calls when the file is
   damaged and damaged_counts (what was read stands, the rest is missing). */
long cache_range_end(struct cache *cache, sqlite3_stmt *stmt, int rc, long calls, const char *what,
		     bool damaged_counts);
/* Ends a read of one row whose step gave rc: resets stmt and clears its
   bindings. Returns result when the step worked (SQLITE_ROW or
   SQLITE_DONE); else logs what failed (cache_fail) and returns 0 when the
   file is damaged (the row counts as not stored), -1 otherwise. */
int cache_row_end(struct cache *cache, sqlite3_stmt *stmt, int rc, int result, const char *what);
/* Binds the checksum of size bytes at data (cache-checksum.h); NULL for
   NULL data. */
void cache_bind_checksum(sqlite3_stmt *stmt, int index, const void *data, size_t size);
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
/* Writes every held row (in one batch of its own, or in the batch open
   now). Every call that reads messages or changes them otherwise calls
   it first; a call made while it runs does nothing. */
void cache_pending_flush(struct cache *cache);
/* Writes the held rows before a read (held uses of bodies wait). */
void cache_pending_flush_rows(struct cache *cache);
/* Writes uid's PREVIEW (its message's row is there). Returns 0 or -1. */
int cache_preview_write(struct cache *cache, int64_t mailbox_id, uint32_t uid, const struct cache_value *preview);
/* Commits the transaction cache_batch_end_soon held, if any (no batch
   may be open). */
void cache_batch_commit_held(struct cache *cache);
/* Drops every held row unwritten (writes are off). */
void cache_pending_drop(struct cache *cache);
/* Finalizes the lookups prepared per set of wanted values. */
void cache_lookup_stmts_free(struct cache *cache);

/* ---- cache-body.c: the accounting of whole messages ---- */

/* Seconds since the epoch (settings.wall_now, else time()). */
int64_t cache_wall_now(const struct cache *cache);
/* Writes the held uses of bodies (their last_used) in the transaction
   open now, if any; cache_pending_flush (in its batch) and eviction call it. */
void cache_body_touches_flush(struct cache *cache);
/* Evicts least recently used complete bodies until body_bytes is at most
   the budget; spare_in_use spares those used in the last
   CACHE_EVICT_IN_USE_SECONDS. Returns 0 when it is, 1 when not enough
   could go, -1 on error. Runs inside the caller's savepoint or batch. */
int cache_body_fit_budget(struct cache *cache, bool spare_in_use);
/* Returns free pages to the file system past CACHE_FREE_MAX bytes of
   them, when bodies or rows were dropped since the last look. Outside a
   transaction only. */
void cache_vacuum_maybe(struct cache *cache);
/* Sets body_bytes from the store, after a rollback undid some of its changes. */
void cache_body_bytes_reload(struct cache *cache);
/* Takes size (a dropped body's, or a mailbox's bodies') off body_bytes. */
void cache_body_bytes_sub(struct cache *cache, int64_t size);
/* Drops uid's body, complete or not (its pieces go with it), off
   body_bytes too. Returns 0 (also when there was none), or -1. */
int cache_body_delete(struct cache *cache, int64_t mailbox_id, uint32_t uid);
/* Reads every piece of uid's complete body of size bytes and checks its
   length and checksum, appending the bytes to out (NULL: only checks).
   Returns 1 when sound, 0 when damaged (logged; out may then hold a
   part; drop it with cache_body_drop_damaged once no statement is
   running), -1 on error. */
int cache_body_verify(struct cache *cache, int64_t mailbox_id, uint32_t uid, uint64_t size, struct evbuffer *out);
/* Appends the pieces of a body of size bytes that hold [offset, end) to
   out, cut to that (out NULL: only checks them), with stmt, a
   CACHE_STMT_CHUNK_READ of any connection (a worker reads with its own),
   each piece checked against its checksum; no use is counted. Returns
   1, 0 when a piece is missing, of the wrong length or fails its
   checksum (damaged), -1 when SQLite failed (*rc_r) or memory ran out. */
int cache_body_chunks_read(sqlite3_stmt *stmt, int64_t mailbox_id, uint32_t uid, uint64_t size, uint64_t offset,
			   uint64_t end, struct evbuffer *out, int *rc_r);
/* Drops a body found damaged (when writes are allowed). */
void cache_body_drop_damaged(struct cache *cache, int64_t mailbox_id, uint32_t uid);

/* ---- cache-pin.c: drops held back while an answer reads their rows ---- */

/* A drop held back: a message's row and body, or (uid 0) a mailbox with
   everything in it, renamed out of the way meanwhile. */
struct cache_deferred {
	int64_t mailbox_id;
	uint32_t uid;
};

/* Whether an answer being written reads mailbox_id's uid (0: any of its messages). */
bool cache_pinned(const struct cache *cache, int64_t mailbox_id, uint32_t uid);
/* Whether one that reads bodies does (eviction passes that body by). */
bool cache_body_pinned(const struct cache *cache, int64_t mailbox_id, uint32_t uid);
/* Forgets the drops held back since cache->deferred_count was held (the
   savepoint that held them back was undone). */
void cache_drops_forget(struct cache *cache, size_t held);
/* Holds back the drop of mailbox_id's uid (0: the mailbox) until no pin
   keeps it. Returns 0, -1 when memory runs out. */
int cache_drop_defer(struct cache *cache, int64_t mailbox_id, uint32_t uid);
/* Frees the pins and held drops left at close (their drops are not made). */
void cache_pins_free(struct cache *cache);
/* Orders two uint32_t UIDs, for qsort and bsearch (cache-mailbox.c). */
int cache_uid_compare(const void *a, const void *b);
/* cache-mailbox.c's drops, made now, inside the caller's savepoint: a
   message's row and body, a mailbox with everything in it (off
   body_bytes too). 0 or -1. */
int cache_message_drop_now(struct cache *cache, int64_t mailbox_id, uint32_t uid);
int cache_mailbox_drop_now(struct cache *cache, int64_t mailbox_id);

/* ---- the store's file (cache-file.c) ---- */

enum cache_open_result {
	CACHE_OPEN_OK,
	CACHE_OPEN_ASIDE,              /* not a store of ours: move it aside, start anew */
	CACHE_OPEN_READ_ONLY,          /* can't be written: open it for reading */
	CACHE_OPEN_FAILED,
};

/* Makes dir (0700) when missing; refuses one another user owns, and
   takes group and other access away from ours. follow: dir may be a
   symbolic link. 0, or -1 with *error_r and a log line. */
int cache_dir_prepare(const char *label, const char *dir, bool follow, const char **error_r);
/* Checks (and makes, 0600) the store's file before SQLite opens it. */
enum cache_open_result cache_file_prepare(struct cache *cache, const char **why_r, const char **error_r);
/* Moves the store's file and its WAL aside to PATH.corrupt-TIMESTAMP[-N]
   for a look, with a log line saying why. 0, or -1. */
int cache_move_aside(struct cache *cache, const char *why);
/* Notes which -wal and -shm files are this store's, as opened. */
void cache_wal_note(struct cache *cache);
/* The store's file was replaced or removed while open: removes this
   store's -wal and -shm (only those), with a log line. */
void cache_wal_forget(struct cache *cache);

#endif
