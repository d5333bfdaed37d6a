/* SPDX-License-Identifier: MIT */
/* control: the UNIX control socket through which imapcachectl reads and changes the live cache. */
#include "config.h"
#include "control.h"

#include "cache-stats.h"
#include "cache.h"
#include "control-digest.h"
#include "log.h"

#include <errno.h>
#include <event2/bufferevent.h>
#include <event2/listener.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

struct control {
	char *path;
	int fd;
	struct evconnlistener *listener;
	struct conf *conf;
};

/* ---- the request ---- */

void control_request_clear(struct control_request *request)
{
	free(request->account);
	free(request->mailbox);
	memset(request, 0, sizeof(*request));
}

/* Splits line (NUL-terminated, no LF) at TABs into fields_r. Returns the
   count, or -1 when there are too many or one is empty or has a CR. */
static int control_split(char *line, char **fields_r)
{
	int count = 0;

	for (char *field = line;; count++) {
		char *tab = strchr(field, '\t');

		if (count == CONTROL_MAX_FIELDS || field[0] == '\0' || field == tab)
			return -1;
		fields_r[count] = field;
		if (tab == NULL)
			break;
		*tab = '\0';
		field = tab + 1;
	}
	for (int i = 0; i <= count; i++) {
		if (strchr(fields_r[i], '\r') != NULL)
			return -1;
	}
	return count + 1;
}

/* DIGEST's fields: an account, a mailbox, and a UID to start from (1 when
   not given). Returns 0 with *first_uid_r, or -1. */
static int control_parse_digest(char **fields, int count, uint32_t *first_uid_r, const char **error_r)
{
	char *end;
	unsigned long uid;

	*first_uid_r = 1;
	if (count < 3) {
		*error_r = "DIGEST needs an account and a mailbox";
		return -1;
	}
	if (count < 4)
		return 0;
	errno = 0;
	uid = strtoul(fields[3], &end, 10);
	if (fields[3][0] < '1' || fields[3][0] > '9' || *end != '\0' || errno != 0 || uid > UINT32_MAX) {
		*error_r = "DIGEST's UID is not a number from 1 to 4294967295";
		return -1;
	}
	*first_uid_r = (uint32_t)uid;
	return 0;
}

static int control_fill_request(char **fields, int count, struct control_request *request_r, const char **error_r)
{
	if (strcmp(fields[0], "STATS") == 0) {
		request_r->verb = CONTROL_VERB_STATS;
	} else if (strcmp(fields[0], "PURGE") == 0) {
		request_r->verb = CONTROL_VERB_PURGE;
		if (count < 2) {
			*error_r = "PURGE needs an account";
			return -1;
		}
	} else if (strcmp(fields[0], "DIGEST") == 0) {
		request_r->verb = CONTROL_VERB_DIGEST;
		if (control_parse_digest(fields, count, &request_r->first_uid, error_r) < 0)
			return -1;
	} else {
		*error_r = "unknown request";
		return -1;
	}
	if (request_r->verb != CONTROL_VERB_DIGEST && count > 3) {
		*error_r = "too many fields";
		return -1;
	}
	request_r->account = count > 1 ? strdup(fields[1]) : NULL;
	request_r->mailbox = count > 2 ? strdup(fields[2]) : NULL;
	if ((count > 1 && request_r->account == NULL) || (count > 2 && request_r->mailbox == NULL)) {
		control_request_clear(request_r);
		*error_r = "out of memory";
		return -1;
	}
	return 0;
}

enum control_parse_result control_parse_request(const char *input, size_t size,
						struct control_request *request_r, const char **error_r)
{
	const char *end = memchr(input, '\n', size < CONTROL_MAX_REQUEST ? size : CONTROL_MAX_REQUEST);
	char *fields[CONTROL_MAX_FIELDS];
	char *line;
	int count;

	memset(request_r, 0, sizeof(*request_r));
	if (end == NULL) {
		if (size < CONTROL_MAX_REQUEST)
			return CONTROL_PARSE_NEED_MORE;
		*error_r = "request too long";
		return CONTROL_PARSE_ERROR;
	}
	if (memchr(input, '\0', (size_t)(end - input)) != NULL) {
		*error_r = "NUL in request";
		return CONTROL_PARSE_ERROR;
	}
	line = strndup(input, (size_t)(end - input));
	if (line == NULL) {
		*error_r = "out of memory";
		return CONTROL_PARSE_ERROR;
	}
	count = control_split(line, fields);
	if (count < 0) {
		*error_r = "malformed request (empty field, CR, or too many fields)";
		free(line);
		return CONTROL_PARSE_ERROR;
	}
	count = control_fill_request(fields, count, request_r, error_r);
	free(line);
	return count < 0 ? CONTROL_PARSE_ERROR : CONTROL_PARSE_DONE;
}

/* ---- running it ---- */

/* Whether text can go into a reply field as it is. */
static bool control_field_ok(const char *text)
{
	return strpbrk(text, "\t\r\n") == NULL;
}

/* Opens the existing store of account (never makes one). Returns 1 with
   *cache_r, 0 when the account has no store, -1 on error. */
static int control_open_store(const struct conf *config, const char *account, struct cache **cache_r)
{
	const struct conf_upstream *upstream = conf_upstream_for_user(config, account);
	const struct cache_settings settings = {
		.dir = config->cache_dir,
		.body_budget = config->cache_body_budget,
		.body_max_size = config->cache_body_max_size,
	};
	struct stat st;
	const char *error;
	char *path;

	*cache_r = NULL;
	if (upstream == NULL)
		return 0;
	path = cache_file_path(config->cache_dir, upstream->name, account);
	if (path == NULL)
		return -1;
	if (stat(path, &st) < 0) {
		free(path);
		return errno == ENOENT ? 0 : -1;
	}
	free(path);
	*cache_r = cache_open(&settings, upstream->name, account, &error);
	if (*cache_r == NULL) {
		log_warning("control: store of %s: %s", account, error);
		return -1;
	}
	return 1;
}

static const char control_stats_sql[] =
	"SELECT mb.name,"
	" (SELECT COUNT(*) FROM messages m WHERE m.mailbox_id = mb.id),"
	" (SELECT COUNT(*) FROM bodies b WHERE b.mailbox_id = mb.id AND b.complete = 1),"
	" (SELECT COALESCE(SUM(b.size), 0) FROM bodies b WHERE b.mailbox_id = mb.id AND b.complete = 1),"
	" (SELECT COUNT(*) FROM bodies b WHERE b.mailbox_id = mb.id AND b.complete = 1 AND b.text_indexed = 1)"
	" FROM mailboxes mb WHERE (?1 IS NULL OR mb.name = ?1) AND typeof(mb.name) = 'text' ORDER BY mb.name";

/* Appends a MAILBOX line per stored mailbox of account (mailbox: only
   that one). Returns how many, or -1. */
static int control_stats_account(struct cache *cache, const char *account, const char *mailbox, struct evbuffer *out)
{
	sqlite3_stmt *stmt;
	int count = 0;
	int ret;

	if (sqlite3_prepare_v2(cache_sqlite_handle(cache), control_stats_sql, -1, &stmt, NULL) != SQLITE_OK)
		return -1;
	if (mailbox != NULL)
		sqlite3_bind_text(stmt, 1, mailbox, -1, SQLITE_STATIC);
	while ((ret = sqlite3_step(stmt)) == SQLITE_ROW) {
		const char *name = (const char *)sqlite3_column_text(stmt, 0);

		if (name == NULL || !control_field_ok(name))
			continue;
		evbuffer_add_printf(out, "MAILBOX\t%s\t%s\t%lld\t%lld\t%lld\t%lld\n", account, name,
				    (long long)sqlite3_column_int64(stmt, 1), (long long)sqlite3_column_int64(stmt, 2),
				    (long long)sqlite3_column_int64(stmt, 3), (long long)sqlite3_column_int64(stmt, 4));
		count++;
	}
	sqlite3_finalize(stmt);
	return ret == SQLITE_DONE ? count : -1;
}

/* cache_stats_foreach's callback: a mailbox's MAILBOXITEM lines (the
   kinds counted) and its MAILBOXSAVED line. */
static void control_stats_mailbox(const char *account, const char *mailbox, const struct cache_stats_counts *counts,
				  void *context)
{
	struct evbuffer *out = context;

	if (!control_field_ok(account) || !control_field_ok(mailbox))
		return;
	for (unsigned int item = 0; item < CACHE_STATS_KINDS; item++) {
		if (counts->hits[item] + counts->misses[item] == 0)
			continue;
		evbuffer_add_printf(out, "MAILBOXITEM\t%s\t%s\t%s\t%llu\t%llu\n", account, mailbox,
				    cache_stats_kind_name((enum cache_item)item), (unsigned long long)counts->hits[item],
				    (unsigned long long)counts->misses[item]);
	}
	evbuffer_add_printf(out, "MAILBOXSAVED\t%s\t%s\t%llu\n", account, mailbox, (unsigned long long)counts->saved);
}

/* The accounts counted since start, each once, for STATS of every account. */
struct control_accounts {
	const char **names;
	size_t count;
};

static void control_collect_account(const char *account, const char *mailbox, const struct cache_stats_counts *counts,
				    void *context)
{
	struct control_accounts *accounts = context;
	const char **grown;

	(void)mailbox;
	(void)counts;
	for (size_t i = 0; i < accounts->count; i++) {
		if (strcmp(accounts->names[i], account) == 0)
			return;
	}
	grown = realloc(accounts->names, (accounts->count + 1) * sizeof(*grown));
	if (grown == NULL)
		return;
	accounts->names = grown;
	accounts->names[accounts->count++] = account;
}

/* STATS of every account the daemon counted since start: the MAILBOX
   lines of their stores, then every mailbox's counts. */
static void control_stats_everyone(const struct conf *config, struct evbuffer *out)
{
	struct control_accounts accounts = { 0 };

	cache_stats_foreach(NULL, NULL, control_collect_account, &accounts);
	for (size_t i = 0; i < accounts.count; i++) {
		struct cache *cache;

		if (control_field_ok(accounts.names[i]) && control_open_store(config, accounts.names[i], &cache) > 0) {
			(void)control_stats_account(cache, accounts.names[i], NULL, out);
			cache_unref(&cache);
		}
	}
	free(accounts.names);
	cache_stats_foreach(NULL, NULL, control_stats_mailbox, out);
}

/* Appends the daemon-wide ITEM and SAVED lines. */
static void control_stats_counters(struct evbuffer *out)
{
	const char *name;

	for (unsigned int item = 0; (name = cache_stats_kind_name((enum cache_item)item)) != NULL; item++) {
		uint64_t hits, misses;

		cache_stats_get((enum cache_item)item, &hits, &misses);
		evbuffer_add_printf(out, "ITEM\t%s\t%llu\t%llu\n", name, (unsigned long long)hits,
				    (unsigned long long)misses);
	}
	evbuffer_add_printf(out, "SAVED\t%llu\n", (unsigned long long)cache_stats_saved_bytes());
}

/* Collects the names of every mailbox of cache into *names_r (malloc'd,
   NULL when none). Returns 0, or -1. */
static int control_list_mailboxes(struct cache *cache, char ***names_r, size_t *count_r)
{
	sqlite3_stmt *stmt;
	char **names = NULL;
	size_t count = 0;
	int ret;

	*names_r = NULL;
	*count_r = 0;
	if (sqlite3_prepare_v2(cache_sqlite_handle(cache), "SELECT name FROM mailboxes WHERE typeof(name) = 'text' ORDER BY name", -1, &stmt,
			       NULL) != SQLITE_OK)
		return -1;
	while ((ret = sqlite3_step(stmt)) == SQLITE_ROW) {
		char **grown = realloc(names, (count + 1) * sizeof(*names));

		if (grown == NULL)
			break;
		names = grown;
		names[count] = strdup((const char *)sqlite3_column_text(stmt, 0));
		if (names[count] == NULL)
			break;
		count++;
	}
	sqlite3_finalize(stmt);
	if (ret != SQLITE_DONE) {
		for (size_t i = 0; i < count; i++)
			free(names[i]);
		free(names);
		return -1;
	}
	*names_r = names;
	*count_r = count;
	return 0;
}

/* Drops mailbox (NULL: every mailbox) of the store; PURGED lines to out.
   Returns 0, or -1 when a drop failed. */
static int control_purge_store(struct cache *cache, const char *account, const char *mailbox,
			       struct evbuffer *out)
{
	char **names = NULL;
	size_t count = 1;
	int result = 0;

	if (mailbox == NULL) {
		if (control_list_mailboxes(cache, &names, &count) < 0)
			return -1;
	}
	for (size_t i = 0; i < count && result == 0; i++) {
		const char *name = mailbox != NULL ? mailbox : names[i];

		result = cache_mailbox_delete(cache, name);
		if (result == 0 && control_field_ok(name))
			evbuffer_add_printf(out, "PURGED\t%s\t%s\n", account, name);
	}
	for (size_t i = 0; names != NULL && i < count; i++)
		free(names[i]);
	free(names);
	return result;
}

static int control_reply_no(struct evbuffer *out, const char *code, const char *text)
{
	evbuffer_add_printf(out, "NO\t%s\t%s\n", code, text);
	return -1;
}

static int control_run_stats(const struct conf *config, const struct control_request *request,
			     struct cache *cache, struct evbuffer *out)
{
	int count = control_stats_account(cache, request->account, request->mailbox, out);

	if (count < 0)
		return control_reply_no(out, "SOFTWARE", "reading the store failed (see the daemon's log)");
	if (count == 0 && request->mailbox != NULL)
		return control_reply_no(out, "NOTFOUND", "no such mailbox in the account's store");
	(void)config;
	cache_stats_foreach(request->account, request->mailbox, control_stats_mailbox, out);
	return 0;
}

static int control_run_purge(const struct control_request *request, struct cache *cache, struct evbuffer *out)
{
	struct cache_mailbox stored;

	if (request->mailbox != NULL && cache_mailbox_lookup(cache, request->mailbox, &stored) == 0)
		return control_reply_no(out, "NOTFOUND", "no such mailbox in the account's store");
	if (control_purge_store(cache, request->account, request->mailbox, out) < 0)
		return control_reply_no(out, "SOFTWARE", "dropping failed (see the daemon's log)");
	log_info("control: purged %s%s%s", request->account, request->mailbox != NULL ? " " : "",
		 request->mailbox != NULL ? request->mailbox : "");
	return 0;
}

static int control_run_digest(const struct control_request *request, struct cache *cache, struct evbuffer *out)
{
	switch (control_digest_mailbox(cache, request->mailbox, request->first_uid, out)) {
	case CONTROL_DIGEST_DONE:
		return 0;
	case CONTROL_DIGEST_NO_MAILBOX:
		return control_reply_no(out, "NOTFOUND", "no such mailbox in the account's store");
	case CONTROL_DIGEST_FAILED:
		break;
	}
	return control_reply_no(out, "SOFTWARE", "reading the store failed (see the daemon's log)");
}

int control_handle_request(const struct conf *config, const struct control_request *request,
			   struct evbuffer *out)
{
	struct cache *cache = NULL;
	int ret;

	if (request->account == NULL) {
		/* STATS of the whole daemon */
		control_stats_everyone(config, out);
		control_stats_counters(out);
		evbuffer_add_printf(out, "OK\n");
		return 0;
	}
	ret = control_open_store(config, request->account, &cache);
	if (ret < 0)
		return control_reply_no(out, "SOFTWARE", "the account's store can't be opened (see the daemon's log)");
	if (ret == 0)
		return control_reply_no(out, "NOUSER", "no such account (no store for it)");
	if (request->verb == CONTROL_VERB_STATS)
		ret = control_run_stats(config, request, cache, out);
	else if (request->verb == CONTROL_VERB_DIGEST)
		ret = control_run_digest(request, cache, out);
	else
		ret = control_run_purge(request, cache, out);
	cache_unref(&cache);
	if (ret < 0)
		return -1;
	if (request->verb == CONTROL_VERB_STATS)
		control_stats_counters(out);
	evbuffer_add_printf(out, "OK\n");
	return 0;
}

/* ---- the socket ---- */

static void control_event(struct bufferevent *bev, short events, void *context)
{
	(void)events;
	(void)context;
	bufferevent_free(bev);
}

static void control_written(struct bufferevent *bev, void *context)
{
	(void)context;
	if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		bufferevent_free(bev);
}

static void control_read(struct bufferevent *bev, void *context)
{
	struct control *control = context;
	struct evbuffer *input = bufferevent_get_input(bev);
	struct evbuffer *output = bufferevent_get_output(bev);
	size_t size = evbuffer_get_length(input);
	struct control_request request;
	enum control_parse_result result;
	const char *error;

	if (size > CONTROL_MAX_REQUEST)
		size = CONTROL_MAX_REQUEST;
	result = control_parse_request((const char *)evbuffer_pullup(input, (ssize_t)size), size, &request, &error);
	if (result == CONTROL_PARSE_NEED_MORE)
		return;
	bufferevent_disable(bev, EV_READ);
	if (result == CONTROL_PARSE_ERROR) {
		log_info("control: bad request: %s", error);
		control_reply_no(output, "USAGE", error);
	} else {
		control_handle_request(control->conf, &request, output);
		control_request_clear(&request);
	}
	bufferevent_setcb(bev, NULL, control_written, control_event, control);
}

static void control_accept(struct evconnlistener *listener, evutil_socket_t fd, struct sockaddr *address,
			   int length, void *context)
{
	struct bufferevent *bev =
		bufferevent_socket_new(evconnlistener_get_base(listener), fd, BEV_OPT_CLOSE_ON_FREE);
	struct timeval timeout = { CONTROL_TIMEOUT_SECONDS, 0 };

	(void)address;
	(void)length;
	if (bev == NULL) {
		evutil_closesocket(fd);
		return;
	}
	bufferevent_setcb(bev, control_read, NULL, control_event, context);
	bufferevent_set_timeouts(bev, &timeout, &timeout);
	bufferevent_enable(bev, EV_READ);
}

/* Whether a process accepts connections on the socket at path. */
static bool control_socket_live(const char *path)
{
	struct sockaddr_un address = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	bool live;

	if (fd < 0)
		return false;
	strcpy(address.sun_path, path); /* the caller checked its length */
	live = connect(fd, (struct sockaddr *)&address, sizeof(address)) == 0;
	close(fd);
	return live;
}

/* Removes a socket left at path by a daemon that died; refuses any other
   file, and a socket another daemon still listens on. */
static int control_remove_stale(const char *path, const char **error_r)
{
	struct stat st;

	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : (*error_r = "can't look at the socket path", -1);
	if (!S_ISSOCK(st.st_mode)) {
		*error_r = "a file that is not a socket is in the way";
		return -1;
	}
	if (control_socket_live(path)) {
		*error_r = "another imapcached listens on it (give each daemon its own control.socket)";
		return -1;
	}
	if (unlink(path) < 0) {
		*error_r = "can't remove the old socket";
		return -1;
	}
	return 0;
}

struct control *control_new(const char *path, const char **error_r)
{
	struct sockaddr_un address = { .sun_family = AF_UNIX };
	struct control *control;
	mode_t old_mask;
	int fd;

	if (strlen(path) >= sizeof(address.sun_path)) {
		*error_r = "socket path too long";
		return NULL;
	}
	if (control_remove_stale(path, error_r) < 0)
		return NULL;
	strcpy(address.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		*error_r = "can't make a socket";
		return NULL;
	}
	old_mask = umask(0177); /* the socket is made 0600: only the daemon's user may control it */
	if (bind(fd, (struct sockaddr *)&address, sizeof(address)) < 0) {
		umask(old_mask);
		*error_r = errno == ENOENT ? "its directory does not exist" : "can't bind the socket";
		close(fd);
		return NULL;
	}
	umask(old_mask);
	if (chmod(path, 0600) < 0 || listen(fd, 16) < 0) {
		*error_r = "can't listen on the socket";
		unlink(path);
		close(fd);
		return NULL;
	}
	control = calloc(1, sizeof(*control));
	if (control == NULL || (control->path = strdup(path)) == NULL) {
		free(control);
		unlink(path);
		close(fd);
		*error_r = "out of memory";
		return NULL;
	}
	control->fd = fd;
	return control;
}

int control_start(struct control *control, struct event_base *base, struct conf *config)
{
	control->listener = evconnlistener_new(base, control_accept, control, LEV_OPT_CLOSE_ON_FREE, -1, control->fd);
	if (control->listener == NULL)
		return -1;
	control->fd = -1; /* the listener owns it */
	control_set_conf(control, config);
	return 0;
}

void control_set_conf(struct control *control, struct conf *config)
{
	conf_ref(config);
	conf_unref(&control->conf);
	control->conf = config;
}

void control_free(struct control **control)
{
	struct control *c = *control;

	if (c == NULL)
		return;
	if (c->listener != NULL)
		evconnlistener_free(c->listener);
	if (c->fd >= 0)
		close(c->fd);
	unlink(c->path);
	free(c->path);
	if (c->conf != NULL)
		conf_unref(&c->conf);
	free(c);
	*control = NULL;
}
