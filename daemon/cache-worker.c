/* SPDX-License-Identifier: MIT */
/* cache-worker: a store's thread with a connection of its own, for the work no client waits for: WAL checkpoints and the text index. */
#include "config.h"
#include "cache-worker.h"

#include "cache-fts.h"
#include "cache-pages.h"
#include "cache-private.h"
#include "log.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct cache_worker {
	sqlite3 *db;                 /* the thread's own connection */
	struct cache_fts_statements fts;
	sqlite3_stmt *begin, *commit, *rollback;
	pthread_t thread;
	pthread_mutex_t lock;        /* guards everything below */
	pthread_cond_t wake;         /* work came, or stopping or paused changed */
	pthread_cond_t idle;         /* a piece of work ended */
	bool checkpoint_due;         /* the WAL grew past its mark since the last checkpoint began */
	bool restart_wanted;         /* the WAL passed its mark: fills pause, then the loop says go (cache_worker_restart_go) */
	bool restart_due;            /* go: the next checkpoint is a RESTART */
	bool restarting;             /* that RESTART is under way: it holds the loop's writes back */
	int restart_pages;           /* the mark: WAL pages (CACHE_CHECKPOINT_RESTART_PAGES) */
	int restart_floor;           /* after a RESTART that failed, no new one before the WAL holds this many */
	int restart_backoff;         /* the WAL pages the last failure put between it and the floor; 0 after a start afresh */
	int frames;                  /* the WAL's pages at the loop's last commit */
	bool running;                /* a piece of work is under way */
	bool stopping;
	bool paused;
	bool loop_waiting;           /* the loop wants the write lock: end the batch, step aside */
	bool holds_lock;             /* a transaction of the worker holds the write lock */
	bool hold;                   /* cache_worker_hold's */
	bool held;                   /* waiting for the loop between two bodies (hold) */
	struct cache_worker_counts counts;
	struct cache_pages *pages;   /* the thread's alone: what its checkpoints put in the file leaves the page cache */
};

static void cache_worker_sleep_ms(unsigned int ms)
{
	struct timespec pause = { 0, (long)ms * 1000000L };

	nanosleep(&pause, NULL);
}

/* Whether the running index batch should end after its body (cache-fts.h's stop). */
static bool cache_worker_batch_ends(void *context)
{
	struct cache_worker *worker = context;
	bool ends;

	pthread_mutex_lock(&worker->lock);
	while (worker->hold && !worker->loop_waiting && !worker->stopping) {
		worker->held = true;
		pthread_cond_broadcast(&worker->idle);
		pthread_cond_wait(&worker->wake, &worker->lock);
	}
	worker->held = false;
	ends = worker->loop_waiting || worker->restart_due || worker->stopping || worker->paused ||
	       !(worker->counts.jobs & CACHE_WORKER_INDEX);
	pthread_mutex_unlock(&worker->lock);
	return ends;
}

#define CACHE_WORKER_TURN_BUSY 2 /* the lock stayed another's: the job is where it was */

/* One job's turn in its own transaction: a batch of the index, or a
   merge step. Returns 1 when more remains, 0 when the job is done, a
   negative SQLite code on failure, CACHE_WORKER_TURN_BUSY when the lock
   stayed another's all along. */
static void cache_worker_set_holds_lock(struct cache_worker *worker, bool holds)
{
	pthread_mutex_lock(&worker->lock);
	worker->holds_lock = holds;
	pthread_mutex_unlock(&worker->lock);
}

static int cache_worker_turn(struct cache_worker *worker, unsigned int job, uint64_t *bodies, uint64_t *bytes,
			     char *error_text)
{
	int rc, result;

	if (job == CACHE_WORKER_INDEX && !worker->fts.cursor->active) { /* the text first, outside the lock */
		result = cache_fts_cursor_load(&worker->fts, worker->fts.cursor);
		if (result <= 0) {
			if (result < 0)
				snprintf(error_text, CACHE_WORKER_ERROR_TEXT, "%s", sqlite3_errmsg(worker->db));
			return result;
		}
	}
	rc = cache_step_plain(worker->begin);
	if (rc != SQLITE_OK) {
		snprintf(error_text, CACHE_WORKER_ERROR_TEXT, "%s", sqlite3_errmsg(worker->db));
		return (rc & 0xff) == SQLITE_BUSY ? CACHE_WORKER_TURN_BUSY : -rc;
	}
	cache_worker_set_holds_lock(worker, true);
	if (job == CACHE_WORKER_INDEX)
		result = cache_fts_index_some(&worker->fts, CACHE_FTS_BATCH_BYTES, cache_worker_batch_ends, worker, bodies,
					      bytes);
	else
		result = cache_fts_merge_some(&worker->fts, CACHE_FTS_MERGE_PAGES);
	if (result >= 0 && (rc = cache_step_plain(worker->commit)) != SQLITE_OK)
		result = (rc & 0xff) == SQLITE_BUSY ? CACHE_WORKER_TURN_BUSY : -rc;
	if (result < 0) /* before the rollback resets it */
		snprintf(error_text, CACHE_WORKER_ERROR_TEXT, "%s", sqlite3_errmsg(worker->db));
	if (result < 0 || !sqlite3_get_autocommit(worker->db)) {
		cache_step_plain(worker->rollback);
		cache_fts_cursor_reset(worker->fts.cursor); /* its pieces went with the rollback */
	}
	cache_worker_set_holds_lock(worker, false);
	return result;
}

/* Keeps a job's error and its text for the loop (under the lock). */
static void cache_worker_failed(struct cache_worker *worker, int rc, const char *text)
{
	worker->counts.last_error = rc;
	snprintf(worker->counts.last_error_text, sizeof(worker->counts.last_error_text), "%s", text);
}

/* A RESTART failed, or the fills could not wait for it: none is wanted
   again before the WAL has grown past frames by a mark, and by twice as
   much after each failure more (a reader that keeps an old snapshot for
   long would otherwise pause the fills at every mark). Under the lock. */
static void cache_worker_back_off(struct cache_worker *worker, int frames)
{
	int step = worker->restart_backoff == 0 ? worker->restart_pages : worker->restart_backoff;

	if (worker->restart_backoff != 0 && step <= INT32_MAX / 2)
		step *= 2;
	worker->restart_backoff = step;
	worker->restart_floor = frames <= INT32_MAX - step ? frames + step : INT32_MAX;
}

/* The WAL started afresh: a RESTART may be wanted at the next mark, with
   no back-off left. Under the lock. */
static void cache_worker_wal_fresh(struct cache_worker *worker)
{
	worker->restart_floor = 0;
	worker->restart_backoff = 0;
}

/* Runs one piece of work chosen under the lock (held on entry and on
   return): a checkpoint first, then the index, then its merge. */
static void cache_worker_work(struct cache_worker *worker)
{
	unsigned int job = worker->counts.jobs & CACHE_WORKER_INDEX ? CACHE_WORKER_INDEX : CACHE_WORKER_MERGE;
	bool checkpoint = worker->checkpoint_due, restart = worker->restart_due;
	uint64_t bodies = 0, bytes = 0;
	char error_text[CACHE_WORKER_ERROR_TEXT] = "";
	int result = 0, log_frames = 0;

	worker->checkpoint_due = false;
	worker->restart_due = false;
	worker->restarting = restart;
	worker->running = true;
	pthread_mutex_unlock(&worker->lock);
	if (checkpoint || restart) {
		result = sqlite3_wal_checkpoint_v2(worker->db, "main",
						   restart ? SQLITE_CHECKPOINT_RESTART : SQLITE_CHECKPOINT_PASSIVE, &log_frames, NULL);
		snprintf(error_text, sizeof(error_text), "%s", sqlite3_errmsg(worker->db));
		if (result == SQLITE_OK && worker->pages != NULL)
			cache_pages_checkpointed(worker->pages);
	} else {
		result = cache_worker_turn(worker, job, &bodies, &bytes, error_text);
	}
	pthread_mutex_lock(&worker->lock);
	worker->running = false;
	worker->restarting = false;
	if (checkpoint || restart) {
		worker->counts.checkpoints++;
		worker->counts.restarts += restart && result == SQLITE_OK;
		if (restart && result != SQLITE_OK) /* a reader stayed, or the lock did */
			cache_worker_back_off(worker, log_frames > worker->frames ? log_frames : worker->frames);
		if (restart && result == SQLITE_OK) /* the hook may not see the new WAL small */
			cache_worker_wal_fresh(worker);
		if (result != SQLITE_OK && (result & 0xff) != SQLITE_BUSY)
			cache_worker_failed(worker, result, error_text);
	} else {
		worker->counts.indexed_bodies += bodies;
		worker->counts.indexed_bytes += bytes;
		worker->counts.merge_steps += job == CACHE_WORKER_MERGE && result == 1;
		if (result < 0)
			cache_worker_failed(worker, -result, error_text);
		if (result <= 0)
			worker->counts.jobs &= ~(result < 0 ? (unsigned int)(CACHE_WORKER_INDEX | CACHE_WORKER_MERGE) : job);
		worker->counts.index_runs_done += job == CACHE_WORKER_INDEX && result == 0;
	}
	pthread_cond_broadcast(&worker->idle);
	if (worker->loop_waiting) { /* the loop's write goes first */
		worker->loop_waiting = false;
		worker->counts.yields += !checkpoint;
		pthread_mutex_unlock(&worker->lock);
		cache_worker_sleep_ms(CACHE_WORKER_YIELD_MS);
		pthread_mutex_lock(&worker->lock);
	}
}

static void *cache_worker_run(void *context)
{
	struct cache_worker *worker = context;

	pthread_mutex_lock(&worker->lock);
	for (;;) {
		while (!worker->stopping &&
		       (worker->paused || (!worker->checkpoint_due && !worker->restart_due && worker->counts.jobs == 0)))
			pthread_cond_wait(&worker->wake, &worker->lock);
		if (worker->stopping)
			break;
		cache_worker_work(worker);
	}
	pthread_mutex_unlock(&worker->lock);
	return NULL;
}

/* SQLite's WAL hook on the loop's connection, after each commit: frames
   is how many pages the WAL holds.

   The worker's PASSIVE checkpoints keep up with a fill, but the WAL
   starts afresh only for a writer that begins once every frame is back
   in the file, and a fill's held transactions follow one another with
   no such moment between them: a warm's WAL grew by every byte it
   stored. So past the restart mark a RESTART is wanted: the loop holds
   no transaction and sessions that stream bodies in pause after their
   batch (cache_wants_pause); once no transaction of the loop's is open
   the loop says go (cache_worker_restart_go), and the worker's next
   checkpoint is a RESTART, which holds the loop's next writer back until
   every frame is in the file; that writer then starts the WAL afresh.
   A RESTART that fails (a reader stayed) is not tried again before the
   WAL grew by another mark. With the worker paused, the loop
   checkpoints itself past CACHE_CHECKPOINT_LOOP_PAGES. */
static int cache_worker_wal_grew(void *context, sqlite3 *db, const char *name, int frames)
{
	struct cache_worker *worker = context;
	bool behind;

	if (frames < CACHE_CHECKPOINT_PAGES)
		return SQLITE_OK;
	pthread_mutex_lock(&worker->lock);
	worker->checkpoint_due = true;
	worker->frames = frames;
	if (frames < worker->restart_pages)
		cache_worker_wal_fresh(worker);
	if (frames >= worker->restart_pages && frames >= worker->restart_floor && !worker->paused &&
	    !worker->restart_due && !worker->restarting)
		worker->restart_wanted = true;
	pthread_cond_signal(&worker->wake);
	behind = frames >= CACHE_CHECKPOINT_LOOP_PAGES && worker->paused;
	pthread_mutex_unlock(&worker->lock);
	if (behind) { /* as SQLite itself would */
		if ((sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL) & 0xff) == SQLITE_BUSY)
			return SQLITE_OK; /* the worker's checkpoint is under way */
		pthread_mutex_lock(&worker->lock);
		worker->counts.loop_checkpoints++;
		pthread_mutex_unlock(&worker->lock);
	}
	return SQLITE_OK;
}

bool cache_worker_wants_gap(struct cache_worker *worker)
{
	bool wants;

	pthread_mutex_lock(&worker->lock);
	wants = !worker->paused && (worker->restart_wanted || worker->restart_due || worker->restarting);
	pthread_mutex_unlock(&worker->lock);
	return wants;
}

void cache_worker_restart_go(struct cache_worker *worker)
{
	pthread_mutex_lock(&worker->lock);
	if (worker->restart_wanted && !worker->paused) {
		worker->restart_wanted = false;
		worker->restart_due = true;
		worker->checkpoint_due = true;
		pthread_cond_signal(&worker->wake);
	}
	pthread_mutex_unlock(&worker->lock);
}

void cache_worker_restart_give_up(struct cache_worker *worker)
{
	pthread_mutex_lock(&worker->lock);
	if (worker->restart_wanted) {
		worker->restart_wanted = false;
		cache_worker_back_off(worker, worker->frames);
	}
	pthread_mutex_unlock(&worker->lock);
}

/* The thread's connection to path and its statements. Returns 0, -1. */
static int cache_worker_connect(struct cache_worker *worker, const char *path)
{
	sqlite3 *db = NULL;

	/* NOMUTEX: the connection is the thread's alone; no CREATE: the file
	   must be the one the loop opened a moment ago */
	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOFOLLOW | SQLITE_OPEN_NOMUTEX, NULL) !=
	    SQLITE_OK) {
		sqlite3_close_v2(db);
		return -1;
	}
	worker->db = db;
	sqlite3_busy_timeout(db, CACHE_WORKER_BUSY_MS);
	/* its own commits (index batches) grow the WAL too: SQLite's
	   checkpoint after them runs on this thread, at the loop's mark */
	sqlite3_wal_autocheckpoint(db, CACHE_CHECKPOINT_PAGES);
	/* the file read once, so that the connection knows its WAL: a
	   checkpoint before that does nothing */
	if (sqlite3_exec(db, "PRAGMA journal_mode = WAL; PRAGMA journal_size_limit = " CACHE_WAL_LIMIT, NULL, NULL,
			 NULL) != SQLITE_OK ||
	    cache_fts_statements_prepare(db, &worker->fts) != SQLITE_OK ||
	    sqlite3_prepare_v2(db, "BEGIN IMMEDIATE", -1, &worker->begin, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(db, "COMMIT", -1, &worker->commit, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(db, "ROLLBACK", -1, &worker->rollback, NULL) != SQLITE_OK)
		return -1;
	return 0;
}

static void cache_worker_free(struct cache_worker *worker)
{
	pthread_cond_destroy(&worker->idle);
	pthread_cond_destroy(&worker->wake);
	pthread_mutex_destroy(&worker->lock);
	cache_fts_statements_free(&worker->fts);
	sqlite3_finalize(worker->begin);
	sqlite3_finalize(worker->commit);
	sqlite3_finalize(worker->rollback);
	sqlite3_close_v2(worker->db);
	cache_pages_close(&worker->pages);
	free(worker);
}

struct cache_worker *cache_worker_start(sqlite3 *db, const char *path, const char *label)
{
	struct cache_worker *worker = calloc(1, sizeof(*worker));
	const char *why = NULL;
	int rc;

	if (worker == NULL || !sqlite3_threadsafe()) {
		free(worker);
		log_warning("cache %s: no worker thread (%s); checkpoints and the text index run on the event loop",
			    label, worker == NULL ? "out of memory" : "SQLite was built without threads");
		return NULL;
	}
	worker->restart_pages = CACHE_CHECKPOINT_RESTART_PAGES;
	worker->pages = cache_pages_open(path);
	pthread_mutex_init(&worker->lock, NULL);
	pthread_cond_init(&worker->wake, NULL);
	pthread_cond_init(&worker->idle, NULL);
	if (cache_worker_connect(worker, path) < 0)
		why = "a second connection to the file failed";
	else if ((rc = pthread_create(&worker->thread, NULL, cache_worker_run, worker)) != 0)
		why = strerror(rc);
	if (why != NULL) {
		log_warning("cache %s: no worker thread (%s); checkpoints and the text index run on the event loop",
			    label, why);
		cache_worker_free(worker);
		return NULL;
	}
	sqlite3_wal_hook(db, cache_worker_wal_grew, worker); /* replaces the automatic checkpoint */
	return worker;
}

void cache_worker_stop(struct cache_worker **workerp, sqlite3 *db)
{
	struct cache_worker *worker = *workerp;

	if (worker == NULL)
		return;
	*workerp = NULL;
	if (db != NULL)
		sqlite3_wal_autocheckpoint(db, CACHE_CHECKPOINT_PAGES); /* takes the hook back */
	pthread_mutex_lock(&worker->lock);
	worker->stopping = true;
	pthread_cond_broadcast(&worker->wake);
	pthread_mutex_unlock(&worker->lock);
	pthread_join(worker->thread, NULL);
	cache_worker_free(worker);
}

void cache_worker_want(struct cache_worker *worker, unsigned int jobs)
{
	pthread_mutex_lock(&worker->lock);
	worker->counts.jobs |= jobs;
	worker->counts.last_error = SQLITE_OK; /* the loop read it: a new try */
	pthread_cond_signal(&worker->wake);
	pthread_mutex_unlock(&worker->lock);
}

void cache_worker_unwant(struct cache_worker *worker, unsigned int jobs)
{
	pthread_mutex_lock(&worker->lock);
	worker->counts.jobs &= ~jobs;
	pthread_mutex_unlock(&worker->lock);
}

bool cache_worker_loop_waits(struct cache_worker *worker)
{
	bool running; /* holding the lock */

	pthread_mutex_lock(&worker->lock);
	running = worker->holds_lock || worker->restarting;
	worker->loop_waiting = running;
	if (worker->held)
		pthread_cond_broadcast(&worker->wake);
	pthread_mutex_unlock(&worker->lock);
	return running;
}

struct cache_worker_counts cache_worker_counts(struct cache_worker *worker)
{
	struct cache_worker_counts counts;

	pthread_mutex_lock(&worker->lock);
	counts = worker->counts;
	counts.holds_lock = worker->holds_lock;
	counts.held = worker->held;
	pthread_mutex_unlock(&worker->lock);
	return counts;
}

void cache_worker_hold(struct cache_worker *worker, bool hold)
{
	pthread_mutex_lock(&worker->lock);
	worker->hold = hold;
	pthread_cond_broadcast(&worker->wake);
	pthread_mutex_unlock(&worker->lock);
}

void cache_worker_settle(struct cache_worker *worker)
{
	if (worker == NULL)
		return;
	pthread_mutex_lock(&worker->lock);
	while (worker->running || (!worker->paused && (worker->checkpoint_due || worker->counts.jobs != 0)))
		pthread_cond_wait(&worker->idle, &worker->lock);
	pthread_mutex_unlock(&worker->lock);
}

void cache_worker_pause(struct cache_worker *worker, bool paused)
{
	if (worker == NULL)
		return;
	pthread_mutex_lock(&worker->lock);
	worker->paused = paused;
	pthread_cond_signal(&worker->wake);
	pthread_mutex_unlock(&worker->lock);
	if (paused)
		cache_worker_settle(worker); /* what is under way ends first */
}

int cache_worker_exec_paused(struct cache_worker *worker, const char *sql)
{
	int rc = SQLITE_MISUSE;

	pthread_mutex_lock(&worker->lock);
	if (worker->paused && !worker->running) /* the thread keeps off its connection */
		rc = sqlite3_exec(worker->db, sql, NULL, NULL, NULL);
	pthread_mutex_unlock(&worker->lock);
	return rc;
}
