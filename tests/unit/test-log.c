/* SPDX-License-Identifier: MIT */
/* Unit tests for common/log. */
#include "config.h"
#include "unit.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static char captured[LOG_LINE_MAX + 16];
static enum log_level captured_level;
static int captured_count;

static void capture_sink(enum log_level level, const char *line, void *context)
{
	(void)context;
	captured_level = level;
	captured_count++;
	strcpy(captured, line);
}

static int suite_reset(void)
{
	log_set_sink(capture_sink, NULL);
	log_set_level(LOG_LEVEL_INFO);
	captured_count = 0;
	captured[0] = '\0';
	return 0;
}

static void test_level_filter(void)
{
	suite_reset();
	log_debug("hidden %d", 1);
	CU_ASSERT_EQUAL(captured_count, 0);
	log_info("shown %d", 2);
	CU_ASSERT_EQUAL(captured_count, 1);
	CU_ASSERT_STRING_EQUAL(captured, "shown 2");
	CU_ASSERT_EQUAL(captured_level, LOG_LEVEL_INFO);
	log_set_level(LOG_LEVEL_ERROR);
	log_warning("dropped");
	CU_ASSERT_EQUAL(captured_count, 1);
	log_error("kept");
	CU_ASSERT_EQUAL(captured_count, 2);
	CU_ASSERT_EQUAL(captured_level, LOG_LEVEL_ERROR);
}

static void test_level_parse(void)
{
	enum log_level level;

	CU_ASSERT_EQUAL(log_level_parse("debug", &level), 0);
	CU_ASSERT_EQUAL(level, LOG_LEVEL_DEBUG);
	CU_ASSERT_EQUAL(log_level_parse("WARNING", &level), 0);
	CU_ASSERT_EQUAL(level, LOG_LEVEL_WARNING);
	CU_ASSERT_EQUAL(log_level_parse("error", &level), 0);
	CU_ASSERT_EQUAL(level, LOG_LEVEL_ERROR);
	CU_ASSERT_EQUAL(log_level_parse("verbose", &level), -1);
	CU_ASSERT_EQUAL(log_level_parse("", &level), -1);
	CU_ASSERT_STRING_EQUAL(log_level_name(LOG_LEVEL_INFO), "info");
}

static void test_escape_control_bytes(void)
{
	suite_reset();
	log_info("user %s", "evil\r\nimapcached: error: forged\x1b[0m\xff");
	CU_ASSERT_PTR_NULL(strchr(captured, '\n'));
	CU_ASSERT_PTR_NULL(strchr(captured, '\r'));
	CU_ASSERT_STRING_EQUAL(captured,
		"user evil\\x0d\\x0aimapcached: error: forged\\x1b[0m\\xff");
}

static void test_escape_truncates_whole_escapes(void)
{
	char out[8];
	int truncated;

	CU_ASSERT_EQUAL(log_escape(out, sizeof(out), "ab\ncd", &truncated), 7);
	CU_ASSERT_STRING_EQUAL(out, "ab\\x0ac");
	CU_ASSERT_TRUE(truncated);
	CU_ASSERT_EQUAL(log_escape(out, sizeof(out), "abc", &truncated), 3);
	CU_ASSERT_FALSE(truncated);
	/* An escape that would not fit whole is left out, not cut. */
	CU_ASSERT_EQUAL(log_escape(out, 6, "abc\n", &truncated), 3);
	CU_ASSERT_STRING_EQUAL(out, "abc");
	CU_ASSERT_TRUE(truncated);
}

static void test_long_line_is_cut_and_marked(void)
{
	static char big[LOG_LINE_MAX * 2];

	suite_reset();
	memset(big, 'x', sizeof(big) - 1);
	log_info("%s", big);
	CU_ASSERT_EQUAL(strlen(captured), LOG_LINE_MAX - 1);
	CU_ASSERT_STRING_EQUAL(captured + LOG_LINE_MAX - 4, "...");

	/* Escaping alone can push a line past the limit too. */
	memset(big, '\n', LOG_LINE_MAX / 2);
	big[LOG_LINE_MAX / 2] = '\0';
	log_info("%s", big);
	CU_ASSERT(strlen(captured) < LOG_LINE_MAX);
	CU_ASSERT_STRING_EQUAL(captured + strlen(captured) - 3, "...");
}

/* A socket of type bound at path; -1 if it cannot be made. */
static int bind_unix(const char *path, int type)
{
	struct sockaddr_un address = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, type, 0);

	snprintf(address.sun_path, sizeof(address.sun_path), "%s", path);
	if (fd >= 0 && bind(fd, (struct sockaddr *)&address, sizeof(address)) == 0 &&
	    (type != SOCK_STREAM || listen(fd, 1) == 0))
		return fd;
	if (fd >= 0)
		close(fd);
	return -1;
}

static void test_syslog_available(void)
{
	char dir[] = "/tmp/test-log-XXXXXX";
	char path[256];
	int fd;

	CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/log", dir);
	CU_ASSERT_FALSE(log_syslog_available(path)); /* nothing there */
	fd = bind_unix(path, SOCK_DGRAM);
	CU_ASSERT_FATAL(fd >= 0);
	CU_ASSERT_TRUE(log_syslog_available(path));
	close(fd);
	CU_ASSERT_FALSE(log_syslog_available(path)); /* the socket file of a syslog daemon gone */
	unlink(path);
	fd = bind_unix(path, SOCK_STREAM);
	CU_ASSERT_FATAL(fd >= 0);
	CU_ASSERT_TRUE(log_syslog_available(path)); /* as rsyslog's stream socket */
	close(fd);
	unlink(path);
	CU_ASSERT_FALSE(log_syslog_available("/tmp/a-path-longer-than-sun_path-can-hold/"
					      "0123456789012345678901234567890123456789012345678901234567890123456789"));
	rmdir(dir);
}

const char unit_suite_name[] = "log";
const struct unit_test unit_tests[] = {
	{ "level filter", test_level_filter },
	{ "level parse", test_level_parse },
	{ "escape control bytes", test_escape_control_bytes },
	{ "escape truncates whole escapes", test_escape_truncates_whole_escapes },
	{ "long line is cut and marked", test_long_line_is_cut_and_marked },
	{ "is a syslog daemon there", test_syslog_available },
	{ NULL, NULL },
};
