/* /v1/images (v1-wire.md §5.2): list, inspect, pull, delete. */
#include <string.h>

#include "api/params.h"
#include "api/rest_images.h"
#include "common/util.h"

static json_t *tags_of(const sbx_image_info_t *i)
{
    return json_pack("[s]", i->ref);
}

static int h_list(sbx_api_t *api, sbx_http_req_t *req, sbx_http_resp_t *resp, sbx_err_t *err)
{
    sbx_image_info_t *v = NULL;
    size_t n = 0;
    if (sbx_image_list(sbx_core_images(sbx_api_core(api)), &v, &n, err) < 0)
        return -1;
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        json_array_append_new(arr, json_pack("{s:s, s:o, s:I}", "id", v[i].id, "tags", tags_of(&v[i]), "size",
                                             (json_int_t)v[i].size));
        sbx_image_info_release(&v[i]);
    }
    free(v);
    resp->json = json_pack("{s:o}", "images", arr);
    if (!n)
        json_object_set_new(resp->json, "message", json_string("no images found"));
    return 0;
}

static int h_get(sbx_api_t *api, sbx_http_req_t *req, sbx_http_resp_t *resp, sbx_err_t *err)
{
    sbx_image_info_t i;
    if (sbx_image_inspect(sbx_core_images(sbx_api_core(api)), req->path_params[0], &i, err) < 0)
        return -1;
    resp->json =
        json_pack("{s:s, s:o, s:I, s:s, s:s, s:s}", "id", i.id, "tags", tags_of(&i), "size",
                  (json_int_t)i.size, "created", i.created, "architecture", i.architecture, "os", i.os);
    sbx_image_info_release(&i);
    return 0;
}

static int h_pull(sbx_api_t *api, sbx_http_req_t *req, sbx_http_resp_t *resp, sbx_err_t *err)
{
    const char *image = NULL;
    int has = sbx_param_str(req->params, "image", &image, err);
    if (has < 0)
        return -1;
    if (!has || !*image)
        return sbx_fail(err, SBX_E_INVALID, NULL,
                        "Key: 'PullImageRequest.Image' Error:Field validation for 'Image' failed on the "
                        "'required' tag");
    sbx_image_info_t i;
    if (sbx_api_image_pull(api, image, &i, err) < 0) {
        if (err && err->kind != SBX_E_INVALID) {
            sbx_error_wrap(err, "pull %s", image);
            err->kind = SBX_E_INTERNAL;
        }
        return -1;
    }
    sbx_image_info_release(&i);
    resp->json = json_pack("{s:s, s:s}", "status", "pulled", "image", image);
    return 0;
}

static int h_delete(sbx_api_t *api, sbx_http_req_t *req, sbx_http_resp_t *resp, sbx_err_t *err)
{
    const char *force = json_string_value(json_object_get(req->query, "force"));
    if (sbx_api_image_remove(api, req->path_params[0], force && !strcmp(force, "true"), err) < 0)
        return -1;
    resp->status = 204;
    return 0;
}

static const sbx_route_t routes[] = {
    {"GET", "/v1/images", h_list, false, SBX_DIALECT_V1},
    {"POST", "/v1/images/pull", h_pull, false, SBX_DIALECT_V1},
    {"GET", "/v1/images/:id", h_get, false, SBX_DIALECT_V1},
    {"DELETE", "/v1/images/:id", h_delete, false, SBX_DIALECT_V1},
};
const sbx_route_table_t sbx_v1_images_table = {routes, SBX_ARRAY_LEN(routes)};
