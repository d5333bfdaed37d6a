/* SPDX-License-Identifier: MIT */
/* cache-checkpoint: a store's WAL copied back into its file on a thread of its own, off the event loop. */
#include "config.h"
#include "cache-checkpoint.h"

#include "log.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define CACHE_CHECKPOINT_BUSY_MS 50 /* the thread's connection waits this long for a lock it needs */

struct cache_checkpointer {
	sqlite3 *db;                 /* the thread's own connection */
	pthread_t thread;
	pthread_mutex_t lock;        /* guards everything below */
	pthread_cond_t wake;         /* due, stopping or paused changed */
	pthread_cond_t idle;         /* running went false */
	bool due;                    /* the WAL grew past its mark since the last checkpoint began */
	bool running;                /* a checkpoint is under way */
	bool stopping;
	bool paused;
	struct cache_checkpoint_counts counts;
};

/* The thread: one PASSIVE checkpoint each time it is due, until stopped. */
static void *cache_checkpointer_run(void *context)
{
	struct cache_checkpointer *checkpointer = context;

	pthread_mutex_lock(&checkpointer->lock);
	for (;;) {
		int rc;

		while (!checkpointer->stopping && (!checkpointer->due || checkpointer->paused))
			pthread_cond_wait(&checkpointer->wake, &checkpointer->lock);
		if (checkpointer->stopping)
			break;
		checkpointer->due = false;
		checkpointer->running = true;
		pthread_mutex_unlock(&checkpointer->lock);
		rc = sqlite3_wal_checkpoint_v2(checkpointer->db, "main", SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
		pthread_mutex_lock(&checkpointer->lock);
		checkpointer->running = false;
		checkpointer->counts.thread_runs++;
		if (rc != SQLITE_OK && (rc & 0xff) != SQLITE_BUSY)
			checkpointer->counts.last_error = rc;
		pthread_cond_broadcast(&checkpointer->idle);
	}
	pthread_mutex_unlock(&checkpointer->lock);
	return NULL;
}

/* SQLite's WAL hook on the loop's connection, after each commit: frames
   is how many pages the WAL holds. */
static int cache_checkpointer_wal_grew(void *context, sqlite3 *db, const char *name, int frames)
{
	struct cache_checkpointer *checkpointer = context;

	if (frames < CACHE_CHECKPOINT_PAGES)
		return SQLITE_OK;
	pthread_mutex_lock(&checkpointer->lock);
	checkpointer->due = true;
	pthread_cond_signal(&checkpointer->wake);
	pthread_mutex_unlock(&checkpointer->lock);
	if (frames >= CACHE_CHECKPOINT_LOOP_PAGES) { /* the thread is behind: as SQLite itself would */
		sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
		pthread_mutex_lock(&checkpointer->lock);
		checkpointer->counts.loop_runs++;
		pthread_mutex_unlock(&checkpointer->lock);
	}
	return SQLITE_OK;
}

/* The thread's connection to path, or NULL. */
static sqlite3 *cache_checkpointer_connect(const char *path)
{
	sqlite3 *db = NULL;

	/* NOMUTEX: the connection is the thread's alone; no CREATE: the file
	   must be the one the loop opened a moment ago */
	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOFOLLOW | SQLITE_OPEN_NOMUTEX, NULL) !=
		    SQLITE_OK ||
	    /* the file read once, so that the connection knows its WAL: a
	       checkpoint before that does nothing */
	    sqlite3_exec(db, "PRAGMA journal_mode = WAL; PRAGMA journal_size_limit = " CACHE_WAL_LIMIT, NULL, NULL,
			 NULL) != SQLITE_OK) {
		sqlite3_close_v2(db);
		return NULL;
	}
	sqlite3_busy_timeout(db, CACHE_CHECKPOINT_BUSY_MS);
	return db;
}

static void cache_checkpointer_free(struct cache_checkpointer *checkpointer)
{
	pthread_cond_destroy(&checkpointer->idle);
	pthread_cond_destroy(&checkpointer->wake);
	pthread_mutex_destroy(&checkpointer->lock);
	sqlite3_close_v2(checkpointer->db);
	free(checkpointer);
}

struct cache_checkpointer *cache_checkpointer_start(sqlite3 *db, const char *path, const char *label)
{
	struct cache_checkpointer *checkpointer = calloc(1, sizeof(*checkpointer));
	int rc;

	if (checkpointer == NULL || !sqlite3_threadsafe()) {
		free(checkpointer);
		log_warning("cache %s: no checkpoint thread (%s); the WAL is checkpointed on the event loop", label,
			    checkpointer == NULL ? "out of memory" : "SQLite was built without threads");
		return NULL;
	}
	pthread_mutex_init(&checkpointer->lock, NULL);
	pthread_cond_init(&checkpointer->wake, NULL);
	pthread_cond_init(&checkpointer->idle, NULL);
	checkpointer->db = cache_checkpointer_connect(path);
	rc = checkpointer->db == NULL ? 0 : pthread_create(&checkpointer->thread, NULL, cache_checkpointer_run, checkpointer);
	if (checkpointer->db == NULL || rc != 0) {
		log_warning("cache %s: no checkpoint thread (%s); the WAL is checkpointed on the event loop", label,
			    checkpointer->db == NULL ? "a second connection to the file failed" : strerror(rc));
		cache_checkpointer_free(checkpointer);
		return NULL;
	}
	sqlite3_wal_hook(db, cache_checkpointer_wal_grew, checkpointer); /* replaces the automatic checkpoint */
	return checkpointer;
}

void cache_checkpointer_stop(struct cache_checkpointer **checkpointerp, sqlite3 *db)
{
	struct cache_checkpointer *checkpointer = *checkpointerp;

	if (checkpointer == NULL)
		return;
	*checkpointerp = NULL;
	if (db != NULL)
		sqlite3_wal_autocheckpoint(db, CACHE_CHECKPOINT_PAGES); /* takes the hook back */
	pthread_mutex_lock(&checkpointer->lock);
	checkpointer->stopping = true;
	pthread_cond_signal(&checkpointer->wake);
	pthread_mutex_unlock(&checkpointer->lock);
	pthread_join(checkpointer->thread, NULL);
	cache_checkpointer_free(checkpointer);
}

void cache_checkpointer_settle(struct cache_checkpointer *checkpointer)
{
	if (checkpointer == NULL)
		return;
	pthread_mutex_lock(&checkpointer->lock);
	while (checkpointer->running || (checkpointer->due && !checkpointer->paused))
		pthread_cond_wait(&checkpointer->idle, &checkpointer->lock);
	pthread_mutex_unlock(&checkpointer->lock);
}

void cache_checkpointer_pause(struct cache_checkpointer *checkpointer, bool paused)
{
	if (checkpointer == NULL)
		return;
	pthread_mutex_lock(&checkpointer->lock);
	checkpointer->paused = paused;
	pthread_cond_signal(&checkpointer->wake);
	pthread_mutex_unlock(&checkpointer->lock);
	if (paused)
		cache_checkpointer_settle(checkpointer); /* a checkpoint under way ends first */
}

struct cache_checkpoint_counts cache_checkpointer_counts(struct cache_checkpointer *checkpointer)
{
	struct cache_checkpoint_counts counts = { 0 };

	if (checkpointer == NULL)
		return counts;
	pthread_mutex_lock(&checkpointer->lock);
	counts = checkpointer->counts;
	pthread_mutex_unlock(&checkpointer->lock);
	return counts;
}
