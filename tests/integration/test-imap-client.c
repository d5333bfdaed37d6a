/* SPDX-License-Identifier: MIT */
/* Integration tests of every imap-client command against the fixture's real Dovecot. */
#include "config.h"
#include "itest.h"
#include "imap-client-commands.h"
#include "imap-client-sync.h"
#include "imap-parser.h"
#include "imap-response.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char *host, *user, *pass, *user2, *pass2, *ca_file, *untrusted_ca;
static unsigned int port, tls_port;
static uint64_t max_inline_literal; /* 0: the default */

static struct imap_client_settings settings_for(enum imap_client_tls_mode mode, const char *ca)
{
	struct imap_client_settings settings = {
		.host = host,
		.port = mode == IMAP_CLIENT_TLS_IMPLICIT ? tls_port : port,
		.tls_mode = mode,
		.ca_file = ca,
		.connect_timeout_msecs = 10000,
		.command_timeout_msecs = 10000,
		.max_inline_literal = max_inline_literal,
	};
	return settings;
}

/* A connected, logged-in client, or NULL (with a FAIL line). */
static struct imap_client_sync *session(enum imap_client_tls_mode mode, const char *login_user,
					const char *login_pass)
{
	struct imap_client_settings settings = settings_for(mode, ca_file);
	const struct imap_client_result *result;
	struct imap_client_sync *sync;
	struct imap_client *client;
	const char *error;

	sync = imap_client_sync_new(&settings, &error);
	if (sync == NULL) {
		itest_check("client made", false, "%s", error);
		return NULL;
	}
	client = imap_client_sync_get_client(sync);
	if (imap_client_sync_connect(sync, &result) != IMAP_CLIENT_STATUS_OK) {
		itest_check("connect", false, "%s", result->text);
		imap_client_sync_free(&sync);
		return NULL;
	}
	if (imap_client_sync_wait(sync, imap_client_login(client, login_user, login_pass, NULL, NULL),
				  &result) != IMAP_CLIENT_STATUS_OK) {
		itest_check("login", false, "%s", result->text);
		imap_client_sync_free(&sync);
		return NULL;
	}
	return sync;
}

/* The FETCH item named item in untagged FETCH data, or NULL. */
static const struct imap_arg *fetch_item(const struct imap_client_untagged *untagged, const char *item)
{
	const struct imap_arg *list;
	unsigned int count;

	if (untagged == NULL || untagged->args_count < 1 ||
	    !imap_arg_get_list(&untagged->args[0], &list, &count))
		return NULL;
	for (unsigned int i = 0; i + 1 < count; i += 2) {
		if (imap_arg_atom_equals(&list[i], item))
			return &list[i + 1];
	}
	return NULL;
}

/* Whether the FLAGS list arg holds flag. */
static bool has_flag(const struct imap_arg *arg, const char *flag)
{
	if (arg == NULL || arg->type != IMAP_ARG_LIST)
		return false;
	for (unsigned int i = 0; i < arg->list_count; i++) {
		if (imap_arg_atom_equals(&arg->list[i], flag))
			return true;
	}
	return false;
}

static unsigned int count_untagged(const struct imap_client_result *result, const char *keyword)
{
	unsigned int index = 0, n = 0;

	while (imap_client_result_next(result, keyword, &index) != NULL)
		n++;
	return n;
}

static void test_connect_modes(void)
{
	static const struct {
		const char *name;
		enum imap_client_tls_mode mode;
	} modes[] = {
		{ "plain", IMAP_CLIENT_TLS_NONE },
		{ "STARTTLS", IMAP_CLIENT_TLS_STARTTLS },
		{ "implicit TLS", IMAP_CLIENT_TLS_IMPLICIT },
	};

	for (unsigned int i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
		struct imap_client_sync *sync = session(modes[i].mode, user, pass);
		struct imap_client *client;
		char name[128];

		snprintf(name, sizeof(name), "%s: connected and logged in", modes[i].name);
		itest_check(name, sync != NULL, NULL);
		if (sync == NULL)
			continue;
		client = imap_client_sync_get_client(sync);
		snprintf(name, sizeof(name), "%s: TLS in use as asked", modes[i].name);
		itest_check(name, (imap_client_get_ssl(client) != NULL) == (modes[i].mode != IMAP_CLIENT_TLS_NONE),
		            NULL);
		snprintf(name, sizeof(name), "%s: authenticated state", modes[i].name);
		itest_check(name, imap_client_get_state(client) == IMAP_CLIENT_STATE_AUTHENTICATED, NULL);
		/* the post-login capability list has what only a logged-in Dovecot lists */
		snprintf(name, sizeof(name), "%s: capabilities refreshed after login", modes[i].name);
		itest_check(name, imap_client_has_capability(client, "MOVE") &&
			          !imap_client_has_capability(client, "AUTH=PLAIN") &&
			          !imap_client_has_capability(client, "STARTTLS"),
		            "%s", imap_client_get_capabilities(client));
		imap_client_sync_free(&sync);
	}
}

static void test_starttls_capabilities(void)
{
	struct imap_client_settings settings = settings_for(IMAP_CLIENT_TLS_STARTTLS, ca_file);
	const struct imap_client_result *result;
	struct imap_client_sync *sync;
	const char *error;

	sync = imap_client_sync_new(&settings, &error);
	if (sync == NULL)
		{
		itest_check("STARTTLS client", false, "%s", error);
		return;
	}
	itest_check("STARTTLS connect", imap_client_sync_connect(sync, &result) == IMAP_CLIENT_STATUS_OK,
	            "%s", result->text);
	/* after STARTTLS the list is asked again: STARTTLS is no longer offered */
	itest_check("capabilities refreshed after STARTTLS",
	            imap_client_has_capability(imap_client_sync_get_client(sync), "IMAP4rev1") &&
	            !imap_client_has_capability(imap_client_sync_get_client(sync), "STARTTLS"),
	            "%s", imap_client_get_capabilities(imap_client_sync_get_client(sync)));
	imap_client_sync_free(&sync);
}

static void test_certificates(void)
{
	struct imap_client_settings settings = settings_for(IMAP_CLIENT_TLS_IMPLICIT, untrusted_ca);
	const struct imap_client_result *result;
	struct imap_client_sync *sync;
	const char *error;

	sync = imap_client_sync_new(&settings, &error);
	if (sync == NULL)
		{
		itest_check("untrusted client made", false, "%s", error);
		return;
	}
	itest_check("untrusted CA: implicit TLS refused with abort",
	            imap_client_sync_connect(sync, &result) == IMAP_CLIENT_STATUS_ABORT, "%s", result->text);
	itest_check("untrusted CA: reason names verification", strstr(result->text, "verif") != NULL, "%s",
	            result->text);
	imap_client_sync_free(&sync);

	settings = settings_for(IMAP_CLIENT_TLS_STARTTLS, untrusted_ca);
	sync = imap_client_sync_new(&settings, &error);
	itest_check("untrusted CA: STARTTLS refused with abort",
	            imap_client_sync_connect(sync, &result) == IMAP_CLIENT_STATUS_ABORT, "%s", result->text);
	imap_client_sync_free(&sync);

	/* the certificate names localhost and 127.0.0.1, not this */
	settings = settings_for(IMAP_CLIENT_TLS_IMPLICIT, ca_file);
	settings.host = "127.0.0.2";
	sync = imap_client_sync_new(&settings, &error);
	itest_check("trusted CA, wrong host: refused",
	            imap_client_sync_connect(sync, &result) == IMAP_CLIENT_STATUS_ABORT, "%s", result->text);
	imap_client_sync_free(&sync);

	settings = settings_for(IMAP_CLIENT_TLS_IMPLICIT, untrusted_ca);
	settings.tls_no_verify = true;
	sync = imap_client_sync_new(&settings, &error);
	itest_check("verification off (explicit): accepted",
	            imap_client_sync_connect(sync, &result) == IMAP_CLIENT_STATUS_OK, "%s", result->text);
	imap_client_sync_free(&sync);

	settings = settings_for(IMAP_CLIENT_TLS_IMPLICIT, ca_file);
	settings.host = "localhost";
	sync = imap_client_sync_new(&settings, &error);
	itest_check("trusted CA by name: accepted",
	            imap_client_sync_connect(sync, &result) == IMAP_CLIENT_STATUS_OK, "%s", result->text);
	imap_client_sync_free(&sync);
}

static void test_bad_login(void)
{
	struct imap_client_settings settings = settings_for(IMAP_CLIENT_TLS_NONE, NULL);
	const struct imap_client_result *result;
	struct imap_client_sync *sync;
	const char *error;

	sync = imap_client_sync_new(&settings, &error);
	imap_client_sync_connect(sync, &result);
	itest_check("LOGIN with a wrong password: NO",
	            imap_client_sync_wait(sync, imap_client_login(imap_client_sync_get_client(sync), user,
							            "wrong \"password\"", NULL, NULL),
				          &result) == IMAP_CLIENT_STATUS_NO, "%s", result->text);
	itest_check("still not authenticated",
	            imap_client_get_state(imap_client_sync_get_client(sync)) == IMAP_CLIENT_STATE_NOT_AUTHENTICATED,
	            NULL);
	imap_client_sync_free(&sync);
}

static void test_authenticate_plain(void)
{
	struct imap_client_settings settings = settings_for(IMAP_CLIENT_TLS_STARTTLS, ca_file);
	const struct imap_client_result *result;
	struct imap_sasl_mechanism *mechanism;
	struct imap_client_sync *sync;
	struct imap_client *client;
	const char *error;

	sync = imap_client_sync_new(&settings, &error);
	client = imap_client_sync_get_client(sync);
	itest_check("AUTHENTICATE: connect", imap_client_sync_connect(sync, &result) == IMAP_CLIENT_STATUS_OK,
	            "%s", result->text);
	itest_check("server offers SASL-IR and AUTH=PLAIN",
	            imap_client_has_capability(client, "SASL-IR") &&
	            imap_client_has_capability(client, "AUTH=PLAIN"), "%s", imap_client_get_capabilities(client));
	mechanism = imap_sasl_plain_new(NULL, user, "not the password");
	itest_check("AUTHENTICATE PLAIN (SASL-IR) with a wrong password: NO",
	            imap_client_sync_wait(sync, imap_client_authenticate(client, mechanism, NULL, NULL),
				          &result) == IMAP_CLIENT_STATUS_NO, "%s", result->text);
	imap_sasl_mechanism_free(&mechanism);
	mechanism = imap_sasl_plain_new(NULL, user, pass);
	itest_check("AUTHENTICATE PLAIN (SASL-IR): OK",
	            imap_client_sync_wait(sync, imap_client_authenticate(client, mechanism, NULL, NULL),
				          &result) == IMAP_CLIENT_STATUS_OK, "%s", result->text);
	imap_sasl_mechanism_free(&mechanism);
	itest_check("AUTHENTICATE: authenticated state",
	            imap_client_get_state(client) == IMAP_CLIENT_STATE_AUTHENTICATED, NULL);
	imap_client_sync_free(&sync);
}

static const char test_message[] =
	"From: Alice <alice@example.org>\r\n"
	"To: Bob <bob@example.org>\r\n"
	"Subject: client core test \"quoted\" {3}\r\n"
	"Date: Tue, 17 Jul 1996 02:44:25 -0700\r\n"
	"Message-ID: <client-core-test@example.org>\r\n"
	"MIME-Version: 1.0\r\n"
	"Content-Type: text/plain; charset=us-ascii\r\n"
	"\r\n"
	"Hello Bob,\r\n"
	"this body has a line with only a dot:\r\n"
	".\r\n"
	"and ends here.\r\n";

static void test_mailbox_commands(void)
{
	struct imap_client_sync *sync = session(IMAP_CLIENT_TLS_NONE, user2, pass2);
	const struct imap_client_untagged *untagged;
	const struct imap_client_result *result;
	struct imap_client *client;
	unsigned int index;
	const char *str;
	size_t len;
	bool found;

	if (sync == NULL)
		return;
	client = imap_client_sync_get_client(sync);
	itest_check("CREATE", imap_client_sync_wait(sync, imap_client_create(client, "Work stuff", NULL, NULL),
					            &result) == IMAP_CLIENT_STATUS_OK, "%s", result->text);
	itest_check("CREATE existing: NO",
	            imap_client_sync_wait(sync, imap_client_create(client, "Work stuff", NULL, NULL), &result) ==
	            IMAP_CLIENT_STATUS_NO, "%s", result->text);
	itest_check("CREATE second", imap_client_sync_wait(sync, imap_client_create(client, "Archive", NULL, NULL),
						           &result) == IMAP_CLIENT_STATUS_OK, "%s", result->text);
	itest_check("RENAME", imap_client_sync_wait(sync, imap_client_rename(client, "Work stuff", "Projects \"A\"",
								             NULL, NULL),
					            &result) == IMAP_CLIENT_STATUS_OK, "%s", result->text);
	imap_client_sync_wait(sync, imap_client_list(client, "", "*", NULL, NULL), &result);
	found = false;
	index = 0;
	while ((untagged = imap_client_result_next(result, "LIST", &index)) != NULL) {
		if (untagged->args_count == 3 && imap_arg_get_astring(&untagged->args[2], &str, &len) &&
		    strcmp(str, "Projects \"A\"") == 0)
			found = true;
		if (untagged->args_count == 3 && imap_arg_get_astring(&untagged->args[2], &str, &len) &&
		    strcmp(str, "Work stuff") == 0)
			found = false;
	}
	itest_check("LIST shows the renamed mailbox", found && result->status == IMAP_CLIENT_STATUS_OK, NULL);
	itest_check("SUBSCRIBE", imap_client_sync_wait(sync, imap_client_subscribe(client, "Projects \"A\"", NULL, NULL),
						       &result) == IMAP_CLIENT_STATUS_OK, "%s", result->text);
	imap_client_sync_wait(sync, imap_client_lsub(client, "", "*", NULL, NULL), &result);
	untagged = NULL;
	index = 0;
	untagged = imap_client_result_next(result, "LSUB", &index);
	itest_check("LSUB lists the subscription",
	            untagged != NULL && untagged->args_count == 3 &&
	            imap_arg_get_astring(&untagged->args[2], &str, &len) && strcmp(str, "Projects \"A\"") == 0 &&
	            count_untagged(result, "LSUB") == 1, NULL);
	itest_check("UNSUBSCRIBE", imap_client_sync_wait(sync, imap_client_unsubscribe(client, "Projects \"A\"", NULL, NULL),
						         &result) == IMAP_CLIENT_STATUS_OK, "%s", result->text);
	imap_client_sync_wait(sync, imap_client_lsub(client, "", "*", NULL, NULL), &result);
	itest_check("LSUB empty after UNSUBSCRIBE", count_untagged(result, "LSUB") == 0, NULL);
	itest_check("DELETE", imap_client_sync_wait(sync, imap_client_delete(client, "Archive", NULL, NULL),
					            &result) == IMAP_CLIENT_STATUS_OK, "%s", result->text);
	itest_check("DELETE missing: NO", imap_client_sync_wait(sync, imap_client_delete(client, "Archive", NULL, NULL),
							        &result) == IMAP_CLIENT_STATUS_NO, "%s", result->text);
	imap_client_sync_wait(sync, imap_client_namespace(client, NULL, NULL), &result);
	itest_check("NAMESPACE", result->status == IMAP_CLIENT_STATUS_OK && count_untagged(result, "NAMESPACE") == 1,
	            NULL);
	{
		static const char *const fields[] = { "name", "imapcached-test", "version", "0", NULL };

		imap_client_sync_wait(sync, imap_client_id(client, fields, NULL, NULL), &result);
		itest_check("ID", result->status == IMAP_CLIENT_STATUS_OK && count_untagged(result, "ID") == 1,
		            "%s", result->text);
	}
	imap_client_sync_wait(sync, imap_client_enable(client, "CONDSTORE", NULL, NULL), &result);
	untagged = imap_client_result_next(result, "ENABLED", &(unsigned int){ 0 });
	itest_check("ENABLE CONDSTORE",
	            result->status == IMAP_CLIENT_STATUS_OK && untagged != NULL && untagged->args_count == 1 &&
	            imap_arg_atom_equals(&untagged->args[0], "CONDSTORE"), NULL);
	itest_check("CHECK outside SELECTED: BAD",
	            imap_client_sync_wait(sync, imap_client_check(client, NULL, NULL), &result) ==
	            IMAP_CLIENT_STATUS_BAD, "%s", result->text);
	itest_check("xatom NOOP", imap_client_sync_wait(sync, imap_client_xatom(client, "NOOP", NULL, NULL, NULL),
						        &result) == IMAP_CLIENT_STATUS_OK, NULL);
	itest_check("xatom unknown: BAD", imap_client_sync_wait(sync, imap_client_xatom(client, "XFOO", "bar", NULL, NULL),
							        &result) == IMAP_CLIENT_STATUS_BAD, NULL);
	imap_client_sync_wait(sync, imap_client_logout(client, NULL, NULL), &result);
	itest_check("LOGOUT: OK with BYE in the result",
	            result->status == IMAP_CLIENT_STATUS_OK && count_untagged(result, "BYE") == 1, "%s", result->text);
	imap_client_sync_free(&sync);
}

/* The number after "key": in the manifest (the first one). */
static unsigned long manifest_number(const char *key)
{
	static char *manifest;
	char pattern[64];
	const char *p;

	if (manifest == NULL) {
		FILE *f = fopen(itest_env("test-imap-client", "IMAPTEST_MANIFEST"), "r");
		size_t size = 0, n;

		manifest = calloc(1, 8 * 1024 * 1024);
		if (f == NULL || manifest == NULL)
			exit(99);
		while ((n = fread(manifest + size, 1, 8 * 1024 * 1024 - 1 - size, f)) > 0)
			size += n;
		fclose(f);
	}
	snprintf(pattern, sizeof(pattern), "\"%s\": ", key);
	p = strstr(manifest, pattern);
	return p == NULL ? 0 : strtoul(p + strlen(pattern), NULL, 10);
}

struct streamed {
	size_t bytes, calls;
	bool in_order, saw_item;
};

static int collect_literal(struct imap_client *client, struct imap_parser *parser,
			   const struct imap_parser_literal_chunk *chunk, void *context)
{
	struct streamed *streamed = context;
	const struct imap_arg *args;
	unsigned int count, depth = imap_parser_get_open_depth(parser);

	(void)client;
	if (chunk->offset != streamed->bytes)
		streamed->in_order = false;
	streamed->bytes += chunk->len;
	streamed->calls++;
	imap_parser_get_open_args(parser, depth, &args, &count);
	if (count > 0 && imap_arg_atom_equals(&args[count - 1], "BODY[]"))
		streamed->saw_item = true;
	return 0;
}

static void test_examine_and_fetch(void)
{
	struct imap_client_sync *sync;
	const struct imap_client_untagged *untagged;
	const struct imap_client_result *result;
	struct imap_client_untagged *stored;
	struct imap_client *client;
	const struct imap_arg *arg;
	unsigned long count = manifest_number("count");
	char expected[32];
	const char *str;
	uint32_t number;
	uint64_t size;
	size_t len;

	max_inline_literal = 4096; /* message 1 (10 KB) streams, its header does not */
	sync = session(IMAP_CLIENT_TLS_NONE, user, pass);
	max_inline_literal = 0;
	if (sync == NULL)
		return;
	client = imap_client_sync_get_client(sync);
	imap_client_sync_wait(sync, imap_client_select(client, "INBOX", true, NULL, NULL, NULL), &result);
	itest_check("EXAMINE: OK", result->status == IMAP_CLIENT_STATUS_OK, "%s", result->text);
	itest_check("EXAMINE: read-only detected", imap_client_is_read_only(client), NULL);
	itest_check("EXAMINE: selected state", imap_client_get_state(client) == IMAP_CLIENT_STATE_SELECTED, NULL);
	untagged = imap_client_result_next(result, "EXISTS", &(unsigned int){ 0 });
	itest_check("EXAMINE: EXISTS is the corpus count", untagged != NULL && untagged->has_number &&
	            untagged->number == count, "%lu", count);
	stored = imap_client_pop_response(client, "UIDVALIDITY");
	snprintf(expected, sizeof(expected), "%lu", manifest_number("uidvalidity"));
	itest_check("response(UIDVALIDITY) is the corpus's", stored != NULL && strcmp(stored->text, expected) == 0,
	            "%s", stored != NULL ? stored->text : "none");
	imap_client_untagged_unref(&stored);
	/* Dovecot answers OK but ignores it */
	itest_check("STORE in a read-only mailbox: refused",
	            imap_client_sync_wait(sync, imap_client_store(client, false, "1", "+FLAGS", "(\\Seen)", NULL, NULL),
				          &result) != IMAP_CLIENT_STATUS_BAD && count_untagged(result, "FETCH") == 0 &&
	            strstr(result->text, "read-only") != NULL, "%s", result->text);

	imap_client_sync_wait(sync, imap_client_fetch(client, false, "1",
						      "(UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODYSTRUCTURE "
						      "BODY BODY.PEEK[HEADER.FIELDS (SUBJECT)] BODY.PEEK[TEXT]<0.10> "
						      "RFC822.HEADER BINARY.SIZE[1] MODSEQ)", NULL, NULL), &result);
	untagged = imap_client_result_next(result, "FETCH", &(unsigned int){ 0 });
	itest_check("FETCH: one response for message 1", result->status == IMAP_CLIENT_STATUS_OK &&
	            untagged != NULL && untagged->number == 1 && count_untagged(result, "FETCH") == 1, "%s",
	            result->text);
	itest_check("FETCH UID", (arg = fetch_item(untagged, "UID")) != NULL && imap_arg_get_number32(arg, &number) &&
	            number == 1, NULL);
	itest_check("FETCH FLAGS is a list", (arg = fetch_item(untagged, "FLAGS")) != NULL && arg->type == IMAP_ARG_LIST,
	            NULL);
	itest_check("FETCH INTERNALDATE", (arg = fetch_item(untagged, "INTERNALDATE")) != NULL &&
	            imap_arg_get_string(arg, &str, &len) && len == 26, NULL);
	itest_check("FETCH RFC822.SIZE is the corpus's", (arg = fetch_item(untagged, "RFC822.SIZE")) != NULL &&
	            imap_arg_get_number(arg, &size) && size == manifest_number("rfc822_size"), NULL);
	itest_check("FETCH ENVELOPE (glued address lists) has 10 fields",
	            (arg = fetch_item(untagged, "ENVELOPE")) != NULL && arg->type == IMAP_ARG_LIST && arg->list_count == 10,
	            NULL);
	{
		struct imap_response_parser *parser = imap_response_parser_new();
		struct imap_response response;
		const struct imap_fetch_item *item;
		struct imap_envelope envelope;
		const char *message = "";

		itest_check("untagged line parses with imap-response",
		            untagged != NULL && untagged->line != NULL &&
		            imap_response_parse(parser, untagged->line, &response, &message) == IMAP_RESPONSE_ERROR_NONE &&
		            response.number == 1, "%s", message);
		item = untagged != NULL && untagged->line != NULL ? imap_response_fetch_find(&response, IMAP_FETCH_ENVELOPE) : NULL;
		itest_check("imap-response: ENVELOPE with 3 To addresses",
		            item != NULL && imap_envelope_from_arg(item->value, &envelope) && envelope.to_count == 3, NULL);
		imap_response_parser_free(&parser);
	}
	itest_check("FETCH BODYSTRUCTURE", (arg = fetch_item(untagged, "BODYSTRUCTURE")) != NULL &&
	            arg->type == IMAP_ARG_LIST, NULL);
	itest_check("FETCH BODY", (arg = fetch_item(untagged, "BODY")) != NULL && arg->type == IMAP_ARG_LIST, NULL);
	itest_check("FETCH BODY[HEADER.FIELDS (SUBJECT)]",
	            (arg = fetch_item(untagged, "BODY[HEADER.FIELDS (SUBJECT)]")) != NULL &&
	            imap_arg_get_string(arg, &str, &len) && strncasecmp(str, "Subject:", 8) == 0, NULL);
	itest_check("FETCH BODY[TEXT]<0>", (arg = fetch_item(untagged, "BODY[TEXT]<0>")) != NULL &&
	            imap_arg_get_string(arg, &str, &len) && len == 10, NULL);
	itest_check("FETCH RFC822.HEADER", (arg = fetch_item(untagged, "RFC822.HEADER")) != NULL &&
	            imap_arg_get_string(arg, &str, &len) && len > 10 && strstr(str, "\r\n\r\n") != NULL, NULL);
	itest_check("FETCH BINARY.SIZE[1]", (arg = fetch_item(untagged, "BINARY.SIZE[1]")) != NULL &&
	            imap_arg_get_number(arg, &size), NULL);
	itest_check("FETCH MODSEQ", (arg = fetch_item(untagged, "MODSEQ")) != NULL && arg->type == IMAP_ARG_LIST, NULL);

	imap_client_sync_wait(sync, imap_client_fetch(client, false, "1", "(BINARY.PEEK[1] BODY.PEEK[1.MIME] RFC822.SIZE)",
						      NULL, NULL), &result);
	untagged = imap_client_result_next(result, "FETCH", &(unsigned int){ 0 });
	{
		const struct imap_arg *size_arg = fetch_item(untagged, "RFC822.SIZE");
		uint64_t total = 0;

		arg = fetch_item(untagged, "BINARY[1]");
		/* the body is over this session's inline limit: only its size is kept */
		itest_check("FETCH BINARY[1] (streamed)",
		            result->status == IMAP_CLIENT_STATUS_OK && arg != NULL &&
		            arg->type == IMAP_ARG_LITERAL_STREAMED &&
		            size_arg != NULL && imap_arg_get_number(size_arg, &total) && arg->len > 0 && arg->len < total,
		            "%s", result->text);
	}
	itest_check("FETCH BODY[1.MIME]", (arg = fetch_item(untagged, "BODY[1.MIME]")) != NULL &&
	            imap_arg_get_string(arg, &str, &len), NULL);
	imap_client_sync_wait(sync, imap_client_fetch(client, true, "1:3", "(RFC822.SIZE)", NULL, NULL), &result);
	itest_check("UID FETCH 1:3", result->status == IMAP_CLIENT_STATUS_OK && count_untagged(result, "FETCH") == 3,
	            NULL);
	imap_client_sync_wait(sync, imap_client_partial(client, 2, "RFC822.PEEK", 5, 20, NULL, NULL), &result);
	untagged = imap_client_result_next(result, "FETCH", &(unsigned int){ 0 });
	itest_check("partial as BODY[]<5.20>", (arg = fetch_item(untagged, "BODY[]<5>")) != NULL &&
	            imap_arg_get_string(arg, &str, &len) && len == 20, NULL);
	imap_client_sync_wait(sync, imap_client_search(client, false, NULL, "ALL", NULL, NULL), &result);
	untagged = imap_client_result_next(result, "SEARCH", &(unsigned int){ 0 });
	itest_check("SEARCH ALL lists every message", untagged != NULL && untagged->args_count == count, NULL);
	imap_client_sync_wait(sync, imap_client_search(client, true, "UTF-8", "UID 2:4", NULL, NULL), &result);
	untagged = imap_client_result_next(result, "SEARCH", &(unsigned int){ 0 });
	itest_check("UID SEARCH CHARSET UTF-8 UID 2:4", untagged != NULL && untagged->args_count == 3, NULL);
	imap_client_sync_wait(sync, imap_client_uid(client, "SEARCH", "UID 5", NULL, NULL), &result);
	untagged = imap_client_result_next(result, "SEARCH", &(unsigned int){ 0 });
	itest_check("uid(SEARCH, UID 5)", untagged != NULL && untagged->args_count == 1 &&
	            imap_arg_get_number32(&untagged->args[0], &number) && number == 5, NULL);

	imap_client_sync_wait(sync, imap_client_sort(client, false, "(REVERSE ARRIVAL)", "US-ASCII", "ALL", NULL, NULL),
			      &result);
	untagged = imap_client_result_next(result, "SORT", &(unsigned int){ 0 });
	itest_check("SORT (REVERSE ARRIVAL) lists every message", result->status == IMAP_CLIENT_STATUS_OK &&
	            untagged != NULL && untagged->args_count == count, "%s", result->text);
	imap_client_sync_wait(sync, imap_client_thread(client, true, "REFERENCES", "UTF-8", "ALL", NULL, NULL),
			      &result);
	untagged = imap_client_result_next(result, "THREAD", &(unsigned int){ 0 });
	itest_check("UID THREAD REFERENCES", result->status == IMAP_CLIENT_STATUS_OK && untagged != NULL &&
	            untagged->args_count > 0 && untagged->args[0].type == IMAP_ARG_LIST, "%s", result->text);
	/* large literals stream to the caller instead of being held */
	{
		struct streamed streamed = { .in_order = true };

		imap_client_set_literal_callback(client, collect_literal, &streamed);
		imap_client_sync_wait(sync, imap_client_fetch(client, false, "1", "(BODY.PEEK[])", NULL, NULL),
				      &result);
		imap_client_set_literal_callback(client, NULL, NULL);
		untagged = imap_client_result_next(result, "FETCH", &(unsigned int){ 0 });
		arg = fetch_item(untagged, "BODY[]");
		itest_check("BODY[] larger than the inline limit is streamed",
		            result->status == IMAP_CLIENT_STATUS_OK && arg != NULL &&
		            arg->type == IMAP_ARG_LITERAL_STREAMED && arg->len == manifest_number("rfc822_size"), NULL);
		itest_check("streamed chunks: in order, all bytes, item known",
		            streamed.in_order && streamed.bytes == manifest_number("rfc822_size") &&
		            streamed.saw_item && streamed.calls >= 1, "%zu bytes, %zu calls", streamed.bytes,
		            streamed.calls);
	}
	itest_check("CLOSE", imap_client_sync_wait(sync, imap_client_close(client, NULL, NULL), &result) ==
	            IMAP_CLIENT_STATUS_OK && imap_client_get_state(client) == IMAP_CLIENT_STATE_AUTHENTICATED, NULL);
	imap_client_sync_free(&sync);
}

struct appender {
	struct imap_client_sync *other;
	bool appended;
};

static void append_from_other(void *context)
{
	struct appender *appender = context;
	const struct imap_client_result *result;

	appender->appended =
		imap_client_sync_wait(appender->other,
				      imap_client_append(imap_client_sync_get_client(appender->other), "INBOX",
							 NULL, NULL, test_message, strlen(test_message), NULL,
							 NULL),
				      &result) == IMAP_CLIENT_STATUS_OK;
}

static void test_message_commands(void)
{
	struct imap_client_sync *sync = session(IMAP_CLIENT_TLS_STARTTLS, user2, pass2);
	struct imap_client_sync *other = session(IMAP_CLIENT_TLS_NONE, user2, pass2);
	const struct imap_client_untagged *untagged;
	const struct imap_client_result *result;
	struct imap_client *client;
	const struct imap_arg *arg;
	uint32_t uidvalidity, uid, number;
	const char *str, *source, *dest;
	size_t len;
	bool woken;

	if (sync == NULL || other == NULL)
		goto out;
	client = imap_client_sync_get_client(sync);
	imap_client_sync_wait(sync, imap_client_create(client, "Target", NULL, NULL), &result);
	imap_client_sync_wait(sync, imap_client_select(client, "INBOX", false,
						       &(struct imap_client_select_params){ .condstore = true },
						       NULL, NULL), &result);
	itest_check("SELECT (CONDSTORE): read-write", result->status == IMAP_CLIENT_STATUS_OK &&
	            !imap_client_is_read_only(client), "%s", result->text);
	imap_client_sync_wait(sync, imap_client_append(client, "INBOX", "(\\Seen \\Flagged)",
						       "17-Jul-1996 02:44:25 -0700", test_message,
						       strlen(test_message), NULL, NULL), &result);
	itest_check("APPEND with flags and date", result->status == IMAP_CLIENT_STATUS_OK, "%s", result->text);
	itest_check("APPENDUID", imap_client_result_get_appenduid(result, &uidvalidity, &uid) && uid == 1, "%s",
	            result->code != NULL ? result->code : "no code");
	imap_client_sync_wait(sync, imap_client_fetch(client, true, "1", "(FLAGS INTERNALDATE BODY.PEEK[])",
						      NULL, NULL), &result);
	untagged = imap_client_result_next(result, "FETCH", &(unsigned int){ 0 });
	itest_check("FETCH back: byte-equal", (arg = fetch_item(untagged, "BODY[]")) != NULL &&
	            imap_arg_get_string(arg, &str, &len) && len == strlen(test_message) &&
	            memcmp(str, test_message, len) == 0, NULL);
	imap_client_sync_wait(sync, imap_client_fetch(client, false, "1", "(ENVELOPE RFC822.TEXT RFC822)", NULL, NULL),
			      &result);
	untagged = imap_client_result_next(result, "FETCH", &(unsigned int){ 0 });
	arg = fetch_item(untagged, "ENVELOPE");
	itest_check("FETCH ENVELOPE has 10 fields, the subject unquoted",
	            arg != NULL && arg->type == IMAP_ARG_LIST && arg->list_count == 10 &&
	            imap_arg_get_string(&arg->list[1], &str, &len) &&
	            strcmp(str, "client core test \"quoted\" {3}") == 0, NULL);
	itest_check("FETCH RFC822.TEXT", (arg = fetch_item(untagged, "RFC822.TEXT")) != NULL &&
	            imap_arg_get_string(arg, &str, &len) && strncmp(str, "Hello Bob,", 10) == 0, NULL);
	itest_check("FETCH RFC822", (arg = fetch_item(untagged, "RFC822")) != NULL &&
	            imap_arg_get_string(arg, &str, &len) && len == strlen(test_message), NULL);
	imap_client_sync_wait(sync, imap_client_fetch(client, true, "1", "(FLAGS INTERNALDATE BODY.PEEK[])",
						      NULL, NULL), &result);
	untagged = imap_client_result_next(result, "FETCH", &(unsigned int){ 0 });
	itest_check("FETCH back: the date", (arg = fetch_item(untagged, "INTERNALDATE")) != NULL &&
	            imap_arg_get_string(arg, &str, &len) &&
	            /* maildir keeps the time, not the zone */
	            (strcmp(str, "17-Jul-1996 02:44:25 -0700") == 0 || strcmp(str, "17-Jul-1996 09:44:25 +0000") == 0),
	            "%s (%u FETCH, %s)", arg != NULL ? arg->str : "none", count_untagged(result, "FETCH"), result->text);
	arg = fetch_item(untagged, "FLAGS");
	itest_check("FETCH back: the flags", has_flag(arg, "\\Seen") && has_flag(arg, "\\Flagged") &&
	            !has_flag(arg, "\\Answered"), NULL);

	itest_check("IDLE woken by an APPEND from a second connection",
	            imap_client_sync_idle(sync, 10000, append_from_other,
				          &(struct appender){ .other = other }, &woken, &result) ==
	            IMAP_CLIENT_STATUS_OK && woken, "%s", result->text);
	untagged = imap_client_result_next(result, "EXISTS", &(unsigned int){ 0 });
	itest_check("IDLE result holds EXISTS 2", untagged != NULL && untagged->number == 2, NULL);

	imap_client_sync_wait(sync, imap_client_store(client, false, "2", "+FLAGS", "(\\Answered)", NULL, NULL),
			      &result);
	untagged = imap_client_result_next(result, "FETCH", &(unsigned int){ 0 });
	arg = fetch_item(untagged, "FLAGS");
	itest_check("STORE +FLAGS answers with the new flags", result->status == IMAP_CLIENT_STATUS_OK &&
	            has_flag(arg, "\\Answered") && !has_flag(arg, "\\Seen"), NULL);
	imap_client_sync_wait(sync, imap_client_search(client, false, NULL, "ANSWERED", NULL, NULL), &result);
	untagged = imap_client_result_next(result, "SEARCH", &(unsigned int){ 0 });
	itest_check("SEARCH ANSWERED finds it", untagged != NULL && untagged->args_count == 1 &&
	            imap_arg_get_number32(&untagged->args[0], &number) && number == 2, NULL);
	imap_client_sync_wait(sync, imap_client_status(client, "Target", "(MESSAGES UIDNEXT)", NULL, NULL),
			      &result);
	untagged = imap_client_result_next(result, "STATUS", &(unsigned int){ 0 });
	itest_check("STATUS Target", untagged != NULL && untagged->args_count == 2 &&
	            imap_arg_get_astring(&untagged->args[0], &str, &len) && strcmp(str, "Target") == 0 &&
	            untagged->args[1].type == IMAP_ARG_LIST && untagged->args[1].list_count == 4, NULL);

	imap_client_sync_wait(sync, imap_client_copy(client, false, "1", "Target", NULL, NULL), &result);
	itest_check("COPY with COPYUID", result->status == IMAP_CLIENT_STATUS_OK &&
	            imap_client_result_get_copyuid(result, &uidvalidity, &source, &dest) && strcmp(source, "1") == 0 &&
	            strcmp(dest, "1") == 0, "%s", result->code != NULL ? result->code : "no code");
	imap_client_sync_wait(sync, imap_client_move(client, true, "2", "Target", NULL, NULL), &result);
	untagged = imap_client_result_next(result, "EXPUNGE", &(unsigned int){ 0 });
	itest_check("UID MOVE: EXPUNGE of the moved one", result->status == IMAP_CLIENT_STATUS_OK &&
	            untagged != NULL && untagged->number == 2, "%s", result->text);
	itest_check("UID MOVE: COPYUID", imap_client_result_get_copyuid(result, &uidvalidity, &source, &dest) &&
	            strcmp(source, "2") == 0 && strcmp(dest, "2") == 0, NULL);

	imap_client_sync_wait(sync, imap_client_select(client, "Target", false, NULL, NULL, NULL), &result);
	untagged = imap_client_result_next(result, "EXISTS", &(unsigned int){ 0 });
	itest_check("SELECT Target: 2 messages", untagged != NULL && untagged->number == 2, NULL);
	imap_client_sync_wait(sync, imap_client_store(client, false, "1:2", "+FLAGS.SILENT", "(\\Deleted)",
						      NULL, NULL), &result);
	untagged = imap_client_result_next(result, "FETCH", &(unsigned int){ 0 });
	itest_check("STORE .SILENT: no FLAGS back (CONDSTORE may send MODSEQ)", result->status == IMAP_CLIENT_STATUS_OK &&
	            fetch_item(untagged, "FLAGS") == NULL, NULL);
	itest_check("CHECK", imap_client_sync_wait(sync, imap_client_check(client, NULL, NULL), &result) ==
	            IMAP_CLIENT_STATUS_OK, NULL);
	imap_client_sync_wait(sync, imap_client_expunge(client, NULL, NULL), &result);
	{
		unsigned int index = 0, n = 0;
		bool all_one = true;

		while ((untagged = imap_client_result_next(result, "EXPUNGE", &index)) != NULL) {
			n++;
			/* each number is valid at its time: 1 then 1, or 2 then 1 */
			all_one = all_one && untagged->number <= 2 - (n - 1);
		}
		itest_check("EXPUNGE lists both", result->status == IMAP_CLIENT_STATUS_OK && n == 2 && all_one,
		            "%u, %s", n, result->text);
	}
	imap_client_sync_wait(sync, imap_client_select(client, "INBOX", false, NULL, NULL, NULL), &result);
	imap_client_sync_wait(sync, imap_client_store(client, true, "1:*", "+FLAGS.SILENT", "(\\Deleted)",
						      NULL, NULL), &result);
	imap_client_sync_wait(sync, imap_client_uid_expunge(client, "1", NULL, NULL), &result);
	itest_check("UID EXPUNGE removes only that UID", result->status == IMAP_CLIENT_STATUS_OK &&
	            count_untagged(result, "EXPUNGE") == 1, "%s", result->text);
	imap_client_sync_wait(sync, imap_client_recent(client, NULL, NULL), &result);
	itest_check("recent (NOOP)", result->status == IMAP_CLIENT_STATUS_OK, NULL);
	{
		/* the SELECT's RECENT came back in recent()'s result and left the pool */
		struct imap_client_untagged *left = imap_client_pop_response(client, "RECENT");
		itest_check("recent() returns and clears RECENT",
		            count_untagged(result, "RECENT") >= 1 && left == NULL, "%u", count_untagged(result, "RECENT"));
		imap_client_untagged_unref(&left);
	}

	/* pipelining: many commands in flight, each answered under its own tag */
	{
		struct imap_client_command *commands[20];
		bool all_ok = true;

		for (unsigned int i = 0; i < 20; i++)
			commands[i] = i % 2 == 0 ? imap_client_noop(client, NULL, NULL) :
						   imap_client_append(client, "INBOX", NULL, NULL, test_message,
								      strlen(test_message), NULL, NULL);
		for (unsigned int i = 0; i < 20; i++) {
			all_ok = all_ok && imap_client_sync_wait(sync, commands[i], &result) == IMAP_CLIENT_STATUS_OK;
			if (i > 0)
				all_ok = all_ok && strcmp(imap_client_command_get_tag(commands[i]), "") != 0;
		}
		itest_check("20 pipelined commands all OK", all_ok, "%s", result->text);
		imap_client_sync_wait(sync, imap_client_status(client, "INBOX", "(MESSAGES)", NULL, NULL), &result);
		untagged = imap_client_result_next(result, "STATUS", &(unsigned int){ 0 });
		itest_check("pipelined APPENDs all landed", untagged != NULL && untagged->args_count == 2 &&
		            untagged->args[1].list_count == 2 && imap_arg_get_number32(&untagged->args[1].list[1], &number) &&
		            number == 10, NULL);
	}
out:
	imap_client_sync_free(&sync);
	imap_client_sync_free(&other);
}

/* The number in a pool entry's text ("HIGHESTMODSEQ 5" is stored as
   keyword HIGHESTMODSEQ, text "5"). */
static uint64_t pop_number(struct imap_client *client, const char *code)
{
	struct imap_client_untagged *stored = imap_client_pop_response(client, code);
	uint64_t value = stored != NULL ? strtoull(stored->text, NULL, 10) : 0;

	imap_client_untagged_unref(&stored);
	return value;
}

static void test_condstore_qresync(void)
{
	struct imap_client_sync *sync = session(IMAP_CLIENT_TLS_NONE, user2, pass2);
	const struct imap_client_untagged *untagged;
	const struct imap_client_result *result;
	struct imap_client *client;
	uint32_t uidvalidity;
	uint64_t modseq;
	const char *atom;

	if (sync == NULL)
		return;
	client = imap_client_sync_get_client(sync);
	imap_client_sync_wait(sync, imap_client_create(client, "Sync", NULL, NULL), &result);
	for (int i = 0; i < 3; i++)
		imap_client_sync_wait(sync, imap_client_append(client, "Sync", NULL, NULL, test_message,
							       strlen(test_message), NULL, NULL), &result);
	imap_client_sync_wait(sync, imap_client_enable(client, "QRESYNC", NULL, NULL), &result);
	itest_check("ENABLE QRESYNC", result->status == IMAP_CLIENT_STATUS_OK, "%s", result->text);
	imap_client_sync_wait(sync, imap_client_select(client, "Sync", false, NULL, NULL, NULL), &result);
	uidvalidity = (uint32_t)pop_number(client, "UIDVALIDITY");
	modseq = pop_number(client, "HIGHESTMODSEQ");
	itest_check("SELECT reports UIDVALIDITY and HIGHESTMODSEQ", uidvalidity != 0 && modseq != 0, NULL);
	imap_client_sync_wait(sync, imap_client_store(client, true, "2", "+FLAGS.SILENT", "(\\Deleted)", NULL, NULL),
			      &result);
	imap_client_sync_wait(sync, imap_client_uid_expunge(client, "2", NULL, NULL), &result);
	untagged = imap_client_result_next(result, "VANISHED", &(unsigned int){ 0 });
	itest_check("with QRESYNC, UID EXPUNGE answers VANISHED", untagged != NULL && untagged->args_count == 1 &&
	            imap_arg_get_atom(&untagged->args[0], &atom) && strcmp(atom, "2") == 0, NULL);
	imap_client_sync_wait(sync, imap_client_store(client, true, "3", "+FLAGS", "(\\Flagged)", NULL, NULL),
			      &result);
	imap_client_sync_wait(sync, imap_client_close(client, NULL, NULL), &result);

	imap_client_sync_wait(sync, imap_client_select(client, "Sync", false,
						       &(struct imap_client_select_params){
							       .qresync_uidvalidity = uidvalidity,
							       .qresync_modseq = modseq,
							       .qresync_known_uids = "1:3" },
						       NULL, NULL), &result);
	itest_check("SELECT (QRESYNC (uidvalidity modseq 1:3)): OK", result->status == IMAP_CLIENT_STATUS_OK, "%s",
	            result->text);
	untagged = imap_client_result_next(result, "VANISHED", &(unsigned int){ 0 });
	itest_check("QRESYNC: VANISHED (EARLIER) 2", untagged != NULL && untagged->args_count == 2 &&
	            untagged->args[0].type == IMAP_ARG_LIST && imap_arg_get_atom(&untagged->args[1], &atom) &&
	            strcmp(atom, "2") == 0, NULL);
	untagged = imap_client_result_next(result, "FETCH", &(unsigned int){ 0 });
	itest_check("QRESYNC: FETCH of the changed message with MODSEQ",
	            untagged != NULL && has_flag(fetch_item(untagged, "FLAGS"), "\\Flagged") &&
	            fetch_item(untagged, "MODSEQ") != NULL && count_untagged(result, "FETCH") == 1, NULL);
	imap_client_sync_free(&sync);
}

/* ---- connecting by name: every address in turn ---- */

#define DNS_TEST_WAIT_MSECS 15000 /* the longest any one connect below may take */
#define DNS_TEST_LOOKUP_TIMEOUT "0.3" /* seconds evdns waits for the (dead) name server */
#define DNS_TEST_BACKLOG_FILL 3 /* connections that fill a listen(0) queue so later SYNs are dropped */

struct dns_outcome {
	bool done;
	enum imap_client_status status;
	char text[512];
};

static void dns_outcome_cb(struct imap_client *client, struct imap_client_command *command,
			   const struct imap_client_result *result, void *context)
{
	struct dns_outcome *outcome = context;

	(void)client;
	(void)command;
	outcome->done = true;
	outcome->status = result->status;
	snprintf(outcome->text, sizeof(outcome->text), "%s", result->text);
}

static double monotonic_seconds(void)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)now.tv_sec + (double)now.tv_nsec / 1e9;
}

/* Runs base until outcome is done, at most DNS_TEST_WAIT_MSECS. */
static void dns_wait(struct event_base *base, struct dns_outcome *outcome)
{
	double deadline = monotonic_seconds() + DNS_TEST_WAIT_MSECS / 1000.0;
	struct timeval tick = { .tv_sec = 0, .tv_usec = 100 * 1000 };

	while (!outcome->done && monotonic_seconds() < deadline) {
		event_base_loopexit(base, &tick);
		event_base_loop(base, EVLOOP_ONCE);
	}
	if (!outcome->done)
		snprintf(outcome->text, sizeof(outcome->text), "no outcome within %d ms", DNS_TEST_WAIT_MSECS);
}

/* Connects to name (and logs in when login is set); the connect's outcome in *outcome_r. */
static void dns_connect(struct event_base *base, struct evdns_base *dns, const char *name,
			unsigned int connect_timeout_msecs, bool login, struct dns_outcome *outcome_r,
			struct dns_outcome *login_r)
{
	struct imap_client_settings settings = settings_for(IMAP_CLIENT_TLS_NONE, NULL);
	struct imap_client *client;
	const char *error;

	memset(outcome_r, 0, sizeof(*outcome_r));
	memset(login_r, 0, sizeof(*login_r));
	outcome_r->status = login_r->status = IMAP_CLIENT_STATUS_ABORT;
	settings.host = name;
	settings.dns_base = dns;
	settings.connect_timeout_msecs = connect_timeout_msecs;
	client = imap_client_new(base, &settings, &error);
	if (client == NULL) {
		snprintf(outcome_r->text, sizeof(outcome_r->text), "client not made: %s", error);
		return;
	}
	imap_client_connect(client, dns_outcome_cb, outcome_r);
	dns_wait(base, outcome_r);
	if (login && outcome_r->status == IMAP_CLIENT_STATUS_OK) {
		imap_client_login(client, user, pass, dns_outcome_cb, login_r);
		dns_wait(base, login_r);
	}
	imap_client_free(&client);
}

/* Whether a TCP connect to address:port_number is refused (nothing listens there). */
static bool tcp_refused(int family, const char *address, unsigned int port_number)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int fd, ret, saved;

	memset(&ss, 0, sizeof(ss));
	if (family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port_number);
		inet_pton(AF_INET, address, &sin->sin_addr);
		len = sizeof(*sin);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port_number);
		inet_pton(AF_INET6, address, &sin6->sin6_addr);
		len = sizeof(*sin6);
	}
	fd = socket(family, SOCK_STREAM, 0);
	if (fd < 0)
		return true; /* no such family here: as unreachable as refused */
	ret = connect(fd, (struct sockaddr *)&ss, len);
	saved = errno;
	close(fd);
	return ret < 0 && saved != ETIMEDOUT;
}

/* A UDP port on 127.0.0.1 with nothing bound to it at the time of the call. */
static unsigned int closed_udp_port(void)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = 0 };
	socklen_t len = sizeof(sin);
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	unsigned int found = 0;

	inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
	if (fd >= 0 && bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&sin, &len) == 0)
		found = ntohs(sin.sin_port);
	if (fd >= 0)
		close(fd);
	return found;
}

/* A resolver that knows only the names in hosts_path and asks a dead name server for the rest. */
static struct evdns_base *dns_test_resolver(struct event_base *base, const char *hosts_path)
{
	struct evdns_base *dns = evdns_base_new(base, 0);
	char nameserver[64];

	if (dns == NULL)
		return NULL;
	snprintf(nameserver, sizeof(nameserver), "127.0.0.1:%u", closed_udp_port());
	if (evdns_base_load_hosts(dns, hosts_path) != 0 || evdns_base_nameserver_ip_add(dns, nameserver) != 0 ||
	    evdns_base_set_option(dns, "timeout:", DNS_TEST_LOOKUP_TIMEOUT) != 0 ||
	    evdns_base_set_option(dns, "attempts:", "1") != 0) {
		evdns_base_free(dns, 0);
		return NULL;
	}
	return dns;
}

/* A listener on address:port_number whose accept queue is full, so a
   connect to it gets no answer; -1 when it can't be made. fill_r gets
   the connections that fill it (closed by the caller). */
static int unanswering_listener(const char *address, unsigned int port_number, int fill_r[DNS_TEST_BACKLOG_FILL])
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port_number) };
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	for (int i = 0; i < DNS_TEST_BACKLOG_FILL; i++)
		fill_r[i] = -1;
	inet_pton(AF_INET, address, &sin.sin_addr);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0 || listen(fd, 0) < 0) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	for (int i = 0; i < DNS_TEST_BACKLOG_FILL; i++) {
		fill_r[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
		if (fill_r[i] >= 0)
			(void)connect(fill_r[i], (struct sockaddr *)&sin, sizeof(sin));
	}
	return fd;
}

static void test_dns_every_address(void)
{
	char dir[] = "/tmp/test-imap-client-dns.XXXXXX", hosts_path[sizeof(dir) + 16], expected[256];
	struct dns_outcome outcome, login;
	struct event_base *base;
	struct evdns_base *dns;
	int fill[DNS_TEST_BACKLOG_FILL], listener;
	double started;
	FILE *f;

	/* the premises: Dovecot listens on 127.0.0.1 only */
	itest_check("premise: nothing listens on 127.0.0.3 at Dovecot's port", tcp_refused(AF_INET, "127.0.0.3", port),
	      NULL);
	itest_check("premise: nothing listens on ::1 at Dovecot's port", tcp_refused(AF_INET6, "::1", port), NULL);
	if (mkdtemp(dir) == NULL) {
		itest_check("hosts file directory", false, "%s", strerror(errno));
		return;
	}
	snprintf(hosts_path, sizeof(hosts_path), "%s/hosts", dir);
	f = fopen(hosts_path, "w");
	if (f == NULL) {
		itest_check("hosts file", false, "%s", strerror(errno));
		rmdir(dir);
		return;
	}
	fprintf(f, "::1 fallback.imapcached.test\n"
		   "127.0.0.3 fallback.imapcached.test\n"
		   "%s fallback.imapcached.test\n"
		   "::1 refused.imapcached.test\n"
		   "127.0.0.3 refused.imapcached.test\n"
		   "127.0.0.4 slow.imapcached.test\n"
		   "%s slow.imapcached.test\n", host, host);
	fclose(f);
	base = event_base_new();
	dns = base != NULL ? dns_test_resolver(base, hosts_path) : NULL;
	itest_check("test resolver made", dns != NULL, NULL);
	if (dns == NULL)
		goto out;

	dns_connect(base, dns, "fallback.imapcached.test", 10000, true, &outcome, &login);
	itest_check("a name whose first two addresses refuse connects to the third", outcome.status == IMAP_CLIENT_STATUS_OK,
	      "%s", outcome.text);
	itest_check("and logs in there", login.status == IMAP_CLIENT_STATUS_OK, "%s", login.text);

	dns_connect(base, dns, "refused.imapcached.test", 10000, false, &outcome, &login);
	snprintf(expected, sizeof(expected), "cannot connect to refused.imapcached.test:%u (2 addresses): "
		 "127.0.0.3:%u: Connection refused", port, port);
	itest_check("every address refuses: an abort naming the host, the count and the last address's error",
	      outcome.status == IMAP_CLIENT_STATUS_ABORT && strcmp(outcome.text, expected) == 0,
	      "got \"%s\", expected \"%s\"", outcome.text, expected);

	started = monotonic_seconds();
	dns_connect(base, dns, "nowhere.imapcached.test", 10000, false, &outcome, &login);
	itest_check("a name nobody knows: cannot resolve, as before",
	      outcome.status == IMAP_CLIENT_STATUS_ABORT &&
	      strncmp(outcome.text, "cannot resolve nowhere.imapcached.test: ", 40) == 0,
	      "%s", outcome.text);
	itest_check("and the failed lookup ends well before the connect timeout", monotonic_seconds() - started < 5,
	      "%.1f s", monotonic_seconds() - started);

	{
		/* freed while the (dead) name server is still being asked: the lookup is cancelled */
		struct imap_client_settings settings = settings_for(IMAP_CLIENT_TLS_NONE, NULL);
		struct dns_outcome pending = { .done = false };
		struct imap_client *client;
		const char *error;

		settings.host = "pending.imapcached.test";
		settings.dns_base = dns;
		client = imap_client_new(base, &settings, &error);
		if (client != NULL) {
			imap_client_connect(client, dns_outcome_cb, &pending);
			event_base_loop(base, EVLOOP_NONBLOCK);
			imap_client_free(&client);
			for (int i = 0; i < 10; i++)
				event_base_loop(base, EVLOOP_NONBLOCK);
		}
		itest_check("a client freed during its lookup: no callback", client == NULL && !pending.done, NULL);
	}

	listener = unanswering_listener("127.0.0.4", port, fill);
	itest_check("a listener on 127.0.0.4 that never answers", listener >= 0, "%s", strerror(errno));
	if (listener >= 0) {
		started = monotonic_seconds();
		dns_connect(base, dns, "slow.imapcached.test", 6000, true, &outcome, &login);
		double elapsed = monotonic_seconds() - started;

		itest_check("an address that never answers gives way to the next one in its share of the timeout",
		      outcome.status == IMAP_CLIENT_STATUS_OK && login.status == IMAP_CLIENT_STATUS_OK &&
		      elapsed >= 2.5 && elapsed < 6, "%s / %s after %.1f s", outcome.text, login.text, elapsed);
		close(listener);
		for (int i = 0; i < DNS_TEST_BACKLOG_FILL; i++) {
			if (fill[i] >= 0)
				close(fill[i]);
		}
	}
out:
	if (dns != NULL)
		evdns_base_free(dns, 0);
	if (base != NULL)
		event_base_free(base);
	unlink(hosts_path);
	rmdir(dir);
}

/* The blocking lookup (no evdns_base, as the sync wrapper and tools use): a numeric host. */
static void test_blocking_lookup(void)
{
	struct imap_client_settings settings = settings_for(IMAP_CLIENT_TLS_NONE, NULL);
	const struct imap_client_result *result;
	struct imap_client_sync *sync;
	const char *error;
	char expected[256];

	settings.host = "127.0.0.3";
	sync = imap_client_sync_new(&settings, &error);
	if (sync == NULL) {
		itest_check("blocking-lookup client", false, "%s", error);
		return;
	}
	snprintf(expected, sizeof(expected), "cannot connect to 127.0.0.3:%u (1 address): 127.0.0.3:%u: "
		 "Connection refused", port, port);
	itest_check("blocking lookup, numeric host that refuses: the clear error",
	      imap_client_sync_connect(sync, &result) == IMAP_CLIENT_STATUS_ABORT &&
	      strcmp(result->text, expected) == 0, "got \"%s\", expected \"%s\"", result->text, expected);
	imap_client_sync_free(&sync);
	/* and the numeric host that works: every session() above connects this way */
	sync = session(IMAP_CLIENT_TLS_NONE, user, pass);
	itest_check("blocking lookup, numeric host: connected and logged in", sync != NULL, NULL);
	imap_client_sync_free(&sync);
}

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	host = itest_env("test-imap-client", "IMAPTEST_HOST");
	port = (unsigned int)atoi(itest_env("test-imap-client", "IMAPTEST_PORT"));
	tls_port = (unsigned int)atoi(itest_env("test-imap-client", "IMAPTEST_TLS_PORT"));
	user = itest_env("test-imap-client", "IMAPTEST_USER");
	pass = itest_env("test-imap-client", "IMAPTEST_PASS");
	user2 = itest_env("test-imap-client", "IMAPTEST_USER2");
	pass2 = itest_env("test-imap-client", "IMAPTEST_PASS2");
	ca_file = itest_env("test-imap-client", "IMAPTEST_CA");
	untrusted_ca = itest_env("test-imap-client", "IMAPTEST_UNTRUSTED_CA");

	test_connect_modes();
	test_starttls_capabilities();
	test_certificates();
	test_bad_login();
	test_authenticate_plain();
	test_mailbox_commands();
	test_examine_and_fetch();
	test_message_commands();
	test_condstore_qresync();
	test_dns_every_address();
	test_blocking_lookup();
	return itest_summary();
}
