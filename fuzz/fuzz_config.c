/* The daemon's configuration: the bytes are written to a file and applied as the YAML
 * config file (sbx_config_apply_file, the path --config takes), and, split on newlines,
 * applied as the III_* environment (sbx_config_apply_env).  Every outcome must leave a
 * configuration that releases cleanly; a failure must say why. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/util.h"
#include "core/config.h"

#define CHECK(c)                                                                                             \
    do {                                                                                                     \
        if (!(c))                                                                                            \
            abort();                                                                                         \
    } while (0)

static char path[64];

static void apply_file(const uint8_t *data, size_t size)
{
    if (!path[0]) {
        snprintf(path, sizeof path, "/tmp/sbx-fuzz-config-%d.yaml", (int)getpid());
    }
    FILE *f = fopen(path, "wb");
    if (!f)
        return;
    fwrite(data, 1, size, f);
    fclose(f);
    sbx_config_t cfg;
    sbx_err_t err = SBX_ERR_INIT;
    sbx_config_defaults(&cfg);
    if (sbx_config_apply_file(&cfg, path, &err) < 0)
        CHECK(err.msg[0]);
    /* Applying twice exercises the replace-what-is-there paths of every list. */
    else if (sbx_config_apply_file(&cfg, path, &err) < 0)
        CHECK(err.msg[0]);
    sbx_config_release(&cfg);
    unlink(path);
}

static void apply_env(const uint8_t *data, size_t size)
{
    /* Each line is one "NAME=value" entry; names without the III_ prefix are ignored by
     * the daemon, so most lines get it added to reach the parsers. */
    char *text = xmalloc(size + 1);
    memcpy(text, data, size);
    text[size] = '\0';
    size_t n = 0, cap = 8;
    char **envp = xcalloc(cap + 1, sizeof(char *));
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (n == cap) {
            cap *= 2;
            envp = xrealloc(envp, (cap + 1) * sizeof(char *));
        }
        envp[n++] = strncmp(line, "III_", 4) && line[0] != '!' ? xasprintf("III_%s", line) : xstrdup(line);
    }
    envp[n] = NULL;
    sbx_config_t cfg;
    sbx_err_t err = SBX_ERR_INIT;
    sbx_config_defaults(&cfg);
    if (sbx_config_apply_env(&cfg, envp, &err) < 0)
        CHECK(err.msg[0]);
    sbx_config_release(&cfg);
    for (size_t i = 0; i < n; i++)
        free(envp[i]);
    free(envp);
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1 << 16)
        return 0;
    apply_file(data, size);
    apply_env(data, size);
    return 0;
}
