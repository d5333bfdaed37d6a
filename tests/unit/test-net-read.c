/* SPDX-License-Identifier: MIT */
/* Unit tests for common/net-read. */
#include "config.h"
#include "unit.h"
#include "net-read.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define SENT (96 * 1024) /* well past libevent 2.1's 4 KiB a read, within a socketpair's buffer */

struct pair {
	struct event_base *base;
	struct bufferevent *bev; /* the reading end */
	int writer;
	unsigned char sent[SENT];
	size_t first_read; /* input length at libevent's first read callback */
	short events;      /* what the event callback saw */
};

static void pair_read_cb(struct bufferevent *bev, void *context)
{
	struct pair *pair = context;

	if (pair->first_read == 0)
		pair->first_read = evbuffer_get_length(bufferevent_get_input(bev));
}

static void pair_event_cb(struct bufferevent *bev, short events, void *context)
{
	struct pair *pair = context;

	(void)bev;
	pair->events |= events;
}

/* A socketpair with SENT bytes written to the reading end's peer. */
static struct pair *pair_new(void)
{
	struct pair *pair = calloc(1, sizeof(*pair));
	int fds[2];
	size_t off = 0;

	CU_ASSERT_FATAL(pair != NULL);
	CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == 0);
	for (size_t i = 0; i < SENT; i++)
		pair->sent[i] = (unsigned char)(i * 7 + i / 251);
	while (off < SENT) {
		ssize_t n = write(fds[1], pair->sent + off, SENT - off);

		CU_ASSERT_FATAL(n > 0);
		off += (size_t)n;
	}
	evutil_make_socket_nonblocking(fds[0]);
	pair->writer = fds[1];
	pair->base = event_base_new();
	pair->bev = bufferevent_socket_new(pair->base, fds[0], BEV_OPT_CLOSE_ON_FREE);
	CU_ASSERT_FATAL(pair->base != NULL && pair->bev != NULL);
	bufferevent_setcb(pair->bev, pair_read_cb, NULL, pair_event_cb, pair);
	bufferevent_enable(pair->bev, EV_READ);
	return pair;
}

static void pair_free(struct pair *pair)
{
	bufferevent_free(pair->bev);
	event_base_free(pair->base);
	if (pair->writer >= 0)
		close(pair->writer);
	free(pair);
}

static struct evbuffer *pair_input(struct pair *pair)
{
	return bufferevent_get_input(pair->bev);
}

/* The reason for the module: libevent's own read takes 4 KiB of the 96 KiB waiting. */
static void test_libevent_alone_reads_little(void)
{
	struct pair *pair = pair_new();

	bufferevent_set_max_single_read(pair->bev, 1024 * 1024);
	event_base_loop(pair->base, EVLOOP_ONCE);
	CU_ASSERT(pair->first_read > 0);
	CU_ASSERT(pair->first_read <= 16 * 1024);
	pair_free(pair);
}

static void test_reads_all_waiting(void)
{
	struct pair *pair = pair_new();

	CU_ASSERT_EQUAL(net_read_waiting(pair->bev, 1024 * 1024), SENT);
	CU_ASSERT_EQUAL(evbuffer_get_length(pair_input(pair)), SENT);
	CU_ASSERT(memcmp(evbuffer_pullup(pair_input(pair), -1), pair->sent, SENT) == 0);
	CU_ASSERT_EQUAL(net_read_waiting(pair->bev, 1024 * 1024), 0); /* drained: nothing more, no block */
	pair_free(pair);
}

static void test_after_libevent_read_order_kept(void)
{
	struct pair *pair = pair_new();

	event_base_loop(pair->base, EVLOOP_ONCE);
	CU_ASSERT_EQUAL(net_read_waiting(pair->bev, 1024 * 1024), SENT - pair->first_read);
	CU_ASSERT(memcmp(evbuffer_pullup(pair_input(pair), -1), pair->sent, SENT) == 0);
	pair_free(pair);
}

static void test_max_is_kept(void)
{
	struct pair *pair = pair_new();

	CU_ASSERT_EQUAL(net_read_waiting(pair->bev, 10000), 10000);
	CU_ASSERT_EQUAL(net_read_waiting(pair->bev, 70000), 70000);
	CU_ASSERT_EQUAL(evbuffer_get_length(pair_input(pair)), 80000);
	CU_ASSERT(memcmp(evbuffer_pullup(pair_input(pair), -1), pair->sent, 80000) == 0);
	pair_free(pair);
}

static void test_high_watermark_is_kept(void)
{
	struct pair *pair = pair_new();

	bufferevent_setwatermark(pair->bev, EV_READ, 0, 5000);
	CU_ASSERT_EQUAL(net_read_waiting(pair->bev, 1024 * 1024), 5000);
	CU_ASSERT_EQUAL(net_read_waiting(pair->bev, 1024 * 1024), 0);
	evbuffer_drain(pair_input(pair), 1000);
	CU_ASSERT_EQUAL(net_read_waiting(pair->bev, 1024 * 1024), 1000);
	pair_free(pair);
}

static void test_disabled_reads_nothing(void)
{
	struct pair *pair = pair_new();

	bufferevent_disable(pair->bev, EV_READ);
	CU_ASSERT_EQUAL(net_read_waiting(pair->bev, 1024 * 1024), 0);
	CU_ASSERT_EQUAL(evbuffer_get_length(pair_input(pair)), 0);
	pair_free(pair);
}

/* The input's end is frozen again afterwards, as libevent keeps it. */
static void test_input_left_frozen(void)
{
	struct pair *pair = pair_new();

	CU_ASSERT_EQUAL(evbuffer_add(pair_input(pair), "x", 1), -1);
	(void)net_read_waiting(pair->bev, 100);
	CU_ASSERT_EQUAL(evbuffer_add(pair_input(pair), "x", 1), -1);
	pair_free(pair);
}

/* End of file is left for libevent, which reports it after the data. */
static void test_eof_left_to_libevent(void)
{
	struct pair *pair = pair_new();

	close(pair->writer);
	pair->writer = -1;
	CU_ASSERT_EQUAL(net_read_waiting(pair->bev, 1024 * 1024), SENT);
	CU_ASSERT_EQUAL(net_read_waiting(pair->bev, 1024 * 1024), 0);
	CU_ASSERT_EQUAL(pair->events, 0);
	event_base_loop(pair->base, EVLOOP_ONCE);
	CU_ASSERT(pair->events & BEV_EVENT_EOF);
	CU_ASSERT_EQUAL(evbuffer_get_length(pair_input(pair)), SENT);
	pair_free(pair);
}

const char unit_suite_name[] = "net-read";
const struct unit_test unit_tests[] = {
	{ "libevent alone reads little", test_libevent_alone_reads_little },
	{ "reads all waiting", test_reads_all_waiting },
	{ "after libevent's read, order kept", test_after_libevent_read_order_kept },
	{ "max is kept", test_max_is_kept },
	{ "high watermark is kept", test_high_watermark_is_kept },
	{ "disabled reads nothing", test_disabled_reads_nothing },
	{ "input left frozen", test_input_left_frozen },
	{ "eof left to libevent", test_eof_left_to_libevent },
	{ NULL, NULL },
};
