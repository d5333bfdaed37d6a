/* SPDX-License-Identifier: MIT */
/* Unit tests for daemon/listener: binding, port 0, IPv6, errors, and the accepted connection. */
#include "config.h"
#include "unit.h"
#include "listener.h"

#include <arpa/inet.h>
#include <event2/event.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static struct listener_connection accepted;
static int accepted_count;

static void record_accept(const struct listener_connection *conn, void *context)
{
	struct event_base *base = context;

	accepted = *conn;
	accepted_count++;
	close(conn->fd);
	event_base_loopbreak(base);
}

static struct conf_listener settings_for(const char *address, unsigned int port, enum conf_tls tls)
{
	struct conf_listener settings = { .address = (char *)address, .port = port, .tls = tls };

	settings.loopback = strcmp(address, "127.0.0.1") == 0 || strcmp(address, "::1") == 0;
	return settings;
}

/* Connects to the listener's port on address; returns the client's fd. */
static int connect_to(int family, const char *address, unsigned int port)
{
	struct sockaddr_storage peer;
	socklen_t len;
	int fd = socket(family, SOCK_STREAM, 0);

	memset(&peer, 0, sizeof(peer));
	if (family == AF_INET) {
		struct sockaddr_in *v4 = (struct sockaddr_in *)&peer;

		v4->sin_family = AF_INET;
		v4->sin_port = htons((uint16_t)port);
		inet_pton(AF_INET, address, &v4->sin_addr);
		len = sizeof(*v4);
	} else {
		struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&peer;

		v6->sin6_family = AF_INET6;
		v6->sin6_port = htons((uint16_t)port);
		inet_pton(AF_INET6, address, &v6->sin6_addr);
		len = sizeof(*v6);
	}
	if (fd >= 0 && connect(fd, (struct sockaddr *)&peer, len) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static void accept_one(int family, const char *address, enum conf_tls tls)
{
	const struct timeval limit = { 5, 0 };
	struct conf_listener settings = settings_for(address, 0, tls);
	struct event_base *base = event_base_new();
	const char *error = NULL;
	struct listener *listener = listener_new(&settings, &error);
	char expected[64];
	int client;

	CU_ASSERT_PTR_NOT_NULL_FATAL(listener);
	CU_ASSERT(listener_get_port(listener) > 0);
	snprintf(expected, sizeof(expected), family == AF_INET6 ? "[%s]:%u" : "%s:%u", address,
		 listener_get_port(listener));
	CU_ASSERT_STRING_EQUAL(listener_get_name(listener), expected);
	CU_ASSERT_EQUAL(listener_start(listener, base, record_accept, base, &error), 0);
	accepted_count = 0;
	client = connect_to(family, address, listener_get_port(listener));
	CU_ASSERT_FATAL(client >= 0);
	event_base_loopexit(base, &limit); /* bounded: a missed accept fails, never hangs */
	event_base_dispatch(base);
	CU_ASSERT_EQUAL(accepted_count, 1);
	CU_ASSERT_EQUAL(accepted.tls, tls);
	CU_ASSERT_TRUE(accepted.loopback);
	CU_ASSERT_PTR_NULL(accepted.tls_context);
	CU_ASSERT_EQUAL(accepted.peer.ss_family, family);
	CU_ASSERT_EQUAL(strncmp(accepted.peer_name, family == AF_INET6 ? "[::1]:" : "127.0.0.1:",
				family == AF_INET6 ? 6 : 10), 0);
	close(client);
	listener_free(&listener);
	CU_ASSERT_PTR_NULL(listener);
	event_base_free(base);
}

static void test_accept_ipv4(void)
{
	accept_one(AF_INET, "127.0.0.1", CONF_TLS_NONE);
}

static void test_accept_ipv6(void)
{
	accept_one(AF_INET6, "::1", CONF_TLS_STARTTLS);
}

static void test_busy_port(void)
{
	struct conf_listener settings = settings_for("127.0.0.1", 0, CONF_TLS_NONE);
	const char *error = NULL;
	struct listener *first = listener_new(&settings, &error);
	struct listener *second;
	char expected[128];

	CU_ASSERT_PTR_NOT_NULL_FATAL(first);
	settings.port = listener_get_port(first);
	second = listener_new(&settings, &error);
	CU_ASSERT_PTR_NULL(second);
	snprintf(expected, sizeof(expected), "cannot bind 127.0.0.1:%u: Address already in use", settings.port);
	CU_ASSERT_STRING_EQUAL(error, expected);
	listener_free(&first);
	listener_free(&second); /* NULL is fine */
}

static void test_bad_address(void)
{
	struct conf_listener settings = settings_for("localhost", 0, CONF_TLS_NONE);
	const char *error = NULL;

	CU_ASSERT_PTR_NULL(listener_new(&settings, &error));
	CU_ASSERT_STRING_EQUAL(error, "localhost is not a numeric IP address");
}

static void test_closed_after_free(void)
{
	struct conf_listener settings = settings_for("127.0.0.1", 0, CONF_TLS_NONE);
	const char *error = NULL;
	struct listener *listener = listener_new(&settings, &error);
	unsigned int port;
	int client;

	CU_ASSERT_PTR_NOT_NULL_FATAL(listener);
	port = listener_get_port(listener);
	listener_free(&listener);
	client = connect_to(AF_INET, "127.0.0.1", port);
	CU_ASSERT(client < 0); /* nothing listens there any more */
	if (client >= 0)
		close(client);
}

const char unit_suite_name[] = "listener";
const struct unit_test unit_tests[] = {
	{ "accepts on IPv4 with port 0", test_accept_ipv4 },
	{ "accepts on IPv6", test_accept_ipv6 },
	{ "a busy port is a clear error", test_busy_port },
	{ "a host name is refused", test_bad_address },
	{ "the socket is closed by listener_free", test_closed_after_free },
	{ NULL, NULL },
};
