/* SPDX-License-Identifier: MIT */
/* Unit tests for daemon/mailbox-news: changes counted per account and mailbox, and what each session was told of them. */
#include "config.h"
#include "unit.h"
#include "mailbox-news.h"

#include <stdio.h>

#define ACCOUNT 7
#define OTHER_ACCOUNT 8

static struct mailbox_news_told told_now(const char *mailbox)
{
	return mailbox_news_told_now(ACCOUNT, mailbox);
}

/* A change another session made leaves this one behind; one it was told
   of itself does not. Accounts and mailboxes are counted apart; INBOX in
   any case is one mailbox. */
static void test_changes_by_others_and_own(void)
{
	struct mailbox_news_told a = told_now("INBOX"), b = told_now("INBOX"), other = told_now("Sent");
	struct mailbox_news_told stranger = mailbox_news_told_now(OTHER_ACCOUNT, "INBOX");

	CU_ASSERT_TRUE(mailbox_news_told_all(ACCOUNT, "INBOX", &a));
	mailbox_news_add(ACCOUNT, "inbox", false, &a);
	CU_ASSERT_TRUE(mailbox_news_told_all(ACCOUNT, "INBOX", &a));
	CU_ASSERT_FALSE(mailbox_news_told_all(ACCOUNT, "INBOX", &b));
	CU_ASSERT_TRUE(mailbox_news_told_all(ACCOUNT, "Sent", &other));
	CU_ASSERT_TRUE(mailbox_news_told_all(OTHER_ACCOUNT, "INBOX", &stranger));
	/* b, behind, is told of a change of its own: still behind */
	mailbox_news_add(ACCOUNT, "INBOX", false, &b);
	CU_ASSERT_FALSE(mailbox_news_told_all(ACCOUNT, "INBOX", &b));
	mailbox_news_clear();
}

/* After a command completes, a session has been told what came before it
   was sent; all of it when every change since was told in its answer. */
static void test_catch_up(void)
{
	struct mailbox_news_told a = told_now("INBOX"), b = told_now("INBOX");
	struct mailbox_news_sent sent;

	mailbox_news_add(ACCOUNT, "INBOX", false, &a);
	sent = mailbox_news_sent(ACCOUNT, "INBOX", &b);
	mailbox_news_add(ACCOUNT, "INBOX", false, &b); /* b's FETCH shows a's change */
	mailbox_news_catch_up(ACCOUNT, "INBOX", &b, &sent, true);
	CU_ASSERT_TRUE(mailbox_news_told_all(ACCOUNT, "INBOX", &b));
	CU_ASSERT_FALSE(mailbox_news_told_all(ACCOUNT, "INBOX", &a)); /* b's count of it is news to a */

	/* a change by another while a's command ran: a reaches only its start */
	sent = mailbox_news_sent(ACCOUNT, "INBOX", &a);
	mailbox_news_add(ACCOUNT, "INBOX", false, &b);
	mailbox_news_catch_up(ACCOUNT, "INBOX", &a, &sent, true);
	CU_ASSERT_FALSE(mailbox_news_told_all(ACCOUNT, "INBOX", &a));
	sent = mailbox_news_sent(ACCOUNT, "INBOX", &a);
	mailbox_news_catch_up(ACCOUNT, "INBOX", &a, &sent, true);
	CU_ASSERT_TRUE(mailbox_news_told_all(ACCOUNT, "INBOX", &a));
	mailbox_news_clear();
}

/* An expunge is told only by commands that may report one: after a
   FETCH (expunges_too false) the session is still behind. */
static void test_expunges_wait_for_a_command_that_reports_them(void)
{
	struct mailbox_news_told a = told_now("INBOX"), b = told_now("INBOX");
	struct mailbox_news_sent sent;

	mailbox_news_add(ACCOUNT, "INBOX", true, &a);
	CU_ASSERT_TRUE(mailbox_news_told_all(ACCOUNT, "INBOX", &a));
	sent = mailbox_news_sent(ACCOUNT, "INBOX", &b);
	mailbox_news_catch_up(ACCOUNT, "INBOX", &b, &sent, false);
	CU_ASSERT_FALSE(mailbox_news_told_all(ACCOUNT, "INBOX", &b));
	CU_ASSERT_EQUAL(b.all.changes, mailbox_news_now(ACCOUNT, "INBOX").changes);
	mailbox_news_catch_up(ACCOUNT, "INBOX", &b, &sent, true);
	CU_ASSERT_TRUE(mailbox_news_told_all(ACCOUNT, "INBOX", &b));
	mailbox_news_clear();
}

/* A mailbox never changed has no entry and a zero mark; a catch-up never
   moves a session past the count. */
static void test_unknown_mailbox(void)
{
	struct mailbox_news_told a = told_now("Drafts");
	struct mailbox_news_sent sent = mailbox_news_sent(ACCOUNT, "Drafts", &a);

	CU_ASSERT_EQUAL(a.all.changes, 0);
	CU_ASSERT_EQUAL(a.all.expunges, 0);
	mailbox_news_catch_up(ACCOUNT, "Drafts", &a, &sent, true);
	CU_ASSERT_TRUE(mailbox_news_told_all(ACCOUNT, "Drafts", &a));
	CU_ASSERT_TRUE(mailbox_news_told_all(ACCOUNT, "Never", &a));
	mailbox_news_add(ACCOUNT, "Drafts", false, NULL);
	CU_ASSERT_FALSE(mailbox_news_told_all(ACCOUNT, "Drafts", &a));
	mailbox_news_clear();
}

/* Past MAILBOX_NEWS_MAX mailboxes a change can't be counted for its
   mailbox: every session, of every mailbox, is then behind until a
   command that reports every change (expunges too) completes. */
static void test_changes_past_the_limit(void)
{
	struct mailbox_news_told a = told_now("INBOX"), b = told_now("INBOX");
	struct mailbox_news_sent sent;
	char name[32];

	for (unsigned int i = 0; i < MAILBOX_NEWS_MAX; i++) {
		snprintf(name, sizeof(name), "box%u", i);
		mailbox_news_add(ACCOUNT, name, false, NULL);
	}
	CU_ASSERT_TRUE(mailbox_news_told_all(ACCOUNT, "INBOX", &a));
	mailbox_news_add(ACCOUNT, "one-too-many", false, &a);
	CU_ASSERT_FALSE(mailbox_news_told_all(ACCOUNT, "INBOX", &a));
	CU_ASSERT_FALSE(mailbox_news_told_all(ACCOUNT, "INBOX", &b));
	sent = mailbox_news_sent(ACCOUNT, "INBOX", &b);
	mailbox_news_catch_up(ACCOUNT, "INBOX", &b, &sent, false);
	CU_ASSERT_FALSE(mailbox_news_told_all(ACCOUNT, "INBOX", &b)); /* a FETCH does not report every change */
	mailbox_news_catch_up(ACCOUNT, "INBOX", &b, &sent, true);
	CU_ASSERT_TRUE(mailbox_news_told_all(ACCOUNT, "INBOX", &b));
	mailbox_news_clear();
}

const char unit_suite_name[] = "mailbox-news";
const struct unit_test unit_tests[] = {
	{ "changes by others and by the session itself", test_changes_by_others_and_own },
	{ "catching up after a command", test_catch_up },
	{ "expunges wait for a command that reports them", test_expunges_wait_for_a_command_that_reports_them },
	{ "a mailbox never changed", test_unknown_mailbox },
	{ "changes past the limit count for every mailbox", test_changes_past_the_limit },
	{ NULL, NULL },
};
