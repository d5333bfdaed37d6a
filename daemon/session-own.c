/* SPDX-License-Identifier: MIT */
/* session-own: the proxy's own commands on a client's upstream connection: the sync behind a SELECT, the \Seen STORE before a FETCH answered here. */
#include "config.h"
#include "session-private.h"
#include "cache.h"
#include "fetch.h"
#include "fetch-fill.h"
#include "fetch-splice.h"
#include "imap-command.h"
#include "imap-seqset.h"
#include "link.h"
#include "log.h"
#include "mailbox-view.h"
#include "prefetch.h"
#include "sync.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <event2/event.h>
#include <strings.h>

/*
 * An own command goes on the client's connection with the proxy's tag
 * (the client core's), only when no forwarded command is pending, and
 * nothing of the client's goes upstream until it is answered: Dovecot
 * runs pipelined commands in parallel, and their lines would mix. Its
 * tagged reply and its own FETCH data are consumed here; every other
 * line (EXISTS, EXPUNGE, a flag change of another message) passes to
 * the client where the upstream put it.
 */

/* Whether "* n FETCH" starts data; *seq_r is n. */
static bool session_own_fetch_line(const unsigned char *data, size_t len, uint32_t *seq_r)
{
	size_t pos = 2;
	uint64_t seq = 0;

	if (len < 2 || data[0] != '*' || data[1] != ' ')
		return false;
	while (pos < len && data[pos] >= '0' && data[pos] <= '9' && seq <= UINT32_MAX)
		seq = seq * 10 + (uint64_t)(data[pos++] - '0');
	*seq_r = seq <= UINT32_MAX ? (uint32_t)seq : 0;
	return pos > 2 && len - pos >= 7 && strncasecmp((const char *)data + pos, " FETCH ", 7) == 0;
}

/* Whether an untagged line of the sync is its own data besides FETCH:
   the CONDSTORE form's ESEARCH, the QRESYNC form's VANISHED (EARLIER). */
static bool session_own_sync_data(const unsigned char *data, size_t len)
{
	return (len >= 10 && strncasecmp((const char *)data, "* ESEARCH ", 10) == 0) ||
	       (len >= 21 && strncasecmp((const char *)data, "* VANISHED (EARLIER) ", 21) == 0);
}

static int session_seen_compare(const void *key, const void *element)
{
	uint32_t uid = *(const uint32_t *)key, other = ((const struct fetch_seen *)element)->uid;

	return uid < other ? -1 : uid > other;
}

/* The length of the run at p (before end) of bytes not in stops. */
static size_t span_until(const char *p, const char *end, const char *stops)
{
	const char *q = p;

	while (q < end && strchr(stops, *q) == NULL)
		q++;
	return (size_t)(q - p);
}

/* Whether flag list a (len bytes) and NUL-terminated list b hold the
   same flags, \Recent left aside (and \Seen, with but_seen). */
static bool flag_lists_equal(const char *a, size_t len, const char *b, bool but_seen)
{
	const char *lists[2] = { a, b }, *ends[2] = { a + len, b + strlen(b) };
	unsigned int counts[2] = { 0, 0 };

	for (int side = 0; side < 2; side++) {
		for (const char *p = lists[side]; p < ends[side];) {
			size_t n = span_until(p, ends[side], " ");
			const char *q = lists[1 - side];
			bool found = false;

			if (n > 0 && !(n == 7 && strncasecmp(p, "\\Recent", 7) == 0) &&
			    !(but_seen && n == 5 && strncasecmp(p, "\\Seen", 5) == 0)) {
				counts[side]++;
				while (q < ends[1 - side] && !found) {
					size_t m = span_until(q, ends[1 - side], " ");

					found = m == n && strncasecmp(p, q, n) == 0;
					q += m + (q + m < ends[1 - side]);
				}
				if (!found)
					return false;
			}
			p += n + (p + n < ends[side]);
		}
	}
	return counts[0] == counts[1];
}

/* The flag list of a FETCH line ("FLAGS (" to ")"), or NULL. */
static const char *fetch_line_flags(const unsigned char *data, size_t len, size_t *len_r)
{
	const char *text = (const char *)data, *end = text + len;

	for (const char *p = text; p + 7 <= end; p++) {
		if (strncasecmp(p, "FLAGS (", 7) == 0) {
			*len_r = span_until(p + 7, end, ")\r\n");
			return p + 7;
		}
	}
	return NULL;
}

/* Whether the FETCH line (data) of the view's seq is the \Seen STORE's
   own answer: a message of its set whose \Seen the STORE then changed.
   Dovecot reports no message that had \Seen already, so a line that
   differs from what the view has of a message the view has seen is
   another client's change, told at the STORE's end: it is held and goes
   after the answer, where Dovecot puts it. (A line equal to the view's
   seen flags is the STORE putting back a \Seen another client took.) */
static bool session_own_seen_message(struct session *session, uint32_t seq, const unsigned char *data,
				     size_t len)
{
	const struct mailbox_view_message *message = mailbox_view_get(session->view, seq);
	struct fetch_seen *seen = message == NULL || message->uid == 0 ? NULL :
		bsearch(&message->uid, session->seen, session->seen_count, sizeof(*session->seen),
			session_seen_compare);
	size_t flags_len = 0;
	const char *flags = fetch_line_flags(data, len, &flags_len);
	bool had_seen;

	if (seen == NULL)
		return false;
	had_seen = mailbox_view_flags_have(message->flags, "\\Seen", 5);

	if (had_seen && (flags == NULL || !flag_lists_equal(flags, flags_len, message->flags, false)))
		return false;
	seen->changed = true;
	/* another client changed it too: took \Seen away, or changed others */
	seen->outside = had_seen || message->flags == NULL || flags == NULL ||
			!flag_lists_equal(flags, flags_len, message->flags, true);
	return true;
}

static int session_uid_compare(const void *key, const void *element)
{
	uint32_t uid = *(const uint32_t *)key, other = *(const uint32_t *)element;

	return uid < other ? -1 : uid > other;
}

/* Whether the view's seq is a message the missing fetch asked for. */
static bool session_own_missing_message(const struct session *session, uint32_t seq)
{
	const struct mailbox_view_message *message = mailbox_view_get(session->view, seq);

	return message != NULL && message->uid != 0 &&
	       bsearch(&message->uid, session->missing, session->missing_count, sizeof(*session->missing),
		       session_uid_compare) != NULL;
}

/* Whether the line is "* n FETCH (UID u)": what Dovecot writes of an own
   FETCH whose items failed for the message (never an update's form). */
static bool session_own_uid_only_line(const unsigned char *data, size_t len)
{
	const unsigned char *open = memchr(data, '(', len);
	size_t pos;

	if (open == NULL || (size_t)(data + len - open) < 7 || memcmp(open, "(UID ", 5) != 0)
		return false;
	pos = (size_t)(open - data) + 5;
	while (pos < len && data[pos] >= '0' && data[pos] <= '9')
		pos++;
	return len - pos >= 3 && memcmp(data + pos, ")\r\n", 3) == 0;
}

/* Whether the view's seq is a message the running splice FETCH asked for. */
static bool session_own_splice_message(const struct session *session, uint32_t seq)
{
	const struct mailbox_view_message *message = mailbox_view_get(session->view, seq);
	const struct fetch_splice_group *group;

	if (session->splice_group_next == 0 || message == NULL || message->uid == 0)
		return false;
	group = &session->splice_groups[session->splice_group_next - 1];
	return bsearch(&message->uid, group->uids, group->count, sizeof(*group->uids), session_uid_compare) != NULL;
}

/* Notes the UID of the VANISHED step's FETCH line "* n FETCH (UID u ...".
   Returns 0, -1 when memory runs out (the step then fails: its UIDs
   can't match an answer's). */
static int session_own_vanished_uid(struct session *session, const unsigned char *data, size_t len)
{
	const unsigned char *open = memchr(data, '(', len);
	uint64_t uid = 0;

	for (size_t pos = open != NULL ? (size_t)(open - data) + 5 : len;
	     pos < len && data[pos] >= '0' && data[pos] <= '9' && uid <= UINT32_MAX; pos++)
		uid = uid * 10 + (uint64_t)(data[pos] - '0');
	if (session->vanished_uid_count == session->vanished_uid_alloc) {
		size_t alloc = session->vanished_uid_alloc < 64 ? 64 : session->vanished_uid_alloc * 2;
		uint32_t *grown = realloc(session->vanished_uids, alloc * sizeof(*grown));

		if (grown == NULL) {
			session->vanished_uid_count = 0;
			session->vanished_uid_alloc = 0;
			free(session->vanished_uids);
			session->vanished_uids = NULL;
			session->vanished_state = SESSION_VANISHED_FAILED;
			return 0; /* swallowed all the same: it is the step's */
		}
		session->vanished_uids = grown;
		session->vanished_uid_alloc = alloc;
	}
	session->vanished_uids[session->vanished_uid_count++] = uid <= UINT32_MAX ? (uint32_t)uid : 0;
	return 0;
}

/* Keeps a "* VANISHED (EARLIER)" line of the VANISHED step (or the rest
   of one), for the answer. Returns whether it was one. */
static bool session_own_vanished_line(struct session *session, const unsigned char *data, size_t len, bool line_end)
{
	if (!session->vanished_line_open &&
	    !(len >= 21 && strncasecmp((const char *)data, "* VANISHED (EARLIER) ", 21) == 0))
		return false;
	if (session->vanished_lines == NULL || evbuffer_add(session->vanished_lines, data, len) < 0)
		session->vanished_state = SESSION_VANISHED_FAILED;
	session->vanished_line_open = !line_end;
	return true;
}

bool session_own_swallows(struct session *session, const struct imap_client_command *command,
			  enum imap_client_raw_kind kind, const unsigned char *data, size_t len, bool line_end)
{
	uint32_t seq = 0;
	bool swallow;

	if (!session_own_runs(session, command))
		return false;
	swallow = kind == IMAP_CLIENT_RAW_TAGGED || session->swallowing_line;
	if (!swallow && kind == IMAP_CLIENT_RAW_UNTAGGED && session_own_fetch_line(data, len, &seq)) {
		switch (session->own_kind) {
		case SESSION_OWN_SYNC:
			swallow = true;
			break;
		case SESSION_OWN_SEEN:
			swallow = session_own_seen_message(session, seq, data, len);
			break;
		case SESSION_OWN_PREFETCH:
			swallow = prefetch_is_own_line(data, len);
			break;
		case SESSION_OWN_MISSING:
			swallow = prefetch_is_own_line(data, len) && session_own_missing_message(session, seq);
			break;
		case SESSION_OWN_SPLICE:
			swallow = (prefetch_is_own_line(data, len) || session_own_uid_only_line(data, len)) &&
				  session_own_splice_message(session, seq);
			break;
		case SESSION_OWN_VANISHED:
			swallow = prefetch_is_own_line(data, len) && session_own_vanished_uid(session, data, len) == 0;
			break;
		}
	}
	if (!swallow && kind == IMAP_CLIENT_RAW_UNTAGGED && session->own_kind == SESSION_OWN_VANISHED &&
	    command == session->own_command)
		swallow = session_own_vanished_line(session, data, len, line_end);
	else if (swallow && session->vanished_line_open)
		swallow = session_own_vanished_line(session, data, len, line_end); /* the rest of one */
	if (!swallow && kind == IMAP_CLIENT_RAW_UNTAGGED && session->own_kind == SESSION_OWN_SYNC)
		swallow = session_own_sync_data(data, len);
	if (swallow && kind != IMAP_CLIENT_RAW_TAGGED && session->own_kind == SESSION_OWN_SEEN)
		evbuffer_add(session->seen_lines, data, len); /* told if the FETCH goes upstream after all */
	session->swallowing_line = swallow && !line_end;
	return swallow;
}

bool session_own_holds_line(struct session *session, const struct imap_client_command *command,
			    enum imap_client_raw_kind kind, const unsigned char *data, size_t len, bool line_end)
{
	bool hold = session->holding_line;

	if (!hold && command != NULL && command == session->own_command && session->own_kind != SESSION_OWN_SYNC &&
	    session->idle_pause == SESSION_IDLE_RUNNING && kind == IMAP_CLIENT_RAW_UNTAGGED)
		hold = !(len >= 6 && strncasecmp((const char *)data, "* BYE ", 6) == 0);
	if (hold)
		evbuffer_add(session->idle_held, data, len);
	session->holding_line = hold && !line_end;
	return hold;
}

/* The items of a flag update "* n FETCH (UID u FLAGS (...) MODSEQ (m))"
   as bits (1 UID, 2 FLAGS, 4 MODSEQ); 0: the line is something else.
   The line is not NUL-terminated: every scan stops at its end, or at CR
   or LF. */
static unsigned int held_flag_update(const char *line, size_t len, uint32_t *seq_r)
{
	const char *p, *end = line + len;
	unsigned int items = 0;

	if (!session_own_fetch_line((const unsigned char *)line, len, seq_r) || memchr(line, '{', len) != NULL ||
	    (p = memchr(line, '(', len)) == NULL)
		return 0;
	for (p++; p < end && *p != ')';) {
		size_t n = span_until(p, end, " )\r\n");

		if (n == 3 && strncasecmp(p, "UID", 3) == 0)
			items |= 1;
		else if (n == 5 && strncasecmp(p, "FLAGS", 5) == 0)
			items |= 2;
		else if (n == 6 && strncasecmp(p, "MODSEQ", 6) == 0)
			items |= 4;
		else
			return 0;
		p += n;
		if (p >= end || *p != ' ')
			return 0;
		p++;
		if (p < end && *p == '(')
			p += span_until(p, end, ")\r\n") + 1; /* a list value */
		else
			p += span_until(p, end, " )\r\n"); /* an atom value */
		if (p < end && *p == ' ')
			p++;
	}
	return p < end && *p == ')' ? items : 0;
}

struct held_line {
	uint32_t seq;
	unsigned int items;
	size_t index, start, len;
	bool dropped;
};

static int held_line_compare(const void *a, const void *b)
{
	const struct held_line *x = a, *y = b;

	if (x->seq != y->seq)
		return x->seq < y->seq ? -1 : 1;
	return x->index < y->index ? -1 : x->index > y->index;
}

static int held_index_compare(const void *a, const void *b)
{
	const struct held_line *x = a, *y = b;

	return x->index < y->index ? -1 : x->index > y->index;
}

/* Drops each flag update that a later one of the same message makes
   stale (it has all its items): what the client is told is each
   message's last state, as the upstream reports it at the next command
   (held lines hold no EXPUNGE: the numbers don't move among them). */
static void held_compact(struct evbuffer *held)
{
	size_t len = evbuffer_get_length(held), count = 0, alloc = 64, pos = 0;
	const char *text = (const char *)evbuffer_pullup(held, -1);
	struct held_line *lines = malloc(alloc * sizeof(*lines));
	struct evbuffer *kept;

	while (lines != NULL && pos < len) {
		const char *lf = memchr(text + pos, '\n', len - pos);
		size_t line_len = lf != NULL ? (size_t)(lf - (text + pos)) + 1 : len - pos;

		if (count == alloc) {
			struct held_line *grown = realloc(lines, (alloc *= 2) * sizeof(*lines));

			if (grown == NULL)
				break;
			lines = grown;
		}
		lines[count] = (struct held_line){ .index = count, .start = pos, .len = line_len };
		lines[count].items = held_flag_update(text + pos, line_len, &lines[count].seq);
		count++;
		pos += line_len;
	}
	if (lines == NULL || pos < len || (kept = evbuffer_new()) == NULL) {
		free(lines);
		return; /* as it is */
	}
	qsort(lines, count, sizeof(*lines), held_line_compare);
	for (size_t i = 0; i + 1 < count; i++) {
		const struct held_line *later = &lines[i + 1];

		lines[i].dropped = lines[i].items != 0 && later->items != 0 && later->seq == lines[i].seq &&
				   (lines[i].items & ~later->items) == 0;
	}
	qsort(lines, count, sizeof(*lines), held_index_compare);
	for (size_t i = 0; i < count; i++) {
		if (!lines[i].dropped)
			evbuffer_add(kept, text + lines[i].start, lines[i].len);
	}
	evbuffer_drain(held, len);
	evbuffer_add_buffer(held, kept);
	evbuffer_free(kept);
	free(lines);
}

void session_own_release_held(struct session *session, struct evbuffer *output)
{
	size_t len = session->idle_held != NULL ? evbuffer_get_length(session->idle_held) : 0;

	if (len == 0 || session->holding_line)
		return;
	held_compact(session->idle_held);
	len = evbuffer_get_length(session->idle_held);
	session->bytes_out += len;
	evbuffer_add_buffer(output, session->idle_held);
}

void session_own_untagged(struct session *session, const struct imap_client_untagged *untagged)
{
	if (session->own_kind == SESSION_OWN_SYNC)
		sync_fetch_data(session->sync, untagged);
	else
		sync_update(session->sync, untagged);
}

/* The own command is answered: the client's commands may go on. */
static void session_own_finish(struct session *session)
{
	session->forwarded_pending--;
	session->own_command = NULL;
	session->swallowing_line = false;
	session_schedule_step(session);
}

/* Sends line (from after the tag, CRLF included) as the proxy's own
   command of kind, done calls back. */
static void session_own_send(struct session *session, enum session_own_kind kind, const char *verb,
			     const char *line, size_t len, imap_client_command_fn *done)
{
	session->own_kind = kind;
	session->own_command = imap_client_raw_command_new(session->upstream, NULL, verb, done, session);
	session->forwarded_pending++;
	imap_client_raw_command_write(session->own_command, line, len);
	imap_client_raw_command_end(session->own_command);
}

/* Sends " VERB set SUFFIX\r\n" for the count sequence numbers seqs
   (ascending) as the own command of kind. Returns -1 when memory runs
   out (nothing sent). */
static int session_own_send_set(struct session *session, enum session_own_kind kind, const char *verb,
				const uint32_t *seqs, size_t count, const char *suffix,
				imap_client_command_fn *done)
{
	size_t set_len = imap_seqset_format(NULL, 0, seqs, count);
	size_t size = strlen(verb) + set_len + strlen(suffix) + 6;
	char *line = malloc(size);
	size_t len;

	if (line == NULL)
		return -1;
	len = (size_t)snprintf(line, size, " %s ", verb);
	imap_seqset_format(line + len, size - len, seqs, count);
	len += set_len;
	len += (size_t)snprintf(line + len, size - len, " %s\r\n", suffix);
	session_own_send(session, kind, verb, line, len, done);
	free(line);
	return 0;
}

/* ---- what the own commands tell of the link ---- */

void session_own_data(struct session *session, size_t len)
{
	if (session->own_data_usec == 0)
		session->own_data_usec = session_now_usec();
	session->own_data_bytes += len;
}

void session_own_data_done(struct session *session, bool ok)
{
	if (ok && session->own_data_link && session->own_data_usec != 0 &&
	    session->own_data_bytes >= LINK_TRANSFER_MIN_BYTES) {
		uint64_t usec = session_now_usec() - session->own_data_usec;

		link_note_transfer(session->upstream_name, session->own_data_bytes, usec);
		log_debug("session %lu: the link carried %" PRIu64 " bytes in %" PRIu64 " us (on average %" PRIu64
			  " bytes/s)", session->id, session->own_data_bytes, usec,
			  link_facts_get(session->upstream_name).bytes_per_sec);
	}
	session->own_data_usec = session->own_data_bytes = 0;
	session->own_data_link = false;
}

void session_own_select_answered(struct session *session)
{
	if (session->sync_flight_usec == 0)
		return;
	link_note_round_trip(session->upstream_name, session_now_usec() - session->sync_flight_usec);
	log_debug("session %lu: the SELECT's round trip: %" PRIu64 " us (on average %" PRIu64 " us)", session->id,
		  session_now_usec() - session->sync_flight_usec, link_facts_get(session->upstream_name).round_trip_usec);
	session->sync_flight_usec = 0;
}

/* ---- the sync behind a SELECT or EXAMINE ---- */

bool session_own_runs(const struct session *session, const struct imap_client_command *command)
{
	if (command == NULL)
		return false;
	if (command == session->own_command)
		return true;
	for (unsigned int i = 0; i < session->sync_behind_count; i++) {
		if (session->sync_behind[i] == command)
			return true;
	}
	return false;
}

/* The sync's command is answered (in any order): own_command becomes
   the oldest of the flight not yet answered. Returns false when none is
   left. */
static bool session_own_sync_answered(struct session *session, const struct imap_client_command *command)
{
	for (unsigned int i = 0; i < session->sync_behind_count; i++) {
		if (session->sync_behind[i] == command)
			session->sync_behind[i] = NULL;
	}
	for (unsigned int i = 0; i < session->sync_behind_count; i++) {
		if (session->sync_behind[i] != NULL) {
			session->own_command = session->sync_behind[i];
			return true;
		}
	}
	return false;
}

/* The sync's own command is done: the next one runs, or the client gets
   its SELECT's reply. */
static void session_sync_done(struct imap_client *client, struct imap_client_command *command,
			      const struct imap_client_result *result, void *context)
{
	struct session *session = context;
	const char *next;

	(void)client;
	(void)command;
	session_own_finish(session);
	session_own_data_done(session, result->status == IMAP_CLIENT_STATUS_OK);
	if (result->status == IMAP_CLIENT_STATUS_ABORT) {
		session_own_sync_behind_clear(session);
		return; /* session_upstream_closed ends the session */
	}
	next = sync_fetch_done(session->sync, result->status);
	if (session_own_sync_answered(session, command)) {
		/* the oldest command of the flight not yet answered */
		session->own_kind = SESSION_OWN_SYNC;
		return;
	}
	session_own_sync_behind_clear(session);
	if (next != NULL) {
		session_own_send_sync_flight(session, next);
		return;
	}
	if (sync_is_ready(session->sync)) {
		fetch_fill_set_mailbox(session->fill, session->cache, sync_mailbox_id(session->sync), session->view);
		if (session->prefetch != NULL)
			prefetch_restart(session->prefetch);
	}
	log_debug("session %lu: the mailbox's view is %s", session->id,
		  sync_is_ready(session->sync) ? "vouched for" : "not vouched for: everything goes upstream");
	evbuffer_add_buffer(bufferevent_get_output(session->bev), session->held_reply);
}

static void session_own_sync_sent(struct session *session);

/* The verb of a sync command's text (" UID SEARCH ...", " UID FETCH ..."). */
static const char *session_sync_verb(const char *line)
{
	return strncmp(line, " UID SEARCH ", 12) == 0 ? "UID SEARCH" : "UID FETCH";
}

void session_own_start_sync(struct session *session, const struct imap_command *command,
			    struct imap_client_command *upstream)
{
	struct sync_options options = {
		.condstore = session->client_condstore,
		.qresync = session->client_qresync,
		.esearch = imap_client_has_capability(session->upstream, "ESEARCH"),
		.link = link_facts_get(session->upstream_name),
		.keyword_searches = session->conf->cache_keyword_searches,
	};
	const char *line;

	if (session->client_enabled_other)
		return; /* forwarding only: no view, no sync */
	if (options.condstore && session->condstore_tentative != upstream)
		/* the sync's own MODSEQ commands enable it, unless they follow a
		   SELECT that enabled it (a BAD SELECT leaves no mailbox selected,
		   and they fail) */
		session->condstore_tentative = NULL;
	session->modseq_stepped = false; /* a new view: its MODSEQs may be stepped once */
	sync_set_options(session->sync, &options);
	line = sync_select_begin(session->sync, command->u.select.mailbox, command->u.select.mailbox_len,
				 command->name == IMAP_COMMAND_EXAMINE);
	session->select_command = upstream;
	/* a round trip only when nothing else was on its way: behind a
	   client's pipelined FETCH the SELECT's answer waits for that one */
	session->sync_flight_usec = session->forwarded_pending == 1 ? session_now_usec() : 0;
	session_own_send_sync_flight(session, line);
}

void session_own_send_sync_flight(struct session *session, const char *line)
{
	unsigned int sent = 0;

	session_own_send(session, SESSION_OWN_SYNC, session_sync_verb(line), line, strlen(line), session_sync_done);
	session_own_sync_behind_clear(session);
	/* sync_behind[0] is the first; the others follow it in the same
	   flight, each own_command once the one before is answered */
	session->sync_behind = malloc(sizeof(*session->sync_behind));
	if (session->sync_behind != NULL) {
		session->sync_behind[0] = session->own_command;
		session->sync_behind_count = 1;
	}
	while (session->sync_behind != NULL && (line = sync_extra_command(session->sync, sent)) != NULL) {
		struct imap_client_command **behind = realloc(session->sync_behind,
							      (sent + 2) * sizeof(*session->sync_behind));

		if (behind == NULL)
			break;
		session->sync_behind = behind;
		behind[sent + 1] = imap_client_raw_command_new(session->upstream, NULL, session_sync_verb(line),
							       session_sync_done, session);
		session->forwarded_pending++;
		imap_client_raw_command_write(behind[sent + 1], line, strlen(line));
		imap_client_raw_command_end(behind[sent + 1]);
		session->sync_behind_count = ++sent + 1;
	}
	session_own_sync_sent(session);
}

/* Tells the sync which commands went, by their tags. */
static void session_own_sync_sent(struct session *session)
{
	unsigned int count = session->sync_behind != NULL ? session->sync_behind_count : 1;
	const char **tags = calloc(count, sizeof(*tags));

	for (unsigned int i = 0; tags != NULL && i < count; i++)
		tags[i] = imap_client_command_get_tag(session->sync_behind != NULL ? session->sync_behind[i]
										   : session->own_command);
	sync_commands_sent(session->sync, tags, count);
	free(tags);
}

void session_own_sync_behind_clear(struct session *session)
{
	free(session->sync_behind);
	session->sync_behind = NULL;
	session->sync_behind_count = 0;
}

bool session_own_holds_reply(const struct session *session, const struct imap_client_command *command)
{
	return command == session->select_command && session->own_command != NULL &&
	       session->own_kind == SESSION_OWN_SYNC;
}

/* ---- \Seen before a FETCH answered here ---- */

void session_own_seen_reset(struct session *session)
{
	free(session->seen);
	session->seen = NULL;
	session->seen_count = 0;
	session->seen_state = SESSION_SEEN_NONE;
}

static void session_seen_done(struct imap_client *client, struct imap_client_command *command,
			      const struct imap_client_result *result, void *context)
{
	struct session *session = context;

	(void)client;
	(void)command;
	session_own_finish(session);
	switch (result->status) {
	case IMAP_CLIENT_STATUS_OK:
		session->seen_state = SESSION_SEEN_SET;
		break;
	case IMAP_CLIENT_STATUS_NO:
		session->seen_state = SESSION_SEEN_REFUSED;
		break;
	default:
		session->seen_state = SESSION_SEEN_FAILED;
		break;
	}
	log_debug("session %lu: \\Seen of %zu messages: %s", session->id, session->seen_count,
		  session->seen_state == SESSION_SEEN_SET ? "set upstream" : "not set");
}

int session_own_set_seen(struct session *session, const uint32_t *uids, const uint32_t *seqs, size_t count)
{
	session_own_seen_reset(session);
	session->seen = calloc(count, sizeof(*session->seen));
	if (session->seen == NULL)
		return -1;
	for (size_t i = 0; i < count; i++) {
		session->seen[i].uid = uids[i];
		session->seen[i].old_modseq = mailbox_view_get(session->view, seqs[i])->modseq;
	}
	session->seen_count = count;
	session->seen_state = SESSION_SEEN_RUNNING;
	/* by sequence number: the upstream sends no EXPUNGE during a STORE
	   (RFC 3501 7.4.1), so the FETCH's numbers stay right; not .SILENT,
	   so that the answer brings the flags and MODSEQ it set */
	if (session_own_send_set(session, SESSION_OWN_SEEN, "STORE", seqs, count, "+FLAGS (\\Seen)",
				 session_seen_done) < 0) {
		session_own_seen_reset(session);
		return -1;
	}
	return 0;
}

/* ---- what a FETCH answered here lacks ---- */

#define SESSION_CHANGEDSINCE_MAX 40 /* " (CHANGEDSINCE " + a 64-bit number + ")" */

void session_own_missing_reset(struct session *session)
{
	free(session->missing);
	session->missing = NULL;
	session->missing_count = 0;
	session->missing_tried = false;
	session->missing_changedsince = 0;
}

uint64_t session_own_vouched_modseq(struct session *session)
{
	struct cache_mailbox mailbox;
	const char *name = sync_mailbox_name(session->sync);

	if (!session->client_condstore || session->modseq_stepped || session->cache == NULL || name == NULL ||
	    cache_mailbox_lookup(session->cache, name, &mailbox) != 1 || mailbox.id != sync_mailbox_id(session->sync))
		return 0;
	return mailbox.highestmodseq;
}

/* What a stored flag row vouches for after the CHANGEDSINCE step (its
   highestmodseq; the rows read by cache_lookup_flags). */
struct session_vouch {
	struct session *session;
	uint64_t highestmodseq;
	uint32_t vouched;
};

/* A message the step asked for and the upstream did not name is
   unchanged since the stored HIGHESTMODSEQ, so its stored row is right
   (doc/cache.md): its MODSEQ goes to the view when that row is no newer
   than the HIGHESTMODSEQ and its flags are the view's. */
static void session_vouch_modseq(uint32_t uid, const char *flags, size_t len, uint64_t modseq, void *context)
{
	struct session_vouch *vouch = context;
	struct session *session = vouch->session;
	uint32_t seq = mailbox_view_seq_of_uid(session->view, uid);
	const struct mailbox_view_message *message = mailbox_view_get(session->view, seq);

	if (message == NULL || message->modseq != 0 || message->expunged || message->flags == NULL ||
	    modseq == 0 || modseq > vouch->highestmodseq ||
	    bsearch(&uid, session->missing, session->missing_count, sizeof(*session->missing),
		    session_uid_compare) == NULL ||
	    !flag_lists_equal(flags, len, message->flags, false))
		return;
	if (mailbox_view_set_modseq(session->view, seq, modseq) == 0)
		vouch->vouched++;
}

static void session_missing_done(struct imap_client *client, struct imap_client_command *command,
				 const struct imap_client_result *result, void *context)
{
	struct session *session = context;
	struct session_vouch vouch = { .session = session, .highestmodseq = session->missing_changedsince };

	(void)client;
	(void)command;
	session_own_finish(session);
	if (result->status == IMAP_CLIENT_STATUS_OK && vouch.highestmodseq != 0 && session->missing_count > 0 &&
	    session->cache != NULL && sync_mailbox_id(session->sync) != 0)
		(void)cache_lookup_flags(session->cache, sync_mailbox_id(session->sync), session->missing[0],
					 session->missing[session->missing_count - 1], session_vouch_modseq, &vouch);
	log_debug("session %lu: %zu messages a FETCH lacked: %s (CHANGEDSINCE %" PRIu64 ": %u MODSEQs from the store)",
		  session->id, session->missing_count,
		  result->status == IMAP_CLIENT_STATUS_OK ? "fetched" : "not fetched", vouch.highestmodseq,
		  vouch.vouched);
}

int session_own_fetch_missing(struct session *session, const uint32_t *uids, const uint32_t *seqs, size_t count,
			      const char *items, uint64_t changedsince)
{
	char list[FETCH_MISSING_ITEMS_MAX + SESSION_CHANGEDSINCE_MAX];

	session_own_missing_reset(session);
	session->missing = malloc(count * sizeof(*session->missing));
	if (session->missing == NULL)
		return -1;
	memcpy(session->missing, uids, count * sizeof(*uids));
	session->missing_count = count;
	/* the CHANGEDSINCE step (once a SELECT) leaves a plain one for what it could not vouch for */
	session->missing_tried = changedsince == 0;
	session->modseq_stepped |= changedsince != 0;
	session->missing_changedsince = changedsince;
	if (changedsince != 0)
		snprintf(list, sizeof(list), "(%s) (CHANGEDSINCE %" PRIu64 ")", items, changedsince);
	else
		snprintf(list, sizeof(list), "(%s)", items);
	/* by sequence number: the upstream sends no EXPUNGE during a FETCH */
	if (session_own_send_set(session, SESSION_OWN_MISSING, "FETCH", seqs, count, list, session_missing_done) < 0) {
		session_own_missing_reset(session);
		return -1;
	}
	return 0;
}

/* ---- the splice step: what a FETCH answered here can't vouch for ---- */

void session_own_splice_reset(struct session *session)
{
	fetch_splice_groups_free(session->splice_groups, session->splice_group_count);
	session->splice_groups = NULL;
	session->splice_group_count = session->splice_group_next = 0;
	fetch_splice_free(&session->splice);
	session->splice_tried = false;
}

static void session_splice_done(struct imap_client *client, struct imap_client_command *command,
				const struct imap_client_result *result, void *context);

/* Sends the next group's FETCH. Returns -1 when memory runs out. */
static int session_splice_send_next(struct session *session)
{
	const struct fetch_splice_group *group = &session->splice_groups[session->splice_group_next++];
	char *list = malloc(strlen(group->items) + 3);
	int ret;

	if (list == NULL)
		return -1;
	sprintf(list, "(%s)", group->items);
	if (strstr(group->items, "BINARY") != NULL) {
		/* Dovecot keeps the last message's stream (fetch.h binary_marked_uid) */
		session->binary_splice_uid = group->uids[group->count - 1];
		session->binary_splice_usec = session_now_usec();
	}
	/* by sequence number: the upstream sends no EXPUNGE during a FETCH */
	ret = session_own_send_set(session, SESSION_OWN_SPLICE, "FETCH", group->seqs, group->count, list,
				   session_splice_done);
	free(list);
	return ret;
}

static void session_splice_done(struct imap_client *client, struct imap_client_command *command,
				const struct imap_client_result *result, void *context)
{
	struct session *session = context;

	(void)client;
	(void)command;
	if (result->status == IMAP_CLIENT_STATUS_ABORT && session->splice_bye != NULL &&
	    evbuffer_get_length(session->splice_bye) > 0) {
		/* before session_upstream_closed ends the session */
		session_fetch_cut_answer(session, &session->splice_groups[session->splice_group_next - 1]);
	}
	if (result->status != IMAP_CLIENT_STATUS_OK)
		fetch_splice_free(&session->splice); /* nothing is vouched for: the FETCH goes upstream */
	if (result->status == IMAP_CLIENT_STATUS_OK && session->splice_group_next < session->splice_group_count) {
		/* the next group, still ahead of the client's commands */
		session->forwarded_pending--;
		session->own_command = NULL;
		session->swallowing_line = false;
		if (session_splice_send_next(session) == 0)
			return;
		fetch_splice_free(&session->splice);
		session->forwarded_pending++; /* session_own_finish's */
	}
	session_own_finish(session);
	log_debug("session %lu: %zu own FETCHes of items a FETCH can't vouch for: %s (%zu values)", session->id,
		  session->splice_group_next, result->status == IMAP_CLIENT_STATUS_OK ? "fetched" : "not fetched",
		  session->splice != NULL ? fetch_splice_count(session->splice) : 0);
}

int session_own_fetch_splice(struct session *session, struct fetch_splice_group *groups, size_t count)
{
	session_own_splice_reset(session);
	session->splice_groups = groups;
	session->splice_group_count = count;
	session->splice_tried = true;
	session->splice = fetch_splice_new();
	if (session->splice == NULL || session_splice_send_next(session) < 0) {
		session_own_splice_reset(session);
		session->splice_tried = true;
		return -1;
	}
	return 0;
}

/* ---- the VANISHED step: what only the upstream knows of a FETCH answered here ---- */

void session_own_vanished_reset(struct session *session)
{
	if (session->vanished_lines != NULL)
		evbuffer_free(session->vanished_lines);
	session->vanished_lines = NULL;
	session->vanished_line_open = false;
	free(session->vanished_uids);
	session->vanished_uids = NULL;
	session->vanished_uid_count = session->vanished_uid_alloc = 0;
	session->vanished_state = SESSION_VANISHED_NONE;
}

static void session_vanished_done(struct imap_client *client, struct imap_client_command *command,
				  const struct imap_client_result *result, void *context)
{
	struct session *session = context;

	(void)client;
	(void)command;
	if (session->vanished_state == SESSION_VANISHED_ASKED)
		session->vanished_state = result->status == IMAP_CLIENT_STATUS_OK ? SESSION_VANISHED_KNOWN
										     : SESSION_VANISHED_FAILED;
	session_own_finish(session);
	log_debug("session %lu: the VANISHED modifier asked upstream: %s (%zu bytes of VANISHED, %zu messages changed)",
		  session->id, session->vanished_state == SESSION_VANISHED_KNOWN ? "known" : "not known",
		  session->vanished_lines != NULL ? evbuffer_get_length(session->vanished_lines) : 0,
		  session->vanished_uid_count);
}

int session_own_fetch_vanished(struct session *session, const char *set, uint64_t changedsince)
{
	char *line;
	int len;

	session_own_vanished_reset(session);
	session->vanished_lines = evbuffer_new();
	len = asprintf(&line, " UID FETCH %s (UID RFC822.SIZE) (CHANGEDSINCE %" PRIu64 " VANISHED)\r\n", set,
		       changedsince);
	if (session->vanished_lines == NULL || len < 0) {
		if (len >= 0)
			free(line);
		session_own_vanished_reset(session);
		return -1;
	}
	session->vanished_state = SESSION_VANISHED_ASKED;
	session_own_send(session, SESSION_OWN_VANISHED, "UID FETCH", line, (size_t)len, session_vanished_done);
	free(line);
	return 0;
}

/* ---- prefetch while the client is idle ---- */

#define SESSION_PREFETCH_LINE_MAX (PREFETCH_BATCH_MESSAGES * 12 + 128) /* " FETCH ", the set, the items */

static void session_idle_resume(struct session *session);

static void session_prefetch_done(struct imap_client *client, struct imap_client_command *command,
				  const struct imap_client_result *result, void *context)
{
	struct session *session = context;

	(void)client;
	(void)command;
	session_own_finish(session);
	if (result->status == IMAP_CLIENT_STATUS_OK && session->prefetch != NULL && session->own_data_usec != 0)
		prefetch_batch_took(session->prefetch, session_now_usec() - session->own_data_usec);
	session_own_data_done(session, result->status == IMAP_CLIENT_STATUS_OK);
	if (session->idle_pause == SESSION_IDLE_FETCHING && result->status != IMAP_CLIENT_STATUS_ABORT)
		session_idle_resume(session);
	if (result->status != IMAP_CLIENT_STATUS_OK && result->status != IMAP_CLIENT_STATUS_ABORT) {
		/* a NO (a message expunged meanwhile) ends this walk; a new SELECT starts another */
		log_debug("session %lu: prefetch batch answered %s: prefetch stops", session->id, result->text);
		prefetch_free(&session->prefetch);
	}
}

/* Sends the next batch, if anything is missing. Returns whether it did. */
static bool session_own_prefetch(struct session *session)
{
	const struct prefetch_limits limits = {
		.mode = session->conf->cache_prefetch,
		.body_budget = session->conf->cache_body_budget,
		.body_max_size = session->conf->cache_body_max_size,
	};
	char line[SESSION_PREFETCH_LINE_MAX];
	int ret;

	if (session->prefetch == NULL || !sync_is_ready(session->sync) || session->own_command != NULL ||
	    evbuffer_get_length(session->idle_held) > SESSION_HELD_PREFETCH_MAX)
		return false;
	ret = prefetch_next(session->prefetch, &limits, session->cache, sync_mailbox_id(session->sync), session->view,
			    line, sizeof(line));
	if (ret < 0) {
		log_info("session %lu: the store could not be read: prefetch stops", session->id);
		prefetch_free(&session->prefetch);
	}
	if (ret == 0 && session->prefetch_batches > 0) {
		log_info("session %lu: prefetch: nothing more is missing (%u batches in %.1f s)", session->id,
			 session->prefetch_batches,
			 (double)(session_now_usec() - session->prefetch_started_usec) / 1e6);
		session->prefetch_batches = 0;
	}
	if (ret <= 0)
		return false;
	if (session->prefetch_batches++ == 0)
		session->prefetch_started_usec = session_now_usec();
	log_debug("session %lu: prefetch:%.*s", session->id, (int)strcspn(line, "\r"), line);
	session->own_data_usec = session->own_data_bytes = 0;
	session->own_data_link = strstr(line, PREFETCH_BODY_ITEMS) != NULL; /* whole messages: the link's speed */
	session_own_send(session, SESSION_OWN_PREFETCH, "FETCH", line, strlen(line), session_prefetch_done);
	return true;
}

uint64_t session_now_usec(void)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (uint64_t)now.tv_sec * 1000000 + (uint64_t)now.tv_nsec / 1000;
}

/* ---- prefetch while the client idles in IDLE ---- */

/* Whether the client idles in an IDLE the proxy may pause. */
static bool session_idling(const struct session *session)
{
	return session->state == SESSION_STATE_FORWARDING && session->open_is_idle && session->idle_established &&
	       session->idle_pause == SESSION_IDLE_RUNNING && session->own_command == NULL &&
	       session->forwarded_pending == 1 && session->prefetch != NULL && sync_is_ready(session->sync) &&
	       session->idle_done_reply != NULL &&
	       evbuffer_get_length(bufferevent_get_input(session->bev)) == 0; /* no DONE waiting to be read */
}

/* Ends the client's IDLE upstream (DONE), keeping its tagged OK; the
   batch follows (session_own_idle_ended). */
static void session_idle_pause(struct session *session)
{
	struct imap_client_command *idle = session->open_command;

	log_debug("session %lu: IDLE paused upstream for a prefetch batch", session->id);
	free(session->idle_tag);
	session->idle_tag = strdup(session_forward_tag(idle));
	if (session->idle_tag == NULL)
		return;
	session->idle_pause = SESSION_IDLE_ENDING;
	session->idle_client_done = false;
	imap_client_raw_command_write(idle, "DONE\r\n", 6);
	imap_client_raw_command_end(idle);
}

/* Whether the line that ended a paused IDLE is DONE (in any case), as
   Dovecot requires: anything else gets BAD. */
static bool session_idle_line_is_done(struct session *session)
{
	size_t len = evbuffer_get_length(session->idle_client_line);
	const char *line = (const char *)evbuffer_pullup(session->idle_client_line, -1);

	if (len > 0 && line[len - 1] == '\n')
		len--;
	if (len > 0 && line[len - 1] == '\r')
		len--;
	return len == 4 && strncasecmp(line, "DONE", 4) == 0;
}

/* Starts IDLE again upstream under the client's tag; its "+" is kept. */
static void session_idle_resume(struct session *session)
{
	struct imap_client_command *idle;

	if (session->idle_client_done) {
		/* the client ended its IDLE meanwhile: the paused one's OK
		   answers its DONE; any other line gets Dovecot's BAD */
		session->idle_pause = SESSION_IDLE_RUNNING;
		session->idle_client_done = false;
		session->open_is_idle = false;
		session->idle_established = false;
		if (session_idle_line_is_done(session)) {
			session_send(session, "%s", session->idle_tag);
			session->bytes_out += evbuffer_get_length(session->idle_done_reply);
			evbuffer_add_buffer(bufferevent_get_output(session->bev), session->idle_done_reply);
		} else {
			session_send(session, "%s BAD Expected DONE.\r\n", session->idle_tag);
		}
		evbuffer_drain(session->idle_done_reply, evbuffer_get_length(session->idle_done_reply));
		evbuffer_drain(session->idle_client_line, evbuffer_get_length(session->idle_client_line));
		session_schedule_step(session);
		return;
	}
	evbuffer_drain(session->idle_done_reply, evbuffer_get_length(session->idle_done_reply));
	idle = session_forward_resend_idle(session, session->idle_tag);
	if (idle == NULL)
		return;
	session->idle_pause = SESSION_IDLE_RESUMING;
	session->open_command = idle;
}

bool session_own_idle_swallows(struct session *session, const struct imap_client_command *command,
			       enum imap_client_raw_kind kind, const unsigned char *data, size_t len)
{
	if (session->idle_pause == SESSION_IDLE_ENDING && kind == IMAP_CLIENT_RAW_TAGGED &&
	    command == session->open_command) {
		evbuffer_add(session->idle_done_reply, data, len); /* the tag is added when it is sent */
		return true;
	}
	if (session->idle_pause == SESSION_IDLE_RESUMING && kind == IMAP_CLIENT_RAW_CONTINUATION &&
	    command == session->open_command) {
		session->idle_pause = SESSION_IDLE_RUNNING;
		if (!session->idle_client_done)
			session_own_prefetch_when_quiet(session); /* the next batch */
		if (session->idle_client_done) {
			/* the client's DONE came while IDLE was resumed: it ends it
			   now (another line: the upstream's BAD answers it) */
			imap_client_raw_command_write_buffer(session->open_command, session->idle_client_line);
			imap_client_raw_command_end(session->open_command);
			session->open_command = NULL;
			session->open_is_idle = false;
			session->idle_established = false;
			session->idle_client_done = false;
			session_schedule_step(session); /* the commands the client sent after DONE */
		}
		return true;
	}
	return false;
}

bool session_own_idle_ended(struct session *session, struct imap_client_command *command)
{
	if (session->idle_pause != SESSION_IDLE_ENDING || command != session->open_command)
		return false;
	session->idle_pause = SESSION_IDLE_FETCHING;
	session->open_command = NULL;
	if (session->state != SESSION_STATE_FORWARDING)
		return true; /* the session ends: no batch, no IDLE again */
	/* a client that said DONE meanwhile gets the kept OK now, not after a batch */
	if (session->idle_client_done || !session_own_prefetch(session))
		session_idle_resume(session);
	return true;
}

bool session_own_idle_line(struct session *session, struct evbuffer *input, size_t len)
{
	if (session->idle_pause == SESSION_IDLE_RUNNING)
		return false;
	evbuffer_drain(session->idle_client_line, evbuffer_get_length(session->idle_client_line));
	evbuffer_remove_buffer(input, session->idle_client_line, len);
	session->idle_client_done = true;
	return true;
}

void session_own_prefetch_timer(evutil_socket_t fd, short what, void *context)
{
	struct session *session = context;
	bool quiet = session_now_usec() - session->last_activity_usec >= SESSION_PREFETCH_QUIET_MS * 1000;

	(void)fd;
	(void)what;
	if (session->prefetch == NULL)
		return;
	if (session_forward_idle(session))
		session_own_prefetch_when_quiet(session);
	else if (session_idling(session) && !quiet)
		session_own_prefetch_when_quiet(session);
	else if (session_idling(session) && prefetch_may_have_work(session->prefetch, session->view))
		session_idle_pause(session); /* the walk is asked once paused */
}

void session_own_prefetch_when_quiet(struct session *session)
{
	uint64_t quiet = session_now_usec() - session->last_activity_usec;
	struct timeval wait = { 0, 0 };

	if (quiet >= SESSION_PREFETCH_QUIET_MS * 1000 && !session_idling(session)) {
		session_own_prefetch(session);
		return;
	}
	/* an IDLE is paused from the timer, never from inside the client
	   core's callback that brought its "+" */
	if (evtimer_pending(session->prefetch_timer, NULL))
		return;
	if (quiet < SESSION_PREFETCH_QUIET_MS * 1000)
		wait.tv_usec = (suseconds_t)(SESSION_PREFETCH_QUIET_MS * 1000 - quiet);
	evtimer_add(session->prefetch_timer, &wait);
}
