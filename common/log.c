/* SPDX-License-Identifier: MIT */
/* log: leveled, one-line log messages to stderr (the journal under systemd). */
#include "config.h"
#include "log.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static enum log_level log_min_level = LOG_LEVEL_INFO;
static int log_journal_prefix;
static log_sink_fn *log_sink;
static void *log_sink_context;

static const char *const log_level_names[] = {
	[LOG_LEVEL_DEBUG] = "debug",
	[LOG_LEVEL_INFO] = "info",
	[LOG_LEVEL_WARNING] = "warning",
	[LOG_LEVEL_ERROR] = "error",
};

/* sd-daemon(3) priorities: debug 7, info 6, warning 4, error 3. */
static const int log_journal_priorities[] = {
	[LOG_LEVEL_DEBUG] = 7,
	[LOG_LEVEL_INFO] = 6,
	[LOG_LEVEL_WARNING] = 4,
	[LOG_LEVEL_ERROR] = 3,
};

void log_set_level(enum log_level level)
{
	log_min_level = level;
}

enum log_level log_get_level(void)
{
	return log_min_level;
}

int log_level_parse(const char *name, enum log_level *level_r)
{
	for (size_t i = 0; i < sizeof(log_level_names) / sizeof(log_level_names[0]); i++) {
		if (strcasecmp(name, log_level_names[i]) == 0) {
			*level_r = (enum log_level)i;
			return 0;
		}
	}
	return -1;
}

const char *log_level_name(enum log_level level)
{
	return log_level_names[level];
}

void log_set_journal_prefix(int journal_prefix)
{
	log_journal_prefix = journal_prefix;
}

void log_set_sink(log_sink_fn *sink, void *context)
{
	log_sink = sink;
	log_sink_context = context;
}

int log_syslog_available(const char *socket_path)
{
	static const int types[] = { SOCK_DGRAM, SOCK_STREAM }; /* as syslog(3) tries them */
	struct sockaddr_un address = { .sun_family = AF_UNIX };

	if (strlen(socket_path) >= sizeof(address.sun_path))
		return 0;
	strcpy(address.sun_path, socket_path);
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		int fd = socket(AF_UNIX, types[i] | SOCK_CLOEXEC, 0);
		int connected = fd >= 0 && connect(fd, (struct sockaddr *)&address, sizeof(address)) == 0;

		if (fd >= 0)
			close(fd);
		if (connected)
			return 1;
	}
	return 0;
}

size_t log_escape(char *dst, size_t dst_size, const char *src, int *truncated_r)
{
	static const char hex[] = "0123456789abcdef";
	size_t out = 0;

	assert(dst_size > 0);
	for (; *src != '\0'; src++) {
		unsigned char c = (unsigned char)*src;
		int printable = c >= 0x20 && c < 0x7f;
		size_t need = printable ? 1 : 4;

		if (out + need >= dst_size)
			break;
		if (printable) {
			dst[out++] = (char)c;
			continue;
		}
		dst[out++] = '\\';
		dst[out++] = 'x';
		dst[out++] = hex[c >> 4];
		dst[out++] = hex[c & 0xf];
	}
	dst[out] = '\0';
	if (truncated_r != NULL)
		*truncated_r = *src != '\0';
	return out;
}

/* Marks a cut line with "..." in its last three characters. */
static void log_mark_truncated(char *line, size_t len)
{
	if (len >= 3)
		memcpy(line + len - 3, "...", 3);
}

void log_vmessage(enum log_level level, const char *format, va_list args)
{
	char raw[LOG_LINE_MAX];
	char line[LOG_LINE_MAX];
	int raw_len, truncated;
	size_t len;

	if (level < log_min_level)
		return;
	raw_len = vsnprintf(raw, sizeof(raw), format, args);
	if (raw_len < 0)
		return;
	len = log_escape(line, sizeof(line), raw, &truncated);
	if (truncated || (size_t)raw_len >= sizeof(raw))
		log_mark_truncated(line, len);

	if (log_sink != NULL) {
		log_sink(level, line, log_sink_context);
	} else if (log_journal_prefix) {
		fprintf(stderr, "<%d>%s\n", log_journal_priorities[level], line);
	} else {
		fprintf(stderr, "imapcached: %s: %s\n", log_level_names[level], line);
	}
}

void log_message(enum log_level level, const char *format, ...)
{
	va_list args;

	va_start(args, format);
	log_vmessage(level, format, args);
	va_end(args);
}
