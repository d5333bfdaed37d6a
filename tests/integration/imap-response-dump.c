/* SPDX-License-Identifier: MIT */
/* imap-response-dump: prints one summary line per server response read from stdin, for the Dovecot test. */
#include "config.h"
#include "imap-dump.h"
#include "imap-parser.h"
#include "imap-response.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DUMP_READ_SIZE 4096 /* small reads, so lines and literals span them */

static const char *const status_names[] = { "-", "OK", "NO", "BAD", "PREAUTH", "BYE" };

static void print_fetch(const struct imap_response *r)
{
	printf("FETCH seq=%u items=%u", r->number, r->u.fetch.count);
	for (unsigned int i = 0; i < r->u.fetch.count; i++) {
		const struct imap_fetch_item *item = &r->u.fetch.items[i];
		switch (item->type) {
		case IMAP_FETCH_UID:
			printf(" uid=%llu", (unsigned long long)item->number);
			break;
		case IMAP_FETCH_RFC822_SIZE:
			printf(" size=%llu", (unsigned long long)item->number);
			break;
		case IMAP_FETCH_INTERNALDATE:
			printf(" date=%lld", (long long)(int64_t)item->number);
			break;
		case IMAP_FETCH_MODSEQ:
			printf(" modseq=%llu", (unsigned long long)item->number);
			break;
		case IMAP_FETCH_FLAGS:
			printf(" flags=");
			for (unsigned int f = 0; f < item->value->list_count; f++)
				printf("%s%s", f ? "," : "", item->value->list[f].str);
			break;
		case IMAP_FETCH_ENVELOPE: {
			struct imap_envelope envelope;
			printf(" envelope=%s", imap_envelope_from_arg(item->value, &envelope) ? "ok" : "bad");
			break;
		}
		case IMAP_FETCH_BODY_SECTION:
		case IMAP_FETCH_BINARY_SECTION:
			printf(" %s=%llu", item->type == IMAP_FETCH_BODY_SECTION ? "body" : "binary",
			       (unsigned long long)item->value->len);
			break;
		case IMAP_FETCH_BINARY_SIZE:
			printf(" binary.size=%llu", (unsigned long long)item->number);
			break;
		case IMAP_FETCH_BODYSTRUCTURE:
			printf(" bodystructure=%u", item->value->list_count);
			break;
		default:
			printf(" %s", item->name);
			break;
		}
	}
	printf("\n");
	/* Section texts on lines of their own: they may hold spaces and quotes. */
	for (unsigned int i = 0; i < r->u.fetch.count; i++) {
		const struct imap_fetch_item *item = &r->u.fetch.items[i];
		if (item->type == IMAP_FETCH_BODY_SECTION && item->section_len > 0)
			printf("SECTION %.*s\n", (int)item->section_len, item->section);
	}
}

static void print_response(const struct imap_response *r)
{
	if (r->status != IMAP_RESPONSE_STATUS_NONE || r->kind == IMAP_RESPONSE_CONTINUATION) {
		printf("%s %s %s", r->kind == IMAP_RESPONSE_TAGGED ? "TAGGED" : r->kind == IMAP_RESPONSE_UNTAGGED
										     ? "UNTAGGED"
										     : "CONTINUATION",
		       r->tag, status_names[r->status]);
		if (r->code.type != IMAP_RESPONSE_CODE_NONE)
			printf(" code=%s/%llu", r->code.name, (unsigned long long)r->code.number);
		printf("\n");
		return;
	}
	switch (r->type) {
	case IMAP_RESPONSE_DATA_FETCH:
		print_fetch(r);
		break;
	case IMAP_RESPONSE_DATA_LIST:
	case IMAP_RESPONSE_DATA_LSUB:
		printf("%s %.*s\n", r->type == IMAP_RESPONSE_DATA_LIST ? "LIST" : "LSUB", (int)r->u.list.mailbox_len,
		       r->u.list.mailbox);
		break;
	case IMAP_RESPONSE_DATA_STATUS:
		printf("STATUS messages=%llu uidnext=%llu uidvalidity=%llu\n",
		       (unsigned long long)r->u.status.messages, (unsigned long long)r->u.status.uidnext,
		       (unsigned long long)r->u.status.uidvalidity);
		break;
	case IMAP_RESPONSE_DATA_SEARCH:
		printf("SEARCH count=%u\n", r->u.search.count);
		break;
	case IMAP_RESPONSE_DATA_ESEARCH:
		printf("ESEARCH min=%u max=%u count=%u ranges=%u\n", r->u.esearch.min, r->u.esearch.max,
		       r->u.esearch.count, r->u.esearch.all != NULL ? r->u.esearch.all->count : 0);
		break;
	case IMAP_RESPONSE_DATA_EXISTS:
		printf("EXISTS %u\n", r->number);
		break;
	default:
		printf("DATA %s args=%u\n", r->name, r->arg_count);
		break;
	}
}

struct dump {
	struct imap_response_parser *responses;
	int errors;
};

/* Parses the line in parser and prints it, or its error. */
static void dump_response(struct imap_parser *parser, void *context)
{
	struct dump *dump = context;
	struct imap_response response;
	const char *message;
	enum imap_response_error error =
		imap_response_parse(dump->responses, imap_parser_get_line(parser), &response, &message);

	if (error != IMAP_RESPONSE_ERROR_NONE) {
		printf("ERROR %s %s\n", imap_response_error_name(error), message);
		dump->errors++;
		return;
	}
	print_response(&response);
}

int main(void)
{
	struct imap_parser *parser = imap_parser_new();
	struct dump dump = { .responses = imap_response_parser_new() };

	if (parser == NULL || dump.responses == NULL) {
		fprintf(stderr, "imap-response-dump: out of memory\n");
		return 2;
	}
	imap_parser_set_mode(parser, IMAP_PARSER_MODE_RESPONSE);
	if (!imap_dump_feed_stdin(parser, DUMP_READ_SIZE, dump_response, NULL, &dump)) {
		dump.errors++;
	} else if (imap_parser_is_mid_line(parser)) {
		printf("ERROR input ended mid-line\n");
		dump.errors++;
	}
	imap_response_parser_free(&dump.responses);
	imap_parser_free(&parser);
	return dump.errors == 0 ? 0 : 1;
}
