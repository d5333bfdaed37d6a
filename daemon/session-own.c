/* SPDX-License-Identifier: MIT */
/* session-own: the proxy's own commands on a client's upstream connection: the sync behind a SELECT, the \Seen STORE before a FETCH answered here. */
#include "config.h"
#include "session-private.h"
#include "fetch.h"
#include "fetch-fill.h"
#include "imap-command.h"
#include "log.h"
#include "mailbox-view.h"
#include "sync.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

static int session_seen_compare(const void *key, const void *element)
{
	uint32_t uid = *(const uint32_t *)key, other = ((const struct fetch_seen *)element)->uid;

	return uid < other ? -1 : uid > other;
}

/* Whether the FETCH of the view's seq is the \Seen STORE's own answer:
   a message of its set. */
static bool session_own_seen_message(const struct session *session, uint32_t seq)
{
	const struct mailbox_view_message *message = mailbox_view_get(session->view, seq);

	return message != NULL && message->uid != 0 &&
	       bsearch(&message->uid, session->seen, session->seen_count, sizeof(*session->seen),
		       session_seen_compare) != NULL;
}

bool session_own_swallows(struct session *session, const struct imap_client_command *command,
			  enum imap_client_raw_kind kind, const unsigned char *data, size_t len, bool line_end)
{
	uint32_t seq = 0;
	bool swallow;

	if (command == NULL || command != session->own_command)
		return false;
	swallow = kind == IMAP_CLIENT_RAW_TAGGED || session->swallowing_line;
	if (!swallow && kind == IMAP_CLIENT_RAW_UNTAGGED && session_own_fetch_line(data, len, &seq))
		swallow = session->own_kind == SESSION_OWN_SYNC || session_own_seen_message(session, seq);
	session->swallowing_line = swallow && !line_end;
	return swallow;
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

/* ---- the sync behind a SELECT or EXAMINE ---- */

/* The sync's own command is done: the client gets its SELECT's reply. */
static void session_sync_done(struct imap_client *client, struct imap_client_command *command,
			      const struct imap_client_result *result, void *context)
{
	struct session *session = context;

	(void)client;
	(void)command;
	session_own_finish(session);
	if (result->status == IMAP_CLIENT_STATUS_ABORT)
		return; /* session_upstream_closed ends the session */
	sync_fetch_done(session->sync, result->status);
	if (sync_is_ready(session->sync))
		fetch_fill_set_mailbox(session->fill, session->cache, sync_mailbox_id(session->sync), session->view);
	log_debug("session %lu: the mailbox's view is %s", session->id,
		  sync_is_ready(session->sync) ? "vouched for" : "not vouched for: everything goes upstream");
	evbuffer_add_buffer(bufferevent_get_output(session->bev), session->held_reply);
}

void session_own_start_sync(struct session *session, const struct imap_command *command,
			    struct imap_client_command *upstream)
{
	const char *line = sync_select_begin(session->sync, command->u.select.mailbox, command->u.select.mailbox_len,
					     command->name == IMAP_COMMAND_EXAMINE);

	session->select_command = upstream;
	session_own_send(session, SESSION_OWN_SYNC, "UID FETCH", line, strlen(line), session_sync_done);
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

/* Appends numbers (ascending) to out as a sequence set: "1:3,7". */
static void session_write_set(struct evbuffer *out, const uint32_t *numbers, size_t count)
{
	for (size_t i = 0; i < count;) {
		size_t last = i;

		while (last + 1 < count && numbers[last + 1] == numbers[last] + 1)
			last++;
		evbuffer_add_printf(out, "%s%" PRIu32, i > 0 ? "," : "", numbers[i]);
		if (last > i)
			evbuffer_add_printf(out, ":%" PRIu32, numbers[last]);
		i = last + 1;
	}
}

int session_own_set_seen(struct session *session, bool uid, const uint32_t *uids, const uint32_t *seqs,
			 size_t count)
{
	struct evbuffer *line = evbuffer_new();

	session_own_seen_reset(session);
	session->seen = calloc(count, sizeof(*session->seen));
	if (line == NULL || session->seen == NULL) {
		if (line != NULL)
			evbuffer_free(line);
		session_own_seen_reset(session);
		return -1;
	}
	for (size_t i = 0; i < count; i++) {
		session->seen[i].uid = uids[i];
		session->seen[i].old_modseq = mailbox_view_get(session->view, seqs[i])->modseq;
	}
	session->seen_count = count;
	session->seen_state = SESSION_SEEN_RUNNING;
	/* the FETCH's own form: a non-UID STORE gets no EXPUNGE in between
	   (RFC 3501 7.4.1), so the FETCH's numbers stay right; not .SILENT,
	   so that the answer brings the flags and MODSEQ it set */
	evbuffer_add_printf(line, " %s", uid ? "UID STORE " : "STORE ");
	session_write_set(line, uid ? uids : seqs, count);
	evbuffer_add_printf(line, " +FLAGS (\\Seen)\r\n");
	session_own_send(session, SESSION_OWN_SEEN, uid ? "UID STORE" : "STORE",
			 (const char *)evbuffer_pullup(line, -1), evbuffer_get_length(line), session_seen_done);
	evbuffer_free(line);
	return 0;
}
