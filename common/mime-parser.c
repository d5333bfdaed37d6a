/* SPDX-License-Identifier: MIT */
/* mime-parser: an incremental parser from message bytes to a mime_message tree. */
#include "config.h"
#include "mime-parser.h"
#include "mime-scan.h"

#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum frame_state {
	FRAME_HEADERS,
	FRAME_LEAF,                 /* body lines are the payload */
	FRAME_PREAMBLE,             /* multipart before its first boundary */
	FRAME_SKIP_BOUNDARIES,      /* after a separator: more boundary lines are dropped */
	FRAME_PART_ACTIVE,          /* multipart with a part being parsed above it */
	FRAME_AFTER_PART,           /* multipart whose part just ended at a line */
	FRAME_EPILOGUE,
	FRAME_DISCARD,              /* after a close boundary found in the preamble */
	FRAME_CONTAINER_ACTIVE,     /* message/ *: the enclosed message is above it */
	FRAME_CONTAINER_DONE,
	FRAME_STATUS_ACTIVE,        /* message/delivery-status: a block is above it */
	FRAME_STATUS_CONSUME,       /* drop the blank line that ended a block */
	FRAME_STATUS_NEXT,          /* any line starts the next block */
};

enum frame_matcher {
	MATCHER_NONE,
	MATCHER_BOUNDARY,           /* the lines "--boundary" and "--boundary--" */
	MATCHER_BLANK,              /* an empty line (delivery-status blocks) */
};

struct frame {
	struct mime_message *message;
	enum frame_state state;
	enum frame_matcher matcher;  /* ends the parts above this frame */
	char *boundary;
	size_t boundary_len;
	size_t depth;

	/* headers (their value collects in the parser's header_value: only
	   the top frame ever reads headers) */
	size_t header_lines;
	char *header_name;
	char *pending_from;          /* a "From " line that may be the last header line */
	size_t pending_from_len, pending_from_offset;

	/* body: copied into body, or (a leaf of a borrowing parse) kept as
	   the range [borrow_offset, +borrow_len) of the input while the lines
	   come from there one after another */
	struct mime_buffer body;
	size_t body_lines;
	size_t borrow_offset, borrow_len;
	int body_copied;
	int close_seen;
};

struct mime_parser {
	size_t max_size, fed;
	int too_big, finished;
	struct mime_buffer partial;   /* the incomplete last line */
	struct mime_buffer header_value;  /* the header field being collected */
	const unsigned char *borrow;  /* mime_parse_borrowed's input, or NULL */
	size_t borrow_size;
	size_t partial_offset;
	struct frame *frames;
	size_t frame_count, frame_alloc;
	struct mime_arena *arena;     /* the tree's (owned by root once made) */
	struct mime_message *root;
	struct mime_message *last;    /* feedparser's _last */
	size_t part_total;
	size_t prev_eol_len;
	/* Line ends before the current line, so BODYSTRUCTURE needs no
	   second pass: LFs, and LFs with a CR before them. */
	size_t lf_total, crlf_total;
	size_t prev_lf, prev_crlf;         /* the previous line's */
	/* The previous line closed a multipart (its close delimiter): a part
	   an enclosing boundary ends right after it keeps that line's end, as
	   Dovecot counts it (its epilogue starts after the line end, and the
	   boundary's own CRLF is none of the part's then). line_closes is the
	   current line's. */
	int prev_closes, line_closes;
	size_t line_offset, line_len;      /* the line being handled */
	size_t line_lf, line_crlf;
	int replaying;                     /* a pushed-back line: counted already */
};

static void parser_line(struct mime_parser *parser, const unsigned char *line, size_t len,
			size_t offset);

static size_t eol_length(const unsigned char *line, size_t len)
{
	if (len >= 2 && line[len - 2] == '\r' && line[len - 1] == '\n')
		return 2;
	if (len >= 1 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
		return 1;
	return 0;
}

enum boundary_match {
	BOUNDARY_NONE,
	BOUNDARY_SEPARATOR,
	BOUNDARY_CLOSE,
};

/* feedparser's boundaryre: --boundary(--)?[ \t]*(\r\n|\r|\n)?$ */
static enum boundary_match boundary_match(const struct frame *frame, const unsigned char *line,
					  size_t len)
{
	size_t b = frame->boundary_len;

	if (len < b + 2 || line[0] != '-' || line[1] != '-' ||
	    memcmp(line + 2, frame->boundary, b) != 0)
		return BOUNDARY_NONE;
	size_t i = b + 2;
	enum boundary_match kind = BOUNDARY_SEPARATOR;
	if (i + 1 < len && line[i] == '-' && line[i + 1] == '-') {
		kind = BOUNDARY_CLOSE;
		i += 2;
	}
	while (i < len && (line[i] == ' ' || line[i] == '\t'))
		i++;
	if (i == len || i + eol_length(line + i, len - i) == len)
		return kind;
	/* "--b--" could also be a separator for a boundary ending in "--";
	   the regex backtracks only when the close form fails, as here. */
	return BOUNDARY_NONE;
}

static int line_is_blank(const unsigned char *line, size_t len)
{
	return len > 0 && (line[0] == '\r' || line[0] == '\n');
}

/* feedparser's headerRE: ^(From |[\041-\071\073-\176]*:|[\t ]) */
static int line_is_header(const unsigned char *line, size_t len)
{
	if (len >= 5 && memcmp(line, "From ", 5) == 0)
		return 1;
	if (len >= 1 && (line[0] == ' ' || line[0] == '\t'))
		return 1;
	for (size_t i = 0; i < len; i++) {
		if (line[i] == ':')
			return 1;
		if (line[i] < 0x21 || line[i] > 0x7e)
			return 0;
	}
	return 0;
}

static struct frame *parser_top(struct mime_parser *parser)
{
	assert(parser->frame_count > 0);
	return &parser->frames[parser->frame_count - 1];
}

static struct mime_message *parser_new_message(struct mime_parser *parser, size_t offset)
{
	struct mime_message *message = mime_message_new_in(parser->arena, parser->root == NULL);

	if (parser->frame_count > 0) {
		struct mime_message *parent = parser_top(parser)->message;
		if (strcmp(mime_message_get_content_type(parent), "multipart/digest") == 0)
			mime_message_set_default_type(message, "message/rfc822");
		int attached = mime_message_attach(parent, message);
		assert(attached == 0);
		(void)attached;
	}
	message->has_offsets = 1;
	message->header_start = message->body_start = message->body_end = offset;
	parser->last = message;
	parser->part_total++;
	return message;
}

static void parser_push(struct mime_parser *parser, struct mime_message *message)
{
	if (parser->frame_count == parser->frame_alloc) {
		size_t old_alloc = parser->frame_alloc;
		parser->frame_alloc = parser->frame_alloc == 0 ? 8 : parser->frame_alloc * 2;
		parser->frames = mime_xrealloc(parser->frames,
					       parser->frame_alloc * sizeof(*parser->frames));
		memset(parser->frames + old_alloc, 0,
		       (parser->frame_alloc - old_alloc) * sizeof(*parser->frames));
	}
	struct frame *frame = &parser->frames[parser->frame_count];
	/* The slot's body buffer is kept from its last use: no regrowing. */
	struct mime_buffer body = frame->body;
	memset(frame, 0, sizeof(*frame));
	frame->body = body;
	mime_buffer_reset(&frame->body);
	frame->message = message;
	frame->state = FRAME_HEADERS;
	frame->depth = parser->frame_count;
	parser->frame_count++;
}

/* Frees what a frame holds for its part; its slot keeps the body buffer. */
static void frame_clear(struct frame *frame)
{
	free(frame->boundary);
	frame->boundary = NULL;
	free(frame->pending_from);
	frame->pending_from = NULL;
}

/* Stores the header being collected (policy.header_source_parse). */
static void frame_end_header(struct mime_parser *parser, struct frame *frame)
{
	if (frame->header_name == NULL)
		return;
	struct mime_buffer *value = &parser->header_value;
	while (value->len > 0 && (value->data[value->len - 1] == '\r' ||
				  value->data[value->len - 1] == '\n'))
		value->len--;
	mime_buffer_append(value, "", 0);
	/* Values are C strings: a NUL becomes 0x80, as Dovecot does. */
	unsigned char *nul = value->data;
	while ((nul = memchr(nul, '\0', value->len - (size_t)(nul - value->data))) != NULL)
		*nul++ = 0x80;
	if (frame->message->header_count >= MIME_PARSER_MAX_HEADERS) {
		if (!mime_message_has_defect(frame->message, MIME_DEFECT_TOO_MANY_HEADERS))
			mime_message_add_defect(frame->message, MIME_DEFECT_TOO_MANY_HEADERS);
	} else {
		size_t k = 0;
		while (k < value->len && (value->data[k] == ' ' || value->data[k] == '\t' ||
					  value->data[k] == '\r' || value->data[k] == '\n'))
			k++;
		if (k == value->len)
			mime_message_add_defect(frame->message, MIME_DEFECT_HEADER_MISSING_VALUE);
		mime_message_set_adopt(frame->message, frame->header_name,
				       mime_arena_strndup(parser->arena, (const char *)value->data,
							  value->len));
	}
	frame->header_name = NULL;
	mime_buffer_reset(value);
}

/* One line of the header block (feedparser._parse_headers, line by line). */
static void frame_header_line(struct mime_parser *parser, struct frame *frame,
			      const unsigned char *line, size_t len, size_t offset)
{
	size_t lineno = frame->header_lines++;

	if (frame->pending_from != NULL) {
		/* Not the last line after all: a misplaced envelope header. */
		mime_message_add_defect(frame->message, MIME_DEFECT_MISPLACED_ENVELOPE_HEADER);
		free(frame->pending_from);
		frame->pending_from = NULL;
	}
	if (line[0] == ' ' || line[0] == '\t') {
		if (frame->header_name == NULL) {
			mime_message_add_defect(frame->message,
						MIME_DEFECT_FIRST_HEADER_LINE_IS_CONTINUATION);
			return;
		}
		mime_buffer_append(&parser->header_value, line, len);
		return;
	}
	frame_end_header(parser, frame);
	if (len >= 5 && memcmp(line, "From ", 5) == 0) {
		if (lineno == 0) {
			mime_message_release(frame->message, frame->message->unixfrom);
			frame->message->unixfrom = mime_arena_strndup(parser->arena, (const char *)line,
								      len - eol_length(line, len));
			for (char *p = frame->message->unixfrom; p < frame->message->unixfrom +
				     len - eol_length(line, len); p++)
				if (*p == '\0')
					*p = (char)0x80;
			frame->message->header_start = offset + len;
		} else {
			frame->pending_from = mime_xstrndup((const char *)line, len);
			frame->pending_from_len = len;
			frame->pending_from_offset = offset;
		}
		return;
	}
	const unsigned char *colon = memchr(line, ':', len);
	assert(colon != NULL);
	if (colon == line) {
		mime_message_add_defect(frame->message, MIME_DEFECT_INVALID_HEADER);
		return;
	}
	frame->header_name = mime_arena_strndup(parser->arena, (const char *)line,
						(size_t)(colon - line));
	const unsigned char *value = colon + 1, *end = line + len;
	while (value < end && (*value == ' ' || *value == '\t'))
		value++;
	mime_buffer_append(&parser->header_value, value, (size_t)(end - value));
}

static int parser_may_add_part(struct mime_parser *parser, struct mime_message *message)
{
	if (parser->part_total < MIME_PARSER_MAX_PARTS)
		return 1;
	if (!mime_message_has_defect(message, MIME_DEFECT_TOO_MANY_PARTS))
		mime_message_add_defect(message, MIME_DEFECT_TOO_MANY_PARTS);
	return 0;
}

static void parser_push_child(struct mime_parser *parser, struct frame *frame,
			      enum frame_matcher matcher, size_t offset)
{
	frame->matcher = matcher;
	struct mime_message *child = parser_new_message(parser, offset);
	parser_push(parser, child);
}

/* Chooses how the body is read once the headers are known. */
static void frame_after_headers(struct mime_parser *parser, size_t offset)
{
	struct frame *frame = parser_top(parser);
	struct mime_message *message = frame->message;
	const char *type = mime_message_get_content_type(message);
	int too_deep = frame->depth + 1 >= MIME_PARSER_MAX_DEPTH;

	frame->state = FRAME_LEAF;
	if (strncmp(type, "multipart/", 10) == 0) {
		char *boundary = mime_message_get_boundary(message);
		if (boundary == NULL) {
			mime_message_add_defect(message, MIME_DEFECT_NO_BOUNDARY_IN_MULTIPART);
			return;
		}
		const char *cte = mime_message_get(message, "content-transfer-encoding", "8bit");
		if (strcasecmp(cte, "7bit") != 0 && strcasecmp(cte, "8bit") != 0 &&
		    strcasecmp(cte, "binary") != 0)
			mime_message_add_defect(message,
						MIME_DEFECT_INVALID_MULTIPART_CONTENT_TRANSFER_ENCODING);
		if (too_deep) {
			mime_message_add_defect(message, MIME_DEFECT_NESTING_TOO_DEEP);
			free(boundary);
			return;
		}
		frame->boundary = boundary;
		frame->boundary_len = strlen(boundary);
		frame->state = FRAME_PREAMBLE;
		return;
	}
	if (strncmp(type, "message/", 8) != 0)
		return;
	if (too_deep) {
		mime_message_add_defect(message, MIME_DEFECT_NESTING_TOO_DEEP);
		return;
	}
	if (!parser_may_add_part(parser, message))
		return;
	if (strcmp(type, "message/delivery-status") == 0) {
		frame->state = FRAME_STATUS_ACTIVE;
		parser_push_child(parser, frame, MATCHER_BLANK, offset);
	} else {
		frame->state = FRAME_CONTAINER_ACTIVE;
		parser_push_child(parser, frame, MATCHER_NONE, offset);
	}
}

/* The header block ended: at a blank line (consumed), at another line, or
   at the end of this part's input. */
static void frame_end_headers(struct mime_parser *parser, size_t body_start)
{
	struct frame *frame = parser_top(parser);
	char *pending = frame->pending_from;
	size_t pending_len = frame->pending_from_len, pending_offset = frame->pending_from_offset;

	frame_end_header(parser, frame);
	frame->pending_from = NULL;
	frame->message->body_start = pending != NULL ? pending_offset : body_start;
	struct mime_message *message = frame->message;
	message->line_counts_valid = pending == NULL && !parser->replaying;
	message->body_lf = parser->lf_total;
	message->body_crlf = parser->crlf_total;
	if (body_start == parser->line_offset + parser->line_len) {
		message->body_lf += parser->line_lf;
		message->body_crlf += parser->line_crlf;
	} else if (body_start != parser->line_offset) {
		message->line_counts_valid = 0;
	}
	frame_after_headers(parser, body_start);
	if (pending != NULL) {
		/* feedparser pushes a last "From " line back into the body. */
		int replaying = parser->replaying;
		size_t line_offset = parser->line_offset, line_len = parser->line_len;
		size_t line_lf = parser->line_lf, line_crlf = parser->line_crlf;
		size_t prev_eol = parser->prev_eol_len;
		int line_closes = parser->line_closes;
		parser->replaying = 1;
		parser_line(parser, (const unsigned char *)pending, pending_len, pending_offset);
		parser->replaying = replaying;
		parser->line_closes = line_closes;
		parser->line_offset = line_offset;
		parser->line_len = line_len;
		parser->line_lf = line_lf;
		parser->line_crlf = line_crlf;
		parser->prev_eol_len = prev_eol;
		free(pending);
	}
}

/* Appends a leaf's body bytes found at offset in the input. A borrowing
   parse only extends the range while they follow on in its input; a line
   from elsewhere (a pushed-back "From " line, a line end joined across
   feeds) makes the body a copy from then on. */
static void frame_leaf_append(struct mime_parser *parser, struct frame *frame,
			      const unsigned char *data, size_t len, size_t offset)
{
	if (!frame->body_copied && parser->borrow != NULL && data == parser->borrow + offset &&
	    (frame->borrow_len == 0 || offset == frame->borrow_offset + frame->borrow_len)) {
		if (frame->borrow_len == 0)
			frame->borrow_offset = offset;
		frame->borrow_len += len;
		return;
	}
	if (!frame->body_copied) {
		frame->body_copied = 1;
		if (frame->borrow_len > 0)
			mime_buffer_append(&frame->body, parser->borrow + frame->borrow_offset,
					   frame->borrow_len);
	}
	mime_buffer_append(&frame->body, data, len);
}

/* A multipart whose start boundary never came: feedparser keeps what it
   read as the payload, bytes, with an empty epilogue. */
static void frame_without_start_boundary(struct mime_message *message, struct frame *frame)
{
	mime_message_add_defect(message, MIME_DEFECT_START_BOUNDARY_NOT_FOUND);
	mime_buffer_append(&frame->body, "", 0);
	mime_message_release(message, message->payload);
	message->payload = (unsigned char *)mime_buffer_steal(&frame->body, &message->payload_len);
	message->payload_kind = MIME_PAYLOAD_BYTES;
	mime_message_release(message, message->epilogue);
	message->epilogue = mime_xstrdup("");
	message->epilogue_len = 0;
}

/* The leaf's body becomes its payload: the borrowed range, or the copy. */
static void frame_leaf_end(struct mime_parser *parser, struct frame *frame)
{
	struct mime_message *message = frame->message;

	mime_message_release(message, message->payload);
	if (!frame->body_copied && frame->borrow_len > 0) {
		message->payload = (unsigned char *)(uintptr_t)(parser->borrow + frame->borrow_offset);
		message->payload_len = frame->borrow_len;
	} else {
		mime_buffer_append(&frame->body, "", 0);
		message->payload = (unsigned char *)mime_buffer_steal(&frame->body,
								      &message->payload_len);
	}
	message->payload_kind = MIME_PAYLOAD_BYTES;
}

/* Whether text points into a borrowing parse's input (never written). */
static int parser_borrowed(const struct mime_parser *parser, const void *text)
{
	uintptr_t p = (uintptr_t)text, base = (uintptr_t)parser->borrow;
	return parser->borrow != NULL && p >= base && p - base < parser->borrow_size;
}

/* Drops one line end from the end of text (NLCRE_eol). */
static void strip_eol(char *text, size_t *len)
{
	size_t eol = eol_length((const unsigned char *)text, *len);
	*len -= eol;
	text[*len] = '\0';
}

static void set_text(const struct mime_message *message, char **field, size_t *field_len,
		     struct mime_buffer *buffer)
{
	mime_message_release(message, *field);
	*field = mime_buffer_steal(buffer, field_len);
}

/* A part ended; its multipart parent applies RFC 2046's rule that the line
   end before a boundary belongs to the boundary (to feedparser's _last). */
static void parser_child_done(struct mime_parser *parser)
{
	struct frame *frame = parser_top(parser);

	frame->matcher = MATCHER_NONE;
	switch (frame->state) {
	case FRAME_PART_ACTIVE: {
		struct mime_message *last = parser->last;
		const char *type = mime_message_get_content_type(last);
		if (strncmp(type, "multipart/", 10) == 0) {
			if (last->epilogue != NULL && last->epilogue_len == 0) {
				mime_message_release(last, last->epilogue);
				last->epilogue = NULL;
			} else if (last->epilogue != NULL) {
				strip_eol(last->epilogue, &last->epilogue_len);
			}
		} else if (last->payload_kind == MIME_PAYLOAD_BYTES) {
			last->payload_len -= eol_length(last->payload, last->payload_len);
			if (!parser_borrowed(parser, last->payload))
				last->payload[last->payload_len] = '\0';
		}
		parser->last = frame->message;
		frame->state = FRAME_AFTER_PART;
		break;
	}
	case FRAME_CONTAINER_ACTIVE:
		frame->state = FRAME_CONTAINER_DONE;
		break;
	case FRAME_STATUS_ACTIVE:
		frame->state = FRAME_STATUS_CONSUME;
		break;
	default:
		assert(!"a part ended under a frame without parts");
	}
}

/* Pops the top frame, whose input ended at offset (at_boundary: the line
   there is a boundary, so the line end before it is not this part's). */
static void parser_pop(struct mime_parser *parser, size_t offset, int at_boundary)
{
	struct frame *frame = parser_top(parser);
	struct mime_message *message = frame->message;
	size_t end = offset;

	size_t lf = parser->lf_total, crlf = parser->crlf_total;
	if (at_boundary && !parser->prev_closes && end >= parser->prev_eol_len) {
		end -= parser->prev_eol_len;
		lf -= parser->prev_lf;
		crlf -= parser->prev_crlf;
	}
	if (parser->replaying)
		message->line_counts_valid = 0;
	/* A part ending right after its headers: the line end before the
	   boundary is not part of the header block either. */
	if (end < message->body_start)
		message->body_start = end > message->header_start ? end : message->header_start;
	if (end < message->body_start)
		end = message->body_start;
	message->body_end = end;
	if (end == message->body_start) {
		message->body_lf = message->body_crlf = 0;
	} else if (lf >= message->body_lf && crlf >= message->body_crlf) {
		message->body_lf = lf - message->body_lf;
		message->body_crlf = crlf - message->body_crlf;
	} else {
		message->line_counts_valid = 0;
	}
	frame_clear(frame);
	parser->frame_count--;
	if (parser->frame_count > 0)
		parser_child_done(parser);
}

/* The top frame reads end of input (its own, or an enclosing boundary). */
static void parser_eof_top(struct mime_parser *parser, size_t offset, int at_boundary)
{
	struct frame *frame = parser_top(parser);
	struct mime_message *message = frame->message;

	switch (frame->state) {
	case FRAME_HEADERS:
		frame_end_headers(parser, offset);
		return; /* the body state gets the end next */
	case FRAME_LEAF:
		frame_leaf_end(parser, frame);
		break;
	case FRAME_PREAMBLE:
		frame_without_start_boundary(message, frame);
		break;
	case FRAME_SKIP_BOUNDARIES:
		/* feedparser still parses an (empty) part here. */
		if (parser_may_add_part(parser, message)) {
			frame->state = FRAME_PART_ACTIVE;
			parser_push_child(parser, frame, MATCHER_BOUNDARY, offset);
			return;
		}
		mime_message_add_defect(message, MIME_DEFECT_CLOSE_BOUNDARY_NOT_FOUND);
		break;
	case FRAME_AFTER_PART:
		mime_message_add_defect(message, MIME_DEFECT_CLOSE_BOUNDARY_NOT_FOUND);
		break;
	case FRAME_EPILOGUE:
		mime_buffer_append(&frame->body, "", 0);
		set_text(message, &message->epilogue, &message->epilogue_len, &frame->body);
		break;
	case FRAME_DISCARD:
	case FRAME_CONTAINER_DONE:
	case FRAME_STATUS_CONSUME:
	case FRAME_STATUS_NEXT:
		break;
	case FRAME_PART_ACTIVE:
	case FRAME_CONTAINER_ACTIVE:
	case FRAME_STATUS_ACTIVE:
		assert(!"end of input reached a frame below the top");
		break;
	}
	parser_pop(parser, offset, at_boundary);
}

/* Does an enclosing part's matcher end the top frame at this line? Returns
   0, 1 for a blank-line matcher, 2 for a boundary. */
static int parser_ancestor_matches(struct mime_parser *parser, const unsigned char *line,
				   size_t len)
{
	for (size_t i = parser->frame_count - 1; i-- > 0;) {
		struct frame *frame = &parser->frames[i];
		if (frame->matcher == MATCHER_BOUNDARY &&
		    boundary_match(frame, line, len) != BOUNDARY_NONE)
			return 2;
		if (frame->matcher == MATCHER_BLANK && line_is_blank(line, len))
			return 1;
	}
	return 0;
}

enum line_outcome {
	LINE_DONE,       /* the line was used */
	LINE_AGAIN,      /* the state changed: the top frame reads it again */
};

static enum line_outcome frame_body_line(struct mime_parser *parser, struct frame *frame,
					 const unsigned char *line, size_t len, size_t offset)
{
	struct mime_message *message = frame->message;
	enum boundary_match match;

	switch (frame->state) {
	case FRAME_HEADERS:
		if (line_is_header(line, len)) {
			frame_header_line(parser, frame, line, len, offset);
			return LINE_DONE;
		}
		if (line_is_blank(line, len)) {
			frame_end_headers(parser, offset + len);
			return LINE_DONE;
		}
		mime_message_add_defect(message, MIME_DEFECT_MISSING_HEADER_BODY_SEPARATOR);
		frame_end_headers(parser, offset);
		return LINE_AGAIN;
	case FRAME_LEAF:
		frame_leaf_append(parser, frame, line, len, offset);
		return LINE_DONE;
	case FRAME_PREAMBLE:
		match = boundary_match(frame, line, len);
		if (match == BOUNDARY_CLOSE) {
			frame_without_start_boundary(message, frame);
			frame->state = FRAME_DISCARD;
			parser->line_closes = 1;
			return LINE_DONE;
		}
		if (match == BOUNDARY_SEPARATOR) {
			if (frame->body_lines > 0) {
				mime_buffer_append(&frame->body, "", 0);
				set_text(message, &message->preamble, &message->preamble_len, &frame->body);
				strip_eol(message->preamble, &message->preamble_len);
			}
			mime_buffer_reset(&frame->body);
			frame->state = FRAME_SKIP_BOUNDARIES;
			return LINE_DONE;
		}
		mime_buffer_append(&frame->body, line, len);
		frame->body_lines++;
		return LINE_DONE;
	case FRAME_SKIP_BOUNDARIES:
		if (boundary_match(frame, line, len) != BOUNDARY_NONE)
			return LINE_DONE;
		if (!parser_may_add_part(parser, message)) {
			frame->state = FRAME_AFTER_PART;
			return LINE_DONE;
		}
		frame->state = FRAME_PART_ACTIVE;
		parser_push_child(parser, frame, MATCHER_BOUNDARY, offset);
		return LINE_AGAIN;
	case FRAME_AFTER_PART:
		match = boundary_match(frame, line, len);
		if (match == BOUNDARY_CLOSE) {
			frame->state = FRAME_EPILOGUE;
			frame->close_seen = 1;
			parser->line_closes = 1;
			frame->body_lines = 0;
			mime_buffer_reset(&frame->body);
			mime_buffer_append(&frame->body, "", 0);
		} else if (match == BOUNDARY_SEPARATOR) {
			frame->state = FRAME_SKIP_BOUNDARIES;
		}
		/* Anything else only follows a part cut at the part limit. */
		return LINE_DONE;
	case FRAME_EPILOGUE:
		/* feedparser's leading-newline strip only touches the '' it
		   starts the epilogue with, so every line is kept. */
		mime_buffer_append(&frame->body, line, len);
		return LINE_DONE;
	case FRAME_DISCARD:
	case FRAME_STATUS_CONSUME:
		if (frame->state == FRAME_STATUS_CONSUME)
			frame->state = FRAME_STATUS_NEXT;
		return LINE_DONE;
	case FRAME_STATUS_NEXT:
		if (!parser_may_add_part(parser, message)) {
			frame->state = FRAME_DISCARD;
			return LINE_DONE;
		}
		frame->state = FRAME_STATUS_ACTIVE;
		parser_push_child(parser, frame, MATCHER_BLANK, offset);
		return LINE_AGAIN;
	case FRAME_CONTAINER_DONE:
		parser_pop(parser, offset, 0);
		return LINE_AGAIN;
	case FRAME_PART_ACTIVE:
	case FRAME_CONTAINER_ACTIVE:
	case FRAME_STATUS_ACTIVE:
		break;
	}
	assert(!"a line reached a frame below the top");
	return LINE_DONE;
}

/* One complete line (with its line end) at offset in the input. */
static void parser_line(struct mime_parser *parser, const unsigned char *line, size_t len,
			size_t offset)
{
	size_t eol = eol_length(line, len);
	parser->line_offset = offset;
	parser->line_len = len;
	parser->line_lf = eol > 0 && line[len - 1] == '\n';
	parser->line_crlf = eol == 2;
	parser->line_closes = 0;
	for (;;) {
		struct frame *frame = parser_top(parser);
		if (parser->frame_count > 1) {
			int matched = parser_ancestor_matches(parser, line, len);
			if (matched != 0) {
				size_t depth = parser->frame_count;
				while (parser->frame_count >= depth)
					parser_eof_top(parser, offset, matched == 2);
				continue;
			}
		}
		if (frame_body_line(parser, frame, line, len, offset) == LINE_DONE)
			break;
	}
	parser->prev_eol_len = eol;
	if (!parser->replaying) {
		parser->lf_total += parser->line_lf;
		parser->crlf_total += parser->line_crlf;
	}
	parser->prev_lf = parser->line_lf;
	parser->prev_crlf = parser->line_crlf;
	parser->prev_closes = parser->line_closes;
}

struct mime_parser *mime_parser_new(size_t max_size)
{
	struct mime_parser *parser = mime_xmalloc(sizeof(*parser));

	memset(parser, 0, sizeof(*parser));
	parser->max_size = max_size == 0 ? MIME_PARSER_DEFAULT_MAX_SIZE : max_size;
	parser->arena = mime_arena_new();
	parser->root = parser_new_message(parser, 0);
	parser_push(parser, parser->root);
	return parser;
}

void mime_parser_free(struct mime_parser **parser_p)
{
	struct mime_parser *parser = *parser_p;

	if (parser == NULL)
		return;
	for (size_t i = 0; i < parser->frame_count; i++)
		frame_clear(&parser->frames[i]);
	for (size_t i = 0; i < parser->frame_alloc; i++)
		mime_buffer_free(&parser->frames[i].body);
	free(parser->frames);
	mime_buffer_free(&parser->partial);
	mime_buffer_free(&parser->header_value);
	mime_message_free(&parser->root);
	free(parser);
	*parser_p = NULL;
}

/* The fast path for leaf bodies: the length of the complete lines at the
   start of data that can only be body text here (a boundary starts with
   '-', a delivery-status block ends at an empty line), with the line end
   counts parser_line would have kept. */
static size_t parser_leaf_run(struct mime_parser *parser, const unsigned char *data, size_t len)
{
	struct mime_scan_lines lines;
	size_t run = mime_scan_body_lines(data, len, &lines);

	if (run == 0)
		return 0;
	parser->lf_total += lines.lf;
	parser->crlf_total += lines.crlf;
	/* parser_line sets the line_* fields again before they are read. */
	parser->line_offset = parser->partial_offset + run;
	parser->line_len = 0;
	parser->line_lf = parser->line_crlf = 0;
	parser->prev_lf = (size_t)lines.last_lf;
	parser->prev_crlf = (size_t)lines.last_crlf;
	parser->prev_eol_len = lines.last_crlf ? 2 : 1;
	return run;
}

enum mime_parser_result mime_parser_feed(struct mime_parser *parser, const void *data,
					 size_t len, const char **error_r)
{
	const unsigned char *in = data;

	assert(!parser->finished);
	if (parser->too_big || len > parser->max_size - parser->fed) {
		parser->too_big = 1;
		*error_r = "message is larger than the parser's size limit";
		return MIME_PARSER_TOO_BIG;
	}
	parser->fed += len;
	size_t pos = 0;
	while (pos < len) {
		/* A CR that ended the last chunk: a line unless LF follows. */
		struct mime_buffer *partial = &parser->partial;
		if (partial->len > 0 && partial->data[partial->len - 1] == '\r') {
			if (in[pos] == '\n') {
				mime_buffer_append_byte(partial, '\n');
				pos++;
			}
			parser_line(parser, partial->data, partial->len, parser->partial_offset);
			parser->partial_offset += partial->len;
			mime_buffer_reset(partial);
			continue;
		}
		if (partial->len == 0 && parser_top(parser)->state == FRAME_LEAF &&
		    !parser->replaying) {
			size_t run = parser_leaf_run(parser, in + pos, len - pos);
			if (run > 0) {
				frame_leaf_append(parser, parser_top(parser), in + pos, run,
						  parser->partial_offset);
				parser->partial_offset += run;
				pos += run;
				continue;
			}
		}
		size_t start = pos;
		pos += mime_scan_line_end(in + pos, len - pos);
		if (pos == len) {
			mime_buffer_append(partial, in + start, pos - start);
			break;
		}
		if (in[pos] == '\r' && pos + 1 == len) {
			mime_buffer_append(partial, in + start, pos + 1 - start);
			pos++;
			break;
		}
		size_t end = pos + (in[pos] == '\r' && in[pos + 1] == '\n' ? 2 : 1);
		if (partial->len > 0) {
			mime_buffer_append(partial, in + start, end - start);
			parser_line(parser, partial->data, partial->len, parser->partial_offset);
			parser->partial_offset += partial->len;
			mime_buffer_reset(partial);
		} else {
			parser_line(parser, in + start, end - start, parser->partial_offset);
			parser->partial_offset += end - start;
		}
		pos = end;
	}
	return MIME_PARSER_NEED_MORE;
}

enum mime_parser_result mime_parser_finish(struct mime_parser *parser,
					   struct mime_message **message_r, const char **error_r)
{
	assert(!parser->finished);
	if (parser->too_big) {
		*error_r = "message is larger than the parser's size limit";
		return MIME_PARSER_TOO_BIG;
	}
	if (parser->partial.len > 0) {
		size_t len = parser->partial.len;
		/* A borrowing parse reads it where it lies, so a body that ends
		   without a line end is still borrowed whole. */
		const unsigned char *line = parser->borrow != NULL
			? parser->borrow + parser->partial_offset : parser->partial.data;
		parser_line(parser, line, len, parser->partial_offset);
		parser->partial_offset += len;
		mime_buffer_reset(&parser->partial);
	}
	parser->line_offset = parser->partial_offset;
	parser->line_len = parser->line_lf = parser->line_crlf = 0;
	parser->prev_eol_len = parser->prev_lf = parser->prev_crlf = 0;
	while (parser->frame_count > 0)
		parser_eof_top(parser, parser->partial_offset, 0);
	parser->finished = 1;
	struct mime_message *root = parser->root;
	parser->root = NULL;
	if (strncmp(mime_message_get_content_type(root), "multipart/", 10) == 0 &&
	    !mime_message_is_multipart(root))
		mime_message_add_defect(root, MIME_DEFECT_MULTIPART_INVARIANT_VIOLATION);
	*message_r = root;
	return MIME_PARSER_COMPLETE;
}

static struct mime_message *parse_whole(const void *data, size_t len, int borrow)
{
	struct mime_parser *parser = mime_parser_new(0);
	struct mime_message *message = NULL;
	const char *error;

	if (len > MIME_PARSER_DEFAULT_MAX_SIZE)
		len = MIME_PARSER_DEFAULT_MAX_SIZE;
	if (borrow && len > 0) {
		parser->borrow = data;
		parser->borrow_size = len;
		mime_arena_lend(parser->arena, data, len);
	}
	mime_parser_feed(parser, data, len, &error);
	mime_parser_finish(parser, &message, &error);
	mime_parser_free(&parser);
	return message;
}

struct mime_message *mime_parse(const void *data, size_t len)
{
	return parse_whole(data, len, 0);
}

struct mime_message *mime_parse_borrowed(const void *data, size_t len)
{
	return parse_whole(data, len, 1);
}
