/* SPDX-License-Identifier: MIT */
/* sync: brings a session's mailbox view and the account's store up to date at SELECT/EXAMINE and from every update after it. */
#include "config.h"
#include "sync.h"
#include "cache.h"
#include "fetch-fill.h"
#include "imap-response.h"
#include "imap-seqset.h"
#include "link.h"
#include "log.h"
#include "mailbox-news.h"
#include "sync-flagsets.h"

#include <event2/event.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define SYNC_COMMAND " UID FETCH 1:* (FLAGS)\r\n" /* uses nothing the client did not enable (doc/cache.md) */
/* the same once the client enabled CONDSTORE: Dovecot adds no MODSEQ to a FETCH that does not ask for it */
#define SYNC_COMMAND_MODSEQ " UID FETCH 1:* (FLAGS MODSEQ)\r\n"
#define SYNC_SEARCH_COMMAND " UID SEARCH RETURN (ALL) ALL\r\n" /* the map, for the CONDSTORE and SEARCH forms */
#define SYNC_COMMAND_MAX 80 /* the longest form with a 20-digit MODSEQ */
#define SYNC_FLAGS_MAX 8192 /* a flag list's text; Dovecot's keyword limit keeps real ones far below */
#define SYNC_FLAGS_FETCH_BYTES 40 /* a message's line of the full form: "* 9 FETCH (UID 9 FLAGS (\\Seen))" */

enum sync_state {
	SYNC_NONE,       /* nothing selected */
	SYNC_SELECTING,  /* the SELECT is on its way */
	SYNC_FETCHING,   /* the SELECT succeeded; the sync's own command is on its way */
	SYNC_READY,      /* the view answers for the mailbox */
	SYNC_UNVOUCHED,  /* selected, but the view can't be trusted: everything goes upstream */
};

/* Which command the sync sent (doc/cache.md's table). */
enum sync_form {
	SYNC_FORM_FULL,          /* UID FETCH 1:* (FLAGS) */
	SYNC_FORM_QRESYNC,       /* ... (CHANGEDSINCE m VANISHED), over the stored UID list */
	SYNC_FORM_CONDSTORE,     /* ... (CHANGEDSINCE m) and UID SEARCH RETURN (ALL) ALL */
	SYNC_FORM_SEARCH,        /* UID SEARCH RETURN (ALL) ALL, then one per flag (sync-flagsets.h) */
};

/* One message as the sync's FETCH told of it. */
struct sync_entry {
	uint32_t seq, uid;
	uint64_t modseq;
	char *flags;
};

/* The flag rows of a vouched sync, written a chunk per event-loop turn,
   then the mailbox's HIGHESTMODSEQ. It outlives its sync (a session that
   ends, or selects again, before the last chunk), holding a reference to
   the store, and frees itself after the last chunk. */
struct sync_writer {
	struct cache *cache;
	struct event *event;
	char *mailbox;
	struct sync_entry *rows;
	uint32_t count, next;
	int64_t mailbox_id;
	uint64_t before;         /* the stored HIGHESTMODSEQ when the sync began writing */
	uint64_t highestmodseq;  /* the sync's, stored after the last row */
};

struct sync {
	struct cache *cache;
	struct mailbox_view *view;
	struct imap_response_parser *responses;
	enum sync_state state;
	char *mailbox;
	bool read_only;
	bool disturbed;          /* an expunge came during the sync: sequence numbers moved */
	uint32_t exists, uidvalidity, uidnext;
	uint64_t highestmodseq;
	int64_t mailbox_id;      /* the store's, once known; 0 */
	struct sync_entry *entries;
	uint32_t entry_count, entry_capacity;
	uint32_t recent;         /* the RECENT count */
	bool nomodseq;

	struct sync_options options;
	enum sync_form form;
	char command[SYNC_COMMAND_MAX];
	unsigned int commands_pending; /* of the sync's own commands */
	char **command_tags;     /* the SEARCH form's, in order: whose an ESEARCH is ((TAG "...")) */
	unsigned int command_tag_count;
	char *flag_list;         /* the SELECT's FLAGS, flags one space apart; NULL */
	bool flags_seen;         /* the SELECT had FLAGS (flag_list NULL: too long to keep) */
	struct sync_flagsets *flagsets; /* the SEARCH form's */
	bool keyword_flight;     /* the SEARCH form's keyword searches went, after the first flight */
	char *stored_flag_list;  /* the SEARCH form's choice: the FLAGS list as stored; NULL */
	bool delta_refused;      /* the SELECT contradicts the store: the full form follows */
	bool store_ahead;        /* a stored MODSEQ is above the SELECT's HIGHESTMODSEQ */
	struct cache_mailbox stored; /* as of sync_select_begin (a CHANGEDSINCE form) */
	uint32_t *base_uids;     /* QRESYNC: the stored UID list, less what VANISHED (EARLIER) */
	size_t base_count;
	uint32_t *all_uids;      /* CONDSTORE: ESEARCH's ALL */
	size_t all_count;
	bool have_all;

	struct event_base *base;   /* for the flag rows' writers; NULL: write at once */

	struct mailbox_news_told news_told; /* what this session was told of the mailbox's changes */
	uint64_t selection;        /* counts sync_select_begin: a sent mark belongs to one selection */
};

struct sync *sync_new(struct cache *cache, struct mailbox_view *view)
{
	struct sync *sync = calloc(1, sizeof(*sync));

	if (sync == NULL)
		return NULL;
	sync->responses = imap_response_parser_new();
	if (sync->responses == NULL) {
		free(sync);
		return NULL;
	}
	sync->cache = cache;
	sync->view = view;
	return sync;
}

static void sync_clear_entries(struct sync *sync)
{
	for (uint32_t i = 0; i < sync->entry_count; i++)
		free(sync->entries[i].flags);
	sync->entry_count = 0;
}

static void sync_clear_delta(struct sync *sync)
{
	for (unsigned int i = 0; i < sync->command_tag_count; i++)
		free(sync->command_tags[i]);
	free(sync->command_tags);
	sync->command_tags = NULL;
	sync->command_tag_count = 0;
	sync_flagsets_free(&sync->flagsets);
	sync->keyword_flight = false;
	free(sync->base_uids);
	free(sync->all_uids);
	sync->base_uids = sync->all_uids = NULL;
	sync->base_count = sync->all_count = 0;
	sync->have_all = false;
}

void sync_free(struct sync **sync_p)
{
	struct sync *sync = *sync_p;

	if (sync == NULL)
		return;
	sync_clear_entries(sync);
	sync_clear_delta(sync);
	free(sync->entries);
	free(sync->mailbox);
	free(sync->flag_list);
	free(sync->stored_flag_list);
	imap_response_parser_free(&sync->responses);
	free(sync);
	*sync_p = NULL;
}

void sync_set_options(struct sync *sync, const struct sync_options *options)
{
	sync->options = *options;
}

void sync_deselect(struct sync *sync)
{
	sync->state = SYNC_NONE;
	sync->mailbox_id = 0;
	sync_clear_entries(sync);
	sync_clear_delta(sync);
	mailbox_view_load(sync->view, NULL, 0);
}

/* Whether searching the keywords, in a flight after the first (a round
   trip), costs less than the full form's FETCH of messages' FLAGS at the
   link's measured rate. Not while either is unmeasured: the FETCH then
   measures the rate. cache.keyword_searches "always" or "never" decides
   instead. */
static bool sync_keyword_flight_pays(const struct sync *sync, uint32_t messages)
{
	const struct link_facts *link = &sync->options.link;

	if (sync->options.keyword_searches != CONF_KEYWORD_SEARCHES_AUTO)
		return sync->options.keyword_searches == CONF_KEYWORD_SEARCHES_ALWAYS;
	return link->round_trip_usec > 0 && link->bytes_per_sec > 0 &&
	       link_transfer_usec(link, (uint64_t)messages * SYNC_FLAGS_FETCH_BYTES) > link->round_trip_usec;
}

/* How many messages the store lists for the mailbox (0: none known). */
static uint32_t sync_stored_count(const struct sync *sync)
{
	uint32_t *uids = NULL;
	size_t count = 0;

	if (cache_mailbox_get_uids(sync->cache, sync->stored.id, &uids, &count) <= 0)
		count = 0;
	free(uids);
	return count > UINT32_MAX ? UINT32_MAX : (uint32_t)count;
}

/* The SEARCH form, when the store has the mailbox's FLAGS list and its
   flags can be searched one by one: with keywords, only when their own
   flight pays (sync_keyword_flight_pays). */
static bool sync_prepare_search(struct sync *sync)
{
	int keywords;

	if (!sync->options.esearch ||
	    cache_mailbox_get_flag_list(sync->cache, sync->stored.id, &sync->stored_flag_list) != 1)
		return false;
	keywords = sync_flagsets_keyword_count(sync->stored_flag_list);
	if (keywords < 0 || (keywords > 0 && !sync_keyword_flight_pays(sync, sync_stored_count(sync))))
		return false;
	sync->flagsets = sync_flagsets_new(sync->stored_flag_list);
	return sync->flagsets != NULL;
}

/* The form the options and the store allow for the mailbox being
   selected: a CHANGEDSINCE form needs a stored HIGHESTMODSEQ (and, for
   QRESYNC, a stored UID list to apply VANISHED to); the SEARCH form, for
   a client that enabled neither, ESEARCH and a stored FLAGS list. */
static enum sync_form sync_choose_form(struct sync *sync)
{
	if (sync->cache == NULL || sync->state != SYNC_SELECTING ||
	    cache_mailbox_lookup(sync->cache, sync->mailbox, &sync->stored) != 1)
		return SYNC_FORM_FULL;
	if (!sync->options.condstore)
		return sync_prepare_search(sync) ? SYNC_FORM_SEARCH : SYNC_FORM_FULL;
	if (sync->stored.highestmodseq == 0)
		return SYNC_FORM_FULL;
	if (sync->options.qresync &&
	    cache_mailbox_get_uids(sync->cache, sync->stored.id, &sync->base_uids, &sync->base_count) > 0)
		return SYNC_FORM_QRESYNC;
	sync_clear_delta(sync);
	return sync->options.esearch ? SYNC_FORM_CONDSTORE : SYNC_FORM_FULL;
}

/* The full form, with MODSEQ when the client enabled CONDSTORE. */
static const char *sync_full_command(const struct sync *sync)
{
	return sync->options.condstore ? SYNC_COMMAND_MODSEQ : SYNC_COMMAND;
}

/* The account the news of this session's mailbox are counted in. */
static uint64_t sync_news_account(const struct sync *sync)
{
	return sync->cache != NULL ? cache_serial(sync->cache) : 0;
}

/* A change of the selected mailbox reached this session's client. */
static void sync_news_told(struct sync *sync, bool expunge)
{
	if (sync->mailbox != NULL)
		mailbox_news_add(sync_news_account(sync), sync->mailbox, expunge, &sync->news_told);
}

const char *sync_select_begin(struct sync *sync, const char *mailbox, size_t len, bool examine)
{
	sync_deselect(sync);
	free(sync->mailbox);
	sync->mailbox = strndup(mailbox, len);
	sync->state = sync->mailbox != NULL && memchr(mailbox, '\0', len) == NULL ? SYNC_SELECTING : SYNC_NONE;
	sync->read_only = examine;
	sync->disturbed = sync->delta_refused = sync->nomodseq = false;
	sync->exists = sync->uidvalidity = sync->uidnext = sync->recent = 0;
	sync->highestmodseq = 0;
	free(sync->flag_list);
	sync->flag_list = NULL;
	sync->flags_seen = false;
	free(sync->stored_flag_list);
	sync->stored_flag_list = NULL;
	sync->form = sync_choose_form(sync);
	sync->commands_pending = sync->form == SYNC_FORM_CONDSTORE ? 2 :
				 sync->form == SYNC_FORM_SEARCH ? 1 + sync_flagsets_count(sync->flagsets) : 1;
	sync->selection++;
	/* the SELECT tells every change made before it */
	sync->news_told = mailbox_news_told_now(sync_news_account(sync), sync->mailbox);
	if (sync->form == SYNC_FORM_FULL)
		return sync_full_command(sync);
	if (sync->form == SYNC_FORM_SEARCH)
		return SYNC_SEARCH_COMMAND;
	snprintf(sync->command, sizeof(sync->command), " UID FETCH 1:* (FLAGS) (CHANGEDSINCE %" PRIu64 "%s)\r\n",
		 sync->stored.highestmodseq, sync->form == SYNC_FORM_QRESYNC ? " VANISHED" : "");
	return sync->command;
}

/* Whether the flight being sent is the SEARCH form's keyword flight. */
static bool sync_sending_keywords(const struct sync *sync)
{
	return sync->state == SYNC_FETCHING && sync->form == SYNC_FORM_SEARCH && sync->keyword_flight;
}

const char *sync_extra_command(struct sync *sync, unsigned int i)
{
	/* the first flight's searches are the system flags'; the keyword
	   flight's first went from sync_fetch_done */
	unsigned int first = sync_sending_keywords(sync) ? SYNC_FLAGSETS_SYSTEM + 1 : 0;

	if (sync->state != SYNC_SELECTING && !sync_sending_keywords(sync))
		return NULL;
	if (sync->form == SYNC_FORM_CONDSTORE)
		return i == 0 ? SYNC_SEARCH_COMMAND : NULL;
	if (sync->form != SYNC_FORM_SEARCH || first + i >= sync_flagsets_count(sync->flagsets))
		return NULL;
	const char *command = sync_flagsets_command(sync->flagsets, first + i);

	if (command == NULL) {
		/* no memory: the sync ends with what was sent, then the full form */
		sync->commands_pending = 1 + i;
		sync->delta_refused = true;
	}
	return command;
}

void sync_commands_sent(struct sync *sync, const char *const *tags, unsigned int count)
{
	unsigned int before = sync->command_tag_count;
	char **grown;

	if (sync->state != SYNC_SELECTING && !sync_sending_keywords(sync))
		return;
	if (count < sync->commands_pending) {
		sync->commands_pending = count;
		sync->delta_refused = true;
	}
	if (sync->form != SYNC_FORM_SEARCH)
		return;
	/* the keyword flight's tags follow the first flight's: the map's,
	   then one per search in sync_flagsets' order */
	grown = tags != NULL ? realloc(sync->command_tags, (before + count + 1) * sizeof(*sync->command_tags)) : NULL;
	if (grown != NULL)
		sync->command_tags = grown;
	for (unsigned int i = 0; grown != NULL && i < count; i++) {
		sync->command_tags[before + i] = strdup(tags[i]);
		if (sync->command_tags[before + i] == NULL)
			break;
		sync->command_tag_count = before + i + 1;
	}
	if (sync->command_tag_count < before + count)
		sync->delta_refused = true; /* no memory: what can't be told apart is not used */
}

/* A number after the word name in code ("UIDNEXT 9"), in *number_r. */
static bool sync_code_number(const char *code, const char *name, uint64_t *number_r)
{
	size_t len = strlen(name);
	char *end;

	if (code == NULL || strncasecmp(code, name, len) != 0 || code[len] != ' ')
		return false;
	*number_r = strtoull(code + len + 1, &end, 10);
	return end != code + len + 1;
}

/* What a status response's code tells of the mailbox. */
static void sync_note_code(struct sync *sync, const char *code)
{
	uint64_t number;

	if (sync_code_number(code, "UIDVALIDITY", &number) && number <= UINT32_MAX)
		sync->uidvalidity = (uint32_t)number;
	else if (sync_code_number(code, "UIDNEXT", &number) && number <= UINT32_MAX)
		sync->uidnext = (uint32_t)number;
	else if (sync_code_number(code, "HIGHESTMODSEQ", &number))
		sync->highestmodseq = number;
	else if (code != NULL && strcasecmp(code, "NOMODSEQ") == 0) {
		sync->highestmodseq = 0;
		sync->nomodseq = true;
	}
}

static char *sync_flags_text(const struct imap_arg *list);

void sync_select_data(struct sync *sync, const struct imap_client_untagged *untagged)
{
	if (sync->state != SYNC_SELECTING)
		return;
	if (strcmp(untagged->keyword, "FLAGS") == 0 && untagged->args_count == 1) {
		free(sync->flag_list);
		sync->flag_list = sync_flags_text(&untagged->args[0]);
		sync->flags_seen = true;
	} else if (strcmp(untagged->keyword, "EXISTS") == 0 && untagged->has_number)
		sync->exists = untagged->number;
	else if (strcmp(untagged->keyword, "RECENT") == 0 && untagged->has_number)
		sync->recent = untagged->number;
	else if (strcmp(untagged->keyword, "OK") == 0)
		sync_note_code(sync, untagged->code);
}

/* Whether what the SELECT reported lets a CHANGEDSINCE form's answer be
   applied to the store's state: the same UIDVALIDITY, a HIGHESTMODSEQ not
   below the stored one, and a UIDNEXT above every stored UID. */
static bool sync_delta_applies(const struct sync *sync)
{
	const struct cache_mailbox *stored = &sync->stored;

	if (sync->uidvalidity != stored->uidvalidity || sync->nomodseq || sync->highestmodseq < stored->highestmodseq)
		return false;
	if (sync->uidnext != 0 && ((stored->uidnext != 0 && stored->uidnext > sync->uidnext) ||
				   (sync->base_count > 0 && sync->base_uids[sync->base_count - 1] >= sync->uidnext)))
		return false;
	/* nothing changed since m: the message count can't have either */
	return sync->form != SYNC_FORM_QRESYNC || sync->highestmodseq != stored->highestmodseq ||
	       sync->exists == sync->base_count;
}

void sync_select_done(struct sync *sync, enum imap_client_status status, const char *code)
{
	if (sync->state != SYNC_SELECTING)
		return;
	if (status != IMAP_CLIENT_STATUS_OK) {
		sync_deselect(sync);
		return;
	}
	if (code != NULL && strncasecmp(code, "READ-ONLY", 9) == 0)
		sync->read_only = true;
	else if (code != NULL && strncasecmp(code, "READ-WRITE", 10) == 0)
		sync->read_only = false;
	sync->state = SYNC_FETCHING;
	/* the SEARCH form's answers are the mailbox as it is, whatever the store held */
	if (sync->form != SYNC_FORM_FULL && sync->form != SYNC_FORM_SEARCH && !sync_delta_applies(sync)) {
		log_debug("sync %s: the SELECT contradicts the store (UIDVALIDITY %u/%u, HIGHESTMODSEQ %" PRIu64
			  "/%" PRIu64 "%s): a full sync follows", sync->mailbox, sync->uidvalidity,
			  sync->stored.uidvalidity, sync->highestmodseq, sync->stored.highestmodseq,
			  sync->nomodseq ? ", NOMODSEQ" : "");
		sync->delta_refused = true;
	}
}

/* The flag list of a FETCH as the text between its parentheses, its
   flags one space apart (as Dovecot writes them); NULL when too long. */
static char *sync_flags_text(const struct imap_arg *list)
{
	const struct imap_arg *flags;
	unsigned int count;
	char text[SYNC_FLAGS_MAX];
	size_t used = 0;

	if (!imap_arg_get_list(list, &flags, &count))
		return NULL;
	for (unsigned int i = 0; i < count; i++) {
		const char *flag;
		size_t len, sep = i > 0 ? 1 : 0;

		if (!imap_arg_get_atom(&flags[i], &flag))
			return NULL;
		len = strlen(flag);
		if (sep + len >= sizeof(text) - used)
			return NULL;
		text[used] = ' '; /* overwritten by the flag when first */
		memcpy(text + used + sep, flag, len);
		used += sep + len;
	}
	text[used] = '\0';
	return strdup(text);
}

/* The bytes of a FETCH line, read by sync_fetch_line. */
struct sync_line {
	const unsigned char *at, *end;
};

/* Reads a decimal number of 1..20 digits into *number_r. */
static bool sync_line_number(struct sync_line *line, uint64_t *number_r)
{
	uint64_t number = 0;
	const unsigned char *start = line->at;

	while (line->at < line->end && *line->at >= '0' && *line->at <= '9' && line->at - start < 19)
		number = number * 10 + (uint64_t)(*line->at++ - '0');
	*number_r = number;
	return line->at > start && line->at - start < 19;
}

static bool sync_line_skip(struct sync_line *line, const char *text)
{
	size_t len = strlen(text);

	if ((size_t)(line->end - line->at) < len || memcmp(line->at, text, len) != 0)
		return false;
	line->at += len;
	return true;
}

/* A flag as sync_flags_text takes it: an atom, perhaps after one
   backslash; not "[", which starts a section in the parser's atoms. */
static bool sync_line_flag_char(unsigned char c)
{
	return c > 0x20 && c < 0x7f && strchr("(){%*\"\\[]", c) == NULL;
}

/* Whether the len bytes at text, a flag list's inside, are what
   sync_flags_text makes of the parsed list: flags one space apart, each
   an atom of sync_line_flag_char's bytes perhaps after one backslash,
   short enough. */
static bool sync_flags_plain(const unsigned char *text, size_t len)
{
	struct sync_line line = { text, text + len };

	if (len >= SYNC_FLAGS_MAX)
		return false;
	while (line.at < line.end) {
		const unsigned char *flag;

		if (line.at > text && !sync_line_skip(&line, " "))
			return false;
		flag = line.at;
		if (line.at < line.end && *line.at == '\\')
			line.at++;
		while (line.at < line.end && sync_line_flag_char(*line.at))
			line.at++;
		if (line.at == flag || (line.at == flag + 1 && *flag == '\\') || *flag == '~' ||
		    (line.at == flag + 3 && strncasecmp((const char *)flag, "NIL", 3) == 0))
			return false; /* the parser reads NIL as nil, "~" as literal8's start */
	}
	return true;
}

/* "(flag flag)" with flags one space apart, as sync_flags_text writes
   them: *flags_r is a copy of the text between the parentheses. */
static bool sync_line_flags(struct sync_line *line, char **flags_r)
{
	const unsigned char *start, *close;

	if (!sync_line_skip(line, "("))
		return false;
	start = line->at;
	if ((close = memchr(start, ')', (size_t)(line->end - start))) == NULL ||
	    !sync_flags_plain(start, (size_t)(close - start)))
		return false;
	*flags_r = strndup((const char *)start, (size_t)(close - start));
	line->at = close + 1;
	return *flags_r != NULL;
}

/* A FETCH response's UID, flags and MODSEQ (0 / NULL / 0 when absent). */
static bool sync_parse_fetch(struct sync *sync, const struct imap_client_untagged *untagged, uint32_t *uid_r,
			     char **flags_r, uint64_t *modseq_r)
{
	struct imap_response response;
	const struct imap_fetch_item *item;

	*uid_r = 0;
	*flags_r = NULL;
	*modseq_r = 0;
	if (untagged->line == NULL || !untagged->has_number ||
	    imap_response_parse(sync->responses, untagged->line, &response, NULL) != IMAP_RESPONSE_ERROR_NONE ||
	    response.type != IMAP_RESPONSE_DATA_FETCH)
		return false;
	if ((item = imap_response_fetch_find(&response, IMAP_FETCH_UID)) != NULL && item->number <= UINT32_MAX)
		*uid_r = (uint32_t)item->number;
	if ((item = imap_response_fetch_find(&response, IMAP_FETCH_FLAGS)) != NULL)
		*flags_r = sync_flags_text(item->value);
	if ((item = imap_response_fetch_find(&response, IMAP_FETCH_MODSEQ)) != NULL)
		*modseq_r = item->number;
	return true;
}

/* Keeps one message of the sync's FETCH. */
static void sync_add_entry(struct sync *sync, uint32_t seq, uint32_t uid, char *flags, uint64_t modseq)
{
	if (sync->entry_count == sync->entry_capacity) {
		uint32_t capacity = sync->entry_capacity == 0 ? 256 : sync->entry_capacity * 2;
		struct sync_entry *bigger = realloc(sync->entries, (size_t)capacity * sizeof(*bigger));

		if (bigger == NULL) {
			free(flags);
			sync->disturbed = true; /* can't vouch for what it did not keep */
			return;
		}
		sync->entries = bigger;
		sync->entry_capacity = capacity;
	}
	sync->entries[sync->entry_count++] = (struct sync_entry){ seq, uid, modseq, flags };
}

/* One item of a FETCH line: UID, FLAGS or MODSEQ, each at most once. */
static bool sync_line_item(struct sync_line *line, uint64_t *uid, char **flags, uint64_t *modseq)
{
	if (sync_line_skip(line, "UID "))
		return *uid == 0 && sync_line_number(line, uid) && *uid > 0 && *uid <= UINT32_MAX;
	if (sync_line_skip(line, "FLAGS "))
		return *flags == NULL && sync_line_flags(line, flags);
	if (sync_line_skip(line, "MODSEQ ("))
		return *modseq == 0 && sync_line_number(line, modseq) && *modseq > 0 && sync_line_skip(line, ")");
	return false;
}

bool sync_fetch_line_read(const unsigned char *data, size_t len, struct sync_fetch_line *line_r)
{
	struct sync_line line = { data, data + len };
	uint64_t seq, uid = 0, modseq = 0;
	char *flags = NULL;
	bool ok;

	if (!sync_line_skip(&line, "* ") || !sync_line_number(&line, &seq) || seq == 0 || seq > UINT32_MAX ||
	    !sync_line_skip(&line, " FETCH ("))
		return false;
	do {
		ok = sync_line_item(&line, &uid, &flags, &modseq);
	} while (ok && sync_line_skip(&line, " "));
	if (!ok || !sync_line_skip(&line, ")\r\n") || line.at != line.end || uid == 0 || flags == NULL) {
		free(flags);
		return false; /* not this shape: the parsed response decides */
	}
	*line_r = (struct sync_fetch_line){ (uint32_t)seq, (uint32_t)uid, modseq, flags };
	return true;
}

bool sync_fetch_line(struct sync *sync, const unsigned char *data, size_t len)
{
	struct sync_fetch_line line;

	if (!sync_fetch_line_read(data, len, &line))
		return false;
	if (sync->state == SYNC_FETCHING)
		sync_add_entry(sync, line.seq, line.uid, line.flags, line.modseq);
	else
		free(line.flags);
	return true;
}

/* The UIDs of a set (no "*"), ascending, in *uids_r (malloc'd). */
static bool sync_expand_set(const struct imap_seqset *set, uint32_t **uids_r, size_t *count_r)
{
	uint64_t total = imap_seqset_count(set, 0);
	uint32_t *uids;
	size_t count = 0;

	*uids_r = NULL;
	*count_r = 0;
	if (set->count > 0 && total == 0)
		return false; /* out of memory */
	uids = malloc(((size_t)total + 1) * sizeof(*uids));
	if (uids == NULL)
		return false;
	for (uint32_t uid = 1, seen = 0; seen < total; uid++) {
		if (imap_seqset_contains(set, uid, 0)) {
			uids[count++] = uid;
			seen++;
		}
		if (uid == UINT32_MAX)
			break;
	}
	*uids_r = uids;
	*count_r = count;
	return true;
}

/* The mailbox's UIDs from UID SEARCH RETURN (ALL) ALL: the map. */
static bool sync_note_esearch_all(struct sync *sync, const struct imap_response_esearch *esearch)
{
	free(sync->all_uids);
	sync->have_all = esearch->uid;
	if ((esearch->present & IMAP_ESEARCH_ALL) == 0) {
		sync->all_uids = NULL; /* no ALL: no messages */
		sync->all_count = 0;
	} else if (!sync_expand_set(esearch->all, &sync->all_uids, &sync->all_count)) {
		sync->have_all = false;
	}
	return true;
}

/* Which of the SEARCH form's commands an ESEARCH answers: 0 for the map,
   1 + i for flag i's; past command_tag_count when none. */
static unsigned int sync_search_of_tag(const struct sync *sync, const struct imap_response_esearch *esearch)
{
	for (unsigned int i = 0; esearch->tag != NULL && i < sync->command_tag_count; i++) {
		if (strlen(sync->command_tags[i]) == esearch->tag_len &&
		    memcmp(sync->command_tags[i], esearch->tag, esearch->tag_len) == 0)
			return i;
	}
	return sync->command_tag_count + 1;
}

/* ESEARCH (the CONDSTORE form's map) and VANISHED (EARLIER) (the QRESYNC
   form's expunges since m): the sync's own data. */
static bool sync_note_delta_data(struct sync *sync, const struct imap_client_untagged *untagged)
{
	struct imap_response response;
	bool esearch = strcmp(untagged->keyword, "ESEARCH") == 0;

	if ((!esearch && strcmp(untagged->keyword, "VANISHED") != 0) || untagged->line == NULL ||
	    imap_response_parse(sync->responses, untagged->line, &response, NULL) != IMAP_RESPONSE_ERROR_NONE)
		return false;
	if (response.type == IMAP_RESPONSE_DATA_VANISHED && response.u.vanished.earlier) {
		size_t kept = 0;

		for (size_t i = 0; i < sync->base_count; i++) {
			if (!imap_seqset_contains(response.u.vanished.uids, sync->base_uids[i], 0))
				sync->base_uids[kept++] = sync->base_uids[i];
		}
		sync->base_count = kept;
		return true;
	}
	if (response.type == IMAP_RESPONSE_DATA_ESEARCH && sync->form == SYNC_FORM_SEARCH) {
		/* whose: its tag names the command (the client core may hand on a
		   later command's data before an earlier one's completion) */
		unsigned int i = sync_search_of_tag(sync, &response.u.esearch);

		if (i == 0)
			return sync_note_esearch_all(sync, &response.u.esearch);
		if (i > sync->command_tag_count || !response.u.esearch.uid ||
		    !sync_flagsets_answer(sync->flagsets, i - 1,
					  (response.u.esearch.present & IMAP_ESEARCH_ALL) != 0 ? response.u.esearch.all : NULL))
			sync->delta_refused = true;
		return true;
	}
	if (response.type == IMAP_RESPONSE_DATA_ESEARCH)
		return sync_note_esearch_all(sync, &response.u.esearch);
	return false;
}

bool sync_fetch_data(struct sync *sync, const struct imap_client_untagged *untagged)
{
	uint32_t uid;
	char *flags;
	uint64_t modseq;

	if (strcmp(untagged->keyword, "FETCH") == 0) {
		if (sync->state == SYNC_FETCHING && sync_parse_fetch(sync, untagged, &uid, &flags, &modseq)) {
			if (uid == 0 || flags == NULL) {
				free(flags);
				sync->disturbed = true;
			} else {
				sync_add_entry(sync, untagged->number, uid, flags, modseq);
			}
		}
		return true;
	}
	if (sync->form != SYNC_FORM_FULL && sync->state == SYNC_FETCHING && sync_note_delta_data(sync, untagged))
		return true;
	if (strcmp(untagged->keyword, "EXISTS") == 0 && untagged->has_number)
		sync->exists = untagged->number;
	else if (strcmp(untagged->keyword, "RECENT") == 0 && untagged->has_number)
		sync->recent = untagged->number;
	else if (strcmp(untagged->keyword, "EXPUNGE") == 0 || strcmp(untagged->keyword, "VANISHED") == 0)
		sync->disturbed = true;
	else if (strcmp(untagged->keyword, "OK") == 0)
		sync_note_code(sync, untagged->code);
	return false;
}

/* Whether the entries are the whole mailbox: sequence numbers 1..exists,
   each once, UIDs ascending (as Dovecot sends them, in order). */
static bool sync_entries_complete(const struct sync *sync)
{
	if (sync->entry_count != sync->exists)
		return false;
	for (uint32_t i = 0; i < sync->entry_count; i++) {
		if (sync->entries[i].seq != i + 1 || (i > 0 && sync->entries[i].uid <= sync->entries[i - 1].uid))
			return false;
	}
	return true;
}

/* Loads the view from the entries (the full form). */
static bool sync_load_view(struct sync *sync, uint32_t *uids)
{
	for (uint32_t i = 0; i < sync->entry_count; i++)
		uids[i] = sync->entries[i].uid;
	if (mailbox_view_load(sync->view, uids, sync->entry_count) < 0)
		return false;
	for (uint32_t i = 0; i < sync->entry_count; i++) {
		const struct sync_entry *entry = &sync->entries[i];

		if (mailbox_view_set_flags(sync->view, i + 1, entry->flags, strlen(entry->flags)) < 0)
			return false;
		mailbox_view_set_modseq(sync->view, i + 1, entry->modseq);
	}
	return true;
}

/* The mailbox's UID list after a CHANGEDSINCE form, in *uids_r
   (malloc'd): ESEARCH's ALL, or the stored list less VANISHED plus the
   changed messages' UIDs. */
static bool sync_delta_uids(struct sync *sync, uint32_t **uids_r, size_t *count_r)
{
	size_t count = 0, b = 0, e = 0;
	uint32_t *uids;

	if (sync->form == SYNC_FORM_CONDSTORE || sync->form == SYNC_FORM_SEARCH) {
		if (!sync->have_all)
			return false;
		*uids_r = sync->all_uids;
		*count_r = sync->all_count;
		sync->all_uids = NULL;
		sync->all_count = 0;
		return true;
	}
	uids = malloc((sync->base_count + sync->entry_count + 1) * sizeof(*uids));
	if (uids == NULL)
		return false;
	while (b < sync->base_count || e < sync->entry_count) {
		uint32_t next = e == sync->entry_count ||
					(b < sync->base_count && sync->base_uids[b] < sync->entries[e].uid) ?
				sync->base_uids[b++] : sync->entries[e++].uid;

		if (count > 0 && uids[count - 1] >= next) {
			if (uids[count - 1] == next)
				continue;
			free(uids); /* the changed messages' UIDs did not ascend */
			return false;
		}
		uids[count++] = next;
	}
	*uids_r = uids;
	*count_r = count;
	return true;
}

/* A stored flag row of an unchanged message, into the view. */
static void sync_stored_flags(uint32_t uid, const char *flags, size_t len, uint64_t modseq, void *context)
{
	struct sync *sync = context;
	uint32_t seq = mailbox_view_seq_of_uid(sync->view, uid);

	if (seq != 0 && mailbox_view_get(sync->view, seq)->flags == NULL) {
		mailbox_view_set_flags(sync->view, seq, flags, len);
		mailbox_view_set_modseq(sync->view, seq, modseq);
	}
	/* a server brought back to an older state (a restore, a mailbox made
	   anew under its UIDVALIDITY) can report the stored HIGHESTMODSEQ
	   again while the store holds changes it no longer has */
	if (sync->highestmodseq != 0 && modseq > sync->highestmodseq)
		sync->store_ahead = true;
}

/* Loads the view after a CHANGEDSINCE form: the UID list from
   sync_delta_uids, each changed message's flags and MODSEQ as the FETCH
   told them (it must stand where its sequence number says), the others'
   from the store (not known where none are stored), and \Recent on the
   last RECENT messages, as Dovecot numbers them. Returns false when what
   came does not add up to the mailbox the upstream has. */
static bool sync_load_delta_view(struct sync *sync)
{
	uint32_t *uids = NULL;
	size_t count = 0;
	bool ok;

	if (!sync_delta_uids(sync, &uids, &count))
		return false;
	ok = count == sync->exists && count <= UINT32_MAX && mailbox_view_load(sync->view, uids, (uint32_t)count) == 0;
	if (ok && sync->form == SYNC_FORM_SEARCH && !sync_flagsets_searched(sync->flagsets, sync->flag_list)) {
		log_debug("sync %s: the SELECT's FLAGS (%s) are not those searched", sync->mailbox,
			  sync->flag_list != NULL ? sync->flag_list : "none");
		ok = false;
	} else if (ok && sync->form == SYNC_FORM_SEARCH && sync_flagsets_load(sync->flagsets, sync->view) < 0) {
		log_debug("sync %s: a flag's search named a UID the mailbox's did not", sync->mailbox);
		ok = false;
	}
	/* what changed meanwhile: a FETCH of CHANGEDSINCE, or one the upstream
	   sent of its own during the searches, which is newer than they are */
	for (uint32_t i = 0; ok && i < sync->entry_count; i++) {
		const struct sync_entry *entry = &sync->entries[i];

		ok = mailbox_view_seq_of_uid(sync->view, entry->uid) == entry->seq &&
		     mailbox_view_set_flags(sync->view, entry->seq, entry->flags, strlen(entry->flags)) == 0;
		if (ok)
			mailbox_view_set_modseq(sync->view, entry->seq, entry->modseq);
	}
	sync->store_ahead = false;
	if (ok && count > 0 && sync->form != SYNC_FORM_SEARCH && cache_lookup_flags(sync->cache, sync->stored.id, uids[0], uids[count - 1],
						  sync_stored_flags, sync) < 0)
		ok = false;
	if (ok && sync->store_ahead) {
		log_debug("sync %s: the store holds a MODSEQ above the upstream's HIGHESTMODSEQ %" PRIu64
			  ": the server went back", sync->mailbox, sync->highestmodseq);
		ok = false;
	}
	for (uint32_t seq = (uint32_t)count - (sync->recent < count ? sync->recent : (uint32_t)count) + 1;
	     ok && seq <= count; seq++)
		mailbox_view_set_recent(sync->view, seq, true);
	free(uids);
	if (!ok)
		mailbox_view_load(sync->view, NULL, 0);
	return ok;
}

static void sync_writer_free(struct sync_writer *writer)
{
	for (uint32_t i = 0; i < writer->count; i++)
		free(writer->rows[i].flags);
	free(writer->rows);
	free(writer->mailbox);
	if (writer->event != NULL)
		event_free(writer->event);
	cache_unref(&writer->cache);
	free(writer);
}

/* After the last row: the sync's HIGHESTMODSEQ, unless another sync
   stored one meanwhile; then the lower of the two, since rows of both are
   in the store and each vouches only for what it wrote after its own
   observation (doc/cache.md). */
static int sync_writer_store_highestmodseq(struct sync_writer *writer)
{
	struct cache_mailbox now;
	uint64_t highestmodseq = writer->highestmodseq;

	if (cache_mailbox_lookup(writer->cache, writer->mailbox, &now) != 1 || now.id != writer->mailbox_id)
		return -1; /* gone, or another UIDVALIDITY: nothing to vouch for */
	if (now.highestmodseq != writer->before && now.highestmodseq < highestmodseq)
		highestmodseq = now.highestmodseq;
	return cache_mailbox_set_state(writer->cache, writer->mailbox_id, now.uidnext, highestmodseq);
}

/* The next chunk goes in a later event-loop turn, after the I/O ready now
   (a zero timeout: an event made active would run in this turn). */
static void sync_writer_schedule(struct sync_writer *writer)
{
	static const struct timeval now = { 0, 0 };

	event_add(writer->event, &now);
}

/* Writes the next chunk of rows in one transaction; after the last, the
   HIGHESTMODSEQ. Stops (the HIGHESTMODSEQ not stored) at a failed write:
   the rows already written are newer than the stored one. */
static void sync_writer_chunk(evutil_socket_t fd, short what, void *context)
{
	struct sync_writer *writer = context;
	uint32_t end = writer->count;
	int failed = 0;

	(void)fd;
	(void)what;
	if (writer->event != NULL && end - writer->next > SYNC_WRITE_CHUNK)
		end = writer->next + SYNC_WRITE_CHUNK;
	cache_batch_begin(writer->cache);
	for (; writer->next < end && failed == 0; writer->next++) {
		const struct sync_entry *row = &writer->rows[writer->next];

		failed = cache_store_flags(writer->cache, writer->mailbox_id, row->uid, row->flags, row->modseq);
	}
	if (failed == 0 && writer->next == writer->count)
		failed = sync_writer_store_highestmodseq(writer);
	if (cache_batch_end(writer->cache) < 0 || failed != 0 || writer->next == writer->count) {
		log_debug("sync %s: %u flag rows written%s", writer->mailbox, writer->next,
			  failed != 0 ? ", then a failure: HIGHESTMODSEQ not stored" : "");
		sync_writer_free(writer);
		return;
	}
	sync_writer_schedule(writer);
}

/* Starts writing the entries' flags and MODSEQs (all, or those of
   changed messages: the entries are the sync's, taken), then
   highestmodseq; before is the stored HIGHESTMODSEQ now. */
static void sync_start_writes(struct sync *sync, int64_t mailbox_id, uint64_t before, uint64_t highestmodseq)
{
	struct sync_writer *writer = calloc(1, sizeof(*writer));

	if (writer == NULL || (writer->mailbox = strdup(sync->mailbox)) == NULL) {
		free(writer);
		return; /* the HIGHESTMODSEQ is not stored: the next sync is a full one */
	}
	writer->cache = cache_ref(sync->cache);
	writer->rows = sync->entries;
	writer->count = sync->entry_count;
	sync->entries = NULL;
	sync->entry_count = sync->entry_capacity = 0;
	writer->mailbox_id = mailbox_id;
	writer->before = before;
	writer->highestmodseq = highestmodseq;
	if (sync->base != NULL)
		writer->event = event_new(sync->base, -1, 0, sync_writer_chunk, writer);
	if (writer->event != NULL)
		sync_writer_schedule(writer);
	else
		sync_writer_chunk(-1, 0, writer);
}

void sync_set_event_base(struct sync *sync, struct event_base *base)
{
	sync->base = base;
}

/* The UIDs of stored that uids lacks, into gone (room for all of
   stored); both ascending, as the store's list and a loaded view's are.
   Returns how many: one pass over each, not a search of the view per
   stored UID (10,000 of them at every warm SELECT of the benchmark's). */
static size_t sync_uids_gone(const uint32_t *stored, size_t stored_count, const uint32_t *uids, size_t count,
			     uint32_t *gone)
{
	size_t gone_count = 0, next = 0;

	for (size_t i = 0; i < stored_count; i++) {
		while (next < count && uids[next] < stored[i])
			next++;
		if (next == count || uids[next] != stored[i])
			gone[gone_count++] = stored[i];
	}
	return gone_count;
}

/* The store learns the mailbox as of this sync: its UIDVALIDITY (a new
   one drops the old rows), UID list and UIDNEXT now, then the flags the
   sync saw (with CONDSTORE: a full sync's every message, a CHANGEDSINCE
   form's changed ones) and, after them, its HIGHESTMODSEQ. Without
   CONDSTORE no flags are written and the stored HIGHESTMODSEQ stays: the
   rows it vouches for are no older for this sync. Messages that are gone
   leave the store. */
static void sync_store(struct sync *sync, const uint32_t *uids, uint32_t count)
{
	struct cache_mailbox mailbox;
	uint32_t *stored = NULL, *gone = NULL;
	size_t stored_count = 0, gone_count = 0;
	bool reset = false;

	if (sync->cache == NULL || sync->uidvalidity == 0 ||
	    cache_mailbox_open(sync->cache, sync->mailbox, sync->uidvalidity, &mailbox, &reset) < 0)
		return;
	sync->mailbox_id = mailbox.id;
	if (cache_mailbox_get_uids(sync->cache, mailbox.id, &stored, &stored_count) > 0 &&
	    (gone = malloc(stored_count * sizeof(*gone))) != NULL)
		gone_count = sync_uids_gone(stored, stored_count, uids, count, gone);
	cache_batch_begin(sync->cache);
	if (gone_count > 0)
		cache_mailbox_remove_uids(sync->cache, mailbox.id, gone, gone_count);
	cache_mailbox_set_uids(sync->cache, mailbox.id, uids, count);
	cache_mailbox_set_state(sync->cache, mailbox.id, sync->uidnext, sync->nomodseq ? 0 : mailbox.highestmodseq);
	/* the next SELECT's searches; none after a list too long to keep (a
	   new UIDVALIDITY's row has no list yet) */
	if (sync->flags_seen && (sync->stored_flag_list == NULL || sync->flag_list == NULL || reset ||
				 mailbox.id != sync->stored.id || strcmp(sync->stored_flag_list, sync->flag_list) != 0))
		cache_mailbox_set_flag_list(sync->cache, mailbox.id, sync->flag_list);
	cache_batch_end(sync->cache);
	free(stored);
	free(gone);
	/* Dovecot reports HIGHESTMODSEQ to a client that enabled nothing too,
	   once the mailbox keeps MODSEQs: only a sync that saw MODSEQs counts */
	if (sync->options.condstore && sync->highestmodseq != 0)
		sync_start_writes(sync, mailbox.id, sync->nomodseq ? 0 : mailbox.highestmodseq, sync->highestmodseq);
}

/* A CHANGEDSINCE form is done: the view from it, or the full form next. */
static const char *sync_delta_done(struct sync *sync, enum imap_client_status status)
{
	if (status == IMAP_CLIENT_STATUS_OK && !sync->disturbed && !sync->delta_refused && sync_load_delta_view(sync))
		return NULL;
	mailbox_view_load(sync->view, NULL, 0);
	if (sync->disturbed)
		return NULL; /* an expunge meanwhile would disturb the full form too */
	log_debug("sync %s: the %s form does not add up (%s, %u messages, %u changed): a full sync follows",
		  sync->mailbox, sync->form == SYNC_FORM_QRESYNC ? "QRESYNC" : sync->form == SYNC_FORM_SEARCH ? "SEARCH" : "CONDSTORE",
		  imap_client_status_name(status), sync->exists, sync->entry_count);
	sync_clear_entries(sync);
	sync_clear_delta(sync);
	sync->form = SYNC_FORM_FULL;
	sync->delta_refused = false;
	sync->commands_pending = 1;
	return sync_full_command(sync);
}

/* The view of a CHANGEDSINCE form is loaded (or not): the store follows. */
static void sync_delta_finish(struct sync *sync)
{
	uint32_t count = mailbox_view_count(sync->view);
	uint32_t *uids = NULL;

	sync->state = count == sync->exists && !sync->disturbed ? SYNC_READY : SYNC_UNVOUCHED;
	if (sync->state == SYNC_READY && (uids = malloc(((size_t)count + 1) * sizeof(*uids))) == NULL)
		sync->state = SYNC_UNVOUCHED;
	for (uint32_t seq = 1; uids != NULL && seq <= count; seq++)
		uids[seq - 1] = mailbox_view_get(sync->view, seq)->uid;
	if (sync->state == SYNC_READY)
		sync_store(sync, uids, count);
	else
		mailbox_view_load(sync->view, NULL, 0);
	free(uids);
}

/* After the SEARCH form's first flight, with keywords in the SELECT's
   FLAGS: their searches, in a flight of their own, when it pays
   (sync_keyword_flight_pays), as the first command of the flight
   (sync_extra_command has the others). NULL when there is none to send:
   sync_delta_done then finds the FLAGS not all searched, and the full
   form follows. */
static const char *sync_keyword_flight(struct sync *sync, enum imap_client_status status)
{
	int keywords;
	const char *first;

	/* the first flight's tags, all kept: the keywords' follow them */
	if (sync->keyword_flight || status != IMAP_CLIENT_STATUS_OK || sync->disturbed || sync->delta_refused ||
	    sync->command_tag_count != 1 + SYNC_FLAGSETS_SYSTEM || !sync->have_all || sync->all_count != sync->exists ||
	    sync->flag_list == NULL || (keywords = sync_flagsets_keyword_count(sync->flag_list)) <= 0)
		return NULL;
	/* chosen for the stored list's keywords already, or for ones new since */
	if ((sync->stored_flag_list == NULL || sync_flagsets_keyword_count(sync->stored_flag_list) <= 0) &&
	    !sync_keyword_flight_pays(sync, sync->exists)) {
		log_debug("sync %s: %d keywords; the FETCH of %u messages' FLAGS costs less than a round trip",
			  sync->mailbox, keywords, sync->exists);
		return NULL;
	}
	if (sync_flagsets_add_keywords(sync->flagsets, sync->flag_list) != keywords ||
	    (first = sync_flagsets_command(sync->flagsets, SYNC_FLAGSETS_SYSTEM)) == NULL)
		return NULL;
	log_debug("sync %s: %d keywords searched in a flight of their own", sync->mailbox, keywords);
	sync->keyword_flight = true;
	sync->commands_pending = (unsigned int)keywords;
	return first;
}

const char *sync_fetch_done(struct sync *sync, enum imap_client_status status)
{
	uint32_t *uids;
	uint32_t count;

	if (sync->state != SYNC_FETCHING)
		return NULL;
	if (status != IMAP_CLIENT_STATUS_OK)
		sync->delta_refused = true; /* a CHANGEDSINCE form's part failed: the full form next */
	if (sync->commands_pending > 1) {
		sync->commands_pending--;
		return NULL;
	}
	sync->commands_pending = 0;
	if (sync->form == SYNC_FORM_SEARCH) {
		const char *keywords = sync_keyword_flight(sync, status);

		if (keywords != NULL)
			return keywords;
	}
	if (sync->form != SYNC_FORM_FULL) {
		const char *next = sync_delta_done(sync, status);

		if (next == NULL)
			sync_delta_finish(sync);
		sync_clear_entries(sync);
		sync_clear_delta(sync);
		return next;
	}
	sync->state = SYNC_UNVOUCHED;
	if (status != IMAP_CLIENT_STATUS_OK || sync->disturbed || !sync_entries_complete(sync)) {
		log_debug("sync %s: not vouched for (%s, %u of %u messages seen%s)", sync->mailbox,
			  imap_client_status_name(status), sync->entry_count, sync->exists,
			  sync->disturbed ? ", an expunge meanwhile" : "");
		sync_clear_entries(sync);
		mailbox_view_load(sync->view, NULL, 0);
		return NULL;
	}
	count = sync->entry_count;
	uids = malloc(((size_t)count + 1) * sizeof(*uids));
	if (uids != NULL && sync_load_view(sync, uids)) {
		sync->state = SYNC_READY;
		sync_store(sync, uids, count);
	} else {
		mailbox_view_load(sync->view, NULL, 0);
	}
	free(uids);
	sync_clear_entries(sync);
	return NULL;
}

/* What a FETCH line told of message seq (its UID or 0, its flags' text
   or NULL, owned, its MODSEQ or 0), as this session's view of it now. */
static void sync_apply_fetch(struct sync *sync, uint32_t seq, uint32_t uid, char *flags, uint64_t modseq)
{
	const struct mailbox_view_message *message = mailbox_view_get(sync->view, seq);

	if (message == NULL) {
		log_debug("sync %s: a FETCH of message %u, past the view's %u: not vouched any more", sync->mailbox,
			  seq, mailbox_view_count(sync->view));
		sync->state = SYNC_UNVOUCHED;
		free(flags);
		return;
	}
	/* a UID not known yet must be above every known one: they ascend with the sequence number */
	if (uid != 0 &&
	    (message->uid != 0 ? message->uid != uid : uid <= mailbox_view_max_uid(sync->view))) {
		log_debug("sync %s: message %u has UID %u, not the view's: not vouched any more", sync->mailbox, seq,
			  uid);
		sync->state = SYNC_UNVOUCHED;
	} else if (uid != 0) {
		mailbox_view_set_uid(sync->view, seq, uid); /* learnt, if it is the next one not known */
	}
	if (flags != NULL && (message->flags == NULL || strcmp(message->flags, flags) != 0))
		sync_news_told(sync, false); /* unknown before (a .SILENT STORE): maybe changed since */
	if (flags != NULL)
		mailbox_view_set_flags(sync->view, seq, flags, strlen(flags));
	mailbox_view_set_modseq(sync->view, seq, modseq);
	free(flags);
}

/* A FETCH that reached the client: what it says of flags, MODSEQ and UID. */
static void sync_update_fetch(struct sync *sync, const struct imap_client_untagged *untagged)
{
	uint32_t uid;
	char *flags;
	uint64_t modseq;

	if (sync_parse_fetch(sync, untagged, &uid, &flags, &modseq))
		sync_apply_fetch(sync, untagged->number, uid, flags, modseq);
}

bool sync_update_fetch_line(struct sync *sync, const struct fetch_fill_line *line)
{
	char *flags = NULL;

	if (line->flags != NULL && !sync_flags_plain((const unsigned char *)line->flags, line->flags_len))
		return false;
	if (sync->state == SYNC_UNVOUCHED)
		sync_news_told(sync, false); /* as sync_news_unvouched does for a FETCH */
	if (sync->state != SYNC_READY)
		return true;
	if (line->flags != NULL && (flags = strndup(line->flags, line->flags_len)) == NULL)
		return false;
	sync_apply_fetch(sync, line->seq, line->uid, flags, line->modseq);
	return true;
}

/* The upstream expunged the client's message seq: it leaves the view and the store. */
static void sync_update_expunge(struct sync *sync, uint32_t seq)
{
	const struct mailbox_view_message *message = mailbox_view_get(sync->view, seq);
	uint32_t uid = message != NULL ? message->uid : 0;

	if (mailbox_view_upstream_expunge(sync->view, seq, false) == 0) {
		sync->state = SYNC_UNVOUCHED;
		return;
	}
	if (uid != 0 && sync->cache != NULL && sync->mailbox_id != 0)
		cache_mailbox_remove_uids(sync->cache, sync->mailbox_id, &uid, 1);
}

/* A session whose view is not vouched for still tells the others of what
   its client hears: with no view to compare, every such line counts. */
static void sync_news_unvouched(struct sync *sync, const struct imap_client_untagged *untagged)
{
	bool expunge = strcmp(untagged->keyword, "EXPUNGE") == 0 || strcmp(untagged->keyword, "VANISHED") == 0;

	if (expunge || strcmp(untagged->keyword, "FETCH") == 0 || strcmp(untagged->keyword, "EXISTS") == 0)
		sync_news_told(sync, expunge);
}

/* Whether a VANISHED (not EARLIER) may name a message of the view whose
   UID it has not learned: new messages learn theirs in order, from a
   FETCH, so the view ends in those of unknown UID, and a UID past the
   last known one may be any of them, or none. Which one went can't be
   told: the view would keep one message too many, and the next one's
   number would get the flags of the one before (a sweep's finding). */
static bool sync_vanished_unplaced(const struct sync *sync, const struct imap_seqset *set)
{
	uint32_t count = mailbox_view_count(sync->view);
	unsigned int range_count = 0;
	struct imap_seqset_range *ranges;
	bool unplaced;

	if (count == 0 || mailbox_view_get(sync->view, count)->uid != 0)
		return false;
	ranges = imap_seqset_resolve(set, UINT32_MAX, &range_count);
	if (ranges == NULL)
		return true; /* out of memory: not vouched for either */
	unplaced = range_count > 0 && ranges[range_count - 1].last > mailbox_view_max_uid(sync->view);
	free(ranges);
	return unplaced;
}

void sync_update(struct sync *sync, const struct imap_client_untagged *untagged)
{
	struct imap_response response;

	if (sync->state == SYNC_UNVOUCHED)
		sync_news_unvouched(sync, untagged);
	if (sync->state != SYNC_READY)
		return;
	if (strcmp(untagged->keyword, "EXISTS") == 0 && untagged->has_number) {
		if (untagged->number != mailbox_view_count(sync->view))
			sync_news_told(sync, false);
		if (mailbox_view_upstream_exists(sync->view, untagged->number) < 0)
			sync->state = SYNC_UNVOUCHED;
	} else if (strcmp(untagged->keyword, "EXPUNGE") == 0 && untagged->has_number) {
		sync_news_told(sync, true);
		sync_update_expunge(sync, untagged->number);
	} else if (strcmp(untagged->keyword, "FETCH") == 0 && untagged->has_number) {
		sync_update_fetch(sync, untagged);
	} else if (strcmp(untagged->keyword, "FLAGS") == 0 && untagged->args_count == 1 && sync->cache != NULL &&
		   sync->mailbox_id != 0) {
		char *flag_list = sync_flags_text(&untagged->args[0]); /* a keyword was made; NULL: too long */

		cache_mailbox_set_flag_list(sync->cache, sync->mailbox_id, flag_list);
		free(flag_list);
	} else if (strcmp(untagged->keyword, "VANISHED") == 0 && untagged->line != NULL &&
		   imap_response_parse(sync->responses, untagged->line, &response, NULL) == IMAP_RESPONSE_ERROR_NONE &&
		   response.type == IMAP_RESPONSE_DATA_VANISHED && !response.u.vanished.earlier) {
		/* RFC 7162 3.2.10: a client that enabled QRESYNC is told by UID */
		const struct imap_seqset *set = response.u.vanished.uids;

		sync_news_told(sync, true); /* counted even for UIDs the view does not know yet */
		if (sync_vanished_unplaced(sync, set)) {
			log_debug("sync %s: a VANISHED names a UID past the known ones while new messages' are not "
				  "known: not vouched for", sync->mailbox);
			sync->state = SYNC_UNVOUCHED;
			return;
		}
		for (uint32_t seq = mailbox_view_count(sync->view); seq >= 1 && sync->state == SYNC_READY; seq--) {
			uint32_t uid = mailbox_view_get(sync->view, seq)->uid;

			if (uid != 0 && imap_seqset_contains(set, uid, 0))
				sync_update_expunge(sync, seq);
		}
	}
}

bool sync_is_ready(const struct sync *sync)
{
	return sync->state == SYNC_READY;
}

int64_t sync_mailbox_id(const struct sync *sync)
{
	return sync->state == SYNC_READY ? sync->mailbox_id : 0;
}

bool sync_is_read_only(const struct sync *sync)
{
	return sync->read_only;
}

const char *sync_mailbox_name(const struct sync *sync)
{
	return sync->state == SYNC_READY ? sync->mailbox : NULL;
}

bool sync_told_all_news(const struct sync *sync)
{
	return mailbox_news_told_all(sync_news_account(sync), sync->mailbox, &sync->news_told);
}

struct sync_news_sent sync_news_sent(const struct sync *sync)
{
	return (struct sync_news_sent){
		mailbox_news_sent(sync_news_account(sync), sync->mailbox, &sync->news_told), sync->selection,
		sync->state == SYNC_READY,
	};
}

void sync_news_caught_up(struct sync *sync, const struct sync_news_sent *sent, bool expunges_too)
{
	if (sent->selected && sent->selection == sync->selection && sync->state == SYNC_READY)
		mailbox_news_catch_up(sync_news_account(sync), sync->mailbox, &sync->news_told, &sent->news,
				      expunges_too);
}

void sync_news_add(struct sync *sync, const char *mailbox, bool expunge)
{
	bool selected = mailbox == NULL || (sync->mailbox != NULL && (strcmp(mailbox, sync->mailbox) == 0 ||
					  (strcasecmp(mailbox, "INBOX") == 0 && strcasecmp(sync->mailbox, "INBOX") == 0)));

	if (selected && sync->mailbox != NULL)
		mailbox_news_add(sync_news_account(sync), sync->mailbox, expunge, &sync->news_told);
	else if (!selected && sync->cache != NULL)
		mailbox_news_add(sync_news_account(sync), mailbox, expunge, NULL);
}
