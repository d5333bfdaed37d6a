/* SPDX-License-Identifier: MIT */
/* Unit tests for daemon/sync-flagsets: a mailbox's flags from one UID set per system flag. */
#include "config.h"
#include "unit.h"
#include "sync-flagsets.h"
#include "imap-seqset.h"
#include "mailbox-view.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SYSTEM_LIST "\\Answered \\Flagged \\Deleted \\Seen \\Draft"

/* The five searches' answers as UID set texts ("" for none), in order. */
static bool answer_all(struct sync_flagsets *sets, const char *const answers[5])
{
	bool ok = true;

	for (unsigned int i = 0; i < 5; i++) {
		struct imap_seqset set = IMAP_SEQSET_INIT;
		enum imap_seqset_error error;

		if (answers[i][0] == '\0') {
			ok = sync_flagsets_answer(sets, i, NULL) && ok;
			continue;
		}
		CU_ASSERT_EQUAL_FATAL(imap_seqset_parse(&set, answers[i], strlen(answers[i]), 0, &error), 0);
		ok = sync_flagsets_answer(sets, i, &set) && ok;
		imap_seqset_free(&set);
	}
	return ok;
}

/* A view of uids, every message's flags "?" until set. */
static struct mailbox_view *view_of(const uint32_t *uids, uint32_t count)
{
	struct mailbox_view *view = mailbox_view_new();

	CU_ASSERT_PTR_NOT_NULL_FATAL(view);
	CU_ASSERT_EQUAL_FATAL(mailbox_view_load(view, uids, count), 0);
	return view;
}

/* The view's flags as "uid(flags) uid(flags)". */
static const char *describe(const struct mailbox_view *view)
{
	static char text[1024];
	size_t used = 0;

	text[0] = '\0';
	for (uint32_t seq = 1; seq <= mailbox_view_count(view) && used < sizeof(text) - 96; seq++) {
		const struct mailbox_view_message *message = mailbox_view_get(view, seq);

		used += (size_t)snprintf(text + used, sizeof(text) - used, "%s%u(%s)", seq > 1 ? " " : "", message->uid,
					 message->flags != NULL ? message->flags : "?");
	}
	return text;
}

/* Lists of system flags (and \Recent) are searched, in any order; a
   keyword (which a SEARCH would make), another backslash flag, or an
   empty word is not. */
static void test_which_lists(void)
{
	static const char *const searched[] = { SYSTEM_LIST, "\\Seen \\Answered", "\\Answered \\Recent \\Seen", "" };
	static const char *const refused[] = { SYSTEM_LIST " $Junk", "\\Seen \\Junk", "\\Seen  \\Draft", "\\*",
					       "\\Answeredx" };

	for (size_t i = 0; i < sizeof(searched) / sizeof(searched[0]); i++) {
		struct sync_flagsets *sets = sync_flagsets_new(searched[i]);

		CU_ASSERT_PTR_NOT_NULL(sets);
		sync_flagsets_free(&sets);
		CU_ASSERT_PTR_NULL(sets);
	}
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
		CU_ASSERT_PTR_NULL(sync_flagsets_new(refused[i]));
}

/* One search per system flag, in Dovecot's order of them. */
static void test_commands(void)
{
	static const char *const keys[] = { "ANSWERED", "FLAGGED", "DELETED", "SEEN", "DRAFT" };
	struct sync_flagsets *sets = sync_flagsets_new(SYSTEM_LIST);
	char want[64];

	CU_ASSERT_EQUAL(sync_flagsets_count(sets), 5);
	for (unsigned int i = 0; i < 5; i++) {
		snprintf(want, sizeof(want), " UID SEARCH RETURN (ALL) %s\r\n", keys[i]);
		CU_ASSERT_STRING_EQUAL(sync_flagsets_command(sets, i), want);
	}
	CU_ASSERT_PTR_NULL(sync_flagsets_command(sets, 5));
	CU_ASSERT_TRUE(sync_flagsets_searched(sets, SYSTEM_LIST));
	CU_ASSERT_FALSE(sync_flagsets_searched(sets, SYSTEM_LIST " $Junk"));
	CU_ASSERT_FALSE(sync_flagsets_searched(sets, NULL));
	sync_flagsets_free(&sets);
}

/* Each message's FLAGS as Dovecot writes them: \Answered \Flagged
   \Deleted \Seen \Draft in that order, whatever order the answers came
   in; a range may span UIDs the mailbox does not have. */
static void test_load(void)
{
	static const uint32_t uids[] = { 3, 7, 9, 12, 20 };
	static const char *const answers[5] = { "9,20", "", "12", "3:12", "9:15" };
	struct mailbox_view *view = view_of(uids, 5);
	struct sync_flagsets *sets = sync_flagsets_new(SYSTEM_LIST);

	CU_ASSERT_TRUE(answer_all(sets, answers));
	CU_ASSERT_EQUAL(sync_flagsets_load(sets, view), 0);
	CU_ASSERT_STRING_EQUAL(describe(view),
			       "3(\\Seen) 7(\\Seen) 9(\\Answered \\Seen \\Draft) 12(\\Deleted \\Seen \\Draft) 20(\\Answered)");
	sync_flagsets_free(&sets);
	mailbox_view_free(&view);
}

/* What can't be vouched for: a search not answered, one answered twice,
   an answer naming a single UID the mailbox does not have (a message
   appended between the map and the search). */
static void test_refusals(void)
{
	static const uint32_t uids[] = { 3, 7 };
	static const char *const stray[5] = { "", "", "", "3,8", "" };
	static const char *const fine[5] = { "", "", "", "3", "" };
	struct mailbox_view *view = view_of(uids, 2);
	struct sync_flagsets *sets = sync_flagsets_new(SYSTEM_LIST);
	struct imap_seqset set = IMAP_SEQSET_INIT;
	enum imap_seqset_error error;

	CU_ASSERT_TRUE(sync_flagsets_answer(sets, 0, NULL));
	CU_ASSERT_EQUAL(sync_flagsets_load(sets, view), -1); /* four not answered */
	sync_flagsets_free(&sets);

	sets = sync_flagsets_new(SYSTEM_LIST);
	CU_ASSERT_TRUE(answer_all(sets, fine));
	CU_ASSERT_EQUAL(imap_seqset_parse(&set, "7", 1, 0, &error), 0);
	CU_ASSERT_FALSE(sync_flagsets_answer(sets, 3, &set)); /* twice */
	CU_ASSERT_FALSE(sync_flagsets_answer(sets, 5, &set)); /* no such search */
	imap_seqset_free(&set);
	CU_ASSERT_EQUAL(sync_flagsets_load(sets, view), 0);
	CU_ASSERT_STRING_EQUAL(describe(view), "3(\\Seen) 7()");
	sync_flagsets_free(&sets);

	sets = sync_flagsets_new(SYSTEM_LIST);
	CU_ASSERT_TRUE(answer_all(sets, stray));
	CU_ASSERT_EQUAL(sync_flagsets_load(sets, view), -1);
	sync_flagsets_free(&sets);
	mailbox_view_free(&view);
}

/* An empty mailbox: every answer empty, nothing to set. */
static void test_empty_mailbox(void)
{
	static const char *const none[5] = { "", "", "", "", "" };
	struct mailbox_view *view = view_of(NULL, 0);
	struct sync_flagsets *sets = sync_flagsets_new(SYSTEM_LIST);

	CU_ASSERT_TRUE(answer_all(sets, none));
	CU_ASSERT_EQUAL(sync_flagsets_load(sets, view), 0);
	CU_ASSERT_STRING_EQUAL(describe(view), "");
	sync_flagsets_free(&sets);
	mailbox_view_free(&view);
}

const char unit_suite_name[] = "sync-flagsets";
const struct unit_test unit_tests[] = {
	{ "which FLAGS lists are searched", test_which_lists },
	{ "one search per system flag", test_commands },
	{ "each message's FLAGS in Dovecot's order", test_load },
	{ "what can't be vouched for", test_refusals },
	{ "an empty mailbox", test_empty_mailbox },
	{ NULL, NULL },
};
