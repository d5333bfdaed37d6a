/* SPDX-License-Identifier: MIT */
/* fetch: decides whether a FETCH can be answered from the view and the store, and writes that answer as Dovecot would. */
#include "config.h"
#include "fetch.h"

#include "cache-stats.h"
#include "cache.h"
#include "fetch-derive.h"
#include "fetch-private.h"
#include "fetch-splice.h"
#include "imap-command.h"
#include "mailbox-view.h"
#include "mime-buffer.h"
#include "mime-imap.h"
#include "mime-message.h"
#include "mime-parser.h"

#include <assert.h>
#include <event2/buffer.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- the answer's messages ---- */

static int seen_compare(const void *key, const void *element)
{
	uint32_t uid = *(const uint32_t *)key, other = ((const struct fetch_seen *)element)->uid;

	return uid < other ? -1 : uid > other;
}

/* What the \Seen step means for entry: set first (unseen), or just set
   (seen_set: FLAGS shown, the MODSEQs before and after). Returns 1, or 0
   when it must go upstream (*why_r). */
static int message_mark_seen(struct fetch_answer *answer, struct fetch_message *entry,
			     const struct fetch_facts *facts, const char **why_r)
{
	const struct fetch_seen *seen = facts->seen_count == 0 ? NULL :
		bsearch(&entry->uid, facts->seen, facts->seen_count, sizeof(*facts->seen), seen_compare);

	if (seen != NULL && !seen->changed)
		seen = NULL; /* it had \Seen already */

	if (!answer->sets_seen)
		return 1;
	if (entry->flags == NULL) {
		*why_r = "a message whose \\Seen the fetch would set has flags not known";
		return 0;
	}
	if (seen != NULL && mailbox_view_flags_have(entry->flags, "\\Seen", 5)) {
		if (answer->condstore && entry->modseq == 0) {
			*why_r = "a \\Seen set upstream whose new MODSEQ is not known";
			return 0;
		}
		entry->seen_set = true;
		entry->outside_change = seen->outside;
		entry->new_modseq = entry->modseq;
		entry->modseq = seen->old_modseq;
		return 1;
	}
	/* The view's \Seen may be stale (another client's STORE is told only
	   at this session's next upstream command), so the upstream is asked
	   for every message; one its STORE did not report had \Seen already. */
	entry->unseen = !facts->seen_stored || seen != NULL;
	return 1;
}

/* Adds the view's message seq. Returns 1, 0 when it must go upstream (*why_r), -1 out of memory. */
static int answer_add_message(struct fetch_answer *answer, const struct fetch_facts *facts, uint32_t seq,
			      const struct imap_command *command, const char **why_r)
{
	const struct mailbox_view_message *message = mailbox_view_get(facts->view, seq);
	struct fetch_message *entry;

	if (message == NULL || message->uid == 0) {
		*why_r = "a message whose UID is not known yet";
		return 0;
	}
	if (command->u.fetch.changedsince_given) {
		/* a MODSEQ not known is fetched first (message_mark_missing) and
		   the command planned again */
		if (message->modseq == 0 && !facts->fill_missing) {
			*why_r = "CHANGEDSINCE with a message whose MODSEQ is not known";
			return 0;
		}
		if (message->modseq != 0 && message->modseq <= command->u.fetch.changedsince)
			return 1;
	}
	if (answer->message_count == FETCH_LOCAL_MAX_MESSAGES) {
		*why_r = "more messages than FETCH_LOCAL_MAX_MESSAGES";
		return 0;
	}
	if (answer->message_count == answer->message_alloc) {
		size_t alloc = answer->message_alloc < 64 ? 64 : answer->message_alloc * 2;
		struct fetch_message *grown = realloc(answer->messages, alloc * sizeof(*grown));

		if (grown == NULL)
			return -1;
		answer->messages = grown;
		answer->message_alloc = alloc;
	}
	entry = &answer->messages[answer->message_count];
	*entry = (struct fetch_message){ .seq = seq, .uid = message->uid, .modseq = message->modseq,
					 .recent = message->recent };
	/* a copy: the view's may change while the answer is written */
	if (answer->reads_flags && message->flags != NULL && (entry->flags = strdup(message->flags)) == NULL)
		return -1;
	answer->message_count++;
	return message_mark_seen(answer, entry, facts, why_r);
}

/* The first sequence number whose UID is uid or more (count + 1: none). */
static uint32_t view_seq_at_uid(const struct mailbox_view *view, uint32_t uid)
{
	uint32_t low = 1, high = mailbox_view_count(view) + 1;

	while (low < high) {
		uint32_t middle = low + (high - low) / 2;

		if (mailbox_view_get(view, middle)->uid < uid)
			low = middle + 1;
		else
			high = middle;
	}
	return low;
}

/* Room for the messages of ranges (at most count, the mailbox's), so that
   a large answer is not grown a doubling at a time. Returns -1 when
   memory runs out. */
static int answer_reserve(struct fetch_answer *answer, const struct imap_seqset_range *ranges,
			  unsigned int range_count, uint32_t count)
{
	uint64_t wanted = 0;
	struct fetch_message *messages;

	for (unsigned int i = 0; i < range_count && wanted < count; i++)
		wanted += (uint64_t)ranges[i].last - ranges[i].first + 1;
	wanted = wanted < count ? wanted : count;
	if (wanted > FETCH_LOCAL_MAX_MESSAGES)
		wanted = FETCH_LOCAL_MAX_MESSAGES;
	if (wanted <= answer->message_alloc)
		return 0;
	messages = realloc(answer->messages, (size_t)wanted * sizeof(*messages));
	if (messages == NULL)
		return -1;
	answer->messages = messages;
	answer->message_alloc = (size_t)wanted;
	return 0;
}

/* The messages of the command's set, in ascending order. Returns as answer_add_message. */
static int answer_add_messages(struct fetch_answer *answer, const struct imap_command *command,
			       const struct fetch_facts *facts, const char **why_r)
{
	const struct mailbox_view *view = facts->view;
	uint32_t count = mailbox_view_count(view);
	bool uid = command->uid;
	struct imap_seqset_range *ranges;
	unsigned int range_count;
	int ret = 1;

	if (count == 0) {
		*why_r = "an empty mailbox";
		return 0;
	}
	if (command->u.fetch.set->saved) {
		*why_r = "a saved set ($)";
		return 0;
	}
	if (uid && mailbox_view_get(view, count)->uid == 0) {
		*why_r = "UID FETCH while a message's UID is not known";
		return 0;
	}
	ranges = imap_seqset_resolve(command->u.fetch.set, uid ? mailbox_view_max_uid(view) : count, &range_count);
	if (ranges == NULL || answer_reserve(answer, ranges, range_count, count) < 0) {
		free(ranges);
		return -1;
	}
	for (unsigned int i = 0; i < range_count && ret > 0; i++) {
		uint32_t seq = uid ? view_seq_at_uid(view, ranges[i].first) : ranges[i].first;
		uint32_t last = ranges[i].last;

		if (!uid && last > count) {
			*why_r = "a sequence number past the mailbox's last";
			ret = 0;
			break;
		}
		for (; seq <= count && ret > 0; seq++) {
			if (uid ? mailbox_view_get(view, seq)->uid > last : seq > last)
				break;
			ret = answer_add_message(answer, facts, seq, command, why_r);
		}
	}
	free(ranges);
	return ret;
}

/* ---- stored values ---- */

/* Frees what one message of a chunk holds: its values are one allocation
   (chunk_collect), starting at the first one's data. */
static void chunk_entry_clear(struct cache_message *entry)
{
	for (unsigned int item = 0; item < CACHE_VALUE_ITEMS; item++) {
		if (entry->values[item].data != NULL) {
			free(entry->values[item].data);
			break;
		}
	}
	for (unsigned int item = 0; item < CACHE_VALUE_ITEMS; item++)
		entry->values[item].data = NULL;
	cache_message_clear(entry); /* the body, if any */
}

static void chunk_clear(struct fetch_chunk *chunk)
{
	for (size_t i = 0; i < chunk->count; i++) {
		chunk_entry_clear(&chunk->stored[i]);
		if (chunk->fields != NULL)
			free(chunk->fields[i].data);
	}
	free(chunk->stored);
	free(chunk->fields);
	*chunk = (struct fetch_chunk){ 0 };
}

/* Takes over the body the lookup read and checked, within FETCH_KEPT_BODY_BYTES
   (the bytes move, no copy); else the writer reads it again. */
static void chunk_keep_body(struct fetch_chunk *chunk, const struct cache_message *message, struct cache_message *copy)
{
	size_t len = message->body != NULL ? evbuffer_get_length(message->body) : 0;

	if (message->body == NULL || chunk->without_values || len != message->message_size ||
	    len > FETCH_KEPT_BODY_BYTES - chunk->kept_body_bytes)
		return;
	copy->body = evbuffer_new();
	if (copy->body != NULL && evbuffer_add_buffer(copy->body, message->body) == 0) {
		chunk->kept_body_bytes += len;
		return;
	}
	if (copy->body != NULL)
		evbuffer_free(copy->body);
	copy->body = NULL;
}

/* Copies the wanted values of one message the lookup found. */
static void chunk_collect(const struct cache_message *message, void *context)
{
	struct fetch_answer *answer = context;
	struct fetch_chunk *chunk = &answer->chunk;
	struct cache_message *copy;
	unsigned char *block;
	size_t total = 0;

	while (chunk->cursor < chunk->count && answer->messages[chunk->first + chunk->cursor].uid < message->uid)
		chunk->cursor++;
	if (chunk->cursor == chunk->count || answer->messages[chunk->first + chunk->cursor].uid != message->uid)
		return;
	copy = &chunk->stored[chunk->cursor];
	*copy = *message;
	copy->body = NULL;
	copy->present &= ~(unsigned int)((1u << CACHE_VALUE_ITEMS) - 1) | chunk->wanted;
	chunk_keep_body(chunk, message, copy);
	/* the values in one allocation, in item order, each with a NUL after it */
	for (unsigned int item = 0; item < CACHE_VALUE_ITEMS; item++) {
		if ((copy->present & CACHE_HAS(item)) == 0 || chunk->without_values)
			copy->values[item] = (struct cache_value){ 0 };
		else
			total += copy->values[item].size + 1;
	}
	block = total > 0 ? malloc(total) : NULL;
	for (unsigned int item = 0; item < CACHE_VALUE_ITEMS; item++) {
		struct cache_value *value = &copy->values[item];

		if (value->data == NULL)
			continue;
		if (block == NULL) { /* out of memory: counts as missing */
			copy->present &= ~CACHE_HAS(item);
			value->data = NULL;
			continue;
		}
		memcpy(block, message->values[item].data, value->size);
		block[value->size] = '\0';
		value->data = block;
		block += value->size + 1;
	}
	if (total > 0 && block != NULL)
		chunk->kept_value_bytes += total;
}

/* Starts an empty chunk for messages [first, first + count). Returns -1
   when memory runs out. */
static int chunk_start(struct fetch_answer *answer, size_t first, size_t count, bool without_values)
{
	struct fetch_chunk *chunk = &answer->chunk;

	chunk_clear(chunk);
	chunk->stored = calloc(count > 0 ? count : 1, sizeof(*chunk->stored));
	if (answer->fields_item != NULL)
		chunk->fields = calloc(count > 0 ? count : 1, sizeof(*chunk->fields));
	if (chunk->stored == NULL || (answer->fields_item != NULL && chunk->fields == NULL))
		return -1;
	chunk->first = first;
	chunk->count = count;
	chunk->wanted = answer->wanted;
	chunk->without_values = without_values;
	return 0;
}

/* Grows a chunk started at message 0 to cover messages [0, count), its
   new entries empty: the plan sizes its chunk for what it reads, where one
   for the whole answer at once was 2 MB of zeroed entries for 10,000
   messages (2 ms of page faults before the first line), most of them
   never read when the tables of keys prove the rest. Returns -1 when
   memory runs out. */
static int chunk_extend(struct fetch_chunk *chunk, size_t count)
{
	size_t old = chunk->count;
	struct cache_message *stored;
	struct cache_value *fields;

	assert(chunk->first == 0);
	if (count <= old)
		return 0;
	stored = realloc(chunk->stored, count * sizeof(*stored));
	if (stored == NULL)
		return -1;
	memset(stored + old, 0, (count - old) * sizeof(*stored));
	chunk->stored = stored;
	if (chunk->fields != NULL) {
		fields = realloc(chunk->fields, count * sizeof(*fields));
		if (fields == NULL)
			return -1;
		memset(fields + old, 0, (count - old) * sizeof(*fields));
		chunk->fields = fields;
	}
	chunk->count = count;
	return 0;
}

/* Looks up the stored values of the chunk's messages [from, from + count)
   (with without_values, only which are present). Returns -1 on a store
   error or when memory runs out. */
static int chunk_lookup(struct fetch_answer *answer, size_t from, size_t count)
{
	struct fetch_chunk *chunk = &answer->chunk;
	uint32_t *uids = malloc((count > 0 ? count : 1) * sizeof(*uids));
	long found;

	if (uids == NULL)
		return -1;
	assert(from >= chunk->first && from + count <= chunk->first + chunk->count);
	chunk->cursor = from - chunk->first;
	for (size_t i = 0; i < count; i++)
		uids[i] = answer->messages[from + i].uid;
	found = cache_lookup_values(answer->cache, answer->mailbox_id, uids, count, chunk->wanted, chunk_collect,
				    answer);
	free(uids);
	return found < 0 ? -1 : 0;
}

/* Looks up messages [first, first + count) into a new chunk. Returns -1
   on a store error or when memory runs out. */
static int chunk_load(struct fetch_answer *answer, size_t first, size_t count, bool without_values)
{
	if (chunk_start(answer, first, count, without_values) < 0)
		return -1;
	return chunk_lookup(answer, first, count);
}

/* Frees what the chunk holds of messages [from, from + count). */
static void chunk_drop(struct fetch_chunk *chunk, size_t from, size_t count)
{
	for (size_t i = from - chunk->first; i < from - chunk->first + count; i++) {
		chunk_entry_clear(&chunk->stored[i]);
		if (chunk->fields != NULL) {
			free(chunk->fields[i].data);
			chunk->fields[i] = (struct cache_value){ 0 };
		}
	}
}

/* ---- the plan ---- */

/* Whether what item needs of a message is stored (present: CACHE_HAS
   bits); whether it derives is fetch_message_check's. */
bool fetch_item_is_stored(const struct fetch_item *item, unsigned int present)
{
	switch (item->kind) {
	case FETCH_KIND_UID:
	case FETCH_KIND_FLAGS:
	case FETCH_KIND_MODSEQ:
	case FETCH_KIND_BINARY_SIZE:
	case FETCH_KIND_PREVIEW:
		return true;
	case FETCH_KIND_INTERNALDATE:
		return (present & CACHE_HAS(CACHE_ITEM_INTERNALDATE)) != 0;
	case FETCH_KIND_SIZE:
		return (present & (CACHE_HAS(CACHE_ITEM_SIZE) | CACHE_HAS(CACHE_ITEM_MESSAGE))) != 0;
	case FETCH_KIND_ENVELOPE:
		return (present & CACHE_HAS(CACHE_ITEM_ENVELOPE)) != 0;
	case FETCH_KIND_BODY:
		return (present & CACHE_HAS(CACHE_ITEM_BODY)) != 0;
	case FETCH_KIND_BODYSTRUCTURE:
		return (present & CACHE_HAS(CACHE_ITEM_BODYSTRUCTURE)) != 0;
	default:
		if (item->source == FETCH_SOURCE_HEADER || item->source == FETCH_SOURCE_FIELDS)
			return (present & (CACHE_HAS(CACHE_ITEM_HEADER) | CACHE_HAS(CACHE_ITEM_MESSAGE))) != 0;
		return (present & CACHE_HAS(CACHE_ITEM_MESSAGE)) != 0;
	}
}

/* What the fetch of missing messages asks for, in this order (indexes
   of answer->missing_asks). */
enum fetch_ask {
	FETCH_ASK_INTERNALDATE,
	FETCH_ASK_SIZE,
	FETCH_ASK_ENVELOPE,
	FETCH_ASK_BODY,
	FETCH_ASK_BODYSTRUCTURE,
	FETCH_ASK_HEADER,
	FETCH_ASK_MESSAGE,
	FETCH_ASK_MODSEQ,   /* with RFC822.SIZE before it: a line "(UID u MODSEQ" could be an update */
	FETCH_ASK_NONE,
};
static const char *const fetch_ask_text[FETCH_ASK_NONE] = {
	"INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY", "BODYSTRUCTURE", "BODY.PEEK[HEADER]", "BODY.PEEK[]",
	"MODSEQ",
};
#define FETCH_ASKS_LIGHT (1u << FETCH_ASK_SIZE | 1u << FETCH_ASK_MODSEQ) /* a few dozen bytes a message */

/* What the fetch of a message that lacks item asks for. */
static enum fetch_ask item_ask(const struct fetch_item *item)
{
	switch (item->kind) {
	case FETCH_KIND_UID:
	case FETCH_KIND_FLAGS:
	case FETCH_KIND_BINARY_SIZE:
	case FETCH_KIND_PREVIEW:
		return FETCH_ASK_NONE;
	case FETCH_KIND_MODSEQ:
		return FETCH_ASK_MODSEQ;
	case FETCH_KIND_INTERNALDATE:
		return FETCH_ASK_INTERNALDATE;
	case FETCH_KIND_SIZE:
		return FETCH_ASK_SIZE;
	case FETCH_KIND_ENVELOPE:
		return FETCH_ASK_ENVELOPE;
	case FETCH_KIND_BODY:
		return FETCH_ASK_BODY;
	case FETCH_KIND_BODYSTRUCTURE:
		return FETCH_ASK_BODYSTRUCTURE;
	default:
		return item->source == FETCH_SOURCE_HEADER || item->source == FETCH_SOURCE_FIELDS ? FETCH_ASK_HEADER :
														FETCH_ASK_MESSAGE;
	}
}

/* Whether item is the header block, a part of it or what follows it:
   local from a stored header block even where our library reads the
   message otherwise. */
static bool item_reads_header(const struct fetch_item *item)
{
	return item->source == FETCH_SOURCE_HEADER || item->source == FETCH_SOURCE_FIELDS ||
	       item->source == FETCH_SOURCE_TEXT;
}

/* What the message lacks of the answer's items, 1 << enum fetch_ask each,
   given what the store holds of it (present, and whether its structure
   agrees); *light_r gets the asks that cost a few bytes a message. */
static unsigned int message_asks(const struct fetch_answer *answer, const struct fetch_message *message,
				 unsigned int present, bool agrees, unsigned int *light_r)
{
	unsigned int asks = 0;
	bool whole_only = (present & (CACHE_HAS(CACHE_ITEM_HEADER) | CACHE_HAS(CACHE_ITEM_MESSAGE))) ==
			  CACHE_HAS(CACHE_ITEM_MESSAGE);

	*light_r = FETCH_ASKS_LIGHT;
	for (unsigned int i = 0; i < answer->item_count; i++) {
		if (answer->items[i].kind == FETCH_KIND_MODSEQ ? message->modseq == 0 :
								   !fetch_item_is_stored(&answer->items[i], present)) {
			asks |= 1u << item_ask(&answer->items[i]);
		} else if (item_reads_header(&answer->items[i]) && !agrees && whole_only) {
			/* its header block, stored and reused: a few hundred bytes, cheaper than spliced */
			asks |= 1u << FETCH_ASK_HEADER;
			*light_r |= 1u << FETCH_ASK_HEADER;
		}
	}
	return asks;
}

/* Whether a message that lacks asks can get them by a fetch: a whole
   message only when its size is known and small enough to be stored. */
static bool message_asks_fetchable(unsigned int asks, unsigned int present, uint64_t size,
				   const struct fetch_facts *facts)
{
	return (asks & (1u << FETCH_ASK_MESSAGE)) == 0 ||
	       ((present & CACHE_HAS(CACHE_ITEM_SIZE)) != 0 && size <= facts->body_max_size);
}

/* Whether the message of stored lacks what the answer needs and can get
   it by a fetch (message_asks_fetchable): then it is marked missing. */
static bool message_mark_missing(struct fetch_answer *answer, struct fetch_message *message,
				 const struct cache_message *stored, const struct fetch_facts *facts)
{
	unsigned int present = stored->uid != 0 ? stored->present : 0, light;
	bool agrees = (present & CACHE_HAS(CACHE_ITEM_STRUCTURE_AGREES)) != 0 && stored->structure_agrees;
	unsigned int asks = message_asks(answer, message, present, agrees, &light);

	if (asks == 0 || !facts->fill_missing)
		return false;
	if ((asks & ~(1u << FETCH_ASK_MODSEQ)) != 0)
		answer->missing_beyond_modseq = true;
	if (!message_asks_fetchable(asks, present, stored->size, facts))
		return false;
	if ((asks & (1u << FETCH_ASK_MODSEQ)) != 0)
		asks |= 1u << FETCH_ASK_SIZE; /* the line then starts "(UID u RFC822.SIZE": the proxy's own */
	if ((asks & (1u << FETCH_ASK_MESSAGE)) != 0) {
		/* a whole message serves derived items only once its structure
		   is known to agree, and its text after a header block kept apart */
		asks |= 1u << FETCH_ASK_BODYSTRUCTURE | 1u << FETCH_ASK_HEADER;
	}
	message->missing = true;
	answer->missing_count++;
	if ((asks & ~light) != 0)
		answer->missing_heavy_count++;
	answer->missing_asks |= asks;
	return true;
}

/* Whether checking an item reads a stored value's bytes (the header
   block), not only whether it is there. */
static bool plan_check_reads_values(const struct fetch_answer *answer)
{
	for (unsigned int i = 0; i < answer->item_count; i++) {
		if (answer->items[i].source == FETCH_SOURCE_FIELDS || answer->items[i].source == FETCH_SOURCE_TEXT)
			return true;
	}
	return false;
}

/* The tables of keys that prove an answer's stored items for the
   messages past its first FETCH_CHECKED_FIRST; UID, FLAGS and MODSEQ
   the view proves. */
#define PROVE_FIXED 1u        /* INTERNALDATE, RFC822.SIZE, ENVELOPE, BODYSTRUCTURE: messages_fixed */
#define PROVE_PLAIN_HEADER 2u /* BODY[HEADER], RFC822.HEADER, HEADER.FIELDS (.NOT): messages_plain_header */

/* Which tables prove the answer's items (an answer of the view's items
   alone asks messages_fixed, as it always did); 0 when some item is
   proven by none. */
static unsigned int plan_items_provers(const struct fetch_answer *answer)
{
	unsigned int provers = 0;

	for (unsigned int i = 0; i < answer->item_count; i++) {
		const struct fetch_item *item = &answer->items[i];

		switch (item->kind) {
		case FETCH_KIND_UID:
		case FETCH_KIND_FLAGS:
		case FETCH_KIND_MODSEQ:
			break;
		case FETCH_KIND_INTERNALDATE:
		case FETCH_KIND_SIZE:
		case FETCH_KIND_ENVELOPE:
		case FETCH_KIND_BODYSTRUCTURE:
			provers |= PROVE_FIXED;
			break;
		default:
			/* the message's own header block (a part's is FETCH_SOURCE_PART) */
			if (item->source != FETCH_SOURCE_HEADER && item->source != FETCH_SOURCE_FIELDS)
				return 0;
			provers |= PROVE_PLAIN_HEADER;
			break;
		}
	}
	return answer->item_count == 0 ? 0 : provers != 0 ? provers : PROVE_FIXED;
}

struct key_walk {
	const struct fetch_answer *answer;
	size_t next; /* the first message not found yet */
};

static void key_walk_step(uint32_t uid, void *context)
{
	struct key_walk *walk = context;

	if (walk->next < walk->answer->message_count && walk->answer->messages[walk->next].uid == uid)
		walk->next++;
}

/* Whether the table of keys prover lists every message [from, ...). */
static bool plan_prove_by(const struct fetch_answer *answer, size_t from, unsigned int prover)
{
	struct key_walk walk = { .answer = answer, .next = from };
	uint32_t first = answer->messages[from].uid, last = answer->messages[answer->message_count - 1].uid;
	long found = prover == PROVE_FIXED ?
			     cache_lookup_fixed(answer->cache, answer->mailbox_id, first, last, key_walk_step, &walk) :
			     cache_lookup_plain_headers(answer->cache, answer->mailbox_id, first, last, key_walk_step,
							&walk);

	return found >= 0 && walk.next == answer->message_count;
}

/* Whether messages [from, ...) all have what the answer's items need:
   FLAGS and MODSEQ from the view, the others stored, as the tables of
   provers tell. Their values are read as they are written. */
static bool plan_prove_rest(const struct fetch_answer *answer, size_t from, unsigned int provers)
{
	bool modseq = false;

	for (unsigned int i = 0; i < answer->item_count; i++)
		modseq |= answer->items[i].kind == FETCH_KIND_MODSEQ;
	for (size_t i = from; i < answer->message_count; i++) {
		if ((answer->has_flags_item && answer->messages[i].flags == NULL) ||
		    (modseq && answer->messages[i].modseq == 0))
			return false;
	}
	return ((provers & PROVE_FIXED) == 0 || plan_prove_by(answer, from, PROVE_FIXED)) &&
	       ((provers & PROVE_PLAIN_HEADER) == 0 || plan_prove_by(answer, from, PROVE_PLAIN_HEADER));
}

/* The splice step ended part-way (facts->splice_cut): the answer ends
   with message index, cut before the first item it lacks. */
static void plan_cut_at(struct fetch_answer *answer, size_t index, uint64_t lacking)
{
	unsigned int item = 0;

	while ((lacking & ((uint64_t)1 << item)) == 0)
		item++;
	answer->cut = true;
	answer->cut_item = item;
	for (size_t i = index + 1; i < answer->message_count; i++)
		free(answer->messages[i].flags);
	answer->message_count = index + 1;
}

#define FETCH_PRESENCE_DENSE_FACTOR 4 /* UIDs covering a quarter of their span at least: the presence read */

/* A walk over what the store holds of the answer's messages, in UID
   order as the answer's are: how many lack more than light items. */
struct presence_walk {
	const struct fetch_answer *answer;
	const struct fetch_facts *facts;
	size_t next;  /* the first message not reached yet */
	size_t heavy; /* of the messages reached */
};

/* Whether a message the store holds present of (0: nothing) would be
   marked missing of more than light items (plan_mostly_missing asks
   only with facts->fill_missing). */
static bool presence_is_heavy(const struct presence_walk *walk, const struct fetch_message *message,
			      unsigned int present, uint64_t size)
{
	unsigned int light;
	unsigned int asks = message_asks(walk->answer, message, present, true, &light);

	return message_asks_fetchable(asks, present, size, walk->facts) && (asks & ~light) != 0;
}

static void presence_walk_step(const struct cache_presence *presence, void *context)
{
	struct presence_walk *walk = context;
	const struct fetch_answer *answer = walk->answer;

	for (; walk->next < answer->message_count && answer->messages[walk->next].uid < presence->uid; walk->next++)
		walk->heavy += presence_is_heavy(walk, &answer->messages[walk->next], 0, 0);
	if (walk->next < answer->message_count && answer->messages[walk->next].uid == presence->uid)
		walk->heavy += presence_is_heavy(walk, &answer->messages[walk->next++], presence->present,
						 presence->size);
}

/* Whether most of a large answer's messages lack more than light items
   by what the store says it holds, no value read: a cold or half-filled
   store then sends the FETCH upstream without first reading thousands
   of values in one loop turn (10 ms and more for 10,000 messages, every
   other session's wait). The values, when read, could only show more
   missing (a damaged one), so the route is the one the full check would
   take. Asked only when most of the first messages checked lack more
   than light items: the read costs 6 ms for 10,000 messages, which an
   answer from a warm store does not pay; and only for UIDs dense enough
   in their span (FETCH_PRESENCE_DENSE_FACTOR) that the rows read between
   them are not the cost: a CHANGEDSINCE answer spread over a large
   mailbox is checked chunk by chunk. */
static bool plan_mostly_missing(const struct fetch_answer *answer, const struct fetch_facts *facts)
{
	struct presence_walk walk = { .answer = answer, .facts = facts };

	if (answer->message_count <= FETCH_LOOKUP_CHUNK || !facts->fill_missing ||
	    (uint64_t)(answer->messages[answer->message_count - 1].uid - answer->messages[0].uid) >=
		    (uint64_t)answer->message_count * FETCH_PRESENCE_DENSE_FACTOR)
		return false;
	if (cache_lookup_presence(answer->cache, answer->mailbox_id, answer->messages[0].uid,
				  answer->messages[answer->message_count - 1].uid, presence_walk_step, &walk) < 0)
		return false; /* the full check meets the same error */
	for (; walk.next < answer->message_count; walk.next++)
		walk.heavy += presence_is_heavy(&walk, &answer->messages[walk.next], 0, 0);
	return walk.heavy * 2 > answer->message_count;
}

/* Checks every message of the answer against the store, a lookup per
   FETCH_LOOKUP_CHUNK messages. The values read are kept for the writer,
   which then reads the store no second time, while they stay within
   FETCH_KEPT_VALUE_BYTES; past it, the rest are dropped once checked and
   read again as they are written. An answer of items the tables of keys
   prove (plan_items_provers: the fixed items, the header block and its
   fields) is checked value by value for its first FETCH_CHECKED_FIRST
   messages; the rest, when the tables vouch for them all, are checked
   as they are written, so that the first lines go out at once. */
static int plan_check_messages(struct fetch_answer *answer, const struct fetch_facts *facts, const char **why_r)
{
	struct fetch_chunk *chunk = &answer->chunk;
	size_t kept_end = 0, count;
	/* The tables vouch while a damaged value found can be dropped (and
	   its key with it); with writes off, one would end every answer that
	   reaches it: then every message is checked before the first line. */
	unsigned int provers = answer->message_count > FETCH_CHECKED_FIRST && !cache_writes_off(answer->cache) ?
				       plan_items_provers(answer) : 0;
	bool keeping = true, fixed = provers != 0;

	if (chunk_start(answer, 0, fixed ? FETCH_CHECKED_FIRST : answer->message_count, false) < 0)
		return -1;
	for (size_t first = 0; first < answer->message_count; first += count) {
		count = answer->message_count - first < FETCH_LOOKUP_CHUNK ? answer->message_count - first :
									       FETCH_LOOKUP_CHUNK;
		if (fixed && first == 0)
			count = FETCH_CHECKED_FIRST;
		else if (fixed && first == FETCH_CHECKED_FIRST && kept_end == first &&
			 plan_prove_rest(answer, first, provers))
			break;
		if (chunk_extend(chunk, first + count) < 0)
			return -1;
		if (chunk_lookup(answer, first, count) < 0) {
			*why_r = "the store could not be read";
			return 0;
		}
		for (size_t i = first; i < first + count; i++) {
			struct fetch_message *message = &answer->messages[i];
			struct fetch_source source = { .answer = answer, .message = message, .stored = &chunk->stored[i],
						       .fields = chunk->fields != NULL ? &chunk->fields[i] : NULL };
			uint64_t spliced = 0;
			bool ok = message_mark_missing(answer, message, &chunk->stored[i], facts) ||
				  (chunk->stored[i].uid != 0 && fetch_message_check(&source, &spliced, why_r));

			if (chunk->stored[i].uid == 0)
				*why_r = "a message the store has nothing of";
			fetch_source_clear(&source);
			if (!ok)
				return 0;
			if (spliced != 0 && facts->splice_cut) {
				plan_cut_at(answer, i, spliced);
				chunk_drop(chunk, i + 1, first + count - (i + 1)); /* the values read past the cut */
				count = i + 1 - first;
				break;
			}
			message->spliced = spliced;
			if (spliced != 0 && answer->spliced_count++ == 0)
				answer->splice_why = *why_r;
		}
		if (first == 0 && answer->missing_heavy_count * 2 > count && plan_mostly_missing(answer, facts)) {
			*why_r = "most of its messages are not stored";
			return 0;
		}
		if (keeping && chunk->kept_value_bytes + chunk->kept_body_bytes <= FETCH_KEPT_VALUE_BYTES) {
			kept_end = first + count;
		} else {
			keeping = false;
			chunk_drop(chunk, first, count);
			chunk->without_values = !plan_check_reads_values(answer);
		}
	}
	chunk->count = kept_end; /* the messages past it hold nothing now */
	if (kept_end == 0)
		chunk_clear(chunk);
	if (answer->missing_heavy_count * 2 > answer->message_count) {
		*why_r = "most of its messages are not stored";
		return 0;
	}
	return 1;
}

/* Whether the command's modifiers allow a local answer. */
static bool plan_modifiers_local(const struct imap_command *command, const struct fetch_facts *facts,
				 const char **why_r)
{
	if (command->arg_count < 3)
		return true;
	if (command->args[1].type != IMAP_ARG_LIST && command->u.fetch.attr_count == 1 &&
	    (command->u.fetch.attrs[0].type == IMAP_FETCH_ATTR_BODY_SECTION ||
	     command->u.fetch.attrs[0].type == IMAP_FETCH_ATTR_BINARY_SECTION ||
	     command->u.fetch.attrs[0].type == IMAP_FETCH_ATTR_BINARY_SIZE ||
	     command->u.fetch.attrs[0].type == IMAP_FETCH_ATTR_PREVIEW)) {
		/* Dovecot 2.3 misreads "BODY[...] (CHANGEDSINCE n)": a BAD, or
		   nothing; "PREVIEW (...)" are PREVIEW's own modifiers (RFC 8970):
		   "'CHANGEDSINCE' is not a supported PREVIEW modifier" */
		*why_r = "a section item or PREVIEW not in parentheses before modifiers";
		return false;
	}
	if (command->u.fetch.vanished && (!command->uid || !facts->qresync)) {
		/* Dovecot's BAD */
		*why_r = "the VANISHED modifier of a FETCH by number, or before the client enabled QRESYNC";
		return false;
	}
	if (!command->u.fetch.changedsince_given || command->args[2].type != IMAP_ARG_LIST ||
	    command->args[2].list_count != (command->u.fetch.vanished ? 3u : 2u)) {
		*why_r = "FETCH modifiers other than one CHANGEDSINCE, and VANISHED";
		return false;
	}
	if (!facts->condstore) {
		*why_r = "CHANGEDSINCE before the client enabled CONDSTORE";
		return false;
	}
	return true;
}

/* Whether two items the upstream could be asked for alone answer under
   one name: "BODY[1]<0>" of <0.10> and of <0.20>, or BODY[] and RFC822. */
static bool splice_names_clash(const struct fetch_item *a, const struct fetch_item *b)
{
	return fetch_item_may_splice(a) && fetch_item_may_splice(b) &&
	       strcmp(fetch_item_splice_name(a), fetch_item_splice_name(b)) == 0;
}

/* Whether two such items ask the upstream for the same value under the
   same name (BODY.PEEK[] and BODY[], or RFC822: one literal of the same
   bytes): one captured value serves both. */
static bool splice_asks_same(const struct fetch_item *a, const struct fetch_item *b)
{
	return splice_names_clash(a, b) && a->has_partial == b->has_partial &&
	       (!a->has_partial ||
		(a->partial_offset == b->partial_offset && a->partial_length == b->partial_length));
}

/* Whether the items the upstream could be asked for alone answer under
   names of their own, or ask for the same value when they share one (a
   captured value then belongs to one item), and are few enough for a
   message's mask. */
static bool plan_splice_names_unique(const struct fetch_answer *answer)
{
	if (answer->item_count > FETCH_SPLICE_ITEMS_MAX)
		return false;
	for (unsigned int i = 0; i < answer->item_count; i++) {
		for (unsigned int j = 0; j < i; j++) {
			if (splice_names_clash(&answer->items[i], &answer->items[j]) &&
			    !splice_asks_same(&answer->items[i], &answer->items[j]))
				return false;
		}
	}
	return true;
}

/* Pins the answer's messages, so that no row it is to read goes before
   it is written (cache.h). 1, or -1 when memory runs out. */
static int answer_pin(struct fetch_answer *answer)
{
	uint32_t *uids = malloc((answer->message_count > 0 ? answer->message_count : 1) * sizeof(*uids));

	if (uids == NULL)
		return -1;
	for (size_t i = 0; i < answer->message_count; i++)
		uids[i] = answer->messages[i].uid;
	answer->pin = cache_pin_messages(answer->cache, answer->mailbox_id, uids, answer->message_count,
					 (answer->wanted & CACHE_HAS(CACHE_ITEM_MESSAGE)) != 0);
	free(uids);
	return answer->pin != NULL ? 1 : -1;
}

/* The VANISHED modifier: its step still to take, or what the upstream
   said in it kept for the writer. Returns 1, 0 when the upstream named
   other messages than the answer's (*why_r), -1 out of memory. */
static int plan_vanished(struct fetch_answer *answer, const struct fetch_facts *facts, const char **why_r)
{
	bool same = facts->vanished_uid_count == answer->message_count;

	if (!facts->vanished_known) {
		answer->needs_vanished = true;
		return 1;
	}
	for (size_t i = 0; same && i < answer->message_count; i++)
		same = answer->messages[i].uid == facts->vanished_uids[i];
	if (!same) {
		*why_r = "the upstream's CHANGEDSINCE named other messages than the view's MODSEQs";
		return 0;
	}
	if (facts->vanished_len == 0)
		return 1;
	answer->vanished = malloc(facts->vanished_len);
	if (answer->vanished == NULL)
		return -1;
	memcpy(answer->vanished, facts->vanished_lines, facts->vanished_len);
	answer->vanished_len = facts->vanished_len;
	return 1;
}

enum fetch_route fetch_plan(const struct imap_command *command, const struct fetch_facts *facts,
			    struct fetch_answer **answer_r, const char **why_r)
{
	struct fetch_answer *answer;
	int ret;

	*answer_r = NULL;
	*why_r = "out of memory";
	if (command->name != IMAP_COMMAND_FETCH || facts->cache == NULL || facts->view == NULL) {
		*why_r = "no store or no view";
		return FETCH_ROUTE_UPSTREAM;
	}
	if (!plan_modifiers_local(command, facts, why_r))
		return FETCH_ROUTE_UPSTREAM;
	answer = calloc(1, sizeof(*answer));
	if (answer == NULL)
		return FETCH_ROUTE_UPSTREAM;
	answer->cache = facts->cache;
	answer->mailbox_id = facts->mailbox_id;
	answer->read_only = facts->read_only;
	answer->binary_marked = facts->binary_marked;
	answer->binary_marked_uid = facts->binary_marked_uid;
	answer->condstore = facts->condstore;
	answer->qresync = facts->qresync;
	answer->vouched_modseq = facts->condstore ? facts->vouched_modseq : 0;
	answer->view = facts->view;
	ret = fetch_items_add(answer, command, facts, why_r);
	for (unsigned int i = 0; ret > 0 && i < answer->item_count; i++) {
		if (answer->fields_item == NULL && answer->items[i].source == FETCH_SOURCE_FIELDS)
			answer->fields_item = &answer->items[i];
		answer->sets_seen |= answer->items[i].sets_seen && !facts->read_only && !facts->peek_only;
		answer->has_flags_item |= answer->items[i].kind == FETCH_KIND_FLAGS;
		/* the spliced BINARY.SIZE leaves Dovecot a stream for BINARY[] */
		answer->binary_size_asked |= answer->items[i].kind == FETCH_KIND_BINARY_SIZE;
	}
	if (ret > 0 && plan_splice_names_unique(answer)) {
		answer->may_splice = facts->splice_allowed || facts->splice_cut;
		answer->splice = facts->splice;
	}
	answer->reads_flags = answer->has_flags_item || answer->sets_seen;
	if (ret > 0)
		ret = answer_add_messages(answer, command, facts, why_r);
	if (ret > 0)
		ret = plan_check_messages(answer, facts, why_r);
	if (ret > 0 && command->u.fetch.vanished)
		ret = plan_vanished(answer, facts, why_r);
	if (ret > 0)
		ret = answer_pin(answer);
	if (ret <= 0) {
		if (ret < 0)
			*why_r = "out of memory";
		fetch_answer_free(&answer);
		return FETCH_ROUTE_UPSTREAM;
	}
	*answer_r = answer;
	return FETCH_ROUTE_LOCAL;
}

/* ---- the writer ---- */

/* CACHE_HAS of the stored items a message's answer reads, for cache-stats. */
static unsigned int answer_read_items(const struct fetch_answer *answer)
{
	return answer->wanted; /* with CACHE_ITEM_MESSAGE for the items that read the body */
}

/* Adds the line written (with the body bytes pending before it) to out,
   counting a hit for each stored item it read. Returns 0, -1 when memory
   runs out. */
static int answer_line_add(struct fetch_answer *answer, struct evbuffer *out)
{
	size_t pending = answer->pending != NULL ? evbuffer_get_length(answer->pending) : 0;

	cache_stats_count_items(answer->cache, answer->mailbox_id, answer_read_items(answer), true,
				pending + answer->line.len);
	if (pending == 0)
		return evbuffer_add(out, answer->line.data, answer->line.len);
	if (evbuffer_add(answer->pending, answer->line.data, answer->line.len) < 0)
		return -1;
	return evbuffer_add_buffer(out, answer->pending);
}

enum fetch_write_result fetch_answer_write(struct fetch_answer *answer, struct evbuffer *out, size_t limit)
{
	size_t start = evbuffer_get_length(out);

	if (answer->vanished != NULL) { /* Dovecot's first line */
		if (evbuffer_add(out, answer->vanished, answer->vanished_len) < 0)
			return FETCH_WRITE_LOST;
		free(answer->vanished);
		answer->vanished = NULL;
	}
	while (answer->next < answer->message_count) {
		struct fetch_chunk *chunk = &answer->chunk;
		struct fetch_source source = { .answer = answer };
		struct mime_buffer *line = &answer->line;
		int ret;

		if (limit > 0 && evbuffer_get_length(out) - start >= limit)
			return FETCH_WRITE_MORE;
		if (chunk->stored == NULL || answer->next >= chunk->first + chunk->count) {
			size_t left = answer->message_count - answer->next;

			if (chunk_load(answer, answer->next, left < FETCH_LOOKUP_CHUNK ? left : FETCH_LOOKUP_CHUNK,
				       false) < 0)
				return FETCH_WRITE_LOST;
		}
		source.message = &answer->messages[answer->next];
		source.stored = &chunk->stored[answer->next - chunk->first];
		source.fields = chunk->fields != NULL ? &chunk->fields[answer->next - chunk->first] : NULL;
		mime_buffer_reset(line); /* one for every line, its memory reused */
		ret = source.stored->uid == 0 ? -1 : fetch_message_write(line, &source);
		fetch_source_clear(&source);
		ret = ret < 0 ? -1 : answer_line_add(answer, out);
		if (ret < 0 && answer->pending != NULL) /* whole lines only */
			evbuffer_drain(answer->pending, evbuffer_get_length(answer->pending));
		if (line->alloc > FETCH_LINE_KEPT_BYTES)
			mime_buffer_free(line);
		if (ret < 0)
			return FETCH_WRITE_LOST;
		answer->next++;
	}
	chunk_clear(&answer->chunk);
	fetch_write_seen_updates(answer, out);
	return FETCH_WRITE_DONE;
}

static bool message_is_missing(const struct fetch_message *message)
{
	return message->missing;
}

static bool message_is_unseen(const struct fetch_message *message)
{
	return message->unseen;
}

/* Room for count UIDs and sequence numbers in *uids_r and *seqs_r
   (both NULL when memory runs out: -1). */
static int collect_alloc(size_t count, uint32_t **uids_r, uint32_t **seqs_r)
{
	*uids_r = malloc(count * sizeof(**uids_r));
	*seqs_r = malloc(count * sizeof(**seqs_r));
	if (*uids_r != NULL && *seqs_r != NULL)
		return 0;
	free(*uids_r);
	free(*seqs_r);
	*uids_r = *seqs_r = NULL;
	return -1;
}

/* The UIDs and sequence numbers of the messages pick picks (malloc'd;
   NULL when none). Returns how many, -1 when memory runs out. */
static long answer_collect(const struct fetch_answer *answer, bool (*pick)(const struct fetch_message *message),
			   uint32_t **uids_r, uint32_t **seqs_r)
{
	size_t count = 0;

	*uids_r = *seqs_r = NULL;
	for (size_t i = 0; i < answer->message_count; i++)
		count += pick(&answer->messages[i]);
	if (count == 0)
		return 0;
	if (collect_alloc(count, uids_r, seqs_r) < 0)
		return -1;
	count = 0;
	for (size_t i = 0; i < answer->message_count; i++) {
		if (pick(&answer->messages[i])) {
			(*uids_r)[count] = answer->messages[i].uid;
			(*seqs_r)[count++] = answer->messages[i].seq;
		}
	}
	return (long)count;
}

/* The UIDs and sequence numbers of the view's messages with a UID and
   no MODSEQ (malloc'd; NULL when none). Returns how many, -1 when memory
   runs out. */
static long view_collect_without_modseq(const struct mailbox_view *view, uint32_t **uids_r, uint32_t **seqs_r)
{
	uint32_t total = mailbox_view_count(view);
	size_t count = 0;

	*uids_r = *seqs_r = NULL;
	for (uint32_t seq = 1; seq <= total; seq++) {
		const struct mailbox_view_message *message = mailbox_view_get(view, seq);

		count += message->uid != 0 && message->modseq == 0;
	}
	if (count == 0)
		return 0;
	if (collect_alloc(count, uids_r, seqs_r) < 0)
		return -1;
	count = 0;
	for (uint32_t seq = 1; seq <= total; seq++) {
		const struct mailbox_view_message *message = mailbox_view_get(view, seq);

		if (message->uid != 0 && message->modseq == 0) {
			(*uids_r)[count] = message->uid;
			(*seqs_r)[count++] = seq;
		}
	}
	return (long)count;
}

long fetch_answer_missing(const struct fetch_answer *answer, uint32_t **uids_r, uint32_t **seqs_r, char *items,
			  size_t size)
{
	size_t used;

	*uids_r = *seqs_r = NULL;
	if (answer->missing_count == 0)
		return 0;
	used = (size_t)snprintf(items, size, "UID");
	for (unsigned int ask = 0; ask < FETCH_ASK_NONE; ask++) {
		if ((answer->missing_asks & (1u << ask)) != 0)
			used += (size_t)snprintf(items + used, used < size ? size - used : 0, " %s", fetch_ask_text[ask]);
	}
	if (used >= size)
		return -1;
	if (fetch_answer_missing_changedsince(answer) != 0)
		return view_collect_without_modseq(answer->view, uids_r, seqs_r);
	return answer_collect(answer, message_is_missing, uids_r, seqs_r);
}

size_t fetch_answer_missing_count(const struct fetch_answer *answer)
{
	return answer->missing_count;
}

uint64_t fetch_answer_missing_changedsince(const struct fetch_answer *answer)
{
	/* with a held expunge the numberings differ: the answer's own messages only */
	if (answer->missing_count == 0 || answer->missing_beyond_modseq || answer->view == NULL ||
	    mailbox_view_has_held(answer->view))
		return 0;
	return answer->vouched_modseq;
}

/* ---- the splice step ---- */

/* Appends " " and what the upstream is asked for item alone, in its
   PEEK form. Returns -1 when memory runs out. */
static int splice_ask_add(struct evbuffer *out, const struct fetch_item *item)
{
	int ret;

	switch (item->kind) {
	case FETCH_KIND_RFC822:
		return evbuffer_add_printf(out, " BODY.PEEK[]") < 0 ? -1 : 0;
	case FETCH_KIND_RFC822_HEADER:
		return evbuffer_add_printf(out, " BODY.PEEK[HEADER]") < 0 ? -1 : 0;
	case FETCH_KIND_RFC822_TEXT:
		return evbuffer_add_printf(out, " BODY.PEEK[TEXT]") < 0 ? -1 : 0;
	case FETCH_KIND_BINARY_SIZE:
	case FETCH_KIND_PREVIEW:
		return evbuffer_add_printf(out, " %s", item->name) < 0 ? -1 : 0;
	default:
		ret = evbuffer_add_printf(out, " %s.PEEK[%s]", item->kind == FETCH_KIND_BINARY ? "BINARY" : "BODY",
					  item->section);
		if (ret >= 0 && item->has_partial)
			ret = evbuffer_add_printf(out, "<%" PRIu64 ".%" PRIu64 ">", item->partial_offset,
						  item->partial_length);
		return ret < 0 ? -1 : 0;
	}
}

/* Whether an item of mask before index asks for the same value. */
static bool splice_asked_before(const struct fetch_answer *answer, uint64_t mask, unsigned int index)
{
	for (unsigned int j = 0; j < index; j++) {
		if ((mask & ((uint64_t)1 << j)) != 0 && splice_asks_same(&answer->items[j], &answer->items[index]))
			return true;
	}
	return false;
}

/* The items text of a group: "UID" and each item of mask once. */
static char *splice_items_text(const struct fetch_answer *answer, uint64_t mask)
{
	struct evbuffer *out = evbuffer_new();
	char *text = NULL;
	int ret = out != NULL && evbuffer_add(out, "UID", 3) == 0 ? 0 : -1;

	for (unsigned int i = 0; ret == 0 && i < answer->item_count; i++) {
		if ((mask & ((uint64_t)1 << i)) != 0 && !splice_asked_before(answer, mask, i))
			ret = splice_ask_add(out, &answer->items[i]);
	}
	if (ret == 0 && evbuffer_add(out, "", 1) == 0 && (text = malloc(evbuffer_get_length(out))) != NULL)
		evbuffer_remove(out, text, evbuffer_get_length(out));
	if (out != NULL)
		evbuffer_free(out);
	return text;
}

/* Adds message to the group of its mask (a new one after count).
   Returns -1 when memory runs out. */
static int splice_group_add(struct fetch_splice_group *groups, uint64_t *masks, size_t *count,
			    const struct fetch_message *message, size_t message_count)
{
	size_t g = 0;

	while (g < *count && masks[g] != message->spliced)
		g++;
	if (g == *count) {
		groups[g] = (struct fetch_splice_group){ .uids = malloc(message_count * sizeof(uint32_t)),
							 .seqs = malloc(message_count * sizeof(uint32_t)) };
		masks[g] = message->spliced;
		(*count)++;
		if (groups[g].uids == NULL || groups[g].seqs == NULL)
			return -1;
	}
	groups[g].uids[groups[g].count] = message->uid;
	groups[g].seqs[groups[g].count++] = message->seq;
	return 0;
}

long fetch_answer_splice_groups(const struct fetch_answer *answer, struct fetch_splice_group **groups_r)
{
	struct fetch_splice_group *groups = calloc(FETCH_SPLICE_GROUPS_MAX + 1, sizeof(*groups));
	uint64_t masks[FETCH_SPLICE_GROUPS_MAX + 1];
	size_t count = 0;
	int ret = groups != NULL ? 0 : -1;

	*groups_r = NULL;
	for (size_t i = 0; ret == 0 && i < answer->message_count && count <= FETCH_SPLICE_GROUPS_MAX; i++) {
		if (answer->messages[i].spliced != 0)
			ret = splice_group_add(groups, masks, &count, &answer->messages[i], answer->spliced_count);
	}
	for (size_t g = 0; ret == 0 && g < count; g++) {
		if ((groups[g].items = splice_items_text(answer, masks[g])) == NULL)
			ret = -1;
	}
	if (ret < 0 || count == 0 || count > FETCH_SPLICE_GROUPS_MAX) {
		fetch_splice_groups_free(groups, count);
		return ret < 0 ? -1 : 0;
	}
	*groups_r = groups;
	return (long)count;
}

void fetch_splice_groups_free(struct fetch_splice_group *groups, size_t count)
{
	if (groups == NULL)
		return;
	for (size_t g = 0; g < count; g++) {
		free(groups[g].uids);
		free(groups[g].seqs);
		free(groups[g].items);
	}
	free(groups);
}

size_t fetch_answer_spliced_count(const struct fetch_answer *answer)
{
	return answer->spliced_count;
}

bool fetch_answer_splices_decoding_unseen(const struct fetch_answer *answer)
{
	uint64_t spliced = 0;
	bool unseen = false;

	for (size_t i = 0; i < answer->message_count; i++) {
		spliced |= answer->messages[i].spliced;
		unseen |= answer->messages[i].flags == NULL ||
			  !mailbox_view_flags_have(answer->messages[i].flags, "\\Seen", 5);
	}
	if (!unseen)
		return false;
	for (unsigned int i = 0; i < answer->item_count; i++) {
		if ((spliced & ((uint64_t)1 << i)) != 0 &&
		    (answer->items[i].kind == FETCH_KIND_BINARY || answer->items[i].kind == FETCH_KIND_BINARY_SIZE))
			return true;
	}
	return false;
}

bool fetch_answer_binary_last_local(const struct fetch_answer *answer)
{
	return answer->binary_last_local;
}

const char *fetch_answer_splice_why(const struct fetch_answer *answer)
{
	return answer->splice_why != NULL ? answer->splice_why : "not known";
}

void fetch_answer_adopt_splice(struct fetch_answer *answer, struct fetch_splice **splice)
{
	if (answer->splice == *splice && *splice != NULL) {
		answer->splice_owned = *splice;
		*splice = NULL;
	}
}

bool fetch_answer_needs_vanished(const struct fetch_answer *answer)
{
	return answer->needs_vanished;
}

bool fetch_answer_needs_seen(const struct fetch_answer *answer)
{
	for (size_t i = 0; i < answer->message_count; i++) {
		if (answer->messages[i].unseen)
			return true;
	}
	return false;
}

long fetch_answer_unseen(const struct fetch_answer *answer, uint32_t **uids_r, uint32_t **seqs_r)
{
	return answer_collect(answer, message_is_unseen, uids_r, seqs_r);
}

size_t fetch_answer_count(const struct fetch_answer *answer)
{
	return answer->message_count;
}

bool fetch_answer_cut_uid(const struct fetch_answer *answer, uint32_t *uid_r)
{
	if (!answer->cut || answer->message_count == 0)
		return false;
	*uid_r = answer->messages[answer->message_count - 1].uid;
	return true;
}

void fetch_answer_free(struct fetch_answer **answer_p)
{
	struct fetch_answer *answer = *answer_p;

	if (answer == NULL)
		return;
	*answer_p = NULL;
	cache_pin_release(answer->cache, &answer->pin);
	chunk_clear(&answer->chunk);
	fetch_splice_free(&answer->splice_owned);
	free(answer->vanished);
	mime_buffer_free(&answer->line);
	if (answer->pending != NULL)
		evbuffer_free(answer->pending);
	mime_buffer_free(&answer->scratch);
	if (answer->preview != NULL)
		evbuffer_free(answer->preview);
	for (unsigned int i = 0; i < answer->item_count; i++)
		fetch_item_free(&answer->items[i]);
	free(answer->items);
	for (size_t i = 0; i < answer->message_count; i++)
		free(answer->messages[i].flags);
	free(answer->messages);
	free(answer);
}

void fetch_write_tagged_ok(struct evbuffer *out, const char *tag)
{
	evbuffer_add_printf(out, "%s OK %s\r\n", tag, FETCH_OK_TEXT);
}
