/* SPDX-License-Identifier: MIT */
/* cache-fts: the decoded text of cached bodies, indexed with FTS5 trigrams for BODY and TEXT. */
#ifndef IMAPCACHED_CACHE_FTS_H
#define IMAPCACHED_CACHE_FTS_H

#include "mime-buffer.h"

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
 * A body's text is in pieces of CACHE_FTS_PIECE_BYTES (more when it has
 * more than CACHE_FTS_PIECES_MAX of them), each a row, piece n > 0
 * repeating the last CACHE_FTS_OVERLAP bytes of piece n - 1: a key of up
 * to CACHE_FTS_KEY_MAX bytes lies whole in one piece wherever it is in
 * the text; a longer one goes upstream. Each piece may be written in a
 * transaction of its own, so the write lock is held for one piece at a
 * time, however long the body: piece 0 (with the header lines) goes
 * last, with the mark on bodies, and its row alone says the body is
 * indexed. A cursor keeps the body's text from one piece to the next.
 *
 * Indexing runs at about 7 MB/s, slower than bodies arrive: it runs
 * behind them, once no body has arrived for CACHE_FTS_QUIET_MS, on the
 * store's worker thread (cache-worker.h), CACHE_FTS_BATCH_BYTES of pieces
 * in one transaction, each batch ended early, after the piece it is on,
 * when the loop wants to write or a body arrives; the loop looks at its
 * progress every CACHE_FTS_WATCH_MS and logs the end of a run. Without a
 * worker (it could not start, or a test without an event base) the
 * batches run on the loop, one per turn, CACHE_FTS_DELAY_MS apart. A
 * body that is evicted, purged or reset takes its rows with it in the
 * same transaction (a trigger on bodies). FTS5 keeps a deleted row's
 * trigrams as tombstones until its segments merge, so after deletes the
 * same turns merge the index, CACHE_FTS_MERGE_PAGES at a time, until
 * nothing is left to merge, and free pages go back to the file system
 * (cache_vacuum_maybe): the file shrinks with the bodies. A crash leaves
 * each batch whole or not there, and a body whose piece 0 is not there
 * is indexed again from its first piece.
 */
#define CACHE_FTS_BATCH_BYTES (256 * 1024) /* text in one transaction: 25 ms, and as long again for its COMMIT (FTS5 writes its segment) */
#define CACHE_FTS_PIECE_BYTES (64 * 1024)  /* of a body's text in one row: about 9 ms, the longest a batch ends late */
#define CACHE_FTS_PIECE_COST 4096          /* counted for each piece in a batch beside its text: 64 small bodies at most */
#define CACHE_FTS_PIECES_MAX 256           /* the rowid's low 8 bits */
#define CACHE_FTS_OVERLAP 1023             /* bytes a piece repeats of the one before it */
#define CACHE_FTS_KEY_MAX (CACHE_FTS_OVERLAP + 1) /* bytes of the longest key the pieces can answer */
#define CACHE_FTS_MAILBOX_MAX (INT64_C(1) << 23) /* mailbox ids at or past it have no rowids: upstream */
#define CACHE_FTS_DELAY_MS 5               /* between batches: commands of clients run in between */
#define CACHE_FTS_QUIET_MS 100            /* no body stored for this long: the bodies come first, the index after */
#define CACHE_FTS_RETRY_MS 1000            /* after a batch that could not write: the store may be busy or full */
#define CACHE_FTS_WATCH_MS 250             /* the loop's look at a worker's run */
#define CACHE_FTS_TRIGRAM 3                /* characters in a trigram: a shorter key can't use the index */
#define CACHE_FTS_MERGE_PAGES 64           /* index pages merged in one turn after deletes: about 15 ms */

/* A body being indexed, from one piece (and transaction) to the next. */
struct cache_fts_cursor {
	bool active;             /* a body is taken */
	bool sure;               /* search-text vouches for its text */
	int64_t mailbox_id;
	uint32_t uid;
	uint64_t size;           /* the body's bytes */
	struct mime_buffer head, body; /* its text (empty when not sure) */
	size_t step;             /* bytes of body text a piece adds */
	unsigned int pieces;     /* how many it has (1 or more) */
	unsigned int next;       /* the piece to write next: 1 up to pieces - 1, then 0 */
	bool started;            /* pieces left by an earlier try were cleared (in a transaction since committed) */
	bool read_under_lock;    /* its text was read inside the write transaction (else an unsure one is read again) */
};

/* How a body's text of len bytes is cut: returns how many pieces (1 up
   to CACHE_FTS_PIECES_MAX, which the rowid holds), each adding *step_r
   bytes (CACHE_FTS_PIECE_BYTES, more for a text past CACHE_FTS_PIECES_MAX
   of them) to the one before it. */
unsigned int cache_fts_piece_plan(size_t len, size_t *step_r);

/* Lets the cursor's body go (done, or its pieces rolled back: the body
   starts over from its first piece). */
void cache_fts_cursor_reset(struct cache_fts_cursor *cursor);

struct cache_fts_statements;
/* Takes the next body waiting into the (inactive) cursor: reads it and
   extracts its text, which for a 2 MB body takes longer than a piece's
   indexing, so the worker does it before its transaction (the body may
   go meanwhile: each piece's transaction looks again). Returns 1, 0
   when no body waits, or a negative SQLite code. */
int cache_fts_cursor_load(const struct cache_fts_statements *stmts, struct cache_fts_cursor *cursor);

/* Whether bodies' text is being indexed, or will be soon (a run under
   way or its timer armed): a store with no session left stays open for it. */
bool cache_fts_busy(const struct cache *cache);
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

/* Indexes complete bodies not indexed yet, up to about max_bytes of
   their pieces (at least one piece), in one batch. Returns 1 when some remain, 0 when none
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
	sqlite3_stmt *pending, *chunks, *insert, *mark, *merge, *still_pending, *pieces, *clear;
	struct cache_fts_cursor *cursor; /* the connection's: owned with the statements, or the store's */
	bool owned;
};
/* Prepares them on db (a worker's connection). Returns an SQLite code;
   free them with cache_fts_statements_free whatever it returned. */
int cache_fts_statements_prepare(sqlite3 *db, struct cache_fts_statements *stmts);
void cache_fts_statements_free(struct cache_fts_statements *stmts);

/* Whether a batch should end after the piece it is on. */
typedef bool cache_fts_stop_fn(void *context);
/* Indexes pieces of bodies waiting, the cursor's first, up to about
   max_bytes of them (at least one piece), in the caller's transaction,
   ending early after a piece when stop (NULL: none) says so; adds the
   bodies it finished and their bytes to *bodies and *bytes. Returns 1
   when some may remain, 0 when none does, or a negative SQLite code
   (the cursor let go: a rollback takes its pieces). */
int cache_fts_index_some(const struct cache_fts_statements *stmts, size_t max_bytes, cache_fts_stop_fn *stop,
			 void *context, uint64_t *bodies, uint64_t *bytes);
/* One merge step of pages index pages, in the caller's transaction (or
   its own). Returns 1 when more remains, 0 when nothing was left to
   merge, or a negative SQLite code. */
int cache_fts_merge_some(const struct cache_fts_statements *stmts, int pages);

/* Frees the timer (cache_free). */
void cache_fts_stop(struct cache *cache);

#endif
