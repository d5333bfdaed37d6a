/* SPDX-License-Identifier: MIT */
/* mailbox-news: which changes of a mailbox each session of an account has been told of. */
#include "config.h"
#include "mailbox-news.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct mailbox_news_entry {
	uint64_t account;
	char *mailbox;
	struct mailbox_news_mark mark;
};

/* Entries are made only by a change the upstream confirmed, so there are
   as many as mailboxes changed through the proxy: a list is enough. */
static struct mailbox_news_entry *news_entries;
static size_t news_count, news_capacity;
static uint64_t news_lost; /* changes not counted for their mailbox: they count for all */

static const char *news_name(const char *mailbox)
{
	return strcasecmp(mailbox, "INBOX") == 0 ? "INBOX" : mailbox;
}

static struct mailbox_news_entry *news_find(uint64_t account, const char *mailbox)
{
	const char *name = news_name(mailbox);

	for (size_t i = 0; i < news_count; i++) {
		if (news_entries[i].account == account && strcmp(news_entries[i].mailbox, name) == 0)
			return &news_entries[i];
	}
	return NULL;
}

/* The entry of mailbox, made if missing; NULL when memory runs out. */
static struct mailbox_news_entry *news_get(uint64_t account, const char *mailbox)
{
	struct mailbox_news_entry *entry = news_find(account, mailbox);

	if (entry != NULL)
		return entry;
	if (news_count == MAILBOX_NEWS_MAX)
		return NULL;
	if (news_count == news_capacity) {
		size_t capacity = news_capacity == 0 ? 16 : news_capacity * 2;
		struct mailbox_news_entry *grown = realloc(news_entries, capacity * sizeof(*grown));

		if (grown == NULL)
			return NULL;
		news_entries = grown;
		news_capacity = capacity;
	}
	entry = &news_entries[news_count];
	entry->mailbox = strdup(news_name(mailbox));
	if (entry->mailbox == NULL)
		return NULL;
	entry->account = account;
	entry->mark = (struct mailbox_news_mark){ 0, 0 };
	news_count++;
	return entry;
}

struct mailbox_news_mark mailbox_news_now(uint64_t account, const char *mailbox)
{
	const struct mailbox_news_entry *entry = mailbox != NULL ? news_find(account, mailbox) : NULL;

	return entry != NULL ? entry->mark : (struct mailbox_news_mark){ 0, 0 };
}

/* One more of a count that told may or may not have kept up with. */
static void news_count_one(uint64_t *count, uint64_t *told_all, uint64_t *told_own)
{
	bool was_current = told_all != NULL && *told_all == *count;

	(*count)++;
	if (told_own != NULL)
		(*told_own)++;
	if (was_current)
		*told_all = *count;
}

void mailbox_news_add(uint64_t account, const char *mailbox, bool expunge, struct mailbox_news_told *told)
{
	struct mailbox_news_entry *entry = mailbox != NULL ? news_get(account, mailbox) : NULL;

	if (entry == NULL) {
		news_lost++; /* not counted: no session can count on being told of every change */
		return;
	}
	news_count_one(&entry->mark.changes, told != NULL ? &told->all.changes : NULL,
		       told != NULL ? &told->own.changes : NULL);
	if (expunge)
		news_count_one(&entry->mark.expunges, told != NULL ? &told->all.expunges : NULL,
			       told != NULL ? &told->own.expunges : NULL);
}

struct mailbox_news_told mailbox_news_told_now(uint64_t account, const char *mailbox)
{
	return (struct mailbox_news_told){ mailbox_news_now(account, mailbox), { 0, 0 }, news_lost };
}

bool mailbox_news_told_all(uint64_t account, const char *mailbox, const struct mailbox_news_told *told)
{
	struct mailbox_news_mark now = mailbox_news_now(account, mailbox);

	return told->all.changes == now.changes && told->all.expunges == now.expunges && told->lost == news_lost;
}

struct mailbox_news_sent mailbox_news_sent(uint64_t account, const char *mailbox, const struct mailbox_news_told *told)
{
	return (struct mailbox_news_sent){ mailbox_news_now(account, mailbox), told->own, news_lost };
}

/* One count of told after a command: all its news if every change
   since it was sent was one the session was told of, else those before. */
static void news_catch_up_one(uint64_t *told_all, uint64_t told_own, uint64_t now, uint64_t sent_now,
			      uint64_t sent_own)
{
	uint64_t reached = now - sent_now == told_own - sent_own ? now : sent_now;

	if (*told_all < reached || *told_all > now)
		*told_all = reached;
}

void mailbox_news_catch_up(uint64_t account, const char *mailbox, struct mailbox_news_told *told,
			   const struct mailbox_news_sent *sent, bool expunges_too)
{
	struct mailbox_news_mark now = mailbox_news_now(account, mailbox);

	news_catch_up_one(&told->all.changes, told->own.changes, now.changes, sent->now.changes, sent->own.changes);
	if (expunges_too && told->lost < sent->lost)
		told->lost = sent->lost;
	if (expunges_too)
		news_catch_up_one(&told->all.expunges, told->own.expunges, now.expunges, sent->now.expunges,
				  sent->own.expunges);
}

void mailbox_news_clear(void)
{
	for (size_t i = 0; i < news_count; i++)
		free(news_entries[i].mailbox);
	free(news_entries);
	news_entries = NULL;
	news_count = news_capacity = 0;
	news_lost = 0;
}
