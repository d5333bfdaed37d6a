/* SPDX-License-Identifier: MIT */
/* session: one client connection, speaking the server side of IMAP; after login it forwards to the upstream. */
#include "config.h"
#include "session.h"
#include "imap-client-commands.h"
#include "imap-parser.h"
#include "imap-sasl.h"
#include "log.h"
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

#define SESSION_TAG_MAX 126 /* before login, as Dovecot's imap-login; after it, the line is the limit */
#define SESSION_LITERAL_DIGITS_MAX 19 /* fits a uint64_t; more is an overflow */
#define SESSION_USER_MAX 256 /* an e-mail address is at most 254 bytes (RFC 5321) */
#define SESSION_MECHANISM_MAX 32 /* SASL names are at most 20 characters (RFC 4422) */
#define SESSION_VERB_MAX 64 /* "UID " and the longest extension verb */
#define SESSION_UPSTREAM_HIGH_WATER (256 * 1024) /* stop reading the client past this much unsent upstream */
#define SESSION_LOGIN_LITERALS_MAX 2 /* LOGIN has two arguments: user name and password */
#define SESSION_ID_PAIRS_MAX 30 /* RFC 2971 3.3: at most 30 field-value pairs */
#define SESSION_ID_LITERALS_MAX (2 * SESSION_ID_PAIRS_MAX) /* each field and value may be one */

enum session_state {
	SESSION_STATE_NOT_AUTHENTICATED,
	SESSION_STATE_STARTTLS,  /* OK queued; the handshake starts once it is sent */
	SESSION_STATE_LOGIN,     /* LOGIN/AUTHENTICATE going upstream; client input waits */
	SESSION_STATE_AUTH_CLIENT, /* "+" sent for AUTHENTICATE: the next line is the client's response */
	SESSION_STATE_FORWARDING, /* logged in: commands go upstream, answers come back */
	SESSION_STATE_CLOSING,   /* last reply queued; freed once it is sent */
};

/* What the end of a command line announces. */
enum session_literal {
	SESSION_LITERAL_NONE,
	SESSION_LITERAL_SYNC,      /* {N}: the client waits for "+" */
	SESSION_LITERAL_NONSYNC,   /* {N+}: the bytes follow at once */
	SESSION_LITERAL_INVALID,   /* {..} that is not a size */
};

struct session {
	TAILQ_ENTRY(session) link;
	unsigned long id;
	struct event_base *base;
	struct conf *conf;
	evutil_socket_t fd;
	bool fd_owned_by_bev;          /* the TLS bufferevent closes it */
	struct bufferevent *bev;
	SSL_CTX *tls_context;          /* our reference, for STARTTLS */
	bool tls_active;
	bool starttls_offered;
	bool loopback;
	enum session_state state;
	struct event *step_event;      /* deferred work: resume input, start TLS, free */
	bool reading_paused;           /* output past the high-water mark */
	bool output_abandoned;         /* the client can't or won't take more: free at once */

	uint64_t literal_to_discard;   /* bytes of a refused {N+} literal still to drop */
	bool discarding_command;       /* the rest of a refused command is still coming */
	char pending_reply[SESSION_TAG_MAX + 200]; /* the tagged reply for the refused command */

	/* A LOGIN whose arguments come as literals, gathered until complete. */
	char *login_command;           /* its bytes so far (lines with CRLF, literals); wiped */
	size_t login_command_len;
	size_t login_command_size;     /* allocated */
	uint64_t login_literal_left;   /* bytes of the current literal still to come */
	unsigned int login_literals;   /* literals announced so far */
	bool login_command_is_id;      /* it is an ID (LITERAL+ works for it too), not a LOGIN */

	/* A literal the client announced must keep coming (timeouts.literal). */
	struct event *literal_timer;
	uint64_t literal_timer_remaining; /* bytes missing when it was last armed */

	/* Login and the upstream connection. */
	struct imap_client *upstream;
	const char *upstream_name;     /* in conf, which the session holds */
	char user[SESSION_USER_MAX];
	char login_tag[SESSION_TAG_MAX + 1];
	char *login_password;          /* LOGIN's password until sent upstream; wiped */
	char login_text[300];          /* the upstream's OK text, while capabilities are asked */
	char auth_mechanism[SESSION_MECHANISM_MAX];
	char *auth_initial;            /* AUTHENTICATE's base64 initial response until sent; wiped */
	struct imap_client_command *auth_command; /* upstream AUTHENTICATE waiting for the client's answer */
	bool auth_login_password;      /* AUTHENTICATE LOGIN: the client's next line is the password */

	/* Forwarding. */
	struct imap_client_command *open_command; /* the client is still sending its bytes */
	bool open_is_idle;
	unsigned int forwarded_pending; /* forwarded commands not yet answered */
	uint64_t forward_literal;      /* bytes of a client literal still to pass on (or drop) */
	bool forward_literal_sync;     /* announced as {N}: comes only after the upstream's "+" */
	bool forward_literal_go_ahead; /* the upstream's "+" reached the client */
	bool upstream_reading_paused;  /* the client reads slower than the upstream sends */
	bool waiting_upstream_output;  /* the upstream reads slower than the client sends */
	bool state_logged_in;          /* the upstream accepted the login */
	bool literal_bytes_read;       /* this read took literal bytes: acknowledge them at once */

	/* The upstream pool (upstream-pool.h). */
	struct upstream_pool_key pool_key; /* digests of the account and credential of this login */
	bool pool_key_valid;
	unsigned int pool_generation;  /* the pool's when the session started (with its conf) */
	char *login_capabilities;      /* the tagged OK's filtered list, in the upstream's case */
	struct event *pool_check_timer; /* a taken connection's NOOP must come back in time */
	struct upstream_pool_waiter *pool_waiter; /* waiting for a connection on its way to the pool */
	uint64_t pool_fresh_authenticated_at; /* pool_key's before a take changed it */
	bool pool_state_changed;       /* state a pooled connection can't shed (session_line_changes_state) */

	char peer_name[LISTENER_NAME_MAX];
	char listener_name[LISTENER_NAME_MAX];
	uint64_t bytes_in;
	uint64_t bytes_out;
	struct timeval started;
	unsigned int bad_commands;
	const char *end_reason;
	char error_text[300];          /* end_reason when an I/O error ended it */
};

static TAILQ_HEAD(session_list, session) session_all = TAILQ_HEAD_INITIALIZER(session_all);
static unsigned int session_live_count;
static unsigned long session_last_id;
static session_count_fn *session_count_callback;
static void *session_count_context;
static struct upstream_pool *session_pool;
static struct upstream_probe *session_probe;

static void session_read(struct bufferevent *bev, void *context);
static void session_write(struct bufferevent *bev, void *context);
static void session_event(struct bufferevent *bev, short what, void *context);
static void session_literal_timeout(evutil_socket_t fd, short what, void *context);
static void session_pool_check_timeout(evutil_socket_t fd, short what, void *context);

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

static void session_send(struct session *session, const char *format, ...)
	__attribute__((format(printf, 2, 3)));
static void session_send(struct session *session, const char *format, ...)
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
static void session_format_capability(const struct session *session, char *buf, size_t size)
{
	bool plaintext_refused = !session->tls_active && !session->loopback;

	upstream_probe_format_capability(session_probe, session->conf,
					 session->starttls_offered && !session->tls_active, plaintext_refused, buf,
					 size);
}

static void session_schedule_step(struct session *session)
{
	event_active(session->step_event, EV_TIMEOUT, 0);
}

/* Queues an optional BYE and moves to closing; the session is freed once
   the output is sent, or SESSION_CLOSE_TIMEOUT later. */
static void session_close(struct session *session, const char *reason, const char *bye)
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
static void session_wipe_credentials(struct session *session)
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
	if (session->login_command != NULL) {
		OPENSSL_cleanse(session->login_command, session->login_command_len);
		free(session->login_command);
		session->login_command = NULL;
	}
	session->login_command_len = 0;
	session->login_command_size = 0;
	session->login_literal_left = 0;
	session->login_literals = 0;
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
	upstream_pool_cancel_wait(&session->pool_waiter);
	session_wipe_credentials(session);
	free(session->login_capabilities);
	if (session->bev != NULL)
		bufferevent_free(session->bev);
	if (!session->fd_owned_by_bev)
		close(session->fd);
	event_free(session->step_event);
	event_free(session->literal_timer);
	event_free(session->pool_check_timer);
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
	if (session->login_literal_left > 0)
		return session->login_literal_left;
	if (session->literal_to_discard > 0)
		return session->literal_to_discard;
	if (session->state == SESSION_STATE_FORWARDING && session->forward_literal > 0 &&
	    (session->open_command == NULL || !session->forward_literal_sync ||
	     session->forward_literal_go_ahead))
		return session->forward_literal;
	return 0;
}

/* Arms the literal timer while a literal is due, again whenever some of
   it arrived; stops it otherwise. It also waits while replies to the
   client are still queued: a slow reader may not have seen the "+" yet
   (session_write starts it once they are written to the socket). */
static void session_update_literal_timer(struct session *session)
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

/* Parses a literal announcement ("{12}", "{12+}") at the end of line. */
static enum session_literal session_line_literal(const char *line, size_t len, uint64_t *size_r)
{
	size_t open, digits_end;
	uint64_t size = 0;

	if (len < 3 || line[len - 1] != '}')
		return SESSION_LITERAL_NONE;
	digits_end = len - 1;
	if (line[digits_end - 1] == '+')
		digits_end--;
	open = digits_end;
	while (open > 0 && line[open - 1] >= '0' && line[open - 1] <= '9')
		open--;
	if (open == 0 || line[open - 1] != '{')
		return SESSION_LITERAL_NONE;
	if (open == digits_end || digits_end - open > SESSION_LITERAL_DIGITS_MAX)
		return SESSION_LITERAL_INVALID;
	for (size_t i = open; i < digits_end; i++) {
		unsigned int digit = (unsigned int)(line[i] - '0');

		if (size > (UINT64_MAX - digit) / 10)
			return SESSION_LITERAL_INVALID;
		size = size * 10 + digit;
	}
	*size_r = size;
	return digits_end == len - 1 ? SESSION_LITERAL_SYNC : SESSION_LITERAL_NONSYNC;
}

/* RFC 3501 tag: ASTRING-CHAR except "+". */
static bool session_tag_char(unsigned char c)
{
	return c > 0x20 && c < 0x7f && strchr("(){%*\"\\+", c) == NULL;
}

static bool session_atom_char(unsigned char c)
{
	return c > 0x20 && c < 0x7f && strchr("(){%*\"\\]", c) == NULL;
}

/* Commands of the authenticated and selected states (RFC 3501, 9051 and
   common extensions): before login they get "log in first", not "unknown". */
static bool session_is_later_command(const char *command)
{
	static const char *const later[] = {
		"SELECT", "EXAMINE", "CREATE", "DELETE", "RENAME", "SUBSCRIBE", "UNSUBSCRIBE",
		"LIST", "LSUB", "STATUS", "APPEND", "CHECK", "CLOSE", "UNSELECT", "EXPUNGE",
		"SEARCH", "FETCH", "STORE", "COPY", "MOVE", "UID", "IDLE", "ENABLE", "NAMESPACE",
		"GETQUOTA", "GETQUOTAROOT", "SETQUOTA", "GETACL", "SETACL", "MYRIGHTS",
		"GETMETADATA", "SETMETADATA", NULL
	};

	for (const char *const *name = later; *name != NULL; name++) {
		if (strcasecmp(command, *name) == 0)
			return true;
	}
	return false;
}

/* Counts a BAD; too many of them end the session. Returns false when closed. */
static bool session_count_bad(struct session *session)
{
	if (++session->bad_commands < SESSION_MAX_BAD_COMMANDS)
		return true;
	log_info("session %lu: %u invalid commands, disconnecting", session->id, session->bad_commands);
	session_close(session, "too many invalid commands", "Too many invalid commands");
	return false;
}

/* Whether credentials may be taken on this connection: TLS, or loopback. */
static bool session_login_allowed(const struct session *session)
{
	return session->tls_active || session->loopback;
}

/* The tagged reply to a LOGIN or AUTHENTICATE that is refused here. */
static void session_format_login_refusal(const struct session *session, const char *tag,
					 char *buf, size_t size)
{
	if (!session_login_allowed(session)) {
		snprintf(buf, size, "%s NO [PRIVACYREQUIRED] Logging in without TLS is disabled here%s\r\n",
			 tag, session->starttls_offered ? "; use STARTTLS first" : "");
		return;
	}
	snprintf(buf, size, "%s NO [CANNOT] AUTHENTICATE takes its initial response as base64 on the "
		 "command line (RFC 4959), not as a literal; nothing was sent upstream\r\n", tag);
}

/* ---- login upstream ---- */

static void session_upstream_closed(struct imap_client *client, const char *reason, void *context);
static int session_upstream_raw(struct imap_client *client, struct imap_client_command *command,
				enum imap_client_raw_kind kind, const unsigned char *data, size_t len,
				bool line_end, void *context);
static void session_upstream_drained(struct imap_client *client, void *context);

/* Ends a login that did not work: the client gets "tag NO reply". */
static void session_login_refused(struct session *session, const char *reply)
{
	session_send(session, "%s NO %s\r\n", session->login_tag, reply);
	session_wipe_credentials(session);
	imap_client_free(&session->upstream); /* safe inside its own callback */
	session->auth_command = NULL;
	session->user[0] = '\0';
	session->state = SESSION_STATE_NOT_AUTHENTICATED;
	session_schedule_step(session); /* commands the client pipelined meanwhile */
}

/* The login worked: answer with what both sides can do, start forwarding. */
static void session_login_accepted(struct session *session, const char *capabilities, const char *text)
{
	char filtered[UPSTREAM_CAPABILITY_MAX];
	const struct timeval idle = { session->conf->timeout_idle, 0 };

	upstream_filter_capabilities(capabilities, filtered, sizeof(filtered));
	session_send(session, "%s OK [CAPABILITY %s] %s\r\n", session->login_tag, filtered, text);
	/* kept for a login that takes this connection from the pool */
	if (text != session->login_text)
		snprintf(session->login_text, sizeof(session->login_text), "%s", text);
	free(session->login_capabilities);
	session->login_capabilities = strdup(filtered);
	session->state = SESSION_STATE_FORWARDING;
	session->state_logged_in = true;
	log_info("session %lu: logged in as %s on upstream %s", session->id, session->user,
		 session->upstream_name);
	imap_client_set_raw_callback(session->upstream, session_upstream_raw, session);
	imap_client_set_output_drained_callback(session->upstream, SESSION_UPSTREAM_HIGH_WATER / 2,
						session_upstream_drained, session);
	bufferevent_set_timeouts(session->bev, &idle, &idle);
	session_schedule_step(session);
}

static void session_login_capability_done(struct imap_client *client, struct imap_client_command *command,
					  const struct imap_client_result *result, void *context)
{
	struct session *session = context;

	(void)command;
	if (result->status == IMAP_CLIENT_STATUS_ABORT)
		return; /* the closed callback tells the client */
	session_login_accepted(session, imap_client_get_capabilities(client), session->login_text);
}

static void session_login_done(struct imap_client *client, struct imap_client_command *command,
			       const struct imap_client_result *result, void *context)
{
	struct session *session = context;
	char reply[600];

	(void)command;
	session->auth_command = NULL;
	session_wipe_credentials(session);
	if (session->state == SESSION_STATE_CLOSING)
		return;
	if (result->status == IMAP_CLIENT_STATUS_OK) {
		if (result->code != NULL && strncasecmp(result->code, "CAPABILITY ", 11) == 0) {
			session_login_accepted(session, result->code + 11, result->text);
		} else {
			/* the core asks for them; ours comes after it */
			snprintf(session->login_text, sizeof(session->login_text), "%s", result->text);
			imap_client_command_send(client, session_login_capability_done, session, "CAPABILITY");
		}
		return;
	}
	if (result->status == IMAP_CLIENT_STATUS_ABORT) {
		log_info("session %lu: login as %s: upstream %s failed: %s", session->id, session->user,
			 session->upstream_name, result->text);
		session_login_refused(session, "[UNAVAILABLE] The upstream server is not available");
		return;
	}
	log_info("session %lu: login as %s refused by upstream %s", session->id, session->user,
		 session->upstream_name);
	/* the upstream's own words, whatever it said (NO or BAD) */
	if (result->code != NULL)
		snprintf(reply, sizeof(reply), "[%s] %s", result->code, result->text);
	else
		snprintf(reply, sizeof(reply), "%s", result->text);
	session_login_refused(session, reply);
}

/* A challenge from the upstream during AUTHENTICATE: send the initial
   response that was waiting for it, or pass it to the client. */
static int session_auth_challenge(struct imap_client *client, struct imap_client_command *command,
				  const char *text, void *context)
{
	struct session *session = context;

	(void)client;
	if (session->state == SESSION_STATE_CLOSING)
		return -1;
	if (session->auth_initial != NULL) {
		imap_client_command_continue(command, session->auth_initial);
		session_wipe_credentials(session);
		return 0;
	}
	session_send(session, "+ %s\r\n", text);
	session->auth_command = command;
	session->state = SESSION_STATE_AUTH_CLIENT;
	session_schedule_step(session);
	return 0;
}

static void session_upstream_connected(struct imap_client *client, struct imap_client_command *command,
				       const struct imap_client_result *result, void *context)
{
	struct session *session = context;
	char line[SESSION_MECHANISM_MAX + 32];

	(void)command;
	if (session->state == SESSION_STATE_CLOSING)
		return;
	if (result->status != IMAP_CLIENT_STATUS_OK) {
		log_info("session %lu: login as %s: cannot reach upstream %s: %s", session->id, session->user,
			 session->upstream_name, result->text);
		session_login_refused(session, "[UNAVAILABLE] The upstream server is not available");
		return;
	}
	if (imap_client_get_state(client) != IMAP_CLIENT_STATE_NOT_AUTHENTICATED) {
		log_warning("session %lu: upstream %s logged in without credentials (PREAUTH): refused",
			    session->id, session->upstream_name);
		session_login_refused(session, "[UNAVAILABLE] The upstream server is not set up for a proxy");
		return;
	}
	/* what it offers before login now, for the next clients' CAPABILITY */
	upstream_probe_record(session_probe, conf_upstream_for_user(session->conf, session->user),
			      imap_client_get_capabilities(client));
	if (session->login_password != NULL) {
		imap_client_login(client, session->user, session->login_password, session_login_done, session);
		session_wipe_credentials(session);
		return;
	}
	if (imap_client_has_capability(client, "SASL-IR")) {
		snprintf(line, sizeof(line), "AUTHENTICATE %s ", session->auth_mechanism);
		/* the whole line is built here, then the response wiped */
		size_t len = strlen(line) + strlen(session->auth_initial) + 1;
		char *full = malloc(len);

		if (full == NULL) {
			session_login_refused(session, "[UNAVAILABLE] Server out of memory");
			return;
		}
		snprintf(full, len, "%s%s", line, session->auth_initial);
		session_wipe_credentials(session);
		imap_client_command_send_continued(client, full, session_auth_challenge, session,
						   session_login_done, session);
		OPENSSL_cleanse(full, len);
		free(full);
	} else {
		snprintf(line, sizeof(line), "AUTHENTICATE %s", session->auth_mechanism);
		imap_client_command_send_continued(client, line, session_auth_challenge, session,
						   session_login_done, session);
	}
}

static void session_login_connect(struct session *session, const struct conf_upstream *upstream);
static void session_pool_check_done(struct imap_client *client, struct imap_client_command *command,
				    const struct imap_client_result *result, void *context);
static void session_pool_wait_done(void *connection, const char *capabilities, const char *text,
				   const char *why, void *context);

/* Logs in on session->upstream, a connection just taken from the pool
   (capabilities and text: what its login answered). One that answered
   just now (fresh) is trusted; any other must first answer a NOOP
   (session_pool_check_done), the credentials kept until then for a
   fresh login in case it does not. */
static void session_login_pooled(struct session *session, const char *capabilities, const char *text,
				 bool fresh)
{
	const struct timeval check_timeout = { SESSION_POOL_CHECK_MSECS / 1000,
					       (SESSION_POOL_CHECK_MSECS % 1000) * 1000 };

	free(session->login_capabilities);
	session->login_capabilities = strdup(capabilities);
	snprintf(session->login_text, sizeof(session->login_text), "%s", text);
	if (session->login_capabilities == NULL) {
		imap_client_free(&session->upstream);
		session_login_refused(session, "[UNAVAILABLE] Server out of memory");
		return;
	}
	imap_client_set_closed_callback(session->upstream, session_upstream_closed, session);
	session->state = SESSION_STATE_LOGIN;
	if (fresh) {
		log_info("session %lu: login as %s: a pooled connection to upstream %s that answered just now, "
			 "no login sent upstream", session->id, session->user, session->upstream_name);
		session_wipe_credentials(session);
		session_login_accepted(session, session->login_capabilities, session->login_text);
		return;
	}
	log_debug("session %lu: login as %s: checking a pooled connection to upstream %s with NOOP", session->id,
		  session->user, session->upstream_name);
	evtimer_add(session->pool_check_timer, &check_timeout);
	imap_client_noop(session->upstream, session_pool_check_done, session);
}

/* Keys the login for the pool (the secret as the client gave it) and
   takes a matching pooled connection, or waits for one on its way back
   to the pool (its session's LOGOUT still cleaning it). Returns true
   when it did either: the login goes on there (session_login_pooled,
   session_pool_wait_done). */
static bool session_login_from_pool(struct session *session, const struct conf_upstream *upstream)
{
	char capabilities[UPSTREAM_POOL_CAPABILITY_MAX];
	char text[UPSTREAM_POOL_TEXT_MAX];
	const char *secret = session->login_password != NULL ? session->login_password : session->auth_initial;
	bool fresh = false;

	session->pool_key_valid = false;
	if (session_pool == NULL || secret == NULL)
		return false;
	if (!upstream_pool_make_key(session_pool, upstream->name, upstream->host, upstream->port, session->user,
				    session->login_password != NULL ? "LOGIN" : session->auth_mechanism,
				    secret, strlen(secret), &session->pool_key))
		return false;
	/* The connection is made under the configuration the session started
	   with: a reload since then must keep it out of the pool. */
	session->pool_key.generation = session->pool_generation;
	session->pool_key_valid = true;
	session->pool_fresh_authenticated_at = session->pool_key.authenticated_at;
	session->upstream = upstream_pool_take_client(session_pool, &session->pool_key, capabilities,
						      sizeof(capabilities), text, sizeof(text), &fresh);
	if (session->upstream != NULL) {
		session_login_pooled(session, capabilities, text, fresh);
		return true;
	}
	session->pool_waiter = upstream_pool_wait(session_pool, &session->pool_key, UPSTREAM_POOL_WAIT_MSECS,
						  session_pool_wait_done, session);
	if (session->pool_waiter == NULL)
		return false;
	log_debug("session %lu: login as %s: waiting for a connection to upstream %s on its way back to the pool",
		  session->id, session->user, upstream->name);
	session->state = SESSION_STATE_LOGIN;
	return true;
}

/* No pooled connection after all: the login goes to a new one with the
   credentials still kept. */
static void session_pool_login_anew(struct session *session)
{
	const struct conf_upstream *upstream = conf_upstream_for_user(session->conf, session->user);

	free(session->login_capabilities); /* the fresh login brings its own */
	session->login_capabilities = NULL;
	session->pool_key.authenticated_at = session->pool_fresh_authenticated_at;
	if (upstream == NULL) { /* never: the session's conf found it a moment ago */
		session_login_refused(session, "[UNAVAILABLE] No upstream server is configured for this user");
		return;
	}
	session_login_connect(session, upstream);
}

/* The connection the login waited for is back and answered just now, or
   did not come (then a fresh login). */
static void session_pool_wait_done(void *connection, const char *capabilities, const char *text,
				   const char *why, void *context)
{
	struct session *session = context;

	session->pool_waiter = NULL;
	if (session->state == SESSION_STATE_CLOSING) {
		/* the client left meanwhile: back to the pool with it, as it
		   came (the pool's callbacks still set, just answered) */
		if (connection != NULL)
			upstream_pool_put(session_pool, &session->pool_key, connection, capabilities, text);
		return;
	}
	if (connection == NULL) {
		log_info("session %lu: login as %s: the pooled connection to upstream %s it waited for did not "
			 "come (%s): logging in anew", session->id, session->user, session->upstream_name, why);
		session_pool_login_anew(session);
		return;
	}
	session->upstream = connection;
	session_login_pooled(session, capabilities, text, true);
}

/* The pooled connection is dead or hung: it is closed (no LOGOUT: it
   can't be trusted to answer) and the login goes to a new connection. */
static void session_pool_check_failed(struct session *session, const char *why)
{
	evtimer_del(session->pool_check_timer);
	log_info("session %lu: login as %s: the pooled connection to upstream %s is not usable (%s): "
		 "logging in anew", session->id, session->user, session->upstream_name, why);
	imap_client_free(&session->upstream); /* safe inside its own callback */
	session_pool_login_anew(session);
}

static void session_pool_check_done(struct imap_client *client, struct imap_client_command *command,
				    const struct imap_client_result *result, void *context)
{
	struct session *session = context;

	(void)command;
	if (session->state == SESSION_STATE_CLOSING)
		return; /* session_free frees the connection */
	if (result->status != IMAP_CLIENT_STATUS_OK ||
	    imap_client_get_state(client) != IMAP_CLIENT_STATE_AUTHENTICATED) {
		session_pool_check_failed(session, result->status == IMAP_CLIENT_STATUS_ABORT ? result->text :
					  "NOOP not answered OK");
		return;
	}
	evtimer_del(session->pool_check_timer);
	log_info("session %lu: login as %s: a pooled connection to upstream %s (NOOP answered), no login sent "
		 "upstream", session->id, session->user, session->upstream_name);
	session_wipe_credentials(session);
	session_login_accepted(session, session->login_capabilities, session->login_text);
}

static void session_pool_check_timeout(evutil_socket_t fd, short what, void *context)
{
	struct session *session = context;
	char why[64];

	(void)fd;
	(void)what;
	if (session->state != SESSION_STATE_LOGIN || session->upstream == NULL)
		return;
	snprintf(why, sizeof(why), "no answer to NOOP within %d ms", SESSION_POOL_CHECK_MSECS);
	session_pool_check_failed(session, why); /* the pending NOOP ends silently with the connection */
}

/* Connects to upstream for session->user and logs in there with the
   credentials still stored (password or SASL initial response). */
static void session_login_connect(struct session *session, const struct conf_upstream *upstream)
{
	const char *error;

	session->upstream = upstream_client_new(session->base, session->conf, upstream, &error);
	if (session->upstream == NULL) {
		log_error("session %lu: upstream %s: %s", session->id, upstream->name, error);
		session_login_refused(session, "[UNAVAILABLE] The upstream server is not available");
		return;
	}
	imap_client_set_closed_callback(session->upstream, session_upstream_closed, session);
	session->state = SESSION_STATE_LOGIN;
	imap_client_connect(session->upstream, session_upstream_connected, session);
}

/* Logs in for session->user, on a pooled connection when there is one,
   with the credentials already stored (password or SASL initial response). */
static void session_login_start(struct session *session)
{
	const struct conf_upstream *upstream = conf_upstream_for_user(session->conf, session->user);

	if (upstream == NULL) {
		log_info("session %lu: login as %s: no upstream is configured for this user", session->id,
			 session->user);
		session_login_refused(session, "[UNAVAILABLE] No upstream server is configured for this user");
		return;
	}
	session->upstream_name = upstream->name;
	if (session_login_from_pool(session, upstream))
		return;
	session_login_connect(session, upstream);
}

/* Copies an astring argument into a new NUL-terminated string; NULL when
   it is not one or holds a NUL. */
static char *session_astring_dup(const struct imap_arg *arg)
{
	const char *str;
	size_t len;
	char *copy;

	if (!imap_arg_get_astring(arg, &str, &len) || memchr(str, '\0', len) != NULL)
		return NULL;
	copy = malloc(len + 1);
	if (copy != NULL) {
		memcpy(copy, str, len);
		copy[len] = '\0';
	}
	return copy;
}

/* The most bytes (lines and literals) a pre-login command with literals
   may gather: as much as the largest LOGIN. */
static size_t session_gathered_max(const struct session *session)
{
	return session->conf->limit_line + SESSION_LOGIN_LITERALS_MAX * (size_t)session->conf->limit_literal_preauth;
}

/* Parses a whole pre-login command (without its last CRLF, literals
   "{4}\r\nuser" included, already held to the pre-login limits, so kept
   inline) into a new parser, *parser_r (NULL when out of memory). */
static enum imap_parser_result session_parse_gathered(const struct session *session, const char *line,
						      size_t len, struct imap_parser **parser_r)
{
	struct imap_parser *parser = imap_parser_new();
	struct imap_parser_limits limits;
	enum imap_parser_result result;
	size_t consumed, pos = 0;

	*parser_r = parser;
	if (parser == NULL)
		return IMAP_PARSER_ERROR;
	imap_parser_get_limits(parser, &limits);
	if (limits.max_inline_literal < session_gathered_max(session))
		limits.max_inline_literal = session_gathered_max(session);
	if (limits.max_line < session->conf->limit_line)
		limits.max_line = session->conf->limit_line;
	imap_parser_set_limits(parser, &limits);
	do {
		result = imap_parser_feed_bytes(parser, line + pos, len - pos, &consumed);
		pos += consumed;
	} while (result == IMAP_PARSER_LITERAL_ANNOUNCED);
	if (result == IMAP_PARSER_NEED_MORE)
		result = imap_parser_feed_bytes(parser, "\r\n", 2, &consumed);
	return result;
}

/* LOGIN user password: the whole command without its last CRLF, literals
   ("{4}\r\nuser") included. */
static void session_handle_login(struct session *session, const char *tag, const char *line, size_t len)
{
	struct imap_parser *parser;
	const struct imap_arg *args;
	enum imap_parser_result result;
	char *user = NULL;

	snprintf(session->login_tag, sizeof(session->login_tag), "%s", tag);
	result = session_parse_gathered(session, line, len, &parser);
	if (result != IMAP_PARSER_LINE_COMPLETE || (args = imap_parser_get_line(parser))->list_count != 4 ||
	    (user = session_astring_dup(&args->list[2])) == NULL ||
	    (session->login_password = session_astring_dup(&args->list[3])) == NULL ||
	    user[0] == '\0' || strlen(user) >= sizeof(session->user)) {
		session_send(session, "%s BAD Invalid LOGIN arguments\r\n", tag);
		session_wipe_credentials(session);
		free(user);
		if (parser != NULL)
			imap_parser_wipe(parser); /* the password is in its buffers */
		imap_parser_free(&parser);
		session_count_bad(session);
		return;
	}
	snprintf(session->user, sizeof(session->user), "%s", user);
	free(user);
	imap_parser_wipe(parser);
	imap_parser_free(&parser);
	session_login_start(session);
}

/* Makes room for extra more bytes of a LOGIN being gathered. The old
   buffer is wiped: it may hold a password. Returns false when out of memory. */
static bool session_login_command_reserve(struct session *session, size_t extra)
{
	size_t size = session->login_command_size;
	char *bigger;

	if (session->login_command_len + extra <= size)
		return true;
	if (size < 256)
		size = 256;
	while (size < session->login_command_len + extra)
		size *= 2;
	bigger = malloc(size);
	if (bigger == NULL)
		return false;
	if (session->login_command != NULL) {
		memcpy(bigger, session->login_command, session->login_command_len);
		OPENSSL_cleanse(session->login_command, session->login_command_len);
		free(session->login_command);
	}
	session->login_command = bigger;
	session->login_command_size = size;
	return true;
}

static void session_handle_id(struct session *session, const char *tag, const char *line, size_t len);

/* A line of a LOGIN or ID with literals (the first one too,
   session->login_tag and login_command_is_id set): gathers it, lets the
   client send the next literal, or handles the command once complete. */
static void session_login_continue(struct session *session, const char *line, size_t len)
{
	uint64_t literal_size = 0;
	enum session_literal literal = session_line_literal(line, len, &literal_size);
	bool is_id = session->login_command_is_id;
	const char *verb = is_id ? "ID" : "LOGIN";
	unsigned int literals_max = is_id ? SESSION_ID_LITERALS_MAX : SESSION_LOGIN_LITERALS_MAX;
	/* a LOGIN is bounded by its two literals already */
	bool too_long = is_id && (literal_size > session_gathered_max(session) ||
				  session->login_command_len + len + literal_size > session_gathered_max(session));
	char tag[SESSION_TAG_MAX + 1];
	char *command;
	size_t command_len;

	if (!session_login_command_reserve(session, len + 2)) {
		session_close(session, "out of memory", "Server out of memory");
		return;
	}
	memcpy(session->login_command + session->login_command_len, line, len);
	session->login_command_len += len;
	snprintf(tag, sizeof(tag), "%s", session->login_tag);
	if (literal == SESSION_LITERAL_NONE && too_long) {
		session_wipe_credentials(session);
		session_send(session, "%s BAD Invalid %s arguments: too long\r\n", tag, verb);
		session_count_bad(session);
		return;
	}
	if (literal == SESSION_LITERAL_NONE) {
		/* complete: the buffer leaves the session, so any way out of
		   the handler can't free it under our feet */
		command = session->login_command;
		command_len = session->login_command_len;
		session->login_command = NULL;
		session_wipe_credentials(session);
		if (is_id)
			session_handle_id(session, tag, command, command_len);
		else
			session_handle_login(session, tag, command, command_len);
		OPENSSL_cleanse(command, command_len);
		free(command);
		return;
	}
	if (literal == SESSION_LITERAL_INVALID) {
		session_wipe_credentials(session);
		session_send(session, "%s BAD Invalid literal size\r\n", tag);
		session_count_bad(session);
		return;
	}
	if (literal_size > session->conf->limit_literal_preauth || ++session->login_literals > literals_max ||
	    too_long) {
		log_info("session %lu: %s literal of %llu bytes refused (the limit before login is %llu "
			 "bytes, %u literals, %zu bytes in all)", session->id, verb, (unsigned long long)literal_size,
			 (unsigned long long)session->conf->limit_literal_preauth, literals_max,
			 session_gathered_max(session));
		session_wipe_credentials(session);
		if (literal == SESSION_LITERAL_SYNC) {
			/* no "+": the client sends no literal (RFC 3501 7.5) */
			session_send(session, "%s BAD Invalid %s arguments: literal too large or too many\r\n",
				     tag, verb);
			session_count_bad(session);
		} else if (literal_size > session->conf->limit_literal_preauth) {
			session_close(session, "literal too large", "Literal too large before login");
		} else {
			/* already on its way: dropped, with the rest of the command */
			snprintf(session->pending_reply, sizeof(session->pending_reply),
				 "%s BAD Invalid %s arguments: too many literals or too long\r\n", tag, verb);
			session->literal_to_discard = literal_size;
			session->discarding_command = true;
		}
		return;
	}
	if (!session_login_command_reserve(session, 2 + (size_t)literal_size)) {
		session_close(session, "out of memory", "Server out of memory");
		return;
	}
	memcpy(session->login_command + session->login_command_len, "\r\n", 2);
	session->login_command_len += 2;
	session->login_literal_left = literal_size;
	if (literal == SESSION_LITERAL_SYNC)
		session_send(session, "+ Ready for literal data\r\n");
}

/* ID before login (RFC 2971): the proxy's own name and version. The
   client's fields (strings, literals included) are only checked; after
   login ID goes upstream. */
static void session_handle_id(struct session *session, const char *tag, const char *line, size_t len)
{
	struct imap_parser *parser;
	const struct imap_arg *args, *fields;
	unsigned int count = 0;
	enum imap_parser_result result = session_parse_gathered(session, line, len, &parser);
	bool valid;

	valid = result == IMAP_PARSER_LINE_COMPLETE && (args = imap_parser_get_line(parser))->list_count == 3 &&
		(imap_arg_is_nil(&args->list[2]) ||
		 (imap_arg_get_list(&args->list[2], &fields, &count) && count % 2 == 0 &&
		  count <= 2 * SESSION_ID_PAIRS_MAX));
	for (unsigned int i = 0; valid && i < count; i++) {
		const char *str;
		size_t str_len;

		valid = i % 2 == 0 ? imap_arg_get_string(&fields[i], &str, &str_len) :
				     imap_arg_get_nstring(&fields[i], &str, &str_len);
	}
	imap_parser_free(&parser);
	if (!valid) {
		session_send(session, "%s BAD Invalid ID arguments\r\n", tag);
		session_count_bad(session);
		return;
	}
	session_send(session, "* ID (\"name\" \"%s\" \"version\" \"%s\")\r\n%s OK ID completed\r\n",
		     PACKAGE_NAME, PACKAGE_VERSION, tag);
}

/* The client's initial response (base64, "=" for empty) to AUTHENTICATE. */
static void session_auth_initial(struct session *session, const char *response, size_t len)
{
	unsigned char *decoded;
	size_t decoded_len = 0;
	enum imap_sasl_user_result found;

	if (len == 1 && response[0] == '*') {
		session_send(session, "%s BAD AUTHENTICATE cancelled\r\n", session->login_tag);
		session->state = SESSION_STATE_NOT_AUTHENTICATED;
		return;
	}
	session->auth_initial = malloc(len + 1);
	if (session->auth_initial == NULL) {
		session_send(session, "%s NO [UNAVAILABLE] Server out of memory\r\n", session->login_tag);
		session->state = SESSION_STATE_NOT_AUTHENTICATED;
		return;
	}
	memcpy(session->auth_initial, response, len);
	session->auth_initial[len] = '\0';
	if (len == 1 && response[0] == '=')
		decoded = (unsigned char *)strdup("");
	else
		decoded = imap_sasl_base64_decode(session->auth_initial, &decoded_len);
	found = decoded == NULL ? IMAP_SASL_USER_MALFORMED :
		imap_sasl_initial_response_user(session->auth_mechanism, decoded, decoded_len,
						session->user, sizeof(session->user));
	if (decoded != NULL) {
		OPENSSL_cleanse(decoded, decoded_len);
		free(decoded);
	}
	if (found != IMAP_SASL_USER_FOUND) {
		session_wipe_credentials(session);
		session->state = SESSION_STATE_NOT_AUTHENTICATED;
		session_send(session, "%s BAD Invalid %s initial response\r\n", session->login_tag,
			     session->auth_mechanism);
		session_count_bad(session);
		return;
	}
	if (strcmp(session->auth_mechanism, "LOGIN") == 0) {
		/* the user name was all of it: the password comes next */
		session_wipe_credentials(session);
		session_send(session, "+ " IMAP_SASL_LOGIN_PASSWORD_CHALLENGE "\r\n");
		session->auth_login_password = true;
		session->state = SESSION_STATE_AUTH_CLIENT;
		return;
	}
	session_login_start(session);
}

/* The client's answer to AUTHENTICATE LOGIN's password challenge: the
   login then goes upstream as a LOGIN would (and is pooled as one). */
static void session_auth_login_password(struct session *session, const char *response, size_t len)
{
	char *copy;
	unsigned char *password = NULL;
	size_t password_len = 0;

	session->auth_login_password = false;
	if (len == 1 && response[0] == '*') {
		session_send(session, "%s BAD AUTHENTICATE cancelled\r\n", session->login_tag);
		session->user[0] = '\0';
		session->state = SESSION_STATE_NOT_AUTHENTICATED;
		return;
	}
	copy = strndup(response, len);
	if (copy != NULL) {
		password = imap_sasl_base64_decode(copy, &password_len);
		OPENSSL_cleanse(copy, len);
		free(copy);
	}
	if (password == NULL || memchr(password, '\0', password_len) != NULL) {
		if (password != NULL) {
			OPENSSL_cleanse(password, password_len);
			free(password);
		}
		session->user[0] = '\0';
		session->state = SESSION_STATE_NOT_AUTHENTICATED;
		session_send(session, "%s BAD Invalid LOGIN response\r\n", session->login_tag);
		session_count_bad(session);
		return;
	}
	session->login_password = (char *)password; /* NUL-terminated by the decoder */
	session_login_start(session);
}

/* AUTHENTICATE mechanism [initial-response]. */
static void session_handle_authenticate(struct session *session, const char *tag, const char *args,
					size_t len)
{
	size_t mechanism_len = 0;
	bool is_login;

	snprintf(session->login_tag, sizeof(session->login_tag), "%s", tag);
	while (mechanism_len < len && args[mechanism_len] != ' ')
		mechanism_len++;
	if (mechanism_len == 0 || mechanism_len >= sizeof(session->auth_mechanism)) {
		session_send(session, "%s BAD Invalid AUTHENTICATE arguments\r\n", tag);
		session_count_bad(session);
		return;
	}
	memcpy(session->auth_mechanism, args, mechanism_len);
	session->auth_mechanism[mechanism_len] = '\0';
	for (char *p = session->auth_mechanism; *p != '\0'; p++)
		*p = (char)toupper((unsigned char)*p);
	/* one whose user the proxy can read, and that the upstream may take */
	if (!imap_sasl_user_mechanism_is_known(session->auth_mechanism) ||
	    upstream_probe_refuses_mechanism(session_probe, session->conf, session->auth_mechanism)) {
		session_send(session, "%s NO Unsupported authentication mechanism\r\n", tag);
		return;
	}
	is_login = strcmp(session->auth_mechanism, "LOGIN") == 0;
	if (mechanism_len == len || (is_login && len == mechanism_len + 2 && args[mechanism_len + 1] == '=')) {
		/* no SASL-IR (an empty one is none for LOGIN, as in Dovecot):
		   ask for it, with LOGIN's prompt or an empty challenge */
		session_send(session, "+ %s\r\n", is_login ? IMAP_SASL_LOGIN_USER_CHALLENGE : "");
		session->state = SESSION_STATE_AUTH_CLIENT;
		return;
	}
	if (mechanism_len + 1 >= len) {
		session_send(session, "%s BAD Invalid AUTHENTICATE arguments\r\n", tag);
		session_count_bad(session);
		return;
	}
	session_auth_initial(session, args + mechanism_len + 1, len - mechanism_len - 1);
}

/* A line the client sent after a "+" of AUTHENTICATE. */
static void session_handle_auth_response(struct session *session, const char *line, size_t len)
{
	struct imap_client_command *command = session->auth_command;

	if (command == NULL) {
		if (session->auth_login_password)
			session_auth_login_password(session, line, len);
		else
			session_auth_initial(session, line, len);
		return;
	}
	session->auth_command = NULL;
	session->state = SESSION_STATE_LOGIN;
	char *copy = strndup(line, len);

	if (copy == NULL) {
		imap_client_command_continue(command, "*");
		return;
	}
	imap_client_command_continue(command, copy);
	OPENSSL_cleanse(copy, len);
	free(copy);
}

/* ---- forwarding ---- */

/* One forwarded command: the client's tag to put back on the answer. */
struct session_forward {
	struct session *session;
	bool logout;
	char tag[]; /* the client's */
};

static void session_forward_free(void *context)
{
	free(context);
}

/* The upstream connection ended (any reason): so does a logged-in session. */
static void session_upstream_closed(struct imap_client *client, const char *reason, void *context)
{
	struct session *session = context;

	(void)client;
	session->open_command = NULL; /* freed with the connection */
	if (session->state != SESSION_STATE_FORWARDING)
		return; /* a login in progress hears of it from its command */
	log_info("session %lu: upstream %s: %s", session->id, session->upstream_name, reason);
	session_close(session, "upstream connection lost", "Upstream server connection lost");
}

/* Upstream bytes for the client: the exact bytes, with the client's tag. */
static int session_upstream_raw(struct imap_client *client, struct imap_client_command *command,
				enum imap_client_raw_kind kind, const unsigned char *data, size_t len,
				bool line_end, void *context)
{
	struct session *session = context;
	struct evbuffer *output;

	(void)line_end;
	if (session->state == SESSION_STATE_CLOSING)
		return 0;
	output = bufferevent_get_output(session->bev);
	if (kind == IMAP_CLIENT_RAW_TAGGED) {
		struct session_forward *forward = imap_client_command_get_context(command);

		evbuffer_add(output, forward->tag, strlen(forward->tag));
		session->bytes_out += strlen(forward->tag);
	} else if (kind == IMAP_CLIENT_RAW_CONTINUATION && command == session->open_command) {
		session->forward_literal_go_ahead = true;
	}
	evbuffer_add(output, data, len);
	session->bytes_out += len;
	if (kind == IMAP_CLIENT_RAW_CONTINUATION && command == session->open_command) {
		/* started once the "+" is written to the client's socket */
		if (evbuffer_get_length(output) > len)
			log_debug("session %lu: \"+\" queued behind %zu bytes of unsent output: "
				  "the literal timer starts once they are written", session->id,
				  evbuffer_get_length(output) - len);
		session_update_literal_timer(session);
	}
	if (evbuffer_get_length(output) > SESSION_OUTPUT_HIGH_WATER && !session->upstream_reading_paused) {
		/* resumed from session_write once the client has read it */
		session->upstream_reading_paused = true;
		imap_client_set_reading_paused(client, true);
		log_debug("session %lu: the client is not reading: reading from upstream paused", session->id);
	}
	return 0;
}

static void session_upstream_drained(struct imap_client *client, void *context)
{
	struct session *session = context;

	(void)client;
	if (session->waiting_upstream_output && session->state == SESSION_STATE_FORWARDING) {
		session->waiting_upstream_output = false;
		bufferevent_enable(session->bev, EV_READ);
		session_schedule_step(session);
	}
}

static void session_forward_done(struct imap_client *client, struct imap_client_command *command,
				 const struct imap_client_result *result, void *context)
{
	struct session_forward *forward = context;
	struct session *session = forward->session;
	bool logout = forward->logout; /* ending the command below frees forward */

	(void)client;
	session->forwarded_pending--;
	if (session->open_command == command && result->status != IMAP_CLIENT_STATUS_ABORT &&
	    (session->open_is_idle || (session->forward_literal > 0 && session->forward_literal_sync &&
				       !session->forward_literal_go_ahead))) {
		/* answered before the client sent all of it, and the client
		   sends nothing more: IDLE refused, or a {N} that got no "+".
		   Otherwise the upstream still reads the rest (a {N+} literal,
		   RFC 7888), which goes on to it. */
		session->open_command = NULL;
		session->forward_literal = 0;
		imap_client_raw_command_end(command);
	} else if (session->open_command == command && result->status == IMAP_CLIENT_STATUS_ABORT) {
		session->open_command = NULL;
	}
	session_update_literal_timer(session);
	if (result->status == IMAP_CLIENT_STATUS_ABORT)
		return; /* session_upstream_closed ends the session */
	if (logout) {
		session_close(session, "logged out", NULL);
		return;
	}
	if (session->forwarded_pending == 0)
		session_schedule_step(session); /* a local command may be waiting for its turn */
}

/* Reads the verb ("UID FETCH" as two words) of a command line at pos. */
static size_t session_read_verb(const char *line, size_t len, size_t pos, char *verb, size_t size)
{
	size_t n = 0;

	for (int words = 0; words < 2; words++) {
		size_t start = n;

		while (pos < len && line[pos] != ' ' && n + 1 < size)
			verb[n++] = (char)toupper((unsigned char)line[pos++]);
		verb[n] = '\0';
		if (words == 0 && strcmp(verb, "UID") == 0 && pos < len && n + 1 < size) {
			verb[n++] = ' ';
			pos++;
			continue;
		}
		(void)start;
		break;
	}
	return n;
}

/* Whether a forwarded command leaves the upstream connection in a state
   that UNSELECT can't undo, so it must not serve another session: ENABLE
   (RFC 5161), LANGUAGE and COMPARATOR (RFC 5255), a LOGIN or AUTHENTICATE
   after login (who is logged in), and RFC 7162's CONDSTORE-enabling
   commands, found by their words (CONDSTORE, MODSEQ, HIGHESTMODSEQ,
   [UN]CHANGEDSINCE, QRESYNC). A word that only looks like one (in a
   search text) costs a pooled connection, nothing else. */
static bool session_line_changes_state(const char *verb, const char *line, size_t len)
{
	static const char *const verbs[] = { "ENABLE", "LANGUAGE", "COMPARATOR", "LOGIN", "AUTHENTICATE" };
	static const char *const words[] = { "CONDSTORE", "MODSEQ", "CHANGEDSINCE", "QRESYNC" };

	for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
		if (strcmp(verb, verbs[i]) == 0)
			return true;
	for (size_t pos = 0; pos < len; pos++) {
		char c = (char)toupper((unsigned char)line[pos]);
		for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
			size_t word_len = strlen(words[i]);
			if (c == words[i][0] && len - pos >= word_len &&
			    strncasecmp(line + pos, words[i], word_len) == 0)
				return true;
		}
	}
	return false;
}

/* Handles a literal announced at the end of a forwarded line. Returns
   false when the session was closed (a literal over the limit). */
static bool session_forward_literal(struct session *session, enum session_literal literal, uint64_t size)
{
	if (literal == SESSION_LITERAL_NONE)
		return true;
	if (literal == SESSION_LITERAL_INVALID || size > session->conf->limit_literal) {
		log_info("session %lu: literal of %llu bytes, over the limit of %llu", session->id,
			 (unsigned long long)size, (unsigned long long)session->conf->limit_literal);
		session_close(session, "literal too large", "Literal too large");
		return false;
	}
	session->forward_literal = size;
	session->forward_literal_sync = literal == SESSION_LITERAL_SYNC;
	session->forward_literal_go_ahead = false;
	return true;
}

/* Whether the upstream connection may go to the pool at the client's
   LOGOUT: pooling on, nothing half-sent, no state that can't be undone,
   and a mailbox (if one is selected) that UNSELECT can leave. */
static bool session_can_pool(const struct session *session)
{
	enum imap_client_state state = imap_client_get_state(session->upstream);

	return session_pool != NULL && upstream_pool_is_enabled(session_pool) && session->pool_key_valid &&
	       session->login_capabilities != NULL &&
	       !session->pool_state_changed && session->open_command == NULL && session->forward_literal == 0 &&
	       (state == IMAP_CLIENT_STATE_AUTHENTICATED ||
		(state == IMAP_CLIENT_STATE_SELECTED && imap_client_has_capability(session->upstream, "UNSELECT")));
}

/* Answers the client's LOGOUT here and hands the upstream connection to
   the pool (which leaves a selected mailbox with UNSELECT first). */
static void session_logout_to_pool(struct session *session, const char *tag)
{
	struct imap_client *client = session->upstream;

	session_send(session, "* BYE imapcached logging out\r\n%s OK LOGOUT completed\r\n", tag);
	session->upstream = NULL;
	upstream_pool_put_client(session_pool, &session->pool_key, client, session->login_capabilities,
				 session->login_text);
	session_close(session, "logged out (upstream connection to the pool)", NULL);
}

/* The length of the tag at the start of line: RFC 3501 tag characters
   up to a space or the end; 0 when there is none. */
static size_t session_tag_length(const char *line, size_t len)
{
	size_t tag_len = 0;

	while (tag_len < len && session_tag_char((unsigned char)line[tag_len]))
		tag_len++;
	return tag_len < len && line[tag_len] != ' ' ? 0 : tag_len;
}

/* After login, the commands the proxy answers itself: CAPABILITY (what
   both sides carry) and those it can't carry. Returns true when verb is
   one of them, with *wait_r set when the answer must wait for those
   still pending (answers go out in order). */
static bool session_answer_locally(struct session *session, const char *tag, const char *verb, bool *wait_r)
{
	*wait_r = false;
	if (strcmp(verb, "CAPABILITY") != 0 && strcmp(verb, "STARTTLS") != 0 && strcmp(verb, "COMPRESS") != 0 &&
	    strcmp(verb, "NOTIFY") != 0 && strcmp(verb, "UNAUTHENTICATE") != 0)
		return false;
	if (session->forwarded_pending > 0) {
		*wait_r = true;
		return true;
	}
	if (strcmp(verb, "CAPABILITY") == 0) {
		/* the login's list: the upstream's words in its own case */
		session_send(session, "* CAPABILITY %s\r\n%s OK Capability completed.\r\n",
			     session->login_capabilities != NULL ? session->login_capabilities : "IMAP4rev1", tag);
	} else if (strcmp(verb, "STARTTLS") == 0) {
		session_send(session, "%s BAD STARTTLS is not allowed after login\r\n", tag);
	} else {
		session_send(session, "%s NO [CANNOT] imapcached does not carry %s\r\n", tag, verb);
	}
	return true;
}

/* A logged-in client's command line (without CRLF) that starts a command.
   It goes upstream as the client sent it, its tag included: every reply,
   and every correlator that names the tag (RFC 4731 ESEARCH, RFC 5267
   updates and CANCELUPDATE), is then the upstream's as it is, and so is
   the upstream's verdict on the tag itself (Dovecot refuses "]"). A line
   with a tag and no command goes too, for the upstream's tagged BAD.
   Returns false when the line must wait (a local answer while forwarded
   ones are still pending) and was not consumed. */
static bool session_forward_command(struct session *session, const char *line, size_t len)
{
	char verb[SESSION_VERB_MAX] = "";
	size_t tag_len = session_tag_length(line, len);
	enum session_literal literal;
	uint64_t literal_size = 0;
	struct session_forward *forward;
	struct imap_client_command *command;
	bool wait;

	if (tag_len == 0 || memchr(line, '\0', len) != NULL) {
		session_send(session, "* BAD Invalid tag\r\n");
		session_count_bad(session);
		return true;
	}
	forward = calloc(1, sizeof(*forward) + tag_len + 1);
	if (forward == NULL) {
		session_close(session, "out of memory", "Server out of memory");
		return true;
	}
	forward->session = session;
	memcpy(forward->tag, line, tag_len);
	if (tag_len < len)
		session_read_verb(line, len, tag_len + 1, verb, sizeof(verb));
	literal = session_line_literal(line, len, &literal_size);

	/* only a connection that may be pooled needs its state watched */
	if (session->pool_key_valid && !session->pool_state_changed && session_line_changes_state(verb, line, len))
		session->pool_state_changed = true;
	if (literal == SESSION_LITERAL_NONE && strcmp(verb, "LOGOUT") == 0 && session_can_pool(session)) {
		wait = session->forwarded_pending > 0; /* a clean connection first: every answer is in */
		if (!wait)
			session_logout_to_pool(session, forward->tag);
		free(forward);
		return !wait;
	}
	if (literal == SESSION_LITERAL_NONE && session_answer_locally(session, forward->tag, verb, &wait)) {
		free(forward);
		return !wait;
	}
	if (literal == SESSION_LITERAL_INVALID ||
	    (literal == SESSION_LITERAL_SYNC && literal_size > session->conf->limit_literal)) {
		/* refused before anything went upstream: the client never got "+" */
		log_info("session %lu: literal of %llu bytes refused, over the limit of %llu", session->id,
			 (unsigned long long)literal_size, (unsigned long long)session->conf->limit_literal);
		session_send(session, "%s BAD Literal too large\r\n", forward->tag);
		free(forward);
		return true;
	}
	forward->logout = strcmp(verb, "LOGOUT") == 0;
	command = imap_client_raw_command_new(session->upstream, forward->tag, verb, session_forward_done, forward);
	imap_client_command_set_destroy(command, session_forward_free, forward);
	session->forwarded_pending++;
	imap_client_raw_command_write(command, line + tag_len, len - tag_len);
	imap_client_raw_command_write(command, "\r\n", 2);
	if (!session_forward_literal(session, literal, literal_size))
		return true;
	if (literal != SESSION_LITERAL_NONE || strcmp(verb, "IDLE") == 0) {
		session->open_command = command;
		session->open_is_idle = strcmp(verb, "IDLE") == 0;
	} else {
		imap_client_raw_command_end(command);
	}
	return true;
}

/* A line that continues the open command (after a literal; DONE of IDLE). */
static void session_forward_continuation(struct session *session, const char *line, size_t len)
{
	enum session_literal literal;
	uint64_t literal_size = 0;
	struct imap_client_command *command = session->open_command;

	literal = session->open_is_idle ? SESSION_LITERAL_NONE : session_line_literal(line, len, &literal_size);
	if (session->pool_key_valid && !session->open_is_idle && !session->pool_state_changed &&
	    session_line_changes_state("", line, len))
		session->pool_state_changed = true;
	imap_client_raw_command_write(command, line, len);
	imap_client_raw_command_write(command, "\r\n", 2);
	if (!session_forward_literal(session, literal, literal_size))
		return;
	if (literal == SESSION_LITERAL_NONE) {
		session->open_command = NULL;
		imap_client_raw_command_end(command);
	}
}

/* Logged in: passes the client's bytes upstream, a bounded amount per call. */
static void session_forward_input(struct session *session)
{
	struct evbuffer *input = bufferevent_get_input(session->bev);

	for (unsigned int done = 0; done < SESSION_COMMANDS_PER_EVENT; done++) {
		struct evbuffer_ptr eol;
		size_t eol_len = 0, line_len;
		char *line;

		if (session->state != SESSION_STATE_FORWARDING)
			return;
		if (imap_client_get_output_pending(session->upstream) > SESSION_UPSTREAM_HIGH_WATER) {
			/* resumed from session_upstream_drained */
			session->waiting_upstream_output = true;
			bufferevent_disable(session->bev, EV_READ);
			return;
		}
		if (session->forward_literal > 0) {
			size_t available = evbuffer_get_length(input);
			size_t take = available < session->forward_literal ? available : (size_t)session->forward_literal;

			if (take == 0)
				return;
			if (session->open_command != NULL) {
				struct evbuffer *chunk = evbuffer_new();

				if (chunk == NULL) {
					session_close(session, "out of memory", "Server out of memory");
					return;
				}
				evbuffer_remove_buffer(input, chunk, take);
				imap_client_raw_command_write_buffer(session->open_command, chunk);
				evbuffer_free(chunk);
			} else {
				evbuffer_drain(input, take);
			}
			session->bytes_in += take;
			session->forward_literal -= take;
			session->literal_bytes_read = true;
			continue;
		}
		eol = evbuffer_search_eol(input, NULL, &eol_len, EVBUFFER_EOL_CRLF);
		if (eol.pos < 0 || (size_t)eol.pos > session->conf->limit_line) {
			if (eol.pos >= 0 || evbuffer_get_length(input) > session->conf->limit_line) {
				log_info("session %lu: command line longer than %zu bytes", session->id,
					 session->conf->limit_line);
				session->bytes_in += evbuffer_get_length(input); /* received, if refused */
				session_close(session, "line too long", "Command line too long");
			}
			return;
		}
		line_len = (size_t)eol.pos;
		line = malloc(line_len + 1);
		if (line == NULL) {
			session_close(session, "out of memory", "Server out of memory");
			return;
		}
		evbuffer_copyout(input, line, line_len);
		line[line_len] = '\0';
		if (session->open_command != NULL) {
			session_forward_continuation(session, line, line_len);
		} else if (!session_forward_command(session, line, line_len)) {
			free(line);
			return; /* waits for the forwarded commands to be answered */
		}
		free(line);
		evbuffer_drain(input, line_len + eol_len);
		session->bytes_in += line_len + eol_len;
	}
	if (evbuffer_get_length(input) > 0)
		session_schedule_step(session);
}

/* Handles one command line (without CRLF). */
static void session_handle_line(struct session *session, char *line, size_t len)
{
	char tag[SESSION_TAG_MAX + 1];
	char command[32];
	char capability[UPSTREAM_CAPABILITY_MAX];
	size_t tag_len = 0, command_len = 0, pos;
	enum session_literal literal;
	uint64_t literal_size = 0;
	bool is_login;

	literal = session_line_literal(line, len, &literal_size);
	if (session->discarding_command) {
		/* The continuation of a refused command after a {N+} literal. */
		if (literal == SESSION_LITERAL_NONSYNC) {
			session->literal_to_discard = literal_size;
			return;
		}
		session->discarding_command = false;
		session_send(session, "%s", session->pending_reply);
		return;
	}
	if (memchr(line, '\0', len) != NULL) {
		session_send(session, "* BAD NUL bytes are not allowed in a command\r\n");
		session_count_bad(session);
		return;
	}
	tag_len = session_tag_length(line, len);
	if (tag_len == 0 || tag_len > SESSION_TAG_MAX) {
		session_send(session, "* BAD Invalid tag\r\n");
		log_debug("session %lu: invalid command line", session->id);
		session_count_bad(session);
		return;
	}
	memcpy(tag, line, tag_len);
	tag[tag_len] = '\0';
	if (tag_len == len) {
		session_send(session, "%s BAD Missing command\r\n", tag);
		session_count_bad(session);
		return;
	}
	pos = tag_len + 1;
	while (pos + command_len < len && command_len < sizeof(command) - 1 &&
	       session_atom_char((unsigned char)line[pos + command_len]))
		command_len++;
	if (command_len == 0 || (pos + command_len < len && line[pos + command_len] != ' ')) {
		session_send(session, "%s BAD Invalid command name\r\n", tag);
		session_count_bad(session);
		return;
	}
	memcpy(command, line + pos, command_len);
	command[command_len] = '\0';
	is_login = strcasecmp(command, "LOGIN") == 0 || strcasecmp(command, "AUTHENTICATE") == 0;

	if (literal == SESSION_LITERAL_INVALID) {
		session_send(session, "%s BAD Invalid literal size\r\n", tag);
		session_count_bad(session);
		return;
	}
	if (literal != SESSION_LITERAL_NONE && literal_size > session->conf->limit_literal_preauth) {
		log_info("session %lu: literal of %llu bytes before login, over the limit of %llu",
			 session->id, (unsigned long long)literal_size,
			 (unsigned long long)session->conf->limit_literal_preauth);
		if (literal == SESSION_LITERAL_SYNC) {
			session_send(session, "%s BAD Literal too large before login\r\n", tag);
			session_count_bad(session);
		} else {
			session_close(session, "literal too large", "Literal too large before login");
		}
		return;
	}
	if (literal != SESSION_LITERAL_NONE &&
	    ((strcasecmp(command, "LOGIN") == 0 && session_login_allowed(session)) || strcasecmp(command, "ID") == 0)) {
		snprintf(session->login_tag, sizeof(session->login_tag), "%s", tag);
		session->login_command_is_id = strcasecmp(command, "ID") == 0;
		session_login_continue(session, line, len);
		return;
	}
	if (literal != SESSION_LITERAL_NONE) {
		/* Refused without "+" (RFC 3501 7.5): a {N} literal never comes;
		   a {N+} one is already on its way and must be dropped. */
		if (is_login)
			session_format_login_refusal(session, tag, session->pending_reply,
						     sizeof(session->pending_reply));
		else
			snprintf(session->pending_reply, sizeof(session->pending_reply),
				 "%s BAD Literals are not accepted before login\r\n", tag);
		if (literal == SESSION_LITERAL_SYNC) {
			session_send(session, "%s", session->pending_reply);
		} else {
			session->literal_to_discard = literal_size;
			session->discarding_command = true;
		}
		if (is_login)
			log_info("session %lu: %s with a literal refused", session->id, command);
		return;
	}

	if (strcasecmp(command, "CAPABILITY") == 0) {
		session_format_capability(session, capability, sizeof(capability));
		session_send(session, "* CAPABILITY %s\r\n%s OK CAPABILITY completed\r\n", capability, tag);
	} else if (strcasecmp(command, "NOOP") == 0) {
		session_send(session, "%s OK NOOP completed\r\n", tag);
	} else if (strcasecmp(command, "ID") == 0) {
		session_handle_id(session, tag, line, len);
	} else if (strcasecmp(command, "LOGOUT") == 0) {
		session_send(session, "* BYE imapcached logging out\r\n%s OK LOGOUT completed\r\n", tag);
		session_close(session, "logged out", NULL);
	} else if (strcasecmp(command, "STARTTLS") == 0) {
		if (!session->starttls_offered || session->tls_active) {
			session_send(session, "%s BAD STARTTLS is not available %s\r\n", tag,
				     session->tls_active ? "on a TLS connection" : "on this listener");
			session_count_bad(session);
			return;
		}
		session_send(session, "%s OK Begin TLS negotiation now\r\n", tag);
		session->state = SESSION_STATE_STARTTLS;
		bufferevent_disable(session->bev, EV_READ);
	} else if (is_login && !session_login_allowed(session)) {
		char reply[sizeof(session->pending_reply)];

		session_format_login_refusal(session, tag, reply, sizeof(reply));
		session_send(session, "%s", reply);
		log_info("session %lu: %s refused: plaintext on a listener that is not loopback", session->id,
			 command);
	} else if (strcasecmp(command, "LOGIN") == 0) {
		session_handle_login(session, tag, line, len);
	} else if (is_login) {
		session_handle_authenticate(session, tag, line + pos + command_len + (pos + command_len < len),
					    len - pos - command_len - (pos + command_len < len));
	} else if (session_is_later_command(command)) {
		session_send(session, "%s BAD %s needs a login first\r\n", tag, command);
		session_count_bad(session);
	} else {
		session_send(session, "%s BAD Unknown command\r\n", tag);
		session_count_bad(session);
	}
}

/* Handles complete lines from the input, a bounded number per call. */
static void session_read_input(struct session *session)
{
	struct evbuffer *input = bufferevent_get_input(session->bev);
	struct evbuffer *output = bufferevent_get_output(session->bev);

	if (session->state == SESSION_STATE_FORWARDING) {
		session_forward_input(session);
		return;
	}
	for (unsigned int done = 0; done < SESSION_COMMANDS_PER_EVENT; done++) {
		struct evbuffer_ptr eol;
		size_t eol_len = 0, line_len;
		char *line;

		if (session->state != SESSION_STATE_NOT_AUTHENTICATED &&
		    session->state != SESSION_STATE_AUTH_CLIENT)
			return;
		if (evbuffer_get_length(output) > SESSION_OUTPUT_HIGH_WATER) {
			/* The client is not reading its replies: read no more commands
			   until they drain (resumed from session_write). */
			bufferevent_disable(session->bev, EV_READ);
			session->reading_paused = true;
			return;
		}
		if (session->login_literal_left > 0) {
			size_t available = evbuffer_get_length(input);
			size_t take = available < session->login_literal_left ?
				available : (size_t)session->login_literal_left;

			if (take == 0)
				return;
			evbuffer_remove(input, session->login_command + session->login_command_len, take);
			session->login_command_len += take;
			session->bytes_in += take;
			session->login_literal_left -= take;
			session->literal_bytes_read = true;
			continue;
		}
		if (session->literal_to_discard > 0) {
			size_t available = evbuffer_get_length(input);
			size_t drop = available < session->literal_to_discard ?
				available : (size_t)session->literal_to_discard;

			if (drop == 0)
				return;
			evbuffer_drain(input, drop);
			session->bytes_in += drop;
			session->literal_to_discard -= drop;
			continue;
		}
		eol = evbuffer_search_eol(input, NULL, &eol_len, EVBUFFER_EOL_CRLF);
		if (eol.pos < 0) {
			if (evbuffer_get_length(input) > session->conf->limit_line) {
				log_info("session %lu: command line longer than %zu bytes", session->id,
					 session->conf->limit_line);
				session->bytes_in += evbuffer_get_length(input); /* received, if refused */
				session_close(session, "line too long", "Command line too long");
			}
			return;
		}
		line_len = (size_t)eol.pos;
		if (line_len > session->conf->limit_line) {
			log_info("session %lu: command line longer than %zu bytes", session->id,
				 session->conf->limit_line);
			session->bytes_in += evbuffer_get_length(input); /* received, if refused */
			session_close(session, "line too long", "Command line too long");
			return;
		}
		line = malloc(line_len + 1);
		if (line == NULL) {
			session_close(session, "out of memory", "Server out of memory");
			return;
		}
		evbuffer_remove(input, line, line_len);
		evbuffer_drain(input, eol_len);
		line[line_len] = '\0';
		session->bytes_in += line_len + eol_len;
		if (session->state == SESSION_STATE_AUTH_CLIENT)
			session_handle_auth_response(session, line, line_len);
		else if (session->login_command != NULL)
			session_login_continue(session, line, line_len);
		else
			session_handle_line(session, line, line_len);
		OPENSSL_cleanse(line, line_len); /* it may hold a password */
		free(line);
		if (session->state == SESSION_STATE_STARTTLS && evbuffer_get_length(input) > 0) {
			/* Plaintext sent after STARTTLS, before the handshake, could be
			   an injected command (CVE-2011-0411 and kin): drop it. */
			log_warning("session %lu: dropped %zu bytes sent after STARTTLS before the handshake",
				    session->id, evbuffer_get_length(input));
			session->bytes_in += evbuffer_get_length(input);
			evbuffer_drain(input, evbuffer_get_length(input));
		}
	}
	if (evbuffer_get_length(input) > 0 && (session->state == SESSION_STATE_NOT_AUTHENTICATED ||
						 session->state == SESSION_STATE_AUTH_CLIENT ||
						 session->state == SESSION_STATE_FORWARDING))
		session_schedule_step(session); /* more pipelined commands: after other clients */
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
	(void)bev;
	session_process_input(context);
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
			imap_client_set_reading_paused(session->upstream, false);
		}
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
	if (session->step_event == NULL || session->literal_timer == NULL || session->pool_check_timer == NULL)
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
	SSL_CTX_free(session->tls_context);
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
