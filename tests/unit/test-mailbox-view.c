/* SPDX-License-Identifier: MIT */
/* Unit tests for daemon/mailbox-view: UIDs and sequence numbers, EXISTS, held expunges and their release, flags. */
#include "config.h"
#include "unit.h"
#include "mailbox-view.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct mailbox_view *view_of(const uint32_t *uids, uint32_t count)
{
	struct mailbox_view *view = mailbox_view_new();

	CU_ASSERT_PTR_NOT_NULL_FATAL(view);
	CU_ASSERT_EQUAL_FATAL(mailbox_view_load(view, uids, count), 0);
	return view;
}

/* The UIDs of the view, in sequence order, as "3 5 0 *7" (0: not known, *: held). */
static const char *describe(const struct mailbox_view *view)
{
	static char text[1024];
	size_t used = 0;

	text[0] = '\0';
	for (uint32_t seq = 1; seq <= mailbox_view_count(view) && used < sizeof(text) - 16; seq++) {
		const struct mailbox_view_message *message = mailbox_view_get(view, seq);

		used += (size_t)snprintf(text + used, sizeof(text) - used, "%s%s%u", seq > 1 ? " " : "",
					 message->expunged ? "*" : "", message->uid);
	}
	return text;
}

static void test_load_and_lookup(void)
{
	static const uint32_t uids[] = { 3, 5, 9, 10, 40 };
	struct mailbox_view *view = view_of(uids, 5);
	static const uint32_t unordered[] = { 3, 3 };
	static const uint32_t zero[] = { 0 };

	CU_ASSERT_EQUAL(mailbox_view_count(view), 5);
	CU_ASSERT_EQUAL(mailbox_view_get(view, 1)->uid, 3);
	CU_ASSERT_EQUAL(mailbox_view_get(view, 5)->uid, 40);
	CU_ASSERT_PTR_NULL(mailbox_view_get(view, 0));
	CU_ASSERT_PTR_NULL(mailbox_view_get(view, 6));
	for (uint32_t i = 0; i < 5; i++)
		CU_ASSERT_EQUAL(mailbox_view_seq_of_uid(view, uids[i]), i + 1);
	CU_ASSERT_EQUAL(mailbox_view_seq_of_uid(view, 4), 0);
	CU_ASSERT_EQUAL(mailbox_view_seq_of_uid(view, 41), 0);
	CU_ASSERT_EQUAL(mailbox_view_seq_of_uid(view, 0), 0);
	CU_ASSERT_EQUAL(mailbox_view_max_uid(view), 40);
	CU_ASSERT_PTR_NULL(mailbox_view_get(view, 2)->flags);
	CU_ASSERT_EQUAL(mailbox_view_load(view, unordered, 2), -1);
	CU_ASSERT_EQUAL(mailbox_view_load(view, zero, 1), -1);
	CU_ASSERT_STRING_EQUAL(describe(view), "3 5 9 10 40"); /* a refused load changes nothing */
	CU_ASSERT_EQUAL(mailbox_view_load(view, NULL, 0), 0);
	CU_ASSERT_EQUAL(mailbox_view_count(view), 0);
	CU_ASSERT_EQUAL(mailbox_view_max_uid(view), 0);
	mailbox_view_free(&view);
	CU_ASSERT_PTR_NULL(view);
}

/* A view never loaded has no array yet: emptying it and an EXISTS 0 must not touch one. */
static void test_fresh_view(void)
{
	struct mailbox_view *view = mailbox_view_new();

	CU_ASSERT_PTR_NOT_NULL_FATAL(view);
	CU_ASSERT_EQUAL(mailbox_view_upstream_exists(view, 0), 0);
	CU_ASSERT_EQUAL(mailbox_view_load(view, NULL, 0), 0);
	CU_ASSERT_EQUAL(mailbox_view_count(view), 0);
	CU_ASSERT_EQUAL(mailbox_view_upstream_exists(view, 2), 0);
	CU_ASSERT_STRING_EQUAL(describe(view), "0 0");
	mailbox_view_free(&view);
}

static void test_exists_and_learnt_uids(void)
{
	static const uint32_t uids[] = { 1, 2 };
	struct mailbox_view *view = view_of(uids, 2);

	CU_ASSERT_EQUAL(mailbox_view_upstream_exists(view, 4), 0);
	CU_ASSERT_STRING_EQUAL(describe(view), "1 2 0 0");
	CU_ASSERT_EQUAL(mailbox_view_seq_of_uid(view, 7), 0);
	CU_ASSERT_EQUAL(mailbox_view_set_uid(view, 4, 9), -1); /* the first unknown one comes first */
	CU_ASSERT_EQUAL(mailbox_view_set_uid(view, 3, 2), -1); /* UIDs ascend */
	CU_ASSERT_EQUAL(mailbox_view_set_uid(view, 3, 7), 0);
	CU_ASSERT_EQUAL(mailbox_view_set_uid(view, 3, 7), 0);  /* the same again is fine */
	CU_ASSERT_EQUAL(mailbox_view_set_uid(view, 3, 8), -1); /* another is not */
	CU_ASSERT_EQUAL(mailbox_view_set_uid(view, 4, 9), 0);
	CU_ASSERT_EQUAL(mailbox_view_seq_of_uid(view, 9), 4);
	CU_ASSERT_EQUAL(mailbox_view_upstream_exists(view, 3), -1); /* EXISTS never shrinks */
	CU_ASSERT_EQUAL(mailbox_view_upstream_exists(view, 4), 0);  /* the same count: nothing new */
	CU_ASSERT_STRING_EQUAL(describe(view), "1 2 7 9");
	CU_ASSERT_EQUAL(mailbox_view_set_uid(view, 5, 10), -1);
	mailbox_view_free(&view);
}

static void test_expunge_at_once(void)
{
	static const uint32_t uids[] = { 10, 20, 30, 40 };
	struct mailbox_view *view = view_of(uids, 4);

	CU_ASSERT_EQUAL(mailbox_view_upstream_expunge(view, 2, false), 2);
	CU_ASSERT_STRING_EQUAL(describe(view), "10 30 40");
	CU_ASSERT_EQUAL(mailbox_view_seq_of_uid(view, 40), 3);
	CU_ASSERT_EQUAL(mailbox_view_expunge_uid(view, 10, false), 1);
	CU_ASSERT_EQUAL(mailbox_view_expunge_uid(view, 10, false), 0); /* never told of: nothing */
	CU_ASSERT_EQUAL(mailbox_view_upstream_expunge(view, 3, false), 0);
	CU_ASSERT_STRING_EQUAL(describe(view), "30 40");
	CU_ASSERT_FALSE(mailbox_view_has_held(view));
	mailbox_view_free(&view);
}

static void on_released(uint32_t seq, void *context)
{
	char *log = context;

	snprintf(log + strlen(log), 256 - strlen(log), "%u ", seq);
}

/* An expunge during FETCH keeps the client's numbers: the upstream's
   shift, and translating goes both ways until the release. */
static void test_held_expunges(void)
{
	static const uint32_t uids[] = { 10, 20, 30, 40, 50 };
	struct mailbox_view *view = view_of(uids, 5);
	char log[256] = "";

	CU_ASSERT_EQUAL(mailbox_view_upstream_expunge(view, 2, true), 2);     /* UID 20 */
	CU_ASSERT_EQUAL(mailbox_view_upstream_expunge(view, 3, true), 4);     /* upstream 3 is UID 40 now */
	CU_ASSERT_STRING_EQUAL(describe(view), "10 *20 30 *40 50");
	CU_ASSERT_TRUE(mailbox_view_has_held(view));
	CU_ASSERT_EQUAL(mailbox_view_count(view), 5);
	CU_ASSERT_EQUAL(mailbox_view_upstream_count(view), 3);
	CU_ASSERT_EQUAL(mailbox_view_upstream_seq(view, 1), 1);
	CU_ASSERT_EQUAL(mailbox_view_upstream_seq(view, 2), 0);
	CU_ASSERT_EQUAL(mailbox_view_upstream_seq(view, 3), 2);
	CU_ASSERT_EQUAL(mailbox_view_upstream_seq(view, 5), 3);
	CU_ASSERT_EQUAL(mailbox_view_client_seq(view, 2), 3);
	CU_ASSERT_EQUAL(mailbox_view_client_seq(view, 3), 5);
	CU_ASSERT_EQUAL(mailbox_view_client_seq(view, 4), 0);
	CU_ASSERT_EQUAL(mailbox_view_seq_of_uid(view, 40), 4);  /* still numbered for the client */
	CU_ASSERT_EQUAL(mailbox_view_expunge_uid(view, 40, true), 0); /* already held */
	/* a new message upstream: its count excludes the held ones */
	CU_ASSERT_EQUAL(mailbox_view_upstream_exists(view, 4), 0);
	CU_ASSERT_STRING_EQUAL(describe(view), "10 *20 30 *40 50 0");
	CU_ASSERT_EQUAL(mailbox_view_client_seq(view, 4), 6);
	CU_ASSERT_EQUAL(mailbox_view_release_expunges(view, on_released, log), 2);
	CU_ASSERT_STRING_EQUAL(log, "4 2 ");
	CU_ASSERT_STRING_EQUAL(describe(view), "10 30 50 0");
	CU_ASSERT_FALSE(mailbox_view_has_held(view));
	CU_ASSERT_EQUAL(mailbox_view_set_uid(view, 4, 60), 0);
	CU_ASSERT_EQUAL(mailbox_view_seq_of_uid(view, 60), 4);
	mailbox_view_free(&view);
}

static void test_vanished_held(void)
{
	static const uint32_t uids[] = { 1, 2, 3 };
	struct mailbox_view *view = view_of(uids, 3);
	char log[256] = "";

	CU_ASSERT_EQUAL(mailbox_view_expunge_uid(view, 3, true), 3);
	CU_ASSERT_EQUAL(mailbox_view_expunge_uid(view, 1, true), 1);
	CU_ASSERT_EQUAL(mailbox_view_expunge_uid(view, 9, true), 0);
	CU_ASSERT_EQUAL(mailbox_view_client_seq(view, 1), 2);
	CU_ASSERT_EQUAL(mailbox_view_release_expunges(view, on_released, log), 2);
	CU_ASSERT_STRING_EQUAL(log, "3 1 ");
	CU_ASSERT_STRING_EQUAL(describe(view), "2");
	CU_ASSERT_EQUAL(mailbox_view_release_expunges(view, on_released, log), 0);
	mailbox_view_free(&view);
}

static void test_flags_modseq_recent(void)
{
	static const uint32_t uids[] = { 4, 8 };
	struct mailbox_view *view = view_of(uids, 2);

	CU_ASSERT_EQUAL(mailbox_view_set_flags(view, 1, "\\Seen $Work", 11), 0);
	CU_ASSERT_STRING_EQUAL(mailbox_view_get(view, 1)->flags, "\\Seen $Work");
	CU_ASSERT_EQUAL(mailbox_view_set_flags(view, 1, "", 0), 0); /* known to have none */
	CU_ASSERT_STRING_EQUAL(mailbox_view_get(view, 1)->flags, "");
	CU_ASSERT_EQUAL(mailbox_view_set_flags(view, 3, "", 0), -1);
	CU_ASSERT_EQUAL(mailbox_view_set_modseq(view, 2, 77), 0);
	CU_ASSERT_EQUAL(mailbox_view_set_modseq(view, 2, 0), 0); /* 0 leaves it */
	CU_ASSERT_EQUAL(mailbox_view_get(view, 2)->modseq, 77);
	mailbox_view_set_recent(view, 2, true);
	CU_ASSERT_TRUE(mailbox_view_get(view, 2)->recent);
	CU_ASSERT_FALSE(mailbox_view_get(view, 1)->recent);
	mailbox_view_forget_flags(view, 1);
	CU_ASSERT_PTR_NULL(mailbox_view_get(view, 1)->flags);
	mailbox_view_forget_flags(view, 9); /* out of range: nothing */
	/* flags go with their message when another is removed */
	CU_ASSERT_EQUAL(mailbox_view_set_flags(view, 2, "\\Flagged", 8), 0);
	CU_ASSERT_EQUAL(mailbox_view_upstream_expunge(view, 1, false), 1);
	CU_ASSERT_STRING_EQUAL(mailbox_view_get(view, 1)->flags, "\\Flagged");
	CU_ASSERT_EQUAL(mailbox_view_get(view, 1)->modseq, 77);
	mailbox_view_free(&view);
}

/* A large mailbox: every UID found by binary search, and growing by
   EXISTS one at a time stays linear. */
static void test_large(void)
{
	enum { COUNT = 100000 };
	uint32_t *uids = malloc(COUNT * sizeof(*uids));
	struct mailbox_view *view;

	CU_ASSERT_PTR_NOT_NULL_FATAL(uids);
	for (uint32_t i = 0; i < COUNT; i++)
		uids[i] = 2 * i + 1;
	view = view_of(uids, COUNT);
	for (uint32_t i = 0; i < COUNT; i++) {
		if (mailbox_view_seq_of_uid(view, 2 * i + 1) != i + 1 || mailbox_view_seq_of_uid(view, 2 * i + 2) != 0) {
			CU_FAIL("lookup");
			break;
		}
	}
	for (uint32_t n = COUNT + 1; n <= COUNT + 1000; n++) {
		CU_ASSERT_EQUAL(mailbox_view_upstream_exists(view, n), 0);
		CU_ASSERT_EQUAL(mailbox_view_set_uid(view, n, 2 * n + 1), 0);
	}
	CU_ASSERT_EQUAL(mailbox_view_seq_of_uid(view, 2 * (COUNT + 1000) + 1), COUNT + 1000);
	free(uids);
	mailbox_view_free(&view);
}

const char unit_suite_name[] = "mailbox-view";
/* One reader of a flag list for the fetch, search and \\Seen steps. */
static void test_flags_have(void)
{
	CU_ASSERT_TRUE(mailbox_view_flags_have("\\Answered \\seen $Junk", "\\Seen", 5));
	CU_ASSERT_TRUE(mailbox_view_flags_have("\\Answered $Junk", "$Junk", 5));
	CU_ASSERT_FALSE(mailbox_view_flags_have("\\Answered $junk", "$Junk", 5)); /* keywords exactly */
	CU_ASSERT_FALSE(mailbox_view_flags_have("\\Seenx", "\\Seen", 5));
	CU_ASSERT_FALSE(mailbox_view_flags_have("", "\\Seen", 5));
	CU_ASSERT_FALSE(mailbox_view_flags_have(NULL, "\\Seen", 5)); /* not known */
}

/* A flag list is kept once however many messages have it, and each
   message still reads its own: through changes, a forget, an expunge and
   more distinct lists than the first table holds. */
static void test_flag_lists_kept_once(void)
{
	enum { COUNT = 300 };
	uint32_t uids[COUNT];
	struct mailbox_view *view;
	char keyword[32];

	for (uint32_t i = 0; i < COUNT; i++)
		uids[i] = i + 1;
	view = view_of(uids, COUNT);
	for (uint32_t seq = 1; seq <= COUNT; seq++)
		CU_ASSERT_EQUAL(mailbox_view_set_flags(view, seq, seq % 2 ? "\\Seen" : "", seq % 2 ? 5 : 0), 0);
	CU_ASSERT_PTR_EQUAL(mailbox_view_get(view, 1)->flags, mailbox_view_get(view, 299)->flags);
	CU_ASSERT_PTR_EQUAL(mailbox_view_get(view, 2)->flags, mailbox_view_get(view, 300)->flags);
	CU_ASSERT_STRING_EQUAL(mailbox_view_get(view, 3)->flags, "\\Seen");
	CU_ASSERT_STRING_EQUAL(mailbox_view_get(view, 4)->flags, "");
	/* a prefix of another list is a list of its own */
	CU_ASSERT_EQUAL(mailbox_view_set_flags(view, 5, "\\Seen $Work", 11), 0);
	CU_ASSERT_EQUAL(mailbox_view_set_flags(view, 7, "\\Seen $Work", 5), 0);
	CU_ASSERT_STRING_EQUAL(mailbox_view_get(view, 5)->flags, "\\Seen $Work");
	CU_ASSERT_STRING_EQUAL(mailbox_view_get(view, 7)->flags, "\\Seen");
	CU_ASSERT_STRING_EQUAL(mailbox_view_get(view, 9)->flags, "\\Seen");
	/* one list per message: the table grows and keeps every one */
	for (uint32_t seq = 1; seq <= COUNT; seq++) {
		snprintf(keyword, sizeof(keyword), "$K%u", (unsigned int)seq);
		CU_ASSERT_EQUAL(mailbox_view_set_flags(view, seq, keyword, strlen(keyword)), 0);
	}
	mailbox_view_forget_flags(view, 10);
	CU_ASSERT_EQUAL(mailbox_view_upstream_expunge(view, 11, false), 11);
	for (uint32_t seq = 1; seq <= COUNT - 1; seq++) {
		uint32_t was = seq < 11 ? seq : seq + 1;

		snprintf(keyword, sizeof(keyword), "$K%u", (unsigned int)was);
		if (was == 10) {
			CU_ASSERT_PTR_NULL(mailbox_view_get(view, seq)->flags);
		} else {
			CU_ASSERT_STRING_EQUAL(mailbox_view_get(view, seq)->flags, keyword);
		}
	}
	mailbox_view_free(&view);
}

const struct unit_test unit_tests[] = {
	{ "a flag list is kept once, each message reads its own", test_flag_lists_kept_once },
	{ "load, lookup by sequence number and UID", test_load_and_lookup },
	{ "a flag in a flag list", test_flags_have },
	{ "a view never loaded", test_fresh_view },
	{ "EXISTS adds messages whose UIDs are learnt in order", test_exists_and_learnt_uids },
	{ "an expunge the client may be told of at once", test_expunge_at_once },
	{ "held expunges keep the client's numbers and translate", test_held_expunges },
	{ "VANISHED UIDs held and released highest first", test_vanished_held },
	{ "flags, MODSEQ and \\Recent per message", test_flags_modseq_recent },
	{ "100,000 messages", test_large },
	{ NULL, NULL },
};
