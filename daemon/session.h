/* SPDX-License-Identifier: MIT */
/* session: one client connection, speaking the server side of IMAP (not-authenticated state for now). */
#ifndef IMAPCACHED_SESSION_H
#define IMAPCACHED_SESSION_H

#include "conf.h"
#include "listener.h"

#include <event2/event.h>

/* Until the upstream session layer lands, a session answers CAPABILITY,
   NOOP, LOGOUT and STARTTLS, and refuses LOGIN and AUTHENTICATE with
   NO [UNAVAILABLE]; everything else gets BAD. */

#define SESSION_CLOSE_TIMEOUT 5 /* seconds to flush a last reply to a client that does not read */
#define SESSION_MAX_BAD_COMMANDS 10 /* a client this confused is not an IMAP client */
#define SESSION_COMMANDS_PER_EVENT 64 /* one client's pipeline can't starve the rest */
#define SESSION_OUTPUT_HIGH_WATER (256 * 1024) /* stop reading commands past this much unsent reply */

struct session;

/* Called after every session start and end, with the number of sessions. */
typedef void session_count_fn(unsigned int count, void *context);

/* Sets the one callback told about the session count (for sd_notify STATUS
   and shutdown). */
void session_set_count_callback(session_count_fn *callback, void *context);

/* Starts a session on an accepted connection: takes conn->fd (closed on
   failure too), keeps a reference to conf for its whole life, sends the
   greeting (after the TLS handshake on an implicit-TLS listener) and logs
   a start line. Returns NULL (with *error_r) only when out of memory. */
struct session *session_new(struct event_base *base, const struct listener_connection *conn,
			    struct conf *conf, const char **error_r);

/* Refuses a connection that can't get a session (too many sessions):
   best-effort "* BYE reason" on a plaintext listener, then closes conn->fd. */
void session_refuse(const struct listener_connection *conn, const char *reason);

/* The number of live sessions. */
unsigned int session_count(void);

/* Sends "* BYE reason" to every session and closes each once its output
   is flushed (at most SESSION_CLOSE_TIMEOUT seconds later). */
void session_close_all(const char *reason);

/* Frees every session at once, without goodbye (the daemon is exiting). */
void session_free_all(void);

#endif
