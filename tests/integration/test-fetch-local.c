/* SPDX-License-Identifier: MIT */
/* Differential test of local FETCH: the fill fed Dovecot's raw responses, then every answer the writer gives must be Dovecot's, byte for byte. */
#include "config.h"
#include "itest.h"
#include "cache.h"
#include "fetch-fill.h"
#include "fetch.h"
#include "imap-client-commands.h"
#include "imap-client-sync.h"
#include "imap-command.h"
#include "imap-parser.h"
#include "log.h"
#include "mailbox-view.h"
#include "mime-imap.h"
#include "mime-message.h"
#include "mime-parser.h"

#include <dirent.h>
#include <event2/buffer.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define PROGRAM "test-fetch-local"
#define COMMAND_MAX 4096
#define FAILURES_SHOWN 40 /* detailed reports; the rest are counted */
#define DISAGREEMENTS TOP_SRCDIR "/tests/integration/mime-dovecot-disagreements.txt"

/* What a command of the battery is expected to do. */
enum expect {
	EXPECT_LOCAL,     /* must be answered here, and equal Dovecot's answer */
	EXPECT_UPSTREAM,  /* must go upstream (a rule says so) */
	EXPECT_EITHER,    /* local only when content checks pass; equal when local */
};

static struct {
	struct imap_client_sync *sync;
	struct imap_client *client;
	struct cache *cache;
	struct mailbox_view *view;
	struct fetch_fill *fill;
	int64_t mailbox_id;
	bool read_only, condstore;
	uint32_t binary_marked_seq; /* the message of the last BINARY.SIZE, 0: none */
	struct evbuffer *untagged;   /* the current raw command's untagged bytes */
	struct evbuffer *tagged;     /* its tagged line, tag included */
	char tag[32];
	unsigned int tags;
	struct imap_parser *parser;
	struct imap_command_parser *commands;
	/* counts */
	unsigned int local, upstream, either_upstream, compared, failures;
	unsigned int fill_complete, fill_bad;
} t;

static void report_failure(const char *command, const char *what, const char *direct, size_t direct_len,
			   const char *local, size_t local_len)
{
	t.failures++;
	itest_report(command, false, "%s", what);
	if (t.failures > FAILURES_SHOWN)
		return;
	if (direct != NULL) {
		size_t i = 0;

		while (i < direct_len && i < local_len && direct[i] == local[i])
			i++;
		printf("  first difference at byte %zu of %zu (direct) / %zu (local)\n", i, direct_len, local_len);
		printf("  direct: %.*s\n", (int)(direct_len - (i > 120 ? i - 120 : 0) < 400 ?
					   direct_len - (i > 120 ? i - 120 : 0) : 400), direct + (i > 120 ? i - 120 : 0));
		printf("  local:  %.*s\n", (int)(local_len - (i > 120 ? i - 120 : 0) < 400 ?
					   local_len - (i > 120 ? i - 120 : 0) : 400), local + (i > 120 ? i - 120 : 0));
	}
}

static int on_raw(struct imap_client *client, struct imap_client_command *command, enum imap_client_raw_kind kind,
		  const unsigned char *data, size_t len, bool line_end, void *context)
{
	(void)client;
	(void)command;
	(void)context;
	if (kind == IMAP_CLIENT_RAW_UNTAGGED) {
		enum imap_fetch_items_result result;

		evbuffer_add(t.untagged, data, len);
		result = fetch_fill_feed(t.fill, data, len, line_end);
		if (result == IMAP_FETCH_ITEMS_COMPLETE)
			t.fill_complete++;
		else if (result == IMAP_FETCH_ITEMS_MALFORMED || result == IMAP_FETCH_ITEMS_TOO_BIG)
			t.fill_bad++;
	} else if (kind == IMAP_CLIENT_RAW_TAGGED) {
		evbuffer_add(t.tagged, t.tag, strlen(t.tag));
		evbuffer_add(t.tagged, data, len);
	}
	return 0;
}

static void raw_done(struct imap_client *client, struct imap_client_command *command,
		     const struct imap_client_result *result, void *context)
{
	(void)client;
	(void)command;
	(void)result;
	(void)context;
}

/* Sends "TAG text" raw, as the session does, and waits for its answer
   (untagged bytes in t.untagged, the tagged line in t.tagged). */
static void run_raw(const char *text)
{
	struct imap_client_command *command;

	evbuffer_drain(t.untagged, evbuffer_get_length(t.untagged));
	evbuffer_drain(t.tagged, evbuffer_get_length(t.tagged));
	snprintf(t.tag, sizeof(t.tag), "L%u", ++t.tags);
	command = imap_client_raw_command_new(t.client, t.tag, "FETCH", raw_done, NULL);
	imap_client_raw_command_write(command, " ", 1);
	imap_client_raw_command_write(command, text, strlen(text));
	imap_client_raw_command_write(command, "\r\n", 2);
	imap_client_raw_command_end(command);
	/* an own command queued behind it completes after it */
	(void)imap_client_sync_wait(t.sync, imap_client_noop(t.client, NULL, NULL), NULL);
	if (imap_client_get_state(t.client) == IMAP_CLIENT_STATE_DISCONNECTED) {
		printf("FAIL: Dovecot closed the connection at %s\n", text);
		exit(1);
	}
}

/* The bytes of an evbuffer as a malloc'd string (NULs kept; *len_r). */
static char *buffer_text(struct evbuffer *buffer, size_t *len_r)
{
	size_t len = evbuffer_get_length(buffer);
	char *text = malloc(len + 1);

	evbuffer_copyout(buffer, text, len);
	text[len] = '\0';
	*len_r = len;
	return text;
}

/* Dovecot's timings " (0.001 + 0.000 secs)" cut from the tagged line. */
static void strip_timing(char *line, size_t *len)
{
	char *open = strstr(line, " (");
	char *secs = strstr(line, " secs).\r\n");

	while (open != NULL && strstr(open + 1, " (") != NULL && strstr(open + 1, " (") < secs)
		open = strstr(open + 1, " (");
	if (open != NULL && secs != NULL && open < secs) {
		memmove(open, ".\r\n", 4);
		*len = strlen(line);
	}
}

/* Parses "TAG text" as the session would. */
static bool parse_command(const char *text, struct imap_command *command)
{
	char line[COMMAND_MAX + 8];
	size_t consumed;
	const char *message;

	snprintf(line, sizeof(line), "P1 %s\r\n", text);
	imap_parser_free(&t.parser);
	t.parser = imap_parser_new();
	if (imap_parser_feed_bytes(t.parser, line, strlen(line), &consumed) != IMAP_PARSER_LINE_COMPLETE)
		return false;
	return imap_command_parse(t.commands, imap_parser_get_line(t.parser), command, &message) ==
	       IMAP_COMMAND_ERROR_NONE;
}

/* One command: planned and written here, then sent to Dovecot; the
   answers compared. */
static void check_command(const char *text, enum expect expect)
{
	struct imap_command command;
	struct fetch_facts facts = { .cache = t.cache, .mailbox_id = t.mailbox_id, .view = t.view,
				     .read_only = t.read_only, .condstore = t.condstore };
	struct fetch_answer *answer = NULL;
	const char *why = "";
	enum fetch_route route = FETCH_ROUTE_UPSTREAM;
	struct evbuffer *local = evbuffer_new();
	char line[COMMAND_MAX + 8];
	unsigned int seq = 0;

	snprintf(line, sizeof(line), "P1 %s", text);
	/* Dovecot keeps the whole-message stream a message's first
	   BINARY.SIZE made (the session marks every message for 60 s; here
	   the message the command names is marked for good) */
	if (sscanf(text, "FETCH %u", &seq) == 1 && strstr(text, "BINARY.SIZE") != NULL)
		t.binary_marked_seq = seq;
	facts.binary_marked = seq != 0 && seq == t.binary_marked_seq;
	facts.line = line;
	facts.line_len = strlen(line);
	if (!parse_command(text, &command)) {
		report_failure(text, "our parser refused the command", NULL, 0, NULL, 0);
		evbuffer_free(local);
		return;
	}
	route = fetch_plan(&command, &facts, &answer, &why);
	if (route == FETCH_ROUTE_LOCAL && fetch_answer_needs_seen(answer)) {
		/* the session has the upstream set \Seen first, then plans again
		   (test-cache-steps.py compares that with Dovecot end to end) */
		fetch_answer_free(&answer);
		route = FETCH_ROUTE_UPSTREAM;
		why = "it sets \\Seen: the session's STORE comes first";
	}
	if (route == FETCH_ROUTE_LOCAL) {
		if (fetch_answer_write(answer, local, 0) != FETCH_WRITE_DONE)
			report_failure(text, "the writer lost a value", NULL, 0, NULL, 0);
		fetch_answer_free(&answer);
		/* only what was answered here is asked of Dovecot: some of what
		   goes upstream makes it drop the connection (BINARY of broken
		   base64) */
		run_raw(text);
	}
	if (route == FETCH_ROUTE_UPSTREAM) {
		if (expect == EXPECT_LOCAL) {
			char what[256];

			snprintf(what, sizeof(what), "went upstream: %s", why);
			report_failure(text, what, NULL, 0, NULL, 0);
		} else if (expect == EXPECT_EITHER) {
			t.either_upstream++;
			if (getenv("FETCH_LOCAL_VERBOSE") != NULL)
				printf("note: upstream (%s): %s\n", why, text);
		} else {
			t.upstream++;
		}
		evbuffer_free(local);
		return;
	}
	if (expect == EXPECT_UPSTREAM)
		report_failure(text, "answered locally, but a rule sends it upstream", NULL, 0, NULL, 0);
	fetch_write_tagged_ok(local, t.tag);
	evbuffer_add_buffer(t.untagged, t.tagged);
	size_t direct_len, local_len;
	char *direct_text = buffer_text(t.untagged, &direct_len);
	char *local_text = buffer_text(local, &local_len);
	char *tagged = strstr(direct_text, "\r\n") != NULL ? direct_text : direct_text;

	(void)tagged;
	/* the tagged line is the last one: strip its timings */
	{
		size_t start = direct_len >= 2 ? direct_len - 2 : 0;

		while (start > 0 && !(direct_text[start - 1] == '\n'))
			start--;
		size_t tail = direct_len - start;
		strip_timing(direct_text + start, &tail);
		direct_len = start + tail;
	}
	t.compared++;
	if (direct_len != local_len || memcmp(direct_text, local_text, direct_len) != 0)
		report_failure(text, "the local answer differs from Dovecot's", direct_text, direct_len, local_text,
			       local_len);
	else
		t.local++;
	free(direct_text);
	free(local_text);
	evbuffer_free(local);
}

static void check(enum expect expect, const char *format, ...) __attribute__((format(printf, 2, 3)));
static void check(enum expect expect, const char *format, ...)
{
	char text[COMMAND_MAX];
	va_list args;

	va_start(args, format);
	vsnprintf(text, sizeof(text), format, args);
	va_end(args);
	check_command(text, expect);
}

/* ---- the mailbox and its fill ---- */

static unsigned long number_after(const char *text, const char *key)
{
	const char *at = strstr(text, key);

	return at != NULL ? strtoul(at + strlen(key), NULL, 10) : 0;
}

/* Selects name (EXAMINE unless read_write), makes a fresh view and fills
   the store from Dovecot's answers to FETCH 1:* of everything. Returns
   the message count. */
static uint32_t open_mailbox(const char *name, bool read_write)
{
	char command[256];
	struct cache_mailbox mailbox;
	uint32_t exists;
	size_t len;
	char *text;

	fetch_fill_set_mailbox(t.fill, NULL, 0, NULL);
	mailbox_view_free(&t.view);
	snprintf(command, sizeof(command), "%s \"%s\"", read_write ? "SELECT" : "EXAMINE", name);
	run_raw(command);
	text = buffer_text(t.untagged, &len);
	exists = (uint32_t)strtoul(strstr(text, "* ") + 2, NULL, 10);
	for (const char *line = text; line != NULL; line = strstr(line + 1, "\r\n* ")) {
		unsigned long n;
		char word[16];

		if (sscanf(line + (line == text ? 0 : 2), "* %lu %15s", &n, word) == 2 && strcmp(word, "EXISTS") == 0)
			exists = (uint32_t)n;
	}
	itest_check("UIDVALIDITY reported", number_after(text, "[UIDVALIDITY ") != 0, NULL);
	if (cache_mailbox_open(t.cache, name, (uint32_t)number_after(text, "[UIDVALIDITY "), &mailbox, NULL) < 0)
		exit(ITEST_EXIT_HARD_ERROR);
	free(text);
	t.mailbox_id = mailbox.id;
	t.read_only = !read_write;
	t.binary_marked_seq = 0;
	t.view = mailbox_view_new();
	if (mailbox_view_upstream_exists(t.view, exists) < 0)
		exit(ITEST_EXIT_HARD_ERROR);
	fetch_fill_set_mailbox(t.fill, t.cache, t.mailbox_id, t.view);
	run_raw("FETCH 1:* (UID FLAGS)");
	run_raw("FETCH 1:* (INTERNALDATE RFC822.SIZE ENVELOPE BODYSTRUCTURE BODY BODY.PEEK[HEADER])");
	run_raw("FETCH 1:* (BODY.PEEK[])");
	return exists;
}

/* Whether the store has everything of seq, and our structure's verdict. */
static bool stored_whole(uint32_t seq, bool *agrees_r)
{
	const struct mailbox_view_message *message = mailbox_view_get(t.view, seq);
	struct cache_message stored;
	unsigned int all = CACHE_HAS(CACHE_ITEM_INTERNALDATE) | CACHE_HAS(CACHE_ITEM_ENVELOPE) |
			   CACHE_HAS(CACHE_ITEM_BODYSTRUCTURE) | CACHE_HAS(CACHE_ITEM_BODY) | CACHE_HAS(CACHE_ITEM_HEADER) |
			   CACHE_HAS(CACHE_ITEM_FLAGS) | CACHE_HAS(CACHE_ITEM_SIZE) | CACHE_HAS(CACHE_ITEM_MESSAGE) |
			   CACHE_HAS(CACHE_ITEM_STRUCTURE_AGREES);
	bool whole;

	if (message == NULL || message->uid == 0 || message->flags == NULL ||
	    cache_lookup(t.cache, t.mailbox_id, message->uid, &stored) != 1)
		return false;
	whole = (stored.present & all) == all;
	*agrees_r = stored.structure_agrees;
	cache_message_clear(&stored);
	return whole;
}

/* ---- the battery ---- */

/* The section numbers of every part of the stored message of seq, as
   our library numbers them; each with whether it is a leaf and a
   message/rfc822. */
struct part_list {
	char sections[256][64];
	bool leaf[256], message[256];
	unsigned int count;
};

static void list_parts(uint32_t seq, struct part_list *parts)
{
	const struct mailbox_view_message *message = mailbox_view_get(t.view, seq);
	struct evbuffer *body = evbuffer_new();
	uint64_t size;
	struct mime_message *root = NULL;

	parts->count = 0;
	if (cache_body_size(t.cache, t.mailbox_id, message->uid, &size) == 1 &&
	    cache_body_read(t.cache, t.mailbox_id, message->uid, 0, size, body) == 1) {
		size_t len = evbuffer_get_length(body);
		unsigned char *raw = evbuffer_pullup(body, -1);

		root = mime_parse_borrowed(raw, len);
		for (struct mime_message *part = root; part != NULL && parts->count < 256;
		     part = mime_message_walk_next(root, part)) {
			char *section = mime_imap_part_section(part);

			if (section != NULL && section[0] != '\0' && strlen(section) < 64) {
				bool dup = false;

				for (unsigned int i = 0; i < parts->count; i++)
					dup = dup || strcmp(parts->sections[i], section) == 0;
				if (!dup) {
					strcpy(parts->sections[parts->count], section);
					parts->leaf[parts->count] = part->payload_kind == MIME_PAYLOAD_BYTES;
					parts->message[parts->count] =
						strcmp(mime_message_get_content_type(part), "message/rfc822") == 0;
					parts->count++;
				}
			}
			free(section);
		}
	}
	mime_message_free(&root);
	evbuffer_free(body);
}

/* Fixed items and whole-message items: always local. */
static void battery_fixed(uint32_t seq)
{
	uint32_t uid = mailbox_view_get(t.view, seq)->uid;

	check(EXPECT_LOCAL, "FETCH %u (UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODYSTRUCTURE BODY)", seq);
	check(EXPECT_LOCAL, "FETCH %u (BODYSTRUCTURE RFC822.SIZE UID BODY INTERNALDATE)", seq);
	check(EXPECT_LOCAL, "FETCH %u ALL", seq);
	check(EXPECT_LOCAL, "FETCH %u FAST", seq);
	check(EXPECT_LOCAL, "FETCH %u FULL", seq);
	check(EXPECT_LOCAL, "FETCH %u (ENVELOPE FLAGS ENVELOPE)", seq);
	check(EXPECT_LOCAL, "UID FETCH %u (FLAGS ENVELOPE UID FLAGS)", uid);
	check(EXPECT_LOCAL, "FETCH %u (BODY.PEEK[HEADER] RFC822.HEADER BODY.PEEK[HEADER]<10.20> body.peek[header])", seq);
	check(EXPECT_LOCAL, "FETCH %u (BODY.PEEK[] RFC822.SIZE BODY.PEEK[]<100.50> BODY.PEEK[]<99999999.5>)", seq);
	check(EXPECT_LOCAL, "FETCH %u (RFC822 RFC822.TEXT BODY.PEEK[TEXT]<3.40> BODY[TEXT] RFC822)", seq);
	check(EXPECT_LOCAL, "UID FETCH %u (BODY.PEEK[TEXT] RFC822.HEADER)", uid);
}

/* Derived items: local exactly for messages our library reads as Dovecot does. */
static void battery_derived(uint32_t seq, bool agrees, bool fields_strict)
{
	struct part_list parts;
	enum expect derived = agrees ? EXPECT_LOCAL : EXPECT_UPSTREAM;
	enum expect fields = agrees && fields_strict ? EXPECT_LOCAL : EXPECT_EITHER;

	check(fields, "FETCH %u (BODY.PEEK[HEADER.FIELDS (SUBJECT FROM X-NOPE)] "
		      "BODY.PEEK[HEADER.FIELDS.NOT (RECEIVED date Content-Type)])", seq);
	check(fields, "FETCH %u (BODY.PEEK[HEADER.FIELDS (subject FROM)] UID BODY.PEEK[HEADER.FIELDS (X-NOPE)]<0.1>)", seq);
	check(fields, "FETCH %u (BODY.PEEK[HEADER.FIELDS (MESSAGE-ID REFERENCES IN-REPLY-TO TO CC)])", seq);
	/* names the client quoted: Dovecot echoes them quoted, upper case */
	check(fields, "FETCH %u (BODY.PEEK[HEADER.FIELDS (\"Subject\" from)] "
		      "BODY.PEEK[HEADER.FIELDS.NOT (\"received\" \"DATE\" X-Nope)]<0.40>)", seq);
	list_parts(seq, &parts);
	for (unsigned int i = 0; i < parts.count; i++) {
		const char *p = parts.sections[i];

		check(derived, "FETCH %u (BODY.PEEK[%s] BODY.PEEK[%s.MIME] BODY.PEEK[%s]<2.10>)", seq, p, p, p);
		if (parts.message[i]) {
			check(derived, "FETCH %u (BODY.PEEK[%s.HEADER] BODY.PEEK[%s.TEXT])", seq, p, p);
			check(agrees ? EXPECT_EITHER : EXPECT_UPSTREAM, "FETCH %u (BODY.PEEK[%s.HEADER.FIELDS (SUBJECT "
			      "\"From\")] BODY.PEEK[%s.HEADER.FIELDS.NOT (Subject)])", seq, p, p);
		}
		/* Dovecot's own numbering: 1 of a leaf is the leaf, of a leaf's
		   root the end; HEADER of a part that is no message is empty */
		check(derived, "FETCH %u (BODY.PEEK[%s.1] BODY.PEEK[%s.1.MIME] BODY.PEEK[%s.2] BODY.PEEK[%s.1.1])", seq,
		      p, p, p, p);
		if (!parts.message[i])
			check(derived, "FETCH %u (BODY.PEEK[%s.HEADER] BODY.PEEK[%s.TEXT] BODY.PEEK[%s.HEADER.FIELDS "
			      "(SUBJECT)])", seq, p, p, p);
		if (parts.leaf[i]) {
			check(agrees ? EXPECT_EITHER : EXPECT_UPSTREAM, "FETCH %u (BINARY.PEEK[%s] UID)", seq, p);
			check(agrees ? EXPECT_EITHER : EXPECT_UPSTREAM, "FETCH %u (BINARY.PEEK[%s]<1.20>)", seq, p);
			check(EXPECT_UPSTREAM, "FETCH %u (BINARY.SIZE[%s])", seq, p);
		} else {
			/* a multipart or message part: as it is when nothing inside is encoded */
			check(agrees ? EXPECT_EITHER : EXPECT_UPSTREAM, "FETCH %u (BINARY.PEEK[%s] BINARY.PEEK[%s]<2.9>)",
			      seq, p, p);
		}
	}
	check(derived, "FETCH %u (BODY.PEEK[1])", seq);
	/* parts past the last: Dovecot answers an empty string */
	check(derived, "FETCH %u (BODY.PEEK[1] BODY.PEEK[%u] BODY.PEEK[1.9] BODY.PEEK[2.HEADER] BINARY.PEEK[%u])", seq,
	      parts.count + 2, parts.count + 2);
	/* the whole message decoded: local when nothing in it is encoded */
	check(agrees ? EXPECT_EITHER : EXPECT_UPSTREAM, "FETCH %u (BINARY.PEEK[] BINARY.PEEK[]<3.30>)", seq);
	check(EXPECT_UPSTREAM, "FETCH %u (BINARY.SIZE[] BINARY.SIZE[1] UID)", seq);

}

/* Commands over many messages and sets with "*", ranges in any order. */
static void battery_sets(uint32_t count)
{
	uint32_t max_uid = mailbox_view_max_uid(t.view);

	check(EXPECT_LOCAL, "FETCH 1:* (FLAGS UID)");
	check(EXPECT_LOCAL, "FETCH 1:* (UID FLAGS)");
	check(EXPECT_LOCAL, "FETCH 5,3,1:2,3 (UID RFC822.SIZE)");
	check(EXPECT_LOCAL, "FETCH *:%u UID", count > 2 ? count - 2 : 1);
	check(EXPECT_LOCAL, "FETCH * (UID)");
	check(EXPECT_LOCAL, "UID FETCH %u:* FLAGS", max_uid + 100);
	check(EXPECT_LOCAL, "UID FETCH %u FLAGS", max_uid + 100);
	check(EXPECT_LOCAL, "UID FETCH %u:%u,1 FLAGS", max_uid + 50, max_uid + 100);
	check(EXPECT_LOCAL, "UID FETCH * (FLAGS)");
	check(EXPECT_LOCAL, "UID FETCH 1:* (RFC822.SIZE)");
	check(EXPECT_LOCAL, "FETCH 1:10 (ENVELOPE FLAGS ENVELOPE)");
	check(EXPECT_LOCAL, "FETCH 2:4,1 (BODY.PEEK[HEADER] UID)");
	check(EXPECT_LOCAL, "FETCH 1:* (INTERNALDATE BODY)");
	check(EXPECT_LOCAL, "FETCH 1:* (BODY.PEEK[]<0.20> BODY.PEEK[TEXT]<5.10>)");
	check(EXPECT_LOCAL, "UID FETCH 1:* (BODY.PEEK[HEADER]<0.30>)");
	/* what goes upstream, by rule */
	check(EXPECT_UPSTREAM, "FETCH %u UID", count + 1);
	check(EXPECT_UPSTREAM, "FETCH 1:%u UID", count + 5);
	check(EXPECT_LOCAL, "FETCH 1 (BODY.PEEK[HEADER.FIELDS (\"SUBJECT\" FROM)])");
	check(EXPECT_UPSTREAM, "FETCH 1 (BINARY.SIZE[] UID)");
	check(EXPECT_UPSTREAM, "FETCH 1 (BODY.PEEK[01])");
}

/* ---- the messages ---- */

/* Messages built for the rules: BINARY of each encoding, NUL, 8-bit,
   broken encodings, nested messages, odd headers. */
static const char *const crafted[] = {
	/* base64 with NULs in the decoded part, and a text part */
	"From: a@example.org\r\nSubject: nul\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n"
	"--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
	"--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nAAECAwBhYmMA\r\n"
	"--b--\r\n",
	/* quoted-printable, soft breaks and escapes */
	"From: a@example.org\r\nSubject: qp\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
	"Content-Transfer-Encoding: quoted-printable\r\n\r\nCaf=C3=A9 au lait =\r\nsoft break=3D\r\nline two\r\n",
	/* quoted-printable with lower-case hex and a trailing blank: goes upstream */
	"From: a@example.org\r\nSubject: qp2\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n"
	"\r\nlow=c3=a9 \r\nbad=ZZ\r\n",
	/* 8-bit UTF-8 (0x80 bytes): BINARY goes upstream, sections are local */
	"From: a@example.org\r\nSubject: 8bit\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
	"\r\nCaf\xc3\xa9 \xe2\x80\x94 ok\r\n",
	/* an unknown encoding and invalid base64 */
	"From: a@example.org\r\nSubject: cte\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"z\"\r\n\r\n"
	"--z\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 x\r\n"
	"--z\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nAB=CD*!\r\n--z--\r\n",
	/* a nested message */
	"From: a@example.org\r\nSubject: nested\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"o\"\r\n\r\n"
	"--o\r\nContent-Type: text/plain\r\n\r\nouter\r\n"
	"--o\r\nContent-Type: message/rfc822\r\n\r\nFrom: b@example.org\r\nSubject: inner\r\n"
	"Content-Type: multipart/alternative; boundary=\"i\"\r\n\r\n--i\r\nContent-Type: text/plain\r\n\r\ninner text\r\n"
	"--i\r\nContent-Type: text/html\r\n\r\n<p>inner</p>\r\n--i--\r\n\r\n--o--\r\n",
	/* odd headers: a blank before the colon, a continuation, an empty value */
	"From: a@example.org\r\nSubject : spaced\r\nX-Folded: one\r\n two\r\nX-Empty:\r\n\r\nbody\r\n",
	/* no body at all, and no blank line */
	"From: a@example.org\r\nSubject: nobody\r\n",
	/* bare LF line ends (the upstream gives CRLF) */
	"From: a@example.org\nSubject: lf\n\nline one\nline two\n",
	/* an empty base64 part, nothing else decoded: Dovecot sends the
	   original, cut to its rewritten stream's length */
	"From: a@example.org\r\nSubject: empty64\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"e\"\r\n\r\n"
	"--e\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
	"--e\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n\r\n--e--\r\n",
	/* a part header with no blank line before the next boundary */
	"From: a@example.org\r\nSubject: noblank\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"n\"\r\n\r\n"
	"--n\r\nContent-Type: text/plain\r\n--n\r\nContent-Type: application/octet-stream\r\n"
	"Content-Transfer-Encoding: base64\r\n\r\naGVsbG8=\r\n--n--\r\n",
	/* a folded Content-Transfer-Encoding: Dovecot says NO [UNKNOWN-CTE] */
	"From: a@example.org\r\nSubject: folded\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n"
	"Content-Transfer-Encoding:\r\n base64\r\n\r\naGVsbG8=\r\n",
};

static void append(const char *mailbox, const void *data, size_t len)
{
	const struct imap_client_result *result;

	if (imap_client_sync_wait(t.sync, imap_client_append(t.client, mailbox, NULL, NULL, data, len, NULL, NULL),
				  &result) != IMAP_CLIENT_STATUS_OK)
		printf("note: APPEND to %s refused: %s\n", mailbox, result->text);
}

/* CPython's test_email data directory, or NULL. */
static char *cpython_data_dir(void)
{
	const char *python = getenv("PYTHON3") != NULL ? getenv("PYTHON3") : "python3";
	char command[512], path[1024];
	FILE *pipe;

	snprintf(command, sizeof(command),
		 "%s -c 'import os, test; print(os.path.join(os.path.dirname(test.__file__), \"test_email\", \"data\"))' "
		 "2>/dev/null", python);
	pipe = popen(command, "r");
	if (pipe == NULL)
		return NULL;
	if (fgets(path, sizeof(path), pipe) == NULL) {
		pclose(pipe);
		return NULL;
	}
	pclose(pipe);
	path[strcspn(path, "\n")] = '\0';
	return access(path, R_OK) == 0 ? strdup(path) : NULL;
}

static int name_compare(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* APPENDs CPython's msg_*.txt to mailbox, in name order; their names in *names_r. */
static unsigned int append_cpython(const char *mailbox, char ***names_r)
{
	char *dir = cpython_data_dir();
	DIR *d;
	struct dirent *entry;
	char **names = NULL;
	unsigned int count = 0;

	*names_r = NULL;
	if (dir == NULL || (d = opendir(dir)) == NULL) {
		printf("note: CPython's test_email data not found: its messages are not compared\n");
		free(dir);
		return 0;
	}
	while ((entry = readdir(d)) != NULL) {
		if (strncmp(entry->d_name, "msg_", 4) != 0 || strstr(entry->d_name, ".txt") == NULL)
			continue;
		names = realloc(names, (count + 1) * sizeof(*names));
		names[count++] = strdup(entry->d_name);
	}
	closedir(d);
	qsort(names, count, sizeof(*names), name_compare);
	for (unsigned int i = 0; i < count; i++) {
		char path[2048];
		FILE *file;
		char *data;
		long size;

		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		file = fopen(path, "rb");
		if (file == NULL)
			continue;
		fseek(file, 0, SEEK_END);
		size = ftell(file);
		fseek(file, 0, SEEK_SET);
		data = malloc((size_t)size + 1);
		if (fread(data, 1, (size_t)size, file) == (size_t)size)
			append(mailbox, data, (size_t)size);
		free(data);
		fclose(file);
	}
	free(dir);
	*names_r = names;
	return count;
}

/* Whether the disagreement list says msg's BODYSTRUCTURE differs. */
static bool listed_disagreement(const char *name)
{
	FILE *file = fopen(DISAGREEMENTS, "r");
	char line[1024];
	bool listed = false;

	if (file == NULL) {
		fprintf(stderr, "%s: cannot read %s\n", PROGRAM, DISAGREEMENTS);
		exit(ITEST_EXIT_HARD_ERROR);
	}
	while (fgets(line, sizeof(line), file) != NULL) {
		char message[128], item[128];

		if (line[0] != '#' && sscanf(line, "%127s %127s", message, item) == 2 && strcmp(message, name) == 0 &&
		    strcmp(item, "BODYSTRUCTURE") == 0)
			listed = true;
	}
	fclose(file);
	return listed;
}

/* Fills from mailbox and runs the per-message battery on every message. */
static void battery_mailbox(const char *name, char **cpython_names, unsigned int cpython_count, bool fields_strict)
{
	uint32_t count = open_mailbox(name, false);
	unsigned int disagreeing = 0;

	itest_check("the mailbox has messages", count > 0, "%s", name);
	for (uint32_t seq = 1; seq <= count; seq++) {
		bool agrees = false, whole = stored_whole(seq, &agrees);
		char label[128];

		snprintf(label, sizeof(label), "%s %u: the fill stored every item and a structure verdict", name, seq);
		if (!whole) {
			itest_check(label, false, NULL);
			continue;
		}
		if (!agrees)
			disagreeing++;
		if (cpython_names != NULL && seq <= cpython_count && (listed_disagreement(cpython_names[seq - 1]) == agrees)) {
			snprintf(label, sizeof(label), "%s (%s): structure verdict %s as the disagreement list says", name,
				 cpython_names[seq - 1], agrees ? "agrees" : "differs");
			itest_check(label, false, NULL);
		}
		battery_fixed(seq);
		battery_derived(seq, agrees, fields_strict);
	}
	printf("%s: %u messages, %u of them read differently by our library (derived items upstream)\n", name, count,
	       disagreeing);
}

/* The crafted messages, each for a rule (after battery_mailbox filled fetch-local). */
static void battery_crafted(void)
{
	/* BINARY of a decoded part is "~{n}", NUL or not; of a plain one "{n}" */
	check(EXPECT_LOCAL, "FETCH 1 (BINARY.PEEK[2] BINARY.PEEK[2]<1.3> BINARY.PEEK[1])");
	check(EXPECT_LOCAL, "FETCH 2 (BINARY.PEEK[1] BINARY.PEEK[1]<4.9>)");
	/* quoted-printable or base64 Dovecot decodes otherwise (or fails on), an unknown encoding */
	check(EXPECT_UPSTREAM, "FETCH 3 (BINARY.PEEK[1])");
	check(EXPECT_UPSTREAM, "FETCH 5 (BINARY.PEEK[1])");
	check(EXPECT_UPSTREAM, "FETCH 5 (BINARY.PEEK[2])");
	check(EXPECT_LOCAL, "FETCH 5 (BODY.PEEK[1] BODY.PEEK[2])");
	/* 8-bit: a 0x80 in BODY[] may have been a NUL, which BINARY sends as it is */
	check(EXPECT_UPSTREAM, "FETCH 4 (BINARY.PEEK[1])");
	check(EXPECT_LOCAL, "FETCH 4 (BODY.PEEK[1] BODY.PEEK[TEXT])");
	/* a nested message: its sections are local, and BINARY of its
	   leaves; BINARY of the message part itself is not */
	check(EXPECT_LOCAL, "FETCH 6 (BODY.PEEK[2.HEADER] BODY.PEEK[2.TEXT] BODY.PEEK[2.1] BODY.PEEK[2.2.MIME] BODY.PEEK[2])");
	check(EXPECT_LOCAL, "FETCH 6 (BODY.PEEK[2.HEADER.FIELDS (\"Subject\" FROM)] BODY.PEEK[2.1.1] BODY.PEEK[2.9])");
	check(EXPECT_EITHER, "FETCH 6 (BINARY.PEEK[2])");
	check(EXPECT_LOCAL, "FETCH 6 (BINARY.PEEK[2.1] BINARY.PEEK[2.9] BINARY.PEEK[2.1.1])");
	check(EXPECT_LOCAL, "FETCH 6 (BINARY.PEEK[1])");
	/* BINARY[] of a message with nothing encoded in it, no 0x80: the
	   message as it is (Dovecot dropped any stream a BINARY.SIZE made
	   when it decoded message 6 above) */
	t.binary_marked_seq = 0;
	check(EXPECT_LOCAL, "FETCH 9 (BINARY.PEEK[] BINARY.PEEK[]<2.5>)");
	/* a header block that is not plain RFC 5322: HEADER.FIELDS upstream, the block itself local */
	check(EXPECT_UPSTREAM, "FETCH 7 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])");
	check(EXPECT_LOCAL, "FETCH 7 (BODY.PEEK[HEADER] BODY.PEEK[TEXT])");
	check(EXPECT_UPSTREAM, "FETCH 8 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])");
	check(EXPECT_LOCAL, "FETCH 8 (BODY.PEEK[HEADER] BODY.PEEK[TEXT] RFC822.SIZE)");
	/* bare LF line ends: Dovecot's BODY[] has CRLF, and so has everything served from it */
	check(EXPECT_LOCAL, "FETCH 9 (BODY.PEEK[HEADER.FIELDS (SUBJECT)] BODY.PEEK[TEXT] BODY.PEEK[1] BINARY.PEEK[1])");
}

/* CONDSTORE: MODSEQ and CHANGEDSINCE from the view, once the client enabled it. */
static void battery_condstore(void)
{
	uint32_t count;

	check(EXPECT_UPSTREAM, "FETCH 1 (MODSEQ)");
	check(EXPECT_UPSTREAM, "FETCH 1 (UID) (CHANGEDSINCE 1)");
	run_raw("ENABLE CONDSTORE");
	t.condstore = true;
	count = open_mailbox("INBOX", false);
	run_raw("FETCH 1:* (UID FLAGS MODSEQ)");
	check(EXPECT_LOCAL, "FETCH 1:5 (MODSEQ FLAGS UID)");
	check(EXPECT_LOCAL, "FETCH 1:* (FLAGS)");
	check(EXPECT_LOCAL, "FETCH 1:* (UID) (CHANGEDSINCE 1)");
	check(EXPECT_LOCAL, "FETCH 1:3 (BODY.PEEK[HEADER.FIELDS (FROM)] UID FLAGS) (CHANGEDSINCE 1)");
	check(EXPECT_LOCAL, "UID FETCH 1:* (FLAGS) (CHANGEDSINCE 999999)");
	check(EXPECT_UPSTREAM, "UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)");
	(void)count;
}

/* A read-write mailbox: non-PEEK fetches are local only for \Seen messages. */
static void battery_read_write(void)
{
	uint32_t count = open_mailbox("fetch-local", true);
	uint32_t seen = 0, unseen = 0;

	for (uint32_t seq = 1; seq <= count; seq++) {
		const char *flags = mailbox_view_get(t.view, seq)->flags;

		if (flags != NULL && strstr(flags, "\\Seen") != NULL)
			seen = seen == 0 ? seq : seen;
		else
			unseen = unseen == 0 ? seq : unseen;
	}
	itest_check("a seen and an unseen message", seen > 0 && unseen > 0, NULL);
	if (seen > 0) {
		/* the view's \Seen may be stale: the STORE step asks every time */
		check(EXPECT_UPSTREAM, "FETCH %u (BODY[TEXT]<0.10> RFC822.TEXT)", seen);
		check(EXPECT_UPSTREAM, "FETCH %u (BODY[1] BINARY[1]<0.4> UID)", seen);
	}
	if (unseen > 0) {
		check(EXPECT_LOCAL, "FETCH %u (BODY.PEEK[TEXT] FLAGS)", unseen);
		check(EXPECT_UPSTREAM, "FETCH %u (BODY[TEXT]<0.10>)", unseen); /* sets \Seen: the STORE step first */
		check(EXPECT_UPSTREAM, "FETCH %u (RFC822.TEXT)", unseen);
	}
}

static void setup(void)
{
	struct imap_client_settings settings = {
		.host = itest_env(PROGRAM, "IMAPTEST_HOST"),
		.port = (unsigned int)atoi(itest_env(PROGRAM, "IMAPTEST_PORT")),
		.tls_mode = IMAP_CLIENT_TLS_NONE,
		.connect_timeout_msecs = 10000,
		.command_timeout_msecs = 30000,
	};
	struct cache_settings cache_settings = { .body_budget = 1ULL << 32, .body_max_size = 1ULL << 30 };
	const struct imap_client_result *result;
	static char dir[256];
	const char *error;

	snprintf(dir, sizeof(dir), "%s/fetch-local-cache", itest_env(PROGRAM, "IMAPTEST_DIR"));
	cache_settings.dir = dir;
	log_set_level(LOG_LEVEL_WARNING);
	t.sync = imap_client_sync_new(&settings, &error);
	if (t.sync == NULL || imap_client_sync_connect(t.sync, &result) != IMAP_CLIENT_STATUS_OK) {
		fprintf(stderr, "%s: cannot connect to the fixture's Dovecot\n", PROGRAM);
		exit(ITEST_EXIT_HARD_ERROR);
	}
	t.client = imap_client_sync_get_client(t.sync);
	if (imap_client_sync_wait(t.sync,
				  imap_client_login(t.client, itest_env(PROGRAM, "IMAPTEST_USER"),
						    itest_env(PROGRAM, "IMAPTEST_PASS"), NULL, NULL),
				  &result) != IMAP_CLIENT_STATUS_OK) {
		fprintf(stderr, "%s: LOGIN refused\n", PROGRAM);
		exit(ITEST_EXIT_HARD_ERROR);
	}
	imap_client_set_raw_callback(t.client, on_raw, NULL);
	t.cache = cache_open(&cache_settings, "dovecot", itest_env(PROGRAM, "IMAPTEST_USER"), &error);
	t.fill = fetch_fill_new();
	t.untagged = evbuffer_new();
	t.tagged = evbuffer_new();
	t.commands = imap_command_parser_new();
	if (t.cache == NULL || t.fill == NULL || t.untagged == NULL || t.tagged == NULL || t.commands == NULL) {
		fprintf(stderr, "%s: cannot make the store (%s)\n", PROGRAM, t.cache == NULL ? error : "memory");
		exit(ITEST_EXIT_HARD_ERROR);
	}
}

int main(void)
{
	char **cpython_names;
	unsigned int cpython_count;
	uint32_t count;

	setup();
	(void)imap_client_sync_wait(t.sync, imap_client_create(t.client, "fetch-local", NULL, NULL), NULL);
	(void)imap_client_sync_wait(t.sync, imap_client_create(t.client, "fetch-cpython", NULL, NULL), NULL);
	for (size_t i = 0; i < sizeof(crafted) / sizeof(crafted[0]); i++)
		append("fetch-local", crafted[i], strlen(crafted[i]));
	(void)imap_client_sync_wait(t.sync, imap_client_select(t.client, "fetch-local", false, NULL, NULL, NULL), NULL);
	(void)imap_client_sync_wait(t.sync, imap_client_store(t.client, false, "1,3", "+FLAGS", "(\\Seen)", NULL, NULL),
				    NULL);
	cpython_count = append_cpython("fetch-cpython", &cpython_names);

	/* INBOX: the generated corpus, every header plain */
	count = open_mailbox("INBOX", false);
	itest_check("the fill read every FETCH line", t.fill_bad == 0, "%u refused", t.fill_bad);
	battery_sets(count);
	battery_mailbox("INBOX", NULL, 0, true);
	battery_mailbox("fetch-local", NULL, 0, false);
	battery_crafted();
	if (cpython_count > 0)
		battery_mailbox("fetch-cpython", cpython_names, cpython_count, false);
	battery_read_write();
	battery_condstore();

	printf("%u commands answered locally and equal to Dovecot's, %u sent upstream by rule, "
	       "%u sent upstream by content checks, %u failures\n",
	       t.local, t.upstream, t.either_upstream, t.failures);
	itest_check("every local answer equals Dovecot's", t.failures == 0, "%u failures", t.failures);
	itest_check("most commands were compared", t.compared > 1000, "%u", t.compared);
	for (unsigned int i = 0; i < cpython_count; i++)
		free(cpython_names[i]);
	free(cpython_names);
	fetch_fill_free(&t.fill);
	mailbox_view_free(&t.view);
	cache_unref(&t.cache);
	evbuffer_free(t.untagged);
	evbuffer_free(t.tagged);
	imap_parser_free(&t.parser);
	imap_command_parser_free(&t.commands);
	imap_client_sync_free(&t.sync);
	return itest_summary();
}
