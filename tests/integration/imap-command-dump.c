/* SPDX-License-Identifier: MIT */
/* imap-command-dump: prints one summary line per client command read from stdin, for the imaplib test. */
#include "config.h"
#include "imap-command.h"
#include "imap-parser.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DUMP_READ_SIZE 1024 /* small reads, so commands and literals span them */

int main(void)
{
	struct imap_parser *parser = imap_parser_new();
	struct imap_command_parser *commands = imap_command_parser_new();
	char buffer[DUMP_READ_SIZE];
	size_t got;
	int errors = 0;
	bool authenticating = false;

	if (parser == NULL || commands == NULL) {
		fprintf(stderr, "imap-command-dump: out of memory\n");
		return 2;
	}
	while ((got = fread(buffer, 1, sizeof(buffer), stdin)) > 0) {
		size_t pos = 0;
		while (pos < got) {
			size_t consumed;
			const char *message;
			enum imap_parser_result result = imap_parser_feed_bytes(parser, buffer + pos, got - pos, &consumed);
			pos += consumed;
			if (result == IMAP_PARSER_NEED_MORE)
				break;
			if (result == IMAP_PARSER_LITERAL_ANNOUNCED) {
				printf("LITERAL %llu\n", (unsigned long long)imap_parser_get_literal_size(parser));
				continue;
			}
			if (result != IMAP_PARSER_LINE_COMPLETE) {
				imap_parser_get_error(parser, &message);
				printf("ERROR tokenizer %s\n", message);
				return 1;
			}
			if (authenticating) {
				/* The client's SASL response line, read in TEXT_LINE mode. */
				printf("SASL %s\n", imap_parser_get_line(parser)->list[0].str);
				authenticating = false;
				imap_parser_set_mode(parser, IMAP_PARSER_MODE_COMMAND);
				continue;
			}
			struct imap_command command;
			enum imap_command_error error =
				imap_command_parse(commands, imap_parser_get_line(parser), &command, &message);
			if (error != IMAP_COMMAND_ERROR_NONE) {
				printf("ERROR %s %s: %s\n", command.tag != NULL ? command.tag : "-",
				       imap_command_error_name(error), message);
				errors++;
				continue;
			}
			printf("%s%s", command.uid ? "UID " : "", command.name_str);
			switch (command.name) {
			case IMAP_COMMAND_AUTHENTICATE:
				authenticating = command.u.authenticate.initial_response == NULL;
				if (authenticating)
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
	}
	imap_command_parser_free(&commands);
	imap_parser_free(&parser);
	return errors == 0 ? 0 : 1;
}
