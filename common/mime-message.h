/* SPDX-License-Identifier: MIT */
/* mime-message: the message tree and the API of Python's email.message.Message (compat32). */
#ifndef IMAPCACHE_MIME_MESSAGE_H
#define IMAPCACHE_MIME_MESSAGE_H

#include <stddef.h>

#include "mime-arena.h"
#include "mime-buffer.h"
#include "mime-charset.h"
#include "mime-header.h"

/* Defects found while parsing or decoding, named as email.errors names
   them (mime_defect_name). The last ones are the library's own. */
enum mime_defect {
	MIME_DEFECT_NO_BOUNDARY_IN_MULTIPART,
	MIME_DEFECT_START_BOUNDARY_NOT_FOUND,
	MIME_DEFECT_CLOSE_BOUNDARY_NOT_FOUND,
	MIME_DEFECT_FIRST_HEADER_LINE_IS_CONTINUATION,
	MIME_DEFECT_MISPLACED_ENVELOPE_HEADER,
	MIME_DEFECT_MISSING_HEADER_BODY_SEPARATOR,
	MIME_DEFECT_MULTIPART_INVARIANT_VIOLATION,
	MIME_DEFECT_INVALID_MULTIPART_CONTENT_TRANSFER_ENCODING,
	MIME_DEFECT_INVALID_HEADER,              /* a line starting with ':' */
	MIME_DEFECT_INVALID_BASE64_PADDING,
	MIME_DEFECT_INVALID_BASE64_CHARACTERS,
	MIME_DEFECT_INVALID_BASE64_LENGTH,
	MIME_DEFECT_HEADER_MISSING_VALUE,        /* "Name:" with nothing after it */
	MIME_DEFECT_NESTING_TOO_DEEP,            /* past MIME_PARSER_MAX_DEPTH */
	MIME_DEFECT_TOO_MANY_PARTS,              /* past MIME_PARSER_MAX_PARTS */
	MIME_DEFECT_TOO_MANY_HEADERS,            /* past MIME_PARSER_MAX_HEADERS */
};
#define MIME_DEFECT_COUNT (MIME_DEFECT_TOO_MANY_HEADERS + 1)

/* The email.errors class name ("StartBoundaryNotFoundDefect"). */
const char *mime_defect_name(enum mime_defect defect);

/* One header field as compat32 keeps it: the name as written, the value
   after the colon with leading blanks removed, folds kept, no final line end. */
struct mime_header {
	char *name;
	char *value;
};

enum mime_payload_kind {
	MIME_PAYLOAD_NONE,   /* Python's None */
	MIME_PAYLOAD_BYTES,  /* a leaf (or a defective multipart kept as text) */
	MIME_PAYLOAD_PARTS,  /* multipart, message/rfc822, message/delivery-status */
};

struct mime_message {
	struct mime_message *parent;
	size_t parent_index;                /* this part's index in parent->parts */
	struct mime_header *headers;
	size_t header_count, header_alloc;
	char *unixfrom;                     /* without its line end, or NULL */

	enum mime_payload_kind payload_kind;
	unsigned char *payload;             /* payload_len bytes; a NUL follows them
					       unless the payload is borrowed */
	size_t payload_len;
	struct mime_message **parts;
	size_t part_count, part_alloc;

	char *preamble, *epilogue;          /* NULL is Python's None */
	size_t preamble_len, epilogue_len;

	enum mime_defect *defects;
	size_t defect_count, defect_alloc;

	char default_type[32];
	struct mime_charset charset;
	int has_charset;

	/* Where the parser found this part in its input (IMAP sections):
	   header block [header_start, body_start), body [body_start, body_end). */
	size_t header_start, body_start, body_end;
	int has_offsets;
	/* LFs in the body, and those of them after a CR (valid when
	   line_counts_valid): BODYSTRUCTURE sizes without a second pass. */
	size_t body_lf, body_crlf;
	int line_counts_valid;

	/* Cached get_content_type(); dropped whenever a header changes. It
	   points into content_type_inline when the type fits there. */
	char *content_type_cache;
	char content_type_inline[48];

	/* A parsed tree keeps its parts, arrays and header strings in one
	   arena, which the root owns. Fields may point into it (or, for a
	   tree from mime_parse_borrowed, into the parsed input); the API
	   frees only what is neither, so any message can be changed alike. */
	struct mime_arena *arena;
	int owns_arena;
};

/* An empty message: no headers, payload None, default type text/plain. */
struct mime_message *mime_message_new(void);
/* An empty message whose arrays grow in arena (the parser's parts). With
   owns_arena, freeing the message frees the arena too. */
struct mime_message *mime_message_new_in(struct mime_arena *arena, int owns_arena);
/* Frees a field's memory unless it lives in the message's arena. */
void mime_message_release(const struct mime_message *message, void *field);
/* Frees the message and all its parts; *message becomes NULL. */
void mime_message_free(struct mime_message **message);

void mime_message_add_defect(struct mime_message *message, enum mime_defect defect);
int mime_message_has_defect(const struct mime_message *message, enum mime_defect defect);

/* --- the mapping interface; names are matched case-insensitively --- */
size_t mime_message_len(const struct mime_message *message);
int mime_message_contains(const struct mime_message *message, const char *name);
/* The first value of name, or fallback when absent (msg.get(name, fallback)). */
const char *mime_message_get(const struct mime_message *message, const char *name,
			     const char *fallback);
/* The index'th value of name (get_all), or NULL past the last one. */
const char *mime_message_get_nth(const struct mime_message *message, const char *name,
				 size_t index);
size_t mime_message_count(const struct mime_message *message, const char *name);
/* msg[name] = value: appends, never replaces. */
void mime_message_set(struct mime_message *message, const char *name, const char *value);
/* The same with name and value malloc'ed by the caller or taken from
   the message's arena, owned by the message from then on (the parser's
   way: no second copy). */
void mime_message_set_adopt(struct mime_message *message, char *name, char *value);
/* del msg[name]: removes every field of that name; returns how many. */
size_t mime_message_delete(struct mime_message *message, const char *name);
/* keys(), values(), items(): the index'th field (index < len). */
const char *mime_message_key(const struct mime_message *message, size_t index);
const char *mime_message_value(const struct mime_message *message, size_t index);

/* One extra parameter for add_header; a NULL value gives a bare key, a
   non-ASCII value is RFC 2231-encoded as utf-8''. */
struct mime_header_param {
	const char *name;
	const char *value;
};
/* add_header(name, value, **params); value may be NULL (params only). */
void mime_message_add_header(struct mime_message *message, const char *name, const char *value,
			     const struct mime_header_param *params, size_t param_count);
/* replace_header: the first field of that name gets value, keeping its
   place. Returns 0, or -1 when there is no such field (Python's KeyError). */
int mime_message_replace_header(struct mime_message *message, const char *name,
				const char *value);

/* --- structure --- */
int mime_message_is_multipart(const struct mime_message *message);
void mime_message_set_unixfrom(struct mime_message *message, const char *unixfrom);
const char *mime_message_get_unixfrom(const struct mime_message *message);
/* Appends part (taking ownership). Returns 0, or -1 when the payload is
   bytes (Python's TypeError); part is untouched then. */
int mime_message_attach(struct mime_message *message, struct mime_message *part);
/* get_payload(i): the i'th part or NULL. */
struct mime_message *mime_message_get_part(const struct mime_message *message, size_t index);

enum mime_payload_result {
	MIME_PAYLOAD_RESULT_BYTES,       /* out holds the (decoded) payload */
	MIME_PAYLOAD_RESULT_MULTIPART,   /* a multipart: nothing to decode (Python's None) */
	MIME_PAYLOAD_RESULT_NONE,        /* the payload is None */
};
/* get_payload(decode=decode) for a leaf, appended to out. Decoding follows the
   Content-Transfer-Encoding (lower-cased, not trimmed): quoted-printable,
   base64 (recording base64 defects on the message, as Python does), x-uuencode
   (uuencode, uue, x-uue; the raw bytes when undecodable); anything else
   gives the bytes as they are. */
enum mime_payload_result mime_message_get_payload(struct mime_message *message, int decode,
						  struct mime_buffer *out);
/* set_payload(payload, charset): charset may be NULL; with one, the text
   (UTF-8) is converted to the charset's output charset and set_charset is
   applied (which encodes the body when Content-Transfer-Encoding is absent). */
void mime_message_set_payload(struct mime_message *message, const void *payload, size_t len,
			      const char *charset);
/* set_charset(NULL) removes the charset parameter. */
void mime_message_set_charset(struct mime_message *message, const char *charset);
/* NULL when no charset was set with set_charset/set_payload. */
const struct mime_charset *mime_message_get_charset(const struct mime_message *message);

/* --- content type --- */
/* "maintype/subtype", lower-cased: the Content-Type's, text/plain when it
   is invalid, the default type when absent. Valid until headers change. */
const char *mime_message_get_content_type(struct mime_message *message);
/* maintype or subtype of the above into a buffer of size (>= 1). */
void mime_message_get_content_maintype(struct mime_message *message, char *out, size_t size);
void mime_message_get_content_subtype(struct mime_message *message, char *out, size_t size);
const char *mime_message_get_default_type(const struct mime_message *message);
/* type is "maintype/subtype" of at most 31 bytes; longer is cut. */
void mime_message_set_default_type(struct mime_message *message, const char *type);

/* get_params(header=header): 0 with list_r filled, or -1 when the header
   is absent. header NULL means Content-Type. */
int mime_message_get_params(const struct mime_message *message, const char *header,
			    struct mime_param_list *list_r);
/* get_param(name, header=header), collapsed (collapse_rfc2231_value) to
   UTF-8: malloc'ed, or NULL when absent. */
char *mime_message_get_param(const struct mime_message *message, const char *name,
			     const char *header);
/* set_param(name, value, header, requote, charset, language); charset NULL
   for a plain parameter. Content-Type gets text/plain first when absent. */
void mime_message_set_param(struct mime_message *message, const char *name, const char *value,
			    const char *header, int requote, const char *charset,
			    const char *language);
void mime_message_del_param(struct mime_message *message, const char *name, const char *header,
			    int requote);
/* set_type: returns -1 when type has not exactly one '/' (ValueError). */
int mime_message_set_type(struct mime_message *message, const char *type, const char *header,
			  int requote);
/* get_filename: Content-Disposition's filename, else Content-Type's name,
   collapsed and stripped; malloc'ed or NULL. */
char *mime_message_get_filename(const struct mime_message *message);
/* get_boundary: malloc'ed, right-stripped, or NULL. */
char *mime_message_get_boundary(const struct mime_message *message);
/* set_boundary: rewrites every Content-Type field in place. Returns -1
   when there is none (HeaderParseError). */
int mime_message_set_boundary(struct mime_message *message, const char *boundary);
/* get_content_charset: lower-cased, malloc'ed, NULL when absent or not ASCII. */
char *mime_message_get_content_charset(const struct mime_message *message);

/* get_charsets(): one entry per part in walk order, each malloc'ed or NULL
   (fallback); the array is malloc'ed, *count_r entries. */
char **mime_message_get_charsets(struct mime_message *message, size_t *count_r);

/* walk(): the next part in depth-first order after current, staying inside
   root; mime_message_walk_next(root, NULL) is root itself. */
struct mime_message *mime_message_walk_next(struct mime_message *root,
					    struct mime_message *current);

/* Appends a complete, deterministic description of the tree (headers,
   envelope line, payloads, preamble, epilogue, defects, parser offsets;
   bytes outside printable ASCII as \xNN), one line per item: two trees
   are the same exactly when their descriptions are. With offsets unset,
   parser offsets are left out (for comparing a reparsed tree). */
void mime_message_describe(const struct mime_message *message, int offsets,
			   struct mime_buffer *out);

/* as_string(unixfrom): the generator with mangle_from off and no folding
   (mime-generator.h has every option). Malloc'ed; *len_r may be NULL. */
char *mime_message_as_string(struct mime_message *message, int unixfrom, size_t *len_r);

#endif
