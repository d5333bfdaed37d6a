/* SPDX-License-Identifier: MIT */
/* mime-message: the message tree and the API of Python's email.message.Message (compat32). */
#include "config.h"
#include "mime-message.h"
#include "mime-codec.h"
#include "mime-generator.h"

#include <assert.h>
#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const mime_defect_names[MIME_DEFECT_COUNT] = {
	[MIME_DEFECT_NO_BOUNDARY_IN_MULTIPART] = "NoBoundaryInMultipartDefect",
	[MIME_DEFECT_START_BOUNDARY_NOT_FOUND] = "StartBoundaryNotFoundDefect",
	[MIME_DEFECT_CLOSE_BOUNDARY_NOT_FOUND] = "CloseBoundaryNotFoundDefect",
	[MIME_DEFECT_FIRST_HEADER_LINE_IS_CONTINUATION] = "FirstHeaderLineIsContinuationDefect",
	[MIME_DEFECT_MISPLACED_ENVELOPE_HEADER] = "MisplacedEnvelopeHeaderDefect",
	[MIME_DEFECT_MISSING_HEADER_BODY_SEPARATOR] = "MissingHeaderBodySeparatorDefect",
	[MIME_DEFECT_MULTIPART_INVARIANT_VIOLATION] = "MultipartInvariantViolationDefect",
	[MIME_DEFECT_INVALID_MULTIPART_CONTENT_TRANSFER_ENCODING] =
		"InvalidMultipartContentTransferEncodingDefect",
	[MIME_DEFECT_INVALID_HEADER] = "InvalidHeaderDefect",
	[MIME_DEFECT_INVALID_BASE64_PADDING] = "InvalidBase64PaddingDefect",
	[MIME_DEFECT_INVALID_BASE64_CHARACTERS] = "InvalidBase64CharactersDefect",
	[MIME_DEFECT_INVALID_BASE64_LENGTH] = "InvalidBase64LengthDefect",
	[MIME_DEFECT_HEADER_MISSING_VALUE] = "HeaderMissingValueDefect",
	[MIME_DEFECT_NESTING_TOO_DEEP] = "NestingTooDeepDefect",
	[MIME_DEFECT_TOO_MANY_PARTS] = "TooManyPartsDefect",
	[MIME_DEFECT_TOO_MANY_HEADERS] = "TooManyHeadersDefect",
};

const char *mime_defect_name(enum mime_defect defect)
{
	assert((unsigned int)defect < MIME_DEFECT_COUNT);
	return mime_defect_names[defect];
}

struct mime_message *mime_message_new_in(struct mime_arena *arena, int owns_arena)
{
	struct mime_message *message = arena != NULL ? mime_arena_alloc(arena, sizeof(*message))
						     : mime_xmalloc(sizeof(*message));

	memset(message, 0, sizeof(*message));
	strcpy(message->default_type, "text/plain");
	message->arena = arena;
	message->owns_arena = owns_arena;
	return message;
}

struct mime_message *mime_message_new(void)
{
	return mime_message_new_in(NULL, 0);
}

void mime_message_release(const struct mime_message *message, void *field)
{
	if (field != NULL && (message->arena == NULL || !mime_arena_owns(message->arena, field)))
		free(field);
}

/* Frees one message's own fields and struct, not its parts. */
static void message_free_one(struct mime_message *message)
{
	struct mime_arena *arena = message->owns_arena ? message->arena : NULL;

	for (size_t i = 0; i < message->header_count; i++) {
		mime_message_release(message, message->headers[i].name);
		mime_message_release(message, message->headers[i].value);
	}
	mime_message_release(message, message->headers);
	mime_message_release(message, message->unixfrom);
	mime_message_release(message, message->payload);
	mime_message_release(message, message->parts);
	mime_message_release(message, message->preamble);
	mime_message_release(message, message->epilogue);
	mime_message_release(message, message->defects);
	if (message->content_type_cache != message->content_type_inline)
		free(message->content_type_cache);
	mime_message_release(message, message);
	mime_arena_free(&arena);
}

void mime_message_free(struct mime_message **message_p)
{
	struct mime_message *message = *message_p;

	if (message == NULL)
		return;
	/* Iterative over the tree so that deep nesting can't exhaust the stack. */
	message->parent = NULL;
	struct mime_message *current = message;
	while (current != NULL) {
		if (current->part_count > 0) {
			struct mime_message *child = current->parts[--current->part_count];
			child->parent = current;
			current = child;
			continue;
		}
		struct mime_message *parent = current->parent;
		message_free_one(current);
		current = parent;
	}
	*message_p = NULL;
}

/* Makes room for one more element in *array (count used of *alloc): in
   the arena for a parsed part (the old array stays there), else realloc. */
static void message_grow(struct mime_message *message, void **array, size_t count,
			 size_t *alloc, size_t element_size, size_t first_alloc)
{
	if (count < *alloc)
		return;
	size_t grown = *alloc == 0 ? first_alloc : *alloc * 2;
	if (message->arena != NULL) {
		void *copy = mime_arena_alloc(message->arena, grown * element_size);
		if (count > 0)
			memcpy(copy, *array, count * element_size);
		mime_message_release(message, *array);
		*array = copy;
	} else {
		*array = mime_xrealloc(*array, grown * element_size);
	}
	*alloc = grown;
}

void mime_message_add_defect(struct mime_message *message, enum mime_defect defect)
{
	message_grow(message, (void **)&message->defects, message->defect_count,
		     &message->defect_alloc, sizeof(*message->defects), 4);
	message->defects[message->defect_count++] = defect;
}

int mime_message_has_defect(const struct mime_message *message, enum mime_defect defect)
{
	for (size_t i = 0; i < message->defect_count; i++)
		if (message->defects[i] == defect)
			return 1;
	return 0;
}

static void headers_changed(struct mime_message *message)
{
	if (message->content_type_cache != message->content_type_inline)
		free(message->content_type_cache);
	message->content_type_cache = NULL;
}

size_t mime_message_len(const struct mime_message *message)
{
	return message->header_count;
}

int mime_message_contains(const struct mime_message *message, const char *name)
{
	return mime_message_get_nth(message, name, 0) != NULL;
}

const char *mime_message_get(const struct mime_message *message, const char *name,
			     const char *fallback)
{
	const char *value = mime_message_get_nth(message, name, 0);
	return value != NULL ? value : fallback;
}

const char *mime_message_get_nth(const struct mime_message *message, const char *name,
				 size_t index)
{
	/* The first bytes, OR 0x20, are equal whenever the names are equal
	   ignoring case: a cheap filter before strcasecmp. */
	unsigned char first = (unsigned char)name[0] | 0x20;
	for (size_t i = 0; i < message->header_count; i++) {
		if (((unsigned char)message->headers[i].name[0] | 0x20) == first &&
		    strcasecmp(message->headers[i].name, name) == 0 && index-- == 0)
			return message->headers[i].value;
	}
	return NULL;
}

size_t mime_message_count(const struct mime_message *message, const char *name)
{
	size_t count = 0;

	for (size_t i = 0; i < message->header_count; i++)
		if (strcasecmp(message->headers[i].name, name) == 0)
			count++;
	return count;
}

void mime_message_set(struct mime_message *message, const char *name, const char *value)
{
	mime_message_set_adopt(message, mime_xstrdup(name), mime_xstrdup(value));
}

void mime_message_set_adopt(struct mime_message *message, char *name, char *value)
{
	message_grow(message, (void **)&message->headers, message->header_count,
		     &message->header_alloc, sizeof(*message->headers), 16);
	message->headers[message->header_count].name = name;
	message->headers[message->header_count].value = value;
	message->header_count++;
	headers_changed(message);
}

size_t mime_message_delete(struct mime_message *message, const char *name)
{
	size_t kept = 0, removed = 0;
	/* name may be one of the names freed below (del msg[msg.keys()[0]]). */
	char *key = mime_xstrdup(name);

	for (size_t i = 0; i < message->header_count; i++) {
		if (strcasecmp(message->headers[i].name, key) == 0) {
			mime_message_release(message, message->headers[i].name);
			mime_message_release(message, message->headers[i].value);
			removed++;
		} else {
			message->headers[kept++] = message->headers[i];
		}
	}
	message->header_count = kept;
	headers_changed(message);
	free(key);
	return removed;
}

const char *mime_message_key(const struct mime_message *message, size_t index)
{
	return index < message->header_count ? message->headers[index].name : NULL;
}

const char *mime_message_value(const struct mime_message *message, size_t index)
{
	return index < message->header_count ? message->headers[index].value : NULL;
}

void mime_message_add_header(struct mime_message *message, const char *name, const char *value,
			     const struct mime_header_param *params, size_t param_count)
{
	struct mime_buffer text = { 0 };

	mime_buffer_append(&text, "", 0);
	if (value != NULL)
		mime_buffer_append_str(&text, value);
	for (size_t i = 0; i < param_count; i++) {
		if (text.len > 0 || value != NULL)
			mime_buffer_append_str(&text, "; ");
		/* Python spells keyword names with '_' for '-'. */
		char *param_name = mime_xstrdup(params[i].name);
		for (char *p = param_name; *p != '\0'; p++)
			if (*p == '_')
				*p = '-';
		if (params[i].value == NULL)
			mime_buffer_append_str(&text, param_name);
		else
			mime_header_param_format(&text, param_name, params[i].value, NULL, NULL, 1);
		free(param_name);
	}
	mime_message_set(message, name, (const char *)text.data);
	mime_buffer_free(&text);
}

int mime_message_replace_header(struct mime_message *message, const char *name,
				const char *value)
{
	for (size_t i = 0; i < message->header_count; i++) {
		if (strcasecmp(message->headers[i].name, name) == 0) {
			char *copy = mime_xstrdup(value); /* value may be the one replaced */
			mime_message_release(message, message->headers[i].value);
			message->headers[i].value = copy;
			headers_changed(message);
			return 0;
		}
	}
	return -1;
}

int mime_message_is_multipart(const struct mime_message *message)
{
	return message->payload_kind == MIME_PAYLOAD_PARTS;
}

void mime_message_set_unixfrom(struct mime_message *message, const char *unixfrom)
{
	char *copy = unixfrom == NULL ? NULL : mime_xstrdup(unixfrom); /* may be the old one */
	mime_message_release(message, message->unixfrom);
	message->unixfrom = copy;
}

const char *mime_message_get_unixfrom(const struct mime_message *message)
{
	return message->unixfrom;
}

int mime_message_attach(struct mime_message *message, struct mime_message *part)
{
	if (message->payload_kind == MIME_PAYLOAD_BYTES)
		return -1;
	message_grow(message, (void **)&message->parts, message->part_count, &message->part_alloc,
		     sizeof(*message->parts), 4);
	message->payload_kind = MIME_PAYLOAD_PARTS;
	part->parent = message;
	part->parent_index = message->part_count;
	message->parts[message->part_count++] = part;
	return 0;
}

struct mime_message *mime_message_get_part(const struct mime_message *message, size_t index)
{
	if (message->payload_kind != MIME_PAYLOAD_PARTS || index >= message->part_count)
		return NULL;
	return message->parts[index];
}

enum mime_payload_result mime_message_get_payload(struct mime_message *message, int decode,
						  struct mime_buffer *out)
{
	if (message->payload_kind == MIME_PAYLOAD_PARTS)
		return MIME_PAYLOAD_RESULT_MULTIPART;
	if (message->payload_kind == MIME_PAYLOAD_NONE)
		return MIME_PAYLOAD_RESULT_NONE;
	const char *cte = mime_message_get(message, "content-transfer-encoding", "");
	const unsigned char *payload = message->payload;
	size_t len = message->payload_len, start = out->len;

	if (!decode) {
		mime_buffer_append(out, payload, len);
	} else if (strcasecmp(cte, "quoted-printable") == 0) {
		mime_codec_qp_decode(payload, len, 0, out);
	} else if (strcasecmp(cte, "base64") == 0) {
		switch (mime_codec_base64_decode(payload, len, out)) {
		case MIME_BASE64_OK:
			break;
		case MIME_BASE64_BAD_PADDING:
			mime_message_add_defect(message, MIME_DEFECT_INVALID_BASE64_PADDING);
			break;
		case MIME_BASE64_BAD_CHARACTERS:
			mime_message_add_defect(message, MIME_DEFECT_INVALID_BASE64_CHARACTERS);
			break;
		case MIME_BASE64_BAD_CHARACTERS_AND_PADDING:
			mime_message_add_defect(message, MIME_DEFECT_INVALID_BASE64_CHARACTERS);
			mime_message_add_defect(message, MIME_DEFECT_INVALID_BASE64_PADDING);
			break;
		case MIME_BASE64_BAD_LENGTH:
			/* decode_b gives back the input without its line ends */
			mime_buffer_truncate(out, start);
			for (size_t i = 0; i < len; i++)
				if (payload[i] != '\r' && payload[i] != '\n')
					mime_buffer_append_byte(out, payload[i]);
			mime_message_add_defect(message, MIME_DEFECT_INVALID_BASE64_LENGTH);
			break;
		}
	} else if (strcasecmp(cte, "x-uuencode") == 0 || strcasecmp(cte, "uuencode") == 0 ||
		   strcasecmp(cte, "uue") == 0 || strcasecmp(cte, "x-uue") == 0) {
		if (mime_codec_uu_decode(payload, len, out) < 0)
			mime_buffer_append(out, payload, len);
	} else {
		mime_buffer_append(out, payload, len);
	}
	if (out->data == NULL)
		mime_buffer_append(out, "", 0);
	return MIME_PAYLOAD_RESULT_BYTES;
}

static void set_payload_bytes(struct mime_message *message, const void *data, size_t len)
{
	/* Copied first: data may be this payload or a part's, freed below. */
	unsigned char *copy = mime_xmalloc(len + 1);
	memcpy(copy, data, len);
	copy[len] = '\0';
	if (message->payload_kind == MIME_PAYLOAD_PARTS) {
		for (size_t i = 0; i < message->part_count; i++)
			mime_message_free(&message->parts[i]);
		message->part_count = 0;
	}
	mime_message_release(message, message->payload);
	message->payload = copy;
	message->payload_len = len;
	message->payload_kind = MIME_PAYLOAD_BYTES;
}

void mime_message_set_payload(struct mime_message *message, const void *payload, size_t len,
			      const char *charset)
{
	if (charset == NULL) {
		set_payload_bytes(message, payload, len);
		return;
	}
	struct mime_charset info;
	struct mime_buffer converted = { 0 };
	mime_charset_init(&info, charset);
	if (mime_charset_from_utf8(info.output_charset, payload, len, &converted) < 0)
		mime_buffer_append(&converted, payload, len);
	set_payload_bytes(message, converted.data, converted.len);
	mime_buffer_free(&converted);
	mime_message_set_charset(message, charset);
}

void mime_message_set_charset(struct mime_message *message, const char *charset)
{
	if (charset == NULL) {
		mime_message_del_param(message, "charset", NULL, 1);
		message->has_charset = 0;
		return;
	}
	mime_charset_init(&message->charset, charset);
	message->has_charset = 1;
	if (!mime_message_contains(message, "MIME-Version"))
		mime_message_add_header(message, "MIME-Version", "1.0", NULL, 0);
	if (!mime_message_contains(message, "Content-Type")) {
		struct mime_header_param param = { "charset", message->charset.output_charset };
		mime_message_add_header(message, "Content-Type", "text/plain", &param, 1);
	} else {
		mime_message_set_param(message, "charset", message->charset.output_charset, NULL, 1,
				       NULL, NULL);
	}
	if (mime_message_contains(message, "Content-Transfer-Encoding"))
		return;
	const char *cte = mime_charset_body_encoding_name(&message->charset);
	const unsigned char *payload = message->payload;
	size_t len = message->payload_kind == MIME_PAYLOAD_BYTES ? message->payload_len : 0;
	if (cte == NULL) {
		/* encoders.encode_7or8bit */
		int eight_bit = 0;
		for (size_t i = 0; i < len; i++)
			if (payload[i] >= 0x80)
				eight_bit = 1;
		mime_message_set(message, "Content-Transfer-Encoding", eight_bit ? "8bit" : "7bit");
		return;
	}
	struct mime_buffer encoded = { 0 };
	if (message->charset.body_encoding == MIME_CHARSET_ENCODING_QP)
		mime_codec_qp_encode(payload, len, "\n", &encoded);
	else
		mime_codec_base64_encode(payload, len, 76, "\n", &encoded);
	mime_buffer_append(&encoded, "", 0);
	if (message->payload_kind == MIME_PAYLOAD_BYTES)
		set_payload_bytes(message, encoded.data, encoded.len);
	mime_buffer_free(&encoded);
	mime_message_set(message, "Content-Transfer-Encoding", cte);
}

const struct mime_charset *mime_message_get_charset(const struct mime_message *message)
{
	return message->has_charset ? &message->charset : NULL;
}

const char *mime_message_get_content_type(struct mime_message *message)
{
	if (message->content_type_cache != NULL)
		return message->content_type_cache;
	const char *value = mime_message_get(message, "content-type", NULL);
	if (value == NULL)
		return message->default_type;
	const char *semicolon = strchr(value, ';');
	size_t len = semicolon == NULL ? strlen(value) : (size_t)(semicolon - value);
	while (len > 0 && mime_header_is_space((unsigned char)*value)) {
		value++;
		len--;
	}
	while (len > 0 && mime_header_is_space((unsigned char)value[len - 1]))
		len--;
	size_t slashes = 0;
	for (size_t i = 0; i < len; i++)
		if (value[i] == '/')
			slashes++;
	if (slashes != 1) {
		value = "text/plain";
		len = strlen(value);
	}
	message->content_type_cache = len < sizeof(message->content_type_inline)
		? message->content_type_inline : mime_xmalloc(len + 1);
	for (size_t i = 0; i < len; i++)
		message->content_type_cache[i] = (char)tolower((unsigned char)value[i]);
	message->content_type_cache[len] = '\0';
	return message->content_type_cache;
}

void mime_message_get_content_maintype(struct mime_message *message, char *out, size_t size)
{
	const char *type = mime_message_get_content_type(message);
	size_t len = strcspn(type, "/");
	if (len >= size)
		len = size - 1;
	memcpy(out, type, len);
	out[len] = '\0';
}

void mime_message_get_content_subtype(struct mime_message *message, char *out, size_t size)
{
	const char *type = mime_message_get_content_type(message);
	const char *slash = strchr(type, '/');
	snprintf(out, size, "%s", slash == NULL ? "" : slash + 1);
}

const char *mime_message_get_default_type(const struct mime_message *message)
{
	return message->default_type;
}

void mime_message_set_default_type(struct mime_message *message, const char *type)
{
	char copy[sizeof(message->default_type)];

	/* Through a copy: type may be this very field (get_default_type). */
	snprintf(copy, sizeof(copy), "%s", type);
	memcpy(message->default_type, copy, sizeof(copy));
	headers_changed(message);
}

int mime_message_get_params(const struct mime_message *message, const char *header,
			    struct mime_param_list *list_r)
{
	const char *value = mime_message_get(message, header != NULL ? header : "content-type",
					     NULL);
	if (value == NULL) {
		list_r->items = NULL;
		list_r->count = 0;
		return -1;
	}
	mime_header_params_parse(value, list_r);
	return 0;
}

/* get_param; with collapse, then collapse_rfc2231_value, which unquotes
   a plain value once more (get_param already unquoted it once). */
static char *param_value(const struct mime_message *message, const char *name,
			 const char *header, bool collapse)
{
	struct mime_param_list list;
	char *result = NULL;

	if (mime_message_get_params(message, header, &list) < 0)
		return NULL;
	const struct mime_param *param = mime_header_params_find(&list, name);
	if (param != NULL) {
		if (param->rfc2231)
			result = mime_header_param_collapse(param);
		else if (collapse)
			result = mime_header_unquote(param->value);
		else
			result = mime_xstrdup(param->value);
	}
	mime_header_params_free(&list);
	return result;
}

char *mime_message_get_param(const struct mime_message *message, const char *name,
			     const char *header)
{
	return param_value(message, name, header, false);
}

/* Writes an existing parameter back (_formatparam on get_params' items). */
static void format_existing(struct mime_buffer *out, const struct mime_param *param, int requote)
{
	static const char hex[] = "0123456789ABCDEF";

	if (!param->rfc2231) {
		mime_header_param_format(out, param->name, param->value, NULL, NULL, requote);
		return;
	}
	mime_buffer_printf(out, "%s*=%s'%s'", param->name,
			   param->charset != NULL ? param->charset : "",
			   param->language != NULL ? param->language : "");
	for (const unsigned char *p = (const unsigned char *)param->value; *p != '\0'; p++) {
		if (isalnum(*p) || *p == '_' || *p == '.' || *p == '-' || *p == '~') {
			mime_buffer_append_byte(out, *p);
		} else {
			mime_buffer_append_byte(out, '%');
			mime_buffer_append_byte(out, (unsigned char)hex[*p >> 4]);
			mime_buffer_append_byte(out, (unsigned char)hex[*p & 15]);
		}
	}
}

/* Replaces every field named header by one with value (del msg[h]; msg[h] = v). */
static void header_reset(struct mime_message *message, const char *header, const char *value,
			 int replace)
{
	const char *old = mime_message_get(message, header, NULL);
	if (old != NULL && strcmp(old, value) == 0)
		return;
	if (replace && mime_message_replace_header(message, header, value) == 0)
		return;
	mime_message_delete(message, header);
	mime_message_set(message, header, value);
}

void mime_message_set_param(struct mime_message *message, const char *name, const char *value,
			    const char *header, int requote, const char *charset,
			    const char *language)
{
	struct mime_buffer text = { 0 };
	const char *field = header != NULL ? header : "Content-Type";
	const char *current = mime_message_get(message, field, NULL);
	char *existing = mime_message_get_param(message, name, field);

	mime_buffer_append(&text, "", 0);
	if (existing == NULL || existing[0] == '\0') {
		if (current == NULL && strcasecmp(field, "content-type") == 0)
			current = "text/plain";
		if (current != NULL && current[0] != '\0') {
			mime_buffer_append_str(&text, current);
			mime_buffer_append_str(&text, "; ");
		}
		mime_header_param_format(&text, name, value, charset, language, requote);
	} else {
		struct mime_param_list list;
		mime_message_get_params(message, field, &list);
		for (size_t i = 0; i < list.count; i++) {
			if (text.len > 0)
				mime_buffer_append_str(&text, "; ");
			if (i > 0 && strcasecmp(list.items[i].name, name) == 0)
				mime_header_param_format(&text, name, value, charset, language, requote);
			else if (i == 0)
				mime_buffer_append_str(&text, list.items[0].name);
			else
				format_existing(&text, &list.items[i], requote);
		}
		mime_header_params_free(&list);
	}
	header_reset(message, field, (const char *)text.data, 0);
	free(existing);
	mime_buffer_free(&text);
}

void mime_message_del_param(struct mime_message *message, const char *name, const char *header,
			    int requote)
{
	const char *field = header != NULL ? header : "content-type";
	struct mime_param_list list;
	struct mime_buffer text = { 0 };

	if (mime_message_get_params(message, field, &list) < 0)
		return;
	mime_buffer_append(&text, "", 0);
	for (size_t i = 0; i < list.count; i++) {
		if (i > 0 && strcasecmp(list.items[i].name, name) == 0)
			continue;
		if (text.len > 0)
			mime_buffer_append_str(&text, "; ");
		if (i == 0)
			mime_buffer_append_str(&text, list.items[0].name);
		else
			format_existing(&text, &list.items[i], requote);
	}
	mime_header_params_free(&list);
	header_reset(message, field, (const char *)text.data, 0);
	mime_buffer_free(&text);
}

int mime_message_set_type(struct mime_message *message, const char *type, const char *header,
			  int requote)
{
	const char *field = header != NULL ? header : "Content-Type";
	struct mime_param_list list;
	struct mime_buffer text = { 0 };

	if (strchr(type, '/') == NULL || strchr(type, '/') != strrchr(type, '/'))
		return -1;
	if (strcasecmp(field, "content-type") == 0) {
		mime_message_delete(message, "mime-version");
		mime_message_set(message, "MIME-Version", "1.0");
	}
	if (mime_message_get_params(message, field, &list) < 0) {
		mime_message_set(message, field, type);
		return 0;
	}
	mime_buffer_append_str(&text, type);
	for (size_t i = 1; i < list.count; i++) {
		mime_buffer_append_str(&text, "; ");
		format_existing(&text, &list.items[i], requote);
	}
	mime_header_params_free(&list);
	mime_message_delete(message, field);
	mime_message_set(message, field, (const char *)text.data);
	mime_buffer_free(&text);
	return 0;
}

/* Strips ASCII white space at both ends (right only with right_only). */
static char *strip_text(char *text, int right_only)
{
	size_t len = strlen(text), start = 0;

	while (len > 0 && mime_header_is_space((unsigned char)text[len - 1]))
		len--;
	text[len] = '\0';
	if (!right_only) {
		while (start < len && mime_header_is_space((unsigned char)text[start]))
			start++;
		memmove(text, text + start, len - start + 1);
	}
	return text;
}

/* get_param then collapse_rfc2231_value. */
static char *collapsed_param(const struct mime_message *message, const char *name,
			     const char *header)
{
	return param_value(message, name, header, true);
}

char *mime_message_get_filename(const struct mime_message *message)
{
	char *name = collapsed_param(message, "filename", "content-disposition");

	if (name == NULL)
		name = collapsed_param(message, "name", "content-type");
	return name == NULL ? NULL : strip_text(name, 0);
}

char *mime_message_get_boundary(const struct mime_message *message)
{
	char *boundary = collapsed_param(message, "boundary", "content-type");

	return boundary == NULL ? NULL : strip_text(boundary, 1);
}

int mime_message_set_boundary(struct mime_message *message, const char *boundary)
{
	struct mime_param_list list;
	struct mime_buffer text = { 0 };
	int found = 0;

	if (mime_message_get_params(message, "content-type", &list) < 0)
		return -1;
	mime_buffer_append_str(&text, list.items[0].name);
	for (size_t i = 1; i < list.count; i++) {
		mime_buffer_append_str(&text, "; ");
		if (strcasecmp(list.items[i].name, "boundary") == 0) {
			mime_buffer_printf(&text, "boundary=\"%s\"", boundary);
			found = 1;
		} else if (list.items[i].value[0] == '\0' && !list.items[i].rfc2231) {
			mime_buffer_append_str(&text, list.items[i].name);
		} else {
			format_existing(&text, &list.items[i], 1);
		}
	}
	if (!found)
		mime_buffer_printf(&text, "; boundary=\"%s\"", boundary);
	mime_header_params_free(&list);
	for (size_t i = 0; i < message->header_count; i++) {
		if (strcasecmp(message->headers[i].name, "content-type") == 0) {
			mime_message_release(message, message->headers[i].value);
			message->headers[i].value = mime_xstrdup((const char *)text.data);
		}
	}
	headers_changed(message);
	mime_buffer_free(&text);
	return 0;
}

char *mime_message_get_content_charset(const struct mime_message *message)
{
	struct mime_param_list list;
	char *result = NULL;

	if (mime_message_get_params(message, "content-type", &list) < 0)
		return NULL;
	const struct mime_param *param = mime_header_params_find(&list, "charset");
	if (param != NULL) {
		if (param->rfc2231) {
			/* str(bytes, charset) strictly; the raw text when that fails */
			struct mime_buffer text = { 0 };
			const char *charset = param->charset != NULL && param->charset[0] != '\0' ?
				param->charset : "us-ascii";
			if (mime_charset_to_utf8(charset, param->value, strlen(param->value), &text) ==
			    MIME_CHARSET_CONVERTED) {
				mime_buffer_append(&text, "", 0);
				result = mime_buffer_steal(&text, NULL);
			} else {
				mime_buffer_free(&text);
				result = mime_xstrdup(param->value);
			}
		} else {
			result = mime_xstrdup(param->value);
		}
		for (char *p = result; *p != '\0'; p++) {
			if ((unsigned char)*p >= 0x80) {
				free(result);
				result = NULL;
				break;
			}
			*p = (char)tolower((unsigned char)*p);
		}
	}
	mime_header_params_free(&list);
	return result;
}

struct mime_message *mime_message_walk_next(struct mime_message *root,
					    struct mime_message *current)
{
	if (current == NULL)
		return root;
	if (current->payload_kind == MIME_PAYLOAD_PARTS && current->part_count > 0)
		return current->parts[0];
	while (current != root) {
		struct mime_message *parent = current->parent;
		/* parts are searched from the end: walks go forward, so the
		   next sibling is found quickly via the cached index */
		size_t index = current->parent_index;
		if (index >= parent->part_count || parent->parts[index] != current) {
			for (index = 0; index < parent->part_count; index++)
				if (parent->parts[index] == current)
					break;
		}
		if (index + 1 < parent->part_count)
			return parent->parts[index + 1];
		current = parent;
	}
	return NULL;
}

char **mime_message_get_charsets(struct mime_message *message, size_t *count_r)
{
	char **charsets = NULL;
	size_t count = 0, alloc = 0;

	for (struct mime_message *part = mime_message_walk_next(message, NULL); part != NULL;
	     part = mime_message_walk_next(message, part)) {
		if (count == alloc) {
			alloc = alloc == 0 ? 4 : alloc * 2;
			charsets = mime_xrealloc(charsets, alloc * sizeof(*charsets));
		}
		charsets[count++] = mime_message_get_content_charset(part);
	}
	*count_r = count;
	return charsets;
}

char *mime_message_as_string(struct mime_message *message, int unixfrom, size_t *len_r)
{
	struct mime_generator_options options = { .unixfrom = unixfrom };
	struct mime_buffer out = { 0 };

	mime_generator_write(message, &options, &out);
	return mime_buffer_steal(&out, len_r);
}

static void describe_bytes(struct mime_buffer *out, const char *label, const void *data,
			   size_t len, size_t depth)
{
	const unsigned char *bytes = data;

	mime_buffer_printf(out, "%*s%s", (int)(depth * 2), "", label);
	if (data == NULL) {
		mime_buffer_append_str(out, "None\n");
		return;
	}
	mime_buffer_append_byte(out, '"');
	for (size_t i = 0; i < len; i++) {
		if (bytes[i] >= 0x20 && bytes[i] < 0x7f && bytes[i] != '\\')
			mime_buffer_append_byte(out, bytes[i]);
		else
			mime_buffer_printf(out, "\\x%02x", bytes[i]);
	}
	mime_buffer_append_str(out, "\"\n");
}

void mime_message_describe(const struct mime_message *message, int offsets,
			   struct mime_buffer *out)
{
	const struct mime_message *root = message;

	for (const struct mime_message *part = root; part != NULL;
	     part = mime_message_walk_next((struct mime_message *)root, (struct mime_message *)part)) {
		size_t depth = 0;
		for (const struct mime_message *p = part; p != root; p = p->parent)
			depth++;
		mime_buffer_printf(out, "%*spart default=%s kind=%d parts=%zu\n", (int)(depth * 2), "",
				   part->default_type, (int)part->payload_kind, part->part_count);
		if (part->unixfrom != NULL)
			describe_bytes(out, "unixfrom=", part->unixfrom, strlen(part->unixfrom), depth);
		for (size_t i = 0; i < part->header_count; i++) {
			describe_bytes(out, "name=", part->headers[i].name,
				       strlen(part->headers[i].name), depth);
			describe_bytes(out, "value=", part->headers[i].value,
				       strlen(part->headers[i].value), depth);
		}
		if (part->payload_kind == MIME_PAYLOAD_BYTES)
			describe_bytes(out, "payload=", part->payload, part->payload_len, depth);
		describe_bytes(out, "preamble=", part->preamble, part->preamble_len, depth);
		describe_bytes(out, "epilogue=", part->epilogue, part->epilogue_len, depth);
		for (size_t i = 0; i < part->defect_count; i++)
			mime_buffer_printf(out, "%*sdefect=%s\n", (int)(depth * 2), "",
					   mime_defect_name(part->defects[i]));
		if (offsets && part->has_offsets)
			mime_buffer_printf(out, "%*soffsets=%zu,%zu,%zu\n", (int)(depth * 2), "",
					   part->header_start, part->body_start, part->body_end);
	}
}
