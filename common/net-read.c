/* SPDX-License-Identifier: MIT */
/* net-read: takes what a plain socket holds into its bufferevent in one turn. */
#include "config.h"
#include "net-read.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <sys/uio.h>

#define NET_READ_CHUNK (64 * 1024) /* one readv; a few per turn drain a loopback socket's queue */

/* How much more input bev may take: max, capped by its read high-watermark. */
static size_t net_read_room(struct bufferevent *bev, struct evbuffer *input, size_t max)
{
	size_t have = evbuffer_get_length(input), high = 0;

	bufferevent_getwatermark(bev, EV_READ, NULL, &high);
	if (high > 0) {
		if (have >= high)
			return 0;
		if (max > high - have)
			max = high - have;
	}
	return max;
}

/* One readv of up to want bytes into input. Returns the bytes read, 0 at
   end of file, -1 on error or when nothing is waiting. */
static ssize_t net_read_once(evutil_socket_t fd, struct evbuffer *input, size_t want)
{
	struct evbuffer_iovec space[2];
	ssize_t got;
	int count = evbuffer_reserve_space(input, (ev_ssize_t)want, space, 2);

	if (count <= 0)
		return -1;
	if (space[0].iov_len > want)
		space[0].iov_len = want;
	if (count == 2 && space[0].iov_len + space[1].iov_len > want)
		space[1].iov_len = want - space[0].iov_len;
	got = readv(fd, (struct iovec *)space, count);
	if (got <= 0) {
		evbuffer_commit_space(input, space, 0);
		return got;
	}
	if ((size_t)got <= space[0].iov_len) {
		space[0].iov_len = (size_t)got;
		count = 1;
	} else {
		space[1].iov_len = (size_t)got - space[0].iov_len;
	}
	evbuffer_commit_space(input, space, count);
	return got;
}

size_t net_read_waiting(struct bufferevent *bev, size_t max)
{
	evutil_socket_t fd = bufferevent_getfd(bev);
	struct evbuffer *input = bufferevent_get_input(bev);
	size_t total = 0;

	if (fd < 0 || (bufferevent_get_enabled(bev) & EV_READ) == 0)
		return 0;
	/* a socket bufferevent keeps its input's end frozen outside its own reads */
	evbuffer_unfreeze(input, 0);
	for (;;) {
		size_t want = net_read_room(bev, input, max - total);
		ssize_t got;

		if (want == 0)
			break;
		if (want > NET_READ_CHUNK)
			want = NET_READ_CHUNK;
		got = net_read_once(fd, input, want);
		if (got <= 0)
			break;
		total += (size_t)got;
		if ((size_t)got < want)
			break; /* the socket is drained */
	}
	evbuffer_freeze(input, 0);
	return total;
}
