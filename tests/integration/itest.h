/* SPDX-License-Identifier: MIT */
/* The reporting the C integration tests share: ok:/FAIL: lines, the summary line, the fixture's environment (header-only). */
#ifndef ITEST_H
#define ITEST_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

/* The exit status automake reads as a hard error: the fixture, not the code under test, failed. */
#define ITEST_EXIT_HARD_ERROR 99

static int itest_passed, itest_failed;

/* Counts one assertion and prints "ok: name", or "FAIL: name" followed by
   ": " and the printf-formatted details when format is not NULL. Call it
   through itest_check(). */
static inline void itest_report(const char *name, bool condition, const char *format, ...)
	__attribute__((format(printf, 3, 4)));
static inline void itest_report(const char *name, bool condition, const char *format, ...)
{
	if (condition) {
		itest_passed++;
		printf("ok: %s\n", name);
		return;
	}
	itest_failed++;
	printf("FAIL: %s", name);
	if (format != NULL) {
		va_list args;

		printf(": ");
		va_start(args, format);
		vprintf(format, args);
		va_end(args);
	}
	printf("\n");
}

/* One assertion: itest_check(name, condition, format or NULL, args...).
   The condition is evaluated before the details, which may read its result. */
#define itest_check(name, condition, ...) \
	do { \
		bool itest_check_ok_ = (condition); \
		itest_report(name, itest_check_ok_, __VA_ARGS__); \
	} while (0)

/* The value of the fixture's environment variable name; when it is not
   set, says so on stderr as program and exits ITEST_EXIT_HARD_ERROR. */
static inline const char *itest_env(const char *program, const char *name)
{
	const char *value = getenv(name);

	if (value == NULL) {
		fprintf(stderr, "%s: %s is not set: run under tests/integration/with-dovecot\n", program, name);
		exit(ITEST_EXIT_HARD_ERROR);
	}
	return value;
}

/* Prints "N passed, N failed" and returns the exit status: 1 on any failure. */
static inline int itest_summary(void)
{
	printf("%d passed, %d failed\n", itest_passed, itest_failed);
	return itest_failed == 0 ? 0 : 1;
}

#endif
