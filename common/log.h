/* SPDX-License-Identifier: MIT */
/* log: leveled, one-line log messages to stderr (the journal under systemd). */
#ifndef IMAPCACHE_LOG_H
#define IMAPCACHE_LOG_H

#include <stdarg.h>
#include <stddef.h>

enum log_level {
	LOG_LEVEL_DEBUG,
	LOG_LEVEL_INFO,
	LOG_LEVEL_WARNING,
	LOG_LEVEL_ERROR,
};

/* Receives each finished line (no newline), already escaped. */
typedef void log_sink_fn(enum log_level level, const char *line, void *context);

/* Messages below level are dropped. The default is LOG_LEVEL_INFO. */
void log_set_level(enum log_level level);
enum log_level log_get_level(void);

/* Parses "debug", "info", "warning" or "error" (case-insensitive).
   Returns 0, or -1 for anything else. */
int log_level_parse(const char *name, enum log_level *level_r);
const char *log_level_name(enum log_level level);

/* With journal_prefix set, lines start with sd-daemon's "<N>" priority
   instead of the level's name, so the journal records the level. */
void log_set_journal_prefix(int journal_prefix);

/* Replaces stderr as the destination; NULL restores stderr. */
void log_set_sink(log_sink_fn *sink, void *context);

/* Whether anything takes syslog(3)'s messages at socket_path (syslog(3)
   writes to _PATH_LOG, "/dev/log"): a datagram or a stream socket
   connects to it. Without one, syslog(3) drops every line silently. */
int log_syslog_available(const char *socket_path);

/* Formats one line. Bytes outside printable ASCII (CR, LF, ESC, 8-bit)
   are written as \xNN so that data from a peer can't forge a log line.
   Lines longer than LOG_LINE_MAX are cut and end in "...". */
void log_message(enum log_level level, const char *format, ...)
	__attribute__((format(printf, 2, 3)));
void log_vmessage(enum log_level level, const char *format, va_list args)
	__attribute__((format(printf, 2, 0)));

#define log_debug(...) log_message(LOG_LEVEL_DEBUG, __VA_ARGS__)
#define log_info(...) log_message(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_warning(...) log_message(LOG_LEVEL_WARNING, __VA_ARGS__)
#define log_error(...) log_message(LOG_LEVEL_ERROR, __VA_ARGS__)

/* Escapes src into dst (dst_size > 0; always NUL-terminated) as
   log_message does. Returns the length written; *truncated_r (may be
   NULL) tells whether src did not fit whole. */
size_t log_escape(char *dst, size_t dst_size, const char *src, int *truncated_r);

#define LOG_LINE_MAX 2048 /* one journal line; longer peer data is cut */

#endif
