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

#define SYNC_KEYWORD_MAX 200 /* bytes of a keyword searched; a longer one gets the FETCH */
#define SYNC_SEARCHES_MAX (SYNC_FLAGSETS_SYSTEM + SYNC_FLAGSETS_KEYWORDS_MAX)

_Static_assert(SYNC_SYSTEM_FLAGS == SYNC_FLAGSETS_SYSTEM, "the header counts the system flags");
_Static_assert(SYNC_SEARCHES_MAX <= 64, "a message's flags are bits of a uint64_t");

struct sync_flagsets {
	char *list;                                       /* the FLAGS list searched, as given */
	bool keywords_added;                              /* sync_flagsets_add_keywords was called */
	unsigned int keyword_count;
	char *keywords[SYNC_FLAGSETS_KEYWORDS_MAX];       /* searches SYNC_FLAGSETS_SYSTEM and on */
	struct imap_seqset_range *answers[SYNC_SEARCHES_MAX]; /* search i's UIDs */
	unsigned int answer_ranges[SYNC_SEARCHES_MAX];
	bool answered[SYNC_SEARCHES_MAX];
	char *command;                                    /* the last one made */
};

/* What a word of a FLAGS list is to the searches. */
enum sync_flag_kind {
	SYNC_FLAG_SYSTEM,  /* searched in the SELECT's flight (or \Recent: the session's) */
	SYNC_FLAG_KEYWORD, /* searched once the SELECT's FLAGS are in */
	SYNC_FLAG_REFUSED, /* can't be searched: the FETCH */
};

/* A keyword sent as it is: an atom (RFC 3501 flag-keyword), no
   backslash; and no "[", which the response parser's atoms take for a
   section's start (as sync.c's FETCH line reader does). */
static bool sync_keyword_char(unsigned char c)
{
	return c > 0x20 && c < 0x7f && strchr("(){%*\"\\[]", c) == NULL;
}

/* Whether the keyword word (len bytes) is in list before it, in any
   case: Dovecot matches a searched keyword so, and two searches that
   both match could not tell the two apart. */
static bool sync_keyword_repeats(const char *list, const char *word, size_t len)
{
	for (const char *at = list; at < word;) {
		size_t other = strcspn(at, " ");

		if (other == len && strncasecmp(at, word, len) == 0)
			return true;
		at += other + (at[other] == ' ');
	}
	return false;
}

static enum sync_flag_kind sync_flag_kind(const char *word, size_t len)
{
	if (len == 0)
		return SYNC_FLAG_REFUSED;
	if (word[0] == '\\') {
		if (len == 7 && strncasecmp(word, "\\Recent", 7) == 0)
			return SYNC_FLAG_SYSTEM;
		for (size_t i = 0; i < SYNC_SYSTEM_FLAGS; i++) {
			if (strlen(sync_system_flags[i].flag) == len && strncasecmp(word, sync_system_flags[i].flag, len) == 0)
				return SYNC_FLAG_SYSTEM;
		}
		return SYNC_FLAG_REFUSED;
	}
	if (len > SYNC_KEYWORD_MAX)
		return SYNC_FLAG_REFUSED;
	for (size_t i = 0; i < len; i++) {
		if (!sync_keyword_char((unsigned char)word[i]))
			return SYNC_FLAG_REFUSED;
	}
	return SYNC_FLAG_KEYWORD;
}

/* The next word of a list at *at (advanced past it and one space);
   false at the list's end. */
static bool sync_list_word(const char **at, const char **word_r, size_t *len_r)
{
	if (**at == '\0')
		return false;
	*word_r = *at;
	*len_r = strcspn(*at, " ");
	*at += *len_r + ((*at)[*len_r] == ' ');
	return true;
}

int sync_flagsets_keyword_count(const char *flag_list)
{
	const char *at = flag_list, *word;
	size_t len;
	int keywords = 0;

	while (sync_list_word(&at, &word, &len)) {
		enum sync_flag_kind kind = sync_flag_kind(word, len);

		if (kind == SYNC_FLAG_REFUSED || (kind == SYNC_FLAG_KEYWORD && ++keywords > SYNC_FLAGSETS_KEYWORDS_MAX) ||
		    (kind == SYNC_FLAG_KEYWORD && sync_keyword_repeats(flag_list, word, len)))
			return -1;
	}
	return keywords;
}

struct sync_flagsets *sync_flagsets_new(const char *flag_list)
{
	struct sync_flagsets *sets;

	if (sync_flagsets_keyword_count(flag_list) < 0)
		return NULL;
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
	for (unsigned int i = 0; i < SYNC_SEARCHES_MAX; i++)
		free(sets->answers[i]);
	for (unsigned int i = 0; i < sets->keyword_count; i++)
		free(sets->keywords[i]);
	free(sets->list);
	free(sets->command);
	free(sets);
	*sets_p = NULL;
}

int sync_flagsets_add_keywords(struct sync_flagsets *sets, const char *flag_list)
{
	int count = sync_flagsets_keyword_count(flag_list);
	char *keywords[SYNC_FLAGSETS_KEYWORDS_MAX];
	const char *at = flag_list, *word;
	char *list;
	size_t len;
	int made = 0;

	if (count < 0 || sets->keywords_added || (list = strdup(flag_list)) == NULL)
		return -1;
	while (sync_list_word(&at, &word, &len)) {
		if (sync_flag_kind(word, len) != SYNC_FLAG_KEYWORD)
			continue;
		if ((keywords[made] = strndup(word, len)) == NULL) {
			while (made > 0)
				free(keywords[--made]);
			free(list);
			return -1;
		}
		made++;
	}
	memcpy(sets->keywords, keywords, (size_t)made * sizeof(keywords[0]));
	sets->keyword_count = (unsigned int)made;
	sets->keywords_added = true;
	free(sets->list);
	sets->list = list;
	return made;
}

unsigned int sync_flagsets_count(const struct sync_flagsets *sets)
{
	return SYNC_SYSTEM_FLAGS + sets->keyword_count;
}

const char *sync_flagsets_command(struct sync_flagsets *sets, unsigned int i)
{
	bool keyword = i >= SYNC_SYSTEM_FLAGS;
	const char *key = keyword ? NULL : sync_system_flags[i].key;
	size_t size;

	if (i >= sync_flagsets_count(sets))
		return NULL;
	if (keyword)
		key = sets->keywords[i - SYNC_SYSTEM_FLAGS];
	size = strlen(key) + 48;
	free(sets->command);
	sets->command = malloc(size);
	if (sets->command != NULL)
		snprintf(sets->command, size, " UID SEARCH RETURN (ALL) %s%s\r\n", keyword ? "KEYWORD " : "", key);
	return sets->command;
}

bool sync_flagsets_answer(struct sync_flagsets *sets, unsigned int i, const struct imap_seqset *uids)
{
	unsigned int count = uids != NULL ? uids->count : 0;

	if (i >= sync_flagsets_count(sets) || sets->answered[i])
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
	return flag_list != NULL && strcmp(sets->list, flag_list) == 0 &&
	       sync_flagsets_keyword_count(flag_list) == (int)sets->keyword_count;
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

#define SYNC_SEEK_STEPS 8 /* a flag's next run is mostly a few messages on */

/* The lower bound of uid in uids[0, count) at or after at, where
   uids[at - 1] < uid: a few steps on, then halving the rest. */
static uint32_t sync_seek(const uint32_t *uids, uint32_t count, uint32_t at, uint32_t uid)
{
	for (unsigned int step = 0; step < SYNC_SEEK_STEPS && at < count && uids[at] < uid; step++)
		at++;
	if (at < count && uids[at] < uid)
		at += sync_lower_bound(uids + at, count - at, uid);
	return at;
}

/* Marks bit in bits[] for every message of uids that answer names. */
static bool sync_flagsets_mark(const struct imap_seqset_range *ranges, unsigned int range_count, const uint32_t *uids,
			       uint32_t count, uint64_t *bits, uint64_t bit)
{
	uint32_t at = 0;

	for (unsigned int r = 0; r < range_count; r++) {
		/* Dovecot's runs come in ascending order: each search starts
		   where the run before ended (one binary search per run was
		   most of a warm SELECT's work on 10,000 messages) */
		at = r > 0 && ranges[r].first > ranges[r - 1].last ? sync_seek(uids, count, at, ranges[r].first) :
								     sync_lower_bound(uids, count, ranges[r].first);

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

/* The flags text of a message with bits (search i's flag where bit i is
   set), into text (room for every flag). */
static size_t sync_flagsets_text(const struct sync_flagsets *sets, uint64_t bits, char *text)
{
	size_t used = 0;

	for (unsigned int i = 0; i < sync_flagsets_count(sets); i++) {
		const char *flag = i < SYNC_SYSTEM_FLAGS ? sync_system_flags[i].flag : sets->keywords[i - SYNC_SYSTEM_FLAGS];
		size_t len;

		if ((bits & ((uint64_t)1 << i)) == 0)
			continue;
		if (used > 0)
			text[used++] = ' ';
		len = strlen(flag);
		memcpy(text + used, flag, len);
		used += len;
	}
	text[used] = '\0';
	return used;
}

int sync_flagsets_load(const struct sync_flagsets *sets, struct mailbox_view *view)
{
	uint32_t count = mailbox_view_count(view);
	uint32_t *uids = malloc(((size_t)count + 1) * sizeof(*uids));
	uint64_t *bits = calloc((size_t)count + 1, sizeof(*bits));
	/* every system flag, and the keywords: no longer than the list and those */
	char *text = malloc(strlen(sets->list) + 64);
	int result = uids != NULL && bits != NULL && text != NULL ? 0 : -1;

	for (uint32_t seq = 1; result == 0 && seq <= count; seq++)
		uids[seq - 1] = mailbox_view_get(view, seq)->uid;
	for (unsigned int i = 0; result == 0 && i < sync_flagsets_count(sets); i++) {
		if (!sets->answered[i] || !sync_flagsets_mark(sets->answers[i], sets->answer_ranges[i], uids, count, bits,
							      (uint64_t)1 << i))
			result = -1;
	}
	for (uint32_t seq = 1; result == 0 && seq <= count; seq++) {
		size_t len = sync_flagsets_text(sets, bits[seq - 1], text);

		result = mailbox_view_set_flags(view, seq, text, len);
	}
	free(uids);
	free(bits);
	free(text);
	return result;
}
