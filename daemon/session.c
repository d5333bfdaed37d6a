/* SPDX-License-Identifier: MIT */
/* session: one client connection, speaking the server side of IMAP; after login it forwards to the upstream. */
#include "config.h"
#include "session-private.h"
#include "imap-client-commands.h"
#include "imap-parser.h"
#include "imap-sasl.h"
#include "log.h"
#include "net-read.h"
#include "tls.h"
#include "upstream.h"
#include "upstream-pool.h"
#include "upstream-probe.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/time.h>
#include <unistd.h>

static TAILQ_HEAD(session_list, session) session_all = TAILQ_HEAD_INITIALIZER(session_all);
static unsigned int session_live_count;
static unsigned long session_last_id;
static session_count_fn *session_count_callback;
static void *session_count_context;
struct upstream_pool *session_pool;
struct upstream_probe *session_probe;

static void session_read(struct bufferevent *bev, void *context);
static void session_write(struct bufferevent *bev, void *context);
static void session_event(struct bufferevent *bev, short what, void *context);
static void session_literal_timeout(evutil_socket_t fd, short what, void *context);

void session_set_count_callback(session_count_fn *callback, void *context)
{
	session_count_callback = callback;
	session_count_context = context;
}

void session_set_upstream_pool(struct upstream_pool *pool)
{
	session_pool = pool;
}

void session_set_upstream_probe(struct upstream_probe *probe)
{
	session_probe = probe;
}

unsigned int session_count(void)
{
	return session_live_count;
}

unsigned int session_count_account(const char *upstream_name, const char *user)
{
	const struct session *session;
	unsigned int count = 0;

	TAILQ_FOREACH(session, &session_all, link) {
		if (session->state == SESSION_STATE_FORWARDING && session->upstream_name != NULL &&
		    strcmp(session->upstream_name, upstream_name) == 0 && strcmp(session->user, user) == 0)
			count++;
	}
	return count;
}

void session_send(struct session *session, const char *format, ...)
{
	va_list args;
	int len;

	va_start(args, format);
	len = evbuffer_add_vprintf(bufferevent_get_output(session->bev), format, args);
	va_end(args);
	if (len > 0)
		session->bytes_out += (uint64_t)len;
}

/* What the proxy can do before login: what the upstream offers, as far
   as the proxy can carry it (upstream-probe.h); never more. */
void session_format_capability(const struct session *session, char *buf, size_t size)
{
	bool plaintext_refused = !session->tls_active && !session->loopback;

	upstream_probe_format_capability(session_probe, session->conf,
					 session->starttls_offered && !session->tls_active, plaintext_refused, buf,
					 size);
}

void session_schedule_step(struct session *session)
{
	event_active(session->step_event, EV_TIMEOUT, 0);
}

/* Queues an optional BYE and moves to closing; the session is freed once
   the output is sent, or SESSION_CLOSE_TIMEOUT later. */
void session_close(struct session *session, const char *reason, const char *bye)
{
	const struct timeval flush_timeout = { SESSION_CLOSE_TIMEOUT, 0 };

	if (session->state == SESSION_STATE_CLOSING)
		return;
	if (bye != NULL)
		session_send(session, "* BYE %s\r\n", bye);
	session->state = SESSION_STATE_CLOSING;
	session->end_reason = reason;
	bufferevent_disable(session->bev, EV_READ);
	bufferevent_set_timeouts(session->bev, NULL, &flush_timeout);
	if (evbuffer_get_length(bufferevent_get_output(session->bev)) == 0)
		session_schedule_step(session);
}

/* Wipes and frees what a login keeps of the client's secrets. */
void session_wipe_credentials(struct session *session)
{
	if (session->login_password != NULL) {
		OPENSSL_cleanse(session->login_password, strlen(session->login_password));
		free(session->login_password);
		session->login_password = NULL;
	}
	if (session->auth_initial != NULL) {
		OPENSSL_cleanse(session->auth_initial, strlen(session->auth_initial));
		free(session->auth_initial);
		session->auth_initial = NULL;
	}
}

static void session_free(struct session **session_p)
{
	struct session *session = *session_p;
	struct timeval now, elapsed;

	gettimeofday(&now, NULL);
	timersub(&now, &session->started, &elapsed);
	log_info("session %lu: end: client %s, user %s, upstream %s, %llu bytes in, %llu bytes out, "
		 "%ld.%03ld s: %s", session->id, session->peer_name,
		 session->state_logged_in ? session->user : "-",
		 session->state_logged_in ? session->upstream_name : "-",
		 (unsigned long long)session->bytes_in, (unsigned long long)session->bytes_out,
		 (long)elapsed.tv_sec, (long)elapsed.tv_usec / 1000,
		 session->end_reason != NULL ? session->end_reason : "closed");
	TAILQ_REMOVE(&session_all, session, link);
	session_live_count--;
	imap_client_free(&session->upstream); /* pending commands end silently, their contexts freed */
	session_own_sync_behind_clear(session);
	session_forward_free(session);
	session_wipe_credentials(session);
	free(session->login_capabilities);
	if (session->pending_reply != NULL)
		evbuffer_free(session->pending_reply);
	if (session->replay != NULL)
		evbuffer_free(session->replay);
	if (session->bev != NULL)
		bufferevent_free(session->bev);
	if (!session->fd_owned_by_bev)
		close(session->fd);
	event_free(session->step_event);
	event_free(session->literal_timer);
	event_free(session->pool_check_timer);
	event_free(session->login_timer);
	SSL_CTX_free(session->tls_context);
	conf_unref(&session->conf);
	free(session);
	*session_p = NULL;
	if (session_count_callback != NULL)
		session_count_callback(session_live_count, session_count_context);
}

/* The bytes of a literal the client is due to send now, or 0 when none
   is due (none announced, a {N} not yet told to go ahead, or reading
   paused by back-pressure, which is not the client's doing). */
static uint64_t session_literal_due(const struct session *session)
{
	if (session->reading_paused || session->waiting_upstream_output)
		return 0;
	if (session->state == SESSION_STATE_FORWARDING)
		return session_forward_literal_due(session);
	return session_prelogin_literal_due(session);
}

/* Arms the literal timer while a literal is due, again whenever some of
   it arrived; stops it otherwise. It also waits while replies to the
   client are still queued: a slow reader may not have seen the "+" yet
   (session_write starts it once they are written to the socket). */
void session_update_literal_timer(struct session *session)
{
	const struct timeval timeout = { session->conf->timeout_literal, 0 };
	uint64_t due = session->state == SESSION_STATE_CLOSING ? 0 : session_literal_due(session);

	if (due == 0 || evbuffer_get_length(bufferevent_get_output(session->bev)) > 0) {
		evtimer_del(session->literal_timer);
		return;
	}
	if (!evtimer_pending(session->literal_timer, NULL) || due != session->literal_timer_remaining) {
		evtimer_add(session->literal_timer, &timeout);
		session->literal_timer_remaining = due;
	}
}

/* A literal got no byte for timeouts.literal seconds: the client is gone
   or stalling, and the command (and upstream connection) can't finish. */
static void session_literal_timeout(evutil_socket_t fd, short what, void *context)
{
	struct session *session = context;

	(void)fd;
	(void)what;
	if (session->state == SESSION_STATE_CLOSING)
		return;
	log_info("session %lu: a literal got no data for %u s (%llu bytes still missing), disconnecting",
		 session->id, session->conf->timeout_literal,
		 (unsigned long long)session->literal_timer_remaining);
	session_close(session, "literal not sent in time", "Literal not sent in time, closing");
}

/* Sets callbacks, watermarks and the idle timeout on the current bufferevent. */
static void session_setup_bev(struct session *session)
{
	const struct timeval idle = { session->conf->timeout_preauth, 0 };

	bufferevent_setcb(session->bev, session_read, session_write, session_event, session);
	/* libevent writes 16 KiB a turn: a 10 MB answer would be 600 turns */
	bufferevent_set_max_single_write(session->bev, SESSION_WRITE_MAX);
	/* Never hold more than one over-long line: past this, reading stops
	   and the line is refused. */
	bufferevent_setwatermark(session->bev, EV_READ, 0, session->conf->limit_line + 2);
	/* The same limit for a client that stops reading its replies. */
	bufferevent_set_timeouts(session->bev, &idle, &idle);
	bufferevent_enable(session->bev, EV_READ | EV_WRITE);
}

/* Replaces the plaintext bufferevent with a TLS one on the same socket. */
static void session_start_tls(struct session *session)
{
	SSL *ssl = SSL_new(session->tls_context);

	if (ssl == NULL) {
		log_error("session %lu: STARTTLS: cannot make a TLS connection: %s", session->id,
			  tls_error_string());
		session->end_reason = "TLS set-up failed";
		session->state = SESSION_STATE_CLOSING;
		session_schedule_step(session);
		return;
	}
	bufferevent_free(session->bev);
	session->bev = bufferevent_openssl_socket_new(session->base, session->fd, ssl,
						      BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
	if (session->bev == NULL) {
		SSL_free(ssl);
		log_error("session %lu: STARTTLS: out of memory", session->id);
		session->end_reason = "TLS set-up failed";
		session->state = SESSION_STATE_CLOSING;
		session_schedule_step(session);
		return;
	}
	session->fd_owned_by_bev = true;
	session->tls_active = true;
	session->state = SESSION_STATE_NOT_AUTHENTICATED;
	session_setup_bev(session);
}

/* RFC 3501 tag: ASTRING-CHAR except "+". */
bool session_tag_char(unsigned char c)
{
	return c > 0x20 && c < 0x7f && strchr("(){%*\"\\+", c) == NULL;
}

size_t session_tag_arg_length(const struct imap_arg *args, unsigned int count)
{
	if (count == 0 || args[0].type != IMAP_ARG_ATOM || args[0].len == 0)
		return 0;
	for (size_t i = 0; i < args[0].len; i++) {
		if (!session_tag_char((unsigned char)args[0].str[i]))
			return 0;
	}
	return (size_t)args[0].len;
}

/* Counts a BAD; too many in a row (a valid command resets the count once
   logged in, as Dovecot's does, and then allows as many as Dovecot does)
   end the session. Returns false when closed. */
bool session_count_bad(struct session *session)
{
	unsigned int most = session->state == SESSION_STATE_FORWARDING ? SESSION_MAX_BAD_COMMANDS_LOGGED_IN
									: SESSION_MAX_BAD_COMMANDS;

	if (++session->bad_commands < most)
		return true;
	log_info("session %lu: %u invalid commands, disconnecting", session->id, session->bad_commands);
	session_close(session, "too many invalid commands", "Too many invalid commands");
	return false;
}

void session_set_pending_reply(struct session *session, const char *format, ...)
{
	va_list args;

	evbuffer_drain(session->pending_reply, evbuffer_get_length(session->pending_reply));
	va_start(args, format);
	(void)evbuffer_add_vprintf(session->pending_reply, format, args);
	va_end(args);
}

/* The end of a skipped line has come: its reply (pending_reply) goes out
   and counts as a BAD. Returns false when the session closed. */
bool session_skipped_line_answer(struct session *session)
{
	size_t len = evbuffer_get_length(session->pending_reply);

	session->skipping_line = false;
	if (len == 0)
		return true; /* answered already: the rest of a line during IDLE */
	session->bytes_out += len;
	evbuffer_add_buffer(bufferevent_get_output(session->bev), session->pending_reply);
	return session_count_bad(session);
}

bool session_skip_line(struct session *session, struct evbuffer *input, size_t most)
{
	size_t eol_len = 0;
	struct evbuffer_ptr eol = evbuffer_search_eol(input, NULL, &eol_len, EVBUFFER_EOL_LF);
	size_t take = eol.pos >= 0 ? (size_t)eol.pos + eol_len : evbuffer_get_length(input);

	session->bytes_in += take;
	session->skipped_line_bytes += take;
	evbuffer_drain(input, take);
	if (session->skipped_line_bytes > most) {
		session->bytes_in += evbuffer_get_length(input); /* received, if refused */
		log_info("session %lu: command line longer than %zu bytes", session->id, session->conf->limit_line);
		session_close(session, "line too long", "Command line too long");
		return false;
	}
	return eol.pos >= 0 && session_skipped_line_answer(session);
}

/* Whether credentials may be taken on this connection: TLS, or loopback. */
bool session_login_allowed(const struct session *session)
{
	return session->tls_active || session->loopback;
}

/* Handles the client's commands, a bounded number per call. */
static void session_read_input(struct session *session)
{
	if (session->state == SESSION_STATE_FORWARDING)
		session_forward_input(session);
	else
		session_prelogin_input(session);
}

/* Acknowledges at once what the client sent of a literal. A client
   without TCP_NODELAY (imaplib) writes a literal and its closing CRLF in
   two writes; Nagle holds the second until the first is acknowledged,
   and a delayed acknowledgement would cost it 40 ms per APPEND. */
static void session_acknowledge_literal(struct session *session)
{
	int on = 1;

	session->literal_bytes_read = false;
	if (setsockopt(session->fd, IPPROTO_TCP, TCP_QUICKACK, &on, sizeof(on)) < 0)
		log_debug("session %lu: TCP_QUICKACK: %s", session->id, strerror(errno));
}

/* Handles the client's input, then times what is left of a literal. */
static void session_process_input(struct session *session)
{
	session_read_input(session);
	if (session->literal_bytes_read)
		session_acknowledge_literal(session);
	session_update_literal_timer(session);
}

/* Deferred work, run from the event loop with no session frame on the stack. */
static void session_step(evutil_socket_t fd, short what, void *context)
{
	struct session *session = context;

	(void)fd;
	(void)what;
	if (session->state == SESSION_STATE_CLOSING) {
		if (session->output_abandoned || evbuffer_get_length(bufferevent_get_output(session->bev)) == 0)
			session_free(&session);
		return;
	}
	if (session->state == SESSION_STATE_STARTTLS) {
		/* Here, not in the write callback: the plaintext bufferevent is
		   replaced, and no callback of it may be on the stack. */
		if (evbuffer_get_length(bufferevent_get_output(session->bev)) == 0)
			session_start_tls(session);
		return;
	}
	session_process_input(session);
}

static void session_read(struct bufferevent *bev, void *context)
{
	struct session *session = context;
	size_t have = evbuffer_get_length(bufferevent_get_input(bev));

	/* a large APPEND streams in at more than libevent's 4 KiB a turn; never
	   before login, where STARTTLS's handshake bytes must stay in the socket */
	if (session->state == SESSION_STATE_FORWARDING && !session->tls_active && have < SESSION_READ_MAX)
		(void)net_read_waiting(bev, SESSION_READ_MAX - have);
	session_process_input(session);
}

static void session_write(struct bufferevent *bev, void *context)
{
	struct session *session = context;

	if (evbuffer_get_length(bufferevent_get_output(bev)) > 0)
		return;
	switch (session->state) {
	case SESSION_STATE_CLOSING:
		session_schedule_step(session);
		break;
	case SESSION_STATE_STARTTLS:
		session_schedule_step(session);
		break;
	case SESSION_STATE_NOT_AUTHENTICATED:
	case SESSION_STATE_AUTH_CLIENT:
	case SESSION_STATE_LOGIN:
		if (session->reading_paused) {
			session->reading_paused = false;
			bufferevent_enable(session->bev, EV_READ);
			session_schedule_step(session);
		}
		session_update_literal_timer(session); /* a "+" the client can now read */
		break;
	case SESSION_STATE_FORWARDING:
		if (session->upstream_reading_paused) {
			session->upstream_reading_paused = false;
			if (!session->store_paused)
				imap_client_set_reading_paused(session->upstream, false);
		}
		session_forward_output_drained(session);
		session_update_literal_timer(session);
		break;
	}
}

/* Gives up on unsent output (the output buffer's front is the
   bufferevent's to drain, not ours) and has the session freed. */
static void session_abandon_output(struct session *session)
{
	bufferevent_disable(session->bev, EV_READ | EV_WRITE);
	session->output_abandoned = true;
	session_schedule_step(session);
}

/* Names the TLS or socket error behind a bufferevent error. */
static void session_format_error(struct bufferevent *bev, char *buf, size_t size)
{
	unsigned long tls_error = bufferevent_get_openssl_error(bev);
	int socket_error = EVUTIL_SOCKET_ERROR();
	SSL *ssl = bufferevent_openssl_get_ssl(bev);

	/* The TCP connection ended under TLS without close_notify: OpenSSL
	   says "unexpected eof", or, for a reset, libevent queues
	   SSL_get_error()'s SSL_ERROR_SYSCALL, which is no error code. */
	if (ssl != NULL && (tls_error == SSL_ERROR_SYSCALL ||
			    (ERR_GET_LIB(tls_error) == ERR_LIB_SSL &&
			     ERR_GET_REASON(tls_error) == SSL_R_UNEXPECTED_EOF_WHILE_READING))) {
		unsigned char finished[EVP_MAX_MD_SIZE]; /* after an error, only this tells a handshake was done */

		snprintf(buf, size, "client closed %s", SSL_get_peer_finished(ssl, finished, sizeof(finished)) > 0 ?
			 "the connection without TLS close_notify" : "during TLS handshake");
	} else if (tls_error != 0) {
		char text[256];

		ERR_error_string_n(tls_error, text, sizeof(text));
		snprintf(buf, size, "TLS error: %s", text);
	} else if (socket_error != 0) {
		snprintf(buf, size, "%s", evutil_socket_error_to_string(socket_error));
	} else {
		snprintf(buf, size, "connection failed");
	}
}

static void session_event(struct bufferevent *bev, short what, void *context)
{
	struct session *session = context;

	if (what & BEV_EVENT_CONNECTED) {
		log_debug("session %lu: TLS handshake done", session->id);
		return;
	}
	if (what & BEV_EVENT_TIMEOUT) {
		if (session->state == SESSION_STATE_CLOSING || (what & BEV_EVENT_WRITING)) {
			/* Replies waited this long unread: no BYE could get through. */
			session->end_reason = session->state == SESSION_STATE_CLOSING ?
				"client did not read its last reply" : "client stopped reading its replies";
			session->state = SESSION_STATE_CLOSING;
			session_abandon_output(session);
			return;
		}
		session_close(session, "idle timeout", "Idle for too long, closing");
		return;
	}
	if (what & BEV_EVENT_EOF) {
		session->end_reason = session->state == SESSION_STATE_CLOSING ? session->end_reason :
			"client disconnected";
	} else if (what & BEV_EVENT_ERROR) {
		session_format_error(bev, session->error_text, sizeof(session->error_text));
		if (session->state != SESSION_STATE_CLOSING)
			session->end_reason = session->error_text;
	}
	/* The peer is gone: nothing more can be sent. */
	session->state = SESSION_STATE_CLOSING;
	session_abandon_output(session);
}

struct session *session_new(struct event_base *base, const struct listener_connection *conn,
			    struct conf *conf, const char **error_r)
{
	struct session *session = calloc(1, sizeof(*session));
	char capability[UPSTREAM_CAPABILITY_MAX];

	if (session == NULL) {
		close(conn->fd);
		*error_r = "out of memory";
		return NULL;
	}
	session->id = ++session_last_id;
	session->base = base;
	session->fd = conn->fd;
	session->loopback = conn->loopback;
	session->starttls_offered = conn->tls == CONF_TLS_STARTTLS && conn->tls_context != NULL;
	snprintf(session->peer_name, sizeof(session->peer_name), "%s", conn->peer_name);
	snprintf(session->listener_name, sizeof(session->listener_name), "%s", conn->listener_name);
	gettimeofday(&session->started, NULL);
	if (session_pool != NULL)
		session->pool_generation = upstream_pool_generation(session_pool);
	session->step_event = event_new(base, -1, 0, session_step, session);
	session->literal_timer = evtimer_new(base, session_literal_timeout, session);
	session->pool_check_timer = evtimer_new(base, session_pool_check_timeout, session);
	session->login_timer = evtimer_new(base, session_login_timeout, session);
	session->pending_reply = evbuffer_new();
	if (session->step_event == NULL || session->literal_timer == NULL || session->pool_check_timer == NULL ||
	    session->login_timer == NULL || session->pending_reply == NULL || session_prelogin_start(session, conf) < 0)
		goto fail;
	if (conn->tls_context != NULL) {
		SSL_CTX_up_ref(conn->tls_context);
		session->tls_context = conn->tls_context;
	}
	if (conn->tls == CONF_TLS_IMPLICIT) {
		SSL *ssl = SSL_new(conn->tls_context);

		if (ssl == NULL)
			goto fail;
		session->bev = bufferevent_openssl_socket_new(base, conn->fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
							      BEV_OPT_CLOSE_ON_FREE);
		if (session->bev == NULL) {
			SSL_free(ssl);
			goto fail;
		}
		session->fd_owned_by_bev = true;
		session->tls_active = true;
	} else {
		session->bev = bufferevent_socket_new(base, conn->fd, 0);
		if (session->bev == NULL)
			goto fail;
	}
	conf_ref(conf);
	session->conf = conf;
	TAILQ_INSERT_TAIL(&session_all, session, link);
	session_live_count++;
	log_info("session %lu: start: client %s on %s (%s)", session->id, session->peer_name,
		 session->listener_name, conf_tls_name(conn->tls));
	session_setup_bev(session);
	/* an upstream not asked yet (down at start, new since a reload) */
	upstream_probe_start(session_probe, conf);
	session_format_capability(session, capability, sizeof(capability));
	/* On implicit TLS this waits in the output until the handshake is done. */
	session_send(session, "* OK [CAPABILITY %s] imapcached ready\r\n", capability);
	if (session_count_callback != NULL)
		session_count_callback(session_live_count, session_count_context);
	return session;

fail:
	if (session->bev != NULL)
		bufferevent_free(session->bev);
	if (!session->fd_owned_by_bev)
		close(conn->fd);
	if (session->step_event != NULL)
		event_free(session->step_event);
	if (session->literal_timer != NULL)
		event_free(session->literal_timer);
	if (session->pool_check_timer != NULL)
		event_free(session->pool_check_timer);
	if (session->login_timer != NULL)
		event_free(session->login_timer);
	SSL_CTX_free(session->tls_context);
	imap_parser_free(&session->command_parser);
	free(session);
	*error_r = "out of memory";
	return NULL;
}

void session_refuse(const struct listener_connection *conn, const char *reason)
{
	char line[256];
	int len;

	if (conn->tls != CONF_TLS_IMPLICIT) {
		len = snprintf(line, sizeof(line), "* BYE %s\r\n", reason);
		if (len > 0 && (size_t)len < sizeof(line)) {
			/* Best effort on a fresh socket: its send buffer is empty. */
			if (send(conn->fd, line, (size_t)len, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
				log_debug("cannot tell %s it is refused: %s", conn->peer_name, strerror(errno));
		}
	}
	close(conn->fd);
}

void session_close_all(const char *reason)
{
	struct session *session;

	TAILQ_FOREACH(session, &session_all, link)
		session_close(session, "daemon shutting down", reason);
}

void session_free_all(void)
{
	while (!TAILQ_EMPTY(&session_all)) {
		struct session *session = TAILQ_FIRST(&session_all);

		if (session->end_reason == NULL)
			session->end_reason = "daemon exiting";
		session_free(&session);
	}
}
