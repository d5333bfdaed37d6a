/* SPDX-License-Identifier: MIT */
/* net-read: takes what a plain socket holds into its bufferevent in one turn.
 *
 * libevent 2.1 reads at most 4 KiB from a socket per event (its
 * EVBUFFER_MAX_READ; 2.2 made it a setting), whatever the bufferevent's
 * max_single_read says, so a 400 KB answer costs a hundred turns of the
 * loop, each with an epoll_wait and a callback. The read callback of a
 * plain socket's bufferevent calls net_read_waiting first, and takes the
 * rest of what the socket holds at once. */
#ifndef IMAPCACHE_NET_READ_H
#define IMAPCACHE_NET_READ_H

#include <event2/bufferevent.h>
#include <stddef.h>

/* Appends to bev's input what its socket holds now, up to max bytes and
   never past its read high-watermark; nothing while reading is disabled.
   bev must be a plain socket bufferevent (bufferevent_socket_new): never
   one with TLS on its socket. End of file and errors are left in the
   socket for libevent to report as it does. Returns the bytes added. */
size_t net_read_waiting(struct bufferevent *bev, size_t max);

#endif
