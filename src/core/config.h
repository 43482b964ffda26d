/* Daemon settings: embedded defaults < YAML config file < III_* environment variables
 * < command-line flags.  See docs/configuration.md for every key. */
#ifndef SBX_CORE_CONFIG_H
#define SBX_CORE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "image/oci.h"

typedef struct {
    char *name; /* short name used in requests and the allowlist */
    char *ref;  /* an absolute path of a local rootfs directory, or an OCI reference */
} sbx_custom_image_t;

typedef struct {
    char *name;
    double max_cpus;       /* 0 = no cap */
    int64_t max_memory_mb; /* 0 = no cap */
} sbx_image_cap_t;

typedef struct {
    /* listener and paths */
    char *listen_host; /* "127.0.0.1" */
    int listen_port;   /* 3111; III_REST_PORT; --listen */
    char *state_dir;   /* /var/lib/sandboxd; --state-dir */
    char *run_dir;     /* /run/sandboxd (a subdirectory per state dir is fine) */
    char *config_file; /* --config; NULL = none */
    char *agent_path;  /* sandbox-agent binary; default: next to sandboxd */
    char *api_prefix;  /* "sandbox"; III_API_PREFIX (without slashes) */
    char *auth_token;  /* III_AUTH_TOKEN; NULL = auth off */

    /* images (sandbox-guide.txt keys) */
    bool auto_install;      /* true */
    char **image_allowlist; /* default: python, node */
    size_t n_image_allowlist;
    sbx_custom_image_t *custom_images;
    size_t n_custom_images;
    sbx_image_cap_t *per_image_caps;
    size_t n_per_image_caps;
    char **allowed_images; /* III_ALLOWED_IMAGES patterns ("*", "prefix*", exact); default "*" */
    size_t n_allowed_images;
    char **insecure_registries; /* host:port entries pulled over plain http */
    size_t n_insecure_registries;
    char *registry_mirror;           /* replaces registry-1.docker.io for docker.io; NULL = none */
    char *registry_credentials_file; /* Docker config.json-style credentials; NULL = none */
    int64_t image_cache_budget_mb;   /* blob cache size that triggers GC after a pull; 0 = none */

    /* sandbox defaults and limits */
    int64_t default_idle_timeout_secs; /* 300 */
    int64_t max_concurrent_sandboxes;  /* 32; III_MAX_SANDBOXES */
    double default_cpus;               /* 1; III_DEFAULT_CPU */
    int64_t default_memory_mb;         /* 512; III_DEFAULT_MEMORY */
    int64_t default_timeout_secs;      /* TTL, 3600; III_DEFAULT_TIMEOUT */
    char *workspace_dir;               /* /workspace; III_WORKSPACE_DIR */
    int64_t max_cmd_timeout_secs;      /* 300; III_MAX_CMD_TIMEOUT */
    int64_t default_disk_mb;           /* 1024: size cap of the writable layer */
    int64_t default_pids_max;          /* 1024 */
    int64_t stopped_retention_secs;    /* 300: how long a stopped record answers S004 */
    int64_t reaper_interval_secs;      /* 10 */
    int64_t max_exec_output_bytes;     /* 1 MiB: stdout/stderr kept by a blocking exec */
    int64_t max_background_secs;       /* 86400: timeout of a background exec that gives none */
    int64_t log_quota_mb;              /* 1024: exec logs kept on disk per sandbox */
    int64_t function_exec_concurrency; /* 1: execs at once per sandbox via sandbox::exec; 0 = no limit */
    int64_t queue_workers;             /* 4: job queue workers (jobs running at once) */
    int64_t pool_size;                 /* 0: warm sandboxes kept ready per pooled image (III_POOL_SIZE) */
    char **pool_images;                /* images to keep warm; default: the image_allowlist */
    size_t n_pool_images;
    bool pool_images_set;
    int64_t queue_retry_base_ms; /* 1000: first retry delay, doubled per retry */
    bool cgroup_favor_dynmods;   /* true: fast cgroup migrations (favordynmods), see isolation.md */
    bool debug;                  /* --debug: debug logging */
} sbx_config_t;

/* Fills cfg with the embedded defaults. */
void sbx_config_defaults(sbx_config_t *cfg);
/* Applies a YAML file.  Accepts the keys at top level or inside the engine's
 * `workers: [{name: iii-sandbox, config: {...}}]` block.  An unknown key, a value of the
 * wrong type, or a custom image named like a preset fails with a message naming it. */
int sbx_config_apply_file(sbx_config_t *cfg, const char *path, sbx_err_t *err);
/* Applies III_* variables from envp (NULL-terminated "K=V" list). */
int sbx_config_apply_env(sbx_config_t *cfg, char **envp, sbx_err_t *err);
/* The whole chain: defaults, --config file, environment, then flags
 * (--config FILE, --listen ADDR:PORT, --state-dir DIR, --agent PATH, --debug).
 * Returns 1 if --help was asked (usage printed to stdout), 0 on success, -1 on error;
 * cfg holds nothing to release unless it returns 0. */
int sbx_config_load(sbx_config_t *cfg, int argc, char **argv, char **envp, sbx_err_t *err);
void sbx_config_release(sbx_config_t *cfg);

/* Lookups used by core/. */
const sbx_custom_image_t *sbx_config_custom_image(const sbx_config_t *cfg, const char *name);
const sbx_image_cap_t *sbx_config_image_cap(const sbx_config_t *cfg, const char *name);
/* Fills the registry settings of the image store from cfg (borrowing its strings). */
void sbx_config_registry_opts(const sbx_config_t *cfg, sbx_registry_opts_t *out);
/* true if `name` passes both image_allowlist (exact) and III_ALLOWED_IMAGES (patterns). */
bool sbx_config_image_allowed(const sbx_config_t *cfg, const char *name);

#endif
