/* SPDX-License-Identifier: MIT */
/* Unit tests for common/mime-message: the email.message.Message API. */
#include "config.h"
#include "unit.h"
#include "mime-generator.h"
#include "mime-message.h"
#include "mime-parser.h"

#include <stdio.h>
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
	/* its own value back: no copy onto itself */
	mime_message_set_default_type(message, mime_message_get_default_type(message));
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

/* --- ownership: the same changes to a built, a parsed and a borrowed tree --- */

/* A root multipart with a base64 leaf (bad padding: decoding records a
   defect) and a nested multipart holding an 8-bit HTML leaf. The blank
   line after "--inner--" makes the inner epilogue "", so the parsed tree
   generates these bytes exactly. */
static const char matrix_text[] =
	"From: Ann <ann@example.org>\n"
	"Subject: matrix\n"
	"MIME-Version: 1.0\n"
	"Content-Type: multipart/mixed; boundary=\"outer\"\n"
	"\n"
	"--outer\n"
	"Content-Type: text/plain; charset=\"us-ascii\"; format=flowed\n"
	"Content-Transfer-Encoding: base64\n"
	"\n"
	"aGVsbG8gd29ybGQ\n"
	"--outer\n"
	"Content-Type: multipart/alternative; boundary=\"inner\"\n"
	"\n"
	"--inner\n"
	"Content-Type: text/html\n"
	"\n"
	"<p>caf\xc3\xa9</p>\n"
	"--inner--\n"
	"\n"
	"--outer--\n";

enum tree_kind {
	TREE_BUILT,     /* mime_message_new and the API */
	TREE_PARSED,    /* mime_parse */
	TREE_BORROWED,  /* mime_parse_borrowed over an exact-size copy */
	TREE_KIND_COUNT,
};

static const char *const tree_kind_names[TREE_KIND_COUNT] = { "built", "parsed", "borrowed" };

/* A tree and what must outlive it (the borrowed tree's input). */
struct tree {
	struct mime_message *root;
	char *input;
};

static struct mime_message *built_leaf(const char *content_type, const char *cte,
				       const char *payload)
{
	struct mime_message *leaf = mime_message_new();

	mime_message_set(leaf, "Content-Type", content_type);
	if (cte != NULL)
		mime_message_set(leaf, "Content-Transfer-Encoding", cte);
	mime_message_set_payload(leaf, payload, strlen(payload), NULL);
	return leaf;
}

static struct tree tree_make(enum tree_kind kind)
{
	struct tree tree = { NULL, NULL };
	size_t len = sizeof(matrix_text) - 1;

	switch (kind) {
	case TREE_BUILT: {
		struct mime_message *root = mime_message_new();
		mime_message_set(root, "From", "Ann <ann@example.org>");
		mime_message_set(root, "Subject", "matrix");
		mime_message_set(root, "MIME-Version", "1.0");
		mime_message_set(root, "Content-Type", "multipart/mixed; boundary=\"outer\"");
		CU_ASSERT_EQUAL(mime_message_attach(root, built_leaf(
			"text/plain; charset=\"us-ascii\"; format=flowed", "base64",
			"aGVsbG8gd29ybGQ")), 0);
		struct mime_message *inner = mime_message_new();
		mime_message_set(inner, "Content-Type", "multipart/alternative; boundary=\"inner\"");
		CU_ASSERT_EQUAL(mime_message_attach(inner, built_leaf("text/html", NULL,
								      "<p>caf\xc3\xa9</p>")), 0);
		CU_ASSERT_EQUAL(mime_message_attach(root, inner), 0);
		tree.root = root;
		break;
	}
	case TREE_PARSED:
		tree.root = mime_parse(matrix_text, len);
		break;
	case TREE_BORROWED:
		/* No NUL after the input: ASan sees a read past a payload. */
		tree.input = malloc(len);
		memcpy(tree.input, matrix_text, len);
		tree.root = mime_parse_borrowed(tree.input, len);
		break;
	case TREE_KIND_COUNT:
		break;
	}
	return tree;
}

static void tree_free(struct tree *tree)
{
	mime_message_free(&tree->root);
	CU_ASSERT_PTR_NULL(tree->root);
	free(tree->input);
	tree->input = NULL;
}

/* The nodes the changes are applied to. */
enum target {
	TARGET_ROOT,          /* the outer multipart */
	TARGET_LEAF,          /* part 1, the base64 text leaf */
	TARGET_NESTED,        /* part 2, the inner multipart */
	TARGET_NESTED_LEAF,   /* part 2.1, the HTML leaf */
	TARGET_COUNT,
};

static const char *const target_names[TARGET_COUNT] = { "root", "1", "2", "2.1" };

static struct mime_message *tree_target(struct mime_message *root, enum target target)
{
	switch (target) {
	case TARGET_ROOT:
		return root;
	case TARGET_LEAF:
		return mime_message_get_part(root, 0);
	case TARGET_NESTED:
		return mime_message_get_part(root, 1);
	case TARGET_NESTED_LEAF:
		return mime_message_get_part(mime_message_get_part(root, 1), 0);
	case TARGET_COUNT:
		break;
	}
	return NULL;
}

/* Every change is made twice (the second time replaces what the first
   one malloc'ed, not what the parser put in the arena) and appends what
   it answered to trace, which must be the same for every kind of tree. */
typedef void change_fn(struct mime_message *node, struct mime_buffer *trace);

static void change_set(struct mime_message *node, struct mime_buffer *trace)
{
	mime_message_set(node, "X-Added", "one");
	mime_message_set(node, "x-added", "two");
	mime_buffer_printf(trace, "count=%zu len=%zu", mime_message_count(node, "X-ADDED"),
			   mime_message_len(node));
}

static void change_delete(struct mime_message *node, struct mime_buffer *trace)
{
	size_t deleted = mime_message_delete(node, "content-type");
	size_t absent = mime_message_delete(node, "x-absent");
	mime_buffer_printf(trace, "ct=%zu absent=%zu type=%s", deleted, absent,
			   mime_message_get_content_type(node));
}

static void change_replace_header(struct mime_message *node, struct mime_buffer *trace)
{
	struct mime_buffer value = { 0 };

	mime_buffer_append_str(&value, mime_message_get(node, "Content-Type", ""));
	mime_buffer_append_str(&value, "; replaced=yes");
	int first = mime_message_replace_header(node, "CONTENT-TYPE", (char *)value.data);
	int second = mime_message_replace_header(node, "content-type", (char *)value.data);
	int absent = mime_message_replace_header(node, "x-absent", "x");
	mime_buffer_printf(trace, "%d %d %d %s", first, second, absent,
			   mime_message_get(node, "content-type", "(none)"));
	mime_buffer_free(&value);
}

static void change_add_header(struct mime_message *node, struct mime_buffer *trace)
{
	const struct mime_header_param params[] = {
		{ "filename", "caf\xc3\xa9.txt" },
		{ "creation_date", NULL },
	};

	mime_message_add_header(node, "Content-Disposition", "attachment", params, 2);
	mime_message_add_header(node, "X-Bare", NULL, params + 1, 1);
	char *filename = mime_message_get_filename(node);
	mime_buffer_printf(trace, "filename=%s", filename);
	free(filename);
}

static void change_unixfrom(struct mime_message *node, struct mime_buffer *trace)
{
	mime_message_set_unixfrom(node, "From first Mon Jan  1 00:00:00 2024");
	mime_message_set_unixfrom(node, "From second Mon Jan  1 00:00:00 2024");
	mime_buffer_printf(trace, "%s", mime_message_get_unixfrom(node));
	mime_message_set_unixfrom(node, NULL);
	mime_message_set_unixfrom(node, "From third Mon Jan  1 00:00:00 2024");
}

static void change_attach(struct mime_message *node, struct mime_buffer *trace)
{
	struct mime_message *part = built_leaf("text/plain", NULL, "attached\n");
	int result = mime_message_attach(node, part);

	if (result < 0)
		mime_message_free(&part);
	mime_buffer_printf(trace, "attach=%d multipart=%d", result, mime_message_is_multipart(node));
}

static void change_set_payload(struct mime_message *node, struct mime_buffer *trace)
{
	mime_message_set_payload(node, "replaced\nbody\n", 14, NULL);
	mime_buffer_printf(trace, "multipart=%d len=%zu", mime_message_is_multipart(node),
			   node->payload_len);
}

static void change_set_payload_latin1(struct mime_message *node, struct mime_buffer *trace)
{
	/* Converted to iso-8859-1; quoted-printable unless a CTE is there. */
	mime_message_set_payload(node, "caf\xc3\xa9\n", 6, "iso-8859-1");
	mime_buffer_printf(trace, "cte=%s charset=%s",
			   mime_message_get(node, "content-transfer-encoding", "(none)"),
			   mime_message_get_charset(node)->output_charset);
}

static void change_set_payload_utf8(struct mime_message *node, struct mime_buffer *trace)
{
	mime_message_set_payload(node, "caf\xc3\xa9\n", 6, "utf-8");
	mime_buffer_printf(trace, "cte=%s", mime_message_get(node, "content-transfer-encoding",
								"(none)"));
}

static void change_set_charset(struct mime_message *node, struct mime_buffer *trace)
{
	mime_message_set_charset(node, "utf-8");
	char *charset = mime_message_get_content_charset(node);
	mime_buffer_printf(trace, "charset=%s ", charset);
	free(charset);
	mime_message_set_charset(node, NULL);
	charset = mime_message_get_content_charset(node);
	mime_buffer_printf(trace, "after=%s", charset == NULL ? "(none)" : charset);
	free(charset);
	mime_message_set_charset(node, "iso-8859-1");
}

static void change_set_param(struct mime_message *node, struct mime_buffer *trace)
{
	mime_message_set_param(node, "name", "value", NULL, 1, NULL, NULL);
	mime_message_set_param(node, "title", "caf\xc3\xa9", NULL, 1, "utf-8", "fr");
	mime_message_set_param(node, "size", "10", "Content-Disposition", 0, NULL, NULL);
	char *title = mime_message_get_param(node, "title", NULL);
	mime_buffer_printf(trace, "title=%s", title);
	free(title);
}

static void change_del_param(struct mime_message *node, struct mime_buffer *trace)
{
	mime_message_del_param(node, "format", NULL, 1);
	mime_message_del_param(node, "charset", NULL, 1);
	mime_message_del_param(node, "x", "x-absent", 1);
	char *charset = mime_message_get_content_charset(node);
	mime_buffer_printf(trace, "charset=%s", charset == NULL ? "(none)" : charset);
	free(charset);
}

static void change_set_type(struct mime_message *node, struct mime_buffer *trace)
{
	int set = mime_message_set_type(node, "text/x-new", NULL, 1);
	int invalid = mime_message_set_type(node, "no-slash", NULL, 1);
	int other = mime_message_set_type(node, "inline/x", "Content-Disposition", 1);
	mime_buffer_printf(trace, "%d %d %d %s", set, invalid, other,
			   mime_message_get_content_type(node));
}

static void change_set_boundary(struct mime_message *node, struct mime_buffer *trace)
{
	int result = mime_message_set_boundary(node, "new-boundary");
	char *boundary = mime_message_get_boundary(node);
	mime_buffer_printf(trace, "%d %s", result, boundary);
	free(boundary);
}

static void change_default_type(struct mime_message *node, struct mime_buffer *trace)
{
	const char *before = mime_message_get_content_type(node);
	mime_buffer_printf(trace, "%s ", before);
	mime_message_set_default_type(node, "message/rfc822");
	mime_message_delete(node, "content-type");
	mime_buffer_printf(trace, "%s %s", mime_message_get_default_type(node),
			   mime_message_get_content_type(node));
}

static void change_decode(struct mime_message *node, struct mime_buffer *trace)
{
	struct mime_buffer out = { 0 };
	enum mime_payload_result result = mime_message_get_payload(node, 1, &out);

	mime_buffer_printf(trace, "result=%d defects=%zu padding=%d \"", (int)result,
			   node->defect_count,
			   mime_message_has_defect(node, MIME_DEFECT_INVALID_BASE64_PADDING));
	if (out.data != NULL)
		mime_buffer_append(trace, out.data, out.len);
	mime_buffer_append_str(trace, "\"");
	mime_buffer_free(&out);
}

static const struct {
	const char *name;
	change_fn *change;
} changes[] = {
	{ "set", change_set },
	{ "replace_header", change_replace_header },
	{ "add_header", change_add_header },
	{ "set_unixfrom", change_unixfrom },
	{ "attach", change_attach },
	{ "set_param", change_set_param },
	{ "del_param", change_del_param },
	{ "set_boundary", change_set_boundary },
	{ "set_charset", change_set_charset },
	{ "set_type", change_set_type },
	{ "get_payload decode", change_decode },
	{ "set_payload", change_set_payload },
	{ "set_payload iso-8859-1", change_set_payload_latin1 },
	{ "set_payload utf-8", change_set_payload_utf8 },
	{ "delete", change_delete },
	{ "set_default_type", change_default_type },
};
#define CHANGE_COUNT (sizeof(changes) / sizeof(changes[0]))

/* What a tree looks like after its changes: as_string, the trace, and
   (for the parsed kinds) the full description with parser offsets. */
struct tree_result {
	char *text;
	size_t text_len;
	struct mime_buffer trace;
	struct mime_buffer described;
};

static void tree_result_free(struct tree_result *result)
{
	free(result->text);
	mime_buffer_free(&result->trace);
	mime_buffer_free(&result->described);
}

static void results_compare(struct tree_result results[TREE_KIND_COUNT], const char *what)
{
	for (int kind = TREE_PARSED; kind < TREE_KIND_COUNT; kind++) {
		int same_text = results[kind].text_len == results[TREE_BUILT].text_len &&
			memcmp(results[kind].text, results[TREE_BUILT].text,
			       results[kind].text_len) == 0;
		int same_trace = strcmp((char *)results[kind].trace.data,
					(char *)results[TREE_BUILT].trace.data) == 0;
		if (!same_text || !same_trace)
			fprintf(stderr, "\n%s: %s differs from built:\n%s\n[%s]\n--- built:\n%s\n[%s]\n",
				what, tree_kind_names[kind], results[kind].text,
				(char *)results[kind].trace.data, results[TREE_BUILT].text,
				(char *)results[TREE_BUILT].trace.data);
		CU_ASSERT_TRUE(same_text);
		CU_ASSERT_TRUE(same_trace);
	}
	/* The copying and the borrowing parse: the very same tree. */
	CU_ASSERT_STRING_EQUAL((char *)results[TREE_PARSED].described.data,
			       (char *)results[TREE_BORROWED].described.data);
}

/* Runs the changes in [first, last) on target of each kind of tree. */
static void run_changes(size_t first, size_t last, const enum target *targets, size_t target_count,
			const char *what)
{
	struct tree_result results[TREE_KIND_COUNT];

	memset(results, 0, sizeof(results));
	for (int kind = 0; kind < TREE_KIND_COUNT; kind++) {
		struct tree tree = tree_make((enum tree_kind)kind);
		struct tree_result *result = &results[kind];
		for (size_t t = 0; t < target_count; t++) {
			for (size_t i = first; i < last; i++) {
				struct mime_message *node = tree_target(tree.root, targets[t]);
				CU_ASSERT_PTR_NOT_NULL_FATAL(node);
				mime_buffer_printf(&result->trace, "%s@%s: ", changes[i].name,
						   target_names[targets[t]]);
				changes[i].change(node, &result->trace);
				mime_buffer_append_str(&result->trace, " | ");
				changes[i].change(node, &result->trace);
				mime_buffer_append_str(&result->trace, "\n");
			}
		}
		result->text = mime_message_as_string(tree.root, 0, &result->text_len);
		mime_message_describe(tree.root, 1, &result->described);
		mime_buffer_append(&result->described, "", 0);
		tree_free(&tree);
	}
	results_compare(results, what);
	for (int kind = 0; kind < TREE_KIND_COUNT; kind++)
		tree_result_free(&results[kind]);
}

/* The three trees start out alike: the same bytes generated, and the
   parsed ones the same description. */
static void test_ownership_trees_agree(void)
{
	struct tree_result results[TREE_KIND_COUNT];

	memset(results, 0, sizeof(results));
	for (int kind = 0; kind < TREE_KIND_COUNT; kind++) {
		struct tree tree = tree_make((enum tree_kind)kind);
		results[kind].text = mime_message_as_string(tree.root, 0, &results[kind].text_len);
		CU_ASSERT_STRING_EQUAL(results[kind].text, matrix_text);
		mime_buffer_append(&results[kind].trace, "", 0);
		mime_message_describe(tree.root, 1, &results[kind].described);
		mime_buffer_append(&results[kind].described, "", 0);
		tree_free(&tree);
	}
	results_compare(results, "unchanged");
	for (int kind = 0; kind < TREE_KIND_COUNT; kind++)
		tree_result_free(&results[kind]);
}

/* Each change alone, on each node, of each kind of tree. */
static void test_ownership_each_change(void)
{
	for (size_t i = 0; i < CHANGE_COUNT; i++) {
		for (int target = 0; target < TARGET_COUNT; target++) {
			const enum target one = (enum target)target;
			char what[128];
			snprintf(what, sizeof(what), "%s on %s", changes[i].name, target_names[target]);
			run_changes(i, i + 1, &one, 1, what);
		}
	}
}

/* Every change one after the other on one tree: the nested leaves first,
   then their parents (set_payload on a parent frees its parts). */
static void test_ownership_all_changes(void)
{
	static const enum target order[] = { TARGET_NESTED_LEAF, TARGET_LEAF, TARGET_NESTED,
					     TARGET_ROOT };

	run_changes(0, CHANGE_COUNT, order, sizeof(order) / sizeof(order[0]), "all changes");
}

/* A parsed and a borrowed tree attached into a new multipart, and into a
   part of another parsed tree, are freed with their arenas by the tree
   that took them: by mime_message_free, or by set_payload on the parent. */
static void test_ownership_attach_parsed(void)
{
	struct tree parsed = tree_make(TREE_PARSED), borrowed = tree_make(TREE_BORROWED);
	struct mime_message *outer = mime_message_new();

	mime_message_set(outer, "Content-Type", "multipart/digest; boundary=\"digest\"");
	CU_ASSERT_EQUAL(mime_message_attach(outer, parsed.root), 0);
	CU_ASSERT_EQUAL(mime_message_attach(outer, borrowed.root), 0);
	/* Changes inside the attached trees after the move. */
	mime_message_set(mime_message_get_part(borrowed.root, 0), "X-Moved", "yes");
	mime_message_set_payload(tree_target(parsed.root, TARGET_NESTED_LEAF), "moved\n", 6, NULL);
	size_t len;
	char *text = mime_message_as_string(outer, 0, &len);
	const char *expected_start = "Content-Type: multipart/digest; boundary=\"digest\"\n\n"
				     "--digest\nFrom: Ann <ann@example.org>\n";
	CU_ASSERT_EQUAL(strncmp(text, expected_start, strlen(expected_start)), 0);
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "Content-Type: text/html\n\nmoved\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "Content-Transfer-Encoding: base64\nX-Moved: yes\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "<p>caf\xc3\xa9</p>\n--inner--"));
	free(text);
	mime_message_free(&outer);
	/* The borrowed tree's input is the caller's until now. */
	free(borrowed.input);

	/* Into a nested part of a parsed tree, then dropped by set_payload
	   on that part; the attached tree's arena goes with it. */
	struct tree host = tree_make(TREE_PARSED), guest = tree_make(TREE_BORROWED);
	struct mime_message *nested = tree_target(host.root, TARGET_NESTED);
	CU_ASSERT_EQUAL(mime_message_attach(nested, guest.root), 0);
	CU_ASSERT_EQUAL(nested->part_count, 2);
	CU_ASSERT_PTR_EQUAL(mime_message_get_part(nested, 1), guest.root);
	mime_message_set_payload(nested, "flat\n", 5, NULL);
	CU_ASSERT_EQUAL(nested->part_count, 0);
	CU_ASSERT_FALSE(mime_message_is_multipart(nested));
	text = mime_message_as_string(host.root, 0, NULL);
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "boundary=\"inner\"\n\nflat\n\n--outer--\n"));
	free(text);
	/* Attached again after the flattening: parts grow again. */
	struct tree again = tree_make(TREE_PARSED);
	CU_ASSERT_EQUAL(mime_message_attach(host.root, again.root), 0);
	CU_ASSERT_EQUAL(host.root->part_count, 3);
	tree_free(&host);
	free(guest.input);
}

/* A part's payload and header replaced many times: each replacement frees
   the one before (ASan's leak check), and none of it goes to the arena. */
static void test_ownership_replaced_many_times(void)
{
	for (int kind = TREE_PARSED; kind < TREE_KIND_COUNT; kind++) {
		struct tree tree = tree_make((enum tree_kind)kind);
		struct mime_message *leaf = tree_target(tree.root, TARGET_NESTED_LEAF);
		size_t arena_size = mime_arena_size(tree.root->arena);
		char body[64];

		for (int i = 0; i < 2000; i++) {
			int len = snprintf(body, sizeof(body), "body number %d\n", i);
			mime_message_set_payload(leaf, body, (size_t)len, i % 2 == 1 ? NULL : "utf-8");
			mime_message_replace_header(leaf, "Content-Type", body);
			mime_message_set(leaf, "X-Round", body);
			mime_message_delete(leaf, "x-round");
			mime_message_set_unixfrom(leaf, body);
			mime_message_delete(leaf, "content-transfer-encoding");
		}
		CU_ASSERT_EQUAL(mime_arena_size(tree.root->arena), arena_size);
		CU_ASSERT_EQUAL_FATAL(leaf->payload_len, strlen("body number 1999\n"));
		CU_ASSERT_EQUAL(memcmp(leaf->payload, "body number 1999\n", leaf->payload_len), 0);
		CU_ASSERT_STRING_EQUAL(mime_message_get(leaf, "content-type", ""),
				       "body number 1999\n");
		CU_ASSERT_EQUAL(mime_message_len(leaf), 2);
		tree_free(&tree);
	}
}

/* Header values and header arrays the size of an arena chunk or more:
   16 KiB to 70 KiB values, two of them in a row, and 1,500 headers (a
   32 KiB array). Copying and borrowing parses keep them whole. */
static void test_long_headers(void)
{
	static const size_t sizes[] = { 3000, 16000, 17000, 20000, 33000, 40000, 60000, 65536,
					70000 };

	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		size_t n = sizes[i];
		struct mime_buffer text = { 0 };
		mime_buffer_append_str(&text, "X-Long: ");
		for (size_t k = 0; k < n; k++)
			mime_buffer_append_byte(&text, (unsigned char)('a' + k % 26));
		mime_buffer_append_str(&text, "\nX-Second: ");
		for (size_t k = 0; k < n; k++)
			mime_buffer_append_byte(&text, (unsigned char)('A' + k % 26));
		mime_buffer_append_str(&text, "\nSubject: after\n\nbody\n");
		char *exact = malloc(text.len);
		memcpy(exact, text.data, text.len);
		struct mime_message *trees[2] = { mime_parse(text.data, text.len),
						  mime_parse_borrowed(exact, text.len) };
		for (size_t t = 0; t < 2; t++) {
			const char *value = mime_message_get(trees[t], "x-long", "");
			CU_ASSERT_EQUAL(strlen(value), n);
			CU_ASSERT_EQUAL(memcmp(value, text.data + 8, n), 0);
			CU_ASSERT_EQUAL(strlen(mime_message_get(trees[t], "x-second", "")), n);
			CU_ASSERT_STRING_EQUAL(mime_message_get(trees[t], "subject", ""), "after");
			size_t len;
			char *out = mime_message_as_string(trees[t], 0, &len);
			CU_ASSERT_EQUAL(len, text.len);
			CU_ASSERT_STRING_EQUAL(out, (char *)text.data);
			free(out);
			mime_message_free(&trees[t]);
		}
		free(exact);
		mime_buffer_free(&text);
	}

	struct mime_buffer text = { 0 };
	for (int i = 0; i < 1500; i++)
		mime_buffer_printf(&text, "X-Header-%d: value %d\n", i, i);
	mime_buffer_append_str(&text, "\nbody\n");
	struct mime_message *message = mime_parse(text.data, text.len);
	CU_ASSERT_EQUAL(mime_message_len(message), 1500);
	CU_ASSERT_STRING_EQUAL(mime_message_get(message, "x-header-1499", ""), "value 1499");
	char *out = mime_message_as_string(message, 0, NULL);
	CU_ASSERT_STRING_EQUAL(out, (char *)text.data);
	free(out);
	mime_message_free(&message);
	mime_buffer_free(&text);
}

/* Arguments taken from the message being changed, as Python code does
   (msg.replace_header(k, msg[k]), msg.set_payload(part.get_payload()),
   del msg[msg.keys()[0]]): the call must be done with them before it
   frees what it replaces. Twice each, so the second call also meets what
   the first malloc'ed, on each kind of tree. */
static void test_arguments_from_the_message(void)
{
	char *texts[TREE_KIND_COUNT];

	for (int kind = 0; kind < TREE_KIND_COUNT; kind++) {
		struct tree tree = tree_make((enum tree_kind)kind);
		struct mime_message *root = tree.root;
		struct mime_message *leaf = tree_target(root, TARGET_LEAF);
		struct mime_message *nested = tree_target(root, TARGET_NESTED);

		for (int round = 0; round < 2; round++) {
			/* A tail of the part's own payload. */
			mime_message_set_payload(leaf, leaf->payload + 2, leaf->payload_len - 2, NULL);
			/* A value or envelope line of its own. */
			CU_ASSERT_EQUAL(mime_message_replace_header(root, "subject",
								    mime_message_get(root, "Subject", "")), 0);
			mime_message_set_unixfrom(root, round == 0 ? "From a Mon Jan  1 00:00:00 2024"
							    : mime_message_get_unixfrom(root));
			mime_message_set_unixfrom(root, mime_message_get_unixfrom(root));
			mime_message_set(root, "X-Copy", mime_message_get(root, "from", ""));
		}
		CU_ASSERT_EQUAL_FATAL(leaf->payload_len, strlen("bG8gd29ybGQ"));
		CU_ASSERT_EQUAL(memcmp(leaf->payload, "bG8gd29ybGQ", leaf->payload_len), 0);
		CU_ASSERT_STRING_EQUAL(mime_message_get(root, "subject", ""), "matrix");
		CU_ASSERT_STRING_EQUAL(mime_message_get_unixfrom(root), "From a Mon Jan  1 00:00:00 2024");
		/* A name of its own: every field of that name goes. */
		CU_ASSERT_EQUAL(mime_message_delete(root, mime_message_key(root, 4)), 2);
		mime_message_set(root, "X-Twice", "1");
		mime_message_set(root, "x-twice", "2");
		CU_ASSERT_EQUAL(mime_message_delete(root, mime_message_key(root, 4)), 2);
		CU_ASSERT_EQUAL(mime_message_len(root), 4);
		/* A parent's payload from its own part, which the call frees. */
		struct mime_message *html = mime_message_get_part(nested, 0);
		mime_message_set_payload(nested, html->payload, html->payload_len, NULL);
		CU_ASSERT_EQUAL(nested->part_count, 0);
		CU_ASSERT_EQUAL_FATAL(nested->payload_len, strlen("<p>caf\xc3\xa9</p>"));
		CU_ASSERT_EQUAL(memcmp(nested->payload, "<p>caf\xc3\xa9</p>", nested->payload_len), 0);
		texts[kind] = mime_message_as_string(root, 0, NULL);
		tree_free(&tree);
	}
	CU_ASSERT_STRING_EQUAL(texts[TREE_BUILT],
		"From: Ann <ann@example.org>\n"
		"Subject: matrix\n"
		"MIME-Version: 1.0\n"
		"Content-Type: multipart/mixed; boundary=\"outer\"\n"
		"\n"
		"--outer\n"
		"Content-Type: text/plain; charset=\"us-ascii\"; format=flowed\n"
		"Content-Transfer-Encoding: base64\n"
		"\n"
		"bG8gd29ybGQ\n"
		"--outer\n"
		"Content-Type: multipart/alternative; boundary=\"inner\"\n"
		"\n"
		"<p>caf\xc3\xa9</p>\n"
		"--outer--\n");
	for (int kind = TREE_PARSED; kind < TREE_KIND_COUNT; kind++)
		CU_ASSERT_STRING_EQUAL(texts[kind], texts[TREE_BUILT]);
	for (int kind = 0; kind < TREE_KIND_COUNT; kind++)
		free(texts[kind]);
}

/* get_payload appends to out, whatever the encoding and whether decoding
   works; a borrowed payload at the very end of its input (no line end, no
   NUL, an exact-size buffer) is read only within its length, by decoding,
   by set_charset's encoding and by the generator. */
static void test_decode_appends_and_stays_in_bounds(void)
{
	static const struct {
		const char *cte;
		const char *body;
		const char *decoded;     /* NULL: only the kinds must agree */
	} cases[] = {
		{ "quoted-printable", "caf=C3=A9=", "caf\xc3\xa9" },
		{ "quoted-printable", "abc=4", "abc=4" },
		{ "quoted-printable", "soft=\r\nbreak=", "softbreak" },
		{ "base64", "aGVsbG8=", "hello" },
		{ "base64", "aGVsbG8", "hello" },             /* bad padding */
		{ "base64", "aGV*sbG8=", "hello" },           /* bad characters */
		{ "base64", "a", "a" },                       /* undecodable: as it is */
		{ "base64", "ab\r\ncd\ne", "abcde" },         /* undecodable, line ends dropped */
		{ "x-uuencode", "begin 644 f\n#86)C\n`\nend", "abc" },
		{ "x-uuencode", "begin 644 f\n#86", NULL },   /* stops inside a line */
		{ "x-uuencode", "no begin line", "no begin line" },
		{ "8bit", "caf\xc3\xa9", "caf\xc3\xa9" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct mime_buffer text = { 0 };
		mime_buffer_printf(&text, "Content-Transfer-Encoding: %s\n\n%s", cases[i].cte,
				   cases[i].body);
		char *exact = malloc(text.len);
		memcpy(exact, text.data, text.len);
		struct mime_message *trees[2] = { mime_parse(text.data, text.len),
						  mime_parse_borrowed(exact, text.len) };
		struct mime_buffer decoded[2] = { { 0 }, { 0 } };
		for (size_t t = 0; t < 2; t++) {
			struct mime_buffer raw = { 0 };
			mime_buffer_append_str(&raw, "prefix:");
			CU_ASSERT_EQUAL(mime_message_get_payload(trees[t], 0, &raw),
					MIME_PAYLOAD_RESULT_BYTES);
			CU_ASSERT_EQUAL(raw.len, strlen("prefix:") + strlen(cases[i].body));
			CU_ASSERT_STRING_EQUAL((char *)raw.data + strlen("prefix:"), cases[i].body);
			mime_buffer_free(&raw);

			mime_buffer_append_str(&decoded[t], "prefix:");
			CU_ASSERT_EQUAL(mime_message_get_payload(trees[t], 1, &decoded[t]),
					MIME_PAYLOAD_RESULT_BYTES);
			CU_ASSERT_EQUAL(memcmp(decoded[t].data, "prefix:", 7), 0);
			if (cases[i].decoded != NULL) {
				if (strcmp((char *)decoded[t].data + 7, cases[i].decoded) != 0)
					fprintf(stderr, "\n%s %s: got \"%s\"\n", cases[i].cte,
						cases[i].body, (char *)decoded[t].data);
				CU_ASSERT_EQUAL(decoded[t].len, 7 + strlen(cases[i].decoded));
				CU_ASSERT_STRING_EQUAL((char *)decoded[t].data + 7, cases[i].decoded);
			}
		}
		CU_ASSERT_EQUAL(decoded[0].len, decoded[1].len);
		if (decoded[0].len == decoded[1].len)
			CU_ASSERT_EQUAL(memcmp(decoded[0].data, decoded[1].data, decoded[0].len), 0);
		CU_ASSERT_EQUAL(trees[0]->defect_count, trees[1]->defect_count);
		/* Re-encoded from the borrowed bytes, then generated. */
		char *texts[2];
		for (size_t t = 0; t < 2; t++) {
			mime_message_delete(trees[t], "content-transfer-encoding");
			mime_message_set_charset(trees[t], i % 2 == 0 ? "utf-8" : "iso-8859-1");
			texts[t] = mime_message_as_string(trees[t], 0, NULL);
			mime_buffer_free(&decoded[t]);
			mime_message_free(&trees[t]);
		}
		CU_ASSERT_STRING_EQUAL(texts[0], texts[1]);
		free(texts[0]);
		free(texts[1]);
		free(exact);
		mime_buffer_free(&text);
	}
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
	{ "built, parsed and borrowed trees agree", test_ownership_trees_agree },
	{ "each change on built, parsed and borrowed trees", test_ownership_each_change },
	{ "all changes in a row on each kind of tree", test_ownership_all_changes },
	{ "parsed trees attached into other trees", test_ownership_attach_parsed },
	{ "a payload and a header replaced many times", test_ownership_replaced_many_times },
	{ "header values and arrays past an arena chunk", test_long_headers },
	{ "arguments taken from the message being changed", test_arguments_from_the_message },
	{ "get_payload appends, borrowed payloads read in bounds", test_decode_appends_and_stays_in_bounds },
	{ NULL, NULL },
};
