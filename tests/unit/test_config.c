#include "harness.h"
#include "common/util.h"
#include "core/config.h"

static char *write_tmp(const char *content)
{
    char tmpl[] = "/tmp/sbx-config-XXXXXX";
    CHECK(mkdtemp(tmpl) != NULL);
    char *path = xasprintf("%s/config.yaml", tmpl);
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    fputs(content, f);
    fclose(f);
    return path;
}

/* Loads `yaml` as a file and expects failure with `needle` in the message. */
static void expect_file_error(const char *yaml, const char *needle)
{
    sbx_config_t cfg;
    sbx_err_t err = SBX_ERR_INIT;
    sbx_config_defaults(&cfg);
    _cleanup_free_ char *path = write_tmp(yaml);
    int rc = sbx_config_apply_file(&cfg, path, &err);
    if (rc == 0 || !strstr(err.msg, needle))
        fprintf(stderr, "  yaml: %s\n  got rc=%d msg=%s\n  want: %s\n", yaml, rc, err.msg, needle);
    CHECK(rc < 0);
    CHECK(strstr(err.msg, needle) != NULL);
    CHECK(strstr(err.msg, "config.yaml") != NULL);
    CHECK(err.kind == SBX_E_INVALID);
    sbx_config_release(&cfg);
}

static int load(sbx_config_t *cfg, char **argv, char **envp, sbx_err_t *err)
{
    int argc = 0;
    while (argv[argc])
        argc++;
    return sbx_config_load(cfg, argc, argv, envp, err);
}

TEST(defaults)
{
    sbx_config_t cfg;
    sbx_err_t err = SBX_ERR_INIT;
    char *argv[] = {"sandboxd", NULL};
    char *envp[] = {"PATH=/bin", NULL};
    CHECK_EQ_INT(load(&cfg, argv, envp, &err), 0);
    CHECK_EQ_STR(cfg.listen_host, "127.0.0.1");
    CHECK_EQ_INT(cfg.listen_port, 3111);
    CHECK_EQ_STR(cfg.state_dir, "/var/lib/sandboxd");
    CHECK_EQ_STR(cfg.run_dir, "/run/sandboxd");
    CHECK(cfg.config_file == NULL);
    CHECK(strstr(cfg.agent_path, "/sandbox-agent") != NULL);
    CHECK(cfg.agent_path[0] == '/');
    CHECK_EQ_STR(cfg.api_prefix, "sandbox");
    CHECK(cfg.auth_token == NULL);
    CHECK(cfg.auto_install);
    CHECK_EQ_INT(cfg.n_image_allowlist, 2);
    CHECK_EQ_STR(cfg.image_allowlist[0], "python");
    CHECK_EQ_STR(cfg.image_allowlist[1], "node");
    CHECK_EQ_INT(cfg.n_allowed_images, 1);
    CHECK_EQ_STR(cfg.allowed_images[0], "*");
    CHECK_EQ_INT(cfg.n_custom_images, 0);
    CHECK_EQ_INT(cfg.n_per_image_caps, 0);
    CHECK_EQ_INT(cfg.default_idle_timeout_secs, 300);
    CHECK_EQ_INT(cfg.max_concurrent_sandboxes, 32);
    CHECK(cfg.default_cpus == 1);
    CHECK_EQ_INT(cfg.default_memory_mb, 512);
    CHECK_EQ_INT(cfg.default_timeout_secs, 3600);
    CHECK_EQ_STR(cfg.workspace_dir, "/workspace");
    CHECK_EQ_INT(cfg.max_cmd_timeout_secs, 300);
    CHECK_EQ_INT(cfg.default_disk_mb, 1024);
    CHECK_EQ_INT(cfg.default_pids_max, 1024);
    CHECK_EQ_INT(cfg.stopped_retention_secs, 300);
    CHECK_EQ_INT(cfg.reaper_interval_secs, 10);
    CHECK(!cfg.debug);
    CHECK(sbx_config_image_allowed(&cfg, "python"));
    CHECK(sbx_config_image_allowed(&cfg, "node"));
    CHECK(!sbx_config_image_allowed(&cfg, "ubuntu"));
    sbx_config_release(&cfg);
}

static const char full_yaml[] = "auto_install: false\n"
                                "image_allowlist:\n  - python\n  - my-app\n"
                                "default_idle_timeout_secs: 60\n"
                                "max_concurrent_sandboxes: 4\n"
                                "default_cpus: 0.5\n"
                                "default_memory_mb: 256\n"
                                "per_image_caps:\n  python: {max_cpus: 2, max_memory_mb: 1024}\n"
                                "custom_images:\n  my-app: /srv/rootfs/my-app\n  gpu: ghcr.io/acme/gpu:1\n"
                                "listen: 0.0.0.0:8080\n"
                                "state_dir: /srv/sandboxd\n"
                                "api_prefix: /api/sandbox/\n"
                                "workspace_dir: /work\n"
                                "max_cmd_timeout_secs: 30\n"
                                "default_timeout_secs: 600\n"
                                "default_disk_mb: 2048\n"
                                "default_pids_max: 64\n"
                                "stopped_retention_secs: 0\n";

static void check_full(const sbx_config_t *cfg)
{
    CHECK(!cfg->auto_install);
    CHECK_EQ_INT(cfg->n_image_allowlist, 2);
    CHECK_EQ_STR(cfg->image_allowlist[1], "my-app");
    CHECK_EQ_INT(cfg->default_idle_timeout_secs, 60);
    CHECK_EQ_INT(cfg->max_concurrent_sandboxes, 4);
    CHECK(cfg->default_cpus == 0.5);
    CHECK_EQ_INT(cfg->default_memory_mb, 256);
    const sbx_image_cap_t *cap = sbx_config_image_cap(cfg, "python");
    CHECK(cap != NULL);
    CHECK(cap->max_cpus == 2);
    CHECK_EQ_INT(cap->max_memory_mb, 1024);
    CHECK(sbx_config_image_cap(cfg, "node") == NULL);
    const sbx_custom_image_t *ci = sbx_config_custom_image(cfg, "my-app");
    CHECK(ci != NULL);
    CHECK_EQ_STR(ci->ref, "/srv/rootfs/my-app");
    CHECK_EQ_STR(sbx_config_custom_image(cfg, "gpu")->ref, "ghcr.io/acme/gpu:1");
    CHECK(sbx_config_custom_image(cfg, "python") == NULL);
    CHECK_EQ_STR(cfg->listen_host, "0.0.0.0");
    CHECK_EQ_INT(cfg->listen_port, 8080);
    CHECK_EQ_STR(cfg->state_dir, "/srv/sandboxd");
    CHECK_EQ_STR(cfg->api_prefix, "api/sandbox");
    CHECK_EQ_STR(cfg->workspace_dir, "/work");
    CHECK_EQ_INT(cfg->max_cmd_timeout_secs, 30);
    CHECK_EQ_INT(cfg->default_timeout_secs, 600);
    CHECK_EQ_INT(cfg->default_disk_mb, 2048);
    CHECK_EQ_INT(cfg->default_pids_max, 64);
    CHECK_EQ_INT(cfg->stopped_retention_secs, 0);
    CHECK(sbx_config_image_allowed(cfg, "my-app"));
    CHECK(!sbx_config_image_allowed(cfg, "node"));
    CHECK(!sbx_config_image_allowed(cfg, "gpu"));
}

TEST(file_top_level)
{
    sbx_config_t cfg;
    sbx_err_t err = SBX_ERR_INIT;
    _cleanup_free_ char *path = write_tmp(full_yaml);
    char *argv[] = {"sandboxd", "--config", path, NULL};
    char *envp[] = {NULL};
    CHECK_EQ_INT(load(&cfg, argv, envp, &err), 0);
    check_full(&cfg);
    CHECK_EQ_STR(cfg.config_file, path);
    /* A state dir other than the default gets its own run dir. */
    CHECK_EQ_STR(cfg.run_dir, "/srv/sandboxd/run");
    sbx_config_release(&cfg);
}

TEST(file_workers_block)
{
    /* Indent every line of the full config under workers[].config. */
    char body[4096] = "";
    const char *p = full_yaml;
    while (*p) {
        const char *nl = strchr(p, '\n');
        strcat(body, "      ");
        strncat(body, p, (size_t)(nl - p + 1));
        p = nl + 1;
    }
    _cleanup_free_ char *yaml = xasprintf("workers:\n  - name: other-worker\n    config:\n      foo: 1\n"
                                          "  - name: iii-sandbox\n    config:\n%s",
                                          body);
    sbx_config_t cfg;
    sbx_err_t err = SBX_ERR_INIT;
    sbx_config_defaults(&cfg);
    _cleanup_free_ char *path = write_tmp(yaml);
    int rc = sbx_config_apply_file(&cfg, path, &err);
    if (rc < 0)
        fprintf(stderr, "  %s\n", err.msg);
    CHECK_EQ_INT(rc, 0);
    check_full(&cfg);
    sbx_config_release(&cfg);
}

TEST(file_guide_default_block)
{
    sbx_config_t cfg;
    sbx_err_t err = SBX_ERR_INIT;
    sbx_config_defaults(&cfg);
    _cleanup_free_ char *path =
        write_tmp("workers:\n- name: iii-sandbox\n  config:\n    auto_install: true\n"
                  "    image_allowlist:\n    - python\n    - node\n"
                  "    default_idle_timeout_secs: 300\n    max_concurrent_sandboxes: 32\n"
                  "    default_cpus: 1\n    default_memory_mb: 512\n");
    CHECK_EQ_INT(sbx_config_apply_file(&cfg, path, &err), 0);
    CHECK(cfg.auto_install);
    CHECK_EQ_INT(cfg.n_image_allowlist, 2);
    CHECK_EQ_INT(cfg.max_concurrent_sandboxes, 32);
    sbx_config_release(&cfg);
}

TEST(file_errors)
{
    expect_file_error("foo: 1\n", "unknown key 'foo'");
    expect_file_error("workers:\n  - name: iii-sandbox\n    config:\n      bar: true\n", "unknown key 'bar'");
    expect_file_error("max_concurrent_sandboxes: \"32\"\n",
                      "'max_concurrent_sandboxes' must be a positive integer");
    expect_file_error("max_concurrent_sandboxes: 0\n",
                      "'max_concurrent_sandboxes' must be a positive integer");
    expect_file_error("default_memory_mb: lots\n", "'default_memory_mb' must be a positive integer");
    expect_file_error("default_cpus: -1\n", "'default_cpus' must be a number greater than 0");
    expect_file_error("auto_install: maybe\n", "'auto_install' must be a boolean");
    expect_file_error("auto_install: \"true\"\n", "'auto_install' must be a boolean");
    expect_file_error("image_allowlist: python\n", "'image_allowlist' must be a list");
    expect_file_error("custom_images:\n  python: /srv/evil\n",
                      "custom_images: 'python' shadows a preset image");
    expect_file_error("custom_images:\n  node: ghcr.io/x/node\n",
                      "custom_images: 'node' shadows a preset image");
    expect_file_error("custom_images:\n  app: [a, b]\n", "custom_images: 'app' must be a string");
    expect_file_error("per_image_caps:\n  python: {max_gpus: 1}\n",
                      "unknown key 'per_image_caps.python.max_gpus'");
    expect_file_error("per_image_caps:\n  python: {max_cpus: x}\n", "must be a number greater than 0");
    expect_file_error("listen: 127.0.0.1:99999\n", "'listen'");
    expect_file_error("state_dir: relative/dir\n", "'state_dir' must be an absolute path");
    expect_file_error("# fine\ndefault_cpus: 1\nfoo: [1, 2\n", "config.yaml:4: YAML syntax error");
    expect_file_error("# fine\ndefault_cpus: 1\nfoo: [1, 2\n", "flow sequence at line 3");
    expect_file_error("a: b\n  c: d\n", "YAML syntax error");
    expect_file_error("- just\n- a list\n", "expected a map");
}

TEST(file_unknown_key_names_line)
{
    sbx_config_t cfg;
    sbx_err_t err = SBX_ERR_INIT;
    sbx_config_defaults(&cfg);
    _cleanup_free_ char *path = write_tmp("auto_install: true\nfooo: 1\n");
    CHECK(sbx_config_apply_file(&cfg, path, &err) < 0);
    _cleanup_free_ char *want = xasprintf("%s:2: unknown key 'fooo'", path);
    CHECK_EQ_STR(err.msg, want);
    sbx_config_release(&cfg);
}

TEST(file_unreadable)
{
    sbx_config_t cfg;
    sbx_err_t err = SBX_ERR_INIT;
    sbx_config_defaults(&cfg);
    CHECK(sbx_config_apply_file(&cfg, "/nonexistent/config.yaml", &err) < 0);
    CHECK(strstr(err.msg, "/nonexistent/config.yaml") != NULL);
    CHECK(strstr(err.msg, "No such file") != NULL);
    sbx_config_release(&cfg);
}

TEST(empty_allowlist_denies_everything)
{
    sbx_config_t cfg;
    sbx_err_t err = SBX_ERR_INIT;
    sbx_config_defaults(&cfg);
    _cleanup_free_ char *path = write_tmp("image_allowlist: []\n");
    CHECK_EQ_INT(sbx_config_apply_file(&cfg, path, &err), 0);
    CHECK_EQ_INT(cfg.n_image_allowlist, 0);
    CHECK(!sbx_config_image_allowed(&cfg, "python"));
    CHECK(!sbx_config_image_allowed(&cfg, "node"));
    sbx_config_release(&cfg);
}

TEST(env_values)
{
    sbx_config_t cfg;
    sbx_err_t err = SBX_ERR_INIT;
    sbx_config_defaults(&cfg);
    char *envp[] = {"III_REST_PORT=4000",
                    "III_API_PREFIX=/box/",
                    "III_AUTH_TOKEN=s3cret",
                    "III_MAX_SANDBOXES=7",
                    "III_DEFAULT_TIMEOUT=120",
                    "III_DEFAULT_MEMORY=1024",
                    "III_DEFAULT_CPU=2.5",
                    "III_ALLOWED_IMAGES= py* , node ,",
                    "III_WORKSPACE_DIR=/home/u",
                    "III_MAX_CMD_TIMEOUT=60",
                    "III_POOL_SIZE=3",
                    "III_ENGINE_URL=ws://x",
                    "HOME=/root",
                    NULL};
    CHECK_EQ_INT(sbx_config_apply_env(&cfg, envp, &err), 0);
    CHECK_EQ_INT(cfg.listen_port, 4000);
    CHECK_EQ_STR(cfg.api_prefix, "box");
    CHECK_EQ_STR(cfg.auth_token, "s3cret");
    CHECK_EQ_INT(cfg.max_concurrent_sandboxes, 7);
    CHECK_EQ_INT(cfg.default_timeout_secs, 120);
    CHECK_EQ_INT(cfg.default_memory_mb, 1024);
    CHECK(cfg.default_cpus == 2.5);
    CHECK_EQ_INT(cfg.n_allowed_images, 2);
    CHECK_EQ_STR(cfg.allowed_images[0], "py*");
    CHECK_EQ_STR(cfg.allowed_images[1], "node");
    CHECK_EQ_STR(cfg.workspace_dir, "/home/u");
    CHECK_EQ_INT(cfg.max_cmd_timeout_secs, 60);

    char *off[] = {"III_AUTH_TOKEN=", NULL};
    CHECK_EQ_INT(sbx_config_apply_env(&cfg, off, &err), 0);
    CHECK(cfg.auth_token == NULL);
    sbx_config_release(&cfg);
}

static void expect_env_error(const char *var, const char *needle)
{
    sbx_config_t cfg;
    sbx_err_t err = SBX_ERR_INIT;
    sbx_config_defaults(&cfg);
    char *envp[] = {(char *)var, NULL};
    int rc = sbx_config_apply_env(&cfg, envp, &err);
    if (rc == 0 || !strstr(err.msg, needle))
        fprintf(stderr, "  %s: rc=%d msg=%s\n", var, rc, err.msg);
    CHECK(rc < 0);
    CHECK(strstr(err.msg, needle) != NULL);
    CHECK(err.kind == SBX_E_INVALID);
    sbx_config_release(&cfg);
}

TEST(env_errors)
{
    expect_env_error("III_REST_PORT=0", "III_REST_PORT");
    expect_env_error("III_REST_PORT=70000", "III_REST_PORT");
    expect_env_error("III_REST_PORT=80x", "III_REST_PORT");
    expect_env_error("III_MAX_SANDBOXES=-1", "III_MAX_SANDBOXES");
    expect_env_error("III_DEFAULT_TIMEOUT=1h", "III_DEFAULT_TIMEOUT");
    expect_env_error("III_DEFAULT_MEMORY=big", "III_DEFAULT_MEMORY");
    expect_env_error("III_DEFAULT_CPU=0", "III_DEFAULT_CPU");
    expect_env_error("III_WORKSPACE_DIR=workspace", "III_WORKSPACE_DIR");
    expect_env_error("III_MAX_CMD_TIMEOUT=0", "III_MAX_CMD_TIMEOUT");
    expect_env_error("III_ALLOWED_IMAGES=*py", "III_ALLOWED_IMAGES");
    expect_env_error("III_ALLOWED_IMAGES= , ", "III_ALLOWED_IMAGES");
    expect_env_error("III_API_PREFIX=a b", "III_API_PREFIX");
}

TEST(allowlist_combinations)
{
    sbx_config_t cfg;
    sbx_err_t err = SBX_ERR_INIT;
    sbx_config_defaults(&cfg);
    _cleanup_free_ char *path = write_tmp("image_allowlist: [python, node, pyext, my-app]\n"
                                          "custom_images: {pyext: /srv/pyext, my-app: /srv/app}\n");
    CHECK_EQ_INT(sbx_config_apply_file(&cfg, path, &err), 0);
    char *py[] = {"III_ALLOWED_IMAGES=py*", NULL};
    CHECK_EQ_INT(sbx_config_apply_env(&cfg, py, &err), 0);
    CHECK(sbx_config_image_allowed(&cfg, "python"));
    CHECK(sbx_config_image_allowed(&cfg, "pyext"));
    CHECK(!sbx_config_image_allowed(&cfg, "node"));
    CHECK(!sbx_config_image_allowed(&cfg, "my-app"));
    /* A pattern alone never admits an image the allowlist lacks. */
    CHECK(!sbx_config_image_allowed(&cfg, "pypy"));

    char *exact[] = {"III_ALLOWED_IMAGES=node,my-app", NULL};
    CHECK_EQ_INT(sbx_config_apply_env(&cfg, exact, &err), 0);
    CHECK(!sbx_config_image_allowed(&cfg, "python"));
    CHECK(sbx_config_image_allowed(&cfg, "node"));
    CHECK(sbx_config_image_allowed(&cfg, "my-app"));
    CHECK(!sbx_config_image_allowed(&cfg, "my-ap"));
    CHECK(!sbx_config_image_allowed(&cfg, ""));
    sbx_config_release(&cfg);
}

TEST(precedence_file_env_flag)
{
    _cleanup_free_ char *path =
        write_tmp("listen: 10.0.0.1:5000\nmax_concurrent_sandboxes: 5\ndefault_memory_mb: 100\n"
                  "state_dir: /srv/from-file\n");
    sbx_config_t cfg;
    sbx_err_t err = SBX_ERR_INIT;
    char *argv[] = {"sandboxd", "--config", path, NULL};
    char *envp[] = {"III_REST_PORT=6000", "III_MAX_SANDBOXES=9", NULL};
    CHECK_EQ_INT(load(&cfg, argv, envp, &err), 0);
    CHECK_EQ_STR(cfg.listen_host, "10.0.0.1");
    CHECK_EQ_INT(cfg.listen_port, 6000);           /* env over file */
    CHECK_EQ_INT(cfg.max_concurrent_sandboxes, 9); /* env over file */
    CHECK_EQ_INT(cfg.default_memory_mb, 100);      /* file over default */
    sbx_config_release(&cfg);

    char *argv2[] = {"sandboxd",
                     "--listen",
                     "7000",
                     "--config="
                     "/dev/null",
                     "--state-dir",
                     "/srv/flag/",
                     "--agent",
                     "/opt/agent",
                     "--debug",
                     NULL};
    /* --config=/dev/null: an empty file is fine. */
    CHECK_EQ_INT(load(&cfg, argv2, envp, &err), 0);
    CHECK_EQ_STR(cfg.listen_host, "127.0.0.1");
    CHECK_EQ_INT(cfg.listen_port, 7000); /* flag over env */
    CHECK_EQ_STR(cfg.state_dir, "/srv/flag");
    CHECK_EQ_STR(cfg.run_dir, "/srv/flag/run");
    CHECK_EQ_STR(cfg.agent_path, "/opt/agent");
    CHECK(cfg.debug);
    sbx_config_release(&cfg);

    char *argv3[] = {"sandboxd", "--config", path, "--listen", ":8000", "--state-dir", "/srv/flag", NULL};
    CHECK_EQ_INT(load(&cfg, argv3, envp, &err), 0);
    CHECK_EQ_STR(cfg.listen_host, "10.0.0.1");
    CHECK_EQ_INT(cfg.listen_port, 8000);
    CHECK_EQ_STR(cfg.state_dir, "/srv/flag"); /* flag over file */
    sbx_config_release(&cfg);

    char *argv4[] = {"sandboxd", "--listen", "[::1]:9000", NULL};
    CHECK_EQ_INT(load(&cfg, argv4, envp, &err), 0);
    CHECK_EQ_STR(cfg.listen_host, "::1");
    CHECK_EQ_INT(cfg.listen_port, 9000);
    sbx_config_release(&cfg);
}

static void expect_flag_error(char **argv, const char *needle)
{
    sbx_config_t cfg;
    sbx_err_t err = SBX_ERR_INIT;
    char *envp[] = {NULL};
    int rc = load(&cfg, argv, envp, &err);
    if (rc != -1 || !strstr(err.msg, needle))
        fprintf(stderr, "  rc=%d msg=%s want=%s\n", rc, err.msg, needle);
    CHECK_EQ_INT(rc, -1);
    CHECK(strstr(err.msg, needle) != NULL);
    sbx_config_release(&cfg);
}

TEST(flag_errors)
{
    char *a1[] = {"sandboxd", "--frobnicate", NULL};
    expect_flag_error(a1, "unknown option '--frobnicate'");
    char *a2[] = {"sandboxd", "--listen", NULL};
    expect_flag_error(a2, "--listen needs a value");
    char *a3[] = {"sandboxd", "--listen", "host:notaport", NULL};
    expect_flag_error(a3, "--listen");
    char *a4[] = {"sandboxd", "serve", NULL};
    expect_flag_error(a4, "unexpected argument 'serve'");
    char *a5[] = {"sandboxd", "--config", "/nonexistent/c.yaml", NULL};
    expect_flag_error(a5, "/nonexistent/c.yaml");
    char *a6[] = {"sandboxd", NULL};
    sbx_config_t cfg;
    sbx_err_t err = SBX_ERR_INIT;
    char *envp[] = {"III_DEFAULT_CPU=abc", NULL};
    CHECK_EQ_INT(load(&cfg, a6, envp, &err), -1);
    CHECK(strstr(err.msg, "III_DEFAULT_CPU") != NULL);
    sbx_config_release(&cfg);
}

TEST(help_returns_1)
{
    sbx_config_t cfg;
    sbx_err_t err = SBX_ERR_INIT;
    char *argv[] = {"sandboxd", "--help", NULL};
    char *envp[] = {NULL};
    /* Keep the usage text out of the test output. */
    FILE *saved = freopen("/dev/null", "w", stdout);
    CHECK(saved != NULL);
    CHECK_EQ_INT(load(&cfg, argv, envp, &err), 1);
    sbx_config_release(&cfg);
    char *argv2[] = {"sandboxd", "-h", NULL};
    CHECK_EQ_INT(load(&cfg, argv2, envp, &err), 1);
    sbx_config_release(&cfg);
}

SBX_TEST_MAIN()
