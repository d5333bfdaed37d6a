/* SPDX-License-Identifier: MIT */
/* Unit tests for common/conf: values, defaults, user routing and every kind of error. */
#include "config.h"
#include "unit.h"
#include "conf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define UPSTREAM "upstreams = ( { name = \"u\"; host = \"imap.example.com\"; } );\n"

/* Loads text that must be valid. */
static struct conf *load_good(const char *text)
{
	char *errors = NULL;
	struct conf *conf = conf_load_string(text, "test.conf", &errors);

	if (conf == NULL)
		fprintf(stderr, "unexpected errors:\n%s", errors);
	CU_ASSERT_PTR_NOT_NULL(conf);
	CU_ASSERT_PTR_NULL(errors);
	free(errors);
	return conf;
}

/* Loads text that must be refused with exactly the expected messages. */
static void expect_errors(const char *text, const char *expected)
{
	char *errors = NULL;
	struct conf *conf = conf_load_string(text, "test.conf", &errors);

	CU_ASSERT_PTR_NULL(conf);
	CU_ASSERT_PTR_NOT_NULL_FATAL(errors);
	if (strcmp(errors, expected) != 0)
		fprintf(stderr, "\nexpected:\n%sgot:\n%s", expected, errors);
	CU_ASSERT_STRING_EQUAL(errors, expected);
	free(errors);
	conf_unref(&conf);
}

static void test_defaults(void)
{
	struct conf *conf = load_good(UPSTREAM);

	CU_ASSERT_EQUAL_FATAL(conf->listeners_count, 1);
	CU_ASSERT_STRING_EQUAL(conf->listeners[0].address, "127.0.0.1");
	CU_ASSERT_EQUAL(conf->listeners[0].port, 1143);
	CU_ASSERT_EQUAL(conf->listeners[0].tls, CONF_TLS_NONE);
	CU_ASSERT_TRUE(conf->listeners[0].loopback);
	CU_ASSERT_EQUAL_FATAL(conf->upstreams_count, 1);
	CU_ASSERT_EQUAL(conf->upstreams[0].tls, CONF_TLS_IMPLICIT);
	CU_ASSERT_EQUAL(conf->upstreams[0].port, 993);
	CU_ASSERT_TRUE(conf->upstreams[0].verify);
	CU_ASSERT_PTR_NULL(conf->user);
	CU_ASSERT_PTR_NULL(conf->upstreams[0].ca_file);
	CU_ASSERT_PTR_EQUAL(conf->default_upstream, &conf->upstreams[0]);
	CU_ASSERT_STRING_EQUAL(conf->cache_dir, "/var/cache/imapcached");
	CU_ASSERT_STRING_EQUAL(conf->control_socket, "/run/imapcached/control");
	CU_ASSERT_EQUAL(conf->cache_body_budget, 256 << 20);
	CU_ASSERT_EQUAL(conf->cache_body_max_size, 4 << 20);
	CU_ASSERT(conf->cache_body_max_size >= 2018482); /* the benchmark corpus's largest message */
	CU_ASSERT_EQUAL(conf->cache_prefetch, CONF_PREFETCH_HEADERS);
	CU_ASSERT_EQUAL(conf->cache_keyword_searches, CONF_KEYWORD_SEARCHES_AUTO);
	CU_ASSERT_EQUAL(conf->log_level, LOG_LEVEL_INFO);
	CU_ASSERT_EQUAL(conf->pool_size, 4);
	CU_ASSERT_EQUAL(conf->timeout_idle, 1800);
	CU_ASSERT_EQUAL(conf->timeout_upstream_command, 300);
	CU_ASSERT_EQUAL(conf->timeout_preauth, 60);
	CU_ASSERT_EQUAL(conf->timeout_shutdown, 30);
	CU_ASSERT_EQUAL(conf->timeout_literal, 60);
	CU_ASSERT_EQUAL(conf->limit_line, 64 * 1024);
	CU_ASSERT_EQUAL(conf->limit_sessions, 1024);
	CU_ASSERT_EQUAL(conf->limit_sessions_per_account, 20);
	CU_ASSERT_STRING_EQUAL(conf->path, "test.conf");
	conf_unref(&conf);
	CU_ASSERT_PTR_NULL(conf);
}

static void test_issue_example(void)
{
	struct conf *conf = load_good(
		"listen = ( { address = \"127.0.0.1\"; port = 1143; tls = \"starttls\";\n"
		"             cert = \"/etc/c.pem\"; key = \"/etc/k.pem\"; },\n"
		"           { address = \"::1\"; port = 0; } );\n"
		"upstreams = ( { name = \"example\"; host = \"imap.example.com\"; port = 993; tls = \"implicit\";\n"
		"                ca_file = \"/etc/ca.pem\"; verify = true; users = [ \"*@example.com\" ]; } );\n"
		"cache = { dir = \"/var/cache/imapcached\"; body_budget = \"1G\"; body_max_size = \"512K\";"
		" prefetch = \"full\"; keyword_searches = \"always\"; };\n"
		"log = { level = \"debug\"; };\n"
		"user = \"imapcached\";\n"
		"pool = { size = 8; idle_timeout = 60; max_age = 120; };\n"
		"timeouts = { preauth = 5; idle = 600; upstream_connect = 10; upstream_command = 45; shutdown = 2; "
		"literal = 7; };\n"
		"limits = { line = \"128K\"; literal_preauth = 4096; literal = \"32M\"; sessions = 50; "
		"sessions_per_account = 5; };\n");

	CU_ASSERT_EQUAL_FATAL(conf->listeners_count, 2);
	CU_ASSERT_EQUAL(conf->listeners[0].tls, CONF_TLS_STARTTLS);
	CU_ASSERT_STRING_EQUAL(conf->listeners[0].cert, "/etc/c.pem");
	CU_ASSERT_STRING_EQUAL(conf->listeners[0].key, "/etc/k.pem");
	CU_ASSERT_EQUAL(conf->listeners[0].line, 1);
	CU_ASSERT_STRING_EQUAL(conf->listeners[1].address, "::1");
	CU_ASSERT_EQUAL(conf->listeners[1].port, 0);
	CU_ASSERT_TRUE(conf->listeners[1].loopback);
	CU_ASSERT_EQUAL(conf->listeners[1].line, 3);
	CU_ASSERT_STRING_EQUAL(conf->upstreams[0].name, "example");
	CU_ASSERT_STRING_EQUAL(conf->upstreams[0].ca_file, "/etc/ca.pem");
	CU_ASSERT_EQUAL_FATAL(conf->upstreams[0].users_count, 1);
	CU_ASSERT_STRING_EQUAL(conf->upstreams[0].users[0], "*@example.com");
	CU_ASSERT_PTR_NULL(conf->default_upstream);
	CU_ASSERT_EQUAL(conf->cache_body_budget, 1ULL << 30);
	CU_ASSERT_EQUAL(conf->cache_body_max_size, 512 * 1024);
	CU_ASSERT_EQUAL(conf->cache_prefetch, CONF_PREFETCH_FULL);
	CU_ASSERT_EQUAL(conf->cache_keyword_searches, CONF_KEYWORD_SEARCHES_ALWAYS);
	CU_ASSERT_EQUAL(conf->log_level, LOG_LEVEL_DEBUG);
	CU_ASSERT_STRING_EQUAL(conf->user, "imapcached");
	CU_ASSERT_EQUAL(conf->pool_size, 8);
	CU_ASSERT_EQUAL(conf->pool_idle_timeout, 60);
	CU_ASSERT_EQUAL(conf->pool_max_age, 120);
	CU_ASSERT_EQUAL(conf->timeout_preauth, 5);
	CU_ASSERT_EQUAL(conf->timeout_idle, 600);
	CU_ASSERT_EQUAL(conf->timeout_upstream_connect, 10);
	CU_ASSERT_EQUAL(conf->timeout_upstream_command, 45);
	CU_ASSERT_EQUAL(conf->timeout_shutdown, 2);
	CU_ASSERT_EQUAL(conf->timeout_literal, 7);
	CU_ASSERT_EQUAL(conf->limit_line, 128 * 1024);
	CU_ASSERT_EQUAL(conf->limit_literal_preauth, 4096);
	CU_ASSERT_EQUAL(conf->limit_literal, 32 << 20);
	CU_ASSERT_EQUAL(conf->limit_sessions, 50);
	CU_ASSERT_EQUAL(conf->limit_sessions_per_account, 5);
	conf_unref(&conf);
}

static void test_non_loopback_and_ports(void)
{
	struct conf *conf = load_good(
		"listen = ( { address = \"0.0.0.0\"; }, { address = \"127.8.9.10\"; port = 2; },\n"
		"           { address = \"::\"; port = 3; } );\n"
		"upstreams = ( { name = \"a\"; host = \"h\"; tls = \"starttls\"; },\n"
		"              { name = \"b\"; host = \"h\"; tls = \"none\"; users = [ \"x\" ]; } );\n");

	CU_ASSERT_FALSE(conf->listeners[0].loopback);
	CU_ASSERT_TRUE(conf->listeners[1].loopback);
	CU_ASSERT_FALSE(conf->listeners[2].loopback);
	CU_ASSERT_EQUAL(conf->upstreams[0].port, 143);
	CU_ASSERT_EQUAL(conf->upstreams[1].port, 143);
	conf_unref(&conf);
}

static void test_users_and_default_upstream(void)
{
	struct conf *conf = load_good(
		"upstreams = (\n"
		"  { name = \"corp\"; host = \"imap.corp\"; users = [ \"*@corp.example\", \"admin\" ]; },\n"
		"  { name = \"other\"; host = \"imap.other\"; },\n"
		"  { name = \"wide\"; host = \"imap.wide\"; users = [ \"*@*.example\", \"user?\" ]; }\n"
		");\n");

	CU_ASSERT_PTR_EQUAL(conf->default_upstream, &conf->upstreams[1]);
	CU_ASSERT_PTR_EQUAL(conf_upstream_for_user(conf, "alice@corp.example"), &conf->upstreams[0]);
	CU_ASSERT_PTR_EQUAL(conf_upstream_for_user(conf, "Alice@CORP.Example"), &conf->upstreams[0]);
	CU_ASSERT_PTR_EQUAL(conf_upstream_for_user(conf, "admin"), &conf->upstreams[0]);
	/* The first match in file order wins over a later, wider pattern. */
	CU_ASSERT_PTR_EQUAL(conf_upstream_for_user(conf, "bob@mail.example"), &conf->upstreams[2]);
	CU_ASSERT_PTR_EQUAL(conf_upstream_for_user(conf, "user7"), &conf->upstreams[2]);
	CU_ASSERT_PTR_EQUAL(conf_upstream_for_user(conf, "user77"), &conf->upstreams[1]);
	CU_ASSERT_PTR_EQUAL(conf_upstream_for_user(conf, "nobody@elsewhere.org"), &conf->upstreams[1]);
	conf_unref(&conf);

	conf = load_good("upstreams = ( { name = \"a\"; host = \"h\"; users = [ \"*@a.example\" ]; } );\n");
	CU_ASSERT_PTR_NULL(conf->default_upstream);
	CU_ASSERT_PTR_NULL(conf_upstream_for_user(conf, "b@b.example"));
	CU_ASSERT_PTR_EQUAL(conf_upstream_for_user(conf, "b@a.example"), &conf->upstreams[0]);
	conf_unref(&conf);
}

static void test_pool_shorthand(void)
{
	struct conf *conf = load_good(UPSTREAM "pool = 0;\n");

	CU_ASSERT_EQUAL(conf->pool_size, 0);
	conf_unref(&conf);
	expect_errors(UPSTREAM "pool = \"off\";\n",
		      "test.conf:2: pool: must be a group { size = ...; idle_timeout = ...; } or an integer "
		      "(0 turns pooling off), not a string\n");
}

/* The ranges imapcached.conf(5) gives: shutdown alone may be 0 (BYE at once). */
static void test_timeout_ranges(void)
{
	struct conf *conf = load_good(UPSTREAM "timeouts = { shutdown = 0; preauth = 604800; };\n");

	CU_ASSERT_EQUAL(conf->timeout_shutdown, 0);
	CU_ASSERT_EQUAL(conf->timeout_preauth, 604800);
	conf_unref(&conf);
	expect_errors(UPSTREAM "timeouts = { preauth = 0; upstream_connect = 0; shutdown = 604801; };\n",
		      "test.conf:2: timeouts.preauth: must be between 1 and 604800, not 0\n"
		      "test.conf:2: timeouts.upstream_connect: must be between 1 and 604800, not 0\n"
		      "test.conf:2: timeouts.shutdown: must be between 0 and 604800, not 604801\n");
}

static void test_unknown_keys(void)
{
	expect_errors(UPSTREAM "\nlisten = ( { adress = \"127.0.0.1\"; } );\n",
		      "test.conf:3: listen[0].adress: unknown key (known here: address, port, tls, cert, key)\n");
	expect_errors(UPSTREAM "cahce = { dir = \"/tmp\"; };\n",
		      "test.conf:2: cahce: unknown key (known here: listen, upstreams, cache, control, log, pool, "
		      "timeouts, limits, user)\n");
	expect_errors("upstreams = ( { name = \"u\"; host = \"h\";\n   password = \"x\"; } );\n",
		      "test.conf:2: upstreams[0].password: unknown key (known here: name, host, port, tls, "
		      "ca_file, verify, users)\n");
}

static void test_wrong_types(void)
{
	expect_errors(UPSTREAM "listen = ( { port = \"1143\"; } );\n",
		      "test.conf:2: listen[0].port: must be an integer, not a string\n");
	expect_errors("upstreams = ( { name = \"u\"; host = \"h\"; verify = \"yes\"; } );\n",
		      "test.conf:1: upstreams[0].verify: must be a boolean, not a string\n");
	expect_errors(UPSTREAM "log = \"debug\";\n",
		      "test.conf:2: log: must be a group { ... }, not a string\n");
	expect_errors("upstreams = ( { name = \"u\"; host = \"h\"; users = \"*\"; } );\n",
		      "test.conf:1: upstreams[0].users: must be an array of patterns [ \"*@example.com\", ... ], "
		      "not a string\n");
	expect_errors(UPSTREAM "listen = 1143;\n",
		      "test.conf:2: listen: must be a list of listeners ( { ... }, ... ), not an integer\n");
	expect_errors(UPSTREAM "timeouts = { idle = 1.5; };\n",
		      "test.conf:2: timeouts.idle: must be an integer, not a floating-point number\n");
}

static void test_bad_values(void)
{
	expect_errors(UPSTREAM "listen = ( { port = 70000; } );\n",
		      "test.conf:2: listen[0].port: must be between 0 and 65535, not 70000\n");
	expect_errors(UPSTREAM "listen = ( { address = \"localhost\"; } );\n",
		      "test.conf:2: listen[0].address: \"localhost\" is not a numeric IPv4 or IPv6 address "
		      "(use 127.0.0.1, ::1, 0.0.0.0 or :: for all)\n");
	expect_errors(UPSTREAM "listen = ( { tls = \"ssl\"; } );\n",
		      "test.conf:2: listen[0].tls: must be \"none\", \"starttls\" or \"implicit\", not \"ssl\"\n");
	expect_errors(UPSTREAM "listen = ( { tls = \"starttls\"; cert = \"/c.pem\"; } );\n",
		      "test.conf:2: listen[0]: tls = \"starttls\" needs both cert and key\n");
	expect_errors(UPSTREAM "listen = ( { cert = \"/c.pem\"; key = \"/k.pem\"; } );\n",
		      "test.conf:2: listen[0]: cert and key are used only with tls = \"starttls\" or "
		      "\"implicit\"; this listener has tls = \"none\"\n");
	expect_errors(UPSTREAM "log = { level = \"loud\"; };\n",
		      "test.conf:2: log.level: must be \"debug\", \"info\", \"warning\" or \"error\", not \"loud\"\n");
	expect_errors(UPSTREAM "cache = { dir = \"relative/dir\"; };\n",
		      "test.conf:2: cache.dir: must be an absolute path, not \"relative/dir\"\n");
	expect_errors(UPSTREAM "control = { socket = \"control\"; };\n",
		      "test.conf:2: control.socket: must be an absolute path, not \"control\"\n");
	expect_errors(UPSTREAM "control = { socket = \"/run/x\"; sockets = 1; };\n",
		      "test.conf:2: control.sockets: unknown key (known here: socket)\n");
	expect_errors(UPSTREAM "cache = { body_budget = \"12X\"; };\n",
		      "test.conf:2: cache.body_budget: \"12X\" is not a size (write bytes, or a number ending "
		      "in K, M or G)\n");
	expect_errors(UPSTREAM "cache = { prefetch = \"sometimes\"; };\n",
		      "test.conf:2: cache.prefetch: must be \"off\", \"headers\" or \"full\", not \"sometimes\"\n");
	expect_errors(UPSTREAM "cache = { prefetch = true; };\n",
		      "test.conf:2: cache.prefetch: must be a string, not a boolean\n");
	expect_errors(UPSTREAM "cache = { keyword_searches = \"often\"; };\n",
		      "test.conf:2: cache.keyword_searches: must be \"auto\", \"always\" or \"never\", not \"often\"\n");
	expect_errors(UPSTREAM "cache = { body_max_size = -1; };\n",
		      "test.conf:2: cache.body_max_size: must not be negative\n");
	expect_errors(UPSTREAM "cache = { body_max_size = \"4MB\"; };\n",
		      "test.conf:2: cache.body_max_size: \"4MB\" is not a size (write bytes, or a number ending "
		      "in K, M or G)\n");
	expect_errors(UPSTREAM "limits = { line = 100; };\n",
		      "test.conf:2: limits.line: must be between 8192 and 16777216 bytes, not 100\n");
	expect_errors(UPSTREAM "timeouts = { idle = 0; };\n",
		      "test.conf:2: timeouts.idle: must be between 1 and 604800, not 0\n");
	expect_errors(UPSTREAM "timeouts = { literal = 0; };\n",
		      "test.conf:2: timeouts.literal: must be between 1 and 604800, not 0\n");
	expect_errors(UPSTREAM "timeouts = { literal = \"2\"; };\n",
		      "test.conf:2: timeouts.literal: must be an integer, not a string\n");
	expect_errors(UPSTREAM "cache = { dir = \"\"; };\n",
		      "test.conf:2: cache.dir: must not be empty\n");
	expect_errors(UPSTREAM "user = \"\";\n", "test.conf:2: user: must not be empty\n");
	expect_errors(UPSTREAM "user = 0;\n", "test.conf:2: user: must be a string, not an integer\n");
	expect_errors(UPSTREAM "listen = ( { port = 1; }, { port = 1; } );\n",
		      "test.conf:2: listen[1]: 127.0.0.1 port 1 is already used by the listener on line 2\n");
	expect_errors(UPSTREAM "listen = ( );\n", "test.conf:2: listen: needs at least one listener\n");
}

/* A value quoted in a message keeps it one line: its control characters
   are escaped (found by fuzz-config: a string with newlines split one
   error into several lines). */
static void test_errors_stay_one_line_each(void)
{
	expect_errors(UPSTREAM "log = { level = \"lo\\nud\\t\"; };\n",
		      "test.conf:2: log.level: must be \"debug\", \"info\", \"warning\" or \"error\", "
		      "not \"lo\\nud\\t\"\n");
}

static void test_upstream_errors(void)
{
	expect_errors("log = { level = \"info\"; };\n",
		      "test.conf: no upstreams: add upstreams = ( { name = ...; host = ...; } ); so that "
		      "imapcached knows which server to log in to\n");
	expect_errors("upstreams = ( { host = \"h\"; } );\n",
		      "test.conf:1: upstreams[0]: needs a name (used in logs and cache file names)\n");
	expect_errors("upstreams = (\n { name = \"a\"; host = \"h\"; },\n { name = \"b\"; host = \"h\"; } );\n",
		      "test.conf:3: upstreams[1]: has no users, and so does the upstream on line 2: only one "
		      "upstream can be the default; give the others users patterns\n");
	expect_errors("upstreams = (\n { name = \"a\"; host = \"h\"; users = [\"x\"]; },\n"
		      " { name = \"a\"; host = \"h\"; } );\n",
		      "test.conf:3: upstreams[1]: name \"a\" is already used by the upstream on line 2\n");
	expect_errors("upstreams = ( { name = \"a\"; host = \"h\"; users = [ ]; } );\n",
		      "test.conf:1: upstreams[0].users: is empty, so no user would reach this upstream; leave "
		      "users out to make it the default upstream\n");
	expect_errors("upstreams = ( { name = \"a\"; host = \"h\"; users = [ \"\" ]; } );\n",
		      "test.conf:1: upstreams[0].users[0]: an empty pattern matches no user\n");
	expect_errors("upstreams = ( { name = \"a\"; host = \"h\"; port = 0; } );\n",
		      "test.conf:1: upstreams[0].port: must be between 1 and 65535, not 0\n");
	expect_errors("upstreams = ( { name = \"a\"; host = \"h\"; tls = \"none\"; verify = false; } );\n",
		      "test.conf:1: upstreams[0]: ca_file and verify apply only with tls = \"starttls\" or "
		      "\"implicit\"\n");
}

static void test_several_errors_reported_together(void)
{
	expect_errors(UPSTREAM "listen = ( { port = -1; tls = \"x\"; } );\nlog = { level = 3; };\n",
		      "test.conf:2: listen[0].port: must be between 0 and 65535, not -1\n"
		      "test.conf:2: listen[0].tls: must be \"none\", \"starttls\" or \"implicit\", not \"x\"\n"
		      "test.conf:3: log.level: must be a string, not an integer\n");
}

static void test_syntax_error(void)
{
	char *errors = NULL;
	struct conf *conf = conf_load_string(UPSTREAM "\nlisten = ( { port = ; } );\n", "test.conf", &errors);

	CU_ASSERT_PTR_NULL(conf);
	CU_ASSERT_PTR_NOT_NULL_FATAL(errors);
	CU_ASSERT_STRING_EQUAL(errors, "test.conf:3: syntax error\n");
	free(errors);

	conf = conf_load_string(UPSTREAM "log = { level = \"a\"; level = \"b\"; };\n", "test.conf", &errors);
	CU_ASSERT_PTR_NULL(conf);
	CU_ASSERT_PTR_NOT_NULL_FATAL(errors);
	CU_ASSERT_STRING_EQUAL(errors, "test.conf:2: duplicate setting name\n");
	free(errors);

	/* A size with a suffix is a string: unquoted, libconfig sees a number
	   then a stray letter, and the message says what to write. */
	expect_errors(UPSTREAM "limits = {\n  line = 64K;\n};\n",
		      "test.conf:3: syntax error (a size with a suffix is a string: write \"64K\" in "
		      "double quotes)\n");
	expect_errors(UPSTREAM "cache = { body_budget = 2g; };\n",
		      "test.conf:2: syntax error (a size with a suffix is a string: write \"2g\" in "
		      "double quotes)\n");
	expect_errors(UPSTREAM "log = { level = \"64K\" x; };\n", "test.conf:2: syntax error\n");
}

static void test_files(void)
{
	char path[] = "/tmp/test-conf-XXXXXX";
	int fd = mkstemp(path);
	char *errors = NULL;
	struct conf *conf;
	static const char text[] = UPSTREAM "\nlog = { level = \"nope\"; };\n";
	char expected[256];

	CU_ASSERT_FATAL(fd >= 0);
	CU_ASSERT_EQUAL(write(fd, text, sizeof(text) - 1), (ssize_t)sizeof(text) - 1);
	close(fd);
	conf = conf_load(path, &errors);
	CU_ASSERT_PTR_NULL(conf);
	snprintf(expected, sizeof(expected),
		 "%s:3: log.level: must be \"debug\", \"info\", \"warning\" or \"error\", not \"nope\"\n", path);
	CU_ASSERT_STRING_EQUAL(errors, expected);
	free(errors);
	unlink(path);

	conf = conf_load("/nonexistent/imapcached.conf", &errors);
	CU_ASSERT_PTR_NULL(conf);
	CU_ASSERT_STRING_EQUAL(errors, "/nonexistent/imapcached.conf: cannot read: No such file or directory\n");
	free(errors);
}

/* Writes text to dir/name. */
static void write_file(const char *dir, const char *name, const char *text)
{
	char path[512];
	FILE *file;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	file = fopen(path, "w");
	CU_ASSERT_PTR_NOT_NULL_FATAL(file);
	fputs(text, file);
	fclose(file);
}

static void test_include_reports_the_included_file(void)
{
	char dir[] = "/tmp/test-conf-include-XXXXXX";
	char main_path[512], expected[1024];
	char *errors = NULL;
	struct conf *conf;

	CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
	write_file(dir, "main.conf", "@include \"upstreams.conf\"\nlog = { level = \"info\"; };\n");
	write_file(dir, "upstreams.conf", "upstreams = ( { name = \"a\"; host = \"h\";\n  port = 0; } );\n");
	snprintf(main_path, sizeof(main_path), "%s/main.conf", dir);
	/* Relative to the including file, wherever the daemon runs from. */
	CU_ASSERT_EQUAL(chdir("/"), 0);
	conf = conf_load(main_path, &errors);
	CU_ASSERT_PTR_NULL(conf);
	snprintf(expected, sizeof(expected),
		 "%s/upstreams.conf:2: upstreams[0].port: must be between 1 and 65535, not 0\n", dir);
	CU_ASSERT_PTR_NOT_NULL_FATAL(errors);
	CU_ASSERT_STRING_EQUAL(errors, expected);
	free(errors);

	write_file(dir, "upstreams.conf", "upstreams = ( { name = \"a\";\n host = } );\n");
	conf = conf_load(main_path, &errors);
	CU_ASSERT_PTR_NULL(conf);
	snprintf(expected, sizeof(expected), "%s/upstreams.conf:2: syntax error\n", dir);
	CU_ASSERT_PTR_NOT_NULL_FATAL(errors);
	CU_ASSERT_STRING_EQUAL(errors, expected);
	free(errors);

	write_file(dir, "upstreams.conf", "upstreams = ( { name = \"a\"; host = \"h\"; } );\n");
	conf = conf_load(main_path, &errors);
	CU_ASSERT_PTR_NOT_NULL(conf);
	CU_ASSERT_EQUAL(conf != NULL ? conf->upstreams_count : 0, 1);
	conf_unref(&conf);
	snprintf(expected, sizeof(expected), "rm -r '%s'", dir);
	CU_ASSERT_EQUAL(system(expected), 0);
}

/* Loads dir/name, which must be valid. */
static struct conf *load_good_file(const char *dir, const char *name)
{
	char path[512];
	char *errors = NULL;
	struct conf *conf;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	conf = conf_load(path, &errors);
	if (conf == NULL)
		fprintf(stderr, "unexpected errors:\n%s", errors);
	CU_ASSERT_PTR_NOT_NULL(conf);
	CU_ASSERT_PTR_NULL(errors);
	free(errors);
	return conf;
}

/* Loads dir/name, which must be refused with expected_template, where
   each "DIR" stands for dir. */
static void expect_file_errors(const char *dir, const char *name, const char *expected_template)
{
	char path[512], expected[2048] = "";
	char *errors = NULL;
	struct conf *conf;
	const char *at;

	while ((at = strstr(expected_template, "DIR")) != NULL) {
		strncat(expected, expected_template, (size_t)(at - expected_template));
		strcat(expected, dir);
		expected_template = at + 3;
	}
	strcat(expected, expected_template);
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	conf = conf_load(path, &errors);
	CU_ASSERT_PTR_NULL(conf);
	conf_unref(&conf);
	CU_ASSERT_PTR_NOT_NULL_FATAL(errors);
	if (strcmp(errors, expected) != 0)
		fprintf(stderr, "\nexpected:\n%sgot:\n%s", expected, errors);
	CU_ASSERT_STRING_EQUAL(errors, expected);
	free(errors);
}

static void test_include_absolute_and_relative(void)
{
	char dir[] = "/tmp/test-conf-include-XXXXXX";
	char text[1024];
	struct conf *conf;

	CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
	CU_ASSERT_EQUAL(chdir("/"), 0);
	CU_ASSERT_EQUAL(mkdir(strcat(strcpy(text, dir), "/sub"), 0700), 0);
	write_file(dir, "sub/upstreams.conf", "upstreams = ( { name = \"a\"; host = \"abs.example\"; } );\n"
		   "@include \"sub/log.conf\"\n");
	write_file(dir, "sub/log.conf", "log = { level = \"error\"; };\n");
	write_file(dir, "limits.conf", "limits = { sessions = 7; };");
	/* An absolute name as it is; relative names (in an included file
	   too) from the main file's directory; an included file's last line
	   needs no newline. */
	snprintf(text, sizeof(text), "@include \"%s/sub/upstreams.conf\"\n  @include \"limits.conf\" # why\n"
		 "pool = 2;\n", dir);
	write_file(dir, "main.conf", text);
	conf = load_good_file(dir, "main.conf");
	if (conf != NULL) {
		CU_ASSERT_STRING_EQUAL(conf->upstreams[0].host, "abs.example");
		CU_ASSERT_EQUAL(conf->log_level, LOG_LEVEL_ERROR);
		CU_ASSERT_EQUAL(conf->limit_sessions, 7);
		CU_ASSERT_EQUAL(conf->pool_size, 2);
	}
	conf_unref(&conf);

	/* Lines after an include are counted in their own file. */
	snprintf(text, sizeof(text), "@include \"%s/sub/upstreams.conf\"\n\npool = \"x\";\n", dir);
	write_file(dir, "main.conf", text);
	expect_file_errors(dir, "main.conf", "DIR/main.conf:3: pool: must be a group { size = ...; "
			   "idle_timeout = ...; } or an integer (0 turns pooling off), not a string\n");
	write_file(dir, "main.conf", "@include \"sub/upstreams.conf\"\n\npool = ;\n");
	expect_file_errors(dir, "main.conf", "DIR/main.conf:3: syntax error\n");

	/* A file that cannot be opened is named, as tried. */
	snprintf(text, sizeof(text), "pool = 1;\n@include \"%s/missing.conf\"\n", dir);
	write_file(dir, "main.conf", text);
	expect_file_errors(dir, "main.conf", "DIR/main.conf:2: cannot open include file "
			   "DIR/missing.conf: No such file or directory\n");
	write_file(dir, "main.conf", "@include \"sub/upstreams.conf\"\n");
	write_file(dir, "sub/upstreams.conf", "\n@include \"gone.conf\"\n");
	expect_file_errors(dir, "main.conf", "DIR/sub/upstreams.conf:2: cannot open include file "
			   "DIR/gone.conf: No such file or directory\n");
	write_file(dir, "main.conf", "@include \"main.conf\"\n");
	expect_file_errors(dir, "main.conf", "DIR/main.conf:1: @include nested more than 10 deep "
			   "(does a file include itself?)\n");
	/* Inside a comment @include is text; a comment opened in a string or
	   after # is none. */
	write_file(dir, "main.conf", "/*\n@include \"x.conf\"\n*/ upstreams = ( { name = \"a\"; host = \"h/*\"; } );"
		   " # /*\n@include \"sub/log.conf\"\n");
	conf = load_good_file(dir, "main.conf");
	CU_ASSERT(conf != NULL && strcmp(conf->upstreams[0].host, "h/*") == 0);
	CU_ASSERT(conf != NULL && conf->log_level == LOG_LEVEL_ERROR);
	conf_unref(&conf);

	snprintf(text, sizeof(text), "rm -r '%s'", dir);
	CU_ASSERT_EQUAL(system(text), 0);
}

static void test_example_config(void)
{
	const char *srcdir = getenv("top_srcdir");
	char path[4096];
	char *errors = NULL;
	struct conf *conf;

	snprintf(path, sizeof(path), "%s/conf/imapcached.conf", srcdir != NULL ? srcdir : ".");
	conf = conf_load(path, &errors);
	if (conf == NULL)
		fprintf(stderr, "%s", errors != NULL ? errors : "");
	CU_ASSERT_PTR_NOT_NULL_FATAL(conf);
	CU_ASSERT(conf->listeners_count >= 1);
	CU_ASSERT(conf->upstreams_count >= 1);
	CU_ASSERT_PTR_NOT_NULL(conf->default_upstream);
	conf_unref(&conf);
}

static void test_refcount_and_listener_equality(void)
{
	struct conf *a = load_good(UPSTREAM "listen = ( { port = 1; }, { port = 2; } );\n");
	struct conf *b = load_good(UPSTREAM "listen = ( { port = 1; }, { port = 2; } );\nlog = { level = \"error\"; };\n");
	struct conf *c = load_good(UPSTREAM "listen = ( { port = 2; }, { port = 1; } );\n");
	struct conf *keep;

	CU_ASSERT_TRUE(conf_listeners_equal(a, b));
	CU_ASSERT_FALSE(conf_listeners_equal(a, c));
	/* Where a bound listener finds its certificate after a reload. */
	CU_ASSERT_PTR_EQUAL(conf_listener_find(c, &a->listeners[0], 0), &c->listeners[1]);
	CU_ASSERT_PTR_EQUAL(conf_listener_find(b, &a->listeners[1], 1), &b->listeners[1]);
	CU_ASSERT_PTR_EQUAL(conf_listener_find(b, &a->listeners[1], 7), &b->listeners[1]);
	a->listeners[0].port = 3;
	CU_ASSERT_PTR_NULL(conf_listener_find(b, &a->listeners[0], 0));
	a->listeners[0].port = 1;
	a->listeners[0].tls = CONF_TLS_IMPLICIT;
	CU_ASSERT_PTR_NULL(conf_listener_find(b, &a->listeners[0], 0));
	a->listeners[0].tls = CONF_TLS_NONE;
	keep = a;
	conf_ref(a);
	conf_unref(&a);
	CU_ASSERT_PTR_NULL(a);
	CU_ASSERT_EQUAL(keep->listeners[1].port, 2); /* still alive: one reference left */
	conf_unref(&keep);
	conf_unref(&b);
	conf_unref(&c);
	conf_unref(&c); /* NULL is fine */
}

const char unit_suite_name[] = "conf";
const struct unit_test unit_tests[] = {
	{ "defaults", test_defaults },
	{ "the issue's example and every key", test_issue_example },
	{ "non-loopback listeners and upstream ports", test_non_loopback_and_ports },
	{ "users patterns and the default upstream", test_users_and_default_upstream },
	{ "pool shorthand", test_pool_shorthand },
	{ "timeout ranges", test_timeout_ranges },
	{ "unknown keys", test_unknown_keys },
	{ "wrong types", test_wrong_types },
	{ "bad values", test_bad_values },
	{ "upstream errors", test_upstream_errors },
	{ "several errors reported together", test_several_errors_reported_together },
	{ "syntax error", test_syntax_error },
	{ "files", test_files },
	{ "an @include'd file is named in its errors", test_include_reports_the_included_file },
	{ "@include with absolute and relative names", test_include_absolute_and_relative },
	{ "the example config", test_example_config },
	{ "refcount and listener equality", test_refcount_and_listener_equality },
	{ "errors stay one line each", test_errors_stay_one_line_each },
	{ NULL, NULL },
};
