/* SPDX-License-Identifier: MIT */
/* Unit tests for common/mime-message: the email.message.Message API. */
#include "config.h"
#include "unit.h"
#include "mime-generator.h"
#include "mime-message.h"
#include "mime-parser.h"

#include <stdlib.h>
#include <string.h>

static struct mime_message *parse(const char *text)
{
	return mime_parse(text, strlen(text));
}

static void test_mapping_interface(void)
{
	struct mime_message *message = mime_message_new();

	CU_ASSERT_EQUAL(mime_message_len(message), 0);
	mime_message_set(message, "To", "a@example.org");
	mime_message_set(message, "to", "b@example.org");
	mime_message_set(message, "Subject", "hi");
	CU_ASSERT_EQUAL(mime_message_len(message), 3);
	CU_ASSERT_TRUE(mime_message_contains(message, "TO"));
	CU_ASSERT_FALSE(mime_message_contains(message, "cc"));
	CU_ASSERT_STRING_EQUAL(mime_message_get(message, "tO", NULL), "a@example.org");
	CU_ASSERT_STRING_EQUAL(mime_message_get(message, "cc", "fallback"), "fallback");
	CU_ASSERT_EQUAL(mime_message_count(message, "to"), 2);
	CU_ASSERT_STRING_EQUAL(mime_message_key(message, 1), "to");
	CU_ASSERT_STRING_EQUAL(mime_message_value(message, 2), "hi");
	CU_ASSERT_PTR_NULL(mime_message_key(message, 3));
	CU_ASSERT_EQUAL(mime_message_delete(message, "TO"), 2);
	CU_ASSERT_EQUAL(mime_message_len(message), 1);
	CU_ASSERT_EQUAL(mime_message_delete(message, "absent"), 0);
	CU_ASSERT_EQUAL(mime_message_replace_header(message, "subject", "new"), 0);
	CU_ASSERT_STRING_EQUAL(mime_message_key(message, 0), "Subject");
	CU_ASSERT_STRING_EQUAL(mime_message_get(message, "subject", NULL), "new");
	CU_ASSERT_EQUAL(mime_message_replace_header(message, "absent", "x"), -1);
	mime_message_free(&message);
	CU_ASSERT_PTR_NULL(message);
}

static void test_add_header_params(void)
{
	struct mime_message *message = mime_message_new();
	struct mime_header_param params[] = {
		{ "filename", "bud.gif" },
		{ "creation_date", NULL },
	};
	struct mime_header_param utf8[] = { { "filename", "caf\xc3\xa9.txt" } };

	mime_message_add_header(message, "Content-Disposition", "attachment", params, 2);
	CU_ASSERT_STRING_EQUAL(mime_message_get(message, "content-disposition", NULL),
			       "attachment; filename=\"bud.gif\"; creation-date");
	mime_message_add_header(message, "X-File", "attachment", utf8, 1);
	CU_ASSERT_STRING_EQUAL(mime_message_get(message, "x-file", NULL),
			       "attachment; filename*=utf-8''caf%C3%A9.txt");
	mime_message_add_header(message, "X-Bare", NULL, params + 1, 1);
	CU_ASSERT_STRING_EQUAL(mime_message_get(message, "x-bare", NULL), "creation-date");
	mime_message_free(&message);
}

static void test_content_type_defaults(void)
{
	struct mime_message *message = mime_message_new();
	char buffer[32];

	CU_ASSERT_STRING_EQUAL(mime_message_get_content_type(message), "text/plain");
	mime_message_set_default_type(message, "message/rfc822");
	CU_ASSERT_STRING_EQUAL(mime_message_get_default_type(message), "message/rfc822");
	CU_ASSERT_STRING_EQUAL(mime_message_get_content_type(message), "message/rfc822");
	mime_message_set(message, "Content-Type", "Text/HTML ; charset=\"UTF-8\"");
	CU_ASSERT_STRING_EQUAL(mime_message_get_content_type(message), "text/html");
	mime_message_get_content_maintype(message, buffer, sizeof(buffer));
	CU_ASSERT_STRING_EQUAL(buffer, "text");
	mime_message_get_content_subtype(message, buffer, sizeof(buffer));
	CU_ASSERT_STRING_EQUAL(buffer, "html");
	char *charset = mime_message_get_content_charset(message);
	CU_ASSERT_STRING_EQUAL(charset, "utf-8");
	free(charset);
	mime_message_replace_header(message, "content-type", "invalid");
	CU_ASSERT_STRING_EQUAL(mime_message_get_content_type(message), "text/plain");
	mime_message_free(&message);

	/* A type longer than the inline cache, on a parsed (arena) message,
	   cached, dropped on a change and cached again. */
	message = parse("Content-Type: Application/VND.openxmlformats-officedocument."
			"wordprocessingml.document; name=x\n\nbody\n");
	const char *docx = "application/vnd.openxmlformats-officedocument."
			   "wordprocessingml.document";
	CU_ASSERT_STRING_EQUAL(mime_message_get_content_type(message), docx);
	CU_ASSERT_PTR_EQUAL(mime_message_get_content_type(message),
			    mime_message_get_content_type(message));
	mime_message_set(message, "X-Other", "y");
	CU_ASSERT_STRING_EQUAL(mime_message_get_content_type(message), docx);
	mime_message_replace_header(message, "content-type", "image/png");
	CU_ASSERT_STRING_EQUAL(mime_message_get_content_type(message), "image/png");
	mime_message_free(&message);
}

static void test_params_and_rfc2231(void)
{
	struct mime_message *message = parse(
		"Content-Type: application/x-stuff;\n"
		" title*0*=us-ascii'en'This%20is%20even%20more%20;\n"
		" title*1*=%2A%2A%2Afun%2A%2A%2A%20;\n"
		" title*2=\"isn't it!\"; Name=\"a \\\"quoted\\\" name\"\n"
		"Content-Disposition: attachment; filename*=iso-8859-1''caf%E9.txt\n\n");
	struct mime_param_list list;

	CU_ASSERT_EQUAL(mime_message_get_params(message, NULL, &list), 0);
	CU_ASSERT_EQUAL(list.count, 3);
	CU_ASSERT_STRING_EQUAL(list.items[0].name, "application/x-stuff");
	CU_ASSERT_STRING_EQUAL(list.items[1].name, "name");
	CU_ASSERT_STRING_EQUAL(list.items[1].value, "a \"quoted\" name");
	CU_ASSERT_STRING_EQUAL(list.items[2].name, "title");
	CU_ASSERT_TRUE(list.items[2].rfc2231);
	CU_ASSERT_STRING_EQUAL(list.items[2].charset, "us-ascii");
	CU_ASSERT_STRING_EQUAL(list.items[2].language, "en");
	mime_header_params_free(&list);
	char *title = mime_message_get_param(message, "TITLE", NULL);
	CU_ASSERT_STRING_EQUAL(title, "This is even more ***fun*** isn't it!");
	free(title);
	char *filename = mime_message_get_filename(message);
	CU_ASSERT_STRING_EQUAL(filename, "caf\xc3\xa9.txt");
	free(filename);
	CU_ASSERT_PTR_NULL(mime_message_get_param(message, "absent", NULL));
	CU_ASSERT_EQUAL(mime_message_get_params(message, "x-absent", &list), -1);
	mime_message_free(&message);

	/* get_filename falls back to the Content-Type name */
	message = parse("Content-Type: image/gif; name=\" pic.gif \"\n\n");
	filename = mime_message_get_filename(message);
	CU_ASSERT_STRING_EQUAL(filename, "pic.gif");
	free(filename);
	mime_message_free(&message);
}

static void test_set_and_del_param(void)
{
	struct mime_message *message = mime_message_new();

	mime_message_set_param(message, "charset", "us-ascii", NULL, 1, NULL, NULL);
	CU_ASSERT_STRING_EQUAL(mime_message_get(message, "content-type", NULL),
			       "text/plain; charset=\"us-ascii\"");
	mime_message_set_param(message, "charset", "utf-8", NULL, 1, NULL, NULL);
	mime_message_set_param(message, "format", "flowed", NULL, 0, NULL, NULL);
	CU_ASSERT_STRING_EQUAL(mime_message_get(message, "content-type", NULL),
			       "text/plain; charset=\"utf-8\"; format=flowed");
	mime_message_set_param(message, "title", "caf\xc3\xa9", NULL, 1, "iso-8859-1", "fr");
	CU_ASSERT_STRING_EQUAL(mime_message_get(message, "content-type", NULL),
			       "text/plain; charset=\"utf-8\"; format=flowed; title*=iso-8859-1'fr'caf%E9");
	char *title = mime_message_get_param(message, "title", NULL);
	CU_ASSERT_STRING_EQUAL(title, "caf\xc3\xa9");
	free(title);
	mime_message_del_param(message, "format", NULL, 1);
	CU_ASSERT_STRING_EQUAL(mime_message_get(message, "content-type", NULL),
			       "text/plain; charset=\"utf-8\"; title*=iso-8859-1'fr'caf%E9");
	CU_ASSERT_EQUAL(mime_message_set_type(message, "text/html", NULL, 1), 0);
	CU_ASSERT_STRING_EQUAL(mime_message_get_content_type(message), "text/html");
	CU_ASSERT_STRING_EQUAL(mime_message_get(message, "mime-version", NULL), "1.0");
	CU_ASSERT_EQUAL(mime_message_set_type(message, "nonsense", NULL, 1), -1);
	mime_message_free(&message);
}

static void test_boundary(void)
{
	struct mime_message *message = parse(
		"X-First: 1\nContent-Type: multipart/mixed; boundary=\"abc \"; x=y\nX-Last: 2\n\n");
	char *boundary = mime_message_get_boundary(message);

	CU_ASSERT_STRING_EQUAL(boundary, "abc");
	free(boundary);
	CU_ASSERT_EQUAL(mime_message_set_boundary(message, "new"), 0);
	CU_ASSERT_STRING_EQUAL(mime_message_key(message, 1), "Content-Type");
	CU_ASSERT_STRING_EQUAL(mime_message_value(message, 1),
			       "multipart/mixed; boundary=\"new\"; x=\"y\"");
	CU_ASSERT_STRING_EQUAL(mime_message_key(message, 2), "X-Last");
	mime_message_free(&message);
	message = mime_message_new();
	CU_ASSERT_EQUAL(mime_message_set_boundary(message, "x"), -1);
	mime_message_free(&message);
}

static void test_payload_decoding(void)
{
	struct mime_message *message = parse(
		"Content-Type: multipart/mixed; boundary=b\n\n"
		"--b\nContent-Transfer-Encoding: quoted-printable\n\ncaf=C3=A9 =\nsoft=3D\n"
		"--b\nContent-Transfer-Encoding: x-uuencode\n\nbegin 644 f\n#86)C\n`\nend\n"
		"--b\nContent-Transfer-Encoding: x-uuencode\n\nnot uu at all\n"
		"--b\nContent-Transfer-Encoding: 8bit\n\nraw\n"
		"--b--\n");
	struct mime_buffer out = { 0 };

	CU_ASSERT_EQUAL(mime_message_get_payload(message, 1, &out), MIME_PAYLOAD_RESULT_MULTIPART);
	mime_message_get_payload(mime_message_get_part(message, 0), 1, &out);
	CU_ASSERT_STRING_EQUAL((char *)out.data, "caf\xc3\xa9 soft=");
	mime_buffer_reset(&out);
	mime_message_get_payload(mime_message_get_part(message, 1), 1, &out);
	CU_ASSERT_STRING_EQUAL((char *)out.data, "abc");
	mime_buffer_reset(&out);
	mime_message_get_payload(mime_message_get_part(message, 2), 1, &out);
	CU_ASSERT_STRING_EQUAL((char *)out.data, "not uu at all");
	mime_buffer_reset(&out);
	mime_message_get_payload(mime_message_get_part(message, 3), 0, &out);
	CU_ASSERT_STRING_EQUAL((char *)out.data, "raw");
	CU_ASSERT_PTR_NULL(mime_message_get_part(message, 4));
	mime_buffer_free(&out);
	mime_message_free(&message);

	message = mime_message_new();
	CU_ASSERT_EQUAL(mime_message_get_payload(message, 1, &out), MIME_PAYLOAD_RESULT_NONE);
	mime_message_free(&message);
}

static void test_set_payload_and_charset(void)
{
	struct mime_message *message = mime_message_new();
	struct mime_buffer out = { 0 };

	mime_message_set_payload(message, "caf\xc3\xa9\n", 6, "iso-8859-1");
	CU_ASSERT_STRING_EQUAL(mime_message_get(message, "mime-version", NULL), "1.0");
	CU_ASSERT_STRING_EQUAL(mime_message_get(message, "content-type", NULL),
			       "text/plain; charset=\"iso-8859-1\"");
	CU_ASSERT_STRING_EQUAL(mime_message_get(message, "content-transfer-encoding", NULL),
			       "quoted-printable");
	CU_ASSERT_STRING_EQUAL((char *)message->payload, "caf=E9\n");
	mime_message_get_payload(message, 1, &out);
	CU_ASSERT_STRING_EQUAL((char *)out.data, "caf\xe9\n");
	const struct mime_charset *charset = mime_message_get_charset(message);
	CU_ASSERT_PTR_NOT_NULL(charset);
	CU_ASSERT_STRING_EQUAL(charset->input_charset, "iso-8859-1");
	CU_ASSERT_EQUAL(charset->body_encoding, MIME_CHARSET_ENCODING_QP);
	mime_message_free(&message);

	message = mime_message_new();
	mime_message_set_payload(message, "hello", 5, "utf-8");
	CU_ASSERT_STRING_EQUAL(mime_message_get(message, "content-transfer-encoding", NULL), "base64");
	CU_ASSERT_STRING_EQUAL((char *)message->payload, "aGVsbG8=\n");
	mime_message_set_charset(message, NULL);
	CU_ASSERT_PTR_NULL(mime_message_get_charset(message));
	CU_ASSERT_STRING_EQUAL(mime_message_get(message, "content-type", NULL), "text/plain");
	mime_message_free(&message);

	message = mime_message_new();
	mime_message_set_payload(message, "plain", 5, "us-ascii");
	CU_ASSERT_STRING_EQUAL(mime_message_get(message, "content-transfer-encoding", NULL), "7bit");
	mime_message_free(&message);
	mime_buffer_free(&out);
}

static void test_attach_walk_charsets(void)
{
	struct mime_message *root = mime_message_new();
	struct mime_message *a = mime_message_new(), *b = mime_message_new(), *c = mime_message_new();

	mime_message_set(root, "Content-Type", "multipart/mixed; boundary=x");
	mime_message_set(a, "Content-Type", "text/plain; charset=UTF-8");
	mime_message_set(b, "Content-Type", "multipart/alternative; boundary=y");
	mime_message_set(c, "Content-Type", "text/html; charset=ISO-8859-1");
	CU_ASSERT_EQUAL(mime_message_attach(root, a), 0);
	CU_ASSERT_EQUAL(mime_message_attach(root, b), 0);
	CU_ASSERT_EQUAL(mime_message_attach(b, c), 0);
	CU_ASSERT_TRUE(mime_message_is_multipart(root));
	struct mime_message *order[] = { root, a, b, c };
	size_t i = 0;
	for (struct mime_message *p = mime_message_walk_next(root, NULL); p != NULL;
	     p = mime_message_walk_next(root, p))
		CU_ASSERT_PTR_EQUAL(p, order[i++]);
	CU_ASSERT_EQUAL(i, 4);
	size_t count;
	char **charsets = mime_message_get_charsets(root, &count);
	CU_ASSERT_EQUAL(count, 4);
	CU_ASSERT_PTR_NULL(charsets[0]);
	CU_ASSERT_STRING_EQUAL(charsets[1], "utf-8");
	CU_ASSERT_PTR_NULL(charsets[2]);
	CU_ASSERT_STRING_EQUAL(charsets[3], "iso-8859-1");
	for (i = 0; i < count; i++)
		free(charsets[i]);
	free(charsets);
	struct mime_message *leaf = mime_message_new();
	mime_message_set_payload(leaf, "x", 1, NULL);
	struct mime_message *extra = mime_message_new();
	CU_ASSERT_EQUAL(mime_message_attach(leaf, extra), -1);
	mime_message_free(&extra);
	mime_message_free(&leaf);
	mime_message_set_unixfrom(root, "From me");
	CU_ASSERT_STRING_EQUAL(mime_message_get_unixfrom(root), "From me");
	mime_message_free(&root);
}

static void test_as_string(void)
{
	const char *text =
		"From someone Mon Jan 1 2024\n"
		"Subject: hi\n"
		"Content-Type: multipart/mixed; boundary=\"b\"\n\n"
		"pre\n--b\n\nFrom the start\n--b--\nepi\n";
	struct mime_message *message = parse(text);
	size_t len;
	char *out = mime_message_as_string(message, 1, &len);

	CU_ASSERT_STRING_EQUAL(out, text);
	CU_ASSERT_EQUAL(len, strlen(text));
	free(out);
	out = mime_message_as_string(message, 0, NULL);
	CU_ASSERT_STRING_EQUAL(out, text + strlen("From someone Mon Jan 1 2024\n"));
	free(out);
	struct mime_generator_options options = { .mangle_from = 1, .linesep = "\r\n" };
	struct mime_buffer buffer = { 0 };
	mime_generator_write(message, &options, &buffer);
	CU_ASSERT_STRING_EQUAL((char *)buffer.data,
			       "Subject: hi\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n"
			       "pre\r\n--b\r\n\r\n>From the start\r\n--b--\r\nepi\r\n");
	mime_buffer_free(&buffer);
	mime_message_free(&message);

	/* a long header is folded at white space when asked */
	message = mime_message_new();
	mime_message_set(message, "Subject", "one two three four five six seven eight nine ten");
	options = (struct mime_generator_options){ .max_header_len = 30 };
	mime_generator_write(message, &options, &buffer);
	CU_ASSERT_STRING_EQUAL((char *)buffer.data,
			       "Subject: one two three four\n five six seven eight nine ten\n\n");
	mime_buffer_free(&buffer);
	/* a multipart without a boundary gets one */
	mime_message_free(&message);
	message = mime_message_new();
	mime_message_set(message, "Content-Type", "multipart/mixed");
	struct mime_message *part = mime_message_new();
	mime_message_set_payload(part, "x", 1, NULL);
	mime_message_attach(message, part);
	out = mime_message_as_string(message, 0, NULL);
	char *boundary = mime_message_get_boundary(message);
	CU_ASSERT_PTR_NOT_NULL(boundary);
	CU_ASSERT_PTR_NOT_NULL(strstr(out, boundary));
	free(boundary);
	free(out);
	mime_message_free(&message);
}

const char unit_suite_name[] = "mime-message";
const struct unit_test unit_tests[] = {
	{ "mapping interface", test_mapping_interface },
	{ "add_header with parameters", test_add_header_params },
	{ "content type defaults", test_content_type_defaults },
	{ "params and RFC 2231", test_params_and_rfc2231 },
	{ "set_param, del_param, set_type", test_set_and_del_param },
	{ "get_boundary and set_boundary", test_boundary },
	{ "get_payload decoding and fallbacks", test_payload_decoding },
	{ "set_payload and set_charset", test_set_payload_and_charset },
	{ "attach, walk, get_charsets", test_attach_walk_charsets },
	{ "as_string and the generator", test_as_string },
	{ NULL, NULL },
};
