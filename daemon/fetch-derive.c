/* SPDX-License-Identifier: MIT */
/* fetch-derive: the items a stored message yields, read as Dovecot 2.3 reads it. */
#include "config.h"
#include "fetch-derive.h"

#include "mime-buffer.h"
#include "mime-codec.h"
#include "mime-imap.h"
#include "mime-message.h"
#include "mime-parser.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- BINARY ---- */

static bool is_multipart(struct mime_message *node)
{
	char maintype[32];

	if (node->payload_kind != MIME_PAYLOAD_PARTS)
		return false;
	mime_message_get_content_maintype(node, maintype, sizeof(maintype));
	return strcmp(maintype, "multipart") == 0;
}

static bool is_rfc822(struct mime_message *node)
{
	return node->payload_kind == MIME_PAYLOAD_PARTS && node->part_count > 0 &&
	       strcasecmp(mime_message_get_content_type(node), "message/rfc822") == 0;
}

/* The text after the part numbers of a section ("MIME" of "1.2.MIME"). */
static const char *section_rest(const char *section)
{
	const char *p = section;

	while (isdigit((unsigned char)*p)) {
		p += strspn(p, "0123456789");
		if (*p == '.')
			p++;
	}
	return p;
}

/* The node that Dovecot 2.3's imap_msgpart_find reaches by the part
   numbers of section, walked over our library's tree of a message whose
   structure agrees: a multipart's n-th child; 1 of any other node is
   itself, and is the end of the path unless it is a message/rfc822, whose
   enclosed message the path then goes on in. NULL: Dovecot finds no such
   part (and answers an empty string). */
static struct mime_message *part_find(struct mime_message *root, const char *section)
{
	struct mime_message *node = root;
	const char *p = section;

	while (node != NULL && isdigit((unsigned char)*p)) {
		char *end;
		unsigned long number = strtoul(p, &end, 10);
		bool more;

		p = *end == '.' ? end + 1 : end;
		more = isdigit((unsigned char)*p);
		if (is_multipart(node))
			node = number >= 1 && number <= node->part_count ? node->parts[number - 1] : NULL;
		else if (number != 1 || (more && !is_rfc822(node)))
			node = NULL;
		if (node != NULL && more && is_rfc822(node))
			node = node->parts[0];
	}
	return node;
}

/* Whether node's offsets lie in the raw message. */
static bool node_in_raw(const struct mime_message *node, size_t raw_len)
{
	return node->has_offsets && node->header_start <= node->body_start && node->body_start <= node->body_end &&
	       node->body_end <= raw_len;
}

enum binary_encoding {
	BINARY_IDENTITY,
	BINARY_BASE64,
	BINARY_QP,
	BINARY_UNSUPPORTED,
};

static enum binary_encoding binary_encoding_of(const struct mime_message *node)
{
	const char *cte = mime_message_get(node, "Content-Transfer-Encoding", NULL);
	size_t len;

	if (cte == NULL)
		return BINARY_IDENTITY;
	if (strpbrk(cte, "\r\n") != NULL)
		return BINARY_UNSUPPORTED; /* folded: Dovecot's parser calls it unknown */
	cte += strspn(cte, " \t");
	len = strlen(cte);
	while (len > 0 && (cte[len - 1] == ' ' || cte[len - 1] == '\t'))
		len--;
#define CTE_IS(word) (len == strlen(word) && strncasecmp(cte, word, len) == 0)
	if (CTE_IS("7bit") || CTE_IS("8bit") || CTE_IS("binary"))
		return BINARY_IDENTITY;
	if (CTE_IS("base64"))
		return BINARY_BASE64;
	if (CTE_IS("quoted-printable"))
		return BINARY_QP;
#undef CTE_IS
	return BINARY_UNSUPPORTED;
}

/* base64 of whole quads, CRLF lines, padding only at the end. */
static bool base64_is_plain(const unsigned char *data, size_t len)
{
	size_t chars = 0, padding = 0;

	for (size_t i = 0; i < len; i++) {
		unsigned char c = data[i];

		if (c == '\r' && i + 1 < len && data[i + 1] == '\n') {
			i++;
		} else if (c == '=') {
			if (++padding > 2)
				return false;
			chars++;
		} else if (isalnum(c) || c == '+' || c == '/') {
			if (padding > 0)
				return false;
			chars++;
		} else {
			return false;
		}
	}
	return chars % 4 == 0;
}

static bool is_upper_hex(unsigned char c)
{
	return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F');
}

/* quoted-printable of ASCII CRLF lines without trailing blanks, "=XX"
   (upper-case hex) escapes and "=" soft line breaks only. */
static bool qp_is_plain(const unsigned char *data, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char c = data[i];

		if (c == '\r') {
			if (i + 1 >= len || data[i + 1] != '\n' || (i > 0 && (data[i - 1] == ' ' || data[i - 1] == '\t')))
				return false;
			i++;
		} else if (c == '=') {
			if (i + 1 < len && data[i + 1] == '\r')
				continue; /* a soft line break */
			if (i + 2 >= len || !is_upper_hex(data[i + 1]) || !is_upper_hex(data[i + 2]))
				return false;
			i += 2;
		} else if (c == '\n' || c == '\0' || c >= 0x80) {
			return false;
		}
	}
	return len == 0 || (data[len - 1] != ' ' && data[len - 1] != '\t');
}

/* BINARY of a part as Dovecot 2.3 writes it (index-mail-binary.c's
   add_binary_part): a leaf's body decoded; a container's bytes as they
   are, each part inside written the same way with its header, where a
   decoded part's header loses its Content-Transfer-Encoding field and
   ends with "Content-Transfer-Encoding: binary". */
struct binary_walk {
	const unsigned char *raw;
	size_t raw_len;
	struct mime_buffer *out;
	bool converted;          /* a part was decoded: Dovecot sends "~{n}" */
	bool rewrote;            /* a decoded part's header was rewritten */
	const char *why;
};

/* Whether bytes go out as they are in Dovecot's BINARY too: no 0x80 (a
   NUL in Dovecot's BODY[], where the stored message came from), no NUL,
   no LF without its CR (Dovecot's CRLF stream would add one). */
static bool bytes_pass_unchanged(const unsigned char *data, size_t len)
{
	if (memchr(data, 0x80, len) != NULL || memchr(data, '\0', len) != NULL)
		return false;
	for (const unsigned char *lf = memchr(data, '\n', len); lf != NULL;
	     lf = memchr(lf + 1, '\n', len - (size_t)(lf + 1 - data))) {
		if (lf == data || lf[-1] != '\r')
			return false;
	}
	return true;
}

static int walk_copy(struct binary_walk *walk, size_t from, size_t to)
{
	if (from > to || to > walk->raw_len) {
		walk->why = "BINARY of parts our library places otherwise";
		return -1;
	}
	if (!bytes_pass_unchanged(walk->raw + from, to - from)) {
		walk->why = "BINARY of a part with a 0x80 byte (a NUL upstream?) or a bare LF";
		return -1;
	}
	mime_buffer_append(walk->out, walk->raw + from, to - from);
	return 0;
}

static bool line_is_cte(const unsigned char *line, size_t len)
{
	static const char name[] = "Content-Transfer-Encoding";
	size_t n = sizeof(name) - 1;
	size_t pos = n;

	if (len <= n || strncasecmp((const char *)line, name, n) != 0)
		return false;
	while (pos < len && (line[pos] == ' ' || line[pos] == '\t'))
		pos++;
	return pos < len && line[pos] == ':';
}

/* A decoded part's header: its fields but Content-Transfer-Encoding (with
   its continuation lines), then "Content-Transfer-Encoding: binary". */
static int walk_converted_header(struct binary_walk *walk, const struct mime_message *node)
{
	static const char binary_field[] = "Content-Transfer-Encoding: binary\r\n\r\n";
	const unsigned char *header = walk->raw + node->header_start;
	size_t len = node->body_start - node->header_start, pos = 0;
	bool dropping = false;

	if (!mime_imap_header_is_plain(header, len) || !bytes_pass_unchanged(header, len)) {
		walk->why = "BINARY of a decoded part whose header is not plain";
		return -1;
	}
	while (pos + 2 < len) {
		const unsigned char *lf = memchr(header + pos, '\n', len - pos);
		size_t line_len = (size_t)(lf + 1 - (header + pos));

		if (header[pos] != ' ' && header[pos] != '\t')
			dropping = line_is_cte(header + pos, line_len);
		if (!dropping)
			mime_buffer_append(walk->out, header + pos, line_len);
		pos += line_len;
	}
	mime_buffer_append(walk->out, binary_field, sizeof(binary_field) - 1);
	walk->rewrote = true;
	return 0;
}

static int walk_leaf_body(struct binary_walk *walk, const struct mime_message *node, enum binary_encoding encoding)
{
	const unsigned char *body = walk->raw + node->body_start;
	size_t len = node->body_end - node->body_start;

	if (len == 0)
		return 0;
	if (encoding == BINARY_IDENTITY)
		return walk_copy(walk, node->body_start, node->body_end);
	if (encoding == BINARY_BASE64 ? !base64_is_plain(body, len) : !qp_is_plain(body, len)) {
		walk->why = encoding == BINARY_BASE64 ? "BINARY of base64 not plain" :
							"BINARY of quoted-printable not plain";
		return -1;
	}
	if (encoding == BINARY_BASE64)
		mime_codec_base64_decode(body, len, walk->out);
	else
		mime_codec_qp_decode(body, len, 0, walk->out);
	walk->converted = true;
	return 0;
}

/* Whether node's type makes Dovecot look for parts in it. */
static bool is_container_type(struct mime_message *node)
{
	char maintype[32];

	mime_message_get_content_maintype(node, maintype, sizeof(maintype));
	return strcmp(maintype, "multipart") == 0 || strcmp(maintype, "message") == 0;
}

/* Whether the part's header block ends in its blank line: without one,
   Dovecot reads the encoding from the header of a later part. */
static bool header_is_closed(const struct binary_walk *walk, const struct mime_message *node)
{
	size_t len = node->body_start - node->header_start;
	const unsigned char *header = walk->raw + node->header_start;

	return (len == 2 && memcmp(header, "\r\n", 2) == 0) ||
	       (len >= 4 && memcmp(header + len - 4, "\r\n\r\n", 4) == 0);
}

static int walk_node(struct binary_walk *walk, struct mime_message *node, bool with_header)
{
	enum binary_encoding encoding = binary_encoding_of(node);
	size_t cursor = node->body_start;

	if (!node_in_raw(node, walk->raw_len))
		return -1;
	if (!header_is_closed(walk, node)) {
		walk->why = "BINARY of a part whose header has no blank line";
		return -1;
	}
	if (encoding == BINARY_UNSUPPORTED || mime_message_count(node, "Content-Transfer-Encoding") > 1) {
		walk->why = "BINARY of an unknown or repeated Content-Transfer-Encoding";
		return -1;
	}
	if (with_header && (encoding == BINARY_IDENTITY ? walk_copy(walk, node->header_start, node->body_start) :
							walk_converted_header(walk, node)) < 0)
		return -1;
	if (node->payload_kind != MIME_PAYLOAD_PARTS || node->part_count == 0) {
		if (is_container_type(node)) {
			walk->why = "BINARY of a container our library holds as bytes";
			return -1; /* Dovecot may find parts in it */
		}
		return walk_leaf_body(walk, node, encoding);
	}
	if (encoding != BINARY_IDENTITY) {
		walk->why = "BINARY of an encoded multipart or message";
		return -1;
	}
	for (size_t i = 0; i < node->part_count; i++) {
		struct mime_message *child = node->parts[i];

		if (walk_copy(walk, cursor, child->header_start) < 0 || walk_node(walk, child, true) < 0)
			return -1;
		cursor = child->body_end;
	}
	return walk_copy(walk, cursor, node->body_end);
}

int fetch_derive_binary(struct mime_message *root, const unsigned char *raw, size_t raw_len, const char *section,
			struct mime_buffer *out, bool *converted_r, const char **why_r)
{
	struct mime_message *node = part_find(root, section);
	struct binary_walk walk = { .raw = raw, .raw_len = raw_len, .out = out };

	*converted_r = false;
	if (node == NULL) {
		mime_buffer_append(out, "", 0);
		return 0;
	}
	/* what comes before the root's header (an mbox "From " line) is
	   Dovecot's header too: as it is, unless that header is rewritten */
	if (*section == '\0' && node->has_offsets && node->header_start > 0 &&
	    (binary_encoding_of(node) != BINARY_IDENTITY || walk_copy(&walk, 0, node->header_start) < 0)) {
		*why_r = walk.why != NULL ? walk.why : "BINARY[] of a decoded message with text before its header";
		return -1;
	}
	if (walk_node(&walk, node, *section == '\0') < 0) {
		*why_r = walk.why;
		return -1;
	}
	if (walk.rewrote && !walk.converted) {
		/* Dovecot throws a stream with nothing decoded away and sends the
		   original cut to that stream's length */
		*why_r = "BINARY with a header rewritten but nothing decoded (an empty encoded part)";
		return -1;
	}
	*converted_r = walk.converted;
	*why_r = NULL;
	return 0;
}

/* ---- sections ---- */

/* The names of the last HEADER.FIELDS section asked for, kept: an answer
   asks for the same list for every message (parsing it cost more than
   the extraction). Freed at exit (still reachable). */
static struct {
	char *section;
	struct mime_imap_field_name *names;
	size_t count;
	int exclude;
} derive_names_memo;

/* mime_imap_header_fields_names of section, from the memo when it is the last one's. */
static int derive_field_names(const char *section, const struct mime_imap_field_name **names_r, size_t *count_r,
			      int *exclude_r)
{
	struct mime_imap_field_name *names;
	size_t count;
	int exclude;
	char *copy;

	if (derive_names_memo.section == NULL || strcmp(derive_names_memo.section, section) != 0) {
		copy = strdup(section);
		if (copy == NULL || mime_imap_header_fields_names(copy, &names, &count, &exclude) < 0) {
			free(copy);
			return -1;
		}
		free(derive_names_memo.section);
		free(derive_names_memo.names);
		derive_names_memo.section = copy;
		derive_names_memo.names = names;
		derive_names_memo.count = count;
		derive_names_memo.exclude = exclude;
	}
	*names_r = derive_names_memo.names;
	*count_r = derive_names_memo.count;
	*exclude_r = derive_names_memo.exclude;
	return 0;
}

/* HEADER.FIELDS (.NOT) of a header block in one pass that also checks that
   it is plain (mime_imap_header_is_plain): the same bytes as
   mime_imap_fetch_header_fields, which then keeps each listed (or unlisted)
   field whole and ends with the blank line. -1 (out unchanged) when it is
   not plain or section is invalid. */
static int derive_fields_plain(const unsigned char *header, size_t len, const char *section,
			       struct mime_buffer *out)
{
	const struct mime_imap_field_name *names;
	size_t count, start = out->len, pos = 0, name_len;
	bool keep = false, plain = false;
	int exclude;

	if (derive_field_names(section, &names, &count, &exclude) < 0)
		return -1;
	while (pos < len) {
		const unsigned char *lf = memchr(header + pos, '\n', len - pos);
		size_t end = lf != NULL ? (size_t)(lf - header) : 0;

		if (lf == NULL || end == pos || header[end - 1] != '\r')
			break;
		if (end - 1 == pos) {
			plain = end + 1 == len;
			break;
		}
		if (!mime_imap_header_line_is_plain(header + pos, end - 1 - pos, pos == 0, &name_len))
			break;
		if (name_len > 0)
			keep = mime_imap_header_field_listed(names, count, header + pos, name_len) != (exclude != 0);
		if (keep)
			mime_buffer_append(out, header + pos, end + 1 - pos);
		pos = end + 1;
	}
	if (!plain) {
		out->len = start;
		return -1;
	}
	mime_buffer_append(out, "\r\n", 2);
	return 0;
}

int fetch_derive_fields(const unsigned char *header, size_t header_len, const char *section, struct mime_buffer *out)
{
	struct mime_message *parsed;
	const char *error;
	int ret = -1;

	/* a plain block is fields up to its blank line: no parse needed */
	if (strncasecmp(section, "HEADER.FIELDS", 13) == 0)
		return derive_fields_plain(header, header_len, section, out);
	if (!mime_imap_header_is_plain(header, header_len))
		return -1;
	parsed = mime_parse_borrowed(header, header_len);
	if (parsed != NULL && mime_imap_fetch_section(parsed, header, header_len, section, out, &error) ==
				      MIME_IMAP_SECTION_OK)
		ret = 0;
	mime_message_free(&parsed);
	return ret;
}

int fetch_derive_part(struct mime_message *root, const unsigned char *raw, size_t raw_len, const char *section,
		      struct mime_buffer *out, const char **why_r)
{
	struct mime_message *node = part_find(root, section);
	const char *rest = section_rest(section);
	bool mime = strcmp(rest, "MIME") == 0, body = *rest == '\0';

	if (node != NULL && !mime && !body)
		node = is_rfc822(node) ? node->parts[0] : NULL;
	if (node == NULL) {
		mime_buffer_append(out, "", 0);
		return 0;
	}
	if (!node_in_raw(node, raw_len))
		return -1;
	if (body || strcmp(rest, "TEXT") == 0)
		mime_buffer_append(out, raw + node->body_start, node->body_end - node->body_start);
	else if (mime || strcmp(rest, "HEADER") == 0)
		mime_buffer_append(out, raw + node->header_start, node->body_start - node->header_start);
	else if (fetch_derive_fields(raw + node->header_start, node->body_start - node->header_start, rest, out) < 0) {
		*why_r = "HEADER.FIELDS of a part whose header block is not plain";
		return -1;
	}
	return 0;
}
