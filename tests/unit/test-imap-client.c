/* SPDX-License-Identifier: MIT */
/* Unit tests for common/imap-client over a socketpair: what the client writes, and how it reads what a server sends. */
#include "config.h"
#include "unit.h"
#include "imap-client-commands.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define PUMP_ROUNDS 32 /* loop iterations per pump: deferred callbacks need a few */
#define OUT_MAX (64 * 1024)
#define GREETING "* OK [CAPABILITY IMAP4rev1] hi\r\n" /* most tests need no more of the server */

struct harness {
	struct event_base *base;
	struct imap_client *client;
	int peer_fd;
	char out[OUT_MAX + 1]; /* what the client wrote, not yet taken */
	size_t out_len;
	enum imap_client_status connect_status;
	bool connected;
	unsigned int untagged_count;
	char last_untagged[64];
};

/* Runs the loop a bounded number of times and collects the client's output. */
static void pump(struct harness *h)
{
	for (int i = 0; i < PUMP_ROUNDS; i++) {
		ssize_t n;

		event_base_loop(h->base, EVLOOP_NONBLOCK);
		while (h->out_len < OUT_MAX &&
		       (n = read(h->peer_fd, h->out + h->out_len, OUT_MAX - h->out_len)) > 0)
			h->out_len += (size_t)n;
		h->out[h->out_len] = '\0';
	}
}

static void server_send(struct harness *h, const char *data)
{
	size_t len = strlen(data);

	CU_ASSERT_EQUAL_FATAL(write(h->peer_fd, data, len), (ssize_t)len);
	pump(h);
}

/* Sends data one byte per loop round, as a slow link would; stops when
   the client has hung up. */
static void server_send_bytewise(struct harness *h, const char *data, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if (write(h->peer_fd, data + i, 1) != 1)
			break;
		event_base_loop(h->base, EVLOOP_NONBLOCK);
		event_base_loop(h->base, EVLOOP_NONBLOCK);
	}
	pump(h);
}

/* Takes everything the client wrote so far, as a string. */
static const char *take(struct harness *h)
{
	static char taken[OUT_MAX + 1];

	pump(h);
	memcpy(taken, h->out, h->out_len + 1);
	if (getenv("TEST_DEBUG") != NULL)
		fprintf(stderr, "[client wrote: %s]\n", taken);
	h->out_len = 0;
	h->out[0] = '\0';
	return taken;
}

static void on_connect(struct imap_client *client, struct imap_client_command *command,
		       const struct imap_client_result *result, void *context)
{
	struct harness *h = context;

	(void)client;
	(void)command;
	h->connected = true;
	h->connect_status = result->status;
}

static void on_untagged(struct imap_client *client, struct imap_client_command *command,
			const struct imap_client_untagged *untagged, void *context)
{
	struct harness *h = context;

	(void)client;
	(void)command;
	h->untagged_count++;
	snprintf(h->last_untagged, sizeof(h->last_untagged), "%s", untagged->keyword);
}

static void harness_start(struct harness *h, const char *greeting, const char *tag_prefix)
{
	struct imap_client_settings settings = {
		.host = "localhost", .port = 143, .tag_prefix = tag_prefix,
		.connect_timeout_msecs = 5000, .command_timeout_msecs = 5000,
	};
	const char *error;
	int fds[2];

	memset(h, 0, sizeof(*h));
	CU_ASSERT_EQUAL_FATAL(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
	fcntl(fds[1], F_SETFL, O_NONBLOCK);
	h->peer_fd = fds[1];
	h->base = event_base_new();
	h->client = imap_client_new(h->base, &settings, &error);
	CU_ASSERT_PTR_NOT_NULL_FATAL(h->client);
	imap_client_set_untagged_callback(h->client, on_untagged, h);
	imap_client_connect_fd(h->client, fds[0], on_connect, h);
	if (greeting != NULL)
		server_send(h, greeting);
}

static void harness_stop(struct harness *h)
{
	imap_client_free(&h->client);
	CU_ASSERT_PTR_NULL(h->client);
	event_base_free(h->base);
	close(h->peer_fd);
}

/* One turn of a scripted exchange: what the client must have written by
   then, and what the server answers (NULL: nothing). */
struct turn {
	const char *client;
	const char *server;
};

/* Plays turns in order, each check reported at the caller's line with the
   turn's number; use it through converse(). */
static void converse_at(struct harness *h, const struct turn *turns, size_t count, unsigned int line)
{
	for (size_t i = 0; i < count; i++) {
		const char *wrote = take(h);
		char what[512];

		snprintf(what, sizeof(what), "turn %zu: the client wrote \"%.200s\", not \"%.200s\"", i + 1, wrote,
			 turns[i].client);
		CU_assertImplementation(strcmp(wrote, turns[i].client) == 0, line, what, __FILE__, "", CU_FALSE);
		if (turns[i].server != NULL)
			server_send(h, turns[i].server);
	}
}

#define converse(h, turns) converse_at((h), (turns), sizeof(turns) / sizeof((turns)[0]), __LINE__)

/* Records completions in order. */
struct completion {
	char tags[8][16];
	enum imap_client_status status[8];
	unsigned int count, untagged[8];
};

static void on_done(struct imap_client *client, struct imap_client_command *command,
		    const struct imap_client_result *result, void *context)
{
	struct completion *c = context;

	(void)client;
	if (c->count < 8) {
		snprintf(c->tags[c->count], sizeof(c->tags[0]), "%s", imap_client_command_get_tag(command));
		c->status[c->count] = result->status;
		c->untagged[c->count] = result->untagged_count;
	}
	c->count++;
}

static void test_greeting_with_capabilities(void)
{
	struct harness h;

	harness_start(&h, "* OK [CAPABILITY IMAP4rev1 LITERAL+ ID] ready\r\n", "A");
	CU_ASSERT_TRUE(h.connected);
	CU_ASSERT_EQUAL(h.connect_status, IMAP_CLIENT_STATUS_OK);
	CU_ASSERT_STRING_EQUAL(take(&h), ""); /* no CAPABILITY needed */
	CU_ASSERT_EQUAL(imap_client_get_state(h.client), IMAP_CLIENT_STATE_NOT_AUTHENTICATED);
	CU_ASSERT_TRUE(imap_client_has_capability(h.client, "literal+"));
	CU_ASSERT_TRUE(imap_client_has_capability(h.client, "ID"));
	CU_ASSERT_FALSE(imap_client_has_capability(h.client, "I"));
	CU_ASSERT_FALSE(imap_client_has_capability(h.client, "IMAP4"));
	CU_ASSERT_STRING_EQUAL(imap_client_get_capabilities(h.client), "IMAP4REV1 LITERAL+ ID");
	harness_stop(&h);
}

static void test_greeting_without_capabilities(void)
{
	struct harness h;

	harness_start(&h, "* OK ready\r\n", "A");
	CU_ASSERT_FALSE(h.connected);
	CU_ASSERT_STRING_EQUAL(take(&h), "A1 CAPABILITY\r\n");
	server_send(&h, "* CAPABILITY IMAP4rev1 IDLE\r\nA1 OK done\r\n");
	CU_ASSERT_TRUE(h.connected);
	CU_ASSERT_EQUAL(h.connect_status, IMAP_CLIENT_STATUS_OK);
	CU_ASSERT_TRUE(imap_client_has_capability(h.client, "IDLE"));
	harness_stop(&h);
}

static void test_preauth(void)
{
	struct harness h;

	harness_start(&h, "* PREAUTH [CAPABILITY IMAP4rev1] logged in already\r\n", "A");
	CU_ASSERT_EQUAL(h.connect_status, IMAP_CLIENT_STATUS_OK);
	CU_ASSERT_EQUAL(imap_client_get_state(h.client), IMAP_CLIENT_STATE_AUTHENTICATED);
	harness_stop(&h);
}

static void test_default_tag_prefix(void)
{
	struct harness h;
	const char *prefix;

	harness_start(&h, GREETING, NULL);
	prefix = imap_client_get_tag_prefix(h.client);
	/* imaplib: Int2AP of 4096..65535 is four letters A-P */
	CU_ASSERT_EQUAL(strlen(prefix), 4);
	for (const char *p = prefix; *p != '\0'; p++)
		CU_ASSERT_TRUE(*p >= 'A' && *p <= 'P');
	{
		char expected[16];

		snprintf(expected, sizeof(expected), "%s1", prefix);
		CU_ASSERT_STRING_EQUAL(imap_client_command_get_tag(imap_client_noop(h.client, on_done,
										      &(struct completion){ 0 })),
				       expected);
		snprintf(expected, sizeof(expected), "%s2", prefix);
		CU_ASSERT_STRING_EQUAL(imap_client_command_get_tag(imap_client_noop(h.client, on_done,
										      &(struct completion){ 0 })),
				       expected);
	}
	harness_stop(&h);
}

static void test_astring_forms(void)
{
	struct harness h;
	struct imap_client_command *command;

	harness_start(&h, "* OK [CAPABILITY IMAP4rev1 LITERAL+] hi\r\n", "A");
	imap_client_login(h.client, "bob", "se cret", on_done, &(struct completion){ 0 });
	/* LOGIN is a barrier: the next waits until it completes */
	command = imap_client_command_send(h.client, NULL, NULL, "X %a %a %a %a %p %q %u %U %%", "", "NIL",
					   "a\"b\\c", "h\xc3\xa9", "*%", "atom", 7u, (uint64_t)1 << 40);
	static const struct turn dialog[] = {
		{ "A1 LOGIN bob \"se cret\"\r\n", "A1 OK [CAPABILITY IMAP4rev1 LITERAL+] in\r\n" },
		{ "A2 X \"\" \"NIL\" \"a\\\"b\\\\c\" {3+}\r\nh\xc3\xa9 *% \"atom\" 7 1099511627776 %\r\n",
		  "A2 OK x\r\n" },
	};
	converse(&h, dialog);
	CU_ASSERT_TRUE(imap_client_command_is_done(command));
	imap_client_command_free(&command);
	harness_stop(&h);
}

static void test_synchronizing_literal(void)
{
	struct harness h;
	struct completion c = { 0 };

	harness_start(&h, GREETING, "A");
	imap_client_append(h.client, "INBOX", "(\\Seen)", "17-Jul-1996 02:44:25 -0700", "hello", 5, on_done, &c);
	imap_client_noop(h.client, on_done, &c);
	static const struct turn dialog[] = {
		/* the literal and everything after it wait for "+" */
		{ "A1 APPEND INBOX (\\Seen) \"17-Jul-1996 02:44:25 -0700\" {5}\r\n", "+ go ahead\r\n" },
		{ "hello\r\nA2 NOOP\r\n", "A1 OK [APPENDUID 1 2] done\r\nA2 OK done\r\n" },
	};
	converse(&h, dialog);
	CU_ASSERT_EQUAL(c.count, 2);
	harness_stop(&h);
}

static void test_literal_refused(void)
{
	struct harness h;
	struct completion c = { 0 };

	harness_start(&h, GREETING, "A");
	imap_client_append(h.client, "INBOX", NULL, NULL, "hello", 5, on_done, &c);
	imap_client_noop(h.client, on_done, &c);
	take(&h);
	/* the server refuses the literal instead of sending "+" */
	server_send(&h, "A1 NO [TOOBIG] too big\r\n");
	CU_ASSERT_EQUAL(c.count, 1);
	CU_ASSERT_EQUAL(c.status[0], IMAP_CLIENT_STATUS_NO);
	CU_ASSERT_STRING_EQUAL(take(&h), "A2 NOOP\r\n"); /* the literal is never sent */
	harness_stop(&h);
}

static void test_literal_minus(void)
{
	struct harness h;
	static char big[5000];
	const char *out;

	memset(big, 'x', sizeof(big) - 1);
	harness_start(&h, "* OK [CAPABILITY IMAP4rev1 LITERAL-] hi\r\n", "A");
	imap_client_command_send(h.client, on_done, &(struct completion){ 0 }, "X %L", "small", (size_t)5);
	CU_ASSERT_STRING_EQUAL(take(&h), "A1 X {5+}\r\nsmall\r\n");
	imap_client_command_send(h.client, on_done, &(struct completion){ 0 }, "Y %a", big);
	out = take(&h);
	CU_ASSERT_STRING_EQUAL(out, "A2 Y {4999}\r\n"); /* over 4096: synchronizing */
	harness_stop(&h);
}

static void test_pipelining_out_of_order(void)
{
	struct harness h;
	struct completion c = { 0 };

	harness_start(&h, GREETING, "T");
	imap_client_noop(h.client, on_done, &c);
	imap_client_check(h.client, on_done, &c);
	imap_client_fetch(h.client, true, "1:*", "(FLAGS)", on_done, &c);
	CU_ASSERT_STRING_EQUAL(take(&h), "T1 NOOP\r\nT2 CHECK\r\nT3 UID FETCH 1:* (FLAGS)\r\n");
	server_send(&h, "* 1 FETCH (UID 1 FLAGS ())\r\nT3 OK a\r\nT1 NO b\r\nT2 BAD c\r\n");
	CU_ASSERT_EQUAL_FATAL(c.count, 3);
	CU_ASSERT_STRING_EQUAL(c.tags[0], "T3");
	CU_ASSERT_EQUAL(c.status[0], IMAP_CLIENT_STATUS_OK);
	CU_ASSERT_STRING_EQUAL(c.tags[1], "T1");
	CU_ASSERT_EQUAL(c.status[1], IMAP_CLIENT_STATUS_NO);
	CU_ASSERT_STRING_EQUAL(c.tags[2], "T2");
	CU_ASSERT_EQUAL(c.status[2], IMAP_CLIENT_STATUS_BAD);
	/* the FETCH came while T1 was the oldest in flight: it is T1's */
	CU_ASSERT_EQUAL(c.untagged[1], 1);
	CU_ASSERT_EQUAL(c.untagged[0], 0);
	harness_stop(&h);
}

/* Writes the numbers of the RECENT responses in result, e.g. "2,3,4". */
static void recent_numbers(const struct imap_client_result *result, char *out, size_t out_size)
{
	const struct imap_client_untagged *untagged;
	unsigned int index = 0;
	size_t used = 0;

	out[0] = '\0';
	while ((untagged = imap_client_result_next(result, "RECENT", &index)) != NULL && used < out_size)
		used += (size_t)snprintf(out + used, out_size - used, "%s%u", used > 0 ? "," : "",
					 (unsigned int)untagged->number);
}

/* imaplib's recent() returns and clears the RECENT responses. */
static void test_recent_returns_and_clears(void)
{
	struct harness h;
	struct imap_client_command *command;
	const struct imap_client_result *result;
	struct imap_client_untagged *stored;
	char numbers[64];

	harness_start(&h, GREETING, "T");
	server_send(&h, "* 2 RECENT\r\n* 3 RECENT\r\n");
	command = imap_client_recent(h.client, NULL, NULL);
	CU_ASSERT_STRING_EQUAL(take(&h), "T1 NOOP\r\n");
	server_send(&h, "* 4 RECENT\r\n* 5 EXISTS\r\nT1 OK done\r\n");
	result = imap_client_command_get_result(command);
	CU_ASSERT_PTR_NOT_NULL_FATAL(result);
	CU_ASSERT_EQUAL(result->status, IMAP_CLIENT_STATUS_OK);
	recent_numbers(result, numbers, sizeof(numbers));
	CU_ASSERT_STRING_EQUAL(numbers, "2,3,4");
	CU_ASSERT_EQUAL(result->untagged_count, 4);
	/* None of them is left in the pool; other responses still are. */
	CU_ASSERT_PTR_NULL(imap_client_pop_response(h.client, "RECENT"));
	stored = imap_client_pop_response(h.client, "EXISTS");
	CU_ASSERT(stored != NULL && stored->number == 5);
	imap_client_untagged_unref(&stored);
	imap_client_command_free(&command);

	/* The next recent() holds only what came since. */
	command = imap_client_recent(h.client, NULL, NULL);
	CU_ASSERT_STRING_EQUAL(take(&h), "T2 NOOP\r\n");
	server_send(&h, "T2 OK done\r\n");
	result = imap_client_command_get_result(command);
	CU_ASSERT_PTR_NOT_NULL_FATAL(result);
	recent_numbers(result, numbers, sizeof(numbers));
	CU_ASSERT_STRING_EQUAL(numbers, "");
	imap_client_command_free(&command);

	/* RECENT arriving for another command stays pooled for recent(). */
	command = imap_client_noop(h.client, NULL, NULL);
	CU_ASSERT_STRING_EQUAL(take(&h), "T3 NOOP\r\n");
	server_send(&h, "* 6 RECENT\r\nT3 OK done\r\n");
	imap_client_command_free(&command);
	command = imap_client_recent(h.client, NULL, NULL);
	take(&h);
	server_send(&h, "T4 OK done\r\n");
	result = imap_client_command_get_result(command);
	CU_ASSERT_PTR_NOT_NULL_FATAL(result);
	recent_numbers(result, numbers, sizeof(numbers));
	CU_ASSERT_STRING_EQUAL(numbers, "6");
	CU_ASSERT_PTR_NULL(imap_client_pop_response(h.client, "RECENT"));
	imap_client_command_free(&command);
	harness_stop(&h);
}

static void test_barrier(void)
{
	struct harness h;
	struct completion c = { 0 };

	harness_start(&h, GREETING, "A");
	imap_client_noop(h.client, on_done, &c);
	imap_client_login(h.client, "u", "p", on_done, &c);
	imap_client_noop(h.client, on_done, &c);
	static const struct turn dialog[] = {
		{ "A1 NOOP\r\n", "A1 OK\r\n" }, /* LOGIN waits for A1 */
		{ "A2 LOGIN u p\r\n", "A2 OK [CAPABILITY IMAP4rev1 X-NEW] in\r\n" }, /* A3 waits for LOGIN */
		{ "A3 NOOP\r\n", NULL },
	};
	converse(&h, dialog);
	CU_ASSERT_TRUE(imap_client_has_capability(h.client, "X-NEW"));
	CU_ASSERT_EQUAL(imap_client_get_state(h.client), IMAP_CLIENT_STATE_AUTHENTICATED);
	harness_stop(&h);
}

static void test_capability_refresh_after_login(void)
{
	struct harness h;
	struct completion c = { 0 };

	harness_start(&h, "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hi\r\n", "A");
	imap_client_login(h.client, "u", "p", on_done, &c);
	take(&h);
	server_send(&h, "A1 OK logged in\r\n");
	CU_ASSERT_FALSE(imap_client_has_capability(h.client, "AUTH=PLAIN"));
	CU_ASSERT_STRING_EQUAL(take(&h), "A2 CAPABILITY\r\n");
	server_send(&h, "* CAPABILITY IMAP4rev1 MOVE\r\nA2 OK\r\n");
	CU_ASSERT_TRUE(imap_client_has_capability(h.client, "MOVE"));
	harness_stop(&h);
}

static const char fetch_exchange[] =
	"* 1 FETCH (UID 7 BODY[] {12}\r\nhello\r\nworld FLAGS (\\Seen))\r\n"
	"* OK [UIDNEXT 8] predicted\r\n"
	"A1 OK fetched\r\n";

/* The same server bytes, whole or one at a time, give the same result. */
static void run_fetch(bool bytewise, struct completion *c, char *body, size_t body_size)
{
	struct harness h;
	struct imap_client_command *command;
	const struct imap_client_result *result;
	struct imap_client_untagged *stored;

	harness_start(&h, GREETING, "A");
	command = imap_client_fetch(h.client, false, "1", "(UID BODY[] FLAGS)", NULL, NULL);
	if (bytewise)
		server_send_bytewise(&h, fetch_exchange, strlen(fetch_exchange));
	else
		server_send(&h, fetch_exchange);
	result = imap_client_command_get_result(command);
	CU_ASSERT_PTR_NOT_NULL_FATAL(result);
	c->status[0] = result->status;
	c->untagged[0] = result->untagged_count;
	body[0] = '\0';
	if (result->untagged_count == 2) {
		const struct imap_client_untagged *fetch = result->untagged[0];
		const char *str;
		size_t len;

		CU_ASSERT_STRING_EQUAL(fetch->keyword, "FETCH");
		CU_ASSERT_EQUAL(fetch->number, 1);
		CU_ASSERT_EQUAL(fetch->line->list_count, 4);
		if (imap_arg_get_string(&fetch->args[0].list[3], &str, &len))
			snprintf(body, body_size, "%.*s", (int)len, str);
		CU_ASSERT_STRING_EQUAL(result->untagged[1]->code, "UIDNEXT 8");
	}
	stored = imap_client_pop_response(h.client, "UIDNEXT");
	CU_ASSERT_PTR_NOT_NULL(stored);
	if (stored != NULL)
		CU_ASSERT_STRING_EQUAL(stored->text, "8");
	imap_client_untagged_unref(&stored);
	CU_ASSERT_PTR_NULL(imap_client_pop_response(h.client, "UIDNEXT"));
	imap_client_command_free(&command);
	harness_stop(&h);
}

static void test_fetch_whole_and_bytewise(void)
{
	struct completion whole = { 0 }, bytewise = { 0 };
	char body_whole[64], body_bytewise[64];

	run_fetch(false, &whole, body_whole, sizeof(body_whole));
	run_fetch(true, &bytewise, body_bytewise, sizeof(body_bytewise));
	CU_ASSERT_EQUAL(whole.status[0], IMAP_CLIENT_STATUS_OK);
	CU_ASSERT_EQUAL(whole.untagged[0], 2);
	CU_ASSERT_STRING_EQUAL(body_whole, "hello\r\nworld");
	CU_ASSERT_EQUAL(bytewise.status[0], whole.status[0]);
	CU_ASSERT_EQUAL(bytewise.untagged[0], whole.untagged[0]);
	CU_ASSERT_STRING_EQUAL(body_bytewise, body_whole);
}

static void test_select_read_only(void)
{
	struct harness h;
	struct completion c = { 0 };

	harness_start(&h, "* PREAUTH [CAPABILITY IMAP4rev1] hi\r\n", "A");
	imap_client_select(h.client, "INBOX", false, NULL, on_done, &c);
	CU_ASSERT_STRING_EQUAL(take(&h), "A1 SELECT INBOX\r\n");
	server_send(&h, "* 3 EXISTS\r\nA1 OK [READ-ONLY] only reading\r\n");
	CU_ASSERT_TRUE(imap_client_is_read_only(h.client));
	CU_ASSERT_EQUAL(imap_client_get_state(h.client), IMAP_CLIENT_STATE_SELECTED);
	imap_client_select(h.client, "INBOX", false, NULL, on_done, &c);
	server_send(&h, "A2 OK [READ-WRITE] done\r\n");
	CU_ASSERT_FALSE(imap_client_is_read_only(h.client));
	imap_client_select(h.client, "Other", true,
			   &(struct imap_client_select_params){ .qresync_uidvalidity = 67890007,
								 .qresync_modseq = 20050715194045000ULL,
								 .qresync_known_uids = "41,43:211" },
			   on_done, &c);
	CU_ASSERT_STRING_EQUAL(take(&h), "A2 SELECT INBOX\r\n"
					  "A3 EXAMINE Other (QRESYNC (67890007 20050715194045000 41,43:211))\r\n");
	server_send(&h, "A3 OK done\r\n");
	CU_ASSERT_TRUE(imap_client_is_read_only(h.client));
	/* a failed SELECT leaves no mailbox selected (RFC 3501 6.3.1) */
	imap_client_select(h.client, "Missing", false, &(struct imap_client_select_params){ .condstore = true },
			   on_done, &c);
	CU_ASSERT_STRING_EQUAL(take(&h), "A4 SELECT Missing (CONDSTORE)\r\n");
	server_send(&h, "A4 NO no such mailbox\r\n");
	CU_ASSERT_EQUAL(imap_client_get_state(h.client), IMAP_CLIENT_STATE_AUTHENTICATED);
	harness_stop(&h);
}

static void on_idle_untagged(struct imap_client *client, struct imap_client_command *command,
			     const struct imap_client_untagged *untagged, void *context)
{
	(void)client;
	(void)untagged;
	(void)context;
	if (command != NULL && imap_client_idle_is_accepted(command))
		imap_client_idle_done(command); /* woken: stop idling */
}

static void test_idle(void)
{
	struct harness h;
	struct completion c = { 0 };

	harness_start(&h, "* PREAUTH [CAPABILITY IMAP4rev1 IDLE] hi\r\n", "A");
	imap_client_set_untagged_callback(h.client, on_idle_untagged, NULL);
	imap_client_idle(h.client, on_done, &c);
	imap_client_noop(h.client, on_done, &c);
	static const struct turn dialog[] = {
		{ "A1 IDLE\r\n", "+ idling\r\n" }, /* NOOP waits for IDLE to end */
		{ "", "* 4 EXISTS\r\n" },
		{ "DONE\r\n", "A1 OK idle done\r\n" },
	};
	converse(&h, dialog);
	CU_ASSERT_EQUAL(c.count, 1);
	CU_ASSERT_EQUAL(c.untagged[0], 1);
	CU_ASSERT_STRING_EQUAL(take(&h), "A2 NOOP\r\n");
	harness_stop(&h);
}

static void test_idle_done_before_continuation(void)
{
	struct harness h;
	struct imap_client_command *command;

	harness_start(&h, "* PREAUTH [CAPABILITY IMAP4rev1 IDLE] hi\r\n", "A");
	command = imap_client_idle(h.client, NULL, NULL);
	imap_client_idle_done(command);
	static const struct turn dialog[] = {
		{ "A1 IDLE\r\n", "+ idling\r\n" },
		{ "DONE\r\n", "A1 OK\r\n" },
	};
	converse(&h, dialog);
	CU_ASSERT_TRUE(imap_client_command_is_done(command));
	imap_client_command_free(&command);
	harness_stop(&h);
}

static void test_login_cram_md5(void)
{
	struct harness h;
	struct completion c = { 0 };

	harness_start(&h, "* OK [CAPABILITY IMAP4rev1 AUTH=CRAM-MD5 SASL-IR] hi\r\n", "A");
	imap_client_login_cram_md5(h.client, "tim", "tanstaaftanstaaf", on_done, &c);
	static const struct turn dialog[] = {
		/* CRAM-MD5 has no initial response, even with SASL-IR */
		{ "A1 AUTHENTICATE CRAM-MD5\r\n", "+ PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+\r\n" },
		/* RFC 2195's example exchange */
		{ "dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw\r\n",
		  "A1 OK [CAPABILITY IMAP4rev1] CRAM-MD5 authentication successful\r\n" },
	};
	converse(&h, dialog);
	CU_ASSERT_EQUAL(c.count, 1);
	CU_ASSERT_EQUAL(c.status[0], IMAP_CLIENT_STATUS_OK);
	CU_ASSERT_EQUAL(imap_client_get_state(h.client), IMAP_CLIENT_STATE_AUTHENTICATED);
	harness_stop(&h);
}

static void test_authenticate_cancel_on_bad_challenge(void)
{
	struct harness h;
	struct completion c = { 0 };
	struct imap_sasl_mechanism *mechanism = imap_sasl_plain_new(NULL, "u", "p");

	harness_start(&h, "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] hi\r\n", "A");
	imap_client_authenticate(h.client, mechanism, on_done, &c);
	CU_ASSERT_STRING_EQUAL(take(&h), "A1 AUTHENTICATE PLAIN AHUAcA==\r\n");
	/* PLAIN has no second step: the client cancels with "*" */
	server_send(&h, "+ bW9yZT8=\r\n");
	static const struct turn dialog[] = {
		{ "*\r\n", "+ not base64!\r\n" },
		{ "*\r\n", "A1 BAD cancelled\r\n" },
	};
	converse(&h, dialog);
	CU_ASSERT_EQUAL(c.status[0], IMAP_CLIENT_STATUS_BAD);
	imap_sasl_mechanism_free(&mechanism);
	harness_stop(&h);
}

static void test_logout_bye_is_no_abort(void)
{
	struct harness h;
	struct completion c = { 0 };

	harness_start(&h, GREETING, "A");
	imap_client_logout(h.client, on_done, &c);
	CU_ASSERT_STRING_EQUAL(take(&h), "A1 LOGOUT\r\n");
	server_send(&h, "* BYE see you\r\nA1 OK bye\r\n");
	CU_ASSERT_EQUAL(c.count, 1);
	CU_ASSERT_EQUAL(c.status[0], IMAP_CLIENT_STATUS_OK);
	CU_ASSERT_EQUAL(c.untagged[0], 1);
	CU_ASSERT_STRING_EQUAL(h.last_untagged, "BYE");
	harness_stop(&h);
}

static void test_logout_close_after_bye(void)
{
	struct harness h;
	struct completion c = { 0 };

	harness_start(&h, GREETING, "A");
	imap_client_logout(h.client, on_done, &c);
	take(&h);
	server_send(&h, "* BYE see you\r\n");
	shutdown(h.peer_fd, SHUT_WR); /* no tagged OK */
	pump(&h);
	CU_ASSERT_EQUAL(c.count, 1);
	CU_ASSERT_EQUAL(c.status[0], IMAP_CLIENT_STATUS_OK);
	CU_ASSERT_EQUAL(imap_client_get_state(h.client), IMAP_CLIENT_STATE_DISCONNECTED);
	harness_stop(&h);
}

static void test_disconnected_commands_abort_later(void)
{
	struct imap_client_settings settings = { .host = "localhost", .port = 143 };
	struct event_base *base = event_base_new();
	struct completion c = { 0 };
	struct imap_client *client;
	const char *error;

	client = imap_client_new(base, &settings, &error);
	CU_ASSERT_PTR_NOT_NULL_FATAL(client);
	imap_client_noop(client, on_done, &c);
	CU_ASSERT_EQUAL(c.count, 0); /* never inside the call */
	event_base_loop(base, EVLOOP_NONBLOCK);
	CU_ASSERT_EQUAL(c.count, 1);
	CU_ASSERT_EQUAL(c.status[0], IMAP_CLIENT_STATUS_ABORT);
	imap_client_free(&client);
	event_base_free(base);
}

static void free_client_cb(struct imap_client *client, struct imap_client_command *command,
			   const struct imap_client_result *result, void *context)
{
	struct harness *h = context;

	(void)command;
	(void)result;
	CU_ASSERT_PTR_EQUAL(client, h->client);
	imap_client_free(&h->client); /* inside its own callback: released after */
}

static void test_free_inside_callback(void)
{
	struct harness h;
	struct completion c = { 0 };

	harness_start(&h, GREETING, "A");
	imap_client_noop(h.client, free_client_cb, &h);
	imap_client_noop(h.client, on_done, &c);
	take(&h);
	server_send(&h, "A1 OK\r\nA2 OK\r\n");
	CU_ASSERT_PTR_NULL(h.client);
	CU_ASSERT_EQUAL(c.count, 0); /* freed: the others end silently */
	event_base_free(h.base);
	close(h.peer_fd);
}

static void test_protocol_errors_abort(void)
{
	static const char *const bad[] = {
		"A9 OK unknown tag\r\n",
		"+ nobody asked\r\n",
		"A1 MAYBE not a status\r\n",
		"* 1 FETCH (UID 1))\r\n",
		"\r\n",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct harness h;
		struct completion c = { 0 };

		harness_start(&h, GREETING, "A");
		imap_client_noop(h.client, on_done, &c);
		imap_client_noop(h.client, on_done, &c);
		server_send(&h, bad[i]);
		CU_ASSERT_EQUAL(c.count, 2);
		CU_ASSERT_EQUAL(c.status[0], IMAP_CLIENT_STATUS_ABORT);
		CU_ASSERT_EQUAL(c.status[1], IMAP_CLIENT_STATUS_ABORT);
		CU_ASSERT_EQUAL(imap_client_get_state(h.client), IMAP_CLIENT_STATE_DISCONNECTED);
		harness_stop(&h);
	}
}

static void server_send_all(struct harness *h, const char *data, size_t len);

/* "* SEARCH 1 2 ... count\r\n" (malloc'd), *len_r its length. */
static char *search_line(unsigned int count, size_t *len_r)
{
	char *line = malloc((size_t)count * 12 + 16);
	size_t len = (size_t)sprintf(line, "* SEARCH");

	for (unsigned int i = 1; i <= count; i++)
		len += (size_t)sprintf(line + len, " %u", i);
	len += (size_t)sprintf(line + len, "\r\n");
	*len_r = len;
	return line;
}

/* "* THREAD " and depth nested lists, "(1 (2 (3 ...)))\r\n" (malloc'd). */
static char *thread_line(unsigned int depth, size_t *len_r)
{
	char *line = malloc((size_t)depth * 16 + 16);
	size_t len = (size_t)sprintf(line, "* THREAD ");

	for (unsigned int i = 1; i <= depth; i++)
		len += (size_t)sprintf(line + len, "(%u ", i);
	line[len - 1] = ')';
	for (unsigned int i = 1; i < depth; i++)
		line[len++] = ')';
	len += (size_t)sprintf(line + len, "\r\n");
	*len_r = len;
	return line;
}

/* A server's lines grow with its mailboxes: a SEARCH of 15,000 UIDs (past
   the parser's 64 KiB for client commands) and a THREAD nested 1,000 deep
   are data like any other; nesting past IMAP_CLIENT_MAX_RESPONSE_DEPTH is
   malformed. */
static void test_long_and_deep_lines(void)
{
	struct harness h;
	struct completion c = { 0 };
	size_t len;
	char *line;

	harness_start(&h, GREETING, "A");
	imap_client_noop(h.client, on_done, &c);
	line = search_line(15000, &len);
	CU_ASSERT(len > 64 * 1024);
	server_send_all(&h, line, len);
	free(line);
	line = thread_line(1000, &len);
	server_send_all(&h, line, len);
	free(line);
	server_send(&h, "A1 OK done\r\n");
	CU_ASSERT_EQUAL(c.count, 1);
	CU_ASSERT_EQUAL(c.status[0], IMAP_CLIENT_STATUS_OK);
	CU_ASSERT_EQUAL(c.untagged[0], 2);
	CU_ASSERT_STRING_EQUAL(h.last_untagged, "THREAD");
	CU_ASSERT_EQUAL(imap_client_get_state(h.client), IMAP_CLIENT_STATE_NOT_AUTHENTICATED);
	imap_client_noop(h.client, on_done, &c);
	line = thread_line(IMAP_CLIENT_MAX_RESPONSE_DEPTH + 1, &len);
	server_send_all(&h, line, len);
	free(line);
	CU_ASSERT_EQUAL(c.count, 2);
	CU_ASSERT_EQUAL(c.status[1], IMAP_CLIENT_STATUS_ABORT);
	CU_ASSERT_EQUAL(imap_client_get_state(h.client), IMAP_CLIENT_STATE_DISCONNECTED);
	harness_stop(&h);
}

static void test_peer_close_aborts(void)
{
	struct harness h;
	struct completion c = { 0 };

	harness_start(&h, GREETING, "A");
	imap_client_fetch(h.client, false, "1", "BODY[]", on_done, &c);
	server_send(&h, "* 1 FETCH (BODY[] {100}\r\nonly part");
	shutdown(h.peer_fd, SHUT_WR);
	pump(&h);
	CU_ASSERT_EQUAL(c.count, 1);
	CU_ASSERT_EQUAL(c.status[0], IMAP_CLIENT_STATUS_ABORT);
	harness_stop(&h);
}

static void test_id_and_enable(void)
{
	struct harness h;
	static const char *const fields[] = { "name", "imap\"cached", "version", "1", NULL };

	harness_start(&h, "* PREAUTH [CAPABILITY IMAP4rev1 ID ENABLE] hi\r\n", "A");
	imap_client_id(h.client, fields, on_done, &(struct completion){ 0 });
	imap_client_id(h.client, NULL, on_done, &(struct completion){ 0 });
	imap_client_enable(h.client, "CONDSTORE QRESYNC", on_done, &(struct completion){ 0 });
	imap_client_partial(h.client, 3, "RFC822", 100, 50, on_done, &(struct completion){ 0 });
	imap_client_uid_expunge(h.client, "4:7", on_done, &(struct completion){ 0 });
	imap_client_list(h.client, "", "INBOX/*", on_done, &(struct completion){ 0 });
	imap_client_sort(h.client, true, "(REVERSE DATE)", "UTF-8", "ALL", on_done, &(struct completion){ 0 });
	imap_client_thread(h.client, false, "REFERENCES", "UTF-8", "SINCE 1-Feb-1994", on_done,
			   &(struct completion){ 0 });
	imap_client_setacl(h.client, "INBOX", "fred", "lrswi", on_done, &(struct completion){ 0 });
	imap_client_getquotaroot(h.client, "INBOX", on_done, &(struct completion){ 0 });
	imap_client_setquota(h.client, "", "(STORAGE 512)", on_done, &(struct completion){ 0 });
	imap_client_myrights(h.client, "Other Users", on_done, &(struct completion){ 0 });
	CU_ASSERT_STRING_EQUAL(take(&h), "A1 ID (\"name\" \"imap\\\"cached\" \"version\" \"1\")\r\n"
					  "A2 ID NIL\r\n"
					  "A3 ENABLE CONDSTORE QRESYNC\r\n"
					  "A4 FETCH 3 (BODY[]<100.50>)\r\n"
					  "A5 UID EXPUNGE 4:7\r\n"
					  "A6 LIST \"\" INBOX/*\r\n"
					  "A7 UID SORT (REVERSE DATE) UTF-8 ALL\r\n"
					  "A8 THREAD REFERENCES UTF-8 SINCE 1-Feb-1994\r\n"
					  "A9 SETACL INBOX fred lrswi\r\n"
					  "A10 GETQUOTAROOT INBOX\r\n"
					  "A11 SETQUOTA \"\" (STORAGE 512)\r\n"
					  "A12 MYRIGHTS \"Other Users\"\r\n");
	harness_stop(&h);
}

#define GARBAGE_RUNS 300 /* seeded, so every run checks the same inputs */
#define GARBAGE_TOKENS 120

/* Any byte sequence from the server ends every command (OK/NO/BAD or
   abort) once the server hangs up: no hang, no crash. */
static void test_garbage_ends_every_command(void)
{
	static const char *const tokens[] = {
		"* ", "A1 ", "A2 ", "A3 ", "OK ", "NO ", "BAD ", "BYE ", "PREAUTH ", "+ ", "+\r\n", "{5}\r\n",
		"{5+}\r\n", "~{3}\r\n", "{99999999999}\r\n", "(", ")", "\"", "\\", "[", "]", "\r\n", "\n",
		"FETCH ", "1 ", "4294967296 ", "EXISTS", "CAPABILITY ", "[CAPABILITY IMAP4rev1 LITERAL+] ",
		"[READ-ONLY] ", "BODY[] ", "NIL ", "x", " ", "\0", "\377",
	};
	unsigned int seed = 12345;

	for (int run = 0; run < GARBAGE_RUNS; run++) {
		struct harness h;
		struct completion c = { 0 };
		char input[GARBAGE_TOKENS * 40];
		size_t len = 0;

		harness_start(&h, GREETING, "A");
		imap_client_noop(h.client, on_done, &c);
		imap_client_fetch(h.client, false, "1", "(BODY[])", on_done, &c);
		imap_client_append(h.client, "INBOX", NULL, NULL, "hello", 5, on_done, &c);
		for (int i = 0; i < GARBAGE_TOKENS; i++) {
			const char *token;

			seed = seed * 1103515245 + 12345;
			if ((seed >> 16) % 8 == 0) {
				input[len++] = (char)(seed >> 8);
				continue;
			}
			token = tokens[(seed >> 16) % (sizeof(tokens) / sizeof(tokens[0]))];
			/* "\0" is one NUL byte */
			if (token[0] == '\0') {
				input[len++] = '\0';
				continue;
			}
			memcpy(input + len, token, strlen(token));
			len += strlen(token);
		}
		if (run % 2 == 0) {
			CU_ASSERT_EQUAL(write(h.peer_fd, input, len), (ssize_t)len);
		} else {
			server_send_bytewise(&h, input, len);
		}
		shutdown(h.peer_fd, SHUT_WR);
		pump(&h);
		CU_ASSERT_EQUAL(c.count, 3);
		if (c.count != 3)
			fprintf(stderr, "garbage run %d left %u of 3 commands pending\n", run, 3 - c.count);
		CU_ASSERT_EQUAL(imap_client_get_state(h.client), IMAP_CLIENT_STATE_DISCONNECTED);
		harness_stop(&h);
	}
}

int unit_suite_init(void)
{
	signal(SIGPIPE, SIG_IGN); /* the test's peer end writes after the client hung up */
	return 0;
}

/* ---- raw passthrough ---- */

#define RAW_MAX (512 * 1024)

/* What the raw callback received, with a marker per event. */
struct raw_log {
	char bytes[RAW_MAX + 1];
	size_t len;
	char events[4096]; /* "U", "C", "T", "S" per call, "." after a line end */
	size_t event_len;
	char last_tag[16];
	bool last_had_command;
	unsigned int parts;
	size_t largest_part;
	bool pause_on_part;
	bool handle_all;        /* return IMAP_CLIENT_RAW_HANDLED for every line */
	struct imap_client *client;
};

static int on_raw(struct imap_client *client, struct imap_client_command *command,
		  enum imap_client_raw_kind kind, const unsigned char *data, size_t len, bool line_end,
		  void *context)
{
	struct raw_log *r = context;

	(void)client;
	CU_ASSERT_FATAL(r->len + len <= RAW_MAX);
	memcpy(r->bytes + r->len, data, len);
	r->len += len;
	r->bytes[r->len] = '\0';
	if (r->event_len + 2 < sizeof(r->events)) {
		r->events[r->event_len++] = kind == IMAP_CLIENT_RAW_UNTAGGED ? 'U' :
					    kind == IMAP_CLIENT_RAW_CONTINUATION ? 'C' :
					    kind == IMAP_CLIENT_RAW_TAGGED ? 'T' : 'S';
		if (line_end)
			r->events[r->event_len++] = '.';
		r->events[r->event_len] = '\0';
	}
	r->last_had_command = command != NULL;
	snprintf(r->last_tag, sizeof(r->last_tag), "%s", command != NULL ? imap_client_command_get_tag(command) : "");
	r->parts++;
	if (len > r->largest_part)
		r->largest_part = len;
	if (r->pause_on_part && !line_end)
		imap_client_set_reading_paused(r->client, true);
	return r->handle_all ? IMAP_CLIENT_RAW_HANDLED : 0;
}

static void raw_start(struct harness *h, struct raw_log *r, const char *greeting)
{
	memset(r, 0, sizeof(*r));
	harness_start(h, greeting, "A");
	r->client = h->client;
	imap_client_set_raw_callback(h->client, on_raw, r);
}

static struct imap_client_command *raw_send(struct harness *h, const char *name, const char *line,
					    struct completion *c)
{
	struct imap_client_command *command = imap_client_raw_command_new(h->client, NULL, name, on_done, c);

	imap_client_raw_command_write(command, " ", 1);
	imap_client_raw_command_write(command, line, strlen(line));
	imap_client_raw_command_end(command);
	return command;
}

static void test_raw_exact_bytes(void)
{
	struct harness h;
	struct raw_log r;
	struct completion c = { 0 };
	const char *reply = "* 3 exists\r\n* OK [UIDNEXT 9]  two  spaces\r\n* 1 FETCH (FLAGS (\\Seen) BODY[] {5}\r\nab\r\nc)\r\n";

	raw_start(&h, &r, GREETING);
	raw_send(&h, "NOOP", "noop\r\n", &c);
	CU_ASSERT_STRING_EQUAL(take(&h), "A1 noop\r\n");
	server_send(&h, reply);
	CU_ASSERT_EQUAL(c.count, 0);
	server_send(&h, "A1 OK [HIGHESTMODSEQ 4]  Done.\r\n");
	CU_ASSERT_EQUAL(c.count, 1);
	CU_ASSERT_EQUAL(c.status[0], IMAP_CLIENT_STATUS_OK);
	CU_ASSERT_EQUAL(c.untagged[0], 0); /* raw lines are not collected */
	char want[512];

	snprintf(want, sizeof(want), "%s OK [HIGHESTMODSEQ 4]  Done.\r\n", reply);
	CU_ASSERT_STRING_EQUAL(r.bytes, want);
	CU_ASSERT_STRING_EQUAL(r.events, "U.U.U.T.");
	CU_ASSERT_STRING_EQUAL(r.last_tag, "A1");
	CU_ASSERT_EQUAL(h.untagged_count, 1 + 3); /* the greeting; and the untagged callback still sees them */
	harness_stop(&h);
}

/* A raw callback that took a FETCH line's data itself keeps it from the
   untagged callback; it can't do so for other lines, which the client
   core still reads (an EXISTS, a code). */
static void test_raw_handled_fetch(void)
{
	struct harness h;
	struct raw_log r;
	struct completion c = { 0 };

	raw_start(&h, &r, GREETING);
	r.handle_all = true;
	raw_send(&h, "UID FETCH", "UID FETCH 1:* (FLAGS)\r\n", &c);
	take(&h);
	server_send(&h, "* 1 FETCH (UID 4 FLAGS (\\Seen))\r\n* 2 EXISTS\r\n* 2 FETCH (UID 5 FLAGS ())\r\n"
			"A1 OK Done.\r\n");
	CU_ASSERT_EQUAL(c.count, 1);
	CU_ASSERT_EQUAL(c.status[0], IMAP_CLIENT_STATUS_OK);
	CU_ASSERT_STRING_EQUAL(r.events, "U.U.U.T.");
	CU_ASSERT_EQUAL(h.untagged_count, 1 + 1); /* the greeting and the EXISTS, not the FETCHes */
	harness_stop(&h);
}

/* A whole "* n FETCH (" line reaches the raw callback before the parser:
   one the callback takes is never parsed (it vouched for it: a line the
   parser would refuse passes), one it does not take is handed over once
   and parsed after; a line ending in a literal, or not in one piece,
   goes the old way. Bytes and their order are the same either way. */
static void test_raw_fetch_offered_first(void)
{
	static const char taken[] = "* 1 FETCH (UID 4 FLAGS (\\Seen)))) )\r\n* 2 fetch (UID 5 FLAGS ())\r\n";
	static const char kept[] = "* 3 FETCH (UID 6 FLAGS ())\r\n* 4 FETCH (BODY[] {2}\r\nab)\r\n* 5 EXISTS\r\n";
	struct harness h;
	struct raw_log r;
	struct completion c = { 0 };

	raw_start(&h, &r, GREETING);
	r.handle_all = true;
	raw_send(&h, "UID FETCH", "UID FETCH 1:* (FLAGS)\r\n", &c);
	take(&h);
	server_send(&h, taken);
	CU_ASSERT_EQUAL(h.untagged_count, 1); /* the greeting only */
	CU_ASSERT_STRING_EQUAL(r.bytes, taken);
	r.handle_all = false;
	server_send(&h, kept);
	server_send(&h, "* 6 FETCH (UID 9 ");
	server_send(&h, "FLAGS ())\r\nA1 OK Done.\r\n");
	CU_ASSERT_EQUAL(c.count, 1);
	CU_ASSERT_EQUAL(c.status[0], IMAP_CLIENT_STATUS_OK);
	CU_ASSERT_EQUAL(h.untagged_count, 1 + 4); /* 3, 4 (BODY[] streamed as raw), EXISTS, 6 */
	CU_ASSERT(strstr(r.bytes, kept) != NULL);
	CU_ASSERT(strstr(r.bytes, "* 6 FETCH (UID 9 FLAGS ())\r\n OK Done.\r\n") != NULL);
	CU_ASSERT_STRING_EQUAL(r.events, "U.U.U.U.U.U.T.");
	harness_stop(&h);
}

static void test_raw_bytewise_same(void)
{
	static const char reply[] = "* 1 FETCH (BODY[HEADER] {12}\r\nSubject: x\r\n UID 4)\r\n* 2 EXPUNGE\r\nA1 NO [TRYCREATE] nope\r\n";
	struct harness h;
	struct raw_log r;
	struct completion c = { 0 };

	raw_start(&h, &r, GREETING);
	raw_send(&h, "UID FETCH", "UID FETCH 1 BODY.PEEK[HEADER]\r\n", &c);
	take(&h);
	server_send_bytewise(&h, reply, strlen(reply));
	CU_ASSERT_EQUAL(c.count, 1);
	CU_ASSERT_EQUAL(c.status[0], IMAP_CLIENT_STATUS_NO);
	CU_ASSERT_STRING_EQUAL(r.bytes, "* 1 FETCH (BODY[HEADER] {12}\r\nSubject: x\r\n UID 4)\r\n* 2 EXPUNGE\r\n NO [TRYCREATE] nope\r\n");
	CU_ASSERT_STRING_EQUAL(r.events, "U.U.T.");
	harness_stop(&h);
}

static void test_raw_and_own_take_turns(void)
{
	struct harness h;
	struct raw_log r;
	struct completion own = { 0 }, raw = { 0 };

	raw_start(&h, &r, GREETING);
	imap_client_noop(h.client, on_done, &own);
	raw_send(&h, "CHECK", "CHECK\r\n", &raw);
	imap_client_noop(h.client, on_done, &own);
	CU_ASSERT_STRING_EQUAL(take(&h), "A1 NOOP\r\n"); /* the raw one waits for the own one */
	server_send(&h, "* 4 EXISTS\r\n");
	CU_ASSERT_EQUAL(r.len, 0); /* an own command's data is consumed, not passed on */
	server_send(&h, "A1 OK\r\n");
	CU_ASSERT_EQUAL(own.count, 1);
	CU_ASSERT_EQUAL(own.untagged[0], 1);
	CU_ASSERT_STRING_EQUAL(take(&h), "A2 CHECK\r\n"); /* and the second own waits for it */
	server_send(&h, "* 5 EXISTS\r\nA2 OK check\r\n");
	CU_ASSERT_STRING_EQUAL(r.bytes, "* 5 EXISTS\r\n OK check\r\n");
	CU_ASSERT_EQUAL(raw.count, 1);
	CU_ASSERT_STRING_EQUAL(take(&h), "A3 NOOP\r\n");
	server_send(&h, "A3 OK\r\n");
	CU_ASSERT_EQUAL(own.count, 2);
	harness_stop(&h);
}

static void test_raw_pipelined(void)
{
	struct harness h;
	struct raw_log r;
	struct completion c = { 0 };

	raw_start(&h, &r, GREETING);
	raw_send(&h, "NOOP", "NOOP\r\n", &c);
	raw_send(&h, "STATUS", "STATUS INBOX (MESSAGES)\r\n", &c);
	CU_ASSERT_STRING_EQUAL(take(&h), "A1 NOOP\r\nA2 STATUS INBOX (MESSAGES)\r\n");
	server_send(&h, "A1 OK\r\n* STATUS INBOX (MESSAGES 2)\r\n");
	CU_ASSERT_STRING_EQUAL(r.last_tag, "A2"); /* oldest on the wire once A1 is done */
	server_send(&h, "A2 OK\r\n");
	CU_ASSERT_STRING_EQUAL(r.bytes, " OK\r\n* STATUS INBOX (MESSAGES 2)\r\n OK\r\n");
	CU_ASSERT_EQUAL(c.count, 2);
	CU_ASSERT_STRING_EQUAL(c.tags[0], "A1");
	CU_ASSERT_STRING_EQUAL(c.tags[1], "A2");
	harness_stop(&h);
}

static void test_raw_synchronizing_literal(void)
{
	struct harness h;
	struct raw_log r;
	struct completion c = { 0 };
	struct imap_client_command *command;

	raw_start(&h, &r, GREETING);
	command = imap_client_raw_command_new(h.client, NULL, "APPEND", on_done, &c);
	imap_client_raw_command_write(command, " APPEND INBOX {5}\r\n", 19);
	raw_send(&h, "NOOP", "NOOP\r\n", &c);
	CU_ASSERT_STRING_EQUAL(take(&h), "A1 APPEND INBOX {5}\r\n"); /* nothing may follow an open command */
	server_send(&h, "+ go ahead\r\n");
	CU_ASSERT_STRING_EQUAL(r.bytes, "+ go ahead\r\n");
	CU_ASSERT_STRING_EQUAL(r.events, "C.");
	imap_client_raw_command_write(command, "hello\r\n", 7);
	imap_client_raw_command_end(command);
	CU_ASSERT_STRING_EQUAL(take(&h), "hello\r\nA2 NOOP\r\n");
	server_send(&h, "A1 OK [APPENDUID 1 2] appended\r\nA2 OK\r\n");
	CU_ASSERT_EQUAL(c.count, 2);
	CU_ASSERT_EQUAL(c.status[0], IMAP_CLIENT_STATUS_OK);
	harness_stop(&h);
}

static void test_raw_refused_literal(void)
{
	struct harness h;
	struct raw_log r;
	struct completion c = { 0 };
	struct imap_client_command *command;

	raw_start(&h, &r, GREETING);
	command = imap_client_raw_command_new(h.client, NULL, "APPEND", on_done, &c);
	imap_client_raw_command_write(command, " APPEND nosuch {5}\r\n", 20);
	take(&h);
	server_send(&h, "A1 NO [TRYCREATE] no such mailbox\r\n");
	/* answered before it ended: the caller is told, and ends it */
	CU_ASSERT_EQUAL(c.count, 1);
	CU_ASSERT_EQUAL(c.status[0], IMAP_CLIENT_STATUS_NO);
	CU_ASSERT_TRUE(imap_client_raw_command_is_answered(command));
	CU_ASSERT_STRING_EQUAL(r.bytes, " NO [TRYCREATE] no such mailbox\r\n");
	raw_send(&h, "NOOP", "NOOP\r\n", &c);
	CU_ASSERT_STRING_EQUAL(take(&h), ""); /* held behind the open one */
	imap_client_raw_command_end(command); /* a {5} without "+": nothing more comes */
	CU_ASSERT_STRING_EQUAL(take(&h), "A2 NOOP\r\n");
	server_send(&h, "A2 OK\r\n");
	CU_ASSERT_EQUAL(c.count, 2);
	harness_stop(&h);
}

/* RFC 7888: the server reads a {N+} literal whatever it answered, so the
   rest of a refused command still goes out, before anything after it. */
static void test_raw_refused_nonsync_literal(void)
{
	struct harness h;
	struct raw_log r;
	struct completion c = { 0 };
	struct imap_client_command *command;

	raw_start(&h, &r, GREETING);
	command = imap_client_raw_command_new(h.client, NULL, "APPEND", on_done, &c);
	imap_client_raw_command_write(command, " APPEND nosuch {5+}\r\nhel", 25);
	CU_ASSERT_STRING_EQUAL(take(&h), "A1 APPEND nosuch {5+}\r\nhel");
	server_send(&h, "A1 NO [TRYCREATE] no such mailbox\r\n");
	CU_ASSERT_EQUAL(c.count, 1);
	raw_send(&h, "NOOP", "NOOP\r\n", &c);
	server_send(&h, "* 3 EXISTS\r\n"); /* unsolicited: no command is waiting for a reply */
	CU_ASSERT_STRING_EQUAL(r.events, "T.U.");
	CU_ASSERT_FALSE(r.last_had_command);
	imap_client_raw_command_write(command, "lo {2+}\r\nab", 11);
	imap_client_raw_command_write(command, "\r\n", 2);
	CU_ASSERT_STRING_EQUAL(take(&h), "lo {2+}\r\nab\r\n");
	imap_client_raw_command_end(command);
	CU_ASSERT_STRING_EQUAL(take(&h), "A2 NOOP\r\n");
	server_send(&h, "A2 OK\r\n");
	CU_ASSERT_EQUAL(c.count, 2);
	harness_stop(&h);
}

/* A refused command still being written when the connection drops is
   freed with it (no leak under ASan, no callback twice). */
static void test_raw_answered_then_aborted(void)
{
	struct harness h;
	struct raw_log r;
	struct completion c = { 0 };
	struct imap_client_command *command;

	raw_start(&h, &r, GREETING);
	command = imap_client_raw_command_new(h.client, NULL, "APPEND", on_done, &c);
	imap_client_raw_command_write(command, " APPEND nosuch {5+}\r\n", 22);
	take(&h);
	server_send(&h, "A1 NO no\r\n* BYE going away\r\n");
	CU_ASSERT_EQUAL(c.count, 1);
	CU_ASSERT_EQUAL(c.status[0], IMAP_CLIENT_STATUS_NO);
	harness_stop(&h);
}

/* The caller's tags go out as they are, of any length, shared or not;
   replies are matched to them in order. */
static void test_raw_caller_tags(void)
{
	struct harness h;
	struct raw_log r;
	struct completion c = { 0 };
	struct imap_client_command *command;
	char long_tag[2001], want[2100];

	memset(long_tag, 'x', sizeof(long_tag) - 1);
	long_tag[sizeof(long_tag) - 1] = '\0';
	raw_start(&h, &r, GREETING);
	command = imap_client_raw_command_new(h.client, "a1", "NOOP", on_done, &c);
	imap_client_raw_command_write(command, " NOOP\r\n", 7);
	imap_client_raw_command_end(command);
	command = imap_client_raw_command_new(h.client, "a1", "CHECK", on_done, &c);
	imap_client_raw_command_write(command, " CHECK\r\n", 8);
	imap_client_raw_command_end(command);
	command = imap_client_raw_command_new(h.client, long_tag, "NOOP", on_done, &c);
	imap_client_raw_command_write(command, " NOOP\r\n", 7);
	imap_client_raw_command_end(command);
	snprintf(want, sizeof(want), "a1 NOOP\r\na1 CHECK\r\n%s NOOP\r\n", long_tag);
	CU_ASSERT_STRING_EQUAL(take(&h), want);
	server_send(&h, "a1 OK first\r\n");
	CU_ASSERT_EQUAL(c.count, 1);
	CU_ASSERT_STRING_EQUAL(c.tags[0], "a1");
	CU_ASSERT_STRING_EQUAL(r.last_tag, "a1");
	snprintf(want, sizeof(want), "a1 NO second\r\n%s OK third\r\n", long_tag);
	server_send(&h, want);
	CU_ASSERT_EQUAL(c.count, 3);
	CU_ASSERT_EQUAL(c.status[1], IMAP_CLIENT_STATUS_NO);
	CU_ASSERT_EQUAL(c.status[2], IMAP_CLIENT_STATUS_OK);
	CU_ASSERT_STRING_EQUAL(r.bytes, " OK first\r\n NO second\r\n OK third\r\n");
	raw_send(&h, "NOOP", "NOOP\r\n", &c);
	CU_ASSERT_STRING_EQUAL(take(&h), "A1 NOOP\r\n"); /* the core's own numbering is untouched */
	harness_stop(&h);
}

static void test_raw_idle(void)
{
	struct harness h;
	struct raw_log r;
	struct completion c = { 0 };
	struct imap_client_command *command;

	raw_start(&h, &r, "* OK [CAPABILITY IMAP4rev1 IDLE] hi\r\n");
	command = imap_client_raw_command_new(h.client, NULL, "IDLE", on_done, &c);
	imap_client_raw_command_write(command, " IDLE\r\n", 7);
	CU_ASSERT_STRING_EQUAL(take(&h), "A1 IDLE\r\n");
	server_send(&h, "+ idling\r\n* 7 EXISTS\r\n");
	CU_ASSERT_STRING_EQUAL(r.events, "C.U.");
	imap_client_raw_command_write(command, "DONE\r\n", 6);
	imap_client_raw_command_end(command);
	CU_ASSERT_STRING_EQUAL(take(&h), "DONE\r\n");
	server_send(&h, "A1 OK Idle completed\r\n");
	CU_ASSERT_STRING_EQUAL(r.bytes, "+ idling\r\n* 7 EXISTS\r\n OK Idle completed\r\n");
	CU_ASSERT_EQUAL(c.count, 1);
	harness_stop(&h);
}

static void on_closed(struct imap_client *client, const char *reason, void *context)
{
	char *last = context;

	(void)client;
	snprintf(last, 128, "%s%s", last[0] != '\0' ? "twice: " : "", reason);
}

static void test_raw_unsolicited_and_bye(void)
{
	struct harness h;
	struct raw_log r;
	struct completion c = { 0 };
	char closed[128] = "";

	raw_start(&h, &r, GREETING);
	imap_client_set_closed_callback(h.client, on_closed, closed);
	server_send(&h, "* 8 EXISTS\r\n");
	CU_ASSERT_STRING_EQUAL(r.bytes, "* 8 EXISTS\r\n");
	CU_ASSERT_FALSE(r.last_had_command);
	raw_send(&h, "NOOP", "NOOP\r\n", &c);
	take(&h);
	server_send(&h, "* BYE going down\r\n");
	CU_ASSERT_STRING_EQUAL(r.bytes, "* 8 EXISTS\r\n* BYE going down\r\n");
	CU_ASSERT_EQUAL(c.count, 1);
	CU_ASSERT_EQUAL(c.status[0], IMAP_CLIENT_STATUS_ABORT);
	/* the owner hears of it once, after the commands */
	CU_ASSERT_STRING_EQUAL(closed, "server closed the connection: BYE going down");
	harness_stop(&h);
}

/* Writes all of data to the peer, pumping the loop while the socket is full. */
static void server_send_all(struct harness *h, const char *data, size_t len)
{
	size_t done = 0;

	for (int rounds = 0; done < len && rounds < 100000; rounds++) {
		ssize_t n = write(h->peer_fd, data + done, len - done);

		if (n > 0)
			done += (size_t)n;
		event_base_loop(h->base, EVLOOP_NONBLOCK);
	}
	CU_ASSERT_EQUAL(done, len);
	pump(h);
}

static void test_raw_large_literal_streamed(void)
{
	enum { BODY = 300 * 1024 };
	struct harness h;
	static struct raw_log r;
	struct completion c = { 0 };
	char *reply = malloc(BODY + 256);
	size_t len;

	raw_start(&h, &r, GREETING);
	raw_send(&h, "FETCH", "FETCH 1 BODY[]\r\n", &c);
	take(&h);
	len = (size_t)sprintf(reply, "* 1 FETCH (BODY[] {%d}\r\n", BODY);
	for (int i = 0; i < BODY; i++)
		reply[len++] = (char)('a' + i % 26);
	len += (size_t)sprintf(reply + len, ")\r\nA1 OK\r\n");
	server_send_all(&h, reply, len);
	CU_ASSERT_EQUAL(c.count, 1);
	if (getenv("TEST_DEBUG") != NULL)
		fprintf(stderr, "[raw: %zu of %zu bytes, %u parts, largest %zu, events %.40s]\n", r.len, len,
			r.parts, r.largest_part, r.events);
	CU_ASSERT_EQUAL(r.len, len - 2);
	CU_ASSERT_EQUAL(memcmp(r.bytes, reply, len - 10), 0);
	CU_ASSERT_STRING_EQUAL(r.bytes + r.len - 8, ")\r\n OK\r\n");
	CU_ASSERT(r.parts > 3); /* passed on in parts, never held whole */
	CU_ASSERT(r.largest_part < 128 * 1024);
	CU_ASSERT_EQUAL(r.events[0], 'U');
	CU_ASSERT_PTR_NOT_NULL(strstr(r.events, "U.T."));
	free(reply);
	harness_stop(&h);
}

static void test_raw_pause_stops_reading(void)
{
	enum { BODY = 200 * 1024 };
	struct harness h;
	static struct raw_log r;
	struct completion c = { 0 };
	char *reply = malloc(BODY + 256);
	size_t len;

	raw_start(&h, &r, GREETING);
	r.pause_on_part = true;
	raw_send(&h, "FETCH", "FETCH 1 BODY[]\r\n", &c);
	take(&h);
	len = (size_t)sprintf(reply, "* 1 FETCH (BODY[] {%d}\r\n", BODY);
	memset(reply + len, 'x', BODY);
	len += BODY;
	len += (size_t)sprintf(reply + len, ")\r\nA1 OK\r\n");
	/* the socket takes only part of it while the client does not read */
	ssize_t n = write(h.peer_fd, reply, len);

	CU_ASSERT(n > 0);
	pump(&h);
	CU_ASSERT(imap_client_is_reading_paused(h.client));
	size_t seen = r.len;

	CU_ASSERT(seen < 128 * 1024); /* stopped after a part */
	pump(&h);
	CU_ASSERT_EQUAL(r.len, seen); /* nothing more while paused */
	for (int rounds = 0; rounds < 1000 && c.count == 0; rounds++) {
		r.pause_on_part = rounds % 2 == 0;
		imap_client_set_reading_paused(h.client, false);
		if ((size_t)n < len) {
			ssize_t more = write(h.peer_fd, reply + n, len - (size_t)n);

			if (more > 0)
				n += more;
		}
		pump(&h);
	}
	CU_ASSERT_EQUAL(c.count, 1);
	CU_ASSERT_EQUAL(r.len, len - 2);
	free(reply);
	harness_stop(&h);
}

static void test_raw_output_pending(void)
{
	struct harness h;
	struct raw_log r;
	struct completion own = { 0 }, raw = { 0 };
	struct imap_client_command *command;
	char big[8192];

	raw_start(&h, &r, GREETING);
	imap_client_noop(h.client, on_done, &own);
	take(&h);
	command = imap_client_raw_command_new(h.client, NULL, "APPEND", on_done, &raw);
	memset(big, 'y', sizeof(big));
	imap_client_raw_command_write(command, big, sizeof(big));
	/* waiting behind the own NOOP: counted, not yet sent */
	CU_ASSERT(imap_client_get_output_pending(h.client) >= sizeof(big));
	CU_ASSERT_STRING_EQUAL(take(&h), "");
	server_send(&h, "A1 OK\r\n");
	pump(&h);
	CU_ASSERT_EQUAL(imap_client_get_output_pending(h.client), 0);
	CU_ASSERT_EQUAL(h.out_len, 2 + sizeof(big)); /* the tag, then the caller's bytes */
	harness_stop(&h);
}

/* While raw commands are on the wire, a tagged line that answers none
   of them is the server's answer to bytes it read as a command of their
   own: passed on whole, and the commands still wait for theirs. */
static void test_raw_stray_tagged_line_is_passed_on(void)
{
	struct harness h;
	struct raw_log r;
	struct completion c = { 0 };

	raw_start(&h, &r, GREETING);
	raw_send(&h, "NOOP", "NOOP\r\n", &c);
	take(&h);
	server_send(&h, "nope BAD Error in IMAP command: Invalid command name\r\n");
	CU_ASSERT_STRING_EQUAL(r.bytes, "nope BAD Error in IMAP command: Invalid command name\r\n");
	CU_ASSERT_STRING_EQUAL(r.events, "S.");
	CU_ASSERT_EQUAL(c.count, 0);
	server_send(&h, "A1 OK done\r\n");
	CU_ASSERT_EQUAL(c.count, 1);
	CU_ASSERT_EQUAL(c.status[0], IMAP_CLIENT_STATUS_OK);
	harness_stop(&h);
}

/* A server that refuses a tag with "]" answers untagged: that completes
   the command, and the next one goes on. An atom tag's command is not
   completed by an untagged BAD. */
static void test_raw_refused_tag(void)
{
	struct harness h;
	struct raw_log r;
	struct completion c = { 0 };
	struct imap_client_command *command;

	raw_start(&h, &r, GREETING);
	command = imap_client_raw_command_new(h.client, "x]1", "NOOP", on_done, &c);
	imap_client_raw_command_write(command, " NOOP\r\n", 7);
	imap_client_raw_command_end(command);
	raw_send(&h, "NOOP", "NOOP\r\n", &c);
	CU_ASSERT_STRING_EQUAL(take(&h), "x]1 NOOP\r\nA1 NOOP\r\n");
	server_send(&h, "* BAD Error in IMAP tag: Invalid tag.\r\n");
	CU_ASSERT_EQUAL(c.count, 1);
	CU_ASSERT_EQUAL(c.status[0], IMAP_CLIENT_STATUS_BAD);
	CU_ASSERT_STRING_EQUAL(r.bytes, "* BAD Error in IMAP tag: Invalid tag.\r\n");
	server_send(&h, "* BAD something else\r\n"); /* A1 is an atom: not its answer */
	CU_ASSERT_EQUAL(c.count, 1);
	server_send(&h, "A1 OK\r\n");
	CU_ASSERT_EQUAL(c.count, 2);
	CU_ASSERT_EQUAL(c.status[1], IMAP_CLIENT_STATUS_OK);
	harness_stop(&h);
}

/* An own command's answer naming a tag never sent is a broken server. */
static void test_own_unknown_tag_aborts(void)
{
	struct harness h;
	struct raw_log r;
	struct completion c = { 0 };

	raw_start(&h, &r, GREETING);
	imap_client_noop(h.client, on_done, &c);
	take(&h);
	server_send(&h, "A7 OK not ours\r\n");
	CU_ASSERT_EQUAL(r.len, 0); /* never passed on */
	CU_ASSERT_EQUAL(c.count, 1);
	CU_ASSERT_EQUAL(c.status[0], IMAP_CLIENT_STATUS_ABORT);
	harness_stop(&h);
}

const char unit_suite_name[] = "imap-client";
const struct unit_test unit_tests[] = {
	{ "greeting with capabilities: no CAPABILITY sent", test_greeting_with_capabilities },
	{ "greeting without capabilities: CAPABILITY first", test_greeting_without_capabilities },
	{ "PREAUTH greeting: authenticated", test_preauth },
	{ "default tag prefix is Int2AP-style", test_default_tag_prefix },
	{ "astrings: atom, quoted, escaped, NIL, literal", test_astring_forms },
	{ "synchronizing literal waits for +", test_synchronizing_literal },
	{ "refused literal: never sent, queue goes on", test_literal_refused },
	{ "LITERAL-: {n+} only up to 4096", test_literal_minus },
	{ "pipelining with out-of-order tagged replies", test_pipelining_out_of_order },
	{ "recent(): returns and clears RECENT", test_recent_returns_and_clears },
	{ "LOGIN is a barrier; capabilities from its OK", test_barrier },
	{ "capabilities asked again after login", test_capability_refresh_after_login },
	{ "FETCH with a literal: same whole or byte by byte", test_fetch_whole_and_bytewise },
	{ "SELECT/EXAMINE: read-only, QRESYNC, CONDSTORE, failure", test_select_read_only },
	{ "IDLE woken by untagged data, DONE, queue resumes", test_idle },
	{ "IDLE DONE before the continuation", test_idle_done_before_continuation },
	{ "LOGOUT's BYE is not an abort", test_logout_bye_is_no_abort },
	{ "LOGOUT: server closes after BYE without OK", test_logout_close_after_bye },
	{ "login_cram_md5: RFC 2195 exchange", test_login_cram_md5 },
	{ "AUTHENTICATE: unexpected or bad challenge cancels", test_authenticate_cancel_on_bad_challenge },
	{ "commands while disconnected abort on the next loop", test_disconnected_commands_abort_later },
	{ "client freed inside its own callback", test_free_inside_callback },
	{ "protocol errors abort every pending command", test_protocol_errors_abort },
	{ "a SEARCH past 64 KiB and a THREAD 1,000 deep are data; deeper than the bound aborts", test_long_and_deep_lines },
	{ "peer closing mid-literal aborts", test_peer_close_aborts },
	{ "ID, ENABLE, partial, UID EXPUNGE, LIST, SORT, THREAD, ACL, QUOTA forms", test_id_and_enable },
	{ "garbage from the server ends every command", test_garbage_ends_every_command },
	{ "raw: exact bytes, tag stripped from the completion", test_raw_exact_bytes },
	{ "a raw callback that took a FETCH line keeps it from the untagged callback", test_raw_handled_fetch },
	{ "raw: a whole FETCH line is offered before it is parsed", test_raw_fetch_offered_first },
	{ "raw: byte by byte gives the same bytes", test_raw_bytewise_same },
	{ "raw and own commands take turns on the wire", test_raw_and_own_take_turns },
	{ "raw: pipelined, attributed to the oldest", test_raw_pipelined },
	{ "raw: synchronizing literal waits for the caller", test_raw_synchronizing_literal },
	{ "raw: refused literal completes before the end", test_raw_refused_literal },
	{ "raw: a refused {N+} literal still goes out", test_raw_refused_nonsync_literal },
	{ "raw: answered, then the connection drops", test_raw_answered_then_aborted },
	{ "raw: the caller's tags, long and shared", test_raw_caller_tags },
	{ "raw: IDLE and DONE", test_raw_idle },
	{ "raw: unsolicited data and BYE", test_raw_unsolicited_and_bye },
	{ "raw: a large literal streams in parts", test_raw_large_literal_streamed },
	{ "raw: pausing stops reading mid-literal", test_raw_pause_stops_reading },
	{ "raw: output pending counts queued bytes", test_raw_output_pending },
	{ "raw: a tagged line answering no command is passed on", test_raw_stray_tagged_line_is_passed_on },
	{ "own: a tagged line answering no command aborts", test_own_unknown_tag_aborts },
	{ "raw: a tag refused with an untagged BAD", test_raw_refused_tag },
	{ NULL, NULL },
};
