/* SPDX-License-Identifier: MIT */
/* test-control: the control socket's request parser, STATS and PURGE on a live store, and the socket itself. */
#include "config.h"
#include "cache-stats.h"
#include "cache.h"
#include "cache-fts.h"
#include "conf.h"
#include "control-digest.h"
#include "control.h"
#include "unit.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static char base_dir[] = "/tmp/test-control.XXXXXX";

/* Parses text whole, and fed in every prefix, expecting the same result at the end. */
static enum control_parse_result parse_all(const char *text, struct control_request *request_r,
					   const char **error_r)
{
	size_t size = strlen(text);

	for (size_t cut = 0; cut < size; cut++) {
		struct control_request partial;
		const char *error;
		enum control_parse_result result = control_parse_request(text, cut, &partial, &error);

		if (memchr(text, '\n', cut) == NULL)
			CU_ASSERT_EQUAL(result, CONTROL_PARSE_NEED_MORE);
		control_request_clear(&partial);
	}
	return control_parse_request(text, size, request_r, error_r);
}

static void test_parse_requests(void)
{
	struct control_request request;
	const char *error;

	CU_ASSERT_EQUAL(parse_all("STATS\n", &request, &error), CONTROL_PARSE_DONE);
	CU_ASSERT_EQUAL(request.verb, CONTROL_VERB_STATS);
	CU_ASSERT_PTR_NULL(request.account);
	control_request_clear(&request);
	CU_ASSERT_EQUAL(parse_all("STATS\talice\tFolder with spaces\n", &request, &error), CONTROL_PARSE_DONE);
	CU_ASSERT_STRING_EQUAL(request.account, "alice");
	CU_ASSERT_STRING_EQUAL(request.mailbox, "Folder with spaces");
	control_request_clear(&request);
	CU_ASSERT_EQUAL(parse_all("PURGE\talice\n", &request, &error), CONTROL_PARSE_DONE);
	CU_ASSERT_EQUAL(request.verb, CONTROL_VERB_PURGE);
	CU_ASSERT_STRING_EQUAL(request.account, "alice");
	CU_ASSERT_PTR_NULL(request.mailbox);
	control_request_clear(&request);
	CU_ASSERT_EQUAL(parse_all("DIGEST\talice\tINBOX\n", &request, &error), CONTROL_PARSE_DONE);
	CU_ASSERT_EQUAL(request.verb, CONTROL_VERB_DIGEST);
	CU_ASSERT_EQUAL(request.first_uid, 1);
	control_request_clear(&request);
	CU_ASSERT_EQUAL(parse_all("DIGEST\talice\tINBOX\t4294967295\n", &request, &error), CONTROL_PARSE_DONE);
	CU_ASSERT_EQUAL(request.first_uid, 4294967295u);
	control_request_clear(&request);
}

static void test_parse_bad_requests(void)
{
	static const char *const bad[] = {
		"PURGE\n", "HELLO\n", "\n", "STATS\t\n", "STATS\talice\t\n", "STATS\ta\tb\tc\n",
		"STATS\ta\r\n", "stats\n", "DIGEST\talice\n", "DIGEST\ta\tb\t0\n", "DIGEST\ta\tb\tx\n",
		"DIGEST\ta\tb\t4294967296\n", "DIGEST\ta\tb\t1\t2\n", "PURGE\ta\tb\t1\n",
	};
	struct control_request request;
	const char *error;
	char *huge;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		error = NULL;
		CU_ASSERT_EQUAL(control_parse_request(bad[i], strlen(bad[i]), &request, &error), CONTROL_PARSE_ERROR);
		CU_ASSERT_PTR_NOT_NULL(error);
		CU_ASSERT_PTR_NULL(request.account);
	}
	CU_ASSERT_EQUAL(control_parse_request("STATS\0x\n", 8, &request, &error), CONTROL_PARSE_ERROR);
	huge = malloc(CONTROL_MAX_REQUEST + 1);
	CU_ASSERT_PTR_NOT_NULL_FATAL(huge);
	memcpy(huge, "STATS\t", 6);
	memset(huge + 6, 'a', CONTROL_MAX_REQUEST - 6);
	huge[CONTROL_MAX_REQUEST] = '\n';
	CU_ASSERT_EQUAL(control_parse_request(huge, CONTROL_MAX_REQUEST - 1, &request, &error),
			CONTROL_PARSE_NEED_MORE);
	CU_ASSERT_EQUAL(control_parse_request(huge, CONTROL_MAX_REQUEST + 1, &request, &error), CONTROL_PARSE_ERROR);
	CU_ASSERT_STRING_EQUAL(error, "request too long");
	free(huge);
}

static struct conf *make_conf(void)
{
	char text[512];
	char *errors = NULL;
	struct conf *config;

	snprintf(text, sizeof(text),
		 "upstreams = ( { name = \"up\"; host = \"127.0.0.1\"; } );\n"
		 "cache = { dir = \"%s/cache\"; };\ncontrol = { socket = \"%s/control\"; };\n",
		 base_dir, base_dir);
	config = conf_load_string(text, "test.conf", &errors);
	if (config == NULL)
		fprintf(stderr, "%s", errors);
	free(errors);
	return config;
}

static struct cache *open_store(const struct conf *config)
{
	const struct cache_settings settings = { .dir = config->cache_dir,
						.body_budget = config->cache_body_budget,
						.body_max_size = config->cache_body_max_size };
	const char *error;

	return cache_open(&settings, "up", "alice", &error);
}

/* Runs text as a request; returns the answer (malloc'd). */
static char *run(const struct conf *config, const char *text)
{
	struct control_request request;
	struct evbuffer *out = evbuffer_new();
	const char *error;
	char *answer;
	size_t size;

	CU_ASSERT_EQUAL_FATAL(control_parse_request(text, strlen(text), &request, &error), CONTROL_PARSE_DONE);
	control_handle_request(config, &request, out);
	control_request_clear(&request);
	size = evbuffer_get_length(out);
	answer = calloc(1, size + 1);
	evbuffer_remove(out, answer, size);
	evbuffer_free(out);
	return answer;
}

static void fill_mailbox(struct cache *cache, const char *name, int64_t *id_r)
{
	struct cache_mailbox mailbox;
	struct cache_body_writer *writer;

	CU_ASSERT_EQUAL_FATAL(cache_mailbox_open(cache, name, 7, &mailbox, NULL), 0);
	for (uint32_t uid = 1; uid <= 3; uid++)
		CU_ASSERT_EQUAL(cache_store_flags(cache, mailbox.id, uid, "\\Seen", 0), 0);
	writer = cache_body_begin(cache, mailbox.id, 2, 5, NULL);
	CU_ASSERT_PTR_NOT_NULL_FATAL(writer);
	CU_ASSERT_EQUAL(cache_body_write(writer, "hello", 5), 0);
	CU_ASSERT_EQUAL(cache_body_finish(&writer), 0);
	*id_r = mailbox.id;
}

static void setup(void)
{
	char path[256];

	strcpy(base_dir, "/tmp/test-control.XXXXXX");
	CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(base_dir));
	snprintf(path, sizeof(path), "%s/cache", base_dir);
	CU_ASSERT_EQUAL_FATAL(mkdir(path, 0700), 0);
}

static void teardown(void)
{
	char command[512];

	snprintf(command, sizeof(command), "rm -rf '%s'", base_dir);
	CU_ASSERT_EQUAL(system(command), 0);
}

static void test_stats(void)
{
	struct conf *config;
	struct cache *cache;
	int64_t id;
	char *answer;

	setup();
	config = make_conf();
	CU_ASSERT_PTR_NOT_NULL_FATAL(config);
	answer = run(config, "STATS\talice\n");
	CU_ASSERT_STRING_EQUAL(answer, "NO\tNOUSER\tno such account (no store for it)\n");
	free(answer);
	cache = open_store(config);
	CU_ASSERT_PTR_NOT_NULL_FATAL(cache);
	fill_mailbox(cache, "INBOX", &id);
	CU_ASSERT_EQUAL(cache_fts_index_batch(cache, CACHE_FTS_BATCH_BYTES), 0); /* INBOX's body indexed, none left */
	fill_mailbox(cache, "Other box", &id);
	cache_stats_reset();
	cache_stats_count(CACHE_ITEM_ENVELOPE, true, 100);
	cache_stats_count(CACHE_ITEM_ENVELOPE, false, 0);
	answer = run(config, "STATS\talice\n");
	CU_ASSERT_PTR_NOT_NULL(strstr(answer, "MAILBOX\talice\tINBOX\t3\t1\t5\t1\nMAILBOX\talice\tOther box\t3\t1\t5\t0\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(answer, "ITEM\tenvelope\t1\t1\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(answer, "SAVED\t100\nOK\n"));
	free(answer);
	answer = run(config, "STATS\talice\tOther box\n");
	CU_ASSERT_PTR_NULL(strstr(answer, "INBOX"));
	CU_ASSERT_PTR_NOT_NULL(strstr(answer, "MAILBOX\talice\tOther box\t3\t1\t5\t0\n"));
	free(answer);
	answer = run(config, "STATS\talice\tNope\n");
	CU_ASSERT_STRING_EQUAL(answer, "NO\tNOTFOUND\tno such mailbox in the account's store\n");
	free(answer);
	/* per mailbox: "Other box" is id, the last filled */
	cache_stats_count_items(cache, id, CACHE_HAS(CACHE_ITEM_ENVELOPE) | CACHE_HAS(CACHE_ITEM_SIZE), false, 0);
	cache_stats_count_items(cache, id, CACHE_HAS(CACHE_ITEM_ENVELOPE), true, 40);
	cache_stats_count_items(cache, id - 1, CACHE_HAS(CACHE_ITEM_MESSAGE), true, 7);
	cache_stats_count_items(NULL, 0, CACHE_HAS(CACHE_ITEM_MESSAGE), true, 1);
	answer = run(config, "STATS\talice\tOther box\n");
	CU_ASSERT_PTR_NOT_NULL(strstr(answer, "MAILBOX\talice\tOther box\t3\t1\t5\t0\n"
					      "MAILBOXITEM\talice\tOther box\tenvelope\t1\t1\n"
					      "MAILBOXITEM\talice\tOther box\tsize\t0\t1\n"
					      "MAILBOXSAVED\talice\tOther box\t40\n"));
	CU_ASSERT_PTR_NULL(strstr(answer, "MAILBOXITEM\talice\tINBOX"));
	CU_ASSERT_PTR_NOT_NULL(strstr(answer, "ITEM\tenvelope\t2\t2\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(answer, "ITEM\tmessage\t2\t0\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(answer, "SAVED\t148\nOK\n"));
	free(answer);
	answer = run(config, "STATS\n");
	CU_ASSERT_PTR_NOT_NULL(strstr(answer, "MAILBOX\talice\tINBOX\t3\t1\t5\t1\nMAILBOX\talice\tOther box\t3\t1\t5\t0\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(answer, "MAILBOXITEM\talice\tINBOX\tmessage\t1\t0\nMAILBOXSAVED\talice\tINBOX\t7\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(answer, "MAILBOXSAVED\talice\tOther box\t40\n"));
	free(answer);
	cache_unref(&cache);
	conf_unref(&config);
	teardown();
}

/* DIGEST: a digest of each stored value, the damaged ones named, and
   answers cut at CONTROL_DIGEST_MESSAGES messages. */
static void test_digest(void)
{
	struct conf *config;
	struct cache *cache;
	int64_t id;
	char *answer;

	setup();
	config = make_conf();
	cache = open_store(config);
	CU_ASSERT_PTR_NOT_NULL_FATAL(cache);
	answer = run(config, "DIGEST\talice\tINBOX\n");
	CU_ASSERT_STRING_EQUAL(answer, "NO\tNOTFOUND\tno such mailbox in the account's store\n");
	free(answer);
	fill_mailbox(cache, "INBOX", &id);
	CU_ASSERT_EQUAL(cache_store_item(cache, id, 1, CACHE_ITEM_ENVELOPE, "(env)", 5), 0);
	CU_ASSERT_EQUAL(cache_store_item(cache, id, 3, CACHE_ITEM_ENVELOPE, "(env)", 5), 0);
	CU_ASSERT_EQUAL(cache_store_size(cache, id, 1, 1234), 0);
	CU_ASSERT_EQUAL(sqlite3_exec(cache_sqlite_handle(cache),
				     "UPDATE messages SET envelope_sum = envelope_sum + 1 WHERE uid = 3", NULL, NULL, NULL),
			SQLITE_OK);
	answer = run(config, "DIGEST\talice\tINBOX\n");
	CU_ASSERT_STRING_EQUAL(answer,
		"MAILBOX\t7\t0\n"
		"VALUE\t1\tenvelope\t0846e1120aee36f6fa90811e6b0b2d06eb09172637f4b8f225061629f6f5b12a\n"
		"VALUE\t1\tflags\tabc3b37802d9d7d1fe7cd52483bdf3d860ca2cee3d2f39f929d73503663f2263\n"
		"VALUE\t1\tsize\t1234\n"
		"VALUE\t2\tflags\tabc3b37802d9d7d1fe7cd52483bdf3d860ca2cee3d2f39f929d73503663f2263\n"
		"VALUE\t2\tmessage\t2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824\n"
		"DAMAGED\t3\tenvelope\n"
		"VALUE\t3\tflags\tabc3b37802d9d7d1fe7cd52483bdf3d860ca2cee3d2f39f929d73503663f2263\n"
		"OK\n");
	free(answer);
	answer = run(config, "DIGEST\talice\tINBOX\t3\n");
	CU_ASSERT_STRING_EQUAL(answer, "MAILBOX\t7\t0\n"
		"VALUE\t3\tflags\tabc3b37802d9d7d1fe7cd52483bdf3d860ca2cee3d2f39f929d73503663f2263\nOK\n");
	free(answer);
	for (uint32_t uid = 4; uid <= CONTROL_DIGEST_MESSAGES + 10; uid++)
		CU_ASSERT_EQUAL(cache_store_flags(cache, id, uid, "", 0), 0);
	answer = run(config, "DIGEST\talice\tINBOX\n");
	CU_ASSERT_PTR_NOT_NULL(strstr(answer, "\nNEXT\t101\nOK\n"));
	free(answer);
	answer = run(config, "DIGEST\tbob\tINBOX\n");
	CU_ASSERT_STRING_EQUAL(answer, "NO\tNOUSER\tno such account (no store for it)\n");
	free(answer);
	cache_unref(&cache);
	conf_unref(&config);
	teardown();
}

/* A purge through the handle a session holds: the session's old mailbox
   id finds nothing and can write nothing any more. */
static void test_purge_while_open(void)
{
	struct conf *config;
	struct cache *cache;
	struct cache_message message;
	struct cache_body_writer *writer;
	int64_t inbox, other;
	char *answer;

	setup();
	config = make_conf();
	cache = open_store(config);
	CU_ASSERT_PTR_NOT_NULL_FATAL(cache);
	fill_mailbox(cache, "INBOX", &inbox);
	fill_mailbox(cache, "Other", &other);
	writer = cache_body_begin(cache, inbox, 3, 10, NULL); /* a fill under way */
	CU_ASSERT_PTR_NOT_NULL_FATAL(writer);
	CU_ASSERT_EQUAL(cache_body_write(writer, "12345", 5), 0);
	answer = run(config, "PURGE\talice\tINBOX\n");
	CU_ASSERT_STRING_EQUAL(answer, "PURGED\talice\tINBOX\nOK\n");
	free(answer);
	CU_ASSERT_EQUAL(cache_lookup(cache, inbox, 1, &message), 0);
	cache_body_write(writer, "67890", 5); /* may be buffered: the finish must fail */
	CU_ASSERT_EQUAL(cache_body_finish(&writer), -1);
	CU_ASSERT_EQUAL(cache_lookup(cache, inbox, 3, &message), 0);
	CU_ASSERT_EQUAL(cache_store_flags(cache, inbox, 4, "", 0), -1);
	CU_ASSERT_EQUAL(cache_lookup(cache, other, 1, &message), 1);
	cache_message_clear(&message);
	CU_ASSERT_EQUAL(cache_body_bytes(cache), 5);
	answer = run(config, "PURGE\talice\tINBOX\n");
	CU_ASSERT_STRING_EQUAL(answer, "NO\tNOTFOUND\tno such mailbox in the account's store\n");
	free(answer);
	answer = run(config, "PURGE\talice\n");
	CU_ASSERT_STRING_EQUAL(answer, "PURGED\talice\tOther\nOK\n");
	free(answer);
	CU_ASSERT_EQUAL(cache_lookup(cache, other, 1, &message), 0);
	CU_ASSERT_EQUAL(cache_body_bytes(cache), 0);
	answer = run(config, "PURGE\tbob\n");
	CU_ASSERT_PTR_NOT_NULL(strstr(answer, "NO\tNOUSER"));
	free(answer);
	cache_unref(&cache);
	conf_unref(&config);
	teardown();
}

/* Sends request on the socket at path, running base until the answer ends. */
static char *ask(struct event_base *base, const char *path, const char *request)
{
	struct sockaddr_un address = { .sun_family = AF_UNIX };
	static char answer[4096];
	size_t got = 0;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);

	strcpy(address.sun_path, path);
	CU_ASSERT_EQUAL_FATAL(connect(fd, (struct sockaddr *)&address, sizeof(address)), 0);
	CU_ASSERT_EQUAL(write(fd, request, strlen(request)), (ssize_t)strlen(request));
	for (int turn = 0; turn < 1000; turn++) {
		ssize_t n;

		event_base_loop(base, EVLOOP_NONBLOCK);
		n = read(fd, answer + got, sizeof(answer) - 1 - got);
		if (n == 0)
			break;
		if (n > 0)
			got += (size_t)n;
		else
			usleep(1000);
	}
	close(fd);
	answer[got] = '\0';
	return answer;
}

static void test_socket(void)
{
	struct event_base *base = event_base_new();
	struct conf *config;
	struct control *control;
	struct stat st;
	const char *error;
	FILE *file;

	setup();
	config = make_conf();
	control = control_new(config->control_socket, &error);
	CU_ASSERT_PTR_NOT_NULL_FATAL(control);
	CU_ASSERT_EQUAL(stat(config->control_socket, &st), 0);
	CU_ASSERT_EQUAL(st.st_mode & 0777, 0600);
	CU_ASSERT_EQUAL(control_start(control, base, config), 0);
	CU_ASSERT_PTR_NULL(control_new(config->control_socket, &error)); /* a live daemon's socket is left alone */
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "another imapcached listens on it"));
	CU_ASSERT_STRING_EQUAL(ask(base, config->control_socket, "STATS\n") + 0, ask(base, config->control_socket, "STATS\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(ask(base, config->control_socket, "STATS\n"), "\nOK\n"));
	CU_ASSERT_STRING_EQUAL(ask(base, config->control_socket, "BOGUS\n"), "NO\tUSAGE\tunknown request\n");
	control_free(&control);
	CU_ASSERT_PTR_NULL(control);
	CU_ASSERT_EQUAL(stat(config->control_socket, &st), -1); /* removed at exit */
	/* a stale socket (its daemon died: nobody listens) is replaced */
	{
		struct sockaddr_un address = { .sun_family = AF_UNIX };
		int fd = socket(AF_UNIX, SOCK_STREAM, 0);

		strcpy(address.sun_path, config->control_socket);
		CU_ASSERT_EQUAL_FATAL(bind(fd, (struct sockaddr *)&address, sizeof(address)), 0);
		close(fd);
	}
	CU_ASSERT_EQUAL(stat(config->control_socket, &st), 0);
	control = control_new(config->control_socket, &error);
	CU_ASSERT_PTR_NOT_NULL(control);
	control_free(&control);
	/* a regular file is left alone */
	file = fopen(config->control_socket, "w");
	CU_ASSERT_PTR_NOT_NULL_FATAL(file);
	fclose(file);
	CU_ASSERT_PTR_NULL(control_new(config->control_socket, &error));
	CU_ASSERT_STRING_EQUAL(error, "a file that is not a socket is in the way");
	CU_ASSERT_EQUAL(stat(config->control_socket, &st), 0);
	conf_unref(&config);
	event_base_free(base);
	teardown();
}

const char unit_suite_name[] = "control";
const struct unit_test unit_tests[] = {
	{ "requests parse whole and in pieces", test_parse_requests },
	{ "bad requests are refused", test_parse_bad_requests },
	{ "STATS counts mailboxes, bodies and hits", test_stats },
	{ "DIGEST gives a digest of each stored value", test_digest },
	{ "PURGE while the store is in use and a body is being written", test_purge_while_open },
	{ "the socket: mode, answers, stale sockets", test_socket },
	{ NULL, NULL },
};
