/* SPDX-License-Identifier: MIT */
/* session-prelogin: the client's commands before login, read by the
   session's one command parser (the same imap-parser that reads them after
   login) and answered here: CAPABILITY, NOOP, ID, LOGOUT, STARTTLS, LOGIN,
   AUTHENTICATE and the responses to AUTHENTICATE's "+". */
#include "config.h"
#include "session-private.h"
#include "imap-parser.h"
#include "log.h"
#include "upstream.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define SESSION_PRELOGIN_VERB_MAX 31 /* the longest IMAP verb is 12 characters; more is garbage */

/* What one feed of the parser ended with, and what the error path needs
   of the bytes it read. */
struct session_prelogin_feed {
	enum imap_parser_result result;
	bool nul;        /* ERROR: the byte that broke the line is a NUL */
	bool line_ended; /* ERROR: the line's LF was read with it */
};

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

static bool session_is_login_verb(const char *verb)
{
	return strcasecmp(verb, "LOGIN") == 0 || strcasecmp(verb, "AUTHENTICATE") == 0;
}

/* Whether verb's arguments may come as literals here: LOGIN (where logging
   in is allowed) and ID. */
static bool session_verb_takes_literals(const struct session *session, const char *verb)
{
	return (strcasecmp(verb, "LOGIN") == 0 && session_login_allowed(session)) || strcasecmp(verb, "ID") == 0;
}

static unsigned int session_verb_literals_max(const char *verb)
{
	return strcasecmp(verb, "ID") == 0 ? SESSION_ID_LITERALS_MAX : SESSION_LOGIN_LITERALS_MAX;
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

/* The reply to a command whose arguments hold a literal it may not take. */
static void session_format_literal_refusal(const struct session *session, const char *tag, const char *verb,
					   char *buf, size_t size)
{
	if (session_is_login_verb(verb))
		session_format_login_refusal(session, tag, buf, size);
	else
		snprintf(buf, size, "%s BAD Literals are not accepted before login\r\n", tag);
}

/* Literals among args, nested lists included; *streamed_r is set when one
   was past the parser's memory budget (its bytes skipped). */
static unsigned int session_count_literals(const struct imap_arg *args, unsigned int count, bool *streamed_r)
{
	unsigned int found = 0;

	for (unsigned int i = 0; i < count; i++) {
		if (args[i].type == IMAP_ARG_LITERAL_STREAMED)
			*streamed_r = true;
		if (args[i].type == IMAP_ARG_LITERAL || args[i].type == IMAP_ARG_LITERAL_STREAMED)
			found++;
		else if (args[i].type == IMAP_ARG_LIST)
			found += session_count_literals(args[i].list, args[i].list_count, streamed_r);
	}
	return found;
}

/* The tag and verb of a line (complete or so far) into tag and verb;
   false with tag "" when there is no valid tag, with verb "" when there
   is no verb yet or it is not one. */
static bool session_prelogin_tag_verb(const struct imap_arg *args, unsigned int count,
				      char tag[SESSION_TAG_MAX + 1], char verb[SESSION_PRELOGIN_VERB_MAX + 1])
{
	size_t tag_len = session_tag_arg_length(args, count);
	const char *atom;

	tag[0] = '\0';
	verb[0] = '\0';
	if (tag_len == 0 || tag_len > SESSION_TAG_MAX)
		return false;
	memcpy(tag, args[0].str, tag_len);
	tag[tag_len] = '\0';
	if (count > 1 && imap_arg_get_atom(&args[1], &atom) && args[1].len <= SESSION_PRELOGIN_VERB_MAX &&
	    strchr(atom, ']') == NULL)
		memcpy(verb, atom, args[1].len + 1);
	return true;
}

/* STARTTLS: OK, then the handshake once the OK is written. */
static void session_prelogin_starttls(struct session *session, const char *tag)
{
	if (!session->starttls_offered || session->tls_active) {
		session_send(session, "%s BAD STARTTLS is not available %s\r\n", tag,
			     session->tls_active ? "on a TLS connection" : "on this listener");
		session_count_bad(session);
		return;
	}
	session_send(session, "%s OK Begin TLS negotiation now\r\n", tag);
	session->state = SESSION_STATE_STARTTLS;
	bufferevent_disable(session->bev, EV_READ);
}

/* Answers the command verb (its tag and arguments checked). */
static void session_prelogin_dispatch(struct session *session, const char *tag, const char *verb,
				      const struct imap_arg *args, unsigned int count)
{
	char capability[UPSTREAM_CAPABILITY_MAX], reply[SESSION_REPLY_MAX];

	if (strcasecmp(verb, "CAPABILITY") == 0) {
		session_format_capability(session, capability, sizeof(capability));
		session_send(session, "* CAPABILITY %s\r\n%s OK CAPABILITY completed\r\n", capability, tag);
	} else if (strcasecmp(verb, "NOOP") == 0) {
		session_send(session, "%s OK NOOP completed\r\n", tag);
	} else if (strcasecmp(verb, "ID") == 0) {
		session_handle_id(session, tag, args, count);
	} else if (strcasecmp(verb, "LOGOUT") == 0) {
		session_send(session, "* BYE imapcached logging out\r\n%s OK LOGOUT completed\r\n", tag);
		session_close(session, "logged out", NULL);
	} else if (strcasecmp(verb, "STARTTLS") == 0) {
		session_prelogin_starttls(session, tag);
	} else if (session_is_login_verb(verb) && !session_login_allowed(session)) {
		session_format_login_refusal(session, tag, reply, sizeof(reply));
		session_send(session, "%s", reply);
		log_info("session %lu: %s refused: plaintext on a listener that is not loopback", session->id, verb);
	} else if (strcasecmp(verb, "LOGIN") == 0) {
		session_handle_login(session, tag, args, count);
	} else if (strcasecmp(verb, "AUTHENTICATE") == 0) {
		session_handle_authenticate(session, tag, args, count);
	} else if (session_is_later_command(verb)) {
		session_send(session, "%s BAD %s needs a login first\r\n", tag, verb);
		session_count_bad(session);
	} else {
		session_send(session, "%s BAD Unknown command\r\n", tag);
		session_count_bad(session);
	}
}

/* A whole command line: tag, verb and the verb's arguments. */
static void session_prelogin_command(struct session *session, const struct imap_arg *args, unsigned int count)
{
	char tag[SESSION_TAG_MAX + 1], verb[SESSION_PRELOGIN_VERB_MAX + 1];
	char reply[SESSION_REPLY_MAX];
	bool streamed = false;
	unsigned int literals;

	if (!session_prelogin_tag_verb(args, count, tag, verb)) {
		session_send(session, "* BAD Invalid tag\r\n");
		log_debug("session %lu: invalid command line", session->id);
		session_count_bad(session);
		return;
	}
	if (count == 1 || verb[0] == '\0') {
		session_send(session, count == 1 ? "%s BAD Missing command\r\n" : "%s BAD Invalid command name\r\n",
			     tag);
		session_count_bad(session);
		return;
	}
	literals = session_count_literals(args + 2, count - 2, &streamed);
	if (literals > 0 && !session_verb_takes_literals(session, verb)) {
		session_format_literal_refusal(session, tag, verb, reply, sizeof(reply));
		session_send(session, "%s", reply);
		if (session_is_login_verb(verb))
			log_info("session %lu: %s with a literal refused", session->id, verb);
		return;
	}
	if (literals > session_verb_literals_max(verb) || streamed) {
		session_send(session, "%s BAD Invalid %s arguments: too many literals or too long\r\n", tag,
			     strcasecmp(verb, "ID") == 0 ? "ID" : "LOGIN");
		session_count_bad(session);
		return;
	}
	session_prelogin_dispatch(session, tag, verb, args + 2, count - 2);
}

/* A synchronizing literal "{n}" was announced: "+" for a command that
   takes it, else the command's answer now (RFC 3501 7.5: no literal then
   comes, and the command is over). */
static void session_prelogin_literal(struct session *session)
{
	const struct imap_arg *args;
	unsigned int count;
	char tag[SESSION_TAG_MAX + 1], verb[SESSION_PRELOGIN_VERB_MAX + 1];
	char reply[SESSION_REPLY_MAX];

	imap_parser_get_open_args(session->command_parser, 0, &args, &count);
	if (!session_prelogin_tag_verb(args, count, tag, verb) || verb[0] == '\0') {
		session_send(session, tag[0] == '\0' ? "* BAD Invalid tag\r\n" : "%s BAD Invalid command name\r\n",
			     tag);
	} else if (!session_verb_takes_literals(session, verb)) {
		session_format_literal_refusal(session, tag, verb, reply, sizeof(reply));
		session_send(session, "%s", reply);
		if (session_is_login_verb(verb))
			log_info("session %lu: %s with a literal refused", session->id, verb);
		imap_parser_wipe(session->command_parser);
		session->prelogin_literals = 0;
		return;
	} else if (++session->prelogin_literals <= session_verb_literals_max(verb)) {
		session_send(session, "+ Ready for literal data\r\n");
		return;
	} else {
		session_send(session, "%s BAD Invalid %s arguments: literal too large or too many\r\n", tag,
			     strcasecmp(verb, "ID") == 0 ? "ID" : "LOGIN");
	}
	imap_parser_wipe(session->command_parser); /* a LOGIN's user name may be in it */
	session->prelogin_literals = 0;
	session_count_bad(session);
}

/* The parser refused the line: a limit ends the session or the command;
   anything else drops the rest of the line and then answers BAD. */
static void session_prelogin_error(struct session *session, const struct session_prelogin_feed *feed)
{
	const struct imap_arg *args;
	unsigned int count;
	char tag[SESSION_TAG_MAX + 1], verb[SESSION_PRELOGIN_VERB_MAX + 1], reply[SESSION_REPLY_MAX];
	const char *message;
	enum imap_parser_error error = imap_parser_get_error(session->command_parser, &message);
	uint64_t size = 0;
	bool nonsync = false, streamed = false;

	imap_parser_get_open_args(session->command_parser, 0, &args, &count);
	session_prelogin_tag_verb(args, count, tag, verb);
	if (error == IMAP_PARSER_ERROR_LINE_TOO_LONG) {
		session->bytes_in += evbuffer_get_length(bufferevent_get_input(session->bev)); /* received, if refused */
		log_info("session %lu: command line longer than %zu bytes", session->id, session->conf->limit_line);
		session_close(session, "line too long", "Command line too long");
		return;
	}
	if (imap_parser_get_refused_literal(session->command_parser, &size, &nonsync)) {
		log_info("session %lu: literal of %llu bytes before login, over the limit of %llu", session->id,
			 (unsigned long long)size, (unsigned long long)session->conf->limit_literal_preauth);
		imap_parser_wipe(session->command_parser);
		session->prelogin_literals = 0;
		if (nonsync || tag[0] == '\0') {
			session_close(session, "literal too large", "Literal too large before login");
			return;
		}
		session_send(session, "%s BAD Literal too large before login\r\n", tag);
		session_count_bad(session);
		return;
	}
	if (feed->nul) {
		session_set_pending_reply(session, "* BAD NUL bytes are not allowed in a command\r\n");
	} else if (tag[0] == '\0') {
		session_set_pending_reply(session, "* BAD Invalid tag\r\n");
	} else if (verb[0] != '\0' && !session_verb_takes_literals(session, verb) &&
		   session_count_literals(args + 2, count > 2 ? count - 2 : 0, &streamed) > 0) {
		session_format_literal_refusal(session, tag, verb, reply, sizeof(reply));
		session_set_pending_reply(session, "%s", reply);
	} else {
		session_set_pending_reply(session, "%s BAD %s\r\n", tag, message);
	}
	log_debug("session %lu: command refused by the parser: %s", session->id, message);
	imap_parser_wipe(session->command_parser);
	session->prelogin_literals = 0;
	session->skipped_line_bytes = 0;
	session->skipping_line = !feed->line_ended;
	if (!session->skipping_line) {
		(void)session_skipped_line_answer(session);
	}
}

/* Whether the byte that broke the line, at or just before consumed, is a NUL. */
static bool session_nul_at(const unsigned char *data, size_t len, size_t consumed)
{
	return (consumed < len && data[consumed] == '\0') || (consumed > 0 && data[consumed - 1] == '\0');
}

/* Feeds the parser the first piece of input and drains what it read. */
static struct session_prelogin_feed session_prelogin_feed(struct session *session, struct evbuffer *input)
{
	struct session_prelogin_feed feed = { IMAP_PARSER_NEED_MORE, false, false };
	struct evbuffer_iovec vec;
	size_t consumed = 0;

	if (evbuffer_peek(input, -1, NULL, &vec, 1) < 1)
		return feed;
	if (imap_parser_get_literal_remaining(session->command_parser) > 0)
		session->literal_bytes_read = true;
	feed.result = imap_parser_feed_bytes(session->command_parser, vec.iov_base, vec.iov_len, &consumed);
	if (feed.result == IMAP_PARSER_ERROR) {
		feed.nul = session_nul_at(vec.iov_base, vec.iov_len, consumed);
		feed.line_ended = consumed > 0 && ((const char *)vec.iov_base)[consumed - 1] == '\n';
	}
	session->bytes_in += consumed;
	evbuffer_drain(input, consumed);
	return feed;
}

/* A complete line: a command, or the response to AUTHENTICATE's "+". */
static void session_prelogin_line(struct session *session)
{
	const struct imap_arg *line = imap_parser_get_line(session->command_parser);

	session->prelogin_literals = 0;
	if (session->state == SESSION_STATE_AUTH_CLIENT)
		session_handle_auth_response(session, line->list[0].str, (size_t)line->list[0].len);
	else
		session_prelogin_command(session, line->list, line->list_count);
	imap_parser_wipe(session->command_parser); /* it may hold a password */
}

/* Whether the session reads commands now; pauses reading while the
   client does not read its replies (resumed from session_write). */
static bool session_prelogin_reading(struct session *session)
{
	if ((session->state != SESSION_STATE_NOT_AUTHENTICATED && session->state != SESSION_STATE_AUTH_CLIENT) ||
	    session->command_parser == NULL) /* a replayed login that failed: the session is closing */
		return false;
	if (evbuffer_get_length(bufferevent_get_output(session->bev)) > SESSION_OUTPUT_HIGH_WATER) {
		bufferevent_disable(session->bev, EV_READ);
		session->reading_paused = true;
		return false;
	}
	return true;
}

/* Plaintext sent after STARTTLS, before the handshake, could be an
   injected command (CVE-2011-0411 and kin): it is dropped. */
static void session_prelogin_drop_after_starttls(struct session *session, struct evbuffer *input)
{
	if (session->state != SESSION_STATE_STARTTLS || evbuffer_get_length(input) == 0)
		return;
	log_warning("session %lu: dropped %zu bytes sent after STARTTLS before the handshake", session->id,
		    evbuffer_get_length(input));
	session->bytes_in += evbuffer_get_length(input);
	evbuffer_drain(input, evbuffer_get_length(input));
}

/* Whether the command line about to be read starts with a byte no tag
   can start with: such a line is dropped up to its end, a literal it
   announces unread ("{2}" where the tag goes is no literal), as Dovecot
   drops it. A NUL is left to the parser, whose BAD names it. */
static bool session_prelogin_lacks_tag(struct session *session, struct evbuffer *input)
{
	unsigned char first;

	if (session->state != SESSION_STATE_NOT_AUTHENTICATED || imap_parser_is_mid_line(session->command_parser) ||
	    evbuffer_copyout(input, &first, 1) != 1)
		return false;
	return first != '\0' && !session_tag_char(first);
}

static void session_prelogin_skip_untagged(struct session *session)
{
	session_set_pending_reply(session, "* BAD Invalid tag\r\n");
	session->skipped_line_bytes = 0;
	session->skipping_line = true;
}

void session_prelogin_input(struct session *session)
{
	struct evbuffer *input = bufferevent_get_input(session->bev);

	for (unsigned int done = 0; done < SESSION_COMMANDS_PER_EVENT; done++) {
		struct session_prelogin_feed feed;

		if (!session_prelogin_reading(session) || evbuffer_get_length(input) == 0)
			return;
		if (session->skipping_line) {
			if (!session_skip_line(session, input, session->conf->limit_line))
				return;
			continue;
		}
		if (!imap_parser_is_mid_line(session->command_parser))
			imap_parser_set_mode(session->command_parser, session->state == SESSION_STATE_AUTH_CLIENT ?
					     IMAP_PARSER_MODE_TEXT_LINE : IMAP_PARSER_MODE_COMMAND);
		if (session_prelogin_lacks_tag(session, input)) {
			session_prelogin_skip_untagged(session);
			continue;
		}
		feed = session_prelogin_feed(session, input);
		if (feed.result == IMAP_PARSER_LITERAL_ANNOUNCED)
			session_prelogin_literal(session);
		else if (feed.result == IMAP_PARSER_LINE_COMPLETE)
			session_prelogin_line(session);
		else if (feed.result == IMAP_PARSER_ERROR)
			session_prelogin_error(session, &feed);
		session_prelogin_drop_after_starttls(session, input);
	}
	if (evbuffer_get_length(input) > 0)
		session_schedule_step(session); /* more pipelined commands: after other clients */
}

uint64_t session_prelogin_literal_due(const struct session *session)
{
	if (session->state != SESSION_STATE_NOT_AUTHENTICATED || session->command_parser == NULL)
		return 0;
	return imap_parser_get_literal_remaining(session->command_parser);
}

int session_prelogin_start(struct session *session, const struct conf *conf)
{
	struct imap_parser_limits limits;

	session->command_parser = imap_parser_new();
	if (session->command_parser == NULL)
		return -1;
	imap_parser_get_default_limits(&limits);
	limits.max_line = conf->limit_line;
	limits.max_literal = conf->limit_literal_preauth;
	limits.max_inline_literal = conf->limit_literal_preauth;
	imap_parser_set_limits(session->command_parser, &limits);
	return 0;
}
