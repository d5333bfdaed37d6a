/* SPDX-License-Identifier: MIT */
/* Unit tests for common/imap-response (and imap-seqset): each line fed through the tokenizer every way. */
#include "config.h"
#include "unit.h"
#include "unit-imap.h"
#include "imap-response.h"
#include "imap-seqset.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct imap_response_parser *response_parser;

static int suite_init(void)
{
	response_parser = imap_response_parser_new();
	return response_parser == NULL;
}

static int suite_cleanup(void)
{
	imap_response_parser_free(&response_parser);
	return 0;
}

int unit_suite_init(void)
{
	return suite_init();
}

int unit_suite_cleanup(void)
{
	return suite_cleanup();
}

static void add_set(char *out, size_t out_size, const struct imap_seqset *set)
{
	if (set == NULL) {
		unit_imap_append(out, out_size, "-");
		return;
	}
	for (unsigned int i = 0; i < set->count; i++)
		unit_imap_append(out, out_size, "%s%u:%u", i ? "," : "", set->ranges[i].first, set->ranges[i].last);
}

static const char *const status_names[] = { "-", "OK", "NO", "BAD", "PREAUTH", "BYE" };
static const char *const fetch_names[] = { "UID", "FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE",
					   "BODYSTRUCTURE", "BODY", "BODY[]", "BINARY[]", "BINARY.SIZE",
					   "RFC822", "RFC822.HEADER", "RFC822.TEXT", "MODSEQ", "OTHER" };

/* Writes the typed view of one line, or its error. */
static void dump_response(const struct imap_arg *line, char *out, size_t out_size, void *context)
{
	struct imap_response r;
	const char *message;
	enum imap_response_error error = imap_response_parse(response_parser, line, &r, &message);

	(void)context;
	if (error != IMAP_RESPONSE_ERROR_NONE) {
		CU_ASSERT(message[0] != '\0');
		unit_imap_append(out, out_size, "error=%s", imap_response_error_name(error));
		return;
	}
	unit_imap_append(out, out_size, "%s tag=%s status=%s",
	    r.kind == IMAP_RESPONSE_TAGGED ? "tagged" : r.kind == IMAP_RESPONSE_UNTAGGED ? "untagged" : "cont",
	    r.tag, status_names[r.status]);
	if (r.code.type != IMAP_RESPONSE_CODE_NONE) {
		unit_imap_append(out, out_size, " code=%s/%d", r.code.name, r.code.type);
		if (r.code.number != 0)
			unit_imap_append(out, out_size, " n=%llu", (unsigned long long)r.code.number);
		if (r.code.set != NULL) {
			unit_imap_append(out, out_size, " set=");
			add_set(out, out_size, r.code.set);
		}
		if (r.code.set2 != NULL) {
			unit_imap_append(out, out_size, " set2=");
			add_set(out, out_size, r.code.set2);
		}
		if (r.code.arg_count > 0) {
			unit_imap_append(out, out_size, " args=");
			unit_imap_append_args(out, out_size, r.code.args, r.code.arg_count);
		}
	}
	if (r.text_len > 0)
		unit_imap_append(out, out_size, " text=%s", r.text);
	if (r.type == IMAP_RESPONSE_DATA_NONE)
		return;
	unit_imap_append(out, out_size, " data=%s", r.name);
	switch (r.type) {
	case IMAP_RESPONSE_DATA_EXISTS:
	case IMAP_RESPONSE_DATA_RECENT:
	case IMAP_RESPONSE_DATA_EXPUNGE:
		unit_imap_append(out, out_size, " n=%u", r.number);
		break;
	case IMAP_RESPONSE_DATA_LIST:
	case IMAP_RESPONSE_DATA_LSUB:
		unit_imap_append(out, out_size, " flags=");
		unit_imap_append_args(out, out_size, r.u.list.flags, r.u.list.flag_count);
		unit_imap_append(out, out_size, " delim=%s%c mailbox=%s ext=%u", r.u.list.delimiter ? "" : "NIL",
		    r.u.list.delimiter ? r.u.list.delimiter : ' ', r.u.list.mailbox, r.u.list.extended_count);
		break;
	case IMAP_RESPONSE_DATA_STATUS:
		unit_imap_append(out, out_size, " mailbox=%s present=%#x messages=%llu uidnext=%llu uidvalidity=%llu "
		    "unseen=%llu highestmodseq=%llu", r.u.status.mailbox, r.u.status.present,
		    (unsigned long long)r.u.status.messages, (unsigned long long)r.u.status.uidnext,
		    (unsigned long long)r.u.status.uidvalidity, (unsigned long long)r.u.status.unseen,
		    (unsigned long long)r.u.status.highestmodseq);
		break;
	case IMAP_RESPONSE_DATA_SEARCH:
		unit_imap_append(out, out_size, " numbers=");
		for (unsigned int i = 0; i < r.u.search.count; i++)
			unit_imap_append(out, out_size, "%s%u", i ? "," : "", r.u.search.numbers[i]);
		if (r.u.search.has_modseq)
			unit_imap_append(out, out_size, " modseq=%llu", (unsigned long long)r.u.search.modseq);
		break;
	case IMAP_RESPONSE_DATA_ESEARCH:
		unit_imap_append(out, out_size, " tag=%s uid=%d present=%#x min=%u max=%u count=%u all=",
		    r.u.esearch.tag ? r.u.esearch.tag : "-", r.u.esearch.uid, r.u.esearch.present,
		    r.u.esearch.min, r.u.esearch.max, r.u.esearch.count);
		add_set(out, out_size, r.u.esearch.all);
		break;
	case IMAP_RESPONSE_DATA_FLAGS:
		unit_imap_append(out, out_size, " flags=");
		unit_imap_append_args(out, out_size, r.u.flags.flags, r.u.flags.count);
		break;
	case IMAP_RESPONSE_DATA_VANISHED:
		unit_imap_append(out, out_size, " earlier=%d uids=", r.u.vanished.earlier);
		add_set(out, out_size, r.u.vanished.uids);
		break;
	case IMAP_RESPONSE_DATA_ID:
		unit_imap_append(out, out_size, " params=%u", r.u.id.count);
		break;
	case IMAP_RESPONSE_DATA_NAMESPACE:
		unit_imap_append(out, out_size, " personal=%s other=%s shared=%s", r.u.namespace.personal ? "list" : "NIL",
		    r.u.namespace.other ? "list" : "NIL", r.u.namespace.shared ? "list" : "NIL");
		break;
	case IMAP_RESPONSE_DATA_FETCH:
		unit_imap_append(out, out_size, " seq=%u", r.number);
		for (unsigned int i = 0; i < r.u.fetch.count; i++) {
			const struct imap_fetch_item *item = &r.u.fetch.items[i];
			unit_imap_append(out, out_size, " [%s", fetch_names[item->type]);
			if (item->section != NULL)
				unit_imap_append(out, out_size, " section=%.*s", (int)item->section_len, item->section);
			if (item->has_origin)
				unit_imap_append(out, out_size, " origin=%llu", (unsigned long long)item->origin);
			if (item->number != 0)
				unit_imap_append(out, out_size, " n=%llu", (unsigned long long)item->number);
			unit_imap_append(out, out_size, "]");
		}
		break;
	default:
		unit_imap_append(out, out_size, " args=");
		unit_imap_append_args(out, out_size, r.args, r.arg_count);
		break;
	}
}

static void check(const char *input, const char *expected_line)
{
	struct unit_imap_options options = { .mode = IMAP_PARSER_MODE_RESPONSE, .line_callback = dump_response };
	char expected[4096];

	snprintf(expected, sizeof(expected), "LINE %s\n", expected_line);
	unit_imap_check(input, strlen(input), &options, expected);
}

static void test_status_responses(void)
{
	check("a1 OK LOGIN completed\r\n", "tagged tag=a1 status=OK text=LOGIN completed");
	check("a1 no [TRYCREATE] No such mailbox\r\n", "tagged tag=a1 status=NO code=TRYCREATE/8 text=No such mailbox");
	check("a1 BAD\r\n", "tagged tag=a1 status=BAD");
	check("* PREAUTH IMAP4rev1 server logged in as Smith\r\n",
	      "untagged tag=* status=PREAUTH text=IMAP4rev1 server logged in as Smith");
	check("* BYE Autologout; idle for too long\r\n",
	      "untagged tag=* status=BYE text=Autologout; idle for too long");
	check("+ Ready for additional command text\r\n", "cont tag=+ status=- text=Ready for additional command text");
	check("+\r\n", "cont tag=+ status=-");
	check("a1 PREAUTH x\r\n", "error=BAD_STATUS");
	check("a1 FETCH x\r\n", "error=BAD_STATUS");
	check("\r\n", "error=EMPTY");
	check("(a) OK\r\n", "error=BAD_TAG");
}

static void test_response_codes(void)
{
	check("* OK [ALERT] System shutdown in 10 minutes\r\n",
	      "untagged tag=* status=OK code=ALERT/1 text=System shutdown in 10 minutes");
	check("a NO [BADCHARSET (UTF-8 US-ASCII)] x\r\n", "tagged tag=a status=NO code=BADCHARSET/2 args=((UTF-8 US-ASCII)) text=x");
	check("a NO [BADCHARSET] x\r\n", "tagged tag=a status=NO code=BADCHARSET/2 text=x");
	check("* OK [CAPABILITY IMAP4rev1 LITERAL+ SASL-IR] ready\r\n",
	      "untagged tag=* status=OK code=CAPABILITY/3 args=(IMAP4rev1 LITERAL+ SASL-IR) text=ready");
	check("* NO [PARSE] bad header\r\n", "untagged tag=* status=NO code=PARSE/4 text=bad header");
	check("* OK [PERMANENTFLAGS (\\Deleted \\Seen \\*)] Limited\r\n",
	      "untagged tag=* status=OK code=PERMANENTFLAGS/5 args=((\\\\Deleted \\\\Seen \\\\*)) text=Limited");
	check("a OK [READ-ONLY] EXAMINE done\r\n", "tagged tag=a status=OK code=READ-ONLY/6 text=EXAMINE done");
	check("a OK [READ-WRITE] SELECT done\r\n", "tagged tag=a status=OK code=READ-WRITE/7 text=SELECT done");
	check("* OK [UIDNEXT 4392] Predicted next UID\r\n",
	      "untagged tag=* status=OK code=UIDNEXT/9 n=4392 args=(4392) text=Predicted next UID");
	check("* OK [UIDVALIDITY 3857529045] UIDs valid\r\n",
	      "untagged tag=* status=OK code=UIDVALIDITY/10 n=3857529045 args=(3857529045) text=UIDs valid");
	check("* OK [UNSEEN 12] first\r\n", "untagged tag=* status=OK code=UNSEEN/11 n=12 args=(12) text=first");
	check("* OK [HIGHESTMODSEQ 715194045007] Highest\r\n",
	      "untagged tag=* status=OK code=HIGHESTMODSEQ/12 n=715194045007 args=(715194045007) text=Highest");
	check("* OK [NOMODSEQ] Sorry\r\n", "untagged tag=* status=OK code=NOMODSEQ/13 text=Sorry");
	check("d105 OK [MODIFIED 7,9] Conditional STORE failed\r\n",
	      "tagged tag=d105 status=OK code=MODIFIED/14 set=7:7,9:9 args=(7,9) text=Conditional STORE failed");
	check("A003 OK [APPENDUID 38505 3955] APPEND completed\r\n",
	      "tagged tag=A003 status=OK code=APPENDUID/15 n=38505 set=3955:3955 args=(38505 3955) text=APPEND completed");
	check("A004 OK [COPYUID 38505 304,319:320 3956:3958] Done\r\n",
	      "tagged tag=A004 status=OK code=COPYUID/16 n=38505 set=304:304,319:320 set2=3956:3958 "
	      "args=(38505 304,319:320 3956:3958) text=Done");
	check("* OK [CLOSED] Previous mailbox closed\r\n", "untagged tag=* status=OK code=CLOSED/17 text=Previous mailbox closed");
	check("* OK [X-GM-THING some \"text] hi\r\n", "untagged tag=* status=OK code=X-GM-THING/18 text=hi");
	check("* OK [X-OTHER 1 2] hi\r\n", "untagged tag=* status=OK code=X-OTHER/18 args=(1 2) text=hi");
	/* Known codes with bad arguments are errors. */
	check("* OK [UIDNEXT x] hi\r\n", "error=BAD_CODE");
	check("* OK [UIDNEXT] hi\r\n", "error=BAD_CODE");
	check("A OK [COPYUID 1 2:*] x\r\n", "error=BAD_CODE");
	check("A OK [APPENDUID 0 5] x\r\n", "error=BAD_CODE");
	check("* OK [PERMANENTFLAGS \\Seen] x\r\n", "error=BAD_CODE");
	check("* OK [CAPABILITY \"x\"] x\r\n", "error=BAD_CODE");
	check("* OK [HIGHESTMODSEQ 99999999999999999999] x\r\n", "error=BAD_CODE");
}

static void test_untagged_data(void)
{
	check("* CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN\r\n",
	      "untagged tag=* status=- data=CAPABILITY args=(IMAP4rev1 STARTTLS AUTH=PLAIN)");
	check("* LIST (\\Noselect) \"/\" ~/Mail/foo\r\n",
	      "untagged tag=* status=- data=LIST flags=(\\\\Noselect) delim=/ mailbox=~/Mail/foo ext=0");
	check("* LIST () NIL INBOX\r\n", "untagged tag=* status=- data=LIST flags=() delim=NIL  mailbox=INBOX ext=0");
	check("* LSUB (\\HasNoChildren) \".\" {8}\r\nSent Box\r\n",
	      "untagged tag=* status=- data=LSUB flags=(\\\\HasNoChildren) delim=. mailbox=Sent Box ext=0");
	check("* LIST (\\Subscribed) \"/\" Foo (CHILDINFO (SUBSCRIBED))\r\n",
	      "untagged tag=* status=- data=LIST flags=(\\\\Subscribed) delim=/ mailbox=Foo ext=1");
	check("* LIST (\\Noselect) \"//\" foo\r\n", "error=BAD_ARGUMENT");
	check("* LIST (\\Noselect) \"/\"\r\n", "error=MISSING_ARGUMENT");
	check("* STATUS blurdybloop (MESSAGES 231 UIDNEXT 44292 UIDVALIDITY 1 UNSEEN 3 HIGHESTMODSEQ 9)\r\n",
	      "untagged tag=* status=- data=STATUS mailbox=blurdybloop present=0x3d messages=231 uidnext=44292 "
	      "uidvalidity=1 unseen=3 highestmodseq=9");
	check("* STATUS x (MESSAGES)\r\n", "error=BAD_ARGUMENT");
	check("* STATUS x (MESSAGES y)\r\n", "error=BAD_NUMBER");
	check("* SEARCH 2 3 6\r\n", "untagged tag=* status=- data=SEARCH numbers=2,3,6");
	check("* SEARCH\r\n", "untagged tag=* status=- data=SEARCH numbers=");
	check("* SEARCH 2 5 (MODSEQ 917162500)\r\n", "untagged tag=* status=- data=SEARCH numbers=2,5 modseq=917162500");
	check("* SEARCH 2 x\r\n", "error=BAD_NUMBER");
	check("* SEARCH 0\r\n", "error=BAD_NUMBER");
	check("* ESEARCH (TAG \"A282\") MIN 2 COUNT 3\r\n",
	      "untagged tag=* status=- data=ESEARCH tag=A282 uid=0 present=0x5 min=2 max=0 count=3 all=-");
	check("* ESEARCH (TAG \"A283\") UID ALL 4:18,21,28 MAX 28\r\n",
	      "untagged tag=* status=- data=ESEARCH tag=A283 uid=1 present=0xa min=0 max=28 count=0 all=4:18,21:21,28:28");
	check("* ESEARCH UID COUNT\r\n", "error=MISSING_ARGUMENT");
	check("* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n",
	      "untagged tag=* status=- data=FLAGS flags=(\\\\Answered \\\\Flagged \\\\Deleted \\\\Seen \\\\Draft)");
	check("* FLAGS \\Seen\r\n", "error=BAD_ARGUMENT");
	check("* 172 EXISTS\r\n", "untagged tag=* status=- data=EXISTS n=172");
	check("* 0 EXISTS\r\n", "untagged tag=* status=- data=EXISTS n=0");
	check("* 1 RECENT\r\n", "untagged tag=* status=- data=RECENT n=1");
	check("* 44 EXPUNGE\r\n", "untagged tag=* status=- data=EXPUNGE n=44");
	check("* 0 EXPUNGE\r\n", "error=BAD_NUMBER");
	check("* VANISHED (EARLIER) 300:310,405,411\r\n",
	      "untagged tag=* status=- data=VANISHED earlier=1 uids=300:310,405:405,411:411");
	check("* VANISHED 405\r\n", "untagged tag=* status=- data=VANISHED earlier=0 uids=405:405");
	check("* VANISHED 1:*\r\n", "error=BAD_SEQUENCE_SET");
	check("* ENABLED CONDSTORE QRESYNC\r\n", "untagged tag=* status=- data=ENABLED args=(CONDSTORE QRESYNC)");
	check("* ID (\"name\" \"Cyrus\" \"version\" \"1.5\" \"os\" NIL)\r\n", "untagged tag=* status=- data=ID params=6");
	check("* ID NIL\r\n", "untagged tag=* status=- data=ID params=0");
	check("* ID (\"name\")\r\n", "error=BAD_ARGUMENT");
	check("* NAMESPACE ((\"\" \"/\")) NIL ((\"Public Folders/\" \"/\"))\r\n",
	      "untagged tag=* status=- data=NAMESPACE personal=list other=NIL shared=list");
	check("* NAMESPACE ((\"\" \"/\")) NIL\r\n", "error=MISSING_ARGUMENT");
	check("* NAMESPACE (\"\" \"/\") NIL NIL\r\n", "error=BAD_ARGUMENT");
	check("* XUNKNOWN 1 (2)\r\n", "untagged tag=* status=- data=XUNKNOWN args=(1 (2))");
	check("* 3 XTHING a\r\n", "untagged tag=* status=- data=XTHING args=(a)");
	check("*\r\n", "error=MISSING_ARGUMENT");
}

static void test_fetch(void)
{
	check("* 12 FETCH (FLAGS (\\Seen) INTERNALDATE \"17-Jul-1996 02:44:25 -0700\" RFC822.SIZE 4286 UID 99 "
	      "MODSEQ (12121231000))\r\n",
	      "untagged tag=* status=- data=FETCH seq=12 [FLAGS] [INTERNALDATE n=837596665] [RFC822.SIZE n=4286] "
	      "[UID n=99] [MODSEQ n=12121231000]");
	check("* 12 FETCH (ENVELOPE (\"Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\" \"IMAP4rev1 WG mtg summary\" "
	      "((\"Terry Gray\" NIL \"gray\" \"cac.washington.edu\")) ((\"Terry Gray\" NIL \"gray\" \"cac.washington.edu\")) "
	      "((\"Terry Gray\" NIL \"gray\" \"cac.washington.edu\")) ((NIL NIL \"imap\" \"cac.washington.edu\")) "
	      "((NIL NIL \"minutes\" \"CNRI.Reston.VA.US\")(\"John Klensin\" NIL \"KLENSIN\" \"MIT.EDU\")) NIL NIL "
	      "\"<B27397-0100000@cac.washington.edu>\"))\r\n",
	      "untagged tag=* status=- data=FETCH seq=12 [ENVELOPE]");
	check("* 1 FETCH (BODYSTRUCTURE (\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" 3028 92) "
	      "BODY ((\"text\" \"plain\" NIL NIL NIL \"7bit\" 1 1)(\"text\" \"html\" NIL NIL NIL \"7bit\" 1 1) \"alternative\"))\r\n",
	      "untagged tag=* status=- data=FETCH seq=1 [BODYSTRUCTURE] [BODY]");
	check("* 2 FETCH (BODY[HEADER.FIELDS (FROM TO)] {5}\r\nab\r\nc BODY[1.2]<0> NIL BODY[] \"\" BINARY[1] ~{2}\r\nhi "
	      "BINARY.SIZE[1] 2 RFC822 {1}\r\nx RFC822.HEADER NIL RFC822.TEXT \"t\")\r\n",
	      "untagged tag=* status=- data=FETCH seq=2 [BODY[] section=HEADER.FIELDS (FROM TO)] "
	      "[BODY[] section=1.2 origin=0] [BODY[] section=] [BINARY[] section=1] [BINARY.SIZE section=1 n=2] "
	      "[RFC822] [RFC822.HEADER] [RFC822.TEXT]");
	/* Header names in the key come back as astrings; the section is the
	   same canonical text whatever form the server chose. */
	check("* 2 FETCH (BODY[HEADER.FIELDS (\"X-Y\" {7}\r\nSUBJECT \"A B\")] {2}\r\nhi)\r\n",
	      "untagged tag=* status=- data=FETCH seq=2 [BODY[] section=HEADER.FIELDS (X-Y SUBJECT \"A B\")]");
	check("* 2 FETCH (BODY[HEADER.FIELDS (X-Y SUBJECT \"A B\")] {2}\r\nhi)\r\n",
	      "untagged tag=* status=- data=FETCH seq=2 [BODY[] section=HEADER.FIELDS (X-Y SUBJECT \"A B\")]");
	/* Dovecot 2.3 was seen sending an underflowed BINARY.SIZE; it is kept, not fatal. */
	check("* 4 FETCH (BINARY.SIZE[1] 18446744073709448791)\r\n",
	      "untagged tag=* status=- data=FETCH seq=4 [BINARY.SIZE section=1 n=18446744073709448791]");
	check("* 4 FETCH (BINARY.SIZE[1] 18446744073709551616)\r\n", "error=BAD_FETCH_ITEM");
	check("* 3 FETCH (X-GM-MSGID 1278455344230334865 BODY[]<100> {2}\r\nhi)\r\n",
	      "untagged tag=* status=- data=FETCH seq=3 [OTHER] [BODY[] section= origin=100]");
	/* Each item's value must have its form. */
	check("* 1 FETCH (UID)\r\n", "error=BAD_FETCH_ITEM");
	check("* 1 FETCH (UID 0)\r\n", "error=BAD_FETCH_ITEM");
	check("* 1 FETCH (UID x)\r\n", "error=BAD_FETCH_ITEM");
	check("* 1 FETCH (FLAGS \\Seen)\r\n", "error=BAD_FETCH_ITEM");
	check("* 1 FETCH (INTERNALDATE \"yesterday\")\r\n", "error=BAD_FETCH_ITEM");
	check("* 1 FETCH (RFC822.SIZE -1)\r\n", "error=BAD_FETCH_ITEM");
	check("* 1 FETCH (ENVELOPE (NIL NIL))\r\n", "error=BAD_FETCH_ITEM");
	check("* 1 FETCH (ENVELOPE (NIL NIL (\"a\") NIL NIL NIL NIL NIL NIL NIL))\r\n", "error=BAD_FETCH_ITEM");
	check("* 1 FETCH (BODY[] (x))\r\n", "error=BAD_FETCH_ITEM");
	check("* 1 FETCH (BODY[]<x> NIL)\r\n", "error=BAD_FETCH_ITEM");
	check("* 1 FETCH (BODY[]junk NIL)\r\n", "error=BAD_FETCH_ITEM");
	check("* 1 FETCH (MODSEQ 5)\r\n", "error=BAD_FETCH_ITEM");
	check("* 1 FETCH ((UID) 5)\r\n", "error=BAD_FETCH_ITEM");
	check("* 1 FETCH ()\r\n", "error=BAD_FETCH_ITEM");
	check("* 0 FETCH (UID 1)\r\n", "error=BAD_NUMBER");
	check("* 1 FETCH UID 1\r\n", "error=BAD_ARGUMENT");
}

static void test_fetch_find_and_envelope(void)
{
	struct imap_parser *parser = imap_parser_new();
	struct imap_response response;
	struct imap_envelope envelope;
	struct imap_address address;
	const char line[] = "* 7 FETCH (UID 70 ENVELOPE (NIL \"Hi\" ((\"Ann\" NIL \"ann\" \"x.org\")) NIL NIL "
			    "((NIL NIL \"team\" NIL)(NIL NIL \"bob\" \"y.org\")(NIL NIL NIL NIL)) NIL NIL NIL \"<id@x>\"))\r\n";
	size_t consumed;
	const char *message;

	imap_parser_set_mode(parser, IMAP_PARSER_MODE_RESPONSE);
	CU_ASSERT_EQUAL_FATAL(imap_parser_feed_bytes(parser, line, sizeof(line) - 1, &consumed),
			      IMAP_PARSER_LINE_COMPLETE);
	CU_ASSERT_EQUAL_FATAL(imap_response_parse(response_parser, imap_parser_get_line(parser), &response, &message),
			      IMAP_RESPONSE_ERROR_NONE);
	CU_ASSERT_EQUAL(imap_response_fetch_find(&response, IMAP_FETCH_UID)->number, 70);
	CU_ASSERT_PTR_NULL(imap_response_fetch_find(&response, IMAP_FETCH_FLAGS));
	const struct imap_fetch_item *item = imap_response_fetch_find(&response, IMAP_FETCH_ENVELOPE);
	CU_ASSERT_FATAL(item != NULL && imap_envelope_from_arg(item->value, &envelope));
	CU_ASSERT_PTR_NULL(envelope.date);
	CU_ASSERT_STRING_EQUAL(envelope.subject, "Hi");
	CU_ASSERT_EQUAL(envelope.from_count, 1);
	CU_ASSERT_PTR_NULL(envelope.sender);
	CU_ASSERT_EQUAL(envelope.to_count, 3);
	CU_ASSERT_STRING_EQUAL(envelope.message_id, "<id@x>");
	CU_ASSERT(imap_address_from_arg(&envelope.from[0], &address));
	CU_ASSERT_STRING_EQUAL(address.name, "Ann");
	CU_ASSERT_STRING_EQUAL(address.host, "x.org");
	/* A group: start has host NIL, end has mailbox and host NIL. */
	CU_ASSERT(imap_address_from_arg(&envelope.to[0], &address));
	CU_ASSERT(address.host == NULL && strcmp(address.mailbox, "team") == 0);
	CU_ASSERT(imap_address_from_arg(&envelope.to[2], &address));
	CU_ASSERT(address.mailbox == NULL && address.host == NULL);
	imap_parser_free(&parser);
}

static void test_streamed_body_in_fetch(void)
{
	struct imap_parser_limits limits;
	imap_parser_get_default_limits(&limits);
	limits.max_inline_literal = 3;
	struct unit_imap_options options = { .mode = IMAP_PARSER_MODE_RESPONSE, .limits = &limits,
					     .line_callback = dump_response, .stream_literals = 1 };
	const char *input = "* 4 FETCH (UID 8 BODY[] {10}\r\n0123456789)\r\n";

	unit_imap_check(input, strlen(input), &options,
			"LINE untagged tag=* status=- data=FETCH seq=4 [UID n=8] [BODY[] section=]\n"
			"STREAMED [depth=1 prev=BODY[]]0123456789|\n");
}

static void check_set(const char *input, unsigned int allow, const char *expected)
{
	struct imap_seqset set = IMAP_SEQSET_INIT;
	enum imap_seqset_error error;
	char got[256] = "";

	if (imap_seqset_parse(&set, input, strlen(input), allow, &error) < 0) {
		snprintf(got, sizeof(got), "error %d", error);
		CU_ASSERT(imap_seqset_error_message(error)[0] != '\0');
	} else if (set.saved) {
		strcpy(got, "$");
	} else {
		add_set(got, sizeof(got), &set);
	}
	if (strcmp(got, expected) != 0) {
		fprintf(stderr, "\nseqset %s: expected %s, got %s\n", input, expected, got);
		CU_FAIL("sequence set");
	}
	imap_seqset_free(&set);
}

/* imap_seqset_format: runs as ranges, and a cut text reports its whole length. */
static void test_seqset_format(void)
{
	static const uint32_t numbers[] = { 1, 2, 3, 7, 9, 10, 4294967295u };
	char buf[64];

	CU_ASSERT_EQUAL(imap_seqset_format(buf, sizeof(buf), numbers, 0), 0);
	CU_ASSERT_STRING_EQUAL(buf, "");
	CU_ASSERT_EQUAL(imap_seqset_format(buf, sizeof(buf), numbers + 3, 1), 1);
	CU_ASSERT_STRING_EQUAL(buf, "7");
	CU_ASSERT_EQUAL(imap_seqset_format(buf, sizeof(buf), numbers, 7), strlen("1:3,7,9:10,4294967295"));
	CU_ASSERT_STRING_EQUAL(buf, "1:3,7,9:10,4294967295");
	CU_ASSERT_EQUAL(imap_seqset_format(buf, 6, numbers, 7), strlen("1:3,7,9:10,4294967295"));
	CU_ASSERT_STRING_EQUAL(buf, "1:3,7");
	CU_ASSERT_EQUAL(imap_seqset_format(NULL, 0, numbers, 3), 3);
}

static void test_seqset(void)
{
	const unsigned int star = IMAP_SEQSET_ALLOW_STAR, all = IMAP_SEQSET_ALLOW_STAR | IMAP_SEQSET_ALLOW_SAVED;

	check_set("1", 0, "1:1");
	check_set("1:3,5,7:9", 0, "1:3,5:5,7:9");
	check_set("4:2", 0, "2:4");
	check_set("1:*", star, "1:4294967295");
	check_set("*", star, "4294967295:4294967295");
	check_set("*:5", star, "5:4294967295");
	check_set("4294967295", 0, "4294967295:4294967295");
	check_set("$", all, "$");
	check_set("1:*", 0, "error 5");
	check_set("$", star, "error 6");
	check_set("", 0, "error 1");
	check_set("1,,2", 0, "error 1");
	check_set("1,", 0, "error 1");
	check_set("0", 0, "error 2");
	check_set("1:0", 0, "error 2");
	check_set("4294967296", 0, "error 3");
	check_set("1:", 0, "error 4");
	check_set("1:2:3", 0, "error 4");
	check_set("a", 0, "error 4");
	check_set("$,1", all, "error 4");
	check_set("1 2", 0, "error 4");

	struct imap_seqset set = IMAP_SEQSET_INIT;
	enum imap_seqset_error error;
	CU_ASSERT_EQUAL(imap_seqset_parse(&set, "1:3,2:5,10,*", 12, star, &error), 0);
	CU_ASSERT(imap_seqset_contains(&set, 4, 20));
	CU_ASSERT(imap_seqset_contains(&set, 20, 20));
	CU_ASSERT(!imap_seqset_contains(&set, 7, 20));
	CU_ASSERT_EQUAL(imap_seqset_count(&set, 20), 7);
	CU_ASSERT_EQUAL(imap_seqset_count(&set, 10), 6);
	/* resolved: sorted and merged, "*" as the number given */
	unsigned int resolved_count = 0;
	struct imap_seqset_range *resolved = imap_seqset_resolve(&set, 11, &resolved_count);
	CU_ASSERT_FATAL(resolved != NULL);
	CU_ASSERT_EQUAL(resolved_count, 2);
	CU_ASSERT(resolved[0].first == 1 && resolved[0].last == 5 && resolved[1].first == 10 && resolved[1].last == 11);
	free(resolved);
	/* 4294967295 is a number of its own beside "*" */
	CU_ASSERT_EQUAL(imap_seqset_parse(&set, "4294967295", 10, star, &error), 0);
	CU_ASSERT(!imap_seqset_contains(&set, 20, 20));
	CU_ASSERT(imap_seqset_contains(&set, 4294967295u, 20));
	/* "7:*" with * = 3 means 3:7. */
	CU_ASSERT_EQUAL(imap_seqset_parse(&set, "7:*", 3, star, &error), 0);
	CU_ASSERT(imap_seqset_contains(&set, 5, 3));
	CU_ASSERT_EQUAL(imap_seqset_count(&set, 3), 5);
	/* Too many ranges. */
	size_t big_len = IMAP_SEQSET_MAX_RANGES * 2 + 1;
	char *big = malloc(big_len + 1);
	for (size_t i = 0; i < big_len; i += 2) {
		big[i] = '1';
		big[i + 1] = ',';
	}
	big[big_len] = '\0';
	CU_ASSERT_EQUAL(imap_seqset_parse(&set, big, big_len, 0, &error), -1);
	CU_ASSERT_EQUAL(error, IMAP_SEQSET_ERROR_TOO_MANY);
	free(big);
	imap_seqset_free(&set);
}

const char unit_suite_name[] = "imap-response";
const struct unit_test unit_tests[] = {
	{ "status responses", test_status_responses },
	{ "response codes", test_response_codes },
	{ "untagged data", test_untagged_data },
	{ "FETCH items", test_fetch },
	{ "FETCH find and ENVELOPE", test_fetch_find_and_envelope },
	{ "streamed BODY[] in FETCH", test_streamed_body_in_fetch },
	{ "sequence sets", test_seqset },
	{ "sequence sets written", test_seqset_format },
	{ NULL, NULL },
};
