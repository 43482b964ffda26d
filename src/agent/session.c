/* One daemon connection: reads the first frame(s) and runs the operation they ask for. */
#include "agent/session.h"

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

#include "agent/exec.h"
#include "agent/fs.h"
#include "common/util.h"
#include "proto/proto.h"

void sbx_agent_send_error(int sock, int errnum, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    sbx_msg_t m = {0};
    sbx_msg_begin(&m, SBX_MSG_ERROR);
    if (errnum)
        sbx_msg_add_int(&m, SBX_TAG_ERRNO, errnum);
    sbx_msg_add_str(&m, SBX_TAG_MESSAGE, msg);
    sbx_msg_send(sock, &m);
    sbx_msg_release(&m);
}

static int send_pong(int sock)
{
    sbx_msg_t m = {0};
    sbx_msg_begin(&m, SBX_MSG_PONG);
    sbx_msg_add_int(&m, SBX_TAG_VERSION, SBX_PROTO_VERSION);
    sbx_msg_add_int(&m, SBX_TAG_PID, getppid());
    int r = sbx_msg_send(sock, &m);
    sbx_msg_release(&m);
    return r;
}

static void run_exec(int sock, const uint8_t *payload, size_t len)
{
    sbx_exec_req_t req;
    if (sbx_exec_req_decode(payload, len, &req) < 0) {
        sbx_agent_send_error(sock, EPROTO, "malformed EXEC request");
        return;
    }
    sbx_agent_exec(sock, &req);
    sbx_exec_req_release(&req);
}

/* Signals one process of the sandbox.  Processes run as the sandbox's users, so the agent
 * (root inside) may signal any of them, but never itself: PID 1 must not be taken down. */
static void run_kill(int sock, const uint8_t *payload, size_t len)
{
    sbx_field_iter_t it;
    sbx_field_t f;
    int64_t pid = 0, signo = 0;
    sbx_field_iter_init(&it, payload, len);
    int r;
    while ((r = sbx_field_next(&it, &f)) == 1) {
        if (f.tag == SBX_TAG_PID && sbx_field_int(&f, &pid) < 0)
            r = -1;
        if (f.tag == SBX_TAG_SIGNO && sbx_field_int(&f, &signo) < 0)
            r = -1;
        if (r < 0)
            break;
    }
    if (r < 0 || pid <= 1 || pid > INT32_MAX || signo < 0 || signo > 64) {
        sbx_agent_send_error(sock, EINVAL, "KILL needs a pid above 1 and a signal from 0 to 64");
        return;
    }
    if (kill((pid_t)pid, (int)signo) < 0) {
        sbx_agent_send_error(sock, errno, "kill %lld: %s", (long long)pid, strerror(errno));
        return;
    }
    sbx_msg_t m = {0};
    sbx_exit_info_t info = {0};
    sbx_exit_encode(&m, &info);
    sbx_msg_send(sock, &m);
    sbx_msg_release(&m);
}

void sbx_agent_session_run(int sock)
{
    for (;;) {
        sbx_frame_hdr_t hdr;
        uint8_t *payload = NULL;
        /* A malformed or oversized frame, EOF or an error ends the session silently:
         * the daemon sees the connection close. */
        if (sbx_frame_read(sock, &hdr, &payload) <= 0)
            break;
        if (hdr.type == SBX_MSG_PING) {
            free(payload);
            if (send_pong(sock) < 0)
                break;
            continue;
        }
        if (hdr.type == SBX_MSG_EXEC)
            run_exec(sock, payload, hdr.len);
        else if (hdr.type == SBX_MSG_KILL)
            run_kill(sock, payload, hdr.len);
        else if (hdr.type == SBX_MSG_FS)
            sbx_agent_fs(sock, payload, hdr.len);
        else
            sbx_agent_send_error(sock, EPROTO, "unexpected message type %u", hdr.type);
        free(payload);
        break;
    }
    close(sock);
    _exit(0);
}
