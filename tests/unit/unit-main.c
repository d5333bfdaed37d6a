/* SPDX-License-Identifier: MIT */
/* unit-main: runs one program's CUnit suite; exits 1 on any failure. */
#include "config.h"
#include "unit.h"

#include <CUnit/Basic.h>
#include <stdio.h>

int main(void)
{
	CU_pSuite suite;
	unsigned int failures;

	if (CU_initialize_registry() != CUE_SUCCESS)
		return 2;
	suite = CU_add_suite(unit_suite_name, unit_suite_init, unit_suite_cleanup);
	if (suite == NULL)
		return 2;
	for (const struct unit_test *test = unit_tests; test->name != NULL; test++) {
		if (CU_add_test(suite, test->name, test->function) == NULL)
			return 2;
	}
	CU_basic_set_mode(CU_BRM_VERBOSE);
	if (CU_basic_run_tests() != CUE_SUCCESS)
		return 2;
	failures = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
	if (CU_get_number_of_tests_run() == 0) {
		fprintf(stderr, "%s: no test ran\n", unit_suite_name);
		failures++;
	}
	CU_cleanup_registry();
	return failures == 0 ? 0 : 1;
}
