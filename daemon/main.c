/* SPDX-License-Identifier: MIT */
/* main: imapcached's start-up, signals (reload, shutdown) and event loop. */
#include "config.h"
#include "cache.h"
#include "conf.h"
#include "control.h"
#include "listener.h"
#include "log.h"
#include "notify.h"
#include "session.h"
#include "tls.h"
#include "upstream-pool.h"
#include "upstream-probe.h"
#include "upstream.h"

#include <errno.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <syslog.h>
#include <sysexits.h>
#include <unistd.h>

/* Everything the running daemon owns. */
struct daemon_state {
	const char *config_path;
	struct conf *conf;             /* the current config: new sessions get it */
	struct conf *bound_conf;       /* the config the listeners were bound from */
	struct listener **listeners;   /* conf->listeners_count of them; NULL once stopping */
	size_t listeners_count;
	struct event_base *base;
	struct evdns_base *dns_base;  /* resolves upstream names without blocking the loop */
	struct event *sighup_event;
	struct event *sigterm_event;
	struct event *sigint_event;
	struct event *shutdown_timer;
	struct upstream_pool *pool;    /* idle logged-in upstream connections */
	struct upstream_probe *probe;  /* what the upstreams offer before login */
	struct control *control;       /* imapcachectl's socket; NULL when it could not be made */
	bool stopping;
	/* Who serves clients: conf->user when started as root with user
	   set (drop_privileges), else the user that started the daemon. */
	uid_t run_uid;
	gid_t run_gid;
	bool drop_privileges;
};

#define DAEMON_POOL_LOGOUT_GRACE 2 /* seconds for the pooled connections' LOGOUT at exit */

static void daemon_usage(FILE *out)
{
	fprintf(out,
		"usage: imapcached [-f] [-t] [-c FILE]\n"
		"  -c FILE  read the configuration from FILE (default %s)\n"
		"  -t       check the configuration (and load TLS certificates), then exit\n"
		"  -f       stay in the foreground and log to stderr\n"
		"  -h       show this help\n"
		"  -V       show the version\n",
		CONF_DEFAULT_PATH);
}

/* Logs each line of a multi-line error text. */
static void daemon_log_lines(enum log_level level, const char *text)
{
	const char *line = text;

	while (*line != '\0') {
		const char *end = strchr(line, '\n');
		int len = end != NULL ? (int)(end - line) : (int)strlen(line);

		log_message(level, "%.*s", len, line);
		line += len + (end != NULL ? 1 : 0);
	}
}

/* Makes the server TLS context of settings, conf's listen[index]: NULL
   for tls = none. Returns 0, or -1 after logging what failed. */
static int daemon_make_tls_context(const struct conf *conf, const struct conf_listener *settings,
				   size_t index, SSL_CTX **context_r)
{
	const char *error;

	*context_r = NULL;
	if (settings->tls == CONF_TLS_NONE)
		return 0;
	*context_r = tls_server_context_new(settings->cert, settings->key, &error);
	if (*context_r == NULL) {
		log_error("%s:%d: listen[%zu]: %s", conf->path, settings->line, index, error);
		return -1;
	}
	return 0;
}

/* Makes the server TLS contexts for conf's listeners; contexts_r[i] is
   NULL for tls = none. Returns 0, or -1 after logging what failed. */
static int daemon_make_tls_contexts(const struct conf *conf, SSL_CTX **contexts_r)
{
	for (size_t i = 0; i < conf->listeners_count; i++) {
		if (daemon_make_tls_context(conf, &conf->listeners[i], i, &contexts_r[i]) < 0) {
			while (i-- > 0)
				tls_context_free(&contexts_r[i]);
			return -1;
		}
	}
	return 0;
}

/* Reads the certificate and key of every bound listener again for a
   reload to conf (contexts_r: one per bound listener): from the
   listener's entry in conf (same address, port and tls) when there is
   one, else from the files it was bound with, since it keeps listening
   until a restart. Returns 0, or -1 after logging what failed. */
static int daemon_reload_tls_contexts(const struct daemon_state *daemon, const struct conf *conf,
				      SSL_CTX **contexts_r)
{
	for (size_t i = 0; i < daemon->listeners_count; i++) {
		const struct conf_listener *bound = &daemon->bound_conf->listeners[i];
		const struct conf_listener *settings = conf_listener_find(conf, bound, i);
		int result;

		if (settings != NULL)
			result = daemon_make_tls_context(conf, settings, (size_t)(settings - conf->listeners),
							 &contexts_r[i]);
		else
			result = daemon_make_tls_context(daemon->bound_conf, bound, i, &contexts_r[i]);
		if (result < 0) {
			while (i-- > 0)
				tls_context_free(&contexts_r[i]);
			return -1;
		}
		if (contexts_r[i] != NULL)
			log_info("reload: %s: read %s again", listener_get_name(daemon->listeners[i]),
				 settings != NULL ? settings->cert : bound->cert);
	}
	return 0;
}

static void daemon_accept(const struct listener_connection *conn, void *context)
{
	struct daemon_state *daemon = context;
	const char *error;

	if (daemon->stopping) {
		session_refuse(conn, "imapcached is shutting down");
		return;
	}
	if (session_count() >= daemon->conf->limit_sessions) {
		log_warning("refused %s: already %u sessions (limits.sessions)", conn->peer_name,
			    session_count());
		session_refuse(conn, "Too many connections, try again later");
		return;
	}
	if (session_new(daemon->base, conn, daemon->conf, &error) == NULL)
		log_error("cannot start a session for %s: %s", conn->peer_name, error);
}

/* The pool's last LOGOUT is done: nothing keeps a stopping daemon. */
static void daemon_pool_idle(void *context)
{
	struct daemon_state *daemon = context;

	if (daemon->stopping && session_count() == 0)
		event_base_loopexit(daemon->base, NULL);
}

/* Ends the loop once the pooled connections said LOGOUT (or at most
   DAEMON_POOL_LOGOUT_GRACE seconds from now). */
static void daemon_exit_loop(struct daemon_state *daemon)
{
	const struct timeval grace = { DAEMON_POOL_LOGOUT_GRACE, 0 };

	if (daemon->pool == NULL || upstream_pool_busy_count(daemon->pool) == 0) {
		event_base_loopexit(daemon->base, NULL);
		return;
	}
	upstream_pool_set_idle_callback(daemon->pool, daemon_pool_idle, daemon);
	event_base_loopexit(daemon->base, &grace);
}

static void daemon_session_count(unsigned int count, void *context)
{
	struct daemon_state *daemon = context;

	if (!daemon->stopping) {
		notify_status(count);
		return;
	}
	notify_stopping(count);
	if (count == 0)
		daemon_exit_loop(daemon);
}

/* SIGHUP: a new config for new sessions; a bad one changes nothing. */
static void daemon_reload(evutil_socket_t signal_number, short what, void *context)
{
	struct daemon_state *daemon = context;
	struct conf *conf;
	SSL_CTX **contexts;
	char *errors = NULL;
	bool same_listeners;

	(void)signal_number;
	(void)what;
	if (daemon->stopping)
		return;
	notify_reloading();
	log_info("reloading %s", daemon->config_path);
	conf = conf_load(daemon->config_path, &errors);
	if (conf == NULL) {
		daemon_log_lines(LOG_LEVEL_ERROR, errors);
		log_error("reload failed: keeping the configuration in use");
		free(errors);
		notify_ready(session_count());
		return;
	}
	/* Compared with what is bound, not with the last reload, which may
	   have asked for listeners that only a restart would make. */
	same_listeners = conf_listeners_equal(daemon->bound_conf, conf);
	contexts = calloc(daemon->listeners_count, sizeof(*contexts));
	if (contexts == NULL || daemon_reload_tls_contexts(daemon, conf, contexts) < 0) {
		log_error("reload failed: keeping the configuration in use");
		free(contexts);
		conf_unref(&conf);
		notify_ready(session_count());
		return;
	}
	for (size_t i = 0; i < daemon->listeners_count; i++)
		listener_set_tls_context(daemon->listeners[i], contexts[i]);
	free(contexts);
	if (!same_listeners) {
		log_warning("reload: listen changed; listeners change only on restart, "
			    "the other settings (and the certificates of the listeners bound) apply now");
	}
	if ((conf->user == NULL) != (daemon->bound_conf->user == NULL) ||
	    (conf->user != NULL && strcmp(conf->user, daemon->bound_conf->user) != 0))
		log_warning("reload: user changed; the daemon changes user only on restart");
	log_set_level(conf->log_level);
	conf_unref(&daemon->conf);
	daemon->conf = conf;
	if (daemon->control != NULL)
		control_set_conf(daemon->control, conf); /* the socket itself changes only on restart */
	/* pooled connections were made with the old upstream settings */
	upstream_pool_flush(daemon->pool, "configuration reloaded");
	upstream_pool_set_limits(daemon->pool, conf->pool_size, conf->pool_idle_timeout, UPSTREAM_POOL_GLOBAL_MAX);
	upstream_pool_set_max_age(daemon->pool, conf->pool_max_age);
	log_info("reloaded %s: new sessions use it", daemon->config_path);
	notify_ready(session_count());
}

/* The shutdown timeout ran out: tell the remaining clients and close. */
static void daemon_shutdown_timeout(evutil_socket_t fd, short what, void *context)
{
	(void)fd;
	(void)what;
	(void)context;
	log_info("shutdown timeout: closing %u remaining session%s", session_count(),
		 session_count() == 1 ? "" : "s");
	session_close_all("imapcached is shutting down");
}

/* SIGTERM, SIGINT: stop accepting, let sessions finish, exit. */
static void daemon_stop(evutil_socket_t signal_number, short what, void *context)
{
	struct daemon_state *daemon = context;
	const struct timeval timeout = { daemon->conf->timeout_shutdown, 0 };

	(void)what;
	if (daemon->stopping)
		return;
	daemon->stopping = true;
	for (size_t i = 0; i < daemon->listeners_count; i++)
		listener_free(&daemon->listeners[i]);
	log_info("%s: stopped accepting; waiting up to %u s for %u session%s",
		 strsignal((int)signal_number), daemon->conf->timeout_shutdown, session_count(),
		 session_count() == 1 ? "" : "s");
	notify_stopping(session_count());
	/* no new pooling: a LOGOUT now goes upstream */
	upstream_pool_flush(daemon->pool, "shutting down");
	upstream_pool_set_limits(daemon->pool, 0, daemon->conf->pool_idle_timeout, 0);
	if (session_count() == 0) {
		daemon_exit_loop(daemon);
		return;
	}
	daemon->shutdown_timer = evtimer_new(daemon->base, daemon_shutdown_timeout, daemon);
	if (daemon->shutdown_timer == NULL || evtimer_add(daemon->shutdown_timer, &timeout) < 0)
		session_close_all("imapcached is shutting down");
}

/* Logs through syslog(3) once detached from the terminal. */
static void daemon_syslog_sink(enum log_level level, const char *line, void *context)
{
	static const int priorities[] = {
		[LOG_LEVEL_DEBUG] = LOG_DEBUG,
		[LOG_LEVEL_INFO] = LOG_INFO,
		[LOG_LEVEL_WARNING] = LOG_WARNING,
		[LOG_LEVEL_ERROR] = LOG_ERR,
	};

	(void)context;
	syslog(priorities[level], "%s", line);
}

/* Detaches from the terminal: fork and a new session. The parent waits
   until the child is ready (daemon_detach_done: its signal handlers are
   in place, so a SIGHUP sent as soon as the start command returns reloads
   and does not kill it) and exits 0 then, or with the child's status when
   it failed before that; until then the child's errors reach the
   terminal. Returns the child's end of the pipe that says so, or -1. */
static int daemon_detach(void)
{
	int ready[2];
	int status = 0;
	char byte;
	ssize_t got;
	pid_t pid;

	/* Said while stderr still reaches whoever starts the daemon. */
	if (!log_syslog_available(_PATH_LOG)) {
		log_warning("nothing listens on %s, so the log goes nowhere once detached: start a syslog "
			    "daemon, or run imapcached -f (log on stderr, as under systemd)", _PATH_LOG);
	}
	if (pipe2(ready, O_CLOEXEC) < 0) {
		log_error("cannot make a pipe: %s", strerror(errno));
		return -1;
	}
	pid = fork();
	if (pid < 0) {
		log_error("cannot fork: %s", strerror(errno));
		close(ready[0]);
		close(ready[1]);
		return -1;
	}
	if (pid == 0) {
		close(ready[0]);
		if (setsid() < 0 || chdir("/") < 0) {
			log_error("cannot detach: %s", strerror(errno));
			_exit(EX_OSERR);
		}
		return ready[1];
	}
	close(ready[1]);
	do
		got = read(ready[0], &byte, 1);
	while (got < 0 && errno == EINTR);
	if (got == 1)
		_exit(EX_OK);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	_exit(WIFEXITED(status) && WEXITSTATUS(status) != 0 ? WEXITSTATUS(status) : EX_SOFTWARE);
}

/* The detached child is ready: stdio on /dev/null, the log to syslog,
   and the waiting parent told (ready_fd closed). */
static void daemon_detach_done(int ready_fd)
{
	int null_fd = open("/dev/null", O_RDWR);

	if (null_fd >= 0) {
		dup2(null_fd, STDIN_FILENO);
		dup2(null_fd, STDOUT_FILENO);
		dup2(null_fd, STDERR_FILENO);
		if (null_fd > STDERR_FILENO)
			close(null_fd);
	}
	openlog("imapcached", LOG_PID, LOG_DAEMON);
	log_set_sink(daemon_syslog_sink, NULL);
	if (write(ready_fd, "r", 1) != 1)
		log_warning("cannot tell the starting process that imapcached is ready: %s", strerror(errno));
	close(ready_fd);
}

/* path made absolute from the working directory (a newly allocated
   string, or NULL when out of memory or the directory is unknown). */
static char *daemon_absolute_path(const char *path)
{
	char *directory, *absolute = NULL;

	if (path[0] == '/')
		return strdup(path);
	directory = getcwd(NULL, 0);
	if (directory != NULL && asprintf(&absolute, "%s/%s", directory, path) < 0)
		absolute = NULL;
	free(directory);
	return absolute;
}

/* Sets who will serve clients: conf->user's ids when started as root
   with user set, else our own. Returns 0, or -1 after logging (an
   unknown user, or user set without root to become it). */
static int daemon_resolve_user(struct daemon_state *daemon, bool check_only)
{
	const char *name = daemon->conf->user;
	const struct passwd *pw;

	daemon->run_uid = geteuid();
	daemon->run_gid = getegid();
	daemon->drop_privileges = false;
	if (name == NULL)
		return 0;
	errno = 0;
	pw = getpwnam(name);
	if (pw == NULL) {
		log_error("%s: user \"%s\": %s", daemon->conf->path, name,
			  errno != 0 ? strerror(errno) : "no such user (make it, or change user)");
		return -1;
	}
	if (pw->pw_uid == geteuid())
		return 0;
	if (geteuid() != 0) {
		if (check_only)
			return 0; /* a check by another user: the service starts as root */
		log_error("%s: user \"%s\": imapcached runs as uid %u, not root, so it cannot become uid %u: "
			  "start it as root, or remove user", daemon->conf->path, name, (unsigned int)geteuid(),
			  (unsigned int)pw->pw_uid);
		return -1;
	}
	daemon->run_uid = pw->pw_uid;
	daemon->run_gid = pw->pw_gid;
	daemon->drop_privileges = true;
	return 0;
}

/* Refuses a cache.dir that others could change under us: one owned by
   another user than the one serving, or writable by group or others
   (anyone who can write there can plant or replace an account's store).
   A missing one is made now (0700) only when privileges will be dropped,
   so the user gets it; else the first session makes it. Returns 0, or -1
   after logging what to do. */
static int daemon_check_cache_dir(const struct daemon_state *daemon)
{
	const char *dir = daemon->conf->cache_dir;
	struct stat st;

	if (daemon->drop_privileges && mkdir(dir, 0700) == 0 && chown(dir, daemon->run_uid, daemon->run_gid) < 0) {
		log_error("cache.dir %s: cannot give it to uid %u: %s", dir, (unsigned int)daemon->run_uid,
			  strerror(errno));
		return -1;
	}
	if (stat(dir, &st) < 0) {
		if (errno == ENOENT)
			return 0;
		log_error("cache.dir %s: %s", dir, strerror(errno));
		return -1;
	}
	if (!S_ISDIR(st.st_mode)) {
		log_error("cache.dir %s is not a directory: set cache.dir to one of imapcached's own", dir);
		return -1;
	}
	if (st.st_uid != daemon->run_uid) {
		log_error("cache.dir %s belongs to uid %u, not to uid %u that serves clients: refusing to start, "
			  "since its owner could read and change every account's cache; chown it to uid %u, "
			  "or set cache.dir to a directory of imapcached's own",
			  dir, (unsigned int)st.st_uid, (unsigned int)daemon->run_uid, (unsigned int)daemon->run_uid);
		return -1;
	}
	if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
		log_error("cache.dir %s has mode %04o: refusing to start, since group or others may write to it "
			  "and so plant or replace an account's cache; chmod 0700 it",
			  dir, (unsigned int)(st.st_mode & 07777));
		return -1;
	}
	return 0;
}

/* Becomes run_uid/run_gid with that user's groups, for good: after the
   listeners, the control socket and the TLS keys are open, before any
   client is served. Returns 0, or -1 after logging. */
static int daemon_drop_privileges(const struct daemon_state *daemon)
{
	const char *name = daemon->conf->user;

	if (!daemon->drop_privileges)
		return 0;
	if (initgroups(name, daemon->run_gid) < 0 || setgid(daemon->run_gid) < 0 || setuid(daemon->run_uid) < 0) {
		log_error("cannot become user %s (uid %u, gid %u): %s", name, (unsigned int)daemon->run_uid,
			  (unsigned int)daemon->run_gid, strerror(errno));
		return -1;
	}
	if (setuid(0) == 0 || geteuid() != daemon->run_uid || getegid() != daemon->run_gid) {
		log_error("dropping privileges to user %s did not hold", name);
		return -1;
	}
	log_info("running as user %s (uid %u, gid %u)", name, (unsigned int)daemon->run_uid,
		 (unsigned int)daemon->run_gid);
	return 0;
}

/* Binds every listener; returns 0, or -1 after logging. */
static int daemon_bind(struct daemon_state *daemon, SSL_CTX **contexts)
{
	conf_ref(daemon->conf);
	daemon->bound_conf = daemon->conf;
	daemon->listeners_count = daemon->conf->listeners_count;
	daemon->listeners = calloc(daemon->listeners_count, sizeof(*daemon->listeners));
	if (daemon->listeners == NULL) {
		log_error("out of memory");
		return -1;
	}
	for (size_t i = 0; i < daemon->listeners_count; i++) {
		const struct conf_listener *settings = &daemon->conf->listeners[i];
		const char *error;

		daemon->listeners[i] = listener_new(settings, &error);
		if (daemon->listeners[i] == NULL) {
			log_error("%s (listen[%zu] in %s:%d)", error, i, daemon->conf->path, settings->line);
			return -1;
		}
		listener_set_tls_context(daemon->listeners[i], contexts[i]);
		contexts[i] = NULL;
	}
	return 0;
}

/* Makes imapcachectl's socket. Not fatal: the daemon serves clients
   without it (imapcachectl then says the daemon is not running). */
static void daemon_start_control(struct daemon_state *daemon)
{
	const char *path = daemon->conf->control_socket;
	const char *error;

	daemon->control = control_new(path, &error);
	if (daemon->control == NULL) {
		log_warning("control socket %s: %s: imapcachectl can't reach this daemon", path, error);
		return;
	}
	/* made by root: it must be the user's who serves, as the cache is */
	if (daemon->drop_privileges && chown(path, daemon->run_uid, daemon->run_gid) < 0)
		log_warning("control socket %s: cannot give it to uid %u: %s", path, (unsigned int)daemon->run_uid,
			    strerror(errno));
	if (control_start(daemon->control, daemon->base, daemon->conf) < 0) {
		log_warning("control socket %s: can't listen: imapcachectl can't reach this daemon", path);
		control_free(&daemon->control);
		return;
	}
	log_info("control socket %s", path);
}

/* Creates the event base, signal events and starts the listeners. */
static int daemon_start_events(struct daemon_state *daemon)
{
	const char *error;

	daemon->base = event_base_new();
	if (daemon->base == NULL) {
		log_error("cannot create the event loop");
		return -1;
	}
	/* Inactive when no lookup is running, so it never keeps the loop alive. */
	daemon->dns_base = evdns_base_new(daemon->base, EVDNS_BASE_INITIALIZE_NAMESERVERS |
					  EVDNS_BASE_DISABLE_WHEN_INACTIVE);
	if (daemon->dns_base == NULL)
		log_warning("cannot set up the resolver from /etc/resolv.conf: upstream host names are "
			    "resolved with a blocking getaddrinfo");
	upstream_set_resolver(daemon->dns_base);
	daemon->sighup_event = evsignal_new(daemon->base, SIGHUP, daemon_reload, daemon);
	daemon->sigterm_event = evsignal_new(daemon->base, SIGTERM, daemon_stop, daemon);
	daemon->sigint_event = evsignal_new(daemon->base, SIGINT, daemon_stop, daemon);
	if (daemon->sighup_event == NULL || daemon->sigterm_event == NULL || daemon->sigint_event == NULL ||
	    evsignal_add(daemon->sighup_event, NULL) < 0 || evsignal_add(daemon->sigterm_event, NULL) < 0 ||
	    evsignal_add(daemon->sigint_event, NULL) < 0) {
		log_error("cannot watch for signals");
		return -1;
	}
	for (size_t i = 0; i < daemon->listeners_count; i++) {
		if (listener_start(daemon->listeners[i], daemon->base, daemon_accept, daemon, &error) < 0) {
			log_error("%s", error);
			return -1;
		}
		log_info("listening on %s (%s)", listener_get_name(daemon->listeners[i]),
			 conf_tls_name(daemon->conf->listeners[i].tls));
	}
	daemon->pool = upstream_pool_new_clients(daemon->base, &error);
	if (daemon->pool == NULL) {
		log_error("cannot make the upstream pool: %s", error);
		return -1;
	}
	upstream_pool_set_limits(daemon->pool, daemon->conf->pool_size, daemon->conf->pool_idle_timeout,
				 UPSTREAM_POOL_GLOBAL_MAX);
	upstream_pool_set_max_age(daemon->pool, daemon->conf->pool_max_age);
	session_set_upstream_pool(daemon->pool);
	daemon->probe = upstream_probe_new(daemon->base);
	if (daemon->probe == NULL) {
		log_error("cannot make the upstream probe: out of memory");
		return -1;
	}
	upstream_probe_start(daemon->probe, daemon->conf); /* answers come while clients are served */
	session_set_upstream_probe(daemon->probe);
	daemon_start_control(daemon);
	return 0;
}

static void daemon_cleanup(struct daemon_state *daemon)
{
	for (size_t i = 0; i < daemon->listeners_count; i++)
		listener_free(&daemon->listeners[i]);
	free(daemon->listeners);
	if (daemon->shutdown_timer != NULL)
		event_free(daemon->shutdown_timer);
	if (daemon->sighup_event != NULL)
		event_free(daemon->sighup_event);
	if (daemon->sigterm_event != NULL)
		event_free(daemon->sigterm_event);
	if (daemon->sigint_event != NULL)
		event_free(daemon->sigint_event);
	control_free(&daemon->control);
	session_free_all();
	cache_close_lingering(); /* after the sessions: their stores linger */
	session_set_upstream_pool(NULL);
	upstream_pool_free(&daemon->pool);
	session_set_upstream_probe(NULL);
	upstream_probe_free(&daemon->probe);
	/* A host lookup cancelled just now ends in a deferred callback that
	   frees its memory: let it run before the resolver goes (nothing
	   else can fire: listeners, timers and signals are gone). */
	if (daemon->base != NULL)
		event_base_loop(daemon->base, EVLOOP_NONBLOCK);
	upstream_set_resolver(NULL);
	if (daemon->dns_base != NULL)
		evdns_base_free(daemon->dns_base, 0);
	if (daemon->base != NULL)
		event_base_free(daemon->base);
	conf_unref(&daemon->conf);
	conf_unref(&daemon->bound_conf);
}

int main(int argc, char **argv)
{
	struct daemon_state daemon = { .config_path = CONF_DEFAULT_PATH };
	bool check_only = false, foreground = false;
	SSL_CTX **contexts = NULL;
	size_t contexts_count = 0;
	char *errors = NULL, *absolute_config_path = NULL;
	int ready_fd = -1; /* the detached child's pipe to the waiting parent */
	int option, status = EX_SOFTWARE;

	(void)cache_library_init(); /* before anything else uses SQLite */
	while ((option = getopt(argc, argv, "c:tfhV")) != -1) {
		switch (option) {
		case 'c': daemon.config_path = optarg; break;
		case 't': check_only = true; break;
		case 'f': foreground = true; break;
		case 'h': daemon_usage(stdout); return EX_OK;
		case 'V': printf("imapcached %s\n", PACKAGE_VERSION); return EX_OK;
		default: daemon_usage(stderr); return EX_USAGE;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "imapcached: unexpected argument: %s\n", argv[optind]);
		daemon_usage(stderr);
		return EX_USAGE;
	}
	/* systemd connects stderr to the journal and says so in JOURNAL_STREAM. */
	if (getenv("JOURNAL_STREAM") != NULL)
		log_set_journal_prefix(1);

	daemon.conf = conf_load(daemon.config_path, &errors);
	if (daemon.conf == NULL) {
		daemon_log_lines(LOG_LEVEL_ERROR, errors);
		free(errors);
		return EX_CONFIG;
	}
	log_set_level(daemon.conf->log_level);
	contexts_count = daemon.conf->listeners_count;
	contexts = calloc(contexts_count, sizeof(*contexts));
	if (contexts == NULL) {
		status = EX_OSERR;
		goto out;
	}
	if (daemon_make_tls_contexts(daemon.conf, contexts) < 0 || daemon_resolve_user(&daemon, check_only) < 0) {
		status = EX_CONFIG;
		goto out;
	}
	if (check_only) {
		printf("%s: configuration is valid\n", daemon.config_path);
		status = EX_OK;
		goto out;
	}
	/* A client that disconnects mid-write must not kill the daemon. */
	signal(SIGPIPE, SIG_IGN);
	if (daemon_check_cache_dir(&daemon) < 0) {
		status = EX_CONFIG;
		goto out;
	}
	if (daemon_bind(&daemon, contexts) < 0) {
		status = EX_UNAVAILABLE;
		goto out;
	}
	if (!foreground) {
		/* Detached, it runs in "/", where SIGHUP must still find the file. */
		absolute_config_path = daemon_absolute_path(daemon.config_path);
		if (absolute_config_path == NULL) {
			log_error("cannot make %s an absolute path: %s", daemon.config_path, strerror(errno));
			status = EX_OSERR;
			goto out;
		}
		daemon.config_path = absolute_config_path;
		ready_fd = daemon_detach();
		if (ready_fd < 0) {
			status = EX_OSERR;
			goto out;
		}
	}
	if (daemon_start_events(&daemon) < 0) {
		status = EX_OSERR;
		goto out;
	}
	if (daemon_drop_privileges(&daemon) < 0) {
		status = EX_NOPERM;
		goto out;
	}
	session_set_count_callback(daemon_session_count, &daemon);
	if (ready_fd >= 0) {
		daemon_detach_done(ready_fd);
		ready_fd = -1;
	}
	log_info("imapcached %s ready (config %s)", PACKAGE_VERSION, daemon.config_path);
	notify_ready(0);
	if (event_base_dispatch(daemon.base) < 0) {
		log_error("event loop failed");
		status = EX_SOFTWARE;
		goto out;
	}
	log_info("exiting");
	status = EX_OK;

out:
	if (contexts != NULL) {
		for (size_t i = 0; i < contexts_count; i++)
			tls_context_free(&contexts[i]);
		free(contexts);
	}
	daemon_cleanup(&daemon);
	free(absolute_config_path);
	return status;
}
