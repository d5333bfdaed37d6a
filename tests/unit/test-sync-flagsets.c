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

/* Lists of system flags (and \Recent), in any order, and keywords
   that are atoms, at most SYNC_FLAGSETS_KEYWORDS_MAX of them, are
   searched; another backslash flag, an empty word, a word that is no
   atom is not. */
static void test_which_lists(void)
{
	static const struct {
		const char *list;
		int keywords;
	} lists[] = {
		{ SYSTEM_LIST, 0 },
		{ "\\Seen \\Answered", 0 },
		{ "\\Answered \\Recent \\Seen", 0 },
		{ "", 0 },
		{ SYSTEM_LIST " $Junk", 1 },
		{ "zeta \\Seen alpha $Forwarded", 3 },
		{ "\\Seen \\Junk", -1 },
		{ "\\Seen  \\Draft", -1 },
		{ "\\*", -1 },
		{ "\\Answeredx", -1 },
		{ "\\Seen a]b", -1 },
		{ "\\Seen a\"b", -1 },
		{ "\\Seen a[b", -1 },         /* the parser's atoms take "[" for a section */
		{ "\\Seen Foo bar foo", -1 }, /* one keyword twice, in another case */
		{ "\\Seen Foo bar fool", 3 },
	};
	char many[40 * 8], *long_keyword = malloc(202);

	for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++) {
		struct sync_flagsets *sets = sync_flagsets_new(lists[i].list);

		CU_ASSERT_EQUAL(sync_flagsets_keyword_count(lists[i].list), lists[i].keywords);
		CU_ASSERT_EQUAL(sets != NULL, lists[i].keywords >= 0);
		if (sets != NULL)
			CU_ASSERT_EQUAL(sync_flagsets_count(sets), 5); /* keywords come later */
		sync_flagsets_free(&sets);
		CU_ASSERT_PTR_NULL(sets);
	}
	/* SYNC_FLAGSETS_KEYWORDS_MAX keywords are searched, one more is not */
	many[0] = '\0';
	for (unsigned int i = 0; i < SYNC_FLAGSETS_KEYWORDS_MAX; i++)
		snprintf(many + strlen(many), sizeof(many) - strlen(many), "%sk%u", i > 0 ? " " : "", i);
	CU_ASSERT_EQUAL(sync_flagsets_keyword_count(many), SYNC_FLAGSETS_KEYWORDS_MAX);
	strcat(many, " one-more");
	CU_ASSERT_EQUAL(sync_flagsets_keyword_count(many), -1);
	CU_ASSERT_PTR_NULL(sync_flagsets_new(many));
	/* a keyword of 200 bytes is searched, of 201 not */
	CU_ASSERT_PTR_NOT_NULL_FATAL(long_keyword);
	memset(long_keyword, 'k', 200);
	long_keyword[200] = '\0';
	CU_ASSERT_EQUAL(sync_flagsets_keyword_count(long_keyword), 1);
	strcat(long_keyword, "k");
	CU_ASSERT_EQUAL(sync_flagsets_keyword_count(long_keyword), -1);
	free(long_keyword);
}

/* The SELECT's keywords are added once, after the system flags, in the
   list's order; the list is then the one searched. */
static void test_keyword_searches(void)
{
	struct sync_flagsets *sets = sync_flagsets_new(SYSTEM_LIST " $Junk");

	CU_ASSERT_PTR_NOT_NULL_FATAL(sets);
	CU_ASSERT_FALSE(sync_flagsets_searched(sets, SYSTEM_LIST " $Junk")); /* not yet */
	CU_ASSERT_PTR_NULL(sync_flagsets_command(sets, 5));
	CU_ASSERT_EQUAL(sync_flagsets_add_keywords(sets, "\\Seen a]b"), -1); /* refused: nothing changes */
	CU_ASSERT_EQUAL(sync_flagsets_count(sets), 5);
	CU_ASSERT_EQUAL(sync_flagsets_add_keywords(sets, SYSTEM_LIST " zeta alpha"), 2);
	CU_ASSERT_EQUAL(sync_flagsets_count(sets), 7);
	CU_ASSERT_STRING_EQUAL(sync_flagsets_command(sets, 4), " UID SEARCH RETURN (ALL) DRAFT\r\n");
	CU_ASSERT_STRING_EQUAL(sync_flagsets_command(sets, 5), " UID SEARCH RETURN (ALL) KEYWORD zeta\r\n");
	CU_ASSERT_STRING_EQUAL(sync_flagsets_command(sets, 6), " UID SEARCH RETURN (ALL) KEYWORD alpha\r\n");
	CU_ASSERT_PTR_NULL(sync_flagsets_command(sets, 7));
	CU_ASSERT_TRUE(sync_flagsets_searched(sets, SYSTEM_LIST " zeta alpha"));
	CU_ASSERT_FALSE(sync_flagsets_searched(sets, SYSTEM_LIST " $Junk"));
	CU_ASSERT_FALSE(sync_flagsets_searched(sets, SYSTEM_LIST " zeta alpha mid"));
	CU_ASSERT_EQUAL(sync_flagsets_add_keywords(sets, SYSTEM_LIST " zeta alpha mid"), -1); /* once only */
	CU_ASSERT_EQUAL(sync_flagsets_count(sets), 7);
	sync_flagsets_free(&sets);
}

/* Keywords follow the system flags, in the FLAGS list's order (Dovecot's
   keyword index), whatever order a message got them in: Dovecot answered
   "(\Flagged zeta alpha mid)" for a message stored "(zeta mid alpha
   \Flagged)" in a mailbox whose FLAGS list zeta, alpha, mid. */
static void test_load_keywords(void)
{
	static const uint32_t uids[] = { 1, 2, 3, 4, 5 };
	static const char *const system[5] = { "", "4", "", "3", "" };
	static const char *const keywords[3] = { "1,3:4", "2:4", "4" };
	struct mailbox_view *view = view_of(uids, 5);
	struct sync_flagsets *sets = sync_flagsets_new(SYSTEM_LIST);

	CU_ASSERT_EQUAL_FATAL(sync_flagsets_add_keywords(sets, SYSTEM_LIST " zeta alpha mid"), 3);
	CU_ASSERT_TRUE(answer_all(sets, system));
	CU_ASSERT_EQUAL(sync_flagsets_load(sets, view), -1); /* the keywords not answered */
	for (unsigned int i = 0; i < 3; i++) {
		struct imap_seqset set = IMAP_SEQSET_INIT;
		enum imap_seqset_error error;

		CU_ASSERT_EQUAL_FATAL(imap_seqset_parse(&set, keywords[i], strlen(keywords[i]), 0, &error), 0);
		CU_ASSERT_TRUE(sync_flagsets_answer(sets, 5 + i, &set));
		imap_seqset_free(&set);
	}
	CU_ASSERT_FALSE(sync_flagsets_answer(sets, 8, NULL)); /* no such search */
	CU_ASSERT_EQUAL(sync_flagsets_load(sets, view), 0);
	CU_ASSERT_STRING_EQUAL(describe(view), "1(zeta) 2(alpha) 3(\\Seen zeta alpha) 4(\\Flagged zeta alpha mid) 5()");
	sync_flagsets_free(&sets);
	mailbox_view_free(&view);
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

/* Whether uid is in the UID set text (runs "a" or "a:b", ascending). */
static bool in_set(const char *text, uint32_t uid)
{
	while (*text != '\0') {
		char *end;
		uint32_t first = (uint32_t)strtoul(text, &end, 10), last = first;

		if (*end == ':')
			last = (uint32_t)strtoul(end + 1, &end, 10);
		if (uid >= first && uid <= last)
			return true;
		text = *end == ',' ? end + 1 : end;
	}
	return false;
}

/* Runs near one another and far apart, on a mailbox with gaps: each
   run's messages are found where the run before ended, a few steps on
   or by halving what is left; a single UID far on that the mailbox
   does not have is still refused. */
static void test_load_runs_far_apart(void)
{
	static const char *const answers[5] = { "2,4:5,30,31:60,199:300", "", "8:9,12,16,20,24,26,150", "1:3",
						 "" };
	static const char *const stray[5] = { "2,4:5,151", "", "", "", "" };
	uint32_t uids[100];
	struct mailbox_view *view;
	struct sync_flagsets *sets = sync_flagsets_new(SYSTEM_LIST);
	bool all_right = true;

	for (uint32_t i = 0; i < 100; i++)
		uids[i] = 2 * (i + 1); /* 2, 4, ..., 200 */
	view = view_of(uids, 100);
	CU_ASSERT_TRUE(answer_all(sets, answers));
	CU_ASSERT_EQUAL_FATAL(sync_flagsets_load(sets, view), 0);
	for (uint32_t seq = 1; seq <= 100; seq++) {
		const struct mailbox_view_message *message = mailbox_view_get(view, seq);
		char want[64];

		snprintf(want, sizeof(want), "%s%s%s", in_set(answers[0], message->uid) ? "\\Answered" : "",
			 in_set(answers[0], message->uid) && in_set(answers[2], message->uid) ? " " : "",
			 in_set(answers[2], message->uid) ? "\\Deleted" : "");
		if (in_set(answers[3], message->uid))
			snprintf(want + strlen(want), sizeof(want) - strlen(want), "%s\\Seen", want[0] != '\0' ? " " : "");
		if (message->flags == NULL || strcmp(message->flags, want) != 0) {
			fprintf(stderr, "UID %u: flags %s, want %s\n", message->uid,
				message->flags != NULL ? message->flags : "?", want);
			all_right = false;
		}
	}
	CU_ASSERT_TRUE(all_right);
	sync_flagsets_free(&sets);

	sets = sync_flagsets_new(SYSTEM_LIST);
	CU_ASSERT_TRUE(answer_all(sets, stray));
	CU_ASSERT_EQUAL(sync_flagsets_load(sets, view), -1); /* 151: the mailbox has only even UIDs */
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
	{ "runs near one another and far apart", test_load_runs_far_apart },
	{ "the SELECT's keywords, after the system flags", test_keyword_searches },
	{ "keywords in the FLAGS list's order", test_load_keywords },
	{ "one search per system flag", test_commands },
	{ "each message's FLAGS in Dovecot's order", test_load },
	{ "what can't be vouched for", test_refusals },
	{ "an empty mailbox", test_empty_mailbox },
	{ NULL, NULL },
};
