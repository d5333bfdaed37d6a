/* SPDX-License-Identifier: MIT */
/* session-news: what the commands a session forwards tell the account's other sessions of mailbox changes, and when a session has been told (mailbox-news.h). */
#include "config.h"
#include "session-private.h"
#include "log.h"
#include "mailbox-news.h"
#include "sync.h"
#include "imap-command.h"

#include <stdlib.h>
#include <string.h>

/* What the upstream reports at a command's end (Dovecot syncs the
   mailbox after these), and what the command itself changes. */
enum session_news_reports {
	SESSION_NEWS_REPORTS_NONE,
	SESSION_NEWS_REPORTS_FLAGS,  /* flag changes and new messages; no EXPUNGE (RFC 3501 7.4.1) */
	SESSION_NEWS_REPORTS_ALL,
};

struct session_news_verb {
	const char *verb;
	enum session_news_reports reports;
	bool changes_flags;        /* of the selected mailbox */
	bool expunges;             /* from the selected mailbox (CLOSE: silently) */
	bool adds_to_target;       /* messages to session_news_set_target's mailbox */
};

static const struct session_news_verb session_news_verbs[] = {
	{ "NOOP", SESSION_NEWS_REPORTS_ALL, false, false, false },
	{ "CHECK", SESSION_NEWS_REPORTS_ALL, false, false, false },
	{ "IDLE", SESSION_NEWS_REPORTS_ALL, false, false, false },
	{ "FETCH", SESSION_NEWS_REPORTS_FLAGS, false, false, false },
	{ "SEARCH", SESSION_NEWS_REPORTS_FLAGS, false, false, false },
	{ "STORE", SESSION_NEWS_REPORTS_FLAGS, true, false, false },
	{ "UID FETCH", SESSION_NEWS_REPORTS_ALL, false, false, false },
	{ "UID SEARCH", SESSION_NEWS_REPORTS_ALL, false, false, false },
	{ "UID STORE", SESSION_NEWS_REPORTS_ALL, true, false, false },
	{ "EXPUNGE", SESSION_NEWS_REPORTS_ALL, false, true, false },
	{ "UID EXPUNGE", SESSION_NEWS_REPORTS_ALL, false, true, false },
	{ "COPY", SESSION_NEWS_REPORTS_ALL, false, false, true },
	{ "UID COPY", SESSION_NEWS_REPORTS_ALL, false, false, true },
	{ "MOVE", SESSION_NEWS_REPORTS_ALL, false, true, true },
	{ "UID MOVE", SESSION_NEWS_REPORTS_ALL, false, true, true },
	{ "APPEND", SESSION_NEWS_REPORTS_NONE, false, false, true },
	{ "CLOSE", SESSION_NEWS_REPORTS_NONE, false, true, false },
};

static const struct session_news_verb *session_news_find_verb(const char *verb)
{
	for (size_t i = 0; i < sizeof(session_news_verbs) / sizeof(session_news_verbs[0]); i++) {
		if (strcmp(session_news_verbs[i].verb, verb) == 0)
			return &session_news_verbs[i];
	}
	return NULL;
}

void session_news_set_target(struct session *session, const char *mailbox, size_t len)
{
	free(session->news_target);
	session->news_target = memchr(mailbox, '\0', len) == NULL ? strndup(mailbox, len) : NULL;
}

void session_news_set_fetch(struct session *session, const struct imap_command *command)
{
	session->news_sets_seen = false;
	for (unsigned int i = 0; i < command->u.fetch.attr_count; i++) {
		const struct imap_fetch_attr *attr = &command->u.fetch.attrs[i];

		if (attr->type == IMAP_FETCH_ATTR_RFC822 || attr->type == IMAP_FETCH_ATTR_RFC822_TEXT ||
		    ((attr->type == IMAP_FETCH_ATTR_BODY_SECTION || attr->type == IMAP_FETCH_ATTR_BINARY_SECTION) &&
		     !attr->peek))
			session->news_sets_seen = true;
	}
}

void session_news_sending(struct session *session, struct session_news *news)
{
	news->verb = session->sync != NULL ? session_news_find_verb(session->command_verb) : NULL;
	news->mailbox = NULL;
	news->sets_seen = session->news_sets_seen;
	session->news_sets_seen = false;
	if (news->verb == NULL) {
		free(session->news_target);
		session->news_target = NULL;
		return;
	}
	news->sent = sync_news_sent(session->sync);
	if (news->verb->adds_to_target) {
		news->mailbox = session->news_target; /* NULL when the parser found none */
		session->news_target = NULL;
	} else if (strcmp(news->verb->verb, "CLOSE") == 0 && sync_mailbox_name(session->sync) != NULL) {
		news->mailbox = strdup(sync_mailbox_name(session->sync)); /* left at once: named now */
	}
}

void session_news_done(struct session *session, struct session_news *news, enum imap_client_status status)
{
	const struct session_news_verb *verb = news->verb;

	if (verb != NULL && status == IMAP_CLIENT_STATUS_OK && session->sync != NULL) {
		if (verb->changes_flags || news->sets_seen || (verb->expunges && news->mailbox == NULL))
			sync_news_add(session->sync, NULL, verb->expunges);
		if (news->mailbox != NULL)
			sync_news_add(session->sync, news->mailbox, verb->expunges && !verb->adds_to_target);
		if (verb->adds_to_target && verb->expunges)
			sync_news_add(session->sync, NULL, true); /* MOVE: gone from the selected one too */
		if (verb->reports != SESSION_NEWS_REPORTS_NONE)
			sync_news_caught_up(session->sync, &news->sent, verb->reports == SESSION_NEWS_REPORTS_ALL);
	}
	session_news_clear(news);
}

void session_news_clear(struct session_news *news)
{
	free(news->mailbox);
	news->mailbox = NULL;
	news->verb = NULL;
}

bool session_news_blocks_local(struct session *session)
{
	if (sync_told_all_news(session->sync))
		return false;
	log_debug("session %lu: %s goes upstream: another session changed the mailbox, and this one was not told yet",
		  session->id, session->command_verb);
	return true;
}

void session_news_seen_set(struct session *session)
{
	sync_news_add(session->sync, NULL, false);
}
