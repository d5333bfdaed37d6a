/* SPDX-License-Identifier: MIT */
/* imap-command-dump: prints one summary line per client command read from stdin, for the imaplib test. */
#include "config.h"
#include "imap-command.h"
#include "imap-dump.h"
#include "imap-parser.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DUMP_READ_SIZE 1024 /* small reads, so commands and literals span them */

struct dump {
	struct imap_command_parser *commands;
	int errors;
	bool authenticating; /* the next line is the client's SASL response */
};

static void dump_literal(struct imap_parser *parser, void *context)
{
	(void)context;
	printf("LITERAL %llu\n", (unsigned long long)imap_parser_get_literal_size(parser));
}

static void dump_command(struct imap_parser *parser, void *context)
{
	struct dump *dump = context;
	struct imap_command command;
	const char *message;
	enum imap_command_error error;

	if (dump->authenticating) {
		/* The client's SASL response line, read in TEXT_LINE mode. */
		printf("SASL %s\n", imap_parser_get_line(parser)->list[0].str);
		dump->authenticating = false;
		imap_parser_set_mode(parser, IMAP_PARSER_MODE_COMMAND);
		return;
	}
	error = imap_command_parse(dump->commands, imap_parser_get_line(parser), &command, &message);
	if (error != IMAP_COMMAND_ERROR_NONE) {
		printf("ERROR %s %s: %s\n", command.tag != NULL ? command.tag : "-", imap_command_error_name(error),
		       message);
		dump->errors++;
		return;
	}
	printf("%s%s", command.uid ? "UID " : "", command.name_str);
	switch (command.name) {
	case IMAP_COMMAND_AUTHENTICATE:
		dump->authenticating = command.u.authenticate.initial_response == NULL;
		if (dump->authenticating)
			imap_parser_set_mode(parser, IMAP_PARSER_MODE_TEXT_LINE);
		printf(" %s", command.u.authenticate.mechanism);
		break;
	case IMAP_COMMAND_LOGIN:
		printf(" %s", command.u.login.user);
		break;
	case IMAP_COMMAND_APPEND:
		printf(" %s flags=%u date=%lld size=%llu", command.u.append.mailbox, command.u.append.flag_count,
		       command.u.append.has_date ? (long long)command.u.append.date : 0LL,
		       (unsigned long long)command.u.append.message->len);
		break;
	case IMAP_COMMAND_FETCH:
		printf(" attrs=%u", command.u.fetch.attr_count);
		break;
	case IMAP_COMMAND_STORE:
		printf(" mode=%d flags=%u", command.u.store.mode, command.u.store.flag_count);
		break;
	case IMAP_COMMAND_SEARCH:
		printf(" keys=%u", command.u.search.program->child_count);
		break;
	case IMAP_COMMAND_SELECT:
	case IMAP_COMMAND_EXAMINE:
		printf(" %s", command.u.select.mailbox);
		break;
	default:
		break;
	}
	printf("\n");
}

int main(void)
{
	struct imap_parser *parser = imap_parser_new();
	struct dump dump = { .commands = imap_command_parser_new() };
	bool read_all;

	if (parser == NULL || dump.commands == NULL) {
		fprintf(stderr, "imap-command-dump: out of memory\n");
		return 2;
	}
	read_all = imap_dump_feed_stdin(parser, DUMP_READ_SIZE, dump_command, dump_literal, &dump);
	imap_command_parser_free(&dump.commands);
	imap_parser_free(&parser);
	return read_all && dump.errors == 0 ? 0 : 1;
}
