/* SPDX-License-Identifier: MIT */
/* Unit tests for common/mime-imap: ENVELOPE, BODYSTRUCTURE, sections, BINARY. */
#include "config.h"
#include "unit.h"
#include "mime-imap.h"
#include "mime-parser.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char message_text[] =
	"Date: Mon, 1 Jan 2024 10:00:00 +0000\n"
	"From: \"Doe, John\" <john@example.org>\n"
	"To: a@example.org, Group: b@example.net, \"C\" <c@example.com>;,\n"
	"  d@example.org (Dee)\n"
	"Cc: =?utf-8?q?caf=C3=A9?= <cafe@example.fr>\n"
	"Subject: =?utf-8?B?Q2Fmw6k=?=\n"
	"  folded\n"
	"Message-ID: <1@example.org>\n"
	"MIME-Version: 1.0\n"
	"Content-Type: multipart/mixed; boundary=\"b\"\n"
	"\n"
	"--b\n"
	"Content-Type: text/plain\n"
	"\n"
	"line one\n"
	"line two\n"
	"--b\n"
	"Content-Type: application/octet-stream; name=\"x.bin\"\n"
	"Content-Transfer-Encoding: base64\n"
	"Content-Disposition: attachment; filename=x.bin\n"
	"Content-Language: en, fr\n"
	"\n"
	"AAEC\n"
	"--b\n"
	"Content-Type: message/rfc822\n"
	"\n"
	"Subject: inner\n"
	"From: in@example.org\n"
	"\n"
	"inner body\n"
	"--b--\n";

static struct mime_message *parse(void)
{
	return mime_parse(message_text, strlen(message_text));
}

static void test_envelope(void)
{
	struct mime_message *message = parse();
	struct mime_buffer out = { 0 };

	mime_imap_envelope(message, &out);
	CU_ASSERT_STRING_EQUAL((char *)out.data,
		"(\"Mon, 1 Jan 2024 10:00:00 +0000\" \"=?utf-8?B?Q2Fmw6k=?=  folded\" "
		"((\"Doe, John\" NIL \"john\" \"example.org\")) "
		"((\"Doe, John\" NIL \"john\" \"example.org\")) "
		"((\"Doe, John\" NIL \"john\" \"example.org\")) "
		"((NIL NIL \"a\" \"example.org\")(NIL NIL \"Group\" NIL)"
		"(NIL NIL \"b\" \"example.net\")(\"C\" NIL \"c\" \"example.com\")(NIL NIL NIL NIL)"
		"(\"Dee\" NIL \"d\" \"example.org\")) "
		"((\"=?utf-8?q?caf=C3=A9?=\" NIL \"cafe\" \"example.fr\")) NIL NIL \"<1@example.org>\")");
	mime_buffer_free(&out);
	mime_message_free(&message);
}

/* Odd address forms; each expected value is what Dovecot 2.3 answers for
   the same From: line. */
static void test_envelope_address_forms(void)
{
	static const struct {
		const char *from;
		const char *address;
	} cases[] = {
		{ "<>", "((NIL NIL \"MISSING_MAILBOX\" \"MISSING_DOMAIN\"))" },
		{ "MAILER DAEMON <>", "((\"MAILER DAEMON\" NIL \"MISSING_MAILBOX\" \"MISSING_DOMAIN\"))" },
		{ "A <b>", "((\"A\" NIL \"b\" \"MISSING_DOMAIN\"))" },
		{ "A <@r:b@c>", "((\"A\" \"@r\" \"b\" \"c\"))" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char text[256], expected[512];
		struct mime_buffer out = { 0 };

		snprintf(text, sizeof(text), "From: %s\nSubject: x\n\nbody\n", cases[i].from);
		snprintf(expected, sizeof(expected), "(NIL \"x\" %s %s %s NIL NIL NIL NIL NIL)",
			 cases[i].address, cases[i].address, cases[i].address);
		struct mime_message *message = mime_parse(text, strlen(text));
		mime_imap_envelope(message, &out);
		CU_ASSERT_STRING_EQUAL((char *)out.data, expected);
		mime_buffer_free(&out);
		mime_message_free(&message);
	}
}

static void test_bodystructure(void)
{
	struct mime_message *message = parse();
	struct mime_buffer out = { 0 };

	mime_imap_bodystructure(message, message_text, strlen(message_text), 1, &out);
	CU_ASSERT_STRING_EQUAL((char *)out.data,
		"((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 18 1 NIL NIL NIL NIL)"
		"(\"application\" \"octet-stream\" (\"name\" \"x.bin\") NIL NIL \"base64\" 4 NIL "
		"(\"attachment\" (\"filename\" \"x.bin\")) (\"en\" \"fr\") NIL)"
		"(\"message\" \"rfc822\" NIL NIL NIL \"7bit\" 50 (NIL \"inner\" "
		"((NIL NIL \"in\" \"example.org\")) ((NIL NIL \"in\" \"example.org\")) "
		"((NIL NIL \"in\" \"example.org\")) NIL NIL NIL NIL NIL) "
		"(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 10 0 NIL NIL NIL NIL) 3 "
		"NIL NIL NIL NIL) \"mixed\" (\"boundary\" \"b\") NIL NIL NIL)");
	mime_buffer_reset(&out);
	mime_imap_bodystructure(message, message_text, strlen(message_text), 0, &out);
	CU_ASSERT_PTR_NOT_NULL(strstr((char *)out.data, "\"7bit\" 18 1)(\"application\""));
	CU_ASSERT_PTR_NULL(strstr((char *)out.data, "boundary"));
	mime_buffer_free(&out);
	mime_message_free(&message);
}

static const char *section(struct mime_message *message, const char *spec,
			   struct mime_buffer *out, enum mime_imap_section_result expect)
{
	const char *error = NULL;
	mime_buffer_reset(out);
	CU_ASSERT_EQUAL(mime_imap_fetch_section(message, message_text, strlen(message_text), spec,
						out, &error), expect);
	if (out->data == NULL)
		mime_buffer_append(out, "", 0);
	return (const char *)out->data;
}

/* An mbox "From " line first: Dovecot's HEADER and BODY[] of the
   message begin with it (Python's parser keeps it apart, as unixfrom). */
static void test_sections_unixfrom(void)
{
	static const char text[] = "From a@example.org  Fri Nov 26 21:40:36 2004\r\nSubject: s\r\n\r\nbody\r\n";
	struct mime_message *message = mime_parse(text, strlen(text));
	struct mime_buffer out = { 0 };
	const char *error = NULL;

	CU_ASSERT_PTR_NOT_NULL_FATAL(message);
	CU_ASSERT_EQUAL(mime_imap_fetch_section(message, text, strlen(text), "HEADER", &out, &error),
			MIME_IMAP_SECTION_OK);
	CU_ASSERT_EQUAL(out.len, strlen(text) - strlen("body\r\n"));
	CU_ASSERT_EQUAL(memcmp(out.data, text, out.len), 0);
	mime_buffer_reset(&out);
	CU_ASSERT_EQUAL(mime_imap_fetch_section(message, text, strlen(text), "", &out, &error), MIME_IMAP_SECTION_OK);
	CU_ASSERT_EQUAL(out.len, strlen(text));
	mime_buffer_reset(&out);
	CU_ASSERT_EQUAL(mime_imap_fetch_section(message, text, strlen(text), "TEXT", &out, &error), MIME_IMAP_SECTION_OK);
	CU_ASSERT_EQUAL(out.len, strlen("body\r\n"));
	mime_buffer_free(&out);
	mime_message_free(&message);
}

static void test_sections(void)
{
	struct mime_message *message = parse();
	struct mime_buffer out = { 0 };

	CU_ASSERT_STRING_EQUAL(section(message, "1", &out, MIME_IMAP_SECTION_OK),
			       "line one\r\nline two");
	CU_ASSERT_STRING_EQUAL(section(message, "1.MIME", &out, MIME_IMAP_SECTION_OK),
			       "Content-Type: text/plain\r\n\r\n");
	CU_ASSERT_STRING_EQUAL(section(message, "3.HEADER", &out, MIME_IMAP_SECTION_OK),
			       "Subject: inner\r\nFrom: in@example.org\r\n\r\n");
	CU_ASSERT_STRING_EQUAL(section(message, "3.TEXT", &out, MIME_IMAP_SECTION_OK), "inner body");
	CU_ASSERT_STRING_EQUAL(section(message, "3.1", &out, MIME_IMAP_SECTION_OK), "inner body");
	CU_ASSERT_STRING_EQUAL(section(message, "HEADER.FIELDS (subject MESSAGE-ID)", &out,
				       MIME_IMAP_SECTION_OK),
			       "Subject: =?utf-8?B?Q2Fmw6k=?=\r\n  folded\r\nMessage-ID: <1@example.org>\r\n\r\n");
	const char *not = section(message, "HEADER.FIELDS.NOT (To Cc Subject Date From)", &out,
				  MIME_IMAP_SECTION_OK);
	CU_ASSERT_STRING_EQUAL(not, "Message-ID: <1@example.org>\r\nMIME-Version: 1.0\r\n"
			       "Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n");
	CU_ASSERT_EQUAL(strncmp(section(message, "TEXT", &out, MIME_IMAP_SECTION_OK), "--b\r\n", 5), 0);
	CU_ASSERT_EQUAL(strncmp(section(message, "", &out, MIME_IMAP_SECTION_OK), "Date: ", 6), 0);
	CU_ASSERT_EQUAL(out.len, strlen(message_text) + 31);  /* every LF became CRLF */
	section(message, "4", &out, MIME_IMAP_SECTION_NO_SUCH_PART);
	section(message, "1.2", &out, MIME_IMAP_SECTION_NO_SUCH_PART);
	section(message, "0", &out, MIME_IMAP_SECTION_BAD_SYNTAX);
	section(message, "MIME", &out, MIME_IMAP_SECTION_BAD_SYNTAX);
	section(message, "1.FOO", &out, MIME_IMAP_SECTION_BAD_SYNTAX);
	section(message, "HEADER.FIELDS ()", &out, MIME_IMAP_SECTION_BAD_SYNTAX);
	section(message, "HEADER.FIELDS (A", &out, MIME_IMAP_SECTION_BAD_SYNTAX);
	mime_buffer_free(&out);
	mime_message_free(&message);
}

/* A bounce: multipart/report with a message/delivery-status part (which
   compat32 parses into header blocks, but IMAP sees as one leaf) and a
   message/rfc822 part enclosing a multipart. */
static const char report_text[] =
	"Content-Type: multipart/report; report-type=delivery-status; boundary=\"r\"\n"
	"\n"
	"--r\n"
	"Content-Type: text/plain\n"
	"\n"
	"bounced\n"
	"--r\n"
	"Content-Type: message/delivery-status\n"
	"\n"
	"Reporting-MTA: dns; a.example\n"
	"\n"
	"Final-Recipient: rfc822; b@example.org\n"
	"Action: failed\n"
	"\n"
	"--r\n"
	"Content-Type: message/rfc822\n"
	"\n"
	"Subject: original\n"
	"Content-Type: multipart/alternative; boundary=\"a\"\n"
	"\n"
	"--a\n"
	"\n"
	"plain\n"
	"--a\n"
	"Content-Type: text/html\n"
	"\n"
	"<p>html</p>\n"
	"--a--\n"
	"--r--\n";

/* Each part in walk order with its section ("-" for none). */
static char *walk_sections(struct mime_message *root)
{
	struct mime_buffer out = { 0 };

	for (struct mime_message *part = mime_message_walk_next(root, NULL); part != NULL;
	     part = mime_message_walk_next(root, part)) {
		char *section = mime_imap_part_section(part);
		mime_buffer_printf(&out, "%s[%s] ", mime_message_get_content_type(part),
				   section == NULL ? "-" : section);
		free(section);
	}
	return mime_buffer_steal(&out, NULL);
}

/* HEADER.FIELDS of a plain header block without a parse: the bytes
   mime_imap_fetch_section gives for the block parsed, for every list. */
static void test_header_fields_unparsed(void)
{
	static const char *const blocks[] = {
		"Subject: a\r\n\r\n",
		"From: x@example.org\r\nTo: y@example.org,\r\n z@example.org\r\nSubject: folded\r\n\tline\r\n"
		"subject: again\r\nX-Empty:\r\nReceived: from a\r\n by b\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n",
		"\r\n",
	};
	static const char *const lists[] = {
		"HEADER.FIELDS (SUBJECT)", "HEADER.FIELDS (from TO \"Received\" x-empty)",
		"HEADER.FIELDS.NOT (Subject)", "header.fields.not (CONTENT-TYPE to)", "HEADER.FIELDS (NOPE)",
	};

	for (size_t b = 0; b < sizeof(blocks) / sizeof(blocks[0]); b++) {
		struct mime_message *parsed = mime_parse_borrowed(blocks[b], strlen(blocks[b]));

		for (size_t l = 0; l < sizeof(lists) / sizeof(lists[0]); l++) {
			struct mime_buffer want = { 0 }, got = { 0 };
			const char *error;

			CU_ASSERT_EQUAL(mime_imap_fetch_section(parsed, blocks[b], strlen(blocks[b]), lists[l], &want,
								&error), MIME_IMAP_SECTION_OK);
			CU_ASSERT_EQUAL(mime_imap_fetch_header_fields(blocks[b], strlen(blocks[b]), lists[l], &got,
								      &error), MIME_IMAP_SECTION_OK);
			CU_ASSERT_EQUAL(got.len, want.len);
			CU_ASSERT(got.len == want.len && memcmp(got.data, want.data, got.len) == 0);
			mime_buffer_free(&want);
			mime_buffer_free(&got);
		}
		mime_message_free(&parsed);
	}
	{
		struct mime_buffer out = { 0 };
		const char *error;

		CU_ASSERT_EQUAL(mime_imap_fetch_header_fields(blocks[1], strlen(blocks[1]), "HEADER.FIELDS (subject)",
							      &out, &error), MIME_IMAP_SECTION_OK);
		CU_ASSERT_EQUAL(out.len, strlen("Subject: folded\r\n\tline\r\nsubject: again\r\n\r\n"));
		CU_ASSERT(memcmp(out.data, "Subject: folded\r\n\tline\r\nsubject: again\r\n\r\n", out.len) == 0);
		CU_ASSERT_EQUAL(mime_imap_fetch_header_fields(blocks[0], strlen(blocks[0]), "HEADER.FIELDS ()", &out,
							      &error), MIME_IMAP_SECTION_BAD_SYNTAX);
		CU_ASSERT_EQUAL(mime_imap_fetch_header_fields(blocks[0], strlen(blocks[0]), "HEADER", &out, &error),
				MIME_IMAP_SECTION_BAD_SYNTAX);
		mime_buffer_free(&out);
	}
}

static void test_part_numbering(void)
{
	struct mime_message *message = mime_parse(report_text, strlen(report_text));
	struct mime_buffer out = { 0 };
	const char *error;

	char *walk = walk_sections(message);
	CU_ASSERT_STRING_EQUAL(walk,
		"multipart/report[] text/plain[1] message/delivery-status[2] "
		"text/plain[-] text/plain[-] message/rfc822[3] multipart/alternative[3] "
		"text/plain[3.1] text/html[3.2] ");
	free(walk);
	/* BODY[2] is the whole delivery-status body; it has no sub-parts. */
	CU_ASSERT_EQUAL(mime_imap_fetch_section(message, report_text, strlen(report_text), "2",
						&out, &error), MIME_IMAP_SECTION_OK);
	CU_ASSERT_STRING_EQUAL((char *)out.data,
		"Reporting-MTA: dns; a.example\r\n\r\n"
		"Final-Recipient: rfc822; b@example.org\r\nAction: failed\r\n");
	mime_buffer_reset(&out);
	CU_ASSERT_EQUAL(mime_imap_fetch_section(message, report_text, strlen(report_text), "2.1",
						&out, &error), MIME_IMAP_SECTION_NO_SUCH_PART);
	CU_ASSERT_EQUAL(mime_imap_fetch_section(message, report_text, strlen(report_text), "3.2",
						&out, &error), MIME_IMAP_SECTION_OK);
	CU_ASSERT_STRING_EQUAL((char *)out.data, "<p>html</p>");
	mime_buffer_free(&out);
	mime_message_free(&message);

	/* A message that is itself message/rfc822: the enclosed one is part 1. */
	const char *wrapped = "Content-Type: message/rfc822\n\nContent-Type: multipart/mixed; "
		"boundary=m\n\n--m\n\none\n--m\n\ntwo\n--m--\n";
	message = mime_parse(wrapped, strlen(wrapped));
	walk = walk_sections(message);
	CU_ASSERT_STRING_EQUAL(walk, "message/rfc822[] multipart/mixed[1] text/plain[1.1] "
			       "text/plain[1.2] ");
	free(walk);
	CU_ASSERT_EQUAL(mime_imap_fetch_section(message, wrapped, strlen(wrapped), "1.2",
						&out, &error), MIME_IMAP_SECTION_OK);
	CU_ASSERT_STRING_EQUAL((char *)out.data, "two");
	mime_buffer_free(&out);
	mime_message_free(&message);
}

static void test_binary_and_partial(void)
{
	struct mime_message *message = parse();
	struct mime_buffer out = { 0 };
	const char *error;

	CU_ASSERT_EQUAL(mime_imap_fetch_binary(message, message_text, strlen(message_text), "2",
					       &out, &error), MIME_IMAP_SECTION_OK);
	CU_ASSERT_EQUAL(out.len, 3);
	CU_ASSERT_EQUAL(memcmp(out.data, "\x00\x01\x02", 3), 0);
	mime_buffer_reset(&out);
	CU_ASSERT_EQUAL(mime_imap_fetch_binary(message, message_text, strlen(message_text), "1.MIME",
					       &out, &error), MIME_IMAP_SECTION_BAD_SYNTAX);
	const char *bad = "Content-Transfer-Encoding: x-custom\n\nabc";
	struct mime_message *odd = mime_parse(bad, strlen(bad));
	CU_ASSERT_EQUAL(mime_imap_fetch_binary(odd, bad, strlen(bad), "1", &out, &error),
			MIME_IMAP_SECTION_UNKNOWN_CTE);
	mime_message_free(&odd);
	mime_buffer_reset(&out);
	mime_imap_partial("0123456789", 10, 2, 3, &out);
	CU_ASSERT_STRING_EQUAL((char *)out.data, "234");
	mime_buffer_reset(&out);
	mime_imap_partial("0123456789", 10, 8, UINT64_MAX, &out);
	CU_ASSERT_STRING_EQUAL((char *)out.data, "89");
	mime_buffer_reset(&out);
	mime_imap_partial("0123456789", 10, 20, 5, &out);
	CU_ASSERT_EQUAL(out.len, 0);
	mime_buffer_free(&out);
	mime_message_free(&message);
}

static void test_strings(void)
{
	struct mime_buffer out = { 0 };

	mime_imap_append_string(&out, "a\"b\\", 4);
	CU_ASSERT_STRING_EQUAL((char *)out.data, "\"a\\\"b\\\\\"");
	mime_buffer_reset(&out);
	mime_imap_append_string(&out, "caf\xc3\xa9", 5);
	CU_ASSERT_STRING_EQUAL((char *)out.data, "{5}\r\ncaf\xc3\xa9");
	mime_buffer_reset(&out);
	mime_imap_append_string(&out, NULL, 0);
	CU_ASSERT_STRING_EQUAL((char *)out.data, "NIL");
	mime_buffer_reset(&out);
	mime_imap_append_string(&out, "", 0);
	CU_ASSERT_STRING_EQUAL((char *)out.data, "\"\"");
	/* Every byte value, alone and between letters: CR, LF, NUL and 8-bit
	   bytes need a literal (RFC 3501 quoted-specials and TEXT-CHAR), " and
	   \ a backslash, the rest go in as they are. */
	for (unsigned int byte = 0; byte < 256; byte++) {
		char text[3] = { 'a', (char)byte, 'b' };
		char expected[16];
		size_t expected_len;
		if (byte == 0 || byte == '\r' || byte == '\n' || byte >= 0x80) {
			memcpy(expected, "{3}\r\na", 6);
			expected[6] = (char)byte;
			expected[7] = 'b';
			expected_len = 8;
		} else if (byte == '"' || byte == '\\') {
			memcpy(expected, "\"a\\", 3);
			expected[3] = (char)byte;
			memcpy(expected + 4, "b\"", 2);
			expected_len = 6;
		} else {
			expected[0] = '"';
			memcpy(expected + 1, text, 3);
			expected[4] = '"';
			expected_len = 5;
		}
		mime_buffer_reset(&out);
		mime_imap_append_string(&out, text, 3);
		CU_ASSERT_EQUAL(out.len, expected_len);
		if (out.len == expected_len)
			CU_ASSERT(memcmp(out.data, expected, expected_len) == 0);
	}
	mime_buffer_free(&out);
}

/* Header values of 3 KiB to 70 KiB in the views: the strings the view
   writers keep in their scratch arena, as long as an arena chunk or more. */
static void test_long_values(void)
{
	static const size_t sizes[] = { 3000, 17000, 20000, 40000, 70000 };

	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		size_t n = sizes[i];
		struct mime_buffer long_subject = { 0 }, long_description = { 0 };
		for (size_t k = 0; k < n; k++) {
			mime_buffer_append_byte(&long_subject, (unsigned char)('a' + k % 26));
			mime_buffer_append_byte(&long_description, (unsigned char)('A' + k % 26));
		}
		struct mime_buffer text = { 0 }, expected = { 0 }, out = { 0 };
		mime_buffer_printf(&text, "Subject: %s\nContent-Type: text/plain\n"
				   "Content-Description: %s\n\nbody\n",
				   (char *)long_subject.data, (char *)long_description.data);
		char *exact = malloc(text.len);
		memcpy(exact, text.data, text.len);
		struct mime_message *message = mime_parse_borrowed(exact, text.len);

		mime_imap_envelope(message, &out);
		mime_buffer_printf(&expected, "(NIL \"%s\" NIL NIL NIL NIL NIL NIL NIL NIL)",
				   (char *)long_subject.data);
		CU_ASSERT_STRING_EQUAL((char *)out.data, (char *)expected.data);
		mime_buffer_reset(&out);
		mime_buffer_reset(&expected);
		mime_imap_bodystructure(message, exact, text.len, 1, &out);
		mime_buffer_printf(&expected, "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL "
				   "\"%s\" \"7bit\" 6 1 NIL NIL NIL NIL)",
				   (char *)long_description.data);
		CU_ASSERT_STRING_EQUAL((char *)out.data, (char *)expected.data);
		mime_message_free(&message);
		/* The same Subject in a built message: no parser arena at all,
		   only the view's own. */
		message = mime_message_new();
		mime_message_set(message, "Subject", (char *)long_subject.data);
		mime_buffer_reset(&out);
		mime_buffer_reset(&expected);
		mime_imap_envelope(message, &out);
		mime_buffer_printf(&expected, "(NIL \"%s\" NIL NIL NIL NIL NIL NIL NIL NIL)",
				   (char *)long_subject.data);
		CU_ASSERT_STRING_EQUAL((char *)out.data, (char *)expected.data);
		mime_message_free(&message);
		free(exact);
		mime_buffer_free(&out);
		mime_buffer_free(&expected);
		mime_buffer_free(&text);
		mime_buffer_free(&long_subject);
		mime_buffer_free(&long_description);
	}
}

/* Lists that come out empty or nearly so: no parameters, an empty
   Disposition parameter list, empty address groups, Content-Language with
   0, 1 and 3 tags. Each expected ENVELOPE, BODYSTRUCTURE and BODY is what
   Dovecot 2.3 answered for the same message (APPENDed with CRLF). The
   views run on a borrowed tree over an exact-size copy of the input. */
static void test_empty_lists(void)
{
	static const struct {
		const char *text;
		const char *envelope, *bodystructure, *body;
	} cases[] = {
		{
			"From: Ann <ann@example.org>\nTo: undisclosed-recipients:;\n"
			"Cc: Empty group:;, Bob <bob@example.org>\nBcc:\nReply-To: \n"
			"Subject: empty lists\n\nbody\n",
			"(NIL \"empty lists\" ((\"Ann\" NIL \"ann\" \"example.org\")) "
			"((\"Ann\" NIL \"ann\" \"example.org\")) ((\"Ann\" NIL \"ann\" \"example.org\")) "
			"((NIL NIL \"undisclosed-recipients\" NIL)(NIL NIL NIL NIL)) "
			"((NIL NIL \"Empty group\" NIL)(NIL NIL NIL NIL)(\"Bob\" NIL \"bob\" \"example.org\")) "
			"NIL NIL NIL)",
			"(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 6 1 NIL NIL NIL NIL)",
			"(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 6 1)",
		},
		{
			"MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n"
			"Content-Language: en, de ,fr\n\n"
			"--b\nContent-Type: application/octet-stream\n\nx\n"
			"--b\nContent-Type: text/plain\nContent-Disposition: inline\n"
			"Content-Language: en\n\ny\n"
			"--b\nContent-Type: image/png; ;\nContent-Disposition: attachment;\n"
			"Content-Language: ,\n\nz\n--b--\n",
			"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)",
			"((\"application\" \"octet-stream\" NIL NIL NIL \"7bit\" 1 NIL NIL NIL NIL)"
			"(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 1 0 NIL "
			"(\"inline\" NIL) (\"en\") NIL)"
			"(\"image\" \"png\" NIL NIL NIL \"7bit\" 1 NIL (\"attachment\" NIL) NIL NIL) "
			"\"mixed\" (\"boundary\" \"b\") NIL (\"en\" \"de\" \"fr\") NIL)",
			"((\"application\" \"octet-stream\" NIL NIL NIL \"7bit\" 1)"
			"(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 1 0)"
			"(\"image\" \"png\" NIL NIL NIL \"7bit\" 1) \"mixed\")",
		},
		{
			"From: Group: ;\nSender: <>\nTo: A:b@c;, D: ;\nSubject: x\n"
			"Content-Type: TEXT/Plain; CHARSET=UTF-8; format=flowed\n"
			"Content-Language: \t\n\nbody\n",
			"(NIL \"x\" ((NIL NIL \"Group\" NIL)(NIL NIL NIL NIL)) "
			"((NIL NIL \"MISSING_MAILBOX\" \"MISSING_DOMAIN\")) "
			"((NIL NIL \"Group\" NIL)(NIL NIL NIL NIL)) "
			"((NIL NIL \"A\" NIL)(NIL NIL \"b\" \"c\")(NIL NIL NIL NIL)(NIL NIL \"D\" NIL)"
			"(NIL NIL NIL NIL)) NIL NIL NIL NIL)",
			"(\"TEXT\" \"Plain\" (\"CHARSET\" \"UTF-8\" \"format\" \"flowed\") NIL NIL \"7bit\" "
			"6 1 NIL NIL NIL NIL)",
			"(\"TEXT\" \"Plain\" (\"CHARSET\" \"UTF-8\" \"format\" \"flowed\") NIL NIL \"7bit\" 6 1)",
		},
		{
			"Content-Type: message/rfc822\nContent-Language: a, b ,c\n\n"
			"From: Inner:;\nContent-Type: text/html; charset=\n\n<p>\n",
			"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)",
			"(\"message\" \"rfc822\" NIL NIL NIL \"7bit\" 57 (NIL NIL "
			"((NIL NIL \"Inner\" NIL)(NIL NIL NIL NIL)) ((NIL NIL \"Inner\" NIL)(NIL NIL NIL NIL)) "
			"((NIL NIL \"Inner\" NIL)(NIL NIL NIL NIL)) NIL NIL NIL NIL NIL) "
			"(\"text\" \"html\" (\"charset\" \"\") NIL NIL \"7bit\" 5 1 NIL NIL NIL NIL) 4 "
			"NIL NIL (\"a\" \"b\" \"c\") NIL)",
			"(\"message\" \"rfc822\" NIL NIL NIL \"7bit\" 57 (NIL NIL "
			"((NIL NIL \"Inner\" NIL)(NIL NIL NIL NIL)) ((NIL NIL \"Inner\" NIL)(NIL NIL NIL NIL)) "
			"((NIL NIL \"Inner\" NIL)(NIL NIL NIL NIL)) NIL NIL NIL NIL NIL) "
			"(\"text\" \"html\" (\"charset\" \"\") NIL NIL \"7bit\" 5 1) 4)",
		},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t len = strlen(cases[i].text);
		char *exact = malloc(len);
		memcpy(exact, cases[i].text, len);
		struct mime_message *message = mime_parse_borrowed(exact, len);
		struct mime_buffer out = { 0 };

		mime_imap_envelope(message, &out);
		CU_ASSERT_STRING_EQUAL((char *)out.data, cases[i].envelope);
		mime_buffer_reset(&out);
		mime_imap_bodystructure(message, exact, len, 1, &out);
		CU_ASSERT_STRING_EQUAL((char *)out.data, cases[i].bodystructure);
		mime_buffer_reset(&out);
		mime_imap_bodystructure(message, exact, len, 0, &out);
		CU_ASSERT_STRING_EQUAL((char *)out.data, cases[i].body);
		/* Written after other output, as in a FETCH response. */
		mime_buffer_reset(&out);
		mime_buffer_append_str(&out, "* 1 FETCH (BODYSTRUCTURE ");
		mime_imap_bodystructure(message, exact, len, 1, &out);
		CU_ASSERT_STRING_EQUAL((char *)out.data + strlen("* 1 FETCH (BODYSTRUCTURE "),
				       cases[i].bodystructure);
		mime_buffer_free(&out);
		mime_message_free(&message);
		free(exact);
	}
}

const char unit_suite_name[] = "mime-imap";
/* A plain header block: CRLF lines, fields or continuations of them, the
   blank line once at the end; anything else is not. */
static void test_header_is_plain(void)
{
	static const struct {
		const char *block;
		bool plain;
	} cases[] = {
		{ "Subject: a\r\n\r\n", true },
		{ "Subject: a\r\n folded\r\n\tagain\r\nX-Y:\r\n\r\n", true },
		{ "\r\n", true },                        /* no field: the blank line alone */
		{ "Subject: a\r\n", false },             /* no blank line */
		{ "Subject: a\n\r\n", false },          /* a bare LF */
		{ "Subject: a\rb\r\n\r\n", false },     /* a bare CR */
		{ " folded\r\nX: y\r\n\r\n", false },  /* a continuation first */
		{ ": no name\r\n\r\n", false },
		{ "No colon\r\n\r\n", false },
		{ "Na me: v\r\n\r\n", false },          /* a space in the name */
		{ "X: y\r\n\r\nbody\r\n", false },     /* bytes past the blank line */
	};
	size_t name_len = 99;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		bool plain = mime_imap_header_is_plain(cases[i].block, strlen(cases[i].block));

		if (plain != cases[i].plain)
			fprintf(stderr, "\ncase %zu: %s\n", i, plain ? "plain" : "not plain");
		CU_ASSERT_EQUAL(plain, cases[i].plain);
	}
	CU_ASSERT_FALSE(mime_imap_header_is_plain("X: a\0b\r\n\r\n", 10)); /* a NUL */
	CU_ASSERT_TRUE(mime_imap_header_line_is_plain("Subject: a", 10, true, &name_len));
	CU_ASSERT_EQUAL(name_len, 7);
	CU_ASSERT_TRUE(mime_imap_header_line_is_plain(" more", 5, false, &name_len));
	CU_ASSERT_EQUAL(name_len, 0);
	CU_ASSERT_FALSE(mime_imap_header_line_is_plain(" more", 5, true, &name_len));
}

const struct unit_test unit_tests[] = {
	{ "ENVELOPE with groups, comments, encoded words", test_envelope },
	{ "ENVELOPE address forms as Dovecot gives them", test_envelope_address_forms },
	{ "BODYSTRUCTURE and BODY", test_bodystructure },
	{ "BODY[section]", test_sections },
	{ "BODY[HEADER] and BODY[] with a \"From \" line first", test_sections_unixfrom },
	{ "HEADER.FIELDS of a header block without a parse", test_header_fields_unparsed },
	{ "plain header blocks", test_header_is_plain },
	{ "section numbers: delivery-status is a leaf, rfc822 encloses", test_part_numbering },
	{ "BINARY and partials", test_binary_and_partial },
	{ "IMAP strings", test_strings },
	{ "views of header values past an arena chunk", test_long_values },
	{ "empty lists in ENVELOPE and BODYSTRUCTURE, as Dovecot writes them", test_empty_lists },
	{ NULL, NULL },
};
