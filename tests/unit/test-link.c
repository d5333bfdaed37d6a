/* SPDX-License-Identifier: MIT */
/* Unit tests for daemon/link: the round trip and transfer rate measured per upstream. */
#include "config.h"
#include "unit.h"
#include "link.h"

#include <stdio.h>

/* Nothing measured: zeros, and no transfer time. */
static void test_unknown(void)
{
	struct link_facts facts;

	link_forget_all();
	facts = link_facts_get("imap.example");
	CU_ASSERT_EQUAL(facts.round_trip_usec, 0);
	CU_ASSERT_EQUAL(facts.bytes_per_sec, 0);
	CU_ASSERT_EQUAL(link_transfer_usec(&facts, 400000), 0);
	CU_ASSERT_EQUAL(link_facts_get(NULL).round_trip_usec, 0);
	link_note_round_trip(NULL, 1000); /* no name: nothing kept, nothing breaks */
	link_note_round_trip("imap.example", 0);
	CU_ASSERT_EQUAL(link_facts_get("imap.example").round_trip_usec, 0);
}

/* The first sample is the average; each next moves it a quarter of the way. */
static void test_round_trip_average(void)
{
	link_forget_all();
	link_note_round_trip("a", 40000);
	CU_ASSERT_EQUAL(link_facts_get("a").round_trip_usec, 40000);
	link_note_round_trip("a", 80000);
	CU_ASSERT_EQUAL(link_facts_get("a").round_trip_usec, 50000);
	link_note_round_trip("a", 10000);
	CU_ASSERT_EQUAL(link_facts_get("a").round_trip_usec, 40000);
	CU_ASSERT_EQUAL(link_facts_get("b").round_trip_usec, 0); /* another upstream's is its own */
}

/* Rates from responses large enough; small ones time the server. */
static void test_transfer(void)
{
	struct link_facts facts;

	link_forget_all();
	link_note_transfer("a", LINK_TRANSFER_MIN_BYTES - 1, 1000);
	CU_ASSERT_EQUAL(link_facts_get("a").bytes_per_sec, 0);
	link_note_transfer("a", 400000, 0);
	CU_ASSERT_EQUAL(link_facts_get("a").bytes_per_sec, 0);
	link_note_transfer("a", 400000, 160000); /* 20 Mbit/s */
	facts = link_facts_get("a");
	CU_ASSERT_EQUAL(facts.bytes_per_sec, 2500000);
	CU_ASSERT_EQUAL(link_transfer_usec(&facts, 400000), 160000);
	CU_ASSERT_EQUAL(link_transfer_usec(&facts, 0), 0);
	link_note_transfer("a", 1000000, 100000); /* 10 MB/s: a quarter of the way there */
	CU_ASSERT_EQUAL(link_facts_get("a").bytes_per_sec, 2500000 + (10000000 - 2500000) / 4);
	/* no overflow at the extremes */
	link_note_transfer("b", UINT64_MAX, 1);
	facts = link_facts_get("b");
	CU_ASSERT_EQUAL(facts.bytes_per_sec, UINT64_MAX);
	CU_ASSERT_EQUAL(link_transfer_usec(&facts, UINT64_MAX), 1000000);
	link_note_transfer("c", UINT64_MAX, 1000000);
	CU_ASSERT_EQUAL(link_facts_get("c").bytes_per_sec, UINT64_MAX / 1000000 * 1000000);
}

/* A full table drops the upstream noted longest ago. */
static void test_table_full(void)
{
	char name[32];

	link_forget_all();
	for (unsigned int i = 0; i < LINK_UPSTREAMS_MAX; i++) {
		snprintf(name, sizeof(name), "u%u", i);
		link_note_round_trip(name, 1000 + i);
	}
	link_note_round_trip("u0", 1000); /* u0 noted again: u1 is now the oldest */
	link_note_round_trip("new", 5);
	CU_ASSERT_EQUAL(link_facts_get("new").round_trip_usec, 5);
	CU_ASSERT_EQUAL(link_facts_get("u0").round_trip_usec, 1000);
	CU_ASSERT_EQUAL(link_facts_get("u1").round_trip_usec, 0);
	CU_ASSERT_EQUAL(link_facts_get("u2").round_trip_usec, 1002);
	link_forget_all();
	CU_ASSERT_EQUAL(link_facts_get("new").round_trip_usec, 0);
}

const char unit_suite_name[] = "link";
const struct unit_test unit_tests[] = {
	{ "nothing measured", test_unknown },
	{ "the round trip's moving average", test_round_trip_average },
	{ "the transfer rate", test_transfer },
	{ "a full table forgets the oldest", test_table_full },
	{ NULL, NULL },
};
