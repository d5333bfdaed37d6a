/* SPDX-License-Identifier: MIT */
/* conf: loads and validates imapcached.conf (libconfig) into a typed struct. */
#include "config.h"
#include "conf.h"

#include <arpa/inet.h>
#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <fnmatch.h>
#include <inttypes.h>
#include <libconfig.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CONF_DEFAULT_LISTEN_ADDRESS "127.0.0.1"
#define CONF_DEFAULT_LISTEN_PORT 1143 /* unprivileged, so no root is needed */
#define CONF_DEFAULT_CACHE_DIR "/var/cache/imapcached"
#define CONF_MAX_SOCKET_PATH 108 /* sizeof(sun_path) on Linux, with its NUL */
#define CONF_DEFAULT_CONTROL_SOCKET "/run/imapcached/control" /* under the unit's RuntimeDirectory */
#define CONF_DEFAULT_BODY_BUDGET (256ULL << 20) /* bodies of a few thousand messages */
#define CONF_DEFAULT_BODY_MAX_SIZE (4ULL << 20) /* holds the benchmark corpus's largest message, 2,018,482 bytes */
#define CONF_DEFAULT_POOL_SIZE 4 /* a client opens a few connections per account */
#define CONF_DEFAULT_POOL_IDLE 300 /* servers drop idle logins after 30 min; stay well below */
#define CONF_DEFAULT_POOL_MAX_AGE 3600 /* a password changed upstream stops working within the hour */
#define CONF_DEFAULT_TIMEOUT_PREAUTH 60 /* a client logs in within seconds of connecting */
#define CONF_DEFAULT_TIMEOUT_IDLE 1800 /* RFC 3501 5.4: autologout no sooner than 30 min */
#define CONF_DEFAULT_TIMEOUT_CONNECT 30 /* a reachable server answers well within this */
#define CONF_DEFAULT_TIMEOUT_UPSTREAM_COMMAND 300 /* a server silent this long with a command pending is gone */
#define CONF_DEFAULT_TIMEOUT_SHUTDOWN 30 /* systemd's stop timeout is 90 s */
#define CONF_DEFAULT_TIMEOUT_LITERAL 60 /* a live client sends some of a literal every few seconds */
#define CONF_DEFAULT_LIMIT_LINE (64 * 1024) /* RFC 7162 asks for at least 8 KiB */
#define CONF_DEFAULT_LIMIT_LITERAL_PREAUTH (8 * 1024) /* a user name or password */
#define CONF_DEFAULT_LIMIT_LITERAL (64ULL << 20) /* a large mail; literals are streamed */
#define CONF_DEFAULT_LIMIT_SESSIONS 1024 /* two descriptors each, within a 4096 fd limit */
/* a mail client opens up to 5 connections an account (Thunderbird); two
   devices twice that; one account may then not take all of the sessions */
#define CONF_DEFAULT_LIMIT_SESSIONS_PER_ACCOUNT 20
#define CONF_MIN_LIMIT_LINE 8192 /* RFC 7162 3.2.2: smaller breaks real clients */
#define CONF_MAX_SECONDS (7 * 24 * 3600) /* longer is a typo, not a wish */
#define CONF_PATH_MAX 256 /* "upstreams[3].users[12]" and the like */

#define CONF_MAX_INCLUDE_DEPTH 10 /* libconfig's own limit; deeper is a file including itself */
#define CONF_MAX_FILE_SIZE (1 << 20) /* a config is kilobytes: a megabyte is the wrong file */
#define CONF_INCLUDE_NAME_MAX 4096 /* PATH_MAX */

/* Where a run of lines of the text given to libconfig was written. */
struct conf_span {
	int first_line;                /* in that text, from 1 */
	int source_line;               /* the same line in file */
	char *file;                    /* the main file's name, or an included file's path as opened */
};

/* Collects the text and the messages of one load. libconfig 1.5 puts its
   include directory in front of absolute @include names too, so the
   loader does the includes itself: libconfig parses one text, every file
   in it, and spans map its lines back to the files. */
struct conf_loader {
	const char *name;
	const char *include_dir;       /* relative @include names start here; NULL: the working directory */
	char *text;                    /* NUL-terminated */
	size_t text_len;
	size_t text_size;
	int text_lines;                /* newlines in text */
	struct conf_span *spans;
	size_t spans_count;
	char *errors;
	size_t errors_len;
	unsigned int errors_count;
};

/* Where libconfig's text is between comments and strings, at a line's start. */
enum conf_lex_state {
	CONF_LEX_CODE,
	CONF_LEX_COMMENT,              /* inside a block comment */
	CONF_LEX_STRING,               /* inside a string that goes on past the line */
};

static const char *const conf_tls_names[] = {
	[CONF_TLS_NONE] = "none",
	[CONF_TLS_STARTTLS] = "starttls",
	[CONF_TLS_IMPLICIT] = "implicit",
};

static void *conf_xcalloc(size_t count, size_t size)
{
	void *mem = calloc(count == 0 ? 1 : count, size);

	if (mem == NULL)
		abort(); /* start-up or reload on an exhausted machine: nothing sane to do */
	return mem;
}

static char *conf_xstrdup(const char *text)
{
	char *copy = strdup(text);

	if (copy == NULL)
		abort();
	return copy;
}

/* Copies text into out (size bytes, NUL-terminated, cut if need be) with
   control characters written as \n, \r, \t or \xNN: a value quoted in a
   message (a string may hold any byte) must not break it into lines. */
static void conf_escape_controls(const char *text, char *out, size_t size)
{
	size_t len = 0;

	for (const unsigned char *p = (const unsigned char *)text; *p != '\0'; p++) {
		char piece[5] = { (char)*p, '\0' };

		if (*p == '\n' || *p == '\r' || *p == '\t')
			snprintf(piece, sizeof(piece), "\\%c", *p == '\n' ? 'n' : *p == '\r' ? 'r' : 't');
		else if (*p < 0x20 || *p == 0x7f)
			snprintf(piece, sizeof(piece), "\\x%02x", *p);
		if (len + strlen(piece) >= size)
			break;
		memcpy(out + len, piece, strlen(piece));
		len += strlen(piece);
	}
	out[len] = '\0';
}

/* Appends one formatted line to the loader's messages. */
static void conf_vreport_line(struct conf_loader *loader, const char *file, int line,
				const char *format, va_list args)
	__attribute__((format(printf, 4, 0)));
static void conf_vreport_line(struct conf_loader *loader, const char *file, int line,
				const char *format, va_list args)
{
	char message[1024];
	char full[1400];
	char shown[1400];
	size_t len;

	loader->errors_count++;
	if (loader->errors_count > CONF_MAX_ERRORS)
		return;
	vsnprintf(message, sizeof(message), format, args);
	if (loader->errors_count == CONF_MAX_ERRORS)
		snprintf(message, sizeof(message), "too many errors, stopping here");
	if (line > 0)
		snprintf(full, sizeof(full), "%s:%d: %s", file, line, message);
	else
		snprintf(full, sizeof(full), "%s: %s", file, message);
	conf_escape_controls(full, shown, sizeof(shown) - 1); /* room for the line end, even when cut */
	len = strlen(shown);
	shown[len++] = '\n';
	loader->errors = realloc(loader->errors, loader->errors_len + len + 1);
	if (loader->errors == NULL)
		abort();
	memcpy(loader->errors + loader->errors_len, shown, len);
	loader->errors_len += len;
	loader->errors[loader->errors_len] = '\0';
}

static void conf_report_line(struct conf_loader *loader, int line, const char *format, ...)
	__attribute__((format(printf, 3, 4)));
static void conf_report_line(struct conf_loader *loader, int line, const char *format, ...)
{
	va_list args;

	va_start(args, format);
	conf_vreport_line(loader, loader->name, line, format, args);
	va_end(args);
}

static void conf_report_in(struct conf_loader *loader, const char *file, int line,
			   const char *format, ...) __attribute__((format(printf, 4, 5)));
static void conf_report_in(struct conf_loader *loader, const char *file, int line,
			   const char *format, ...)
{
	va_list args;

	va_start(args, format);
	conf_vreport_line(loader, file, line, format, args);
	va_end(args);
}

/* The file and line that line of libconfig's text was written on; line
   0 (unknown) is the main file's. */
static const char *conf_source_of(const struct conf_loader *loader, int line, int *source_line_r)
{
	const struct conf_span *found = NULL;

	for (size_t i = 0; i < loader->spans_count && loader->spans[i].first_line <= line; i++)
		found = &loader->spans[i];
	if (line <= 0 || found == NULL) {
		*source_line_r = 0;
		return loader->name;
	}
	*source_line_r = found->source_line + (line - found->first_line);
	return found->file;
}

/* The line of libconfig's text a setting was written on, or its nearest parent's. */
static int conf_setting_text_line(const config_setting_t *setting)
{
	for (; setting != NULL; setting = config_setting_parent(setting)) {
		if (config_setting_source_line(setting) > 0)
			return config_setting_source_line(setting);
	}
	return 0;
}

/* The file a setting was written in: the main one or an @include'd one. */
static const char *conf_setting_file(const struct conf_loader *loader, const config_setting_t *setting)
{
	int line;

	return conf_source_of(loader, conf_setting_text_line(setting), &line);
}

/* The line a setting was written on in its file, or its nearest parent's. */
static int conf_setting_line(const struct conf_loader *loader, const config_setting_t *setting)
{
	int line;

	conf_source_of(loader, conf_setting_text_line(setting), &line);
	return line;
}

/* Writes a setting's path ("upstreams[1].users[0]") into buf. */
static void conf_setting_path(const config_setting_t *setting, char *buf, size_t size)
{
	char tail[CONF_PATH_MAX] = "";
	char part[CONF_PATH_MAX];

	for (; setting != NULL && config_setting_parent(setting) != NULL;
	     setting = config_setting_parent(setting)) {
		const char *name = config_setting_name(setting);

		if (name != NULL)
			snprintf(part, sizeof(part), "%s%s%s", name, tail[0] == '[' || tail[0] == '\0' ? "" : ".", tail);
		else
			snprintf(part, sizeof(part), "[%d]%s%s", config_setting_index(setting),
				 tail[0] == '[' || tail[0] == '\0' ? "" : ".", tail);
		memcpy(tail, part, sizeof(tail));
	}
	snprintf(buf, size, "%s", tail);
}

static void conf_report(struct conf_loader *loader, const config_setting_t *setting,
			  const char *format, ...) __attribute__((format(printf, 3, 4)));
static void conf_report(struct conf_loader *loader, const config_setting_t *setting,
			  const char *format, ...)
{
	char path[CONF_PATH_MAX];
	char message[1024];
	va_list args;

	conf_setting_path(setting, path, sizeof(path));
	va_start(args, format);
	vsnprintf(message, sizeof(message), format, args);
	va_end(args);
	conf_report_in(loader, conf_setting_file(loader, setting), conf_setting_line(loader, setting), "%s%s%s",
		       path, path[0] != '\0' ? ": " : "", message);
}

static const char *conf_type_name(int type)
{
	switch (type) {
	case CONFIG_TYPE_GROUP: return "a group { ... }";
	case CONFIG_TYPE_INT:
	case CONFIG_TYPE_INT64: return "an integer";
	case CONFIG_TYPE_FLOAT: return "a floating-point number";
	case CONFIG_TYPE_STRING: return "a string";
	case CONFIG_TYPE_BOOL: return "a boolean";
	case CONFIG_TYPE_ARRAY: return "an array [ ... ]";
	case CONFIG_TYPE_LIST: return "a list ( ... )";
	default: return "nothing";
	}
}

/* Reports every child of group whose name is not in known (NULL-ended). */
static void conf_check_keys(struct conf_loader *loader, const config_setting_t *group,
			      const char *const *known)
{
	int count = config_setting_length(group);

	for (int i = 0; i < count; i++) {
		const config_setting_t *child = config_setting_get_elem(group, (unsigned int)i);
		const char *name = config_setting_name(child);
		bool found = false;
		char expected[512] = "";
		size_t used = 0;

		for (const char *const *key = known; *key != NULL; key++) {
			if (strcmp(name, *key) == 0)
				found = true;
			used += (size_t)snprintf(expected + used, sizeof(expected) - used, "%s%s",
						 key == known ? "" : ", ", *key);
			if (used >= sizeof(expected))
				used = sizeof(expected) - 1;
		}
		if (!found)
			conf_report(loader, child, "unknown key (known here: %s)", expected);
	}
}

/* Checks that setting has the wanted type; reports and returns false if not. */
static bool conf_expect_type(struct conf_loader *loader, const config_setting_t *setting,
			       int type)
{
	int actual = config_setting_type(setting);

	if (actual == type || (type == CONFIG_TYPE_INT && actual == CONFIG_TYPE_INT64))
		return true;
	conf_report(loader, setting, "must be %s, not %s", conf_type_name(type),
		      conf_type_name(actual));
	return false;
}

/* Reads an optional string; *value_r is replaced only when the key is there
   and valid. Empty strings are refused. */
static void conf_get_string(struct conf_loader *loader, const config_setting_t *group,
			      const char *key, char **value_r)
{
	const config_setting_t *setting = config_setting_get_member(group, key);
	const char *text;

	if (setting == NULL || !conf_expect_type(loader, setting, CONFIG_TYPE_STRING))
		return;
	text = config_setting_get_string(setting);
	if (text[0] == '\0') {
		conf_report(loader, setting, "must not be empty");
		return;
	}
	free(*value_r);
	*value_r = conf_xstrdup(text);
}

static void conf_get_bool(struct conf_loader *loader, const config_setting_t *group,
			    const char *key, bool *value_r)
{
	const config_setting_t *setting = config_setting_get_member(group, key);

	if (setting == NULL || !conf_expect_type(loader, setting, CONFIG_TYPE_BOOL))
		return;
	*value_r = config_setting_get_bool(setting) != 0;
}

/* Reads an optional integer in [min, max]. */
static void conf_get_uint(struct conf_loader *loader, const config_setting_t *group,
			    const char *key, unsigned int min, unsigned int max,
			    unsigned int *value_r)
{
	const config_setting_t *setting = config_setting_get_member(group, key);
	long long value;

	if (setting == NULL || !conf_expect_type(loader, setting, CONFIG_TYPE_INT))
		return;
	value = config_setting_get_int64(setting);
	if (value < (long long)min || value > (long long)max) {
		conf_report(loader, setting, "must be between %u and %u, not %lld", min, max, value);
		return;
	}
	*value_r = (unsigned int)value;
}

/* Parses "512", "64K", "8M", "2G" (powers of 1024). Returns 0 or -1. */
static int conf_parse_size(const char *text, uint64_t *size_r)
{
	char *end;
	unsigned long long value;
	unsigned int shift = 0;

	if (text[0] < '0' || text[0] > '9')
		return -1;
	errno = 0;
	value = strtoull(text, &end, 10);
	if (errno != 0)
		return -1;
	switch (*end) {
	case '\0': break;
	case 'k': case 'K': shift = 10; end++; break;
	case 'm': case 'M': shift = 20; end++; break;
	case 'g': case 'G': shift = 30; end++; break;
	default: return -1;
	}
	if (*end != '\0' || value > (UINT64_MAX >> shift))
		return -1;
	*size_r = (uint64_t)value << shift;
	return 0;
}

/* Reads an optional byte count, an integer or a string such as "64M",
   in [min, max]. */
static void conf_get_size(struct conf_loader *loader, const config_setting_t *group,
			    const char *key, uint64_t min, uint64_t max, uint64_t *value_r)
{
	const config_setting_t *setting = config_setting_get_member(group, key);
	uint64_t value;

	if (setting == NULL)
		return;
	switch (config_setting_type(setting)) {
	case CONFIG_TYPE_INT:
	case CONFIG_TYPE_INT64:
		if (config_setting_get_int64(setting) < 0) {
			conf_report(loader, setting, "must not be negative");
			return;
		}
		value = (uint64_t)config_setting_get_int64(setting);
		break;
	case CONFIG_TYPE_STRING:
		if (conf_parse_size(config_setting_get_string(setting), &value) < 0) {
			conf_report(loader, setting,
				      "\"%s\" is not a size (write bytes, or a number ending in K, M or G)",
				      config_setting_get_string(setting));
			return;
		}
		break;
	default:
		conf_report(loader, setting, "must be a size (an integer, or a string such as \"64M\"), not %s",
			      conf_type_name(config_setting_type(setting)));
		return;
	}
	if (value < min || value > max) {
		conf_report(loader, setting, "must be between %" PRIu64 " and %" PRIu64 " bytes, not %" PRIu64,
			      min, max, value);
		return;
	}
	*value_r = value;
}

static void conf_get_tls(struct conf_loader *loader, const config_setting_t *group,
			   enum conf_tls *value_r)
{
	const config_setting_t *setting = config_setting_get_member(group, "tls");
	const char *text;

	if (setting == NULL || !conf_expect_type(loader, setting, CONFIG_TYPE_STRING))
		return;
	text = config_setting_get_string(setting);
	for (size_t i = 0; i < sizeof(conf_tls_names) / sizeof(conf_tls_names[0]); i++) {
		if (strcmp(text, conf_tls_names[i]) == 0) {
			*value_r = (enum conf_tls)i;
			return;
		}
	}
	conf_report(loader, setting, "must be \"none\", \"starttls\" or \"implicit\", not \"%s\"", text);
}

/* Returns a group-typed member, or NULL (reported when it has another type). */
static const config_setting_t *conf_get_group(struct conf_loader *loader,
						const config_setting_t *parent, const char *key)
{
	const config_setting_t *setting = config_setting_get_member(parent, key);

	if (setting == NULL || !conf_expect_type(loader, setting, CONFIG_TYPE_GROUP))
		return NULL;
	return setting;
}

/* Whether a numeric address is a loopback one; -1 when it is not an address. */
static int conf_address_is_loopback(const char *address)
{
	struct in_addr v4;
	struct in6_addr v6;

	if (inet_pton(AF_INET, address, &v4) == 1)
		return (ntohl(v4.s_addr) >> 24) == 127;
	if (inet_pton(AF_INET6, address, &v6) == 1)
		return memcmp(&v6, &in6addr_loopback, sizeof(v6)) == 0;
	return -1;
}

static void conf_listener_defaults(struct conf_listener *listener)
{
	listener->address = conf_xstrdup(CONF_DEFAULT_LISTEN_ADDRESS);
	listener->port = CONF_DEFAULT_LISTEN_PORT;
	listener->tls = CONF_TLS_NONE;
	listener->loopback = true;
}

static void conf_load_listener(struct conf_loader *loader, const config_setting_t *setting,
				 struct conf_listener *listener)
{
	static const char *const known[] = { "address", "port", "tls", "cert", "key", NULL };
	int loopback;

	conf_listener_defaults(listener);
	listener->line = conf_setting_line(loader, setting);
	if (!conf_expect_type(loader, setting, CONFIG_TYPE_GROUP))
		return;
	conf_check_keys(loader, setting, known);
	conf_get_string(loader, setting, "address", &listener->address);
	conf_get_uint(loader, setting, "port", 0, 65535, &listener->port);
	conf_get_tls(loader, setting, &listener->tls);
	conf_get_string(loader, setting, "cert", &listener->cert);
	conf_get_string(loader, setting, "key", &listener->key);

	loopback = conf_address_is_loopback(listener->address);
	if (loopback < 0) {
		conf_report(loader, config_setting_get_member(setting, "address"),
			      "\"%s\" is not a numeric IPv4 or IPv6 address "
			      "(use 127.0.0.1, ::1, 0.0.0.0 or :: for all)", listener->address);
	}
	listener->loopback = loopback == 1;
	if (listener->tls != CONF_TLS_NONE && (listener->cert == NULL || listener->key == NULL)) {
		conf_report(loader, setting, "tls = \"%s\" needs both cert and key",
			      conf_tls_names[listener->tls]);
	}
	if (listener->tls == CONF_TLS_NONE && (listener->cert != NULL || listener->key != NULL)) {
		conf_report(loader, setting,
			      "cert and key are used only with tls = \"starttls\" or \"implicit\"; "
			      "this listener has tls = \"none\"");
	}
}

static void conf_load_listeners(struct conf_loader *loader, const config_setting_t *root,
				  struct conf *config)
{
	const config_setting_t *list = config_setting_get_member(root, "listen");
	int count;

	if (list == NULL) {
		config->listeners = conf_xcalloc(1, sizeof(*config->listeners));
		config->listeners_count = 1;
		conf_listener_defaults(&config->listeners[0]);
		return;
	}
	if (config_setting_type(list) == CONFIG_TYPE_GROUP) {
		count = 1; /* a single listener written without ( ) */
	} else if (config_setting_type(list) == CONFIG_TYPE_LIST) {
		count = config_setting_length(list);
	} else {
		conf_report(loader, list, "must be a list of listeners ( { ... }, ... ), not %s",
			      conf_type_name(config_setting_type(list)));
		return;
	}
	if (count == 0) {
		conf_report(loader, list, "needs at least one listener");
		return;
	}
	config->listeners = conf_xcalloc((size_t)count, sizeof(*config->listeners));
	config->listeners_count = (size_t)count;
	for (int i = 0; i < count; i++) {
		const config_setting_t *item = config_setting_type(list) == CONFIG_TYPE_GROUP ?
			list : config_setting_get_elem(list, (unsigned int)i);

		conf_load_listener(loader, item, &config->listeners[i]);
		for (int j = 0; j < i; j++) {
			const struct conf_listener *a = &config->listeners[j], *b = &config->listeners[i];

			if (a->port != 0 && a->port == b->port && strcmp(a->address, b->address) == 0) {
				conf_report(loader, item, "%s port %u is already used by the listener on line %d",
					      b->address, b->port, a->line);
			}
		}
	}
}

static void conf_load_users(struct conf_loader *loader, const config_setting_t *group,
			      struct conf_upstream *upstream)
{
	const config_setting_t *users = config_setting_get_member(group, "users");
	int count;

	if (users == NULL)
		return;
	if (config_setting_type(users) != CONFIG_TYPE_ARRAY &&
	    config_setting_type(users) != CONFIG_TYPE_LIST) {
		conf_report(loader, users, "must be an array of patterns [ \"*@example.com\", ... ], not %s",
			      conf_type_name(config_setting_type(users)));
		return;
	}
	count = config_setting_length(users);
	if (count == 0) {
		conf_report(loader, users,
			      "is empty, so no user would reach this upstream; "
			      "leave users out to make it the default upstream");
		return;
	}
	upstream->users = conf_xcalloc((size_t)count, sizeof(*upstream->users));
	for (int i = 0; i < count; i++) {
		const config_setting_t *item = config_setting_get_elem(users, (unsigned int)i);
		const char *pattern;

		if (!conf_expect_type(loader, item, CONFIG_TYPE_STRING))
			continue;
		pattern = config_setting_get_string(item);
		if (pattern[0] == '\0') {
			conf_report(loader, item, "an empty pattern matches no user");
			continue;
		}
		upstream->users[upstream->users_count++] = conf_xstrdup(pattern);
	}
}

static void conf_load_upstream(struct conf_loader *loader, const config_setting_t *setting,
				 struct conf_upstream *upstream)
{
	static const char *const known[] = {
		"name", "host", "port", "tls", "ca_file", "verify", "users", NULL
	};
	unsigned int port = 0;

	upstream->tls = CONF_TLS_IMPLICIT;
	upstream->verify = true;
	upstream->line = conf_setting_line(loader, setting);
	if (!conf_expect_type(loader, setting, CONFIG_TYPE_GROUP))
		return;
	conf_check_keys(loader, setting, known);
	conf_get_string(loader, setting, "name", &upstream->name);
	conf_get_string(loader, setting, "host", &upstream->host);
	conf_get_uint(loader, setting, "port", 1, 65535, &port);
	conf_get_tls(loader, setting, &upstream->tls);
	conf_get_string(loader, setting, "ca_file", &upstream->ca_file);
	conf_get_bool(loader, setting, "verify", &upstream->verify);
	conf_load_users(loader, setting, upstream);

	if (upstream->name == NULL && config_setting_get_member(setting, "name") == NULL)
		conf_report(loader, setting, "needs a name (used in logs and cache file names)");
	if (upstream->host == NULL && config_setting_get_member(setting, "host") == NULL)
		conf_report(loader, setting, "needs a host");
	/* 993 for IMAPS, 143 for IMAP (RFC 8314 and RFC 3501). */
	upstream->port = port != 0 ? port : upstream->tls == CONF_TLS_IMPLICIT ? 993 : 143;
	if (upstream->tls == CONF_TLS_NONE && (upstream->ca_file != NULL ||
						 config_setting_get_member(setting, "verify") != NULL)) {
		conf_report(loader, setting,
			      "ca_file and verify apply only with tls = \"starttls\" or \"implicit\"");
	}
}

static void conf_load_upstreams(struct conf_loader *loader, const config_setting_t *root,
				  struct conf *config)
{
	const config_setting_t *list = config_setting_get_member(root, "upstreams");
	int count;

	if (list == NULL) {
		conf_report_line(loader, 0, "no upstreams: add upstreams = ( { name = ...; host = ...; } ); "
				   "so that imapcached knows which server to log in to");
		return;
	}
	if (config_setting_type(list) == CONFIG_TYPE_GROUP) {
		count = 1;
	} else if (config_setting_type(list) == CONFIG_TYPE_LIST) {
		count = config_setting_length(list);
	} else {
		conf_report(loader, list, "must be a list of upstreams ( { ... }, ... ), not %s",
			      conf_type_name(config_setting_type(list)));
		return;
	}
	if (count == 0) {
		conf_report(loader, list, "needs at least one upstream");
		return;
	}
	config->upstreams = conf_xcalloc((size_t)count, sizeof(*config->upstreams));
	config->upstreams_count = (size_t)count;
	for (int i = 0; i < count; i++) {
		const config_setting_t *item = config_setting_type(list) == CONFIG_TYPE_GROUP ?
			list : config_setting_get_elem(list, (unsigned int)i);
		struct conf_upstream *upstream = &config->upstreams[i];

		conf_load_upstream(loader, item, upstream);
		for (int j = 0; j < i; j++) {
			const struct conf_upstream *other = &config->upstreams[j];

			if (upstream->name != NULL && other->name != NULL &&
			    strcmp(upstream->name, other->name) == 0) {
				conf_report(loader, item, "name \"%s\" is already used by the upstream on line %d",
					      upstream->name, other->line);
			}
		}
		if (upstream->users_count == 0 && config_setting_get_member(item, "users") == NULL &&
		    config_setting_type(item) == CONFIG_TYPE_GROUP) {
			if (config->default_upstream != NULL) {
				conf_report(loader, item,
					      "has no users, and so does the upstream on line %d: only one "
					      "upstream can be the default; give the others users patterns",
					      config->default_upstream->line);
			} else {
				config->default_upstream = upstream;
			}
		}
	}
}

/* The setting key of group, a string that must be one of names (NULL
   ended): true with its index in *choice_r; false when absent or wrong
   (reported: "must be "a", "b" or "c", not "d""). */
static bool conf_get_choice(struct conf_loader *loader, const config_setting_t *group, const char *key,
			    const char *const *names, size_t *choice_r)
{
	const config_setting_t *setting = config_setting_get_member(group, key);
	const char *name;
	char allowed[256];
	size_t used = 0, count = 0;

	if (setting == NULL || !conf_expect_type(loader, setting, CONFIG_TYPE_STRING))
		return false;
	name = config_setting_get_string(setting);
	for (; names[count] != NULL; count++) {
		if (strcmp(name, names[count]) == 0) {
			*choice_r = count;
			return true;
		}
	}
	for (size_t i = 0; i < count && used < sizeof(allowed); i++)
		used += (size_t)snprintf(allowed + used, sizeof(allowed) - used, "%s\"%s\"",
					 i == 0 ? "" : i + 1 == count ? " or " : ", ", names[i]);
	conf_report(loader, setting, "must be %s, not \"%s\"", allowed, name);
	return false;
}

static void conf_load_cache(struct conf_loader *loader, const config_setting_t *root,
			      struct conf *config)
{
	static const char *const known[] = { "dir", "body_budget", "body_max_size", "prefetch", "keyword_searches",
					     NULL };
	static const char *const prefetch_names[] = { "off", "headers", "full", NULL };
	static const char *const keyword_names[] = { "auto", "always", "never", NULL };
	const config_setting_t *group = conf_get_group(loader, root, "cache");
	size_t choice;

	if (group == NULL)
		return;
	conf_check_keys(loader, group, known);
	conf_get_string(loader, group, "dir", &config->cache_dir);
	conf_get_size(loader, group, "body_budget", 0, UINT64_MAX, &config->cache_body_budget);
	conf_get_size(loader, group, "body_max_size", 0, UINT64_MAX, &config->cache_body_max_size);
	if (conf_get_choice(loader, group, "prefetch", prefetch_names, &choice))
		config->cache_prefetch = (enum conf_prefetch)choice;
	if (conf_get_choice(loader, group, "keyword_searches", keyword_names, &choice))
		config->cache_keyword_searches = (enum conf_keyword_searches)choice;
	if (config->cache_dir[0] != '/')
		conf_report(loader, config_setting_get_member(group, "dir"),
			      "must be an absolute path, not \"%s\"", config->cache_dir);
}

static void conf_load_control(struct conf_loader *loader, const config_setting_t *root,
			      struct conf *config)
{
	static const char *const known[] = { "socket", NULL };
	const config_setting_t *group = conf_get_group(loader, root, "control");

	if (group == NULL)
		return;
	conf_check_keys(loader, group, known);
	conf_get_string(loader, group, "socket", &config->control_socket);
	if (config->control_socket[0] != '/')
		conf_report(loader, config_setting_get_member(group, "socket"),
			      "must be an absolute path, not \"%s\"", config->control_socket);
	else if (strlen(config->control_socket) >= CONF_MAX_SOCKET_PATH)
		conf_report(loader, config_setting_get_member(group, "socket"),
			      "is too long for a UNIX socket (at most %d bytes)", CONF_MAX_SOCKET_PATH - 1);
}

static void conf_load_log(struct conf_loader *loader, const config_setting_t *root,
			    struct conf *config)
{
	static const char *const known[] = { "level", NULL };
	const config_setting_t *group = conf_get_group(loader, root, "log");
	const config_setting_t *level;

	if (group == NULL)
		return;
	conf_check_keys(loader, group, known);
	level = config_setting_get_member(group, "level");
	if (level == NULL || !conf_expect_type(loader, level, CONFIG_TYPE_STRING))
		return;
	if (log_level_parse(config_setting_get_string(level), &config->log_level) < 0) {
		conf_report(loader, level, "must be \"debug\", \"info\", \"warning\" or \"error\", not \"%s\"",
			      config_setting_get_string(level));
	}
}

static void conf_load_pool(struct conf_loader *loader, const config_setting_t *root,
			     struct conf *config)
{
	static const char *const known[] = { "size", "idle_timeout", "max_age", NULL };
	const config_setting_t *pool = config_setting_get_member(root, "pool");

	if (pool == NULL)
		return;
	if (config_setting_type(pool) == CONFIG_TYPE_INT) {
		/* pool = N is short for pool = { size = N; }; pool = 0 turns it off. */
		conf_get_uint(loader, root, "pool", 0, 1000, &config->pool_size);
		return;
	}
	if (config_setting_type(pool) != CONFIG_TYPE_GROUP) {
		conf_report(loader, pool, "must be a group { size = ...; idle_timeout = ...; } or "
			      "an integer (0 turns pooling off), not %s", conf_type_name(config_setting_type(pool)));
		return;
	}
	conf_check_keys(loader, pool, known);
	conf_get_uint(loader, pool, "size", 0, 1000, &config->pool_size);
	conf_get_uint(loader, pool, "idle_timeout", 1, CONF_MAX_SECONDS, &config->pool_idle_timeout);
	conf_get_uint(loader, pool, "max_age", 0, CONF_MAX_SECONDS, &config->pool_max_age);
}

static void conf_load_timeouts(struct conf_loader *loader, const config_setting_t *root,
				 struct conf *config)
{
	static const char *const known[] = { "preauth", "idle", "upstream_connect", "upstream_command", "shutdown",
					     "literal", NULL };
	const config_setting_t *group = conf_get_group(loader, root, "timeouts");

	if (group == NULL)
		return;
	conf_check_keys(loader, group, known);
	conf_get_uint(loader, group, "preauth", 1, CONF_MAX_SECONDS, &config->timeout_preauth);
	conf_get_uint(loader, group, "idle", 1, CONF_MAX_SECONDS, &config->timeout_idle);
	conf_get_uint(loader, group, "upstream_connect", 1, CONF_MAX_SECONDS,
			&config->timeout_upstream_connect);
	conf_get_uint(loader, group, "upstream_command", 1, CONF_MAX_SECONDS,
			&config->timeout_upstream_command);
	conf_get_uint(loader, group, "shutdown", 0, CONF_MAX_SECONDS, &config->timeout_shutdown);
	conf_get_uint(loader, group, "literal", 1, CONF_MAX_SECONDS, &config->timeout_literal);
}

static void conf_load_limits(struct conf_loader *loader, const config_setting_t *root,
			       struct conf *config)
{
	static const char *const known[] = { "line", "literal_preauth", "literal", "sessions", "sessions_per_account",
					     NULL };
	const config_setting_t *group = conf_get_group(loader, root, "limits");
	uint64_t line = config->limit_line;

	if (group == NULL)
		return;
	conf_check_keys(loader, group, known);
	conf_get_size(loader, group, "line", CONF_MIN_LIMIT_LINE, 16 << 20, &line);
	config->limit_line = (size_t)line;
	conf_get_size(loader, group, "literal_preauth", 0, 1 << 20, &config->limit_literal_preauth);
	conf_get_size(loader, group, "literal", 1024, UINT32_MAX, &config->limit_literal);
	conf_get_uint(loader, group, "sessions", 1, 1000000, &config->limit_sessions);
	conf_get_uint(loader, group, "sessions_per_account", 1, 1000000, &config->limit_sessions_per_account);
}

struct conf *conf_new_defaults(void)
{
	struct conf *config = conf_xcalloc(1, sizeof(*config));

	config->refcount = 1;
	config->listeners = conf_xcalloc(1, sizeof(*config->listeners));
	config->listeners_count = 1;
	conf_listener_defaults(&config->listeners[0]);
	config->cache_dir = conf_xstrdup(CONF_DEFAULT_CACHE_DIR);
	config->control_socket = conf_xstrdup(CONF_DEFAULT_CONTROL_SOCKET);
	config->cache_body_budget = CONF_DEFAULT_BODY_BUDGET;
	config->cache_body_max_size = CONF_DEFAULT_BODY_MAX_SIZE;
	config->cache_prefetch = CONF_PREFETCH_HEADERS;
	config->cache_keyword_searches = CONF_KEYWORD_SEARCHES_AUTO;
	config->log_level = LOG_LEVEL_INFO;
	config->pool_size = CONF_DEFAULT_POOL_SIZE;
	config->pool_idle_timeout = CONF_DEFAULT_POOL_IDLE;
	config->pool_max_age = CONF_DEFAULT_POOL_MAX_AGE;
	config->timeout_preauth = CONF_DEFAULT_TIMEOUT_PREAUTH;
	config->timeout_idle = CONF_DEFAULT_TIMEOUT_IDLE;
	config->timeout_upstream_connect = CONF_DEFAULT_TIMEOUT_CONNECT;
	config->timeout_upstream_command = CONF_DEFAULT_TIMEOUT_UPSTREAM_COMMAND;
	config->timeout_shutdown = CONF_DEFAULT_TIMEOUT_SHUTDOWN;
	config->timeout_literal = CONF_DEFAULT_TIMEOUT_LITERAL;
	config->limit_line = CONF_DEFAULT_LIMIT_LINE;
	config->limit_literal_preauth = CONF_DEFAULT_LIMIT_LITERAL_PREAUTH;
	config->limit_literal = CONF_DEFAULT_LIMIT_LITERAL;
	config->limit_sessions = CONF_DEFAULT_LIMIT_SESSIONS;
	config->limit_sessions_per_account = CONF_DEFAULT_LIMIT_SESSIONS_PER_ACCOUNT;
	return config;
}

static void conf_free_listeners(struct conf *config)
{
	for (size_t i = 0; i < config->listeners_count; i++) {
		free(config->listeners[i].address);
		free(config->listeners[i].cert);
		free(config->listeners[i].key);
	}
	free(config->listeners);
	config->listeners = NULL;
	config->listeners_count = 0;
}

static void conf_free(struct conf *config)
{
	conf_free_listeners(config);
	for (size_t i = 0; i < config->upstreams_count; i++) {
		struct conf_upstream *upstream = &config->upstreams[i];

		free(upstream->name);
		free(upstream->host);
		free(upstream->ca_file);
		for (size_t j = 0; j < upstream->users_count; j++)
			free(upstream->users[j]);
		free(upstream->users);
	}
	free(config->upstreams);
	free(config->cache_dir);
	free(config->control_socket);
	free(config->user);
	free(config->path);
	free(config);
}

void conf_ref(struct conf *config)
{
	assert(config->refcount > 0);
	config->refcount++;
}

void conf_unref(struct conf **config)
{
	if (*config == NULL)
		return;
	assert((*config)->refcount > 0);
	if (--(*config)->refcount == 0)
		conf_free(*config);
	*config = NULL;
}

/* Turns a parsed libconfig tree into a config, or NULL with messages. */
static struct conf *conf_from_tree(struct conf_loader *loader, config_t *tree, char **errors_r)
{
	static const char *const known[] = {
		"listen", "upstreams", "cache", "control", "log", "pool", "timeouts", "limits", "user", NULL
	};
	const config_setting_t *root = config_root_setting(tree);
	struct conf *config = conf_new_defaults();

	config->path = conf_xstrdup(loader->name);
	conf_check_keys(loader, root, known);
	conf_free_listeners(config);
	conf_load_listeners(loader, root, config);
	conf_load_upstreams(loader, root, config);
	conf_load_cache(loader, root, config);
	conf_load_control(loader, root, config);
	conf_load_log(loader, root, config);
	conf_load_pool(loader, root, config);
	conf_load_timeouts(loader, root, config);
	conf_load_limits(loader, root, config);
	conf_get_string(loader, root, "user", &config->user);
	if (loader->errors_count == 0)
		return config;
	*errors_r = loader->errors;
	loader->errors = NULL;
	conf_unref(&config);
	return NULL;
}

/* Appends len bytes to the loader's text. */
static void conf_text_append(struct conf_loader *loader, const char *data, size_t len)
{
	if (loader->text_len + len + 1 > loader->text_size) {
		loader->text_size = (loader->text_len + len + 1) * 2;
		loader->text = realloc(loader->text, loader->text_size);
		if (loader->text == NULL)
			abort();
	}
	memcpy(loader->text + loader->text_len, data, len);
	loader->text_len += len;
	loader->text[loader->text_len] = '\0';
	for (size_t i = 0; i < len; i++)
		loader->text_lines += data[i] == '\n';
}

/* The lines appended from now on are file's, from source_line on. The
   text must end in a newline (or be empty). */
static void conf_span_start(struct conf_loader *loader, const char *file, int source_line)
{
	struct conf_span *span = loader->spans_count > 0 ? &loader->spans[loader->spans_count - 1] : NULL;
	int first_line = loader->text_lines + 1;

	if (span != NULL && span->first_line == first_line) {
		free(span->file); /* no line of it was written */
	} else {
		loader->spans = realloc(loader->spans, (loader->spans_count + 1) * sizeof(*loader->spans));
		if (loader->spans == NULL)
			abort();
		span = &loader->spans[loader->spans_count++];
	}
	span->first_line = first_line;
	span->source_line = source_line;
	span->file = conf_xstrdup(file);
}

/* The state after line (len bytes) for one that starts in state. */
static enum conf_lex_state conf_lex_line(enum conf_lex_state state, const char *line, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		char next = i + 1 < len ? line[i + 1] : '\0';

		switch (state) {
		case CONF_LEX_CODE:
			if (line[i] == '#' || (line[i] == '/' && next == '/'))
				return state; /* the rest is a comment */
			if (line[i] == '/' && next == '*') {
				state = CONF_LEX_COMMENT;
				i++;
			} else if (line[i] == '"') {
				state = CONF_LEX_STRING;
			}
			break;
		case CONF_LEX_COMMENT:
			if (line[i] == '*' && next == '/') {
				state = CONF_LEX_CODE;
				i++;
			}
			break;
		case CONF_LEX_STRING:
			if (line[i] == '\\')
				i++;
			else if (line[i] == '"')
				state = CONF_LEX_CODE;
			break;
		}
	}
	return state;
}

/* Whether line (len bytes, its newline included) is libconfig's @include
   directive: blanks, "@include", blanks, a quoted name (\\ and \" escaped).
   Returns 1 with the name in name (size bytes) and *rest_r the offset
   after its closing quote; 0 for any other line; -1 when the name does
   not end on the line or is too long. */
static int conf_parse_include(const char *line, size_t len, char *name, size_t size, size_t *rest_r)
{
	static const char keyword[] = "@include";
	size_t i = strspn(line, " \t"), used = 0;

	if (i + sizeof(keyword) - 1 > len || memcmp(line + i, keyword, sizeof(keyword) - 1) != 0)
		return 0;
	i += sizeof(keyword) - 1;
	if (i >= len || (line[i] != ' ' && line[i] != '\t'))
		return 0;
	while (i < len && (line[i] == ' ' || line[i] == '\t'))
		i++;
	if (i >= len || line[i] != '"')
		return 0;
	for (i++; i < len && line[i] != '"' && line[i] != '\n'; i++) {
		if (line[i] == '\\' && i + 1 < len && (line[i + 1] == '\\' || line[i + 1] == '"'))
			i++;
		if (used + 1 >= size)
			return -1;
		name[used++] = line[i];
	}
	if (i >= len || line[i] != '"')
		return -1;
	name[used] = '\0';
	*rest_r = i + 1;
	return 1;
}

static int conf_expand_file(struct conf_loader *loader, const char *path, const char *from_file,
			    int from_line, int depth);

/* Expands the file an @include on from_file:from_line names. */
static int conf_expand_include(struct conf_loader *loader, const char *name, const char *from_file,
			       int from_line, int depth)
{
	char *path;
	int result;

	if (depth >= CONF_MAX_INCLUDE_DEPTH) {
		conf_report_in(loader, from_file, from_line,
			       "@include nested more than %d deep (does a file include itself?)",
			       CONF_MAX_INCLUDE_DEPTH);
		return -1;
	}
	if (name[0] == '/' || loader->include_dir == NULL)
		path = conf_xstrdup(name);
	else if (asprintf(&path, "%s/%s", loader->include_dir, name) < 0)
		abort();
	result = conf_expand_file(loader, path, from_file, from_line, depth + 1);
	free(path);
	return result;
}

/* Appends text (len bytes, the contents of file) to the loader's text,
   each @include line replaced by the file it names and then the rest of
   that line. Returns 0, or -1 after reporting. */
static int conf_expand_text(struct conf_loader *loader, const char *text, size_t len, const char *file,
			    int depth)
{
	enum conf_lex_state state = CONF_LEX_CODE;
	char name[CONF_INCLUDE_NAME_MAX];
	size_t line_len, rest;
	int line_number = 1, found;

	conf_span_start(loader, file, 1);
	for (size_t start = 0; start < len; start += line_len, line_number++) {
		const char *line = text + start;
		const char *end = memchr(line, '\n', len - start);

		line_len = end != NULL ? (size_t)(end - line) + 1 : len - start;
		found = state == CONF_LEX_CODE ? conf_parse_include(line, line_len, name, sizeof(name), &rest) : 0;
		if (found < 0) {
			conf_report_in(loader, file, line_number,
				       "@include needs a file name in double quotes, on one line");
			return -1;
		}
		if (found == 0) {
			state = conf_lex_line(state, line, line_len);
			conf_text_append(loader, line, line_len);
			continue;
		}
		if (conf_expand_include(loader, name, file, line_number, depth) < 0)
			return -1;
		conf_span_start(loader, file, line_number);
		state = conf_lex_line(state, line + rest, line_len - rest);
		conf_text_append(loader, line + rest, line_len - rest);
	}
	if (len > 0 && text[len - 1] != '\n')
		conf_text_append(loader, "\n", 1);
	return 0;
}

/* Reads all of file, at most CONF_MAX_FILE_SIZE bytes. Returns the text
   (free() it), or NULL with errno set. */
static char *conf_read_whole(FILE *file, size_t *len_r)
{
	char *text = NULL;
	size_t len = 0, got;

	do {
		char *more = realloc(text, len + 4096);

		if (more == NULL)
			abort();
		text = more;
		got = fread(text + len, 1, 4096, file);
		len += got;
	} while (got > 0 && len <= CONF_MAX_FILE_SIZE);
	if (ferror(file) || len > CONF_MAX_FILE_SIZE) {
		if (!ferror(file))
			errno = EFBIG;
		free(text);
		return NULL;
	}
	*len_r = len;
	return text;
}

/* Expands the file at path: the main file when from_file is NULL, else
   one that from_file:from_line includes. Returns 0, or -1 after reporting. */
static int conf_expand_file(struct conf_loader *loader, const char *path, const char *from_file,
			    int from_line, int depth)
{
	FILE *file = fopen(path, "r");
	char *text = NULL;
	size_t len = 0;
	int result;

	if (file != NULL)
		text = conf_read_whole(file, &len);
	if (text == NULL) {
		if (from_file == NULL)
			conf_report_line(loader, 0, "cannot read: %s", strerror(errno));
		else
			conf_report_in(loader, from_file, from_line, "cannot %s include file %s: %s",
				       file == NULL ? "open" : "read", path, strerror(errno));
		if (file != NULL)
			fclose(file);
		return -1;
	}
	fclose(file);
	result = conf_expand_text(loader, text, len, path, depth);
	free(text);
	return result;
}

/* For a syntax error on a line that holds an unquoted size such as 64K,
   that size (in buf); else NULL. */
static const char *conf_find_unquoted_size(const char *line, size_t len, char *buf, size_t size)
{
	bool quoted = false;

	for (size_t i = 0; i < len; i++) {
		size_t start = i;

		if (quoted) {
			if (line[i] == '\\')
				i++;
			else if (line[i] == '"')
				quoted = false;
			continue;
		}
		if (line[i] == '"')
			quoted = true;
		if (line[i] == '#' || (line[i] == '/' && i + 1 < len && line[i + 1] == '/'))
			break;
		if (!isdigit((unsigned char)line[i]) ||
		    (i > 0 && (isalnum((unsigned char)line[i - 1]) || line[i - 1] == '_' || line[i - 1] == '.')))
			continue;
		while (i + 1 < len && isdigit((unsigned char)line[i + 1]))
			i++;
		if (i + 1 < len && line[i + 1] != '\0' && strchr("KkMmGg", line[i + 1]) != NULL &&
		    (i + 2 >= len || (!isalnum((unsigned char)line[i + 2]) && line[i + 2] != '_'))) {
			snprintf(buf, size, "%.*s", (int)(i + 2 - start), line + start);
			return buf;
		}
	}
	return NULL;
}

/* Reports libconfig's parse error, with a hint for an unquoted size. */
static void conf_report_parse_error(struct conf_loader *loader, const config_t *tree)
{
	const char *text = config_error_text(tree);
	const char *line = loader->text;
	char size[32];
	const char *file;
	int source_line;

	for (int n = 1; n < config_error_line(tree) && line != NULL; n++) {
		line = strchr(line, '\n');
		line = line != NULL ? line + 1 : NULL;
	}
	file = conf_source_of(loader, config_error_line(tree), &source_line);
	if (line != NULL && strcmp(text, "syntax error") == 0 &&
	    conf_find_unquoted_size(line, strcspn(line, "\n"), size, sizeof(size)) != NULL) {
		conf_report_in(loader, file, source_line, "%s (a size with a suffix is a string: write \"%s\" "
			       "in double quotes)", text, size);
		return;
	}
	conf_report_in(loader, file, source_line, "%s", text);
}

/* Parses the loader's text; returns the config, or NULL with *errors_r. */
static struct conf *conf_parse(struct conf_loader *loader, char **errors_r)
{
	struct conf *config = NULL;
	config_t tree;

	config_init(&tree);
	if (config_read_string(&tree, loader->text) == CONFIG_TRUE)
		config = conf_from_tree(loader, &tree, errors_r);
	else
		conf_report_parse_error(loader, &tree);
	config_destroy(&tree);
	return config;
}

/* Expands (when text is NULL, reads the file name) and parses; the
   common end of conf_load and conf_load_string. */
static struct conf *conf_load_text(const char *name, const char *text, const char *include_dir,
				   char **errors_r)
{
	struct conf_loader loader = { .name = name, .include_dir = include_dir };
	struct conf *config = NULL;
	int expanded;

	*errors_r = NULL;
	conf_text_append(&loader, "", 0);
	if (text == NULL)
		expanded = conf_expand_file(&loader, name, NULL, 0, 0);
	else
		expanded = conf_expand_text(&loader, text, strlen(text), name, 0);
	if (expanded == 0)
		config = conf_parse(&loader, errors_r);
	if (config == NULL && *errors_r == NULL) {
		*errors_r = loader.errors;
		loader.errors = NULL;
	}
	free(loader.errors);
	free(loader.text);
	for (size_t i = 0; i < loader.spans_count; i++)
		free(loader.spans[i].file);
	free(loader.spans);
	return config;
}

struct conf *conf_load(const char *path, char **errors_r)
{
	char *directory = conf_xstrdup(path);
	struct conf *config;

	/* A relative @include name is taken from the main file's directory. */
	config = conf_load_text(path, NULL, dirname(directory), errors_r);
	free(directory);
	return config;
}

struct conf *conf_load_string(const char *text, const char *name, char **errors_r)
{
	return conf_load_text(name, text, NULL, errors_r);
}

const struct conf_upstream *conf_upstream_for_user(const struct conf *config,
						       const char *user)
{
	for (size_t i = 0; i < config->upstreams_count; i++) {
		const struct conf_upstream *upstream = &config->upstreams[i];

		for (size_t j = 0; j < upstream->users_count; j++) {
			if (fnmatch(upstream->users[j], user, FNM_CASEFOLD) == 0)
				return upstream;
		}
	}
	return config->default_upstream;
}

const char *conf_tls_name(enum conf_tls tls)
{
	return conf_tls_names[tls];
}

/* Whether two listeners bind the same way: address, port and tls. */
static bool conf_listener_same(const struct conf_listener *x, const struct conf_listener *y)
{
	return strcmp(x->address, y->address) == 0 && x->port == y->port && x->tls == y->tls;
}

bool conf_listeners_equal(const struct conf *a, const struct conf *b)
{
	if (a->listeners_count != b->listeners_count)
		return false;
	for (size_t i = 0; i < a->listeners_count; i++) {
		if (!conf_listener_same(&a->listeners[i], &b->listeners[i]))
			return false;
	}
	return true;
}

const struct conf_listener *conf_listener_find(const struct conf *config, const struct conf_listener *like,
					       size_t prefer)
{
	if (prefer < config->listeners_count && conf_listener_same(&config->listeners[prefer], like))
		return &config->listeners[prefer];
	for (size_t i = 0; i < config->listeners_count; i++) {
		if (conf_listener_same(&config->listeners[i], like))
			return &config->listeners[i];
	}
	return NULL;
}
