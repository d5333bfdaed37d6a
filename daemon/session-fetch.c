/* SPDX-License-Identifier: MIT */
/* session-fetch: a FETCH after login answered from the view and the store, with the steps
   before it (what its messages lack, what the store can't vouch for, \Seen) on the proxy's own tags. */
#include "config.h"
#include "session-private.h"
#include "cache.h"
#include "fetch.h"
#include "fetch-splice.h"
#include "imap-command.h"
#include "imap-parser.h"
#include "log.h"
#include "sync.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The first write of a local answer: its first lines leave with the plan's
   turn, so that the client reads them while the rest is looked up. */
#define SESSION_FIRST_WRITE (16 * 1024)

/* A BYE during the splice step waits for the lines Dovecot would have
   written before it (session_fetch_cut_answer). */
bool session_holds_splice_bye(struct session *session, const struct imap_client_command *command,
			      enum imap_client_raw_kind kind, const unsigned char *data, size_t len, bool line_end)
{
	bool hold = session->holding_bye;

	if (!hold && kind == IMAP_CLIENT_RAW_UNTAGGED && command != NULL && command == session->own_command &&
	    session->own_kind == SESSION_OWN_SPLICE && session->splice != NULL && session->splice_bye != NULL &&
	    len >= 6 && strncasecmp((const char *)data, "* BYE ", 6) == 0) {
		hold = true;
		session->upstream_said_bye = true;
	}
	if (hold)
		evbuffer_add(session->splice_bye, data, len);
	session->holding_bye = hold && !line_end;
	return hold;
}

/* Writes what the client can take of the FETCH answered here, then its
   tagged OK; a store that lost a value meanwhile ends the session, as
   Dovecot ends it when a FETCH fails mid-way. */
static void session_write_local_answer(struct session *session, size_t limit)
{
	struct evbuffer *output = bufferevent_get_output(session->bev);
	size_t before = evbuffer_get_length(output);
	enum fetch_write_result result = fetch_answer_write(session->local_answer, output, limit);

	session->bytes_out += evbuffer_get_length(output) - before;
	if (result == FETCH_WRITE_MORE) {
		/* nothing from upstream (an EXPUNGE) may come between its lines */
		imap_client_set_reading_paused(session->upstream, true);
		return; /* session_forward_output_drained goes on */
	}
	if (result == FETCH_WRITE_DONE && fetch_answer_binary_last_local(session->local_answer)) {
		/* the upstream read no stream for it; a session of the client's own would have */
		session->binary_size_usec = 0;
		session->binary_splice_usec = 0;
		session->binary_splice_uid = 0;
	}
	fetch_answer_free(&session->local_answer);
	if (!session->upstream_reading_paused && !session->store_paused)
		imap_client_set_reading_paused(session->upstream, false);
	if (result == FETCH_WRITE_LOST) {
		log_warning("session %lu: a cached value went away while a FETCH was answered from it", session->id);
		session_close(session, "cache lost a value mid-FETCH", "Internal error reading the cache");
		return;
	}
	session_own_release_held(session, output);
	before = evbuffer_get_length(output);
	fetch_write_tagged_ok(output, session->local_tag);
	session->bytes_out += evbuffer_get_length(output) - before;
	free(session->local_tag);
	session->local_tag = NULL;
	session->last_activity_usec = session_now_usec();
	session_schedule_step(session); /* the commands after it */
}

void session_forward_output_drained(struct session *session)
{
	if (session->local_answer != NULL && session->state == SESSION_STATE_FORWARDING)
		session_write_local_answer(session, SESSION_OUTPUT_HIGH_WATER);
}

/* A FETCH that would set \Seen: the upstream sets it first (STORE), and
   the FETCH is planned again once that is answered (WAIT), or, when the
   step was taken and still did not settle it, goes upstream. */
static enum session_local session_fetch_seen_first(struct session *session, const struct imap_command *command,
						   bool tried)
{
	uint32_t *uids, *seqs;
	long count = fetch_answer_unseen(session->local_answer, &uids, &seqs);
	int ret = -1;

	fetch_answer_free(&session->local_answer);
	if (count > 0 && !tried)
		ret = session_own_set_seen(session, uids, seqs, (size_t)count);
	free(uids);
	free(seqs);
	if (ret < 0) {
		log_debug("session %lu: %s goes upstream: \\Seen could not be set first", session->id,
			  session->command_verb);
		session_own_seen_reset(session);
		return SESSION_LOCAL_UPSTREAM;
	}
	return SESSION_LOCAL_WAIT;
}

/* A FETCH whose messages partly lack what it asks for: the proxy fetches
   that first (WAIT), and the FETCH is planned again once it is answered.
   Returns UPSTREAM when that can't be sent. */
static enum session_local session_fetch_missing_first(struct session *session, const struct imap_command *command)
{
	char items[FETCH_MISSING_ITEMS_MAX];
	uint32_t *uids, *seqs;
	long count = fetch_answer_missing(session->local_answer, &uids, &seqs, items, sizeof(items));
	int ret = count > 0 ? session_own_fetch_missing(session, uids, seqs, (size_t)count, items,
							fetch_answer_missing_changedsince(session->local_answer)) : -1;

	fetch_answer_free(&session->local_answer);
	free(uids);
	free(seqs);
	if (ret < 0) {
		log_debug("session %lu: %s goes upstream: what it lacks could not be asked for", session->id,
			  session->command_verb);
		return SESSION_LOCAL_UPSTREAM;
	}
	return SESSION_LOCAL_WAIT;
}

/* A FETCH with the VANISHED modifier: the upstream reports what went
   first (WAIT), and the FETCH is planned again with what it said; when
   the step was taken and failed, it goes upstream. */
static enum session_local session_fetch_vanished_first(struct session *session, const struct imap_command *command)
{
	bool tried = session->vanished_state != SESSION_VANISHED_NONE;

	fetch_answer_free(&session->local_answer);
	if (tried || command->arg_count < 1 || command->args[0].type != IMAP_ARG_ATOM ||
	    session_own_fetch_vanished(session, command->args[0].str, command->u.fetch.changedsince) < 0) {
		log_debug("session %lu: %s goes upstream: what its VANISHED modifier reports is not known",
			  session->id, session->command_verb);
		return SESSION_LOCAL_UPSTREAM;
	}
	return SESSION_LOCAL_WAIT;
}

/* A FETCH with (message, item) pairs the store can't vouch for: the
   proxy fetches those alone first (WAIT), and the FETCH is planned again
   with their values. Returns UPSTREAM when that can't be sent. */
static enum session_local session_fetch_splice_first(struct session *session)
{
	struct fetch_splice_group *groups;
	long count = fetch_answer_splice_groups(session->local_answer, &groups);
	size_t messages = fetch_answer_spliced_count(session->local_answer);
	const char *why = fetch_answer_splice_why(session->local_answer);

	fetch_answer_free(&session->local_answer);
	if (count <= 0 || session_own_fetch_splice(session, groups, (size_t)count) < 0) {
		if (count <= 0)
			session->splice_tried = true;
		log_debug("session %lu: %s goes upstream: the items it can't vouch for could not be asked for alone",
			  session->id, session->command_verb);
		return SESSION_LOCAL_UPSTREAM;
	}
	log_debug("session %lu: %s: %zu messages' (%ld FETCH) items fetched alone first, one because of: %s",
		  session->id, session->command_verb, messages, count, why);
	return SESSION_LOCAL_WAIT;
}

/* Whether held upstream news keeps this command from a local answer:
   news given as the command was taken up (the upstream's numbering may
   have grown past what a local answer may show before it), or an EXISTS
   that came during its own steps (the view counts messages the client
   is not told of until after the answer). The upstream answers in its
   own order instead. */
bool session_held_blocks_local(struct session *session)
{
	if (session->held_first) {
		log_debug("session %lu: %s goes upstream: news of the mailbox came before it", session->id,
			  session->command_verb);
		return true;
	}
	if (evbuffer_search(session->idle_held, " EXISTS\r\n", 9, NULL).pos >= 0) {
		log_debug("session %lu: %s goes upstream: the mailbox grew during its own steps", session->id,
			  session->command_verb);
		return true;
	}
	return false;
}

/* Plans a FETCH (see session_answer_fetch); the steps before a local
   answer (what is missing, \Seen) return WAIT. */
static void session_fetch_facts(struct session *session, struct fetch_facts *facts)
{
	*facts = (struct fetch_facts){
		.cache = session->cache,
		.mailbox_id = sync_mailbox_id(session->sync),
		.view = session->view,
		.read_only = sync_is_read_only(session->sync),
		.condstore = session->client_condstore,
		.qresync = session->client_qresync,
		.peek_only = session->seen_state == SESSION_SEEN_REFUSED,
		.seen_stored = session->seen_state == SESSION_SEEN_SET,
		.binary_marked_uid = session->binary_splice_usec != 0 &&
				     session_now_usec() - session->binary_splice_usec < FETCH_DOVECOT_BINARY_CACHE_USEC ?
					     session->binary_splice_uid : 0,
		.binary_marked = session->binary_size_usec != 0 &&
				 session_now_usec() - session->binary_size_usec < FETCH_DOVECOT_BINARY_CACHE_USEC,
		.seen = session->seen_state == SESSION_SEEN_SET ? session->seen : NULL,
		.seen_count = session->seen_state == SESSION_SEEN_SET ? session->seen_count : 0,
		.fill_missing = !session->missing_tried && session->cache != NULL && !cache_writes_off(session->cache),
		.vouched_modseq = session_own_vouched_modseq(session),
		.body_max_size = session->conf->cache_body_max_size,
		.splice_allowed = !session->splice_tried,
		.splice = session->splice,
		.vanished_known = session->vanished_state == SESSION_VANISHED_KNOWN,
		.vanished_lines = session->vanished_state == SESSION_VANISHED_KNOWN && session->vanished_lines != NULL
					  ? (const char *)evbuffer_pullup(session->vanished_lines, -1)
					  : NULL,
		.vanished_len = session->vanished_state == SESSION_VANISHED_KNOWN && session->vanished_lines != NULL
					? evbuffer_get_length(session->vanished_lines)
					: 0,
		.vanished_uids = session->vanished_uids,
		.vanished_uid_count = session->vanished_uid_count,
		.line = (const char *)evbuffer_pullup(session->command_bytes, -1),
		.line_len = evbuffer_get_length(session->command_bytes),
	};
	while (facts->line_len > 0 &&
	       (facts->line[facts->line_len - 1] == '\n' || facts->line[facts->line_len - 1] == '\r'))
		facts->line_len--;
}

static enum session_local session_plan_fetch(struct session *session, const char *tag,
					      const struct imap_command *command)
{
	struct fetch_facts facts;
	const char *why;
	enum fetch_route route;
	bool seen_tried = session->seen_state != SESSION_SEEN_NONE;

	session_fetch_facts(session, &facts);
	if (!sync_is_ready(session->sync) || session->cache == NULL || facts.mailbox_id == 0 ||
	    session->seen_state == SESSION_SEEN_FAILED || session_held_blocks_local(session) ||
	    session_news_blocks_local(session)) {
		session_own_seen_reset(session);
		log_debug("session %lu: %s goes upstream: %s", session->id, session->command_verb,
			  session->cache == NULL ? "no store" : "the mailbox is not synced (or not vouched for)");
		return SESSION_LOCAL_UPSTREAM;
	}
	if (session->seen_state == SESSION_SEEN_SET)
		session_news_seen_set(session);
	route = fetch_plan(command, &facts, &session->local_answer, &why);
	session_own_seen_reset(session);
	if (route != FETCH_ROUTE_LOCAL) {
		log_debug("session %lu: %s goes upstream: %s", session->id, session->command_verb, why);
		return SESSION_LOCAL_UPSTREAM;
	}
	if (session->forwarded_pending > 0) {
		/* local, after what is pending (planned again then: the view may move) */
		fetch_answer_free(&session->local_answer);
		return SESSION_LOCAL_WAIT;
	}
	if (fetch_answer_needs_vanished(session->local_answer))
		return session_fetch_vanished_first(session, command);
	if (fetch_answer_missing_count(session->local_answer) > 0)
		return session_fetch_missing_first(session, command);
	if (fetch_answer_spliced_count(session->local_answer) > 0 && fetch_answer_needs_seen(session->local_answer) &&
	    fetch_answer_splices_decoding_unseen(session->local_answer)) {
		fetch_answer_free(&session->local_answer);
		log_debug("session %lu: %s goes upstream: it sets \\Seen and decodes a part upstream", session->id,
			  session->command_verb);
		return SESSION_LOCAL_UPSTREAM;
	}
	if (fetch_answer_spliced_count(session->local_answer) > 0)
		return session_fetch_splice_first(session);
	if (fetch_answer_needs_seen(session->local_answer))
		return session_fetch_seen_first(session, command, seen_tried);
	session->local_tag = strdup(tag);
	if (session->local_tag == NULL) {
		fetch_answer_free(&session->local_answer);
		return SESSION_LOCAL_UPSTREAM;
	}
	log_debug("session %lu: %s answered from the cache (%zu messages)", session->id, session->command_verb,
		  fetch_answer_count(session->local_answer));
	fetch_answer_adopt_splice(session->local_answer, &session->splice);
	session_write_local_answer(session, SESSION_FIRST_WRITE);
	return SESSION_LOCAL_ANSWERED;
}

#define SESSION_CUT_ANSWER_MAX (16u << 20) /* a larger one is not written: the BYE alone, as before */

/* Whether uid is one of group's (ascending). */
static bool splice_group_has(const struct fetch_splice_group *group, uint32_t uid)
{
	size_t low = 0, high = group->count;

	while (low < high) {
		size_t mid = low + (high - low) / 2;

		if (group->uids[mid] == uid)
			return true;
		if (group->uids[mid] < uid)
			low = mid + 1;
		else
			high = mid;
	}
	return false;
}

void session_fetch_cut_answer(struct session *session, const struct fetch_splice_group *failing)
{
	struct evbuffer *output = bufferevent_get_output(session->bev);
	const struct imap_arg *line = imap_parser_get_line(session->command_parser);
	struct evbuffer *lines = evbuffer_new();
	struct fetch_answer *answer = NULL;
	struct imap_command command;
	struct fetch_facts facts;
	const char *why = "not a FETCH";
	uint32_t cut_uid;

	if (lines != NULL && line != NULL && session->cache != NULL &&
	    imap_command_parse(session->command_reader, line, &command, NULL) == IMAP_COMMAND_ERROR_NONE &&
	    command.name == IMAP_COMMAND_FETCH) {
		session_fetch_facts(session, &facts);
		facts.fill_missing = false;
		facts.splice_allowed = false;
		facts.splice_cut = true;
		/* a FETCH that sets \Seen reached the splice step only with every
		   message \Seen in the view (fetch_answer_splices_decoding_unseen):
		   Dovecot's lines then show no FLAGS */
		facts.seen_stored = true;
		facts.seen = NULL;
		facts.seen_count = 0;
		if (fetch_plan(&command, &facts, &answer, &why) != FETCH_ROUTE_LOCAL)
			answer = NULL;
		else if (fetch_answer_missing_count(answer) > 0 || fetch_answer_spliced_count(answer) > 0 ||
			 fetch_answer_needs_seen(answer))
			why = "more steps than the upstream's end allows";
		else if (session->splice_group_count > 1 &&
			 (!fetch_answer_cut_uid(answer, &cut_uid) || !splice_group_has(failing, cut_uid)))
			why = "a message before the failing one is in an own FETCH not sent";
		else if (fetch_answer_write(answer, lines, SESSION_CUT_ANSWER_MAX) != FETCH_WRITE_DONE)
			why = "too large, or the store failed";
		else
			why = NULL;
	}
	if (why == NULL) {
		log_debug("session %lu: the upstream ended %s's splice step: its %zu lines before the BYE from the cache",
			  session->id, session->command_verb, fetch_answer_count(answer));
		session->bytes_out += evbuffer_get_length(lines);
		evbuffer_add_buffer(output, lines);
	} else {
		log_debug("session %lu: the upstream ended %s's splice step: the BYE alone (%s)", session->id,
			  session->command_verb, why);
	}
	fetch_answer_free(&answer);
	if (lines != NULL)
		evbuffer_free(lines);
	session_own_release_held(session, output);
	session->bytes_out += evbuffer_get_length(session->splice_bye);
	evbuffer_add_buffer(output, session->splice_bye);
}

/* Whether the command asks for BINARY or BINARY.SIZE of something. */
static bool fetch_asks_binary(const struct imap_command *command)
{
	for (unsigned int i = 0; i < command->u.fetch.attr_count; i++) {
		if (command->u.fetch.attrs[i].type == IMAP_FETCH_ATTR_BINARY_SIZE ||
		    command->u.fetch.attrs[i].type == IMAP_FETCH_ATTR_BINARY_SECTION)
			return true;
	}
	return false;
}

/* FETCH and UID FETCH: answered from the view and the store when all of
   it is there and vouched for (fetch.h), after fetching on the proxy's
   own tag what a few of its messages lack; else upstream. */
enum session_local session_answer_fetch(struct session *session, const char *tag, const struct imap_command *command)
{
	enum session_local result;

	result = session_plan_fetch(session, tag, command);
	if (result == SESSION_LOCAL_UPSTREAM && fetch_asks_binary(command))
		session->binary_size_usec = session_now_usec(); /* Dovecot may keep (or reuse, for 60 s more) a stream */
	if (result == SESSION_LOCAL_UPSTREAM) {
		/* \Seen was set for it, but the upstream will not say so again */
		session->bytes_out += evbuffer_get_length(session->seen_lines);
		evbuffer_add_buffer(bufferevent_get_output(session->bev), session->seen_lines);
	} else if (result == SESSION_LOCAL_ANSWERED) {
		evbuffer_drain(session->seen_lines, evbuffer_get_length(session->seen_lines)); /* its FLAGS show it */
	}

	if (result != SESSION_LOCAL_WAIT || session->own_command == NULL) {
		session_own_missing_reset(session); /* routed, or waiting for forwarded ones: planned anew */
		session_own_splice_reset(session);
		session_own_vanished_reset(session);
	}
	return result;
}
