/* SPDX-License-Identifier: MIT */
/* fuzz-config: any config text gives a config or error lines, never a crash. */
#include "config.h"
#include "conf.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/*
 * The text is written to fuzz.conf in a directory of its own and loaded
 * with conf_load, as the daemon loads its file (relative @include names
 * start there): inc.conf beside it holds an upstream, self.conf includes
 * itself. Text with both "include" and a '/' is
 * skipped: its @include could name a FIFO or /dev/stdin, which would
 * block, and says nothing about the loader that inc.conf does not.
 */

#define FUZZ_CONFIG_MAX 65536 /* longer text only slows the run */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char fuzz_dir[64];
static char fuzz_path[96];

static void fuzz_config_remove(void)
{
	char command[128];

	snprintf(command, sizeof(command), "rm -rf '%s'", fuzz_dir);
	if (system(command) != 0)
		fprintf(stderr, "fuzz-config: could not remove %s\n", fuzz_dir);
}

/* Writes len bytes of text to name in the directory. */
static void fuzz_config_write(const char *name, const void *text, size_t len)
{
	char path[128];
	FILE *file;

	snprintf(path, sizeof(path), "%s/%s", fuzz_dir, name);
	file = fopen(path, "w");
	if (file == NULL || fwrite(text, 1, len, file) != len || fclose(file) != 0)
		abort();
}

static void fuzz_config_setup(void)
{
	snprintf(fuzz_dir, sizeof(fuzz_dir), "/tmp/fuzz-config-XXXXXX");
	static const char inc[] = "upstreams = ( { name = \"inc\"; host = \"127.0.0.1\"; port = 143; tls = \"none\"; } );\n";
	static const char self[] = "@include \"self.conf\"\n";

	if (mkdtemp(fuzz_dir) == NULL)
		abort();
	atexit(fuzz_config_remove);
	snprintf(fuzz_path, sizeof(fuzz_path), "%s/fuzz.conf", fuzz_dir);
	fuzz_config_write("inc.conf", inc, strlen(inc));
	fuzz_config_write("self.conf", self, strlen(self));
}

/* Counts the lines of text. */
static size_t fuzz_config_lines(const char *text)
{
	size_t lines = 0;

	for (const char *p = text; *p != '\0'; p++)
		lines += *p == '\n' || p[1] == '\0';
	return lines;
}

/* Uses the config the way the daemon does after a load or reload. */
static void fuzz_config_use(struct conf *config)
{
	struct conf *copy = NULL;

	if (config->path == NULL || (config->upstreams_count > 0) != (config->upstreams != NULL))
		abort();
	for (size_t i = 0; i < config->listeners_count; i++) {
		const struct conf_listener *listener = &config->listeners[i];

		if (listener->address == NULL || (listener->tls != CONF_TLS_NONE) != (listener->cert != NULL) ||
		    conf_listener_find(config, listener, i) != listener)
			abort();
		(void)conf_tls_name(listener->tls);
	}
	for (size_t i = 0; i < config->upstreams_count; i++) {
		if (config->upstreams[i].name == NULL || config->upstreams[i].host == NULL)
			abort();
		(void)conf_tls_name(config->upstreams[i].tls);
	}
	(void)conf_upstream_for_user(config, "alice@example.org");
	(void)conf_upstream_for_user(config, "");
	if (!conf_listeners_equal(config, config))
		abort();
	conf_ref(config);
	copy = config;
	conf_unref(&copy);
	if (copy != NULL)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *errors = NULL;
	struct conf *config;

	if (size > FUZZ_CONFIG_MAX || (memmem(data, size, "include", 7) != NULL && memchr(data, '/', size) != NULL))
		return 0; /* see above: a path could name something that blocks */
	if (fuzz_dir[0] == '\0')
		fuzz_config_setup();
	fuzz_config_write("fuzz.conf", data, size);
	config = conf_load(fuzz_path, &errors);
	if ((config == NULL) == (errors == NULL))
		abort(); /* a config or errors, never both or neither */
	if (config != NULL) {
		fuzz_config_use(config);
		conf_unref(&config);
	} else if (errors[0] == '\0' || fuzz_config_lines(errors) > CONF_MAX_ERRORS + 1) {
		abort(); /* at most CONF_MAX_ERRORS lines, and one that says more were left out */
	}
	free(errors);
	return 0;
}
