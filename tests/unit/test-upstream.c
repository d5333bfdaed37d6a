/* SPDX-License-Identifier: MIT */
/* Unit tests for daemon/upstream: what the proxy advertises after login. */
#include "config.h"
#include "unit.h"
#include "upstream.h"

#include <string.h>

static void filtered(const char *capabilities, const char *want)
{
	char buf[UPSTREAM_CAPABILITY_MAX];

	upstream_filter_capabilities(capabilities, buf, sizeof(buf));
	CU_ASSERT_STRING_EQUAL(buf, want);
}

static void test_carried(void)
{
	CU_ASSERT_TRUE(upstream_capability_is_carried("IDLE"));
	CU_ASSERT_TRUE(upstream_capability_is_carried("literal+"));
	CU_ASSERT_TRUE(upstream_capability_is_carried("THREAD=REFERENCES"));
	CU_ASSERT_TRUE(upstream_capability_is_carried("I18NLEVEL=1"));
	CU_ASSERT_FALSE(upstream_capability_is_carried("THREAD=")); /* a value is needed */
	CU_ASSERT_FALSE(upstream_capability_is_carried("THREAD"));
	CU_ASSERT_FALSE(upstream_capability_is_carried("COMPRESS=DEFLATE"));
	CU_ASSERT_FALSE(upstream_capability_is_carried("STARTTLS"));
	CU_ASSERT_FALSE(upstream_capability_is_carried("LOGINDISABLED"));
	CU_ASSERT_FALSE(upstream_capability_is_carried("AUTH=PLAIN"));
	CU_ASSERT_FALSE(upstream_capability_is_carried("SASL-IR"));
	CU_ASSERT_FALSE(upstream_capability_is_carried("NOTIFY"));
	CU_ASSERT_FALSE(upstream_capability_is_carried("UNAUTHENTICATE"));
	CU_ASSERT_FALSE(upstream_capability_is_carried("X-UNKNOWN"));
	CU_ASSERT_FALSE(upstream_capability_is_carried(""));
}

static void test_filter(void)
{
	/* Dovecot 2.3's list after login */
	filtered("IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT SORT=DISPLAY THREAD=REFERENCES "
		 "THREAD=REFS THREAD=ORDEREDSUBJECT MULTIAPPEND URL-PARTIAL CATENATE UNSELECT CHILDREN "
		 "NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH ESORT SEARCHRES "
		 "WITHIN CONTEXT=SEARCH LIST-STATUS BINARY MOVE SNIPPET=FUZZY PREVIEW=FUZZY PREVIEW "
		 "STATUS=SIZE SAVEDATE LITERAL+ NOTIFY SPECIAL-USE COMPRESS=DEFLATE",
		 "IMAP4rev1 LOGIN-REFERRALS ID ENABLE IDLE SORT SORT=DISPLAY THREAD=REFERENCES "
		 "THREAD=REFS THREAD=ORDEREDSUBJECT MULTIAPPEND URL-PARTIAL CATENATE UNSELECT CHILDREN "
		 "NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH ESORT SEARCHRES "
		 "WITHIN CONTEXT=SEARCH LIST-STATUS BINARY MOVE SNIPPET=FUZZY PREVIEW=FUZZY PREVIEW "
		 "STATUS=SIZE SAVEDATE LITERAL+ SPECIAL-USE");
	filtered("  IDLE   X-FOO  ", "IMAP4rev1 IDLE"); /* the version is never left out */
	filtered("", "IMAP4rev1");
	filtered("IMAP4REV2 AUTH=PLAIN", "IMAP4REV2");
}

static void test_filter_truncates_at_a_word(void)
{
	char buf[16];

	upstream_filter_capabilities("IMAP4rev1 IDLE NAMESPACE UIDPLUS", buf, sizeof(buf));
	CU_ASSERT_STRING_EQUAL(buf, "IMAP4rev1 IDLE");
}

const char unit_suite_name[] = "upstream";
const struct unit_test unit_tests[] = {
	{ "which capabilities the proxy carries", test_carried },
	{ "the list after login: order and case kept", test_filter },
	{ "a small buffer ends at a word", test_filter_truncates_at_a_word },
	{ NULL, NULL },
};
