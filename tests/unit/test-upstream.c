/* SPDX-License-Identifier: MIT */
/* Unit tests for daemon/upstream and daemon/upstream-probe: what the proxy advertises before and after login. */
#include "config.h"
#include "unit.h"
#include "log.h"
#include "upstream.h"
#include "upstream-probe.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Dovecot 2.3's lists before login: on its plain port (before STARTTLS),
   after STARTTLS (or on its TLS port), and with disable_plaintext_auth
   before STARTTLS */
#define DOVECOT_PLAIN "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ STARTTLS AUTH=PLAIN AUTH=LOGIN"
#define DOVECOT_TLS "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ AUTH=PLAIN AUTH=LOGIN"
#define DOVECOT_TLS_NO_REFERRALS "IMAP4rev1 SASL-IR ID ENABLE IDLE LITERAL+ AUTH=PLAIN AUTH=LOGIN"
#define DOVECOT_DISABLED "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ STARTTLS LOGINDISABLED"

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

/* The pre-login list from count learned lists and the client's connection. */
static void prelogin(const char *const *learned, size_t count, bool starttls, bool refused, const char *want)
{
	char buf[UPSTREAM_CAPABILITY_MAX];

	upstream_format_prelogin_capabilities(learned, count, starttls, refused, buf, sizeof(buf));
	if (strcmp(buf, want) != 0)
		fprintf(stderr, "\nwant: %s\ngot:  %s\n", want, buf);
	CU_ASSERT_STRING_EQUAL(buf, want);
}

static void test_prelogin_follows_the_upstream(void)
{
	/* as the client core gives it: upper case */
	const char *dovecot[] = { "IMAP4REV1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ AUTH=PLAIN AUTH=LOGIN" };

	/* what Dovecot itself says, word for word */
	prelogin(dovecot, 1, false, false, DOVECOT_TLS);
	prelogin(dovecot, 1, true, false, DOVECOT_PLAIN);
	prelogin(dovecot, 1, true, true, DOVECOT_DISABLED);
	prelogin(dovecot, 1, false, true,
		 "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ LOGINDISABLED");
}

static void test_prelogin_keeps_only_what_the_proxy_can_honour(void)
{
	const char *gmail[] = { "IMAP4rev1 UNSELECT IDLE NAMESPACE QUOTA ID XLIST CHILDREN X-GM-EXT-1 "
				"XYZZY SASL-IR AUTH=XOAUTH2 AUTH=PLAIN AUTH=PLAIN-CLIENTTOKEN AUTH=OAUTHBEARER" };
	const char *others[] = { "IMAP4rev1 LITERAL- STARTTLS LOGINDISABLED AUTH=CRAM-MD5 AUTH=SCRAM-SHA-256 "
				 "AUTH=GSSAPI COMPRESS=DEFLATE NOTIFY UNAUTHENTICATE AUTH=LOGIN" };
	const char *plain_port[] = { DOVECOT_PLAIN };

	prelogin(gmail, 1, false, false, "IMAP4rev1 UNSELECT IDLE NAMESPACE QUOTA ID XLIST CHILDREN X-GM-EXT-1 "
		 "SASL-IR AUTH=XOAUTH2 AUTH=PLAIN AUTH=OAUTHBEARER");
	/* no SASL-IR, no ID: ID is the proxy's own; LOGINDISABLED and
	   STARTTLS are the proxy's listener's, not the upstream's */
	prelogin(others, 1, false, false, "IMAP4rev1 ID LITERAL- AUTH=LOGIN");
	prelogin(others, 1, true, false, "IMAP4rev1 ID LITERAL- STARTTLS AUTH=LOGIN");
	prelogin(plain_port, 1, false, false, DOVECOT_TLS);
}

static void test_prelogin_fallback(void)
{
	prelogin(NULL, 0, false, false, "IMAP4rev1 SASL-IR ID AUTH=PLAIN AUTH=LOGIN");
	prelogin(NULL, 0, true, false, "IMAP4rev1 SASL-IR ID STARTTLS AUTH=PLAIN AUTH=LOGIN");
	prelogin(NULL, 0, true, true, "IMAP4rev1 SASL-IR ID STARTTLS LOGINDISABLED");
}

static void test_prelogin_several_upstreams(void)
{
	const char *two[] = { "IMAP4rev1 SASL-IR ID ENABLE IDLE LITERAL+ AUTH=PLAIN AUTH=LOGIN AUTH=XOAUTH2",
			      "IMAP4REV1 IDLE ID LITERAL- AUTH=XOAUTH2 AUTH=PLAIN" };
	const char *rev2[] = { "IMAP4rev2 IMAP4rev1 IDLE", "IMAP4rev1 IDLE" };

	/* what they all offer, in the first one's order */
	prelogin(two, 2, false, false, "IMAP4rev1 ID IDLE AUTH=PLAIN AUTH=XOAUTH2");
	prelogin(rev2, 2, false, false, "IMAP4rev1 ID IDLE");
}

static void test_prelogin_edge_cases(void)
{
	const char *empty[] = { "" };
	const char *rev2[] = { "  IMAP4REV2   ENABLE  " };
	const char *long_word[] = { "IMAP4rev1 X-0123456789012345678901234567890123456789012345678901234567890123456789"
				    "0123456789012345678901234567890123456789012345678901234567890123456789012345678901"
				    "2345678901234567890123456789012345678901234567890123456789012345678901234567890123"
				    "456789 IDLE" };
	char buf[24];

	prelogin(empty, 1, false, false, "IMAP4rev1 ID");
	prelogin(rev2, 1, false, false, "IMAP4rev2 ID ENABLE");
	prelogin(long_word, 1, false, false, "IMAP4rev1 ID IDLE");
	/* a small buffer ends at a word */
	upstream_format_prelogin_capabilities(NULL, 0, true, false, buf, sizeof(buf));
	CU_ASSERT_STRING_EQUAL(buf, "IMAP4rev1 SASL-IR ID");
}

/* An upstream entry of a config, for the probe's store. */
static struct conf_upstream upstream_at(const char *name, const char *host, unsigned int port, enum conf_tls tls)
{
	struct conf_upstream upstream = { .name = (char *)name, .host = (char *)host, .port = port, .tls = tls };

	return upstream;
}

static void probe_format(const struct upstream_probe *probe, const struct conf *conf, const char *want)
{
	char buf[UPSTREAM_CAPABILITY_MAX];

	upstream_probe_format_capability(probe, conf, false, false, buf, sizeof(buf));
	if (strcmp(buf, want) != 0)
		fprintf(stderr, "\nwant: %s\ngot:  %s\n", want, buf);
	CU_ASSERT_STRING_EQUAL(buf, want);
}

static void test_probe_records(void)
{
	struct upstream_probe *probe = upstream_probe_new(NULL);
	struct conf_upstream upstreams[2] = {
		upstream_at("a", "imap.example.com", 993, CONF_TLS_IMPLICIT),
		upstream_at("b", "mail.example.net", 143, CONF_TLS_STARTTLS),
	};
	struct conf conf = { .upstreams = upstreams, .upstreams_count = 1 };
	struct conf_upstream same_server = upstream_at("renamed", "IMAP.example.com", 993, CONF_TLS_IMPLICIT);
	struct conf_upstream other_port = upstream_at("a", "imap.example.com", 143, CONF_TLS_STARTTLS);

	CU_ASSERT_PTR_NOT_NULL_FATAL(probe);
	/* nothing known: the fallback, and every mechanism may be tried */
	probe_format(NULL, &conf, UPSTREAM_PRELOGIN_FALLBACK);
	probe_format(probe, &conf, UPSTREAM_PRELOGIN_FALLBACK);
	CU_ASSERT_FALSE(upstream_probe_refuses_mechanism(probe, &conf, "XOAUTH2"));

	upstream_probe_record(probe, &upstreams[0], "IMAP4REV1 SASL-IR ID ENABLE IDLE LITERAL+ AUTH=PLAIN AUTH=LOGIN");
	probe_format(probe, &conf, DOVECOT_TLS_NO_REFERRALS);
	CU_ASSERT_TRUE(upstream_probe_refuses_mechanism(probe, &conf, "XOAUTH2"));
	CU_ASSERT_FALSE(upstream_probe_refuses_mechanism(probe, &conf, "LOGIN"));
	CU_ASSERT_FALSE(upstream_probe_refuses_mechanism(probe, &conf, "plain"));

	/* a reconnect replaces the list; the key is the server, not the name */
	upstream_probe_record(probe, &same_server, "IMAP4REV1 IDLE AUTH=PLAIN AUTH=XOAUTH2");
	probe_format(probe, &conf, "IMAP4rev1 ID IDLE AUTH=PLAIN AUTH=XOAUTH2");
	CU_ASSERT_FALSE(upstream_probe_refuses_mechanism(probe, &conf, "XOAUTH2"));
	CU_ASSERT_TRUE(upstream_probe_refuses_mechanism(probe, &conf, "LOGIN"));
	upstream_probe_record(probe, &other_port, "IMAP4REV1 ENABLE AUTH=LOGIN");
	probe_format(probe, &conf, "IMAP4rev1 ID IDLE AUTH=PLAIN AUTH=XOAUTH2");

	/* two upstreams: the fallback until both are known, then what both offer */
	conf.upstreams_count = 2;
	probe_format(probe, &conf, UPSTREAM_PRELOGIN_FALLBACK);
	CU_ASSERT_FALSE(upstream_probe_refuses_mechanism(probe, &conf, "LOGIN"));
	upstream_probe_record(probe, &upstreams[1], "IMAP4REV1 IDLE ENABLE AUTH=LOGIN");
	probe_format(probe, &conf, "IMAP4rev1 ID IDLE");
	/* a mechanism only one of them has may still work for some users */
	CU_ASSERT_FALSE(upstream_probe_refuses_mechanism(probe, &conf, "LOGIN"));
	CU_ASSERT_FALSE(upstream_probe_refuses_mechanism(probe, &conf, "XOAUTH2"));
	CU_ASSERT_TRUE(upstream_probe_refuses_mechanism(probe, &conf, "OAUTHBEARER"));

	upstream_probe_free(&probe);
	CU_ASSERT_PTR_NULL(probe);
	upstream_probe_free(&probe);
}

static void test_probe_forgets_the_oldest(void)
{
	struct upstream_probe *probe = upstream_probe_new(NULL);
	struct conf_upstream first = upstream_at("first", "host-0", 993, CONF_TLS_IMPLICIT);
	struct conf conf = { .upstreams = &first, .upstreams_count = 1 };

	CU_ASSERT_PTR_NOT_NULL_FATAL(probe);
	log_set_level(LOG_LEVEL_WARNING); /* a line per list learned */
	upstream_probe_record(probe, &first, "IMAP4REV1 IDLE AUTH=PLAIN");
	for (unsigned int i = 1; i <= UPSTREAM_PROBE_SERVERS_MAX; i++) {
		char host[32];
		struct conf_upstream upstream;

		snprintf(host, sizeof(host), "host-%u", i);
		upstream = upstream_at("other", host, 993, CONF_TLS_IMPLICIT);
		upstream_probe_record(probe, &upstream, "IMAP4REV1");
	}
	/* bounded: the first server was forgotten, so nothing is known of it */
	probe_format(probe, &conf, UPSTREAM_PRELOGIN_FALLBACK);
	upstream_probe_free(&probe);
}

const char unit_suite_name[] = "upstream";
const struct unit_test unit_tests[] = {
	{ "which capabilities the proxy carries", test_carried },
	{ "the list after login: order and case kept", test_filter },
	{ "a small buffer ends at a word", test_filter_truncates_at_a_word },
	{ "before login: the upstream's own list, word for word", test_prelogin_follows_the_upstream },
	{ "before login: only what the proxy can honour", test_prelogin_keeps_only_what_the_proxy_can_honour },
	{ "before login: the fallback when nothing is known", test_prelogin_fallback },
	{ "before login: what several upstreams all offer", test_prelogin_several_upstreams },
	{ "before login: empty, IMAP4rev2, long words, small buffers", test_prelogin_edge_cases },
	{ "the probe's store: learned, replaced, keyed by server", test_probe_records },
	{ "the probe's store is bounded", test_probe_forgets_the_oldest },
	{ NULL, NULL },
};
