/* SPDX-License-Identifier: MIT */
/* conf: loads and validates imapcached.conf (libconfig) into a typed struct. */
#include "config.h"
#include "conf.h"

#include <arpa/inet.h>
#include <assert.h>
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
#define CONF_DEFAULT_BODY_BUDGET (256ULL << 20) /* bodies of a few thousand messages */
#define CONF_DEFAULT_BODY_MAX_SIZE (4ULL << 20) /* holds the benchmark corpus's largest message, 2,018,482 bytes */
#define CONF_DEFAULT_POOL_SIZE 4 /* a client opens a few connections per account */
#define CONF_DEFAULT_POOL_IDLE 300 /* servers drop idle logins after 30 min; stay well below */
#define CONF_DEFAULT_POOL_MAX_AGE 3600 /* a password changed upstream stops working within the hour */
#define CONF_DEFAULT_TIMEOUT_PREAUTH 60 /* a client logs in within seconds of connecting */
#define CONF_DEFAULT_TIMEOUT_IDLE 1800 /* RFC 3501 5.4: autologout no sooner than 30 min */
#define CONF_DEFAULT_TIMEOUT_CONNECT 30 /* a reachable server answers well within this */
#define CONF_DEFAULT_TIMEOUT_SHUTDOWN 30 /* systemd's stop timeout is 90 s */
#define CONF_DEFAULT_TIMEOUT_LITERAL 60 /* a live client sends some of a literal every few seconds */
#define CONF_DEFAULT_LIMIT_LINE (64 * 1024) /* RFC 7162 asks for at least 8 KiB */
#define CONF_DEFAULT_LIMIT_LITERAL_PREAUTH (8 * 1024) /* a user name or password */
#define CONF_DEFAULT_LIMIT_LITERAL (64ULL << 20) /* a large mail; literals are streamed */
#define CONF_DEFAULT_LIMIT_SESSIONS 1024 /* two descriptors each, within a 4096 fd limit */
#define CONF_MIN_LIMIT_LINE 8192 /* RFC 7162 3.2.2: smaller breaks real clients */
#define CONF_MAX_SECONDS (7 * 24 * 3600) /* longer is a typo, not a wish */
#define CONF_PATH_MAX 256 /* "upstreams[3].users[12]" and the like */

/* Collects the messages of one load. */
struct conf_loader {
	const char *name;
	const char *include_dir;       /* where @include looks; NULL for a string */
	char file_buf[1024];           /* an included file's path, for one message */
	char *errors;
	size_t errors_len;
	unsigned int errors_count;
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

/* Appends one formatted line to the loader's messages. */
static void conf_vreport_line(struct conf_loader *loader, const char *file, int line,
				const char *format, va_list args)
	__attribute__((format(printf, 4, 0)));
static void conf_vreport_line(struct conf_loader *loader, const char *file, int line,
				const char *format, va_list args)
{
	char message[1024];
	char full[1400];
	int len;

	loader->errors_count++;
	if (loader->errors_count > CONF_MAX_ERRORS)
		return;
	vsnprintf(message, sizeof(message), format, args);
	if (loader->errors_count == CONF_MAX_ERRORS)
		snprintf(message, sizeof(message), "too many errors, stopping here");
	if (line > 0)
		len = snprintf(full, sizeof(full), "%s:%d: %s\n", file, line, message);
	else
		len = snprintf(full, sizeof(full), "%s: %s\n", file, message);
	if (len < 0)
		return;
	if ((size_t)len >= sizeof(full))
		len = (int)sizeof(full) - 1;
	loader->errors = realloc(loader->errors, loader->errors_len + (size_t)len + 1);
	if (loader->errors == NULL)
		abort();
	memcpy(loader->errors + loader->errors_len, full, (size_t)len + 1);
	loader->errors_len += (size_t)len;
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

static const char *conf_resolve_file(struct conf_loader *loader, const char *file);

/* The file a setting was written in: an @include'd one (as a path from
   the main file's directory), or the main one. */
static const char *conf_setting_file(struct conf_loader *loader, const config_setting_t *setting)
{
	const char *file = NULL;

	for (; setting != NULL && file == NULL; setting = config_setting_parent(setting))
		file = config_setting_source_file(setting);
	return conf_resolve_file(loader, file);
}

/* A file name as libconfig gives it, as a path from the main file's directory. */
static const char *conf_resolve_file(struct conf_loader *loader, const char *file)
{
	if (file == NULL || strcmp(file, loader->name) == 0)
		return loader->name;
	if (file[0] == '/' || loader->include_dir == NULL)
		return file;
	snprintf(loader->file_buf, sizeof(loader->file_buf), "%s/%s", loader->include_dir, file);
	return loader->file_buf;
}

/* The line a setting was written on, or its nearest parent's. */
static int conf_setting_line(const config_setting_t *setting)
{
	for (; setting != NULL; setting = config_setting_parent(setting)) {
		if (config_setting_source_line(setting) > 0)
			return config_setting_source_line(setting);
	}
	return 0;
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
	conf_report_in(loader, conf_setting_file(loader, setting), conf_setting_line(setting), "%s%s%s",
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
	listener->line = conf_setting_line(setting);
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
	upstream->line = conf_setting_line(setting);
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

static void conf_load_cache(struct conf_loader *loader, const config_setting_t *root,
			      struct conf *config)
{
	static const char *const known[] = { "dir", "body_budget", "body_max_size", NULL };
	const config_setting_t *group = conf_get_group(loader, root, "cache");

	if (group == NULL)
		return;
	conf_check_keys(loader, group, known);
	conf_get_string(loader, group, "dir", &config->cache_dir);
	conf_get_size(loader, group, "body_budget", 0, UINT64_MAX, &config->cache_body_budget);
	conf_get_size(loader, group, "body_max_size", 0, UINT64_MAX, &config->cache_body_max_size);
	if (config->cache_dir[0] != '/')
		conf_report(loader, config_setting_get_member(group, "dir"),
			      "must be an absolute path, not \"%s\"", config->cache_dir);
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
	static const char *const known[] = { "preauth", "idle", "upstream_connect", "shutdown", "literal", NULL };
	const config_setting_t *group = conf_get_group(loader, root, "timeouts");

	if (group == NULL)
		return;
	conf_check_keys(loader, group, known);
	conf_get_uint(loader, group, "preauth", 1, CONF_MAX_SECONDS, &config->timeout_preauth);
	conf_get_uint(loader, group, "idle", 1, CONF_MAX_SECONDS, &config->timeout_idle);
	conf_get_uint(loader, group, "upstream_connect", 1, CONF_MAX_SECONDS,
			&config->timeout_upstream_connect);
	conf_get_uint(loader, group, "shutdown", 0, CONF_MAX_SECONDS, &config->timeout_shutdown);
	conf_get_uint(loader, group, "literal", 1, CONF_MAX_SECONDS, &config->timeout_literal);
}

static void conf_load_limits(struct conf_loader *loader, const config_setting_t *root,
			       struct conf *config)
{
	static const char *const known[] = { "line", "literal_preauth", "literal", "sessions", NULL };
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
}

struct conf *conf_new_defaults(void)
{
	struct conf *config = conf_xcalloc(1, sizeof(*config));

	config->refcount = 1;
	config->listeners = conf_xcalloc(1, sizeof(*config->listeners));
	config->listeners_count = 1;
	conf_listener_defaults(&config->listeners[0]);
	config->cache_dir = conf_xstrdup(CONF_DEFAULT_CACHE_DIR);
	config->cache_body_budget = CONF_DEFAULT_BODY_BUDGET;
	config->cache_body_max_size = CONF_DEFAULT_BODY_MAX_SIZE;
	config->log_level = LOG_LEVEL_INFO;
	config->pool_size = CONF_DEFAULT_POOL_SIZE;
	config->pool_idle_timeout = CONF_DEFAULT_POOL_IDLE;
	config->pool_max_age = CONF_DEFAULT_POOL_MAX_AGE;
	config->timeout_preauth = CONF_DEFAULT_TIMEOUT_PREAUTH;
	config->timeout_idle = CONF_DEFAULT_TIMEOUT_IDLE;
	config->timeout_upstream_connect = CONF_DEFAULT_TIMEOUT_CONNECT;
	config->timeout_shutdown = CONF_DEFAULT_TIMEOUT_SHUTDOWN;
	config->timeout_literal = CONF_DEFAULT_TIMEOUT_LITERAL;
	config->limit_line = CONF_DEFAULT_LIMIT_LINE;
	config->limit_literal_preauth = CONF_DEFAULT_LIMIT_LITERAL_PREAUTH;
	config->limit_literal = CONF_DEFAULT_LIMIT_LITERAL;
	config->limit_sessions = CONF_DEFAULT_LIMIT_SESSIONS;
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
		"listen", "upstreams", "cache", "log", "pool", "timeouts", "limits", NULL
	};
	const config_setting_t *root = config_root_setting(tree);
	struct conf *config = conf_new_defaults();

	config->path = conf_xstrdup(loader->name);
	conf_check_keys(loader, root, known);
	conf_free_listeners(config);
	conf_load_listeners(loader, root, config);
	conf_load_upstreams(loader, root, config);
	conf_load_cache(loader, root, config);
	conf_load_log(loader, root, config);
	conf_load_pool(loader, root, config);
	conf_load_timeouts(loader, root, config);
	conf_load_limits(loader, root, config);
	if (loader->errors_count == 0)
		return config;
	*errors_r = loader->errors;
	loader->errors = NULL;
	conf_unref(&config);
	return NULL;
}

/* Reports a libconfig parse error. */
static char *conf_parse_errors(struct conf_loader *loader, const config_t *tree)
{
	const char *file = config_error_file(tree);
	char *errors;

	if (config_error_type(tree) == CONFIG_ERR_FILE_IO) {
		conf_report_line(loader, 0, "cannot read: %s", strerror(errno));
	} else {
		loader->errors_count++;
		errors = NULL;
		if (asprintf(&errors, "%s:%d: %s\n", conf_resolve_file(loader, file),
			     config_error_line(tree), config_error_text(tree)) < 0)
			abort();
		free(loader->errors);
		return errors;
	}
	errors = loader->errors;
	loader->errors = NULL;
	return errors;
}

struct conf *conf_load(const char *path, char **errors_r)
{
	struct conf_loader loader = { .name = path };
	struct conf *config;
	char *directory;
	config_t tree;

	*errors_r = NULL;
	config_init(&tree);
	/* @include "x.conf" is relative to the including file's directory. */
	directory = strdup(path);
	if (directory == NULL)
		abort();
	loader.include_dir = dirname(directory);
	config_set_include_dir(&tree, loader.include_dir);
	if (config_read_file(&tree, path) != CONFIG_TRUE) {
		*errors_r = conf_parse_errors(&loader, &tree);
		config = NULL;
	} else {
		config = conf_from_tree(&loader, &tree, errors_r);
	}
	config_destroy(&tree);
	free(directory); /* after config_destroy: some libconfig versions keep the pointer */
	return config;
}

struct conf *conf_load_string(const char *text, const char *name, char **errors_r)
{
	struct conf_loader loader = { .name = name };
	struct conf *config;
	config_t tree;

	*errors_r = NULL;
	config_init(&tree);
	if (config_read_string(&tree, text) != CONFIG_TRUE) {
		*errors_r = conf_parse_errors(&loader, &tree);
		config_destroy(&tree);
		return NULL;
	}
	config = conf_from_tree(&loader, &tree, errors_r);
	config_destroy(&tree);
	return config;
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

bool conf_listeners_equal(const struct conf *a, const struct conf *b)
{
	if (a->listeners_count != b->listeners_count)
		return false;
	for (size_t i = 0; i < a->listeners_count; i++) {
		const struct conf_listener *x = &a->listeners[i], *y = &b->listeners[i];

		if (strcmp(x->address, y->address) != 0 || x->port != y->port || x->tls != y->tls)
			return false;
	}
	return true;
}
