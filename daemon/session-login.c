/* SPDX-License-Identifier: MIT */
/* session-login: a session's LOGIN, AUTHENTICATE and ID before login, and its login upstream (fresh or pooled). */
#include "config.h"
#include "session-private.h"
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

/* ---- login upstream ---- */


/* Ends a login that did not work: the client gets "tag NO reply". */
static void session_login_refused(struct session *session, const char *reply)
{
	evtimer_del(session->login_timer);
	if (session->login_answered) { /* the replay's login: the client was told OK long ago */
		log_info("session %lu: login as %s: logging in anew on upstream %s failed (%s)", session->id,
			 session->user, session->upstream_name, reply);
		session_wipe_credentials(session);
		session_close(session, "upstream connection lost", "Upstream server connection lost");
		return;
	}
	session_send(session, "%s NO %s\r\n", session->login_tag, reply);
	session_wipe_credentials(session);
	imap_client_free(&session->upstream); /* safe inside its own callback */
	evtimer_del(session->pool_check_timer);
	session->upstream_unproven = false;
	session->upstream_proof = NULL;
	session->auth_command = NULL;
	session->user[0] = '\0';
	session->state = SESSION_STATE_NOT_AUTHENTICATED;
	session_schedule_step(session); /* commands the client pipelined meanwhile */
}

/* Whether the account already has limits.sessions_per_account sessions:
   then the login the upstream just accepted is refused with NO [LIMIT]
   (only now, so that nothing is said of an account to whoever lacks its
   password) and its connection goes to the pool (which logs it out when
   pooling is off). */
static bool session_login_over_limit(struct session *session, const char *capabilities, const char *text)
{
	struct imap_client *client = session->upstream;

	if (session_count_account(session->upstream_name, session->user) < session->conf->limit_sessions_per_account)
		return false;
	log_info("session %lu: login as %s on upstream %s refused: %u sessions of the account already "
		 "(limits.sessions_per_account)", session->id, session->user, session->upstream_name,
		 session->conf->limit_sessions_per_account);
	session->upstream = NULL;
	if (session_pool != NULL && session->pool_key_valid && !session->upstream_unproven)
		upstream_pool_put_client(session_pool, &session->pool_key, client, capabilities, text);
	else
		imap_client_free(&client); /* no pool: the connection just closes */
	session_login_refused(session, "[LIMIT] Too many sessions of this account");
	return true;
}

/* The login worked: answer with what both sides can do, start forwarding. */
static void session_login_accepted(struct session *session, const char *capabilities, const char *text)
{
	char filtered[UPSTREAM_CAPABILITY_MAX];
	const struct timeval idle = { session->conf->timeout_idle, 0 };

	evtimer_del(session->login_timer);
	upstream_filter_capabilities(capabilities, filtered, sizeof(filtered));
	if (!session->login_answered) {
		if (session_login_over_limit(session, filtered, text))
			return;
		upstream_filter_capabilities(capabilities, filtered, sizeof(filtered));
		session_send(session, "%s OK [CAPABILITY %s] %s\r\n", session->login_tag, filtered, text);
		session->login_answered = true;
	}
	/* kept for a login that takes this connection from the pool */
	if (text != session->login_text)
		snprintf(session->login_text, sizeof(session->login_text), "%s", text);
	free(session->login_capabilities);
	session->login_capabilities = strdup(filtered);
	session->state = SESSION_STATE_FORWARDING;
	session->bad_commands = 0; /* the login's mistakes are behind it */
	session->state_logged_in = true;
	log_info("session %lu: logged in as %s on upstream %s", session->id, session->user,
		 session->upstream_name);
	if (session_forward_start(session) < 0) {
		session_close(session, "out of memory", "Server out of memory");
		return;
	}
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

/* The proof's own callback: its outcome is read from its tagged line
   (session_login_proof_line), an abort from the closed callback. */
static void session_proof_ignored(struct imap_client *client, struct imap_client_command *command,
				  const struct imap_client_result *result, void *context)
{
	(void)client;
	(void)command;
	(void)result;
	(void)context;
}

/* Logs in at once on session->upstream, a pooled connection that has not
   shown itself alive yet: proof, a command on the wire ahead of
   everything the session sends, must answer OK within
   SESSION_POOL_CHECK_MSECS. Meanwhile the first command the session sends
   upstream rides in the same round trip, kept with the credentials so
   that a dead connection is replaced by a fresh login and the command
   sent again (session_login_replay); the client's later commands wait
   for the proof. */
static void session_login_unproven(struct session *session, struct imap_client_command *proof)
{
	const struct timeval check_timeout = { SESSION_POOL_CHECK_MSECS / 1000,
					       (SESSION_POOL_CHECK_MSECS % 1000) * 1000 };

	session->upstream_unproven = true;
	session->upstream_proof = proof;
	evtimer_add(session->pool_check_timer, &check_timeout);
	log_info("session %lu: login as %s: a pooled connection to upstream %s, used at once; its %s answers "
		 "ahead of the client's first command", session->id, session->user, session->upstream_name,
		 imap_client_command_get_tag(proof));
	session_login_accepted(session, session->login_capabilities, session->login_text);
}

/* Logs in on session->upstream, a connection just taken from the pool
   (capabilities and text: what its login answered). One that answered
   just now (fresh) is trusted; any other is proven by a NOOP sent ahead
   of the client's commands (session_login_unproven). */
static void session_login_pooled(struct session *session, const char *capabilities, const char *text,
				 bool fresh)
{
	struct imap_client_command *proof;

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
	proof = imap_client_raw_command_new(session->upstream, NULL, "NOOP", session_proof_ignored, NULL);
	imap_client_raw_command_write(proof, " NOOP\r\n", 7);
	imap_client_raw_command_end(proof);
	session_login_unproven(session, proof);
}

/* Takes a connection whose cleaning (the last session's UNSELECT or
   NOOP) is still on the wire: the cleaning's answer is the proof. */
static bool session_login_from_cleaning(struct session *session)
{
	char capabilities[UPSTREAM_POOL_CAPABILITY_MAX];
	char text[UPSTREAM_POOL_TEXT_MAX];
	struct imap_client_command *proof = NULL;

	session->upstream = upstream_pool_take_cleaning_client(session_pool, &session->pool_key, capabilities,
							       sizeof(capabilities), text, sizeof(text), &proof);
	if (session->upstream == NULL)
		return false;
	free(session->login_capabilities);
	session->login_capabilities = strdup(capabilities);
	snprintf(session->login_text, sizeof(session->login_text), "%s", text);
	imap_client_set_closed_callback(session->upstream, session_upstream_closed, session);
	session->state = SESSION_STATE_LOGIN;
	if (session->login_capabilities == NULL) {
		imap_client_free(&session->upstream);
		session_login_refused(session, "[UNAVAILABLE] Server out of memory");
		return true;
	}
	session_login_unproven(session, proof);
	return true;
}

/* Keys the login for the pool (the secret as the client gave it) and
   takes a matching pooled connection: an idle one, or one on its way back
   to the pool (its session's LOGOUT still cleaning it). Returns true when
   it did: the login goes on there (session_login_pooled,
   session_login_from_cleaning). */
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
	return session_login_from_cleaning(session);
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

int session_login_proof_line(struct session *session, enum imap_client_raw_kind kind, const unsigned char *data,
			     size_t len)
{
	if (kind != IMAP_CLIENT_RAW_TAGGED)
		return 0; /* the last session's news, or the proof's own */
	session->upstream_proof = NULL;
	if (len < 3 || strncasecmp((const char *)data, " OK", 3) != 0) {
		log_info("session %lu: the pooled connection to upstream %s refused the command that proves it",
			 session->id, session->upstream_name);
		return -1; /* the closed callback replays */
	}
	evtimer_del(session->pool_check_timer);
	session->upstream_unproven = false;
	session->replay_lost = false;
	if (session->replay != NULL)
		evbuffer_drain(session->replay, evbuffer_get_length(session->replay));
	session_wipe_credentials(session);
	log_debug("session %lu: the pooled connection to upstream %s answered", session->id, session->upstream_name);
	session_schedule_step(session); /* the client's commands held meanwhile */
	return 0;
}

bool session_login_replay(struct session *session, const char *why)
{
	const struct timeval next_turn = { 0, 0 };

	if (session->replay_lost)
		return false;
	log_info("session %lu: login as %s: the pooled connection to upstream %s failed before it answered (%s): "
		 "logging in anew and sending the client's command again", session->id, session->user,
		 session->upstream_name, why);
	evtimer_del(session->pool_check_timer);
	session->upstream_unproven = false;
	session->upstream_proof = NULL;
	session->state = SESSION_STATE_LOGIN; /* the aborted commands tell the client nothing */
	imap_client_free(&session->upstream); /* safe inside its callbacks: freed once they return */
	session->replaying = true;
	evtimer_add(session->pool_check_timer, &next_turn);
	return true;
}

/* The replay's next loop turn, the dead connection's commands all ended:
   forwarding starts over on a fresh login (session_login_accepted then
   sends no second OK), with the kept command first in the client's input
   and the command waiting for the proof, if any, behind it. */
static void session_login_replay_continue(struct session *session)
{
	struct evbuffer *input = bufferevent_get_input(session->bev);

	session->replaying = false;
	if (session->command_bytes != NULL && evbuffer_get_length(session->command_bytes) > 0) {
		/* a command read and waiting for the proof: read again after the kept one */
		session->bytes_in -= evbuffer_get_length(session->command_bytes);
		evbuffer_prepend_buffer(input, session->command_bytes);
	}
	session_forward_reset(session);
	if (session->replay != NULL) {
		session->bytes_in -= evbuffer_get_length(session->replay); /* counted again when read again */
		evbuffer_prepend_buffer(input, session->replay);
	}
	session_pool_login_anew(session);
}

void session_pool_check_timeout(evutil_socket_t fd, short what, void *context)
{
	struct session *session = context;
	char why[64];

	(void)fd;
	(void)what;
	if (session->replaying) {
		session_login_replay_continue(session);
		return;
	}
	if (session->state != SESSION_STATE_FORWARDING || !session->upstream_unproven)
		return;
	snprintf(why, sizeof(why), "no answer within %d ms", SESSION_POOL_CHECK_MSECS);
	if (!session_login_replay(session, why))
		session_close(session, "upstream connection lost", "Upstream server connection lost");
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
	const struct timeval login_timeout = { session->conf->timeout_upstream_connect, 0 };

	imap_client_set_closed_callback(session->upstream, session_upstream_closed, session);
	session->state = SESSION_STATE_LOGIN;
	/* the client core's own timer covers the connection; this one the login too */
	evtimer_add(session->login_timer, &login_timeout);
	imap_client_connect(session->upstream, session_upstream_connected, session);
}

void session_login_timeout(evutil_socket_t fd, short what, void *context)
{
	struct session *session = context;

	(void)fd;
	(void)what;
	if (session->state != SESSION_STATE_LOGIN || session->upstream == NULL)
		return;
	log_info("session %lu: login as %s: upstream %s did not log in within %u s (timeouts.upstream_connect)",
		 session->id, session->user, session->upstream_name, session->conf->timeout_upstream_connect);
	session_login_refused(session, "[UNAVAILABLE] The upstream server is not available");
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

/* LOGIN user password (args: the two, literals inline). */
void session_handle_login(struct session *session, const char *tag, const struct imap_arg *args,
			  unsigned int count)
{
	char *user = NULL;

	snprintf(session->login_tag, sizeof(session->login_tag), "%s", tag);
	if (count != 2 || (user = session_astring_dup(&args[0])) == NULL ||
	    (session->login_password = session_astring_dup(&args[1])) == NULL ||
	    user[0] == '\0' || strlen(user) >= sizeof(session->user)) {
		session_send(session, "%s BAD Invalid LOGIN arguments\r\n", tag);
		session_wipe_credentials(session);
		free(user);
		session_count_bad(session);
		return;
	}
	snprintf(session->user, sizeof(session->user), "%s", user);
	free(user);
	session_login_start(session);
}

/* ID before login (RFC 2971): the proxy's own name and version. The
   client's fields (strings, literals included) are only checked; after
   login ID goes upstream. */
void session_handle_id(struct session *session, const char *tag, const struct imap_arg *args, unsigned int count)
{
	const struct imap_arg *fields = NULL;
	unsigned int field_count = 0;
	bool valid;

	valid = count == 1 && (imap_arg_is_nil(&args[0]) ||
			       (imap_arg_get_list(&args[0], &fields, &field_count) && field_count % 2 == 0 &&
				field_count <= 2 * SESSION_ID_PAIRS_MAX));
	for (unsigned int i = 0; valid && i < field_count; i++) {
		const char *str;
		size_t str_len;

		valid = i % 2 == 0 ? imap_arg_get_string(&fields[i], &str, &str_len) :
				     imap_arg_get_nstring(&fields[i], &str, &str_len);
	}
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

/* AUTHENTICATE mechanism [initial-response] (args: the two atoms). */
void session_handle_authenticate(struct session *session, const char *tag, const struct imap_arg *args,
				 unsigned int count)
{
	const char *mechanism, *response = NULL;
	bool is_login;

	snprintf(session->login_tag, sizeof(session->login_tag), "%s", tag);
	if (count < 1 || count > 2 || !imap_arg_get_atom(&args[0], &mechanism) ||
	    args[0].len >= sizeof(session->auth_mechanism) || (count == 2 && !imap_arg_get_atom(&args[1], &response))) {
		session_send(session, "%s BAD Invalid AUTHENTICATE arguments\r\n", tag);
		session_count_bad(session);
		return;
	}
	snprintf(session->auth_mechanism, sizeof(session->auth_mechanism), "%s", mechanism);
	for (char *p = session->auth_mechanism; *p != '\0'; p++)
		*p = (char)toupper((unsigned char)*p);
	/* one whose user the proxy can read, and that the upstream may take */
	if (!imap_sasl_user_mechanism_is_known(session->auth_mechanism) ||
	    upstream_probe_refuses_mechanism(session_probe, session->conf, session->auth_mechanism)) {
		session_send(session, "%s NO Unsupported authentication mechanism\r\n", tag);
		return;
	}
	is_login = strcmp(session->auth_mechanism, "LOGIN") == 0;
	if (response == NULL || (is_login && strcmp(response, "=") == 0)) {
		/* no SASL-IR (an empty one is none for LOGIN, as in Dovecot):
		   ask for it, with LOGIN's prompt or an empty challenge */
		session_send(session, "+ %s\r\n", is_login ? IMAP_SASL_LOGIN_USER_CHALLENGE : "");
		session->state = SESSION_STATE_AUTH_CLIENT;
		return;
	}
	session_auth_initial(session, response, (size_t)args[1].len);
}

/* A line the client sent after a "+" of AUTHENTICATE. */
void session_handle_auth_response(struct session *session, const char *line, size_t len)
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

