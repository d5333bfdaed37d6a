/* SPDX-License-Identifier: MIT */
/* prefetch: the next batch a session fetches on its own for its selected mailbox: what the store lacks, newest first. */
#include "config.h"
#include "prefetch.h"
#include "cache.h"
#include "imap-seqset.h"
#include "mailbox-view.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The items the header walk makes sure of. */
#define PREFETCH_HEADER_HAS \
	(CACHE_HAS(CACHE_ITEM_INTERNALDATE) | CACHE_HAS(CACHE_ITEM_SIZE) | CACHE_HAS(CACHE_ITEM_ENVELOPE) | \
	 CACHE_HAS(CACHE_ITEM_BODYSTRUCTURE) | CACHE_HAS(CACHE_ITEM_HEADER))

enum prefetch_walk {
	PREFETCH_WALK_HEADERS,
	PREFETCH_WALK_BODIES,
	PREFETCH_WALK_DONE,
};

struct prefetch {
	enum prefetch_walk walk;
	uint32_t below_uid;       /* the walk goes on with the UIDs under this one */
	uint32_t top_uid;         /* the view's highest UID when the walks began */
	uint32_t unknown_asked;   /* the view's count when messages with no UID were last asked for */
	uint32_t batch_messages;  /* a batch's limits now (prefetch_batch_took) */
	uint64_t batch_bytes;
};

/* One store lookup's answers, for the messages of the view it covered. */
struct prefetch_scan {
	struct cache_presence *found;
	size_t count, alloc;
	bool failed;
};

struct prefetch *prefetch_new(void)
{
	struct prefetch *prefetch = calloc(1, sizeof(*prefetch));

	if (prefetch != NULL) {
		prefetch_restart(prefetch);
		prefetch->batch_messages = PREFETCH_BATCH_FIRST_MESSAGES;
		prefetch->batch_bytes = PREFETCH_BATCH_FIRST_BYTES;
	}
	return prefetch;
}

void prefetch_size_first(struct prefetch *prefetch, uint64_t bytes_per_sec)
{
	uint64_t bytes, messages;

	if (bytes_per_sec == 0)
		return;
	bytes = bytes_per_sec > UINT64_MAX / PREFETCH_BATCH_TRANSFER_USEC ?
			PREFETCH_BATCH_BYTES : bytes_per_sec * (PREFETCH_BATCH_TRANSFER_USEC * 3 / 4) / 1000000;
	bytes = bytes < PREFETCH_BATCH_MIN_BYTES ? PREFETCH_BATCH_MIN_BYTES :
		bytes > PREFETCH_BATCH_BYTES ? PREFETCH_BATCH_BYTES : bytes;
	messages = bytes * PREFETCH_BATCH_FIRST_MESSAGES / PREFETCH_BATCH_FIRST_BYTES;
	prefetch->batch_bytes = bytes;
	prefetch->batch_messages = messages < PREFETCH_BATCH_MIN_MESSAGES ? PREFETCH_BATCH_MIN_MESSAGES :
				   messages > PREFETCH_BATCH_MESSAGES ? PREFETCH_BATCH_MESSAGES : (uint32_t)messages;
}

void prefetch_batch_took(struct prefetch *prefetch, uint64_t usec)
{
	if (usec > PREFETCH_BATCH_TRANSFER_USEC) {
		prefetch->batch_messages = prefetch->batch_messages / 2 > PREFETCH_BATCH_MIN_MESSAGES ?
			prefetch->batch_messages / 2 : PREFETCH_BATCH_MIN_MESSAGES;
		prefetch->batch_bytes = prefetch->batch_bytes / 2 > PREFETCH_BATCH_MIN_BYTES ?
			prefetch->batch_bytes / 2 : PREFETCH_BATCH_MIN_BYTES;
	} else if (usec < PREFETCH_BATCH_TRANSFER_USEC / 2) {
		prefetch->batch_messages = prefetch->batch_messages * 2 < PREFETCH_BATCH_MESSAGES ?
			prefetch->batch_messages * 2 : PREFETCH_BATCH_MESSAGES;
		prefetch->batch_bytes = prefetch->batch_bytes * 2 < PREFETCH_BATCH_BYTES ?
			prefetch->batch_bytes * 2 : PREFETCH_BATCH_BYTES;
	}
}

void prefetch_free(struct prefetch **prefetch)
{
	free(*prefetch);
	*prefetch = NULL;
}

void prefetch_restart(struct prefetch *prefetch)
{
	prefetch->walk = PREFETCH_WALK_HEADERS;
	prefetch->below_uid = UINT32_MAX;
	prefetch->top_uid = 0;
}

static void prefetch_scan_add(const struct cache_presence *presence, void *context)
{
	struct prefetch_scan *scan = context;

	if (scan->count == scan->alloc) {
		size_t alloc = scan->alloc == 0 ? 256 : scan->alloc * 2;
		struct cache_presence *grown = realloc(scan->found, alloc * sizeof(*grown));

		if (grown == NULL) {
			scan->failed = true;
			return;
		}
		scan->found = grown;
		scan->alloc = alloc;
	}
	scan->found[scan->count++] = *presence;
}

/* The last sequence number whose UID is known and under uid (0: none). */
static uint32_t prefetch_seq_below(const struct mailbox_view *view, uint32_t uid)
{
	uint32_t low = 1, high = mailbox_view_count(view) + 1;

	while (low < high) {
		uint32_t middle = low + (high - low) / 2;
		uint32_t at = mailbox_view_get(view, middle)->uid;

		if (at != 0 && at < uid)
			low = middle + 1;
		else
			high = middle;
	}
	return low - 1;
}

/* What one batch has taken so far. */
struct prefetch_batch {
	uint32_t seqs[PREFETCH_BATCH_MESSAGES]; /* descending */
	size_t count;
	uint64_t bytes;           /* of whole messages */
	uint64_t stored;          /* what the store held of whole messages when it began */
	uint32_t max_count;       /* its limits (struct prefetch's now) */
	uint64_t max_bytes;
};

/* Whether the batch has room for more. */
static bool prefetch_batch_open(const struct prefetch_batch *batch)
{
	return batch->count < batch->max_count && batch->bytes < batch->max_bytes;
}

/* Whether the walk wants the message (presence NULL: nothing stored);
   counts its body's size in the batch when it is a body. */
static bool prefetch_wants(enum prefetch_walk walk, const struct prefetch_limits *limits,
			   struct prefetch_batch *batch, const struct cache_presence *presence)
{
	unsigned int present = presence != NULL ? presence->present : 0;

	if (walk == PREFETCH_WALK_HEADERS)
		return (present & PREFETCH_HEADER_HAS) != PREFETCH_HEADER_HAS;
	if ((present & CACHE_HAS(CACHE_ITEM_MESSAGE)) != 0 || (present & CACHE_HAS(CACHE_ITEM_SIZE)) == 0 ||
	    presence->size > limits->body_max_size ||
	    batch->stored + batch->bytes + presence->size > limits->body_budget)
		return false;
	batch->bytes += presence->size;
	return true;
}

/* Walks one chunk of the view down from seq: adds what the walk wants to
   the batch. Returns the sequence number below where it stopped, or -1
   when the store can't be read. */
static long prefetch_scan_chunk(struct prefetch *prefetch, const struct prefetch_limits *limits,
				struct cache *cache, int64_t mailbox_id, const struct mailbox_view *view, uint32_t seq,
				struct prefetch_batch *batch)
{
	uint32_t low = seq > PREFETCH_SCAN_CHUNK ? seq - PREFETCH_SCAN_CHUNK + 1 : 1;
	struct prefetch_scan scan = { 0 };
	size_t found;

	if (cache_lookup_presence(cache, mailbox_id, mailbox_view_get(view, low)->uid,
				  mailbox_view_get(view, seq)->uid, prefetch_scan_add, &scan) < 0 || scan.failed) {
		free(scan.found);
		return -1;
	}
	found = scan.count;
	for (; seq >= low && prefetch_batch_open(batch); seq--) {
		uint32_t uid = mailbox_view_get(view, seq)->uid;

		while (found > 0 && scan.found[found - 1].uid > uid)
			found--;
		if (prefetch_wants(prefetch->walk, limits, batch,
				   found > 0 && scan.found[found - 1].uid == uid ? &scan.found[found - 1] : NULL))
			batch->seqs[batch->count++] = seq;
		prefetch->below_uid = uid;
	}
	free(scan.found);
	return seq;
}

/* Writes the command for count sequence numbers (descending) into buf. */
static int prefetch_write(enum prefetch_walk walk, uint32_t *seqs, size_t count, char *buf, size_t size)
{
	const char *items = walk == PREFETCH_WALK_HEADERS ? PREFETCH_HEADER_ITEMS : PREFETCH_BODY_ITEMS;
	int used;
	size_t set_len;

	for (size_t i = 0; i < count / 2; i++) {
		uint32_t swap = seqs[i];

		seqs[i] = seqs[count - 1 - i];
		seqs[count - 1 - i] = swap;
	}
	used = snprintf(buf, size, " FETCH ");
	if (used < 0 || (size_t)used >= size)
		return -1;
	set_len = imap_seqset_format(buf + used, size - (size_t)used, seqs, count);
	if ((size_t)used + set_len + strlen(items) + 4 > size)
		return -1;
	snprintf(buf + used + set_len, size - (size_t)used - set_len, " %s\r\n", items);
	return 1;
}

/* How many of the newest messages have no UID known yet (an EXISTS
   told of them; the store can't hold anything of them yet), unless they
   were asked for already at this count (an answer that taught nothing
   is not asked for again until the mailbox grows). */
static uint32_t prefetch_unknown_tail(const struct prefetch *prefetch, const struct mailbox_view *view)
{
	uint32_t count = mailbox_view_count(view), seq = count;

	if (count == prefetch->unknown_asked)
		return 0;
	while (seq >= 1 && mailbox_view_get(view, seq)->uid == 0)
		seq--;
	return count - seq;
}

bool prefetch_may_have_work(const struct prefetch *prefetch, const struct mailbox_view *view)
{
	return prefetch->walk != PREFETCH_WALK_DONE || mailbox_view_max_uid(view) > prefetch->top_uid ||
	       prefetch_unknown_tail(prefetch, view) > 0;
}

/* The newest messages with no UID known: their header items first (the
   batch's answer tells their UIDs). */
static void prefetch_take_unknown(struct prefetch *prefetch, const struct mailbox_view *view,
				  struct prefetch_batch *batch)
{
	uint32_t count = mailbox_view_count(view), tail = prefetch_unknown_tail(prefetch, view);

	prefetch->unknown_asked = count;
	for (uint32_t seq = count; seq > count - tail && prefetch_batch_open(batch); seq--)
		batch->seqs[batch->count++] = seq;
}

int prefetch_next(struct prefetch *prefetch, const struct prefetch_limits *limits, struct cache *cache,
		  int64_t mailbox_id, const struct mailbox_view *view, char *buf, size_t size)
{
	struct prefetch_batch batch = { .stored = cache_body_bytes(cache), .max_count = prefetch->batch_messages,
					.max_bytes = prefetch->batch_bytes };
	uint32_t max_uid = mailbox_view_max_uid(view);

	if (prefetch_unknown_tail(prefetch, view) > 0 && limits->mode != CONF_PREFETCH_OFF && !cache_writes_off(cache)) {
		prefetch_take_unknown(prefetch, view, &batch);
		return prefetch_write(PREFETCH_WALK_HEADERS, batch.seqs, batch.count, buf, size);
	}
	if (limits->mode == CONF_PREFETCH_OFF || cache_writes_off(cache) || max_uid == 0) {
		/* nothing to do now: the walk is over until new messages come,
		   or an idling client would be paused again and again */
		prefetch->walk = PREFETCH_WALK_DONE;
		prefetch->top_uid = max_uid;
		return 0;
	}
	if (max_uid > prefetch->top_uid) {
		/* new messages (or a new walk): from the top again */
		prefetch_restart(prefetch);
		prefetch->top_uid = max_uid;
	}
	while (prefetch->walk != PREFETCH_WALK_DONE && batch.count == 0) {
		uint32_t seq = prefetch_seq_below(view, prefetch->below_uid);

		while (seq >= 1 && prefetch_batch_open(&batch)) {
			long below = prefetch_scan_chunk(prefetch, limits, cache, mailbox_id, view, seq, &batch);

			if (below < 0)
				return -1;
			seq = (uint32_t)below;
		}
		if (batch.count == 0) {
			/* this walk is done: the next one from the top */
			prefetch->walk = prefetch->walk == PREFETCH_WALK_HEADERS && limits->mode == CONF_PREFETCH_FULL ?
				PREFETCH_WALK_BODIES : PREFETCH_WALK_DONE;
			prefetch->below_uid = UINT32_MAX;
		}
	}
	if (batch.count == 0)
		return 0;
	return prefetch_write(prefetch->walk, batch.seqs, batch.count, buf, size);
}

bool prefetch_is_own_line(const unsigned char *data, size_t len)
{
	static const char own[] = " FETCH (UID ";
	size_t pos = 2;

	if (len < 2 || data[0] != '*' || data[1] != ' ')
		return false;
	while (pos < len && data[pos] >= '0' && data[pos] <= '9')
		pos++;
	if (len - pos < sizeof(own) - 1 || memcmp(data + pos, own, sizeof(own) - 1) != 0)
		return false;
	pos += sizeof(own) - 1;
	while (pos < len && data[pos] >= '0' && data[pos] <= '9')
		pos++;
	/* a data item after the UID: not an update's FLAGS or MODSEQ, nor the end */
	if (len - pos < 2 || data[pos] != ' ' || data[pos + 1] == ')')
		return false;
	pos++;
	return !(len - pos >= 6 && memcmp(data + pos, "FLAGS ", 6) == 0) &&
	       !(len - pos >= 7 && memcmp(data + pos, "MODSEQ ", 7) == 0);
}
