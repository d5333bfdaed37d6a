/* SPDX-License-Identifier: MIT */
/* sync-flagsets: a mailbox's flags from one UID set per flag, the sync of a client that enabled neither CONDSTORE nor QRESYNC. */
#include "config.h"
#include "sync-flagsets.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The system flags in the order Dovecot writes them, with their search keys. */
static const struct {
	const char *flag, *key;
} sync_system_flags[] = {
	{ "\\Answered", "ANSWERED" }, { "\\Flagged", "FLAGGED" }, { "\\Deleted", "DELETED" },
	{ "\\Seen", "SEEN" },         { "\\Draft", "DRAFT" },
};
#define SYNC_SYSTEM_FLAGS (sizeof(sync_system_flags) / sizeof(sync_system_flags[0]))

struct sync_flagsets {
	char *list;                                           /* the FLAGS list searched, as given */
	struct imap_seqset_range *answers[SYNC_SYSTEM_FLAGS]; /* search i's UIDs */
	unsigned int answer_ranges[SYNC_SYSTEM_FLAGS];
	bool answered[SYNC_SYSTEM_FLAGS];
	char *command;                                        /* the last one made */
};

/* Whether flag (a word of the list) is one the searches cover. */
static bool sync_flag_searched(const char *flag)
{
	if (strcasecmp(flag, "\\Recent") == 0)
		return true; /* the session's, from RECENT */
	for (size_t i = 0; i < SYNC_SYSTEM_FLAGS; i++) {
		if (strcasecmp(flag, sync_system_flags[i].flag) == 0)
			return true;
	}
	return false;
}

struct sync_flagsets *sync_flagsets_new(const char *flag_list)
{
	struct sync_flagsets *sets;

	for (const char *word = flag_list; *word != '\0';) {
		size_t len = strcspn(word, " ");
		char flag[16];

		if (len == 0 || len >= sizeof(flag))
			return NULL; /* a keyword, or no flag at all */
		memcpy(flag, word, len);
		flag[len] = '\0';
		if (!sync_flag_searched(flag))
			return NULL;
		word += len + (word[len] == ' ');
	}
	sets = calloc(1, sizeof(*sets));
	if (sets == NULL || (sets->list = strdup(flag_list)) == NULL) {
		sync_flagsets_free(&sets);
		return NULL;
	}
	return sets;
}

void sync_flagsets_free(struct sync_flagsets **sets_p)
{
	struct sync_flagsets *sets = *sets_p;

	if (sets == NULL)
		return;
	for (unsigned int i = 0; i < SYNC_SYSTEM_FLAGS; i++)
		free(sets->answers[i]);
	free(sets->list);
	free(sets->command);
	free(sets);
	*sets_p = NULL;
}

unsigned int sync_flagsets_count(const struct sync_flagsets *sets)
{
	(void)sets;
	return SYNC_SYSTEM_FLAGS;
}

const char *sync_flagsets_command(struct sync_flagsets *sets, unsigned int i)
{
	size_t size = 48;

	if (i >= SYNC_SYSTEM_FLAGS)
		return NULL;
	free(sets->command);
	sets->command = malloc(size);
	if (sets->command != NULL)
		snprintf(sets->command, size, " UID SEARCH RETURN (ALL) %s\r\n", sync_system_flags[i].key);
	return sets->command;
}

bool sync_flagsets_answer(struct sync_flagsets *sets, unsigned int i, const struct imap_seqset *uids)
{
	unsigned int count = uids != NULL ? uids->count : 0;

	if (i >= SYNC_SYSTEM_FLAGS || sets->answered[i])
		return false;
	if (count > 0) {
		sets->answers[i] = malloc(count * sizeof(*sets->answers[i]));
		if (sets->answers[i] == NULL)
			return false;
		memcpy(sets->answers[i], uids->ranges, count * sizeof(*sets->answers[i]));
	}
	sets->answer_ranges[i] = count;
	sets->answered[i] = true;
	return true;
}

bool sync_flagsets_searched(const struct sync_flagsets *sets, const char *flag_list)
{
	return flag_list != NULL && strcmp(sets->list, flag_list) == 0;
}

/* The index of the first of uids (count, ascending) not below uid. */
static uint32_t sync_lower_bound(const uint32_t *uids, uint32_t count, uint32_t uid)
{
	uint32_t low = 0, high = count;

	while (low < high) {
		uint32_t middle = low + (high - low) / 2;

		if (uids[middle] < uid)
			low = middle + 1;
		else
			high = middle;
	}
	return low;
}

/* Marks bit in bits[] for every message of uids that answer names. */
static bool sync_flagsets_mark(const struct imap_seqset_range *ranges, unsigned int range_count, const uint32_t *uids,
			       uint32_t count, uint8_t *bits, uint8_t bit)
{
	for (unsigned int r = 0; r < range_count; r++) {
		uint32_t at = sync_lower_bound(uids, count, ranges[r].first);

		/* a range may span UIDs the mailbox no longer has (RFC 3501
		   9: a UID range names those that exist); one UID alone must be
		   there, or the searches saw another mailbox than ALL did */
		if (ranges[r].first == ranges[r].last && (at == count || uids[at] != ranges[r].first))
			return false;
		for (; at < count && uids[at] <= ranges[r].last; at++)
			bits[at] |= bit;
	}
	return true;
}

/* The flags text of a message with bits, into text (room for every flag). */
static size_t sync_flagsets_text(uint8_t bits, char *text)
{
	size_t used = 0;

	for (unsigned int i = 0; i < SYNC_SYSTEM_FLAGS; i++) {
		size_t len;

		if ((bits & (1u << i)) == 0)
			continue;
		if (used > 0)
			text[used++] = ' ';
		len = strlen(sync_system_flags[i].flag);
		memcpy(text + used, sync_system_flags[i].flag, len);
		used += len;
	}
	text[used] = '\0';
	return used;
}

int sync_flagsets_load(const struct sync_flagsets *sets, struct mailbox_view *view)
{
	uint32_t count = mailbox_view_count(view);
	uint32_t *uids = malloc(((size_t)count + 1) * sizeof(*uids));
	uint8_t *bits = calloc((size_t)count + 1, sizeof(*bits));
	char text[64]; /* the five flags, one space apart */
	int result = uids != NULL && bits != NULL ? 0 : -1;

	for (uint32_t seq = 1; result == 0 && seq <= count; seq++)
		uids[seq - 1] = mailbox_view_get(view, seq)->uid;
	for (unsigned int i = 0; result == 0 && i < SYNC_SYSTEM_FLAGS; i++) {
		if (!sets->answered[i] ||
		    !sync_flagsets_mark(sets->answers[i], sets->answer_ranges[i], uids, count, bits, (uint8_t)(1u << i)))
			result = -1;
	}
	for (uint32_t seq = 1; result == 0 && seq <= count; seq++) {
		size_t len = sync_flagsets_text(bits[seq - 1], text);

		result = mailbox_view_set_flags(view, seq, text, len);
	}
	free(uids);
	free(bits);
	return result;
}
