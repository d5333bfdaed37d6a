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

/* What a command does to the mailbox session_news_set_target named. */
enum session_news_target {
	SESSION_NEWS_TARGET_NONE,
	SESSION_NEWS_TARGET_ADDS,      /* messages put into it: APPEND, COPY, MOVE */
	SESSION_NEWS_TARGET_REMOVES,   /* every message gone from it: DELETE, RENAME */
};

struct session_news_verb {
	const char *verb;
	enum session_news_reports reports;
	bool changes_flags;        /* of the selected mailbox */
	bool expunges;             /* from the selected mailbox (CLOSE: silently) */
	enum session_news_target target;
};

static const struct session_news_verb session_news_verbs[] = {
	{ "NOOP", SESSION_NEWS_REPORTS_ALL, false, false, SESSION_NEWS_TARGET_NONE },
	{ "CHECK", SESSION_NEWS_REPORTS_ALL, false, false, SESSION_NEWS_TARGET_NONE },
	{ "IDLE", SESSION_NEWS_REPORTS_ALL, false, false, SESSION_NEWS_TARGET_NONE },
	{ "FETCH", SESSION_NEWS_REPORTS_FLAGS, false, false, SESSION_NEWS_TARGET_NONE },
	{ "SEARCH", SESSION_NEWS_REPORTS_FLAGS, false, false, SESSION_NEWS_TARGET_NONE },
	{ "STORE", SESSION_NEWS_REPORTS_FLAGS, true, false, SESSION_NEWS_TARGET_NONE },
	{ "UID FETCH", SESSION_NEWS_REPORTS_ALL, false, false, SESSION_NEWS_TARGET_NONE },
	{ "UID SEARCH", SESSION_NEWS_REPORTS_ALL, false, false, SESSION_NEWS_TARGET_NONE },
	{ "UID STORE", SESSION_NEWS_REPORTS_ALL, true, false, SESSION_NEWS_TARGET_NONE },
	{ "EXPUNGE", SESSION_NEWS_REPORTS_ALL, false, true, SESSION_NEWS_TARGET_NONE },
	{ "UID EXPUNGE", SESSION_NEWS_REPORTS_ALL, false, true, SESSION_NEWS_TARGET_NONE },
	{ "COPY", SESSION_NEWS_REPORTS_ALL, false, false, SESSION_NEWS_TARGET_ADDS },
	{ "UID COPY", SESSION_NEWS_REPORTS_ALL, false, false, SESSION_NEWS_TARGET_ADDS },
	{ "MOVE", SESSION_NEWS_REPORTS_ALL, false, true, SESSION_NEWS_TARGET_ADDS },
	{ "UID MOVE", SESSION_NEWS_REPORTS_ALL, false, true, SESSION_NEWS_TARGET_ADDS },
	{ "APPEND", SESSION_NEWS_REPORTS_NONE, false, false, SESSION_NEWS_TARGET_ADDS },
	{ "CLOSE", SESSION_NEWS_REPORTS_NONE, false, true, SESSION_NEWS_TARGET_NONE },
	{ "DELETE", SESSION_NEWS_REPORTS_NONE, false, false, SESSION_NEWS_TARGET_REMOVES },
	{ "RENAME", SESSION_NEWS_REPORTS_NONE, false, false, SESSION_NEWS_TARGET_REMOVES },
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
	news->mailbox = news->left = NULL;
	news->sets_seen = session->news_sets_seen;
	session->news_sets_seen = false;
	if (news->verb == NULL) {
		free(session->news_target);
		session->news_target = NULL;
		return;
	}
	news->sent = sync_news_sent(session->sync);
	news->mailbox = session->news_target; /* NULL when the parser found none */
	session->news_target = NULL;
	if (news->verb->expunges && sync_mailbox_name(session->sync) != NULL)
		news->left = strdup(sync_mailbox_name(session->sync)); /* CLOSE leaves it at once: named now */
}

void session_news_done(struct session *session, struct session_news *news, enum imap_client_status status)
{
	const struct session_news_verb *verb = news->verb;

	if (verb != NULL && status == IMAP_CLIENT_STATUS_OK && session->sync != NULL) {
		if (verb->changes_flags || news->sets_seen)
			sync_news_add(session->sync, NULL, false);
		if (verb->expunges)
			sync_news_add(session->sync, news->left, true);
		if (verb->target != SESSION_NEWS_TARGET_NONE && news->mailbox != NULL)
			sync_news_add(session->sync, news->mailbox, verb->target == SESSION_NEWS_TARGET_REMOVES);
		if (verb->reports != SESSION_NEWS_REPORTS_NONE)
			sync_news_caught_up(session->sync, &news->sent, verb->reports == SESSION_NEWS_REPORTS_ALL);
	}
	session_news_clear(news);
}

void session_news_clear(struct session_news *news)
{
	free(news->mailbox);
	free(news->left);
	news->mailbox = news->left = NULL;
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
