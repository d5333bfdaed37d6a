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

/* ---- header blocks Dovecot and our library read alike ---- */

static bool is_field_name_byte(unsigned char c)
{
	return c > ' ' && c < 0x7f && c != ':';
}

bool fetch_derive_header_is_plain(const unsigned char *data, size_t len)
{
	size_t pos = 0;

	while (pos < len) {
		const unsigned char *lf = memchr(data + pos, '\n', len - pos);
		size_t end, line_len;
		const unsigned char *line = data + pos, *colon;

		if (lf == NULL)
			return false;
		end = (size_t)(lf - data);
		if (end == pos || data[end - 1] != '\r')
			return false;
		line_len = end - 1 - pos;
		if (line_len == 0)
			return end + 1 == len;
		if (memchr(line, '\r', line_len) != NULL || memchr(line, '\0', line_len) != NULL)
			return false;
		if (line[0] == ' ' || line[0] == '\t') {
			if (pos == 0)
				return false;
		} else {
			colon = memchr(line, ':', line_len);
			if (colon == NULL || colon == line)
				return false;
			for (const unsigned char *c = line; c < colon; c++)
				if (!is_field_name_byte(*c))
					return false;
		}
		pos = end + 1;
	}
	return false;
}

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
	while (*cte == ' ' || *cte == '\t')
		cte++;
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

/* Whether no node of the tree has an encoding to undo: BINARY[] of such
   a message is the message as it is. */
static bool tree_is_identity(const struct mime_message *node)
{
	if (binary_encoding_of(node) != BINARY_IDENTITY)
		return false;
	for (size_t i = 0; node->payload_kind == MIME_PAYLOAD_PARTS && i < node->part_count; i++)
		if (!tree_is_identity(node->parts[i]))
			return false;
	return true;
}

/* Whether bytes decoded (or sent as they are) are what Dovecot sends, and
   sets *converted_r (base64 and quoted-printable: Dovecot then sends
   "~{n}"). A part sent as it is must hold no 0x80: Dovecot's BODY[], where
   the stored message came from, writes a NUL as 0x80, and BINARY sends
   the NUL (in "~{n}"), so a stored 0x80 can't tell which it was. */
static bool binary_is_plain(const struct mime_message *leaf, const unsigned char *body, size_t body_len,
			    bool *converted_r, const char **why_r)
{
	*converted_r = false;
	switch (binary_encoding_of(leaf)) {
	case BINARY_IDENTITY:
		*why_r = "BINARY of a part with a 0x80 byte (a NUL upstream?)";
		return memchr(body, 0x80, body_len) == NULL && memchr(body, '\0', body_len) == NULL;
	case BINARY_BASE64:
		*converted_r = true;
		*why_r = "BINARY of base64 not plain";
		return base64_is_plain(body, body_len);
	case BINARY_QP:
		*converted_r = true;
		*why_r = "BINARY of quoted-printable not plain";
		return qp_is_plain(body, body_len);
	default:
		*why_r = "BINARY of an unknown Content-Transfer-Encoding";
		return false;
	}
}

int fetch_derive_binary(struct mime_message *root, const unsigned char *raw, size_t raw_len, const char *section,
			struct mime_buffer *out, bool *converted_r, const char **why_r)
{
	struct mime_message *leaf = part_find(root, section);
	const unsigned char *body;
	size_t body_len;

	*converted_r = false;
	if (leaf == NULL) {
		mime_buffer_append(out, "", 0);
		return 0;
	}
	if (!node_in_raw(leaf, raw_len))
		return -1;
	body = *section == '\0' ? raw : raw + leaf->body_start;
	body_len = *section == '\0' ? raw_len : leaf->body_end - leaf->body_start;
	if (*section == '\0' || leaf->payload_kind != MIME_PAYLOAD_BYTES) {
		/* Dovecot decodes every part inside: local when none is encoded */
		*why_r = !tree_is_identity(leaf) ? "BINARY of a message or multipart with an encoded part" :
			      "BINARY of a message or multipart with a 0x80 byte (a NUL upstream?)";
		if (!tree_is_identity(leaf) || memchr(body, 0x80, body_len) != NULL || memchr(body, '\0', body_len) != NULL)
			return -1;
		*why_r = NULL;
		mime_buffer_append(out, body, body_len);
		return 0;
	}
	if (!binary_is_plain(leaf, body, body_len, converted_r, why_r))
		return -1;
	*why_r = NULL;
	if (binary_encoding_of(leaf) == BINARY_BASE64)
		mime_codec_base64_decode(body, body_len, out);
	else if (binary_encoding_of(leaf) == BINARY_QP)
		mime_codec_qp_decode(body, body_len, 0, out);
	else
		mime_buffer_append(out, body, body_len);
	return 0;
}

/* ---- sections ---- */

int fetch_derive_fields(const unsigned char *header, size_t header_len, const char *section, struct mime_buffer *out)
{
	struct mime_message *parsed;
	const char *error;
	int ret = -1;

	if (!fetch_derive_header_is_plain(header, header_len))
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
