/* SPDX-License-Identifier: MIT */
/* fetch-write: one message's line of a local FETCH answer, item by item, from what the plan read, as Dovecot writes it. */
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

/* ---- one message's bytes ---- */

void fetch_source_clear(struct fetch_source *source)
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

/* Whether our library is known to read the stored message otherwise
   (not merely not compared yet). */
static bool source_disagrees(const struct fetch_source *source)
{
	return stored_has(source, CACHE_ITEM_MESSAGE) && stored_has(source, CACHE_ITEM_STRUCTURE_AGREES) &&
	       !source->stored->structure_agrees;
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

/* Whether the stream Dovecot kept before this FETCH (binary_marked) is
   still there when it comes to item of message: it reads every message's
   items in turn, and any BINARY or BINARY.SIZE read before lets it go,
   but BINARY[] of the same message, which finds it. */
static bool binary_kept_reaches(const struct fetch_answer *answer, const struct fetch_message *message,
				const struct fetch_item *item)
{
	if (message != &answer->messages[0])
		return false; /* the messages before it read this BINARY item too */
	for (const struct fetch_item *before = answer->items; before < item; before++) {
		if (before->kind == FETCH_KIND_BINARY_SIZE ||
		    (before->kind == FETCH_KIND_BINARY && before->section[0] != '\0'))
			return false;
	}
	return true;
}

/* BINARY[section] of the stored message (see fetch_derive_binary).
   Returns -1 when it can't be served here (source->why says why, when it
   is not the structure). */
static int source_binary(struct fetch_source *source, const struct fetch_item *item, struct mime_buffer *out,
			 bool *converted_r)
{
	enum fetch_kind kind = item->kind;
	const char *section = item->section;
	const struct fetch_answer *answer = source->answer;
	struct mime_message *root = source_agrees(source) ? source_root(source) : NULL;

	*converted_r = false;
	if (root == NULL)
		return -1;
	if (fetch_derive_binary(root, source->raw, source->raw_len, section, out, converted_r, &source->why) < 0)
		return -1;
	/* the stream Dovecot keeps is the whole message's, with its header */
	if (kind == FETCH_KIND_BINARY && *section == '\0' && !*converted_r &&
	    (answer->binary_size_asked ||
	     ((answer->binary_marked || source->message->uid == answer->binary_marked_uid) &&
	      binary_kept_reaches(answer, source->message, item)))) {
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
		return mime_imap_header_is_plain(header, header_len) ? 0 : -1;
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

	if (source_binary(source, item, &decoded, &converted) == 0) {
		if (out != NULL) {
			write_literal(out, item, decoded.data, decoded.len, converted);
			source->answer->binary_last_local = true;
		}
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
bool fetch_item_may_splice(const struct fetch_item *item)
{
	return item->kind >= FETCH_KIND_RFC822 || item->kind == FETCH_KIND_PREVIEW;
}

/* The name the upstream answers the item's splice ask under (the
   client's RFC822 forms are asked as BODY.PEEK[...]). */
const char *fetch_item_splice_name(const struct fetch_item *item)
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

	if (source->answer->splice == NULL || !fetch_item_may_splice(item) ||
	    !fetch_splice_lookup(source->answer->splice, source->message->uid, fetch_item_splice_name(item), &value, &len))
		return -1;
	if (out != NULL) {
		out_add_text(out, item->name);
		mime_buffer_append(out, " ", 1);
		mime_buffer_append(out, value, len);
	}
	return 0;
}

/* PREVIEW as the upstream wrote it for the message, from the store. */
static int write_preview(struct mime_buffer *out, const struct fetch_source *source)
{
	struct fetch_answer *answer = source->answer;
	size_t len;

	if (answer->preview == NULL && (answer->preview = evbuffer_new()) == NULL)
		return -1;
	evbuffer_drain(answer->preview, evbuffer_get_length(answer->preview));
	if (cache_lookup_preview(answer->cache, answer->mailbox_id, source->message->uid, answer->preview) != 1)
		return -1;
	len = evbuffer_get_length(answer->preview);
	if (out != NULL) {
		mime_buffer_append(out, "PREVIEW ", 8);
		mime_buffer_append(out, evbuffer_pullup(answer->preview, -1), len);
	}
	return 0;
}

/* One item; with out NULL only checks it (see write_body_item). */
static int write_item(struct mime_buffer *out, struct fetch_source *source, const struct fetch_item *item)
{
	const struct fetch_message *message = source->message;

	if (write_captured(out, source, item) == 0) {
		if (out != NULL && (item->kind == FETCH_KIND_BINARY || item->kind == FETCH_KIND_BINARY_SIZE))
			source->answer->binary_last_local = false;
		return 0;
	}
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
	case FETCH_KIND_PREVIEW:
		return write_preview(out, source);
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

/* Whether BINARY that can't be written here may be fetched alone: after
   a BINARY stream (binary_marked), or of a message our library reads
   otherwise (Dovecot decodes it by its own reading). Not for a part our
   library does not decode: Dovecot may fail on it, and its stream keeps
   the failure. */
static bool binary_may_splice(const struct fetch_source *source)
{
	return source->why == fetch_why_binary_marked || source_disagrees(source);
}

/* Whether every item can be written for the message, or fetched alone
   (*spliced_r: 1 << the index of each such item); *why_r when not. */
bool fetch_message_check(struct fetch_source *source, uint64_t *spliced_r, const char **why_r)
{
	const struct fetch_answer *answer = source->answer;

	*spliced_r = 0;
	for (unsigned int i = 0; i < answer->item_count; i++) {
		const struct fetch_item *item = &answer->items[i];

		source->why = NULL;
		if (write_item(NULL, source, item) < 0) {
			*why_r = item_why(source, item);
			/* not asked alone: some BINARY (binary_may_splice), nor
			   what the store lacks (the upstream's answer fills it) */
			if (!answer->may_splice || !fetch_item_may_splice(item) ||
			    !fetch_item_is_stored(item, source->stored->present) ||
			    (item->kind == FETCH_KIND_BINARY && !binary_may_splice(source)))
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
int fetch_message_write(struct mime_buffer *out, struct fetch_source *source)
{
	const struct fetch_answer *answer = source->answer;
	bool cut = answer->cut && source->message == &answer->messages[answer->message_count - 1];
	unsigned int item_count = cut ? answer->cut_item : answer->item_count;

	mime_buffer_append(out, "* ", 2);
	out_add_number(out, source->message->seq);
	mime_buffer_append(out, " FETCH (", 8);
	if (item_count == 0) { /* Dovecot's line for a message it failed on before any item */
		mime_buffer_append(out, "UID ", 4);
		out_add_number(out, source->message->uid);
	}
	for (unsigned int i = 0; i < item_count; i++) {
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
void fetch_write_seen_updates(const struct fetch_answer *answer, struct evbuffer *out)
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

