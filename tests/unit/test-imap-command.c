/* SPDX-License-Identifier: MIT */
/* Unit tests for common/imap-command: each command fed through the tokenizer whole, byte by byte and split everywhere. */
#include "config.h"
#include "unit.h"
#include "unit-imap.h"
#include "imap-command.h"
#include "imap-response.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct imap_command_parser *command_parser;

int unit_suite_init(void)
{
	command_parser = imap_command_parser_new();
	return command_parser == NULL;
}

int unit_suite_cleanup(void)
{
	imap_command_parser_free(&command_parser);
	return 0;
}

static void add_set(char *out, size_t out_size, const struct imap_seqset *set)
{
	if (set == NULL) {
		unit_imap_append(out, out_size, "-");
		return;
	}
	if (set->saved)
		unit_imap_append(out, out_size, "$");
	for (unsigned int i = 0; i < set->count; i++) {
		const struct imap_seqset_range *range = &set->ranges[i];

		unit_imap_append(out, out_size, i ? "," : "");
		if (range->first_star)
			unit_imap_append(out, out_size, "*");
		else
			unit_imap_append(out, out_size, "%u", range->first);
		if (range->last_star && !range->first_star)
			unit_imap_append(out, out_size, ":*");
		else if (!range->last_star && range->last != range->first)
			unit_imap_append(out, out_size, ":%u", range->last);
	}
}

static const char *const attr_names[] = { "ENVELOPE", "FLAGS", "INTERNALDATE", "RFC822", "RFC822.HEADER",
					  "RFC822.SIZE", "RFC822.TEXT", "BODY", "BODYSTRUCTURE", "UID",
					  "BODY[]", "BINARY[]", "BINARY.SIZE[]", "MODSEQ" };
static const char *const text_names[] = { "", "HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME" };
static const char *const key_names[] = {
	"AND", "OR", "NOT", "ALL", "ANSWERED", "DELETED", "DRAFT", "FLAGGED", "NEW", "OLD", "RECENT", "SEEN",
	"UNANSWERED", "UNDELETED", "UNDRAFT", "UNFLAGGED", "UNSEEN", "BCC", "BODY", "CC", "FROM", "SUBJECT",
	"TEXT", "TO", "KEYWORD", "UNKEYWORD", "HEADER", "BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON",
	"SENTSINCE", "LARGER", "SMALLER", "UID", "SET", "MODSEQ"
};

static void add_key(char *out, size_t out_size, const struct imap_search_key *key)
{
	unit_imap_append(out, out_size, "%s", key_names[key->type]);
	if (key->str != NULL)
		unit_imap_append(out, out_size, " \"%s\"", key->str);
	if (key->str2 != NULL)
		unit_imap_append(out, out_size, " \"%s\"", key->str2);
	if (key->number != 0)
		unit_imap_append(out, out_size, " %llu", (unsigned long long)key->number);
	if (key->year != 0)
		unit_imap_append(out, out_size, " %04d-%02d-%02d", key->year, key->month, key->day);
	if (key->set != NULL) {
		unit_imap_append(out, out_size, " ");
		add_set(out, out_size, key->set);
	}
	if (key->child_count > 0) {
		unsigned int n = 0;
		unit_imap_append(out, out_size, "(");
		for (const struct imap_search_key *child = key->children; child != NULL; child = child->next, n++) {
			if (n > 0)
				unit_imap_append(out, out_size, " ");
			add_key(out, out_size, child);
		}
		unit_imap_append(out, out_size, ")");
		CU_ASSERT_EQUAL(n, key->child_count);
	}
}

/* Writes the typed view of one command, or its error. */
static void dump_command(const struct imap_arg *line, char *out, size_t out_size, void *context)
{
	struct imap_command c;
	const char *message;
	enum imap_command_error error = imap_command_parse(command_parser, line, &c, &message);

	(void)context;
	if (error != IMAP_COMMAND_ERROR_NONE) {
		CU_ASSERT(message[0] != '\0' && strchr(message, '\n') == NULL);
		unit_imap_append(out, out_size, "error=%s tag=%s", imap_command_error_name(error), c.tag ? c.tag : "-");
		return;
	}
	unit_imap_append(out, out_size, "%s %s%s", c.tag, c.uid ? "UID " : "", c.name_str);
	switch (c.name) {
	case IMAP_COMMAND_AUTHENTICATE:
		unit_imap_append(out, out_size, " mech=%s ir=%s", c.u.authenticate.mechanism,
		    c.u.authenticate.initial_response ? c.u.authenticate.initial_response : "-");
		break;
	case IMAP_COMMAND_LOGIN:
		unit_imap_append(out, out_size, " user=%s pass=%s", c.u.login.user, c.u.login.password);
		break;
	case IMAP_COMMAND_ENABLE:
		unit_imap_append_args(out, out_size, c.u.atoms.atoms, c.u.atoms.count);
		break;
	case IMAP_COMMAND_ID:
		unit_imap_append(out, out_size, " params=%u", c.u.id.count);
		break;
	case IMAP_COMMAND_SELECT:
	case IMAP_COMMAND_EXAMINE:
		unit_imap_append(out, out_size, " mailbox=%s condstore=%d qresync=%d", c.u.select.mailbox, c.u.select.condstore,
		    c.u.select.qresync);
		if (c.u.select.qresync) {
			unit_imap_append(out, out_size, " uidvalidity=%u modseq=%llu known=", c.u.select.uidvalidity,
			    (unsigned long long)c.u.select.modseq);
			add_set(out, out_size, c.u.select.known_uids);
		}
		break;
	case IMAP_COMMAND_CREATE:
	case IMAP_COMMAND_DELETE:
	case IMAP_COMMAND_SUBSCRIBE:
	case IMAP_COMMAND_UNSUBSCRIBE:
		unit_imap_append(out, out_size, " mailbox=%s", c.u.mailbox.mailbox);
		break;
	case IMAP_COMMAND_RENAME:
		unit_imap_append(out, out_size, " from=%s to=%s", c.u.rename.from, c.u.rename.to);
		break;
	case IMAP_COMMAND_LIST:
	case IMAP_COMMAND_LSUB:
		unit_imap_append(out, out_size, " ref=\"%s\" pattern=\"%s\" extended=%d", c.u.list.reference, c.u.list.pattern,
		    c.u.list.extended);
		break;
	case IMAP_COMMAND_STATUS:
		unit_imap_append(out, out_size, " mailbox=%s items=%#x", c.u.status.mailbox, c.u.status.items);
		break;
	case IMAP_COMMAND_APPEND:
		unit_imap_append(out, out_size, " mailbox=%s flags=", c.u.append.mailbox);
		if (c.u.append.has_flags)
			unit_imap_append_args(out, out_size, c.u.append.flags, c.u.append.flag_count);
		else
			unit_imap_append(out, out_size, "-");
		if (c.u.append.has_date)
			unit_imap_append(out, out_size, " date=%lld zone=%d", (long long)c.u.append.date, c.u.append.zone_minutes);
		unit_imap_append(out, out_size, " message=");
		unit_imap_dump_arg(c.u.append.message, out, out_size);
		break;
	case IMAP_COMMAND_EXPUNGE:
		if (c.uid) {
			unit_imap_append(out, out_size, " set=");
			add_set(out, out_size, c.u.expunge.set);
		}
		break;
	case IMAP_COMMAND_SEARCH:
		if (c.u.search.has_return)
			unit_imap_append(out, out_size, " return=%#x", c.u.search.return_options);
		if (c.u.search.charset != NULL)
			unit_imap_append(out, out_size, " charset=%s", c.u.search.charset);
		unit_imap_append(out, out_size, " ");
		add_key(out, out_size, c.u.search.program);
		break;
	case IMAP_COMMAND_FETCH:
		unit_imap_append(out, out_size, " set=");
		add_set(out, out_size, c.u.fetch.set);
		for (unsigned int i = 0; i < c.u.fetch.attr_count; i++) {
			const struct imap_fetch_attr *a = &c.u.fetch.attrs[i];
			unit_imap_append(out, out_size, " [%s", attr_names[a->type]);
			if (a->peek)
				unit_imap_append(out, out_size, " peek");
			for (unsigned int p = 0; p < a->section.part_count; p++)
				unit_imap_append(out, out_size, "%s%u", p ? "." : " part=", a->section.parts[p]);
			if (a->section.text != IMAP_SECTION_TEXT_NONE)
				unit_imap_append(out, out_size, " text=%s", text_names[a->section.text]);
			for (unsigned int f = 0; f < a->section.field_count; f++)
				unit_imap_append(out, out_size, "%s%.*s", f ? "," : " fields=", (int)a->section.fields[f].len,
				    a->section.fields[f].name);
			if (a->has_partial)
				unit_imap_append(out, out_size, " partial=%llu.%llu", (unsigned long long)a->partial_offset,
				    (unsigned long long)a->partial_length);
			unit_imap_append(out, out_size, "]");
		}
		if (c.u.fetch.changedsince_given)
			unit_imap_append(out, out_size, " changedsince=%llu vanished=%d", (unsigned long long)c.u.fetch.changedsince,
			    c.u.fetch.vanished);
		break;
	case IMAP_COMMAND_STORE:
		unit_imap_append(out, out_size, " set=");
		add_set(out, out_size, c.u.store.set);
		unit_imap_append(out, out_size, " mode=%d silent=%d flags=", c.u.store.mode, c.u.store.silent);
		unit_imap_append_args(out, out_size, c.u.store.flags, c.u.store.flag_count);
		if (c.u.store.unchangedsince_given)
			unit_imap_append(out, out_size, " unchangedsince=%llu", (unsigned long long)c.u.store.unchangedsince);
		break;
	case IMAP_COMMAND_COPY:
	case IMAP_COMMAND_MOVE:
		unit_imap_append(out, out_size, " set=");
		add_set(out, out_size, c.u.copy.set);
		unit_imap_append(out, out_size, " mailbox=%s", c.u.copy.mailbox);
		break;
	default:
		break;
	}
}

/* expected: the transcript lines without "LINE " for each line. */
static void check(const char *input, const char *expected_lines)
{
	struct unit_imap_options options = { .mode = IMAP_PARSER_MODE_COMMAND, .line_callback = dump_command };
	char expected[8192] = "";
	const char *p = expected_lines;

	while (*p != '\0') {
		const char *end = strchr(p, '\n');
		size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
		if (strncmp(p, "ANNOUNCED", 9) == 0 || strncmp(p, "ERROR ", 6) == 0)
			unit_imap_append(expected, sizeof(expected), "%.*s\n", (int)len, p);
		else
			unit_imap_append(expected, sizeof(expected), "LINE %.*s\n", (int)len, p);
		p += len + (end != NULL);
	}
	unit_imap_check(input, strlen(input), &options, expected);
}

static void test_simple_commands(void)
{
	check("a1 CAPABILITY\r\n", "a1 CAPABILITY");
	check("a1 noop\r\n", "a1 noop");
	check("a1 LOGOUT\r\na2 STARTTLS\r\na3 NAMESPACE\r\na4 IDLE\r\na5 CHECK\r\na6 CLOSE\r\na7 UNSELECT\r\na8 EXPUNGE\r\n",
	      "a1 LOGOUT\na2 STARTTLS\na3 NAMESPACE\na4 IDLE\na5 CHECK\na6 CLOSE\na7 UNSELECT\na8 EXPUNGE");
	check("a1 NOOP x\r\n", "error=EXTRA_ARGUMENT tag=a1");
	check("\r\n", "error=EMPTY tag=-");
	check("a1\r\n", "error=MISSING_COMMAND tag=a1");
	check("a+1 NOOP\r\n", "error=BAD_TAG tag=-");
	check("* NOOP\r\n", "error=BAD_TAG tag=-");
	check("\"a\" NOOP\r\n", "error=BAD_TAG tag=-");
	check("a1 FROB\r\n", "error=UNKNOWN_COMMAND tag=a1");
	check("a1 (NOOP)\r\n", "error=UNKNOWN_COMMAND tag=a1");
	check("a1 UID NOOP\r\n", "error=UNKNOWN_COMMAND tag=a1");
	check("a1 UID\r\n", "error=MISSING_COMMAND tag=a1");
}

static void test_authentication(void)
{
	check("a1 LOGIN smith sesame\r\n", "a1 LOGIN user=smith pass=sesame");
	check("a1 LOGIN \"smith\" {6}\r\nse\"ame\r\n", "ANNOUNCED 6\na1 LOGIN user=smith pass=se\"ame");
	check("a1 LOGIN {5+}\r\nsmith NIL\r\n", "a1 LOGIN user=smith pass=NIL");
	check("a1 LOGIN smith\r\n", "error=MISSING_ARGUMENT tag=a1");
	check("a1 LOGIN smith (x)\r\n", "error=BAD_ARGUMENT tag=a1");
	check("a1 LOGIN a b c\r\n", "error=EXTRA_ARGUMENT tag=a1");
	check("a1 AUTHENTICATE PLAIN\r\n", "a1 AUTHENTICATE mech=PLAIN ir=-");
	check("a1 AUTHENTICATE PLAIN AHNtaXRoAHNlc2FtZQ==\r\n", "a1 AUTHENTICATE mech=PLAIN ir=AHNtaXRoAHNlc2FtZQ==");
	check("a1 AUTHENTICATE PLAIN =\r\n", "a1 AUTHENTICATE mech=PLAIN ir==");
	check("a1 AUTHENTICATE \"PLAIN\"\r\n", "error=BAD_ARGUMENT tag=a1");
	check("a1 AUTHENTICATE\r\n", "error=MISSING_ARGUMENT tag=a1");
	check("a1 ENABLE CONDSTORE QRESYNC\r\n", "a1 ENABLE(CONDSTORE QRESYNC)");
	check("a1 ENABLE\r\n", "error=MISSING_ARGUMENT tag=a1");
	check("a1 ID (\"name\" \"mutt\" \"version\" NIL)\r\n", "a1 ID params=4");
	check("a1 ID NIL\r\n", "a1 ID params=0");
	check("a1 ID (name \"mutt\")\r\n", "error=BAD_ARGUMENT tag=a1");
}

static void test_mailbox_commands(void)
{
	check("a1 SELECT INBOX\r\n", "a1 SELECT mailbox=INBOX condstore=0 qresync=0");
	check("a1 EXAMINE \"Sent Items\" (CONDSTORE)\r\n", "a1 EXAMINE mailbox=Sent Items condstore=1 qresync=0");
	check("a1 SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541))\r\n",
	      "a1 SELECT mailbox=INBOX condstore=0 qresync=1 uidvalidity=67890007 modseq=20050715194045000 "
	      "known=41,43:211,214:541");
	check("a1 SELECT INBOX (QRESYNC (1 2))\r\n", "a1 SELECT mailbox=INBOX condstore=0 qresync=1 uidvalidity=1 modseq=2 known=-");
	check("a1 SELECT INBOX (QRESYNC (0 2))\r\n", "error=BAD_ARGUMENT tag=a1");
	check("a1 SELECT INBOX (FOO)\r\n", "error=BAD_ARGUMENT tag=a1");
	check("a1 SELECT\r\n", "error=MISSING_ARGUMENT tag=a1");
	check("a1 CREATE owatagusiam/\r\na2 DELETE blurdybloop\r\na3 SUBSCRIBE #news.comp.mail.mime\r\n"
	      "a4 UNSUBSCRIBE \"a b\"\r\n",
	      "a1 CREATE mailbox=owatagusiam/\na2 DELETE mailbox=blurdybloop\na3 SUBSCRIBE mailbox=#news.comp.mail.mime\n"
	      "a4 UNSUBSCRIBE mailbox=a b");
	check("a1 RENAME blurdybloop sarasoop\r\n", "a1 RENAME from=blurdybloop to=sarasoop");
	check("a1 RENAME blurdybloop\r\n", "error=MISSING_ARGUMENT tag=a1");
	check("a1 LIST \"\" *\r\n", "a1 LIST ref=\"\" pattern=\"*\" extended=0");
	check("a1 LIST ~/Mail/ %\r\n", "a1 LIST ref=\"~/Mail/\" pattern=\"%\" extended=0");
	check("a1 LSUB \"#news.\" \"comp.mail.*\"\r\n", "a1 LSUB ref=\"#news.\" pattern=\"comp.mail.*\" extended=0");
	check("a1 LIST (SUBSCRIBED) \"\" (INBOX Drafts) RETURN (CHILDREN)\r\n",
	      "a1 LIST ref=\"\" pattern=\"INBOX\" extended=1");
	check("a1 LIST \"\"\r\n", "error=MISSING_ARGUMENT tag=a1");
	check("a1 LSUB \"\" * x\r\n", "error=EXTRA_ARGUMENT tag=a1");
	check("a1 STATUS blurdybloop (UIDNEXT MESSAGES HIGHESTMODSEQ)\r\n", "a1 STATUS mailbox=blurdybloop items=0x25");
	check("a1 STATUS blurdybloop (FOO)\r\n", "error=BAD_ARGUMENT tag=a1");
	check("a1 STATUS blurdybloop ()\r\n", "error=BAD_ARGUMENT tag=a1");
	check("a1 STATUS blurdybloop\r\n", "error=MISSING_ARGUMENT tag=a1");
}

static void test_append(void)
{
	check("A003 APPEND saved-messages (\\Seen) {10}\r\n0123456789\r\n",
	      "ANNOUNCED 10\nA003 APPEND mailbox=saved-messages flags=(\\\\Seen) message={10}\"0123456789\"");
	check("A003 APPEND INBOX (\\Seen $Junk) \" 7-Feb-1994 21:52:25 -0800\" {3+}\r\nabc\r\n",
	      "A003 APPEND mailbox=INBOX flags=(\\\\Seen $Junk) date=760686745 zone=-480 message={3+}\"abc\"");
	check("A003 APPEND INBOX \"07-Feb-1994 21:52:25 +0000\" ~{2+}\r\nab\r\n",
	      "A003 APPEND mailbox=INBOX flags=- date=760657945 zone=0 message=~{2+}\"ab\"");
	/* RFC 3516: literal8 is a message's alone (Dovecot: "literal8 not allowed here") */
	check("a SEARCH SUBJECT ~{3+}\r\nabc\r\n", "error=BAD_ARGUMENT tag=a");
	check("a SEARCH (OR SEEN SUBJECT ~{1+}\r\nx)\r\n", "error=BAD_ARGUMENT tag=a");
	check("a SELECT ~{5+}\r\nINBOX\r\n", "error=BAD_ARGUMENT tag=a");
	check("A003 APPEND INBOX () {1+}\r\nx\r\n", "A003 APPEND mailbox=INBOX flags=() message={1+}\"x\"");
	/* Months in any case (RFC 3501 strings are case-insensitive). */
	check("A003 APPEND INBOX \"07-feb-1994 21:52:25 +0000\" {1+}\r\nx\r\n",
	      "A003 APPEND mailbox=INBOX flags=- date=760657945 zone=0 message={1+}\"x\"");
	check("A003 APPEND INBOX \" 7-FEB-1994 21:52:25 +0000\" {1+}\r\nx\r\n",
	      "A003 APPEND mailbox=INBOX flags=- date=760657945 zone=0 message={1+}\"x\"");
	check("A003 APPEND INBOX \"07-fEb-1994 21:52:25 +0000\" {1+}\r\nx\r\n",
	      "A003 APPEND mailbox=INBOX flags=- date=760657945 zone=0 message={1+}\"x\"");
	check("A003 APPEND INBOX \"07-Fev-1994 21:52:25 +0000\" {1+}\r\nx\r\n", "error=BAD_DATE tag=A003");
	check("A003 APPEND INBOX \"07-Feb-1994 21:52:25 +0000 \" {1+}\r\nx\r\n", "error=BAD_DATE tag=A003");
	check("A003 APPEND INBOX \"yesterday\" {1+}\r\nx\r\n", "error=BAD_DATE tag=A003");
	check("A003 APPEND INBOX (\\Recent) {1+}\r\nx\r\n", "error=BAD_FLAG tag=A003");
	check("A003 APPEND INBOX (\"Seen\") {1+}\r\nx\r\n", "error=BAD_FLAG tag=A003");
	check("A003 APPEND INBOX \"message\"\r\n", "error=BAD_ARGUMENT tag=A003");
	check("A003 APPEND INBOX\r\n", "error=MISSING_ARGUMENT tag=A003");
	check("A003 APPEND INBOX (\\Seen) x {1+}\r\nx\r\n", "error=EXTRA_ARGUMENT tag=A003");
}

static void test_fetch(void)
{
	check("a FETCH 2:4 (FLAGS BODY[HEADER.FIELDS (DATE FROM)])\r\n",
	      "a FETCH set=2:4 [FLAGS] [BODY[] text=HEADER.FIELDS fields=DATE,FROM]");
	check("a FETCH 1 ALL\r\n", "a FETCH set=1 [FLAGS] [INTERNALDATE] [RFC822.SIZE] [ENVELOPE]");
	check("a FETCH 1 fast\r\n", "a FETCH set=1 [FLAGS] [INTERNALDATE] [RFC822.SIZE]");
	check("a FETCH 1 FULL\r\n", "a FETCH set=1 [FLAGS] [INTERNALDATE] [RFC822.SIZE] [ENVELOPE] [BODY]");
	check("a FETCH 1 (ALL)\r\n", "error=BAD_FETCH_ATTRIBUTE tag=a");
	check("a UID FETCH 1:* (UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODYSTRUCTURE)\r\n",
	      "a UID FETCH set=1:* [UID] [FLAGS] [INTERNALDATE] [RFC822.SIZE] [ENVELOPE] [BODYSTRUCTURE]");
	check("a FETCH $ (BODY.PEEK[1.2.MIME] BODY[3.TEXT]<0.2048> BODY[] BINARY.PEEK[1]<10.5> BINARY.SIZE[2] MODSEQ)\r\n",
	      "a FETCH set=$ [BODY[] peek part=1.2 text=MIME] [BODY[] part=3 text=TEXT partial=0.2048] [BODY[]] "
	      "[BINARY[] peek part=1 partial=10.5] [BINARY.SIZE[] part=2] [MODSEQ]");
	check("a FETCH 5,7 (RFC822 RFC822.HEADER RFC822.TEXT BODY BODY[HEADER.FIELDS.NOT (X-A \"Received\")] BODY[HEADER])\r\n",
	      "a FETCH set=5,7 [RFC822] [RFC822.HEADER] [RFC822.TEXT] [BODY] "
	      "[BODY[] text=HEADER.FIELDS.NOT fields=X-A,Received] [BODY[] text=HEADER]");
	check("a UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12345 VANISHED)\r\n",
	      "a UID FETCH set=1:* [FLAGS] changedsince=12345 vanished=1");
	check("a FETCH 1:* (FLAGS) (VANISHED)\r\n", "error=BAD_ARGUMENT tag=a");
	check("a FETCH 1 (FLAGS) (FOO)\r\n", "error=BAD_ARGUMENT tag=a");
	check("a FETCH 1 FOO\r\n", "error=BAD_FETCH_ATTRIBUTE tag=a");
	check("a FETCH 1 ()\r\n", "error=BAD_FETCH_ATTRIBUTE tag=a");
	check("a FETCH 1 (\"FLAGS\")\r\n", "error=BAD_FETCH_ATTRIBUTE tag=a");
	check("a FETCH 1 BODY[FOO]\r\n", "error=BAD_SECTION tag=a");
	check("a FETCH 1 BODY[MIME]\r\n", "error=BAD_SECTION tag=a");
	check("a FETCH 1 BODY[0]\r\n", "error=BAD_SECTION tag=a");
	check("a FETCH 1 BODY[1.]\r\n", "error=BAD_SECTION tag=a");
	check("a FETCH 1 BODY[HEADER.FIELDS ()]\r\n", "error=BAD_SECTION tag=a");
	check("a FETCH 1 BODY[HEADER.FIELDS]\r\n", "error=BAD_SECTION tag=a");
	check("a FETCH 1 BINARY[HEADER]\r\n", "error=BAD_SECTION tag=a");
	check("a FETCH 1 BODY[]<5>\r\n", "error=BAD_FETCH_ATTRIBUTE tag=a");
	check("a FETCH 1 BODY[]<5.0>\r\n", "error=BAD_FETCH_ATTRIBUTE tag=a");
	check("a FETCH 1 BINARY.SIZE[1]<0.5>\r\n", "error=BAD_FETCH_ATTRIBUTE tag=a");
	/* Header names are astrings: atom, quoted (with escapes) or literal give one structure. */
	check("a FETCH 1 BODY.PEEK[HEADER.FIELDS (Subject X-A)]\r\n",
	      "a FETCH set=1 [BODY[] peek text=HEADER.FIELDS fields=Subject,X-A]");
	check("a FETCH 1 BODY.PEEK[HEADER.FIELDS (\"Subject\" \"X-A\")]\r\n",
	      "a FETCH set=1 [BODY[] peek text=HEADER.FIELDS fields=Subject,X-A]");
	check("a FETCH 1 BODY.PEEK[HEADER.FIELDS ({7}\r\nSubject {3+}\r\nX-A)]\r\n",
	      "ANNOUNCED 7\na FETCH set=1 [BODY[] peek text=HEADER.FIELDS fields=Subject,X-A]");
	check("a FETCH 1 (BODY[2.HEADER.FIELDS.NOT (\"X-\\\"odd\\\"\" {4+}\r\nX\\(y X-]b)]<0.10> FLAGS)\r\n",
	      "a FETCH set=1 [BODY[] part=2 text=HEADER.FIELDS.NOT fields=X-\"odd\",X\\(y,X-]b partial=0.10] [FLAGS]");
	check("a FETCH 1 BODY[HEADER.FIELDS (\"X-\\\\\")]\r\n", "a FETCH set=1 [BODY[] text=HEADER.FIELDS fields=X-\\]");
	/* Malformed header lists: the tokenizer refuses the line (typed parser errors)... */
	check("a FETCH 1 BODY[HEADER.FIELDS (Subject\r\n", "ERROR UNCLOSED_LIST");
	check("a FETCH 1 BODY[HEADER.FIELDS ({999}\r\nSubject)]\r\n", "ERROR LITERAL_TOO_BIG");
	check("a FETCH 1 BODY[HEADER.FIELDS (\"a\\x\")]\r\n", "ERROR BAD_QUOTED");
	/* ...and names that are no RFC 5322 field names are BAD_SECTION. */
	check("a FETCH 1 BODY[HEADER.FIELDS (\"\")]\r\n", "error=BAD_SECTION tag=a");
	check("a FETCH 1 BODY[HEADER.FIELDS ({0+}\r\n)]\r\n", "error=BAD_SECTION tag=a");
	check("a FETCH 1 BODY[HEADER.FIELDS (Subject \"\")]\r\n", "error=BAD_SECTION tag=a");
	check("a FETCH 1 BODY[HEADER.FIELDS (\"a b\")]\r\n", "error=BAD_SECTION tag=a");
	check("a FETCH 1 BODY[HEADER.FIELDS (\"a:b\")]\r\n", "error=BAD_SECTION tag=a");
	check("a FETCH 1 BODY[HEADER.FIELDS ({2+}\r\n\xc3\xa9)]\r\n", "error=BAD_SECTION tag=a");
	check("a FETCH 1 BODY[HEADER.FIELDS (a  b)]\r\n", "error=BAD_SECTION tag=a");
	check("a FETCH 1 BODY[HEADER.FIELDS ( a)]\r\n", "error=BAD_SECTION tag=a");
	check("a FETCH 1 BODY[HEADER.FIELDS (a )]\r\n", "error=BAD_SECTION tag=a");
	check("a FETCH 1 BODY[HEADER.FIELDS (a) (b)]\r\n", "error=BAD_SECTION tag=a");
	check("a FETCH 1 BODY[HEADER.FIELDS (a)x]\r\n", "error=BAD_SECTION tag=a");
	check("a FETCH 1 BINARY[HEADER.FIELDS (a)]\r\n", "error=BAD_SECTION tag=a");
	check("a FETCH 0 FLAGS\r\n", "error=BAD_SEQUENCE_SET tag=a");
	check("a FETCH 1:x FLAGS\r\n", "error=BAD_SEQUENCE_SET tag=a");
	check("a FETCH FLAGS\r\n", "error=MISSING_ARGUMENT tag=a");
}

static void test_store_copy_move_expunge(void)
{
	check("a STORE 2:4 +FLAGS (\\Deleted)\r\n", "a STORE set=2:4 mode=1 silent=0 flags=(\\\\Deleted)");
	check("a STORE 1 -FLAGS.SILENT \\Seen $Junk\r\n", "a STORE set=1 mode=2 silent=1 flags=(\\\\Seen $Junk)");
	check("a UID STORE 1:* FLAGS ()\r\n", "a UID STORE set=1:* mode=0 silent=0 flags=()");
	/* 4294967295 is the largest UID there can be, not "*" */
	check("a UID FETCH 4294967295 (UID)\r\n", "a UID FETCH set=4294967295 [UID]");
	check("a UID FETCH 4294967295:* (UID)\r\n", "a UID FETCH set=4294967295:* [UID]");
	check("a UID FETCH *:4294967295 (UID)\r\n", "a UID FETCH set=4294967295:* [UID]");
	check("a FETCH *:7,* (UID)\r\n", "a FETCH set=7:*,* [UID]");
	check("a STORE 7,9 (UNCHANGEDSINCE 320162338) +FLAGS.SILENT (\\Deleted)\r\n",
	      "a STORE set=7,9 mode=1 silent=1 flags=(\\\\Deleted) unchangedsince=320162338");
	check("a STORE 1 FLAGZ (\\Seen)\r\n", "error=BAD_STORE tag=a");
	check("a STORE 1 +FLAGS\r\n", "error=MISSING_ARGUMENT tag=a");
	check("a STORE 1 (UNCHANGEDSINCE 5) +FLAGS\r\n", "error=BAD_STORE tag=a");
	check("a STORE 1 +FLAGS (\\Recent)\r\n", "error=BAD_FLAG tag=a");
	check("a STORE 1 +FLAGS (\\)\r\n", "error=BAD_FLAG tag=a");
	check("a STORE 1 +FLAGS (a) b\r\n", "error=EXTRA_ARGUMENT tag=a");
	check("a STORE 1 (UNCHANGEDSINCE x) FLAGS (a)\r\n", "error=BAD_STORE tag=a");
	check("a COPY 2:4 MEETING\r\n", "a COPY set=2:4 mailbox=MEETING");
	check("a UID MOVE 42:69 foo\r\n", "a UID MOVE set=42:69 mailbox=foo");
	check("a COPY 2:4\r\n", "error=MISSING_ARGUMENT tag=a");
	check("a UID EXPUNGE 3000:3002\r\n", "a UID EXPUNGE set=3000:3002");
	check("a UID EXPUNGE\r\n", "error=MISSING_ARGUMENT tag=a");
}

static void test_search(void)
{
	check("a SEARCH FLAGGED SINCE 1-Feb-1994 NOT FROM \"Smith\"\r\n",
	      "a SEARCH AND(FLAGGED SINCE 1994-02-01 NOT(FROM \"Smith\"))");
	check("a SEARCH OR (SEEN DELETED) NOT (LARGER 100 SMALLER 200) 1:5,* UID 10:20\r\n",
	      "a SEARCH AND(OR(AND(SEEN DELETED) NOT(AND(LARGER 100 SMALLER 200))) SET 1:5,* UID 10:20)");
	check("a SEARCH CHARSET UTF-8 TEXT {6}\r\nXXXXXX\r\n", "ANNOUNCED 6\na SEARCH charset=UTF-8 AND(TEXT \"XXXXXX\")");
	check("a SEARCH RETURN (MIN COUNT) UNSEEN\r\n", "a SEARCH return=0x9 AND(UNSEEN)");
	check("a SEARCH RETURN () ALL\r\n", "a SEARCH return=0x4 AND(ALL)");
	check("a UID SEARCH RETURN (SAVE) HEADER \"Message-ID\" \"<x@y>\" KEYWORD $Junk\r\n",
	      "a UID SEARCH return=0x10 AND(HEADER \"Message-ID\" \"<x@y>\" KEYWORD \"$Junk\")");
	check("a SEARCH ANSWERED DELETED DRAFT NEW OLD RECENT UNANSWERED UNDELETED UNDRAFT UNFLAGGED UNSEEN\r\n",
	      "a SEARCH AND(ANSWERED DELETED DRAFT NEW OLD RECENT UNANSWERED UNDELETED UNDRAFT UNFLAGGED UNSEEN)");
	check("a SEARCH BCC a BODY b CC c SUBJECT d TO e UNKEYWORD f\r\n",
	      "a SEARCH AND(BCC \"a\" BODY \"b\" CC \"c\" SUBJECT \"d\" TO \"e\" UNKEYWORD \"f\")");
	check("a SEARCH SINCE 1-FEB-1994 BEFORE \"02-mAr-1995\"\r\n", "a SEARCH AND(SINCE 1994-02-01 BEFORE 1995-03-02)");
	check("a SEARCH SINCE 1-Fbr-1994\r\n", "error=BAD_SEARCH_KEY tag=a");
	check("a SEARCH BEFORE \"01-Jan-2000\" ON 31-dec-1999 SENTBEFORE 2-Mar-2001 SENTON 2-Mar-2001 SENTSINCE 2-Mar-2001\r\n",
	      "a SEARCH AND(BEFORE 2000-01-01 ON 1999-12-31 SENTBEFORE 2001-03-02 SENTON 2001-03-02 SENTSINCE 2001-03-02)");
	check("a SEARCH MODSEQ \"/flags/\\\\draft\" all 620162338\r\n",
	      "a SEARCH AND(MODSEQ \"/flags/\\draft\" 620162338)");
	check("a SEARCH MODSEQ 5 $\r\n", "a SEARCH AND(MODSEQ 5 SET $)");
	check("a SEARCH\r\n", "error=MISSING_ARGUMENT tag=a");
	check("a SEARCH FOO\r\n", "error=BAD_SEARCH_KEY tag=a");
	check("a SEARCH NOT\r\n", "error=BAD_SEARCH_KEY tag=a");
	check("a SEARCH OR SEEN\r\n", "error=BAD_SEARCH_KEY tag=a");
	check("a SEARCH ()\r\n", "error=BAD_SEARCH_KEY tag=a");
	check("a SEARCH SINCE 31-Foo-2000\r\n", "error=BAD_SEARCH_KEY tag=a");
	check("a SEARCH SINCE 32-Jan-2000\r\n", "error=BAD_SEARCH_KEY tag=a");
	check("a SEARCH LARGER x\r\n", "error=BAD_SEARCH_KEY tag=a");
	check("a SEARCH KEYWORD \\Seen\r\n", "error=BAD_SEARCH_KEY tag=a");
	check("a SEARCH HEADER x\r\n", "error=BAD_SEARCH_KEY tag=a");
	check("a SEARCH UID 0\r\n", "error=BAD_SEQUENCE_SET tag=a");
	check("a SEARCH RETURN (FOO) ALL\r\n", "error=BAD_ARGUMENT tag=a");
	check("a SEARCH CHARSET\r\n", "error=BAD_ARGUMENT tag=a");
}

static void test_search_depth_is_bounded(void)
{
	/* NOT NOT NOT ... recurses once per key: bounded by IMAP_SEARCH_MAX_DEPTH. */
	char line[4096] = "a SEARCH";
	for (int i = 0; i < IMAP_SEARCH_MAX_DEPTH + 10; i++)
		strcat(line, " NOT");
	strcat(line, " ALL\r\n");
	check(line, "error=BAD_SEARCH_KEY tag=a");
	strcpy(line, "a SEARCH");
	for (int i = 0; i < IMAP_SEARCH_MAX_DEPTH - 2; i++)
		strcat(line, " NOT");
	strcat(line, " ALL\r\n");
	struct imap_parser *parser = imap_parser_new();
	struct imap_command command;
	const char *message;
	size_t consumed;
	CU_ASSERT_EQUAL(imap_parser_feed_bytes(parser, line, strlen(line), &consumed), IMAP_PARSER_LINE_COMPLETE);
	CU_ASSERT_EQUAL(imap_command_parse(command_parser, imap_parser_get_line(parser), &command, &message),
			IMAP_COMMAND_ERROR_NONE);
	imap_parser_free(&parser);
}

static void test_fetch_attr_alone(void)
{
	struct imap_fetch_attr attr;
	const char *message;

	CU_ASSERT_EQUAL(imap_command_parse_fetch_attr(command_parser, "BODY.PEEK[2.HEADER]<0.100>", 26, &attr, &message),
			IMAP_COMMAND_ERROR_NONE);
	CU_ASSERT(attr.type == IMAP_FETCH_ATTR_BODY_SECTION && attr.peek && attr.section.part_count == 1 &&
		  attr.section.parts[0] == 2 && attr.section.text == IMAP_SECTION_TEXT_HEADER &&
		  attr.has_partial && attr.partial_length == 100);
	CU_ASSERT_EQUAL(imap_command_parse_fetch_attr(command_parser, "BODY[", 5, &attr, &message),
			IMAP_COMMAND_ERROR_BAD_SECTION);
	CU_ASSERT_PTR_NOT_NULL(strstr(message, "]"));
}

/* Line callback: the command's error name and whether its arguments (the
   tag left out) may enable CONDSTORE, as a session reads a command it
   can't parse. */
static void dump_condstore(const struct imap_arg *line, char *out, size_t out_size, void *context)
{
	struct imap_command command;
	enum imap_command_error error = imap_command_parse(command_parser, line, &command, NULL);

	(void)context;
	unit_imap_append(out, out_size, "%s %s", imap_command_error_name(error),
			 line->list_count > 0 && imap_command_args_enable_condstore(line->list + 1, line->list_count - 1) ?
				 "condstore" : "-");
}

static void check_condstore(const char *input, const char *expected)
{
	struct unit_imap_options options = { .mode = IMAP_PARSER_MODE_COMMAND, .line_callback = dump_condstore };

	unit_imap_check(input, strlen(input), &options, expected);
}

/* What a session keeps of the commands imap-command refuses: whether they
   may enable CONDSTORE, read from their atoms (not from strings or
   literals), in lists, in any case, after a {n} or {n+} literal. */
static void test_refused_commands_enable_condstore(void)
{
	check_condstore("a X-EXTENSION (CONDSTORE)\r\n", "LINE UNKNOWN_COMMAND condstore\n");
	check_condstore("a FETCH 1 (FLAGS) (CHANGEDSINCE 1 X-NOSUCH)\r\n", "LINE BAD_ARGUMENT condstore\n");
	check_condstore("a X-LIST \"\" * RETURN (STATUS (highestmodseq))\r\n", "LINE UNKNOWN_COMMAND condstore\n");
	check_condstore("a LIST \"\" * RETURN (STATUS (highestmodseq))\r\n", "LINE NONE condstore\n");
	check_condstore("a UID X-STORE 1 (UNCHANGEDSINCE 5) +FLAGS (\\Seen)\r\n", "LINE UNKNOWN_COMMAND condstore\n");
	check_condstore("a X (b (c (qresync)))\r\n", "LINE UNKNOWN_COMMAND condstore\n");
	check_condstore("a SEARCH RETURN (UPDATE) Modseq 5\r\n", "LINE BAD_ARGUMENT condstore\n");
	/* data is never looked into: a string, a {n} literal, a {n+} literal */
	check_condstore("a SEARCH RETURN (UPDATE) TEXT \"MODSEQ\"\r\n", "LINE BAD_ARGUMENT -\n");
	check_condstore("a SEARCH RETURN (UPDATE) TEXT {9}\r\nCONDSTORE\r\n",
			"ANNOUNCED 9\nLINE BAD_ARGUMENT -\n");
	check_condstore("a X-APPEND INBOX {7+}\r\nQRESYNC FLAGS\r\n", "LINE UNKNOWN_COMMAND -\n");
	check_condstore("a X-APPEND INBOX {7+}\r\nQRESYNC (CONDSTORE)\r\n", "LINE UNKNOWN_COMMAND condstore\n");
	/* the tag is not an argument; commands with none of the words */
	check_condstore("MODSEQ LANGUAGE\r\n", "LINE UNKNOWN_COMMAND -\n");
	check_condstore("a LANGUAGE DE\r\n", "LINE UNKNOWN_COMMAND -\n");
	check_condstore("a FETCH 1 (FLAGS) (X-NOSUCH)\r\n", "LINE BAD_ARGUMENT -\n");
	check_condstore("a UID\r\n", "LINE MISSING_COMMAND -\n");
}

const char unit_suite_name[] = "imap-command";
const struct unit_test unit_tests[] = {
	{ "simple commands", test_simple_commands },
	{ "authentication", test_authentication },
	{ "mailbox commands", test_mailbox_commands },
	{ "APPEND", test_append },
	{ "FETCH", test_fetch },
	{ "STORE, COPY, MOVE, UID EXPUNGE", test_store_copy_move_expunge },
	{ "SEARCH", test_search },
	{ "SEARCH depth is bounded", test_search_depth_is_bounded },
	{ "one fetch attribute", test_fetch_attr_alone },
	{ "refused commands that may enable CONDSTORE", test_refused_commands_enable_condstore },
	{ NULL, NULL },
};
