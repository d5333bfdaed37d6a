/* SPDX-License-Identifier: MIT */
/* bench-mime: parse + BODYSTRUCTURE throughput over a corpus, beside Python's email and GMime. */
#include "config.h"
#include "mime-imap.h"
#include "mime-parser.h"

#include <dirent.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef HAVE_GMIME
#include <gmime/gmime.h>
#endif

#define BENCH_ROUNDS 5        /* C passes, interleaved with the others; the minimum counts */
#define BENCH_PYTHON_ROUNDS 3 /* Python passes: each takes ~50x longer than a C pass */

#define LINE_BORROWED "imapcache mime (parse + BODYSTRUCTURE)"
#define LINE_COPYING "imapcache mime, copying bodies"

/* Usage: bench-mime [--library-only[=PASSES]] [CORPUS_DIR [MAX_MESSAGES]]
   Every side is timed the same way: thread CPU time of one pass over the
   messages, already in memory (start-up and file reading excluded), the
   minimum of several passes, the sides interleaved so that load on the
   shared machine hits them alike. --library-only runs the library alone,
   one pass (for valgrind --tool=callgrind) or the best of PASSES.
   The library's line is mime_parse_borrowed, as the cache parses the raw
   message it holds; the copying mime_parse is reported beside it. */

struct corpus {
	char **data;
	size_t *len;
	size_t count;
	size_t bytes;
};

static double cpu_seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int compare_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The messages of dir/Maildir/cur in name order (as bench-mime.py reads them). */
static int corpus_load(const char *dir, size_t limit, struct corpus *corpus)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/Maildir/cur", dir);
	DIR *d = opendir(path);
	if (d == NULL) {
		fprintf(stderr, "bench-mime: no corpus at %s (make corpus-bench makes it)\n", path);
		return -1;
	}
	char **names = NULL;
	size_t count = 0;
	struct dirent *entry;
	while ((entry = readdir(d)) != NULL) {
		if (entry->d_name[0] == '.')
			continue;
		names = mime_xrealloc(names, (count + 1) * sizeof(*names));
		names[count++] = mime_xstrdup(entry->d_name);
	}
	closedir(d);
	qsort(names, count, sizeof(*names), compare_names);
	memset(corpus, 0, sizeof(*corpus));
	corpus->data = mime_xmalloc((count + 1) * sizeof(char *));
	corpus->len = mime_xmalloc((count + 1) * sizeof(size_t));
	for (size_t i = 0; i < count; i++) {
		char file[8192];
		snprintf(file, sizeof(file), "%s/%s", path, names[i]);
		free(names[i]);
		if (corpus->count >= limit)
			continue;
		FILE *f = fopen(file, "rb");
		if (f == NULL) {
			fprintf(stderr, "bench-mime: cannot open %s\n", file);
			continue;
		}
		fseek(f, 0, SEEK_END);
		long size = ftell(f);
		fseek(f, 0, SEEK_SET);
		char *data = mime_xmalloc((size_t)size + 1);
		size_t got = fread(data, 1, (size_t)size, f);
		fclose(f);
		corpus->data[corpus->count] = data;
		corpus->len[corpus->count] = got;
		corpus->count++;
		corpus->bytes += got;
	}
	free(names);
	return corpus->count > 0 ? 0 : -1;
}

/* One pass of what the cache does with a message it fetched: parse it
   (borrowing the bytes it keeps anyway, or copying) and build its
   BODYSTRUCTURE. */
static double library_pass(const struct corpus *corpus, int borrow, struct mime_buffer *out)
{
	double started = cpu_seconds();
	for (size_t i = 0; i < corpus->count; i++) {
		struct mime_message *message = borrow
			? mime_parse_borrowed(corpus->data[i], corpus->len[i])
			: mime_parse(corpus->data[i], corpus->len[i]);
		mime_buffer_reset(out);
		mime_imap_bodystructure(message, corpus->data[i], corpus->len[i], 1, out);
		mime_message_free(&message);
	}
	return cpu_seconds() - started;
}

/* One borrowing and one copying pass, each lowering its best time. */
static void library_round(const struct corpus *corpus, struct mime_buffer *out,
			  double *best_borrowing, double *best_copying)
{
	double seconds = library_pass(corpus, 1, out);
	if (seconds < *best_borrowing)
		*best_borrowing = seconds;
	seconds = library_pass(corpus, 0, out);
	if (seconds < *best_copying)
		*best_copying = seconds;
}

#ifdef HAVE_GMIME
static void gmime_visit(GMimeObject *parent, GMimeObject *part, gpointer user_data)
{
	GMimeContentType *type = g_mime_object_get_content_type(part);
	size_t *count = user_data;
	if (type != NULL && g_mime_content_type_get_media_type(type) != NULL)
		(*count)++;
	(void)parent;
}

static double gmime_pass(const struct corpus *corpus)
{
	size_t parts = 0;
	double started = cpu_seconds();
	for (size_t i = 0; i < corpus->count; i++) {
		GMimeStream *stream = g_mime_stream_mem_new_with_buffer(corpus->data[i], corpus->len[i]);
		GMimeParser *parser = g_mime_parser_new_with_stream(stream);
		GMimeMessage *message = g_mime_parser_construct_message(parser, NULL);
		if (message != NULL) {
			g_mime_message_foreach(message, gmime_visit, &parts);
			g_object_unref(message);
		}
		g_object_unref(parser);
		g_object_unref(stream);
	}
	return cpu_seconds() - started;
}
#endif

/* Python's email (compat32) as a co-process that has read the corpus. */
struct python_side {
	pid_t pid;
	FILE *to;
	FILE *from;
};

static int python_start(const char *dir, size_t limit, const struct corpus *corpus,
			struct python_side *python)
{
	int to_child[2], from_child[2];
	char limit_text[32];

	snprintf(limit_text, sizeof(limit_text), "%zu", limit);
	if (pipe(to_child) < 0 || pipe(from_child) < 0)
		return -1;
	const char *interpreter = getenv("PYTHON3") != NULL ? getenv("PYTHON3") : "python3";
	python->pid = fork();
	if (python->pid < 0)
		return -1;
	if (python->pid == 0) {
		dup2(to_child[0], 0);
		dup2(from_child[1], 1);
		close(to_child[0]);
		close(to_child[1]);
		close(from_child[0]);
		close(from_child[1]);
		execlp(interpreter, interpreter, BENCH_SRCDIR "/tests/bench/bench-mime.py", dir,
		       limit_text, (char *)NULL);
		_exit(127);
	}
	close(to_child[0]);
	close(from_child[1]);
	python->to = fdopen(to_child[1], "w");
	python->from = fdopen(from_child[0], "r");
	size_t count = 0, bytes = 0;
	if (fscanf(python->from, "ready %zu %zu", &count, &bytes) != 2 || count != corpus->count ||
	    bytes != corpus->bytes) {
		fprintf(stderr, "bench-mime: bench-mime.py did not read the same corpus\n");
		return -1;
	}
	return 0;
}

static double python_pass(struct python_side *python)
{
	double seconds = 0;
	fputs("run\n", python->to);
	fflush(python->to);
	if (fscanf(python->from, "%lf", &seconds) != 1)
		return -1;
	return seconds;
}

static void python_stop(struct python_side *python)
{
	if (python->to != NULL) {
		fputs("quit\n", python->to);
		fclose(python->to);
	}
	if (python->from != NULL)
		fclose(python->from);
	if (python->pid > 0)
		waitpid(python->pid, NULL, 0);
}

/* Keeps this process and the Python it starts on the CPU it runs on now.
   The sides take turns, never run together, so one CPU costs nothing;
   and the CPUs of a virtual machine can differ by a third in speed (seen
   on the CI machine), so a ratio must not depend on which CPU each side
   happened to get. Returns the CPU, or -1 when it could not pin. */
static int pin_to_current_cpu(void)
{
	int cpu = sched_getcpu();
	cpu_set_t set;

	if (cpu < 0)
		return -1;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	return sched_setaffinity(0, sizeof(set), &set) == 0 ? cpu : -1;
}

static void report(const char *name, double best, const struct corpus *corpus, double ours)
{
	double rate = corpus->bytes / best / 1e6;
	printf("%-40s %8.1f MB/s  %8.3f s", name, rate, best);
	if (ours > 0)
		printf("   library is %.2fx faster", best / ours);
	printf("\n");
}

int main(int argc, char **argv)
{
	int library_only = 0;
	int arg = 1;

	signal(SIGPIPE, SIG_IGN); /* a Python side that died shows as a failed read */
	if (arg < argc && strncmp(argv[arg], "--library-only", 14) == 0) {
		library_only = argv[arg][14] == '=' ? atoi(argv[arg] + 15) : 1;
		if (library_only < 1)
			library_only = 1;
		arg++;
	}
	const char *dir = arg < argc ? argv[arg++] : "tests/data/corpus-10k";
	size_t limit = arg < argc ? strtoul(argv[arg++], NULL, 10) : (size_t)-1;
	struct corpus corpus;
	struct mime_buffer out = { 0 };

	if (corpus_load(dir, limit, &corpus) < 0)
		return 1;
	printf("corpus: %zu messages, %.1f MB (%s)\n", corpus.count, corpus.bytes / 1e6, dir);
	int cpu = pin_to_current_cpu();
	if (cpu >= 0)
		printf("every side runs on CPU %d\n", cpu);
	else
		printf("could not pin to one CPU: sides may run on CPUs of different speed\n");
	if (library_only) {
		double best = 1e30, best_copying = 1e30;
		for (int pass = 0; pass < library_only; pass++)
			library_round(&corpus, &out, &best, &best_copying);
		report(LINE_BORROWED, best, &corpus, 0);
		report(LINE_COPYING, best_copying, &corpus, 0);
		mime_buffer_free(&out);
		return 0;
	}
	printf("thread CPU time, minimum of %d passes (Python: %d), interleaved\n", BENCH_ROUNDS,
	       BENCH_PYTHON_ROUNDS);
	fflush(stdout);
	struct python_side python = { 0 };
	int have_python = python_start(dir, limit, &corpus, &python) == 0;
	if (!have_python)
		printf("python email: could not run tests/bench/bench-mime.py\n");
	double best_library = 1e30, best_copying = 1e30, best_python = 1e30;
#ifdef HAVE_GMIME
	double best_gmime = 1e30;
	g_mime_init();
#endif
	for (int round = 0; round < BENCH_ROUNDS; round++) {
		library_round(&corpus, &out, &best_library, &best_copying);
		double seconds;
#ifdef HAVE_GMIME
		seconds = gmime_pass(&corpus);
		if (seconds < best_gmime)
			best_gmime = seconds;
#endif
		if (have_python && round < BENCH_PYTHON_ROUNDS) {
			seconds = python_pass(&python);
			if (seconds < 0) {
				printf("python email: bench-mime.py stopped answering\n");
				have_python = 0;
			} else if (seconds < best_python) {
				best_python = seconds;
			}
		}
	}
	report(LINE_BORROWED, best_library, &corpus, 0);
	report(LINE_COPYING, best_copying, &corpus, 0);
	if (best_python < 1e30) {
		report("python email (parse + walk)", best_python, &corpus, best_library);
		printf("target: library >= 50x python: %s (%.1fx; copying bodies %.1fx)\n",
		       best_python / best_library >= 50 ? "met" : "NOT met",
		       best_python / best_library, best_python / best_copying);
	}
#ifdef HAVE_GMIME
	report("gmime 3 (parse + walk)", best_gmime, &corpus, best_library);
	g_mime_shutdown();
#else
	printf("gmime: not built in (libgmime-3.0-dev was not found by configure)\n");
#endif
	python_stop(&python);
	mime_buffer_free(&out);
	for (size_t i = 0; i < corpus.count; i++)
		free(corpus.data[i]);
	free(corpus.data);
	free(corpus.len);
	return 0;
}
