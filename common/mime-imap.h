/* SPDX-License-Identifier: MIT */
/* mime-imap: IMAP views of a parsed message: ENVELOPE, BODYSTRUCTURE, BODY[section], BINARY. */
#ifndef IMAPCACHE_MIME_IMAP_H
#define IMAPCACHE_MIME_IMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mime-buffer.h"
#include "mime-message.h"

#define MIME_IMAP_SECTION_MAX_DEPTH 100 /* part numbers in one section spec; the parser nests no deeper */

/* Appends s as an IMAP string: NIL for NULL, a quoted string when it can
   be one (no CR, LF, NUL or 8-bit byte), a literal {n} otherwise. */
void mime_imap_append_string(struct mime_buffer *out, const char *text, size_t len);

/* Appends the ENVELOPE (RFC 3501 7.4.2) of message: date, subject, from,
   sender and reply-to (from when absent), to, cc, bcc, in-reply-to,
   message-id; header values unfolded, encoded words left as they are. */
void mime_imap_envelope(struct mime_message *message, struct mime_buffer *out);

/* Appends BODYSTRUCTURE (extended set) or BODY of root, a tree the parser
   made from raw: sizes and line counts are those of the CRLF form of the
   raw bytes, as an IMAP server stores them. */
void mime_imap_bodystructure(struct mime_message *root, const void *raw, size_t raw_len,
			     int extended, struct mime_buffer *out);

/* The IMAP section number (RFC 3501 6.4.5) of part, a node of a parsed
   tree: "" for the root, "1", "1.2", ... for the children of a multipart;
   the message enclosed in a message/rfc822 part has that part's number
   ("1" when the root itself is message/rfc822). A node under any other
   container (the header blocks compat32 makes of a message/delivery-status
   body, which IMAP sees as one leaf) has no section: NULL. Returns a string
   the caller frees, or NULL. */
char *mime_imap_part_section(const struct mime_message *part);

enum mime_imap_section_result {
	MIME_IMAP_SECTION_OK,
	MIME_IMAP_SECTION_BAD_SYNTAX,     /* not a section-spec (answer BAD) */
	MIME_IMAP_SECTION_NO_SUCH_PART,   /* a part number past the message's parts */
	MIME_IMAP_SECTION_UNKNOWN_CTE,    /* BINARY of a part whose encoding can't be undone */
};

/* Appends BODY[section] of root, parsed from raw: "" (the whole message),
   HEADER, TEXT, HEADER.FIELDS (A B), HEADER.FIELDS.NOT (A B), and part
   numbers ("1.2") optionally followed by .MIME or, for message/rfc822
   parts, .HEADER/.TEXT/.HEADER.FIELDS. Line ends are CRLF in the output.
   A part past the end gives NO_SUCH_PART (servers answer an empty string). */
enum mime_imap_section_result mime_imap_fetch_section(struct mime_message *root, const void *raw,
						      size_t raw_len, const char *section,
						      struct mime_buffer *out, const char **error_r);

/* Appends HEADER.FIELDS (A B) or HEADER.FIELDS.NOT (A B) (section) of a
   header block alone, raw, without parsing it into a message: for a block
   whose every line is a field (a name of printable ASCII but space and
   colon, then a colon) or its continuation, each ending in CRLF, up to a
   blank line at its end, the same bytes as mime_imap_fetch_section of the
   block parsed (the parser ends a header at a line that is neither).
   BAD_SYNTAX for another section. */
enum mime_imap_section_result mime_imap_fetch_header_fields(const void *raw, size_t raw_len, const char *section,
							    struct mime_buffer *out, const char **error_r);

/* A name of a HEADER.FIELDS list: bytes of the section text (a quoted
   name's are between its quotes), so that the list costs one allocation. */
struct mime_imap_field_name {
	const char *text;
	size_t len;
};
/* The names of section "HEADER.FIELDS (...)" or "HEADER.FIELDS.NOT (...)"
   (*exclude_r 1), as mime_imap_fetch_header_fields reads them: 0 with
   *names_r (malloc'd, pointing into section) and *count_r, -1 when it is
   neither or its list is invalid. */
int mime_imap_header_fields_names(const char *section, struct mime_imap_field_name **names_r, size_t *count_r,
				  int *exclude_r);
/* Whether a header block is plain RFC 5322: CRLF lines, each a field
   "Name: value" (a name of printable ASCII) or a continuation of one, no
   NUL or bare CR/LF, and the blank line once, at the end. On such a
   block Dovecot's header filter and this library's agree, so that
   HEADER.FIELDS of it may be answered without the upstream. */
bool mime_imap_header_is_plain(const void *block, size_t len);
/* One line of such a block, without its CRLF and not empty (first: the
   block's first): a field (*name_len_r its name's length) or, but first,
   a continuation (*name_len_r 0). */
bool mime_imap_header_line_is_plain(const void *line, size_t len, bool first, size_t *name_len_r);
/* Whether the field name [name, name + name_len) (name_len > 0) is in
   names (ASCII case ignored), as mime_imap_fetch_header_fields matches them. */
bool mime_imap_header_field_listed(const struct mime_imap_field_name *names, size_t count, const void *name,
				   size_t name_len);

/* Appends BINARY[section] (RFC 3516): the decoded body of the part
   (section "" or numbers only); BINARY.SIZE is the length appended. */
enum mime_imap_section_result mime_imap_fetch_binary(struct mime_message *root, const void *raw,
						     size_t raw_len, const char *section,
						     struct mime_buffer *out, const char **error_r);

/* The <offset.length> partial of data (length UINT64_MAX: to the end). */
void mime_imap_partial(const void *data, size_t len, uint64_t offset, uint64_t length,
		       struct mime_buffer *out);

#endif
