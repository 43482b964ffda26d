#include "harness.h"
#include "common/util.h"
#include "common/base64.h"

TEST(parse_duration)
{
    int64_t ms;
    CHECK(sbx_parse_duration_ms("30s", &ms) == 0 && ms == 30000);
    CHECK(sbx_parse_duration_ms("5m", &ms) == 0 && ms == 300000);
    CHECK(sbx_parse_duration_ms("500ms", &ms) == 0 && ms == 500);
    CHECK(sbx_parse_duration_ms("1h30m", &ms) == 0 && ms == 5400000);
    CHECK(sbx_parse_duration_ms("2", &ms) == 0 && ms == 2000);
    CHECK(sbx_parse_duration_ms("1.5s", &ms) == 0 && ms == 1500);
    CHECK(sbx_parse_duration_ms("", &ms) < 0);
    CHECK(sbx_parse_duration_ms("abc", &ms) < 0);
    CHECK(sbx_parse_duration_ms("5x", &ms) < 0);
    CHECK(sbx_parse_duration_ms("-1s", &ms) < 0);
}

TEST(ids_have_uuid_layout)
{
    char id[40];
    sbx_new_id("sbx", id, sizeof id);
    CHECK_EQ_INT(strlen(id), 28);
    CHECK(!strncmp(id, "sbx_", 4));
    CHECK(id[4 + 12] == '4');
    CHECK(strchr("89ab", id[4 + 16]) != NULL);
}

TEST(consttime_equal)
{
    CHECK(sbx_consttime_equal("secret", "secret"));
    CHECK(!sbx_consttime_equal("secre", "secret"));
    CHECK(!sbx_consttime_equal("secret1", "secret"));
    CHECK(!sbx_consttime_equal("", "secret"));
    CHECK(sbx_consttime_equal("", ""));
}

TEST(errors_wrap)
{
    sbx_err_t err = SBX_ERR_INIT;
    sbx_fail(&err, SBX_E_NOT_FOUND, "S002", "sandbox not found: %s", "x");
    sbx_error_wrap(&err, "exec");
    CHECK_EQ_STR(err.msg, "exec: sandbox not found: x");
    CHECK_EQ_STR(err.code, "S002");
    CHECK(err.kind == SBX_E_NOT_FOUND);
}

TEST(base64_round_trip)
{
    const char bin[] = {'a', 0, 'b', (char)0xff, (char)0x80, 'z'};
    for (size_t n = 0; n <= sizeof bin; n++) {
        char *enc = sbx_base64_encode(bin, n);
        size_t len = 99;
        unsigned char *dec = sbx_base64_decode(enc, strlen(enc), &len);
        CHECK(dec != NULL);
        CHECK_EQ_INT(len, n);
        CHECK(memcmp(dec, bin, n) == 0);
        free(enc);
        free(dec);
    }
    size_t len;
    char *enc = sbx_base64_encode("hello", 5);
    CHECK_EQ_STR(enc, "aGVsbG8=");
    free(enc);
    CHECK(sbx_base64_decode("not base64!", 11, &len) == NULL);
    CHECK(sbx_base64_decode("aGVsbG8=x", 9, &len) == NULL);
    CHECK(sbx_base64_decode("a", 1, &len) == NULL);
}

SBX_TEST_MAIN()
