/* SPDX-License-Identifier: MIT */
/* listener: one bound, listening socket that hands each accepted client to a callback. */
#include "config.h"
#include "listener.h"
#include "log.h"
#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/listener.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LISTENER_BACKLOG 128 /* the kernel's somaxconn default caps it anyway */
#define LISTENER_PAUSE_SECONDS 1 /* out of descriptors: let sessions end before retrying */

struct listener {
	evutil_socket_t fd;
	struct evconnlistener *evlistener;
	struct event *resume_event;
	char name[LISTENER_NAME_MAX];
	unsigned int port;
	enum conf_tls tls;
	bool loopback;
	SSL_CTX *tls_context;
	listener_accept_fn *accept_callback;
	void *context;
};

static char listener_error[512];

static const char *listener_fail(const char *format, ...) __attribute__((format(printf, 1, 2)));
static const char *listener_fail(const char *format, ...)
{
	va_list args;

	va_start(args, format);
	vsnprintf(listener_error, sizeof(listener_error), format, args);
	va_end(args);
	return listener_error;
}

void listener_format_address(const struct sockaddr *address, char *buf, size_t size)
{
	char host[INET6_ADDRSTRLEN] = "?";

	if (address->sa_family == AF_INET6) {
		const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)address;

		inet_ntop(AF_INET6, &v6->sin6_addr, host, sizeof(host));
		snprintf(buf, size, "[%s]:%u", host, ntohs(v6->sin6_port));
	} else if (address->sa_family == AF_INET) {
		const struct sockaddr_in *v4 = (const struct sockaddr_in *)address;

		inet_ntop(AF_INET, &v4->sin_addr, host, sizeof(host));
		snprintf(buf, size, "%s:%u", host, ntohs(v4->sin_port));
	} else {
		snprintf(buf, size, "(address family %d)", address->sa_family);
	}
}

/* Fills address from a numeric IPv4 or IPv6 text and a port. */
static int listener_make_address(const char *text, unsigned int port,
				 struct sockaddr_storage *address, socklen_t *len_r)
{
	struct sockaddr_in *v4 = (struct sockaddr_in *)address;
	struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)address;

	memset(address, 0, sizeof(*address));
	if (inet_pton(AF_INET, text, &v4->sin_addr) == 1) {
		v4->sin_family = AF_INET;
		v4->sin_port = htons((uint16_t)port);
		*len_r = sizeof(*v4);
		return 0;
	}
	if (inet_pton(AF_INET6, text, &v6->sin6_addr) == 1) {
		v6->sin6_family = AF_INET6;
		v6->sin6_port = htons((uint16_t)port);
		*len_r = sizeof(*v6);
		return 0;
	}
	return -1;
}

struct listener *listener_new(const struct conf_listener *settings, const char **error_r)
{
	struct sockaddr_storage address;
	socklen_t address_len;
	struct listener *listener;
	int one = 1;

	if (listener_make_address(settings->address, settings->port, &address, &address_len) < 0) {
		*error_r = listener_fail("%s is not a numeric IP address", settings->address);
		return NULL;
	}
	listener = calloc(1, sizeof(*listener));
	if (listener == NULL) {
		*error_r = listener_fail("out of memory");
		return NULL;
	}
	listener->tls = settings->tls;
	listener->loopback = settings->loopback;
	listener_format_address((struct sockaddr *)&address, listener->name, sizeof(listener->name));
	listener->fd = socket(address.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (listener->fd < 0) {
		*error_r = listener_fail("cannot make a socket for %s: %s", listener->name, strerror(errno));
		goto fail;
	}
	if (setsockopt(listener->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    (address.ss_family == AF_INET6 &&
	     setsockopt(listener->fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0)) {
		*error_r = listener_fail("cannot set socket options for %s: %s", listener->name, strerror(errno));
		goto fail;
	}
	if (bind(listener->fd, (struct sockaddr *)&address, address_len) < 0) {
		*error_r = listener_fail("cannot bind %s: %s", listener->name, strerror(errno));
		goto fail;
	}
	if (listen(listener->fd, LISTENER_BACKLOG) < 0) {
		*error_r = listener_fail("cannot listen on %s: %s", listener->name, strerror(errno));
		goto fail;
	}
	address_len = sizeof(address);
	if (getsockname(listener->fd, (struct sockaddr *)&address, &address_len) < 0) {
		*error_r = listener_fail("cannot read the bound address of %s: %s", listener->name,
					 strerror(errno));
		goto fail;
	}
	listener_format_address((struct sockaddr *)&address, listener->name, sizeof(listener->name));
	listener->port = address.ss_family == AF_INET6 ?
		ntohs(((struct sockaddr_in6 *)&address)->sin6_port) :
		ntohs(((struct sockaddr_in *)&address)->sin_port);
	return listener;

fail:
	if (listener->fd >= 0)
		close(listener->fd);
	free(listener);
	return NULL;
}

/* Accepts one connection and hands it on. */
static void listener_accept(struct evconnlistener *evlistener, evutil_socket_t fd,
			    struct sockaddr *peer, int peer_len, void *context)
{
	struct listener *listener = context;
	struct listener_connection conn;
	int one = 1;

	(void)evlistener;
	/* Replies go out at once: with Nagle's algorithm and the client's
	   delayed ACK, each small reply would wait ~40 ms. */
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	memset(&conn, 0, sizeof(conn));
	conn.fd = fd;
	if (peer_len > 0 && (size_t)peer_len <= sizeof(conn.peer)) {
		memcpy(&conn.peer, peer, (size_t)peer_len);
		conn.peer_len = (socklen_t)peer_len;
	}
	listener_format_address((struct sockaddr *)&conn.peer, conn.peer_name, sizeof(conn.peer_name));
	conn.listener_name = listener->name;
	conn.tls = listener->tls;
	conn.loopback = listener->loopback;
	conn.tls_context = listener->tls_context;
	listener->accept_callback(&conn, listener->context);
}

/* Resumes accepting after a pause. */
static void listener_resume(evutil_socket_t fd, short what, void *context)
{
	struct listener *listener = context;

	(void)fd;
	(void)what;
	evconnlistener_enable(listener->evlistener);
}

/* accept() failed: out of descriptors or memory. Pausing keeps the event
   loop from spinning on a socket that stays readable. */
static void listener_accept_error(struct evconnlistener *evlistener, void *context)
{
	struct listener *listener = context;
	const struct timeval pause = { LISTENER_PAUSE_SECONDS, 0 };
	int error = EVUTIL_SOCKET_ERROR();

	log_warning("listener %s: accept failed: %s; pausing for %d s", listener->name,
		    evutil_socket_error_to_string(error), LISTENER_PAUSE_SECONDS);
	evconnlistener_disable(evlistener);
	event_add(listener->resume_event, &pause);
}

int listener_start(struct listener *listener, struct event_base *base,
		   listener_accept_fn *accept_callback, void *context, const char **error_r)
{
	listener->accept_callback = accept_callback;
	listener->context = context;
	listener->resume_event = evtimer_new(base, listener_resume, listener);
	/* Backlog 0: listen() was called already, in listener_new. */
	listener->evlistener = evconnlistener_new(base, listener_accept, listener,
						  LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0,
						  listener->fd);
	if (listener->resume_event == NULL || listener->evlistener == NULL) {
		*error_r = listener_fail("cannot watch %s for connections (out of memory?)", listener->name);
		return -1;
	}
	evconnlistener_set_error_cb(listener->evlistener, listener_accept_error);
	return 0;
}

void listener_set_tls_context(struct listener *listener, SSL_CTX *tls_context)
{
	tls_context_free(&listener->tls_context);
	listener->tls_context = tls_context;
}

unsigned int listener_get_port(const struct listener *listener)
{
	return listener->port;
}

const char *listener_get_name(const struct listener *listener)
{
	return listener->name;
}

void listener_free(struct listener **listener_p)
{
	struct listener *listener = *listener_p;

	if (listener == NULL)
		return;
	if (listener->evlistener != NULL)
		evconnlistener_free(listener->evlistener); /* closes fd */
	else if (listener->fd >= 0)
		close(listener->fd);
	if (listener->resume_event != NULL)
		event_free(listener->resume_event);
	tls_context_free(&listener->tls_context);
	free(listener);
	*listener_p = NULL;
}
