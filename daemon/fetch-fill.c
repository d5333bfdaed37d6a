/* SPDX-License-Identifier: MIT */
/* fetch-fill: stores what the untagged FETCH lines passing to a client carry, at no extra traffic. */
#include "config.h"
#include "fetch-fill.h"

#include "cache-stats.h"
#include "cache.h"
#include "log.h"
#include "mailbox-view.h"
#include "mime-buffer.h"
#include "mime-imap.h"
#include "mime-message.h"
#include "mime-parser.h"

#include <event2/buffer.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* What a line carried, each kept until the line ends. */
enum fill_value {
	FILL_INTERNALDATE,
	FILL_ENVELOPE,
	FILL_BODYSTRUCTURE,
	FILL_BODY,
	FILL_HEADER,
	FILL_FLAGS,
	FILL_MESSAGE,   /* a whole message small enough to come whole */
	FILL_PREVIEW,   /* as written: a quoted string or a literal */
	FILL_VALUES
};

struct fill_bytes {
	unsigned char *data;
	size_t len;
	bool present;
};

struct fetch_fill {
	struct imap_fetch_items *splitter;
	struct cache *cache;
	int64_t mailbox_id;
	struct mailbox_view *view;

	/* The current line. */
	uint32_t seq;                 /* the upstream's number */
	uint32_t uid;                 /* its UID item; 0: none yet */
	struct fill_bytes values[FILL_VALUES];
	bool has_size, has_modseq;
	uint64_t size, modseq;
	bool failed;                  /* out of memory: store nothing of the line */
	struct cache_body_writer *writer; /* a whole message streaming into the store */
	uint32_t writer_uid;
	bool writer_failed;

	unsigned int state_items;     /* FILL_STATE_* bits of the UID, FLAGS and MODSEQ items seen */
	bool state_odd;               /* one of them twice, or not in its form: the parsed line decides */

	/* The last whole line's state items (fetch_fill_last_line). */
	bool last_valid;
	struct fetch_fill_line last;
	char *last_flags;             /* owned: last.flags */
};

#define FILL_STATE_UID 0x1
#define FILL_STATE_FLAGS 0x2
#define FILL_STATE_MODSEQ 0x4

/* The cache item each kept value goes to. */
static const enum cache_item fill_cache_items[] = {
	[FILL_INTERNALDATE] = CACHE_ITEM_INTERNALDATE,
	[FILL_ENVELOPE] = CACHE_ITEM_ENVELOPE,
	[FILL_BODYSTRUCTURE] = CACHE_ITEM_BODYSTRUCTURE,
	[FILL_BODY] = CACHE_ITEM_BODY,
	[FILL_HEADER] = CACHE_ITEM_HEADER,
};

static void fill_event(const struct imap_fetch_items_event *event, void *context);

struct fetch_fill *fetch_fill_new(void)
{
	struct fetch_fill *fill = calloc(1, sizeof(*fill));

	if (fill == NULL)
		return NULL;
	fill->splitter = imap_fetch_items_new(fill_event, fill);
	if (fill->splitter == NULL) {
		free(fill);
		return NULL;
	}
	return fill;
}

/* Forgets the current line's values and aborts its message. */
static void fill_line_clear(struct fetch_fill *fill)
{
	for (unsigned int i = 0; i < FILL_VALUES; i++) {
		free(fill->values[i].data);
		fill->values[i] = (struct fill_bytes){ 0 };
	}
	fill->seq = 0;
	fill->uid = 0;
	fill->has_size = fill->has_modseq = false;
	fill->failed = false;
	fill->state_items = 0;
	fill->state_odd = false;
	cache_body_abort(&fill->writer);
	fill->writer_failed = false;
}

void fetch_fill_free(struct fetch_fill **fill_p)
{
	struct fetch_fill *fill = *fill_p;

	if (fill == NULL)
		return;
	*fill_p = NULL;
	fill_line_clear(fill);
	imap_fetch_items_free(&fill->splitter);
	free(fill->last_flags);
	free(fill);
}

void fetch_fill_abort(struct fetch_fill *fill)
{
	imap_fetch_items_reset(fill->splitter);
	fill_line_clear(fill);
}

void fetch_fill_set_mailbox(struct fetch_fill *fill, struct cache *cache, int64_t mailbox_id,
			    struct mailbox_view *view)
{
	fetch_fill_abort(fill);
	fill->cache = cache;
	fill->mailbox_id = mailbox_id;
	fill->view = view;
}

/* Keeps len bytes at data as value (replacing an earlier one). */
static void fill_keep(struct fetch_fill *fill, enum fill_value value, const void *data, size_t len)
{
	struct fill_bytes *kept = &fill->values[value];
	unsigned char *copy = malloc(len + 1);

	if (copy == NULL) {
		fill->failed = true;
		return;
	}
	memcpy(copy, data, len);
	copy[len] = '\0';
	free(kept->data);
	kept->data = copy;
	kept->len = len;
	kept->present = true;
}

/* A quoted string's content without its escapes, kept as value. */
static void fill_keep_unquoted(struct fetch_fill *fill, enum fill_value value, const unsigned char *data,
			       size_t len)
{
	unsigned char *copy = malloc(len + 1);
	size_t out = 0;

	if (copy == NULL) {
		fill->failed = true;
		return;
	}
	for (size_t i = 0; i < len; i++) {
		if (data[i] == '\\' && i + 1 < len)
			i++;
		copy[out++] = data[i];
	}
	fill_keep(fill, value, copy, out);
	free(copy);
}

/* The message's UID for the current line: its UID item, else the view's. */
static uint32_t fill_line_uid(const struct fetch_fill *fill)
{
	const struct mailbox_view_message *message;

	if (fill->uid != 0)
		return fill->uid;
	if (fill->view == NULL)
		return 0;
	message = mailbox_view_get(fill->view, mailbox_view_client_seq(fill->view, fill->seq));
	return message != NULL ? message->uid : 0;
}

/* A whole message too large to come whole begins: it streams into the store. */
static void fill_message_begin(struct fetch_fill *fill, const struct imap_fetch_items_event *event)
{
	uint32_t uid = fill_line_uid(fill);

	cache_body_abort(&fill->writer);
	fill->writer_failed = false;
	fill->values[FILL_MESSAGE].present = false;
	if (fill->cache == NULL || uid == 0 || event->value_type != IMAP_FETCH_VALUE_LITERAL)
		return;
	fill->writer = cache_body_begin(fill->cache, fill->mailbox_id, uid, event->literal_size, NULL);
	fill->writer_uid = uid;
}

static void fill_message_data(struct fetch_fill *fill, const struct imap_fetch_items_event *event)
{
	if (fill->writer != NULL && !fill->writer_failed &&
	    cache_body_write(fill->writer, event->value, event->value_len) < 0)
		fill->writer_failed = true;
}

/* Keeps a string value (literal or quoted) of an item; NIL and others are not kept. */
static void fill_keep_string(struct fetch_fill *fill, enum fill_value value,
			     const struct imap_fetch_items_event *event)
{
	if (event->value_type == IMAP_FETCH_VALUE_LITERAL)
		fill_keep(fill, value, event->content, event->content_len);
	else if (event->value_type == IMAP_FETCH_VALUE_QUOTED)
		fill_keep_unquoted(fill, value, event->content, event->content_len);
}

/* Keeps a list value as written, "(...)". */
static void fill_keep_list(struct fetch_fill *fill, enum fill_value value,
			   const struct imap_fetch_items_event *event)
{
	if (event->value_type == IMAP_FETCH_VALUE_LIST)
		fill_keep(fill, value, event->value, event->value_len);
}

/* Notes a UID, FLAGS or MODSEQ item (bit), and whether it was in its
   form (ok): the sync may take the line's state from the fill only when
   each came once and well-formed (fetch_fill_last_line). */
static void fill_note_state(struct fetch_fill *fill, unsigned int bit, bool ok)
{
	fill->state_odd |= !ok || (fill->state_items & bit) != 0;
	fill->state_items |= bit;
}

/* One whole item of the line. */
static void fill_item(struct fetch_fill *fill, const struct imap_fetch_items_event *event)
{
	uint64_t number;
	bool ok;

	if (imap_fetch_items_name_is(event, "UID")) {
		ok = event->value_type == IMAP_FETCH_VALUE_NUMBER &&
		     imap_fetch_items_parse_number(event->value, event->value_len, &number) && number > 0 &&
		     number <= UINT32_MAX;
		if (ok)
			fill->uid = (uint32_t)number;
		fill_note_state(fill, FILL_STATE_UID, ok);
	} else if (imap_fetch_items_name_is(event, "FLAGS")) {
		ok = event->value_type == IMAP_FETCH_VALUE_LIST;
		if (ok)
			fill_keep(fill, FILL_FLAGS, event->value + 1, event->value_len - 2);
		fill_note_state(fill, FILL_STATE_FLAGS, ok);
	} else if (imap_fetch_items_name_is(event, "MODSEQ")) {
		ok = event->value_type == IMAP_FETCH_VALUE_LIST &&
		     imap_fetch_items_parse_number(event->value + 1, event->value_len - 2, &number) && number > 0;
		if (ok) {
			fill->modseq = number;
			fill->has_modseq = true;
		}
		fill_note_state(fill, FILL_STATE_MODSEQ, ok);
	} else if (imap_fetch_items_name_is(event, "RFC822.SIZE")) {
		if (event->value_type == IMAP_FETCH_VALUE_NUMBER && imap_fetch_items_parse_number(event->value, event->value_len, &number)) {
			fill->size = number;
			fill->has_size = true;
		}
	} else if (imap_fetch_items_name_is(event, "INTERNALDATE")) {
		if (event->value_type == IMAP_FETCH_VALUE_QUOTED)
			fill_keep(fill, FILL_INTERNALDATE, event->value, event->value_len);
	} else if (imap_fetch_items_name_is(event, "ENVELOPE")) {
		fill_keep_list(fill, FILL_ENVELOPE, event);
	} else if (imap_fetch_items_name_is(event, "BODYSTRUCTURE")) {
		fill_keep_list(fill, FILL_BODYSTRUCTURE, event);
	} else if (imap_fetch_items_name_is(event, "BODY")) {
		fill_keep_list(fill, FILL_BODY, event);
	} else if (imap_fetch_items_name_is(event, "BODY[HEADER]") || imap_fetch_items_name_is(event, "RFC822.HEADER")) {
		fill_keep_string(fill, FILL_HEADER, event);
	} else if (imap_fetch_items_name_is(event, "PREVIEW")) {
		if (event->value_type == IMAP_FETCH_VALUE_QUOTED || event->value_type == IMAP_FETCH_VALUE_LITERAL)
			fill_keep(fill, FILL_PREVIEW, event->value, event->value_len);
	} else if (imap_fetch_items_name_is(event, "BODY[]") || imap_fetch_items_name_is(event, "RFC822")) {
		cache_body_abort(&fill->writer); /* a second copy in the line: the last one counts */
		fill->values[FILL_MESSAGE].present = false;
		if (event->value_type == IMAP_FETCH_VALUE_LITERAL)
			fill_keep(fill, FILL_MESSAGE, event->content, event->content_len);
	}
}

static void fill_event(const struct imap_fetch_items_event *event, void *context)
{
	struct fetch_fill *fill = context;
	bool message = imap_fetch_items_name_is(event, "BODY[]") || imap_fetch_items_name_is(event, "RFC822");

	fill->seq = event->seq;
	switch (event->type) {
	case IMAP_FETCH_ITEMS_EVENT_ITEM:
		fill_item(fill, event);
		break;
	case IMAP_FETCH_ITEMS_EVENT_LITERAL_BEGIN:
		if (imap_fetch_items_name_is(event, "UID") || imap_fetch_items_name_is(event, "FLAGS") ||
		    imap_fetch_items_name_is(event, "MODSEQ"))
			fill->state_odd = true; /* a state item as a streamed literal: not in its form */
		if (message)
			fill_message_begin(fill, event);
		else if (imap_fetch_items_name_is(event, "BODY[HEADER]") || imap_fetch_items_name_is(event, "RFC822.HEADER"))
			fill->values[FILL_HEADER].present = false; /* too large to keep: not stored */
		break;
	case IMAP_FETCH_ITEMS_EVENT_LITERAL_DATA:
		if (message)
			fill_message_data(fill, event);
		break;
	case IMAP_FETCH_ITEMS_EVENT_LITERAL_END:
		break;
	}
}

/* Stores a whole message that came whole. Returns true when stored. */
static bool fill_store_small_message(struct fetch_fill *fill, uint32_t uid)
{
	const struct fill_bytes *message = &fill->values[FILL_MESSAGE];
	struct cache_body_writer *writer = cache_body_begin(fill->cache, fill->mailbox_id, uid, message->len, NULL);

	if (writer == NULL)
		return false;
	if (cache_body_write(writer, message->data, message->len) < 0) {
		cache_body_abort(&writer);
		return false;
	}
	return cache_body_finish(&writer) == 0;
}

/* Finishes the message streamed into the store, or stores the one that
   came whole. Returns true when a whole message was stored. */
static bool fill_store_message(struct fetch_fill *fill, uint32_t uid)
{
	if (fill->writer != NULL) {
		if (fill->writer_failed || fill->writer_uid != uid) {
			cache_body_abort(&fill->writer);
			return false;
		}
		return cache_body_finish(&fill->writer) == 0;
	}
	if (fill->values[FILL_MESSAGE].present)
		return fill_store_small_message(fill, uid);
	return false;
}

/* The line's values and flags: one row write. */
static void fill_store_values(struct fetch_fill *fill, uint32_t uid)
{
	struct cache_fetched fetched = { .has_size = fill->has_size, .size = fill->size };
	bool any = fill->has_size;

	for (unsigned int i = FILL_INTERNALDATE; i <= FILL_HEADER; i++) {
		const struct fill_bytes *value = &fill->values[i];

		if (!value->present)
			continue;
		fetched.values[fill_cache_items[i]] = (struct cache_value){ value->data, value->len };
		any = true;
	}
	if (fill->values[FILL_FLAGS].present) {
		fetched.flags = (const char *)fill->values[FILL_FLAGS].data;
		fetched.modseq = fill->has_modseq ? fill->modseq : 0;
		any = true;
	}
	if (fill->values[FILL_PREVIEW].present) {
		fetched.preview = (struct cache_value){ fill->values[FILL_PREVIEW].data, fill->values[FILL_PREVIEW].len };
		any = true;
	}
	if (any)
		(void)cache_store_fetched(fill->cache, fill->mailbox_id, uid, &fetched);
}

/* Whether our BODYSTRUCTURE (extended) or BODY of raw equals expected. */
static bool fill_structure_equals(const unsigned char *raw, size_t raw_len, const struct cache_value *expected,
				  bool extended)
{
	struct mime_message *root = mime_parse_borrowed(raw, raw_len);
	struct mime_buffer ours = { 0 };
	bool equal;

	if (root == NULL)
		return false;
	mime_imap_bodystructure(root, raw, raw_len, extended ? 1 : 0, &ours);
	equal = ours.len == expected->size && (ours.len == 0 || memcmp(ours.data, expected->data, ours.len) == 0);
	mime_buffer_free(&ours);
	mime_message_free(&root);
	return equal;
}

/* One structure check's question and verdict (fill_check_structure). */
struct fill_structure_check {
	const struct fill_bytes *whole; /* the stored message in hand (just stored); NULL: the lookup reads it */
	bool again;                     /* decide even when a verdict is stored */
	int verdict;                    /* 1 agrees, 0 differs, -1 nothing decided */
};

/* cache_lookup_fn of fill_check_structure: the verdict on one message. */
static void fill_structure_judge(const struct cache_message *stored, void *context)
{
	struct fill_structure_check *check = context;
	bool extended = (stored->present & CACHE_HAS(CACHE_ITEM_BODYSTRUCTURE)) != 0;
	const struct cache_value *expected = &stored->values[extended ? CACHE_ITEM_BODYSTRUCTURE : CACHE_ITEM_BODY];

	if ((stored->present & CACHE_HAS(CACHE_ITEM_MESSAGE)) == 0 ||
	    (!extended && (stored->present & CACHE_HAS(CACHE_ITEM_BODY)) == 0) ||
	    (!check->again && (stored->present & CACHE_HAS(CACHE_ITEM_STRUCTURE_AGREES)) != 0))
		return;
	if (check->whole != NULL)
		check->verdict = fill_structure_equals(check->whole->data, check->whole->len, expected, extended);
	else if (stored->body != NULL)
		check->verdict = fill_structure_equals(evbuffer_pullup(stored->body, -1),
						       evbuffer_get_length(stored->body), expected, extended);
}

/* Compares the stored message of uid with the upstream's BODYSTRUCTURE
   (else BODY) and records the verdict; does nothing while either is
   missing, or (unless again) when a verdict is stored. whole is the
   message as just stored, when it came whole (NULL: read from the
   store). One lookup reads the structures and, only when whole is not
   the stored message, the body, checked: reading 240 MB back was a tenth
   of a warm's time, and reading it to check and then again to parse
   another tenth. */
static void fill_check_structure(struct fetch_fill *fill, uint32_t uid, bool again, const struct fill_bytes *whole)
{
	unsigned int values = CACHE_HAS(CACHE_ITEM_BODYSTRUCTURE) | CACHE_HAS(CACHE_ITEM_BODY);
	struct fill_structure_check check = { .again = again, .verdict = -1 };
	uint64_t stored_size;
	/* most messages have no whole message stored: its row's key tells,
	   without reading any value */
	bool stored = cache_body_bytes(fill->cache) > 0 &&
		      cache_body_size(fill->cache, fill->mailbox_id, uid, &stored_size) == 1;

	if (!stored && !again)
		return;
	check.whole = stored && whole != NULL && whole->len == stored_size ? whole : NULL;
	if (check.whole != NULL)
		(void)cache_lookup_unchecked(fill->cache, fill->mailbox_id, uid, values, fill_structure_judge, &check);
	else
		(void)cache_lookup_values(fill->cache, fill->mailbox_id, &uid, 1, values | CACHE_HAS(CACHE_ITEM_MESSAGE),
					  fill_structure_judge, &check);
	if (check.verdict < 0)
		return;
	if (check.verdict == 0)
		log_debug("cache: mailbox %lld UID %u: our BODYSTRUCTURE differs from the upstream's; sections go upstream",
			  (long long)fill->mailbox_id, uid);
	(void)cache_set_structure_agrees(fill->cache, fill->mailbox_id, uid, check.verdict == 1);
}

/* What the line told of the message goes to the view. */
static void fill_tell_view(struct fetch_fill *fill)
{
	const struct fill_bytes *flags = &fill->values[FILL_FLAGS];
	uint32_t seq;

	if (fill->view == NULL || (seq = mailbox_view_client_seq(fill->view, fill->seq)) == 0)
		return;
	if (fill->uid != 0 && mailbox_view_set_uid(fill->view, seq, fill->uid) < 0 &&
	    mailbox_view_get(fill->view, seq)->uid != 0) {
		log_debug("cache: FETCH line for number %u with UID %u, which the view has as UID %u",
			  fill->seq, fill->uid, mailbox_view_get(fill->view, seq)->uid);
		return; /* another message than the view's: its flags are not that one's */
	}
	if (flags->present) {
		(void)mailbox_view_set_flags(fill->view, seq, (const char *)flags->data, flags->len);
		mailbox_view_set_recent(fill->view, seq, strcasestr((const char *)flags->data, "\\Recent") != NULL);
	}
	if (fill->has_modseq)
		(void)mailbox_view_set_modseq(fill->view, seq, fill->modseq);
}

/* CACHE_HAS of the cacheable items the current line brought from upstream. */
static unsigned int fill_upstream_items(const struct fetch_fill *fill)
{
	unsigned int items = fill->has_size ? CACHE_HAS(CACHE_ITEM_SIZE) : 0;

	for (unsigned int i = FILL_INTERNALDATE; i <= FILL_HEADER; i++)
		items |= fill->values[i].present ? CACHE_HAS(fill_cache_items[i]) : 0;
	if (fill->writer != NULL || fill->values[FILL_MESSAGE].present)
		items |= CACHE_HAS(CACHE_ITEM_MESSAGE);
	return items;
}

/* A well-formed line ended: its values go to the store and the view. */
static void fill_line_complete(struct fetch_fill *fill)
{
	uint32_t uid = fill_line_uid(fill);
	bool stored_message, new_structure;

	fill_tell_view(fill);
	if (fill->cache == NULL || uid == 0 || fill->failed)
		return;
	/* the upstream answered these: misses */
	cache_stats_count_items(fill->cache, fill->mailbox_id, fill_upstream_items(fill), false, 0);
	stored_message = fill_store_message(fill, uid);
	fill_store_values(fill, uid);
	new_structure = fill->values[FILL_BODYSTRUCTURE].present || fill->values[FILL_BODY].present;
	if (stored_message || new_structure)
		fill_check_structure(fill, uid, stored_message,
				     stored_message && fill->values[FILL_MESSAGE].present ? &fill->values[FILL_MESSAGE] : NULL);
}

/* Keeps the whole line's UID, FLAGS and MODSEQ for fetch_fill_last_line
   (the FLAGS bytes taken over, not copied). */
static void fill_keep_last(struct fetch_fill *fill)
{
	struct fill_bytes *flags = &fill->values[FILL_FLAGS];

	free(fill->last_flags);
	fill->last_flags = flags->present ? (char *)flags->data : NULL;
	fill->last = (struct fetch_fill_line){
		.seq = fill->seq, .uid = fill->uid, .modseq = fill->has_modseq ? fill->modseq : 0,
		.flags = fill->last_flags, .flags_len = flags->present ? flags->len : 0,
	};
	fill->last_valid = !fill->failed && !fill->state_odd && fill->seq != 0; /* "FETCH ()": no item, no number */
	if (flags->present)
		*flags = (struct fill_bytes){ 0 };
}

enum imap_fetch_items_result fetch_fill_feed(struct fetch_fill *fill, const unsigned char *data, size_t len,
					     bool line_end)
{
	enum imap_fetch_items_result result = imap_fetch_items_feed(fill->splitter, data, len, line_end);

	fill->last_valid = false;
	if (result == IMAP_FETCH_ITEMS_NEED_MORE)
		return result;
	if (result == IMAP_FETCH_ITEMS_COMPLETE) {
		fill_line_complete(fill);
		fill_keep_last(fill);
	}
	fill_line_clear(fill);
	return result;
}

bool fetch_fill_last_line(const struct fetch_fill *fill, struct fetch_fill_line *line_r)
{
	if (!fill->last_valid)
		return false;
	*line_r = fill->last;
	return true;
}
