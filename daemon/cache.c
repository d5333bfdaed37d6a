/* SPDX-License-Identifier: MIT */
/* cache: an account's SQLite store itself: opening it (its file: cache-file.c), its schema, statements, errors and batches. */
#include "config.h"
#include "cache-private.h"
#include "cache-fts.h"
#include "cache-worker.h"
#include "cache-checksum.h"
#include "log.h"
#include "mime-imap.h"

#include <assert.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#define CACHE_BUSY_TIMEOUT_MS 100 /* another process (imapcachectl) holds the lock: don't stall the loop longer */
#define CACHE_BUSY_POLL_US 100    /* the loop looks again this often while the lock is held */
/* The store's worker holds the lock: it lets go after the body it is
   indexing (a 2 MB one takes about 150 ms, several times that under
   sanitizers), and a write of the loop must not fail for it (a purge). */
#define CACHE_BUSY_WORKER_MS 5000
#define CACHE_AUTO_VACUUM_INCREMENTAL 2 /* PRAGMA auto_vacuum's value for INCREMENTAL */
/* Take effect on a new store, or at a VACUUM (cache_layout_upgrade). */
#define CACHE_LAYOUT_PRAGMAS "PRAGMA page_size = " CACHE_PAGE_SIZE_TEXT "; PRAGMA auto_vacuum = INCREMENTAL; "
#define CACHE_FREE_MAX (8 << 20) /* bytes of free pages kept for new bodies; past it the file shrinks */

/* ---- statements ---- */

#define CACHE_STORE_VALUE(column) \
	"INSERT INTO messages(mailbox_id, uid, " column ") VALUES(?1, ?2, ?3) " \
	"ON CONFLICT(mailbox_id, uid) DO UPDATE SET " column " = excluded." column
#define CACHE_STORE_SUMMED(column) \
	"INSERT INTO messages(mailbox_id, uid, " column ", " column "_sum) VALUES(?1, ?2, ?3, ?4) " \
	"ON CONFLICT(mailbox_id, uid) DO UPDATE SET " column " = excluded." column ", " \
	column "_sum = excluded." column "_sum"
#define CACHE_KEEP_SUMMED(column) \
	column " = coalesce(excluded." column ", " column "), " \
	column "_sum = iif(excluded." column " IS NULL, " column "_sum, excluded." column "_sum)"
/* What a stored row keeps of a fetched line's values: each one given replaces the stored one. */
#define CACHE_KEEP_FETCHED \
	CACHE_KEEP_SUMMED("internaldate") ", " CACHE_KEEP_SUMMED("envelope") ", " \
	CACHE_KEEP_SUMMED("bodystructure") ", " CACHE_KEEP_SUMMED("body_item") ", " \
	CACHE_KEEP_SUMMED("header") ", size = coalesce(excluded.size, size)"

/* The bytes of bodies' sizes: total(), not sum(), so that damaged sizes
   (a row SQLite can't see is wrong) never fail with an integer overflow,
   which would block a mailbox's reset and the store's open; exact below
   2^53 bytes, and a size below 0 counts as 0. */
#define CACHE_BODY_BYTES_SUM "CAST(min(total(max(size, 0)), 9.0e18) AS INTEGER)"

/* The SQL of each enum cache_stmt (cache-private.h). */
/* A row's new MODSEQ when its flags are written: flags alone, the ones
   stored, leave the row as it was (MODSEQ with its flags), so that what the
   stored HIGHESTMODSEQ vouches for still holds. In both statements that
   write flags. */
#define CACHE_KEEP_MODSEQ "CASE WHEN excluded.modseq IS NULL AND flags IS excluded.flags THEN modseq ELSE excluded.modseq END"

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
	/* a name no lookup finds: CAST(? AS BLOB) of the id, unique, and never equal to a TEXT */
	[CACHE_STMT_MAILBOX_SET_ASIDE] = "UPDATE mailboxes SET name = CAST(id AS BLOB) WHERE id = ?1",
	[CACHE_STMT_MAILBOX_BODY_BYTES] = "SELECT " CACHE_BODY_BYTES_SUM " FROM bodies WHERE mailbox_id = ?1",
	[CACHE_STMT_MAILBOX_SET_STATE] = "UPDATE mailboxes SET uidnext = ?2, highestmodseq = ?3 WHERE id = ?1",
	[CACHE_STMT_MAILBOX_SET_UIDS] = "UPDATE mailboxes SET uids = ?2 WHERE id = ?1",
	[CACHE_STMT_MAILBOX_GET_UIDS] = "SELECT uids FROM mailboxes WHERE id = ?1",
	[CACHE_STMT_MAILBOX_SET_FLAG_LIST] = "UPDATE mailboxes SET flag_list = ?2 WHERE id = ?1",
	[CACHE_STMT_MAILBOX_GET_FLAG_LIST] = "SELECT flag_list FROM mailboxes WHERE id = ?1",
	[CACHE_STMT_STORE_INTERNALDATE] = CACHE_STORE_SUMMED("internaldate"),
	[CACHE_STMT_STORE_ENVELOPE] = CACHE_STORE_SUMMED("envelope"),
	[CACHE_STMT_STORE_BODYSTRUCTURE] = CACHE_STORE_SUMMED("bodystructure"),
	[CACHE_STMT_STORE_BODY] = CACHE_STORE_SUMMED("body_item"),
	[CACHE_STMT_STORE_HEADER] = CACHE_STORE_SUMMED("header"),
	[CACHE_STMT_STORE_FLAGS] =
		"INSERT INTO messages(mailbox_id, uid, flags, modseq) VALUES(?1, ?2, ?3, ?4) "
		"ON CONFLICT(mailbox_id, uid) DO UPDATE SET flags = excluded.flags, modseq = " CACHE_KEEP_MODSEQ,
	[CACHE_STMT_STORE_SIZE] = CACHE_STORE_VALUE("size"),
	[CACHE_STMT_STORE_AGREES] = CACHE_STORE_VALUE("structure_agrees"),
	[CACHE_STMT_STORE_FETCHED] =
		"INSERT INTO messages(mailbox_id, uid, internaldate, envelope, bodystructure, body_item, header, size, "
		"internaldate_sum, envelope_sum, bodystructure_sum, body_item_sum, header_sum) "
		"VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) ON CONFLICT(mailbox_id, uid) DO UPDATE SET "
		CACHE_KEEP_FETCHED,
	/* the same with the line's FLAGS and MODSEQ, as CACHE_STMT_STORE_FLAGS stores them: one statement a row */
	[CACHE_STMT_STORE_FETCHED_FLAGS] =
		"INSERT INTO messages(mailbox_id, uid, internaldate, envelope, bodystructure, body_item, header, size, "
		"internaldate_sum, envelope_sum, bodystructure_sum, body_item_sum, header_sum, flags, modseq) "
		"VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15) ON CONFLICT(mailbox_id, uid) "
		"DO UPDATE SET " CACHE_KEEP_FETCHED ", flags = excluded.flags, modseq = " CACHE_KEEP_MODSEQ,
	[CACHE_STMT_MESSAGE_ENSURE] =
		"INSERT INTO messages(mailbox_id, uid) VALUES(?1, ?2) ON CONFLICT(mailbox_id, uid) DO NOTHING",
	[CACHE_STMT_MESSAGE_DELETE] = "DELETE FROM messages WHERE mailbox_id = ?1 AND uid = ?2",
	[CACHE_STMT_LOOKUP_ONE] =
		"SELECT " CACHE_MESSAGE_COLUMNS CACHE_MESSAGE_FROM " WHERE m.mailbox_id = ?1 AND m.uid = ?2",
	[CACHE_STMT_LOOKUP_RANGE] =
		"SELECT " CACHE_MESSAGE_COLUMNS CACHE_MESSAGE_FROM
		" WHERE m.mailbox_id = ?1 AND m.uid BETWEEN ?2 AND ?3 ORDER BY m.uid",
	[CACHE_STMT_PRESENCE_RANGE] =
		"SELECT m.uid, m.internaldate IS NOT NULL, m.envelope IS NOT NULL, m.bodystructure IS NOT NULL,"
		" m.body_item IS NOT NULL, m.header IS NOT NULL, m.flags IS NOT NULL, m.size, b.size"
		CACHE_MESSAGE_FROM " WHERE m.mailbox_id = ?1 AND m.uid BETWEEN ?2 AND ?3 ORDER BY m.uid",
	[CACHE_STMT_FIXED_SET] = "INSERT OR IGNORE INTO messages_fixed(mailbox_id, uid) VALUES(?1, ?2)",
	[CACHE_STMT_FIXED_UNSET] = "DELETE FROM messages_fixed WHERE mailbox_id = ?1 AND uid = ?2",
	[CACHE_STMT_FIXED_CHECK] =
		"INSERT OR IGNORE INTO messages_fixed(mailbox_id, uid) SELECT mailbox_id, uid FROM messages"
		" WHERE mailbox_id = ?1 AND uid = ?2 AND internaldate IS NOT NULL AND envelope IS NOT NULL"
		" AND bodystructure IS NOT NULL AND size IS NOT NULL",
	[CACHE_STMT_FIXED_RANGE] =
		"SELECT uid FROM messages_fixed WHERE mailbox_id = ?1 AND uid BETWEEN ?2 AND ?3 ORDER BY uid",
	[CACHE_STMT_PLAIN_HEADER_SET] = "INSERT OR IGNORE INTO messages_plain_header(mailbox_id, uid) VALUES(?1, ?2)",
	[CACHE_STMT_PLAIN_HEADER_UNSET] = "DELETE FROM messages_plain_header WHERE mailbox_id = ?1 AND uid = ?2",
	[CACHE_STMT_PLAIN_HEADER_RANGE] =
		"SELECT uid FROM messages_plain_header WHERE mailbox_id = ?1 AND uid BETWEEN ?2 AND ?3 ORDER BY uid",
	[CACHE_STMT_FLAGS_RANGE] =
		"SELECT uid, flags, modseq FROM messages"
		" WHERE mailbox_id = ?1 AND uid BETWEEN ?2 AND ?3 AND flags IS NOT NULL ORDER BY uid",
	[CACHE_STMT_FORGET_FLAGS] =
		"UPDATE messages SET flags = NULL, modseq = NULL WHERE mailbox_id = ?1 AND uid BETWEEN ?2 AND ?3",
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
	[CACHE_STMT_BODY_TOTAL] = "SELECT " CACHE_BODY_BYTES_SUM " FROM bodies",
	[CACHE_STMT_BODY_LRU] =
		"SELECT mailbox_id, uid, last_used FROM bodies WHERE complete = 1 AND (last_used, mailbox_id, uid) > (?2, ?3, ?4)"
		" ORDER BY last_used, mailbox_id, uid LIMIT ?1",
	[CACHE_STMT_CHUNK_INSERT] =
		"INSERT INTO body_chunks(mailbox_id, uid, chunk, data, sum) VALUES(?1, ?2, ?3, ?4, ?5)",
	[CACHE_STMT_CHUNK_STATS] =
		"SELECT count(*), coalesce(sum(length(data)), 0) FROM body_chunks WHERE mailbox_id = ?1 AND uid = ?2",
	[CACHE_STMT_CHUNK_READ] =
		"SELECT chunk, data, sum FROM body_chunks WHERE mailbox_id = ?1 AND uid = ?2 AND chunk BETWEEN ?3 AND ?4 "
		"ORDER BY chunk",
	/* cache-fts.c's: a body's text is in pieces, the rows of body_text
	   with the rowids (((mailbox_id << 32) | uid) << 8) | piece; the
	   mailbox's rows lie between mailbox_id << 40 and that | 2^40 - 1 */
	[CACHE_STMT_FTS_PENDING] =
		"SELECT mailbox_id, uid, size FROM bodies WHERE complete = 1 AND text_indexed = 0 LIMIT 1",
	[CACHE_STMT_FTS_STILL_PENDING] =
		"SELECT 1 FROM bodies WHERE mailbox_id = ?1 AND uid = ?2 AND complete = 1 AND text_indexed = 0",
	[CACHE_STMT_FTS_INSERT] =
		"INSERT OR REPLACE INTO body_text(rowid, sure, head, body) VALUES((((?1 << 32) | ?2) << 8) | ?6, ?3, ?4, ?5)",
	[CACHE_STMT_FTS_PIECES] =
		"SELECT count(*) FROM body_text WHERE rowid BETWEEN (((?1 << 32) | ?2) << 8) | 1 AND (((?1 << 32) | ?2) << 8) | 255",
	[CACHE_STMT_FTS_CLEAR] =
		"DELETE FROM body_text WHERE rowid BETWEEN (((?1 << 32) | ?2) << 8) | 1 AND (((?1 << 32) | ?2) << 8) | 255",
	[CACHE_STMT_FTS_MARK] = "UPDATE bodies SET text_indexed = 1 WHERE mailbox_id = ?1 AND uid = ?2",
	/* piece 0 is written last, with the mark: it alone says a body is indexed */
	[CACHE_STMT_FTS_STATES] =
		"SELECT (rowid >> 8) & 4294967295, sure FROM body_text WHERE rowid BETWEEN ?1 << 40 AND (?1 << 40) | 1099511627775 "
		"AND (rowid & 255) = 0 ORDER BY rowid",
	/* a body's UID once for each of its pieces that match, in UID order */
	[CACHE_STMT_FTS_MATCH] =
		"SELECT (rowid >> 8) & 4294967295 FROM body_text WHERE body_text MATCH ?2 "
		"AND rowid BETWEEN ?1 << 40 AND (?1 << 40) | 1099511627775 AND sure = 1 "
		"AND (instr(body, ?3) > 0 OR (?4 AND instr(head, ?3) > 0)) ORDER BY rowid",
	[CACHE_STMT_FTS_SCAN] =
		"SELECT (rowid >> 8) & 4294967295 FROM body_text WHERE rowid BETWEEN ?1 << 40 AND (?1 << 40) | 1099511627775 "
		"AND sure = 1 AND (instr(body, ?3) > 0 OR (?4 AND instr(head, ?3) > 0)) ORDER BY rowid",
	[CACHE_STMT_FTS_MERGE] = "INSERT INTO body_text(body_text, rank) VALUES('merge', -?1)",
	/* cache-message.c's: from messages_size alone, never the rows */
	[CACHE_STMT_SIZES_RANGE] =
		"SELECT uid, size FROM messages INDEXED BY messages_size WHERE mailbox_id = ?1 AND uid BETWEEN ?2 AND ?3 "
		"AND size IS NOT NULL ORDER BY uid",
	[CACHE_STMT_INTERNALDATES_RANGE] =
		"SELECT uid, internaldate, internaldate_sum FROM messages INDEXED BY messages_internaldate "
		"WHERE mailbox_id = ?1 AND uid BETWEEN ?2 AND ?3 AND internaldate IS NOT NULL ORDER BY uid",
	[CACHE_STMT_HEADERS_RANGE] =
		"SELECT uid, header, header_sum FROM messages WHERE mailbox_id = ?1 AND uid BETWEEN ?2 AND ?3 "
		"AND header IS NOT NULL ORDER BY uid",
	[CACHE_STMT_PREVIEW_STORE] =
		"INSERT INTO previews(mailbox_id, uid, value, sum) VALUES(?1, ?2, ?3, ?4) "
		"ON CONFLICT(mailbox_id, uid) DO UPDATE SET value = excluded.value, sum = excluded.sum",
	[CACHE_STMT_PREVIEW_GET] = "SELECT value, sum FROM previews WHERE mailbox_id = ?1 AND uid = ?2",
	[CACHE_STMT_PREVIEW_DROP] = "DELETE FROM previews WHERE mailbox_id = ?1 AND uid = ?2",
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
	/* 2: a checksum per stored value (cache-checksum.h), for the values
	   of a store made before it as they are now. */
	"ALTER TABLE messages ADD COLUMN internaldate_sum INTEGER;"
	"ALTER TABLE messages ADD COLUMN envelope_sum INTEGER;"
	"ALTER TABLE messages ADD COLUMN bodystructure_sum INTEGER;"
	"ALTER TABLE messages ADD COLUMN body_item_sum INTEGER;"
	"ALTER TABLE messages ADD COLUMN header_sum INTEGER;"
	"UPDATE messages SET internaldate_sum = imapcached_checksum(internaldate),"
	" envelope_sum = imapcached_checksum(envelope), bodystructure_sum = imapcached_checksum(bodystructure),"
	" body_item_sum = imapcached_checksum(body_item), header_sum = imapcached_checksum(header);"
	"ALTER TABLE body_chunks ADD COLUMN sum INTEGER;"
	"UPDATE body_chunks SET sum = imapcached_checksum(data);",
	/* 3: the decoded text of complete bodies, for BODY and TEXT
	   (cache-fts.h): indexed later than stored, text_indexed says which
	   are; a body's row goes with it (evicted, purged, reset). */
	"ALTER TABLE bodies ADD COLUMN text_indexed INTEGER NOT NULL DEFAULT 0;"
	"CREATE INDEX bodies_unindexed ON bodies(mailbox_id, uid) WHERE complete = 1 AND text_indexed = 0;"
	"CREATE VIRTUAL TABLE body_text USING fts5(sure UNINDEXED, head, body, tokenize = 'trigram case_sensitive 1');"
	"CREATE TRIGGER bodies_text_gone AFTER DELETE ON bodies BEGIN"
	" DELETE FROM body_text WHERE rowid = (old.mailbox_id << 32) | old.uid; END;",
	/* 4: the sizes of a mailbox's messages without their rows, for
	   LARGER and SMALLER (cache_lookup_sizes): a row is about 1 KB, its
	   entry here a few bytes. */
	"CREATE INDEX messages_size ON messages(mailbox_id, uid, size);",
	/* 5: which messages have all four of INTERNALDATE, ENVELOPE,
	   BODYSTRUCTURE and RFC822.SIZE, for a FETCH of those items
	   (cache_lookup_fixed): reading a column of 10,000 rows walks their
	   header blocks (7 ms), this table's keys 0.3 ms. Kept by the writes
	   of cache-message.c (a line that brought all four adds its message,
	   one that brought some checks the row, dropping one removes it:
	   update triggers cost a cold fill 20%) and by the trigger, which
	   takes out the messages that go. */
	"CREATE TABLE messages_fixed(mailbox_id INTEGER NOT NULL, uid INTEGER NOT NULL,"
	" PRIMARY KEY(mailbox_id, uid)) WITHOUT ROWID;"
	"INSERT INTO messages_fixed SELECT mailbox_id, uid FROM messages WHERE internaldate IS NOT NULL"
	" AND envelope IS NOT NULL AND bodystructure IS NOT NULL AND size IS NOT NULL;"
	"CREATE TRIGGER messages_fixed_gone AFTER DELETE ON messages BEGIN"
	" DELETE FROM messages_fixed WHERE mailbox_id = OLD.mailbox_id AND uid = OLD.uid; END;",
	/* 6: which messages have a plain header block stored, for BODY[HEADER]
	   and HEADER.FIELDS answers (cache_lookup_plain_headers): the plan
	   then proves 10,000 messages from these keys, where it read and
	   filtered every block before the first line could go out (20 ms of
	   a 45 ms answer). Kept by every write of a header block in
	   cache-message.c, and by the trigger for the messages that go. */
	"CREATE TABLE messages_plain_header(mailbox_id INTEGER NOT NULL, uid INTEGER NOT NULL,"
	" PRIMARY KEY(mailbox_id, uid)) WITHOUT ROWID;"
	"INSERT INTO messages_plain_header SELECT mailbox_id, uid FROM messages WHERE header IS NOT NULL"
	" AND imapcached_header_plain(header);"
	"CREATE TRIGGER messages_plain_header_gone AFTER DELETE ON messages BEGIN"
	" DELETE FROM messages_plain_header WHERE mailbox_id = OLD.mailbox_id AND uid = OLD.uid; END;",
	/* 7: the upstream's PREVIEW of a message, as it wrote it
	   (cache-preview.c): it has no row of its own without its message's. */
	"CREATE TABLE previews(mailbox_id INTEGER NOT NULL, uid INTEGER NOT NULL, value BLOB NOT NULL,"
	" sum INTEGER NOT NULL, PRIMARY KEY(mailbox_id, uid),"
	" FOREIGN KEY(mailbox_id, uid) REFERENCES messages(mailbox_id, uid) ON DELETE CASCADE) WITHOUT ROWID;",
	/* 8: the INTERNALDATEs of a mailbox's messages without their rows, for
	   BEFORE, ON and SINCE (cache_lookup_internaldates), as 4 is for
	   sizes: the rows of 10,000 messages took a SINCE to Dovecot's own
	   time, the index's 50-byte entries a fraction of it. */
	"CREATE INDEX messages_internaldate ON messages(mailbox_id, uid, internaldate, internaldate_sum);",
	/* 9: a body's text in pieces of CACHE_FTS_PIECE_BYTES, each indexed
	   in a transaction of its own, so that the store's worker holds the
	   write lock for one piece (10 ms), not one body (a 2 MB text took
	   370 ms, and a write of the loop waited for it): the rowids change,
	   so the text is indexed again, behind the bodies as ever. Mailbox
	   ids from CACHE_FTS_MAILBOX_MAX (2^23) on have no rowids: SQLite's
	   << would wrap them onto another mailbox's. */
	"DROP TRIGGER bodies_text_gone;"
	"DROP TABLE body_text;"
	"CREATE VIRTUAL TABLE body_text USING fts5(sure UNINDEXED, head, body, tokenize = 'trigram case_sensitive 1');"
	"CREATE TRIGGER bodies_text_gone AFTER DELETE ON bodies BEGIN"
	" DELETE FROM body_text WHERE old.mailbox_id < 8388608 AND rowid BETWEEN ((old.mailbox_id << 32) | old.uid) << 8"
	" AND (((old.mailbox_id << 32) | old.uid) << 8) | 255; END;"
	"UPDATE bodies SET text_indexed = 0 WHERE text_indexed = 1;",
	/* 10: the mailbox's FLAGS as its last SELECT reported them, from
	   which a client that enabled neither CONDSTORE nor QRESYNC has its
	   flags synced by one ESEARCH per flag (sync-flagsets.h). */
	"ALTER TABLE mailboxes ADD COLUMN flag_list TEXT;",
};

static int cache_exec(struct cache *cache, const char *sql);
static int cache_query_integer(struct cache *cache, const char *sql, int64_t *value_r);

/* Every open store of this process, so that an account's sessions share one. */
static struct cache *cache_registry;

/* ---- clocks and errors ---- */

/* Milliseconds on a monotonic clock (never the settings' test clocks:
   a held batch is about real time). */
uint64_t cache_monotonic_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

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
	if (cache->worker != NULL) /* its writes too: the index waits for the store to take writes again */
		cache_worker_unwant(cache->worker, CACHE_WORKER_INDEX | CACHE_WORKER_MERGE);
	if (!cache->pending_flushing)
		cache_pending_drop(cache);
	cache->writes_retry_at = cache_now(cache) + CACHE_WRITE_RETRY_SECONDS;
}

void cache_fail(struct cache *cache, int rc, const char *what)
{
	cache_fail_because(cache, rc, what, sqlite3_errmsg(cache->db));
}

void cache_fail_because(struct cache *cache, int rc, const char *what, const char *why)
{
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

/* The first write of a batch begins its transaction: a batch that only
   reads, or only queues, takes no lock and commits nothing. */
static void cache_batch_start(struct cache *cache)
{
	cache->batch_started = true;
	if (cache_writes_off(cache))
		return;
	if (cache_run(cache, cache_stmt(cache, CACHE_STMT_BEGIN), "starting a batch") == 0) {
		cache->batch_in_transaction = true;
		cache->batch_began_ms = cache_monotonic_ms();
	}
}

bool cache_write_allowed(struct cache *cache)
{
	if (cache->batch_depth > 0 && !cache->batch_started && !cache->batch_doomed)
		cache_batch_start(cache);
	if (cache->batch_depth > 0)
		return cache->batch_in_transaction && !cache->batch_doomed && !cache->writes_off;
	return !cache_writes_off(cache);
}

int64_t cache_wall_now(const struct cache *cache)
{
	if (cache->settings.wall_now != NULL)
		return (int64_t)cache->settings.wall_now();
	return (int64_t)time(NULL);
}

void cache_vacuum_maybe(struct cache *cache)
{
	int64_t free_pages = 0;
	int64_t page_size = 0;
	int64_t keep;
	char sql[64];

	if (!cache->vacuum_due || cache->writes_off || !sqlite3_get_autocommit(cache->db))
		return;
	cache->vacuum_due = false;
	if (cache_query_integer(cache, "PRAGMA freelist_count", &free_pages) != SQLITE_OK ||
	    cache_query_integer(cache, "PRAGMA page_size", &page_size) != SQLITE_OK || page_size <= 0)
		return;
	keep = CACHE_FREE_MAX / page_size;
	if (free_pages <= keep)
		return;
	snprintf(sql, sizeof(sql), "PRAGMA incremental_vacuum(%lld)", (long long)(free_pages - keep));
	if (cache_exec(cache, sql) != SQLITE_OK)
		log_info("cache %s: cannot return free pages now: %s", cache->label, sqlite3_errmsg(cache->db));
}

/* ---- statement helpers ---- */

int cache_run(struct cache *cache, sqlite3_stmt *stmt, const char *what)
{
	int rc = sqlite3_step(stmt);

	sqlite3_reset(stmt);
	sqlite3_clear_bindings(stmt);
	if (rc == SQLITE_DONE)
		return 0;
	cache_fail(cache, rc, what);
	return -1;
}

int cache_run_integer(struct cache *cache, sqlite3_stmt *stmt, const char *what, int64_t *value_r)
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

void cache_bind_value(sqlite3_stmt *stmt, int index, const void *data, size_t size)
{
	if (data == NULL)
		sqlite3_bind_null(stmt, index);
	else if (size == 0)
		sqlite3_bind_zeroblob(stmt, index, 0);
	else
		sqlite3_bind_blob64(stmt, index, data, size, SQLITE_STATIC);
}

void cache_bind_checksum(sqlite3_stmt *stmt, int index, const void *data, size_t size)
{
	if (data == NULL)
		sqlite3_bind_null(stmt, index);
	else
		sqlite3_bind_int64(stmt, index, cache_checksum_column(data, size));
}

void cache_bind_key(sqlite3_stmt *stmt, int64_t mailbox_id, uint32_t uid)
{
	sqlite3_bind_int64(stmt, 1, mailbox_id);
	sqlite3_bind_int64(stmt, 2, uid);
}

sqlite3_stmt *cache_range_begin(struct cache *cache, enum cache_stmt which, int64_t mailbox_id, uint32_t first,
				uint32_t last)
{
	sqlite3_stmt *stmt = cache_stmt(cache, which);

	cache_bind_key(stmt, mailbox_id, first);
	sqlite3_bind_int64(stmt, 3, last);
	return stmt;
}

long cache_range_end(struct cache *cache, sqlite3_stmt *stmt, int rc, long calls, const char *what,
		     bool damaged_counts)
{
	sqlite3_reset(stmt);
	sqlite3_clear_bindings(stmt);
	if (rc == SQLITE_DONE)
		return calls;
	cache_fail(cache, rc, what);
	return damaged_counts && (rc & 0xff) == SQLITE_CORRUPT ? calls : -1;
}

int cache_row_end(struct cache *cache, sqlite3_stmt *stmt, int rc, int result, const char *what)
{
	sqlite3_reset(stmt);
	sqlite3_clear_bindings(stmt);
	if (rc == SQLITE_ROW || rc == SQLITE_DONE)
		return result;
	cache_fail(cache, rc, what);
	return (rc & 0xff) == SQLITE_CORRUPT ? 0 : -1;
}

void cache_bind_known(sqlite3_stmt *stmt, int index, uint64_t value)
{
	if (value == 0)
		sqlite3_bind_null(stmt, index);
	else
		sqlite3_bind_int64(stmt, index, (int64_t)value);
}

int cache_op_begin(struct cache *cache)
{
	if (cache->batch_depth == 0)
		cache_batch_commit_held(cache); /* its own transaction, whose failure rolls back only itself */
	/* Outside a transaction the write lock is taken up front, through the
	   busy handler: a deferred transaction that reads first and finds the
	   lock taken (by the store's worker) when it comes to write fails at
	   once, with no handler run and no wait. */
	if (sqlite3_get_autocommit(cache->db)) {
		if (cache_run(cache, cache_stmt(cache, CACHE_STMT_BEGIN), "starting a write") < 0)
			return -1;
		cache->op_transaction = true;
	}
	if (cache_run(cache, cache_stmt(cache, CACHE_STMT_SAVEPOINT), "starting a write") == 0)
		return 0;
	if (cache->op_transaction) {
		cache->op_transaction = false;
		sqlite3_step(cache_stmt(cache, CACHE_STMT_ROLLBACK));
		sqlite3_reset(cache_stmt(cache, CACHE_STMT_ROLLBACK));
	}
	return -1;
}

int cache_op_end(struct cache *cache, int result)
{
	bool own = cache->op_transaction;

	cache->op_transaction = false;
	if (result == 0 && cache_run(cache, cache_stmt(cache, CACHE_STMT_RELEASE), "committing a write") == 0 &&
	    (!own || cache_run(cache, cache_stmt(cache, CACHE_STMT_COMMIT), "committing a write") == 0)) {
		if (cache->batch_depth == 0)
			cache_vacuum_maybe(cache);
		return 0;
	}
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

const char *cache_stmt_text(enum cache_stmt which)
{
	return cache_stmt_sql[which];
}

/* SQLite's busy handler of the loop's connection: the store's worker
   (an index batch) or another process holds the write lock. The worker
   is told to step aside after its body, and the loop looks again every
   CACHE_BUSY_POLL_US, so it waits about as long as the holder still
   needs: up to CACHE_BUSY_WORKER_MS while the worker is at work, else
   CACHE_BUSY_TIMEOUT_MS. */
static int cache_busy_wait(void *context, int tries)
{
	struct cache *cache = context;
	struct timespec pause = { 0, CACHE_BUSY_POLL_US * 1000L };
	bool worker = cache->worker != NULL && cache_worker_loop_waits(cache->worker);
	uint64_t limit_ms = worker ? CACHE_BUSY_WORKER_MS : CACHE_BUSY_TIMEOUT_MS;
	uint64_t waited_ms;

	if (tries == 0)
		cache->busy_since_ms = cache_monotonic_ms();
	waited_ms = cache_monotonic_ms() - cache->busy_since_ms;
	if (worker && waited_ms > cache->fts_longest_wait_ms)
		cache->fts_longest_wait_ms = waited_ms;
	if (waited_ms >= limit_ms)
		return 0;
	nanosleep(&pause, NULL);
	return 1;
}

/* ---- opening ---- */

static void cache_db_close(struct cache *cache)
{
	cache_worker_stop(&cache->worker, cache->db);
	for (unsigned int i = 0; i < CACHE_STMT_COUNT; i++) {
		sqlite3_finalize(cache->stmts[i]);
		cache->stmts[i] = NULL;
	}
	cache_lookup_stmts_free(cache);
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

/* Drops bodies whose writer never finished and mailboxes set aside for
   an answer that was still being written (a crash), and adds up the
   rest. When they can't be dropped (a full disk), they stay: never
   served, and counted until the next open. */
static enum cache_open_result cache_bodies_prepare(struct cache *cache, bool read_only, const char **why_r,
						   const char **error_r)
{
	int64_t total = 0;
	int rc = read_only ? SQLITE_OK : cache_exec(cache, "DELETE FROM bodies WHERE complete = 0;"
									 " DELETE FROM mailboxes WHERE typeof(name) = 'blob'");

	if (rc != SQLITE_OK && (rc & 0xff) != SQLITE_CORRUPT && (rc & 0xff) != SQLITE_NOTADB) {
		log_info("cache %s: cannot drop unfinished bodies now: %s", cache->label, sqlite3_errmsg(cache->db));
		rc = SQLITE_OK;
	}
	if (rc == SQLITE_OK)
		rc = cache_query_integer(cache, "SELECT " CACHE_BODY_BYTES_SUM " FROM bodies", &total);
	if (rc != SQLITE_OK)
		return cache_open_classify(cache, rc, "adding up the bodies of", why_r, error_r);
	cache->body_bytes = total > 0 ? (uint64_t)total : 0;
	if (!read_only && cache->body_bytes > cache->settings.body_budget) {
		/* nothing of this process reads it yet: every body may go */
		cache->batch_depth++;
		cache->batch_started = true;
		cache->batch_in_transaction = cache_exec(cache, "BEGIN IMMEDIATE") == SQLITE_OK;
		rc = cache->batch_in_transaction ? SQLITE_OK : SQLITE_BUSY;
		if (rc == SQLITE_OK && cache_body_fit_budget(cache, false) >= 0)
			rc = cache_exec(cache, "COMMIT");
		if (!sqlite3_get_autocommit(cache->db))
			cache_exec(cache, "ROLLBACK");
		cache->batch_depth--;
		cache->batch_started = cache->batch_in_transaction = false;
		if (rc != SQLITE_OK)
			log_info("cache %s: cannot evict bodies down to the budget now", cache->label);
		cache_body_bytes_reload(cache);
		cache_vacuum_maybe(cache);
	}
	return CACHE_OPEN_OK;
}

/* imapcached_checksum(value): cache_checksum_column of a blob (or text),
   NULL for NULL; for migrations that give old values their checksum. */
static void cache_checksum_sql(sqlite3_context *context, int argc, sqlite3_value **argv)
{
	const void *data;

	(void)argc;
	if (sqlite3_value_type(argv[0]) == SQLITE_NULL) {
		sqlite3_result_null(context);
		return;
	}
	data = sqlite3_value_blob(argv[0]);
	sqlite3_result_int64(context, cache_checksum_column(data, (size_t)sqlite3_value_bytes(argv[0])));
}

/* imapcached_header_plain(value): 1 when a header block is plain
   (mime_imap_header_is_plain), else 0 (NULL too); for the migration that
   notes the plain ones already stored. */
static void cache_header_plain_sql(sqlite3_context *context, int argc, sqlite3_value **argv)
{
	const void *data = sqlite3_value_blob(argv[0]);

	(void)argc;
	sqlite3_result_int(context, data != NULL && mime_imap_header_is_plain(data, (size_t)sqlite3_value_bytes(argv[0])));
}

/* Gives a store made with another page size, or without incremental
   vacuum, ours: one VACUUM (it rewrites the file, about a second per
   100 MB, once). When it can't be done now (another process has the
   store open, too little disk), the store works as it is and the next
   open tries again. */
static void cache_layout_upgrade(struct cache *cache)
{
	int64_t page_size = 0;
	int64_t auto_vacuum = 0;
	int rc;

	if (cache_query_integer(cache, "PRAGMA page_size", &page_size) != SQLITE_OK ||
	    cache_query_integer(cache, "PRAGMA auto_vacuum", &auto_vacuum) != SQLITE_OK ||
	    (page_size == CACHE_PAGE_SIZE && auto_vacuum == CACHE_AUTO_VACUUM_INCREMENTAL))
		return;
	log_info("cache %s: rewriting %s with %d-byte pages and incremental vacuum (once)", cache->label, cache->path,
		 CACHE_PAGE_SIZE);
	rc = cache_exec(cache, "PRAGMA journal_mode = DELETE; " CACHE_LAYOUT_PRAGMAS "VACUUM");
	if (rc != SQLITE_OK)
		log_info("cache %s: cannot rewrite it now (%s); it is used as it is", cache->label,
			 sqlite3_errmsg(cache->db));
	if (cache_exec(cache, "PRAGMA journal_mode = WAL") != SQLITE_OK)
		log_warning("cache %s: cannot go back to WAL mode: %s", cache->label, sqlite3_errmsg(cache->db));
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
	/* NOMUTEX: a store's handle is used by the one thread of the event
	   loop, and SQLite's locking of it cost a tenth of a cached answer */
	rc = sqlite3_open_v2(read_only ? uri : cache->path, &cache->db,
			     flags | SQLITE_OPEN_NOFOLLOW | SQLITE_OPEN_NOMUTEX, NULL);
	free(uri);
	if (rc != SQLITE_OK)
		return cache_open_classify(cache, rc, "opening", why_r, error_r);
	sqlite3_extended_result_codes(cache->db, 1);
	sqlite3_busy_timeout(cache->db, CACHE_BUSY_TIMEOUT_MS);
	rc = cache_exec(cache, read_only ? "PRAGMA foreign_keys = ON"
					 : CACHE_LAYOUT_PRAGMAS "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; "
					   "PRAGMA journal_size_limit = " CACHE_WAL_LIMIT "; "
					   "PRAGMA wal_autocheckpoint = " CACHE_CHECKPOINT_PAGES_TEXT "; PRAGMA foreign_keys = ON");
	if (rc == SQLITE_OK)
		rc = sqlite3_create_function(cache->db, "imapcached_checksum", 1, SQLITE_UTF8 | SQLITE_DETERMINISTIC, NULL,
					     cache_checksum_sql, NULL, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_create_function(cache->db, "imapcached_header_plain", 1, SQLITE_UTF8 | SQLITE_DETERMINISTIC,
					     NULL, cache_header_plain_sql, NULL, NULL);
	if (rc != SQLITE_OK)
		return cache_open_classify(cache, rc, "setting up", why_r, error_r);
	result = cache_schema_prepare(cache, read_only, why_r, error_r);
	if (result == CACHE_OPEN_OK && !read_only)
		cache_layout_upgrade(cache);
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
	if (!read_only) {
		cache_wal_note(cache);
		cache->worker = cache_worker_start(cache->db, cache->path, cache->label);
		sqlite3_busy_handler(cache->db, cache_busy_wait, cache);
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
	cache_pending_drop(cache);
	cache_pins_free(cache);
	if (cache->pending_timer != NULL)
		event_free(cache->pending_timer);
	if (cache->batch_timer != NULL)
		event_free(cache->batch_timer);
	if (cache->pause_timer != NULL)
		event_free(cache->pause_timer);
	free(cache->pause_waiters);
	if (cache->linger_timer != NULL)
		event_free(cache->linger_timer);
	cache_fts_stop(cache);
	cache_fts_cursor_reset(&cache->fts_cursor);
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

/* The oldest held row has waited CACHE_PENDING_DELAY_MS. */
static void cache_pending_timer_fired(evutil_socket_t fd, short what, void *context)
{
	(void)fd;
	(void)what;
	cache_pending_flush(context);
}

/* A new handle for the account, not yet open; it owns path (freed also
   when NULL is returned). */
static struct cache *cache_new(const struct cache_settings *settings, const char *upstream, const char *user,
			       char *path)
{
	static uint64_t cache_serials;
	struct cache *cache = calloc(1, sizeof(*cache));

	if (cache == NULL) {
		free(path);
		return NULL;
	}
	cache->serial = ++cache_serials;
	cache->refcount = 1;
	cache->pending_tail = &cache->pending;
	cache->path = path;
	cache->settings = *settings;
	cache->settings.dir = NULL;
	if (settings->base != NULL)
		cache->pending_timer = evtimer_new(settings->base, cache_pending_timer_fired, cache);
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

/* Whether the file at the store's path is no longer the one it opened. */
static bool cache_file_moved(struct cache *cache)
{
	int moved = 0;

	return sqlite3_file_control(cache->db, "main", SQLITE_FCNTL_HAS_MOVED, &moved) == SQLITE_OK && moved;
}

/* Closes a store no one holds: out of the registry, the file moved aside
   when found corrupt, the WAL forgotten when the file was replaced. */
static void cache_close(struct cache *cache)
{
	bool corrupt = cache->corrupt;
	bool moved = cache_file_moved(cache);

	assert(cache->refcount == 0);
	for (struct cache **link = &cache_registry; *link != NULL; link = &(*link)->next) {
		if (*link == cache) {
			*link = cache->next;
			break;
		}
	}
	cache_db_close(cache);
	if (moved)
		cache_wal_forget(cache); /* the file now at the path is not the one found damaged */
	else if (corrupt)
		cache_move_aside(cache, "damaged (found while reading it)");
	cache_free(cache);
}

static void cache_linger_timer_fired(evutil_socket_t fd, short what, void *context)
{
	struct cache *cache = context;
	const struct timeval again = { CACHE_LINGER_INDEXING_SECONDS, 0 };

	(void)fd;
	(void)what;
	if (cache->refcount != 0)
		return;
	if (cache_fts_busy(cache) && cache_write_allowed(cache) && evtimer_add(cache->linger_timer, &again) == 0)
		return; /* its text index is being built: done after the last session, not at its next login */
	cache_close(cache);
}

/* Set by cache_close_lingering: a store released after it (a writer
   ending in the shutdown's last turns) closes at once, not on a timer of
   an event base about to go. */
static bool cache_linger_over;

/* Leaves cache open for settings.linger_seconds. Returns 0, or -1 when it
   can't, or when it should close now: damaged, replaced, or with writes
   off for good (opened read-only: "until the store is opened again"). */
static int cache_linger(struct cache *cache)
{
	const struct timeval delay = { (time_t)cache->settings.linger_seconds, 0 };

	if (cache->settings.base == NULL || cache->settings.linger_seconds == 0 || cache_linger_over ||
	    cache->corrupt || cache->writes_off_for_good || cache_file_moved(cache))
		return -1;
	if (cache->linger_timer == NULL)
		cache->linger_timer = evtimer_new(cache->settings.base, cache_linger_timer_fired, cache);
	return cache->linger_timer != NULL ? evtimer_add(cache->linger_timer, &delay) : -1;
}

static bool cache_library_configured;

static void cache_library_configure(void)
{
	cache_library_configured = sqlite3_config(SQLITE_CONFIG_STMTJRNL_SPILL, CACHE_SUBJOURNAL_SPILL) == SQLITE_OK;
	if (!cache_library_configured)
		log_debug("cache: SQLite was in use already; savepoint journals spill to files past its 64 KiB");
}

int cache_library_init(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;

	pthread_once(&once, cache_library_configure);
	return cache_library_configured ? 0 : -1;
}

struct cache *cache_open(const struct cache_settings *settings, const char *upstream, const char *user,
			 const char **error_r)
{
	char *path;
	struct cache *cache;

	(void)cache_library_init();
	path = cache_file_path(settings->dir, upstream, user);

	if (path == NULL) {
		*error_r = upstream[0] == '\0' || user[0] == '\0' ? "an empty upstream or user name" : "out of memory";
		return NULL;
	}
	cache = cache_registry_find(path);
	if (cache != NULL && cache->refcount == 0 &&
	    (cache->corrupt || cache->writes_off_for_good || cache_file_moved(cache))) {
		/* lingering, and found damaged since (by indexing), or its file
		   is no longer the one at the path: a new session starts anew */
		cache_close(cache);
		cache = NULL;
	}
	if (cache != NULL) {
		free(path);
		if (cache->linger_timer != NULL)
			evtimer_del(cache->linger_timer);
		cache->refcount++;
		cache->settings.body_budget = settings->body_budget;
		cache->settings.body_max_size = settings->body_max_size;
		if (cache->body_bytes > cache->settings.body_budget && cache_write_allowed(cache) &&
		    cache_op_begin(cache) == 0) {
			/* a lowered budget holds from now on (bodies in use go at their next chance) */
			if (cache_op_end(cache, cache_body_fit_budget(cache, true) >= 0 ? 0 : -1) < 0)
				cache_body_bytes_reload(cache);
		}
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
	cache_fts_schedule(cache); /* bodies stored before, or not indexed at a crash */
	return cache;
}

struct cache *cache_ref(struct cache *cache)
{
	cache->refcount++;
	return cache;
}

void cache_unref(struct cache **cachep)
{
	struct cache *cache = *cachep;

	*cachep = NULL;
	if (cache == NULL || --cache->refcount > 0)
		return;
	assert(cache->writers == NULL); /* each holds a reference */
	assert(cache->batch_depth == 0); /* a batch ends in the callback that began it */
	cache_pending_flush(cache);
	cache_batch_commit_held(cache);
	if (cache_linger(cache) < 0)
		cache_close(cache);
}

void cache_close_lingering(void)
{
	struct cache *cache = cache_registry;

	cache_linger_over = true;
	while (cache != NULL) {
		struct cache *next = cache->next;

		if (cache->refcount == 0)
			cache_close(cache);
		cache = next;
	}
}

const char *cache_user(const struct cache *cache)
{
	return cache->user;
}

uint64_t cache_serial(const struct cache *cache)
{
	return cache->serial;
}

struct sqlite3 *cache_sqlite_handle(struct cache *cache)
{
	cache_pending_flush(cache);
	cache_batch_commit_held(cache);
	return cache->db;
}

/* ---- batches ---- */

/* The outermost level begins: in the held transaction, if there is one. */
static void cache_batch_take_up(struct cache *cache)
{
	bool held = cache->batch_held;

	cache->batch_held = false;
	if (held && sqlite3_get_autocommit(cache->db)) {
		held = false; /* a failed statement took the held transaction with it */
		cache_body_bytes_reload(cache);
	}
	cache->batch_doomed = false;
	cache->batch_in_transaction = held; /* the held one goes on */
	cache->batch_started = held;
}

void cache_batch_begin_for(struct cache *cache, const void *owner)
{
	if (cache->batch_depth > 0) {
		cache->batch_depth++;
		return;
	}
	if (cache->batch_held && (owner == NULL || owner != cache->batch_owner))
		cache_batch_commit_held(cache); /* another's writes never join a held transaction */
	cache->batch_depth++;
	cache->batch_owner = owner;
	cache_batch_take_up(cache);
}

void cache_batch_begin(struct cache *cache)
{
	cache_batch_begin_for(cache, NULL);
}

/* Ends the outermost level: commit, or roll back a doomed batch. */
static int cache_batch_finish(struct cache *cache)
{
	bool doomed = cache->batch_doomed;
	int result = -1;

	if (!cache->batch_started && !doomed)
		return 0; /* nothing was written */
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
	cache->batch_started = false;
	cache->batch_held = false;
	cache->batch_bytes = 0;
	if (cache->batch_timer != NULL)
		evtimer_del(cache->batch_timer);
	if (result == 0)
		cache_vacuum_maybe(cache);
	return result;
}

int cache_batch_end(struct cache *cache)
{
	assert(cache->batch_depth > 0);
	if (--cache->batch_depth > 0)
		return cache->batch_doomed ? -1 : 0;
	return cache_batch_finish(cache);
}

/* Whether the store's file system has CACHE_BATCH_HOLD_ROOM free: a
   held transaction grows the WAL by up to CACHE_BATCH_HOLD_BYTES and its
   tree pages before it can be checkpointed. */
static bool cache_has_room(const struct cache *cache)
{
	struct statvfs fs;

	return statvfs(cache->path, &fs) == 0 && (uint64_t)fs.f_bavail * fs.f_frsize >= CACHE_BATCH_HOLD_ROOM;
}

/* The held batch's time is up. */
static void cache_batch_timer_fired(evutil_socket_t fd, short what, void *context)
{
	(void)fd;
	(void)what;
	cache_batch_commit_held(context);
}

int cache_batch_end_soon(struct cache *cache)
{
	uint64_t held_ms;
	struct timeval delay;

	assert(cache->batch_depth > 0);
	if (cache->batch_depth > 1 || cache->batch_doomed || !cache->batch_in_transaction ||
	    cache->settings.base == NULL || cache->batch_owner == NULL)
		return cache_batch_end(cache);
	held_ms = cache_monotonic_ms() - cache->batch_began_ms;
	if (held_ms >= CACHE_BATCH_HOLD_MS || cache->batch_bytes >= CACHE_BATCH_HOLD_BYTES || !cache_has_room(cache) ||
	    cache_wants_pause(cache))
		return cache_batch_end(cache);
	if (cache->batch_timer == NULL)
		cache->batch_timer = evtimer_new(cache->settings.base, cache_batch_timer_fired, cache);
	if (cache->batch_timer == NULL)
		return cache_batch_end(cache);
	cache->batch_depth--;
	cache->batch_held = true;
	if (!evtimer_pending(cache->batch_timer, NULL)) {
		delay = (struct timeval){ 0, (suseconds_t)(CACHE_BATCH_HOLD_MS - held_ms) * 1000 };
		evtimer_add(cache->batch_timer, &delay);
	}
	return 0;
}

void cache_batch_commit_held(struct cache *cache)
{
	if (!cache->batch_held || cache->batch_depth > 0)
		return;
	cache->batch_depth++;
	cache_batch_take_up(cache);
	(void)cache_batch_end(cache);
}

void cache_batch_rollback(struct cache *cache)
{
	assert(cache->batch_depth > 0);
	cache->batch_doomed = true;
	if (--cache->batch_depth == 0)
		cache_batch_finish(cache);
}

