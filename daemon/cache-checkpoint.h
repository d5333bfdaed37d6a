/* SPDX-License-Identifier: MIT */
/* cache-checkpoint: a store's WAL copied back into its file on a thread of its own, off the event loop. */
#ifndef IMAPCACHED_CACHE_CHECKPOINT_H
#define IMAPCACHED_CACHE_CHECKPOINT_H

#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>

/*
 * SQLite's automatic checkpoint runs inside the COMMIT that took the WAL
 * past its mark, on the event loop: copying 4 MiB of pages back into the
 * file and syncing both, a tenth of a fill's time and the longest pause
 * a client's command met behind another session's fill. A store opened
 * for writing therefore hands checkpoints to a thread with its own
 * connection to the same file. The loop's connection only tells it, from
 * SQLite's WAL hook, how far the WAL has grown; the thread runs a PASSIVE
 * checkpoint (it never waits for a lock, and a writer may append while
 * it runs), and the loop's next writer starts the WAL afresh once all of
 * it is back in the file. Should the thread fall behind (a reader holding
 * an old snapshot, a disk that is slow to sync), the loop checkpoints
 * itself once the WAL holds CACHE_CHECKPOINT_LOOP_PAGES, as SQLite would
 * have: the WAL stays bounded whatever the thread does.
 */

#define CACHE_CHECKPOINT_PAGES 256       /* WAL pages (16 KiB) that wake the thread: 4 MiB */
#define CACHE_CHECKPOINT_PAGES_TEXT "256" /* CACHE_CHECKPOINT_PAGES, for SQL: SQLite's own checkpoint without the thread */
#define CACHE_WAL_LIMIT "16777216"         /* bytes a WAL grown by a burst of bodies is cut back to after a checkpoint */
#define CACHE_CHECKPOINT_LOOP_PAGES 4096 /* WAL pages past which the loop checkpoints itself: 64 MiB */

struct cache_checkpointer;

/* What a checkpointer did, for tests and stats. */
struct cache_checkpoint_counts {
	uint64_t thread_runs;   /* checkpoints run by the thread */
	uint64_t loop_runs;     /* checkpoints the loop ran itself, the thread behind */
	int last_error;         /* the thread's last SQLite error other than BUSY; SQLITE_OK: none */
};

/* Opens a second connection to path (the file db has open, for writing)
   and starts its thread; installs the WAL hook on db in place of SQLite's
   automatic checkpoint. NULL when either can't be had (SQLite built
   without threads, out of memory, the file gone): db then keeps SQLite's
   automatic checkpoint, and label names the store in the log line. */
struct cache_checkpointer *cache_checkpointer_start(sqlite3 *db, const char *path, const char *label);

/* Stops the thread (a checkpoint running ends first) and closes its
   connection; db gets SQLite's automatic checkpoint back. NULL is fine. */
void cache_checkpointer_stop(struct cache_checkpointer **checkpointer, sqlite3 *db);

/* Waits until the thread has nothing left to do (tests). */
void cache_checkpointer_settle(struct cache_checkpointer *checkpointer);

/* Keeps the thread from starting a checkpoint (paused) or lets it again,
   so that tests can see the loop's own (tests). */
void cache_checkpointer_pause(struct cache_checkpointer *checkpointer, bool paused);

struct cache_checkpoint_counts cache_checkpointer_counts(struct cache_checkpointer *checkpointer);

#endif
