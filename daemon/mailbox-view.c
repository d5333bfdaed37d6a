/* SPDX-License-Identifier: MIT */
/* mailbox-view: one session's snapshot of its selected mailbox: sequence numbers, UIDs, flags, held expunges. */
#include "config.h"
#include "mailbox-view.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAILBOX_VIEW_MIN_CAPACITY 64 /* a small mailbox fits without growing */
#define MAILBOX_VIEW_FLAG_SLOTS_MIN 32 /* distinct flag lists: a mailbox has a few dozen */

/* The distinct flag lists the view's messages have had, each kept once
   (a sync sets 10,000 messages' flags from a handful of lists: a copy
   each was a malloc and a free each). Open addressing; kept until the
   view is freed. */
struct mailbox_view_flag_set {
	char **slots;
	size_t capacity, count;
};

struct mailbox_view {
	struct mailbox_view_message *messages; /* index seq - 1 */
	uint32_t count;
	uint32_t capacity;
	uint32_t known_uids;   /* messages[0 .. known_uids - 1] have UIDs; the rest have none yet */
	uint32_t held;         /* messages marked expunged */
	struct mailbox_view_flag_set flag_lists;
};

static uint64_t mailbox_view_flags_hash(const char *flags, size_t len)
{
	uint64_t hash = 14695981039346656037ULL; /* FNV-1a */

	for (size_t i = 0; i < len; i++)
		hash = (hash ^ (unsigned char)flags[i]) * 1099511628211ULL;
	return hash;
}

/* The slot of flags (len bytes) in set: where it is, or the empty one
   where it would go. capacity is a power of two with room left. */
static char **mailbox_view_flags_slot(const struct mailbox_view_flag_set *set, const char *flags, size_t len)
{
	size_t mask = set->capacity - 1, at = (size_t)mailbox_view_flags_hash(flags, len) & mask;

	while (set->slots[at] != NULL &&
	       (strncmp(set->slots[at], flags, len) != 0 || set->slots[at][len] != '\0'))
		at = (at + 1) & mask;
	return &set->slots[at];
}

/* Doubles set (or makes it). Returns 0 or -1. */
static int mailbox_view_flags_grow(struct mailbox_view_flag_set *set)
{
	struct mailbox_view_flag_set bigger = { .capacity = set->capacity > 0 ? set->capacity * 2 :
										 MAILBOX_VIEW_FLAG_SLOTS_MIN,
						 .count = set->count };

	bigger.slots = calloc(bigger.capacity, sizeof(*bigger.slots));
	if (bigger.slots == NULL)
		return -1;
	for (size_t i = 0; i < set->capacity; i++) {
		if (set->slots[i] != NULL)
			*mailbox_view_flags_slot(&bigger, set->slots[i], strlen(set->slots[i])) = set->slots[i];
	}
	free(set->slots);
	*set = bigger;
	return 0;
}

/* The view's one copy of flags (len bytes, NUL-terminated), or NULL when
   memory runs out. */
static const char *mailbox_view_flags_intern(struct mailbox_view *view, const char *flags, size_t len)
{
	struct mailbox_view_flag_set *set = &view->flag_lists;
	char **slot;

	if ((set->count + 1) * 2 > set->capacity && mailbox_view_flags_grow(set) < 0)
		return NULL;
	slot = mailbox_view_flags_slot(set, flags, len);
	if (*slot == NULL) {
		if ((*slot = malloc(len + 1)) == NULL)
			return NULL;
		memcpy(*slot, flags, len);
		(*slot)[len] = '\0';
		set->count++;
	}
	return *slot;
}

static void mailbox_view_flags_free(struct mailbox_view_flag_set *set)
{
	for (size_t i = 0; i < set->capacity; i++)
		free(set->slots[i]);
	free(set->slots);
	*set = (struct mailbox_view_flag_set){ 0 };
}

struct mailbox_view *mailbox_view_new(void)
{
	return calloc(1, sizeof(struct mailbox_view));
}

static void mailbox_view_clear(struct mailbox_view *view)
{
	view->count = 0;
	view->known_uids = 0;
	view->held = 0;
}

void mailbox_view_free(struct mailbox_view **view_p)
{
	struct mailbox_view *view = *view_p;

	if (view == NULL)
		return;
	mailbox_view_clear(view);
	mailbox_view_flags_free(&view->flag_lists);
	free(view->messages);
	free(view);
	*view_p = NULL;
}

/* Makes room for count messages. */
static int mailbox_view_reserve(struct mailbox_view *view, uint32_t count)
{
	struct mailbox_view_message *bigger;
	uint64_t capacity = view->capacity < MAILBOX_VIEW_MIN_CAPACITY ? MAILBOX_VIEW_MIN_CAPACITY : view->capacity;

	if (count <= view->capacity)
		return 0;
	while (capacity < count)
		capacity *= 2;
	if (capacity > UINT32_MAX)
		capacity = UINT32_MAX;
	bigger = realloc(view->messages, (size_t)capacity * sizeof(*bigger));
	if (bigger == NULL)
		return -1;
	view->messages = bigger;
	view->capacity = (uint32_t)capacity;
	return 0;
}

int mailbox_view_load(struct mailbox_view *view, const uint32_t *uids, uint32_t count)
{
	for (uint32_t i = 0; i < count; i++) {
		if (uids[i] == 0 || (i > 0 && uids[i] <= uids[i - 1]))
			return -1;
	}
	if (mailbox_view_reserve(view, count) < 0)
		return -1;
	mailbox_view_clear(view);
	if (count > 0) /* a view never loaded has no array: memset(NULL, ...) is undefined even for 0 bytes */
		memset(view->messages, 0, (size_t)count * sizeof(*view->messages));
	for (uint32_t i = 0; i < count; i++)
		view->messages[i].uid = uids[i];
	view->count = count;
	view->known_uids = count;
	return 0;
}

uint32_t mailbox_view_count(const struct mailbox_view *view)
{
	return view->count;
}

uint32_t mailbox_view_upstream_count(const struct mailbox_view *view)
{
	return view->count - view->held;
}

bool mailbox_view_has_held(const struct mailbox_view *view)
{
	return view->held > 0;
}

const struct mailbox_view_message *mailbox_view_get(const struct mailbox_view *view, uint32_t seq)
{
	return seq >= 1 && seq <= view->count ? &view->messages[seq - 1] : NULL;
}

uint32_t mailbox_view_seq_of_uid(const struct mailbox_view *view, uint32_t uid)
{
	uint32_t low = 0, high = view->known_uids;

	while (low < high) {
		uint32_t middle = low + (high - low) / 2;

		if (view->messages[middle].uid < uid)
			low = middle + 1;
		else
			high = middle;
	}
	return low < view->known_uids && view->messages[low].uid == uid && uid != 0 ? low + 1 : 0;
}

uint32_t mailbox_view_max_uid(const struct mailbox_view *view)
{
	return view->known_uids > 0 ? view->messages[view->known_uids - 1].uid : 0;
}

uint32_t mailbox_view_upstream_seq(const struct mailbox_view *view, uint32_t seq)
{
	uint32_t upstream_seq = 0;

	if (seq < 1 || seq > view->count || view->messages[seq - 1].expunged)
		return 0;
	if (view->held == 0)
		return seq;
	for (uint32_t i = 0; i < seq; i++)
		upstream_seq += !view->messages[i].expunged;
	return upstream_seq;
}

uint32_t mailbox_view_client_seq(const struct mailbox_view *view, uint32_t upstream_seq)
{
	if (upstream_seq < 1 || upstream_seq > view->count - view->held)
		return 0;
	if (view->held == 0)
		return upstream_seq;
	for (uint32_t i = 0, seen = 0; i < view->count; i++) {
		if (!view->messages[i].expunged && ++seen == upstream_seq)
			return i + 1;
	}
	return 0;
}

int mailbox_view_upstream_exists(struct mailbox_view *view, uint32_t upstream_count)
{
	uint32_t have = view->count - view->held;
	uint32_t added;

	if (upstream_count < have || (uint64_t)view->held + upstream_count > UINT32_MAX)
		return -1;
	added = upstream_count - have;
	if (added == 0)
		return 0;
	if (mailbox_view_reserve(view, view->count + added) < 0)
		return -1;
	memset(&view->messages[view->count], 0, (size_t)added * sizeof(*view->messages));
	view->count += added;
	return 0;
}

int mailbox_view_set_uid(struct mailbox_view *view, uint32_t seq, uint32_t uid)
{
	struct mailbox_view_message *message;

	if (seq < 1 || seq > view->count || uid == 0)
		return -1;
	message = &view->messages[seq - 1];
	if (message->uid != 0)
		return message->uid == uid ? 0 : -1;
	/* only the first unknown one can be learnt: known UIDs are a prefix */
	if (seq - 1 != view->known_uids || (view->known_uids > 0 && view->messages[seq - 2].uid >= uid))
		return -1;
	message->uid = uid;
	view->known_uids++;
	return 0;
}

int mailbox_view_set_flags(struct mailbox_view *view, uint32_t seq, const char *flags, size_t len)
{
	const char *kept;

	if (seq < 1 || seq > view->count || (kept = mailbox_view_flags_intern(view, flags, len)) == NULL)
		return -1;
	view->messages[seq - 1].flags = kept;
	return 0;
}

int mailbox_view_set_modseq(struct mailbox_view *view, uint32_t seq, uint64_t modseq)
{
	if (seq < 1 || seq > view->count)
		return -1;
	if (modseq != 0)
		view->messages[seq - 1].modseq = modseq;
	return 0;
}

void mailbox_view_set_recent(struct mailbox_view *view, uint32_t seq, bool recent)
{
	if (seq >= 1 && seq <= view->count)
		view->messages[seq - 1].recent = recent;
}

void mailbox_view_forget_flags(struct mailbox_view *view, uint32_t seq)
{
	if (seq >= 1 && seq <= view->count) {
		view->messages[seq - 1].flags = NULL;
	}
}

/* Takes the message at index out of the view. */
static void mailbox_view_remove(struct mailbox_view *view, uint32_t index)
{
	struct mailbox_view_message *message = &view->messages[index];

	if (message->expunged)
		view->held--;
	if (index < view->known_uids)
		view->known_uids--;
	memmove(message, message + 1, (size_t)(view->count - index - 1) * sizeof(*message));
	view->count--;
}

/* Expunges the client's seq: held, or gone. Returns seq. */
static uint32_t mailbox_view_expunge_seq(struct mailbox_view *view, uint32_t seq, bool hold)
{
	if (hold) {
		view->messages[seq - 1].expunged = true;
		view->held++;
	} else {
		mailbox_view_remove(view, seq - 1);
	}
	return seq;
}

uint32_t mailbox_view_upstream_expunge(struct mailbox_view *view, uint32_t upstream_seq, bool hold)
{
	uint32_t seq = mailbox_view_client_seq(view, upstream_seq);

	return seq == 0 ? 0 : mailbox_view_expunge_seq(view, seq, hold);
}

uint32_t mailbox_view_expunge_uid(struct mailbox_view *view, uint32_t uid, bool hold)
{
	uint32_t seq = mailbox_view_seq_of_uid(view, uid);

	if (seq == 0 || view->messages[seq - 1].expunged)
		return 0;
	return mailbox_view_expunge_seq(view, seq, hold);
}

unsigned int mailbox_view_release_expunges(struct mailbox_view *view, mailbox_view_expunge_fn *report,
					   void *context)
{
	unsigned int released = 0;

	for (uint32_t seq = view->count; seq >= 1 && view->held > 0; seq--) {
		if (!view->messages[seq - 1].expunged)
			continue;
		mailbox_view_remove(view, seq - 1);
		released++;
		if (report != NULL)
			report(seq, context);
	}
	return released;
}

bool mailbox_view_flags_have(const char *flags, const char *flag, size_t len)
{
	for (const char *p = flags; p != NULL && *p != '\0';) {
		size_t word = strcspn(p, " ");

		if (word == len && (flag[0] == '\\' ? strncasecmp(p, flag, len) : strncmp(p, flag, len)) == 0)
			return true;
		p += word;
		p += strspn(p, " ");
	}
	return false;
}
