/* SPDX-License-Identifier: MIT */
/* ctl-inspect: "imapcachectl inspect", how the MIME library understands one message. */
#include "config.h"
#include "ctl-inspect.h"
#include "mime-buffer.h"
#include "mime-charset.h"
#include "mime-header.h"
#include "mime-imap.h"
#include "mime-message.h"
#include "mime-parser.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CTL_INSPECT_CHUNK (64 * 1024) /* fed to the parser in pieces, as the daemon does */

const char ctl_inspect_usage[] =
	"inspect [--json | --imap ITEM | --section SPEC | --binary SPEC] FILE\n"
	"      show how a message (FILE, or - for stdin) is parsed; --imap prints\n"
	"      ENVELOPE, BODYSTRUCTURE or BODY; --section the bytes of BODY[SPEC]\n"
	"      (\"1.MIME\", \"HEADER.FIELDS (FROM)\", ...); --binary those of BINARY[SPEC]";

/* Appends text as a JSON string: valid UTF-8 as it is, each byte of an
   invalid sequence as \udcXX (how Python's surrogateescape shows it). */
static void json_string(struct mime_buffer *out, const void *data, size_t len)
{
	const unsigned char *text = data;
	size_t i = 0;

	if (data == NULL) {
		mime_buffer_append_str(out, "null");
		return;
	}
	mime_buffer_append_byte(out, '"');
	while (i < len) {
		unsigned char ch = text[i];
		if (ch < 0x80) {
			if (ch == '"' || ch == '\\') {
				mime_buffer_append_byte(out, '\\');
				mime_buffer_append_byte(out, ch);
			} else if (ch < 0x20 || ch == 0x7f) {
				mime_buffer_printf(out, "\\u%04x", ch);
			} else {
				mime_buffer_append_byte(out, ch);
			}
			i++;
			continue;
		}
		size_t bad;
		size_t valid = mime_charset_utf8_sequence(text + i, len - i, &bad);

		if (valid > 0) {
			mime_buffer_append(out, text + i, valid);
			i += valid;
		} else {
			mime_buffer_printf(out, "\\udc%02x", ch);
			i++;
		}
	}
	mime_buffer_append_byte(out, '"');
}

static void json_cstring(struct mime_buffer *out, const char *text)
{
	json_string(out, text, text == NULL ? 0 : strlen(text));
}

static void json_defects(struct mime_buffer *out, const struct mime_message *message)
{
	mime_buffer_append_byte(out, '[');
	for (size_t i = 0; i < message->defect_count; i++) {
		if (i > 0)
			mime_buffer_append_str(out, ", ");
		json_cstring(out, mime_defect_name(message->defects[i]));
	}
	mime_buffer_append_byte(out, ']');
}

static void sha256_hex(const void *data, size_t len, char hex[65])
{
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned int digest_len = 0;

	EVP_Digest(data, len, digest, &digest_len, EVP_sha256(), NULL);
	for (unsigned int i = 0; i < digest_len && i < 32; i++)
		snprintf(hex + i * 2, 3, "%02x", digest[i]);
	hex[64] = '\0';
}

/* The IMAP section of each part, in walk order (NULL: not an IMAP part). */
struct part_section {
	struct mime_message *part;
	char *section;
};

static struct part_section *number_parts(struct mime_message *root, size_t *count_r)
{
	struct part_section *list = NULL;
	size_t count = 0, alloc = 0;

	for (struct mime_message *part = mime_message_walk_next(root, NULL); part != NULL;
	     part = mime_message_walk_next(root, part)) {
		if (count == alloc) {
			alloc = alloc == 0 ? 16 : alloc * 2;
			list = mime_xrealloc(list, alloc * sizeof(*list));
		}
		list[count].part = part;
		list[count].section = mime_imap_part_section(part);
		count++;
	}
	*count_r = count;
	return list;
}

static void inspect_json(struct mime_message *root, const unsigned char *raw, size_t len,
			 struct mime_buffer *out)
{
	size_t count;
	struct part_section *parts = number_parts(root, &count);
	struct mime_buffer text = { 0 };

	/* Decoding first: it records base64 defects, as get_payload does. */
	struct mime_buffer *payloads = mime_xmalloc(count * sizeof(*payloads));
	for (size_t i = 0; i < count; i++) {
		memset(&payloads[i], 0, sizeof(payloads[i]));
		mime_message_get_payload(parts[i].part, 1, &payloads[i]);
	}
	mime_buffer_append_str(out, "{\n  \"envelope\": ");
	mime_imap_envelope(root, &text);
	json_string(out, text.data, text.len);
	mime_buffer_reset(&text);
	mime_buffer_append_str(out, ",\n  \"bodystructure\": ");
	mime_imap_bodystructure(root, raw, len, 1, &text);
	json_string(out, text.data, text.len);
	mime_buffer_append_str(out, ",\n  \"defects\": ");
	json_defects(out, root);
	mime_buffer_append_str(out, ",\n  \"parts\": [");
	for (size_t i = 0; i < count; i++) {
		struct mime_message *part = parts[i].part;
		mime_buffer_append_str(out, i == 0 ? "\n    {" : ",\n    {");
		mime_buffer_append_str(out, "\"section\": ");
		json_cstring(out, parts[i].section);
		mime_buffer_append_str(out, ", \"content_type\": ");
		json_cstring(out, mime_message_get_content_type(part));
		mime_buffer_append_str(out, ", \"params\": {");
		struct mime_param_list params;
		if (mime_message_get_params(part, NULL, &params) == 0) {
			for (size_t k = 1; k < params.count; k++) {
				if (k > 1)
					mime_buffer_append_str(out, ", ");
				json_cstring(out, params.items[k].name);
				mime_buffer_append_str(out, ": ");
				if (params.items[k].rfc2231) {
					char *value = mime_header_param_collapse(&params.items[k]);
					json_cstring(out, value);
					free(value);
				} else {
					json_cstring(out, params.items[k].value);
				}
			}
			mime_header_params_free(&params);
		}
		mime_buffer_append_str(out, "}, \"filename\": ");
		char *value = mime_message_get_filename(part);
		json_cstring(out, value);
		free(value);
		mime_buffer_append_str(out, ", \"boundary\": ");
		value = mime_message_get_boundary(part);
		json_cstring(out, value);
		free(value);
		mime_buffer_append_str(out, ", \"charset\": ");
		value = mime_message_get_content_charset(part);
		json_cstring(out, value);
		free(value);
		mime_buffer_append_str(out, ", \"cte\": ");
		const char *cte = mime_message_get(part, "content-transfer-encoding", NULL);
		if (cte == NULL) {
			mime_buffer_append_str(out, "null");
		} else {
			char *unfolded = mime_header_unfold(cte, strlen(cte));
			size_t start = 0, end = strlen(unfolded);
			while (start < end && mime_header_is_space((unsigned char)unfolded[start]))
				start++;
			while (end > start && mime_header_is_space((unsigned char)unfolded[end - 1]))
				end--;
			for (size_t k = start; k < end; k++)
				if (unfolded[k] >= 'A' && unfolded[k] <= 'Z')
					unfolded[k] = (char)(unfolded[k] - 'A' + 'a');
			json_string(out, unfolded + start, end - start);
			free(unfolded);
		}
		mime_buffer_printf(out, ", \"is_multipart\": %s",
				   mime_message_is_multipart(part) ? "true" : "false");
		mime_buffer_append_str(out, ", \"defects\": ");
		json_defects(out, part);
		mime_buffer_append_str(out, ", \"payload_sha256\": ");
		if (part->payload_kind == MIME_PAYLOAD_BYTES) {
			char hex[65];
			sha256_hex(payloads[i].data, payloads[i].len, hex);
			json_cstring(out, hex);
		} else {
			mime_buffer_append_str(out, "null");
		}
		mime_buffer_append_byte(out, '}');
	}
	mime_buffer_append_str(out, "\n  ]\n}\n");
	for (size_t i = 0; i < count; i++) {
		mime_buffer_free(&payloads[i]);
		free(parts[i].section);
	}
	free(payloads);
	free(parts);
	mime_buffer_free(&text);
}

static void inspect_text(struct mime_message *root, const unsigned char *raw, size_t len,
			 struct mime_buffer *out)
{
	size_t count;
	struct part_section *parts = number_parts(root, &count);
	struct mime_buffer text = { 0 };

	mime_buffer_append_str(out, "envelope: ");
	mime_imap_envelope(root, out);
	mime_buffer_append_str(out, "\nbodystructure: ");
	mime_imap_bodystructure(root, raw, len, 1, out);
	mime_buffer_append_str(out, "\nparts:\n");
	for (size_t i = 0; i < count; i++) {
		struct mime_message *part = parts[i].part;
		size_t depth = 0;
		for (struct mime_message *p = part->parent; p != NULL; p = p->parent)
			depth++;
		mime_buffer_reset(&text);
		mime_message_get_payload(part, 1, &text);
		mime_buffer_printf(out, "%*s%s %s", (int)(depth * 2 + 2), "",
				   parts[i].section == NULL ? "-" :
				   parts[i].section[0] == '\0' ? "(root)" : parts[i].section,
				   mime_message_get_content_type(part));
		char *value = mime_message_get_content_charset(part);
		if (value != NULL)
			mime_buffer_printf(out, " charset=%s", value);
		free(value);
		value = mime_message_get_filename(part);
		if (value != NULL)
			mime_buffer_printf(out, " filename=\"%s\"", value);
		free(value);
		if (part->payload_kind == MIME_PAYLOAD_BYTES)
			mime_buffer_printf(out, ", %zu bytes decoded", text.len);
		for (size_t k = 0; k < part->defect_count; k++)
			mime_buffer_printf(out, "%s%s", k == 0 ? ", defects: " : " ",
					   mime_defect_name(part->defects[k]));
		mime_buffer_append_byte(out, '\n');
	}
	for (size_t i = 0; i < count; i++)
		free(parts[i].section);
	free(parts);
	mime_buffer_free(&text);
}

int ctl_inspect_run(int argc, char **argv, FILE *out, FILE *err)
{
	int json = 0;
	const char *path = NULL, *section = NULL, *binary = NULL, *imap = NULL;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0) {
			json = 1;
		} else if ((strcmp(argv[i], "--section") == 0 || strcmp(argv[i], "--binary") == 0 ||
			    strcmp(argv[i], "--imap") == 0) &&
			   i + 1 < argc) {
			if (argv[i][2] == 'i')
				imap = argv[++i];
			else if (argv[i][2] == 's')
				section = argv[++i];
			else
				binary = argv[++i];
		} else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			fprintf(out, "usage: imapcachectl %s\n", ctl_inspect_usage);
			return 0;
		} else if (argv[i][0] == '-' && argv[i][1] != '\0') {
			fprintf(err, "imapcachectl inspect: unknown option %s\nusage: imapcachectl %s\n",
				argv[i], ctl_inspect_usage);
			return 64;
		} else if (path == NULL) {
			path = argv[i];
		} else {
			fprintf(err, "imapcachectl inspect: one FILE only (got %s and %s)\n", path, argv[i]);
			return 64;
		}
	}
	if (json + (section != NULL) + (binary != NULL) + (imap != NULL) > 1) {
		fprintf(err, "imapcachectl inspect: --json, --imap, --section and --binary exclude each other\n");
		return 64;
	}
	if (imap != NULL && strcasecmp(imap, "ENVELOPE") != 0 && strcasecmp(imap, "BODY") != 0 &&
	    strcasecmp(imap, "BODYSTRUCTURE") != 0) {
		fprintf(err, "imapcachectl inspect: --imap takes ENVELOPE, BODYSTRUCTURE or BODY, not %s\n",
			imap);
		return 64;
	}
	if (path == NULL) {
		fprintf(err, "imapcachectl inspect: no FILE given\nusage: imapcachectl %s\n",
			ctl_inspect_usage);
		return 64;
	}
	FILE *file = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
	if (file == NULL) {
		fprintf(err, "imapcachectl inspect: cannot open %s: %s\n", path, strerror(errno));
		return 66;
	}
	/* The whole message is kept for the IMAP views, so the tree borrows
	   its bodies from it rather than copying them. */
	struct mime_buffer raw = { 0 };
	unsigned char *chunk = mime_xmalloc(CTL_INSPECT_CHUNK);
	int status = 0;
	size_t got;
	while ((got = fread(chunk, 1, CTL_INSPECT_CHUNK, file)) > 0) {
		if (got > MIME_PARSER_DEFAULT_MAX_SIZE - raw.len) {
			fprintf(err, "imapcachectl inspect: %s: message is larger than the parser's "
				"size limit\n", path);
			status = 65;
			break;
		}
		mime_buffer_append(&raw, chunk, got);
	}
	if (status == 0 && ferror(file)) {
		fprintf(err, "imapcachectl inspect: cannot read %s: %s\n", path, strerror(errno));
		status = 74;
	}
	if (file != stdin)
		fclose(file);
	free(chunk);
	struct mime_message *message = NULL;
	const char *error = NULL;
	if (status == 0)
		message = mime_parse_borrowed(raw.data, raw.len);
	if (status == 0) {
		struct mime_buffer report = { 0 };
		if (imap != NULL && strcasecmp(imap, "ENVELOPE") == 0) {
			mime_imap_envelope(message, &report);
		} else if (imap != NULL) {
			mime_imap_bodystructure(message, raw.data, raw.len,
						strcasecmp(imap, "BODYSTRUCTURE") == 0, &report);
		} else if (section != NULL || binary != NULL) {
			const char *spec = section != NULL ? section : binary;
			enum mime_imap_section_result result = section != NULL ?
				mime_imap_fetch_section(message, raw.data, raw.len, spec, &report, &error) :
				mime_imap_fetch_binary(message, raw.data, raw.len, spec, &report, &error);
			if (result != MIME_IMAP_SECTION_OK) {
				fprintf(err, "imapcachectl inspect: %s[%s]: %s\n",
					section != NULL ? "BODY" : "BINARY", spec, error);
				status = result == MIME_IMAP_SECTION_BAD_SYNTAX ? 64 : 65;
			}
		} else if (json)
			inspect_json(message, raw.data, raw.len, &report);
		else
			inspect_text(message, raw.data, raw.len, &report);
		if (status == 0 && (fwrite(report.data, 1, report.len, out) != report.len ||
				    fflush(out) != 0)) {
			fprintf(err, "imapcachectl inspect: cannot write the report: %s\n", strerror(errno));
			status = 74;
		}
		mime_buffer_free(&report);
	}
	mime_message_free(&message);
	mime_buffer_free(&raw);
	return status;
}
