/* SPDX-License-Identifier: MIT */
/* session-resend: a COPY or MOVE the upstream refused for an expunge it had not reported, kept to be sent again. */
#include "config.h"
#include "session-private.h"
#include "imap-command.h"
#include "imap-seqset.h"
#include "mailbox-view.h"
#include "sync.h"

#include <event2/buffer.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/*
 * Dovecot reports another client's EXPUNGE at the end of a command (but
 * FETCH, STORE and SEARCH by number), and a COPY or MOVE whose set names
 * a message expunged but not yet reported is refused, NO [EXPUNGEISSUED],
 * after reporting it. A client straight to Dovecot gets that when the
 * expunge came just before its command; through the proxy the commands
 * it answers itself don't reach the upstream, which then reports nothing
 * for as long as they go on, and a user's move of messages was refused
 * for an expunge the client's own UID FETCH would have caught up with.
 * So such a command, sent while upstream_behind, is kept, and sent once
 * more when refused so: the upstream has reported the expunge by then,
 * and ignores the expunged UIDs as in any UID command. A COPY or MOVE by
 * number goes again in UID form, the UIDs those numbers had in the
 * client's view: the numbers changed with the EXPUNGE, and the client
 * meant the messages it saw. A UID set with "*" is not kept: "*" would
 * name another message once the expunged ones are gone.
 */

struct session_resend {
	bool move;
	size_t len;
	char line[]; /* after the tag: " UID MOVE 1:3 box\r\n" */
};

bool session_verb_reports_expunges(const char *verb)
{
	return strcmp(verb, "FETCH") != 0 && strcmp(verb, "STORE") != 0 && strcmp(verb, "SEARCH") != 0;
}

/* p past the spaces, then past the word that follows (before end). */
static const char *past_word(const char *p, const char *end)
{
	while (p < end && *p == ' ')
		p++;
	while (p < end && *p != ' ')
		p++;
	return p;
}

static bool set_has_star(const struct imap_seqset *set)
{
	for (unsigned int i = 0; i < set->count; i++) {
		if (imap_seqset_range_has_star(&set->ranges[i]))
			return true;
	}
	return false;
}

/* Whether a number of set other than "*" is past count (Dovecot refuses
   such a set: nothing to send again). */
static bool set_past(const struct imap_seqset *set, uint32_t count)
{
	for (unsigned int i = 0; i < set->count; i++) {
		const struct imap_seqset_range *range = &set->ranges[i];

		if ((!range->first_star && range->first > count) || (!range->last_star && range->last > count))
			return true;
	}
	return false;
}

/* The UID of the client's seq in view, 0 when not known. */
static uint32_t uid_at(const struct mailbox_view *view, uint32_t seq)
{
	const struct mailbox_view_message *message = mailbox_view_get(view, seq);

	return message != NULL && !message->expunged ? message->uid : 0;
}

/* Adds the UIDs the view has at set's numbers as a uid-set, a range per
   range of the set: the view's known UIDs ascend with its numbers, and
   none between two of them is in the mailbox. Returns -1 when an end's
   UID is not known, or past SESSION_RESEND_MAX bytes. */
static int add_uid_set(struct evbuffer *out, const struct mailbox_view *view, const struct imap_seqset *set)
{
	uint32_t count = mailbox_view_count(view);
	unsigned int ranges = 0;
	struct imap_seqset_range *resolved;
	int ret = 0;

	if (count == 0 || set->saved || set_past(set, count) ||
	    (resolved = imap_seqset_resolve(set, count, &ranges)) == NULL)
		return -1;
	for (unsigned int i = 0; i < ranges && ret == 0; i++) {
		uint32_t last = resolved[i].last < count ? resolved[i].last : count; /* "7:*" of 5: 5 */
		uint32_t first_uid = uid_at(view, resolved[i].first), last_uid = uid_at(view, last);

		if (first_uid == 0 || last_uid == 0 || evbuffer_get_length(out) > SESSION_RESEND_MAX)
			ret = -1;
		else if (evbuffer_add_printf(out, i == 0 ? "%u" : ",%u", first_uid) < 0 ||
			 (last_uid != first_uid && evbuffer_add_printf(out, ":%u", last_uid) < 0))
			ret = -1;
	}
	free(resolved);
	return ranges > 0 ? ret : -1;
}

/* line (after the tag, len bytes: " COPY 1:3 box\r\n") in UID form. */
static int uid_form(struct evbuffer *out, const struct session *session, const struct imap_command *command,
		    const char *line, size_t len)
{
	const char *end = line + len, *rest = past_word(past_word(line, end), end); /* past the verb and the set */

	if (session->view == NULL || !sync_is_ready(session->sync) || session->forwarded_pending > 0 ||
	    command->u.copy.set == NULL || rest >= end)
		return -1; /* (commands before it still pending may renumber the messages) */
	if (evbuffer_add_printf(out, " UID %s ", command->name == IMAP_COMMAND_COPY ? "COPY" : "MOVE") < 0 ||
	    add_uid_set(out, session->view, command->u.copy.set) < 0)
		return -1;
	return evbuffer_add(out, rest, (size_t)(end - rest));
}

struct session_resend *session_resend_keep(const struct session *session, const struct imap_command *command,
					   const char *line, size_t len)
{
	struct session_resend *resend = NULL;
	struct evbuffer *out;
	int kept;

	if (command == NULL || !session->upstream_behind || len < 2 ||
	    (command->name != IMAP_COMMAND_COPY && command->name != IMAP_COMMAND_MOVE) ||
	    (command->uid && (command->u.copy.set == NULL || set_has_star(command->u.copy.set))) ||
	    (out = evbuffer_new()) == NULL)
		return NULL;
	kept = command->uid ? evbuffer_add(out, line, len) : uid_form(out, session, command, line, len);
	if (kept == 0 && evbuffer_get_length(out) <= SESSION_RESEND_MAX)
		resend = malloc(sizeof(*resend) + evbuffer_get_length(out));
	if (resend != NULL) {
		resend->move = command->name == IMAP_COMMAND_MOVE;
		resend->len = evbuffer_get_length(out);
		evbuffer_remove(out, resend->line, resend->len);
	}
	evbuffer_free(out);
	return resend; /* NULL: a refusal then stands */
}

bool session_resend_refused(const struct session_resend *resend, const unsigned char *data, size_t len)
{
	static const char refusal[] = " NO [EXPUNGEISSUED]";

	return resend != NULL && len >= sizeof(refusal) - 1 &&
	       strncasecmp((const char *)data, refusal, sizeof(refusal) - 1) == 0;
}

const char *session_resend_verb(const struct session_resend *resend)
{
	return resend->move ? "UID MOVE" : "UID COPY";
}

const char *session_resend_line(const struct session_resend *resend, size_t *len_r)
{
	*len_r = resend->len;
	return resend->line;
}

void session_resend_free(struct session_resend **resend)
{
	free(*resend);
	*resend = NULL;
}
