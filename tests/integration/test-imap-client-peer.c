/* SPDX-License-Identifier: MIT */
/* Tests the imap-client core against a scripted loopback peer: garbage, a close mid-literal, stalls, BYE, STARTTLS injection, literals and SASL without SASL-IR. */
#include "config.h"
#include "itest.h"
#include "imap-client-commands.h"
#include "imap-client-sync.h"
#include "tls.h"

#include <arpa/inet.h>
#include <event2/event.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define PEER_IO_TIMEOUT_SECS 5 /* every blocking read in the peer ends */
#define PEER_LINE_MAX 4096


/* ---- the scripted peer ---- */

struct peer {
	int listen_fd, fd;
	unsigned int port;
	SSL *ssl;
	void (*script)(struct peer *peer);
	pthread_t thread;
	char tag[64];        /* of the last command read */
	char seen[PEER_LINE_MAX]; /* what the script wants to report */
	bool ok;             /* the script's own checks passed */
};

static SSL_CTX *server_ctx;

static ssize_t peer_read(struct peer *peer, void *buf, size_t size)
{
	return peer->ssl != NULL ? SSL_read(peer->ssl, buf, (int)size) : recv(peer->fd, buf, size, 0);
}

static void peer_send(struct peer *peer, const char *text)
{
	size_t len = strlen(text);

	if (peer->ssl != NULL)
		SSL_write(peer->ssl, text, (int)len);
	else if (send(peer->fd, text, len, MSG_NOSIGNAL) < 0)
		peer->ok = false;
}

static void peer_sendf(struct peer *peer, const char *format, ...) __attribute__((format(printf, 2, 3)));
static void peer_sendf(struct peer *peer, const char *format, ...)
{
	char buf[PEER_LINE_MAX];
	va_list args;

	va_start(args, format);
	vsnprintf(buf, sizeof(buf), format, args);
	va_end(args);
	peer_send(peer, buf);
}

/* Reads one line (without CRLF) byte by byte, so nothing after it is
   consumed; sets peer->tag. Returns false on EOF or timeout. */
static bool peer_read_line(struct peer *peer, char *line, size_t size)
{
	size_t len = 0;

	while (len + 1 < size) {
		char c;

		if (peer_read(peer, &c, 1) != 1)
			return false;
		if (c == '\n') {
			if (len > 0 && line[len - 1] == '\r')
				len--;
			line[len] = '\0';
			sscanf(line, "%63s", peer->tag);
			return true;
		}
		line[len++] = c;
	}
	return false;
}

/* Reads exactly len bytes. */
static bool peer_read_bytes(struct peer *peer, char *buf, size_t len)
{
	for (size_t done = 0; done < len;) {
		ssize_t n = peer_read(peer, buf + done, len - done);

		if (n <= 0)
			return false;
		done += (size_t)n;
	}
	return true;
}

/* Whether the client sent anything within msecs. */
static bool peer_has_data(struct peer *peer, int msecs)
{
	struct pollfd pfd = { .fd = peer->fd, .events = POLLIN };

	if (peer->ssl != NULL && SSL_pending(peer->ssl) > 0)
		return true;
	return poll(&pfd, 1, msecs) == 1;
}

static void *peer_thread(void *context)
{
	struct peer *peer = context;
	struct timeval tv = { .tv_sec = PEER_IO_TIMEOUT_SECS };

	peer->fd = accept(peer->listen_fd, NULL, NULL);
	if (peer->fd < 0)
		return NULL;
	setsockopt(peer->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	peer->script(peer);
	if (peer->ssl != NULL) {
		SSL_shutdown(peer->ssl);
		SSL_free(peer->ssl);
	}
	close(peer->fd);
	return NULL;
}

static void peer_start(struct peer *peer, void (*script)(struct peer *peer))
{
	struct sockaddr_in addr = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(addr);

	memset(peer, 0, sizeof(*peer));
	peer->ok = true;
	peer->script = script;
	peer->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
	if (peer->listen_fd < 0 || bind(peer->listen_fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 ||
	    listen(peer->listen_fd, 1) < 0 ||
	    getsockname(peer->listen_fd, (struct sockaddr *)&addr, &len) < 0) {
		perror("test-imap-client-peer: loopback listener");
		exit(99);
	}
	peer->port = ntohs(addr.sin_port);
	if (pthread_create(&peer->thread, NULL, peer_thread, peer) != 0)
		exit(99);
}

static void peer_stop(struct peer *peer)
{
	pthread_join(peer->thread, NULL);
	close(peer->listen_fd);
}

/* A client for the peer with short timeouts. */
static struct imap_client_sync *peer_client(struct peer *peer, enum imap_client_tls_mode mode)
{
	struct imap_client_settings settings = {
		.host = "127.0.0.1",
		.port = peer->port,
		.tls_mode = mode,
		.ca_file = getenv("IMAPTEST_CA"),
		.connect_timeout_msecs = 1000,
		.command_timeout_msecs = 500,
		.tag_prefix = "T",
	};
	const char *error;
	struct imap_client_sync *sync = imap_client_sync_new(&settings, &error);

	if (sync == NULL) {
		fprintf(stderr, "test-imap-client-peer: %s\n", error);
		exit(99);
	}
	return sync;
}

/* ---- scripts ---- */

static void script_garbage(struct peer *peer)
{
	char line[PEER_LINE_MAX];

	peer_send(peer, "* OK [CAPABILITY IMAP4rev1] fake\r\n");
	if (peer_read_line(peer, line, sizeof(line)))
		peer_send(peer, "* 1 FETCH (FLAGS (\\Seen))) \x01\x02garbage\r\n");
	peer_has_data(peer, 1000); /* until the client hangs up */
}

static void script_close_mid_literal(struct peer *peer)
{
	char line[PEER_LINE_MAX];

	peer_send(peer, "* OK [CAPABILITY IMAP4rev1] fake\r\n");
	if (peer_read_line(peer, line, sizeof(line)))
		peer_send(peer, "* 1 FETCH (BODY[] {100}\r\nonly a few bytes of the hundred");
}

static void script_stall_after_greeting(struct peer *peer)
{
	char line[PEER_LINE_MAX];

	peer_send(peer, "* OK [CAPABILITY IMAP4rev1] fake\r\n");
	peer_read_line(peer, line, sizeof(line));
	peer_has_data(peer, 3000); /* say nothing until the client gives up */
}

static void script_no_greeting(struct peer *peer)
{
	peer_has_data(peer, 3000);
}

static void script_bye(struct peer *peer)
{
	char line[PEER_LINE_MAX];

	peer_send(peer, "* OK [CAPABILITY IMAP4rev1] fake\r\n");
	if (peer_read_line(peer, line, sizeof(line)))
		peer_send(peer, "* BYE server shutting down\r\n");
	peer_has_data(peer, 1000);
}

static void script_bye_greeting(struct peer *peer)
{
	peer_send(peer, "* BYE too many connections\r\n");
}

static void script_unknown_tag(struct peer *peer)
{
	char line[PEER_LINE_MAX];

	peer_send(peer, "* OK [CAPABILITY IMAP4rev1] fake\r\n");
	if (peer_read_line(peer, line, sizeof(line)))
		peer_send(peer, "X999 OK never sent\r\n");
	peer_has_data(peer, 1000);
}

static void script_starttls_injection(struct peer *peer)
{
	char line[PEER_LINE_MAX];

	peer_send(peer, "* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] fake\r\n");
	if (!peer_read_line(peer, line, sizeof(line)) || strcmp(line + strlen(peer->tag), " STARTTLS") != 0) {
		snprintf(peer->seen, sizeof(peer->seen), "expected STARTTLS, got %.200s", line);
		peer->ok = false;
		return;
	}
	/* the injection: a response sent in plain text right after the OK */
	peer_sendf(peer, "%s OK begin TLS\r\n* BYE injected\r\n* CAPABILITY IMAP4rev1 INJECTED\r\n", peer->tag);
	peer->ssl = SSL_new(server_ctx);
	SSL_set_fd(peer->ssl, peer->fd);
	if (SSL_accept(peer->ssl) != 1) {
		snprintf(peer->seen, sizeof(peer->seen), "TLS handshake failed");
		peer->ok = false;
		return;
	}
	while (peer_read_line(peer, line, sizeof(line))) {
		const char *command = line + strlen(peer->tag) + 1;

		if (strcmp(command, "CAPABILITY") == 0)
			peer_sendf(peer, "* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n%s OK done\r\n", peer->tag);
		else if (strcmp(command, "LOGOUT") == 0) {
			peer_sendf(peer, "* BYE bye\r\n%s OK done\r\n", peer->tag);
			break;
		} else
			peer_sendf(peer, "%s OK done\r\n", peer->tag);
	}
}

/* No LITERAL+: the literal must wait for "+". */
static void script_sync_literal(struct peer *peer)
{
	char line[PEER_LINE_MAX], data[64];
	unsigned long size = 0;
	const char *brace;

	peer_send(peer, "* OK [CAPABILITY IMAP4rev1] fake\r\n");
	if (!peer_read_line(peer, line, sizeof(line)) || (brace = strrchr(line, '{')) == NULL ||
	    sscanf(brace, "{%lu}", &size) != 1 || size >= sizeof(data)) {
		snprintf(peer->seen, sizeof(peer->seen), "no synchronizing literal in: %.200s", line);
		peer->ok = false;
		return;
	}
	if (peer_has_data(peer, 200)) {
		snprintf(peer->seen, sizeof(peer->seen), "literal sent before the continuation");
		peer->ok = false;
		return;
	}
	peer_send(peer, "+ go ahead\r\n");
	if (!peer_read_bytes(peer, data, size) || !peer_read_line(peer, line, sizeof(line))) {
		peer->ok = false;
		return;
	}
	data[size] = '\0';
	/* the literal, then what is left of the command line (nothing) */
	snprintf(peer->seen, sizeof(peer->seen), "%s|%.200s", data, line);
	peer_sendf(peer, "%s OK [APPENDUID 7 42] appended\r\n", peer->tag);
	peer_has_data(peer, 1000);
}

/* LITERAL+: the literal follows at once as {n+}. */
static void script_nonsync_literal(struct peer *peer)
{
	char line[PEER_LINE_MAX], data[64];
	unsigned long size = 0;
	const char *brace;

	peer_send(peer, "* OK [CAPABILITY IMAP4rev1 LITERAL+] fake\r\n");
	if (!peer_read_line(peer, line, sizeof(line)) || (brace = strrchr(line, '{')) == NULL ||
	    sscanf(brace, "{%lu+}", &size) != 1 || strstr(brace, "+}") == NULL || size >= sizeof(data) ||
	    !peer_read_bytes(peer, data, size)) {
		snprintf(peer->seen, sizeof(peer->seen), "no non-synchronizing literal in: %.200s", line);
		peer->ok = false;
		return;
	}
	data[size] = '\0';
	snprintf(peer->seen, sizeof(peer->seen), "%s", data);
	peer_read_line(peer, line, sizeof(line));
	peer_sendf(peer, "%s OK done\r\n", peer->tag);
	peer_has_data(peer, 1000);
}

#define XOAUTH2_EXPECTED "user=alice\1auth=Bearer bad-token\1\1"

/* AUTH=PLAIN without SASL-IR: the initial response after "+ ". */
static void script_authenticate_plain(struct peer *peer)
{
	char line[PEER_LINE_MAX], expected[64], tag[64];
	unsigned char *decoded;
	size_t len = 0;

	peer_send(peer, "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN AUTH=XOAUTH2] fake\r\n");
	if (!peer_read_line(peer, line, sizeof(line)) ||
	    strcmp(line + strlen(peer->tag), " AUTHENTICATE PLAIN") != 0) {
		snprintf(peer->seen, sizeof(peer->seen), "expected AUTHENTICATE PLAIN, got %.200s", line);
		peer->ok = false;
		return;
	}
	snprintf(tag, sizeof(tag), "%s", peer->tag);
	peer_send(peer, "+ \r\n");
	if (!peer_read_line(peer, line, sizeof(line)) || (decoded = imap_sasl_base64_decode(line, &len)) == NULL) {
		peer->ok = false;
		return;
	}
	memcpy(expected, "\0alice\0s3cret", 13);
	if (len != 13 || memcmp(decoded, expected, 13) != 0) {
		snprintf(peer->seen, sizeof(peer->seen), "bad PLAIN response");
		peer->ok = false;
	}
	free(decoded);
	peer_sendf(peer, "%s OK [CAPABILITY IMAP4rev1 X-AFTER-LOGIN] welcome\r\n", tag);
	/* then XOAUTH2 refused: an error challenge answered with an empty line */
	if (!peer_read_line(peer, line, sizeof(line)) || strncmp(line + strlen(peer->tag), " AUTHENTICATE XOAUTH2", 21) != 0) {
		peer->ok = false;
		return;
	}
	snprintf(tag, sizeof(tag), "%s", peer->tag);
	peer_send(peer, "+ \r\n");
	if (!peer_read_line(peer, line, sizeof(line)) || (decoded = imap_sasl_base64_decode(line, &len)) == NULL) {
		peer->ok = false;
		return;
	}
	if (len != sizeof(XOAUTH2_EXPECTED) - 1 || memcmp(decoded, XOAUTH2_EXPECTED, len) != 0) {
		snprintf(peer->seen, sizeof(peer->seen), "bad XOAUTH2 initial response");
		peer->ok = false;
	}
	free(decoded);
	peer_send(peer, "+ eyJzdGF0dXMiOiI0MDEifQ==\r\n");
	if (!peer_read_line(peer, line, sizeof(line)) || line[0] != '\0') {
		snprintf(peer->seen, sizeof(peer->seen), "XOAUTH2 error challenge answered with: %.200s", line);
		peer->ok = false;
	}
	peer_sendf(peer, "%s NO [AUTHENTICATIONFAILED] invalid token\r\n", tag);
	peer_has_data(peer, 1000);
}

static void script_unexpected_continuation(struct peer *peer)
{
	char line[PEER_LINE_MAX];

	peer_send(peer, "* OK [CAPABILITY IMAP4rev1] fake\r\n");
	if (peer_read_line(peer, line, sizeof(line)))
		peer_send(peer, "+ nobody asked\r\n");
	peer_has_data(peer, 1000);
}

#define BIG_LITERAL_SIZE (4 * 1024 * 1024) /* far above the inline limit and socket buffers */

static void script_big_literal(struct peer *peer)
{
	char line[PEER_LINE_MAX];
	static char chunk[64 * 1024];

	peer_send(peer, "* OK [CAPABILITY IMAP4rev1] fake\r\n");
	if (!peer_read_line(peer, line, sizeof(line)))
		return;
	peer_sendf(peer, "* 1 FETCH (UID 9 BODY[] {%d}\r\n", BIG_LITERAL_SIZE);
	for (size_t sent = 0; sent < BIG_LITERAL_SIZE; sent += sizeof(chunk)) {
		for (size_t i = 0; i < sizeof(chunk); i++)
			chunk[i] = (char)('a' + (sent + i) % 26);
		if (send(peer->fd, chunk, sizeof(chunk), MSG_NOSIGNAL) != (ssize_t)sizeof(chunk)) {
			peer->ok = false;
			return;
		}
	}
	peer_sendf(peer, ")\r\n%s OK fetched\r\n", peer->tag);
	peer_has_data(peer, 1000);
}

/* ---- tests ---- */

/* Connects to a peer running script, sends NOOP, returns its result status. */
static enum imap_client_status run_noop(void (*script)(struct peer *peer), char *text, size_t size)
{
	struct peer peer;
	struct imap_client_sync *sync;
	const struct imap_client_result *result;
	enum imap_client_status status;

	peer_start(&peer, script);
	sync = peer_client(&peer, IMAP_CLIENT_TLS_NONE);
	status = imap_client_sync_connect(sync, &result);
	if (status == IMAP_CLIENT_STATUS_OK)
		status = imap_client_sync_wait(sync, imap_client_noop(imap_client_sync_get_client(sync), NULL, NULL),
					       &result);
	snprintf(text, size, "%s", result->text);
	imap_client_sync_free(&sync);
	peer_stop(&peer);
	return status;
}

static void test_aborts(void)
{
	char text[512];
	struct timeval start, end;
	long msecs;

	itest_check("garbage: abort", run_noop(script_garbage, text, sizeof(text)) == IMAP_CLIENT_STATUS_ABORT, "%s", text);
	itest_check("garbage: reason says malformed", strstr(text, "malformed") != NULL, "%s", text);
	itest_check("close mid-literal: abort",
	            run_noop(script_close_mid_literal, text, sizeof(text)) == IMAP_CLIENT_STATUS_ABORT, "%s", text);
	itest_check("close mid-literal: reason says closed", strstr(text, "closed") != NULL, "%s", text);
	gettimeofday(&start, NULL);
	itest_check("stall: abort", run_noop(script_stall_after_greeting, text, sizeof(text)) == IMAP_CLIENT_STATUS_ABORT,
	            "%s", text);
	gettimeofday(&end, NULL);
	msecs = (end.tv_sec - start.tv_sec) * 1000 + (end.tv_usec - start.tv_usec) / 1000;
	itest_check("stall: command timeout", strstr(text, "timed out") != NULL && msecs >= 450 && msecs < 2900,
	            "%s after %ld ms", text, msecs);
	itest_check("no greeting: abort", run_noop(script_no_greeting, text, sizeof(text)) == IMAP_CLIENT_STATUS_ABORT,
	            "%s", text);
	itest_check("no greeting: connect timeout", strstr(text, "timed out") != NULL && strstr(text, "connecting") != NULL,
	            "%s", text);
	itest_check("BYE: abort", run_noop(script_bye, text, sizeof(text)) == IMAP_CLIENT_STATUS_ABORT, "%s", text);
	itest_check("BYE: reason carries the text", strstr(text, "shutting down") != NULL, "%s", text);
	itest_check("BYE greeting: abort", run_noop(script_bye_greeting, text, sizeof(text)) == IMAP_CLIENT_STATUS_ABORT,
	            "%s", text);
	itest_check("BYE greeting: reason", strstr(text, "too many connections") != NULL, "%s", text);
	itest_check("unknown tag: abort", run_noop(script_unknown_tag, text, sizeof(text)) == IMAP_CLIENT_STATUS_ABORT,
	            "%s", text);
	itest_check("unexpected continuation: abort",
	            run_noop(script_unexpected_continuation, text, sizeof(text)) == IMAP_CLIENT_STATUS_ABORT, "%s", text);
}

static void test_refused_connection(void)
{
	struct imap_client_settings settings = { .host = "127.0.0.1", .connect_timeout_msecs = 1000 };
	const struct imap_client_result *result;
	struct imap_client_sync *sync;
	const char *error;
	int fd;

	/* a port that was just free: bind, note it, close */
	fd = socket(AF_INET, SOCK_STREAM, 0);
	{
		struct sockaddr_in addr = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
		socklen_t len = sizeof(addr);

		bind(fd, (struct sockaddr *)&addr, sizeof(addr));
		getsockname(fd, (struct sockaddr *)&addr, &len);
		settings.port = ntohs(addr.sin_port);
	}
	close(fd);
	sync = imap_client_sync_new(&settings, &error);
	itest_check("refused connection: abort", imap_client_sync_connect(sync, &result) == IMAP_CLIENT_STATUS_ABORT,
	            "%s", result->text);
	itest_check("refused connection: reason", strstr(result->text, "refused") != NULL, "%s", result->text);
	itest_check("commands after abort: abort",
	            imap_client_sync_wait(sync, imap_client_noop(imap_client_sync_get_client(sync), NULL, NULL), &result) ==
	            IMAP_CLIENT_STATUS_ABORT, "%s", result->text);
	imap_client_sync_free(&sync);
}

static void test_starttls_injection(void)
{
	struct peer peer;
	struct imap_client_sync *sync;
	struct imap_client *client;
	struct imap_client_untagged *stored;
	const struct imap_client_result *result;

	peer_start(&peer, script_starttls_injection);
	sync = peer_client(&peer, IMAP_CLIENT_TLS_STARTTLS);
	client = imap_client_sync_get_client(sync);
	itest_check("STARTTLS with injected plain-text data: connected",
	            imap_client_sync_connect(sync, &result) == IMAP_CLIENT_STATUS_OK, "%s", result->text);
	itest_check("injected data not parsed: capabilities are the TLS ones",
	            imap_client_has_capability(client, "AUTH=PLAIN") && !imap_client_has_capability(client, "INJECTED") &&
	            !imap_client_has_capability(client, "LOGINDISABLED"), "%s", imap_client_get_capabilities(client));
	stored = imap_client_pop_response(client, "BYE");
	itest_check("injected BYE not seen", stored == NULL, NULL);
	imap_client_untagged_unref(&stored);
	itest_check("session works over TLS after STARTTLS",
	            imap_client_sync_wait(sync, imap_client_noop(client, NULL, NULL), &result) == IMAP_CLIENT_STATUS_OK &&
	            imap_client_get_ssl(client) != NULL, "%s", result->text);
	imap_client_sync_wait(sync, imap_client_logout(client, NULL, NULL), &result);
	itest_check("LOGOUT: BYE expected, not an abort", result->status == IMAP_CLIENT_STATUS_OK, "%s", result->text);
	imap_client_sync_free(&sync);
	peer_stop(&peer);
	itest_check("peer saw STARTTLS and a TLS handshake", peer.ok, "%s", peer.seen);
}

static void test_literals(void)
{
	struct peer peer;
	struct imap_client_sync *sync;
	const struct imap_client_result *result;
	uint32_t uidvalidity, uid;

	peer_start(&peer, script_sync_literal);
	sync = peer_client(&peer, IMAP_CLIENT_TLS_NONE);
	imap_client_sync_connect(sync, &result);
	imap_client_sync_wait(sync, imap_client_append(imap_client_sync_get_client(sync), "INBOX", NULL, NULL,
						       "Subject: x\r\n\r\nbody", 19, NULL, NULL), &result);
	itest_check("synchronizing literal: APPEND OK", result->status == IMAP_CLIENT_STATUS_OK, "%s", result->text);
	itest_check("APPENDUID parsed", imap_client_result_get_appenduid(result, &uidvalidity, &uid) &&
	            uidvalidity == 7 && uid == 42, NULL);
	imap_client_sync_free(&sync);
	peer_stop(&peer);
	itest_check("synchronizing literal: sent only after +, whole", peer.ok &&
	            strcmp(peer.seen, "Subject: x\r\n\r\nbody|") == 0, "%s", peer.seen);

	peer_start(&peer, script_nonsync_literal);
	sync = peer_client(&peer, IMAP_CLIENT_TLS_NONE);
	imap_client_sync_connect(sync, &result);
	/* an astring that must be a literal (CR LF in it) goes the same way */
	imap_client_sync_wait(sync, imap_client_login(imap_client_sync_get_client(sync), "bob", "pass\r\nword",
						      NULL, NULL), &result);
	itest_check("LITERAL+: command OK", result->status == IMAP_CLIENT_STATUS_OK, "%s", result->text);
	imap_client_sync_free(&sync);
	peer_stop(&peer);
	itest_check("LITERAL+: {n+} sent with its bytes at once", peer.ok && strcmp(peer.seen, "pass\r\nword") == 0,
	            "%s", peer.seen);
}

static void test_authenticate(void)
{
	struct peer peer;
	struct imap_client_sync *sync;
	struct imap_client *client;
	struct imap_sasl_mechanism *mechanism;
	const struct imap_client_result *result;

	peer_start(&peer, script_authenticate_plain);
	sync = peer_client(&peer, IMAP_CLIENT_TLS_NONE);
	client = imap_client_sync_get_client(sync);
	imap_client_sync_connect(sync, &result);
	mechanism = imap_sasl_plain_new(NULL, "alice", "s3cret");
	itest_check("AUTHENTICATE PLAIN without SASL-IR: OK",
	            imap_client_sync_wait(sync, imap_client_authenticate(client, mechanism, NULL, NULL), &result) ==
	            IMAP_CLIENT_STATUS_OK, "%s", result->text);
	imap_sasl_mechanism_free(&mechanism);
	itest_check("capabilities from the tagged OK", imap_client_has_capability(client, "X-AFTER-LOGIN") &&
	            !imap_client_has_capability(client, "AUTH=PLAIN"), "%s", imap_client_get_capabilities(client));
	mechanism = imap_sasl_xoauth2_new("alice", "bad-token");
	itest_check("XOAUTH2 error challenge answered, NO",
	            imap_client_sync_wait(sync, imap_client_authenticate(client, mechanism, NULL, NULL), &result) ==
	            IMAP_CLIENT_STATUS_NO && result->code != NULL && strcmp(result->code, "AUTHENTICATIONFAILED") == 0,
	            "%s", result->text);
	imap_sasl_mechanism_free(&mechanism);
	imap_client_sync_free(&sync);
	peer_stop(&peer);
	itest_check("peer got PLAIN credentials after +, then an empty XOAUTH2 answer", peer.ok, "%s", peer.seen);
}

struct stream_test {
	struct event_base *base;
	struct imap_client *client;
	size_t bytes, pauses;
	bool in_order, content_ok, done;
	enum imap_client_status status;
};

static void stream_resume(evutil_socket_t fd, short events, void *context)
{
	struct stream_test *test = context;

	(void)fd;
	(void)events;
	imap_client_set_reading_paused(test->client, false);
}

/* A slow consumer: pauses after each chunk, resumes a moment later. */
static int stream_literal(struct imap_client *client, struct imap_parser *parser,
			  const struct imap_parser_literal_chunk *chunk, void *context)
{
	struct stream_test *test = context;
	struct timeval tv = { .tv_usec = 1000 };

	(void)parser;
	if (chunk->offset != test->bytes)
		test->in_order = false;
	for (size_t i = 0; i < chunk->len; i++) {
		if (chunk->data[i] != (unsigned char)('a' + (chunk->offset + i) % 26))
			test->content_ok = false;
	}
	test->bytes += chunk->len;
	if (!imap_client_is_reading_paused(client)) {
		imap_client_set_reading_paused(client, true);
		test->pauses++;
		event_base_once(test->base, -1, EV_TIMEOUT, stream_resume, test, &tv);
	}
	return 0;
}

static void stream_done(struct imap_client *client, struct imap_client_command *command,
			const struct imap_client_result *result, void *context)
{
	struct stream_test *test = context;

	(void)client;
	(void)command;
	test->status = result->status;
	test->done = true;
}

static void stream_connected(struct imap_client *client, struct imap_client_command *command,
			     const struct imap_client_result *result, void *context)
{
	struct stream_test *test = context;

	(void)command;
	if (result->status != IMAP_CLIENT_STATUS_OK) {
		test->status = result->status;
		test->done = true;
		return;
	}
	imap_client_fetch(client, false, "1", "(UID BODY[])", stream_done, test);
}

static void test_streamed_literal_with_back_pressure(void)
{
	struct stream_test test = { .in_order = true, .content_ok = true, .status = IMAP_CLIENT_STATUS_ABORT };
	struct imap_client_settings settings = {
		.host = "127.0.0.1", .connect_timeout_msecs = 2000, .command_timeout_msecs = 2000,
	};
	struct peer peer;
	const char *error;

	peer_start(&peer, script_big_literal);
	settings.port = peer.port;
	test.base = event_base_new();
	test.client = imap_client_new(test.base, &settings, &error);
	imap_client_set_literal_callback(test.client, stream_literal, &test);
	imap_client_connect(test.client, stream_connected, &test);
	/* bounded: the client's timeouts end the command either way */
	while (!test.done && event_base_loop(test.base, EVLOOP_ONCE) == 0)
		;
	imap_client_free(&test.client);
	event_base_free(test.base);
	peer_stop(&peer);
	itest_check("4 MB literal streamed through a paused/resumed client: OK", test.status == IMAP_CLIENT_STATUS_OK, NULL);
	itest_check("streamed: every byte, in order, intact", test.bytes == BIG_LITERAL_SIZE && test.in_order &&
	            test.content_ok, "%zu bytes", test.bytes);
	itest_check("streamed: reading was paused many times", test.pauses > 4, "%zu pauses", test.pauses);
}

int main(void)
{
	const char *dir = getenv("IMAPTEST_DIR");
	char cert[1024], key[1024];
	const char *error;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (dir == NULL || getenv("IMAPTEST_CA") == NULL) {
		fprintf(stderr, "test-imap-client-peer: run under tests/integration/with-dovecot\n");
		return 99;
	}
	snprintf(cert, sizeof(cert), "%s/server.pem", dir);
	snprintf(key, sizeof(key), "%s/server.key", dir);
	server_ctx = tls_server_context_new(cert, key, &error);
	if (server_ctx == NULL) {
		fprintf(stderr, "test-imap-client-peer: %s\n", error);
		return 99;
	}
	test_aborts();
	test_refused_connection();
	test_starttls_injection();
	test_literals();
	test_authenticate();
	test_streamed_literal_with_back_pressure();
	tls_context_free(&server_ctx);
	return itest_summary();
}
