/* SPDX-License-Identifier: MIT */
/* cache: the SQLite store of one upstream account, shared by that account's sessions. */
#ifndef IMAPCACHED_CACHE_H
#define IMAPCACHED_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cache;
struct cache_body_writer;
struct evbuffer;
struct event_base;
struct sqlite3;

#define CACHE_SCHEMA_VERSION 10 /* PRAGMA user_version of a store this code writes */
#define CACHE_BODY_CHUNK_SIZE (64 * 1024) /* a body row's piece: one INSERT stays well under a millisecond */
#define CACHE_PENDING_MAX (256 * 1024) /* bytes of held rows written in one go: about 2 ms, under a NOOP's notice */
#define CACHE_PENDING_DELAY_MS 20 /* the longest a held row waits: a reader in another process sees it soon */
#define CACHE_BATCH_HOLD_MS 20 /* the longest a transaction stays open for the next batches: as a held row waits */
#define CACHE_BATCH_HOLD_BYTES (512 * 1024) /* bodies a held transaction takes: a crash loses no more; 30 tree pages a commit are little beside it */
#define CACHE_BATCH_HOLD_ROOM (64 << 20) /* free bytes on the store's file system for a hold: near full, each batch commits alone so that what fits is kept */
/* The bytes of a savepoint's journal kept in memory before it goes to a
   file (SQLITE_CONFIG_STMTJRNL_SPILL; SQLite's own is 64 KiB): seven
   16 KiB pages, as many as a body's write op changes. 0x1ffff at most:
   the journal goes to its file in one write, and SQLite's unix VFS
   writes no more than 0x1ffff bytes at once (a larger one is cut short
   and fails as SQLITE_FULL). */
#define CACHE_SUBJOURNAL_SPILL 0x1ffff
#define CACHE_WRITE_RETRY_SECONDS 60 /* after a full disk: an admin who frees space needs no restart */

/*
 * What the cache stores, and how a caller hands it over.
 *
 * Every value is stored as the upstream wrote it and served as stored:
 * the bytes of the item's value in the FETCH response. INTERNALDATE with
 * its quotes ("17-Jul-1996 02:44:25 -0700" is 28 bytes); ENVELOPE,
 * BODYSTRUCTURE and BODY (the non-extensible BODYSTRUCTURE) as the whole
 * parenthesised text, literals ("{5}\r\nhello") and all; the header block
 * (BODY[HEADER]) as the literal's bytes, 8-bit and NUL bytes included;
 * FLAGS as the text between the parentheses ("\Seen $Junk", "" for none).
 * RFC822.SIZE and MODSEQ are numbers.
 *
 * A value that is not stored is absent, never empty: a NIL or missing item
 * from upstream is not stored at all. An empty value ("" flags, a 0-byte
 * header block) is a value.
 *
 * A mailbox_id names one mailbox at one UIDVALIDITY: when the UIDVALIDITY
 * changes, the mailbox gets a new id, and every call with the old one
 * fails (returns -1) or finds nothing. So a session that still holds the
 * old id can never write rows that would pass for the new UIDVALIDITY's.
 */
enum cache_item {
	/* Values with bytes: cache_store_item (FLAGS: cache_store_flags). */
	CACHE_ITEM_INTERNALDATE,
	CACHE_ITEM_ENVELOPE,
	CACHE_ITEM_BODYSTRUCTURE,
	CACHE_ITEM_BODY,          /* the BODY fetch item (BODYSTRUCTURE without extensions) */
	CACHE_ITEM_HEADER,        /* the header block, BODY[HEADER] */
	CACHE_ITEM_FLAGS,
	/* Numbers and the rest. */
	CACHE_ITEM_SIZE,          /* RFC822.SIZE */
	CACHE_ITEM_MODSEQ,
	CACHE_ITEM_STRUCTURE_AGREES, /* whether our BODYSTRUCTURE equals the upstream's */
	CACHE_ITEM_MESSAGE,       /* the whole message, complete: cache_body_read */
};
#define CACHE_VALUE_ITEMS (CACHE_ITEM_FLAGS + 1) /* the items held in cache_message.values */
#define CACHE_HAS(item) (1u << (item))

/* How long the daemon keeps a store open after its last session ended:
   a mail client opens and closes connections all day, and each would
   otherwise open the file, read its schema and its pages afresh. */
#define CACHE_LINGER_SECONDS 60
#define CACHE_LINGER_INDEXING_SECONDS 1 /* after the linger, how often a store left open for its index looks again */

struct cache_settings {
	const char *dir;          /* absolute; made 0700 if missing (its parent must exist) */
	uint64_t body_budget;     /* bytes of whole messages kept per account; 0: none */
	uint64_t body_max_size;   /* a larger message is not kept; 0: none */
	/* The event loop the store's sessions run on: the rows of FETCH lines
	   (cache_store_fetched) are then held back and written together,
	   at most CACHE_PENDING_DELAY_MS later. NULL: written at once. */
	struct event_base *base;
	/* Seconds the store stays open after its last reference went (with
	   base): the next session of the account then finds its statements
	   prepared and its pages read, instead of opening the file, reading
	   the schema and the pages again. 0: closed at once. */
	unsigned int linger_seconds;
	/* Seconds on a monotonic clock; NULL: CLOCK_MONOTONIC. For tests. */
	uint64_t (*now)(void);
	/* Seconds since the epoch, for bodies' last use; NULL: time(). For tests. */
	uint64_t (*wall_now)(void);
};

/* ---- the store of an account ---- */

/* The file that holds the account's store: DIR/UPSTREAM/USER.sqlite, each
   name percent-encoded except [A-Za-z0-9._@+-] (and a leading '.'), so no
   name can leave DIR, name a hidden file or clash with another's encoding;
   a name whose encoding is longer than CACHE_NAME_MAX becomes
   "sha256=" and its SHA-256 in hex (no encoding has a '='). Returns a
   malloc'd path, or NULL when a name is empty or memory runs out. */
#define CACHE_NAME_MAX 200 /* NAME_MAX 255 less ".sqlite.corrupt-YYYYMMDDTHHMMSSZ-99-journal" */
char *cache_file_path(const char *dir, const char *upstream, const char *user);

/* Sets SQLite up for the stores: CACHE_SUBJOURNAL_SPILL. Takes effect
   only before SQLite's first use in the process, and must not run while
   another thread uses SQLite: the daemon calls it first thing in main,
   cache_open calls it too (for programs and tests that use SQLite only
   through stores), and a program that uses SQLite otherwise, or from
   threads of its own, calls it first. Returns 0, or
   -1 when SQLite was in use already (its defaults stand, which work,
   only slower: every write op of a body that changes four pages or more
   then writes its journal to a file in the temporary directory). */
int cache_library_init(void);

/* The store of user on upstream (the upstream's name in the config),
   opened, or made, in settings->dir. A second open of the same account
   (same file) returns the same handle with one more reference, and takes
   settings' budget and maximum size (a reload may change them). The
   directories are made 0700 and the file 0600; group and other access to
   existing ones is taken away, with a log line (the owner's bits are left:
   0500 stays a read-only directory); a directory or file owned by another
   user is refused. A file that is not a store of ours (garbage,
   unreadable, another account's, a newer schema) is moved aside to
   PATH.corrupt-TIMESTAMP with a log line, and a new store made. A file
   that can't be written (a read-only directory) is opened for reading
   only, writes off for good.
   Returns NULL with *error_r (a static text naming what failed; details
   are logged) when no store can be opened: then proxy without a cache.
   Not thread-safe: one event loop owns every store. */
struct cache *cache_open(const struct cache_settings *settings, const char *upstream, const char *user,
			 const char **error_r);
/* Drops one reference; the last commits what is held and closes the
   store, or leaves it open for settings.linger_seconds, and past that
   while its bodies' text is being indexed (cache_open then takes it up
   again). A store found corrupt is closed at once and moved
   aside, so that the next open starts anew. A store whose file was
   replaced or removed while open is closed at once and removes its -wal
   and -shm files, with a log line: SQLite leaves them behind then, and
   would apply them to the file now at the path. Every body writer holds
   a reference until it finishes or aborts. Sets *cache to NULL; NULL is
   fine. */
void cache_unref(struct cache **cache);

/* Closes every store left open by cache_unref's linger (at shutdown); a
   store released after it closes at once. */
void cache_close_lingering(void);

/* One more reference to cache, for a writer that may outlive the session
   that opened it (cache_unref drops it). Returns cache. */
struct cache *cache_ref(struct cache *cache);

/* True while writes are off: a full store (SQLITE_FULL), a read-only file
   or directory, a corrupt store. Every write call then does nothing and
   returns -1, quietly (the first failure was logged). Writes are tried
   again CACHE_WRITE_RETRY_SECONDS after a full store or an I/O error;
   never on a handle opened read-only or found corrupt. */
bool cache_writes_off(struct cache *cache);

/* Bytes of whole messages held: complete bodies plus the announced size
   of each body being written (SUM(bodies.size)). Kept at most
   body_budget at every moment: a body that would pass it first evicts
   the least recently used complete bodies (cache_body_begin); a store
   opened with a lower budget (a restart, a reload) evicts down to it
   then. */
uint64_t cache_body_bytes(const struct cache *cache);

/* The login name the store was opened for (cache_open's user). */
const char *cache_user(const struct cache *cache);
/* A number no other handle opened by this process had: a mailbox id
   means one mailbox for as long as the handle of that serial is open
   (cache-stats keys its mailboxes by both). */
uint64_t cache_serial(const struct cache *cache);

/* The SQLite handle, for tests and imapcachectl: don't keep it past
   cache_unref, and don't leave a transaction open on it. */
struct sqlite3 *cache_sqlite_handle(struct cache *cache);

/* ---- batches ---- */

/* A batch is one transaction around many writes (a FETCH response's rows),
   so they cost one commit instead of one each. Writes outside a batch are
   each their own transaction. Batches nest: only the outermost end
   commits. A batch must begin and end inside one event-loop callback,
   so that a rollback never takes other sessions' writes with it; only
   cache_batch_end_soon lets its transaction outlive it, briefly. */
void cache_batch_begin(struct cache *cache);
/* The same for owner (a session): a transaction that cache_batch_end_soon
   held goes on only in its owner's next batch; any other batch, or one
   without an owner, commits it first, so that one transaction never
   holds two sessions' writes. */
void cache_batch_begin_for(struct cache *cache, const void *owner);
/* Ends one level; the outermost commits, or rolls everything back when a
   level was rolled back. Returns 0 when committed, -1 otherwise (logged,
   unless it was a rollback asked for). */
int cache_batch_end(struct cache *cache);
/* Ends one level as cache_batch_end does, except that the outermost may
   leave its transaction open for the batches of the next event-loop
   turns, until CACHE_BATCH_HOLD_MS after it began (then a timer commits
   it) or until it has written CACHE_BATCH_HOLD_BYTES of bodies; it
   commits at once when the store's file system has less than
   CACHE_BATCH_HOLD_ROOM free. For a stream of bodies arriving a few KB a turn: each commit
   writes the same tree pages again (12,000 commits of 20 KB each made
   "imapcachectl warm" of 10,000 messages 8 times slower than its
   network). Only a batch begun by cache_batch_begin_for is held, and
   only its owner's next batch goes on in it: any other batch, a
   cache_op_begin (a write of its own) or the last cache_unref commits
   what is held first, so a rollback takes no other session's writes
   with it. Without settings.base: cache_batch_end. Returns 0, or -1 as
   cache_batch_end does. */
int cache_batch_end_soon(struct cache *cache);
/* While the store's WAL is about to start afresh (cache-worker.h: a
   RESTART checkpoint that needs a moment with no write of the loop's),
   a held transaction commits at once, and a session that streams
   bodies in pauses its reading after its batch: true then. At most
   CACHE_PAUSE_MAX_MS: a pause never outlasts that. */
#define CACHE_PAUSE_MAX_MS 1000
#define CACHE_PAUSE_POLL_US 2000 /* how often a pause looks whether it is over */
bool cache_wants_pause(struct cache *cache);
/* Whether the open batch (or the held transaction it goes on in) wrote
   to the store: only a session that writes pauses. */
bool cache_batch_writing(const struct cache *cache);
/* resume(context) is called once the pause is over. Returns 0, or -1
   (no event base, out of memory: don't pause). */
int cache_pause_wait(struct cache *cache, void (*resume)(void *context), void *context);
/* context no longer waits (its session ends). */
void cache_pause_forget(struct cache *cache, void *context);

/* Ends one level and dooms the whole batch: the outermost end rolls back
   every write since the outermost begin. For a response that turned out
   bad half-way: the cache changes only from what the upstream answered. */
void cache_batch_rollback(struct cache *cache);

/* ---- mailboxes ---- */

struct cache_mailbox {
	int64_t id;
	uint32_t uidvalidity;
	uint32_t uidnext;         /* 0: not known */
	uint64_t highestmodseq;   /* 0: not known */
};

/* Mailbox names are the upstream's, byte for byte, except that INBOX is
   matched without regard to case (RFC 3501 5.1) and stored as "INBOX". */

/* The mailbox name at uidvalidity (nonzero), for a SELECT or EXAMINE that
   reported it. Made when new; when the stored UIDVALIDITY differs, every
   message and body of the mailbox is dropped first, the mailbox gets a new
   id, and *reset_r (may be NULL) is true. Returns 0 with *mailbox_r, or -1
   (logged; writes off, a bad argument, SQLite error): don't cache it. */
int cache_mailbox_open(struct cache *cache, const char *name, uint32_t uidvalidity,
		       struct cache_mailbox *mailbox_r, bool *reset_r);
/* Returns 1 with *mailbox_r when name is stored, 0 when not, -1 on error. */
int cache_mailbox_lookup(struct cache *cache, const char *name, struct cache_mailbox *mailbox_r);
/* Stores UIDNEXT and HIGHESTMODSEQ (0: not known) after a tagged OK. */
int cache_mailbox_set_state(struct cache *cache, int64_t mailbox_id, uint32_t uidnext, uint64_t highestmodseq);
/* Stores the mailbox's UID list as of a sync: count UIDs, strictly
   ascending and nonzero (else -1, logged), kept as ranges. */
int cache_mailbox_set_uids(struct cache *cache, int64_t mailbox_id, const uint32_t *uids, size_t count);
/* The stored UID list in *uids_r (malloc'd, free() it; NULL when empty)
   and *count_r. Returns 1 when known, 0 when not (never stored, or
   unreadable: counts as missing), -1 on error. */
int cache_mailbox_get_uids(struct cache *cache, int64_t mailbox_id, uint32_t **uids_r, size_t *count_r);
/* The mailbox's FLAGS as its last SELECT reported them: the text between
   the parentheses, flags one space apart; set with NULL forgets it. get
   returns 1 with *text_r (malloc'd), 0 when none is stored, -1 on error. */
int cache_mailbox_set_flag_list(struct cache *cache, int64_t mailbox_id, const char *text);
int cache_mailbox_get_flag_list(struct cache *cache, int64_t mailbox_id, char **text_r);
/* The upstream expunged uids (any order): their rows and bodies go, and
   they leave the stored UID list. All or nothing. A row an answer being
   written still reads (cache_pin_messages) goes once the answer is done. */
int cache_mailbox_remove_uids(struct cache *cache, int64_t mailbox_id, const uint32_t *uids, size_t count);
/* The mailbox is gone upstream (DELETE, RENAME): it goes with everything
   in it. Returns 0 also when it was not stored. While an answer being
   written reads its messages, it is only renamed out of the way (no
   lookup by name finds it) and goes once the answer is done. */
int cache_mailbox_delete(struct cache *cache, const char *name);

/* An answer that reads the store over several turns of the event loop
   pins its messages: an expunge, purge or UIDVALIDITY change learned
   meanwhile drops their rows only at cache_pin_release, and eviction
   passes their bodies by, so that the answer never finds a row gone
   halfway (doc/cache.md, "Pins"). */
struct cache_pin;
/* Pins mailbox_id's uids (count of them, any order); bodies: the answer
   reads their bodies (only then does eviction pass those by). NULL when
   memory runs out (logged; nothing is pinned). */
struct cache_pin *cache_pin_messages(struct cache *cache, int64_t mailbox_id, const uint32_t *uids, size_t count,
				     bool bodies);
/* Unpins and makes the drops it held back that no other pin holds. */
void cache_pin_release(struct cache *cache, struct cache_pin **pin_p);

/* ---- messages ---- */

/* Every store call below makes the message's row if needed and replaces
   the one value. uid is nonzero. Returns 0 when stored, -1 when not
   (logged, except while writes are off; an unknown mailbox_id is -1). */

/* A value of item (INTERNALDATE, ENVELOPE, BODYSTRUCTURE, BODY or HEADER),
   size bytes at data; data NULL forgets the value (absent again). */
int cache_store_item(struct cache *cache, int64_t mailbox_id, uint32_t uid, enum cache_item item,
		     const void *data, size_t size);
/* RFC822.SIZE. */
int cache_store_size(struct cache *cache, int64_t mailbox_id, uint32_t uid, uint64_t size);
/* FLAGS (NUL-terminated; NULL: not known) with the MODSEQ that came with
   them (0: none came, and a stored MODSEQ is forgotten with the old flags).
   \Recent is left out: it belongs to one session, never to the store. */
int cache_store_flags(struct cache *cache, int64_t mailbox_id, uint32_t uid, const char *flags, uint64_t modseq);
/* Whether the BODYSTRUCTURE our MIME library computes from the stored
   message equals the upstream's (set by whoever compared them). */
int cache_set_structure_agrees(struct cache *cache, int64_t mailbox_id, uint32_t uid, bool agrees);
/* PREVIEW (RFC 8970) of uid as the upstream wrote it: size bytes at
   value, a quoted string or a literal with its "{n}\r\n" (NIL is not
   stored). Dovecot computes it from the message alone, so one session's
   answer serves the next; it goes with the message's row. A fetched
   line's PREVIEW is held with its row (cache_fetched.preview); this is
   cache_store_fetched with nothing else. */
int cache_store_preview(struct cache *cache, int64_t mailbox_id, uint32_t uid, const void *value, size_t size);
/* Appends uid's stored PREVIEW value to out. Returns 1, 0 when none is
   stored, 2 when it failed its checksum (logged and dropped: none now),
   -1 on error. */
int cache_lookup_preview(struct cache *cache, int64_t mailbox_id, uint32_t uid, struct evbuffer *out);

struct cache_value {
	unsigned char *data;      /* NULL: absent; not NUL-terminated */
	size_t size;
};

/* What one FETCH line brought of a message, for cache_store_fetched. */
struct cache_fetched {
	struct cache_value values[CACHE_ITEM_HEADER + 1]; /* INTERNALDATE .. HEADER; data NULL: not brought */
	bool has_size;
	uint64_t size;            /* RFC822.SIZE */
	const char *flags;        /* FLAGS as for cache_store_flags; NULL: not brought */
	uint64_t modseq;          /* with flags, as for cache_store_flags */
	struct cache_value preview; /* PREVIEW as for cache_store_preview; data NULL: not brought */
};
/* Stores every value fetched brought (the values it didn't bring stay as
   stored) and its flags as cache_store_flags does, in one row write.
   With settings.base the write is held back (copied) and done together
   with others in one transaction: when CACHE_PENDING_MAX bytes are held,
   CACHE_PENDING_DELAY_MS after the first, before any call that reads
   messages or changes the store otherwise (so every reader in this
   process sees it, and every later write lands after it), and at the
   last cache_unref. A crash loses what is held: the cache only misses
   it. Returns 0 when stored or held, -1 when not (logged, except while
   writes are off). */
int cache_store_fetched(struct cache *cache, int64_t mailbox_id, uint32_t uid, const struct cache_fetched *fetched);

struct cache_message {
	uint32_t uid;
	unsigned int present;     /* CACHE_HAS(item) for every item stored */
	unsigned int damaged;     /* CACHE_HAS(item) for every value found failing its checksum (absent
				     from present; the lookup drops it) */
	struct cache_value values[CACHE_VALUE_ITEMS]; /* INTERNALDATE .. FLAGS */
	uint64_t size;            /* RFC822.SIZE */
	uint64_t modseq;
	bool structure_agrees;
	uint64_t message_size;    /* the whole message's bytes, with CACHE_HAS(CACHE_ITEM_MESSAGE) */
	struct evbuffer *body;    /* its bytes, when a lookup was asked for them (cache_lookup_values); else NULL */
};

/* Fills *message_r (its values malloc'd: cache_message_clear them) with
   what is stored of uid. Returns 1 when the message has a row, 0 when not
   (or its row is unreadable: counts as missing), -1 on error. */
int cache_lookup(struct cache *cache, int64_t mailbox_id, uint32_t uid, struct cache_message *message_r);
/* Frees message's values (and body) and zeroes it. */
void cache_message_clear(struct cache_message *message);

/* Called once per stored message; message and its values are SQLite's,
   valid only during the call (copy what you keep). No cache call may be
   made from inside it. */
typedef void cache_lookup_fn(const struct cache_message *message, void *context);
/* Looks up count UIDs (strictly ascending) in one statement run, calling
   callback for each one stored, in UID order; a UID without a row gets no
   call. A dense list is read as one range scan, a sparse one by key.
   Returns how many calls were made, or -1 on error (some calls may have
   been made). A row found unreadable ends the run: the rest count as
   missing. */
long cache_lookup_many(struct cache *cache, int64_t mailbox_id, const uint32_t *uids, size_t count,
		       cache_lookup_fn *callback, void *context);
/* cache_lookup_many reading only the values whose CACHE_HAS bit is in
   values (the others are absent from message, and not checked: a caller
   that serves a few items pays for no other's checksum). With
   CACHE_HAS(CACHE_ITEM_MESSAGE) in values, a lookup that checks bodies
   whole (of a few UIDs) hands the bytes it checked in message->body: the
   lookup's, valid during the call; a caller that keeps them moves them
   out (evbuffer_add_buffer) and counts the read with cache_body_used. */
long cache_lookup_values(struct cache *cache, int64_t mailbox_id, const uint32_t *uids, size_t count,
			 unsigned int values, cache_lookup_fn *callback, void *context);
/* cache_lookup_values of one UID that neither reads nor checks its whole
   message: CACHE_HAS(CACHE_ITEM_MESSAGE) and message_size then say only
   that its row is complete. For a caller holding the bytes it has just
   stored, which a check would read back. */
long cache_lookup_unchecked(struct cache *cache, int64_t mailbox_id, uint32_t uid, unsigned int values,
			    cache_lookup_fn *callback, void *context);

/* What is stored of a message, without reading its values. */
struct cache_presence {
	uint32_t uid;
	unsigned int present;     /* CACHE_HAS(item) for every item stored (CACHE_ITEM_MESSAGE: complete) */
	uint64_t size;            /* RFC822.SIZE, with CACHE_HAS(CACHE_ITEM_SIZE) */
};

/* Called once per stored message, in UID order; no cache call may be made
   from inside it. */
typedef void cache_presence_fn(const struct cache_presence *presence, void *context);
/* Tells callback what is stored of each message of mailbox_id with a UID
   in [first, last], without reading the values (prefetch: what is
   missing). Returns how many calls were made, or -1 on error. */
long cache_lookup_presence(struct cache *cache, int64_t mailbox_id, uint32_t first, uint32_t last,
			   cache_presence_fn *callback, void *context);

/* Called once per message, in UID order; no cache call may be made from inside it. */
typedef void cache_fixed_fn(uint32_t uid, void *context);
/* Tells callback the UID of each message of mailbox_id in [first, last]
   whose INTERNALDATE, ENVELOPE, BODYSTRUCTURE and RFC822.SIZE are all
   stored, from a table of their keys, reading no row: their checksums
   are checked only as the values are read. Returns how many calls were
   made, or -1 on error. */
long cache_lookup_fixed(struct cache *cache, int64_t mailbox_id, uint32_t first, uint32_t last,
			cache_fixed_fn *callback, void *context);
/* The same for the messages whose header block is stored and plain
   (mime_imap_header_is_plain): BODY[HEADER] and HEADER.FIELDS of them
   are answered from it, their checksums checked as they are read. */
long cache_lookup_plain_headers(struct cache *cache, int64_t mailbox_id, uint32_t first, uint32_t last,
				cache_fixed_fn *callback, void *context);

/* Called once per message with stored flags, in UID order: flags (not
   NUL-terminated, len bytes; SQLite's, valid during the call) and MODSEQ
   (0: not known). No cache call may be made from inside it. */
typedef void cache_flags_fn(uint32_t uid, const char *flags, size_t len, uint64_t modseq, void *context);
/* Tells callback the stored flags and MODSEQ of each message of
   mailbox_id with a UID in [first, last] that has flags stored, reading
   nothing else (a sync's unchanged messages). Returns how many calls were
   made, or -1 on error. */
long cache_lookup_flags(struct cache *cache, int64_t mailbox_id, uint32_t first, uint32_t last,
			cache_flags_fn *callback, void *context);

/* Called once per message with a stored value of one item (size bytes
   at data, as the upstream wrote it), in UID order. No cache call may be
   made from inside it. */
typedef void cache_value_fn(uint32_t uid, const unsigned char *data, size_t size, void *context);
/* Tells callback the stored INTERNALDATE of each message of mailbox_id
   with a UID in [first, last] that has one whose checksum holds, from an
   index of those values alone (BEFORE, ON and SINCE read no row; a
   damaged one is left out, as if not stored). Returns how many calls
   were made, or -1 on error. */
long cache_lookup_internaldates(struct cache *cache, int64_t mailbox_id, uint32_t first, uint32_t last,
				cache_value_fn *callback, void *context);
/* The same for the header block: from the rows alone, not the bodies'
   (a FROM or SUBJECT search reads no other value and joins no body). */
long cache_lookup_headers(struct cache *cache, int64_t mailbox_id, uint32_t first, uint32_t last,
			  cache_value_fn *callback, void *context);

/* Called once per message with a stored size, in UID order. No cache
   call may be made from inside it. */
typedef void cache_size_fn(uint32_t uid, uint64_t size, void *context);
/* Tells callback the stored RFC822.SIZE of each message of mailbox_id
   with a UID in [first, last] that has one, from an index of the sizes
   alone (a LARGER or SMALLER search reads no row). Returns how many
   calls were made, or -1 on error. */
long cache_lookup_sizes(struct cache *cache, int64_t mailbox_id, uint32_t first, uint32_t last,
			cache_size_fn *callback, void *context);
/* Forgets the stored flags and MODSEQ of every message of mailbox_id with
   a UID in [first, last] (a STORE went upstream: until the upstream tells
   them again, they are not known). Returns 0, or -1 (logged, except while
   writes are off). */
int cache_forget_flags(struct cache *cache, int64_t mailbox_id, uint32_t first, uint32_t last);

/* ---- whole messages ---- */

enum cache_body_refusal {
	CACHE_BODY_REFUSED_TOO_BIG,    /* size > body_max_size */
	CACHE_BODY_REFUSED_BUDGET,     /* size > body_budget, or evicting every body not in use can't make room */
	CACHE_BODY_REFUSED_PRESENT,    /* stored already, or being written */
	CACHE_BODY_REFUSED_WRITES_OFF,
	CACHE_BODY_REFUSED_ERROR,      /* SQLite error, unknown mailbox, uid 0 (logged) */
};

/* Starts storing the whole message of uid, size bytes (the literal's
   announced length), written in CACHE_BODY_CHUNK_SIZE pieces as it
   arrives, possibly over many event-loop turns: the writer holds at most
   one piece in memory. The size counts against body_budget from now on.
   When it would pass body_budget, the least recently used complete
   bodies (a read is a use; structure and header rows stay) are evicted
   first, in the same transaction, never one being written nor one read
   in the last CACHE_EVICT_IN_USE_SECONDS (it may be mid-answer).
   Returns the writer, or NULL with *refusal_r (may be NULL) when the body
   is not to be stored: then just proxy it. */
#define CACHE_EVICT_IN_USE_SECONDS 2 /* a body read this recently may be mid-answer: never evicted */
struct cache_body_writer *cache_body_begin(struct cache *cache, int64_t mailbox_id, uint32_t uid, uint64_t size,
					   enum cache_body_refusal *refusal_r);
/* Appends size bytes. Returns 0, or -1 when the body can't be stored
   (more bytes than announced, writes off, the message expunged or its
   mailbox reset meanwhile, SQLite error): the writer then only waits for
   cache_body_abort (or a finish, which fails). */
int cache_body_write(struct cache_body_writer *writer, const void *data, size_t size);
/* The last byte came: checks that exactly the announced bytes are stored
   and marks the body complete (served from now on). Returns 0, or -1 when
   it could not be stored (nothing of it is kept). Frees *writer, sets it to
   NULL. */
int cache_body_finish(struct cache_body_writer **writer);
/* Drops what was written; frees *writer, sets it to NULL. NULL is fine. */
void cache_body_abort(struct cache_body_writer **writer);

/* Appends bytes [offset, offset + length) of the stored message of uid to
   out, clipped to its size (an offset past the end appends nothing),
   reading only the pieces that hold them; counts as a use of the body.
   Returns 1 when appended, 0 when no complete body is stored (or it is
   unreadable: counts as missing; out is then unchanged), -1 on error. */
int cache_body_read(struct cache *cache, int64_t mailbox_id, uint32_t uid, uint64_t offset, uint64_t length,
		    struct evbuffer *out);
/* Counts a read of uid's body whose bytes came from a lookup
   (cache_message.body) as a use, as cache_body_read does. */
void cache_body_used(struct cache *cache, int64_t mailbox_id, uint32_t uid);
/* Returns 1 with *size_r when a complete body of uid is stored, 0 when
   not, -1 on error. */
int cache_body_size(struct cache *cache, int64_t mailbox_id, uint32_t uid, uint64_t *size_r);

#endif
