/* SPDX-License-Identifier: MIT */
/* Unit tests for daemon/cache: file names and modes, damaged, unreadable and replaced stores, mailboxes, items, batches, bodies and a full or read-only store. */
#include "config.h"
#include "unit.h"
#include "cache.h"
#include "cache-private.h" /* cache_fail: a store found damaged */
#include "cache-worker.h"
#include "cache-checksum.h"
#include "log.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <fcntl.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CHUNK CACHE_BODY_CHUNK_SIZE
#define CACHE_CHUNK_TEXT "65536" /* CHUNK, for SQL */
_Static_assert(CHUNK == 65536, "CACHE_CHUNK_TEXT is CHUNK");
#define NOBODY_UID 65534 /* Debian's nobody, for what root can't be refused */
#define TIMING_MESSAGES 10000 /* as many as the fetch module will ask for at once */

static char base_dir[64];     /* made per test, removed after it */
static char cache_dir[128];   /* base_dir/cache */
static uint64_t fake_clock = 1000;
static char log_text[16384];  /* the lines logged during the current test */

static uint64_t fake_now(void)
{
	return fake_clock;
}

static void capture_log(enum log_level level, const char *line, void *context)
{
	size_t len = strlen(log_text);

	(void)level;
	(void)context;
	snprintf(log_text + len, sizeof(log_text) - len, "%s\n", line);
}

static bool logged(const char *text)
{
	return strstr(log_text, text) != NULL;
}

static struct cache_settings settings(void)
{
	struct cache_settings s = {
		.dir = cache_dir, .body_budget = 1ULL << 30, .body_max_size = 4 << 20, .now = fake_now,
	};
	return s;
}

/* A fresh base_dir per test, so that each starts with no store. */
static void setup(void)
{
	snprintf(base_dir, sizeof(base_dir), "/tmp/test-cache-XXXXXX");
	CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(base_dir));
	chmod(base_dir, 0755); /* nobody must reach it in the read-only test */
	snprintf(cache_dir, sizeof(cache_dir), "%s/cache", base_dir);
	log_text[0] = '\0';
	log_set_sink(capture_log, NULL);
	log_set_level(LOG_LEVEL_DEBUG);
	fake_clock = 1000;
}

static void teardown(void)
{
	char command[256];

	snprintf(command, sizeof(command), "chmod -R u+rwx '%s' && rm -rf '%s'", base_dir, base_dir);
	CU_ASSERT_EQUAL(system(command), 0);
	log_set_sink(NULL, NULL);
}

static struct cache *open_account(const char *upstream, const char *user)
{
	struct cache_settings s = settings();
	const char *error = NULL;
	struct cache *cache = cache_open(&s, upstream, user, &error);

	if (cache == NULL)
		fprintf(stderr, "\ncache_open: %s\n%s", error, log_text);
	CU_ASSERT_PTR_NOT_NULL_FATAL(cache);
	return cache;
}

static char *account_path(const char *upstream, const char *user)
{
	char *path = cache_file_path(cache_dir, upstream, user);

	CU_ASSERT_PTR_NOT_NULL_FATAL(path);
	return path;
}

/* One integer from SQL run on the store's own handle. */
static int64_t query(struct cache *cache, const char *sql)
{
	sqlite3_stmt *stmt;
	int64_t value = -1;

	CU_ASSERT_EQUAL_FATAL(sqlite3_prepare_v2(cache_sqlite_handle(cache), sql, -1, &stmt, NULL), SQLITE_OK);
	if (sqlite3_step(stmt) == SQLITE_ROW)
		value = sqlite3_column_int64(stmt, 0);
	sqlite3_finalize(stmt);
	return value;
}

/* The budget's count equals the bodies' sizes and the bytes of their pieces. */
static void check_body_bytes(struct cache *cache)
{
	int64_t sizes = query(cache, "SELECT coalesce(sum(size), 0) FROM bodies");
	int64_t stored = query(cache, "SELECT coalesce(sum(length(data)), 0) FROM body_chunks");

	CU_ASSERT_EQUAL(cache_body_bytes(cache), (uint64_t)sizes);
	if (query(cache, "SELECT count(*) FROM bodies WHERE complete = 0") == 0)
		CU_ASSERT_EQUAL(cache_body_bytes(cache), (uint64_t)stored);
}

static void write_file(const char *path, const void *data, size_t size)
{
	FILE *f = fopen(path, "wb");

	CU_ASSERT_PTR_NOT_NULL_FATAL(f);
	CU_ASSERT_EQUAL(fwrite(data, 1, size, f), size);
	fclose(f);
}

/* How many files in the account's directory start with the store's name and ".corrupt-". */
static int count_aside(const char *path)
{
	char command[512];
	FILE *p;
	int count = -1;

	snprintf(command, sizeof(command), "ls -d '%s'.corrupt-* 2>/dev/null | grep -v -e -wal -e -journal | wc -l",
		 path);
	p = popen(command, "r");
	CU_ASSERT_PTR_NOT_NULL_FATAL(p);
	CU_ASSERT_EQUAL(fscanf(p, "%d", &count), 1);
	pclose(p);
	return count;
}

static struct cache_mailbox open_mailbox(struct cache *cache, const char *name, uint32_t uidvalidity)
{
	struct cache_mailbox mailbox;
	bool reset = true;

	CU_ASSERT_EQUAL_FATAL(cache_mailbox_open(cache, name, uidvalidity, &mailbox, &reset), 0);
	CU_ASSERT_EQUAL(mailbox.uidvalidity, uidvalidity);
	return mailbox;
}

static void store_text(struct cache *cache, int64_t mailbox_id, uint32_t uid, enum cache_item item, const char *text)
{
	CU_ASSERT_EQUAL(cache_store_item(cache, mailbox_id, uid, item, text, strlen(text)), 0);
}

/* Whether the stored value of item is exactly size bytes at data. */
static bool value_is(const struct cache_message *message, enum cache_item item, const void *data, size_t size)
{
	const struct cache_value *value = &message->values[item];

	return (message->present & CACHE_HAS(item)) && value->data != NULL && value->size == size &&
	       memcmp(value->data, data, size) == 0;
}

/* Stores a whole message of size bytes (byte i is pattern(i)), handed over
   in pieces of step bytes. */
static unsigned char pattern(uint64_t i)
{
	return (unsigned char)((i * 7 + i / 251) & 0xff);
}

static int store_body(struct cache *cache, int64_t mailbox_id, uint32_t uid, uint64_t size, size_t step)
{
	struct cache_body_writer *writer = cache_body_begin(cache, mailbox_id, uid, size, NULL);
	unsigned char *data = malloc(size + 1);

	CU_ASSERT_PTR_NOT_NULL_FATAL(writer);
	for (uint64_t i = 0; i < size; i++)
		data[i] = pattern(i);
	for (uint64_t done = 0; done < size; done += step)
		CU_ASSERT_EQUAL(cache_body_write(writer, data + done, size - done < step ? size - done : step), 0);
	free(data);
	return cache_body_finish(&writer);
}

/* Reads [offset, offset + length) and checks it against pattern. */
static void check_read(struct cache *cache, int64_t mailbox_id, uint32_t uid, uint64_t size, uint64_t offset,
		       uint64_t length)
{
	struct evbuffer *out = evbuffer_new();
	uint64_t end = offset >= size ? offset : (length > size - offset ? size : offset + length);
	size_t got;
	unsigned char *bytes;
	bool same = true;

	evbuffer_add(out, "x", 1); /* appended to, not replaced */
	CU_ASSERT_EQUAL(cache_body_read(cache, mailbox_id, uid, offset, length, out), 1);
	got = evbuffer_get_length(out);
	CU_ASSERT_EQUAL(got, 1 + (end - offset));
	bytes = evbuffer_pullup(out, -1);
	for (uint64_t i = offset; i < end && got == 1 + (end - offset); i++)
		same &= bytes[1 + i - offset] == pattern(i);
	CU_ASSERT_TRUE(same);
	evbuffer_free(out);
}

/* ---- tests ---- */

static void test_open_share_unref(void)
{
	struct cache_settings s = settings();
	const char *error = NULL;
	struct cache *a;
	struct cache *b;
	struct cache *c;

	setup();
	a = open_account("up", "alice");
	b = open_account("up", "alice");
	c = open_account("up", "bob");
	CU_ASSERT_PTR_EQUAL(a, b);
	CU_ASSERT_PTR_NOT_EQUAL(a, c);
	cache_unref(&b);
	CU_ASSERT_PTR_NULL(b);
	/* a is still open: its handle still works. */
	CU_ASSERT_EQUAL(query(a, "PRAGMA user_version"), CACHE_SCHEMA_VERSION);
	CU_ASSERT_EQUAL(query(a, "SELECT count(*) FROM pragma_journal_mode WHERE journal_mode = 'wal'"), 1);
	cache_unref(&a);
	cache_unref(&c);
	cache_unref(&c);
	a = open_account("up", "alice");
	CU_ASSERT_EQUAL(query(a, "SELECT count(*) FROM meta WHERE key = 'user' AND value = 'alice'"), 1);
	CU_ASSERT_EQUAL(query(a, "PRAGMA synchronous"), 1); /* NORMAL */
	CU_ASSERT_EQUAL(query(a, "PRAGMA foreign_keys"), 1);
	CU_ASSERT_EQUAL(query(a, "PRAGMA journal_size_limit"), 16 << 20);
	cache_unref(&a);
	CU_ASSERT_PTR_NULL(cache_open(&s, "up", "", &error));
	CU_ASSERT_STRING_EQUAL(error, "an empty upstream or user name");
	CU_ASSERT_PTR_NULL(cache_open(&s, "", "alice", &error));
	teardown();
}

static unsigned int mode_of(const char *path)
{
	struct stat st;

	CU_ASSERT_EQUAL_FATAL(lstat(path, &st), 0);
	return st.st_mode & 07777;
}

static void test_modes(void)
{
	struct cache_settings s = settings();
	const char *error = "";
	char path[256];
	char *file;
	struct cache *cache;

	setup();
	cache = open_account("up", "alice");
	file = account_path("up", "alice");
	CU_ASSERT_EQUAL(mode_of(cache_dir), 0700);
	snprintf(path, sizeof(path), "%s/up", cache_dir);
	CU_ASSERT_EQUAL(mode_of(path), 0700);
	CU_ASSERT_EQUAL(mode_of(file), 0600);
	cache_unref(&cache);

	/* Wrong modes are set right, with a log line. */
	chmod(cache_dir, 0755);
	chmod(path, 0777);
	chmod(file, 0644);
	cache = open_account("up", "alice");
	CU_ASSERT_EQUAL(mode_of(cache_dir), 0700);
	CU_ASSERT_EQUAL(mode_of(path), 0700);
	CU_ASSERT_EQUAL(mode_of(file), 0600);
	CU_ASSERT_TRUE(logged("had mode 0644; set it to 0600"));
	CU_ASSERT_TRUE(logged("had mode 0755; set it to 0700"));
	cache_unref(&cache);
	free(file);

	/* A directory of another user is refused, and left alone. */
	if (geteuid() == 0) {
		CU_ASSERT_EQUAL(chown(cache_dir, NOBODY_UID, NOBODY_UID), 0);
		chmod(cache_dir, 0755);
		CU_ASSERT_PTR_NULL(cache_open(&s, "up", "alice", &error));
		CU_ASSERT_STRING_EQUAL(error, "the cache directory belongs to another user");
		CU_ASSERT_TRUE(logged("belongs to uid 65534, not to uid 0 that imapcached runs as"));
		CU_ASSERT_EQUAL(mode_of(cache_dir), 0755);
	} else {
		s.dir = "/";
		CU_ASSERT_PTR_NULL(cache_open(&s, "up", "alice", &error));
		CU_ASSERT_STRING_EQUAL(error, "the cache directory belongs to another user");
	}
	teardown();
}

static void test_file_names(void)
{
	char *path;

	path = cache_file_path("/c", "up", "alice@example.com");
	CU_ASSERT_STRING_EQUAL(path, "/c/up/alice@example.com.sqlite");
	free(path);
	path = cache_file_path("/c", "my upstream", "../../etc/x");
	CU_ASSERT_STRING_EQUAL(path, "/c/my%20upstream/%2E.%2F..%2Fetc%2Fx.sqlite");
	free(path);
	path = cache_file_path("/c", ".", "/");
	CU_ASSERT_STRING_EQUAL(path, "/c/%2E/%2F.sqlite");
	free(path);
	path = cache_file_path("/c", "up", "a\x01\x7f\xc3\xa9%_+-.b");
	CU_ASSERT_STRING_EQUAL(path, "/c/up/a%01%7F%C3%A9%25_+-.b.sqlite");
	free(path);
	/* Too long: a hash, whose '=' no encoded name has. */
	path = cache_file_path("/c", "up", "%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%");
	CU_ASSERT_EQUAL(strncmp(path, "/c/up/sha256=", 13), 0);
	CU_ASSERT_EQUAL(strlen(path), strlen("/c/up/sha256=") + 64 + strlen(".sqlite"));
	free(path);
	CU_ASSERT_PTR_NULL(cache_file_path("/c", "up", ""));
}

/* Each hostile name gets a store of its own, in a file right inside its upstream's directory. */
static void test_hostile_names(void)
{
	char long_name[1001];
	char *users[] = { "../../etc/x", "/", "..", ".", "\x01\x02\x1b[31m\r\n", long_name, "a/b", "a%2Fb", NULL };
	struct cache *caches[8];
	char up_dir[256];
	char real_up_dir[PATH_MAX];

	memset(long_name, 'a', 1000);
	long_name[1000] = '\0';
	setup();
	snprintf(up_dir, sizeof(up_dir), "%s/%%2E.%%2F", cache_dir);
	for (int i = 0; users[i] != NULL; i++) {
		char *path;
		char *slash;
		char real[PATH_MAX];
		struct stat st;

		caches[i] = open_account("../", users[i]);
		path = account_path("../", users[i]);
		CU_ASSERT_EQUAL(lstat(path, &st), 0);
		CU_ASSERT_TRUE(S_ISREG(st.st_mode));
		CU_ASSERT_PTR_NOT_NULL(realpath(path, real));
		slash = strrchr(path, '/');
		*slash = '\0';
		CU_ASSERT_STRING_EQUAL(path, up_dir);
		CU_ASSERT(strlen(slash + 1) <= CACHE_NAME_MAX + strlen(".sqlite"));
		CU_ASSERT_NOT_EQUAL(slash[1], '.');
		CU_ASSERT_PTR_NOT_NULL(realpath(up_dir, real_up_dir));
		CU_ASSERT_EQUAL(strncmp(real, real_up_dir, strlen(real_up_dir)), 0);
		CU_ASSERT_PTR_NULL(strchr(real + strlen(real_up_dir) + 1, '/'));
		for (int j = 0; j < i; j++)
			CU_ASSERT_PTR_NOT_EQUAL(caches[i], caches[j]);
		free(path);
	}
	for (int i = 0; users[i] != NULL; i++)
		cache_unref(&caches[i]);
	teardown();
}

/* Makes the account's directory and runs sql on a database at its path, outside the cache. */
static void make_database(const char *path, const char *sql)
{
	sqlite3 *db;
	char dir[512];

	snprintf(dir, sizeof(dir), "%s", path);
	*strrchr(dir, '/') = '\0';
	mkdir(cache_dir, 0700);
	mkdir(dir, 0700);
	CU_ASSERT_EQUAL_FATAL(sqlite3_open(path, &db), SQLITE_OK);
	CU_ASSERT_EQUAL(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
}

static void test_migrations(void)
{
	char *path;
	struct cache *cache;

	setup();
	path = account_path("up", "alice");
	/* An empty file is an empty database at version 0. */
	make_database(path, "");
	write_file(path, "", 0);
	cache = open_account("up", "alice");
	CU_ASSERT_EQUAL(query(cache, "PRAGMA user_version"), CACHE_SCHEMA_VERSION);
	CU_ASSERT_EQUAL(query(cache, "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name IN "
				     "('meta', 'mailboxes', 'messages', 'bodies', 'body_chunks')"), 5);
	cache_unref(&cache);
	CU_ASSERT_EQUAL(count_aside(path), 0);

	/* A database at user_version 0 with no tables: migrated in place. */
	unlink(path);
	make_database(path, "PRAGMA journal_mode = WAL; PRAGMA user_version = 0;");
	cache = open_account("up", "alice");
	CU_ASSERT_EQUAL(query(cache, "PRAGMA user_version"), CACHE_SCHEMA_VERSION);
	CU_ASSERT_EQUAL(query(cache, "SELECT count(*) FROM meta"), 2);
	cache_unref(&cache);
	CU_ASSERT_EQUAL(count_aside(path), 0);

	/* Version 0 with tables of someone else's: moved aside, not mixed with. */
	unlink(path);
	make_database(path, "CREATE TABLE messages(x); INSERT INTO messages VALUES(1);");
	cache = open_account("up", "alice");
	CU_ASSERT_EQUAL(query(cache, "SELECT count(*) FROM messages"), 0);
	CU_ASSERT_EQUAL(count_aside(path), 1);
	CU_ASSERT_TRUE(logged("not an imapcached store"));
	cache_unref(&cache);

	/* A newer schema than ours. */
	make_database(path, "PRAGMA user_version = 99;");
	cache = open_account("up", "alice");
	CU_ASSERT_EQUAL(query(cache, "PRAGMA user_version"), CACHE_SCHEMA_VERSION);
	CU_ASSERT_TRUE(logged("a store of a newer imapcached"));
	CU_ASSERT_EQUAL(count_aside(path), 2);
	cache_unref(&cache);
	free(path);
	teardown();
}

static void test_garbage_moved_aside(void)
{
	char garbage[8192];
	char aside_check[600];
	char target[128];
	struct cache_mailbox mailbox;
	char *path;
	struct cache *cache;
	FILE *p;

	setup();
	cache = open_account("up", "alice");
	mailbox = open_mailbox(cache, "INBOX", 7);
	store_text(cache, mailbox.id, 1, CACHE_ITEM_ENVELOPE, "(NIL)");
	cache_unref(&cache);
	path = account_path("up", "alice");
	for (size_t i = 0; i < sizeof(garbage); i++)
		garbage[i] = (char)("not a database "[i % 15]);
	write_file(path, garbage, sizeof(garbage));

	cache = open_account("up", "alice");
	CU_ASSERT_TRUE(logged("is not a database, or a damaged one; moved aside to "));
	CU_ASSERT_EQUAL(count_aside(path), 1);
	/* The garbage is kept as it was, and the new store works. */
	snprintf(aside_check, sizeof(aside_check), "cmp -s '%s'.corrupt-* -", path);
	p = popen(aside_check, "w");
	fwrite(garbage, 1, sizeof(garbage), p);
	CU_ASSERT_EQUAL(pclose(p), 0);
	CU_ASSERT_EQUAL(cache_mailbox_lookup(cache, "INBOX", &mailbox), 0);
	mailbox = open_mailbox(cache, "INBOX", 7);
	store_text(cache, mailbox.id, 1, CACHE_ITEM_ENVELOPE, "(NIL)");
	cache_unref(&cache);

	/* A directory where the file should be: moved aside too. */
	unlink(path);
	CU_ASSERT_EQUAL(mkdir(path, 0700), 0);
	cache = open_account("up", "alice");
	CU_ASSERT_TRUE(logged("is not a regular file; moved aside to "));
	CU_ASSERT_EQUAL(count_aside(path), 2);
	cache_unref(&cache);

	/* A symbolic link: never followed (its target is left as it was). */
	unlink(path);
	snprintf(target, sizeof(target), "%s/target", base_dir);
	write_file(target, "not mine", 8);
	chmod(target, 0644);
	CU_ASSERT_EQUAL(symlink(target, path), 0);
	cache = open_account("up", "alice");
	CU_ASSERT_EQUAL(count_aside(path), 3);
	CU_ASSERT_EQUAL(mode_of(target), 0644);
	CU_ASSERT_EQUAL(query(cache, "PRAGMA user_version"), CACHE_SCHEMA_VERSION);
	cache_unref(&cache);
	p = fopen(target, "rb");
	CU_ASSERT_PTR_NOT_NULL_FATAL(p);
	CU_ASSERT_EQUAL(fread(garbage, 1, sizeof(garbage), p), 8);
	CU_ASSERT_EQUAL(memcmp(garbage, "not mine", 8), 0);
	fclose(p);
	free(path);
	teardown();
}

static void test_account_mismatch(void)
{
	char *alice;
	char *bob;
	struct cache *cache;
	struct cache_mailbox mailbox;

	setup();
	cache = open_account("up", "alice");
	open_mailbox(cache, "INBOX", 7);
	cache_unref(&cache);
	alice = account_path("up", "alice");
	bob = account_path("up", "bob");
	CU_ASSERT_EQUAL(rename(alice, bob), 0);
	cache = open_account("up", "bob");
	CU_ASSERT_TRUE(logged("is another account's store; moved aside"));
	CU_ASSERT_EQUAL(cache_mailbox_lookup(cache, "INBOX", &mailbox), 0);
	CU_ASSERT_EQUAL(query(cache, "SELECT count(*) FROM meta WHERE key = 'user' AND value = 'bob'"), 1);
	cache_unref(&cache);
	CU_ASSERT_EQUAL(count_aside(bob), 1);
	free(alice);
	free(bob);
	teardown();
}

static void test_mailboxes(void)
{
	struct cache *cache;
	struct cache_mailbox inbox;
	struct cache_mailbox found;
	struct cache_mailbox other;
	bool reset = true;

	setup();
	cache = open_account("up", "alice");
	CU_ASSERT_EQUAL(cache_mailbox_lookup(cache, "INBOX", &found), 0);
	CU_ASSERT_EQUAL(cache_mailbox_open(cache, "inbox", 42, &inbox, &reset), 0);
	CU_ASSERT_FALSE(reset);
	CU_ASSERT_EQUAL(inbox.uidnext, 0);
	CU_ASSERT_EQUAL(inbox.highestmodseq, 0);
	/* INBOX in any case is one mailbox; other names are as given. */
	CU_ASSERT_EQUAL(cache_mailbox_lookup(cache, "InBoX", &found), 1);
	CU_ASSERT_EQUAL(found.id, inbox.id);
	other = open_mailbox(cache, "Inbox/sub", 42);
	CU_ASSERT_NOT_EQUAL(other.id, inbox.id);
	CU_ASSERT_EQUAL(cache_mailbox_lookup(cache, "inbox/sub", &found), 0);

	CU_ASSERT_EQUAL(cache_mailbox_set_state(cache, inbox.id, 1234, 98765), 0);
	CU_ASSERT_EQUAL(cache_mailbox_lookup(cache, "INBOX", &found), 1);
	CU_ASSERT_EQUAL(found.uidnext, 1234);
	CU_ASSERT_EQUAL(found.highestmodseq, 98765);
	CU_ASSERT_EQUAL(cache_mailbox_set_state(cache, inbox.id, 1235, 0), 0);
	CU_ASSERT_EQUAL(cache_mailbox_lookup(cache, "INBOX", &found), 1);
	CU_ASSERT_EQUAL(found.highestmodseq, 0);
	CU_ASSERT_EQUAL(cache_mailbox_open(cache, "INBOX", 42, &found, &reset), 0);
	CU_ASSERT_FALSE(reset);
	CU_ASSERT_EQUAL(found.uidnext, 1235);
	CU_ASSERT_EQUAL(cache_mailbox_open(cache, "INBOX", 0, &found, &reset), -1);

	store_text(cache, other.id, 1, CACHE_ITEM_ENVELOPE, "(NIL)");
	CU_ASSERT_EQUAL(cache_mailbox_delete(cache, "Inbox/sub"), 0);
	CU_ASSERT_EQUAL(cache_mailbox_lookup(cache, "Inbox/sub", &found), 0);
	CU_ASSERT_EQUAL(query(cache, "SELECT count(*) FROM messages"), 0);
	CU_ASSERT_EQUAL(cache_mailbox_delete(cache, "never there"), 0);
	CU_ASSERT_EQUAL(cache_store_item(cache, other.id, 2, CACHE_ITEM_ENVELOPE, "x", 1), -1);
	cache_unref(&cache);
	teardown();
}

static void test_uidvalidity_change(void)
{
	struct cache *cache;
	struct cache_mailbox before;
	struct cache_mailbox after;
	struct cache_message message;
	bool reset = false;

	setup();
	cache = open_account("up", "alice");
	before = open_mailbox(cache, "INBOX", 100);
	store_text(cache, before.id, 1, CACHE_ITEM_ENVELOPE, "(NIL)");
	store_text(cache, before.id, 2, CACHE_ITEM_ENVELOPE, "(NIL)");
	CU_ASSERT_EQUAL(store_body(cache, before.id, 2, CHUNK + 10, 1000), 0);
	CU_ASSERT_EQUAL(cache_mailbox_set_state(cache, before.id, 3, 50), 0);
	CU_ASSERT_EQUAL(cache_body_bytes(cache), CHUNK + 10);

	CU_ASSERT_EQUAL(cache_mailbox_open(cache, "INBOX", 101, &after, &reset), 0);
	CU_ASSERT_TRUE(reset);
	CU_ASSERT_NOT_EQUAL(after.id, before.id);
	CU_ASSERT_EQUAL(after.uidvalidity, 101);
	CU_ASSERT_EQUAL(after.uidnext, 0);
	CU_ASSERT_EQUAL(after.highestmodseq, 0);
	CU_ASSERT_EQUAL(cache_lookup(cache, after.id, 1, &message), 0);
	CU_ASSERT_EQUAL(cache_lookup(cache, before.id, 1, &message), 0);
	CU_ASSERT_EQUAL(query(cache, "SELECT count(*) FROM messages"), 0);
	CU_ASSERT_EQUAL(query(cache, "SELECT count(*) FROM body_chunks"), 0);
	CU_ASSERT_EQUAL(cache_body_bytes(cache), 0);
	check_body_bytes(cache);
	CU_ASSERT_TRUE(logged("UIDVALIDITY changed from 100 to 101"));
	/* A session that still holds the old id writes nothing. */
	CU_ASSERT_EQUAL(cache_store_item(cache, before.id, 1, CACHE_ITEM_ENVELOPE, "(old)", 5), -1);
	CU_ASSERT_PTR_NULL(cache_body_begin(cache, before.id, 3, 10, NULL));
	CU_ASSERT_EQUAL(query(cache, "SELECT count(*) FROM messages"), 0);
	/* And back: another reset, another id. */
	CU_ASSERT_EQUAL(cache_mailbox_open(cache, "INBOX", 100, &before, &reset), 0);
	CU_ASSERT_TRUE(reset);
	CU_ASSERT_NOT_EQUAL(before.id, after.id);
	cache_unref(&cache);
	teardown();
}

static void test_items_round_trip(void)
{
	static const char internaldate[] = "\"17-Jul-1996 02:44:25 -0700\"";
	static const char envelope[] =
		"(\"Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\" {14}\r\nIMAP4rev1 )(\"\r\n"
		"((\"Terry Gray\" NIL \"gray\" \"cac.washington.edu\")) NIL NIL NIL \"<B27397-0100000@cac.washington.edu>\")";
	static const char bodystructure[] =
		"(\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" 3028 92 NIL NIL NIL NIL)";
	static const char body[] = "(\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" 3028 92)";
	static const unsigned char header[] = "Subject: caf\xc3\xa9 \xff\x00\x01 nul\r\nX-8bit: \x80\x81\r\n\r\n";
	struct cache *cache;
	struct cache_mailbox mailbox;
	struct cache_message message;

	setup();
	cache = open_account("up", "alice");
	mailbox = open_mailbox(cache, "INBOX", 1);
	store_text(cache, mailbox.id, 7, CACHE_ITEM_INTERNALDATE, internaldate);
	store_text(cache, mailbox.id, 7, CACHE_ITEM_ENVELOPE, envelope);
	store_text(cache, mailbox.id, 7, CACHE_ITEM_BODYSTRUCTURE, bodystructure);
	store_text(cache, mailbox.id, 7, CACHE_ITEM_BODY, body);
	CU_ASSERT_EQUAL(cache_store_item(cache, mailbox.id, 7, CACHE_ITEM_HEADER, header, sizeof(header) - 1), 0);
	CU_ASSERT_EQUAL(cache_store_size(cache, mailbox.id, 7, 4286), 0);
	CU_ASSERT_EQUAL(cache_store_flags(cache, mailbox.id, 7, "\\Seen $Junk", 12345678901234ULL), 0);
	CU_ASSERT_EQUAL(cache_set_structure_agrees(cache, mailbox.id, 7, true), 0);
	cache_unref(&cache);

	cache = open_account("up", "alice");
	CU_ASSERT_EQUAL_FATAL(cache_lookup(cache, mailbox.id, 7, &message), 1);
	CU_ASSERT_EQUAL(message.uid, 7);
	CU_ASSERT_TRUE(value_is(&message, CACHE_ITEM_INTERNALDATE, internaldate, strlen(internaldate)));
	CU_ASSERT_TRUE(value_is(&message, CACHE_ITEM_ENVELOPE, envelope, strlen(envelope)));
	CU_ASSERT_TRUE(value_is(&message, CACHE_ITEM_BODYSTRUCTURE, bodystructure, strlen(bodystructure)));
	CU_ASSERT_TRUE(value_is(&message, CACHE_ITEM_BODY, body, strlen(body)));
	CU_ASSERT_TRUE(value_is(&message, CACHE_ITEM_HEADER, header, sizeof(header) - 1));
	CU_ASSERT_TRUE(value_is(&message, CACHE_ITEM_FLAGS, "\\Seen $Junk", 11));
	CU_ASSERT_EQUAL(message.values[CACHE_ITEM_FLAGS].data[11], '\0'); /* cache_lookup's copies end in a NUL */
	CU_ASSERT_EQUAL(message.size, 4286);
	CU_ASSERT_EQUAL(message.modseq, 12345678901234ULL);
	CU_ASSERT_TRUE(message.structure_agrees);
	CU_ASSERT_EQUAL(message.present, CACHE_HAS(CACHE_ITEM_INTERNALDATE) | CACHE_HAS(CACHE_ITEM_ENVELOPE) |
						 CACHE_HAS(CACHE_ITEM_BODYSTRUCTURE) | CACHE_HAS(CACHE_ITEM_BODY) |
						 CACHE_HAS(CACHE_ITEM_HEADER) | CACHE_HAS(CACHE_ITEM_FLAGS) |
						 CACHE_HAS(CACHE_ITEM_SIZE) | CACHE_HAS(CACHE_ITEM_MODSEQ) |
						 CACHE_HAS(CACHE_ITEM_STRUCTURE_AGREES));
	cache_message_clear(&message);
	CU_ASSERT_PTR_NULL(message.values[CACHE_ITEM_HEADER].data);
	CU_ASSERT_EQUAL(cache_set_structure_agrees(cache, mailbox.id, 7, false), 0);
	CU_ASSERT_EQUAL_FATAL(cache_lookup(cache, mailbox.id, 7, &message), 1);
	CU_ASSERT_TRUE(message.present & CACHE_HAS(CACHE_ITEM_STRUCTURE_AGREES));
	CU_ASSERT_FALSE(message.structure_agrees);
	cache_message_clear(&message);
	/* Out of range and UID 0: refused. */
	CU_ASSERT_EQUAL(cache_store_flags(cache, mailbox.id, 7, "", 1ULL << 63), -1);
	CU_ASSERT_EQUAL(cache_store_item(cache, mailbox.id, 0, CACHE_ITEM_ENVELOPE, "x", 1), -1);
	cache_unref(&cache);
	teardown();
}

/* Appends uid's stored PREVIEW to a string; "-" when none, "!" on error. */
static const char *preview_of(struct cache *cache, int64_t mailbox_id, uint32_t uid)
{
	static char text[256];
	struct evbuffer *out = evbuffer_new();
	int found = cache_lookup_preview(cache, mailbox_id, uid, out);
	size_t len = evbuffer_get_length(out);

	snprintf(text, sizeof(text), "%s", found < 0 ? "!" : found == 0 ? "-" : found == 2 ? "damaged" : "");
	if (found == 1 && len < sizeof(text))
		evbuffer_remove(out, text, len), text[len] = '\0';
	evbuffer_free(out);
	return text;
}

/* The upstream's PREVIEW: kept as written, with its message's row (made
   when missing), gone with it, and a damaged one is dropped, not served. */
static void test_previews(void)
{
	struct cache *cache;
	struct cache_mailbox mailbox;
	uint32_t uid = 8;

	setup();
	cache = open_account("up", "alice");
	mailbox = open_mailbox(cache, "INBOX", 1);
	CU_ASSERT_STRING_EQUAL(preview_of(cache, mailbox.id, 7), "-");
	CU_ASSERT_EQUAL(cache_store_preview(cache, mailbox.id, 7, "\"Hi \\\"you\\\"\"", 13), 0);
	CU_ASSERT_EQUAL(cache_store_preview(cache, mailbox.id, 8, "{6}\r\ncaf\xc3\xa9!", 11), 0);
	CU_ASSERT_EQUAL(query(cache, "SELECT count(*) FROM messages WHERE mailbox_id = 1"), 2);
	cache_unref(&cache);
	cache = open_account("up", "alice");
	CU_ASSERT_STRING_EQUAL(preview_of(cache, mailbox.id, 7), "\"Hi \\\"you\\\"\"");
	CU_ASSERT_STRING_EQUAL(preview_of(cache, mailbox.id, 8), "{6}\r\ncaf\xc3\xa9!");
	/* a new value replaces the old */
	CU_ASSERT_EQUAL(cache_store_preview(cache, mailbox.id, 7, "\"Hi\"", 4), 0);
	CU_ASSERT_STRING_EQUAL(preview_of(cache, mailbox.id, 7), "\"Hi\"");
	/* the message goes: its preview with it */
	CU_ASSERT_EQUAL(cache_mailbox_remove_uids(cache, mailbox.id, &uid, 1), 0);
	CU_ASSERT_STRING_EQUAL(preview_of(cache, mailbox.id, 8), "-");
	CU_ASSERT_EQUAL(query(cache, "SELECT count(*) FROM previews"), 1);
	/* damaged: not served, logged, dropped */
	CU_ASSERT_EQUAL(sqlite3_exec(cache_sqlite_handle(cache), "UPDATE previews SET value = X'2248692122'", NULL, NULL,
				     NULL), SQLITE_OK);
	CU_ASSERT_STRING_EQUAL(preview_of(cache, mailbox.id, 7), "damaged");
	CU_ASSERT_TRUE(logged("the stored PREVIEW of UID 7 fails its checksum"));
	CU_ASSERT_STRING_EQUAL(preview_of(cache, mailbox.id, 7), "-");
	CU_ASSERT_EQUAL(query(cache, "SELECT count(*) FROM previews"), 0);
	/* a UIDVALIDITY change drops the mailbox's previews too */
	CU_ASSERT_EQUAL(cache_store_preview(cache, mailbox.id, 7, "\"Hi\"", 4), 0);
	mailbox = open_mailbox(cache, "INBOX", 2);
	CU_ASSERT_EQUAL(query(cache, "SELECT count(*) FROM previews"), 0);
	CU_ASSERT_EQUAL(cache_store_preview(cache, mailbox.id, 0, "\"x\"", 3), -1);
	cache_unref(&cache);
	teardown();
}

static void test_absent_is_not_empty(void)
{
	struct cache *cache;
	struct cache_mailbox mailbox;
	struct cache_message message;

	setup();
	cache = open_account("up", "alice");
	mailbox = open_mailbox(cache, "INBOX", 1);
	CU_ASSERT_EQUAL(cache_lookup(cache, mailbox.id, 5, &message), 0);
	CU_ASSERT_EQUAL(message.present, 0);
	/* An empty header block and no flags are values. */
	CU_ASSERT_EQUAL(cache_store_item(cache, mailbox.id, 5, CACHE_ITEM_HEADER, "", 0), 0);
	CU_ASSERT_EQUAL(cache_store_flags(cache, mailbox.id, 5, "", 0), 0);
	CU_ASSERT_EQUAL_FATAL(cache_lookup(cache, mailbox.id, 5, &message), 1);
	CU_ASSERT_EQUAL(message.present, CACHE_HAS(CACHE_ITEM_HEADER) | CACHE_HAS(CACHE_ITEM_FLAGS));
	CU_ASSERT_TRUE(value_is(&message, CACHE_ITEM_HEADER, "", 0));
	CU_ASSERT_TRUE(value_is(&message, CACHE_ITEM_FLAGS, "", 0));
	CU_ASSERT_PTR_NULL(message.values[CACHE_ITEM_ENVELOPE].data);
	CU_ASSERT_EQUAL(query(cache, "SELECT count(*) FROM messages WHERE envelope IS NULL AND size IS NULL"
				     " AND modseq IS NULL AND structure_agrees IS NULL AND header = x''"), 1);
	cache_message_clear(&message);
	/* NULL forgets a value. */
	CU_ASSERT_EQUAL(cache_store_item(cache, mailbox.id, 5, CACHE_ITEM_HEADER, NULL, 0), 0);
	CU_ASSERT_EQUAL(cache_store_flags(cache, mailbox.id, 5, NULL, 0), 0);
	CU_ASSERT_EQUAL_FATAL(cache_lookup(cache, mailbox.id, 5, &message), 1);
	CU_ASSERT_EQUAL(message.present, 0);
	cache_message_clear(&message);
	cache_unref(&cache);
	teardown();
}

static void test_flags_and_modseq(void)
{
	struct cache *cache;
	struct cache_mailbox mailbox;
	struct cache_message message;

	setup();
	cache = open_account("up", "alice");
	mailbox = open_mailbox(cache, "INBOX", 1);
	store_text(cache, mailbox.id, 3, CACHE_ITEM_ENVELOPE, "(NIL)");
	CU_ASSERT_EQUAL(cache_store_flags(cache, mailbox.id, 3, "\\Seen", 5), 0);
	CU_ASSERT_EQUAL(cache_store_flags(cache, mailbox.id, 3, "\\Seen \\Answered", 7), 0);
	CU_ASSERT_EQUAL_FATAL(cache_lookup(cache, mailbox.id, 3, &message), 1);
	CU_ASSERT_TRUE(value_is(&message, CACHE_ITEM_FLAGS, "\\Seen \\Answered", 15));
	CU_ASSERT_EQUAL(message.modseq, 7);
	CU_ASSERT_TRUE(value_is(&message, CACHE_ITEM_ENVELOPE, "(NIL)", 5)); /* other values stay */
	cache_message_clear(&message);
	/* \Recent is one session's: never stored. */
	CU_ASSERT_EQUAL(cache_store_flags(cache, mailbox.id, 3, "\\Recent  \\Seen \\RECENT $Recent \\Recently", 8), 0);
	CU_ASSERT_EQUAL_FATAL(cache_lookup(cache, mailbox.id, 3, &message), 1);
	CU_ASSERT_TRUE(value_is(&message, CACHE_ITEM_FLAGS, "\\Seen $Recent \\Recently", 23));
	cache_message_clear(&message);
	CU_ASSERT_EQUAL(cache_store_flags(cache, mailbox.id, 3, "\\Recent", 9), 0);
	CU_ASSERT_EQUAL_FATAL(cache_lookup(cache, mailbox.id, 3, &message), 1);
	CU_ASSERT_TRUE(value_is(&message, CACHE_ITEM_FLAGS, "", 0));
	CU_ASSERT_EQUAL(message.modseq, 9);
	cache_message_clear(&message);
	/* Flags without a MODSEQ, the ones stored (a client that enabled
	   nothing fetched them): the row stays as it was, MODSEQ included. */
	CU_ASSERT_EQUAL(cache_store_flags(cache, mailbox.id, 3, "", 0), 0);
	CU_ASSERT_EQUAL_FATAL(cache_lookup(cache, mailbox.id, 3, &message), 1);
	CU_ASSERT_TRUE(value_is(&message, CACHE_ITEM_FLAGS, "", 0));
	CU_ASSERT_EQUAL(message.modseq, 9);
	cache_message_clear(&message);
	/* Other flags without a MODSEQ: the old MODSEQ went with the old flags. */
	CU_ASSERT_EQUAL(cache_store_flags(cache, mailbox.id, 3, "$A", 0), 0);
	CU_ASSERT_EQUAL_FATAL(cache_lookup(cache, mailbox.id, 3, &message), 1);
	CU_ASSERT_TRUE(value_is(&message, CACHE_ITEM_FLAGS, "$A", 2));
	CU_ASSERT_FALSE(message.present & CACHE_HAS(CACHE_ITEM_MODSEQ));
	CU_ASSERT_EQUAL(message.modseq, 0);
	cache_message_clear(&message);
	/* and the same flags again bring none back */
	CU_ASSERT_EQUAL(cache_store_flags(cache, mailbox.id, 3, "$A", 0), 0);
	CU_ASSERT_EQUAL_FATAL(cache_lookup(cache, mailbox.id, 3, &message), 1);
	CU_ASSERT_FALSE(message.present & CACHE_HAS(CACHE_ITEM_MODSEQ));
	CU_ASSERT_EQUAL(message.modseq, 0);
	cache_message_clear(&message);
	cache_unref(&cache);
	teardown();
}

/* What cache_lookup_flags reports, as "uid(flags):modseq ...". */
static void describe_flags(uint32_t uid, const char *flags, size_t len, uint64_t modseq, void *context)
{
	char *text = context;
	size_t used = strlen(text);

	snprintf(text + used, 512 - used, "%s%u(%.*s):%llu", used > 0 ? " " : "", uid, (int)len, flags,
		 (unsigned long long)modseq);
}

static void test_flag_ranges(void)
{
	struct cache *cache;
	struct cache_mailbox mailbox, other;
	struct cache_message message;
	char text[512] = "";

	setup();
	cache = open_account("up", "alice");
	mailbox = open_mailbox(cache, "INBOX", 1);
	other = open_mailbox(cache, "Other", 1);
	CU_ASSERT_EQUAL(cache_store_flags(cache, mailbox.id, 3, "\\Seen", 5), 0);
	CU_ASSERT_EQUAL(cache_store_flags(cache, mailbox.id, 4, "", 0), 0);
	store_text(cache, mailbox.id, 5, CACHE_ITEM_ENVELOPE, "(NIL)"); /* a row without flags */
	CU_ASSERT_EQUAL(cache_store_flags(cache, mailbox.id, 9, "\\Flagged $Junk", 12), 0);
	CU_ASSERT_EQUAL(cache_store_flags(cache, other.id, 4, "\\Draft", 1), 0);
	CU_ASSERT_EQUAL(cache_lookup_flags(cache, mailbox.id, 1, 100, describe_flags, text), 3);
	CU_ASSERT_STRING_EQUAL(text, "3(\\Seen):5 4():0 9(\\Flagged $Junk):12");
	text[0] = '\0';
	CU_ASSERT_EQUAL(cache_lookup_flags(cache, mailbox.id, 4, 8, describe_flags, text), 1);
	CU_ASSERT_STRING_EQUAL(text, "4():0");
	/* a STORE went upstream: 3 to 5 are not known any more; the rest stays */
	CU_ASSERT_EQUAL(cache_forget_flags(cache, mailbox.id, 3, 5), 0);
	text[0] = '\0';
	CU_ASSERT_EQUAL(cache_lookup_flags(cache, mailbox.id, 1, 100, describe_flags, text), 1);
	CU_ASSERT_STRING_EQUAL(text, "9(\\Flagged $Junk):12");
	CU_ASSERT_EQUAL_FATAL(cache_lookup(cache, mailbox.id, 3, &message), 1);
	CU_ASSERT_FALSE(message.present & CACHE_HAS(CACHE_ITEM_FLAGS));
	CU_ASSERT_FALSE(message.present & CACHE_HAS(CACHE_ITEM_MODSEQ));
	cache_message_clear(&message);
	text[0] = '\0';
	CU_ASSERT_EQUAL(cache_lookup_flags(cache, other.id, 1, 100, describe_flags, text), 1);
	CU_ASSERT_STRING_EQUAL(text, "4(\\Draft):1");
	cache_unref(&cache);
	teardown();
}

/* Whether another connection to the store (another process) sees uid. */
static bool seen_from_outside(const char *path, uint32_t uid)
{
	sqlite3 *db;
	sqlite3_stmt *stmt;
	bool seen;

	CU_ASSERT_EQUAL_FATAL(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	CU_ASSERT_EQUAL_FATAL(sqlite3_prepare_v2(db, "SELECT 1 FROM messages WHERE uid = ?1", -1, &stmt, NULL),
			      SQLITE_OK);
	sqlite3_bind_int(stmt, 1, (int)uid);
	seen = sqlite3_step(stmt) == SQLITE_ROW;
	sqlite3_finalize(stmt);
	sqlite3_close(db);
	return seen;
}

static bool has_row(struct cache *cache, int64_t mailbox_id, uint32_t uid)
{
	struct cache_message message;
	int found = cache_lookup(cache, mailbox_id, uid, &message);

	cache_message_clear(&message);
	return found == 1;
}

/* cache_store_fetched of uid: an ENVELOPE of envelope, and flags (may be NULL). */
static int store_fetched(struct cache *cache, int64_t mailbox_id, uint32_t uid, const char *envelope,
			 const char *flags)
{
	struct cache_fetched fetched = { .flags = flags };

	fetched.values[CACHE_ITEM_ENVELOPE] = (struct cache_value){ (unsigned char *)envelope, strlen(envelope) };
	return cache_store_fetched(cache, mailbox_id, uid, &fetched);
}

/* alice's store on base's event loop (held rows and batches need one),
   its file's path and INBOX (UIDVALIDITY 1), after setup(). */
static struct cache *open_on_loop(struct cache_settings *s, struct event_base *base, char **path_r,
				  struct cache_mailbox *inbox_r)
{
	struct cache *cache;
	const char *error;

	s->base = base;
	cache = cache_open(s, "up", "alice", &error);
	CU_ASSERT_PTR_NOT_NULL_FATAL(cache);
	*path_r = account_path("up", "alice");
	*inbox_r = open_mailbox(cache, "INBOX", 1);
	return cache;
}

static void test_held_rows(void)
{
	struct event_base *base = event_base_new();
	struct cache_settings s = settings();
	struct cache_message message;
	struct cache_mailbox mailbox;
	struct cache *cache;
	char envelope[1024];
	char *path;
	uint32_t uid;

	setup();
	cache = open_on_loop(&s, base, &path, &mailbox);

	/* Held: not in the file yet, but every read of this process sees it. */
	CU_ASSERT_EQUAL(store_fetched(cache, mailbox.id, 1, "(env)", "\\Seen \\Recent"), 0);
	CU_ASSERT_FALSE(seen_from_outside(path, 1));
	CU_ASSERT_EQUAL(cache_lookup(cache, mailbox.id, 1, &message), 1);
	CU_ASSERT_TRUE(value_is(&message, CACHE_ITEM_ENVELOPE, "(env)", 5));
	CU_ASSERT_TRUE(value_is(&message, CACHE_ITEM_FLAGS, "\\Seen", 5));
	cache_message_clear(&message);
	CU_ASSERT_TRUE(seen_from_outside(path, 1));

	/* A PREVIEW is held with its row, and a read of it sees it. */
	CU_ASSERT_EQUAL(cache_store_preview(cache, mailbox.id, 6, "\"held\"", 6), 0);
	CU_ASSERT_FALSE(seen_from_outside(path, 6));
	CU_ASSERT_STRING_EQUAL(preview_of(cache, mailbox.id, 6), "\"held\"");
	CU_ASSERT_TRUE(seen_from_outside(path, 6));

	/* A later write lands after it: held flags never overwrite newer ones. */
	CU_ASSERT_EQUAL(store_fetched(cache, mailbox.id, 2, "(env)", "\\Seen"), 0);
	CU_ASSERT_EQUAL(cache_store_flags(cache, mailbox.id, 2, "\\Flagged", 0), 0);
	CU_ASSERT_EQUAL(cache_lookup(cache, mailbox.id, 2, &message), 1);
	CU_ASSERT_TRUE(value_is(&message, CACHE_ITEM_FLAGS, "\\Flagged", 8));
	cache_message_clear(&message);
	/* ... and an expunge drops it. */
	CU_ASSERT_EQUAL(store_fetched(cache, mailbox.id, 3, "(env)", NULL), 0);
	uid = 3;
	CU_ASSERT_EQUAL(cache_mailbox_remove_uids(cache, mailbox.id, &uid, 1), 0);
	CU_ASSERT_FALSE(seen_from_outside(path, 3));
	CU_ASSERT_FALSE(has_row(cache, mailbox.id, 3));

	/* Written by the timer, CACHE_PENDING_DELAY_MS later. */
	CU_ASSERT_EQUAL(store_fetched(cache, mailbox.id, 4, "(env)", NULL), 0);
	CU_ASSERT_FALSE(seen_from_outside(path, 4));
	for (int turns = 0; turns < 10 && !seen_from_outside(path, 4); turns++) /* the index's look may come first */
		CU_ASSERT_EQUAL(event_base_loop(base, EVLOOP_ONCE), 0);
	CU_ASSERT_TRUE(seen_from_outside(path, 4));

	/* Written at once when CACHE_PENDING_MAX bytes are held. */
	memset(envelope, 'e', sizeof(envelope) - 1);
	envelope[sizeof(envelope) - 1] = '\0';
	for (uid = 100; uid < 100 + CACHE_PENDING_MAX / (sizeof(envelope) - 1) + 1; uid++)
		CU_ASSERT_EQUAL(store_fetched(cache, mailbox.id, uid, envelope, NULL), 0);
	CU_ASSERT_TRUE(seen_from_outside(path, 100));

	/* And at the last unref. */
	CU_ASSERT_EQUAL(store_fetched(cache, mailbox.id, 5, "(env)", NULL), 0);
	CU_ASSERT_FALSE(seen_from_outside(path, 5));
	cache_unref(&cache);
	CU_ASSERT_TRUE(seen_from_outside(path, 5));
	event_base_free(base);
	free(path);
	teardown();
}

static void size_seen(uint32_t uid, uint64_t size, void *context)
{
	uint64_t *sizes = context;

	sizes[uid] = size;
	sizes[0]++;
}

static double seconds_since(const struct timespec *start)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - start->tv_sec) + (double)(now.tv_nsec - start->tv_nsec) / 1e9;
}

/* cache_batch_end_soon: the transaction outlives the batch until its
   timer, another session's batch, an own write or the last unref commits
   it; its owner's next batch goes on in it, and a rollback there takes it
   too. */
static void test_batch_held(void)
{
	struct timespec began;
	struct event_base *base = event_base_new();
	struct cache_settings s = settings();
	struct cache_mailbox mailbox;
	struct cache *cache;
	struct cache_body_writer *writer;
	unsigned char *body;
	uint64_t sizes[2] = { 0 };
	char *path;
	int owner, other; /* two sessions */

	setup();
	cache = open_on_loop(&s, base, &path, &mailbox);

	cache_batch_begin_for(cache, &owner);
	CU_ASSERT_EQUAL(cache_store_size(cache, mailbox.id, 1, 10), 0);
	CU_ASSERT_EQUAL(cache_batch_end_soon(cache), 0);
	CU_ASSERT_FALSE(seen_from_outside(path, 1)); /* held */
	CU_ASSERT_EQUAL(cache_lookup_sizes(cache, mailbox.id, 1, 1, size_seen, sizes), 1); /* this process sees it */
	CU_ASSERT_EQUAL(sizes[1], 10);
	for (int turn = 0; turn < 10 && !seen_from_outside(path, 1); turn++)
		CU_ASSERT_EQUAL(event_base_loop(base, EVLOOP_ONCE), 0); /* the index's timer may come first */
	CU_ASSERT_TRUE(seen_from_outside(path, 1)); /* committed by the timer */

	cache_batch_begin_for(cache, &owner);
	CU_ASSERT_EQUAL(cache_store_size(cache, mailbox.id, 2, 20), 0);
	CU_ASSERT_EQUAL(cache_batch_end_soon(cache), 0);
	cache_batch_begin_for(cache, &owner); /* the next batch goes on in the held transaction */
	CU_ASSERT_EQUAL(cache_store_size(cache, mailbox.id, 3, 30), 0);
	CU_ASSERT_EQUAL(cache_batch_end_soon(cache), 0);
	CU_ASSERT_FALSE(seen_from_outside(path, 2));
	cache_batch_begin(cache);
	CU_ASSERT_EQUAL(cache_batch_end(cache), 0); /* a batch of no session's commits what is held first */
	CU_ASSERT_TRUE(seen_from_outside(path, 2));
	CU_ASSERT_TRUE(seen_from_outside(path, 3));

	cache_batch_begin_for(cache, &owner);
	CU_ASSERT_EQUAL(cache_store_size(cache, mailbox.id, 8, 80), 0);
	CU_ASSERT_EQUAL(cache_batch_end_soon(cache), 0);
	CU_ASSERT_FALSE(seen_from_outside(path, 8));
	cache_batch_begin_for(cache, &other); /* another session's batch never joins it: it commits first */
	CU_ASSERT_TRUE(seen_from_outside(path, 8));
	cache_batch_rollback(cache); /* and its rollback takes only its own */
	CU_ASSERT_EQUAL(query(cache, "SELECT count(*) FROM messages WHERE uid = 8"), 1);

	cache_batch_begin_for(cache, &owner);
	CU_ASSERT_EQUAL(cache_store_size(cache, mailbox.id, 4, 40), 0);
	CU_ASSERT_EQUAL(cache_batch_end_soon(cache), 0);
	open_mailbox(cache, "Other", 1); /* a write of its own (cache_op_begin) commits it first */
	CU_ASSERT_TRUE(seen_from_outside(path, 4));

	cache_batch_begin_for(cache, &owner);
	CU_ASSERT_EQUAL(cache_store_size(cache, mailbox.id, 5, 50), 0);
	CU_ASSERT_EQUAL(cache_batch_end_soon(cache), 0);
	cache_batch_begin_for(cache, &owner);
	cache_batch_rollback(cache); /* takes the held rows with it */
	CU_ASSERT_EQUAL(query(cache, "SELECT count(*) FROM messages WHERE uid = 5"), 0);

	/* CACHE_BATCH_HOLD_BYTES of bodies commit at once. */
	body = calloc(1, CACHE_BATCH_HOLD_BYTES);
	CU_ASSERT_PTR_NOT_NULL_FATAL(body);
	clock_gettime(CLOCK_MONOTONIC, &began);
	cache_batch_begin_for(cache, &owner);
	writer = cache_body_begin(cache, mailbox.id, 7, CACHE_BATCH_HOLD_BYTES, NULL);
	CU_ASSERT_PTR_NOT_NULL_FATAL(writer);
	CU_ASSERT_EQUAL(cache_body_write(writer, body, CACHE_BATCH_HOLD_BYTES - 1), 0);
	CU_ASSERT_EQUAL(cache_batch_end_soon(cache), 0);
	/* less than that: held, unless the writing alone outlasted the hold
	   (ThreadSanitizer on a busy machine), which commits it by time */
	if (seconds_since(&began) * 1000 < CACHE_BATCH_HOLD_MS)
		CU_ASSERT_FALSE(seen_from_outside(path, 7));
	cache_batch_begin_for(cache, &owner);
	CU_ASSERT_EQUAL(cache_body_write(writer, body, 1), 0);
	CU_ASSERT_EQUAL(cache_body_finish(&writer), 0);
	CU_ASSERT_EQUAL(cache_batch_end_soon(cache), 0);
	CU_ASSERT_TRUE(seen_from_outside(path, 7));
	free(body);

	cache_batch_begin_for(cache, &owner);
	CU_ASSERT_EQUAL(cache_store_size(cache, mailbox.id, 6, 60), 0);
	CU_ASSERT_EQUAL(cache_batch_end_soon(cache), 0);
	cache_unref(&cache); /* the last unref commits it */
	CU_ASSERT_TRUE(seen_from_outside(path, 6));
	event_base_free(base);
	free(path);
	teardown();
}

/* cache_lookup_sizes reads the sizes of a range from their own index. */
static void test_lookup_sizes(void)
{
	struct cache *cache;
	struct cache_mailbox mailbox;
	uint64_t sizes[10] = { 0 };

	setup();
	cache = open_account("up", "alice");
	mailbox = open_mailbox(cache, "INBOX", 1);
	CU_ASSERT_EQUAL(cache_store_size(cache, mailbox.id, 2, 200), 0);
	CU_ASSERT_EQUAL(cache_store_size(cache, mailbox.id, 5, 500), 0);
	CU_ASSERT_EQUAL(cache_store_size(cache, mailbox.id, 9, 900), 0);
	CU_ASSERT_EQUAL(store_fetched(cache, mailbox.id, 3, "(env)", NULL), 0); /* no size */
	CU_ASSERT_EQUAL(cache_lookup_sizes(cache, mailbox.id, 1, 8, size_seen, sizes), 2);
	CU_ASSERT_EQUAL(sizes[0], 2);
	CU_ASSERT_EQUAL(sizes[2], 200);
	CU_ASSERT_EQUAL(sizes[5], 500);
	CU_ASSERT_EQUAL(sizes[9], 0); /* past the range */
	CU_ASSERT_EQUAL(query(cache, "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = 'messages_size'"),
			1);
	cache_unref(&cache);
	teardown();
}

/* Whether a line of the query plan sql holds words. */
static bool plan_says(struct cache *cache, const char *sql, const char *words)
{
	sqlite3_stmt *stmt;
	bool found = false;

	CU_ASSERT_EQUAL_FATAL(sqlite3_prepare_v2(cache_sqlite_handle(cache), sql, -1, &stmt, NULL), SQLITE_OK);
	while (sqlite3_step(stmt) == SQLITE_ROW)
		found |= sqlite3_column_text(stmt, 3) != NULL && strstr((const char *)sqlite3_column_text(stmt, 3), words);
	sqlite3_finalize(stmt);
	return found;
}

/* cache_lookup_internaldates's and cache_lookup_headers's callback: "uid=value;" appended to a text. */
static void internaldate_seen(uint32_t uid, const unsigned char *data, size_t size, void *context)
{
	char *text = context;
	size_t at = strlen(text);

	snprintf(text + at, 256 - at, "%u=%.*s;", (unsigned int)uid, (int)size, (const char *)data);
}

/* INTERNALDATEs from their own index, in UID order, never a damaged one. */
static void test_lookup_internaldates(void)
{
	struct cache *cache;
	struct cache_mailbox mailbox;
	char text[256] = "";

	setup();
	cache = open_account("up", "alice");
	mailbox = open_mailbox(cache, "INBOX", 1);
	store_text(cache, mailbox.id, 7, CACHE_ITEM_INTERNALDATE, "\"07-Jul-2007 07:07:07 +0000\"");
	store_text(cache, mailbox.id, 2, CACHE_ITEM_INTERNALDATE, "\" 2-Feb-2002 02:02:02 -0200\"");
	store_text(cache, mailbox.id, 4, CACHE_ITEM_INTERNALDATE, "\"04-Apr-2004 04:04:04 +0400\"");
	CU_ASSERT_EQUAL(store_fetched(cache, mailbox.id, 3, "(env)", NULL), 0); /* no INTERNALDATE */
	CU_ASSERT_EQUAL(store_fetched(cache, mailbox.id, 9, "(env)", NULL), 0);
	store_text(cache, mailbox.id, 9, CACHE_ITEM_INTERNALDATE, "\"09-Sep-2009 09:09:09 +0000\""); /* past the range */
	CU_ASSERT_EQUAL(cache_lookup_internaldates(cache, mailbox.id, 1, 8, internaldate_seen, text), 3);
	CU_ASSERT_STRING_EQUAL(text, "2=\" 2-Feb-2002 02:02:02 -0200\";4=\"04-Apr-2004 04:04:04 +0400\";"
				     "7=\"07-Jul-2007 07:07:07 +0000\";");
	/* a value its checksum does not vouch for is left out */
	CU_ASSERT_EQUAL(sqlite3_exec(cache_sqlite_handle(cache),
				     "UPDATE messages SET internaldate = '\"04-Apr-2004 04:04:05 +0400\"' WHERE uid = 4", NULL,
				     NULL, NULL), SQLITE_OK);
	text[0] = '\0';
	CU_ASSERT_EQUAL(cache_lookup_internaldates(cache, mailbox.id, 1, 8, internaldate_seen, text), 2);
	CU_ASSERT_STRING_EQUAL(text, "2=\" 2-Feb-2002 02:02:02 -0200\";7=\"07-Jul-2007 07:07:07 +0000\";");
	/* read from the index alone */
	CU_ASSERT_TRUE(plan_says(cache, "EXPLAIN QUERY PLAN SELECT uid, internaldate, internaldate_sum FROM messages "
				  "INDEXED BY messages_internaldate WHERE mailbox_id = 1 AND uid BETWEEN 1 AND 8",
				  "COVERING INDEX messages_internaldate"));
	cache_unref(&cache);
	teardown();
}

static void store_text_body(struct cache *cache, int64_t mailbox_id, uint32_t uid, size_t size);

/* Header blocks by a range scan of the rows, in UID order, never a
   damaged one; a message also stored whole gives its row's block. */
static void test_lookup_headers(void)
{
	struct cache *cache;
	struct cache_mailbox mailbox;
	char text[256] = "";

	setup();
	cache = open_account("up", "alice");
	mailbox = open_mailbox(cache, "INBOX", 1);
	store_text(cache, mailbox.id, 6, CACHE_ITEM_HEADER, "Subject: six\r\n\r\n");
	store_text(cache, mailbox.id, 2, CACHE_ITEM_HEADER, "From: two\r\n\r\n");
	store_text(cache, mailbox.id, 4, CACHE_ITEM_HEADER, "To: four\r\n\r\n");
	store_text_body(cache, mailbox.id, 4, 300);
	CU_ASSERT_EQUAL(store_fetched(cache, mailbox.id, 3, "(env)", NULL), 0); /* no header block */
	store_text(cache, mailbox.id, 9, CACHE_ITEM_HEADER, "Subject: nine\r\n\r\n"); /* past the range */
	store_text(cache, mailbox.id, 5, CACHE_ITEM_HEADER, ""); /* a message without a header: stored, empty */
	CU_ASSERT_EQUAL(cache_lookup_headers(cache, mailbox.id, 1, 8, internaldate_seen, text), 4);
	CU_ASSERT_STRING_EQUAL(text, "2=From: two\r\n\r\n;4=To: four\r\n\r\n;5=;6=Subject: six\r\n\r\n;");
	/* a value its checksum does not vouch for is left out, and dropped:
	   the next fill stores it anew */
	CU_ASSERT_EQUAL(sqlite3_exec(cache_sqlite_handle(cache),
				     "UPDATE messages SET header = 'To: fours\r\n\r\n' WHERE uid = 4", NULL, NULL, NULL),
			SQLITE_OK);
	text[0] = '\0';
	CU_ASSERT_EQUAL(cache_lookup_headers(cache, mailbox.id, 1, 8, internaldate_seen, text), 3);
	CU_ASSERT_STRING_EQUAL(text, "2=From: two\r\n\r\n;5=;6=Subject: six\r\n\r\n;");
	CU_ASSERT_EQUAL(query(cache, "SELECT count(*) FROM messages WHERE uid = 4 AND header IS NULL"), 1);
	/* a range of the table's own key, not an index and a row per entry */
	CU_ASSERT_TRUE(plan_says(cache, "EXPLAIN QUERY PLAN SELECT uid, header, header_sum FROM messages "
				  "WHERE mailbox_id = 1 AND uid BETWEEN 1 AND 8 AND header IS NOT NULL ORDER BY uid",
				  "USING PRIMARY KEY"));
	cache_unref(&cache);
	teardown();
}

static void fixed_seen(uint32_t uid, void *context)
{
	bool *seen = context;

	seen[uid] = true;
}

typedef long keys_lookup_fn(struct cache *cache, int64_t mailbox_id, uint32_t first, uint32_t last,
			    cache_fixed_fn *callback, void *context);

/* Which of UIDs 1..9 lookup (a table of keys) lists, as "1,4" ("": none). */
static const char *keys_listed(keys_lookup_fn *lookup, struct cache *cache, int64_t mailbox_id)
{
	static char text[32];
	bool seen[10] = { false };
	size_t at = 0;

	CU_ASSERT(lookup(cache, mailbox_id, 1, 9, fixed_seen, seen) >= 0);
	text[0] = '\0';
	for (unsigned int uid = 1; uid <= 9; uid++) {
		if (seen[uid])
			at += (size_t)snprintf(text + at, sizeof(text) - at, "%s%u", at > 0 ? "," : "", uid);
	}
	return text;
}

static const char *fixed_listed(struct cache *cache, int64_t mailbox_id)
{
	return keys_listed(cache_lookup_fixed, cache, mailbox_id);
}

static const char *plain_headers_listed(struct cache *cache, int64_t mailbox_id)
{
	return keys_listed(cache_lookup_plain_headers, cache, mailbox_id);
}

/* cache_store_fetched of all four fixed items of uid, or of those in mask
   (1 INTERNALDATE, 2 ENVELOPE, 4 BODYSTRUCTURE, 8 RFC822.SIZE). */
static int store_fixed(struct cache *cache, int64_t mailbox_id, uint32_t uid, unsigned int mask)
{
	struct cache_fetched fetched = { .has_size = (mask & 8) != 0, .size = 100 + uid };
	static const char *const texts[] = { "\"01-Jan-2020 00:00:00 +0000\"", "(env)", "(\"text\" \"plain\")" };

	for (unsigned int item = 0; item < 3; item++) {
		if (mask & (1u << item))
			fetched.values[item] = (struct cache_value){ (unsigned char *)texts[item], strlen(texts[item]) };
	}
	return cache_store_fetched(cache, mailbox_id, uid, &fetched);
}

/* messages_fixed lists a message exactly while its row has all four of
   INTERNALDATE, ENVELOPE, BODYSTRUCTURE and RFC822.SIZE, whichever write
   made or unmade it, and never one whose row went. */
static void test_lookup_fixed(void)
{
	struct cache *cache;
	struct cache_mailbox mailbox, other;
	const uint32_t gone[] = { 4 };
	bool reset = false;

	setup();
	cache = open_account("up", "alice");
	mailbox = open_mailbox(cache, "INBOX", 1);
	other = open_mailbox(cache, "Other", 1);
	CU_ASSERT_EQUAL(store_fixed(cache, mailbox.id, 1, 15), 0);             /* a line with all four */
	CU_ASSERT_EQUAL(store_fixed(cache, mailbox.id, 2, 7), 0);              /* no size */
	CU_ASSERT_EQUAL(store_fixed(cache, mailbox.id, 3, 8), 0);              /* only the size ... */
	CU_ASSERT_EQUAL(store_fixed(cache, mailbox.id, 3, 3), 0);              /* ... then two more */
	CU_ASSERT_EQUAL(store_fixed(cache, mailbox.id, 4, 15), 0);
	CU_ASSERT_EQUAL(store_fixed(cache, other.id, 5, 15), 0);               /* another mailbox's */
	CU_ASSERT_STRING_EQUAL(fixed_listed(cache, mailbox.id), "1,4");
	CU_ASSERT_EQUAL(cache_store_size(cache, mailbox.id, 2, 20), 0);        /* the fourth, by itself */
	store_text(cache, mailbox.id, 3, CACHE_ITEM_BODYSTRUCTURE, "(\"text\")"); /* the last of 3's, by itself */
	CU_ASSERT_STRING_EQUAL(fixed_listed(cache, mailbox.id), "1,2,3,4");
	/* a value dropped (as a damaged one is), a row removed */
	CU_ASSERT_EQUAL(cache_store_item(cache, mailbox.id, 1, CACHE_ITEM_ENVELOPE, NULL, 0), 0);
	CU_ASSERT_EQUAL(cache_mailbox_remove_uids(cache, mailbox.id, gone, 1), 0);
	CU_ASSERT_STRING_EQUAL(fixed_listed(cache, mailbox.id), "2,3");
	CU_ASSERT_EQUAL(store_fixed(cache, mailbox.id, 1, 2), 0); /* back: the row has all four again */
	CU_ASSERT_STRING_EQUAL(fixed_listed(cache, mailbox.id), "1,2,3");
	CU_ASSERT_STRING_EQUAL(fixed_listed(cache, other.id), "5");
	/* a UIDVALIDITY change drops the mailbox's rows, and their entries */
	CU_ASSERT_EQUAL(cache_mailbox_open(cache, "INBOX", 2, &mailbox, &reset), 0);
	CU_ASSERT_TRUE(reset);
	CU_ASSERT_EQUAL(query(cache, "SELECT count(*) FROM messages_fixed"), 1);
	cache_unref(&cache);
	teardown();
}

/* messages_plain_header lists a message exactly while its stored header
   block is plain, whichever write stored it (a line's, held and
   written later, or an item's), and never one whose row went. */
static void test_lookup_plain_headers(void)
{
	static const char plain[] = "Subject: a\r\n folded\r\n\r\n";
	static const char bare_lf[] = "Subject: a\n\r\n";
	static const char no_blank[] = "Subject: a\r\n";
	struct cache_fetched fetched = { .values[CACHE_ITEM_HEADER] = { (unsigned char *)plain, sizeof(plain) - 1 } };
	struct cache_mailbox mailbox, other;
	const uint32_t gone[] = { 4 };
	struct cache *cache;
	bool reset = false;

	setup();
	cache = open_account("up", "alice");
	mailbox = open_mailbox(cache, "INBOX", 1);
	other = open_mailbox(cache, "Other", 1);
	CU_ASSERT_EQUAL(cache_store_item(cache, mailbox.id, 1, CACHE_ITEM_HEADER, plain, sizeof(plain) - 1), 0);
	CU_ASSERT_EQUAL(cache_store_item(cache, mailbox.id, 2, CACHE_ITEM_HEADER, bare_lf, sizeof(bare_lf) - 1), 0);
	CU_ASSERT_EQUAL(cache_store_item(cache, mailbox.id, 3, CACHE_ITEM_HEADER, no_blank, sizeof(no_blank) - 1), 0);
	CU_ASSERT_EQUAL(cache_store_fetched(cache, mailbox.id, 4, &fetched), 0);
	CU_ASSERT_EQUAL(cache_store_fetched(cache, other.id, 5, &fetched), 0);
	store_text(cache, mailbox.id, 6, CACHE_ITEM_ENVELOPE, "(env)"); /* no header block */
	CU_ASSERT_STRING_EQUAL(plain_headers_listed(cache, mailbox.id), "1,4");
	/* stored again: plain then, not plain now, and dropped (as a damaged one is) */
	CU_ASSERT_EQUAL(cache_store_item(cache, mailbox.id, 2, CACHE_ITEM_HEADER, plain, sizeof(plain) - 1), 0);
	CU_ASSERT_EQUAL(cache_store_item(cache, mailbox.id, 1, CACHE_ITEM_HEADER, bare_lf, sizeof(bare_lf) - 1), 0);
	CU_ASSERT_STRING_EQUAL(plain_headers_listed(cache, mailbox.id), "2,4");
	CU_ASSERT_EQUAL(cache_store_item(cache, mailbox.id, 2, CACHE_ITEM_HEADER, NULL, 0), 0);
	CU_ASSERT_EQUAL(cache_mailbox_remove_uids(cache, mailbox.id, gone, 1), 0);
	CU_ASSERT_STRING_EQUAL(plain_headers_listed(cache, mailbox.id), "");
	CU_ASSERT_STRING_EQUAL(plain_headers_listed(cache, other.id), "5");
	/* a UIDVALIDITY change drops the mailbox's rows, and their entries */
	CU_ASSERT_EQUAL(cache_store_item(cache, mailbox.id, 3, CACHE_ITEM_HEADER, plain, sizeof(plain) - 1), 0);
	CU_ASSERT_EQUAL(cache_mailbox_open(cache, "INBOX", 2, &mailbox, &reset), 0);
	CU_ASSERT_TRUE(reset);
	CU_ASSERT_EQUAL(query(cache, "SELECT count(*) FROM messages_plain_header"), 1);
	cache_unref(&cache);
	teardown();
}

static void test_batches(void)
{
	struct cache *cache;
	struct cache_mailbox mailbox;
	char *path;

	setup();
	cache = open_account("up", "alice");
	path = account_path("up", "alice");
	mailbox = open_mailbox(cache, "INBOX", 1);

	/* Committed at the end, and not before. */
	cache_batch_begin(cache);
	for (uint32_t uid = 1; uid <= 100; uid++)
		store_text(cache, mailbox.id, uid, CACHE_ITEM_ENVELOPE, "(NIL)");
	CU_ASSERT_TRUE(has_row(cache, mailbox.id, 100));
	CU_ASSERT_FALSE(seen_from_outside(path, 100));
	CU_ASSERT_EQUAL(cache_batch_end(cache), 0);
	CU_ASSERT_TRUE(seen_from_outside(path, 100));

	/* Rolled back: as if never written. */
	cache_batch_begin(cache);
	store_text(cache, mailbox.id, 200, CACHE_ITEM_ENVELOPE, "(NIL)");
	CU_ASSERT_EQUAL(cache_store_flags(cache, mailbox.id, 1, "\\Deleted", 0), 0);
	cache_batch_rollback(cache);
	CU_ASSERT_FALSE(has_row(cache, mailbox.id, 200));
	CU_ASSERT_EQUAL(query(cache, "SELECT count(*) FROM messages WHERE flags IS NOT NULL"), 0);

	/* Nested: only the outermost commits; an inner rollback dooms it all. */
	cache_batch_begin(cache);
	cache_batch_begin(cache);
	store_text(cache, mailbox.id, 300, CACHE_ITEM_ENVELOPE, "(NIL)");
	CU_ASSERT_EQUAL(cache_batch_end(cache), 0);
	CU_ASSERT_FALSE(seen_from_outside(path, 300));
	CU_ASSERT_EQUAL(cache_batch_end(cache), 0);
	CU_ASSERT_TRUE(seen_from_outside(path, 300));
	cache_batch_begin(cache);
	store_text(cache, mailbox.id, 301, CACHE_ITEM_ENVELOPE, "(NIL)");
	cache_batch_begin(cache);
	store_text(cache, mailbox.id, 302, CACHE_ITEM_ENVELOPE, "(NIL)");
	cache_batch_rollback(cache);
	CU_ASSERT_EQUAL(cache_store_item(cache, mailbox.id, 303, CACHE_ITEM_ENVELOPE, "x", 1), -1);
	CU_ASSERT_EQUAL(cache_batch_end(cache), -1);
	CU_ASSERT_FALSE(has_row(cache, mailbox.id, 301));
	CU_ASSERT_FALSE(has_row(cache, mailbox.id, 302));
	CU_ASSERT_FALSE(has_row(cache, mailbox.id, 303));
	CU_ASSERT_TRUE(has_row(cache, mailbox.id, 300));

	/* A body begun in a rolled-back batch can't finish; the count stays right. */
	cache_batch_begin(cache);
	{
		struct cache_body_writer *writer = cache_body_begin(cache, mailbox.id, 5, 3 * CHUNK, NULL);
		unsigned char zeros[CHUNK] = { 0 };

		CU_ASSERT_PTR_NOT_NULL_FATAL(writer);
		CU_ASSERT_EQUAL(cache_body_write(writer, zeros, CHUNK), 0);
		cache_batch_rollback(cache);
		check_body_bytes(cache);
		CU_ASSERT_EQUAL(cache_body_write(writer, zeros, CHUNK), -1);
		CU_ASSERT_EQUAL(cache_body_finish(&writer), -1);
		CU_ASSERT_PTR_NULL(writer);
	}
	CU_ASSERT_EQUAL(cache_body_bytes(cache), 0);
	check_body_bytes(cache);
	/* Pieces written in a batch that rolled back, under a body row from before it. */
	{
		struct cache_body_writer *writer = cache_body_begin(cache, mailbox.id, 6, 2 * CHUNK, NULL);
		unsigned char zeros[CHUNK] = { 0 };

		CU_ASSERT_PTR_NOT_NULL_FATAL(writer);
		cache_batch_begin(cache);
		CU_ASSERT_EQUAL(cache_body_write(writer, zeros, CHUNK), 0);
		cache_batch_rollback(cache);
		CU_ASSERT_EQUAL(cache_body_write(writer, zeros, CHUNK), 0);
		CU_ASSERT_EQUAL(cache_body_finish(&writer), -1);
		CU_ASSERT_EQUAL(cache_body_size(cache, mailbox.id, 6, &(uint64_t){ 0 }), 0);
	}
	CU_ASSERT_EQUAL(query(cache, "SELECT count(*) FROM bodies"), 0);
	check_body_bytes(cache);
	free(path);
	cache_unref(&cache);
	teardown();
}

static void test_body_sizes(void)
{
	static const uint64_t sizes[] = { 0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 5 };
	static const size_t steps[] = { 1, 7, 4096, CHUNK, CHUNK + 3, 3 * CHUNK };
	struct cache *cache;
	struct cache_mailbox mailbox;
	struct cache_message message;
	uint64_t total = 0;
	uint32_t uid = 1;

	setup();
	cache = open_account("up", "alice");
	mailbox = open_mailbox(cache, "INBOX", 1);
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		for (size_t j = 0; j < sizeof(steps) / sizeof(steps[0]); j++) {
			uint64_t size = 0;

			if (sizes[i] > 1000 && steps[j] == 1)
				continue; /* byte by byte is covered by the small ones */
			CU_ASSERT_EQUAL(store_body(cache, mailbox.id, uid, sizes[i], steps[j]), 0);
			total += sizes[i];
			CU_ASSERT_EQUAL(cache_body_size(cache, mailbox.id, uid, &size), 1);
			CU_ASSERT_EQUAL(size, sizes[i]);
			check_read(cache, mailbox.id, uid, sizes[i], 0, UINT64_MAX);
			CU_ASSERT_EQUAL(cache_lookup(cache, mailbox.id, uid, &message), 1);
			CU_ASSERT_EQUAL(message.present, CACHE_HAS(CACHE_ITEM_MESSAGE));
			CU_ASSERT_EQUAL(message.message_size, sizes[i]);
			cache_message_clear(&message);
			uid++;
		}
	}
	CU_ASSERT_EQUAL(cache_body_bytes(cache), total);
	check_body_bytes(cache);
	/* The pieces are CHUNK bytes each, the last one shorter. */
	CU_ASSERT_EQUAL(query(cache, "SELECT count(*) FROM body_chunks WHERE length(data) > " CACHE_CHUNK_TEXT), 0);
	CU_ASSERT_EQUAL(query(cache, "SELECT count(*) FROM body_chunks c JOIN bodies b USING (mailbox_id, uid)"
				     " WHERE length(data) <> min(" CACHE_CHUNK_TEXT ", b.size - c.chunk * "
				     CACHE_CHUNK_TEXT ")"), 0);
	CU_ASSERT_EQUAL(query(cache, "SELECT count(*) FROM body_chunks WHERE uid IN (1, 2, 3, 4, 5, 6)"), 0);
	cache_unref(&cache);
	/* Counted again after a restart. */
	cache = open_account("up", "alice");
	CU_ASSERT_EQUAL(cache_body_bytes(cache), total);
	check_body_bytes(cache);
	cache_unref(&cache);
	teardown();
}

static void test_body_partial_reads(void)
{
	static const uint64_t size = 3 * CHUNK + 5;
	static const uint64_t offsets[] = { 0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK - 3, 3 * CHUNK,
					    3 * CHUNK + 4, 3 * CHUNK + 5, 10 * CHUNK };
	static const uint64_t lengths[] = { 0, 1, 2, 5, CHUNK - 1, CHUNK, CHUNK + 2, 2 * CHUNK + 1, UINT64_MAX };
	struct cache *cache;
	struct cache_mailbox mailbox;
	struct evbuffer *out = evbuffer_new();

	setup();
	cache = open_account("up", "alice");
	mailbox = open_mailbox(cache, "INBOX", 1);
	CU_ASSERT_EQUAL(store_body(cache, mailbox.id, 9, size, 10000), 0);
	for (size_t i = 0; i < sizeof(offsets) / sizeof(offsets[0]); i++) {
		for (size_t j = 0; j < sizeof(lengths) / sizeof(lengths[0]); j++)
			check_read(cache, mailbox.id, 9, size, offsets[i], lengths[j]);
	}
	/* Only the pieces needed are read: with piece 0 gone, the rest still reads. */
	CU_ASSERT_EQUAL(sqlite3_exec(cache_sqlite_handle(cache), "DELETE FROM body_chunks WHERE chunk = 0", NULL, NULL,
				     NULL), SQLITE_OK);
	check_read(cache, mailbox.id, 9, size, CHUNK, 2 * CHUNK + 5);
	/* One that needs the missing piece: the body counts as missing, and goes. */
	CU_ASSERT_EQUAL(cache_body_read(cache, mailbox.id, 9, 10, 20, out), 0);
	CU_ASSERT_EQUAL(evbuffer_get_length(out), 0);
	CU_ASSERT_TRUE(logged("the stored body of UID 9 is damaged"));
	CU_ASSERT_EQUAL(cache_body_read(cache, mailbox.id, 9, CHUNK, 20, out), 0);
	CU_ASSERT_EQUAL(cache_body_bytes(cache), 0);
	check_body_bytes(cache);
	/* Never stored. */
	CU_ASSERT_EQUAL(cache_body_read(cache, mailbox.id, 10, 0, 20, out), 0);
	evbuffer_free(out);
	cache_unref(&cache);
	teardown();
}

static void test_body_use_recorded(void)
{
	struct cache *cache;
	struct cache_mailbox mailbox;
	struct evbuffer *out = evbuffer_new();

	setup();
	cache = open_account("up", "alice");
	mailbox = open_mailbox(cache, "INBOX", 1);
	CU_ASSERT_EQUAL(store_body(cache, mailbox.id, 1, 10, 10), 0);
	CU_ASSERT_EQUAL(sqlite3_exec(cache_sqlite_handle(cache), "UPDATE bodies SET last_used = 5", NULL, NULL, NULL),
			SQLITE_OK);
	CU_ASSERT_EQUAL(cache_body_read(cache, mailbox.id, 1, 0, 3, out), 1);
	CU_ASSERT(query(cache, "SELECT last_used FROM bodies") >= (int64_t)time(NULL) - 5);
	evbuffer_free(out);
	cache_unref(&cache);
	teardown();
}

static void test_body_abort_and_refusals(void)
{
	struct cache_settings s = settings();
	const char *error;
	struct cache *cache;
	struct cache_mailbox mailbox;
	struct cache_body_writer *writer;
	struct cache_body_writer *second;
	enum cache_body_refusal refusal;
	unsigned char data[3 * CHUNK] = { 0 };

	setup();
	s.body_budget = 3 * CHUNK;
	s.body_max_size = 2 * CHUNK;
	cache = cache_open(&s, "up", "alice", &error);
	CU_ASSERT_PTR_NOT_NULL_FATAL(cache);
	mailbox = open_mailbox(cache, "INBOX", 1);

	/* Aborted half-way: nothing stays. */
	writer = cache_body_begin(cache, mailbox.id, 1, 2 * CHUNK, NULL);
	CU_ASSERT_PTR_NOT_NULL_FATAL(writer);
	CU_ASSERT_EQUAL(cache_body_write(writer, data, CHUNK + 100), 0);
	CU_ASSERT_EQUAL(cache_body_bytes(cache), 2 * CHUNK);
	/* Being written: a second writer of the same body is refused. */
	CU_ASSERT_PTR_NULL(cache_body_begin(cache, mailbox.id, 1, 10, &refusal));
	CU_ASSERT_EQUAL(refusal, CACHE_BODY_REFUSED_PRESENT);
	{
		struct evbuffer *out = evbuffer_new();

		CU_ASSERT_EQUAL(cache_body_read(cache, mailbox.id, 1, 0, 10, out), 0); /* not complete: not served */
		evbuffer_free(out);
	}
	cache_body_abort(&writer);
	CU_ASSERT_PTR_NULL(writer);
	cache_body_abort(&writer);
	CU_ASSERT_EQUAL(query(cache, "SELECT count(*) FROM bodies"), 0);
	CU_ASSERT_EQUAL(query(cache, "SELECT count(*) FROM body_chunks"), 0);
	CU_ASSERT_EQUAL(cache_body_bytes(cache), 0);

	/* Ended short, or overlong: not stored. */
	writer = cache_body_begin(cache, mailbox.id, 1, 100, NULL);
	CU_ASSERT_EQUAL(cache_body_write(writer, data, 99), 0);
	CU_ASSERT_EQUAL(cache_body_finish(&writer), -1);
	CU_ASSERT_TRUE(logged("ended after 99 of the 100 bytes announced"));
	writer = cache_body_begin(cache, mailbox.id, 1, 100, NULL);
	CU_ASSERT_EQUAL(cache_body_write(writer, data, 101), -1);
	CU_ASSERT_EQUAL(cache_body_finish(&writer), -1);
	CU_ASSERT_EQUAL(query(cache, "SELECT count(*) FROM bodies"), 0);
	CU_ASSERT_EQUAL(cache_body_bytes(cache), 0);

	/* Over body_max_size. */
	CU_ASSERT_PTR_NULL(cache_body_begin(cache, mailbox.id, 1, 2 * CHUNK + 1, &refusal));
	CU_ASSERT_EQUAL(refusal, CACHE_BODY_REFUSED_TOO_BIG);
	/* Over the budget, counting a body being written. */
	writer = cache_body_begin(cache, mailbox.id, 1, 2 * CHUNK, NULL);
	CU_ASSERT_PTR_NOT_NULL_FATAL(writer);
	CU_ASSERT_PTR_NULL(cache_body_begin(cache, mailbox.id, 2, CHUNK + 1, &refusal));
	CU_ASSERT_EQUAL(refusal, CACHE_BODY_REFUSED_BUDGET);
	second = cache_body_begin(cache, mailbox.id, 2, CHUNK, NULL);
	CU_ASSERT_PTR_NOT_NULL_FATAL(second);
	CU_ASSERT_EQUAL(cache_body_write(second, data, CHUNK), 0);
	CU_ASSERT_EQUAL(cache_body_finish(&second), 0);
	CU_ASSERT_EQUAL(cache_body_write(writer, data, 2 * CHUNK), 0);
	CU_ASSERT_EQUAL(cache_body_finish(&writer), 0);
	CU_ASSERT_EQUAL(cache_body_bytes(cache), 3 * CHUNK);
	/* Full: a new body first evicts the least recently used (a tie: UID 1 first). */
	writer = cache_body_begin(cache, mailbox.id, 3, 1, &refusal);
	CU_ASSERT_PTR_NOT_NULL_FATAL(writer);
	CU_ASSERT_EQUAL(query(cache, "SELECT count(*) FROM bodies WHERE uid = 1"), 0);
	CU_ASSERT_EQUAL(cache_body_bytes(cache), CHUNK + 1);
	cache_body_abort(&writer);
	/* Stored already. */
	CU_ASSERT_PTR_NULL(cache_body_begin(cache, mailbox.id, 2, 0, &refusal));
	CU_ASSERT_EQUAL(refusal, CACHE_BODY_REFUSED_PRESENT);
	/* Expunged: the budget is free again. */
	CU_ASSERT_EQUAL(cache_mailbox_remove_uids(cache, mailbox.id, (uint32_t[]){ 2, 1 }, 2), 0);
	CU_ASSERT_EQUAL(cache_body_bytes(cache), 0);
	check_body_bytes(cache);
	/* A budget of 0 keeps nothing; a second open brings the new settings. */
	s.body_budget = 0;
	{
		struct cache *again = cache_open(&s, "up", "alice", &error);

		CU_ASSERT_PTR_EQUAL(again, cache);
		CU_ASSERT_PTR_NULL(cache_body_begin(cache, mailbox.id, 4, 0, &refusal));
		CU_ASSERT_EQUAL(refusal, CACHE_BODY_REFUSED_BUDGET);
		cache_unref(&again);
	}
	cache_unref(&cache);
	teardown();
}

static uint64_t fake_wall = 100000;

static uint64_t fake_wall_now(void)
{
	return fake_wall;
}

/* Whether uid has a complete body. */
static bool has_body(struct cache *cache, int64_t mailbox_id, uint32_t uid)
{
	uint64_t size;

	return cache_body_size(cache, mailbox_id, uid, &size) == 1;
}

/* The budget as the issue measures it: the bytes of the stored pieces. */
static int64_t stored_bytes(struct cache *cache)
{
	return query(cache, "SELECT coalesce(sum(length(data)), 0) FROM body_chunks");
}

static void test_eviction(void)
{
	struct cache_settings s = settings();
	struct evbuffer *out = evbuffer_new();
	struct cache_body_writer *writer;
	struct cache_mailbox mailbox;
	enum cache_body_refusal refusal;
	struct cache *cache;
	const char *error;

	setup();
	s.body_budget = 4 * CHUNK;
	s.wall_now = fake_wall_now;
	cache = cache_open(&s, "up", "alice", &error);
	CU_ASSERT_PTR_NOT_NULL_FATAL(cache);
	mailbox = open_mailbox(cache, "INBOX", 1);
	for (uint32_t uid = 1; uid <= 4; uid++) {
		fake_wall = 100 + uid;
		store_text(cache, mailbox.id, uid, CACHE_ITEM_ENVELOPE, "(env)");
		CU_ASSERT_EQUAL(store_body(cache, mailbox.id, uid, CHUNK, 1000), 0);
	}
	/* A read is a use: UID 1 is now the most recently used. */
	fake_wall = 110;
	CU_ASSERT_EQUAL(cache_body_read(cache, mailbox.id, 1, 0, 10, out), 1);

	/* Full: the least recently used goes (UID 2), its envelope stays. */
	fake_wall = 120;
	CU_ASSERT_EQUAL(store_body(cache, mailbox.id, 5, CHUNK, CHUNK), 0);
	CU_ASSERT_FALSE(has_body(cache, mailbox.id, 2));
	CU_ASSERT_TRUE(has_row(cache, mailbox.id, 2));
	CU_ASSERT_TRUE(has_body(cache, mailbox.id, 1));
	CU_ASSERT_TRUE(logged("evicted 1 whole messages (65536 bytes), least recently used"));
	/* Just written is not in use: only a read is (UID 3, written at 103). */
	CU_ASSERT_EQUAL(store_body(cache, mailbox.id, 2, CHUNK, CHUNK), 0);
	CU_ASSERT_FALSE(has_body(cache, mailbox.id, 3));
	CU_ASSERT_TRUE(has_body(cache, mailbox.id, 4));
	CU_ASSERT(stored_bytes(cache) <= (int64_t)s.body_budget);
	check_body_bytes(cache);
	/* Two at once for a body of two pieces: UIDs 4 (104) and 1 (read at 110). */
	fake_wall = 121;
	CU_ASSERT_EQUAL(store_body(cache, mailbox.id, 6, 2 * CHUNK, CHUNK), 0);
	CU_ASSERT_FALSE(has_body(cache, mailbox.id, 4));
	CU_ASSERT_FALSE(has_body(cache, mailbox.id, 1));
	CU_ASSERT_TRUE(has_body(cache, mailbox.id, 2));
	CU_ASSERT_TRUE(has_body(cache, mailbox.id, 5));
	CU_ASSERT(stored_bytes(cache) <= (int64_t)s.body_budget);
	check_body_bytes(cache);

	/* A body read in the last CACHE_EVICT_IN_USE_SECONDS may be mid-answer:
	   spared (UIDs 5 and 2), the next one goes (UID 6, though larger than needed). */
	fake_wall = 200;
	CU_ASSERT_EQUAL(cache_body_read(cache, mailbox.id, 5, 0, 10, out), 1);
	fake_wall = 200 + CACHE_EVICT_IN_USE_SECONDS - 1;
	CU_ASSERT_EQUAL(cache_body_read(cache, mailbox.id, 2, 0, 10, out), 1);
	CU_ASSERT_EQUAL(store_body(cache, mailbox.id, 7, CHUNK, CHUNK), 0);
	CU_ASSERT_FALSE(has_body(cache, mailbox.id, 6));
	CU_ASSERT_TRUE(has_body(cache, mailbox.id, 5));
	CU_ASSERT_TRUE(has_body(cache, mailbox.id, 2));
	check_body_bytes(cache);

	/* A body being written is never evicted; nor, while everything else
	   is in use, is anything: refused, and nothing changed. */
	CU_ASSERT_EQUAL(cache_body_read(cache, mailbox.id, 7, 0, 10, out), 1);
	writer = cache_body_begin(cache, mailbox.id, 8, CHUNK, NULL);
	CU_ASSERT_PTR_NOT_NULL_FATAL(writer);
	CU_ASSERT_EQUAL(cache_body_bytes(cache), 4 * CHUNK);
	CU_ASSERT_PTR_NULL(cache_body_begin(cache, mailbox.id, 9, CHUNK, &refusal));
	CU_ASSERT_EQUAL(refusal, CACHE_BODY_REFUSED_BUDGET);
	CU_ASSERT_TRUE(has_body(cache, mailbox.id, 2) && has_body(cache, mailbox.id, 5) &&
		       has_body(cache, mailbox.id, 7));
	CU_ASSERT_EQUAL(cache_body_bytes(cache), 4 * CHUNK);
	/* Once they are not: the least recently used goes, not the one being written. */
	fake_wall = 300;
	CU_ASSERT_EQUAL(store_body(cache, mailbox.id, 9, CHUNK, CHUNK), 0);
	CU_ASSERT_FALSE(has_body(cache, mailbox.id, 5));
	CU_ASSERT_EQUAL(cache_body_write(writer, (unsigned char[CHUNK]){ 0 }, CHUNK), 0);
	CU_ASSERT_EQUAL(cache_body_finish(&writer), 0);
	CU_ASSERT(stored_bytes(cache) <= (int64_t)s.body_budget);
	check_body_bytes(cache);
	/* Larger than the whole budget: refused, nothing evicted. */
	CU_ASSERT_PTR_NULL(cache_body_begin(cache, mailbox.id, 10, 4 * CHUNK + 1, &refusal));
	CU_ASSERT_EQUAL(refusal, CACHE_BODY_REFUSED_BUDGET);
	CU_ASSERT_EQUAL(cache_body_bytes(cache), 4 * CHUNK);

	/* A lower budget on a second open (a reload) holds at once. */
	s.body_budget = 2 * CHUNK;
	{
		struct cache *again = cache_open(&s, "up", "alice", &error);

		CU_ASSERT_PTR_EQUAL(again, cache);
		CU_ASSERT(stored_bytes(cache) <= 2 * CHUNK);
		check_body_bytes(cache);
		cache_unref(&again);
	}
	evbuffer_free(out);
	cache_unref(&cache);
	teardown();
}

/* last_used of uid's body as another process sees it, or -1. */
static int64_t last_used_from_outside(const char *path, uint32_t uid)
{
	sqlite3 *db;
	sqlite3_stmt *stmt;
	int64_t last_used = -1;

	CU_ASSERT_EQUAL_FATAL(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	CU_ASSERT_EQUAL_FATAL(sqlite3_prepare_v2(db, "SELECT last_used FROM bodies WHERE uid = ?1", -1, &stmt, NULL),
			      SQLITE_OK);
	sqlite3_bind_int(stmt, 1, (int)uid);
	if (sqlite3_step(stmt) == SQLITE_ROW)
		last_used = sqlite3_column_int64(stmt, 0);
	sqlite3_finalize(stmt);
	sqlite3_close(db);
	return last_used;
}

static uint64_t held_wall = 100;

static uint64_t held_wall_now(void)
{
	return held_wall;
}

/* With an event base, a read's use of a body is held and written with the
   held rows: by the timer, and before an eviction chooses what to drop. */

/* Stores uid's ENVELOPE and a body of size bytes, then pins it (bodies:
   the pin reads its body). */
static struct cache_pin *pin_stored_message(struct cache *cache, int64_t mailbox_id, uint32_t uid, uint64_t size,
					    bool bodies)
{
	struct cache_pin *pin;

	store_text(cache, mailbox_id, uid, CACHE_ITEM_ENVELOPE, "(env)");
	CU_ASSERT_EQUAL(store_body(cache, mailbox_id, uid, size, size), 0);
	pin = cache_pin_messages(cache, mailbox_id, &uid, 1, bodies);
	CU_ASSERT_PTR_NOT_NULL_FATAL(pin);
	return pin;
}
/* An answer's pin keeps the rows it is still to read through an expunge:
   the others go at once, its own at its release. */
static void test_pin_holds_expunged_rows(void)
{
	struct cache_pin *pin, *other;
	struct cache_mailbox mailbox;
	struct cache *cache;
	uint32_t *uids = NULL;
	size_t count = 0;

	setup();
	cache = open_account("up", "alice");
	mailbox = open_mailbox(cache, "INBOX", 1);
	for (uint32_t uid = 1; uid <= 4; uid++) {
		store_text(cache, mailbox.id, uid, CACHE_ITEM_ENVELOPE, "(env)");
		CU_ASSERT_EQUAL(store_body(cache, mailbox.id, uid, 100, 100), 0);
	}
	CU_ASSERT_EQUAL(cache_mailbox_set_uids(cache, mailbox.id, (uint32_t[]){ 1, 2, 3, 4 }, 4), 0);
	pin = cache_pin_messages(cache, mailbox.id, (uint32_t[]){ 3, 1 }, 2, false);
	other = cache_pin_messages(cache, mailbox.id, (uint32_t[]){ 1 }, 1, true);
	CU_ASSERT_PTR_NOT_NULL_FATAL(pin);
	CU_ASSERT_PTR_NOT_NULL_FATAL(other);
	CU_ASSERT_EQUAL(cache_mailbox_remove_uids(cache, mailbox.id, (uint32_t[]){ 1, 2, 3 }, 3), 0);
	CU_ASSERT_FALSE(has_row(cache, mailbox.id, 2));
	CU_ASSERT_FALSE(has_body(cache, mailbox.id, 2));
	CU_ASSERT_TRUE(has_row(cache, mailbox.id, 1) && has_body(cache, mailbox.id, 1));
	CU_ASSERT_TRUE(has_row(cache, mailbox.id, 3) && has_body(cache, mailbox.id, 3));
	CU_ASSERT_EQUAL(cache_mailbox_get_uids(cache, mailbox.id, &uids, &count), 1);
	CU_ASSERT_TRUE(count == 1 && uids[0] == 4);
	free(uids);
	check_body_bytes(cache);
	/* UID 1 is still another answer's, UID 3 is no one's */
	cache_pin_release(cache, &pin);
	CU_ASSERT_PTR_NULL(pin);
	CU_ASSERT_FALSE(has_row(cache, mailbox.id, 3) || has_body(cache, mailbox.id, 3));
	CU_ASSERT_TRUE(has_row(cache, mailbox.id, 1) && has_body(cache, mailbox.id, 1));
	cache_pin_release(cache, &other);
	CU_ASSERT_FALSE(has_row(cache, mailbox.id, 1) || has_body(cache, mailbox.id, 1));
	CU_ASSERT_TRUE(has_row(cache, mailbox.id, 4) && has_body(cache, mailbox.id, 4));
	CU_ASSERT_EQUAL(cache_body_bytes(cache), 100);
	check_body_bytes(cache);
	cache_unref(&cache);
	teardown();
}

/* Another process holds the store while a pin's release would carry out
   its held drops: they stay held, and the next release does them. */
static void test_pin_drops_wait_out_a_busy_store(void)
{
	struct cache_pin *pin, *again;
	struct cache_mailbox mailbox;
	struct cache *cache;
	sqlite3 *other;
	char *path;

	setup();
	cache = open_account("up", "alice");
	path = account_path("up", "alice");
	mailbox = open_mailbox(cache, "INBOX", 1);
	pin = pin_stored_message(cache, mailbox.id, 3, 100, false);
	CU_ASSERT_EQUAL(cache_mailbox_remove_uids(cache, mailbox.id, (uint32_t[]){ 3 }, 1), 0);
	CU_ASSERT_TRUE(has_row(cache, mailbox.id, 3)); /* pinned: held */
	CU_ASSERT_EQUAL_FATAL(sqlite3_open(path, &other), SQLITE_OK);
	CU_ASSERT_EQUAL_FATAL(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
	cache_pin_release(cache, &pin); /* the drop meets the lock taken */
	CU_ASSERT_EQUAL(cache->deferred_count, 1);
	CU_ASSERT_TRUE(seen_from_outside(path, 3));
	CU_ASSERT_FALSE(logged("given up"));
	CU_ASSERT_EQUAL(sqlite3_exec(other, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(other);
	again = cache_pin_messages(cache, mailbox.id, (uint32_t[]){ 9 }, 1, false);
	cache_pin_release(cache, &again); /* the next release tries again */
	CU_ASSERT_EQUAL(cache->deferred_count, 0);
	CU_ASSERT_FALSE(seen_from_outside(path, 3));
	CU_ASSERT_FALSE(has_body(cache, mailbox.id, 3));
	check_body_bytes(cache);
	cache_unref(&cache);
	free(path);
	teardown();
}

/* A purge or UIDVALIDITY change of a mailbox an answer reads sets it
   aside: no lookup finds it, a new one of its name can start, the
   answer still reads it; it goes at the release, or at the next open
   when the daemon died first. */
static void test_pin_holds_dropped_mailbox(void)
{
	struct cache_mailbox sub, again, found;
	struct cache_pin *pin;
	struct cache *cache;
	bool reset = false;

	setup();
	cache = open_account("up", "alice");
	sub = open_mailbox(cache, "Sub", 7);
	pin = pin_stored_message(cache, sub.id, 5, 300, false);
	CU_ASSERT_EQUAL(cache_mailbox_delete(cache, "Sub"), 0);
	CU_ASSERT_EQUAL(cache_mailbox_lookup(cache, "Sub", &found), 0);
	CU_ASSERT_TRUE(has_row(cache, sub.id, 5) && has_body(cache, sub.id, 5));
	again = open_mailbox(cache, "Sub", 7);
	CU_ASSERT_NOT_EQUAL(again.id, sub.id);
	CU_ASSERT_FALSE(has_row(cache, again.id, 5));
	CU_ASSERT_EQUAL(cache_body_bytes(cache), 300);
	cache_pin_release(cache, &pin);
	CU_ASSERT_FALSE(has_row(cache, sub.id, 5) || has_body(cache, sub.id, 5));
	CU_ASSERT_EQUAL(query(cache, "SELECT count(*) FROM mailboxes"), 1);
	CU_ASSERT_EQUAL(cache_body_bytes(cache), 0);
	check_body_bytes(cache);

	/* A UIDVALIDITY change, and the daemon gone before the answer ended. */
	pin = pin_stored_message(cache, again.id, 6, 200, true);
	CU_ASSERT_EQUAL(cache_mailbox_open(cache, "Sub", 8, &found, &reset), 0);
	CU_ASSERT_TRUE(reset);
	CU_ASSERT_NOT_EQUAL(found.id, again.id);
	CU_ASSERT_TRUE(has_row(cache, again.id, 6) && has_body(cache, again.id, 6));
	CU_ASSERT_EQUAL(query(cache, "SELECT count(*) FROM mailboxes WHERE typeof(name) = 'blob'"), 1);
	cache_unref(&cache); /* frees the pin */
	cache = open_account("up", "alice");
	CU_ASSERT_EQUAL(query(cache, "SELECT count(*) FROM mailboxes"), 1);
	CU_ASSERT_EQUAL(query(cache, "SELECT count(*) FROM messages"), 0);
	CU_ASSERT_EQUAL(cache_body_bytes(cache), 0);
	check_body_bytes(cache);
	cache_unref(&cache);
	teardown();
}

/* Eviction passes the bodies an answer is still to read by, however
   many there are: past a whole step of them it finds the next body
   that may go; with all pinned, a new body is refused. An answer that
   reads no body (its pin keeps rows only) spares none. */
static void test_pin_spares_bodies_from_eviction(void)
{
	enum { PINNED = 130, SIZE = 100 };
	struct cache_settings s = settings();
	uint32_t uids[PINNED + 1];
	struct cache_mailbox mailbox;
	enum cache_body_refusal refusal;
	struct cache_pin *pin, *more;
	struct cache *cache;
	const char *error;

	setup();
	s.body_budget = (PINNED + 1) * SIZE;
	s.wall_now = fake_wall_now;
	cache = cache_open(&s, "up", "alice", &error);
	CU_ASSERT_PTR_NOT_NULL_FATAL(cache);
	mailbox = open_mailbox(cache, "INBOX", 1);
	for (uint32_t uid = 1; uid <= PINNED + 1; uid++) {
		fake_wall = 1000 + uid; /* UID 1 the least recently used */
		CU_ASSERT_EQUAL(store_body(cache, mailbox.id, uid, SIZE, SIZE), 0);
		uids[uid - 1] = uid;
	}
	/* rows only: the least recently used goes all the same */
	pin = cache_pin_messages(cache, mailbox.id, uids, PINNED, false);
	CU_ASSERT_PTR_NOT_NULL_FATAL(pin);
	fake_wall = 5000;
	CU_ASSERT_EQUAL(store_body(cache, mailbox.id, PINNED + 2, SIZE, SIZE), 0);
	CU_ASSERT_FALSE(has_body(cache, mailbox.id, 1));
	cache_pin_release(cache, &pin);

	/* bodies 2 .. PINNED + 1 pinned: the newest, PINNED + 2, is the one that may go */
	pin = cache_pin_messages(cache, mailbox.id, uids + 1, PINNED, true);
	CU_ASSERT_PTR_NOT_NULL_FATAL(pin);
	fake_wall = 6000;
	CU_ASSERT_EQUAL(store_body(cache, mailbox.id, PINNED + 3, SIZE, SIZE), 0);
	CU_ASSERT_FALSE(has_body(cache, mailbox.id, PINNED + 2));
	for (uint32_t uid = 2; uid <= PINNED + 1; uid++)
		CU_ASSERT_TRUE(has_body(cache, mailbox.id, uid));
	/* every body pinned: refused, nothing dropped */
	more = cache_pin_messages(cache, mailbox.id, (uint32_t[]){ PINNED + 3 }, 1, true);
	CU_ASSERT_PTR_NOT_NULL_FATAL(more);
	CU_ASSERT_PTR_NULL(cache_body_begin(cache, mailbox.id, PINNED + 4, SIZE, &refusal));
	CU_ASSERT_EQUAL(refusal, CACHE_BODY_REFUSED_BUDGET);
	CU_ASSERT_TRUE(has_body(cache, mailbox.id, PINNED + 3));
	cache_pin_release(cache, &more);
	cache_pin_release(cache, &pin);
	/* none pinned: the least recently used again */
	CU_ASSERT_EQUAL(store_body(cache, mailbox.id, PINNED + 4, SIZE, SIZE), 0);
	CU_ASSERT_FALSE(has_body(cache, mailbox.id, 2));
	CU_ASSERT_TRUE(has_body(cache, mailbox.id, PINNED + 3));
	CU_ASSERT(stored_bytes(cache) <= (int64_t)s.body_budget);
	check_body_bytes(cache);
	cache_unref(&cache);
	teardown();
}

/* Drops held back while writes are off for a while are kept, and made
   at a later release once writes are back. */
static void test_pin_drops_wait_for_writes(void)
{
	struct cache_mailbox mailbox;
	struct cache_pin *pin;
	struct cache *cache;

	setup();
	cache = open_account("up", "alice");
	mailbox = open_mailbox(cache, "INBOX", 1);
	pin = pin_stored_message(cache, mailbox.id, 1, 100, true);
	CU_ASSERT_EQUAL(cache_mailbox_remove_uids(cache, mailbox.id, (uint32_t[]){ 1 }, 1), 0);
	cache_fail(cache, SQLITE_FULL, "a test's write");
	cache_pin_release(cache, &pin);
	CU_ASSERT_TRUE(has_row(cache, mailbox.id, 1));
	fake_clock += CACHE_WRITE_RETRY_SECONDS;
	pin = cache_pin_messages(cache, mailbox.id, (uint32_t[]){ 7 }, 1, false);
	CU_ASSERT_PTR_NOT_NULL_FATAL(pin);
	cache_pin_release(cache, &pin);
	CU_ASSERT_FALSE(has_row(cache, mailbox.id, 1) || has_body(cache, mailbox.id, 1));
	check_body_bytes(cache);
	cache_unref(&cache);
	teardown();
}

static void test_body_use_held(void)
{
	struct event_base *base = event_base_new();
	struct cache_settings s = settings();
	struct evbuffer *out = evbuffer_new();
	struct cache_mailbox mailbox;
	struct cache *cache;
	char *path;

	setup();
	s.wall_now = held_wall_now;
	s.body_budget = 3 * CHUNK;
	cache = open_on_loop(&s, base, &path, &mailbox);
	for (uint32_t uid = 1; uid <= 3; uid++) {
		held_wall = 100 + uid;
		CU_ASSERT_EQUAL(store_body(cache, mailbox.id, uid, CHUNK, CHUNK), 0);
	}

	/* Held, then written by the timer. */
	held_wall = 110;
	CU_ASSERT_EQUAL(cache_body_read(cache, mailbox.id, 2, 0, 10, out), 1);
	CU_ASSERT_EQUAL(last_used_from_outside(path, 2), 102);
	CU_ASSERT_EQUAL(event_base_loop(base, EVLOOP_ONCE), 0);
	CU_ASSERT_EQUAL(last_used_from_outside(path, 2), 110);

	/* Held, and counted by an eviction: UID 3 (103) goes, not UID 1 (read at 120). */
	held_wall = 120;
	CU_ASSERT_EQUAL(cache_body_read(cache, mailbox.id, 1, 0, 10, out), 1);
	CU_ASSERT_EQUAL(last_used_from_outside(path, 1), 101);
	held_wall = 200;
	CU_ASSERT_EQUAL(store_body(cache, mailbox.id, 4, CHUNK, CHUNK), 0);
	CU_ASSERT_FALSE(has_body(cache, mailbox.id, 3));
	CU_ASSERT_TRUE(has_body(cache, mailbox.id, 1));
	CU_ASSERT_TRUE(has_body(cache, mailbox.id, 2));
	CU_ASSERT_EQUAL(last_used_from_outside(path, 1), 120);

	/* And at the last unref. */
	held_wall = 300;
	CU_ASSERT_EQUAL(cache_body_read(cache, mailbox.id, 2, 0, 10, out), 1);
	cache_unref(&cache);
	CU_ASSERT_EQUAL(last_used_from_outside(path, 2), 300);
	evbuffer_free(out);
	event_base_free(base);
	free(path);
	teardown();
}

/* Across a restart with a lower budget: evicted at open, and the file
   gives back the space past CACHE_FREE_MAX of free pages. */
static void test_eviction_at_open_shrinks_the_file(void)
{
	struct cache_settings s = settings();
	struct cache_mailbox mailbox;
	struct cache *cache;
	const char *error;
	struct stat st;
	char *path;

	setup();
	s.body_budget = 32 << 20;
	s.wall_now = fake_wall_now;
	cache = cache_open(&s, "up", "alice", &error);
	CU_ASSERT_PTR_NOT_NULL_FATAL(cache);
	path = account_path("up", "alice");
	mailbox = open_mailbox(cache, "INBOX", 1);
	for (uint32_t uid = 1; uid <= 80; uid++) {
		fake_wall = 1000 + uid;
		CU_ASSERT_EQUAL(store_body(cache, mailbox.id, uid, 4 * CHUNK, 4 * CHUNK), 0);
	}
	CU_ASSERT_EQUAL(stored_bytes(cache), 80 * 4 * CHUNK);
	cache_unref(&cache);

	s.body_budget = 1 << 20;
	fake_wall = 5000;
	cache = cache_open(&s, "up", "alice", &error);
	CU_ASSERT_PTR_NOT_NULL_FATAL(cache);
	CU_ASSERT(stored_bytes(cache) <= 1 << 20);
	CU_ASSERT_TRUE(has_body(cache, mailbox.id, 80)); /* the most recently used stay */
	CU_ASSERT_FALSE(has_body(cache, mailbox.id, 76));
	check_body_bytes(cache);
	CU_ASSERT(query(cache, "PRAGMA freelist_count") * query(cache, "PRAGMA page_size") <= 8 << 20);
	cache_unref(&cache);
	CU_ASSERT_EQUAL(stat(path, &st), 0);
	CU_ASSERT(st.st_size <= (1 << 20) + (8 << 20) + (1 << 20)); /* budget + free pages kept + slack */
	free(path);
	teardown();
}

static void test_body_writer_outlives_its_session(void)
{
	struct cache *cache;
	struct cache_mailbox mailbox;
	struct cache_body_writer *writer;
	struct cache_body_writer *expunged;
	static unsigned char data[CHUNK];

	setup();
	cache = open_account("up", "alice");
	mailbox = open_mailbox(cache, "INBOX", 1);
	writer = cache_body_begin(cache, mailbox.id, 1, 100, NULL);
	expunged = cache_body_begin(cache, mailbox.id, 2, CHUNK + 100, NULL);
	CU_ASSERT_EQUAL(cache_body_write(expunged, data, 100), 0);
	/* The message is expunged while its body arrives: the body goes too. */
	CU_ASSERT_EQUAL(cache_mailbox_remove_uids(cache, mailbox.id, (uint32_t[]){ 2 }, 1), 0);
	CU_ASSERT_EQUAL(cache_body_bytes(cache), 100);
	/* The writer holds the store open. */
	cache_unref(&cache);
	CU_ASSERT_EQUAL(cache_body_write(writer, data, 100), 0);
	CU_ASSERT_EQUAL(cache_body_finish(&writer), 0);
	CU_ASSERT_EQUAL(cache_body_write(expunged, data, CHUNK), -1);
	CU_ASSERT_EQUAL(cache_body_finish(&expunged), -1);
	cache = open_account("up", "alice");
	CU_ASSERT_EQUAL(cache_body_size(cache, mailbox.id, 1, &(uint64_t){ 0 }), 1);
	CU_ASSERT_EQUAL(cache_body_size(cache, mailbox.id, 2, &(uint64_t){ 0 }), 0);
	check_body_bytes(cache);
	cache_unref(&cache);
	teardown();
}

static void test_unfinished_body_after_a_crash(void)
{
	struct cache *cache;
	struct cache_mailbox mailbox;

	setup();
	cache = open_account("up", "alice");
	mailbox = open_mailbox(cache, "INBOX", 1);
	CU_ASSERT_EQUAL(store_body(cache, mailbox.id, 1, 1000, 1000), 0);
	/* What a crash half-way through a body leaves. */
	CU_ASSERT_EQUAL(sqlite3_exec(cache_sqlite_handle(cache),
				     "INSERT INTO bodies(mailbox_id, uid, size, complete, last_used) VALUES(1, 2, 200000, 0, 0);"
				     "INSERT INTO body_chunks(mailbox_id, uid, chunk, data) VALUES(1, 2, 0, zeroblob(65536));", NULL, NULL, NULL),
			SQLITE_OK);
	cache_unref(&cache);
	cache = open_account("up", "alice");
	CU_ASSERT_EQUAL(cache_body_bytes(cache), 1000);
	CU_ASSERT_EQUAL(query(cache, "SELECT count(*) FROM bodies"), 1);
	check_body_bytes(cache);
	cache_unref(&cache);
	teardown();
}

static void test_uid_lists(void)
{
	static const uint32_t sparse[] = { 1, 2, 3, 5, 100, 101, 4000000000u, 4294967295u };
	struct cache *cache;
	struct cache_mailbox mailbox;
	uint32_t *dense = malloc(100000 * sizeof(*dense));
	uint32_t *uids;
	size_t count;

	setup();
	cache = open_account("up", "alice");
	mailbox = open_mailbox(cache, "INBOX", 1);
	CU_ASSERT_EQUAL(cache_mailbox_get_uids(cache, mailbox.id, &uids, &count), 0);
	CU_ASSERT_EQUAL(cache_mailbox_set_uids(cache, mailbox.id, NULL, 0), 0);
	CU_ASSERT_EQUAL(cache_mailbox_get_uids(cache, mailbox.id, &uids, &count), 1);
	CU_ASSERT_EQUAL(count, 0);
	free(uids);

	CU_ASSERT_EQUAL(cache_mailbox_set_uids(cache, mailbox.id, sparse, 8), 0);
	CU_ASSERT_EQUAL_FATAL(cache_mailbox_get_uids(cache, mailbox.id, &uids, &count), 1);
	CU_ASSERT_EQUAL_FATAL(count, 8);
	CU_ASSERT_EQUAL(memcmp(uids, sparse, sizeof(sparse)), 0);
	free(uids);

	for (uint32_t i = 0; i < 100000; i++)
		dense[i] = i + 1;
	CU_ASSERT_EQUAL(cache_mailbox_set_uids(cache, mailbox.id, dense, 100000), 0);
	CU_ASSERT(query(cache, "SELECT length(uids) FROM mailboxes") <= 4); /* one range */
	CU_ASSERT_EQUAL_FATAL(cache_mailbox_get_uids(cache, mailbox.id, &uids, &count), 1);
	CU_ASSERT_EQUAL_FATAL(count, 100000);
	CU_ASSERT_EQUAL(memcmp(uids, dense, 100000 * sizeof(*dense)), 0);
	free(uids);

	/* Not ascending, or with 0: refused, the stored list kept. */
	CU_ASSERT_EQUAL(cache_mailbox_set_uids(cache, mailbox.id, (uint32_t[]){ 2, 1 }, 2), -1);
	CU_ASSERT_EQUAL(cache_mailbox_set_uids(cache, mailbox.id, (uint32_t[]){ 1, 1 }, 2), -1);
	CU_ASSERT_EQUAL(cache_mailbox_set_uids(cache, mailbox.id, (uint32_t[]){ 0, 1 }, 2), -1);
	CU_ASSERT_EQUAL(cache_mailbox_get_uids(cache, mailbox.id, &uids, &count), 1);
	CU_ASSERT_EQUAL(count, 100000);
	free(uids);

	/* Expunged UIDs leave the list with their rows and bodies. */
	CU_ASSERT_EQUAL(cache_mailbox_set_uids(cache, mailbox.id, sparse, 8), 0);
	store_text(cache, mailbox.id, 5, CACHE_ITEM_ENVELOPE, "(NIL)");
	store_text(cache, mailbox.id, 100, CACHE_ITEM_ENVELOPE, "(NIL)");
	CU_ASSERT_EQUAL(store_body(cache, mailbox.id, 5, 10, 10), 0);
	CU_ASSERT_EQUAL(cache_mailbox_remove_uids(cache, mailbox.id, (uint32_t[]){ 4294967295u, 5, 7 }, 3), 0);
	CU_ASSERT_EQUAL_FATAL(cache_mailbox_get_uids(cache, mailbox.id, &uids, &count), 1);
	CU_ASSERT_EQUAL_FATAL(count, 6);
	CU_ASSERT_EQUAL(memcmp(uids, (uint32_t[]){ 1, 2, 3, 100, 101, 4000000000u }, 6 * sizeof(*uids)), 0);
	free(uids);
	CU_ASSERT_FALSE(has_row(cache, mailbox.id, 5));
	CU_ASSERT_TRUE(has_row(cache, mailbox.id, 100));
	CU_ASSERT_EQUAL(query(cache, "SELECT count(*) FROM bodies"), 0);
	check_body_bytes(cache);

	/* A damaged list counts as not known. */
	CU_ASSERT_EQUAL(sqlite3_exec(cache_sqlite_handle(cache), "UPDATE mailboxes SET uids = x'01ffffffffff7f'",
				     NULL, NULL, NULL), SQLITE_OK);
	CU_ASSERT_EQUAL(cache_mailbox_get_uids(cache, mailbox.id, &uids, &count), 0);
	CU_ASSERT_PTR_NULL(uids);
	CU_ASSERT_EQUAL(sqlite3_exec(cache_sqlite_handle(cache), "UPDATE mailboxes SET uids = x'0500'",
				     NULL, NULL, NULL), SQLITE_OK); /* 5 */
	CU_ASSERT_EQUAL(cache_mailbox_get_uids(cache, mailbox.id, &uids, &count), 1);
	CU_ASSERT_EQUAL(count, 1);
	free(uids);
	CU_ASSERT_EQUAL(sqlite3_exec(cache_sqlite_handle(cache), "UPDATE mailboxes SET uids = x'050000'",
				     NULL, NULL, NULL), SQLITE_OK); /* 5, then a range without its length */
	CU_ASSERT_EQUAL(cache_mailbox_get_uids(cache, mailbox.id, &uids, &count), 0);
	free(dense);
	cache_unref(&cache);
	teardown();
}

struct lookup_result {
	uint32_t uids[TIMING_MESSAGES];
	size_t count;
	size_t header_bytes;
	bool all_complete;
};

static void collect(const struct cache_message *message, void *context)
{
	struct lookup_result *result = context;

	if (result->count < TIMING_MESSAGES)
		result->uids[result->count++] = message->uid;
	result->header_bytes += message->values[CACHE_ITEM_HEADER].size;
	result->all_complete &= (message->present & CACHE_HAS(CACHE_ITEM_ENVELOPE)) &&
				(message->present & CACHE_HAS(CACHE_ITEM_HEADER));
}

static void test_lookup_many(void)
{
	static struct lookup_result result;
	static uint32_t uids[TIMING_MESSAGES];
	char header[2048];
	struct cache *cache;
	struct cache_mailbox mailbox;
	struct cache_mailbox other;
	struct timespec start;
	double store_time;
	double dense_time;
	double sparse_time;

	setup();
	cache = open_account("up", "alice");
	mailbox = open_mailbox(cache, "INBOX", 1);
	other = open_mailbox(cache, "Other", 1);
	memset(header, 'h', sizeof(header));
	clock_gettime(CLOCK_MONOTONIC, &start);
	cache_batch_begin(cache);
	for (uint32_t uid = 1; uid <= TIMING_MESSAGES; uid++) {
		/* Every third UID of 3 * TIMING_MESSAGES: a mailbox with gaps. */
		store_text(cache, mailbox.id, uid * 3, CACHE_ITEM_ENVELOPE,
			   "(\"Wed, 17 Jul 1996 02:23:25 -0700\" \"subject\" NIL NIL NIL NIL NIL NIL NIL \"<id@x>\")");
		CU_ASSERT_EQUAL(cache_store_item(cache, mailbox.id, uid * 3, CACHE_ITEM_HEADER, header, sizeof(header)), 0);
		CU_ASSERT_EQUAL(cache_store_flags(cache, mailbox.id, uid * 3, "\\Seen", uid), 0);
		store_text(cache, other.id, uid * 3, CACHE_ITEM_ENVELOPE, "(NIL)");
	}
	CU_ASSERT_EQUAL(cache_batch_end(cache), 0);
	store_time = seconds_since(&start);

	/* Dense: 1:30000, read as one range. */
	for (uint32_t i = 0; i < TIMING_MESSAGES; i++)
		uids[i] = i + 1;
	result.count = 0;
	result.all_complete = true;
	CU_ASSERT_EQUAL(cache_lookup_many(cache, mailbox.id, uids, TIMING_MESSAGES, collect, &result),
			TIMING_MESSAGES / 3);
	CU_ASSERT_EQUAL(result.count, TIMING_MESSAGES / 3);
	CU_ASSERT_EQUAL(result.uids[0], 3);
	CU_ASSERT_EQUAL(result.uids[1], 6);
	/* Dense, leaving out rows that are there. */
	result.count = 0;
	CU_ASSERT_EQUAL(cache_lookup_many(cache, mailbox.id, (uint32_t[]){ 3, 9, 10, 12 }, 4, collect, &result), 3);
	CU_ASSERT_EQUAL(result.count, 3);
	CU_ASSERT_EQUAL(memcmp(result.uids, ((uint32_t[]){ 3, 9, 12 }), 3 * sizeof(uint32_t)), 0);
	for (uint32_t i = 0; i < TIMING_MESSAGES; i++)
		uids[i] = (i + 1) * 3;
	result.count = 0;
	result.header_bytes = 0;
	clock_gettime(CLOCK_MONOTONIC, &start);
	CU_ASSERT_EQUAL(cache_lookup_many(cache, mailbox.id, uids, TIMING_MESSAGES, collect, &result),
			TIMING_MESSAGES);
	dense_time = seconds_since(&start);
	CU_ASSERT_EQUAL(result.count, TIMING_MESSAGES);
	CU_ASSERT_EQUAL(memcmp(result.uids, uids, sizeof(uids)), 0);
	CU_ASSERT_EQUAL(result.header_bytes, (size_t)TIMING_MESSAGES * sizeof(header));
	CU_ASSERT_TRUE(result.all_complete);

	/* Sparse: half of them stored, half past the end, read by key. */
	for (uint32_t i = 0; i < TIMING_MESSAGES; i++)
		uids[i] = i < TIMING_MESSAGES / 2 ? i * 6 + 3 : 3 * TIMING_MESSAGES + i * 10;
	result.count = 0;
	clock_gettime(CLOCK_MONOTONIC, &start);
	CU_ASSERT_EQUAL(cache_lookup_many(cache, mailbox.id, uids, TIMING_MESSAGES, collect, &result),
			TIMING_MESSAGES / 2);
	sparse_time = seconds_since(&start);
	CU_ASSERT_EQUAL(result.uids[0], 3);
	CU_ASSERT_EQUAL(result.uids[1], 9);
	CU_ASSERT_EQUAL(result.uids[TIMING_MESSAGES / 2 - 1], (TIMING_MESSAGES / 2 - 1) * 6 + 3);
	CU_ASSERT_EQUAL(cache_lookup_many(cache, mailbox.id, uids, 0, collect, &result), 0);
	CU_ASSERT_EQUAL(cache_lookup_many(cache, mailbox.id + 100, uids, 10, collect, &result), 0);
	/* Only the values asked for: the headers are not read. */
	result.count = 0;
	result.header_bytes = 0;
	result.all_complete = true;
	CU_ASSERT_EQUAL(cache_lookup_values(cache, mailbox.id, uids, TIMING_MESSAGES / 2,
					    CACHE_HAS(CACHE_ITEM_ENVELOPE), collect, &result), TIMING_MESSAGES / 2);
	CU_ASSERT_EQUAL(result.header_bytes, 0);
	CU_ASSERT_FALSE(result.all_complete);
	printf("\n    %d messages: stored in one batch in %.0f ms; looked up in %.1f ms as a range, "
	       "%.1f ms by key (half of them there) ",
	       TIMING_MESSAGES, store_time * 1000, dense_time * 1000, sparse_time * 1000);
	cache_unref(&cache);
	teardown();
}

/* Bytes of the file at path; -1 when there is none. */
static off_t file_size(const char *path)
{
	struct stat st;

	return lstat(path, &st) == 0 ? st.st_size : -1;
}

/* The store file's pages at path in the page cache now, read with
   mincore before any is read: bulk (rowid table leaves and overflow
   pages, where body_chunks' rows are) and the rest (interior pages and
   index leaves, which lookups walk). Their types are read after. */
struct cached_pages {
	size_t bulk, bulk_cached, walked, walked_cached;
};

static struct cached_pages cached_pages(const char *path)
{
	struct cached_pages counts = { 0, 0, 0, 0 };
	long small = sysconf(_SC_PAGESIZE);
	int fd = open(path, O_RDONLY);
	unsigned char *resident = NULL;
	struct stat st;
	void *map;

	CU_ASSERT_FATAL(fd >= 0 && fstat(fd, &st) == 0 && st.st_size > 0);
	map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
	CU_ASSERT_FATAL(map != MAP_FAILED);
	resident = malloc((size_t)(st.st_size / small) + 1);
	CU_ASSERT_FATAL(resident != NULL && mincore(map, (size_t)st.st_size, resident) == 0);
	for (off_t offset = CACHE_PAGE_SIZE; offset + CACHE_PAGE_SIZE <= st.st_size; offset += CACHE_PAGE_SIZE) {
		unsigned char type = 0;
		bool cached = resident[offset / small] & 1;

		CU_ASSERT_EQUAL(pread(fd, &type, 1, offset), 1);
		if (type == 2 || type == 5 || type == 10) {
			counts.walked++;
			counts.walked_cached += cached;
		} else {
			counts.bulk++;
			counts.bulk_cached += cached;
		}
	}
	munmap(map, (size_t)st.st_size);
	free(resident);
	close(fd);
	return counts;
}

/* After a fill of bodies: at most a quarter of the pages its bodies went
   to are still in the page cache (a checkpoint's last pages may be
   waiting for their writeback), and the pages lookups walk all are. A
   tmpfs can't drop what it holds: nothing to check there. */
static void check_bodies_left_page_cache(const char *path)
{
	struct cached_pages counts;
	struct statfs fs;

	if (statfs(path, &fs) == 0 && fs.f_type == 0x01021994) { /* TMPFS_MAGIC */
		printf("(%s is on a tmpfs: the page cache is not checked) ", path);
		return;
	}
	counts = cached_pages(path);
	CU_ASSERT_TRUE(counts.bulk > 1000); /* 16 MiB at least */
	CU_ASSERT_TRUE(counts.bulk_cached * 4 <= counts.bulk);
	CU_ASSERT_TRUE(counts.walked > 0);
	CU_ASSERT_EQUAL(counts.walked_cached, counts.walked);
	if (counts.bulk_cached * 4 > counts.bulk || counts.walked_cached != counts.walked)
		printf("(bulk pages cached: %zu of %zu; walked pages cached: %zu of %zu) ", counts.bulk_cached,
		       counts.bulk, counts.walked_cached, counts.walked);
}

/* Stores count bodies of 1 MiB, UIDs from first on, each in its own
   transaction, letting the checkpoint thread finish after each. */
static void store_mebibytes(struct cache *cache, int64_t mailbox_id, uint32_t first, uint32_t count)
{
	for (uint32_t uid = first; uid < first + count; uid++) {
		CU_ASSERT_EQUAL(store_body(cache, mailbox_id, uid, 1 << 20, 256 * 1024), 0);
		cache_worker_settle(cache->worker);
	}
}

/* Stores a message of size bytes of words as uid's body: text that the
   index takes whole (pattern() bytes are not text). */
static void store_text_body(struct cache *cache, int64_t mailbox_id, uint32_t uid, size_t size)
{
	static const char head[] = "Subject: words\r\n\r\n";
	struct cache_body_writer *writer = cache_body_begin(cache, mailbox_id, uid, size, NULL);
	char *data = malloc(size);

	CU_ASSERT_PTR_NOT_NULL_FATAL(writer);
	CU_ASSERT_PTR_NOT_NULL_FATAL(data);
	for (size_t i = 0; i < size; i++)
		data[i] = i % 64 == 62 ? '\r' : i % 64 == 63 ? '\n' : (char)('a' + (i * 7 + uid) % 26);
	memcpy(data, head, sizeof(head) - 1);
	CU_ASSERT_EQUAL(cache_body_write(writer, data, size), 0);
	CU_ASSERT_EQUAL(cache_body_finish(&writer), 0);
	free(data);
}

/* The store's worker fails (its connection finds the store full): the
   loop logs the worker's own words for it, not its own connection's
   (which has no error), and caching stops for a while. */
static void test_worker_failure_logged(void)
{
	struct event_base *base = event_base_new();
	struct cache_settings s = settings();
	struct cache_mailbox mailbox;
	struct cache *cache;
	char sql[64], *path;

	setup();
	cache = open_on_loop(&s, base, &path, &mailbox);
	CU_ASSERT_PTR_NOT_NULL_FATAL(cache->worker);
	cache_worker_pause(cache->worker, true);
	for (uint32_t uid = 1; uid <= 4; uid++)
		store_text_body(cache, mailbox.id, uid, 64 * 1024);
	/* no free page left for the index to take, and none to add */
	CU_ASSERT_EQUAL(cache_worker_exec_paused(cache->worker, "PRAGMA incremental_vacuum"), SQLITE_OK);
	CU_ASSERT_EQUAL(query(cache, "PRAGMA freelist_count"), 0);
	snprintf(sql, sizeof(sql), "PRAGMA max_page_count = %lld", (long long)query(cache, "PRAGMA page_count"));
	CU_ASSERT_EQUAL(cache_worker_exec_paused(cache->worker, sql), SQLITE_OK);
	/* the loop hands the index over after a quiet while, the worker
	   fails on it, and the loop's watch sees that */
	for (int turn = 0; turn < 200 && !cache_writes_off(cache); turn++) {
		if (turn == 1)
			cache_worker_pause(cache->worker, false);
		CU_ASSERT(event_base_loop(base, EVLOOP_ONCE) >= 0);
	}
	CU_ASSERT_EQUAL(cache_worker_counts(cache->worker).last_error & 0xff, SQLITE_FULL);
	CU_ASSERT_TRUE(cache_writes_off(cache));
	CU_ASSERT_TRUE(logged("indexing bodies' text (the store's worker): database or disk is full"));
	CU_ASSERT_FALSE(logged("not an error"));
	CU_ASSERT_EQUAL(query(cache, "SELECT count(*) FROM bodies WHERE text_indexed = 1"), 0);
	cache_unref(&cache);
	event_base_free(base);
	free(path);
	teardown();
}

static void note_resumed(void *context)
{
	*(int *)context = 1;
}

/* Fills 1 MiB bodies [first, first + count) in held batches, pausing as
   a session does when the store asks; returns the pauses, and the
   largest WAL seen in *largest. */
static int fill_pausing(struct cache *cache, struct event_base *base, int64_t mailbox_id, uint32_t first,
			uint32_t count, const char *wal, off_t *largest)
{
	int owner, pauses = 0;

	for (uint32_t uid = first; uid < first + count; uid++) {
		cache_batch_begin_for(cache, &owner);
		CU_ASSERT_EQUAL(store_body(cache, mailbox_id, uid, 1 << 20, 64 * 1024), 0);
		CU_ASSERT_EQUAL(cache_batch_end_soon(cache), 0);
		CU_ASSERT(event_base_loop(base, EVLOOP_NONBLOCK) >= 0);
		if (cache_wants_pause(cache)) { /* as a session does: no more bodies until it is over */
			int resumed = 0;

			CU_ASSERT_EQUAL_FATAL(cache_pause_wait(cache, note_resumed, &resumed), 0);
			while (!resumed)
				CU_ASSERT(event_base_loop(base, EVLOOP_ONCE) >= 0);
			pauses++;
		}
		if (file_size(wal) > *largest)
			*largest = file_size(wal);
	}
	cache_batch_commit_held(cache);
	return pauses;
}

/* A fill whose held transactions follow one another with no gap between
   them, as a warm's do: the worker's PASSIVE checkpoints keep up, but
   alone they never let the WAL start afresh (a warm's WAL grew by every
   byte it stored). Past CACHE_CHECKPOINT_RESTART_PAGES the store asks
   its fills to pause (cache_wants_pause), the worker's RESTART runs in
   that pause, and the WAL stays near the mark. */
static void test_wal_restarts_in_a_fill(void)
{
	const off_t mib = 1 << 20;
	struct event_base *base = event_base_new();
	struct cache_settings s = settings();
	struct cache_mailbox mailbox;
	struct cache *cache;
	char wal[300], *path;
	off_t largest = 0;
	int pauses;

	setup();
	s.body_budget = 200 << 20; /* more than the fill: nothing is evicted */
	cache = open_on_loop(&s, base, &path, &mailbox);
	CU_ASSERT_PTR_NOT_NULL_FATAL(cache->worker);
	snprintf(wal, sizeof(wal), "%s-wal", path);
	pauses = fill_pausing(cache, base, mailbox.id, 1, 160, wal, &largest);
	CU_ASSERT_TRUE(pauses >= 2);
	CU_ASSERT_TRUE(cache_worker_counts(cache->worker).restarts >= 2);
	CU_ASSERT_TRUE(largest > 0 && largest <= (CACHE_CHECKPOINT_RESTART_PAGES / 64 + 8) * mib);
	cache_worker_settle(cache->worker);
	check_bodies_left_page_cache(path);
	check_read(cache, mailbox.id, 1, 1 << 20, 0, 1 << 20);
	check_read(cache, mailbox.id, 160, 1 << 20, 0, 1 << 20);
	CU_ASSERT_EQUAL(query(cache, "SELECT count(*) FROM bodies WHERE complete"), 160);
	cache_unref(&cache);
	event_base_free(base);
	free(path);
	teardown();
}

/* A reader that keeps an old snapshot makes the RESTART fail (it can't
   wait for it): it is not wanted again at every commit, which paused
   the fill again and again, only once the WAL grew by another mark, and
   by twice as much after each failure more (100 MB past a 16 MB mark:
   three pauses, six without the doubling). */
static void test_wal_restart_backs_off(void)
{
	struct event_base *base = event_base_new();
	struct cache_settings s = settings();
	struct cache_mailbox mailbox;
	struct cache *cache;
	sqlite3 *reader;
	char wal[300], *path;
	off_t largest = 0;
	int pauses;

	setup();
	s.body_budget = 200 << 20;
	cache = open_on_loop(&s, base, &path, &mailbox);
	CU_ASSERT_PTR_NOT_NULL_FATAL(cache->worker);
	snprintf(wal, sizeof(wal), "%s-wal", path);
	(void)fill_pausing(cache, base, mailbox.id, 1, 1, wal, &largest);
	CU_ASSERT_EQUAL_FATAL(sqlite3_open_v2(path, &reader, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	CU_ASSERT_EQUAL(sqlite3_exec(reader, "BEGIN; SELECT count(*) FROM bodies", NULL, NULL, NULL), SQLITE_OK);
	pauses = fill_pausing(cache, base, mailbox.id, 2, 100, wal, &largest);
	CU_ASSERT_TRUE(pauses >= 1 && pauses <= 4);
	CU_ASSERT_EQUAL(cache_worker_counts(cache->worker).restarts, 0);
	CU_ASSERT_TRUE(largest > 64 << 20); /* the reader kept it: it grew */
	sqlite3_exec(reader, "COMMIT", NULL, NULL, NULL);
	sqlite3_close(reader);
	CU_ASSERT_EQUAL(query(cache, "SELECT count(*) FROM bodies WHERE complete"), 101);
	cache_unref(&cache);
	event_base_free(base);
	free(path);
	teardown();
}

static void test_checkpoints_off_the_loop(void)
{
	const off_t mib = 1 << 20;
	struct cache_worker_counts counts;
	struct cache_mailbox mailbox;
	struct cache *cache;
	char wal[300];
	char *path;

	setup();
	path = account_path("up", "alice");
	snprintf(wal, sizeof(wal), "%s-wal", path);
	cache = open_account("up", "alice");
	mailbox = open_mailbox(cache, "INBOX", 7);
	CU_ASSERT_PTR_NOT_NULL_FATAL(cache->worker);
	/* 24 MiB of bodies: the thread checkpoints each 4 MiB, so the next
	   writer starts the WAL afresh, and the loop never does it */
	store_mebibytes(cache, mailbox.id, 1, 24);
	counts = cache_worker_counts(cache->worker);
	CU_ASSERT_TRUE(counts.checkpoints >= 4);
	CU_ASSERT_EQUAL(counts.loop_checkpoints, 0);
	CU_ASSERT_EQUAL(counts.last_error, SQLITE_OK);
	CU_ASSERT_TRUE(file_size(wal) > 0 && file_size(wal) <= 8 * mib);
	check_bodies_left_page_cache(path);
	/* The thread behind: the loop checkpoints once the WAL holds
	   CACHE_CHECKPOINT_LOOP_PAGES (64 MiB), not later. */
	cache_worker_pause(cache->worker, true);
	store_mebibytes(cache, mailbox.id, 25, 72);
	counts = cache_worker_counts(cache->worker);
	CU_ASSERT_TRUE(counts.loop_checkpoints >= 1);
	CU_ASSERT_TRUE(file_size(wal) <= 68 * mib);
	cache_worker_pause(cache->worker, false);
	cache_worker_settle(cache->worker);
	check_read(cache, mailbox.id, 1, 1 << 20, 0, 1 << 20);
	check_read(cache, mailbox.id, 96, 1 << 20, 0, 1 << 20);
	CU_ASSERT_EQUAL(query(cache, "SELECT count(*) FROM bodies WHERE complete"), 96);
	CU_ASSERT_EQUAL(query(cache, "SELECT count(*) FROM pragma_integrity_check WHERE integrity_check = 'ok'"), 1);
	cache_unref(&cache);
	/* The store reopened holds every body, and its WAL was checkpointed
	   and removed at close. */
	CU_ASSERT_EQUAL(file_size(wal), -1);
	cache = open_account("up", "alice");
	check_read(cache, mailbox.id, 50, 1 << 20, 0, 1 << 20);
	cache_unref(&cache);
	free(path);
	teardown();
}

static void test_full_store(void)
{
	static unsigned char big[256 * 1024];
	struct cache *cache;
	struct cache_mailbox mailbox;
	struct cache_message message;
	enum cache_body_refusal refusal;
	char sql[128];
	int64_t pages;
	int result = 0;

	setup();
	cache = open_account("up", "alice");
	mailbox = open_mailbox(cache, "INBOX", 1);
	store_text(cache, mailbox.id, 1, CACHE_ITEM_ENVELOPE, "(kept)");
	CU_ASSERT_EQUAL(store_body(cache, mailbox.id, 1, 1000, 1000), 0);
	pages = query(cache, "PRAGMA page_count");
	snprintf(sql, sizeof(sql), "PRAGMA max_page_count = %lld", (long long)pages + 2);
	query(cache, sql);

	/* In a batch: the write that doesn't fit fails, writes turn off, one log line. */
	cache_batch_begin(cache);
	store_text(cache, mailbox.id, 2, CACHE_ITEM_ENVELOPE, "(fits)");
	for (uint32_t uid = 3; uid < 10 && result == 0; uid++)
		result = cache_store_item(cache, mailbox.id, uid, CACHE_ITEM_HEADER, big, sizeof(big));
	CU_ASSERT_EQUAL(result, -1);
	cache_batch_end(cache);
	CU_ASSERT_TRUE(cache_writes_off(cache));
	CU_ASSERT_TRUE(logged("database or disk is full; caching no more for a while, proxying goes on"));
	log_text[0] = '\0';
	CU_ASSERT_EQUAL(cache_store_item(cache, mailbox.id, 2, CACHE_ITEM_ENVELOPE, "x", 1), -1);
	CU_ASSERT_EQUAL(cache_store_flags(cache, mailbox.id, 1, "", 0), -1);
	CU_ASSERT_PTR_NULL(cache_body_begin(cache, mailbox.id, 2, 10, &refusal));
	CU_ASSERT_EQUAL(refusal, CACHE_BODY_REFUSED_WRITES_OFF);
	CU_ASSERT_EQUAL(cache_mailbox_open(cache, "new", 1, &(struct cache_mailbox){ 0 }, NULL), -1);
	CU_ASSERT_STRING_EQUAL(log_text, ""); /* logged once */
	/* What is stored still reads. */
	CU_ASSERT_EQUAL_FATAL(cache_lookup(cache, mailbox.id, 1, &message), 1);
	CU_ASSERT_TRUE(value_is(&message, CACHE_ITEM_ENVELOPE, "(kept)", 6));
	cache_message_clear(&message);
	check_read(cache, mailbox.id, 1, 1000, 0, 1000);
	check_body_bytes(cache);

	/* Room again (an admin freed space): writes resume after a while. */
	query(cache, "PRAGMA max_page_count = 1000000");
	fake_clock += CACHE_WRITE_RETRY_SECONDS - 1;
	CU_ASSERT_TRUE(cache_writes_off(cache));
	fake_clock += 1;
	CU_ASSERT_FALSE(cache_writes_off(cache));
	CU_ASSERT_EQUAL(cache_store_item(cache, mailbox.id, 3, CACHE_ITEM_HEADER, big, sizeof(big)), 0);
	cache_unref(&cache);
	teardown();
}

/* Runs the read-only checks; returns the line of the first failure, or 0. */
#define REQUIRE(condition) do { if (!(condition)) return __LINE__; } while (0)
static int read_only_checks(void)
{
	struct cache_settings s = settings();
	const char *error = NULL;
	struct cache *cache = cache_open(&s, "up", "alice", &error);
	struct cache_mailbox mailbox;
	struct cache_message message;
	struct cache_body_writer *writer;
	static unsigned char body[70000];
	struct evbuffer *out;
	char up_dir[256];
	int found;

	REQUIRE(cache != NULL);
	mailbox = (struct cache_mailbox){ 0 };
	REQUIRE(cache_mailbox_open(cache, "INBOX", 5, &mailbox, NULL) == 0);
	REQUIRE(cache_store_item(cache, mailbox.id, 1, CACHE_ITEM_ENVELOPE, "(ro)", 4) == 0);
	writer = cache_body_begin(cache, mailbox.id, 1, sizeof(body), NULL);
	REQUIRE(writer != NULL && cache_body_write(writer, body, sizeof(body)) == 0 && cache_body_finish(&writer) == 0);
	cache_unref(&cache);
	snprintf(up_dir, sizeof(up_dir), "%s/up", cache_dir);
	REQUIRE(chmod(up_dir, 0500) == 0);

	cache = cache_open(&s, "up", "alice", &error);
	REQUIRE(cache != NULL);
	REQUIRE(cache_writes_off(cache));
	REQUIRE(logged("read-only; reading what it holds"));
	REQUIRE(cache_mailbox_open(cache, "INBOX", 5, &mailbox, NULL) == 0);
	found = cache_lookup(cache, mailbox.id, 1, &message);
	REQUIRE(found == 1 && value_is(&message, CACHE_ITEM_ENVELOPE, "(ro)", 4));
	cache_message_clear(&message);
	out = evbuffer_new();
	REQUIRE(cache_body_read(cache, mailbox.id, 1, 0, 100000, out) == 1 && evbuffer_get_length(out) == 70000);
	evbuffer_free(out);
	REQUIRE(cache_body_bytes(cache) == 70000);
	REQUIRE(cache_store_item(cache, mailbox.id, 2, CACHE_ITEM_ENVELOPE, "x", 1) == -1);
	REQUIRE(cache_mailbox_open(cache, "INBOX", 6, &mailbox, NULL) == -1);
	REQUIRE(cache_body_begin(cache, mailbox.id, 2, 10, NULL) == NULL);
	fake_clock += 10 * CACHE_WRITE_RETRY_SECONDS;
	REQUIRE(cache_writes_off(cache)); /* for good */
	cache_unref(&cache);
	/* No store yet, and none can be made: no cache, a clear error. */
	cache = cache_open(&s, "up", "bob", &error);
	REQUIRE(cache == NULL && strcmp(error, "cannot make the cache file") == 0);
	return 0;
}

/* Runs checks (which return the line of their first failure, or 0) where
   file modes bind: as nobody, in a child, when root. */
static void run_unprivileged(int (*checks)(void), const char *what)
{
	pid_t pid;
	int status = -1;

	setup();
	if (geteuid() != 0) {
		CU_ASSERT_EQUAL(checks(), 0);
		teardown();
		return;
	}
	/* Root writes anywhere: check as nobody, in a child. */
	CU_ASSERT_EQUAL(chown(base_dir, NOBODY_UID, NOBODY_UID), 0);
	pid = fork();
	CU_ASSERT_NOT_EQUAL_FATAL(pid, -1);
	if (pid == 0) {
		int line = -1;

		if (setgid(NOBODY_UID) == 0 && setuid(NOBODY_UID) == 0)
			line = checks();
		if (line != 0)
			fprintf(stderr, "\n%s check at line %d failed\n%s", what, line, log_text);
		_exit(line == 0 ? 0 : 1);
	}
	CU_ASSERT_EQUAL(waitpid(pid, &status, 0), pid);
	CU_ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	teardown();
}

static void test_read_only_directory(void)
{
	run_unprivileged(read_only_checks, "read-only");
}

/* A store file its owner can't even read (mode 0000) holds nothing usable:
   it is moved aside and a new store made, as for garbage. */
static int unreadable_checks(void)
{
	struct cache_settings s = settings();
	const char *error = NULL;
	struct cache *cache = cache_open(&s, "up", "alice", &error);
	struct cache_mailbox mailbox;
	char path[256];
	int found;

	REQUIRE(cache != NULL);
	REQUIRE(cache_mailbox_open(cache, "INBOX", 5, &mailbox, NULL) == 0);
	cache_unref(&cache);
	snprintf(path, sizeof(path), "%s/up/alice.sqlite", cache_dir);
	REQUIRE(chmod(path, 0) == 0);
	cache = cache_open(&s, "up", "alice", &error);
	REQUIRE(cache != NULL);
	REQUIRE(logged("is not readable by imapcached's user; moved aside to "));
	REQUIRE(!cache_writes_off(cache));
	found = cache_mailbox_lookup(cache, "INBOX", &mailbox);
	cache_unref(&cache);
	REQUIRE(found == 0);
	return 0;
}

static void test_unreadable_file(void)
{
	run_unprivileged(unreadable_checks, "unreadable");
}

/* The store's file replaced (or removed) while open: at close its WAL goes
   with it, so the file now at the path is judged on its own. */
static void test_replaced_while_open(void)
{
	struct cache_mailbox mailbox;
	struct stat st;
	char garbage[8192];
	char moved[300];
	char wal[300];
	struct cache *cache;
	char *path;

	setup();
	path = account_path("up", "alice");
	snprintf(moved, sizeof(moved), "%s.old", path);
	snprintf(wal, sizeof(wal), "%s-wal", path);
	memset(garbage, 'g', sizeof(garbage));
	for (int removed = 0; removed <= 1; removed++) {
		cache = open_account("up", "alice");
		mailbox = open_mailbox(cache, "INBOX", 7);
		store_text(cache, mailbox.id, 1, CACHE_ITEM_ENVELOPE, "(NIL)");
		if (removed) {
			CU_ASSERT_EQUAL(unlink(path), 0);
		} else {
			CU_ASSERT_EQUAL(rename(path, moved), 0);
			write_file(path, garbage, sizeof(garbage));
		}
		/* still the old store until it closes */
		CU_ASSERT_EQUAL(cache_mailbox_lookup(cache, "INBOX", &mailbox), 1);
		cache_unref(&cache);
		CU_ASSERT_TRUE(logged("was replaced or removed while open; its WAL goes too"));
		CU_ASSERT_NOT_EQUAL(lstat(wal, &st), 0);
		cache = open_account("up", "alice");
		if (!removed)
			CU_ASSERT_TRUE(logged("is not a database, or a damaged one; moved aside to "));
		CU_ASSERT_EQUAL(cache_mailbox_lookup(cache, "INBOX", &mailbox), 0);
		cache_unref(&cache);
		log_text[0] = '\0';
	}
	/* A store closed in place keeps its own files and says nothing. */
	cache = open_account("up", "alice");
	cache_unref(&cache);
	CU_ASSERT_FALSE(logged("was replaced or removed while open"));
	free(path);
	teardown();
}

/* With linger_seconds, the last unref leaves the store open (its WAL
   stays) and the next open takes the same handle up again; the timer, or
   cache_close_lingering, closes it. A lingering store whose file was
   replaced is closed at the next open, which judges the new file. */
static void test_linger(void)
{
	struct event_base *base = event_base_new();
	struct cache_settings s = settings();
	struct cache_mailbox mailbox;
	char garbage[8192];
	char moved[300];
	char wal[300];
	struct stat st;
	struct cache *cache, *lingering;
	const char *error;
	uint64_t serial;
	char *path;

	setup();
	s.base = base;
	s.linger_seconds = 1;
	path = account_path("up", "alice");
	snprintf(moved, sizeof(moved), "%s.old", path);
	snprintf(wal, sizeof(wal), "%s-wal", path);
	cache = cache_open(&s, "up", "alice", &error);
	CU_ASSERT_PTR_NOT_NULL_FATAL(cache);
	serial = cache_serial(cache);
	mailbox = open_mailbox(cache, "INBOX", 7);
	store_text(cache, mailbox.id, 1, CACHE_ITEM_ENVELOPE, "(NIL)");
	cache_unref(&cache);
	CU_ASSERT_EQUAL(lstat(wal, &st), 0); /* still open */
	cache = cache_open(&s, "up", "alice", &error);
	CU_ASSERT_PTR_NOT_NULL_FATAL(cache);
	CU_ASSERT_EQUAL(cache_serial(cache), serial);
	cache_unref(&cache);

	/* The timer closes it; the next open is a new handle on the same rows. */
	for (int turns = 0; turns < 20 && lstat(wal, &st) == 0; turns++)
		CU_ASSERT_EQUAL(event_base_loop(base, EVLOOP_ONCE), 0);
	CU_ASSERT_NOT_EQUAL(lstat(wal, &st), 0);
	cache = cache_open(&s, "up", "alice", &error);
	CU_ASSERT_PTR_NOT_NULL_FATAL(cache);
	CU_ASSERT_NOT_EQUAL(cache_serial(cache), serial);
	CU_ASSERT_EQUAL(cache_mailbox_lookup(cache, "INBOX", &mailbox), 1);
	serial = cache_serial(cache);
	cache_unref(&cache);

	/* Replaced while lingering: closed, its WAL forgotten, the new file moved aside. */
	memset(garbage, 'g', sizeof(garbage));
	CU_ASSERT_EQUAL(rename(path, moved), 0);
	write_file(path, garbage, sizeof(garbage));
	cache = cache_open(&s, "up", "alice", &error);
	CU_ASSERT_PTR_NOT_NULL_FATAL(cache);
	CU_ASSERT_NOT_EQUAL(cache_serial(cache), serial);
	CU_ASSERT_TRUE(logged("was replaced or removed while open; its WAL goes too"));
	CU_ASSERT_TRUE(logged("is not a database, or a damaged one; moved aside to "));
	CU_ASSERT_EQUAL(cache_mailbox_lookup(cache, "INBOX", &mailbox), 0);
	cache_unref(&cache);

	/* Found damaged while lingering (as indexing may find it): the next
	   open moves it aside and starts anew, not a session on a store
	   whose writes are off. */
	lingering = cache_open(&s, "up", "alice", &error);
	CU_ASSERT_PTR_NOT_NULL_FATAL(lingering);
	serial = cache_serial(lingering);
	cache = lingering;
	cache_unref(&cache);
	cache_fail(lingering, SQLITE_CORRUPT, "a test's read");
	cache = cache_open(&s, "up", "alice", &error);
	CU_ASSERT_PTR_NOT_NULL_FATAL(cache);
	CU_ASSERT_NOT_EQUAL(cache_serial(cache), serial);
	CU_ASSERT_TRUE(logged("is damaged (found while reading it); moved aside to "));
	CU_ASSERT_FALSE(cache_writes_off(cache));
	cache_unref(&cache);

	/* At shutdown, cache_close_lingering closes what lingers. */
	CU_ASSERT_EQUAL(lstat(wal, &st), 0);
	cache_close_lingering();
	CU_ASSERT_NOT_EQUAL(lstat(wal, &st), 0);
	/* A store released after that (a writer's last turn at shutdown)
	   closes at once: no timer of an event base about to be freed. */
	cache = cache_open(&s, "up", "alice", &error);
	CU_ASSERT_PTR_NOT_NULL_FATAL(cache);
	CU_ASSERT_EQUAL(lstat(wal, &st), 0);
	cache_unref(&cache);
	CU_ASSERT_NOT_EQUAL(lstat(wal, &st), 0);
	free(path);
	event_base_free(base);
	teardown();
}

static void test_damaged_rows_count_as_missing(void)
{
	char header[2000];
	char sql[160];
	struct cache *cache;
	struct cache_mailbox mailbox;
	struct cache_message message;
	static struct lookup_result result;
	static uint32_t uids[3000];
	int64_t page;
	int64_t page_size;
	char *path;
	unsigned char garbage[65536];
	int missing = 0;
	int fd;

	setup();
	cache = open_account("up", "alice");
	mailbox = open_mailbox(cache, "INBOX", 1);
	memset(header, 'h', sizeof(header));
	cache_batch_begin(cache);
	for (uint32_t uid = 1; uid <= 3000; uid++) {
		uids[uid - 1] = uid;
		CU_ASSERT_EQUAL(cache_store_item(cache, mailbox.id, uid, CACHE_ITEM_HEADER, header, sizeof(header)), 0);
	}
	CU_ASSERT_EQUAL(cache_batch_end(cache), 0);
	page = query(cache, "SELECT pageno FROM dbstat WHERE name = 'messages' AND pagetype = 'leaf' "
			    "ORDER BY pageno LIMIT 1 OFFSET 20");
	page_size = query(cache, "PRAGMA page_size");
	cache_unref(&cache);
	if (page <= 0) {
		printf("(no dbstat in this SQLite: skipped) ");
		teardown();
		return;
	}
	/* Garbage over one page of the messages table, as a bad disk leaves. */
	path = account_path("up", "alice");
	memset(garbage, 0xa5, sizeof(garbage));
	fd = open(path, O_WRONLY);
	CU_ASSERT_EQUAL(pwrite(fd, garbage, (size_t)page_size, (off_t)((page - 1) * page_size)), page_size);
	close(fd);

	cache = open_account("up", "alice");
	result.count = 0;
	result.all_complete = true;
	CU_ASSERT(cache_lookup_many(cache, mailbox.id, uids, 3000, collect, &result) >= 0);
	CU_ASSERT(result.count < 3000);
	for (uint32_t uid = 1; uid <= 3000; uid++) {
		int found = cache_lookup(cache, mailbox.id, uid, &message);

		CU_ASSERT(found == 0 || found == 1);
		missing += found == 0;
		cache_message_clear(&message);
	}
	CU_ASSERT(missing > 0 && missing < 3000);
	CU_ASSERT_TRUE(cache_writes_off(cache));
	CU_ASSERT_TRUE(logged("moved aside when closed"));
	cache_unref(&cache);
	CU_ASSERT_EQUAL(count_aside(path), 1);
	cache = open_account("up", "alice");
	CU_ASSERT_FALSE(cache_writes_off(cache));
	CU_ASSERT_EQUAL(cache_lookup(cache, mailbox.id, 1, &message), 0);
	cache_unref(&cache);
	snprintf(sql, sizeof(sql), "%s", path);
	free(path);
	teardown();
}

/* Damaged body sizes whose sum overflows 64 bits (found by fuzz-cache-record)
   neither block a UIDVALIDITY reset nor the store's next open. */
static void test_damaged_body_sizes(void)
{
	struct cache *cache;
	struct cache_mailbox mailbox;
	char sql[256];

	setup();
	cache = open_account("up", "alice");
	mailbox = open_mailbox(cache, "INBOX", 1);
	snprintf(sql, sizeof(sql), "INSERT INTO bodies(mailbox_id, uid, size, complete, last_used) VALUES"
		 " (%lld, 1, 9000000000000000000, 1, 0), (%lld, 2, 9000000000000000000, 1, 0), (%lld, 3, -5, 1, 0)",
		 (long long)mailbox.id, (long long)mailbox.id, (long long)mailbox.id);
	CU_ASSERT_EQUAL(sqlite3_exec(cache_sqlite_handle(cache), sql, NULL, NULL, NULL), SQLITE_OK);
	cache_unref(&cache);
	cache = open_account("up", "alice");
	CU_ASSERT_FALSE(cache_writes_off(cache));
	mailbox = open_mailbox(cache, "INBOX", 2);
	CU_ASSERT_EQUAL(query(cache, "SELECT count(*) FROM bodies"), 0);
	CU_ASSERT_EQUAL(cache_body_bytes(cache), 0);
	cache_unref(&cache);
	teardown();
}

/* XXH64's published test vectors (seed 0). */
static void test_checksum_vectors(void)
{
	char abc999[3 * 999];

	for (int i = 0; i < 999; i++)
		memcpy(abc999 + 3 * i, "abc", 3);
	CU_ASSERT_EQUAL(cache_checksum("", 0), 0xEF46DB3751D8E999ULL);
	CU_ASSERT_EQUAL(cache_checksum("a", 1), 0xD24EC4F1A98C6E5BULL);
	CU_ASSERT_EQUAL(cache_checksum("abc", 3), 0x44BC2CF5AD770999ULL);
	CU_ASSERT_EQUAL(cache_checksum("Hello, World!", 13), 0xC49AACF8080FE47FULL);
	CU_ASSERT_EQUAL(cache_checksum(abc999, sizeof(abc999)), 0x933EB85613976467ULL);
}

/* A value or a body piece changed behind SQLite's back (its checksum left
   as it was) is not served: missing, logged, dropped. */
/* A lookup of some values checks only theirs: damage in another is
   found (and dropped) when that one is asked for. */
static void test_lookup_values_checks_those_asked(void)
{
	static struct lookup_result result;
	struct cache_mailbox mailbox;
	struct cache *cache;
	uint32_t uid = 1;

	setup();
	cache = open_account("up", "alice");
	mailbox = open_mailbox(cache, "INBOX", 1);
	store_text(cache, mailbox.id, uid, CACHE_ITEM_ENVELOPE, "(env)");
	store_text(cache, mailbox.id, uid, CACHE_ITEM_HEADER, "Subject: x\r\n\r\n");
	CU_ASSERT_EQUAL(sqlite3_exec(cache_sqlite_handle(cache), "UPDATE messages SET header = X'5375626A656374' "
				     "WHERE uid = 1", NULL, NULL, NULL), SQLITE_OK);
	result.all_complete = true;
	CU_ASSERT_EQUAL(cache_lookup_values(cache, mailbox.id, &uid, 1, CACHE_HAS(CACHE_ITEM_ENVELOPE), collect,
					    &result), 1);
	CU_ASSERT_EQUAL(result.header_bytes, 0);
	CU_ASSERT_FALSE(logged("fails its checksum"));
	CU_ASSERT_EQUAL(query(cache, "SELECT count(*) FROM messages WHERE header IS NOT NULL"), 1);
	CU_ASSERT_EQUAL(cache_lookup_values(cache, mailbox.id, &uid, 1, CACHE_HAS(CACHE_ITEM_HEADER), collect,
					    &result), 1);
	CU_ASSERT_EQUAL(result.header_bytes, 0);
	CU_ASSERT_TRUE(logged("a stored value of UID 1 (items 0x10) fails its checksum"));
	CU_ASSERT_EQUAL(query(cache, "SELECT count(*) FROM messages WHERE header IS NOT NULL"), 0);
	cache_unref(&cache);
	teardown();
}

/* What a lookup callback saw of one message. */
static void keep_message(const struct cache_message *message, void *context)
{
	struct cache_message *kept = context;

	*kept = *message;
	for (unsigned int item = 0; item < CACHE_VALUE_ITEMS; item++)
		kept->values[item].data = NULL; /* SQLite's memory: only sizes are compared */
}

/* Prepared statements of the store's connection. */
static int statements(struct cache *cache)
{
	sqlite3 *db = cache_sqlite_handle(cache);
	int count = 0;

	for (sqlite3_stmt *stmt = sqlite3_next_stmt(db, NULL); stmt != NULL; stmt = sqlite3_next_stmt(db, stmt))
		count++;
	return count;
}

/* A lookup of some values reads them (and the numbers) as the full one
   does, and nothing else, with a statement of its own prepared once. */
static void test_lookup_values_selects_those_asked(void)
{
	unsigned int wanted = CACHE_HAS(CACHE_ITEM_ENVELOPE) | CACHE_HAS(CACHE_ITEM_FLAGS);
	struct cache_message full, some;
	struct cache_mailbox mailbox;
	struct cache *cache;
	uint32_t uids[] = { 1, 2 };
	int before;

	setup();
	cache = open_account("up", "alice");
	mailbox = open_mailbox(cache, "INBOX", 1);
	for (unsigned int i = 0; i < 2; i++) {
		store_text(cache, mailbox.id, uids[i], CACHE_ITEM_ENVELOPE, "(env)");
		store_text(cache, mailbox.id, uids[i], CACHE_ITEM_HEADER, "Subject: x\r\n\r\n");
		store_text(cache, mailbox.id, uids[i], CACHE_ITEM_BODYSTRUCTURE, "(\"text\")");
		CU_ASSERT_EQUAL(cache_store_flags(cache, mailbox.id, uids[i], "\\Seen", 7), 0);
		CU_ASSERT_EQUAL(cache_store_size(cache, mailbox.id, uids[i], 42), 0);
	}
	CU_ASSERT_EQUAL(store_body(cache, mailbox.id, 2, 10, 10), 0);
	before = statements(cache);
	for (unsigned int i = 0; i < 2; i++) {
		CU_ASSERT_EQUAL(cache_lookup_many(cache, mailbox.id, &uids[i], 1, keep_message, &full), 1);
		CU_ASSERT_EQUAL(cache_lookup_values(cache, mailbox.id, &uids[i], 1, wanted, keep_message, &some), 1);
		CU_ASSERT_EQUAL(some.present, full.present & ~(CACHE_HAS(CACHE_ITEM_HEADER) |
							       CACHE_HAS(CACHE_ITEM_BODYSTRUCTURE)));
		CU_ASSERT_EQUAL(some.values[CACHE_ITEM_ENVELOPE].size, 5);
		CU_ASSERT_EQUAL(some.values[CACHE_ITEM_FLAGS].size, 5);
		CU_ASSERT_EQUAL(some.values[CACHE_ITEM_HEADER].size, 0);
		CU_ASSERT_EQUAL(some.size, 42);
		CU_ASSERT_EQUAL(some.modseq, 7);
		CU_ASSERT_EQUAL(some.message_size, full.message_size);
	}
	CU_ASSERT_EQUAL(cache_lookup_values(cache, mailbox.id, uids, 2, wanted, keep_message, &some), 2);
	CU_ASSERT_EQUAL(statements(cache), before + 1); /* a range's, prepared once and kept */
	CU_ASSERT_EQUAL(cache_lookup_values(cache, mailbox.id, (uint32_t[]){ 1, 50 }, 2, wanted, keep_message, &some),
			1);
	CU_ASSERT_EQUAL(some.uid, 1);
	CU_ASSERT_EQUAL(some.values[CACHE_ITEM_HEADER].size, 0);
	CU_ASSERT_EQUAL(statements(cache), before + 2); /* and one UID's */
	CU_ASSERT_EQUAL(query(cache, "SELECT count(*) FROM messages WHERE header IS NOT NULL"), 2);
	cache_unref(&cache);
	teardown();
}

static void test_checksums_catch_damage(void)
{
	struct cache_message message;
	struct cache_mailbox mailbox;
	struct evbuffer *out = evbuffer_new();
	char envelope[6000];
	struct cache *cache;

	setup();
	cache = open_account("up", "alice");
	mailbox = open_mailbox(cache, "INBOX", 1);
	memset(envelope, 'e', sizeof(envelope));
	CU_ASSERT_EQUAL(cache_store_item(cache, mailbox.id, 1, CACHE_ITEM_ENVELOPE, envelope, sizeof(envelope)), 0);
	store_text(cache, mailbox.id, 1, CACHE_ITEM_BODYSTRUCTURE, "(\"text\")");
	CU_ASSERT_EQUAL(store_body(cache, mailbox.id, 1, 3 * CHUNK + 10, 4096), 0);
	CU_ASSERT_EQUAL(store_fetched(cache, mailbox.id, 2, "(env)", NULL), 0);
	check_read(cache, mailbox.id, 1, 3 * CHUNK + 10, 0, UINT64_MAX);

	/* One byte in the middle of the envelope and of the second piece. */
	CU_ASSERT_EQUAL(sqlite3_exec(cache_sqlite_handle(cache),
				     "UPDATE messages SET envelope = substr(envelope, 1, 2999) || X'66' || "
				     "substr(envelope, 3001) WHERE uid = 1;"
				     "UPDATE messages SET envelope = X'28656E7629' WHERE uid = 2;" /* same bytes: sound */
				     "UPDATE body_chunks SET data = substr(data, 1, 99) || X'00' || substr(data, 101) "
				     "WHERE uid = 1 AND chunk = 1", NULL, NULL, NULL), SQLITE_OK);
	CU_ASSERT_EQUAL(cache_lookup(cache, mailbox.id, 1, &message), 1);
	CU_ASSERT_FALSE(message.present & CACHE_HAS(CACHE_ITEM_ENVELOPE));
	CU_ASSERT_PTR_NULL(message.values[CACHE_ITEM_ENVELOPE].data);
	CU_ASSERT_TRUE(value_is(&message, CACHE_ITEM_BODYSTRUCTURE, "(\"text\")", 8));
	CU_ASSERT_FALSE(message.present & CACHE_HAS(CACHE_ITEM_MESSAGE)); /* a lookup of a few checks bodies whole */
	cache_message_clear(&message);
	CU_ASSERT_TRUE(logged("a stored value of UID 1 (items 0x2) fails its checksum"));
	CU_ASSERT_EQUAL(query(cache, "SELECT count(*) FROM messages WHERE uid = 1 AND envelope IS NULL "
				     "AND envelope_sum IS NULL"), 1);
	CU_ASSERT_EQUAL(cache_lookup(cache, mailbox.id, 2, &message), 1);
	CU_ASSERT_TRUE(value_is(&message, CACHE_ITEM_ENVELOPE, "(env)", 5));
	cache_message_clear(&message);

	/* The damaged body is gone: not even the pieces before it are served. */
	CU_ASSERT_EQUAL(cache_body_read(cache, mailbox.id, 1, 0, UINT64_MAX, out), 0);
	CU_ASSERT_EQUAL(evbuffer_get_length(out), 0);
	CU_ASSERT_TRUE(logged("the stored body of UID 1 is damaged"));
	CU_ASSERT_EQUAL(query(cache, "SELECT count(*) FROM body_chunks WHERE uid = 1"), 0);
	check_body_bytes(cache);

	/* A body read without a lookup first (a large FETCH) checks its pieces too. */
	CU_ASSERT_EQUAL(store_body(cache, mailbox.id, 3, 2 * CHUNK, 4096), 0);
	CU_ASSERT_EQUAL(sqlite3_exec(cache_sqlite_handle(cache),
				     "UPDATE body_chunks SET data = substr(data, 1, 99) || X'00' || substr(data, 101) "
				     "WHERE uid = 3 AND chunk = 1", NULL, NULL, NULL), SQLITE_OK);
	CU_ASSERT_EQUAL(cache_body_read(cache, mailbox.id, 3, 0, 10, out), 1); /* the sound piece */
	evbuffer_drain(out, evbuffer_get_length(out));
	CU_ASSERT_EQUAL(cache_body_read(cache, mailbox.id, 3, CHUNK + 50, 100, out), 0);
	CU_ASSERT_EQUAL(evbuffer_get_length(out), 0);
	CU_ASSERT_TRUE(logged("the stored body of UID 3 is damaged"));
	CU_ASSERT_EQUAL(query(cache, "SELECT count(*) FROM bodies WHERE uid = 3"), 0);
	check_body_bytes(cache);

	/* A row of lookup_many the same way. */
	CU_ASSERT_EQUAL(sqlite3_exec(cache_sqlite_handle(cache), "UPDATE messages SET envelope = X'2878' WHERE uid = 2",
				     NULL, NULL, NULL), SQLITE_OK);
	CU_ASSERT_EQUAL(cache_lookup(cache, mailbox.id, 2, &message), 1);
	CU_ASSERT_FALSE(message.present & CACHE_HAS(CACHE_ITEM_ENVELOPE));
	cache_message_clear(&message);
	evbuffer_free(out);
	cache_unref(&cache);
	teardown();
}

/* The schema of version 1, as released: a store made by it. */
#define SCHEMA_V1 \
	"CREATE TABLE meta(key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL) WITHOUT ROWID;" \
	"CREATE TABLE mailboxes(id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE," \
	" uidvalidity INTEGER NOT NULL, uidnext INTEGER, highestmodseq INTEGER, uids BLOB);" \
	"CREATE TABLE messages(mailbox_id INTEGER NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE," \
	" uid INTEGER NOT NULL, internaldate BLOB, envelope BLOB, bodystructure BLOB, body_item BLOB," \
	" header BLOB, flags BLOB, size INTEGER, modseq INTEGER, structure_agrees INTEGER," \
	" PRIMARY KEY(mailbox_id, uid)) WITHOUT ROWID;" \
	"CREATE TABLE bodies(mailbox_id INTEGER NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE," \
	" uid INTEGER NOT NULL, size INTEGER NOT NULL, complete INTEGER NOT NULL, last_used INTEGER NOT NULL," \
	" PRIMARY KEY(mailbox_id, uid)) WITHOUT ROWID;" \
	"CREATE INDEX bodies_last_used ON bodies(last_used);" \
	"CREATE TABLE body_chunks(mailbox_id INTEGER NOT NULL, uid INTEGER NOT NULL, chunk INTEGER NOT NULL," \
	" data BLOB NOT NULL, PRIMARY KEY(mailbox_id, uid, chunk)," \
	" FOREIGN KEY(mailbox_id, uid) REFERENCES bodies(mailbox_id, uid) ON DELETE CASCADE);"

/* A store of version 1 (4 KiB pages, no auto_vacuum) is upgraded: its
   values get their checksums and are served, the file gets our layout. */
static void test_migration_from_v1(void)
{
	struct cache_message message;
	struct cache *cache;
	char *path;

	setup();
	path = account_path("up", "alice");
	make_database(path, "PRAGMA page_size = 4096; PRAGMA journal_mode = WAL;" SCHEMA_V1
			    "INSERT INTO meta VALUES('upstream', 'up'), ('user', 'alice');"
			    "INSERT INTO mailboxes(name, uidvalidity) VALUES('INBOX', 1);"
			    "INSERT INTO messages(mailbox_id, uid, envelope, header, flags) VALUES(1, 7, X'28656E7629', "
			    "zeroblob(0), '\\Seen');"
			    "INSERT INTO messages(mailbox_id, uid, internaldate, envelope, bodystructure, size) "
			    "VALUES(1, 8, 'd', 'e', 'b', 10);"
			    "INSERT INTO messages(mailbox_id, uid, header) VALUES(1, 9, X'583A20790D0A0D0A');" /* X: y */
			    "INSERT INTO messages(mailbox_id, uid, header) VALUES(1, 6, X'583A20790A0D0A');" /* bare LF */
			    "INSERT INTO bodies(mailbox_id, uid, size, complete, last_used) VALUES(1, 7, 3, 1, 0);"
			    "INSERT INTO body_chunks VALUES(1, 7, 0, X'00070E');" /* pattern() */
			    "PRAGMA user_version = 1;");
	cache = open_account("up", "alice");
	CU_ASSERT_EQUAL(query(cache, "PRAGMA user_version"), CACHE_SCHEMA_VERSION);
	CU_ASSERT_EQUAL(query(cache, "PRAGMA page_size"), 16384);
	CU_ASSERT_EQUAL(query(cache, "PRAGMA auto_vacuum"), 2);
	CU_ASSERT_EQUAL(query(cache, "SELECT count(*) FROM pragma_journal_mode WHERE journal_mode = 'wal'"), 1);
	CU_ASSERT_TRUE(logged("with 16384-byte pages and incremental vacuum (once)"));
	CU_ASSERT_EQUAL(cache_lookup(cache, 1, 7, &message), 1);
	CU_ASSERT_TRUE(value_is(&message, CACHE_ITEM_ENVELOPE, "(env)", 5));
	CU_ASSERT_TRUE(value_is(&message, CACHE_ITEM_HEADER, "", 0));
	CU_ASSERT_TRUE(value_is(&message, CACHE_ITEM_FLAGS, "\\Seen", 5));
	CU_ASSERT_EQUAL(message.message_size, 3);
	cache_message_clear(&message);
	check_read(cache, 1, 7, 3, 0, 3);
	CU_ASSERT_STRING_EQUAL(fixed_listed(cache, 1), "8"); /* migration 5 listed the rows with all four */
	CU_ASSERT_STRING_EQUAL(plain_headers_listed(cache, 1), "9"); /* migration 6 the plain header blocks */
	cache_unref(&cache);
	/* Once only. */
	log_text[0] = '\0';
	cache = open_account("up", "alice");
	CU_ASSERT_FALSE(logged("incremental vacuum (once)"));
	cache_unref(&cache);
	free(path);
	teardown();
}

/* A mailbox's FLAGS list: none until stored, then the last one stored;
   a store of version 9 (before the column) gets it empty. */
static void test_flag_list(void)
{
	struct cache_mailbox mailbox;
	struct cache *cache;
	char *text = NULL, *path;

	setup();
	path = account_path("up", "alice");
	cache = open_account("up", "alice");
	mailbox = open_mailbox(cache, "INBOX", 1);
	CU_ASSERT_EQUAL(cache_mailbox_get_flag_list(cache, mailbox.id, &text), 0);
	CU_ASSERT_PTR_NULL(text);
	CU_ASSERT_EQUAL(cache_mailbox_set_flag_list(cache, mailbox.id, "\\Seen $Junk"), 0);
	CU_ASSERT_EQUAL(cache_mailbox_set_flag_list(cache, mailbox.id, "\\Answered \\Seen $Junk $Work"), 0);
	CU_ASSERT_EQUAL(cache_mailbox_get_flag_list(cache, mailbox.id, &text), 1);
	CU_ASSERT_STRING_EQUAL(text, "\\Answered \\Seen $Junk $Work");
	free(text);
	CU_ASSERT_EQUAL(cache_mailbox_set_flag_list(cache, mailbox.id + 1, "x"), -1); /* no such mailbox */
	CU_ASSERT_EQUAL(cache_mailbox_set_flag_list(cache, mailbox.id, NULL), 0);
	CU_ASSERT_EQUAL(cache_mailbox_get_flag_list(cache, mailbox.id, &text), 0); /* forgotten */
	CU_ASSERT_EQUAL(cache_mailbox_set_flag_list(cache, mailbox.id, "\\Answered \\Seen $Junk $Work"), 0);
	cache_unref(&cache);
	make_database(path, "ALTER TABLE mailboxes DROP COLUMN flag_list; PRAGMA user_version = 9;");
	cache = open_account("up", "alice");
	CU_ASSERT_EQUAL(query(cache, "PRAGMA user_version"), CACHE_SCHEMA_VERSION);
	CU_ASSERT_EQUAL(cache_mailbox_get_flag_list(cache, mailbox.id, &text), 0);
	CU_ASSERT_EQUAL(cache_mailbox_lookup(cache, "INBOX", &mailbox), 1);
	cache_unref(&cache);
	free(path);
	teardown();
}

/* A store of version 8 (a body's text in one row, rowid (mailbox_id <<
   32) | uid) is upgraded: its text rows go, its bodies are indexed again
   in pieces, and a body's delete takes its pieces. */
static void test_migration_to_text_pieces(void)
{
	struct cache_mailbox mailbox;
	struct cache *cache;
	char *path;

	setup();
	path = account_path("up", "alice");
	cache = open_account("up", "alice");
	mailbox = open_mailbox(cache, "INBOX", 1);
	store_text_body(cache, mailbox.id, 5, 4096);
	cache_unref(&cache);
	make_database(path, "DROP TRIGGER bodies_text_gone; DROP TABLE body_text;"
			    "CREATE VIRTUAL TABLE body_text USING fts5(sure UNINDEXED, head, body,"
			    " tokenize = 'trigram case_sensitive 1');"
			    "CREATE TRIGGER bodies_text_gone AFTER DELETE ON bodies BEGIN"
			    " DELETE FROM body_text WHERE rowid = (old.mailbox_id << 32) | old.uid; END;"
			    "INSERT INTO body_text(rowid, sure, head, body) VALUES((1 << 32) | 5, 1, 'H', 'OLD TEXT');"
			    "UPDATE bodies SET text_indexed = 1; ALTER TABLE mailboxes DROP COLUMN flag_list;"
			    "PRAGMA user_version = 8;");
	cache = open_account("up", "alice");
	CU_ASSERT_EQUAL(query(cache, "PRAGMA user_version"), CACHE_SCHEMA_VERSION);
	CU_ASSERT_EQUAL(query(cache, "SELECT count(*) FROM body_text"), 0);
	CU_ASSERT_EQUAL(query(cache, "SELECT count(*) FROM bodies WHERE text_indexed = 0"), 1);
	while (cache_fts_index_batch(cache, CACHE_FTS_BATCH_BYTES) > 0)
		;
	CU_ASSERT_EQUAL(query(cache, "SELECT count(*) FROM body_text WHERE rowid = (((1 << 32) | 5) << 8)"), 1);
	query(cache, "DELETE FROM bodies WHERE uid = 5");
	CU_ASSERT_EQUAL(query(cache, "SELECT count(*) FROM body_text"), 0);
	cache_unref(&cache);
	free(path);
	teardown();
}

/* The default VFS, with its opens of savepoint journals (sub-journals)
   counted: SQLite opens one only when a journal outgrows memory. */
static sqlite3_vfs counting_vfs;
static sqlite3_vfs *counted_vfs;
static int subjournal_files;

static int counting_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *file, int flags, int *out_flags)
{
	(void)vfs;
	if (flags & SQLITE_OPEN_SUBJOURNAL) /* the store's worker opens through it too */
		__atomic_fetch_add(&subjournal_files, 1, __ATOMIC_RELAXED);
	return counted_vfs->xOpen(counted_vfs, name, file, flags, out_flags);
}

/* Bodies streamed in as a warm brings them, many to a transaction: no
   write op's savepoint journal leaves memory. Each spill is a file made,
   written and unlinked in the temporary directory, and every later op of
   that transaction then writes its journal there too: in the benchmark's
   warm, twice the bytes of the bodies themselves. */
static void test_body_journals_stay_in_memory(void)
{
	struct cache *cache;
	struct cache_mailbox mailbox;
	bool reset = false;
	int owner;

	setup();
	CU_ASSERT_EQUAL_FATAL(cache_library_init(), 0);
	counted_vfs = sqlite3_vfs_find(NULL);
	CU_ASSERT_PTR_NOT_NULL_FATAL(counted_vfs);
	counting_vfs = *counted_vfs;
	counting_vfs.zName = "test-cache-counting";
	counting_vfs.xOpen = counting_open;
	CU_ASSERT_EQUAL_FATAL(sqlite3_vfs_register(&counting_vfs, 1), SQLITE_OK);
	cache = open_account("up", "alice");
	mailbox = open_mailbox(cache, "INBOX", 1);
	__atomic_store_n(&subjournal_files, 0, __ATOMIC_RELAXED); /* the migrations of a new store make some */
	for (uint32_t uid = 1; uid <= 400; uid++) {
		/* 1 KB to 200 KB, the corpus's range but its largest, a batch
		   per 16 bodies as reads from upstream bring them */
		if (uid % 16 == 1)
			cache_batch_begin_for(cache, &owner);
		CU_ASSERT_EQUAL(store_body(cache, mailbox.id, uid, 1000 + (uid * 7919) % 200000, 16384), 0);
		if (uid % 16 == 0 || uid == 400)
			CU_ASSERT_EQUAL(cache_batch_end_soon(cache), 0);
	}
	cache_unref(&cache);
	CU_ASSERT_EQUAL(__atomic_load_n(&subjournal_files, __ATOMIC_RELAXED), 0);
	cache = open_account("up", "alice");
	CU_ASSERT_EQUAL(query(cache, "SELECT count(*) FROM bodies WHERE complete = 1"), 400);
	/* an op that changes more pages than memory keeps (a UIDVALIDITY
	   change drops them all) has its journal go to a file, and works:
	   the file gets it in writes SQLite's VFS takes whole */
	__atomic_store_n(&subjournal_files, 0, __ATOMIC_RELAXED);
	CU_ASSERT_EQUAL(cache_mailbox_open(cache, "INBOX", 2, &mailbox, &reset), 0);
	CU_ASSERT_TRUE(reset);
	CU_ASSERT(__atomic_load_n(&subjournal_files, __ATOMIC_RELAXED) > 0);
	CU_ASSERT_EQUAL(query(cache, "SELECT count(*) FROM bodies"), 0);
	cache_unref(&cache);
	sqlite3_vfs_unregister(&counting_vfs);
	teardown();
}

const char unit_suite_name[] = "cache";
const struct unit_test unit_tests[] = {
	{ "open, share and unref", test_open_share_unref },
	{ "directory and file modes", test_modes },
	{ "file names", test_file_names },
	{ "hostile user names stay inside the directory", test_hostile_names },
	{ "migrations", test_migrations },
	{ "a store of version 8 gets its text indexed again, in pieces", test_migration_to_text_pieces },
	{ "a mailbox's FLAGS list, and a store of version 9 upgraded", test_flag_list },
	{ "a garbage file is moved aside", test_garbage_moved_aside },
	{ "another account's store is moved aside", test_account_mismatch },
	{ "mailboxes", test_mailboxes },
	{ "a UIDVALIDITY change drops the mailbox", test_uidvalidity_change },
	{ "items round-trip byte for byte", test_items_round_trip },
	{ "the upstream's PREVIEW, kept with its message", test_previews },
	{ "absent is not empty", test_absent_is_not_empty },
	{ "flags and MODSEQ", test_flags_and_modseq },
	{ "flags of a UID range read and forgotten", test_flag_ranges },
	{ "batches commit and roll back", test_batches },
	{ "held rows: seen by every read, written in order, by time, size and at close", test_held_rows },
	{ "bodies of every size around a piece", test_body_sizes },
	{ "bodies stored many to a transaction keep their journals in memory", test_body_journals_stay_in_memory },
	{ "partial body reads", test_body_partial_reads },
	{ "a read records the body's use", test_body_use_recorded },
	{ "body aborts and refusals", test_body_abort_and_refusals },
	{ "eviction: least recently used first, never a body in use", test_eviction },
	{ "a read's use of a body: held, written by time, before an eviction and at close", test_body_use_held },
	{ "eviction at open shrinks the file", test_eviction_at_open_shrinks_the_file },
	{ "a pin keeps an answer's rows through an expunge", test_pin_holds_expunged_rows },
	{ "a pin's held drops wait out a store another process holds", test_pin_drops_wait_out_a_busy_store },
	{ "a pin keeps a purged or reset mailbox's rows, and a crash leaves none", test_pin_holds_dropped_mailbox },
	{ "eviction passes pinned bodies by, however many", test_pin_spares_bodies_from_eviction },
	{ "drops held while writes are off are made once they are back", test_pin_drops_wait_for_writes },
	{ "a body writer outlives its session", test_body_writer_outlives_its_session },
	{ "an unfinished body after a crash", test_unfinished_body_after_a_crash },
	{ "UID lists", test_uid_lists },
	{ "looking up many messages", test_lookup_many },
	{ "WAL checkpoints run on their own thread, on the loop only when it falls behind", test_checkpoints_off_the_loop },
	{ "a fill with no gap between its transactions keeps its WAL near the mark", test_wal_restarts_in_a_fill },
	{ "a RESTART a reader keeps from working is not wanted again at once", test_wal_restart_backs_off },
	{ "a failure of the store's worker is logged in its own words, and caching stops", test_worker_failure_logged },
	{ "a full store turns writes off", test_full_store },
	{ "a read-only directory", test_read_only_directory },
	{ "an unreadable file is moved aside", test_unreadable_file },
	{ "a store replaced while open leaves no WAL behind", test_replaced_while_open },
	{ "a store lingers after its last session, and is taken up again", test_linger },
	{ "damaged rows count as missing", test_damaged_rows_count_as_missing },
	{ "damaged body sizes never block a reset or an open", test_damaged_body_sizes },
	{ "the checksum is XXH64", test_checksum_vectors },
	{ "checksums catch damage SQLite can't see", test_checksums_catch_damage },
	{ "a lookup of some values checks only theirs", test_lookup_values_checks_those_asked },
	{ "a lookup of some values selects only theirs", test_lookup_values_selects_those_asked },
	{ "a store of version 1 is upgraded", test_migration_from_v1 },
	{ "a held batch commits by its timer, a plain end, an own write or the last unref", test_batch_held },
	{ "sizes are read from their own index", test_lookup_sizes },
	{ "INTERNALDATEs are read from their own index, never a damaged one", test_lookup_internaldates },
	{ "header blocks are read from the rows alone, never a damaged one", test_lookup_headers },
	{ "which messages have their fixed items, kept by every write", test_lookup_fixed },
	{ "which messages have a plain header block, kept by every write", test_lookup_plain_headers },
	{ NULL, NULL },
};
