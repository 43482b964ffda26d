/* /sandbox image routes: pull, list, inspect, remove and garbage-collect OCI images.
 * References hold '/' and ':', so they travel in the body or the query (?image=), not in
 * a path segment. */
#include "api/rest_images.h"

#include <string.h>

#include "api/params.h"
#include "common/util.h"

static bool names_image(const sbx_config_t *cfg, const char *image, const char *canon)
{
    sbx_oci_ref_t r;
    const sbx_custom_image_t *c = sbx_config_custom_image(cfg, image);
    const char *ref = c ? c->ref : image;
    return ref[0] != '/' && sbx_oci_ref_parse(ref, &r, NULL) == 0 && !strcmp(r.canon, canon);
}

bool sbx_api_image_in_use(sbx_api_t *api, const char *canon)
{
    sbx_core_t *core = sbx_api_core(api);
    sbx_sandbox_rec_t *v = NULL;
    size_t n = 0;
    sbx_err_t e = SBX_ERR_INIT;
    if (sbx_core_list(core, &v, &n, &e) < 0)
        return true; /* fail safe: refuse the delete */
    bool used = false;
    for (size_t i = 0; i < n; i++) {
        const char *s = v[i].status ? v[i].status : "";
        if ((!strcmp(s, "running") || !strcmp(s, "creating")) && v[i].image &&
            names_image(sbx_core_config(core), v[i].image, canon))
            used = true;
        sbx_sandbox_rec_release(&v[i]);
    }
    free(v);
    return used;
}

int sbx_api_image_pull(sbx_api_t *api, const char *image, sbx_image_info_t *out, sbx_err_t *err)
{
    sbx_core_t *core = sbx_api_core(api);
    sbx_registry_opts_t reg;
    sbx_config_registry_opts(sbx_core_config(core), &reg);
    return sbx_image_pull(sbx_core_images(core), image, &reg, NULL, NULL, out, err);
}

int sbx_api_image_remove(sbx_api_t *api, const char *name, bool force, sbx_err_t *err)
{
    sbx_image_store_t *st = sbx_core_images(sbx_api_core(api));
    sbx_image_info_t info;
    if (sbx_image_inspect(st, name, &info, err) < 0)
        return -1;
    int rc = 0;
    if (!force && sbx_api_image_in_use(api, info.ref))
        rc = sbx_fail(err, SBX_E_CONFLICT, NULL,
                      "image %s is in use by a running sandbox (use force to remove it)", info.ref);
    else
        rc = sbx_image_remove(st, info.ref, err);
    sbx_image_info_release(&info);
    return rc;
}

static json_t *render(const sbx_image_info_t *i)
{
    return json_pack("{s:s, s:s, s:s, s:I, s:I, s:s, s:s, s:s, s:I}", "image", i->ref, "id", i->id, "digest",
                     i->manifest_digest, "size", (json_int_t)i->size, "layers", (json_int_t)i->n_layers,
                     "created", i->created, "architecture", i->architecture, "os", i->os, "pulledAt",
                     (json_int_t)i->pulled_ms);
}

static int h_pull(sbx_api_t *api, sbx_http_req_t *req, sbx_http_resp_t *resp, sbx_err_t *err)
{
    const char *image = NULL;
    int has = sbx_param_str(req->params, "image", &image, err);
    if (has < 0)
        return -1;
    if (!has || !*image)
        return sbx_fail(err, SBX_E_INVALID, "S001", "image is required");
    sbx_image_info_t info;
    if (sbx_api_image_pull(api, image, &info, err) < 0)
        return -1;
    resp->json = render(&info);
    sbx_image_info_release(&info);
    return 0;
}

static int h_list(sbx_api_t *api, sbx_http_req_t *req, sbx_http_resp_t *resp, sbx_err_t *err)
{
    sbx_image_store_t *st = sbx_core_images(sbx_api_core(api));
    const char *image = NULL;
    int has = sbx_param_str(req->params, "image", &image, err);
    if (has < 0)
        return -1;
    if (has) {
        sbx_image_info_t info;
        if (sbx_image_inspect(st, image, &info, err) < 0)
            return -1;
        resp->json = render(&info);
        json_object_set_new(resp->json, "inUse", json_boolean(sbx_api_image_in_use(api, info.ref)));
        sbx_image_info_release(&info);
        return 0;
    }
    sbx_image_info_t *v = NULL;
    size_t n = 0;
    if (sbx_image_list(st, &v, &n, err) < 0)
        return -1;
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        json_array_append_new(arr, render(&v[i]));
        sbx_image_info_release(&v[i]);
    }
    free(v);
    resp->json = json_pack("{s:o, s:I}", "images", arr, "total", (json_int_t)n);
    return 0;
}

static int h_delete(sbx_api_t *api, sbx_http_req_t *req, sbx_http_resp_t *resp, sbx_err_t *err)
{
    const char *image = NULL;
    bool force = false;
    int has = sbx_param_str(req->params, "image", &image, err);
    if (has < 0 || sbx_param_bool(req->params, "force", &force, err) < 0)
        return -1;
    if (!has || !*image)
        return sbx_fail(err, SBX_E_INVALID, "S001", "image is required");
    if (sbx_api_image_remove(api, image, force, err) < 0)
        return -1;
    resp->json = json_pack("{s:b}", "success", 1);
    return 0;
}

static int h_gc(sbx_api_t *api, sbx_http_req_t *req, sbx_http_resp_t *resp, sbx_err_t *err)
{
    uint64_t bytes = 0, blobs = 0;
    if (sbx_image_gc(sbx_core_images(sbx_api_core(api)), 0, &bytes, &blobs, err) < 0)
        return -1;
    resp->json = json_pack("{s:I, s:I}", "freedBytes", (json_int_t)bytes, "freedBlobs", (json_int_t)blobs);
    return 0;
}

static const sbx_route_t routes[] = {
    {"POST", "/{prefix}/images/pull", h_pull, false, SBX_DIALECT_REST},
    {"POST", "/{prefix}/images/gc", h_gc, false, SBX_DIALECT_REST},
    {"GET", "/{prefix}/images", h_list, false, SBX_DIALECT_REST},
    {"DELETE", "/{prefix}/images", h_delete, false, SBX_DIALECT_REST},
};
const sbx_route_table_t sbx_rest_images_table = {routes, SBX_ARRAY_LEN(routes)};
