/* SPDX-License-Identifier: MIT */
/* unit: the shared CUnit main; each test program defines its suite. */
#ifndef IMAPCACHE_UNIT_H
#define IMAPCACHE_UNIT_H

#include <CUnit/CUnit.h>

struct unit_test {
	const char *name;
	CU_TestFunc function;
};

/* Each test program defines this: its suite's name, and its tests ending
   with { NULL, NULL }. */
extern const char unit_suite_name[];
extern const struct unit_test unit_tests[];

/* Optional: defined by a program that needs set-up around the suite. */
int unit_suite_init(void) __attribute__((weak));
int unit_suite_cleanup(void) __attribute__((weak));

#endif
