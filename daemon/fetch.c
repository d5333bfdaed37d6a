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

/* One message while its line is checked or written. */
struct fetch_source {
	struct fetch_answer *answer;
	const struct fetch_message *message;
	const struct cache_message *stored;
	struct evbuffer *body;       /* the whole stored message, read on demand */
	const unsigned char *raw;
	size_t raw_len;
	struct mime_message *root;   /* raw parsed, on demand */
	struct mime_buffer derived;  /* a header block derived from raw */
	bool derived_header;
	bool kept_body_used;         /* the use of stored->body is counted */
	struct cache_value *fields;  /* the chunk's slot of answer->fields_item for the message, or NULL */
	const char *why;             /* why the last item can't be written, when a check said */
};

/* ---- the answer's messages ---- */

static int range_compare(const void *a, const void *b)
{
	const struct imap_seqset_range *x = a, *y = b;

	return x->first < y->first ? -1 : x->first > y->first;
}

/* The set's ranges with "*" as star, each first <= last, sorted and
   merged; *count_r of them in a malloc'd array (NULL: out of memory). */
static struct imap_seqset_range *set_resolve(const struct imap_seqset *set, uint32_t star, unsigned int *count_r)
{
	struct imap_seqset_range *ranges = malloc((set->count + 1) * sizeof(*ranges));
	unsigned int count = 0;

	if (ranges == NULL)
		return NULL;
	for (unsigned int i = 0; i < set->count; i++) {
		uint32_t a = set->ranges[i].first == IMAP_SEQSET_STAR ? star : set->ranges[i].first;
		uint32_t b = set->ranges[i].last == IMAP_SEQSET_STAR ? star : set->ranges[i].last;

		ranges[i].first = a < b ? a : b;
		ranges[i].last = a < b ? b : a;
	}
	qsort(ranges, set->count, sizeof(*ranges), range_compare);
	for (unsigned int i = 0; i < set->count; i++) {
		if (count > 0 && (uint64_t)ranges[i].first <= (uint64_t)ranges[count - 1].last + 1) {
			if (ranges[i].last > ranges[count - 1].last)
				ranges[count - 1].last = ranges[i].last;
		} else {
			ranges[count++] = ranges[i];
		}
	}
	*count_r = count;
	return ranges;
}

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
	if (message->flags != NULL && (entry->flags = strdup(message->flags)) == NULL)
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
	ranges = set_resolve(command->u.fetch.set, uid ? mailbox_view_max_uid(view) : count, &range_count);
	if (ranges == NULL)
		return -1;
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

/* ---- one message's bytes ---- */

static void source_clear(struct fetch_source *source)
{
	if (source->body != NULL)
		evbuffer_free(source->body);
	mime_message_free(&source->root);
	mime_buffer_free(&source->derived);
	*source = (struct fetch_source){ 0 };
}

static bool stored_has(const struct fetch_source *source, enum cache_item item)
{
	return (source->stored->present & CACHE_HAS(item)) != 0;
}

static bool source_agrees(const struct fetch_source *source)
{
	return stored_has(source, CACHE_ITEM_MESSAGE) && stored_has(source, CACHE_ITEM_STRUCTURE_AGREES) &&
	       source->stored->structure_agrees;
}

/* The body the plan's lookup kept for the message (counted as a use of
   it the first time), or NULL: it is read from the store. */
static struct evbuffer *source_kept_body(struct fetch_source *source)
{
	if (source->stored->body == NULL)
		return NULL;
	if (!source->kept_body_used)
		cache_body_used(source->answer->cache, source->answer->mailbox_id, source->message->uid);
	source->kept_body_used = true;
	return source->stored->body;
}

/* Reads the whole stored message. Returns -1 when it is not there. */
static int source_load(struct fetch_source *source)
{
	struct fetch_answer *answer = source->answer;
	struct evbuffer *kept;

	if (source->raw != NULL)
		return 0;
	if (!stored_has(source, CACHE_ITEM_MESSAGE))
		return -1;
	kept = source_kept_body(source);
	if (kept != NULL) {
		source->raw_len = evbuffer_get_length(kept);
		source->raw = source->raw_len > 0 ? evbuffer_pullup(kept, -1) : (const unsigned char *)"";
		return source->raw != NULL ? 0 : -1;
	}
	source->body = evbuffer_new();
	if (source->body == NULL ||
	    cache_body_read(answer->cache, answer->mailbox_id, source->message->uid, 0, source->stored->message_size,
			    source->body) != 1 ||
	    evbuffer_get_length(source->body) != source->stored->message_size)
		return -1;
	source->raw_len = evbuffer_get_length(source->body);
	source->raw = source->raw_len > 0 ? evbuffer_pullup(source->body, -1) : (const unsigned char *)"";
	return source->raw != NULL ? 0 : -1;
}

/* The stored message parsed; NULL when it is not there. */
static struct mime_message *source_root(struct fetch_source *source)
{
	if (source->root == NULL && source_load(source) == 0)
		source->root = mime_parse_borrowed(source->raw, source->raw_len);
	return source->root;
}

/* Moves the line built so far to the answer's pending bytes, so that a
   body's bytes can follow it there without passing through the line. */
static struct evbuffer *line_flush_pending(struct fetch_answer *answer)
{
	if (answer->pending == NULL)
		answer->pending = evbuffer_new();
	if (answer->pending == NULL || evbuffer_add(answer->pending, answer->line.data, answer->line.len) < 0)
		return NULL;
	mime_buffer_reset(&answer->line);
	return answer->pending;
}

/* Copies bytes [offset, offset + len) of body to out, once, chain by chain. */
static int body_copy_range(struct evbuffer *body, struct evbuffer *out, uint64_t offset, uint64_t len)
{
	struct evbuffer_ptr at;
	struct evbuffer_iovec extents[FETCH_BODY_EXTENTS];

	if (evbuffer_ptr_set(body, &at, (size_t)offset, EVBUFFER_PTR_SET) < 0)
		return -1;
	while (len > 0) {
		int count = evbuffer_peek(body, (ev_ssize_t)len, &at, extents, FETCH_BODY_EXTENTS);

		if (count <= 0)
			return -1;
		for (int i = 0; i < count && i < FETCH_BODY_EXTENTS && len > 0; i++) {
			size_t take = extents[i].iov_len < len ? extents[i].iov_len : (size_t)len;

			if (evbuffer_add(out, extents[i].iov_base, take) < 0)
				return -1;
			len -= take;
			if (len > 0 && evbuffer_ptr_set(body, &at, take, EVBUFFER_PTR_ADD) < 0)
				return -1;
		}
	}
	return 0;
}

/* Appends bytes [offset, offset + len) of the stored message. To the
   line being written (out is answer->line), a body not parsed goes by
   the answer's pending bytes: copied once from the body the plan kept,
   or moved from the store's read, never through the line. */
static int source_append_range(struct fetch_source *source, struct mime_buffer *out, uint64_t offset, uint64_t len)
{
	struct fetch_answer *answer = source->answer;
	struct evbuffer *kept = source->raw == NULL ? source_kept_body(source) : NULL;
	struct evbuffer *piece, *pending;
	int ret = -1;

	if (source->raw == NULL && out == &answer->line && len > 0) {
		pending = line_flush_pending(answer);
		if (pending == NULL)
			return -1;
		if (kept != NULL)
			return body_copy_range(kept, pending, offset, len);
		return cache_body_read(answer->cache, answer->mailbox_id, source->message->uid, offset, len, pending) ==
				       1 ? 0 : -1;
	}
	if (kept != NULL && source_load(source) < 0)
		return -1;
	if (source->raw != NULL) {
		mime_buffer_append(out, source->raw + offset, (size_t)len);
		return 0;
	}
	piece = evbuffer_new();
	if (piece != NULL &&
	    cache_body_read(answer->cache, answer->mailbox_id, source->message->uid, offset, len, piece) == 1) {
		while (evbuffer_get_length(piece) > 0) { /* each of its chains copied once */
			size_t run = (size_t)evbuffer_get_contiguous_space(piece);

			mime_buffer_append(out, evbuffer_pullup(piece, (ev_ssize_t)run), run);
			evbuffer_drain(piece, run);
		}
		ret = 0;
	}
	if (piece != NULL)
		evbuffer_free(piece);
	return ret;
}

/* The message's header block: the stored one, else (for a message our
   library reads as the upstream does) the one parsed from the message. */
static int source_header(struct fetch_source *source, const unsigned char **data_r, size_t *len_r)
{
	const char *error;

	if (stored_has(source, CACHE_ITEM_HEADER)) {
		*data_r = source->stored->values[CACHE_ITEM_HEADER].data;
		*len_r = source->stored->values[CACHE_ITEM_HEADER].size;
		return 0;
	}
	if (!source->derived_header) {
		if (!source_agrees(source) || source_root(source) == NULL ||
		    mime_imap_fetch_section(source->root, source->raw, source->raw_len, "HEADER", &source->derived,
					    &error) != MIME_IMAP_SECTION_OK)
			return -1;
		source->derived_header = true;
	}
	*data_r = source->derived.data != NULL ? source->derived.data : (const unsigned char *)"";
	*len_r = source->derived.len;
	return 0;
}

/* Whether the stored header block is where the stored message begins,
   so that the text is the rest: *offset_r is its length. */
static bool source_text_offset(struct fetch_source *source, uint64_t *offset_r)
{
	const struct cache_value *header = &source->stored->values[CACHE_ITEM_HEADER];
	struct mime_buffer head = { 0 };
	bool prefix;

	if (!stored_has(source, CACHE_ITEM_HEADER) || !stored_has(source, CACHE_ITEM_MESSAGE) ||
	    header->size > source->stored->message_size)
		return false;
	*offset_r = header->size;
	if (source->raw != NULL)
		return memcmp(source->raw, header->data, header->size) == 0;
	prefix = source_append_range(source, &head, 0, header->size) == 0 && head.len == header->size &&
		 (header->size == 0 || memcmp(head.data, header->data, header->size) == 0);
	mime_buffer_free(&head);
	return prefix;
}

static const char fetch_why_binary_marked[] = "BINARY[] of a message not decoded, after a BINARY.SIZE (Dovecot may say ~{n})";

/* BINARY[section] of the stored message (see fetch_derive_binary).
   Returns -1 when it can't be served here (source->why says why, when it
   is not the structure). */
static int source_binary(struct fetch_source *source, enum fetch_kind kind, const char *section,
			 struct mime_buffer *out, bool *converted_r)
{
	struct mime_message *root = source_agrees(source) ? source_root(source) : NULL;

	*converted_r = false;
	if (root == NULL)
		return -1;
	if (fetch_derive_binary(root, source->raw, source->raw_len, section, out, converted_r, &source->why) < 0)
		return -1;
	/* the stream Dovecot keeps is the whole message's, with its header */
	if (kind == FETCH_KIND_BINARY && *section == '\0' && !*converted_r &&
	    (source->answer->binary_marked || source->message->uid == source->answer->binary_marked_uid)) {
		source->why = fetch_why_binary_marked;
		return -1;
	}
	return 0;
}

/* ---- writing items ---- */

/* Appends a C string (the writers add their pieces one by one: a
   printf per item cost more than the rest of a cached line). */
static void out_add_text(struct mime_buffer *out, const char *text)
{
	mime_buffer_append(out, text, strlen(text));
}

/* Appends a number in decimal. */
static void out_add_number(struct mime_buffer *out, uint64_t number)
{
	char digits[20]; /* UINT64_MAX has 20 */
	size_t start = sizeof(digits);

	do {
		digits[--start] = (char)('0' + number % 10);
		number /= 10;
	} while (number > 0);
	mime_buffer_append(out, digits + start, sizeof(digits) - start);
}

/* Appends "NAME {n}\r\n" (literal8: "NAME ~{n}\r\n"). */
static void out_add_literal_head(struct mime_buffer *out, const char *name, bool literal8, uint64_t length)
{
	out_add_text(out, name);
	out_add_text(out, literal8 ? " ~{" : " {");
	out_add_number(out, length);
	mime_buffer_append(out, "}\r\n", 3);
}

/* The bytes [offset, offset + length) of size that a partial asks for. */
static void item_partial(const struct fetch_item *item, uint64_t size, uint64_t *offset_r, uint64_t *length_r)
{
	*offset_r = 0;
	*length_r = size;
	if (!item->has_partial)
		return;
	if (item->partial_offset >= size) {
		*offset_r = size;
		*length_r = 0;
		return;
	}
	*offset_r = item->partial_offset;
	*length_r = size - item->partial_offset < item->partial_length ? size - item->partial_offset :
									    item->partial_length;
}

/* " NAME {n}\r\n" and the partial of data. */
static void write_literal(struct mime_buffer *out, const struct fetch_item *item, const unsigned char *data,
			  size_t len, bool literal8)
{
	uint64_t offset, length;

	item_partial(item, len, &offset, &length);
	out_add_literal_head(out, item->name, literal8, length);
	if (length > 0)
		mime_buffer_append(out, data + offset, (size_t)length);
}

/* FLAGS as the view holds them; a \Recent the view marks but whose text
   lacks it goes where Dovecot writes it, after the system flags. */
static void write_flags(struct mime_buffer *out, const struct fetch_message *message)
{
	const char *flags = message->flags;
	size_t system_end = 0;

	if (!message->recent || strcasestr(flags, "\\Recent") != NULL) {
		mime_buffer_append(out, "FLAGS (", 7);
		out_add_text(out, flags);
		mime_buffer_append(out, ")", 1);
		return;
	}
	for (const char *p = flags; *p != '\0';) {
		size_t n = strcspn(p, " ");

		if (*p == '\\')
			system_end = (size_t)(p + n - flags);
		p += n;
		p += strspn(p, " ");
	}
	mime_buffer_printf(out, "FLAGS (%.*s%s\\Recent%s%s)", (int)system_end, flags, system_end > 0 ? " " : "",
			    flags[system_end] != '\0' && system_end == 0 ? " " : "", flags + system_end);
}

/* Writes a stored value item "NAME value". */
static int write_stored(struct mime_buffer *out, const struct fetch_source *source, const struct fetch_item *item,
			enum cache_item value)
{
	if (!stored_has(source, value))
		return -1;
	out_add_text(out, item->name);
	mime_buffer_append(out, " ", 1);
	mime_buffer_append(out, source->stored->values[value].data, source->stored->values[value].size);
	return 0;
}

/* BODY[] / RFC822 and partials of them, read straight from the store. */
static int write_whole(struct mime_buffer *out, struct fetch_source *source, const struct fetch_item *item)
{
	uint64_t offset, length;

	if (!stored_has(source, CACHE_ITEM_MESSAGE))
		return -1;
	item_partial(item, source->stored->message_size, &offset, &length);
	if (out == NULL)
		return 0;
	out_add_literal_head(out, item->name, false, length);
	return source_append_range(source, out, offset, length);
}

/* BODY[TEXT] / RFC822.TEXT: the message after its stored header block,
   else the library's TEXT of a message it reads as the upstream does. */
static int write_text(struct mime_buffer *out, struct fetch_source *source, const struct fetch_item *item)
{
	struct mime_buffer text = { 0 };
	uint64_t start, offset, length;
	const char *error;

	if (source_text_offset(source, &start)) {
		item_partial(item, source->stored->message_size - start, &offset, &length);
		if (out == NULL)
			return 0;
		out_add_literal_head(out, item->name, false, length);
		return source_append_range(source, out, start + offset, length);
	}
	if (!source_agrees(source))
		return -1;
	if (out == NULL)
		return 0;
	if (source_root(source) == NULL ||
	    mime_imap_fetch_section(source->root, source->raw, source->raw_len, "TEXT", &text, &error) !=
		    MIME_IMAP_SECTION_OK) {
		mime_buffer_free(&text);
		return -1;
	}
	if (out != NULL)
		write_literal(out, item, text.data, text.len, false);
	mime_buffer_free(&text);
	return 0;
}

/* Keeps a copy of the HEADER.FIELDS bytes the plan's check built for the
   writer (out of memory: not kept, the writer builds them again). */
static void source_keep_fields(struct fetch_source *source, struct cache_value *kept, const struct mime_buffer *fields)
{
	kept->data = malloc(fields->len + 1);
	if (kept->data == NULL)
		return;
	memcpy(kept->data, fields->data, fields->len);
	kept->size = fields->len;
	source->answer->chunk.kept_value_bytes += fields->len + 1;
}

/* HEADER.FIELDS (.NOT) of the message's header block, built in the
   answer's scratch buffer (grown once, not for every message). The
   answer's first such item is built by the plan's check and kept for the
   writer: the block is read once, not checked by the plan and read
   again by the writer. */
static int write_fields(struct mime_buffer *out, struct fetch_source *source, const struct fetch_item *item)
{
	struct mime_buffer *fields = &source->answer->scratch;
	struct cache_value *kept = item == source->answer->fields_item ? source->fields : NULL;
	const unsigned char *header;
	size_t header_len;

	if (kept != NULL && kept->data != NULL) {
		if (out != NULL)
			write_literal(out, item, kept->data, kept->size, false);
		return 0;
	}
	if (source_header(source, &header, &header_len) < 0)
		return -1;
	if (out == NULL && kept == NULL)
		return fetch_derive_header_is_plain(header, header_len) ? 0 : -1;
	/* fetch_derive_fields checks that the block is plain itself */
	mime_buffer_reset(fields);
	if (fetch_derive_fields(header, header_len, item->section, fields) < 0)
		return -1;
	if (out == NULL)
		source_keep_fields(source, kept, fields);
	else
		write_literal(out, item, fields->data, fields->len, false);
	return 0;
}

/* BODY[n...] for a message our library reads as the upstream does. */
static int write_part(struct mime_buffer *out, struct fetch_source *source, const struct fetch_item *item)
{
	struct mime_buffer part = { 0 };
	int ret;

	if (!source_agrees(source) || source_root(source) == NULL)
		return -1;
	ret = fetch_derive_part(source->root, source->raw, source->raw_len, item->section, &part, &source->why);
	if (ret == 0 && out != NULL)
		write_literal(out, item, part.data, part.len, false);
	mime_buffer_free(&part);
	return ret;
}

/* BINARY[n]<partial>: "~{n}" when the part was decoded (Dovecot's
   "converted", whatever the bytes), else "{n}" (a part that is sent as
   it is holds no NUL here: see source_binary). */
static int write_binary(struct mime_buffer *out, struct fetch_source *source, const struct fetch_item *item)
{
	struct mime_buffer decoded = { 0 };
	bool converted;
	int ret = -1;

	if (source_binary(source, item->kind, item->section, &decoded, &converted) == 0) {
		if (out != NULL)
			write_literal(out, item, decoded.data, decoded.len, converted);
		ret = 0;
	}
	mime_buffer_free(&decoded);
	return ret;
}

/* BODY[HEADER] / RFC822.HEADER. */
static int write_header(struct mime_buffer *out, struct fetch_source *source, const struct fetch_item *item)
{
	const unsigned char *header;
	size_t len;

	if (out == NULL)
		return stored_has(source, CACHE_ITEM_HEADER) || source_agrees(source) ? 0 : -1;
	if (source_header(source, &header, &len) < 0)
		return -1;
	write_literal(out, item, header, len, false);
	return 0;
}

/* A body item; with out NULL only checks that it can be written (the
   checks that need its bytes are done in full). */
static int write_body_item(struct mime_buffer *out, struct fetch_source *source, const struct fetch_item *item)
{
	switch (item->source) {
	case FETCH_SOURCE_WHOLE:
		return write_whole(out, source, item);
	case FETCH_SOURCE_HEADER:
		return write_header(out, source, item);
	case FETCH_SOURCE_TEXT:
		return write_text(out, source, item);
	case FETCH_SOURCE_FIELDS:
		return write_fields(out, source, item);
	case FETCH_SOURCE_PART:
		return write_part(out, source, item);
	case FETCH_SOURCE_BINARY:
		return write_binary(out, source, item);
	case FETCH_SOURCE_NONE:
		break;
	}
	return -1;
}

/* Whether the upstream can be asked for item alone (fetch_answer_splice_groups). */
static bool item_may_splice(const struct fetch_item *item)
{
	return item->kind >= FETCH_KIND_RFC822 || item->kind == FETCH_KIND_PREVIEW;
}

/* The name the upstream answers the item's splice ask under (the
   client's RFC822 forms are asked as BODY.PEEK[...]). */
static const char *item_splice_name(const struct fetch_item *item)
{
	switch (item->kind) {
	case FETCH_KIND_RFC822:
		return "BODY[]";
	case FETCH_KIND_RFC822_HEADER:
		return "BODY[HEADER]";
	case FETCH_KIND_RFC822_TEXT:
		return "BODY[TEXT]";
	default:
		return item->name;
	}
}

/* Writes the value the proxy's own FETCH captured for the message's
   item, under the client's name for it. Returns 0, -1 when none was. */
static int write_captured(struct mime_buffer *out, const struct fetch_source *source, const struct fetch_item *item)
{
	const unsigned char *value;
	size_t len;

	if (source->answer->splice == NULL || !item_may_splice(item) ||
	    !fetch_splice_lookup(source->answer->splice, source->message->uid, item_splice_name(item), &value, &len))
		return -1;
	if (out != NULL) {
		out_add_text(out, item->name);
		mime_buffer_append(out, " ", 1);
		mime_buffer_append(out, value, len);
	}
	return 0;
}

/* One item; with out NULL only checks it (see write_body_item). */
static int write_item(struct mime_buffer *out, struct fetch_source *source, const struct fetch_item *item)
{
	const struct fetch_message *message = source->message;

	if (write_captured(out, source, item) == 0)
		return 0;
	switch (item->kind) {
	case FETCH_KIND_UID:
		if (out != NULL) {
			mime_buffer_append(out, "UID ", 4);
			out_add_number(out, message->uid);
		}
		return 0;
	case FETCH_KIND_FLAGS:
		if (message->flags == NULL)
			return -1;
		if (out != NULL)
			write_flags(out, message);
		return 0;
	case FETCH_KIND_MODSEQ:
		if (message->modseq == 0)
			return -1;
		if (out != NULL) {
			mime_buffer_append(out, "MODSEQ (", 8);
			out_add_number(out, message->modseq);
			mime_buffer_append(out, ")", 1);
		}
		return 0;
	case FETCH_KIND_SIZE:
		if (stored_has(source, CACHE_ITEM_SIZE) || stored_has(source, CACHE_ITEM_MESSAGE)) {
			if (out != NULL) {
				mime_buffer_append(out, "RFC822.SIZE ", 12);
				out_add_number(out, stored_has(source, CACHE_ITEM_SIZE) ? source->stored->size :
											   source->stored->message_size);
			}
			return 0;
		}
		return -1;
	case FETCH_KIND_INTERNALDATE:
		return out != NULL ? write_stored(out, source, item, CACHE_ITEM_INTERNALDATE) :
				     stored_has(source, CACHE_ITEM_INTERNALDATE) ? 0 : -1;
	case FETCH_KIND_ENVELOPE:
		return out != NULL ? write_stored(out, source, item, CACHE_ITEM_ENVELOPE) :
				     stored_has(source, CACHE_ITEM_ENVELOPE) ? 0 : -1;
	case FETCH_KIND_BODY:
		return out != NULL ? write_stored(out, source, item, CACHE_ITEM_BODY) :
				     stored_has(source, CACHE_ITEM_BODY) ? 0 : -1;
	case FETCH_KIND_BODYSTRUCTURE:
		return out != NULL ? write_stored(out, source, item, CACHE_ITEM_BODYSTRUCTURE) :
				     stored_has(source, CACHE_ITEM_BODYSTRUCTURE) ? 0 : -1;
	default:
		return write_body_item(out, source, item);
	}
}

/* Why item can't be written for the message (for the debug log). */
static const char *item_why(const struct fetch_source *source, const struct fetch_item *item)
{
	static const char *const sources[] = {
		[FETCH_SOURCE_NONE] = "a fixed item not stored for a message",
		[FETCH_SOURCE_WHOLE] = "a message not stored whole",
		[FETCH_SOURCE_HEADER] = "a header block not stored",
		[FETCH_SOURCE_TEXT] = "a text not derivable",
		[FETCH_SOURCE_FIELDS] = "HEADER.FIELDS of a header block not plain",
		[FETCH_SOURCE_PART] = "a part our library does not find",
		[FETCH_SOURCE_BINARY] = "BINARY of a part not decoded here",
	};

	if (source->why != NULL)
		return source->why;
	if (item->kind == FETCH_KIND_MODSEQ)
		return "MODSEQ not known for a message";
	if (item->kind == FETCH_KIND_FLAGS)
		return "FLAGS not known for a message";
	if (item->kind == FETCH_KIND_BINARY_SIZE)
		return "BINARY.SIZE";
	if (item->kind == FETCH_KIND_PREVIEW)
		return "PREVIEW";
	if (item->source == FETCH_SOURCE_NONE)
		return sources[FETCH_SOURCE_NONE];
	if (!stored_has(source, CACHE_ITEM_MESSAGE) && item->source != FETCH_SOURCE_HEADER)
		return "a body item of a message not stored whole";
	if (item->source != FETCH_SOURCE_WHOLE && !source_agrees(source))
		return "a derived item of a message whose structure our library reads otherwise";
	return sources[item->source];
}

static bool item_is_stored(const struct fetch_item *item, unsigned int present);

/* Whether every item can be written for the message, or fetched alone
   (*spliced_r: 1 << the index of each such item); *why_r when not. */
static bool message_check(struct fetch_source *source, uint64_t *spliced_r, const char **why_r)
{
	const struct fetch_answer *answer = source->answer;

	*spliced_r = 0;
	for (unsigned int i = 0; i < answer->item_count; i++) {
		const struct fetch_item *item = &answer->items[i];

		source->why = NULL;
		if (write_item(NULL, source, item) < 0) {
			*why_r = item_why(source, item);
			/* a BINARY our library does not decode may be one Dovecot
			   fails on (its stream keeps the failure): not asked alone;
			   nor what the store lacks (the upstream's answer fills it) */
			if (!answer->may_splice || !item_may_splice(item) ||
			    !item_is_stored(item, source->stored->present) ||
			    (item->kind == FETCH_KIND_BINARY && source->why != fetch_why_binary_marked))
				return false;
			*spliced_r |= (uint64_t)1 << i;
		}
	}
	return true;
}

/* Whether the line of message gets a FLAGS the client did not ask for:
   Dovecot adds it, after the buffered items, where the fetch set \Seen. */
static bool message_shows_set_flags(const struct fetch_answer *answer, const struct fetch_message *message)
{
	return message->seen_set && !answer->has_flags_item;
}

/* The "* n FETCH (...)" line of one message. */
static int message_write(struct mime_buffer *out, struct fetch_source *source)
{
	const struct fetch_answer *answer = source->answer;

	mime_buffer_append(out, "* ", 2);
	out_add_number(out, source->message->seq);
	mime_buffer_append(out, " FETCH (", 8);
	for (unsigned int i = 0; i < answer->item_count; i++) {
		if (i > 0)
			mime_buffer_append(out, " ", 1);
		if (i == answer->buffered_count && message_shows_set_flags(answer, source->message)) {
			write_flags(out, source->message);
			mime_buffer_append(out, " ", 1);
		}
		if (write_item(out, source, &answer->items[i]) < 0)
			return -1;
	}
	if (answer->item_count == answer->buffered_count && message_shows_set_flags(answer, source->message)) {
		mime_buffer_append(out, " ", 1);
		write_flags(out, source->message);
	}
	mime_buffer_append(out, ")\r\n", 3);
	return 0;
}

/* After the last line, as Dovecot reports changes at the end of the
   command: for each message whose \Seen the fetch set, with CONDSTORE
   its new MODSEQ (with the UID under QRESYNC); where another client had
   changed its flags too, its FLAGS as well (without CONDSTORE only then). */
static void answer_write_seen_updates(const struct fetch_answer *answer, struct evbuffer *out)
{
	struct mime_buffer flags = { 0 };

	for (size_t i = 0; i < answer->message_count; i++) {
		const struct fetch_message *message = &answer->messages[i];

		if (!message->seen_set || (!answer->condstore && !message->outside_change))
			continue;
		evbuffer_add_printf(out, "* %" PRIu32 " FETCH (", message->seq);
		if (answer->qresync)
			evbuffer_add_printf(out, "UID %" PRIu32 " ", message->uid);
		if (answer->condstore)
			evbuffer_add_printf(out, "MODSEQ (%" PRIu64 ")%s", message->new_modseq,
					    message->outside_change ? " " : "");
		if (message->outside_change) {
			mime_buffer_reset(&flags);
			write_flags(&flags, message);
			evbuffer_add(out, flags.data, flags.len);
		}
		evbuffer_add(out, ")\r\n", 3);
	}
	mime_buffer_free(&flags);
}

/* ---- the plan ---- */

/* Whether what item needs of a message is stored (present: CACHE_HAS
   bits); whether it derives is message_check's. */
static bool item_is_stored(const struct fetch_item *item, unsigned int present)
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

/* Whether the message of stored lacks what the answer needs and can get
   it by a fetch: a whole message only when its size is known and small
   enough to be stored. */
static bool message_mark_missing(struct fetch_answer *answer, struct fetch_message *message,
				 const struct cache_message *stored, const struct fetch_facts *facts)
{
	unsigned int present = stored->uid != 0 ? stored->present : 0;
	unsigned int asks = 0, light = FETCH_ASKS_LIGHT;
	bool agrees = (present & CACHE_HAS(CACHE_ITEM_STRUCTURE_AGREES)) != 0 && stored->structure_agrees;
	bool whole_only = (present & (CACHE_HAS(CACHE_ITEM_HEADER) | CACHE_HAS(CACHE_ITEM_MESSAGE))) ==
			  CACHE_HAS(CACHE_ITEM_MESSAGE);

	for (unsigned int i = 0; i < answer->item_count; i++) {
		if (answer->items[i].kind == FETCH_KIND_MODSEQ ? message->modseq == 0 :
								   !item_is_stored(&answer->items[i], present)) {
			asks |= 1u << item_ask(&answer->items[i]);
		} else if (item_reads_header(&answer->items[i]) && !agrees && whole_only) {
			/* its header block, stored and reused: a few hundred bytes, cheaper than spliced */
			asks |= 1u << FETCH_ASK_HEADER;
			light |= 1u << FETCH_ASK_HEADER;
		}
	}
	if (asks == 0 || !facts->fill_missing)
		return false;
	if ((asks & ~(1u << FETCH_ASK_MODSEQ)) != 0)
		answer->missing_beyond_modseq = true;
	if ((asks & (1u << FETCH_ASK_MODSEQ)) != 0)
		asks |= 1u << FETCH_ASK_SIZE; /* the line then starts "(UID u RFC822.SIZE": the proxy's own */
	if ((asks & (1u << FETCH_ASK_MESSAGE)) != 0) {
		if ((present & CACHE_HAS(CACHE_ITEM_SIZE)) == 0 || stored->size > facts->body_max_size)
			return false;
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

/* Checks every message of the answer against the store, a lookup per
   FETCH_LOOKUP_CHUNK messages. The values read are kept for the writer,
   which then reads the store no second time, while they stay within
   FETCH_KEPT_VALUE_BYTES; past it, the rest are dropped once checked and
   read again as they are written. */
static int plan_check_messages(struct fetch_answer *answer, const struct fetch_facts *facts, const char **why_r)
{
	struct fetch_chunk *chunk = &answer->chunk;
	size_t kept_end = 0;
	bool keeping = true;

	if (chunk_start(answer, 0, answer->message_count, false) < 0)
		return -1;
	for (size_t first = 0; first < answer->message_count; first += FETCH_LOOKUP_CHUNK) {
		size_t count = answer->message_count - first < FETCH_LOOKUP_CHUNK ? answer->message_count - first :
										      FETCH_LOOKUP_CHUNK;

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
				  (chunk->stored[i].uid != 0 && message_check(&source, &spliced, why_r));

			if (chunk->stored[i].uid == 0)
				*why_r = "a message the store has nothing of";
			source_clear(&source);
			if (!ok)
				return 0;
			message->spliced = spliced;
			if (spliced != 0 && answer->spliced_count++ == 0)
				answer->splice_why = *why_r;
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
	     command->u.fetch.attrs[0].type == IMAP_FETCH_ATTR_BINARY_SIZE)) {
		/* Dovecot 2.3 misreads "BODY[...] (CHANGEDSINCE n)": a BAD, or nothing */
		*why_r = "a section item not in parentheses before modifiers";
		return false;
	}
	if (command->u.fetch.vanished) {
		*why_r = "the VANISHED modifier";
		return false;
	}
	if (!command->u.fetch.changedsince_given || command->args[2].type != IMAP_ARG_LIST ||
	    command->args[2].list_count != 2) {
		*why_r = "FETCH modifiers other than one CHANGEDSINCE";
		return false;
	}
	if (!facts->condstore) {
		*why_r = "CHANGEDSINCE before the client enabled CONDSTORE";
		return false;
	}
	return true;
}

/* Whether the items the upstream could be asked for alone answer under
   names of their own (a captured value then belongs to one item), and
   are few enough for a message's mask. */
static bool plan_splice_names_unique(const struct fetch_answer *answer)
{
	if (answer->item_count > FETCH_SPLICE_ITEMS_MAX)
		return false;
	for (unsigned int i = 0; i < answer->item_count; i++) {
		for (unsigned int j = 0; j < i; j++) {
			if (item_may_splice(&answer->items[i]) && item_may_splice(&answer->items[j]) &&
			    strcmp(item_splice_name(&answer->items[i]), item_splice_name(&answer->items[j])) == 0)
				return false;
		}
	}
	return true;
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
		answer->binary_marked |= answer->items[i].kind == FETCH_KIND_BINARY_SIZE;
	}
	if (ret > 0 && plan_splice_names_unique(answer)) {
		answer->may_splice = facts->splice_allowed;
		answer->splice = facts->splice;
	}
	if (ret > 0)
		ret = answer_add_messages(answer, command, facts, why_r);
	if (ret > 0)
		ret = plan_check_messages(answer, facts, why_r);
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
		ret = source.stored->uid == 0 ? -1 : message_write(line, &source);
		source_clear(&source);
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
	answer_write_seen_updates(answer, out);
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
	*uids_r = malloc(count * sizeof(**uids_r));
	*seqs_r = malloc(count * sizeof(**seqs_r));
	if (*uids_r == NULL || *seqs_r == NULL) {
		free(*uids_r);
		free(*seqs_r);
		*uids_r = *seqs_r = NULL;
		return -1;
	}
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
	*uids_r = malloc(count * sizeof(**uids_r));
	*seqs_r = malloc(count * sizeof(**seqs_r));
	if (*uids_r == NULL || *seqs_r == NULL) {
		free(*uids_r);
		free(*seqs_r);
		*uids_r = *seqs_r = NULL;
		return -1;
	}
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

/* The items text of a group: "UID" and each item of mask. */
static char *splice_items_text(const struct fetch_answer *answer, uint64_t mask)
{
	struct evbuffer *out = evbuffer_new();
	char *text = NULL;
	int ret = out != NULL && evbuffer_add(out, "UID", 3) == 0 ? 0 : -1;

	for (unsigned int i = 0; ret == 0 && i < answer->item_count; i++) {
		if ((mask & ((uint64_t)1 << i)) != 0)
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

void fetch_answer_free(struct fetch_answer **answer_p)
{
	struct fetch_answer *answer = *answer_p;

	if (answer == NULL)
		return;
	*answer_p = NULL;
	chunk_clear(&answer->chunk);
	fetch_splice_free(&answer->splice_owned);
	mime_buffer_free(&answer->line);
	if (answer->pending != NULL)
		evbuffer_free(answer->pending);
	mime_buffer_free(&answer->scratch);
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
