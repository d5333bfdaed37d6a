/* SPDX-License-Identifier: MIT */
/* listener: one bound, listening socket that hands each accepted client to a callback. */
#ifndef IMAPCACHED_LISTENER_H
#define IMAPCACHED_LISTENER_H

#include "conf.h"

#include <event2/event.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <sys/socket.h>

#define LISTENER_NAME_MAX (INET6_ADDRSTRLEN + 16) /* "[address]:port" */

struct listener;

/* One accepted client, as handed to the accept callback. */
struct listener_connection {
	evutil_socket_t fd;            /* non-blocking, close-on-exec; the callback owns it */
	struct sockaddr_storage peer;
	socklen_t peer_len;
	char peer_name[LISTENER_NAME_MAX];      /* "127.0.0.1:40000", "[::1]:40000" */
	const char *listener_name;     /* "127.0.0.1:1143"; valid during the callback */
	enum conf_tls tls;             /* the listener's mode */
	bool loopback;                 /* the listener is on a loopback address */
	SSL_CTX *tls_context;          /* NULL for tls = none; SSL_new() takes its own reference */
};

/* Receives each accepted connection; must close conn->fd or hand it on. */
typedef void listener_accept_fn(const struct listener_connection *conn, void *context);

/* Makes a socket for settings, with SO_REUSEADDR (and IPV6_V6ONLY for an
   IPv6 address, so "::" and "0.0.0.0" can both be listed), binds it and
   listens. Nothing is accepted before listener_start. Returns the
   listener, or NULL with *error_r (static text, valid until the next
   call) naming the address and the reason. */
struct listener *listener_new(const struct conf_listener *settings, const char **error_r);

/* Starts accepting on base; each connection goes to accept_callback. A
   failing accept (out of descriptors) pauses the listener for a moment
   and is logged. Returns 0, or -1 with *error_r. */
int listener_start(struct listener *listener, struct event_base *base,
		   listener_accept_fn *accept_callback, void *context, const char **error_r);

/* Replaces the TLS context handed to new connections; the listener takes
   ownership of tls_context (NULL for none) and frees the old one. */
void listener_set_tls_context(struct listener *listener, SSL_CTX *tls_context);

/* The port actually bound (the kernel's pick when the config said 0). */
unsigned int listener_get_port(const struct listener *listener);

/* "address:port" ("[::1]:port" for IPv6), for logs. */
const char *listener_get_name(const struct listener *listener);

/* Closes the socket (no more connections), frees, and sets *listener to NULL. */
void listener_free(struct listener **listener);

/* Formats an address as "a.b.c.d:port" or "[v6]:port" into buf. */
void listener_format_address(const struct sockaddr *address, char *buf, size_t size);

#endif
