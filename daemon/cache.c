/* SPDX-License-Identifier: MIT */
/* cache: the SQLite store of one upstream account, shared by that account's sessions. */
#include "config.h"
#include "cache.h"
#include "log.h"

#include <assert.h>
#include <errno.h>
#include <event2/buffer.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CACHE_BUSY_TIMEOUT_MS 100 /* another process (imapcachectl) holds the lock: don't stall the loop longer */
#define CACHE_WAL_LIMIT "16777216" /* bytes a WAL grown by a burst of bodies is cut back to after a checkpoint */
#define CACHE_ASIDE_TRIES 99 /* stores moved aside within one second; more is a loop, not bad luck */
#define CACHE_MAILBOX_MAX_UIDS (16u << 20) /* far past any real mailbox; a damaged list must not claim gigabytes */
#define CACHE_UID_RANGE_MAX_BYTES 10 /* a range is two LEB128 numbers of at most 5 bytes */
#define CACHE_LOOKUP_DENSE_FACTOR 4 /* a UID list covering at least 1/4 of its span is read as one range */

/* ---- statements ---- */

#define CACHE_MESSAGE_COLUMNS \
	"m.uid, m.internaldate, m.envelope, m.bodystructure, m.body_item, m.header, m.flags, " \
	"m.size, m.modseq, m.structure_agrees, b.size"
#define CACHE_MESSAGE_FROM \
	" FROM messages m LEFT JOIN bodies b ON b.mailbox_id = m.mailbox_id AND b.uid = m.uid AND b.complete = 1"
#define CACHE_STORE_VALUE(column) \
	"INSERT INTO messages(mailbox_id, uid, " column ") VALUES(?1, ?2, ?3) " \
	"ON CONFLICT(mailbox_id, uid) DO UPDATE SET " column " = excluded." column

/* The columns CACHE_MESSAGE_COLUMNS selects, in order. */
enum cache_column {
	CACHE_COLUMN_UID,
	CACHE_COLUMN_VALUES, /* CACHE_VALUE_ITEMS of them, in enum cache_item order */
	CACHE_COLUMN_SIZE = CACHE_COLUMN_VALUES + CACHE_VALUE_ITEMS,
	CACHE_COLUMN_MODSEQ,
	CACHE_COLUMN_STRUCTURE_AGREES,
	CACHE_COLUMN_BODY_SIZE,
};

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

static const char *const cache_stmt_sql[CACHE_STMT_COUNT] = {
	[CACHE_STMT_BEGIN] = "BEGIN IMMEDIATE",
	[CACHE_STMT_COMMIT] = "COMMIT",
	[CACHE_STMT_ROLLBACK] = "ROLLBACK",
	[CACHE_STMT_SAVEPOINT] = "SAVEPOINT cache_op",
	[CACHE_STMT_RELEASE] = "RELEASE cache_op",
	[CACHE_STMT_ROLLBACK_TO] = "ROLLBACK TO cache_op",
	[CACHE_STMT_MAILBOX_GET] =
		"SELECT id, uidvalidity, uidnext, highestmodseq FROM mailboxes WHERE name = ?1",
	[CACHE_STMT_MAILBOX_INSERT] = "INSERT INTO mailboxes(name, uidvalidity) VALUES(?1, ?2)",
	[CACHE_STMT_MAILBOX_DELETE] = "DELETE FROM mailboxes WHERE id = ?1",
	[CACHE_STMT_MAILBOX_BODY_BYTES] = "SELECT coalesce(sum(size), 0) FROM bodies WHERE mailbox_id = ?1",
	[CACHE_STMT_MAILBOX_SET_STATE] = "UPDATE mailboxes SET uidnext = ?2, highestmodseq = ?3 WHERE id = ?1",
	[CACHE_STMT_MAILBOX_SET_UIDS] = "UPDATE mailboxes SET uids = ?2 WHERE id = ?1",
	[CACHE_STMT_MAILBOX_GET_UIDS] = "SELECT uids FROM mailboxes WHERE id = ?1",
	[CACHE_STMT_STORE_INTERNALDATE] = CACHE_STORE_VALUE("internaldate"),
	[CACHE_STMT_STORE_ENVELOPE] = CACHE_STORE_VALUE("envelope"),
	[CACHE_STMT_STORE_BODYSTRUCTURE] = CACHE_STORE_VALUE("bodystructure"),
	[CACHE_STMT_STORE_BODY] = CACHE_STORE_VALUE("body_item"),
	[CACHE_STMT_STORE_HEADER] = CACHE_STORE_VALUE("header"),
	[CACHE_STMT_STORE_FLAGS] =
		"INSERT INTO messages(mailbox_id, uid, flags, modseq) VALUES(?1, ?2, ?3, ?4) "
		"ON CONFLICT(mailbox_id, uid) DO UPDATE SET flags = excluded.flags, modseq = excluded.modseq",
	[CACHE_STMT_STORE_SIZE] = CACHE_STORE_VALUE("size"),
	[CACHE_STMT_STORE_AGREES] = CACHE_STORE_VALUE("structure_agrees"),
	[CACHE_STMT_MESSAGE_ENSURE] =
		"INSERT INTO messages(mailbox_id, uid) VALUES(?1, ?2) ON CONFLICT(mailbox_id, uid) DO NOTHING",
	[CACHE_STMT_MESSAGE_DELETE] = "DELETE FROM messages WHERE mailbox_id = ?1 AND uid = ?2",
	[CACHE_STMT_LOOKUP_ONE] =
		"SELECT " CACHE_MESSAGE_COLUMNS CACHE_MESSAGE_FROM " WHERE m.mailbox_id = ?1 AND m.uid = ?2",
	[CACHE_STMT_LOOKUP_RANGE] =
		"SELECT " CACHE_MESSAGE_COLUMNS CACHE_MESSAGE_FROM
		" WHERE m.mailbox_id = ?1 AND m.uid BETWEEN ?2 AND ?3 ORDER BY m.uid",
	[CACHE_STMT_BODY_INSERT] =
		"INSERT INTO bodies(mailbox_id, uid, size, complete, last_used) VALUES(?1, ?2, ?3, 0, ?4) "
		"ON CONFLICT(mailbox_id, uid) DO NOTHING",
	[CACHE_STMT_BODY_DELETE] = "DELETE FROM bodies WHERE mailbox_id = ?1 AND uid = ?2 RETURNING size",
	[CACHE_STMT_BODY_ABORT] =
		"DELETE FROM bodies WHERE mailbox_id = ?1 AND uid = ?2 AND complete = 0 RETURNING size",
	[CACHE_STMT_BODY_COMPLETE] =
		"UPDATE bodies SET complete = 1 WHERE mailbox_id = ?1 AND uid = ?2 AND complete = 0 AND size = ?3",
	[CACHE_STMT_BODY_GET] =
		"SELECT size, last_used FROM bodies WHERE mailbox_id = ?1 AND uid = ?2 AND complete = 1",
	[CACHE_STMT_BODY_TOUCH] = "UPDATE bodies SET last_used = ?3 WHERE mailbox_id = ?1 AND uid = ?2",
	[CACHE_STMT_BODY_TOTAL] = "SELECT coalesce(sum(size), 0) FROM bodies",
	[CACHE_STMT_CHUNK_INSERT] = "INSERT INTO body_chunks(mailbox_id, uid, chunk, data) VALUES(?1, ?2, ?3, ?4)",
	[CACHE_STMT_CHUNK_STATS] =
		"SELECT count(*), coalesce(sum(length(data)), 0) FROM body_chunks WHERE mailbox_id = ?1 AND uid = ?2",
	[CACHE_STMT_CHUNK_READ] =
		"SELECT chunk, data FROM body_chunks WHERE mailbox_id = ?1 AND uid = ?2 AND chunk BETWEEN ?3 AND ?4 "
		"ORDER BY chunk",
};

/*
 * The schema, one migration per version: cache_migrations[v] takes a store
 * at user_version v to v + 1. Never edit a released one: add the next.
 *
 * mailboxes.id is AUTOINCREMENT so that an id is never reused: a mailbox
 * whose UIDVALIDITY changed gets a new id, and a write under the old one
 * fails its foreign key instead of passing for the new UIDVALIDITY's.
 * mailboxes.uids is the UID list as ranges (cache_uids_encode). Bodies are
 * in tables of their own, in CACHE_BODY_CHUNK_SIZE pieces, so that
 * evicting one is a DELETE and reading part of one reads only its pieces;
 * bodies.last_used (seconds since the epoch) orders the eviction.
 */
static const char *const cache_migrations[CACHE_SCHEMA_VERSION] = {
	"CREATE TABLE meta(key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL) WITHOUT ROWID;"
	"CREATE TABLE mailboxes(id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE,"
	" uidvalidity INTEGER NOT NULL, uidnext INTEGER, highestmodseq INTEGER, uids BLOB);"
	"CREATE TABLE messages(mailbox_id INTEGER NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,"
	" uid INTEGER NOT NULL, internaldate BLOB, envelope BLOB, bodystructure BLOB, body_item BLOB,"
	" header BLOB, flags BLOB, size INTEGER, modseq INTEGER, structure_agrees INTEGER,"
	" PRIMARY KEY(mailbox_id, uid)) WITHOUT ROWID;"
	"CREATE TABLE bodies(mailbox_id INTEGER NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,"
	" uid INTEGER NOT NULL, size INTEGER NOT NULL, complete INTEGER NOT NULL, last_used INTEGER NOT NULL,"
	" PRIMARY KEY(mailbox_id, uid)) WITHOUT ROWID;"
	"CREATE INDEX bodies_last_used ON bodies(last_used);"
	"CREATE TABLE body_chunks(mailbox_id INTEGER NOT NULL, uid INTEGER NOT NULL, chunk INTEGER NOT NULL,"
	" data BLOB NOT NULL, PRIMARY KEY(mailbox_id, uid, chunk),"
	" FOREIGN KEY(mailbox_id, uid) REFERENCES bodies(mailbox_id, uid) ON DELETE CASCADE);",
};

/* ---- state ---- */

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

	uint64_t body_bytes;           /* == SUM(bodies.size) */
	struct cache_body_writer *writers;
};

struct cache_body_writer {
	struct cache_body_writer *next; /* in cache->writers */
	struct cache *cache;
	int64_t mailbox_id;
	uint32_t uid;
	uint64_t size;                 /* announced */
	uint64_t received;             /* bytes given to cache_body_write */
	int64_t next_chunk;
	bool failed;
	size_t pending_size;
	unsigned char pending[];       /* min(size, CACHE_BODY_CHUNK_SIZE) bytes */
};

enum cache_open_result {
	CACHE_OPEN_OK,
	CACHE_OPEN_ASIDE,              /* not a store of ours: move it aside, start anew */
	CACHE_OPEN_READ_ONLY,          /* can't be written: open it for reading */
	CACHE_OPEN_FAILED,
};

/* Every open store of this process, so that an account's sessions share one. */
static struct cache *cache_registry;

static const unsigned char cache_empty_value[1];

/* ---- clocks and errors ---- */

static uint64_t cache_now(const struct cache *cache)
{
	struct timespec ts;

	if (cache->settings.now != NULL)
		return cache->settings.now();
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec;
}

/* Turns writes off after a failure that more writes would only repeat. */
static void cache_writes_stop(struct cache *cache, bool for_good, const char *what, const char *why)
{
	if (!cache->writes_off)
		log_warning("cache %s: %s: %s; caching no more%s, proxying goes on", cache->label, what, why,
			    for_good ? " until the store is opened again" : " for a while");
	cache->writes_off = true;
	cache->writes_off_for_good |= for_good;
	cache->writes_retry_at = cache_now(cache) + CACHE_WRITE_RETRY_SECONDS;
}

/* Logs a failed SQLite call (rc) and decides what it means for the store. */
static void cache_fail(struct cache *cache, int rc, const char *what)
{
	const char *why = sqlite3_errmsg(cache->db);

	switch (rc & 0xff) {
	case SQLITE_FULL:
	case SQLITE_READONLY:
	case SQLITE_IOERR:
	case SQLITE_CANTOPEN:
	case SQLITE_NOMEM:
		cache_writes_stop(cache, false, what, why);
		break;
	case SQLITE_CORRUPT:
	case SQLITE_NOTADB:
		if (!cache->corrupt)
			log_warning("cache %s: %s: %s; it is read what can be read, and moved aside when closed",
				    cache->label, what, why);
		cache->corrupt = true;
		cache_writes_stop(cache, true, what, why);
		break;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		log_info("cache %s: %s: %s (another process holds the store)", cache->label, what, why);
		break;
	default:
		if (rc == SQLITE_CONSTRAINT_FOREIGNKEY)
			log_debug("cache %s: %s: its mailbox or message is no longer stored", cache->label, what);
		else
			log_error("cache %s: %s: %s", cache->label, what, why);
		break;
	}
	/* A failed statement may take the whole transaction with it (SQLITE_FULL can). */
	if (cache->batch_depth > 0 && cache->batch_in_transaction && sqlite3_get_autocommit(cache->db)) {
		cache->batch_in_transaction = false;
		cache->batch_doomed = true;
	}
}

bool cache_writes_off(struct cache *cache)
{
	if (cache->writes_off && !cache->writes_off_for_good && cache_now(cache) >= cache->writes_retry_at) {
		log_info("cache %s: trying writes again", cache->label);
		cache->writes_off = false;
	}
	return cache->writes_off;
}

/* Whether a write may run now (not off, not in a batch that is lost). */
static bool cache_write_allowed(struct cache *cache)
{
	if (cache->batch_depth > 0)
		return cache->batch_in_transaction && !cache->batch_doomed && !cache->writes_off;
	return !cache_writes_off(cache);
}

/* ---- statement helpers ---- */

static sqlite3_stmt *cache_stmt(struct cache *cache, enum cache_stmt which)
{
	return cache->stmts[which];
}

/* Runs a statement that returns no rows; 0, or -1 (cache_fail'd). */
static int cache_run(struct cache *cache, sqlite3_stmt *stmt, const char *what)
{
	int rc = sqlite3_step(stmt);

	sqlite3_reset(stmt);
	sqlite3_clear_bindings(stmt);
	if (rc == SQLITE_DONE)
		return 0;
	cache_fail(cache, rc, what);
	return -1;
}

/* Runs a statement that returns at most one integer row. 1 with *value_r,
   0 without a row, -1 (cache_fail'd). The statement is reset. */
static int cache_run_integer(struct cache *cache, sqlite3_stmt *stmt, const char *what, int64_t *value_r)
{
	int rc = sqlite3_step(stmt);
	int result = 0;

	if (rc == SQLITE_ROW) {
		*value_r = sqlite3_column_int64(stmt, 0);
		result = 1;
		while ((rc = sqlite3_step(stmt)) == SQLITE_ROW)
			;
	}
	sqlite3_reset(stmt);
	sqlite3_clear_bindings(stmt);
	if (rc != SQLITE_DONE) {
		cache_fail(cache, rc, what);
		return -1;
	}
	return result;
}

/* Binds size bytes at data; NULL data binds NULL, a 0-byte value an empty blob. */
static void cache_bind_value(sqlite3_stmt *stmt, int index, const void *data, size_t size)
{
	if (data == NULL)
		sqlite3_bind_null(stmt, index);
	else if (size == 0)
		sqlite3_bind_zeroblob(stmt, index, 0);
	else
		sqlite3_bind_blob64(stmt, index, data, size, SQLITE_STATIC);
}

static void cache_bind_key(sqlite3_stmt *stmt, int64_t mailbox_id, uint32_t uid)
{
	sqlite3_bind_int64(stmt, 1, mailbox_id);
	sqlite3_bind_int64(stmt, 2, uid);
}

/* Binds a number that 0 means "not known" for: NULL. */
static void cache_bind_known(sqlite3_stmt *stmt, int index, uint64_t value)
{
	if (value == 0)
		sqlite3_bind_null(stmt, index);
	else
		sqlite3_bind_int64(stmt, index, (int64_t)value);
}

/* A savepoint around the statements of one call, so that each call is all
   or nothing, inside a batch or alone. */
static int cache_op_begin(struct cache *cache)
{
	return cache_run(cache, cache_stmt(cache, CACHE_STMT_SAVEPOINT), "starting a write");
}

/* Ends cache_op_begin's savepoint: kept when result is 0, undone when not.
   Returns result, or -1 when keeping it failed. */
static int cache_op_end(struct cache *cache, int result)
{
	if (result == 0 && cache_run(cache, cache_stmt(cache, CACHE_STMT_RELEASE), "committing a write") == 0)
		return 0;
	if (!sqlite3_get_autocommit(cache->db)) {
		sqlite3_step(cache_stmt(cache, CACHE_STMT_ROLLBACK_TO));
		sqlite3_reset(cache_stmt(cache, CACHE_STMT_ROLLBACK_TO));
		sqlite3_step(cache_stmt(cache, CACHE_STMT_RELEASE));
		sqlite3_reset(cache_stmt(cache, CACHE_STMT_RELEASE));
	}
	/* Outside a batch the savepoint was the transaction: never leave one
	   open (a RELEASE that is a COMMIT can fail when busy). */
	if (cache->batch_depth == 0 && !sqlite3_get_autocommit(cache->db)) {
		sqlite3_step(cache_stmt(cache, CACHE_STMT_ROLLBACK));
		sqlite3_reset(cache_stmt(cache, CACHE_STMT_ROLLBACK));
	}
	return -1;
}

/* Sets body_bytes from the store, after a rollback undid some of its changes. */
static void cache_body_bytes_reload(struct cache *cache)
{
	int64_t total = 0;

	if (cache_run_integer(cache, cache_stmt(cache, CACHE_STMT_BODY_TOTAL), "adding up bodies", &total) >= 0)
		cache->body_bytes = total > 0 ? (uint64_t)total : 0;
}

static void cache_body_bytes_sub(struct cache *cache, int64_t size)
{
	if (size > 0)
		cache->body_bytes -= (uint64_t)size <= cache->body_bytes ? (uint64_t)size : cache->body_bytes;
}

/* ---- file names ---- */

static bool cache_name_byte_plain(unsigned char c, size_t position)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
		return true;
	if (c == '.')
		return position > 0;
	return c == '_' || c == '@' || c == '+' || c == '-';
}

/* Writes name, encoded for one path component, into out (CACHE_NAME_MAX
   bytes and a NUL; the caller checked that it fits). */
static void cache_name_encode(const char *name, char *out)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t len = 0;

	for (size_t i = 0; name[i] != '\0'; i++) {
		unsigned char c = (unsigned char)name[i];

		if (len + 3 > CACHE_NAME_MAX)
			break;
		if (cache_name_byte_plain(c, i)) {
			out[len++] = (char)c;
		} else {
			out[len++] = '%';
			out[len++] = hex[c >> 4];
			out[len++] = hex[c & 0x0f];
		}
	}
	out[len] = '\0';
}

/* The length of name encoded, stopping once past CACHE_NAME_MAX. */
static size_t cache_name_encoded_length(const char *name)
{
	size_t len = 0;

	for (size_t i = 0; name[i] != '\0' && len <= CACHE_NAME_MAX; i++)
		len += cache_name_byte_plain((unsigned char)name[i], i) ? 1 : 3;
	return len;
}

/* Writes name's file name into out (CACHE_NAME_MAX + 1 bytes). */
static bool cache_name_make(const char *name, char *out)
{
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned int digest_len = 0;
	size_t len;

	if (cache_name_encoded_length(name) <= CACHE_NAME_MAX) {
		cache_name_encode(name, out);
		return true;
	}
	if (EVP_Digest(name, strlen(name), digest, &digest_len, EVP_sha256(), NULL) != 1)
		return false;
	len = (size_t)snprintf(out, CACHE_NAME_MAX + 1, "sha256=");
	for (unsigned int i = 0; i < digest_len; i++)
		len += (size_t)snprintf(out + len, CACHE_NAME_MAX + 1 - len, "%02x", digest[i]);
	return true;
}

char *cache_file_path(const char *dir, const char *upstream, const char *user)
{
	char upstream_name[CACHE_NAME_MAX + 1];
	char user_name[CACHE_NAME_MAX + 1];
	char *path;

	if (upstream[0] == '\0' || user[0] == '\0')
		return NULL;
	if (!cache_name_make(upstream, upstream_name) || !cache_name_make(user, user_name))
		return NULL;
	if (asprintf(&path, "%s/%s/%s.sqlite", dir, upstream_name, user_name) < 0)
		return NULL;
	return path;
}

/* ---- directories and the file ---- */

/* Makes dir (0700) when missing; refuses one owned by another user, and
   takes group and other access (and set-id bits) away from ours; a mode
   that lets us only read is left so, and the store opened for reading.
   follow: dir may be a symbolic link (the admin's cache.dir may; our own
   subdirectories may not). */
static int cache_dir_prepare(const char *label, const char *dir, bool follow, const char **error_r)
{
	struct stat st;
	int fd;

	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		log_error("cache %s: cannot make the directory %s: %s", label, dir, strerror(errno));
		*error_r = "cannot make the cache directory";
		return -1;
	}
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC | (follow ? 0 : O_NOFOLLOW));
	if (fd < 0 || fstat(fd, &st) < 0) {
		log_error("cache %s: cannot open the directory %s: %s", label, dir, strerror(errno));
		*error_r = "cannot open the cache directory";
		if (fd >= 0)
			close(fd);
		return -1;
	}
	if (st.st_uid != geteuid()) {
		log_error("cache %s: %s belongs to uid %u, not to uid %u that imapcached runs as: "
			  "chown it, or set cache.dir to a directory of imapcached's own",
			  label, dir, (unsigned int)st.st_uid, (unsigned int)geteuid());
		*error_r = "the cache directory belongs to another user";
		close(fd);
		return -1;
	}
	if ((st.st_mode & 07077) != 0) {
		mode_t mode = st.st_mode & 0700;

		if (fchmod(fd, mode) == 0)
			log_info("cache %s: %s had mode %04o; set it to %04o", label, dir,
				 (unsigned int)(st.st_mode & 07777), (unsigned int)mode);
		else if (errno != EROFS)
			log_warning("cache %s: cannot set the mode of %s to %04o: %s", label, dir, (unsigned int)mode,
				    strerror(errno));
	}
	close(fd);
	return 0;
}

/* Checks the store's file before SQLite opens it: made 0600 when missing,
   its mode fixed, and never a link, a directory or another user's. */
static enum cache_open_result cache_file_prepare(struct cache *cache, const char **why_r, const char **error_r)
{
	struct stat st;
	bool existed = lstat(cache->path, &st) == 0;
	int fd;

	if (existed && !S_ISREG(st.st_mode)) {
		*why_r = "not a regular file";
		return CACHE_OPEN_ASIDE;
	}
	if (existed && st.st_uid != geteuid()) {
		log_error("cache %s: %s belongs to uid %u, not to uid %u that imapcached runs as: chown or remove it",
			  cache->label, cache->path, (unsigned int)st.st_uid, (unsigned int)geteuid());
		*error_r = "the cache file belongs to another user";
		return CACHE_OPEN_FAILED;
	}
	if (existed && (st.st_mode & 07177) != 0 && chmod(cache->path, st.st_mode & 0600) == 0)
		log_info("cache %s: %s had mode %04o; set it to %04o", cache->label, cache->path,
			 (unsigned int)(st.st_mode & 07777), (unsigned int)(st.st_mode & 0600));
	/* O_NONBLOCK: a FIFO put in its place must not hang the daemon. */
	fd = open(cache->path, O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0600);
	if (fd < 0 && (errno == ELOOP || errno == EISDIR || errno == ENXIO)) {
		*why_r = "not a regular file";
		return CACHE_OPEN_ASIDE;
	}
	if (fd < 0 && existed && (errno == EACCES || errno == EROFS || errno == EPERM))
		return CACHE_OPEN_READ_ONLY;
	if (fd < 0) {
		log_error("cache %s: cannot %s %s: %s", cache->label, existed ? "open" : "make", cache->path,
			  strerror(errno));
		*error_r = existed ? "cannot open the cache file" : "cannot make the cache file";
		return CACHE_OPEN_FAILED;
	}
	if (!existed && fstat(fd, &st) == 0 && (st.st_mode & 07777) != 0600)
		(void)fchmod(fd, 0600);
	/* Closed before SQLite opens it: closing any descriptor of a file
	   drops this process's POSIX locks on it, SQLite's included. */
	close(fd);
	return CACHE_OPEN_OK;
}

/* Renames from to to when from exists; true unless the rename failed. */
static bool cache_rename_if_there(const char *from, const char *to)
{
	return rename(from, to) == 0 || errno == ENOENT;
}

/* Moves the store's file (and its WAL and journal) aside to
   PATH.corrupt-TIMESTAMP[-N], keeping it for a look, so a new store can be
   made. Returns 0, or -1 with a log line. */
static int cache_move_aside(struct cache *cache, const char *why)
{
	char stamp[32];
	char *aside = NULL;
	char *from = NULL;
	char *to = NULL;
	time_t now = time(NULL);
	struct tm tm;
	struct stat st;
	bool ok;

	gmtime_r(&now, &tm);
	strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
	for (unsigned int n = 1; n <= CACHE_ASIDE_TRIES; n++) {
		free(aside);
		if ((n == 1 ? asprintf(&aside, "%s.corrupt-%s", cache->path, stamp)
			    : asprintf(&aside, "%s.corrupt-%s-%u", cache->path, stamp, n)) < 0) {
			aside = NULL;
			break;
		}
		if (lstat(aside, &st) < 0 && errno == ENOENT)
			break;
	}
	ok = aside != NULL && rename(cache->path, aside) == 0;
	if (!ok) {
		log_error("cache %s: %s is %s, and cannot be moved aside: %s", cache->label, cache->path, why,
			  aside != NULL ? strerror(errno) : "out of memory");
		free(aside);
		return -1;
	}
	/* A WAL or journal left behind would be applied to the new store. */
	for (unsigned int i = 0; i < 2 && ok; i++) {
		const char *suffix = i == 0 ? "-wal" : "-journal";

		ok = asprintf(&from, "%s%s", cache->path, suffix) >= 0 && asprintf(&to, "%s%s", aside, suffix) >= 0 &&
		     cache_rename_if_there(from, to);
		free(from);
		free(to);
		from = to = NULL;
	}
	if (ok && asprintf(&from, "%s-shm", cache->path) >= 0) {
		ok = unlink(from) == 0 || errno == ENOENT;
		free(from);
	}
	if (!ok)
		log_error("cache %s: cannot move the WAL of %s aside: %s", cache->label, cache->path, strerror(errno));
	else
		log_warning("cache %s: %s is %s; moved aside to %s, and a new cache begins", cache->label,
			    cache->path, why, aside);
	free(aside);
	return ok ? 0 : -1;
}

/* ---- opening ---- */

static void cache_db_close(struct cache *cache)
{
	for (unsigned int i = 0; i < CACHE_STMT_COUNT; i++) {
		sqlite3_finalize(cache->stmts[i]);
		cache->stmts[i] = NULL;
	}
	sqlite3_close_v2(cache->db);
	cache->db = NULL;
}

/* What a failure while opening means: not ours, can't write, or failed. */
static enum cache_open_result cache_open_classify(struct cache *cache, int rc, const char *what,
						  const char **why_r, const char **error_r)
{
	switch (rc & 0xff) {
	case SQLITE_NOTADB:
	case SQLITE_CORRUPT:
	case SQLITE_FORMAT:
		*why_r = "not a database, or a damaged one";
		return CACHE_OPEN_ASIDE;
	case SQLITE_READONLY:
	case SQLITE_CANTOPEN:
	case SQLITE_PERM:
		return CACHE_OPEN_READ_ONLY;
	default:
		log_error("cache %s: %s %s: %s", cache->label, what, cache->path,
			  cache->db != NULL ? sqlite3_errmsg(cache->db) : sqlite3_errstr(rc));
		*error_r = "cannot open the cache file";
		return CACHE_OPEN_FAILED;
	}
}

/* A "file:" URI for path with immutable=1: read without locks or WAL,
   which is how a store in a read-only directory can be read at all. */
static char *cache_read_only_uri(const char *path)
{
	static const char hex[] = "0123456789ABCDEF";
	const char *tail = "?immutable=1";
	char *uri = malloc(strlen("file:") + strlen(path) * 3 + strlen(tail) + 1);
	size_t len;

	if (uri == NULL)
		return NULL;
	len = (size_t)sprintf(uri, "file:");
	for (const unsigned char *p = (const unsigned char *)path; *p != '\0'; p++) {
		if (*p == '%' || *p == '?' || *p == '#' || *p < 0x21 || *p > 0x7e) {
			uri[len++] = '%';
			uri[len++] = hex[*p >> 4];
			uri[len++] = hex[*p & 0x0f];
		} else {
			uri[len++] = (char)*p;
		}
	}
	strcpy(uri + len, tail);
	return uri;
}

static int cache_exec(struct cache *cache, const char *sql)
{
	return sqlite3_exec(cache->db, sql, NULL, NULL, NULL);
}

/* Reads an integer from a one-row query; the SQLite code, or SQLITE_OK. */
static int cache_query_integer(struct cache *cache, const char *sql, int64_t *value_r)
{
	sqlite3_stmt *stmt;
	int rc = sqlite3_prepare_v2(cache->db, sql, -1, &stmt, NULL);

	if (rc != SQLITE_OK)
		return rc;
	rc = sqlite3_step(stmt);
	*value_r = rc == SQLITE_ROW ? sqlite3_column_int64(stmt, 0) : 0;
	rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
	sqlite3_finalize(stmt);
	return rc;
}

/* Checks that meta names this account: a store moved to another
   account's name is not that account's. */
static enum cache_open_result cache_check_account(struct cache *cache, const char **why_r, const char **error_r)
{
	static const char sql[] = "SELECT (SELECT value FROM meta WHERE key = 'upstream'),"
				  " (SELECT value FROM meta WHERE key = 'user')";
	sqlite3_stmt *stmt;
	int rc = sqlite3_prepare_v2(cache->db, sql, -1, &stmt, NULL);
	bool ours;

	if (rc != SQLITE_OK)
		return cache_open_classify(cache, rc, "reading the account of", why_r, error_r);
	rc = sqlite3_step(stmt);
	if (rc != SQLITE_ROW) {
		sqlite3_finalize(stmt);
		return cache_open_classify(cache, rc, "reading the account of", why_r, error_r);
	}
	ours = sqlite3_column_text(stmt, 0) != NULL && sqlite3_column_text(stmt, 1) != NULL &&
	       strcmp((const char *)sqlite3_column_text(stmt, 0), cache->upstream) == 0 &&
	       strcmp((const char *)sqlite3_column_text(stmt, 1), cache->user) == 0;
	sqlite3_finalize(stmt);
	if (!ours) {
		*why_r = "another account's store";
		return CACHE_OPEN_ASIDE;
	}
	return CACHE_OPEN_OK;
}

/* Writes the account into a new store's meta. */
static int cache_write_account(struct cache *cache)
{
	sqlite3_stmt *stmt;
	int rc = sqlite3_prepare_v2(cache->db, "INSERT OR REPLACE INTO meta(key, value) VALUES('upstream', ?1), "
					       "('user', ?2)", -1, &stmt, NULL);

	if (rc != SQLITE_OK)
		return rc;
	sqlite3_bind_text(stmt, 1, cache->upstream, -1, SQLITE_STATIC);
	sqlite3_bind_text(stmt, 2, cache->user, -1, SQLITE_STATIC);
	rc = sqlite3_step(stmt);
	sqlite3_finalize(stmt);
	return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* Brings a store at version to CACHE_SCHEMA_VERSION, one transaction per
   step; a new store (version 0) gets its account in the first. */
static int cache_migrate(struct cache *cache, int64_t version)
{
	char sql[64];
	int rc = SQLITE_OK;

	for (; version < CACHE_SCHEMA_VERSION && rc == SQLITE_OK; version++) {
		snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", (int)version + 1);
		rc = cache_exec(cache, "BEGIN IMMEDIATE");
		if (rc == SQLITE_OK)
			rc = cache_exec(cache, cache_migrations[version]);
		if (rc == SQLITE_OK && version == 0)
			rc = cache_write_account(cache);
		if (rc == SQLITE_OK)
			rc = cache_exec(cache, sql);
		if (rc == SQLITE_OK)
			rc = cache_exec(cache, "COMMIT");
		if (rc != SQLITE_OK && !sqlite3_get_autocommit(cache->db))
			cache_exec(cache, "ROLLBACK");
	}
	return rc;
}

/* Makes the schema current: a new store is migrated from version 0 and
   given its account; anything else must be a store of ours. */
static enum cache_open_result cache_schema_prepare(struct cache *cache, bool read_only, const char **why_r,
						   const char **error_r)
{
	int64_t version = 0;
	int64_t tables = 0;
	int rc = cache_query_integer(cache, "PRAGMA user_version", &version);

	if (rc == SQLITE_OK)
		rc = cache_query_integer(cache, "SELECT count(*) FROM sqlite_schema", &tables);
	if (rc != SQLITE_OK)
		return cache_open_classify(cache, rc, "reading", why_r, error_r);
	if (version > CACHE_SCHEMA_VERSION) {
		*why_r = "a store of a newer imapcached (its schema version is higher)";
		return CACHE_OPEN_ASIDE;
	}
	if (version == 0 && tables > 0) {
		*why_r = "a database with tables but no schema version: not an imapcached store";
		return CACHE_OPEN_ASIDE;
	}
	if (version < CACHE_SCHEMA_VERSION && read_only) {
		log_error("cache %s: %s can't be written, and its schema needs an upgrade", cache->label, cache->path);
		*error_r = "the cache file can't be written";
		return CACHE_OPEN_FAILED;
	}
	if (version < CACHE_SCHEMA_VERSION) {
		rc = cache_migrate(cache, version);
		if (rc != SQLITE_OK)
			return cache_open_classify(cache, rc, "making the schema of", why_r, error_r);
	}
	return cache_check_account(cache, why_r, error_r);
}

static enum cache_open_result cache_prepare_statements(struct cache *cache, const char **why_r,
						       const char **error_r)
{
	for (unsigned int i = 0; i < CACHE_STMT_COUNT; i++) {
		int rc = sqlite3_prepare_v3(cache->db, cache_stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT,
					    &cache->stmts[i], NULL);

		if (rc == SQLITE_ERROR) {
			/* A store at our version whose tables don't match ours. */
			*why_r = "a store whose tables don't match its schema version";
			return CACHE_OPEN_ASIDE;
		}
		if (rc != SQLITE_OK)
			return cache_open_classify(cache, rc, "preparing statements for", why_r, error_r);
	}
	return CACHE_OPEN_OK;
}

/* Drops bodies whose writer never finished (a crash) and adds up the rest.
   When they can't be dropped (a full disk), they stay: never served, and
   counted until the next open. */
static enum cache_open_result cache_bodies_prepare(struct cache *cache, bool read_only, const char **why_r,
						   const char **error_r)
{
	int64_t total = 0;
	int rc = read_only ? SQLITE_OK : cache_exec(cache, "DELETE FROM bodies WHERE complete = 0");

	if (rc != SQLITE_OK && (rc & 0xff) != SQLITE_CORRUPT && (rc & 0xff) != SQLITE_NOTADB) {
		log_info("cache %s: cannot drop unfinished bodies now: %s", cache->label, sqlite3_errmsg(cache->db));
		rc = SQLITE_OK;
	}
	if (rc == SQLITE_OK)
		rc = cache_query_integer(cache, "SELECT coalesce(sum(size), 0) FROM bodies", &total);
	if (rc != SQLITE_OK)
		return cache_open_classify(cache, rc, "adding up the bodies of", why_r, error_r);
	cache->body_bytes = total > 0 ? (uint64_t)total : 0;
	return CACHE_OPEN_OK;
}

/* Opens the file with SQLite, sets it up and checks it is ours. */
static enum cache_open_result cache_db_open(struct cache *cache, bool read_only, const char **why_r,
					    const char **error_r)
{
	char *uri = read_only ? cache_read_only_uri(cache->path) : NULL;
	int flags = read_only ? SQLITE_OPEN_READONLY | SQLITE_OPEN_URI : SQLITE_OPEN_READWRITE;
	enum cache_open_result result;
	int rc;

	if (read_only && uri == NULL) {
		*error_r = "out of memory";
		return CACHE_OPEN_FAILED;
	}
	rc = sqlite3_open_v2(read_only ? uri : cache->path, &cache->db, flags | SQLITE_OPEN_NOFOLLOW, NULL);
	free(uri);
	if (rc != SQLITE_OK)
		return cache_open_classify(cache, rc, "opening", why_r, error_r);
	sqlite3_extended_result_codes(cache->db, 1);
	sqlite3_busy_timeout(cache->db, CACHE_BUSY_TIMEOUT_MS);
	rc = cache_exec(cache, read_only ? "PRAGMA foreign_keys = ON"
					 : "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; "
					   "PRAGMA journal_size_limit = " CACHE_WAL_LIMIT "; PRAGMA foreign_keys = ON");
	if (rc != SQLITE_OK)
		return cache_open_classify(cache, rc, "setting up", why_r, error_r);
	result = cache_schema_prepare(cache, read_only, why_r, error_r);
	if (result == CACHE_OPEN_OK)
		result = cache_prepare_statements(cache, why_r, error_r);
	if (result == CACHE_OPEN_OK)
		result = cache_bodies_prepare(cache, read_only, why_r, error_r);
	return result;
}

/* Opens the store at cache->path, moving aside at most one file that is
   not ours, and falling back to reading when it can't be written. */
static int cache_store_open(struct cache *cache, const char **error_r)
{
	bool moved = false;
	bool read_only = false;

	for (;;) {
		const char *why = NULL;
		enum cache_open_result result = read_only ? CACHE_OPEN_OK : cache_file_prepare(cache, &why, error_r);

		if (result == CACHE_OPEN_READ_ONLY)
			read_only = true;
		if (result == CACHE_OPEN_OK || result == CACHE_OPEN_READ_ONLY)
			result = cache_db_open(cache, read_only, &why, error_r);
		if (result == CACHE_OPEN_OK)
			break;
		cache_db_close(cache);
		if (result == CACHE_OPEN_READ_ONLY && !read_only) {
			read_only = true;
			continue;
		}
		if (result == CACHE_OPEN_ASIDE && !moved && !read_only) {
			moved = true;
			if (cache_move_aside(cache, why) == 0)
				continue;
			*error_r = "the cache file is damaged and cannot be moved aside";
			return -1;
		}
		if (result == CACHE_OPEN_ASIDE || result == CACHE_OPEN_READ_ONLY) {
			log_error("cache %s: %s is %s", cache->label, cache->path,
				  why != NULL ? why : "neither writable nor readable");
			*error_r = "the cache file is not usable";
		}
		return -1;
	}
	if (read_only) {
		cache->writes_off = false;
		cache_writes_stop(cache, true, "opening", "the file or its directory is read-only; "
				  "reading what it holds");
	}
	return 0;
}

static void cache_free(struct cache *cache)
{
	cache_db_close(cache);
	free(cache->path);
	free(cache->upstream);
	free(cache->user);
	free(cache->label);
	free(cache);
}

static struct cache *cache_registry_find(const char *path)
{
	for (struct cache *cache = cache_registry; cache != NULL; cache = cache->next) {
		if (strcmp(cache->path, path) == 0)
			return cache;
	}
	return NULL;
}

/* A new handle for the account, not yet open; it owns path (freed also
   when NULL is returned). */
static struct cache *cache_new(const struct cache_settings *settings, const char *upstream, const char *user,
			       char *path)
{
	struct cache *cache = calloc(1, sizeof(*cache));

	if (cache == NULL) {
		free(path);
		return NULL;
	}
	cache->refcount = 1;
	cache->path = path;
	cache->settings = *settings;
	cache->settings.dir = NULL;
	cache->upstream = strdup(upstream);
	cache->user = strdup(user);
	if (cache->upstream == NULL || cache->user == NULL || asprintf(&cache->label, "%s on %s", user, upstream) < 0) {
		cache->label = NULL;
		cache_free(cache);
		return NULL;
	}
	return cache;
}

/* Makes DIR and DIR/UPSTREAM (the directory of path). */
static int cache_dirs_prepare(struct cache *cache, const char *dir, const char **error_r)
{
	char *upstream_dir = strdup(cache->path);
	int result;

	if (upstream_dir == NULL) {
		*error_r = "out of memory";
		return -1;
	}
	*strrchr(upstream_dir, '/') = '\0';
	result = cache_dir_prepare(cache->label, dir, true, error_r);
	if (result == 0)
		result = cache_dir_prepare(cache->label, upstream_dir, false, error_r);
	free(upstream_dir);
	return result;
}

struct cache *cache_open(const struct cache_settings *settings, const char *upstream, const char *user,
			 const char **error_r)
{
	char *path = cache_file_path(settings->dir, upstream, user);
	struct cache *cache;

	if (path == NULL) {
		*error_r = upstream[0] == '\0' || user[0] == '\0' ? "an empty upstream or user name" : "out of memory";
		return NULL;
	}
	cache = cache_registry_find(path);
	if (cache != NULL) {
		free(path);
		cache->refcount++;
		cache->settings.body_budget = settings->body_budget;
		cache->settings.body_max_size = settings->body_max_size;
		return cache;
	}
	cache = cache_new(settings, upstream, user, path);
	if (cache == NULL) {
		*error_r = "out of memory";
		return NULL;
	}
	if (cache_dirs_prepare(cache, settings->dir, error_r) < 0 || cache_store_open(cache, error_r) < 0) {
		cache_free(cache);
		return NULL;
	}
	cache->next = cache_registry;
	cache_registry = cache;
	return cache;
}

void cache_unref(struct cache **cachep)
{
	struct cache *cache = *cachep;
	bool corrupt;

	*cachep = NULL;
	if (cache == NULL || --cache->refcount > 0)
		return;
	assert(cache->writers == NULL); /* each holds a reference */
	assert(cache->batch_depth == 0); /* a batch ends in the callback that began it */
	for (struct cache **link = &cache_registry; *link != NULL; link = &(*link)->next) {
		if (*link == cache) {
			*link = cache->next;
			break;
		}
	}
	corrupt = cache->corrupt;
	cache_db_close(cache);
	if (corrupt)
		cache_move_aside(cache, "damaged (found while reading it)");
	cache_free(cache);
}

uint64_t cache_body_bytes(const struct cache *cache)
{
	return cache->body_bytes;
}

struct sqlite3 *cache_sqlite_handle(struct cache *cache)
{
	return cache->db;
}

/* ---- batches ---- */

void cache_batch_begin(struct cache *cache)
{
	if (cache->batch_depth++ > 0)
		return;
	cache->batch_doomed = false;
	cache->batch_in_transaction = false;
	if (cache_writes_off(cache))
		return;
	if (cache_run(cache, cache_stmt(cache, CACHE_STMT_BEGIN), "starting a batch") == 0)
		cache->batch_in_transaction = true;
}

/* Ends the outermost level: commit, or roll back a doomed batch. */
static int cache_batch_finish(struct cache *cache)
{
	bool doomed = cache->batch_doomed;
	int result = -1;

	if (cache->batch_in_transaction && !doomed)
		result = cache_run(cache, cache_stmt(cache, CACHE_STMT_COMMIT), "committing a batch");
	if (result < 0 && !sqlite3_get_autocommit(cache->db)) {
		sqlite3_step(cache_stmt(cache, CACHE_STMT_ROLLBACK));
		sqlite3_reset(cache_stmt(cache, CACHE_STMT_ROLLBACK));
	}
	if (result < 0 && (doomed || cache->batch_in_transaction))
		cache_body_bytes_reload(cache);
	cache->batch_in_transaction = false;
	cache->batch_doomed = false;
	return result;
}

int cache_batch_end(struct cache *cache)
{
	assert(cache->batch_depth > 0);
	if (--cache->batch_depth > 0)
		return cache->batch_doomed ? -1 : 0;
	return cache_batch_finish(cache);
}

void cache_batch_rollback(struct cache *cache)
{
	assert(cache->batch_depth > 0);
	cache->batch_doomed = true;
	if (--cache->batch_depth == 0)
		cache_batch_finish(cache);
}

/* ---- mailboxes ---- */

/* RFC 3501 5.1: INBOX is case-insensitive; every other name is as given. */
static const char *cache_mailbox_name(const char *name)
{
	return strcasecmp(name, "INBOX") == 0 ? "INBOX" : name;
}

/* 1 with *mailbox_r when stored, 0 when not, -1 on error. */
static int cache_mailbox_get(struct cache *cache, const char *name, struct cache_mailbox *mailbox_r)
{
	sqlite3_stmt *stmt = cache_stmt(cache, CACHE_STMT_MAILBOX_GET);
	int rc;

	sqlite3_bind_text(stmt, 1, cache_mailbox_name(name), -1, SQLITE_STATIC);
	rc = sqlite3_step(stmt);
	if (rc == SQLITE_ROW) {
		mailbox_r->id = sqlite3_column_int64(stmt, 0);
		mailbox_r->uidvalidity = (uint32_t)sqlite3_column_int64(stmt, 1);
		mailbox_r->uidnext = (uint32_t)sqlite3_column_int64(stmt, 2);
		mailbox_r->highestmodseq = (uint64_t)sqlite3_column_int64(stmt, 3);
	}
	sqlite3_reset(stmt);
	sqlite3_clear_bindings(stmt);
	if (rc == SQLITE_ROW)
		return 1;
	if (rc == SQLITE_DONE)
		return 0;
	cache_fail(cache, rc, "reading a mailbox");
	return (rc & 0xff) == SQLITE_CORRUPT ? 0 : -1;
}

int cache_mailbox_lookup(struct cache *cache, const char *name, struct cache_mailbox *mailbox_r)
{
	return cache_mailbox_get(cache, name, mailbox_r);
}

/* Deletes mailbox id with everything in it (the foreign keys cascade). */
static int cache_mailbox_drop(struct cache *cache, int64_t id)
{
	sqlite3_stmt *stmt = cache_stmt(cache, CACHE_STMT_MAILBOX_BODY_BYTES);
	int64_t bytes = 0;

	sqlite3_bind_int64(stmt, 1, id);
	if (cache_run_integer(cache, stmt, "adding up a mailbox's bodies", &bytes) < 0)
		return -1;
	stmt = cache_stmt(cache, CACHE_STMT_MAILBOX_DELETE);
	sqlite3_bind_int64(stmt, 1, id);
	if (cache_run(cache, stmt, "dropping a mailbox") < 0)
		return -1;
	cache_body_bytes_sub(cache, bytes);
	return 0;
}

static int cache_mailbox_insert(struct cache *cache, const char *name, uint32_t uidvalidity,
				struct cache_mailbox *mailbox_r)
{
	sqlite3_stmt *stmt = cache_stmt(cache, CACHE_STMT_MAILBOX_INSERT);

	sqlite3_bind_text(stmt, 1, cache_mailbox_name(name), -1, SQLITE_STATIC);
	sqlite3_bind_int64(stmt, 2, uidvalidity);
	if (cache_run(cache, stmt, "adding a mailbox") < 0)
		return -1;
	memset(mailbox_r, 0, sizeof(*mailbox_r));
	mailbox_r->id = sqlite3_last_insert_rowid(cache->db);
	mailbox_r->uidvalidity = uidvalidity;
	return 0;
}

int cache_mailbox_open(struct cache *cache, const char *name, uint32_t uidvalidity,
		       struct cache_mailbox *mailbox_r, bool *reset_r)
{
	struct cache_mailbox stored;
	int found;
	int result;

	if (reset_r != NULL)
		*reset_r = false;
	if (uidvalidity == 0) {
		log_warning("cache %s: mailbox %s: UIDVALIDITY 0 is not valid; not caching it", cache->label, name);
		return -1;
	}
	found = cache_mailbox_get(cache, name, &stored);
	if (found < 0)
		return -1;
	if (found > 0 && stored.uidvalidity == uidvalidity) {
		*mailbox_r = stored;
		return 0;
	}
	if (!cache_write_allowed(cache) || cache_op_begin(cache) < 0)
		return -1;
	result = found > 0 ? cache_mailbox_drop(cache, stored.id) : 0;
	if (result == 0)
		result = cache_mailbox_insert(cache, name, uidvalidity, mailbox_r);
	result = cache_op_end(cache, result);
	if (result < 0) {
		cache_body_bytes_reload(cache);
		return -1;
	}
	if (found > 0) {
		log_info("cache %s: mailbox %s: UIDVALIDITY changed from %" PRIu32 " to %" PRIu32
			 "; its cache was dropped", cache->label, name, stored.uidvalidity, uidvalidity);
		if (reset_r != NULL)
			*reset_r = true;
	}
	return 0;
}

int cache_mailbox_set_state(struct cache *cache, int64_t mailbox_id, uint32_t uidnext, uint64_t highestmodseq)
{
	sqlite3_stmt *stmt = cache_stmt(cache, CACHE_STMT_MAILBOX_SET_STATE);

	if (highestmodseq > INT64_MAX) {
		log_warning("cache %s: HIGHESTMODSEQ %" PRIu64 " is out of range; not stored", cache->label,
			    highestmodseq);
		return -1;
	}
	if (!cache_write_allowed(cache))
		return -1;
	sqlite3_bind_int64(stmt, 1, mailbox_id);
	cache_bind_known(stmt, 2, uidnext);
	cache_bind_known(stmt, 3, highestmodseq);
	if (cache_run(cache, stmt, "storing a mailbox's state") < 0)
		return -1;
	return sqlite3_changes(cache->db) == 1 ? 0 : -1;
}

int cache_mailbox_delete(struct cache *cache, const char *name)
{
	struct cache_mailbox stored;
	int found = cache_mailbox_get(cache, name, &stored);
	int result;

	if (found <= 0)
		return found;
	if (!cache_write_allowed(cache) || cache_op_begin(cache) < 0)
		return -1;
	result = cache_op_end(cache, cache_mailbox_drop(cache, stored.id));
	if (result < 0)
		cache_body_bytes_reload(cache);
	return result;
}

/* ---- UID lists ----
 *
 * A UID list is stored as ranges, each two unsigned LEB128 numbers: the
 * gap from the end of the previous range (or from 0) to the range's first
 * UID, and the range's length less one. 1:100000 is 4 bytes.
 */

static size_t cache_leb128_put(unsigned char *out, uint32_t value)
{
	size_t len = 0;

	do {
		out[len] = value & 0x7f;
		value >>= 7;
		if (value != 0)
			out[len] |= 0x80;
		len++;
	} while (value != 0);
	return len;
}

/* Reads one number at *pos; false when it runs past end or over 32 bits. */
static bool cache_leb128_get(const unsigned char *data, size_t size, size_t *pos, uint32_t *value_r)
{
	uint64_t value = 0;

	for (unsigned int shift = 0; shift < 35; shift += 7) {
		if (*pos >= size)
			return false;
		value |= (uint64_t)(data[*pos] & 0x7f) << shift;
		if ((data[(*pos)++] & 0x80) == 0) {
			*value_r = (uint32_t)value;
			return value <= UINT32_MAX;
		}
	}
	return false;
}

/* Encodes count strictly ascending nonzero UIDs; *size_r bytes, malloc'd. */
static unsigned char *cache_uids_encode(const uint32_t *uids, size_t count, size_t *size_r)
{
	unsigned char *out = malloc(count * CACHE_UID_RANGE_MAX_BYTES + 1);
	uint32_t previous_end = 0;
	size_t len = 0;

	if (out == NULL)
		return NULL;
	for (size_t i = 0; i < count;) {
		size_t j = i;

		while (j + 1 < count && uids[j + 1] == uids[j] + 1)
			j++;
		len += cache_leb128_put(out + len, uids[i] - previous_end);
		len += cache_leb128_put(out + len, uids[j] - uids[i]);
		previous_end = uids[j];
		i = j + 1;
	}
	*size_r = len;
	return out;
}

/* Decodes a stored list; false when it is damaged (or out of memory). */
static bool cache_uids_decode(const unsigned char *data, size_t size, uint32_t **uids_r, size_t *count_r)
{
	uint32_t *uids = NULL;
	size_t count = 0;
	size_t capacity = 0;
	uint64_t previous_end = 0;

	for (size_t pos = 0; pos < size;) {
		uint32_t gap;
		uint32_t run;
		uint64_t first;

		if (!cache_leb128_get(data, size, &pos, &gap) || !cache_leb128_get(data, size, &pos, &run))
			goto fail;
		first = previous_end + gap;
		if (gap == 0 || first + run > UINT32_MAX || count + run + 1 > CACHE_MAILBOX_MAX_UIDS)
			goto fail;
		if (count + run + 1 > capacity) {
			size_t wanted = capacity * 2 > count + run + 1 ? capacity * 2 : count + run + 1;
			uint32_t *grown = realloc(uids, wanted * sizeof(*uids));

			if (grown == NULL)
				goto fail;
			uids = grown;
			capacity = wanted;
		}
		for (uint64_t uid = first; uid <= first + run; uid++)
			uids[count++] = (uint32_t)uid;
		previous_end = first + run;
	}
	*uids_r = uids;
	*count_r = count;
	return true;
fail:
	free(uids);
	return false;
}

static bool cache_uids_valid(const uint32_t *uids, size_t count)
{
	for (size_t i = 0; i < count; i++) {
		if (uids[i] == 0 || (i > 0 && uids[i] <= uids[i - 1]))
			return false;
	}
	return count <= CACHE_MAILBOX_MAX_UIDS;
}

/* Stores the list without the checks of cache_mailbox_set_uids. */
static int cache_uids_store(struct cache *cache, int64_t mailbox_id, const uint32_t *uids, size_t count)
{
	sqlite3_stmt *stmt = cache_stmt(cache, CACHE_STMT_MAILBOX_SET_UIDS);
	size_t size = 0;
	unsigned char *encoded = cache_uids_encode(uids, count, &size);
	int result;

	if (encoded == NULL) {
		log_error("cache %s: out of memory storing a UID list", cache->label);
		return -1;
	}
	sqlite3_bind_int64(stmt, 1, mailbox_id);
	cache_bind_value(stmt, 2, encoded, size);
	result = cache_run(cache, stmt, "storing a UID list");
	free(encoded);
	if (result == 0 && sqlite3_changes(cache->db) != 1)
		result = -1;
	return result;
}

int cache_mailbox_set_uids(struct cache *cache, int64_t mailbox_id, const uint32_t *uids, size_t count)
{
	if (!cache_uids_valid(uids, count)) {
		log_warning("cache %s: a UID list that is not strictly ascending, has 0 or is too long; not stored",
			    cache->label);
		return -1;
	}
	if (!cache_write_allowed(cache))
		return -1;
	return cache_uids_store(cache, mailbox_id, uids, count);
}

int cache_mailbox_get_uids(struct cache *cache, int64_t mailbox_id, uint32_t **uids_r, size_t *count_r)
{
	sqlite3_stmt *stmt = cache_stmt(cache, CACHE_STMT_MAILBOX_GET_UIDS);
	int rc;
	int result = 0;

	*uids_r = NULL;
	*count_r = 0;
	sqlite3_bind_int64(stmt, 1, mailbox_id);
	rc = sqlite3_step(stmt);
	if (rc == SQLITE_ROW && sqlite3_column_type(stmt, 0) != SQLITE_NULL) {
		result = cache_uids_decode(sqlite3_column_blob(stmt, 0), (size_t)sqlite3_column_bytes(stmt, 0),
					   uids_r, count_r) ? 1 : 0;
		if (result == 0)
			log_warning("cache %s: a stored UID list is damaged; counted as not known", cache->label);
	}
	sqlite3_reset(stmt);
	sqlite3_clear_bindings(stmt);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		cache_fail(cache, rc, "reading a UID list");
		return (rc & 0xff) == SQLITE_CORRUPT ? 0 : -1;
	}
	return result;
}

static int cache_compare_uids(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a;
	uint32_t y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

/* Drops uid's body, complete or not (its pieces go with it). */
static int cache_body_delete(struct cache *cache, int64_t mailbox_id, uint32_t uid)
{
	sqlite3_stmt *stmt = cache_stmt(cache, CACHE_STMT_BODY_DELETE);
	int64_t size = 0;
	int found;

	cache_bind_key(stmt, mailbox_id, uid);
	found = cache_run_integer(cache, stmt, "dropping a body", &size);
	if (found > 0)
		cache_body_bytes_sub(cache, size);
	return found < 0 ? -1 : 0;
}

/* Drops uid's row and body. */
static int cache_message_remove(struct cache *cache, int64_t mailbox_id, uint32_t uid)
{
	sqlite3_stmt *stmt = cache_stmt(cache, CACHE_STMT_MESSAGE_DELETE);

	cache_bind_key(stmt, mailbox_id, uid);
	if (cache_run(cache, stmt, "dropping a message") < 0)
		return -1;
	return cache_body_delete(cache, mailbox_id, uid);
}

/* Removes the sorted uids from the stored UID list, if one is stored. */
static int cache_uids_remove(struct cache *cache, int64_t mailbox_id, const uint32_t *gone, size_t gone_count)
{
	uint32_t *uids = NULL;
	size_t count = 0;
	size_t kept = 0;
	size_t j = 0;
	int known = cache_mailbox_get_uids(cache, mailbox_id, &uids, &count);
	int result;

	if (known <= 0)
		return known;
	for (size_t i = 0; i < count; i++) {
		while (j < gone_count && gone[j] < uids[i])
			j++;
		if (j >= gone_count || gone[j] != uids[i])
			uids[kept++] = uids[i];
	}
	result = kept == count ? 0 : cache_uids_store(cache, mailbox_id, uids, kept);
	free(uids);
	return result;
}

int cache_mailbox_remove_uids(struct cache *cache, int64_t mailbox_id, const uint32_t *uids, size_t count)
{
	uint32_t *sorted;
	int result = 0;

	if (count == 0)
		return 0;
	if (!cache_write_allowed(cache))
		return -1;
	sorted = malloc(count * sizeof(*sorted));
	if (sorted == NULL) {
		log_error("cache %s: out of memory dropping expunged messages", cache->label);
		return -1;
	}
	memcpy(sorted, uids, count * sizeof(*sorted));
	qsort(sorted, count, sizeof(*sorted), cache_compare_uids);
	if (cache_op_begin(cache) < 0) {
		free(sorted);
		return -1;
	}
	for (size_t i = 0; i < count && result == 0; i++)
		result = cache_message_remove(cache, mailbox_id, sorted[i]);
	if (result == 0)
		result = cache_uids_remove(cache, mailbox_id, sorted, count);
	free(sorted);
	result = cache_op_end(cache, result);
	if (result < 0)
		cache_body_bytes_reload(cache);
	return result;
}

/* ---- messages ---- */

/* Checks what every message call gets from the caller. */
static bool cache_message_key_valid(struct cache *cache, uint32_t uid)
{
	if (uid != 0)
		return true;
	log_warning("cache %s: UID 0 is not a UID; not stored", cache->label);
	return false;
}

int cache_store_item(struct cache *cache, int64_t mailbox_id, uint32_t uid, enum cache_item item,
		     const void *data, size_t size)
{
	sqlite3_stmt *stmt;

	assert(item <= CACHE_ITEM_HEADER);
	if (!cache_message_key_valid(cache, uid) || !cache_write_allowed(cache))
		return -1;
	stmt = cache_stmt(cache, CACHE_STMT_STORE_INTERNALDATE + item);
	cache_bind_key(stmt, mailbox_id, uid);
	cache_bind_value(stmt, 3, data, size);
	return cache_run(cache, stmt, "storing a message item");
}

/* Stores one number column (CACHE_STMT_STORE_SIZE or _AGREES). */
static int cache_store_number(struct cache *cache, enum cache_stmt which, int64_t mailbox_id, uint32_t uid,
			      int64_t value)
{
	sqlite3_stmt *stmt;

	if (!cache_message_key_valid(cache, uid) || !cache_write_allowed(cache))
		return -1;
	stmt = cache_stmt(cache, which);
	cache_bind_key(stmt, mailbox_id, uid);
	sqlite3_bind_int64(stmt, 3, value);
	return cache_run(cache, stmt, "storing a message item");
}

int cache_store_size(struct cache *cache, int64_t mailbox_id, uint32_t uid, uint64_t size)
{
	if (size > INT64_MAX) {
		log_warning("cache %s: RFC822.SIZE %" PRIu64 " is out of range; not stored", cache->label, size);
		return -1;
	}
	return cache_store_number(cache, CACHE_STMT_STORE_SIZE, mailbox_id, uid, (int64_t)size);
}

int cache_set_structure_agrees(struct cache *cache, int64_t mailbox_id, uint32_t uid, bool agrees)
{
	return cache_store_number(cache, CACHE_STMT_STORE_AGREES, mailbox_id, uid, agrees ? 1 : 0);
}

/* flags without \Recent, which belongs to one session (RFC 3501 2.3.2) and
   is never stored; the others keep their order. malloc'd, or NULL. */
static char *cache_flags_without_recent(const char *flags)
{
	char *out = malloc(strlen(flags) + 1);
	size_t len = 0;

	if (out == NULL)
		return NULL;
	for (const char *p = flags; *p != '\0';) {
		size_t n;

		p += strspn(p, " ");
		n = strcspn(p, " ");
		if (n > 0 && !(n == strlen("\\Recent") && strncasecmp(p, "\\Recent", n) == 0)) {
			if (len > 0)
				out[len++] = ' ';
			memcpy(out + len, p, n);
			len += n;
		}
		p += n;
	}
	out[len] = '\0';
	return out;
}

int cache_store_flags(struct cache *cache, int64_t mailbox_id, uint32_t uid, const char *flags, uint64_t modseq)
{
	char *without_recent = NULL;
	sqlite3_stmt *stmt;
	int result;

	if (modseq > INT64_MAX) {
		log_warning("cache %s: MODSEQ %" PRIu64 " is out of range; not stored", cache->label, modseq);
		return -1;
	}
	if (!cache_message_key_valid(cache, uid) || !cache_write_allowed(cache))
		return -1;
	if (flags != NULL && strcasestr(flags, "\\Recent") != NULL) {
		flags = without_recent = cache_flags_without_recent(flags);
		if (flags == NULL) {
			log_error("cache %s: out of memory storing flags", cache->label);
			return -1;
		}
	}
	stmt = cache_stmt(cache, CACHE_STMT_STORE_FLAGS);
	cache_bind_key(stmt, mailbox_id, uid);
	cache_bind_value(stmt, 3, flags, flags != NULL ? strlen(flags) : 0);
	cache_bind_known(stmt, 4, modseq);
	result = cache_run(cache, stmt, "storing flags");
	free(without_recent);
	return result;
}

/* Fills message from the current row of a lookup statement; values point
   into SQLite's memory. */
static void cache_message_fill(sqlite3_stmt *stmt, struct cache_message *message)
{
	memset(message, 0, sizeof(*message));
	message->uid = (uint32_t)sqlite3_column_int64(stmt, CACHE_COLUMN_UID);
	for (unsigned int item = 0; item < CACHE_VALUE_ITEMS; item++) {
		int column = CACHE_COLUMN_VALUES + (int)item;
		const void *data;

		if (sqlite3_column_type(stmt, column) == SQLITE_NULL)
			continue;
		data = sqlite3_column_blob(stmt, column);
		message->values[item].size = (size_t)sqlite3_column_bytes(stmt, column);
		message->values[item].data = (unsigned char *)(data != NULL ? data : cache_empty_value);
		message->present |= CACHE_HAS(item);
	}
	if (sqlite3_column_type(stmt, CACHE_COLUMN_SIZE) == SQLITE_INTEGER &&
	    sqlite3_column_int64(stmt, CACHE_COLUMN_SIZE) >= 0) {
		message->size = (uint64_t)sqlite3_column_int64(stmt, CACHE_COLUMN_SIZE);
		message->present |= CACHE_HAS(CACHE_ITEM_SIZE);
	}
	if (sqlite3_column_type(stmt, CACHE_COLUMN_MODSEQ) == SQLITE_INTEGER &&
	    sqlite3_column_int64(stmt, CACHE_COLUMN_MODSEQ) > 0) {
		message->modseq = (uint64_t)sqlite3_column_int64(stmt, CACHE_COLUMN_MODSEQ);
		message->present |= CACHE_HAS(CACHE_ITEM_MODSEQ);
	}
	if (sqlite3_column_type(stmt, CACHE_COLUMN_STRUCTURE_AGREES) == SQLITE_INTEGER) {
		message->structure_agrees = sqlite3_column_int64(stmt, CACHE_COLUMN_STRUCTURE_AGREES) != 0;
		message->present |= CACHE_HAS(CACHE_ITEM_STRUCTURE_AGREES);
	}
	if (sqlite3_column_type(stmt, CACHE_COLUMN_BODY_SIZE) == SQLITE_INTEGER) {
		message->message_size = (uint64_t)sqlite3_column_int64(stmt, CACHE_COLUMN_BODY_SIZE);
		message->present |= CACHE_HAS(CACHE_ITEM_MESSAGE);
	}
}

/* Copies message's values into memory of its own (each with a NUL after it). */
static bool cache_message_copy(struct cache_message *message)
{
	bool ok = true;

	for (unsigned int item = 0; item < CACHE_VALUE_ITEMS; item++) {
		struct cache_value *value = &message->values[item];
		unsigned char *copy;

		if (value->data == NULL)
			continue;
		copy = ok ? malloc(value->size + 1) : NULL;
		if (copy != NULL) {
			memcpy(copy, value->data, value->size);
			copy[value->size] = '\0';
		}
		ok = copy != NULL;
		value->data = copy;
	}
	if (!ok)
		cache_message_clear(message);
	return ok;
}

int cache_lookup(struct cache *cache, int64_t mailbox_id, uint32_t uid, struct cache_message *message_r)
{
	sqlite3_stmt *stmt = cache_stmt(cache, CACHE_STMT_LOOKUP_ONE);
	int rc;
	int result = 0;

	memset(message_r, 0, sizeof(*message_r));
	cache_bind_key(stmt, mailbox_id, uid);
	rc = sqlite3_step(stmt);
	if (rc == SQLITE_ROW) {
		cache_message_fill(stmt, message_r);
		result = cache_message_copy(message_r) ? 1 : -1;
		if (result < 0)
			log_error("cache %s: out of memory reading a message", cache->label);
	}
	sqlite3_reset(stmt);
	sqlite3_clear_bindings(stmt);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		cache_fail(cache, rc, "reading a message");
		return (rc & 0xff) == SQLITE_CORRUPT ? 0 : -1;
	}
	return result;
}

void cache_message_clear(struct cache_message *message)
{
	for (unsigned int item = 0; item < CACHE_VALUE_ITEMS; item++)
		free(message->values[item].data);
	memset(message, 0, sizeof(*message));
}

/* Steps a lookup statement to its end, calling back for the rows whose UID
   is in uids[*next..count), which advances. Returns the SQLite code. */
static int cache_lookup_rows(sqlite3_stmt *stmt, const uint32_t *uids, size_t count, size_t *next,
			     cache_lookup_fn *callback, void *context, long *calls)
{
	struct cache_message message;
	int rc;

	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW && *next < count) {
		uint32_t uid = (uint32_t)sqlite3_column_int64(stmt, CACHE_COLUMN_UID);

		while (*next < count && uids[*next] < uid)
			(*next)++;
		if (*next < count && uids[*next] == uid) {
			cache_message_fill(stmt, &message);
			callback(&message, context);
			(*calls)++;
			(*next)++;
		}
	}
	return rc == SQLITE_ROW ? SQLITE_DONE : rc;
}

long cache_lookup_many(struct cache *cache, int64_t mailbox_id, const uint32_t *uids, size_t count,
		       cache_lookup_fn *callback, void *context)
{
	bool dense = count > 0 && (uint64_t)(uids[count - 1] - uids[0]) < (uint64_t)count * CACHE_LOOKUP_DENSE_FACTOR;
	sqlite3_stmt *stmt = cache_stmt(cache, dense ? CACHE_STMT_LOOKUP_RANGE : CACHE_STMT_LOOKUP_ONE);
	size_t next = 0;
	long calls = 0;
	int rc = SQLITE_DONE;

	for (size_t i = 1; i < count; i++)
		assert(uids[i] > uids[i - 1]);
	if (dense) {
		cache_bind_key(stmt, mailbox_id, uids[0]);
		sqlite3_bind_int64(stmt, 3, uids[count - 1]);
		rc = cache_lookup_rows(stmt, uids, count, &next, callback, context, &calls);
		sqlite3_reset(stmt);
	}
	for (size_t i = 0; !dense && i < count && rc == SQLITE_DONE; i++) {
		next = i;
		cache_bind_key(stmt, mailbox_id, uids[i]);
		rc = cache_lookup_rows(stmt, uids, count, &next, callback, context, &calls);
		sqlite3_reset(stmt);
	}
	sqlite3_clear_bindings(stmt);
	if (rc == SQLITE_DONE)
		return calls;
	cache_fail(cache, rc, "reading messages");
	return (rc & 0xff) == SQLITE_CORRUPT ? calls : -1;
}

/* ---- whole messages ---- */

static struct cache_body_writer *cache_body_writer_find(struct cache *cache, int64_t mailbox_id, uint32_t uid)
{
	for (struct cache_body_writer *writer = cache->writers; writer != NULL; writer = writer->next) {
		if (writer->mailbox_id == mailbox_id && writer->uid == uid)
			return writer;
	}
	return NULL;
}

/* Why a body of size can't be stored now, or -1 when it can. */
static int cache_body_refusal(struct cache *cache, int64_t mailbox_id, uint32_t uid, uint64_t size)
{
	if (!cache_message_key_valid(cache, uid))
		return CACHE_BODY_REFUSED_ERROR;
	if (size > cache->settings.body_max_size)
		return CACHE_BODY_REFUSED_TOO_BIG;
	if (!cache_write_allowed(cache))
		return CACHE_BODY_REFUSED_WRITES_OFF;
	if (cache_body_writer_find(cache, mailbox_id, uid) != NULL)
		return CACHE_BODY_REFUSED_PRESENT;
	if (cache->settings.body_budget == 0 || cache->body_bytes > cache->settings.body_budget ||
	    size > cache->settings.body_budget - cache->body_bytes)
		return CACHE_BODY_REFUSED_BUDGET;
	return -1;
}

/* Adds the incomplete body row (and the message's row, so that
   cache_lookup finds it). 1 when added, 0 when a body is there, -1. */
static int cache_body_insert(struct cache *cache, int64_t mailbox_id, uint32_t uid, uint64_t size)
{
	sqlite3_stmt *stmt = cache_stmt(cache, CACHE_STMT_BODY_INSERT);
	bool added = false;
	int result;

	if (cache_op_begin(cache) < 0)
		return -1;
	cache_bind_key(stmt, mailbox_id, uid);
	sqlite3_bind_int64(stmt, 3, (int64_t)size);
	sqlite3_bind_int64(stmt, 4, (int64_t)time(NULL));
	result = cache_run(cache, stmt, "starting a body");
	if (result == 0 && sqlite3_changes(cache->db) == 1) {
		added = true;
		stmt = cache_stmt(cache, CACHE_STMT_MESSAGE_ENSURE);
		cache_bind_key(stmt, mailbox_id, uid);
		result = cache_run(cache, stmt, "starting a body");
	}
	if (cache_op_end(cache, result) < 0)
		return -1;
	return added ? 1 : 0;
}

struct cache_body_writer *cache_body_begin(struct cache *cache, int64_t mailbox_id, uint32_t uid, uint64_t size,
					   enum cache_body_refusal *refusal_r)
{
	struct cache_body_writer *writer;
	size_t buffer = size < CACHE_BODY_CHUNK_SIZE ? (size_t)size : CACHE_BODY_CHUNK_SIZE;
	int refusal = cache_body_refusal(cache, mailbox_id, uid, size);
	int added;

	if (refusal < 0 && size > INT64_MAX)
		refusal = CACHE_BODY_REFUSED_TOO_BIG;
	if (refusal >= 0) {
		if (refusal_r != NULL)
			*refusal_r = (enum cache_body_refusal)refusal;
		return NULL;
	}
	writer = calloc(1, sizeof(*writer) + buffer);
	added = writer != NULL ? cache_body_insert(cache, mailbox_id, uid, size) : -1;
	if (added <= 0) {
		if (writer == NULL)
			log_error("cache %s: out of memory starting a body", cache->label);
		free(writer);
		if (refusal_r != NULL)
			*refusal_r = added == 0 ? CACHE_BODY_REFUSED_PRESENT : CACHE_BODY_REFUSED_ERROR;
		return NULL;
	}
	writer->cache = cache;
	writer->mailbox_id = mailbox_id;
	writer->uid = uid;
	writer->size = size;
	writer->next = cache->writers;
	cache->writers = writer;
	cache->refcount++;
	cache->body_bytes += size;
	return writer;
}

/* Stores one piece; marks the writer failed when it can't. */
static int cache_body_put_chunk(struct cache_body_writer *writer, const void *data, size_t size)
{
	struct cache *cache = writer->cache;
	sqlite3_stmt *stmt = cache_stmt(cache, CACHE_STMT_CHUNK_INSERT);

	if (!cache_write_allowed(cache)) {
		writer->failed = true;
		return -1;
	}
	cache_bind_key(stmt, writer->mailbox_id, writer->uid);
	sqlite3_bind_int64(stmt, 3, writer->next_chunk);
	cache_bind_value(stmt, 4, data, size);
	if (cache_run(cache, stmt, "storing a piece of a body") < 0) {
		writer->failed = true;
		return -1;
	}
	writer->next_chunk++;
	return 0;
}

int cache_body_write(struct cache_body_writer *writer, const void *data, size_t size)
{
	const unsigned char *p = data;

	if (writer->failed)
		return -1;
	if (size > writer->size - writer->received) {
		log_warning("cache %s: a body of UID %" PRIu32 " is longer than the %" PRIu64 " bytes announced; "
			    "not stored", writer->cache->label, writer->uid, writer->size);
		writer->failed = true;
		return -1;
	}
	writer->received += size;
	while (size > 0) {
		size_t take;

		if (writer->pending_size == 0 && size >= CACHE_BODY_CHUNK_SIZE) {
			/* A whole piece straight from the caller's bytes, without a copy. */
			if (cache_body_put_chunk(writer, p, CACHE_BODY_CHUNK_SIZE) < 0)
				return -1;
			p += CACHE_BODY_CHUNK_SIZE;
			size -= CACHE_BODY_CHUNK_SIZE;
			continue;
		}
		take = CACHE_BODY_CHUNK_SIZE - writer->pending_size;
		take = take < size ? take : size;
		memcpy(writer->pending + writer->pending_size, p, take);
		writer->pending_size += take;
		p += take;
		size -= take;
		if (writer->pending_size == CACHE_BODY_CHUNK_SIZE) {
			writer->pending_size = 0;
			if (cache_body_put_chunk(writer, writer->pending, CACHE_BODY_CHUNK_SIZE) < 0)
				return -1;
		}
	}
	return 0;
}

/* Unlinks writer from its cache and frees it, dropping its reference. */
static void cache_body_writer_free(struct cache_body_writer *writer)
{
	struct cache *cache = writer->cache;

	for (struct cache_body_writer **link = &cache->writers; *link != NULL; link = &(*link)->next) {
		if (*link == writer) {
			*link = writer->next;
			break;
		}
	}
	free(writer);
	cache_unref(&cache);
}

/* The number of pieces a body of size bytes is stored in. */
static int64_t cache_body_chunk_count(uint64_t size)
{
	return (int64_t)((size + CACHE_BODY_CHUNK_SIZE - 1) / CACHE_BODY_CHUNK_SIZE);
}

/* Checks every piece is there (a rolled-back batch may have taken some)
   and marks the body complete. */
static int cache_body_complete(struct cache_body_writer *writer)
{
	struct cache *cache = writer->cache;
	sqlite3_stmt *stmt = cache_stmt(cache, CACHE_STMT_CHUNK_STATS);
	int64_t count;
	int64_t bytes;
	int rc;

	cache_bind_key(stmt, writer->mailbox_id, writer->uid);
	rc = sqlite3_step(stmt);
	count = sqlite3_column_int64(stmt, 0);
	bytes = sqlite3_column_int64(stmt, 1);
	sqlite3_reset(stmt);
	sqlite3_clear_bindings(stmt);
	if (rc != SQLITE_ROW) {
		cache_fail(cache, rc, "checking a body");
		return -1;
	}
	if (count != cache_body_chunk_count(writer->size) || (uint64_t)bytes != writer->size) {
		log_debug("cache %s: a body of UID %" PRIu32 " lost pieces (a batch rolled back)", cache->label,
			  writer->uid);
		return -1;
	}
	stmt = cache_stmt(cache, CACHE_STMT_BODY_COMPLETE);
	cache_bind_key(stmt, writer->mailbox_id, writer->uid);
	sqlite3_bind_int64(stmt, 3, (int64_t)writer->size);
	if (cache_run(cache, stmt, "completing a body") < 0)
		return -1;
	return sqlite3_changes(cache->db) == 1 ? 0 : -1;
}

int cache_body_finish(struct cache_body_writer **writerp)
{
	struct cache_body_writer *writer = *writerp;
	struct cache *cache = writer->cache;
	int result = -1;

	if (!writer->failed && writer->received != writer->size)
		log_warning("cache %s: a body of UID %" PRIu32 " ended after %" PRIu64 " of the %" PRIu64
			    " bytes announced; not stored", cache->label, writer->uid, writer->received, writer->size);
	else if (!writer->failed && cache_write_allowed(cache) && cache_op_begin(cache) == 0)
		result = cache_op_end(cache, (writer->pending_size == 0 ||
					      cache_body_put_chunk(writer, writer->pending, writer->pending_size) == 0)
						     ? cache_body_complete(writer) : -1);
	if (result < 0) {
		cache_body_abort(writerp);
		return -1;
	}
	*writerp = NULL;
	cache_body_writer_free(writer);
	return 0;
}

void cache_body_abort(struct cache_body_writer **writerp)
{
	struct cache_body_writer *writer = *writerp;
	struct cache *cache;
	sqlite3_stmt *stmt;
	int64_t size = 0;

	if (writer == NULL)
		return;
	*writerp = NULL;
	cache = writer->cache;
	/* Tried even with writes off: deleting frees space. What stays is
	   dropped at the next open. */
	if (!cache->writes_off_for_good) {
		stmt = cache_stmt(cache, CACHE_STMT_BODY_ABORT);
		cache_bind_key(stmt, writer->mailbox_id, writer->uid);
		if (cache_run_integer(cache, stmt, "dropping an unfinished body", &size) > 0)
			cache_body_bytes_sub(cache, size);
	}
	cache_body_writer_free(writer);
}

/* 1 with *size_r and *last_used_r when a complete body is stored, 0 when
   not (or unreadable), -1 on error. */
static int cache_body_get(struct cache *cache, int64_t mailbox_id, uint32_t uid, uint64_t *size_r,
			  int64_t *last_used_r)
{
	sqlite3_stmt *stmt = cache_stmt(cache, CACHE_STMT_BODY_GET);
	int rc;

	cache_bind_key(stmt, mailbox_id, uid);
	rc = sqlite3_step(stmt);
	if (rc == SQLITE_ROW) {
		int64_t size = sqlite3_column_int64(stmt, 0);

		*size_r = size > 0 ? (uint64_t)size : 0;
		*last_used_r = sqlite3_column_int64(stmt, 1);
	}
	sqlite3_reset(stmt);
	sqlite3_clear_bindings(stmt);
	if (rc == SQLITE_ROW)
		return 1;
	if (rc == SQLITE_DONE)
		return 0;
	cache_fail(cache, rc, "reading a body");
	return (rc & 0xff) == SQLITE_CORRUPT ? 0 : -1;
}

int cache_body_size(struct cache *cache, int64_t mailbox_id, uint32_t uid, uint64_t *size_r)
{
	int64_t last_used;

	return cache_body_get(cache, mailbox_id, uid, size_r, &last_used);
}

/* Appends the pieces first..last of a body of size bytes, cut to
   [offset, end), to out. 1 when done, 0 when a piece is missing or of the
   wrong length (damaged), -1 when SQLite failed (*rc_r) or memory ran out. */
static int cache_body_read_chunks(struct cache *cache, int64_t mailbox_id, uint32_t uid, uint64_t size,
				  uint64_t offset, uint64_t end, struct evbuffer *out, int *rc_r)
{
	sqlite3_stmt *stmt = cache_stmt(cache, CACHE_STMT_CHUNK_READ);
	int64_t first = (int64_t)(offset / CACHE_BODY_CHUNK_SIZE);
	int64_t last = (int64_t)((end - 1) / CACHE_BODY_CHUNK_SIZE);
	int64_t expected = first;
	int result = 1;
	int rc;

	cache_bind_key(stmt, mailbox_id, uid);
	sqlite3_bind_int64(stmt, 3, first);
	sqlite3_bind_int64(stmt, 4, last);
	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		uint64_t start = (uint64_t)expected * CACHE_BODY_CHUNK_SIZE;
		uint64_t length = size - start < CACHE_BODY_CHUNK_SIZE ? size - start : CACHE_BODY_CHUNK_SIZE;
		const unsigned char *data = sqlite3_column_blob(stmt, 1);
		uint64_t from = offset > start ? offset - start : 0;
		uint64_t to = end < start + length ? end - start : length;

		if (sqlite3_column_int64(stmt, 0) != expected || (uint64_t)sqlite3_column_bytes(stmt, 1) != length ||
		    data == NULL) {
			result = 0;
			break;
		}
		if (evbuffer_add(out, data + from, (size_t)(to - from)) < 0) {
			result = -1;
			break;
		}
		expected++;
	}
	sqlite3_reset(stmt);
	sqlite3_clear_bindings(stmt);
	*rc_r = result == 1 && rc != SQLITE_DONE ? rc : SQLITE_OK;
	if (*rc_r != SQLITE_OK)
		return -1;
	return result == 1 && expected != last + 1 ? 0 : result;
}

/* Deletes a body found damaged, so that it is fetched and stored anew. */
static void cache_body_drop_damaged(struct cache *cache, int64_t mailbox_id, uint32_t uid)
{
	log_warning("cache %s: the stored body of UID %" PRIu32 " is damaged; counted as missing", cache->label, uid);
	if (cache_write_allowed(cache))
		cache_body_delete(cache, mailbox_id, uid);
}

/* Records a use of the body (eviction drops the least recently used),
   at most once a second per body. */
static void cache_body_touch(struct cache *cache, int64_t mailbox_id, uint32_t uid, int64_t last_used)
{
	int64_t now = (int64_t)time(NULL);
	sqlite3_stmt *stmt = cache_stmt(cache, CACHE_STMT_BODY_TOUCH);

	if (now == last_used || !cache_write_allowed(cache))
		return;
	cache_bind_key(stmt, mailbox_id, uid);
	sqlite3_bind_int64(stmt, 3, now);
	cache_run(cache, stmt, "recording a body's use");
}

int cache_body_read(struct cache *cache, int64_t mailbox_id, uint32_t uid, uint64_t offset, uint64_t length,
		    struct evbuffer *out)
{
	uint64_t size = 0;
	int64_t last_used = 0;
	int found = cache_body_get(cache, mailbox_id, uid, &size, &last_used);
	uint64_t end;
	struct evbuffer *piece;
	int rc = SQLITE_OK;
	int read;

	if (found <= 0)
		return found;
	end = length > size - (offset < size ? offset : size) ? size : offset + length;
	if (offset < end) {
		piece = evbuffer_new();
		read = piece != NULL ? cache_body_read_chunks(cache, mailbox_id, uid, size, offset, end, piece, &rc) : -1;
		if (read > 0)
			evbuffer_add_buffer(out, piece);
		if (piece != NULL)
			evbuffer_free(piece);
		if (read < 0 && rc != SQLITE_OK) {
			cache_fail(cache, rc, "reading a body");
			return (rc & 0xff) == SQLITE_CORRUPT ? 0 : -1;
		}
		if (read < 0) {
			log_error("cache %s: out of memory reading a body", cache->label);
			return -1;
		}
		if (read == 0) {
			cache_body_drop_damaged(cache, mailbox_id, uid);
			return 0;
		}
	}
	cache_body_touch(cache, mailbox_id, uid, last_used);
	return 1;
}
