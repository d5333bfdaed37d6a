/* SPDX-License-Identifier: MIT */
/* bench-mime: parse + BODYSTRUCTURE throughput over a corpus, beside Python's email and GMime. */
#include "config.h"
#include "mime-imap.h"
#include "mime-parser.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef HAVE_GMIME
#include <gmime/gmime.h>
#endif

#define BENCH_ROUNDS 3 /* best of three: the machine is shared */

struct corpus {
	char **data;
	size_t *len;
	size_t count;
	size_t bytes;
};

static double now_seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int corpus_load(const char *dir, struct corpus *corpus)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/Maildir/cur", dir);
	DIR *d = opendir(path);
	if (d == NULL) {
		fprintf(stderr, "bench-mime: no corpus at %s (make corpus-bench makes it)\n", path);
		return -1;
	}
	memset(corpus, 0, sizeof(*corpus));
	struct dirent *entry;
	while ((entry = readdir(d)) != NULL) {
		if (entry->d_name[0] == '.')
			continue;
		char file[8192];
		snprintf(file, sizeof(file), "%s/%s", path, entry->d_name);
		FILE *f = fopen(file, "rb");
		if (f == NULL)
			continue;
		fseek(f, 0, SEEK_END);
		long size = ftell(f);
		fseek(f, 0, SEEK_SET);
		char *data = mime_xmalloc((size_t)size + 1);
		size_t got = fread(data, 1, (size_t)size, f);
		fclose(f);
		corpus->data = mime_xrealloc(corpus->data, (corpus->count + 1) * sizeof(char *));
		corpus->len = mime_xrealloc(corpus->len, (corpus->count + 1) * sizeof(size_t));
		corpus->data[corpus->count] = data;
		corpus->len[corpus->count] = got;
		corpus->count++;
		corpus->bytes += got;
	}
	closedir(d);
	return corpus->count > 0 ? 0 : -1;
}

static double bench_library(const struct corpus *corpus)
{
	double best = 1e9;
	struct mime_buffer out = { 0 };

	for (int round = 0; round < BENCH_ROUNDS; round++) {
		double started = now_seconds();
		for (size_t i = 0; i < corpus->count; i++) {
			struct mime_message *message = mime_parse(corpus->data[i], corpus->len[i]);
			mime_buffer_reset(&out);
			mime_imap_bodystructure(message, corpus->data[i], corpus->len[i], 1, &out);
			mime_message_free(&message);
		}
		double elapsed = now_seconds() - started;
		if (elapsed < best)
			best = elapsed;
	}
	mime_buffer_free(&out);
	return corpus->bytes / best / 1e6;
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

static double bench_gmime(const struct corpus *corpus)
{
	double best = 1e9;
	size_t parts = 0;

	g_mime_init();
	for (int round = 0; round < BENCH_ROUNDS; round++) {
		double started = now_seconds();
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
		double elapsed = now_seconds() - started;
		if (elapsed < best)
			best = elapsed;
	}
	g_mime_shutdown();
	return corpus->bytes / best / 1e6;
}
#endif

/* Python's email (compat32) on the same files, timed by the script itself. */
static double bench_python(const char *dir)
{
	char command[8192];
	snprintf(command, sizeof(command), "%s %s/tests/bench/bench-mime.py '%s'",
		 getenv("PYTHON3") != NULL ? getenv("PYTHON3") : "python3", BENCH_SRCDIR, dir);
	FILE *pipe = popen(command, "r");
	double rate = 0;
	if (pipe == NULL || fscanf(pipe, "%lf", &rate) != 1)
		rate = 0;
	if (pipe != NULL)
		pclose(pipe);
	return rate;
}

int main(int argc, char **argv)
{
	const char *dir = argc > 1 ? argv[1] : "tests/data/corpus-10k";
	struct corpus corpus;

	if (corpus_load(dir, &corpus) < 0)
		return 1;
	printf("corpus: %zu messages, %.1f MB (%s)\n", corpus.count, corpus.bytes / 1e6, dir);
	double ours = bench_library(&corpus);
	printf("imapcache mime (parse + BODYSTRUCTURE): %8.1f MB/s\n", ours);
	double python = bench_python(dir);
	if (python > 0)
		printf("python email (parse + walk):            %8.1f MB/s   ratio %.1fx\n",
		       python, ours / python);
	else
		printf("python email: could not run tests/bench/bench-mime.py\n");
#ifdef HAVE_GMIME
	double gmime = bench_gmime(&corpus);
	printf("gmime 3 (parse + walk):                 %8.1f MB/s   ratio %.2fx\n", gmime, ours / gmime);
#else
	printf("gmime: not built in (libgmime-3.0-dev was not found by configure)\n");
#endif
	for (size_t i = 0; i < corpus.count; i++)
		free(corpus.data[i]);
	free(corpus.data);
	free(corpus.len);
	return 0;
}
