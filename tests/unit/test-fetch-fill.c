/* SPDX-License-Identifier: MIT */
/* Unit tests for daemon/fetch-fill: FETCH lines into the store and the view, whole messages streamed, bad lines stored nowhere. */
#include "config.h"
#include "unit.h"
#include "unit-cache.h"
#include "cache.h"
#include "fetch-fill.h"
#include "log.h"
#include "mailbox-view.h"
#include "mime-buffer.h"
#include "mime-imap.h"
#include "mime-parser.h"

#include <event2/buffer.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PART_MAX (32 * 1024) /* the client core's raw parts */

static struct unit_cache store;
static struct cache *cache;
static struct mailbox_view *view;
static struct fetch_fill *fill;
static int64_t mailbox_id;

/* A message and the BODYSTRUCTURE Dovecot 2.3 gives it. */
static const char message_text[] = "Subject: hi\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nhello\r\n";
static const char message_structure[] = "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 7 1 NIL NIL NIL NIL)";
static const char message_body[] = "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 7 1)";

static void setup(void)
{
	static const uint32_t uids[] = { 10, 20, 30 };

	unit_cache_open(&store, "test-fetch-fill",
			(struct cache_settings){ .body_budget = 64 << 20, .body_max_size = 16 << 20 }, uids, 3);
	cache = store.cache;
	mailbox_id = store.mailbox_id;
	view = store.view;
	fill = fetch_fill_new();
	CU_ASSERT_PTR_NOT_NULL_FATAL(fill);
	fetch_fill_set_mailbox(fill, cache, mailbox_id, view);
}

static void teardown(void)
{
	fetch_fill_free(&fill);
	CU_ASSERT_PTR_NULL(fill);
	store.cache = cache; /* a test may have opened it anew */
	unit_cache_close(&store);
}

/* Feeds line (len bytes) in parts of at most part bytes, as the raw callback does. */
static enum imap_fetch_items_result feed_parts(const void *line, size_t len, size_t part)
{
	enum imap_fetch_items_result result = IMAP_FETCH_ITEMS_NEED_MORE;

	for (size_t pos = 0; pos < len;) {
		size_t n = len - pos < part ? len - pos : part;

		result = fetch_fill_feed(fill, (const unsigned char *)line + pos, n, pos + n == len);
		pos += n;
	}
	return result;
}

static enum imap_fetch_items_result feed(const char *line)
{
	return feed_parts(line, strlen(line), PART_MAX);
}

/* The stored value of item for uid as a string ("" when absent: see present). */
static struct cache_message lookup(uint32_t uid)
{
	struct cache_message message;

	memset(&message, 0, sizeof(message));
	CU_ASSERT_NOT_EQUAL(cache_lookup(cache, mailbox_id, uid, &message), -1);
	return message;
}

/* How many messages have a row in the store. */
static int64_t query_count_messages(void)
{
	sqlite3_stmt *stmt;
	int64_t count = -1;

	CU_ASSERT_EQUAL_FATAL(sqlite3_prepare_v2(cache_sqlite_handle(cache), "SELECT count(*) FROM messages", -1, &stmt,
						 NULL),
			      SQLITE_OK);
	if (sqlite3_step(stmt) == SQLITE_ROW)
		count = sqlite3_column_int64(stmt, 0);
	sqlite3_finalize(stmt);
	return count;
}

static bool value_is(const struct cache_message *message, enum cache_item item, const char *text)
{
	return (message->present & CACHE_HAS(item)) != 0 && message->values[item].size == strlen(text) &&
	       memcmp(message->values[item].data, text, strlen(text)) == 0;
}

/* The stored whole message of uid, or NULL (free it). */
static char *stored_body(uint32_t uid)
{
	struct evbuffer *out = evbuffer_new();
	char *text = NULL;
	uint64_t size;

	if (cache_body_size(cache, mailbox_id, uid, &size) == 1 &&
	    cache_body_read(cache, mailbox_id, uid, 0, size, out) == 1) {
		text = calloc(1, evbuffer_get_length(out) + 1);
		evbuffer_remove(out, text, evbuffer_get_length(out));
	}
	evbuffer_free(out);
	return text;
}

static void test_fixed_items(void)
{
	struct cache_message message;
	char line[4096];

	setup();
	snprintf(line, sizeof(line),
		 "* 2 FETCH (UID 20 FLAGS (\\Seen \\Recent $Junk) MODSEQ (77) INTERNALDATE \"01-Jan-2019 00:16:18 +0000\" "
		 "RFC822.SIZE 66 ENVELOPE (\"d\" {3}\r\nsub NIL NIL NIL NIL NIL NIL NIL NIL) BODYSTRUCTURE %s BODY %s "
		 "BODY[HEADER] {13}\r\nSubject: hi\r\n)\r\n",
		 message_structure, message_body);
	CU_ASSERT_EQUAL(feed(line), IMAP_FETCH_ITEMS_COMPLETE);
	message = lookup(20);
	CU_ASSERT(value_is(&message, CACHE_ITEM_INTERNALDATE, "\"01-Jan-2019 00:16:18 +0000\""));
	CU_ASSERT(value_is(&message, CACHE_ITEM_ENVELOPE, "(\"d\" {3}\r\nsub NIL NIL NIL NIL NIL NIL NIL NIL)"));
	CU_ASSERT(value_is(&message, CACHE_ITEM_BODYSTRUCTURE, message_structure));
	CU_ASSERT(value_is(&message, CACHE_ITEM_BODY, message_body));
	CU_ASSERT(value_is(&message, CACHE_ITEM_HEADER, "Subject: hi\r\n"));
	CU_ASSERT(value_is(&message, CACHE_ITEM_FLAGS, "\\Seen $Junk")); /* the store keeps no \Recent */
	CU_ASSERT(message.present & CACHE_HAS(CACHE_ITEM_SIZE));
	CU_ASSERT_EQUAL(message.size, 66);
	CU_ASSERT_EQUAL(message.modseq, 77);
	CU_ASSERT_FALSE(message.present & CACHE_HAS(CACHE_ITEM_STRUCTURE_AGREES)); /* no whole message yet */
	cache_message_clear(&message);
	/* the view hears what the upstream told this session, \Recent and all */
	CU_ASSERT_STRING_EQUAL(mailbox_view_get(view, 2)->flags, "\\Seen \\Recent $Junk");
	CU_ASSERT_TRUE(mailbox_view_get(view, 2)->recent);
	CU_ASSERT_EQUAL(mailbox_view_get(view, 2)->modseq, 77);
	/* RFC822.HEADER is the header block too; a quoted one is unescaped */
	CU_ASSERT_EQUAL(feed("* 1 FETCH (UID 10 RFC822.HEADER {6}\r\nA: b\r\n)\r\n"), IMAP_FETCH_ITEMS_COMPLETE);
	CU_ASSERT_EQUAL(feed("* 3 FETCH (UID 30 BODY[HEADER] \"A: \\\"b\\\"\")\r\n"), IMAP_FETCH_ITEMS_COMPLETE);
	message = lookup(10);
	CU_ASSERT(value_is(&message, CACHE_ITEM_HEADER, "A: b\r\n"));
	cache_message_clear(&message);
	message = lookup(30);
	CU_ASSERT(value_is(&message, CACHE_ITEM_HEADER, "A: \"b\""));
	cache_message_clear(&message);
	teardown();
}

/* Without a UID item the view's UID of the number is used (translated
   while an expunge is held); NIL and partial items store nothing. */
static void test_uid_from_view_and_nil(void)
{
	struct cache_message message;

	setup();
	CU_ASSERT_EQUAL(feed("* 3 FETCH (FLAGS ())\r\n"), IMAP_FETCH_ITEMS_COMPLETE);
	message = lookup(30);
	CU_ASSERT(value_is(&message, CACHE_ITEM_FLAGS, ""));
	cache_message_clear(&message);
	CU_ASSERT_STRING_EQUAL(mailbox_view_get(view, 3)->flags, "");
	/* a line whose UID is not the view's for its number: stored for its UID, the view left alone */
	CU_ASSERT_EQUAL(feed("* 1 FETCH (UID 99 FLAGS (\\Deleted))\r\n"), IMAP_FETCH_ITEMS_COMPLETE);
	CU_ASSERT_PTR_NULL(mailbox_view_get(view, 1)->flags);
	message = lookup(99);
	CU_ASSERT(value_is(&message, CACHE_ITEM_FLAGS, "\\Deleted"));
	cache_message_clear(&message);
	CU_ASSERT_EQUAL(mailbox_view_upstream_expunge(view, 1, true), 1); /* held: upstream 2 is the client's 3 */
	CU_ASSERT_EQUAL(feed("* 2 FETCH (RFC822.SIZE 5 ENVELOPE NIL BODY[]<0> {2}\r\nab BINARY[1] {1}\r\nx "
			     "BODY[] NIL BODY[HEADER] NIL INTERNALDATE NIL)\r\n"),
			IMAP_FETCH_ITEMS_COMPLETE);
	message = lookup(30);
	CU_ASSERT_EQUAL(message.size, 5);
	CU_ASSERT_EQUAL(message.present & (CACHE_HAS(CACHE_ITEM_ENVELOPE) | CACHE_HAS(CACHE_ITEM_HEADER) |
					   CACHE_HAS(CACHE_ITEM_INTERNALDATE) | CACHE_HAS(CACHE_ITEM_MESSAGE)), 0);
	cache_message_clear(&message);
	/* a line for a number the view has no UID for stores nothing */
	CU_ASSERT_EQUAL(mailbox_view_upstream_exists(view, 3), 0);
	CU_ASSERT_EQUAL(feed("* 3 FETCH (RFC822.SIZE 9)\r\n"), IMAP_FETCH_ITEMS_COMPLETE);
	CU_ASSERT_EQUAL(query_count_messages(), 2); /* UIDs 30 and 99 */
	/* but its UID item teaches the view */
	CU_ASSERT_EQUAL(feed("* 3 FETCH (UID 31 RFC822.SIZE 9)\r\n"), IMAP_FETCH_ITEMS_COMPLETE);
	CU_ASSERT_EQUAL(mailbox_view_get(view, 4)->uid, 31);
	message = lookup(31);
	CU_ASSERT_EQUAL(message.size, 9);
	cache_message_clear(&message);
	teardown();
}

/* The stored PREVIEW of uid, "-" when none. */
static const char *stored_preview(uint32_t uid)
{
	static char text[256];
	struct evbuffer *out = evbuffer_new();
	size_t len;

	strcpy(text, "-");
	if (cache_lookup_preview(cache, mailbox_id, uid, out) == 1 && (len = evbuffer_get_length(out)) < sizeof(text)) {
		evbuffer_remove(out, text, len);
		text[len] = '\0';
	}
	evbuffer_free(out);
	return text;
}

/* PREVIEW is stored as the upstream wrote it, quoted or a literal; NIL,
   and a line that ends short, store none. */
static void test_preview(void)
{
	setup();
	CU_ASSERT_EQUAL(feed("* 1 FETCH (UID 10 PREVIEW \"Lunch at \\\"Noon\\\"?\")\r\n"), IMAP_FETCH_ITEMS_COMPLETE);
	CU_ASSERT_STRING_EQUAL(stored_preview(10), "\"Lunch at \\\"Noon\\\"?\"");
	CU_ASSERT_EQUAL(feed("* 2 FETCH (PREVIEW {6}\r\ncaf\xc3\xa9! FLAGS ())\r\n"), IMAP_FETCH_ITEMS_COMPLETE);
	CU_ASSERT_STRING_EQUAL(stored_preview(20), "{6}\r\ncaf\xc3\xa9!");
	CU_ASSERT_EQUAL(feed("* 3 FETCH (UID 30 PREVIEW NIL)\r\n"), IMAP_FETCH_ITEMS_COMPLETE);
	CU_ASSERT_STRING_EQUAL(stored_preview(30), "-");
	CU_ASSERT_NOT_EQUAL(feed("* 3 FETCH (UID 30 PREVIEW \"cut\" BODY[] {9}\r\nshort)\r\n"), IMAP_FETCH_ITEMS_COMPLETE);
	CU_ASSERT_STRING_EQUAL(stored_preview(30), "-");
	teardown();
}

static bool agrees(uint32_t uid, bool *agrees_r)
{
	struct cache_message message = lookup(uid);
	bool decided = (message.present & CACHE_HAS(CACHE_ITEM_STRUCTURE_AGREES)) != 0;

	*agrees_r = message.structure_agrees;
	cache_message_clear(&message);
	return decided;
}

/* A whole message that comes whole is stored, parsed, and its structure
   compared with the upstream's; a BODYSTRUCTURE that comes later is
   compared then. */
static void test_small_message_and_structure(void)
{
	char line[1024];
	char *body;
	bool same;

	setup();
	snprintf(line, sizeof(line), "* 1 FETCH (UID 10 BODYSTRUCTURE %s BODY[] {%zu}\r\n%s)\r\n", message_structure,
		 strlen(message_text), message_text);
	CU_ASSERT_EQUAL(feed(line), IMAP_FETCH_ITEMS_COMPLETE);
	body = stored_body(10);
	CU_ASSERT_STRING_EQUAL(body, message_text);
	free(body);
	CU_ASSERT_TRUE(agrees(10, &same) && same);
	/* the message first, then a BODYSTRUCTURE that is not ours */
	snprintf(line, sizeof(line), "* 2 FETCH (RFC822 {%zu}\r\n%s UID 20)\r\n", strlen(message_text), message_text);
	CU_ASSERT_EQUAL(feed(line), IMAP_FETCH_ITEMS_COMPLETE);
	CU_ASSERT_FALSE(agrees(20, &same)); /* nothing to compare with yet */
	CU_ASSERT_EQUAL(feed("* 2 FETCH (BODYSTRUCTURE (\"text\" \"plain\" NIL NIL NIL \"7bit\" 7 1 NIL NIL NIL NIL))\r\n"),
			IMAP_FETCH_ITEMS_COMPLETE);
	CU_ASSERT_TRUE(agrees(20, &same) && !same);
	/* BODY alone is compared too */
	snprintf(line, sizeof(line), "* 3 FETCH (UID 30 BODY.PEEK[] {%zu}\r\n%s BODY %s)\r\n", strlen(message_text),
		 message_text, message_body);
	CU_ASSERT_EQUAL(feed(line), IMAP_FETCH_ITEMS_COMPLETE);
	body = stored_body(30);
	CU_ASSERT_PTR_NULL(body); /* the name BODY.PEEK[] is never in a response: not stored */
	free(body);
	snprintf(line, sizeof(line), "* 3 FETCH (UID 30 BODY[] {%zu}\r\n%s BODY %s)\r\n", strlen(message_text),
		 message_text, message_body);
	CU_ASSERT_EQUAL(feed(line), IMAP_FETCH_ITEMS_COMPLETE);
	CU_ASSERT_TRUE(agrees(30, &same) && same);
	teardown();
}

/* A large message of size bytes, and its line head and tail. */
static char *big_line(uint32_t seq, size_t size, size_t *len_r, const char *after)
{
	char *line = malloc(size + 256);
	int n = sprintf(line, "* %u FETCH (BODY[] {%zu}\r\n", seq, size);

	for (size_t i = 0; i < size; i++)
		line[n + i] = (i + 1) % 80 == 0 ? '\n' : (char)('a' + i % 26);
	memcpy(line + n, "Subject: x\r\n\r\n", 15);
	n += (int)size;
	n += sprintf(line + n, "%s)\r\n", after);
	*len_r = (size_t)n;
	return line;
}

/* Our BODYSTRUCTURE of the message in a big_line (NUL-terminated; free it). */
static char *big_line_structure(const char *line, size_t size)
{
	const unsigned char *raw = (const unsigned char *)strchr(line, '\n') + 1;
	struct mime_message *root = mime_parse_borrowed(raw, size);
	struct mime_buffer ours = { 0 };
	char *text;

	CU_ASSERT_PTR_NOT_NULL_FATAL(root);
	mime_imap_bodystructure(root, raw, size, 1, &ours);
	text = strndup((const char *)ours.data, ours.len);
	mime_buffer_free(&ours);
	mime_message_free(&root);
	return text;
}

/* A streamed message's structure is compared with the upstream's too,
   read back from the store: whether the BODYSTRUCTURE comes in a later
   line or after the message in its own. */
static void test_streamed_structure(void)
{
	size_t size = 300 * 1000, len;
	char *line = big_line(2, size, &len, " UID 20");
	char *ours = big_line_structure(line, size);
	char after[1024];
	bool same;

	setup();
	CU_ASSERT_EQUAL(feed_parts(line, len, PART_MAX), IMAP_FETCH_ITEMS_COMPLETE);
	free(line);
	CU_ASSERT_FALSE(agrees(20, &same)); /* nothing to compare with yet */
	snprintf(after, sizeof(after), "* 2 FETCH (UID 20 BODYSTRUCTURE %s)\r\n", ours);
	CU_ASSERT_EQUAL(feed(after), IMAP_FETCH_ITEMS_COMPLETE);
	CU_ASSERT_TRUE(agrees(20, &same) && same);
	/* in the message's own line: one not ours, then ours */
	line = big_line(3, size, &len, " UID 30 BODYSTRUCTURE (\"text\" \"plain\" NIL NIL NIL \"7bit\" 7 1 NIL NIL NIL NIL)");
	CU_ASSERT_EQUAL(feed_parts(line, len, PART_MAX), IMAP_FETCH_ITEMS_COMPLETE);
	free(line);
	CU_ASSERT_TRUE(agrees(30, &same) && !same);
	snprintf(after, sizeof(after), " UID 10 BODYSTRUCTURE %s", ours);
	line = big_line(1, size, &len, after);
	CU_ASSERT_EQUAL(feed_parts(line, len, 5000), IMAP_FETCH_ITEMS_COMPLETE);
	free(line);
	CU_ASSERT_TRUE(agrees(10, &same) && same);
	free(ours);
	teardown();
}

/* A message past the splitter's threshold streams into the store; it
   counts only once its line ended well-formed. */
static void test_streamed_message(void)
{
	size_t size = 300 * 1000, len;
	char *line = big_line(2, size, &len, " UID 20");
	char *body;
	uint64_t stored;

	setup();
	CU_ASSERT_EQUAL(feed_parts(line, len, PART_MAX), IMAP_FETCH_ITEMS_COMPLETE);
	CU_ASSERT_EQUAL(cache_body_size(cache, mailbox_id, 20, &stored), 1);
	CU_ASSERT_EQUAL(stored, size);
	body = stored_body(20);
	CU_ASSERT(body != NULL && memcmp(body, strchr(line, '\n') + 1, size) == 0);
	free(body);
	/* cut off before its ")": nothing */
	CU_ASSERT_EQUAL(feed_parts(line, len - 3, PART_MAX), IMAP_FETCH_ITEMS_MALFORMED);
	CU_ASSERT_EQUAL(cache_body_size(cache, mailbox_id, 30, &stored), 0);
	free(line);
	/* a UID item after the message that is not the view's: not stored */
	line = big_line(3, size, &len, " UID 31");
	CU_ASSERT_EQUAL(feed_parts(line, len, PART_MAX), IMAP_FETCH_ITEMS_COMPLETE);
	CU_ASSERT_EQUAL(cache_body_size(cache, mailbox_id, 30, &stored), 0);
	CU_ASSERT_EQUAL(cache_body_size(cache, mailbox_id, 31, &stored), 0);
	/* the connection lost half-way: aborted, and the next try stores it */
	CU_ASSERT_EQUAL(fetch_fill_feed(fill, (const unsigned char *)line, len / 2, false), IMAP_FETCH_ITEMS_NEED_MORE);
	fetch_fill_abort(fill);
	CU_ASSERT_EQUAL(cache_body_size(cache, mailbox_id, 30, &stored), 0);
	free(line);
	line = big_line(3, size, &len, "");
	CU_ASSERT_EQUAL(feed_parts(line, len, 7777), IMAP_FETCH_ITEMS_COMPLETE);
	CU_ASSERT_EQUAL(cache_body_size(cache, mailbox_id, 30, &stored), 1);
	/* a malformed line stores none of its values either */
	CU_ASSERT_EQUAL(feed("* 1 FETCH (RFC822.SIZE 5 INTERNALDATE \"x\" FLAGS (\\Seen) ENVELOPE (NIL) X)\r\n"),
			IMAP_FETCH_ITEMS_MALFORMED);
	CU_ASSERT_EQUAL(query_count_messages(), 2); /* UIDs 20 and 30, of their messages */
	CU_ASSERT_PTR_NULL(mailbox_view_get(view, 1)->flags);
	/* lines that are no FETCH pass */
	CU_ASSERT_EQUAL(feed("* 4 EXISTS\r\n"), IMAP_FETCH_ITEMS_NOT_FETCH);
	free(line);
	teardown();
}

/* Without a store the view still hears the lines; a message too large
   for the store is passed by. */
static void test_no_store(void)
{
	struct cache_settings settings = { .dir = NULL, .body_budget = 1 << 20, .body_max_size = 1000 };
	size_t len;
	char *line = big_line(1, 70000, &len, " UID 10 FLAGS (\\Deleted)");
	const char *error;
	uint64_t stored;

	setup();
	fetch_fill_set_mailbox(fill, NULL, 0, view);
	CU_ASSERT_EQUAL(feed("* 1 FETCH (FLAGS (\\Answered) MODSEQ (3))\r\n"), IMAP_FETCH_ITEMS_COMPLETE);
	CU_ASSERT_STRING_EQUAL(mailbox_view_get(view, 1)->flags, "\\Answered");
	CU_ASSERT_EQUAL(query_count_messages(), 0);
	/* a store whose maximum size is below the message */
	settings.dir = store.cache_dir;
	CU_ASSERT_PTR_EQUAL(cache_open(&settings, "up", "alice", &error), cache);
	fetch_fill_set_mailbox(fill, cache, mailbox_id, view);
	CU_ASSERT_EQUAL(feed_parts(line, len, PART_MAX), IMAP_FETCH_ITEMS_COMPLETE);
	CU_ASSERT_EQUAL(cache_body_size(cache, mailbox_id, 10, &stored), 0);
	CU_ASSERT_STRING_EQUAL(mailbox_view_get(view, 1)->flags, "\\Deleted");
	cache_unref(&cache); /* the second open's reference */
	cache = NULL;
	free(line);
	fetch_fill_set_mailbox(fill, NULL, 0, NULL);
	{
		struct cache_settings again = { .dir = store.cache_dir, .body_budget = 64 << 20, .body_max_size = 16 << 20 };
		cache = cache_open(&again, "up", "alice", &error);
		CU_ASSERT_PTR_NOT_NULL(cache);
	}
	teardown();
}

/* BINARY[] and BINARY.PEEK[] carry the message decoded, not as the
   upstream stores it: never kept as the message (issue 11 item 3), in a
   literal or a literal8, and a section of it neither. */
static void test_binary_not_stored(void)
{
	char line[1024];
	char *body;

	setup();
	snprintf(line, sizeof(line), "* 1 FETCH (UID 10 BINARY[] {%zu}\r\n%s)\r\n", strlen(message_text), message_text);
	CU_ASSERT_EQUAL(feed(line), IMAP_FETCH_ITEMS_COMPLETE);
	snprintf(line, sizeof(line), "* 2 FETCH (UID 20 BINARY[] ~{%zu}\r\n%s)\r\n", strlen(message_text), message_text);
	CU_ASSERT_EQUAL(feed(line), IMAP_FETCH_ITEMS_COMPLETE);
	snprintf(line, sizeof(line), "* 3 FETCH (UID 30 BINARY[1] {5}\r\nhello BINARY.SIZE[] %zu)\r\n",
		 strlen(message_text));
	CU_ASSERT_EQUAL(feed(line), IMAP_FETCH_ITEMS_COMPLETE);
	for (uint32_t uid = 10; uid <= 30; uid += 10) {
		struct cache_message stored = lookup(uid);

		body = stored_body(uid);
		CU_ASSERT_PTR_NULL(body);
		free(body);
		CU_ASSERT_FALSE((stored.present & CACHE_HAS(CACHE_ITEM_MESSAGE)) != 0);
		cache_message_clear(&stored);
	}
	/* the same message as BODY[] is kept: the test can see a stored one */
	snprintf(line, sizeof(line), "* 1 FETCH (UID 10 BODY[] {%zu}\r\n%s)\r\n", strlen(message_text), message_text);
	CU_ASSERT_EQUAL(feed(line), IMAP_FETCH_ITEMS_COMPLETE);
	body = stored_body(10);
	CU_ASSERT_STRING_EQUAL(body, message_text);
	free(body);
	teardown();
}

const char unit_suite_name[] = "fetch-fill";
const struct unit_test unit_tests[] = {
	{ "fixed items to the store and the view", test_fixed_items },
	{ "UID from the view, NIL and partial items", test_uid_from_view_and_nil },
	{ "a message that comes whole, structure compared", test_small_message_and_structure },
	{ "a large message streams; short or aborted lines store nothing", test_streamed_message },
	{ "a streamed message's structure compared, read back", test_streamed_structure },
	{ "no store; a message over the maximum size", test_no_store },
	{ "BINARY[] is never stored as the message", test_binary_not_stored },
	{ "PREVIEW stored as written", test_preview },
	{ NULL, NULL },
};
