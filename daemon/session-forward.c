/* SPDX-License-Identifier: MIT */
/* session-forward: a logged-in session's commands going upstream and the answers coming back. */
#include "config.h"
#include "session-private.h"
#include "cache.h"
#include "fetch.h"
#include "fetch-fill.h"
#include "fetch-splice.h"
#include "imap-command.h"
#include "imap-parser.h"
#include "imap-response.h"
#include "link.h"
#include "log.h"
#include "mailbox-view.h"
#include "prefetch.h"
#include "sync.h"
#include "upstream.h"

#include <ctype.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/bufferevent.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* A command whose bytes pass this before its line ends carries a large
   literal (APPEND): from there on it goes upstream as it comes. */
#define SESSION_PENDING_MAX (64 * 1024)

/*
 * After login the client's bytes run through one imap-parser in COMMAND
 * mode, which finds where each command, literal and line ends. A command
 * is held whole (its raw bytes in command_bytes, its parsed line in the
 * parser) until its line is complete, then routed by its verb
 * (session_routes): answered here, or sent upstream byte for byte, its
 * tag included. A command that can't wait for its line end -- a {N}
 * literal needs the upstream's "+", a large {N+} one must not be held --
 * is sent upstream as it comes (the open command).
 */

/* One forwarded command: the client's tag, for the tagged reply. */
struct session_forward {
	struct session *session;
	bool logout;
	struct session_news news;    /* what it tells of mailbox changes, at its OK */
	bool reports_expunges;       /* Dovecot reports expunges at its end (session_verb_reports_expunges) */
	struct session_resend *resend; /* a COPY or MOVE sent while the upstream was behind */
	bool resending;              /* refused for an expunge the upstream had not reported: sent again at its reply */
	char tag[];
};

/* How a verb is routed after login. */
struct session_route {
	const char *verb;            /* upper case; "UID FETCH" as two words */
	/* Answers the command here, or says to wait or send it upstream.
	   NULL: always upstream. Answers go out in order: a handler answers
	   only when no forwarded command is pending. */
	enum session_local (*local)(struct session *session, const char *tag, const struct imap_command *command);
	bool open;                   /* stays open after its line: IDLE, until DONE */
	/* Called once the (parsed) command went upstream as upstream, or NULL. */
	void (*sent)(struct session *session, const struct imap_command *command,
		     struct imap_client_command *upstream);
	bool leaves_mailbox;         /* the selected mailbox is left (or another selected) */
	bool changes_state;          /* whatever its arguments, leaves state UNSELECT can't undo (no pooling) */
};

static const struct session_route session_routes[] = {
	{ "CAPABILITY", session_answer_capability, false, NULL, false, false },
	{ "STARTTLS", session_answer_starttls, false, NULL, false, false },
	{ "COMPRESS", session_answer_cannot, false, NULL, false, false },
	{ "NOTIFY", session_answer_cannot, false, NULL, false, false },
	{ "UNAUTHENTICATE", session_answer_cannot, false, NULL, false, false },
	{ "LOGOUT", session_answer_logout, false, NULL, true, false },
	{ "IDLE", NULL, true, NULL, false, false },
	{ "SELECT", NULL, false, session_own_start_sync, true, false },
	{ "EXAMINE", NULL, false, session_own_start_sync, true, false },
	{ "CLOSE", NULL, false, NULL, true, false },
	{ "UNSELECT", NULL, false, NULL, true, false },
	{ "FETCH", session_answer_fetch, false, NULL, false, false },
	{ "UID FETCH", session_answer_fetch, false, NULL, false, false },
	{ "SEARCH", session_answer_search, false, NULL, false, false },
	{ "UID SEARCH", session_answer_search, false, NULL, false, false },
	{ "STORE", NULL, false, session_store_sent, false, false },
	{ "UID STORE", NULL, false, session_store_sent, false, false },
	{ "ENABLE", NULL, false, NULL, false, true },
	{ "LANGUAGE", NULL, false, NULL, false, true },
	{ "COMPARATOR", NULL, false, NULL, false, true },
	{ "LOGIN", NULL, false, NULL, false, true },
	{ "AUTHENTICATE", NULL, false, NULL, false, true },
};

static const struct session_route session_route_upstream = { "", NULL, false, NULL, false, false };

static void session_forward_done(struct imap_client *client, struct imap_client_command *command,
				 const struct imap_client_result *result, void *context);

static void session_forward_context_free(void *context)
{
	struct session_forward *forward = context;

	session_news_clear(&forward->news);
	session_resend_free(&forward->resend);
	free(forward);
}

/* ---- answers from upstream ---- */

/* The upstream connection ended (any reason): so does a logged-in session. */
void session_upstream_closed(struct imap_client *client, const char *reason, void *context)
{
	struct session *session = context;

	(void)client;
	session->open_command = NULL; /* freed with the connection */
	if (session->fill != NULL)
		fetch_fill_abort(session->fill);
	if (session->state != SESSION_STATE_FORWARDING)
		return; /* a login in progress hears of it from its command */
	if (session->upstream_unproven && session_login_replay(session, reason))
		return;
	log_info("session %lu: upstream %s: %s", session->id, session->upstream_name, reason);
	/* the upstream's own BYE, passed on, already said goodbye */
	session_close(session, "upstream connection lost",
		      session->upstream_said_bye ? NULL : "Upstream server connection lost");
}

/* The store's WAL no longer waits: reading from upstream goes on,
   unless the client's own reading holds it back. */
static void session_store_resumed(void *context)
{
	struct session *session = context;

	session->store_paused = false;
	if (session->state == SESSION_STATE_FORWARDING && !session->upstream_reading_paused &&
	    session->local_answer == NULL)
		imap_client_set_reading_paused(session->upstream, false);
}

/* The store's batch of this event-loop turn ends: its writes commit.
   While the store's WAL is to start afresh, a session that wrote stops
   reading from upstream for a moment (cache_wants_pause), so that the
   loop does not wait for the store. */
static void session_end_batch(evutil_socket_t fd, short what, void *context)
{
	struct session *session = context;

	(void)fd;
	(void)what;
	if (session->batch_open) {
		bool wrote = cache_batch_writing(session->cache);

		session->batch_open = false;
		if (session->batch_commit)
			cache_batch_end(session->cache);
		else
			cache_batch_end_soon(session->cache);
		if (wrote && !session->store_paused && session->state == SESSION_STATE_FORWARDING && session->upstream != NULL &&
		    cache_wants_pause(session->cache) &&
		    cache_pause_wait(session->cache, session_store_resumed, session) == 0) {
			session->store_paused = true;
			imap_client_set_reading_paused(session->upstream, true);
		}
	}
	session->batch_commit = false;
}

/* What the lines of one read from upstream bring goes into the store in
   one batch, ended when the event loop has run this turn's callbacks;
   its transaction is held for the next turns' for a few ms
   (cache_batch_end_soon): one commit per few MB of bodies streaming in,
   not one per read. A turn that passed a tagged reply commits at its
   end, so that what a command brought is in the store when it ends. */
static void session_open_batch(struct session *session)
{
	if (session->batch_open || session->cache == NULL || session->batch_event == NULL)
		return;
	cache_batch_begin_for(session->cache, session);
	session->batch_open = true;
	event_active(session->batch_event, EV_TIMEOUT, 0);
}

/* Whether a whole untagged FETCH line (data, len) passing to the client
   told the sync what it holds from the fill's reading of its bytes
   (sync_update_fetch_line), so that the client core need not parse it:
   a line of a command of the client's, not the SELECT's, whose start
   came in this call (the fill saw all of it either way). */
static bool session_fetch_line_told(struct session *session, const struct imap_client_command *command,
				    enum imap_fetch_items_result result, const unsigned char *data, size_t len)
{
	struct fetch_fill_line line;

	return result == IMAP_FETCH_ITEMS_COMPLETE && len > 0 && data[0] == '*' && command != NULL &&
	       command != session->select_command && !session_own_runs(session, command) &&
	       fetch_fill_last_line(session->fill, &line) && sync_update_fetch_line(session->sync, &line);
}

/* The tagged reply of a COPY or MOVE refused for an expunge the upstream
   had not reported (session-resend.c), with nothing pending behind it:
   kept from the client, and the command sent again at its reply. The
   refusal's untagged EXPUNGE went to the client as it came (RFC 3501
   7.4.1 allows it during COPY and MOVE). With another command pending the
   refusal stands: that command must not see the copy made after it. */
static bool session_forward_resend_due(const struct session *session, const struct session_forward *forward,
				       const unsigned char *data, size_t len)
{
	return session->forwarded_pending == 1 && session_resend_refused(forward->resend, data, len);
}

/* Whether the command whose tagged reply came made Dovecot report
   expunges: the upstream is no longer behind. */
static bool session_reply_reports_expunges(struct session *session, struct imap_client_command *command)
{
	const struct session_forward *forward;

	if (command == NULL || command == session->upstream_proof)
		return false;
	if (session_own_runs(session, command)) /* the sync's UID commands; the rest are by number */
		return session->own_kind == SESSION_OWN_SYNC || session->own_kind == SESSION_OWN_VANISHED;
	forward = imap_client_command_get_context(command);
	return forward->reports_expunges;
}

/* Sends forward's command again as a new one under the same tag, which
   takes over its news. Returns false when out of memory (the refusal
   then stands, its tagged line gone: the session is closed). */
static bool session_forward_send_again(struct session *session, struct session_forward *forward)
{
	size_t tag_len = strlen(forward->tag);
	struct session_forward *again = calloc(1, sizeof(*again) + tag_len + 1);
	struct imap_client_command *command;
	const char *line;
	size_t len;

	if (again == NULL) {
		session_close(session, "out of memory", "Server out of memory");
		return false;
	}
	again->session = session;
	again->news = forward->news;
	memset(&forward->news, 0, sizeof(forward->news));
	memcpy(again->tag, forward->tag, tag_len + 1);
	line = session_resend_line(forward->resend, &len);
	log_debug("session %lu: a COPY or MOVE refused for an expunge the upstream had not reported: sent again as %s",
		  session->id, session_resend_verb(forward->resend));
	command = imap_client_raw_command_new(session->upstream, again->tag, session_resend_verb(forward->resend),
					      session_forward_done, again);
	imap_client_command_set_destroy(command, session_forward_context_free, again);
	session->forwarded_pending++;
	imap_client_raw_command_write(command, line, len);
	imap_client_raw_command_end(command);
	return true;
}

/* Upstream bytes for the client: the exact bytes, with the client's tag. */
int session_upstream_raw(struct imap_client *client, struct imap_client_command *command,
			 enum imap_client_raw_kind kind, const unsigned char *data, size_t len, bool line_end,
			 void *context)
{
	struct session *session = context;
	struct evbuffer *output;
	bool told = false; /* a FETCH line the sync took from its bytes: not parsed */
	bool go_ahead = kind == IMAP_CLIENT_RAW_CONTINUATION && command == session->open_command;
	/* the "+" of the client's IDLE, also when its DONE went up already
	   (then it is no longer the open command) */
	bool idle_plus = kind == IMAP_CLIENT_RAW_CONTINUATION && command != NULL &&
			 (command == session->idle_plus_pending || (go_ahead && session->open_is_idle));

	if (session->state == SESSION_STATE_CLOSING)
		return 0;
	if (command != NULL && command == session->upstream_proof)
		return session_login_proof_line(session, kind, data, len);
	if (kind == IMAP_CLIENT_RAW_TAGGED) {
		session_open_batch(session); /* a command (the client's or our own) ended: what it brought commits */
		session->batch_commit = true;
		if (session_reply_reports_expunges(session, command))
			session->upstream_behind = false;
	}
	if (session_own_idle_swallows(session, command, kind, data, len))
		return 0;
	if (session_holds_splice_bye(session, command, kind, data, len, line_end))
		return 0;
	if (session_own_swallows(session, command, kind, data, len, line_end)) {
		if (kind == IMAP_CLIENT_RAW_UNTAGGED && session->own_kind == SESSION_OWN_SYNC && line_end &&
		    session_own_runs(session, command) && sync_fetch_line(session->sync, data, len)) {
			session->own_data_link = true; /* the full form's FETCH: a sample of the link */
			session_own_data(session, len);
			return IMAP_CLIENT_RAW_HANDLED; /* read from its bytes: 10,000 of them per SELECT */
		}
		if (kind == IMAP_CLIENT_RAW_UNTAGGED && session->own_kind == SESSION_OWN_SPLICE) {
			if (session->splice != NULL) /* kept for the answer */
				fetch_splice_feed(session->splice, data, len, line_end);
			session_open_batch(session);
			fetch_fill_feed(session->fill, data, len, line_end); /* what the store keeps of it (PREVIEW) */
		} else if (kind == IMAP_CLIENT_RAW_UNTAGGED && session->own_kind != SESSION_OWN_SYNC) {
			if (session->own_kind == SESSION_OWN_PREFETCH)
				session_own_data(session, len);
			session_open_batch(session);
			fetch_fill_feed(session->fill, data, len, line_end);
		}
		return 0;
	}
	if (kind == IMAP_CLIENT_RAW_UNTAGGED) {
		enum imap_fetch_items_result result;

		if (len >= 6 && strncasecmp((const char *)data, "* BYE ", 6) == 0)
			session->upstream_said_bye = true;
		session_open_batch(session);
		result = fetch_fill_feed(session->fill, data, len, line_end);
		if (session_own_holds_line(session, command, kind, data, len, line_end))
			return 0;
		told = session_fetch_line_told(session, command, result, data, len);
	}
	output = bufferevent_get_output(session->bev);
	if (kind == IMAP_CLIENT_RAW_TAGGED && command != NULL && command == session->select_command)
		session_own_select_answered(session);
	if (kind == IMAP_CLIENT_RAW_TAGGED && session_own_holds_reply(session, command))
		output = session->held_reply; /* the client gets it once the sync is done */
	if (kind == IMAP_CLIENT_RAW_TAGGED) {
		struct session_forward *forward = imap_client_command_get_context(command);

		if (session_forward_resend_due(session, forward, data, len)) {
			forward->resending = true; /* sent again at its reply (session_forward_done) */
			return 0;
		}
		session_own_release_held(session, output);

		evbuffer_add(output, forward->tag, strlen(forward->tag));
		session->bytes_out += strlen(forward->tag);
	}
	evbuffer_add(output, data, len);
	session->bytes_out += len;
	if (idle_plus) {
		session->idle_plus_pending = NULL;
		session_own_release_held(session, output); /* Dovecot tells an idling client at once */
	}
	if (go_ahead && session->open_is_idle) {
		session->idle_established = true;
		if (session->prefetch != NULL)
			session_own_prefetch_when_quiet(session); /* a pause of IDLE for a batch, once quiet */
	}
	if (go_ahead && session->waiting_go_ahead) {
		/* the client may send its literal now */
		session->waiting_go_ahead = false;
		session_schedule_step(session);
		if (evbuffer_get_length(output) > len)
			log_debug("session %lu: \"+\" queued behind %zu bytes of unsent output: "
				  "the literal timer starts once they are written", session->id,
				  evbuffer_get_length(output) - len);
		session_update_literal_timer(session);
	}
	output = bufferevent_get_output(session->bev);
	if (evbuffer_get_length(output) > SESSION_OUTPUT_HIGH_WATER && !session->upstream_reading_paused) {
		/* resumed from session_write once the client has read it */
		session->upstream_reading_paused = true;
		imap_client_set_reading_paused(client, true);
		log_debug("session %lu: the client is not reading: reading from upstream paused", session->id);
	}
	return told ? IMAP_CLIENT_RAW_HANDLED : 0;
}

void session_upstream_drained(struct imap_client *client, void *context)
{
	struct session *session = context;

	(void)client;
	if (session->waiting_upstream_output && session->state == SESSION_STATE_FORWARDING) {
		session->waiting_upstream_output = false;
		bufferevent_enable(session->bev, EV_READ);
		session_schedule_step(session);
	}
}

/* Every untagged response from upstream, parsed, after its bytes went
   to session_upstream_raw: what it tells the sync. */
static void session_upstream_untagged(struct imap_client *client, struct imap_client_command *command,
				      const struct imap_client_untagged *untagged, void *context)
{
	struct session *session = context;

	(void)client;
	if (command != NULL && command == session->upstream_proof)
		return; /* the last session's, or the proof's own */
	session_enabled_untagged(session, command, untagged);
	if (command != NULL && command == session->select_command)
		sync_select_data(session->sync, untagged);
	else if (session_own_runs(session, command))
		session_own_untagged(session, untagged);
	else
		sync_update(session->sync, untagged);
}

/* The open command's reader state goes back to "between commands". */
static void session_forget_open_command(struct session *session)
{
	session->open_command = NULL;
	session->open_is_idle = false;
	session->idle_established = false;
	session->waiting_go_ahead = false;
}

static void session_forward_done(struct imap_client *client, struct imap_client_command *command,
				 const struct imap_client_result *result, void *context)
{
	struct session_forward *forward = context;
	struct session *session = forward->session;
	/* ending the command below frees it, its result and forward */
	bool logout = forward->logout;
	enum imap_client_status status = result->status;

	(void)client;
	session->forwarded_pending--;
	session_enabled_answered(session, command, status);
	if (forward->resending) {
		if (status == IMAP_CLIENT_STATUS_NO)
			(void)session_forward_send_again(session, forward);
		return; /* or lost: session_upstream_closed ends the session */
	}
	if (command == session->idle_plus_pending)
		session->idle_plus_pending = NULL; /* refused, or lost: no "+" comes (the tagged reply released them) */
	if (status != IMAP_CLIENT_STATUS_ABORT && session_own_idle_ended(session, command))
		return; /* an IDLE the proxy paused: the client still idles */
	session_news_done(session, &forward->news, status);
	if (command == session->open_command && session->idle_pause == SESSION_IDLE_RESUMING) {
		/* the IDLE sent again was refused: its tagged reply ends the
		   client's IDLE (it goes to the client below), the pause is over */
		session->idle_pause = SESSION_IDLE_RUNNING;
		session->idle_client_done = false;
		session->idle_established = false;
	}
	session->last_activity_usec = session_now_usec();
	if (command == session->select_command) {
		session->select_command = NULL;
		sync_select_done(session->sync, status, result->code);
	}
	if (session->open_command == command && status == IMAP_CLIENT_STATUS_ABORT) {
		session_forget_open_command(session);
	} else if (session->open_command == command && (session->open_is_idle || session->waiting_go_ahead)) {
		/* answered before the client sent all of it, and the client
		   sends nothing more: IDLE refused, or a {N} that got no "+".
		   Otherwise the upstream still reads the rest (a {N+} literal,
		   RFC 7888), which goes on to it. */
		session_forget_open_command(session);
		imap_parser_reset(session->command_parser);
		evbuffer_drain(session->command_bytes, evbuffer_get_length(session->command_bytes));
		imap_client_raw_command_end(command);
	}
	session_update_literal_timer(session);
	if (status == IMAP_CLIENT_STATUS_ABORT)
		return; /* session_upstream_closed ends the session */
	if (logout) {
		session_close(session, "logged out", NULL);
		return;
	}
	session_schedule_step(session); /* a command may be waiting for its turn */
}

/* ---- the client's commands ---- */

/* The verb of the command being read, upper-cased ("UID FETCH" as two
   words), from the arguments the parser has so far: args[1], and args[2]
   after UID. Empty when there is none yet. */
static void session_verb_from_args(struct session *session, const struct imap_arg *args, unsigned int count)
{
	size_t used = 0;

	session->command_verb[0] = '\0';
	for (unsigned int i = 1; i < count && i <= 2; i++) {
		const char *word;

		if (!imap_arg_get_atom(&args[i], &word) || (i == 2 && strcmp(session->command_verb, "UID") != 0))
			break;
		used += (size_t)snprintf(session->command_verb + used, sizeof(session->command_verb) - used, "%s%s",
					 i == 2 ? " " : "", word);
		if (used >= sizeof(session->command_verb))
			break;
	}
	for (char *p = session->command_verb; *p != '\0'; p++)
		*p = (char)toupper((unsigned char)*p);
}

static const struct session_route *session_find_route(const char *verb)
{
	for (size_t i = 0; i < sizeof(session_routes) / sizeof(session_routes[0]); i++) {
		if (strcmp(session_routes[i].verb, verb) == 0)
			return &session_routes[i];
	}
	return &session_route_upstream;
}

/* What a command sent upstream changes beyond its own answer: RFC 7162's
   CONDSTORE-enabling commands enable it for the client, and they and the
   verbs marked changes_state keep the connection out of the pool.
   command is the parsed line, or NULL where imap-command refused it: then
   its arguments args[0..count) (the tag left out) say, as imap-command
   reads them. Returns whether the command made client_condstore true,
   which its BAD is to take back (session_enabled_answered). */
static bool session_note_state_change(struct session *session, const struct imap_command *command,
				      const struct imap_arg *args, unsigned int count)
{
	bool changes = command != NULL ? session_enabled_changes_state(command) :
					 imap_command_args_enable_condstore(args, count);
	bool tentative = command != NULL && session_enabled_sent(session, command);

	/* only a connection that may be pooled needs its state watched */
	if (session->pool_key_valid && (changes || session_find_route(session->command_verb)->changes_state))
		session->pool_state_changed = true;
	return tentative;
}

/* The same for upstream, a command sent upstream before its line ended,
   once its line is complete, before it is ended (which frees one the
   upstream answered already). One answered before its end was refused:
   it changed nothing. */
static void session_note_open_state_change(struct session *session, struct imap_client_command *upstream)
{
	const struct imap_arg *line = imap_parser_get_line(session->command_parser);
	struct imap_command command;

	if (line == NULL || line->list_count == 0 || imap_client_raw_command_is_answered(upstream))
		return;
	session_verb_from_args(session, line->list, line->list_count);
	if (imap_command_parse(session->command_reader, line, &command, NULL) == IMAP_COMMAND_ERROR_NONE) {
		if (session_note_state_change(session, &command, NULL, 0))
			session->condstore_tentative = upstream; /* it lives until its tagged reply */
	} else {
		(void)session_note_state_change(session, NULL, line->list + 1, line->list_count - 1);
	}
}

const char *session_forward_tag(struct imap_client_command *command)
{
	const struct session_forward *forward = imap_client_command_get_context(command);

	return forward->tag;
}

struct imap_client_command *session_forward_resend_idle(struct session *session, const char *tag)
{
	struct session_forward *forward = calloc(1, sizeof(*forward) + strlen(tag) + 1);
	struct imap_client_command *command;

	if (forward == NULL) {
		session_close(session, "out of memory", "Server out of memory");
		return NULL;
	}
	forward->session = session;
	memcpy(forward->tag, tag, strlen(tag) + 1);
	command = imap_client_raw_command_new(session->upstream, forward->tag, "IDLE", session_forward_done, forward);
	imap_client_command_set_destroy(command, session_forward_context_free, forward);
	session->forwarded_pending++;
	imap_client_raw_command_write(command, " IDLE\r\n", 7);
	return command;
}

/* The length of the tag of the command being read: the parser's first
   argument, of the complete line or of the line so far (it is the tag's
   bytes as sent, which begin command_bytes). */
static size_t session_held_tag_length(struct session *session)
{
	const struct imap_arg *line = imap_parser_get_line(session->command_parser), *args;
	unsigned int count;

	if (line != NULL)
		return session_tag_arg_length(line->list, line->list_count);
	imap_parser_get_open_args(session->command_parser, 0, &args, &count);
	return session_tag_arg_length(args, count);
}

/* The command about to go upstream on an unproven connection, kept
   whole for a fresh login in case the connection proves dead; one that
   goes up as it comes can't be kept. */
static void session_keep_for_replay(struct session *session, bool open)
{
	size_t len = evbuffer_get_length(session->command_bytes);

	if (open || session->replay_lost) {
		session->replay_lost = true;
		return;
	}
	if (session->replay == NULL && (session->replay = evbuffer_new()) == NULL) {
		session->replay_lost = true;
		return;
	}
	if (evbuffer_add(session->replay, evbuffer_pullup(session->command_bytes, -1), len) < 0)
		session->replay_lost = true;
}

/* Sends the command read so far upstream under the client's tag (the
   first tag_len bytes of command_bytes), its verb for the core's state.
   With open, it stays open for the rest of its bytes. It takes resend
   (session_resend_keep's, or NULL). */
static struct imap_client_command *session_send_upstream(struct session *session, size_t tag_len, bool open,
							 struct session_resend *resend)
{
	struct session_forward *forward = calloc(1, sizeof(*forward) + tag_len + 1);
	struct imap_client_command *command;

	if (forward == NULL) {
		session_resend_free(&resend);
		session_close(session, "out of memory", "Server out of memory");
		return NULL;
	}
	forward->resend = resend;
	forward->reports_expunges = session_verb_reports_expunges(session->command_verb);
	session_news_sending(session, &forward->news); /* before a CLOSE leaves the mailbox */
	if (session_find_route(session->command_verb)->leaves_mailbox) {
		/* nothing is answered here, nor stored, until a new sync */
		sync_deselect(session->sync);
		fetch_fill_set_mailbox(session->fill, NULL, 0, NULL);
	}
	forward->session = session;
	if (session->upstream_unproven)
		session_keep_for_replay(session, open);
	evbuffer_remove(session->command_bytes, forward->tag, tag_len);
	forward->logout = strcmp(session->command_verb, "LOGOUT") == 0;
	command = imap_client_raw_command_new(session->upstream, forward->tag, session->command_verb,
					      session_forward_done, forward);
	imap_client_command_set_destroy(command, session_forward_context_free, forward);
	session->forwarded_pending++;
	imap_client_raw_command_write_buffer(command, session->command_bytes);
	if (open)
		session->open_command = command;
	else
		imap_client_raw_command_end(command);
	return command;
}

/* A command that can't wait for its line end: it goes upstream as it
   comes. Its tag and verb are what the parser has read so far. */
static void session_open_upstream(struct session *session)
{
	const struct imap_arg *args;
	unsigned int count;
	const char *target;
	size_t target_len;
	size_t tag_len = session_held_tag_length(session);

	imap_parser_get_open_args(session->command_parser, 0, &args, &count);
	session_verb_from_args(session, args, count);
	if (strcmp(session->command_verb, "APPEND") == 0 && count > 2 && imap_arg_get_astring(&args[2], &target, &target_len))
		session_news_set_target(session, target, target_len);
	if (tag_len == 0) {
		/* no tag to answer with: the line is dropped up to its end */
		session_send(session, "* BAD Invalid tag\r\n");
		session_close(session, "invalid command", "Invalid command line");
		return;
	}
	/* what the upstream said during the proxy's own commands goes out
	   before this command's answer, as for one sent whole (its EXISTS
	   counts precede what this command makes of them) */
	if (session->idle_plus_pending == NULL)
		session_own_release_held(session, bufferevent_get_output(session->bev));
	session_send_upstream(session, tag_len, true, NULL); /* its state is judged once its line is complete */
}

/* Whether a command may go upstream on a connection not yet proven:
   it changes nothing upstream, so that sending it again on a fresh login
   (should the connection prove dead, perhaps after it ran) answers the
   same. */
static bool session_replayable(const char *verb)
{
	static const char *const verbs[] = {
		"SELECT", "EXAMINE", "LIST", "LSUB", "STATUS", "NAMESPACE", "ID", "NOOP", "CHECK",
		"GETQUOTA", "GETQUOTAROOT", "GETACL", "MYRIGHTS", "LISTRIGHTS", "GETMETADATA", "XLIST",
	};

	for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++) {
		if (strcmp(verb, verbs[i]) == 0)
			return true;
	}
	return false;
}

/* Whether the line's tag is followed by one space and the command name
   (after "UID", one space again): the parser reads "a  FETCH" as it
   reads "a FETCH", where Dovecot answers BAD. */
static bool session_line_starts_plainly(const char *text, size_t len, size_t tag_len)
{
	size_t at = tag_len + 1;

	if (at >= len || text[at - 1] != ' ' || text[at] == ' ')
		return false;
	if (len - at > 4 && strncasecmp(text + at, "UID ", 4) == 0 && text[at + 4] == ' ')
		return false;
	return true;
}

/* Routes the complete command in the parser. Returns false when it must
   wait (a local answer while forwarded ones are still pending). */
static bool session_route_command(struct session *session)
{
	const struct imap_arg *line = imap_parser_get_line(session->command_parser);
	struct imap_command command;
	enum imap_command_error error;
	const struct session_route *route;
	struct imap_client_command *upstream;
	const char *text = (const char *)evbuffer_pullup(session->command_bytes, -1);
	size_t tag_len = session_held_tag_length(session);
	char tag_copy[SESSION_TAG_MAX + 1];
	struct session_resend *resend;
	bool tentative;

	session->last_activity_usec = session_now_usec();
	error = imap_command_parse(session->command_reader, line, &command, NULL);
	session_verb_from_args(session, line->list, line->list_count);
	if (error == IMAP_COMMAND_ERROR_NONE && tag_len > 0 &&
	    !session_line_starts_plainly(text, evbuffer_get_length(session->command_bytes), tag_len)) {
		error = IMAP_COMMAND_ERROR_UNKNOWN_COMMAND; /* upstream, for its BAD */
		session->command_verb[0] = '\0';
	}
	route = session_find_route(session->command_verb);
	/* What the upstream said during the proxy's own commands before this
	   command came goes first: its numbers may be ones a local answer
	   would use (an EXISTS), so FETCH and SEARCH then go upstream
	   (session_held_first). What comes during this command's own steps
	   goes after a local answer's data, as Dovecot sends it. An IDLE's
	   go after its "+", where Dovecot tells an idler what changed. */
	session->held_first = !session->command_replanned && !route->open &&
			      evbuffer_get_length(session->idle_held) > 0;
	if (session->held_first && session->idle_plus_pending == NULL)
		session_own_release_held(session, bufferevent_get_output(session->bev));
	if (error == IMAP_COMMAND_ERROR_NONE && command.name == IMAP_COMMAND_APPEND)
		session_news_set_target(session, command.u.append.mailbox, command.u.append.mailbox_len);
	else if (error == IMAP_COMMAND_ERROR_NONE && (command.name == IMAP_COMMAND_COPY || command.name == IMAP_COMMAND_MOVE))
		session_news_set_target(session, command.u.copy.mailbox, command.u.copy.mailbox_len);
	else if (error == IMAP_COMMAND_ERROR_NONE && command.name == IMAP_COMMAND_DELETE)
		session_news_set_target(session, command.u.mailbox.mailbox, command.u.mailbox.mailbox_len);
	else if (error == IMAP_COMMAND_ERROR_NONE && command.name == IMAP_COMMAND_RENAME)
		session_news_set_target(session, command.u.rename.from, command.u.rename.from_len);
	else if (error == IMAP_COMMAND_ERROR_NONE && command.name == IMAP_COMMAND_FETCH)
		session_news_set_fetch(session, &command);
	if (tag_len == 0 || error == IMAP_COMMAND_ERROR_EMPTY) {
		session_send(session, "* BAD Invalid tag\r\n");
		evbuffer_drain(session->command_bytes, evbuffer_get_length(session->command_bytes));
		session_count_bad(session);
		return true;
	}
	session->bad_commands = 0; /* only a run of them ends the session */
	/* what imapcached refuses, it refuses whatever its arguments: the
	   parser knows none of these verbs, and forwarded, COMPRESS would
	   compress the upstream's bytes past what the proxy can read */
	if (route->local != NULL && (error == IMAP_COMMAND_ERROR_NONE || route->local == session_answer_cannot) &&
	    tag_len <= SESSION_TAG_MAX) {
		memcpy(tag_copy, text, tag_len);
		tag_copy[tag_len] = '\0';
		switch (route->local(session, tag_copy, &command)) {
		case SESSION_LOCAL_ANSWERED:
			session->command_replanned = false;
			session->upstream_behind = true;
			evbuffer_drain(session->command_bytes, evbuffer_get_length(session->command_bytes));
			return true;
		case SESSION_LOCAL_WAIT:
			session->command_replanned = true;
			return false;
		case SESSION_LOCAL_UPSTREAM:
			break;
		}
	}
	if (session->upstream_unproven && !session_replayable(session->command_verb)) {
		session->command_replanned = true;
		return false; /* it might change the mailboxes: not before the connection is proven */
	}
	session->command_replanned = false;
	if (!route->open && session->idle_plus_pending == NULL) /* an IDLE's go after its "+" (session_upstream_raw) */
		session_own_release_held(session, bufferevent_get_output(session->bev)); /* before its answer */
	tentative = session_note_state_change(session, error == IMAP_COMMAND_ERROR_NONE ? &command : NULL,
					      line->list + 1, line->list_count - 1);
	resend = route->open || error != IMAP_COMMAND_ERROR_NONE ? NULL :
		 session_resend_keep(session, &command, text + tag_len,
				     evbuffer_get_length(session->command_bytes) - tag_len);
	upstream = session_send_upstream(session, tag_len, route->open, resend);
	if (upstream == NULL)
		return true;
	if (tentative)
		session->condstore_tentative = upstream;
	if (route->open) {
		session->open_is_idle = true;
		session->idle_plus_pending = upstream;
	}
	if (route->sent != NULL && error == IMAP_COMMAND_ERROR_NONE)
		route->sent(session, &command, upstream);
	return true;
}

/* The open IDLE's line (its DONE), the first len bytes of line, CRLF
   included: the pause answers it when the proxy paused this IDLE;
   otherwise it goes up as it is, and ends the IDLE. */
static void session_idle_line(struct session *session, struct evbuffer *line, size_t len)
{
	struct imap_client_command *command = session->open_command;

	if (session_own_idle_line(session, line, len)) {
		session->last_activity_usec = session_now_usec(); /* no batch right after: the client is awake */
		return;
	}
	evbuffer_remove_buffer(line, session->command_bytes, len);
	imap_client_raw_command_write_buffer(command, session->command_bytes);
	session_forget_open_command(session);
	imap_client_raw_command_end(command);
}

/* A line during IDLE past limits.line, its end not come: Dovecot answers
   "BAD Expected DONE" once its buffer is full, skips the rest and reads
   on. The line's first SESSION_IDLE_STAND_IN bytes stand in for it (no
   more is DONE than the whole is) and end the IDLE as the line would;
   the rest is dropped to its LF, holding nothing, with no answer of our
   own: the IDLE's tagged reply is the answer. */
static void session_idle_line_too_long(struct session *session, struct evbuffer *input)
{
	struct evbuffer *stand_in = evbuffer_new();
	int taken = stand_in != NULL ? evbuffer_remove_buffer(input, stand_in, SESSION_IDLE_STAND_IN) : -1;

	log_info("session %lu: line during IDLE longer than %zu bytes", session->id, session->conf->limit_line);
	if (taken < 0 || evbuffer_add(stand_in, "\r\n", 2) < 0) {
		if (stand_in != NULL)
			evbuffer_free(stand_in);
		session_close(session, "out of memory", "Out of memory");
		return;
	}
	session->bytes_in += (size_t)taken;
	session_idle_line(session, stand_in, evbuffer_get_length(stand_in));
	evbuffer_free(stand_in);
	session_set_pending_reply(session, "%s", "");
	session->skipping_line = true;
	session->skipped_line_bytes = 0;
}

/* A line of the open IDLE (its DONE). */
static bool session_forward_idle_line(struct session *session, struct evbuffer *input)
{
	size_t eol_len = 0;
	struct evbuffer_ptr eol = evbuffer_search_eol(input, NULL, &eol_len, EVBUFFER_EOL_CRLF);

	if (eol.pos < 0) {
		if (evbuffer_get_length(input) <= session->conf->limit_line)
			return false;
		session_idle_line_too_long(session, input);
		return session->state == SESSION_STATE_FORWARDING;
	}
	session->bytes_in += (size_t)eol.pos + eol_len;
	session_idle_line(session, input, (size_t)eol.pos + eol_len);
	return true;
}

/* A refused line whose end has come: it goes upstream as it is, for the
   upstream's BAD (into the open command when its start went already),
   or, without a valid tag, gets the BAD only a tag-less line can get.
   Its bytes, CRLF included, are in command_bytes. */
static void session_refused_line_done(struct session *session, size_t tag_len)
{
	struct imap_client_command *open = session->open_command;

	if (open != NULL) {
		imap_client_raw_command_write_buffer(open, session->command_bytes);
		session_forget_open_command(session);
		imap_client_raw_command_end(open);
		return;
	}
	if (tag_len == 0) {
		session_send(session, "* BAD Invalid tag\r\n");
		evbuffer_drain(session->command_bytes, evbuffer_get_length(session->command_bytes));
		session_count_bad(session);
		return;
	}
	session->bad_commands = 0;
	session->command_verb[0] = '\0';
	session->pool_state_changed = true; /* nothing is known of it */
	session_send_upstream(session, tag_len, false, NULL);
}

/* A line over limits.line whose start is in command_bytes (tag_len its
   tag's length there; 0: none valid). Nothing of it went upstream: it
   gets the BAD Dovecot gives a line over its imap_max_line_length, once
   its end has come, and the session reads on. A command whose start went
   upstream already (after a synchronizing literal) can't be ended
   without running what came of it: the session ends. ended: its end is
   in command_bytes already. Returns whether the line was answered and
   the session goes on. */
static bool session_refuse_long_line(struct session *session, struct evbuffer *input, size_t tag_len, bool ended)
{
	const char *text = (const char *)evbuffer_pullup(session->command_bytes, -1);

	log_info("session %lu: command line longer than %zu bytes", session->id, session->conf->limit_line);
	if (session->open_command != NULL) {
		session->bytes_in += evbuffer_get_length(input);
		session_close(session, "line too long", "Command line too long");
		return false;
	}
	if (tag_len == 0)
		session_set_pending_reply(session, "* BAD Error in IMAP tag: Too long argument.\r\n");
	else
		session_set_pending_reply(session, "%.*s BAD Error in IMAP command%s%.*s: Too long argument.\r\n",
					  (int)tag_len, text, session->command_verb[0] != '\0' ? " " : "", SESSION_VERB_MAX,
					  session->command_verb);
	evbuffer_drain(session->command_bytes, evbuffer_get_length(session->command_bytes));
	session->command_verb[0] = '\0';
	if (ended)
		return session_skipped_line_answer(session);
	/* dropped to its LF as Dovecot skips it, with no bound: no byte is held */
	session->skipping_line = true;
	session->skipped_line_bytes = 0;
	return session_skip_line(session, input, SIZE_MAX);
}

/* Reads more of a refused line (session->refused_line) into
   command_bytes, up to its end: no more than limits.line after the
   refusal (literals before it are no part of the line's length). Returns
   true when it was answered (session_refused_line_done), false when its
   end has not come yet or the session closed. */
static bool session_refused_line_step(struct session *session, struct evbuffer *input)
{
	size_t eol_len = 0;
	struct evbuffer_ptr eol = evbuffer_search_eol(input, NULL, &eol_len, EVBUFFER_EOL_CRLF);
	size_t take = eol.pos >= 0 ? (size_t)eol.pos + eol_len : evbuffer_get_length(input);

	session->bytes_in += take;
	session->refused_line_bytes += take;
	evbuffer_remove_buffer(input, session->command_bytes, take);
	if (session->refused_line_bytes > session->conf->limit_line + 2) {
		session->refused_line = false;
		return session_refuse_long_line(session, input, session->refused_tag_len, eol.pos >= 0);
	}
	if (eol.pos < 0)
		return false;
	session->refused_line = false;
	session_refused_line_done(session, session->refused_tag_len);
	return true;
}

/* Starts a refused line: what is read of it is in command_bytes, and it
   is answered once its end has come. */
static void session_refuse_line(struct session *session, struct evbuffer *input, size_t tag_len)
{
	session->refused_line = true;
	session->refused_tag_len = tag_len;
	session->refused_line_bytes = 0;
	(void)session_refused_line_step(session, input);
}

/* The parser refused the line: the session ends (a line or literal over
   the limits), a literal over the limit is refused, or the line goes
   upstream as it is once its end has come, for the upstream's BAD. The
   bytes read of it are in command_bytes. */
static void session_command_error(struct session *session, struct evbuffer *input)
{
	const char *message, *text;
	enum imap_parser_error error = imap_parser_get_error(session->command_parser, &message);
	struct imap_client_command *open = session->open_command;
	uint64_t size = 0;
	bool nonsync = false, too_big = imap_parser_get_refused_literal(session->command_parser, &size, &nonsync);
	size_t len, tag_len, eol_len = 0;
	struct evbuffer_ptr eol;

	tag_len = session_held_tag_length(session); /* before the reset forgets the line */
	if (error == IMAP_PARSER_ERROR_LINE_TOO_LONG) {
		const struct imap_arg *args;
		unsigned int count;

		imap_parser_get_open_args(session->command_parser, 0, &args, &count);
		session_verb_from_args(session, args, count);
		imap_parser_reset(session->command_parser);
		(void)session_refuse_long_line(session, input, tag_len, false);
		return;
	}
	imap_parser_reset(session->command_parser);
	len = evbuffer_get_length(session->command_bytes);
	text = (const char *)evbuffer_pullup(session->command_bytes, -1);
	if (!too_big) {
		log_debug("session %lu: a line imapcached can't read (%s) goes upstream as it is", session->id,
			  message);
		if (len > 0 && text[len - 1] == '\n')
			session_refused_line_done(session, tag_len); /* the parser read the whole line */
		else
			session_refuse_line(session, input, tag_len);
		return;
	}
	eol = evbuffer_search_eol(input, NULL, &eol_len, EVBUFFER_EOL_CRLF);
	if (eol.pos >= 0) {
		session->bytes_in += (size_t)eol.pos + eol_len;
		evbuffer_remove_buffer(input, session->command_bytes, (size_t)eol.pos + eol_len);
	}
	text = (const char *)evbuffer_pullup(session->command_bytes, -1);
	if (open != NULL || tag_len == 0 || nonsync) {
		/* a {N+} one is on its way: it can't be refused (RFC 7888) */
		log_info("session %lu: literal of %llu bytes, over the limit of %llu", session->id,
			 (unsigned long long)size, (unsigned long long)session->conf->limit_literal);
		session_close(session, "literal too large", "Literal too large");
		return;
	}
	/* refused before anything went upstream: no "+", no literal */
	log_info("session %lu: literal of %llu bytes refused, over the limit of %llu", session->id,
		 (unsigned long long)size, (unsigned long long)session->conf->limit_literal);
	session_send(session, "%.*s BAD Literal too large\r\n", (int)tag_len, text);
	evbuffer_drain(session->command_bytes, evbuffer_get_length(session->command_bytes));
}

/* Feeds the parser the next piece of input and moves the bytes it read
   to where they belong: the open command upstream, or the command held
   here. Returns the parser's result. */
static enum imap_parser_result session_feed_command(struct session *session, struct evbuffer *input)
{
	struct evbuffer_iovec vec;
	size_t consumed = 0;
	enum imap_parser_result result;

	if (evbuffer_peek(input, -1, NULL, &vec, 1) < 1)
		return IMAP_PARSER_NEED_MORE;
	if (imap_parser_get_literal_remaining(session->command_parser) > 0)
		session->literal_bytes_read = true;
	result = imap_parser_feed_bytes(session->command_parser, vec.iov_base, vec.iov_len, &consumed);
	session->bytes_in += consumed;
	evbuffer_remove_buffer(input, session->command_bytes, consumed);
	if (session->open_command != NULL && result != IMAP_PARSER_ERROR)
		imap_client_raw_command_write_buffer(session->open_command, session->command_bytes);
	return result;
}

/* Whether the line about to be read starts with a byte no tag can start
   with (a space excepted, which the upstream judges): such a line is
   dropped up to its end, a literal it announces unread, as Dovecot
   drops it ("{2}" where the tag goes is no literal). */
static bool session_line_lacks_tag(struct session *session, struct evbuffer *input)
{
	unsigned char first;

	if (session->open_command != NULL || imap_parser_is_mid_line(session->command_parser) ||
	    evbuffer_get_length(session->command_bytes) > 0 || evbuffer_copyout(input, &first, 1) != 1)
		return false;
	return first != ' ' && !session_tag_char(first);
}

/* Whether the command whose {N} literal the client waits to send is one
   imapcached refuses whatever its arguments (COMPRESS, NOTIFY): it must
   not go upstream as an open command does. */
static bool session_refuses_open(struct session *session)
{
	const struct imap_arg *args;
	unsigned int count;
	size_t tag_len = session_held_tag_length(session);

	imap_parser_get_open_args(session->command_parser, 0, &args, &count);
	session_verb_from_args(session, args, count);
	return tag_len > 0 && tag_len <= SESSION_TAG_MAX &&
	       session_find_route(session->command_verb)->local == session_answer_cannot;
}

/* Of the held bytes of a line being dropped, keeps only its tag. */
static void session_keep_tag_only(struct session *session)
{
	size_t tag_len = session_held_tag_length(session);
	char tag[SESSION_TAG_MAX];

	evbuffer_remove(session->command_bytes, tag, tag_len);
	evbuffer_drain(session->command_bytes, evbuffer_get_length(session->command_bytes));
	evbuffer_add(session->command_bytes, tag, tag_len);
}

/* Refuses it in the "+"'s stead, once the answers before it are out
   (RFC 3501 7.5: the client then sends neither the literal nor the rest
   of the line); or, for a line of {N+} literals, once all of it is in. */
static bool session_refuse_literal(struct session *session)
{
	size_t tag_len = session_held_tag_length(session);
	char tag[SESSION_TAG_MAX + 1];

	if (session->forwarded_pending > 0)
		return false;
	evbuffer_remove(session->command_bytes, tag, tag_len);
	tag[tag_len] = '\0';
	session->refusing_literal = false;
	imap_parser_reset(session->command_parser);
	evbuffer_drain(session->command_bytes, evbuffer_get_length(session->command_bytes));
	(void)session_answer_cannot(session, tag, NULL);
	return true;
}

/* One step of reading the client's commands. Returns false when nothing
   more can be done now. */
static bool session_forward_step(struct session *session, struct evbuffer *input)
{
	enum imap_parser_result result;

	if (session->upstream_unproven && session->open_command == NULL &&
	    (session->replay_lost || (session->replay != NULL && evbuffer_get_length(session->replay) > 0)))
		return false; /* one command on an unproven connection: the rest waits for its proof */
	if (session->own_command != NULL)
		return false; /* nothing runs beside it: Dovecot would answer a FETCH in parallel */
	if (session->open_waits_proof) {
		if (session->upstream_unproven)
			return false;
		session->open_waits_proof = false;
		session_open_upstream(session);
		session->waiting_go_ahead = session->open_command != NULL;
		return true;
	}
	if (session->local_answer != NULL)
		return false; /* the client reads a FETCH answered here first */
	if (session->command_ready) {
		if (!session_route_command(session))
			return false;
		session->command_ready = false;
		return true;
	}
	if (session->refusing_literal)
		return session_refuse_literal(session);
	if (session->waiting_go_ahead)
		return false; /* the upstream's "+" comes first */
	if (session->idle_pause != SESSION_IDLE_RUNNING && session->idle_client_done)
		return false; /* the client's DONE is in: its next commands wait for the IDLE's end */
	if (session->open_is_idle)
		return session_forward_idle_line(session, input);
	if (session->refused_line)
		return session_refused_line_step(session, input);
	if (session->skipping_line)
		return session_skip_line(session, input, SIZE_MAX);
	if (evbuffer_get_length(input) == 0)
		return false;
	if (session_line_lacks_tag(session, input)) {
		session_refuse_line(session, input, 0);
		return !session->refused_line && session->state == SESSION_STATE_FORWARDING;
	}
	result = session_feed_command(session, input);
	switch (result) {
	case IMAP_PARSER_NEED_MORE:
		if (session->open_command == NULL &&
		    evbuffer_get_length(session->command_bytes) > SESSION_PENDING_MAX &&
		    (session->dropping_refused || session_refuses_open(session))) {
			/* {N+} literals past the hold: only its tag is kept */
			session->dropping_refused = true;
			session_keep_tag_only(session);
			return true;
		}
		if (session->open_command == NULL &&
		    evbuffer_get_length(session->command_bytes) > SESSION_PENDING_MAX) {
			if (session->upstream_unproven) {
				session->open_waits_proof = true; /* not sent before the proof: it can't be sent twice */
				return false;
			}
			session_open_upstream(session);
		}
		return true;
	case IMAP_PARSER_LITERAL_ANNOUNCED:
		if (session->open_command == NULL && (session->dropping_refused || session_refuses_open(session))) {
			session->dropping_refused = false;
			session->refusing_literal = true;
			return true;
		}
		if (session->open_command == NULL && session->upstream_unproven) {
			session->open_waits_proof = true;
			return false;
		}
		if (session->open_command == NULL)
			session_open_upstream(session);
		session->waiting_go_ahead = session->open_command != NULL;
		return true;
	case IMAP_PARSER_LINE_COMPLETE:
		if (session->open_command != NULL) {
			struct imap_client_command *command = session->open_command;

			session_forget_open_command(session);
			session_note_open_state_change(session, command);
			imap_client_raw_command_end(command);
			return true;
		}
		if (session->dropping_refused) { /* answered as one refused before its literal */
			session->dropping_refused = false;
			session->refusing_literal = true;
			return true;
		}
		session->command_ready = true;
		return true;
	case IMAP_PARSER_ERROR:
		session_command_error(session, input);
		return true;
	}
	return false;
}

bool session_forward_idle(struct session *session)
{
	return session->state == SESSION_STATE_FORWARDING && session->forwarded_pending == 0 &&
	       session->own_command == NULL && session->local_answer == NULL && !session->command_ready &&
	       session->open_command == NULL && evbuffer_get_length(session->command_bytes) == 0 &&
	       evbuffer_get_length(bufferevent_get_input(session->bev)) == 0;
}

void session_forward_input(struct session *session)
{
	struct evbuffer *input = bufferevent_get_input(session->bev);

	for (unsigned int done = 0; done < SESSION_COMMANDS_PER_EVENT; done++) {
		if (session->state != SESSION_STATE_FORWARDING)
			return;
		if (imap_client_get_output_pending(session->upstream) > SESSION_UPSTREAM_HIGH_WATER) {
			/* resumed from session_upstream_drained */
			session->waiting_upstream_output = true;
			bufferevent_disable(session->bev, EV_READ);
			return;
		}
		if (!session_forward_step(session, input)) {
			if (session->prefetch != NULL && session_forward_idle(session))
				session_own_prefetch_when_quiet(session);
			return;
		}
	}
	session_schedule_step(session); /* more pipelined commands: after other clients */
}

uint64_t session_forward_literal_due(const struct session *session)
{
	if (session->command_parser == NULL || session->waiting_go_ahead || session->refusing_literal)
		return 0; /* the client waits for our "+" (or the refusal in its stead) */
	return imap_parser_get_literal_remaining(session->command_parser);
}

/* The account's store, shared with its other sessions, and this session's
   view of its mailbox. Only now: the upstream has accepted the login. A
   store that can't be opened means proxying without one. */
static int session_open_cache(struct session *session)
{
	const struct cache_settings settings = {
		.dir = session->conf->cache_dir,
		.body_budget = session->conf->cache_body_budget,
		.body_max_size = session->conf->cache_body_max_size,
		.base = session->base,
		.linger_seconds = CACHE_LINGER_SECONDS,
	};
	const char *error;

	session->held_reply = evbuffer_new();
	session->idle_held = evbuffer_new();
	session->seen_lines = evbuffer_new();
	session->splice_bye = evbuffer_new();
	session->idle_done_reply = evbuffer_new();
	session->idle_client_line = evbuffer_new();
	session->view = mailbox_view_new();
	if (session->held_reply == NULL || session->idle_held == NULL || session->seen_lines == NULL ||
	    session->splice_bye == NULL || session->idle_done_reply == NULL || session->idle_client_line == NULL ||
	    session->view == NULL)
		return -1;
	session->cache = cache_open(&settings, session->upstream_name, session->user, &error);
	if (session->cache == NULL)
		log_info("session %lu: no cache for %s on upstream %s (%s): proxying only", session->id,
			 session->user, session->upstream_name, error);
	session->sync = sync_new(session->cache, session->view);
	if (session->sync != NULL)
		sync_set_event_base(session->sync, session->base);
	session->fill = fetch_fill_new();
	if (session->cache != NULL && session->conf->cache_prefetch != CONF_PREFETCH_OFF &&
	    ((session->prefetch = prefetch_new()) == NULL ||
	     (session->prefetch_timer = evtimer_new(session->base, session_own_prefetch_timer, session)) == NULL))
		return -1;
	if (session->prefetch != NULL)
		prefetch_size_first(session->prefetch, link_facts_get(session->upstream_name).bytes_per_sec);
	session->batch_event = event_new(session->base, -1, 0, session_end_batch, session);
	return session->sync == NULL || session->fill == NULL || session->batch_event == NULL ? -1 : 0;
}

int session_forward_start(struct session *session)
{
	struct imap_parser_limits limits;

	if (session->command_parser == NULL) /* a login replayed; else the one that read the login */
		session->command_parser = imap_parser_new();
	session->command_reader = imap_command_parser_new();
	session->command_bytes = evbuffer_new();
	if (session->command_parser == NULL || session->command_reader == NULL || session->command_bytes == NULL)
		return -1;
	imap_parser_wipe(session->command_parser);
	imap_parser_set_mode(session->command_parser, IMAP_PARSER_MODE_COMMAND);
	imap_parser_get_default_limits(&limits);
	limits.max_line = session->conf->limit_line;
	limits.max_literal = session->conf->limit_literal;
	imap_parser_set_limits(session->command_parser, &limits);
	if (session_open_cache(session) < 0)
		return -1;
	imap_client_set_raw_callback(session->upstream, session_upstream_raw, session);
	imap_client_set_untagged_callback(session->upstream, session_upstream_untagged, session);
	imap_client_set_output_drained_callback(session->upstream, SESSION_UPSTREAM_HIGH_WATER / 2,
						session_upstream_drained, session);
	return 0;
}

void session_forward_free(struct session *session)
{
	imap_parser_free(&session->command_parser);
	imap_command_parser_free(&session->command_reader);
	if (session->command_bytes != NULL)
		evbuffer_free(session->command_bytes);
	session->command_bytes = NULL;
	fetch_answer_free(&session->local_answer);
	free(session->local_tag);
	session->local_tag = NULL;
	free(session->news_target);
	session->news_target = NULL;
	session_own_seen_reset(session);
	session_own_missing_reset(session);
	session_own_splice_reset(session);
	session_own_vanished_reset(session);
	fetch_fill_free(&session->fill);
	session_own_sync_behind_clear(session);
	prefetch_free(&session->prefetch);
	if (session->prefetch_timer != NULL)
		event_free(session->prefetch_timer);
	session->prefetch_timer = NULL;
	if (session->batch_event != NULL) {
		session_end_batch(-1, 0, session);
		event_free(session->batch_event);
		session->batch_event = NULL;
	}
	sync_free(&session->sync);
	mailbox_view_free(&session->view);
	if (session->cache != NULL)
		cache_pause_forget(session->cache, session);
	session->store_paused = false;
	cache_unref(&session->cache);
	if (session->held_reply != NULL)
		evbuffer_free(session->held_reply);
	session->held_reply = NULL;
	if (session->idle_held != NULL)
		evbuffer_free(session->idle_held);
	session->idle_held = NULL;
	if (session->seen_lines != NULL)
		evbuffer_free(session->seen_lines);
	session->seen_lines = NULL;
	if (session->splice_bye != NULL)
		evbuffer_free(session->splice_bye);
	session->splice_bye = NULL;
	if (session->idle_done_reply != NULL)
		evbuffer_free(session->idle_done_reply);
	session->idle_done_reply = NULL;
	if (session->idle_client_line != NULL)
		evbuffer_free(session->idle_client_line);
	session->idle_client_line = NULL;
	free(session->idle_tag);
	session->idle_tag = NULL;
}

_Static_assert(offsetof(struct session, state_logged_in) > offsetof(struct session, command_parser),
	       "session_forward_reset clears the fields from command_parser up to state_logged_in");

void session_forward_reset(struct session *session)
{
	session_forward_free(session);
	memset(&session->command_parser, 0,
	       offsetof(struct session, state_logged_in) - offsetof(struct session, command_parser));
	session->pool_state_changed = false;
	if (!session->reading_paused)
		bufferevent_enable(session->bev, EV_READ); /* a pause for the upstream's output is over */
}
