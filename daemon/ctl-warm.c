/* SPDX-License-Identifier: MIT */
/* ctl-warm: "imapcachectl warm", which fills mailboxes whole by fetching them through the daemon. */
#include "config.h"
#include "ctl-warm.h"

#include "conf.h"

#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sysexits.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define CTL_WARM_MAX_LINE (64 * 1024) /* a response line; FETCH lines here are short */
#define CTL_WARM_BAR_WIDTH 30
#define CTL_WARM_SHOW_SECONDS 0.2 /* the bar is redrawn at most this often: a terminal keeps up, and so does the rate */

const char ctl_warm_usage[] = "warm [--connect HOST:PORT] [--password-file FILE] ACCOUNT MAILBOX...";

static volatile sig_atomic_t ctl_warm_interrupted;

struct ctl_warm_conn {
	int fd;
	char buf[CTL_WARM_MAX_LINE];
	size_t start, len;       /* the unread bytes: buf[start, start + len) */
	uint64_t literal_bytes;  /* bytes of literals skipped so far */
	FILE *err;
};

struct ctl_warm_progress {
	const char *mailbox;
	uint32_t total, done;
	uint64_t bytes;
	struct timespec start;
	double shown;                 /* seconds after start the bar was last drawn */
	bool bar;
	FILE *err;                    /* where the bar goes */
};

static void ctl_warm_on_sigint(int signal_number)
{
	(void)signal_number;
	ctl_warm_interrupted = 1;
}

/* Fills more of conn's buffer. Returns 0, or -1 (closed, error, interrupted). */
static int ctl_warm_fill(struct ctl_warm_conn *conn)
{
	ssize_t n;

	if (conn->len == sizeof(conn->buf))
		return -1;
	/* only the unread end of a line moves: bodies are skipped in place, never moved */
	memmove(conn->buf, conn->buf + conn->start, conn->len);
	conn->start = 0;
	n = recv(conn->fd, conn->buf + conn->len, sizeof(conn->buf) - conn->len, 0);
	if (n <= 0)
		return -1;
	conn->len += (size_t)n;
	return 0;
}

#define CTL_WARM_TAIL 32 /* bytes kept of the end of a line cut short: room for its "{N}" */

/* A line as it is read: its first bytes in line (all that its reader looks
   at: the tag, EXISTS, FETCH), and its last bytes in tail, for the literal
   a line longer than line announces at its end. */
struct ctl_warm_text {
	char *line;
	size_t size, used;
	char tail[CTL_WARM_TAIL + 1]; /* and its NUL */
	size_t tail_len;
};

static void ctl_warm_text_add(struct ctl_warm_text *text, const char *data, size_t len)
{
	size_t room = text->size - 1 - text->used;
	size_t keep = len >= CTL_WARM_TAIL ? 0 : text->tail_len + len > CTL_WARM_TAIL ? CTL_WARM_TAIL - len
										       : text->tail_len;
	size_t added = len >= CTL_WARM_TAIL ? CTL_WARM_TAIL : len;

	memcpy(text->line + text->used, data, len < room ? len : room);
	text->used += len < room ? len : room;
	memmove(text->tail, text->tail + text->tail_len - keep, keep);
	memcpy(text->tail + keep, data + len - added, added);
	text->tail_len = keep + added;
}

/* The next line (NUL-terminated, no CRLF) into line (size bytes); a line
   longer than that keeps its first size - 1 bytes and the rest is read
   and dropped. A literal announced at its end ({N}) is read and
   discarded, counted in literal_bytes, and the line goes on after it.
   Returns 0 or -1. */
static int ctl_warm_line(struct ctl_warm_conn *conn, char *line, size_t size)
{
	struct ctl_warm_text text = { .line = line, .size = size };

	for (;;) {
		char *data = conn->buf + conn->start;
		char *end = memchr(data, '\n', conn->len);
		size_t take = end != NULL ? (size_t)(end - data) + 1 : conn->len;
		unsigned long long literal = 0;
		bool whole;
		char *brace;

		ctl_warm_text_add(&text, data, take);
		conn->start += take;
		conn->len -= take;
		if (end == NULL) {
			if (ctl_warm_fill(conn) < 0)
				return -1;
			continue;
		}
		whole = text.used == 0 || text.line[text.used - 1] == '\n';
		for (size_t n = 0; n < 2 && text.tail_len > 0 && strchr("\r\n", text.tail[text.tail_len - 1]) != NULL; n++) {
			text.tail_len--;
			if (whole)
				text.used--;
		}
		line[text.used] = '\0';
		text.tail[text.tail_len] = '\0';
		brace = text.tail_len > 0 && text.tail[text.tail_len - 1] == '}' ? strrchr(text.tail, '{') : NULL;
		if (brace == NULL || sscanf(brace, "{%llu}", &literal) != 1)
			return 0;
		while (literal > 0) {
			size_t skip;

			if (conn->len == 0 && ctl_warm_fill(conn) < 0)
				return -1;
			skip = conn->len < literal ? conn->len : (size_t)literal;
			conn->start += skip;
			conn->len -= skip;
			literal -= skip;
			conn->literal_bytes += skip;
		}
		if (whole) /* the line goes on after the literal */
			text.used -= (size_t)(text.tail + text.tail_len - brace);
		text.tail_len = 0;
	}
}

static int ctl_warm_send(struct ctl_warm_conn *conn, const char *text)
{
	size_t length = strlen(text);

	while (length > 0) {
		ssize_t n = send(conn->fd, text, length, MSG_NOSIGNAL);

		if (n <= 0)
			return -1;
		text += n;
		length -= (size_t)n;
	}
	return 0;
}

/* text as an IMAP quoted string into out (size bytes). Returns -1 when
   it can't be one (CR, LF, NUL) or is too long. */
static int ctl_warm_quote(const char *text, char *out, size_t size)
{
	size_t used = 0;

	if (size < 3)
		return -1;
	out[used++] = '"';
	for (const char *c = text; *c != '\0'; c++) {
		if (*c == '\r' || *c == '\n' || used + 4 >= size)
			return -1;
		if (*c == '"' || *c == '\\')
			out[used++] = '\\';
		out[used++] = *c;
	}
	out[used++] = '"';
	out[used] = '\0';
	return 0;
}

/* Sends "tag text" and reads to the tagged line; *exists_r (may be NULL)
   gets an untagged EXISTS; progress (may be NULL) counts FETCH lines.
   Returns 1 for OK, 0 for NO or BAD (the line in last), -1 on I/O error. */
static void ctl_warm_progress_line(struct ctl_warm_conn *conn, struct ctl_warm_progress *progress);

static int ctl_warm_command(struct ctl_warm_conn *conn, const char *tag, const char *text, uint32_t *exists_r,
			    struct ctl_warm_progress *progress, char *last, size_t last_size)
{
	char line[CTL_WARM_MAX_LINE];
	size_t tag_length = strlen(tag);

	if (ctl_warm_send(conn, tag) < 0 || ctl_warm_send(conn, " ") < 0 || ctl_warm_send(conn, text) < 0 ||
	    ctl_warm_send(conn, "\r\n") < 0)
		return -1;
	for (;;) {
		unsigned long number;
		int matched = 0; /* sscanf counts conversions, not the words after them */

		if (ctl_warm_line(conn, line, sizeof(line)) < 0)
			return -1;
		if (strncmp(line, tag, tag_length) == 0 && line[tag_length] == ' ') {
			size_t length = strnlen(line, last_size - 1);

			memcpy(last, line, length);
			last[length] = '\0';
			return strncmp(line + tag_length + 1, "OK", 2) == 0 ? 1 : 0;
		}
		if (exists_r != NULL && sscanf(line, "* %lu EXISTS%n", &number, &matched) == 1 && matched > 0)
			*exists_r = (uint32_t)number;
		if (progress != NULL && sscanf(line, "* %lu FETCH %n", &number, &matched) == 1 && matched > 0)
			ctl_warm_progress_line(conn, progress);
	}
}

static double ctl_warm_elapsed(const struct ctl_warm_progress *progress)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - progress->start.tv_sec) + (double)(now.tv_nsec - progress->start.tv_nsec) / 1e9;
}

/* The bar on a terminal: messages, MB, rate, time left. */
static void ctl_warm_show(const struct ctl_warm_progress *progress, FILE *err)
{
	double seconds = ctl_warm_elapsed(progress);
	double mb = (double)progress->bytes / 1e6;
	double rate = seconds > 0 ? mb / seconds : 0;
	double left = progress->done > 0 ? seconds * (progress->total - progress->done) / progress->done : 0;
	unsigned int filled = progress->total > 0 ? CTL_WARM_BAR_WIDTH * progress->done / progress->total : 0;
	char bar[CTL_WARM_BAR_WIDTH + 1];

	memset(bar, '#', filled);
	memset(bar + filled, ' ', CTL_WARM_BAR_WIDTH - filled);
	bar[CTL_WARM_BAR_WIDTH] = '\0';
	fprintf(err, "\r%s [%s] %u/%u msgs %.1f MB %.1f MB/s %d:%02d left ", progress->mailbox, bar, progress->done,
		progress->total, mb, rate, (int)left / 60, (int)left % 60);
	fflush(err);
}

/* One FETCH line came: counted, and the bar redrawn now and then. */
static void ctl_warm_progress_line(struct ctl_warm_conn *conn, struct ctl_warm_progress *progress)
{
	double now;

	progress->done++;
	progress->bytes = conn->literal_bytes;
	if (!progress->bar)
		return;
	now = ctl_warm_elapsed(progress);
	if (now - progress->shown < CTL_WARM_SHOW_SECONDS && progress->done != progress->total)
		return;
	progress->shown = now;
	ctl_warm_show(progress, progress->err);
}

/* EXAMINEs mailbox and fetches every message with one FETCH, whose
   bodies stream through (the daemon stores each as it passes, and holds
   one piece of one at a time): one round trip for the mailbox, not one
   per batch. Returns 0 or a sysexits code. */
static int ctl_warm_mailbox(struct ctl_warm_conn *conn, const char *mailbox, bool bar, FILE *out, FILE *err)
{
	struct ctl_warm_progress progress = { .mailbox = mailbox, .bar = bar, .err = err };
	char quoted[2 * 1024 + 3], command[sizeof(quoted) + 16], last[512];
	int ret;

	if (ctl_warm_quote(mailbox, quoted, sizeof(quoted)) < 0) {
		fprintf(err, "imapcachectl: %s: not a mailbox name imapcachectl can send\n", mailbox);
		return EX_USAGE;
	}
	snprintf(command, sizeof(command), "EXAMINE %s", quoted);
	ret = ctl_warm_command(conn, "e", command, &progress.total, NULL, last, sizeof(last));
	if (ret <= 0) {
		fprintf(err, "imapcachectl: %s: %s\n", mailbox, ret < 0 ? "connection lost" : last);
		return ret < 0 ? EX_IOERR : EX_DATAERR;
	}
	clock_gettime(CLOCK_MONOTONIC, &progress.start);
	conn->literal_bytes = 0;
	if (progress.total > 0 && !ctl_warm_interrupted) {
		snprintf(command, sizeof(command), "FETCH 1:%u (BODY.PEEK[])", progress.total);
		ret = ctl_warm_command(conn, "w", command, NULL, &progress, last, sizeof(last));
		progress.bytes = conn->literal_bytes;
		if (ret < 0)
			return ctl_warm_interrupted ? CTL_WARM_EXIT_INTERRUPTED : EX_IOERR;
		if (bar)
			ctl_warm_show(&progress, err);
	}
	if (ctl_warm_interrupted)
		return CTL_WARM_EXIT_INTERRUPTED;
	if (bar)
		fprintf(err, "\n");
	fprintf(out, "%s: %u messages, %.1f MB in %.1f s\n", mailbox, progress.done, (double)progress.bytes / 1e6,
		ctl_warm_elapsed(&progress));
	fflush(out);
	return 0;
}

int ctl_warm_read_password(const char *file, char *password, size_t size, FILE *err)
{
	FILE *in = NULL;
	struct termios saved, quiet;
	bool prompt = false;
	size_t length;

	if (file != NULL)
		in = fopen(file, "r");
	else if (!isatty(STDIN_FILENO))
		in = stdin;
	else if ((in = fopen("/dev/tty", "r+")) != NULL)
		prompt = true;
	if (in == NULL) {
		fprintf(err, "imapcachectl: can't read the password from %s: %s\n", file != NULL ? file : "the terminal",
			strerror(errno));
		return EX_NOINPUT;
	}
	if (prompt && tcgetattr(fileno(in), &saved) == 0) {
		quiet = saved;
		quiet.c_lflag &= ~(tcflag_t)ECHO;
		fprintf(in, "Password: ");
		fflush(in);
		tcsetattr(fileno(in), TCSAFLUSH, &quiet);
	}
	if (fgets(password, (int)size, in) == NULL)
		password[0] = '\0';
	if (prompt) {
		tcsetattr(fileno(in), TCSAFLUSH, &saved);
		fprintf(in, "\n");
	}
	if (in != stdin)
		fclose(in);
	length = strcspn(password, "\r\n");
	if (length == size - 1 && password[length] == '\0') {
		fprintf(err, "imapcachectl: the password is longer than %d bytes\n", CTL_WARM_MAX_PASSWORD);
		return EX_DATAERR;
	}
	password[length] = '\0';
	return 0;
}

/* Connects to HOST:PORT (connect, else the config's first plaintext listener). Returns fd or -code. */
static int ctl_warm_connect(const struct ctl_client_options *options, const char *connect_to, FILE *err)
{
	char host[256] = "", port[16] = "";
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *found = NULL;
	struct timeval timeout = { CTL_WARM_TIMEOUT_SECONDS, 0 };
	int fd = -1;

	if (connect_to != NULL) {
		const char *colon = strrchr(connect_to, ':');

		if (colon == NULL || colon == connect_to || (size_t)(colon - connect_to) >= sizeof(host) ||
		    strlen(colon + 1) >= sizeof(port)) {
			fprintf(err, "imapcachectl: --connect wants HOST:PORT, not %s\n", connect_to);
			return -EX_USAGE;
		}
		memcpy(host, connect_to, (size_t)(colon - connect_to));
		snprintf(port, sizeof(port), "%s", colon + 1);
	} else {
		char *errors = NULL;
		struct conf *config = conf_load(options->config_path != NULL ? options->config_path : CONF_DEFAULT_PATH,
						&errors);

		for (size_t i = 0; config != NULL && i < config->listeners_count && host[0] == '\0'; i++) {
			if (config->listeners[i].tls != CONF_TLS_NONE)
				continue;
			snprintf(host, sizeof(host), "%s", strcmp(config->listeners[i].address, "0.0.0.0") == 0 ? "127.0.0.1" :
				 strcmp(config->listeners[i].address, "::") == 0 ? "::1" : config->listeners[i].address);
			snprintf(port, sizeof(port), "%u", config->listeners[i].port);
		}
		if (config == NULL)
			fprintf(err, "imapcachectl: %s", errors);
		free(errors);
		conf_unref(&config);
		if (host[0] == '\0') {
			fprintf(err, "imapcachectl: no listener with tls = \"none\" in the configuration: give --connect HOST:PORT\n");
			return -EX_CONFIG;
		}
	}
	if (getaddrinfo(host[0] == '[' ? host + 1 : host, port, &hints, &found) == 0) {
		fd = socket(found->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd >= 0 && connect(fd, found->ai_addr, found->ai_addrlen) < 0) {
			close(fd);
			fd = -1;
		}
		freeaddrinfo(found);
	}
	if (fd < 0) {
		fprintf(err, "imapcachectl: imapcached does not answer at %s:%s (%s)\n", host, port, strerror(errno));
		return -EX_UNAVAILABLE;
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
	return fd;
}

/* Logs in as account. Returns 0 or a sysexits code. */
static int ctl_warm_login(struct ctl_warm_conn *conn, const char *account, const char *password, FILE *err)
{
	char user[2 * 256 + 3], secret[2 * CTL_WARM_MAX_PASSWORD + 3], command[sizeof(user) + sizeof(secret) + 8];
	char greeting[CTL_WARM_MAX_LINE], last[512];
	int ret;

	if (ctl_warm_line(conn, greeting, sizeof(greeting)) < 0 || strncmp(greeting, "* OK", 4) != 0) {
		fprintf(err, "imapcachectl: the daemon's listener did not greet\n");
		return EX_PROTOCOL;
	}
	if (ctl_warm_quote(account, user, sizeof(user)) < 0 || ctl_warm_quote(password, secret, sizeof(secret)) < 0) {
		fprintf(err, "imapcachectl: the account or password can't be sent in a LOGIN\n");
		return EX_DATAERR;
	}
	snprintf(command, sizeof(command), "LOGIN %s %s", user, secret);
	ret = ctl_warm_command(conn, "l", command, NULL, NULL, last, sizeof(last));
	explicit_bzero(command, sizeof(command));
	explicit_bzero(secret, sizeof(secret));
	if (ret <= 0) {
		fprintf(err, "imapcachectl: login as %s: %s\n", account, ret < 0 ? "connection lost" : last);
		return ret < 0 ? EX_IOERR : EX_NOPERM;
	}
	return 0;
}

/* Takes warm's options; returns the index of ACCOUNT, or -1. */
static int ctl_warm_options(int argc, char **argv, const char **connect_r, const char **password_file_r)
{
	int i = 1;

	while (i + 1 < argc && argv[i][0] == '-') {
		if (strcmp(argv[i], "--connect") == 0)
			*connect_r = argv[i + 1];
		else if (strcmp(argv[i], "--password-file") == 0)
			*password_file_r = argv[i + 1];
		else
			return -1;
		i += 2;
	}
	return argc - i >= 2 && argv[i][0] != '-' ? i : -1;
}

int ctl_warm_run(const struct ctl_client_options *options, int argc, char **argv, FILE *out, FILE *err)
{
	const char *connect_to = NULL, *password_file = NULL;
	struct sigaction action = { .sa_handler = ctl_warm_on_sigint };
	struct ctl_warm_conn *conn;
	char password[CTL_WARM_MAX_PASSWORD + 2];
	int first = ctl_warm_options(argc, argv, &connect_to, &password_file);
	int code;

	if (first < 0) {
		fprintf(err, "usage: imapcachectl %s\n", ctl_warm_usage);
		return EX_USAGE;
	}
	code = ctl_warm_read_password(password_file, password, sizeof(password), err);
	if (code != 0)
		return code;
	conn = calloc(1, sizeof(*conn));
	if (conn == NULL)
		return EX_OSERR;
	conn->fd = ctl_warm_connect(options, connect_to, err);
	if (conn->fd < 0) {
		code = -conn->fd;
		free(conn);
		explicit_bzero(password, sizeof(password));
		return code;
	}
	sigemptyset(&action.sa_mask);
	sigaction(SIGINT, &action, NULL); /* no SA_RESTART: a blocked read returns at once */
	code = ctl_warm_login(conn, argv[first], password, err);
	explicit_bzero(password, sizeof(password));
	for (int i = first + 1; i < argc && code == 0; i++)
		code = ctl_warm_mailbox(conn, argv[i], isatty(STDERR_FILENO), out, err);
	if (code == CTL_WARM_EXIT_INTERRUPTED)
		fprintf(err, "\nimapcachectl: interrupted: the message being fetched is not kept\n");
	else if (code == 0)
		(void)ctl_warm_send(conn, "z LOGOUT\r\n");
	close(conn->fd);
	free(conn);
	return code;
}
