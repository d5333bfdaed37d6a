/* SPDX-License-Identifier: MIT */
/* session: one client connection, speaking the server side of IMAP; after login it forwards to the upstream. */
#ifndef IMAPCACHED_SESSION_H
#define IMAPCACHED_SESSION_H

#include "conf.h"
#include "listener.h"

#include <event2/event.h>

/* Before login a session answers CAPABILITY, NOOP, LOGOUT, STARTTLS and
   ID (RFC 2971, its own name and version) itself and passes LOGIN and
   AUTHENTICATE (PLAIN, LOGIN, XOAUTH2, OAUTHBEARER) to the upstream
   chosen for the user (conf_upstream_for_user); a refusal is "NO" with
   the upstream's code and text, nothing else. Its capability list (the
   greeting's and CAPABILITY's) is what the upstream offers before login
   as far as the proxy can carry it (upstream-probe.h); a mechanism that
   no upstream offers (once known) gets NO at once. AUTHENTICATE LOGIN
   asks for the user name (unless given as the initial response) and the
   password with the usual prompts, then logs in upstream as LOGIN does.
   LOGIN's and ID's arguments may be literals ({N} gets "+", {N+} is read
   at once) of at most limits.literal_preauth bytes, two of them for
   LOGIN, sixty for ID (as many bytes in all as the largest LOGIN); a
   larger {N} gets a tagged BAD and no "+", a larger {N+} a BYE. Other
   commands take no literal before login.

   A literal the client is due to send ({N+}, or {N} once "+" went out)
   that gets no byte for timeouts.literal seconds (counted only while no
   output for the client waits unwritten, afresh each time it has all been
   written to the socket, the "+" included) ends the session with
   "* BYE" and a log line; after login the upstream connection, with the
   command it was carrying, is freed with it (never kept for reuse).

   Once logged in, every command goes upstream as a raw command of the
   client core, its tag and bytes as the client sent them (a tag of any
   length; before login at most 126 characters, as Dovecot's imap-login), and every
   response line comes back byte for byte: the upstream itself names the
   client's tag wherever a response does (RFC 4731 ESEARCH, RFC 5267
   updates) and judges tags it refuses. A line with a tag and no command
   goes up for the upstream's tagged BAD. A synchronizing literal {N} is
   not answered by the proxy: the upstream's own "+" is passed to the
   client, so when the upstream refuses the command the client gets that
   tagged NO/BAD instead and never sends the literal. LITERAL+ {N+} bytes
   are streamed on at once, and all of them go up even when the upstream
   answered first (it reads them, RFC 7888); literal bytes are
   acknowledged at once (TCP_QUICKACK). IDLE stays open until the
   client's DONE. CAPABILITY is answered locally (the login's list, what
   proxy and upstream both carry) after the answers still pending;
   COMPRESS, NOTIFY and UNAUTHENTICATE get NO [CANNOT]. A client that
   stops reading stops the reading from upstream; an upstream that
   goes away ends the session with "* BYE". */

#define SESSION_CLOSE_TIMEOUT 5 /* seconds to flush a last reply to a client that does not read */
#define SESSION_MAX_BAD_COMMANDS 10 /* before login, in all: a client this confused is not an IMAP client */
#define SESSION_MAX_BAD_COMMANDS_LOGGED_IN 20 /* after login, in a row: Dovecot's CLIENT_MAX_BAD_COMMANDS */
#define SESSION_COMMANDS_PER_EVENT 64 /* one client's pipeline can't starve the rest */
#define SESSION_OUTPUT_HIGH_WATER (256 * 1024) /* stop reading commands past this much unsent reply */
#define SESSION_WRITE_MAX (256 * 1024) /* bytes written to the client in one turn of the loop (libevent: 16 KiB) */
#define SESSION_READ_MAX (256 * 1024) /* bytes read from a plaintext client in one turn once logged in (libevent: 4 KiB, net-read.h) */
#define SESSION_POOL_CHECK_MSECS 2000 /* a live upstream answers NOOP at once; a fresh login beats waiting longer */

struct session;

/* Called after every session start and end, with the number of sessions. */
typedef void session_count_fn(unsigned int count, void *context);

/* Sets the one callback told about the session count (for sd_notify STATUS
   and shutdown). */
void session_set_count_callback(session_count_fn *callback, void *context);

struct upstream_pool;

/* The pool the sessions take upstream connections from at login and give
   them back to at the client's LOGOUT (then answered here: "* BYE" and the
   tagged OK), when the connection is clean: nothing pending, no ENABLE or
   LANGUAGE used, a selected mailbox left with UNSELECT. A login takes an
   idle connection of its key, or one still on its way back (its cleaning
   on the wire), and is answered at once. A connection that answered
   within UPSTREAM_POOL_FRESH_SECS is used as it is; any other is proven
   by the command ahead of the client's first one (a NOOP, or the
   cleaning), and one that fails or does not answer within
   SESSION_POOL_CHECK_MSECS is replaced by a fresh login with the same
   credentials, the client's first command sent again. NULL: no pooling.
   Not owned. */
void session_set_upstream_pool(struct upstream_pool *pool);

struct upstream_probe;

/* Where the sessions' pre-login CAPABILITY comes from (upstream-probe.h):
   each new session starts a probe of its config's upstreams not known
   yet, and each upstream connection made for a login records what that
   upstream offers before login. NULL: the fallback list. Not owned. */
void session_set_upstream_probe(struct upstream_probe *probe);

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
