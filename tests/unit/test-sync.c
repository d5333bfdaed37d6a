/* SPDX-License-Identifier: MIT */
/* Unit tests for daemon/sync: a SELECT's sync loading the view and the store, syncs it can't vouch for, updates after it. */
#include "config.h"
#include "unit.h"
#include "sync.h"
#include "cache.h"
#include "fetch-fill.h"
#include "imap-client.h"
#include "log.h"
#include "mailbox-view.h"

#include <event2/event.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define UIDVALIDITY 1700000000u /* the one inbox_select reports */
#define OTHER_UIDVALIDITY 1800000000u

/* The SELECT of an INBOX with 3 messages, as Dovecot answers it with CONDSTORE. */
static const char *const inbox_select[] = {
	"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Junk)\r\n",
	"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Junk \\*)] Flags permitted.\r\n",
	"* 3 EXISTS\r\n",
	"* 0 RECENT\r\n",
	"* OK [UIDVALIDITY 1700000000] UIDs valid\r\n",
	"* OK [UIDNEXT 10] Predicted next UID\r\n",
	"* OK [HIGHESTMODSEQ 50] Highest\r\n",
	NULL,
};

/* The sync's UID FETCH 1:* (FLAGS) of it: items in either order, MODSEQ or not. */
static const char *const inbox_fetch[] = {
	"* 1 FETCH (UID 3 FLAGS (\\Seen) MODSEQ (20))\r\n",
	"* 2 FETCH (FLAGS () UID 7)\r\n",
	"* 3 FETCH (UID 9 FLAGS (\\Flagged $Junk) MODSEQ (45))\r\n",
	NULL,
};

/* What inbox_fetch loads, in describe_view's form. */
#define INBOX_VIEW "3(\\Seen):20 7() 9(\\Flagged $Junk):45"

static char base_dir[64];   /* made per test, removed after it */
static char cache_dir[128]; /* base_dir/cache */

/* What a test works with: the session's view, the sync filling it, and the store (or NULL). */
struct fixture {
	struct mailbox_view *view;
	struct cache *cache;
	struct sync *sync;
};

static void fixture_open(struct fixture *f, bool with_cache)
{
	memset(f, 0, sizeof(*f));
	log_set_level(LOG_LEVEL_WARNING);
	if (with_cache) {
		struct cache_settings settings = { .dir = cache_dir };
		const char *error = NULL;

		snprintf(base_dir, sizeof(base_dir), "/tmp/test-sync-XXXXXX");
		CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(base_dir));
		snprintf(cache_dir, sizeof(cache_dir), "%s/cache", base_dir);
		f->cache = cache_open(&settings, "upstream", "user", &error);
		CU_ASSERT_PTR_NOT_NULL_FATAL(f->cache);
	}
	f->view = mailbox_view_new();
	CU_ASSERT_PTR_NOT_NULL_FATAL(f->view);
	f->sync = sync_new(f->cache, f->view);
	CU_ASSERT_PTR_NOT_NULL_FATAL(f->sync);
}

static void fixture_close(struct fixture *f)
{
	char command[256];

	sync_free(&f->sync);
	CU_ASSERT_PTR_NULL(f->sync);
	mailbox_view_free(&f->view);
	if (f->cache != NULL) {
		cache_unref(&f->cache);
		snprintf(command, sizeof(command), "rm -rf '%s'", base_dir);
		CU_ASSERT_EQUAL(system(command), 0);
	}
}

/* The untagged response of one server line as the client core hands it
   on (common/imap-client.c, client_handle_untagged): keyword upper-cased,
   the number before it, the args after it; a status response's code and
   text instead of args. */
static struct imap_client_untagged *untagged_of(const char *text)
{
	struct imap_parser *parser = imap_parser_new();
	struct imap_client_untagged *untagged;
	const struct imap_arg *line;
	const char *keyword = NULL, *code = NULL, *status_text = NULL;
	uint32_t number = 0;
	bool has_number;
	unsigned int first;
	size_t consumed = 0;

	CU_ASSERT_PTR_NOT_NULL_FATAL(parser);
	imap_parser_set_mode(parser, IMAP_PARSER_MODE_RESPONSE);
	CU_ASSERT_EQUAL_FATAL(imap_parser_feed_bytes(parser, text, strlen(text), &consumed), IMAP_PARSER_LINE_COMPLETE);
	CU_ASSERT_EQUAL_FATAL(consumed, strlen(text));
	line = imap_parser_get_line(parser);
	has_number = line->list_count >= 3 && imap_arg_get_number32(&line->list[1], &number) &&
		     imap_arg_get_atom(&line->list[2], &keyword);
	first = has_number ? 3 : 2;
	if (!has_number)
		CU_ASSERT_TRUE_FATAL(line->list_count >= 2 && imap_arg_get_atom(&line->list[1], &keyword));
	if (imap_arg_atom_equals(&line->list[1], "OK") || imap_arg_atom_equals(&line->list[1], "NO") ||
	    imap_arg_atom_equals(&line->list[1], "BAD") || imap_arg_atom_equals(&line->list[1], "BYE")) {
		status_text = "";
		for (unsigned int i = 2; i < line->list_count; i++) {
			if (line->list[i].type != IMAP_ARG_TEXT)
				continue;
			if (line->list[i].flags & IMAP_ARG_FLAG_RESPONSE_CODE)
				code = line->list[i].str;
			else
				status_text = line->list[i].str;
		}
		first = line->list_count;
	}
	untagged = imap_client_untagged_new(keyword, has_number, number, line->list, line->list_count, first, code,
					    status_text);
	CU_ASSERT_PTR_NOT_NULL_FATAL(untagged);
	imap_parser_free(&parser);
	return untagged;
}

/* Fails the test, naming the case (CU_FAIL can only quote its argument's source). */
static void fail_case(const char *name, const char *detail)
{
	fprintf(stderr, "\nfailed: %s %s\n", name, detail);
	CU_FAIL("see the case named above");
}

/* ---- feeding the sync ---- */

/* Each line as a response of the SELECT. */
static void feed_sync_select(struct fixture *f, const char *const *lines)
{
	for (; lines != NULL && *lines != NULL; lines++) {
		struct imap_client_untagged *untagged = untagged_of(*lines);

		sync_select_data(f->sync, untagged);
		imap_client_untagged_unref(&untagged);
	}
}

/* sync_select_begin for mailbox, then each line as a response of the SELECT. */
static void select_begin(struct fixture *f, const char *mailbox, bool examine, const char *const *lines)
{
	CU_ASSERT_STRING_EQUAL(sync_select_begin(f->sync, mailbox, strlen(mailbox), examine),
			       " UID FETCH 1:* (FLAGS)\r\n");
	for (; lines != NULL && *lines != NULL; lines++) {
		struct imap_client_untagged *untagged = untagged_of(*lines);

		sync_select_data(f->sync, untagged);
		imap_client_untagged_unref(&untagged);
	}
	CU_ASSERT_FALSE(sync_is_ready(f->sync));
	CU_ASSERT_EQUAL(sync_mailbox_id(f->sync), 0);
}

/* Each line as a response of the sync's own command: FETCH lines are the
   sync's and kept from the client, everything else the client sees. */
static void fetch_data(struct fixture *f, const char *const *lines)
{
	for (; lines != NULL && *lines != NULL; lines++) {
		struct imap_client_untagged *untagged = untagged_of(*lines);
		bool own = strcmp(untagged->keyword, "FETCH") == 0;

		if (sync_fetch_data(f->sync, untagged) != own)
			fail_case("sync_fetch_data", *lines);
		imap_client_untagged_unref(&untagged);
	}
}

/* Whether update() gives a FETCH line to the sync as the session does
   with one read whole from its bytes: through a fetch-fill and
   sync_update_fetch_line, the parsed line only when that declines. */
static bool update_from_bytes;
static unsigned int updates_from_bytes; /* FETCH lines the sync took from their bytes */

/* A FETCH line through a fetch-fill to sync_update_fetch_line, as
   session_upstream_raw gives it. Returns whether the sync took it. */
static bool update_fetch_bytes(struct fixture *f, const char *line)
{
	struct fetch_fill *fill = fetch_fill_new();
	struct fetch_fill_line facts;
	bool took;

	CU_ASSERT_PTR_NOT_NULL_FATAL(fill);
	took = fetch_fill_feed(fill, (const unsigned char *)line, strlen(line), true) == IMAP_FETCH_ITEMS_COMPLETE &&
	       fetch_fill_last_line(fill, &facts) && sync_update_fetch_line(f->sync, &facts);
	fetch_fill_free(&fill);
	updates_from_bytes += took;
	return took;
}

/* Each line as an untagged response that reached the client after the sync. */
static void update(struct fixture *f, const char *line)
{
	struct imap_client_untagged *untagged;

	if (update_from_bytes && update_fetch_bytes(f, line))
		return;
	untagged = untagged_of(line);
	sync_update(f->sync, untagged);
	imap_client_untagged_unref(&untagged);
}

/* A whole SELECT of mailbox: its lines, a tagged OK with code, the sync's lines and its OK. */
static void select_mailbox(struct fixture *f, const char *mailbox, const char *const *select_lines, const char *code,
			   const char *const *fetch_lines)
{
	select_begin(f, mailbox, false, select_lines);
	sync_select_done(f->sync, IMAP_CLIENT_STATUS_OK, code);
	fetch_data(f, fetch_lines);
	CU_ASSERT_FALSE(sync_is_ready(f->sync));
	sync_fetch_done(f->sync, IMAP_CLIENT_STATUS_OK);
}

/* INBOX selected and vouched for: INBOX_VIEW. */
static void select_inbox(struct fixture *f)
{
	select_mailbox(f, "INBOX", inbox_select, "READ-WRITE", inbox_fetch);
	CU_ASSERT_TRUE_FATAL(sync_is_ready(f->sync));
}

/* ---- what the view and the store hold ---- */

/* The view as "UID(flags)" per message, ":MODSEQ" when known: "3(\Seen):20 7()";
   UID 0 when not known, "?" for flags not known. */
static const char *describe_view(const struct mailbox_view *view)
{
	static char text[1024];
	size_t used = 0;

	text[0] = '\0';
	for (uint32_t seq = 1; seq <= mailbox_view_count(view) && used < sizeof(text) - 64; seq++) {
		const struct mailbox_view_message *message = mailbox_view_get(view, seq);

		used += (size_t)snprintf(text + used, sizeof(text) - used, "%s%" PRIu32, seq > 1 ? " " : "",
					 message->uid);
		if (message->flags != NULL)
			used += (size_t)snprintf(text + used, sizeof(text) - used, "(%s)", message->flags);
		else
			used += (size_t)snprintf(text + used, sizeof(text) - used, "?");
		if (message->modseq != 0)
			used += (size_t)snprintf(text + used, sizeof(text) - used, ":%" PRIu64, message->modseq);
	}
	return text;
}

/* The store's UID list of mailbox_id as "3 7 9"; "none" when not known. */
static const char *describe_stored_uids(struct cache *cache, int64_t mailbox_id)
{
	static char text[1024];
	uint32_t *uids = NULL;
	size_t count = 0, used = 0;
	int known = cache_mailbox_get_uids(cache, mailbox_id, &uids, &count);

	CU_ASSERT_TRUE(known >= 0);
	snprintf(text, sizeof(text), "%s", known > 0 ? "" : "none");
	for (size_t i = 0; i < count && used < sizeof(text) - 16; i++)
		used += (size_t)snprintf(text + used, sizeof(text) - used, "%s%" PRIu32, i > 0 ? " " : "", uids[i]);
	free(uids);
	return text;
}

/* The stored mailbox name; fails the test when the store has none. */
static struct cache_mailbox stored_mailbox(struct cache *cache, const char *name)
{
	struct cache_mailbox mailbox = { 0 };

	CU_ASSERT_EQUAL_FATAL(cache_mailbox_lookup(cache, name, &mailbox), 1);
	return mailbox;
}

/* Whether the store has a row for uid. */
static bool stored_message(struct cache *cache, int64_t mailbox_id, uint32_t uid)
{
	struct cache_message message;
	int found = cache_lookup(cache, mailbox_id, uid, &message);

	CU_ASSERT_TRUE(found >= 0);
	cache_message_clear(&message);
	return found > 0;
}

/* Gives uid a row in the store, as a FETCH that passed through would. */
static void store_envelope(struct cache *cache, int64_t mailbox_id, uint32_t uid)
{
	CU_ASSERT_EQUAL(cache_store_item(cache, mailbox_id, uid, CACHE_ITEM_ENVELOPE, "(NIL)", 5), 0);
}

/* ---- the sync at SELECT ---- */

static void test_select_vouched(void)
{
	struct fixture f;
	struct cache_mailbox mailbox;

	fixture_open(&f, true);
	select_inbox(&f);
	CU_ASSERT_FALSE(sync_is_read_only(f.sync));
	CU_ASSERT_STRING_EQUAL(describe_view(f.view), INBOX_VIEW);
	mailbox = stored_mailbox(f.cache, "INBOX");
	CU_ASSERT_EQUAL(sync_mailbox_id(f.sync), mailbox.id);
	CU_ASSERT_TRUE(mailbox.id != 0);
	CU_ASSERT_EQUAL(mailbox.uidvalidity, UIDVALIDITY);
	CU_ASSERT_EQUAL(mailbox.uidnext, 10);
	/* the client enabled nothing: Dovecot's HIGHESTMODSEQ can't vouch for flag rows without MODSEQs */
	CU_ASSERT_EQUAL(mailbox.highestmodseq, 0);
	CU_ASSERT_STRING_EQUAL(describe_stored_uids(f.cache, mailbox.id), "3 7 9");
	fixture_close(&f);
}

/* sync_fetch_line reads the common shape from the bytes, as the parsed
   response would be read; any other line it leaves to sync_fetch_data. */
static void test_fetch_line(void)
{
	static const char *const taken[] = {
		"* 1 FETCH (UID 3 FLAGS (\\Seen) MODSEQ (20))\r\n",
		"* 2 FETCH (FLAGS () UID 7)\r\n",
		"* 3 FETCH (MODSEQ (45) FLAGS (\\Flagged $Junk) UID 9)\r\n",
	};
	static const char *const left[] = {
		"* 1 FETCH (UID 3 FLAGS (\\Seen  \\Flagged))\r\n", /* two spaces */
		"* 1 FETCH (UID 3)\r\n",                            /* no FLAGS */
		"* 1 FETCH (UID 3 FLAGS (\\Seen) RFC822.SIZE 5)\r\n",
		"* 1 FETCH (UID 3 FLAGS (\"x\"))\r\n",
		"* 1 FETCH (UID 3 FLAGS (\\))\r\n",
		"* 1 FETCH (UID 3 FLAGS ((a)))\r\n",
		"* 0 FETCH (UID 3 FLAGS ())\r\n",
		"* 1 FETCH (UID 3 UID 4 FLAGS ())\r\n",
		"* 1 FETCH (UID 0 FLAGS ())\r\n",
		"* 1 FETCH (UID 3 FLAGS ())",                         /* no CRLF */
		"* 1 FETCH (UID 3 FLAGS ()) \r\n",
		"* 1 FETCH (UID 3 FLAGS () MODSEQ (9999999999999999999))\r\n", /* for the parser to judge */
		"* 1 EXPUNGE\r\n",
		"* 1 FETCH (UID 3 FLAGS (\\Seen)\r\n",
		"* 1 FETCH (UID 3 FLAGS (NIL))\r\n",                /* the parser's nil (fuzz-sync-line) */
		"* 1 FETCH (UID 3 FLAGS (\\D[d x))\r\n",           /* a section to the parser (fuzz-sync-line) */
		"* 1 FETCH (UID 3 FLAGS (~x))\r\n",
	};
	struct fixture f;

	fixture_open(&f, true);
	select_begin(&f, "INBOX", false, inbox_select);
	sync_select_done(f.sync, IMAP_CLIENT_STATUS_OK, "READ-WRITE");
	for (size_t i = 0; i < sizeof(left) / sizeof(left[0]); i++) {
		if (sync_fetch_line(f.sync, (const unsigned char *)left[i], strlen(left[i])))
			fail_case("sync_fetch_line took", left[i]);
	}
	for (size_t i = 0; i < sizeof(taken) / sizeof(taken[0]); i++) {
		if (!sync_fetch_line(f.sync, (const unsigned char *)taken[i], strlen(taken[i])))
			fail_case("sync_fetch_line left", taken[i]);
	}
	sync_fetch_done(f.sync, IMAP_CLIENT_STATUS_OK);
	CU_ASSERT_TRUE_FATAL(sync_is_ready(f.sync));
	CU_ASSERT_STRING_EQUAL(describe_view(f.view), INBOX_VIEW); /* as select_inbox's parsed lines make it */
	fixture_close(&f);
}

static void test_select_empty_mailbox(void)
{
	static const char *const select_lines[] = {
		"* 0 EXISTS\r\n", "* OK [UIDVALIDITY 1700000000] UIDs valid\r\n", "* OK [UIDNEXT 1] next\r\n", NULL,
	};
	struct fixture f;

	fixture_open(&f, true);
	select_mailbox(&f, "Archive", select_lines, NULL, NULL);
	CU_ASSERT_TRUE(sync_is_ready(f.sync));
	CU_ASSERT_EQUAL(mailbox_view_count(f.view), 0);
	CU_ASSERT_STRING_EQUAL(describe_stored_uids(f.cache, sync_mailbox_id(f.sync)), "");
	CU_ASSERT_EQUAL(stored_mailbox(f.cache, "Archive").highestmodseq, 0); /* none reported */
	fixture_close(&f);
}

static void test_read_only(void)
{
	struct fixture f;

	fixture_open(&f, false);
	select_mailbox(&f, "INBOX", inbox_select, "READ-ONLY", inbox_fetch);
	CU_ASSERT_TRUE(sync_is_ready(f.sync));
	CU_ASSERT_TRUE(sync_is_read_only(f.sync)); /* a SELECT the server made read-only */
	select_mailbox(&f, "INBOX", inbox_select, "READ-WRITE", inbox_fetch);
	CU_ASSERT_FALSE(sync_is_read_only(f.sync));

	select_begin(&f, "INBOX", true, inbox_select);
	sync_select_done(f.sync, IMAP_CLIENT_STATUS_OK, "READ-ONLY");
	fetch_data(&f, inbox_fetch);
	sync_fetch_done(f.sync, IMAP_CLIENT_STATUS_OK);
	CU_ASSERT_TRUE(sync_is_ready(f.sync));
	CU_ASSERT_TRUE(sync_is_read_only(f.sync));
	select_begin(&f, "INBOX", true, inbox_select);
	sync_select_done(f.sync, IMAP_CLIENT_STATUS_OK, NULL); /* EXAMINE is read-only without the code too */
	CU_ASSERT_TRUE(sync_is_read_only(f.sync));
	fixture_close(&f);
}

static void test_select_refused(void)
{
	static const char *const select_no[] = { "* OK [CLOSED] Previous mailbox closed.\r\n", NULL };
	struct cache_mailbox mailbox;
	struct fixture f;

	fixture_open(&f, true);
	select_inbox(&f);
	/* RFC 3501 6.3.1: a failed SELECT leaves no mailbox selected, not even the previous one. */
	select_begin(&f, "Nonexistent", false, select_no);
	CU_ASSERT_EQUAL(mailbox_view_count(f.view), 0);
	sync_select_done(f.sync, IMAP_CLIENT_STATUS_NO, "NONEXISTENT");
	fetch_data(&f, NULL);
	sync_fetch_done(f.sync, IMAP_CLIENT_STATUS_BAD);
	CU_ASSERT_FALSE(sync_is_ready(f.sync));
	CU_ASSERT_EQUAL(sync_mailbox_id(f.sync), 0);
	CU_ASSERT_EQUAL(mailbox_view_count(f.view), 0);
	update(&f, "* 4 EXISTS\r\n");
	CU_ASSERT_EQUAL(mailbox_view_count(f.view), 0);
	CU_ASSERT_EQUAL(cache_mailbox_lookup(f.cache, "Nonexistent", &mailbox), 0);
	fixture_close(&f);
}

/* A sync that went wrong in one way: the view is not vouched for, and nothing is stored. */
struct unvouched_case {
	const char *name;
	const char *fetch[6];
	enum imap_client_status status;
};

static const struct unvouched_case unvouched_cases[] = {
	{ "a FETCH line missing",
	  { "* 1 FETCH (UID 3 FLAGS ())\r\n", "* 3 FETCH (UID 9 FLAGS ())\r\n" },
	  IMAP_CLIENT_STATUS_OK },
	{ "FETCH lines out of order",
	  { "* 2 FETCH (UID 7 FLAGS ())\r\n", "* 1 FETCH (UID 3 FLAGS ())\r\n", "* 3 FETCH (UID 9 FLAGS ())\r\n" },
	  IMAP_CLIENT_STATUS_OK },
	{ "UIDs that do not ascend",
	  { "* 1 FETCH (UID 7 FLAGS ())\r\n", "* 2 FETCH (UID 3 FLAGS ())\r\n", "* 3 FETCH (UID 9 FLAGS ())\r\n" },
	  IMAP_CLIENT_STATUS_OK },
	{ "a message twice",
	  { "* 1 FETCH (UID 3 FLAGS ())\r\n", "* 2 FETCH (UID 7 FLAGS ())\r\n", "* 2 FETCH (UID 7 FLAGS (\\Seen))\r\n",
	    "* 3 FETCH (UID 9 FLAGS ())\r\n" },
	  IMAP_CLIENT_STATUS_OK },
	{ "a FETCH without UID",
	  { "* 1 FETCH (UID 3 FLAGS ())\r\n", "* 2 FETCH (FLAGS ())\r\n", "* 3 FETCH (UID 9 FLAGS ())\r\n" },
	  IMAP_CLIENT_STATUS_OK },
	{ "a FETCH without FLAGS",
	  { "* 1 FETCH (UID 3 FLAGS ())\r\n", "* 2 FETCH (UID 7 MODSEQ (30))\r\n", "* 3 FETCH (UID 9 FLAGS ())\r\n" },
	  IMAP_CLIENT_STATUS_OK },
	{ "an EXPUNGE during the sync",
	  { "* 1 FETCH (UID 3 FLAGS ())\r\n", "* 2 FETCH (UID 7 FLAGS ())\r\n", "* 3 FETCH (UID 9 FLAGS ())\r\n",
	    "* 2 EXPUNGE\r\n" },
	  IMAP_CLIENT_STATUS_OK },
	{ "a VANISHED during the sync",
	  { "* 1 FETCH (UID 3 FLAGS ())\r\n", "* 2 FETCH (UID 7 FLAGS ())\r\n", "* VANISHED 7\r\n",
	    "* 3 FETCH (UID 9 FLAGS ())\r\n" },
	  IMAP_CLIENT_STATUS_OK },
	{ "a new message without its FETCH line",
	  { "* 1 FETCH (UID 3 FLAGS ())\r\n", "* 2 FETCH (UID 7 FLAGS ())\r\n", "* 3 FETCH (UID 9 FLAGS ())\r\n",
	    "* 4 EXISTS\r\n" },
	  IMAP_CLIENT_STATUS_OK },
	{ "the sync's command failed",
	  { "* 1 FETCH (UID 3 FLAGS ())\r\n", "* 2 FETCH (UID 7 FLAGS ())\r\n", "* 3 FETCH (UID 9 FLAGS ())\r\n" },
	  IMAP_CLIENT_STATUS_NO },
	{ "the connection was lost",
	  { "* 1 FETCH (UID 3 FLAGS ())\r\n", "* 2 FETCH (UID 7 FLAGS ())\r\n", "* 3 FETCH (UID 9 FLAGS ())\r\n" },
	  IMAP_CLIENT_STATUS_ABORT },
};

static void test_unvouched(void)
{
	for (size_t i = 0; i < sizeof(unvouched_cases) / sizeof(unvouched_cases[0]); i++) {
		const struct unvouched_case *c = &unvouched_cases[i];
		struct cache_mailbox mailbox;
		struct fixture f;

		fixture_open(&f, true);
		select_begin(&f, "INBOX", false, inbox_select);
		sync_select_done(f.sync, IMAP_CLIENT_STATUS_OK, "READ-WRITE");
		fetch_data(&f, c->fetch);
		sync_fetch_done(f.sync, c->status);
		if (sync_is_ready(f.sync) || mailbox_view_count(f.view) != 0 || sync_mailbox_id(f.sync) != 0 ||
		    cache_mailbox_lookup(f.cache, "INBOX", &mailbox) != 0)
			fail_case(c->name, "");
		update(&f, "* 5 EXISTS\r\n"); /* an unvouched selection follows nothing */
		if (mailbox_view_count(f.view) != 0)
			fail_case(c->name, "");
		select_inbox(&f); /* the next SELECT starts anew */
		CU_ASSERT_STRING_EQUAL(describe_view(f.view), INBOX_VIEW);
		fixture_close(&f);
	}
}

static void test_fetch_data_seen_by_client(void)
{
	/* fetch_data fails the test when sync_fetch_data keeps any but FETCH from the client. */
	static const char *const lines[] = {
		"* 1 FETCH (UID 3 FLAGS (\\Seen))\r\n",
		"* 4 EXISTS\r\n",
		"* 1 RECENT\r\n",
		"* FLAGS (\\Seen \\Deleted $Forwarded)\r\n",
		"* OK [PERMANENTFLAGS (\\Seen \\Deleted $Forwarded \\*)] Flags permitted.\r\n",
		"* 2 EXPUNGE\r\n",
		"* VANISHED 9\r\n",
		"* 2 FETCH (UID 9 FLAGS ())\r\n",
		NULL,
	};
	struct fixture f;

	fixture_open(&f, false);
	select_begin(&f, "INBOX", false, inbox_select);
	sync_select_done(f.sync, IMAP_CLIENT_STATUS_OK, NULL);
	fetch_data(&f, lines);
	sync_fetch_done(f.sync, IMAP_CLIENT_STATUS_OK);
	CU_ASSERT_FALSE(sync_is_ready(f.sync));
	fixture_close(&f);
}

static void test_exists_during_sync(void)
{
	static const char *const fetch_lines[] = {
		"* 1 FETCH (UID 3 FLAGS (\\Seen) MODSEQ (20))\r\n",
		"* 2 FETCH (FLAGS () UID 7)\r\n",
		"* 4 EXISTS\r\n",
		"* 1 RECENT\r\n",
		"* 3 FETCH (UID 9 FLAGS (\\Flagged $Junk) MODSEQ (45))\r\n",
		"* 4 FETCH (UID 10 FLAGS (\\Draft) MODSEQ (51))\r\n",
		NULL,
	};
	struct fixture f;

	fixture_open(&f, true);
	select_mailbox(&f, "INBOX", inbox_select, NULL, fetch_lines);
	CU_ASSERT_TRUE(sync_is_ready(f.sync));
	CU_ASSERT_STRING_EQUAL(describe_view(f.view), INBOX_VIEW " 10(\\Draft):51");
	CU_ASSERT_STRING_EQUAL(describe_stored_uids(f.cache, sync_mailbox_id(f.sync)), "3 7 9 10");
	fixture_close(&f);
}

static void test_no_uidvalidity(void)
{
	static const char *const select_lines[] = { "* 3 EXISTS\r\n", "* OK [UIDNEXT 10] next\r\n", NULL };
	struct cache_mailbox mailbox;
	struct fixture f;

	fixture_open(&f, true);
	select_mailbox(&f, "INBOX", select_lines, NULL, inbox_fetch);
	CU_ASSERT_TRUE(sync_is_ready(f.sync)); /* the view is right; the store can't key it */
	CU_ASSERT_STRING_EQUAL(describe_view(f.view), INBOX_VIEW);
	CU_ASSERT_EQUAL(sync_mailbox_id(f.sync), 0);
	CU_ASSERT_EQUAL(cache_mailbox_lookup(f.cache, "INBOX", &mailbox), 0);
	fixture_close(&f);
}

static void test_store_follows_the_mailbox(void)
{
	static const char *const two_left[] = {
		"* 2 EXISTS\r\n", "* OK [UIDVALIDITY 1700000000] UIDs valid\r\n", "* OK [UIDNEXT 12] next\r\n", NULL,
	};
	static const char *const two_left_fetch[] = {
		"* 1 FETCH (UID 3 FLAGS ())\r\n", "* 2 FETCH (UID 9 FLAGS ())\r\n", NULL,
	};
	static const char *const renumbered[] = {
		"* 2 EXISTS\r\n", "* OK [UIDVALIDITY 1800000000] UIDs valid\r\n", "* OK [UIDNEXT 3] next\r\n", NULL,
	};
	static const char *const renumbered_fetch[] = {
		"* 1 FETCH (UID 1 FLAGS ())\r\n", "* 2 FETCH (UID 2 FLAGS ())\r\n", NULL,
	};
	struct cache_mailbox mailbox;
	struct fixture f;
	int64_t first_id;

	fixture_open(&f, true);
	select_inbox(&f);
	first_id = sync_mailbox_id(f.sync);
	store_envelope(f.cache, first_id, 3);
	store_envelope(f.cache, first_id, 7);

	/* UID 7 was expunged while no session had the mailbox selected. */
	select_mailbox(&f, "INBOX", two_left, NULL, two_left_fetch);
	CU_ASSERT_TRUE(sync_is_ready(f.sync));
	CU_ASSERT_EQUAL(sync_mailbox_id(f.sync), first_id);
	CU_ASSERT_STRING_EQUAL(describe_stored_uids(f.cache, first_id), "3 9");
	CU_ASSERT_TRUE(stored_message(f.cache, first_id, 3));
	CU_ASSERT_FALSE(stored_message(f.cache, first_id, 7));
	CU_ASSERT_EQUAL(stored_mailbox(f.cache, "INBOX").uidnext, 12);

	/* A new UIDVALIDITY: every row of the old one goes. */
	select_mailbox(&f, "INBOX", renumbered, NULL, renumbered_fetch);
	CU_ASSERT_TRUE(sync_is_ready(f.sync));
	mailbox = stored_mailbox(f.cache, "INBOX");
	CU_ASSERT_EQUAL(mailbox.uidvalidity, OTHER_UIDVALIDITY);
	CU_ASSERT_EQUAL(sync_mailbox_id(f.sync), mailbox.id);
	CU_ASSERT_TRUE(mailbox.id != first_id);
	CU_ASSERT_FALSE(stored_message(f.cache, first_id, 3));
	CU_ASSERT_FALSE(stored_message(f.cache, mailbox.id, 3));
	CU_ASSERT_STRING_EQUAL(describe_stored_uids(f.cache, mailbox.id), "1 2");
	CU_ASSERT_STRING_EQUAL(describe_stored_uids(f.cache, first_id), "none");
	CU_ASSERT_EQUAL(mailbox.highestmodseq, 0);
	fixture_close(&f);
}

/* ---- updates after the sync ---- */

static void test_updates(void)
{
	struct fixture f;
	int64_t id;

	fixture_open(&f, true);
	select_inbox(&f);
	id = sync_mailbox_id(f.sync);
	store_envelope(f.cache, id, 7);

	update(&f, "* 4 EXISTS\r\n");
	CU_ASSERT_STRING_EQUAL(describe_view(f.view), INBOX_VIEW " 0?");
	update(&f, "* 4 FETCH (UID 12 FLAGS (\\Seen))\r\n");
	CU_ASSERT_STRING_EQUAL(describe_view(f.view), INBOX_VIEW " 12(\\Seen)");
	update(&f, "* 1 FETCH (FLAGS (\\Seen \\Deleted) MODSEQ (60))\r\n");
	update(&f, "* 3 FETCH (UID 9 MODSEQ (61))\r\n"); /* no FLAGS: they stay */
	update(&f, "* 1 RECENT\r\n");
	update(&f, "* FLAGS (\\Seen \\Deleted $Forwarded)\r\n");
	update(&f, "* OK [HIGHESTMODSEQ 61] Highest\r\n");
	CU_ASSERT_STRING_EQUAL(describe_view(f.view), "3(\\Seen \\Deleted):60 7() 9(\\Flagged $Junk):61 12(\\Seen)");
	CU_ASSERT_TRUE(sync_is_ready(f.sync));

	update(&f, "* 2 EXPUNGE\r\n");
	CU_ASSERT_STRING_EQUAL(describe_view(f.view), "3(\\Seen \\Deleted):60 9(\\Flagged $Junk):61 12(\\Seen)");
	CU_ASSERT_STRING_EQUAL(describe_stored_uids(f.cache, id), "3 9");
	CU_ASSERT_FALSE(stored_message(f.cache, id, 7));

	/* RFC 7162 3.2.10: with QRESYNC enabled expunges come by UID, UIDs the view lacks included. */
	update(&f, "* VANISHED 9,100:200\r\n");
	CU_ASSERT_STRING_EQUAL(describe_view(f.view), "3(\\Seen \\Deleted):60 12(\\Seen)");
	CU_ASSERT_STRING_EQUAL(describe_stored_uids(f.cache, id), "3");
	update(&f, "* VANISHED (EARLIER) 3\r\n"); /* what a resync reports is old news */
	CU_ASSERT_STRING_EQUAL(describe_view(f.view), "3(\\Seen \\Deleted):60 12(\\Seen)");
	CU_ASSERT_STRING_EQUAL(describe_stored_uids(f.cache, id), "3");
	update(&f, "* VANISHED 3,12\r\n");
	CU_ASSERT_EQUAL(mailbox_view_count(f.view), 0);
	CU_ASSERT_STRING_EQUAL(describe_stored_uids(f.cache, id), "");
	CU_ASSERT_TRUE(sync_is_ready(f.sync));
	CU_ASSERT_EQUAL(sync_mailbox_id(f.sync), id);
	fixture_close(&f);
}

/* An update the view can't follow: the selection is not vouched for any more. */
struct contradiction_case {
	const char *name;
	const char *lines[3];
};

static const struct contradiction_case contradiction_cases[] = {
	{ "a FETCH with another UID than the view's", { "* 2 FETCH (UID 8 FLAGS ())\r\n" } },
	{ "a new message's UID below the known ones", { "* 4 EXISTS\r\n", "* 4 FETCH (UID 5 FLAGS ())\r\n" } },
	{ "a new message with a known UID", { "* 4 EXISTS\r\n", "* 4 FETCH (UID 9 FLAGS ())\r\n" } },
	{ "an EXISTS below the count", { "* 2 EXISTS\r\n" } },
	{ "an EXPUNGE past the count", { "* 4 EXPUNGE\r\n" } },
	{ "a FETCH past the count", { "* 4 FETCH (FLAGS (\\Seen))\r\n" } },
	/* the new message may be UID 12, or 12 one never told of */
	{ "a VANISHED past the known UIDs while a new message's is not known", { "* 4 EXISTS\r\n", "* VANISHED 12\r\n" } },
};

static void test_contradictions(void);

/* test_updates and test_contradictions again, each FETCH line read from
   its bytes (the session's way for a line the core then need not parse):
   the same views, stores and verdicts. Lines whose flags are not a plain
   list are declined and parsed; those that are, are taken. */
static void test_updates_from_bytes(void)
{
	struct fixture f;

	update_from_bytes = true;
	updates_from_bytes = 0;
	test_updates();
	test_contradictions();
	CU_ASSERT_EQUAL(updates_from_bytes, 7); /* every FETCH line of the two */
	fixture_open(&f, true);
	select_inbox(&f);
	updates_from_bytes = 0;
	/* not what sync_flags_text makes of a list: parsed instead */
	CU_ASSERT_FALSE(update_fetch_bytes(&f, "* 1 FETCH (FLAGS (\\Seen  $x))\r\n"));
	CU_ASSERT_FALSE(update_fetch_bytes(&f, "* 1 FETCH (FLAGS (\"q\"))\r\n"));
	CU_ASSERT_FALSE(update_fetch_bytes(&f, "* 1 FETCH (FLAGS (NIL))\r\n"));
	CU_ASSERT_FALSE(update_fetch_bytes(&f, "* 1 FETCH (FLAGS ( \\Seen))\r\n"));
	CU_ASSERT_FALSE(update_fetch_bytes(&f, "* 1 FETCH (FLAGS (\\Seen[x]))\r\n"));
	/* a UID twice, or not a number: the parsed line decides */
	CU_ASSERT_FALSE(update_fetch_bytes(&f, "* 1 FETCH (UID 3 UID 3 FLAGS ())\r\n"));
	CU_ASSERT_FALSE(update_fetch_bytes(&f, "* 1 FETCH (UID \"3\" FLAGS ())\r\n"));
	/* no item: no number the fill read, the parsed line is ignored */
	CU_ASSERT_FALSE(update_fetch_bytes(&f, "* 5 FETCH ()\r\n"));
	CU_ASSERT_TRUE(sync_is_ready(f.sync));
	CU_ASSERT_EQUAL(updates_from_bytes, 0);
	CU_ASSERT_TRUE(update_fetch_bytes(&f, "* 1 FETCH (FLAGS () UID 3 ENVELOPE (NIL \"s\" NIL NIL NIL NIL NIL NIL NIL NIL))\r\n"));
	CU_ASSERT_TRUE(sync_is_ready(f.sync));
	fixture_close(&f);
	update_from_bytes = false;
}

static void test_contradictions(void)
{
	for (size_t i = 0; i < sizeof(contradiction_cases) / sizeof(contradiction_cases[0]); i++) {
		const struct contradiction_case *c = &contradiction_cases[i];
		struct fixture f;
		int64_t id;

		fixture_open(&f, true);
		select_inbox(&f);
		id = sync_mailbox_id(f.sync);
		for (unsigned int j = 0; c->lines[j] != NULL; j++)
			update(&f, c->lines[j]);
		if (sync_is_ready(f.sync) || sync_mailbox_id(f.sync) != 0)
			fail_case(c->name, "");
		update(&f, "* 1 EXPUNGE\r\n"); /* followed no more */
		if (mailbox_view_get(f.view, 1) == NULL || mailbox_view_get(f.view, 1)->uid != 3)
			fail_case(c->name, "");
		CU_ASSERT_STRING_EQUAL(describe_stored_uids(f.cache, id), "3 7 9");
		fixture_close(&f);
	}
}

static void test_deselect(void)
{
	struct fixture f;
	int64_t id;

	fixture_open(&f, true);
	select_inbox(&f);
	id = sync_mailbox_id(f.sync);
	sync_deselect(f.sync);
	CU_ASSERT_FALSE(sync_is_ready(f.sync));
	CU_ASSERT_EQUAL(sync_mailbox_id(f.sync), 0);
	CU_ASSERT_EQUAL(mailbox_view_count(f.view), 0);
	update(&f, "* 4 EXISTS\r\n");
	update(&f, "* 1 EXPUNGE\r\n");
	CU_ASSERT_EQUAL(mailbox_view_count(f.view), 0);
	CU_ASSERT_STRING_EQUAL(describe_stored_uids(f.cache, id), "3 7 9"); /* the store keeps the mailbox */
	select_inbox(&f);
	CU_ASSERT_EQUAL(sync_mailbox_id(f.sync), id);
	fixture_close(&f);
}

static void test_without_cache(void)
{
	struct fixture f;

	fixture_open(&f, false);
	select_inbox(&f);
	CU_ASSERT_STRING_EQUAL(describe_view(f.view), INBOX_VIEW);
	CU_ASSERT_EQUAL(sync_mailbox_id(f.sync), 0);
	update(&f, "* 2 EXPUNGE\r\n");
	update(&f, "* VANISHED 9\r\n");
	update(&f, "* 2 EXISTS\r\n");
	update(&f, "* 2 FETCH (UID 20 FLAGS (\\Draft))\r\n");
	CU_ASSERT_STRING_EQUAL(describe_view(f.view), "3(\\Seen):20 20(\\Draft)");
	CU_ASSERT_TRUE(sync_is_ready(f.sync));
	fixture_close(&f);
}

static void test_mailbox_name_with_nul(void)
{
	static const char name[] = "IN\0BOX";
	struct fixture f;

	fixture_open(&f, true);
	sync_select_begin(f.sync, name, sizeof(name) - 1, false);
	for (const char *const *line = inbox_select; *line != NULL; line++) {
		struct imap_client_untagged *untagged = untagged_of(*line);

		sync_select_data(f.sync, untagged);
		imap_client_untagged_unref(&untagged);
	}
	sync_select_done(f.sync, IMAP_CLIENT_STATUS_OK, NULL);
	fetch_data(&f, inbox_fetch);
	sync_fetch_done(f.sync, IMAP_CLIENT_STATUS_OK);
	CU_ASSERT_FALSE(sync_is_ready(f.sync));
	CU_ASSERT_EQUAL(mailbox_view_count(f.view), 0);
	fixture_close(&f);
}

/* ---- the CONDSTORE and QRESYNC forms ---- */

/* Each line as a response of the sync's own commands; own says whether
   the sync must call it its own data. */
static void feed_sync(struct fixture *f, const char *const *lines, bool own)
{
	for (; lines != NULL && *lines != NULL; lines++) {
		struct imap_client_untagged *untagged = untagged_of(*lines);

		if (sync_fetch_data(f->sync, untagged) != own)
			fail_case("sync_fetch_data", *lines);
		imap_client_untagged_unref(&untagged);
	}
}

/* The SELECT of INBOX after inbox_select, with CONDSTORE: HIGHESTMODSEQ
   60, message 7 gone, 3 changed, 10 new. */
static const char *const inbox_later[] = {
	"* 3 EXISTS\r\n", "* 1 RECENT\r\n", "* OK [UIDVALIDITY 1700000000] UIDs valid\r\n",
	"* OK [UIDNEXT 11] Predicted next UID\r\n", "* OK [HIGHESTMODSEQ 60] Highest\r\n", NULL,
};
static const char *const inbox_later_changed[] = {
	"* 1 FETCH (UID 3 MODSEQ (58) FLAGS (\\Answered))\r\n",
	"* 3 FETCH (UID 10 MODSEQ (59) FLAGS (\\Recent))\r\n", NULL,
};
#define INBOX_LATER_VIEW "3(\\Answered):58 9(\\Flagged $Junk):45 10(\\Recent):59"

/* INBOX selected once with CONDSTORE (the full form: HIGHESTMODSEQ 50
   and every flag row stored), then the options for the next SELECT. */
static void fixture_synced_once(struct fixture *f, bool qresync, bool esearch)
{
	struct sync_options options = { .condstore = true, .qresync = qresync, .esearch = esearch };

	fixture_open(f, true);
	sync_set_options(f->sync, &options);
	CU_ASSERT_STRING_EQUAL(sync_select_begin(f->sync, "INBOX", 5, false), " UID FETCH 1:* (FLAGS MODSEQ)\r\n");
	CU_ASSERT_PTR_NULL(sync_extra_command(f->sync, 0));
	feed_sync_select(f, inbox_select);
	sync_select_done(f->sync, IMAP_CLIENT_STATUS_OK, NULL);
	fetch_data(f, inbox_fetch);
	CU_ASSERT_PTR_NULL(sync_fetch_done(f->sync, IMAP_CLIENT_STATUS_OK));
	CU_ASSERT_TRUE_FATAL(sync_is_ready(f->sync));
	CU_ASSERT_EQUAL(stored_mailbox(f->cache, "INBOX").highestmodseq, 50);
}

static void test_qresync_form(void)
{
	static const char *const vanished[] = { "* VANISHED (EARLIER) 4:8\r\n", NULL };
	struct fixture f;

	fixture_synced_once(&f, true, true);
	CU_ASSERT_STRING_EQUAL(sync_select_begin(f.sync, "INBOX", 5, false),
			       " UID FETCH 1:* (FLAGS) (CHANGEDSINCE 50 VANISHED)\r\n");
	CU_ASSERT_PTR_NULL(sync_extra_command(f.sync, 0));
	feed_sync_select(&f, inbox_later);
	sync_select_done(f.sync, IMAP_CLIENT_STATUS_OK, NULL);
	feed_sync(&f, vanished, true);
	feed_sync(&f, inbox_later_changed, true);
	CU_ASSERT_PTR_NULL(sync_fetch_done(f.sync, IMAP_CLIENT_STATUS_OK));
	CU_ASSERT_TRUE(sync_is_ready(f.sync));
	CU_ASSERT_STRING_EQUAL(describe_view(f.view), INBOX_LATER_VIEW);
	CU_ASSERT_TRUE(mailbox_view_get(f.view, 3)->recent);
	CU_ASSERT_FALSE(mailbox_view_get(f.view, 2)->recent);
	CU_ASSERT_STRING_EQUAL(describe_stored_uids(f.cache, sync_mailbox_id(f.sync)), "3 9 10");
	CU_ASSERT_EQUAL(stored_mailbox(f.cache, "INBOX").highestmodseq, 60);
	CU_ASSERT_EQUAL(stored_mailbox(f.cache, "INBOX").uidnext, 11);
	fixture_close(&f);
}

static void test_condstore_form(void)
{
	static const char *const map[] = { "* ESEARCH (TAG \"p5\") UID ALL 3,9:10\r\n", NULL };
	struct fixture f;

	fixture_synced_once(&f, false, true);
	CU_ASSERT_STRING_EQUAL(sync_select_begin(f.sync, "INBOX", 5, false),
			       " UID FETCH 1:* (FLAGS) (CHANGEDSINCE 50)\r\n");
	CU_ASSERT_STRING_EQUAL(sync_extra_command(f.sync, 0), " UID SEARCH RETURN (ALL) ALL\r\n");
	feed_sync_select(&f, inbox_later);
	sync_select_done(f.sync, IMAP_CLIENT_STATUS_OK, NULL);
	feed_sync(&f, inbox_later_changed, true);
	CU_ASSERT_PTR_NULL(sync_fetch_done(f.sync, IMAP_CLIENT_STATUS_OK));
	CU_ASSERT_FALSE(sync_is_ready(f.sync)); /* the map is still to come */
	feed_sync(&f, map, true);
	CU_ASSERT_PTR_NULL(sync_fetch_done(f.sync, IMAP_CLIENT_STATUS_OK));
	CU_ASSERT_TRUE(sync_is_ready(f.sync));
	CU_ASSERT_STRING_EQUAL(describe_view(f.view), INBOX_LATER_VIEW);
	CU_ASSERT_EQUAL(stored_mailbox(f.cache, "INBOX").highestmodseq, 60);
	fixture_close(&f);
}

/* A mailbox of 3 messages with no keyword, as Dovecot answers the SELECT
   of a client that enabled nothing, and the full form's FETCH of it. */
static const char *const plain_select[] = {
	"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n",
	"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags permitted.\r\n",
	"* 3 EXISTS\r\n", "* 0 RECENT\r\n", "* OK [UIDVALIDITY 1700000000] UIDs valid\r\n",
	"* OK [UIDNEXT 10] Predicted next UID\r\n", NULL,
};
static const char *const plain_fetch[] = {
	"* 1 FETCH (UID 3 FLAGS (\\Seen))\r\n", "* 2 FETCH (UID 7 FLAGS ())\r\n",
	"* 3 FETCH (UID 9 FLAGS (\\Flagged))\r\n", NULL,
};
/* Its next SELECT: message 12 new and \Recent; with_keyword, FLAGS has $Junk. */
static const char *const plain_later[] = {
	"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n", "* 4 EXISTS\r\n", "* 1 RECENT\r\n",
	"* OK [UIDVALIDITY 1700000000] UIDs valid\r\n", "* OK [UIDNEXT 13] Predicted next UID\r\n", NULL,
};
static const char *const plain_later_keyword[] = {
	"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Junk)\r\n", "* 4 EXISTS\r\n", "* 1 RECENT\r\n",
	"* OK [UIDVALIDITY 1700000000] UIDs valid\r\n", "* OK [UIDNEXT 13] Predicted next UID\r\n", NULL,
};
/* The SEARCH form's answers, in an order of their own: the client core
   may hand on a later command's data before an earlier one's completion. */
static const char *const plain_searches[] = {
	"* ESEARCH (TAG \"S4\") UID ALL 3,12\r\n", "* ESEARCH (TAG \"S0\") UID ALL 3,7,9,12\r\n",
	"* ESEARCH (TAG \"S1\") UID\r\n", "* ESEARCH (TAG \"S2\") UID ALL 9\r\n", "* ESEARCH (TAG \"S3\") UID\r\n",
	"* ESEARCH (TAG \"S5\") UID ALL 9:12\r\n", NULL,
};
#define PLAIN_LATER_VIEW "3(\\Seen) 7() 9(\\Flagged \\Draft) 12(\\Seen \\Draft)"

/* INBOX synced once by a client that enabled nothing (the full form: no
   FLAGS stored yet), then its next SELECT begun: the SEARCH form, its six
   commands sent with the tags S0 to S5. */
static void search_form_begin(struct fixture *f)
{
	static const char *const keys[] = { "ANSWERED", "FLAGGED", "DELETED", "SEEN", "DRAFT" };
	static const char *const tags[] = { "S0", "S1", "S2", "S3", "S4", "S5" };
	struct sync_options plain = { .esearch = true };
	char want[64];

	fixture_open(f, true);
	sync_set_options(f->sync, &plain);
	select_mailbox(f, "INBOX", plain_select, "READ-WRITE", plain_fetch);
	CU_ASSERT_TRUE_FATAL(sync_is_ready(f->sync));
	CU_ASSERT_STRING_EQUAL(sync_select_begin(f->sync, "INBOX", 5, false), " UID SEARCH RETURN (ALL) ALL\r\n");
	for (unsigned int i = 0; i < 5; i++) {
		snprintf(want, sizeof(want), " UID SEARCH RETURN (ALL) %s\r\n", keys[i]);
		CU_ASSERT_STRING_EQUAL(sync_extra_command(f->sync, i), want);
	}
	CU_ASSERT_PTR_NULL(sync_extra_command(f->sync, 5));
	sync_commands_sent(f->sync, tags, 6);
}

/* Each of the six done; NULL from each, ready only after the last. */
static void search_form_done(struct fixture *f, const char *last_next)
{
	for (unsigned int i = 0; i < 5; i++) {
		CU_ASSERT_PTR_NULL(sync_fetch_done(f->sync, IMAP_CLIENT_STATUS_OK));
		CU_ASSERT_FALSE(sync_is_ready(f->sync));
	}
	const char *next = sync_fetch_done(f->sync, IMAP_CLIENT_STATUS_OK);

	if (last_next == NULL) {
		CU_ASSERT_PTR_NULL(next);
	} else {
		CU_ASSERT_STRING_EQUAL(next, last_next);
	}
}

/* A client that enabled nothing, the mailbox's stored FLAGS without a
   keyword: the map and one ESEARCH per system flag load the view, each
   message's FLAGS in Dovecot's order, \Recent on the last RECENT; a FETCH
   the upstream sends of its own meanwhile is newer than the searches. */
static void test_search_form(void)
{
	static const char *const meanwhile[] = { "* 2 FETCH (UID 7 FLAGS (\\Answered))\r\n", NULL };
	struct fixture f;

	search_form_begin(&f);
	feed_sync_select(&f, plain_later);
	sync_select_done(f.sync, IMAP_CLIENT_STATUS_OK, "READ-WRITE");
	feed_sync(&f, plain_searches, true);
	search_form_done(&f, NULL);
	CU_ASSERT_TRUE(sync_is_ready(f.sync));
	CU_ASSERT_STRING_EQUAL(describe_view(f.view), PLAIN_LATER_VIEW);
	CU_ASSERT_TRUE(mailbox_view_get(f.view, 4)->recent);
	CU_ASSERT_FALSE(mailbox_view_get(f.view, 3)->recent);
	CU_ASSERT_STRING_EQUAL(describe_stored_uids(f.cache, sync_mailbox_id(f.sync)), "3 7 9 12");

	CU_ASSERT_STRING_EQUAL(sync_select_begin(f.sync, "INBOX", 5, false), " UID SEARCH RETURN (ALL) ALL\r\n");
	sync_commands_sent(f.sync, (const char *const[]){ "S0", "S1", "S2", "S3", "S4", "S5" }, 6);
	feed_sync_select(&f, plain_later);
	sync_select_done(f.sync, IMAP_CLIENT_STATUS_OK, "READ-WRITE");
	feed_sync(&f, plain_searches, true);
	feed_sync(&f, meanwhile, true);
	search_form_done(&f, NULL);
	CU_ASSERT_STRING_EQUAL(describe_view(f.view), "3(\\Seen) 7(\\Answered) 9(\\Flagged \\Draft) 12(\\Seen \\Draft)");
	fixture_close(&f);
}

#define SYNC_LONG_FLAGS 9000 /* past what sync keeps of a FLAGS list (SYNC_FLAGS_MAX) */

/* What the SEARCH form can't vouch for gets the full form after it: a
   keyword in the SELECT's FLAGS (which the searches did not cover: the
   store learns it, and the next SELECT gets the full form alone), an
   answer of a tag not sent, a single UID the map lacks, a search's NO. */
static void test_search_form_fallback(void)
{
	static const char *const full[] = {
		"* 1 FETCH (UID 3 FLAGS (\\Seen))\r\n", "* 2 FETCH (UID 7 FLAGS ($Junk))\r\n",
		"* 3 FETCH (UID 9 FLAGS (\\Flagged \\Draft))\r\n", "* 4 FETCH (UID 12 FLAGS (\\Seen \\Recent))\r\n", NULL,
	};
	static const char *const strays[][2] = {
		{ "* ESEARCH (TAG \"S9\") UID ALL 3\r\n", NULL },
		{ "* ESEARCH (TAG \"S1\") UID ALL 3,10\r\n", NULL },
	};
	struct fixture f;
	char *flag_list = NULL;

	search_form_begin(&f);
	feed_sync_select(&f, plain_later_keyword);
	sync_select_done(f.sync, IMAP_CLIENT_STATUS_OK, "READ-WRITE");
	feed_sync(&f, plain_searches, true);
	search_form_done(&f, " UID FETCH 1:* (FLAGS)\r\n");
	CU_ASSERT_FALSE(sync_is_ready(f.sync));
	feed_sync(&f, full, true);
	CU_ASSERT_PTR_NULL(sync_fetch_done(f.sync, IMAP_CLIENT_STATUS_OK));
	CU_ASSERT_TRUE(sync_is_ready(f.sync));
	CU_ASSERT_STRING_EQUAL(describe_view(f.view), "3(\\Seen) 7($Junk) 9(\\Flagged \\Draft) 12(\\Seen \\Recent)");
	CU_ASSERT_EQUAL(cache_mailbox_get_flag_list(f.cache, sync_mailbox_id(f.sync), &flag_list), 1);
	CU_ASSERT_STRING_EQUAL(flag_list, "\\Answered \\Flagged \\Deleted \\Seen \\Draft $Junk");
	free(flag_list);
	select_begin(&f, "INBOX", false, plain_later_keyword); /* the full form alone now */
	fixture_close(&f);

	/* a FLAGS list too long to keep: the stored one is forgotten, not kept stale */
	search_form_begin(&f);
	{
		static char flags_line[SYNC_LONG_FLAGS + 64];
		const char *long_select[] = { flags_line, "* 4 EXISTS\r\n", "* OK [UIDVALIDITY 1700000000] v\r\n", NULL };
		size_t used = (size_t)snprintf(flags_line, sizeof(flags_line), "* FLAGS (\\Seen");

		while (used < SYNC_LONG_FLAGS)
			used += (size_t)snprintf(flags_line + used, sizeof(flags_line) - used, " $k%zu", used);
		snprintf(flags_line + used, sizeof(flags_line) - used, ")\r\n");
		feed_sync_select(&f, long_select);
	}
	sync_select_done(f.sync, IMAP_CLIENT_STATUS_OK, "READ-WRITE");
	feed_sync(&f, plain_searches, true);
	search_form_done(&f, " UID FETCH 1:* (FLAGS)\r\n");
	feed_sync(&f, full, true);
	CU_ASSERT_PTR_NULL(sync_fetch_done(f.sync, IMAP_CLIENT_STATUS_OK));
	CU_ASSERT_TRUE(sync_is_ready(f.sync));
	CU_ASSERT_EQUAL(cache_mailbox_get_flag_list(f.cache, sync_mailbox_id(f.sync), &flag_list), 0);
	select_begin(&f, "INBOX", false, plain_later); /* the full form: no list to search by */
	fixture_close(&f);

	for (size_t i = 0; i < sizeof(strays) / sizeof(strays[0]); i++) {
		search_form_begin(&f);
		feed_sync_select(&f, plain_later);
		sync_select_done(f.sync, IMAP_CLIENT_STATUS_OK, "READ-WRITE");
		feed_sync(&f, strays[i], true);
		feed_sync(&f, plain_searches, true);
		search_form_done(&f, " UID FETCH 1:* (FLAGS)\r\n");
		if (sync_is_ready(f.sync))
			fail_case(strays[i][0], "taken");
		fixture_close(&f);
	}
	search_form_begin(&f);
	feed_sync_select(&f, plain_later);
	sync_select_done(f.sync, IMAP_CLIENT_STATUS_OK, "READ-WRITE");
	feed_sync(&f, plain_searches, true);
	for (unsigned int i = 0; i < 5; i++)
		CU_ASSERT_PTR_NULL(sync_fetch_done(f.sync, i == 2 ? IMAP_CLIENT_STATUS_NO : IMAP_CLIENT_STATUS_OK));
	CU_ASSERT_STRING_EQUAL(sync_fetch_done(f.sync, IMAP_CLIENT_STATUS_OK), " UID FETCH 1:* (FLAGS)\r\n");
	fixture_close(&f);
}

/* The options of a client that enabled nothing, over a link measured as
   slow (4 messages' FLAGS, 160 bytes, take 160 ms at 1,000 bytes/s: more
   than its 40 ms round trip) or fast (a microsecond). */
static const struct sync_options plain_slow = { .esearch = true, .link = { 40000, 1000 } };
static const struct sync_options plain_fast = { .esearch = true, .link = { 40000, 1000000000 } };

/* The SELECT's first flight as plain_later_keyword-like lines tell
   (select), the six searches answered: the sync's next command. */
static const char *search_first_flight(struct fixture *f, const char *const *select, const char *const *meanwhile)
{
	const char *next = NULL;

	CU_ASSERT_STRING_EQUAL(sync_select_begin(f->sync, "INBOX", 5, false), " UID SEARCH RETURN (ALL) ALL\r\n");
	for (unsigned int i = 0; i < 5; i++)
		CU_ASSERT_PTR_NOT_NULL(sync_extra_command(f->sync, i));
	sync_commands_sent(f->sync, (const char *const[]){ "S0", "S1", "S2", "S3", "S4", "S5" }, 6);
	feed_sync_select(f, select);
	sync_select_done(f->sync, IMAP_CLIENT_STATUS_OK, "READ-WRITE");
	feed_sync(f, plain_searches, true);
	feed_sync(f, meanwhile, false); /* what the client sees during the first flight (NULL: nothing) */
	for (unsigned int i = 0; i < 6; i++) {
		next = sync_fetch_done(f->sync, IMAP_CLIENT_STATUS_OK);
		if (i < 5)
			CU_ASSERT_PTR_NULL(next);
		CU_ASSERT_FALSE(sync_is_ready(f->sync));
	}
	return next;
}

/* Keywords in the SELECT's FLAGS, over a slow link: searched in a flight
   of their own once the first is answered (only the names the SELECT
   listed: Dovecot makes a keyword a SEARCH names), each message's FLAGS
   its system flags then its keywords in the list's order; the store
   learns the list, and the next SELECT searches again. Over a fast link
   the FETCH costs less than the round trip: the full form. */
static void test_keyword_flight(void)
{
	static const char *const two_keywords[] = {
		"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Junk $Forwarded)\r\n", "* 4 EXISTS\r\n",
		"* 1 RECENT\r\n", "* OK [UIDVALIDITY 1700000000] UIDs valid\r\n", "* OK [UIDNEXT 13] Predicted next UID\r\n",
		NULL,
	};
	static const char *const junk[] = { "* ESEARCH (TAG \"S6\") UID ALL 7,12\r\n", NULL };
	static const char *const both[] = { "* ESEARCH (TAG \"S7\") UID ALL 3\r\n", "* ESEARCH (TAG \"S6\") UID ALL 12\r\n",
					     NULL };
	struct fixture f;
	char *flag_list = NULL;

	fixture_open(&f, true);
	sync_set_options(f.sync, &plain_slow);
	select_mailbox(&f, "INBOX", plain_select, "READ-WRITE", plain_fetch); /* no list stored: the full form */
	CU_ASSERT_STRING_EQUAL(search_first_flight(&f, plain_later_keyword, NULL),
			       " UID SEARCH RETURN (ALL) KEYWORD $Junk\r\n");
	CU_ASSERT_PTR_NULL(sync_extra_command(f.sync, 0)); /* one keyword: one search */
	sync_commands_sent(f.sync, (const char *const[]){ "S6" }, 1);
	feed_sync(&f, junk, true);
	CU_ASSERT_PTR_NULL(sync_fetch_done(f.sync, IMAP_CLIENT_STATUS_OK));
	CU_ASSERT_TRUE_FATAL(sync_is_ready(f.sync));
	CU_ASSERT_STRING_EQUAL(describe_view(f.view), "3(\\Seen) 7($Junk) 9(\\Flagged \\Draft) 12(\\Seen \\Draft $Junk)");
	CU_ASSERT_TRUE(mailbox_view_get(f.view, 4)->recent);
	CU_ASSERT_EQUAL(cache_mailbox_get_flag_list(f.cache, sync_mailbox_id(f.sync), &flag_list), 1);
	CU_ASSERT_STRING_EQUAL(flag_list, "\\Answered \\Flagged \\Deleted \\Seen \\Draft $Junk");
	free(flag_list);

	/* the stored list has a keyword: the SEARCH form still, two keywords now, answered out of order */
	CU_ASSERT_STRING_EQUAL(search_first_flight(&f, two_keywords, NULL), " UID SEARCH RETURN (ALL) KEYWORD $Junk\r\n");
	CU_ASSERT_STRING_EQUAL(sync_extra_command(f.sync, 0), " UID SEARCH RETURN (ALL) KEYWORD $Forwarded\r\n");
	CU_ASSERT_PTR_NULL(sync_extra_command(f.sync, 1));
	sync_commands_sent(f.sync, (const char *const[]){ "S6", "S7" }, 2);
	feed_sync(&f, both, true);
	CU_ASSERT_PTR_NULL(sync_fetch_done(f.sync, IMAP_CLIENT_STATUS_OK));
	CU_ASSERT_FALSE(sync_is_ready(f.sync));
	CU_ASSERT_PTR_NULL(sync_fetch_done(f.sync, IMAP_CLIENT_STATUS_OK));
	CU_ASSERT_TRUE_FATAL(sync_is_ready(f.sync));
	CU_ASSERT_STRING_EQUAL(describe_view(f.view),
			       "3(\\Seen $Forwarded) 7() 9(\\Flagged \\Draft) 12(\\Seen \\Draft $Junk)");

	/* a keyword search's NO: the full form follows */
	search_first_flight(&f, plain_later_keyword, NULL);
	sync_commands_sent(f.sync, (const char *const[]){ "S6" }, 1);
	CU_ASSERT_STRING_EQUAL(sync_fetch_done(f.sync, IMAP_CLIENT_STATUS_NO), " UID FETCH 1:* (FLAGS)\r\n");
	CU_ASSERT_FALSE(sync_is_ready(f.sync));

	/* a fast link: a stored list with keywords gets the full form alone */
	sync_set_options(f.sync, &plain_fast);
	select_begin(&f, "INBOX", false, plain_later_keyword);
	fixture_close(&f);

	/* a fast link, the keyword new since: the full form after the searches */
	fixture_open(&f, true);
	sync_set_options(f.sync, &plain_fast);
	select_mailbox(&f, "INBOX", plain_select, "READ-WRITE", plain_fetch);
	CU_ASSERT_STRING_EQUAL(search_first_flight(&f, plain_later_keyword, NULL), " UID FETCH 1:* (FLAGS)\r\n");
	fixture_close(&f);

	/* a link not measured (its rate or its round trip): the same */
	for (int i = 0; i < 2; i++) {
		struct sync_options unmeasured = { .esearch = true, .link = { i == 0 ? 40000 : 0, i == 0 ? 0 : 1000 } };

		fixture_open(&f, true);
		sync_set_options(f.sync, &unmeasured);
		select_mailbox(&f, "INBOX", plain_select, "READ-WRITE", plain_fetch);
		CU_ASSERT_STRING_EQUAL(search_first_flight(&f, plain_later_keyword, NULL), " UID FETCH 1:* (FLAGS)\r\n");
		fixture_close(&f);
	}

	/* cache.keyword_searches: "always" searches over a link not measured, "never" fetches over a slow one */
	fixture_open(&f, true);
	sync_set_options(f.sync, &(const struct sync_options){ .esearch = true,
							       .keyword_searches = CONF_KEYWORD_SEARCHES_ALWAYS });
	select_mailbox(&f, "INBOX", plain_select, "READ-WRITE", plain_fetch);
	CU_ASSERT_STRING_EQUAL(search_first_flight(&f, plain_later_keyword, NULL), " UID SEARCH RETURN (ALL) KEYWORD $Junk\r\n");
	fixture_close(&f);
	fixture_open(&f, true);
	sync_set_options(f.sync, &(const struct sync_options){ .esearch = true, .link = { 40000, 1000 },
							       .keyword_searches = CONF_KEYWORD_SEARCHES_NEVER });
	select_mailbox(&f, "INBOX", plain_select, "READ-WRITE", plain_fetch);
	CU_ASSERT_STRING_EQUAL(search_first_flight(&f, plain_later_keyword, NULL), " UID FETCH 1:* (FLAGS)\r\n");
	fixture_close(&f);
}

/* What comes between or during the flights over a slow link: a map
   shorter than EXISTS (a message appended meanwhile) sends no keyword
   flight, the full form follows at once; an EXISTS during the keyword
   flight makes its answers not add up: the full form after it; an
   EXPUNGE during it vouches for nothing (sequence numbers moved). */
static void test_keyword_flight_disturbed(void)
{
	static const char *const appended[] = { "* 5 EXISTS\r\n", NULL };
	static const char *const expunged[] = { "* 2 EXPUNGE\r\n", NULL };
	static const char *const junk[] = { "* ESEARCH (TAG \"S6\") UID ALL 7,12\r\n", NULL };
	struct fixture f;

	fixture_open(&f, true);
	sync_set_options(f.sync, &plain_slow);
	select_mailbox(&f, "INBOX", plain_select, "READ-WRITE", plain_fetch);
	CU_ASSERT_STRING_EQUAL(search_first_flight(&f, plain_later_keyword, appended), " UID FETCH 1:* (FLAGS)\r\n");

	CU_ASSERT_STRING_EQUAL(search_first_flight(&f, plain_later_keyword, NULL), " UID SEARCH RETURN (ALL) KEYWORD $Junk\r\n");
	sync_commands_sent(f.sync, (const char *const[]){ "S6" }, 1);
	feed_sync(&f, appended, false);
	feed_sync(&f, junk, true);
	CU_ASSERT_STRING_EQUAL(sync_fetch_done(f.sync, IMAP_CLIENT_STATUS_OK), " UID FETCH 1:* (FLAGS)\r\n");
	CU_ASSERT_FALSE(sync_is_ready(f.sync));

	CU_ASSERT_STRING_EQUAL(search_first_flight(&f, plain_later_keyword, NULL), " UID SEARCH RETURN (ALL) KEYWORD $Junk\r\n");
	sync_commands_sent(f.sync, (const char *const[]){ "S6" }, 1);
	feed_sync(&f, expunged, false);
	feed_sync(&f, junk, true);
	CU_ASSERT_PTR_NULL(sync_fetch_done(f.sync, IMAP_CLIENT_STATUS_OK));
	CU_ASSERT_FALSE(sync_is_ready(f.sync));
	fixture_close(&f);
}

/* Without ESEARCH the CONDSTORE form has no map: the full form. Without
   CONDSTORE, the full form, and the stored HIGHESTMODSEQ stays. */
static void test_full_form_choices(void)
{
	struct sync_options none = { 0 };
	struct fixture f;

	fixture_synced_once(&f, false, false);
	CU_ASSERT_STRING_EQUAL(sync_select_begin(f.sync, "INBOX", 5, false), " UID FETCH 1:* (FLAGS MODSEQ)\r\n");
	CU_ASSERT_PTR_NULL(sync_extra_command(f.sync, 0));
	sync_set_options(f.sync, &none);
	select_mailbox(&f, "INBOX", inbox_select, NULL, inbox_fetch);
	CU_ASSERT_TRUE(sync_is_ready(f.sync));
	CU_ASSERT_EQUAL(stored_mailbox(f.cache, "INBOX").highestmodseq, 50);
	fixture_close(&f);
}

/* What the SELECT or the answers say that the store's state can't
   explain: the CHANGEDSINCE form's answer is dropped, the full form follows. */
struct fallback_case {
	const char *name;
	const char *select_lines[7];
	const char *data_lines[4];
};

static const struct fallback_case fallback_cases[] = {
	{ "a lower HIGHESTMODSEQ",
	  { "* 3 EXISTS\r\n", "* OK [UIDVALIDITY 1700000000] v\r\n", "* OK [UIDNEXT 11] n\r\n",
	    "* OK [HIGHESTMODSEQ 40] h\r\n", NULL },
	  { NULL } },
	{ "NOMODSEQ",
	  { "* 3 EXISTS\r\n", "* OK [UIDVALIDITY 1700000000] v\r\n", "* OK [NOMODSEQ] none\r\n", NULL },
	  { NULL } },
	{ "another UIDVALIDITY",
	  { "* 3 EXISTS\r\n", "* OK [UIDVALIDITY 1800000000] v\r\n", "* OK [HIGHESTMODSEQ 60] h\r\n", NULL },
	  { NULL } },
	{ "a UIDNEXT below a stored UID",
	  { "* 3 EXISTS\r\n", "* OK [UIDVALIDITY 1700000000] v\r\n", "* OK [UIDNEXT 8] n\r\n",
	    "* OK [HIGHESTMODSEQ 60] h\r\n", NULL },
	  { NULL } },
	{ "nothing changed but the count",
	  { "* 4 EXISTS\r\n", "* OK [UIDVALIDITY 1700000000] v\r\n", "* OK [HIGHESTMODSEQ 50] h\r\n", NULL },
	  { NULL } },
	{ "more messages than the list explains",
	  { "* 4 EXISTS\r\n", "* OK [UIDVALIDITY 1700000000] v\r\n", "* OK [HIGHESTMODSEQ 60] h\r\n", NULL },
	  { "* 1 FETCH (UID 3 MODSEQ (58) FLAGS ())\r\n", NULL } },
	{ "a changed message not where its number says",
	  { "* 3 EXISTS\r\n", "* OK [UIDVALIDITY 1700000000] v\r\n", "* OK [HIGHESTMODSEQ 60] h\r\n", NULL },
	  { "* 2 FETCH (UID 3 MODSEQ (58) FLAGS ())\r\n", NULL } },
};

static void test_fallback_to_full(void)
{
	for (size_t i = 0; i < sizeof(fallback_cases) / sizeof(fallback_cases[0]); i++) {
		const struct fallback_case *c = &fallback_cases[i];
		static const char *const full[] = {
			"* 1 FETCH (UID 3 FLAGS (\\Seen) MODSEQ (20))\r\n", "* 2 FETCH (UID 7 FLAGS () MODSEQ (21))\r\n",
			"* 3 FETCH (UID 9 FLAGS () MODSEQ (22))\r\n", "* 4 FETCH (UID 10 FLAGS () MODSEQ (23))\r\n", NULL,
		};
		const char *next;
		uint32_t exists;
		struct fixture f;

		fixture_synced_once(&f, true, true);
		if (strncmp(sync_select_begin(f.sync, "INBOX", 5, false), " UID FETCH 1:* (FLAGS) (CHANGEDSINCE 50", 39))
			fail_case(c->name, "not the QRESYNC form");
		feed_sync_select(&f, c->select_lines);
		sync_select_done(f.sync, IMAP_CLIENT_STATUS_OK, NULL);
		feed_sync(&f, c->data_lines, true);
		next = sync_fetch_done(f.sync, IMAP_CLIENT_STATUS_OK);
		if (next == NULL || strcmp(next, " UID FETCH 1:* (FLAGS MODSEQ)\r\n") != 0 || sync_is_ready(f.sync)) {
			fail_case(c->name, "no full form after it");
			fixture_close(&f);
			continue;
		}
		exists = (uint32_t)atoi(c->select_lines[0] + 2);
		for (uint32_t j = 0; j < exists; j++)
			feed_sync(&f, (const char *const[]){ full[j], NULL }, true);
		CU_ASSERT_PTR_NULL(sync_fetch_done(f.sync, IMAP_CLIENT_STATUS_OK));
		if (!sync_is_ready(f.sync) || mailbox_view_count(f.view) != exists)
			fail_case(c->name, describe_view(f.view));
		fixture_close(&f);
	}
}

/* With an event base, flag rows go a chunk per turn, and HIGHESTMODSEQ
   only after the last, even when the session is gone by then. */
static void test_chunked_writes(void)
{
	enum { MESSAGES = 10000 };
	struct sync_options options = { .condstore = true };
	struct event_base *base = event_base_new();
	char line[128];
	struct fixture f;
	unsigned int turns = 0;
	struct timespec start, end;
	double slowest = 0;
	int64_t id;

	CU_ASSERT_PTR_NOT_NULL_FATAL(base);
	fixture_open(&f, true);
	sync_set_event_base(f.sync, base);
	sync_set_options(f.sync, &options);
	sync_select_begin(f.sync, "INBOX", 5, false);
	snprintf(line, sizeof(line), "* %d EXISTS\r\n", MESSAGES);
	feed_sync_select(&f, (const char *const[]){ line, "* OK [UIDVALIDITY 1700000000] v\r\n",
						    "* OK [HIGHESTMODSEQ 90000] h\r\n", NULL });
	sync_select_done(f.sync, IMAP_CLIENT_STATUS_OK, NULL);
	for (int i = 1; i <= MESSAGES; i++) {
		snprintf(line, sizeof(line), "* %d FETCH (UID %d FLAGS (\\Seen $Label%d) MODSEQ (%d))\r\n", i, i * 2,
			 i % 7, i + 10);
		feed_sync(&f, (const char *const[]){ line, NULL }, true);
	}
	clock_gettime(CLOCK_MONOTONIC, &start);
	sync_fetch_done(f.sync, IMAP_CLIENT_STATUS_OK);
	clock_gettime(CLOCK_MONOTONIC, &end);
	slowest = (double)(end.tv_sec - start.tv_sec) + (double)(end.tv_nsec - start.tv_nsec) / 1e9;
	CU_ASSERT_TRUE_FATAL(sync_is_ready(f.sync));
	id = sync_mailbox_id(f.sync);
	CU_ASSERT_EQUAL(stored_mailbox(f.cache, "INBOX").highestmodseq, 0);
	while (stored_mailbox(f.cache, "INBOX").highestmodseq == 0 && turns < MESSAGES) {
		double took;

		clock_gettime(CLOCK_MONOTONIC, &start);
		event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
		clock_gettime(CLOCK_MONOTONIC, &end);
		took = (double)(end.tv_sec - start.tv_sec) + (double)(end.tv_nsec - start.tv_nsec) / 1e9;
		slowest = took > slowest ? took : slowest;
		turns++;
	}
	fprintf(stderr, "\n%d flag rows in %u turns, the slowest %.1f ms\n", MESSAGES, turns, slowest * 1000);
	CU_ASSERT_EQUAL(turns, (MESSAGES + SYNC_WRITE_CHUNK - 1) / SYNC_WRITE_CHUNK);
	CU_ASSERT_EQUAL(stored_mailbox(f.cache, "INBOX").highestmodseq, 90000);
	{
		struct cache_message message;

		CU_ASSERT_EQUAL(cache_lookup(f.cache, id, 2 * MESSAGES, &message), 1);
		CU_ASSERT_EQUAL(message.modseq, MESSAGES + 10);
		cache_message_clear(&message);
	}

	/* the writer outlives its session: the rows and then HIGHESTMODSEQ still go */
	sync_select_begin(f.sync, "INBOX", 5, false);
	snprintf(line, sizeof(line), "* %d EXISTS\r\n", MESSAGES);
	feed_sync_select(&f, (const char *const[]){ line, "* OK [UIDVALIDITY 1700000000] v\r\n",
						    "* OK [HIGHESTMODSEQ 95000] h\r\n", NULL });
	sync_select_done(f.sync, IMAP_CLIENT_STATUS_OK, NULL);
	for (int i = 1; i <= MESSAGES; i++) {
		snprintf(line, sizeof(line), "* %d FETCH (UID %d FLAGS () MODSEQ (%d))\r\n", i, i * 2, i + 20);
		feed_sync(&f, (const char *const[]){ line, NULL }, true);
	}
	sync_fetch_done(f.sync, IMAP_CLIENT_STATUS_OK);
	event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	sync_free(&f.sync);
	CU_ASSERT_EQUAL(stored_mailbox(f.cache, "INBOX").highestmodseq, 90000);
	for (turns = 0; stored_mailbox(f.cache, "INBOX").highestmodseq == 90000 && turns < MESSAGES; turns++)
		event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	CU_ASSERT_EQUAL(stored_mailbox(f.cache, "INBOX").highestmodseq, 95000);
	CU_ASSERT_EQUAL(turns, (MESSAGES + SYNC_WRITE_CHUNK - 1) / SYNC_WRITE_CHUNK - 1);
	{
		struct cache_message message;

		CU_ASSERT_EQUAL(cache_lookup(f.cache, id, 2 * MESSAGES, &message), 1);
		CU_ASSERT_EQUAL(message.modseq, MESSAGES + 20);
		cache_message_clear(&message);
	}
	fixture_close(&f);
	event_base_free(base);
}

const char unit_suite_name[] = "sync";
const struct unit_test unit_tests[] = {
	{ "a SELECT and its sync load the view and the store", test_select_vouched },
	{ "an empty mailbox is vouched for", test_select_empty_mailbox },
	{ "EXAMINE and [READ-ONLY] make it read-only", test_read_only },
	{ "a refused SELECT leaves nothing selected", test_select_refused },
	{ "a sync that went wrong is not vouched for", test_unvouched },
	{ "the client sees all of the sync's round trip but FETCH", test_fetch_data_seen_by_client },
	{ "a message that arrives during the sync", test_exists_during_sync },
	{ "without UIDVALIDITY the store is left alone", test_no_uidvalidity },
	{ "expunged and renumbered mailboxes leave the store", test_store_follows_the_mailbox },
	{ "EXISTS, FETCH, EXPUNGE and VANISHED after the sync", test_updates },
	{ "an update that contradicts the view", test_contradictions },
	{ "FETCH updates read from their bytes move the view as parsed ones do", test_updates_from_bytes },
	{ "deselecting", test_deselect },
	{ "without a store, the view alone", test_without_cache },
	{ "a mailbox name with a NUL is never selected", test_mailbox_name_with_nul },
	{ "a FETCH line of the common shape read from its bytes", test_fetch_line },
	{ "the QRESYNC form: what changed and VANISHED, the rest from the store", test_qresync_form },
	{ "the CONDSTORE form: what changed and ESEARCH's map", test_condstore_form },
	{ "the SEARCH form: ESEARCH's map and one per system flag", test_search_form },
	{ "the SEARCH form: what it can't vouch for gets the full form", test_search_form_fallback },
	{ "the SEARCH form: keywords in a flight of their own over a slow link", test_keyword_flight },
	{ "the SEARCH form: the keyword flight disturbed", test_keyword_flight_disturbed },
	{ "the full form without ESEARCH or CONDSTORE", test_full_form_choices },
	{ "a CHANGEDSINCE form that does not add up: the full form follows", test_fallback_to_full },
	{ "flag rows a chunk per event-loop turn, HIGHESTMODSEQ after them, past the session", test_chunked_writes },
	{ NULL, NULL },
};
