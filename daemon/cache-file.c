/* SPDX-License-Identifier: MIT */
/* cache-file: the store's file on disk: its name, its directory's and its own ownership and mode, moving a bad one aside, and forgetting the WAL of one replaced while open. */
#include "config.h"
#include "cache-private.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CACHE_ASIDE_TRIES 99 /* stores moved aside within one second; more is a loop, not bad luck */

/* ---- file names ---- */

static bool cache_name_byte_plain(unsigned char c, size_t position)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
		return true;
	if (c == '.')
		return position > 0;
	return c == '_' || c == '@' || c == '+' || c == '-';
}

/* Writes name, encoded for one path component, into out (CACHE_NAME_MAX
   bytes and a NUL; the caller checked that it fits). */
static void cache_name_encode(const char *name, char *out)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t len = 0;

	for (size_t i = 0; name[i] != '\0'; i++) {
		unsigned char c = (unsigned char)name[i];

		if (len + 3 > CACHE_NAME_MAX)
			break;
		if (cache_name_byte_plain(c, i)) {
			out[len++] = (char)c;
		} else {
			out[len++] = '%';
			out[len++] = hex[c >> 4];
			out[len++] = hex[c & 0x0f];
		}
	}
	out[len] = '\0';
}

/* The length of name encoded, stopping once past CACHE_NAME_MAX. */
static size_t cache_name_encoded_length(const char *name)
{
	size_t len = 0;

	for (size_t i = 0; name[i] != '\0' && len <= CACHE_NAME_MAX; i++)
		len += cache_name_byte_plain((unsigned char)name[i], i) ? 1 : 3;
	return len;
}

/* Writes name's file name into out (CACHE_NAME_MAX + 1 bytes). */
static bool cache_name_make(const char *name, char *out)
{
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned int digest_len = 0;
	size_t len;

	if (cache_name_encoded_length(name) <= CACHE_NAME_MAX) {
		cache_name_encode(name, out);
		return true;
	}
	if (EVP_Digest(name, strlen(name), digest, &digest_len, EVP_sha256(), NULL) != 1)
		return false;
	len = (size_t)snprintf(out, CACHE_NAME_MAX + 1, "sha256=");
	for (unsigned int i = 0; i < digest_len; i++)
		len += (size_t)snprintf(out + len, CACHE_NAME_MAX + 1 - len, "%02x", digest[i]);
	return true;
}

char *cache_file_path(const char *dir, const char *upstream, const char *user)
{
	char upstream_name[CACHE_NAME_MAX + 1];
	char user_name[CACHE_NAME_MAX + 1];
	char *path;

	if (upstream[0] == '\0' || user[0] == '\0')
		return NULL;
	if (!cache_name_make(upstream, upstream_name) || !cache_name_make(user, user_name))
		return NULL;
	if (asprintf(&path, "%s/%s/%s.sqlite", dir, upstream_name, user_name) < 0)
		return NULL;
	return path;
}

/* ---- directories and the file ---- */

/* Makes dir (0700) when missing; refuses one owned by another user, and
   takes group and other access (and set-id bits) away from ours; a mode
   that lets us only read is left so, and the store opened for reading.
   follow: dir may be a symbolic link (the admin's cache.dir may; our own
   subdirectories may not). */
int cache_dir_prepare(const char *label, const char *dir, bool follow, const char **error_r)
{
	struct stat st;
	int fd;

	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		log_error("cache %s: cannot make the directory %s: %s", label, dir, strerror(errno));
		*error_r = "cannot make the cache directory";
		return -1;
	}
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC | (follow ? 0 : O_NOFOLLOW));
	if (fd < 0 || fstat(fd, &st) < 0) {
		log_error("cache %s: cannot open the directory %s: %s", label, dir, strerror(errno));
		*error_r = "cannot open the cache directory";
		if (fd >= 0)
			close(fd);
		return -1;
	}
	if (st.st_uid != geteuid()) {
		log_error("cache %s: %s belongs to uid %u, not to uid %u that imapcached runs as: "
			  "chown it, or set cache.dir to a directory of imapcached's own",
			  label, dir, (unsigned int)st.st_uid, (unsigned int)geteuid());
		*error_r = "the cache directory belongs to another user";
		close(fd);
		return -1;
	}
	if ((st.st_mode & 07077) != 0) {
		mode_t mode = st.st_mode & 0700;

		if (fchmod(fd, mode) == 0)
			log_info("cache %s: %s had mode %04o; set it to %04o", label, dir,
				 (unsigned int)(st.st_mode & 07777), (unsigned int)mode);
		else if (errno != EROFS)
			log_warning("cache %s: cannot set the mode of %s to %04o: %s", label, dir, (unsigned int)mode,
				    strerror(errno));
	}
	close(fd);
	return 0;
}

/* A store file of ours that can't be written: read-only when it can be
   read; one that can't be read either (mode 0000) holds nothing we can
   use, and is moved aside like a damaged one. */
static enum cache_open_result cache_file_unwritable(const char *path, const char **why_r)
{
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);

	if (fd >= 0) {
		close(fd); /* before SQLite opens it, as below */
		return CACHE_OPEN_READ_ONLY;
	}
	if (errno != EACCES)
		return CACHE_OPEN_READ_ONLY; /* SQLite's own open says what is wrong */
	*why_r = "not readable by imapcached's user";
	return CACHE_OPEN_ASIDE;
}

/* Checks the store's file before SQLite opens it: made 0600 when missing,
   its mode fixed, and never a link, a directory or another user's. */
enum cache_open_result cache_file_prepare(struct cache *cache, const char **why_r, const char **error_r)
{
	struct stat st;
	bool existed = lstat(cache->path, &st) == 0;
	int fd;

	if (existed && !S_ISREG(st.st_mode)) {
		*why_r = "not a regular file";
		return CACHE_OPEN_ASIDE;
	}
	if (existed && st.st_uid != geteuid()) {
		log_error("cache %s: %s belongs to uid %u, not to uid %u that imapcached runs as: chown or remove it",
			  cache->label, cache->path, (unsigned int)st.st_uid, (unsigned int)geteuid());
		*error_r = "the cache file belongs to another user";
		return CACHE_OPEN_FAILED;
	}
	if (existed && (st.st_mode & 07177) != 0 && chmod(cache->path, st.st_mode & 0600) == 0)
		log_info("cache %s: %s had mode %04o; set it to %04o", cache->label, cache->path,
			 (unsigned int)(st.st_mode & 07777), (unsigned int)(st.st_mode & 0600));
	/* O_NONBLOCK: a FIFO put in its place must not hang the daemon. */
	fd = open(cache->path, O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0600);
	if (fd < 0 && (errno == ELOOP || errno == EISDIR || errno == ENXIO)) {
		*why_r = "not a regular file";
		return CACHE_OPEN_ASIDE;
	}
	if (fd < 0 && existed && (errno == EACCES || errno == EROFS || errno == EPERM))
		return cache_file_unwritable(cache->path, why_r);
	if (fd < 0) {
		log_error("cache %s: cannot %s %s: %s", cache->label, existed ? "open" : "make", cache->path,
			  strerror(errno));
		*error_r = existed ? "cannot open the cache file" : "cannot make the cache file";
		return CACHE_OPEN_FAILED;
	}
	if (!existed && fstat(fd, &st) == 0 && (st.st_mode & 07777) != 0600)
		(void)fchmod(fd, 0600);
	/* Closed before SQLite opens it: closing any descriptor of a file
	   drops this process's POSIX locks on it, SQLite's included. */
	close(fd);
	return CACHE_OPEN_OK;
}

/* Renames from to to when from exists; true unless the rename failed. */
static bool cache_rename_if_there(const char *from, const char *to)
{
	return rename(from, to) == 0 || errno == ENOENT;
}

/* Moves the store's file (and its WAL and journal) aside to
   PATH.corrupt-TIMESTAMP[-N], keeping it for a look, so a new store can be
   made. Returns 0, or -1 with a log line. */
int cache_move_aside(struct cache *cache, const char *why)
{
	char stamp[32];
	char *aside = NULL;
	char *from = NULL;
	char *to = NULL;
	time_t now = time(NULL);
	struct tm tm;
	struct stat st;
	bool ok;

	gmtime_r(&now, &tm);
	strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
	for (unsigned int n = 1; n <= CACHE_ASIDE_TRIES; n++) {
		free(aside);
		if ((n == 1 ? asprintf(&aside, "%s.corrupt-%s", cache->path, stamp)
			    : asprintf(&aside, "%s.corrupt-%s-%u", cache->path, stamp, n)) < 0) {
			aside = NULL;
			break;
		}
		if (lstat(aside, &st) < 0 && errno == ENOENT)
			break;
	}
	ok = aside != NULL && rename(cache->path, aside) == 0;
	if (!ok) {
		log_error("cache %s: %s is %s, and cannot be moved aside: %s", cache->label, cache->path, why,
			  aside != NULL ? strerror(errno) : "out of memory");
		free(aside);
		return -1;
	}
	/* A WAL or journal left behind would be applied to the new store. */
	for (unsigned int i = 0; i < 2 && ok; i++) {
		const char *suffix = i == 0 ? "-wal" : "-journal";

		ok = asprintf(&from, "%s%s", cache->path, suffix) >= 0 && asprintf(&to, "%s%s", aside, suffix) >= 0 &&
		     cache_rename_if_there(from, to);
		free(from);
		free(to);
		from = to = NULL;
	}
	if (ok && asprintf(&from, "%s-shm", cache->path) >= 0) {
		ok = unlink(from) == 0 || errno == ENOENT;
		free(from);
	}
	if (!ok)
		log_error("cache %s: cannot move the WAL of %s aside: %s", cache->label, cache->path, strerror(errno));
	else
		log_warning("cache %s: %s is %s; moved aside to %s, and a new cache begins", cache->label,
			    cache->path, why, aside);
	free(aside);
	return ok ? 0 : -1;
}

/* ---- the WAL of a store replaced while open ---- */

static const char *const cache_wal_suffixes[CACHE_WAL_FILES] = { "-wal", "-shm" };

/* Notes which -wal and -shm files are this store's (SQLite made or opened
   them while the store was opened), to tell them from another's later. */
void cache_wal_note(struct cache *cache)
{
	for (unsigned int i = 0; i < CACHE_WAL_FILES; i++) {
		struct stat st;
		char *path;

		cache->wal_files[i].known = false;
		if (asprintf(&path, "%s%s", cache->path, cache_wal_suffixes[i]) < 0)
			continue;
		if (lstat(path, &st) == 0)
			cache->wal_files[i] = (struct cache_file_id){ st.st_dev, st.st_ino, true };
		free(path);
	}
}

/* The store's file was replaced or removed while open. SQLite then leaves
   the store's WAL behind at close (it checkpoints only into a file still
   in place), and would apply it to whatever file has the name next: a
   file of garbage would pass for the old store. Removes this store's -wal
   and -shm, and only those. */
void cache_wal_forget(struct cache *cache)
{
	log_warning("cache %s: %s was replaced or removed while open; its WAL goes too, so that it is never "
		    "applied to another file", cache->label, cache->path);
	for (unsigned int i = 0; i < CACHE_WAL_FILES; i++) {
		const struct cache_file_id *id = &cache->wal_files[i];
		struct stat st;
		char *path;

		if (!id->known || asprintf(&path, "%s%s", cache->path, cache_wal_suffixes[i]) < 0)
			continue;
		if (lstat(path, &st) == 0 && st.st_dev == id->dev && st.st_ino == id->ino && unlink(path) < 0)
			log_error("cache %s: cannot remove %s: %s", cache->label, path, strerror(errno));
		free(path);
	}
}
