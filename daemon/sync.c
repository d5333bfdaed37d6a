/* SPDX-License-Identifier: MIT */
/* sync: brings a session's mailbox view and the account's store up to date at SELECT/EXAMINE and from every update after it. */
#include "config.h"
#include "sync.h"
#include "cache.h"
#include "imap-response.h"
#include "log.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define SYNC_COMMAND " UID FETCH 1:* (FLAGS)\r\n" /* uses nothing the client did not enable (doc/cache.md) */
#define SYNC_FLAGS_MAX 8192 /* a flag list's text; Dovecot's keyword limit keeps real ones far below */

enum sync_state {
	SYNC_NONE,       /* nothing selected */
	SYNC_SELECTING,  /* the SELECT is on its way */
	SYNC_FETCHING,   /* the SELECT succeeded; the sync's own command is on its way */
	SYNC_READY,      /* the view answers for the mailbox */
	SYNC_UNVOUCHED,  /* selected, but the view can't be trusted: everything goes upstream */
};

/* One message as the sync's FETCH told of it. */
struct sync_entry {
	uint32_t seq, uid;
	uint64_t modseq;
	char *flags;
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

void sync_free(struct sync **sync_p)
{
	struct sync *sync = *sync_p;

	if (sync == NULL)
		return;
	sync_clear_entries(sync);
	free(sync->entries);
	free(sync->mailbox);
	imap_response_parser_free(&sync->responses);
	free(sync);
	*sync_p = NULL;
}

void sync_deselect(struct sync *sync)
{
	sync->state = SYNC_NONE;
	sync->mailbox_id = 0;
	sync_clear_entries(sync);
	mailbox_view_load(sync->view, NULL, 0);
}

const char *sync_select_begin(struct sync *sync, const char *mailbox, size_t len, bool examine)
{
	sync_deselect(sync);
	free(sync->mailbox);
	sync->mailbox = strndup(mailbox, len);
	sync->state = sync->mailbox != NULL && memchr(mailbox, '\0', len) == NULL ? SYNC_SELECTING : SYNC_NONE;
	sync->read_only = examine;
	sync->disturbed = false;
	sync->exists = sync->uidvalidity = sync->uidnext = 0;
	sync->highestmodseq = 0;
	return SYNC_COMMAND;
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
	else if (code != NULL && strcasecmp(code, "NOMODSEQ") == 0)
		sync->highestmodseq = 0;
}

void sync_select_data(struct sync *sync, const struct imap_client_untagged *untagged)
{
	if (sync->state != SYNC_SELECTING)
		return;
	if (strcmp(untagged->keyword, "EXISTS") == 0 && untagged->has_number)
		sync->exists = untagged->number;
	else if (strcmp(untagged->keyword, "OK") == 0)
		sync_note_code(sync, untagged->code);
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
	text[0] = '\0';
	for (unsigned int i = 0; i < count; i++) {
		const char *flag;
		int n;

		if (!imap_arg_get_atom(&flags[i], &flag))
			return NULL;
		n = snprintf(text + used, sizeof(text) - used, "%s%s", i > 0 ? " " : "", flag);
		if (n < 0 || (size_t)n >= sizeof(text) - used)
			return NULL;
		used += (size_t)n;
	}
	return strdup(text);
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
	if (strcmp(untagged->keyword, "EXISTS") == 0 && untagged->has_number)
		sync->exists = untagged->number;
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

/* Loads the view from the entries. */
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

/* The store learns the mailbox as of this sync: its UIDVALIDITY (a new
   one drops the old rows), UID list, UIDNEXT and HIGHESTMODSEQ. Messages
   that are gone leave it. */
static void sync_store(struct sync *sync, const uint32_t *uids)
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
	    (gone = malloc(stored_count * sizeof(*gone))) != NULL) {
		for (size_t i = 0; i < stored_count; i++) {
			if (mailbox_view_seq_of_uid(sync->view, stored[i]) == 0)
				gone[gone_count++] = stored[i];
		}
	}
	cache_batch_begin(sync->cache);
	if (gone_count > 0)
		cache_mailbox_remove_uids(sync->cache, mailbox.id, gone, gone_count);
	cache_mailbox_set_uids(sync->cache, mailbox.id, uids, sync->entry_count);
	cache_mailbox_set_state(sync->cache, mailbox.id, sync->uidnext, sync->highestmodseq);
	cache_batch_end(sync->cache);
	free(stored);
	free(gone);
}

void sync_fetch_done(struct sync *sync, enum imap_client_status status)
{
	uint32_t *uids;

	if (sync->state != SYNC_FETCHING)
		return;
	sync->state = SYNC_UNVOUCHED;
	if (status != IMAP_CLIENT_STATUS_OK || sync->disturbed || !sync_entries_complete(sync)) {
		log_debug("sync %s: not vouched for (%s, %u of %u messages seen%s)", sync->mailbox,
			  imap_client_status_name(status), sync->entry_count, sync->exists,
			  sync->disturbed ? ", an expunge meanwhile" : "");
		sync_clear_entries(sync);
		mailbox_view_load(sync->view, NULL, 0);
		return;
	}
	uids = malloc(((size_t)sync->entry_count + 1) * sizeof(*uids));
	if (uids != NULL && sync_load_view(sync, uids)) {
		sync->state = SYNC_READY;
		sync_store(sync, uids);
	} else {
		mailbox_view_load(sync->view, NULL, 0);
	}
	free(uids);
	sync_clear_entries(sync);
}

/* A FETCH that reached the client: what it says of flags, MODSEQ and UID. */
static void sync_update_fetch(struct sync *sync, const struct imap_client_untagged *untagged)
{
	uint32_t uid;
	char *flags;
	uint64_t modseq;
	uint32_t seq = untagged->number;

	if (!sync_parse_fetch(sync, untagged, &uid, &flags, &modseq))
		return;
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
	if (flags != NULL)
		mailbox_view_set_flags(sync->view, seq, flags, strlen(flags));
	mailbox_view_set_modseq(sync->view, seq, modseq);
	free(flags);
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

void sync_update(struct sync *sync, const struct imap_client_untagged *untagged)
{
	struct imap_response response;

	if (sync->state != SYNC_READY)
		return;
	if (strcmp(untagged->keyword, "EXISTS") == 0 && untagged->has_number) {
		if (mailbox_view_upstream_exists(sync->view, untagged->number) < 0)
			sync->state = SYNC_UNVOUCHED;
	} else if (strcmp(untagged->keyword, "EXPUNGE") == 0 && untagged->has_number) {
		sync_update_expunge(sync, untagged->number);
	} else if (strcmp(untagged->keyword, "FETCH") == 0 && untagged->has_number) {
		sync_update_fetch(sync, untagged);
	} else if (strcmp(untagged->keyword, "VANISHED") == 0 && untagged->line != NULL &&
		   imap_response_parse(sync->responses, untagged->line, &response, NULL) == IMAP_RESPONSE_ERROR_NONE &&
		   response.type == IMAP_RESPONSE_DATA_VANISHED && !response.u.vanished.earlier) {
		/* RFC 7162 3.2.10: a client that enabled QRESYNC is told by UID */
		const struct imap_seqset *set = response.u.vanished.uids;

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
