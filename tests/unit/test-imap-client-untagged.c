/* SPDX-License-Identifier: MIT */
/* Unit tests for common/imap-client-untagged: self-contained copies of parsed lines and the response pool. */
#include "config.h"
#include "unit.h"
#include "imap-client-untagged.h"

#include <stdio.h>
#include <string.h>

/* Parses one server line and copies it, then frees the parser so the
   copy must stand alone. */
static struct imap_client_untagged *copy_line(const char *text, size_t len, unsigned int first)
{
	struct imap_parser *parser = imap_parser_new();
	struct imap_client_untagged *untagged = NULL;
	const struct imap_arg *line;
	const char *keyword;
	size_t consumed;

	imap_parser_set_mode(parser, IMAP_PARSER_MODE_RESPONSE);
	CU_ASSERT_EQUAL_FATAL(imap_parser_feed_bytes(parser, text, len, &consumed), IMAP_PARSER_LINE_COMPLETE);
	line = imap_parser_get_line(parser);
	CU_ASSERT_TRUE_FATAL(imap_arg_get_atom(&line->list[first - 1], &keyword));
	untagged = imap_client_untagged_new(keyword, first == 3, 7, line->list, line->list_count, first, NULL,
					    NULL);
	imap_parser_free(&parser);
	return untagged;
}

static void test_copy_stands_alone(void)
{
	static const char text[] = "* 7 fetch (UID 9 FLAGS (\\Seen $Junk) BODY[] {5}\r\na\0b\r\n "
				   "ENVELOPE (NIL \"subj \\\"q\\\"\" ((\"A\" NIL \"a\" \"x.org\")(\"B\" NIL \"b\" \"y.org\"))))\r\n";
	struct imap_client_untagged *untagged = copy_line(text, sizeof(text) - 1, 3);
	const struct imap_arg *items, *flags, *envelope, *addresses;
	const char *str;
	size_t len;

	CU_ASSERT_PTR_NOT_NULL_FATAL(untagged);
	CU_ASSERT_STRING_EQUAL(untagged->keyword, "FETCH"); /* upper-cased */
	CU_ASSERT_TRUE(untagged->has_number);
	CU_ASSERT_EQUAL(untagged->number, 7);
	CU_ASSERT_EQUAL(untagged->line->type, IMAP_ARG_LIST);
	CU_ASSERT_EQUAL(untagged->line->list_count, 4);
	CU_ASSERT_TRUE(imap_arg_atom_equals(&untagged->line->list[0], "*"));
	CU_ASSERT_EQUAL_FATAL(untagged->args_count, 1);
	CU_ASSERT_TRUE_FATAL(imap_arg_get_list(&untagged->args[0], &items, &(unsigned int){ 0 }));
	CU_ASSERT_EQUAL_FATAL(untagged->args[0].list_count, 8);
	flags = &items[3];
	CU_ASSERT_EQUAL(flags->list_count, 2);
	CU_ASSERT_TRUE(imap_arg_atom_equals(&flags->list[1], "$Junk"));
	/* a literal with a NUL inside keeps every byte */
	CU_ASSERT_TRUE(imap_arg_get_string(&items[5], &str, &len));
	CU_ASSERT_EQUAL(len, 5);
	CU_ASSERT_EQUAL(memcmp(str, "a\0b\r\n", 5), 0);
	envelope = &items[7];
	CU_ASSERT_TRUE(imap_arg_is_nil(&envelope->list[0]));
	CU_ASSERT_TRUE(imap_arg_get_string(&envelope->list[1], &str, &len));
	CU_ASSERT_STRING_EQUAL(str, "subj \"q\"");
	addresses = &envelope->list[2];
	CU_ASSERT_EQUAL(addresses->list_count, 2);
	CU_ASSERT_TRUE(imap_arg_get_string(&addresses->list[1].list[3], &str, &len));
	CU_ASSERT_STRING_EQUAL(str, "y.org");
	imap_client_untagged_unref(&untagged);
	CU_ASSERT_PTR_NULL(untagged);
}

/* A borrowed response reads as the copy does, with no copy made; a
   keyword too long for the caller's buffer is refused. */
static void test_borrow(void)
{
	static const char text[] = "* 7 fetch (UID 9 FLAGS (\\Seen $Junk))\r\n";
	struct imap_parser *parser = imap_parser_new();
	struct imap_client_untagged untagged;
	struct imap_arg line_arg;
	const struct imap_arg *line;
	char keyword[8], small[5];
	size_t consumed;

	imap_parser_set_mode(parser, IMAP_PARSER_MODE_RESPONSE);
	CU_ASSERT_EQUAL_FATAL(imap_parser_feed_bytes(parser, text, sizeof(text) - 1, &consumed),
			      IMAP_PARSER_LINE_COMPLETE);
	line = imap_parser_get_line(parser);
	CU_ASSERT_FALSE(imap_client_untagged_borrow(&untagged, &line_arg, small, sizeof(small), "fetch", true, 7,
						    line->list, line->list_count, 3, NULL, NULL));
	CU_ASSERT_TRUE_FATAL(imap_client_untagged_borrow(&untagged, &line_arg, keyword, sizeof(keyword), "fetch", true,
							 7, line->list, line->list_count, 3, NULL, NULL));
	CU_ASSERT_STRING_EQUAL(untagged.keyword, "FETCH");
	CU_ASSERT_TRUE(untagged.has_number);
	CU_ASSERT_EQUAL(untagged.number, 7);
	CU_ASSERT_EQUAL(untagged.line->type, IMAP_ARG_LIST);
	CU_ASSERT_EQUAL(untagged.line->list_count, 4);
	CU_ASSERT_PTR_EQUAL(untagged.line->list, line->list); /* borrowed, not copied */
	CU_ASSERT_EQUAL_FATAL(untagged.args_count, 1);
	CU_ASSERT_EQUAL(untagged.args[0].list_count, 4);
	CU_ASSERT_TRUE(imap_arg_atom_equals(&untagged.args[0].list[3].list[1], "$Junk"));
	imap_parser_free(&parser);
}

static void test_refcount(void)
{
	struct imap_client_untagged *untagged = copy_line("* SEARCH 1 2 3\r\n", 16, 2), *second;

	CU_ASSERT_EQUAL(untagged->args_count, 3);
	CU_ASSERT_FALSE(untagged->has_number);
	second = untagged;
	imap_client_untagged_ref(second);
	imap_client_untagged_unref(&untagged);
	/* still alive through the second reference (ASan would tell otherwise) */
	CU_ASSERT_STRING_EQUAL(second->keyword, "SEARCH");
	imap_client_untagged_unref(&second);
	imap_client_untagged_unref(&second); /* NULL is fine */
}

static void test_pool(void)
{
	struct imap_client_untagged_pool pool = { .count = 0 };
	struct imap_client_untagged *untagged, *popped;
	char text[16];

	for (int i = 0; i < IMAP_CLIENT_UNTAGGED_POOL_MAX + 5; i++) {
		snprintf(text, sizeof(text), "%d", i);
		untagged = imap_client_untagged_new(i % 2 == 0 ? "exists" : "RECENT", false, 0, NULL, 0, 0, NULL, text);
		imap_client_untagged_pool_add(&pool, untagged);
		imap_client_untagged_unref(&untagged); /* the pool keeps its own reference */
	}
	CU_ASSERT_EQUAL(pool.count, IMAP_CLIENT_UNTAGGED_POOL_MAX);
	/* the five oldest were dropped; the oldest left comes first */
	popped = imap_client_untagged_pool_pop(&pool, "Exists");
	CU_ASSERT_PTR_NOT_NULL_FATAL(popped);
	CU_ASSERT_STRING_EQUAL(popped->text, "6");
	CU_ASSERT_PTR_NULL(popped->line);
	imap_client_untagged_unref(&popped);
	popped = imap_client_untagged_pool_pop(&pool, "RECENT");
	CU_ASSERT_STRING_EQUAL(popped->text, "5");
	imap_client_untagged_unref(&popped);
	CU_ASSERT_PTR_NULL(imap_client_untagged_pool_pop(&pool, "FETCH"));
	CU_ASSERT_EQUAL(pool.count, IMAP_CLIENT_UNTAGGED_POOL_MAX - 2);
	imap_client_untagged_pool_clear(&pool);
	CU_ASSERT_EQUAL(pool.count, 0);
}

const char unit_suite_name[] = "imap-client-untagged";
const struct unit_test unit_tests[] = {
	{ "a copy stands alone: lists, literals with NUL, escapes", test_copy_stands_alone },
	{ "a borrowed response reads as a copy", test_borrow },
	{ "reference counting", test_refcount },
	{ "pool: bounded, oldest first, case-insensitive", test_pool },
	{ NULL, NULL },
};
