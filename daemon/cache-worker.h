/* SPDX-License-Identifier: MIT */
/* cache-worker: a store's thread with a connection of its own, for the work no client waits for: WAL checkpoints and the text index. */
#ifndef IMAPCACHED_CACHE_WORKER_H
#define IMAPCACHED_CACHE_WORKER_H

#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>

/*
 * The event loop serves every session of every account; what no client
 * waits for runs here instead, on a thread per store opened for writing,
 * with its own connection to the same file (WAL lets it write while the
 * loop reads, and take turns with the loop's writes):
 *
 * - WAL checkpoints. SQLite's automatic checkpoint ran inside the COMMIT
 *   that took the WAL past its mark, on the loop: copying 4 MiB back and
 *   syncing both files, a tenth of a fill's time. The loop's connection
 *   only tells the worker, from SQLite's WAL hook, how far the WAL has
 *   grown; the worker runs PASSIVE checkpoints (they take no lock a
 *   writer needs). The loop's next writer starts the WAL afresh only
 *   once all of it is back in the file, which a fill's back-to-back
 *   transactions never allow: past CACHE_CHECKPOINT_RESTART_PAGES the
 *   worker's next checkpoint is a RESTART, during which the loop holds
 *   no transaction and fills pause (cache_wants_pause). With the worker
 *   paused, the loop checkpoints itself once the WAL holds
 *   CACHE_CHECKPOINT_LOOP_PAGES.
 * - The text index (cache-fts.h), in batches of one transaction each,
 *   and its merges after deletes. A batch holds the store's write lock:
 *   the loop's busy handler (cache_worker_loop_waits) makes the worker
 *   end its batch after the body it is indexing and step aside, so a
 *   write of the loop waits for one body's indexing at most, where a
 *   batch on the loop held every client's command for all of it.
 *
 * The worker touches no state of the loop's: the loop hands it jobs and
 * reads its counts, both under its mutex. It logs nothing (the log's
 * sink is the loop's): the loop reads its counts and logs.
 */

#define CACHE_CHECKPOINT_PAGES 256        /* WAL pages (16 KiB) that wake the worker: 4 MiB */
#define CACHE_CHECKPOINT_PAGES_TEXT "256" /* CACHE_CHECKPOINT_PAGES, for SQL: SQLite's own checkpoint without a worker */
/* WAL pages past which the next checkpoint makes the WAL start afresh,
   pausing fills for a moment: 16 MiB, what the WAL is cut back to
   (CACHE_WAL_LIMIT), so that a fill writes the same pages of the WAL
   file over and over, which the page cache holds, instead of new ones
   (doc/cache.md). */
#define CACHE_CHECKPOINT_RESTART_PAGES 1024
#define CACHE_CHECKPOINT_LOOP_PAGES 4096  /* WAL pages past which the loop checkpoints itself: 64 MiB */
#define CACHE_WAL_LIMIT "16777216"         /* bytes a WAL grown by a burst of bodies is cut back to after a checkpoint */
#define CACHE_WORKER_BUSY_MS 1000          /* the worker waits this long for the loop's write lock, then tries later */
#define CACHE_WORKER_YIELD_MS 2            /* the worker's pause after a batch the loop waited for */

struct cache_worker;

/* Work the loop hands over (cache_worker_want). */
enum cache_worker_job {
	CACHE_WORKER_INDEX = 1 << 0, /* index the bodies waiting for it, batch after batch */
	CACHE_WORKER_MERGE = 1 << 1, /* then merge the index's segments until nothing is left to merge */
};

/* What a worker did, for the loop's log lines, stats and tests. */
#define CACHE_WORKER_ERROR_TEXT 160 /* bytes of an error's text kept for the loop's log line */

struct cache_worker_counts {
	uint64_t checkpoints;        /* run by the worker */
	uint64_t loop_checkpoints;   /* the loop ran itself, the worker behind */
	uint64_t restarts;           /* the worker's RESTARTs that made the WAL start afresh */
	uint64_t indexed_bodies;     /* bodies whose text it indexed, in all */
	uint64_t indexed_bytes;      /* their sizes */
	uint64_t merge_steps;        /* index merge steps that merged something */
	uint64_t yields;             /* batches it ended early for the loop */
	uint64_t index_runs_done;    /* times the index job ended with no body left to index */
	unsigned int jobs;           /* enum cache_worker_job still wanted (or running) */
	bool holds_lock;             /* a transaction of the worker holds the write lock now */
	bool held;                   /* it waits between two bodies of a batch (cache_worker_hold) */
	int last_error;              /* its last SQLite error other than BUSY (SQLITE_OK: none); the job stopped */
	char last_error_text[CACHE_WORKER_ERROR_TEXT]; /* what its connection said of it */
};

/* Opens a second connection to path (the file db has open for writing),
   prepares what its jobs need and starts its thread; installs the WAL
   hook on db in place of SQLite's automatic checkpoint. NULL when that
   can't be had (SQLite built without threads, out of memory, the file
   gone): db keeps SQLite's checkpoint, the caller indexes on the loop,
   and a log line naming label says why. */
struct cache_worker *cache_worker_start(sqlite3 *db, const char *path, const char *label);

/* Stops the thread (a batch under way ends after its body and commits)
   and closes its connection; db gets SQLite's automatic checkpoint back.
   NULL is fine. */
void cache_worker_stop(struct cache_worker **worker, sqlite3 *db);

/* Adds jobs (enum cache_worker_job) and wakes the thread. */
void cache_worker_want(struct cache_worker *worker, unsigned int jobs);

/* Takes jobs back: a batch under way ends after its body (a body came:
   the fill goes first, the index after). */
void cache_worker_unwant(struct cache_worker *worker, unsigned int jobs);

/* The loop found the write lock taken: the worker ends its batch after
   the body it is on, and steps aside. Called from the loop's busy
   handler, often; cheap. Returns whether a transaction of the worker
   holds the lock (then it lets go after its body). */
bool cache_worker_loop_waits(struct cache_worker *worker);
/* Whether a RESTART checkpoint is wanted, due or under way
   (cache_worker_wal_grew): the loop then holds no transaction, and fills
   pause. */
bool cache_worker_wants_gap(struct cache_worker *worker);
/* The loop has no transaction open: a wanted RESTART may begin. */
void cache_worker_restart_go(struct cache_worker *worker);
/* The fills could not wait longer: a wanted RESTART that has not begun
   is dropped, and not wanted again before the WAL grew by another mark. */
void cache_worker_restart_give_up(struct cache_worker *worker);

struct cache_worker_counts cache_worker_counts(struct cache_worker *worker);

/* With hold, the worker waits between two bodies of an index batch,
   holding the write lock, until the loop asks for it (tests: a write of
   the loop then meets the lock taken, whatever the timing). */
void cache_worker_hold(struct cache_worker *worker, bool hold);

/* Waits until the worker has nothing left to do, or only jobs paused (tests). */
void cache_worker_settle(struct cache_worker *worker);

/* Keeps the worker from starting anything (paused) or lets it again, so
   that tests can see the loop's own checkpoint (tests). */
void cache_worker_pause(struct cache_worker *worker, bool paused);

/* Runs sql on the worker's own connection while it is paused (tests: a
   PRAGMA max_page_count makes its store full). Returns SQLite's code. */
int cache_worker_exec_paused(struct cache_worker *worker, const char *sql);

#endif
