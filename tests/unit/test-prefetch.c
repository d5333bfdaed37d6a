/* SPDX-License-Identifier: MIT */
/* Unit tests for daemon/prefetch: which messages each batch asks for, in what order, within which limits. */
#include "config.h"
#include "unit.h"
#include "unit-cache.h"
#include "cache.h"
#include "log.h"
#include "mailbox-view.h"
#include "prefetch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MESSAGES 450 /* more than two batches of headers, and a scan chunk's worth is not all */

static struct unit_cache store;
static struct cache *cache;
static struct mailbox_view *view;
static int64_t mailbox_id;
static struct prefetch *prefetch;
static struct prefetch_limits limits;
static char line[8192];

static void setup(void)
{
	uint32_t uids[MESSAGES];

	for (uint32_t i = 0; i < MESSAGES; i++)
		uids[i] = 2 * i + 1; /* gaps: UIDs are not sequence numbers */
	unit_cache_open(&store, "test-prefetch",
			(struct cache_settings){ .body_budget = 1 << 20, .body_max_size = 1 << 20 }, uids, MESSAGES);
	cache = store.cache;
	mailbox_id = store.mailbox_id;
	view = store.view;
	prefetch = prefetch_new();
	CU_ASSERT_PTR_NOT_NULL_FATAL(prefetch);
	for (int i = 0; i < 3; i++)
		prefetch_batch_took(prefetch, 0); /* a fast link: whole batches */
	limits = (struct prefetch_limits){ .mode = CONF_PREFETCH_HEADERS, .body_budget = 1 << 20,
					   .body_max_size = 1 << 20 };
}

static void teardown(void)
{
	prefetch_free(&prefetch);
	unit_cache_close(&store);
}

/* Stores everything the header walk wants of uid, and a size. */
static void store_headers(uint32_t uid, uint64_t size)
{
	static const char value[] = "(NIL)";

	CU_ASSERT_EQUAL(cache_store_item(cache, mailbox_id, uid, CACHE_ITEM_INTERNALDATE, value, 5), 0);
	CU_ASSERT_EQUAL(cache_store_item(cache, mailbox_id, uid, CACHE_ITEM_ENVELOPE, value, 5), 0);
	CU_ASSERT_EQUAL(cache_store_item(cache, mailbox_id, uid, CACHE_ITEM_BODYSTRUCTURE, value, 5), 0);
	CU_ASSERT_EQUAL(cache_store_item(cache, mailbox_id, uid, CACHE_ITEM_HEADER, "X: y\r\n\r\n", 8), 0);
	CU_ASSERT_EQUAL(cache_store_size(cache, mailbox_id, uid, size), 0);
}

/* The next batch's line, or "" when none. */
static const char *next(void)
{
	int ret = prefetch_next(prefetch, &limits, cache, mailbox_id, view, line, sizeof(line));

	CU_ASSERT(ret >= 0);
	return ret > 0 ? line : "";
}

/* The set of a batch's line: " UID FETCH set (". */
static const char *set_of(const char *text)
{
	static char set[sizeof(line)];
	const char *start = strstr(text, "FETCH ");
	size_t len;

	if (start == NULL)
		return "";
	start += 6;
	len = strcspn(start, " ");
	memcpy(set, start, len);
	set[len] = '\0';
	return set;
}

/* Headers: newest first, 200 a batch, by sequence number, each message once, then nothing. */
static void test_headers_walk(void)
{
	setup();
	CU_ASSERT_STRING_EQUAL(set_of(next()), "251:450");
	CU_ASSERT(strstr(line, " " PREFETCH_HEADER_ITEMS "\r\n") != NULL);
	CU_ASSERT_EQUAL(strncmp(line, " FETCH ", 7), 0);
	CU_ASSERT_STRING_EQUAL(set_of(next()), "51:250");
	CU_ASSERT_STRING_EQUAL(set_of(next()), "1:50");
	CU_ASSERT_STRING_EQUAL(next(), "");
	CU_ASSERT_STRING_EQUAL(next(), "");
	teardown();
}

/* The first batch takes PREFETCH_BATCH_FIRST_MESSAGES; then a batch
   takes half as many once its data took longer than
   PREFETCH_BATCH_TRANSFER_USEC to arrive, down to
   PREFETCH_BATCH_MIN_MESSAGES, and twice as many once it took under half
   of it, up to PREFETCH_BATCH_MESSAGES. */
static void test_batches_follow_the_link(void)
{
	setup();
	prefetch_free(&prefetch);
	prefetch = prefetch_new(); /* the link's speed not known */
	CU_ASSERT_STRING_EQUAL(set_of(next()), "401:450");
	prefetch_batch_took(prefetch, 0);
	CU_ASSERT_STRING_EQUAL(set_of(next()), "301:400");
	prefetch_batch_took(prefetch, PREFETCH_BATCH_TRANSFER_USEC / 4);
	prefetch_batch_took(prefetch, PREFETCH_BATCH_TRANSFER_USEC / 4); /* no more than PREFETCH_BATCH_MESSAGES */
	CU_ASSERT_STRING_EQUAL(set_of(next()), "101:300");
	prefetch_batch_took(prefetch, 2 * PREFETCH_BATCH_TRANSFER_USEC);
	CU_ASSERT_STRING_EQUAL(set_of(next()), "1:100");
	teardown();
	setup();
	for (int i = 0; i < 8; i++)
		prefetch_batch_took(prefetch, 10 * PREFETCH_BATCH_TRANSFER_USEC);
	CU_ASSERT_STRING_EQUAL(set_of(next()), "439:450");
	prefetch_batch_took(prefetch, PREFETCH_BATCH_TRANSFER_USEC / 4);
	CU_ASSERT_STRING_EQUAL(set_of(next()), "415:438");
	prefetch_batch_took(prefetch, PREFETCH_BATCH_TRANSFER_USEC * 3 / 4); /* about right: as it is */
	CU_ASSERT_STRING_EQUAL(set_of(next()), "391:414");
	teardown();
}

/* A link measured before sizes the first batch: three quarters of
   PREFETCH_BATCH_TRANSFER_USEC of data, within the limits, messages in
   proportion to PREFETCH_BATCH_FIRST_BYTES per _MESSAGES. */
static const char *first_batch_at(uint64_t bytes_per_sec)
{
	prefetch_free(&prefetch);
	prefetch = prefetch_new();
	prefetch_size_first(prefetch, bytes_per_sec);
	return set_of(next());
}

static void test_first_batch_from_the_link(void)
{
	setup();
	CU_ASSERT_STRING_EQUAL(first_batch_at(0), "401:450");          /* not measured: as it was */
	CU_ASSERT_STRING_EQUAL(first_batch_at(2500000), "416:450");    /* 20 Mbit/s: 187,500 bytes in 75 ms, 35 messages */
	CU_ASSERT_STRING_EQUAL(first_batch_at(1000), "439:450");       /* a crawl: the least batch */
	CU_ASSERT_STRING_EQUAL(first_batch_at(UINT64_MAX), "251:450"); /* a LAN: the largest */
	teardown();
}

/* What is stored whole is skipped; a message missing one item is asked for. */
static void test_headers_skip_stored(void)
{
	setup();
	for (uint32_t i = 0; i < MESSAGES; i++)
		store_headers(2 * i + 1, 100);
	CU_ASSERT_EQUAL(cache_store_item(cache, mailbox_id, 7, CACHE_ITEM_ENVELOPE, NULL, 0), 0);
	CU_ASSERT_EQUAL(cache_store_item(cache, mailbox_id, 899, CACHE_ITEM_HEADER, NULL, 0), 0);
	CU_ASSERT_STRING_EQUAL(set_of(next()), "4,450"); /* UIDs 7 and 899 */
	CU_ASSERT_STRING_EQUAL(next(), "");
	/* new messages (a higher UID): a new walk from the top */
	CU_ASSERT_EQUAL(mailbox_view_upstream_exists(view, MESSAGES + 1), 0);
	CU_ASSERT_EQUAL(mailbox_view_set_uid(view, MESSAGES + 1, 1000), 0);
	CU_ASSERT_STRING_EQUAL(set_of(next()), "4,450:451");
	CU_ASSERT_STRING_EQUAL(next(), "");
	/* messages an EXISTS told of, UIDs not known yet: asked for first, once */
	CU_ASSERT_EQUAL(mailbox_view_upstream_exists(view, MESSAGES + 3), 0);
	CU_ASSERT(prefetch_may_have_work(prefetch, view));
	CU_ASSERT_STRING_EQUAL(set_of(next()), "452:453");
	CU_ASSERT(strstr(line, " " PREFETCH_HEADER_ITEMS "\r\n") != NULL);
	CU_ASSERT(!prefetch_may_have_work(prefetch, view)); /* the answer taught nothing: not again */
	CU_ASSERT_STRING_EQUAL(next(), "");
	CU_ASSERT_EQUAL(mailbox_view_set_uid(view, MESSAGES + 2, 1001), 0);
	CU_ASSERT_EQUAL(mailbox_view_set_uid(view, MESSAGES + 3, 1002), 0);
	CU_ASSERT_STRING_EQUAL(set_of(next()), "4,450:453"); /* known now: a walk from the top */
	teardown();
}

/* Full: after the headers, bodies of known size within the limits and the budget. */
static void test_bodies_walk(void)
{
	setup();
	limits.mode = CONF_PREFETCH_FULL;
	limits.body_max_size = 300 * 1024;
	limits.body_budget = 1100 * 1000;
	for (uint32_t i = 0; i < MESSAGES; i++) {
		if (2 * i + 1 != 897)
			store_headers(2 * i + 1, i == 449 ? 400 * 1024 : 250 * 1024);
	}
	/* the headers first: 897 has none */
	CU_ASSERT_STRING_EQUAL(set_of(next()), "449"); /* UID 897 */
	CU_ASSERT(strstr(line, " " PREFETCH_HEADER_ITEMS "\r\n") != NULL);
	/* 899 is over body_max_size, 897's size is not known; a fifth body of 250K would pass the budget */
	CU_ASSERT_STRING_EQUAL(set_of(next()), "445:448"); /* UIDs 889 to 895 */
	CU_ASSERT(strstr(line, " " PREFETCH_BODY_ITEMS "\r\n") != NULL);
	CU_ASSERT_STRING_EQUAL(next(), "");
	/* a bigger budget: 1 MB of bodies a batch (the one that passes it is the last) */
	limits.body_budget = 10 * 1000 * 1000;
	prefetch_restart(prefetch);
	CU_ASSERT_STRING_EQUAL(set_of(next()), "449");
	CU_ASSERT_STRING_EQUAL(set_of(next()), "444:448");
	CU_ASSERT_STRING_EQUAL(set_of(next()), "439:443");
	teardown();
}

/* Off, or writes off: nothing. */
static void test_off(void)
{
	setup();
	limits.mode = CONF_PREFETCH_OFF;
	CU_ASSERT_STRING_EQUAL(next(), "");
	mailbox_view_load(view, NULL, 0);
	limits.mode = CONF_PREFETCH_HEADERS;
	CU_ASSERT_STRING_EQUAL(next(), "");
	teardown();
}

/* Only a prefetch answer's line is the proxy's own. */
static void test_own_line(void)
{
	static const char *const own[] = {
		"* 1 FETCH (UID 7 INTERNALDATE \"01-Jan-2019 00:16:18 +0000\" RFC822.SIZE 3",
		"* 12345 FETCH (UID 4294967295 INTERNALDATE ",
		"* 3 FETCH (UID 9 ENVELOPE (\"Mon\"",
		"* 3 FETCH (UID 9 BODY[] {12}",
	};
	static const char *const other[] = {
		"* 1 FETCH (FLAGS (\\Seen))", "* 1 FETCH (UID 7 MODSEQ (4))", "* 1 FETCH (UID 7 FLAGS ())",
		"* 1 EXISTS", "* 1 FETCH (UID 7", "* 1 FETCH (UID 7)", "* FETCH (UID 7 INTERNALDATE ", "+ go",
		"* 1 FETCH (UID 7 MODSEQ (5) FLAGS ())",
	};

	for (size_t i = 0; i < sizeof(own) / sizeof(own[0]); i++)
		CU_ASSERT(prefetch_is_own_line((const unsigned char *)own[i], strlen(own[i])));
	for (size_t i = 0; i < sizeof(other) / sizeof(other[0]); i++)
		CU_ASSERT(!prefetch_is_own_line((const unsigned char *)other[i], strlen(other[i])));
}

const char unit_suite_name[] = "prefetch";
const struct unit_test unit_tests[] = {
	{ "headers: newest first, in batches, once", test_headers_walk },
	{ "headers: only what is missing; new messages", test_headers_skip_stored },
	{ "bodies: within max size, batch bytes and budget", test_bodies_walk },
	{ "off and empty", test_off },
	{ "the proxy's own answer lines", test_own_line },
	{ "batches follow the link's speed", test_batches_follow_the_link },
	{ "the first batch follows the link measured before", test_first_batch_from_the_link },
	{ NULL, NULL },
};
