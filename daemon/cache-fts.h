/* SPDX-License-Identifier: MIT */
/* cache-fts: the decoded text of cached bodies, indexed with FTS5 trigrams for BODY and TEXT. */
#ifndef IMAPCACHED_CACHE_FTS_H
#define IMAPCACHED_CACHE_FTS_H

#include <sqlite3.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cache;

/*
 * The table body_text holds, for each complete body, its header lines
 * and its body text as search-text.h reads them (decoded, in casemap
 * form), or an empty row marked unsure when search-text can't vouch for
 * it: then BODY and TEXT on its mailbox go upstream. Its FTS5 index
 * (trigram, case-sensitive: the text is in casemap form already) picks
 * the candidates of a key of three characters or more; every candidate
 * is then checked with instr(), and a shorter key scans the text.
 *
 * Indexing runs at about 9 MB/s, slower than bodies arrive: it runs
 * behind them, once no body has arrived for CACHE_FTS_QUIET_MS, on the
 * store's worker thread (cache-worker.h), CACHE_FTS_BATCH_BYTES in one
 * transaction, each batch ended early when the loop wants to write or a
 * body arrives; the loop looks at its progress every CACHE_FTS_WATCH_MS
 * and logs the end of a run. Without a worker (it could not start, or a
 * test without an event base) the batches run on the loop, one per
 * turn, CACHE_FTS_DELAY_MS apart. A body that is evicted, purged or reset takes its
 * row with it in the same transaction (a trigger on bodies). FTS5 keeps
 * a deleted row's trigrams as tombstones until its segments merge, so
 * after deletes the same turns merge the index, CACHE_FTS_MERGE_PAGES at
 * a time, until nothing is left to merge, and free pages go back to the
 * file system (cache_vacuum_maybe): the file shrinks with the bodies. A
 * crash leaves each batch whole or not there.
 */

#define CACHE_FTS_BATCH_BYTES (256 * 1024) /* bodies indexed in one transaction: about 30 ms at 9 MB/s */
#define CACHE_FTS_BATCH_ROWS 64            /* bodies looked at in one batch: small ones add up slowly */
#define CACHE_FTS_DELAY_MS 5               /* between batches: commands of clients run in between */
#define CACHE_FTS_QUIET_MS 100            /* no body stored for this long: the bodies come first, the index after */
#define CACHE_FTS_RETRY_MS 1000            /* after a batch that could not write: the store may be busy or full */
#define CACHE_FTS_WATCH_MS 250             /* the loop's look at a worker's run */
#define CACHE_FTS_TRIGRAM 3                /* characters in a trigram: a shorter key can't use the index */
#define CACHE_FTS_MERGE_PAGES 64           /* index pages merged in one turn after deletes: about 15 ms */

/* Starts indexing soon, on settings.base (nothing without one: tests call
   cache_fts_index_batch). */
void cache_fts_schedule(struct cache *cache);

/* One step of merging the index after deletes, in its own transaction.
   Returns 1 when more remains (or a transaction is open: later), 0 when
   done, -1 on error. */
int cache_fts_merge_step(struct cache *cache);

/* A body was stored: indexing waits until none has been for
   CACHE_FTS_QUIET_MS, so that a fill runs at the upstream's pace and the
   index follows it. */
void cache_fts_body_arrived(struct cache *cache);

/* Indexes complete bodies not indexed yet, up to about max_bytes of them
   (at least one), in one batch. Returns 1 when some remain, 0 when none
   does, -1 on error (writes off, SQLite). */
int cache_fts_index_batch(struct cache *cache, size_t max_bytes);

/* Calls fn with each indexed message of mailbox_id, in UID order, and
   whether its text is sure. Returns how many, or -1. */
typedef void cache_fts_state_fn(uint32_t uid, bool sure, void *context);
long cache_fts_each_state(struct cache *cache, int64_t mailbox_id, cache_fts_state_fn *fn, void *context);

/* Calls fn with each message of mailbox_id, in UID order, whose sure text
   holds needle (len bytes, in casemap form, no CR or LF, not empty): its
   body text only (BODY), or its header lines too (TEXT). Returns how
   many, or -1. */
typedef void cache_fts_match_fn(uint32_t uid, void *context);
long cache_fts_find(struct cache *cache, int64_t mailbox_id, const unsigned char *needle, size_t len, bool body_only,
		    cache_fts_match_fn *fn, void *context);

/* The statements indexing and merging run on one connection: the
   loop's (borrowed from the store's) or a worker's (owned). */
struct cache_fts_statements {
	sqlite3_stmt *pending, *chunks, *insert, *mark, *merge;
	bool owned;
};
/* Prepares them on db (a worker's connection). Returns an SQLite code;
   free them with cache_fts_statements_free whatever it returned. */
int cache_fts_statements_prepare(sqlite3 *db, struct cache_fts_statements *stmts);
void cache_fts_statements_free(struct cache_fts_statements *stmts);

/* Whether a batch should end after the body it is on. */
typedef bool cache_fts_stop_fn(void *context);
/* Indexes bodies waiting, up to about max_bytes of them (at least one),
   in the caller's transaction, ending early after a body when stop
   (NULL: none) says so; adds how many and their bytes to *bodies and
   *bytes. Returns 1 when some remain, 0 when none does, or a negative
   SQLite code. */
int cache_fts_index_some(const struct cache_fts_statements *stmts, size_t max_bytes, cache_fts_stop_fn *stop,
			 void *context, uint64_t *bodies, uint64_t *bytes);
/* One merge step of pages index pages, in the caller's transaction (or
   its own). Returns 1 when more remains, 0 when nothing was left to
   merge, or a negative SQLite code. */
int cache_fts_merge_some(const struct cache_fts_statements *stmts, int pages);

/* Frees the timer (cache_free). */
void cache_fts_stop(struct cache *cache);

#endif
