/* SPDX-License-Identifier: MIT */
/* ctl-client: imapcachectl's side of the daemon's control socket (see control.h for the protocol). */
#include "config.h"
#include "ctl-client.h"

#include "conf.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sysexits.h>
#include <unistd.h>

#define CTL_CLIENT_DEFAULT_SOCKET "/run/imapcached/control" /* as conf.c's default */

char *ctl_client_socket_path(const struct ctl_client_options *options, FILE *err)
{
	struct conf *config;
	char *errors = NULL;
	char *path;

	if (options->socket_path != NULL)
		return strdup(options->socket_path);
	config = conf_load(options->config_path != NULL ? options->config_path : CONF_DEFAULT_PATH, &errors);
	if (config == NULL) {
		if (options->config_path != NULL) {
			fprintf(err, "imapcachectl: %s", errors);
			free(errors);
			return NULL;
		}
		free(errors);
		return strdup(CTL_CLIENT_DEFAULT_SOCKET);
	}
	path = strdup(config->control_socket);
	conf_unref(&config);
	return path;
}

/* Connects to the socket; returns the fd or -sysexits code after a message. */
static int ctl_client_connect(const char *path, FILE *err)
{
	struct sockaddr_un address = { .sun_family = AF_UNIX };
	int fd;

	if (strlen(path) >= sizeof(address.sun_path)) {
		fprintf(err, "imapcachectl: socket path too long: %s\n", path);
		return -EX_USAGE;
	}
	strcpy(address.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		fprintf(err, "imapcachectl: can't make a socket: %s\n", strerror(errno));
		return -EX_OSERR;
	}
	if (connect(fd, (struct sockaddr *)&address, sizeof(address)) == 0)
		return fd;
	if (errno == EACCES || errno == EPERM) {
		fprintf(err, "imapcachectl: %s: permission denied: run as the user imapcached runs as (or root)\n",
			path);
		close(fd);
		return -EX_NOPERM;
	}
	fprintf(err, "imapcachectl: imapcached is not running, or has no control socket at %s (%s)\n", path,
		strerror(errno));
	close(fd);
	return -EX_UNAVAILABLE;
}

static int ctl_client_send(int fd, const char *const *fields, int count)
{
	size_t size = 1;
	char *line;
	int ret = 0;

	for (int i = 0; i < count; i++)
		size += strlen(fields[i]) + 1;
	line = calloc(1, size);
	if (line == NULL)
		return -1;
	for (int i = 0; i < count; i++) {
		strcat(line, fields[i]);
		strcat(line, i + 1 < count ? "\t" : "\n");
	}
	for (size_t done = 0, length = strlen(line); done < length && ret == 0;) {
		ssize_t n = write(fd, line + done, length - done);

		if (n < 0 && errno != EINTR)
			ret = -1;
		else if (n > 0)
			done += (size_t)n;
	}
	free(line);
	return ret;
}

/* Reads until the daemon closes. Returns the text, or NULL. */
static char *ctl_client_read_all(int fd)
{
	size_t size = 0, capacity = 4096;
	char *text = malloc(capacity);

	while (text != NULL) {
		struct pollfd poll_fd = { .fd = fd, .events = POLLIN };
		ssize_t n;

		if (poll(&poll_fd, 1, CTL_CLIENT_TIMEOUT_SECONDS * 1000) <= 0)
			break;
		if (size + 1 == capacity) {
			char *grown = capacity >= CTL_CLIENT_MAX_ANSWER ? NULL : realloc(text, capacity * 2);

			if (grown == NULL)
				break;
			text = grown;
			capacity *= 2;
		}
		n = read(fd, text + size, capacity - size - 1);
		if (n == 0) {
			text[size] = '\0';
			return text;
		}
		if (n < 0 && errno != EINTR)
			break;
		if (n > 0)
			size += (size_t)n;
	}
	free(text);
	return NULL;
}

/* The sysexits code of the answer's final line, with a message for NO. */
static int ctl_client_final(const char *answer, FILE *err)
{
	size_t length = strlen(answer);
	const char *last;

	if (length == 0 || answer[length - 1] != '\n')
		goto cut;
	last = length >= 2 ? answer + length - 2 : answer;
	while (last > answer && last[-1] != '\n')
		last--;
	if (strcmp(last, "OK\n") == 0)
		return 0;
	if (strncmp(last, "NO\t", 3) == 0) {
		const char *text = strchr(last + 3, '\t');
		int code = strncmp(last + 3, "USAGE\t", 6) == 0 ? EX_USAGE :
			   strncmp(last + 3, "NOUSER\t", 7) == 0 ? EX_NOUSER :
			   strncmp(last + 3, "NOTFOUND\t", 9) == 0 ? EX_NOINPUT : EX_SOFTWARE;

		fprintf(err, "imapcachectl: %s", text != NULL ? text + 1 : "the daemon refused\n");
		return code;
	}
cut:
	fprintf(err, "imapcachectl: the daemon's answer was cut short\n");
	return EX_IOERR;
}

int ctl_client_request(const char *socket_path, const char *const *fields, int count, char **answer_r, FILE *err)
{
	int fd = ctl_client_connect(socket_path, err);
	char *answer;
	int code;

	*answer_r = NULL;
	if (fd < 0)
		return -fd;
	if (ctl_client_send(fd, fields, count) < 0) {
		fprintf(err, "imapcachectl: sending to %s: %s\n", socket_path, strerror(errno));
		close(fd);
		return EX_IOERR;
	}
	answer = ctl_client_read_all(fd);
	close(fd);
	if (answer == NULL) {
		fprintf(err, "imapcachectl: no answer from the daemon at %s\n", socket_path);
		return EX_IOERR;
	}
	code = ctl_client_final(answer, err);
	if (code != 0) {
		free(answer);
		return code;
	}
	*answer_r = answer;
	return 0;
}
