/* The agent wire protocol, shared by sandboxd and sandbox-agent.
 *
 * Transport: a SOCK_STREAM unix socket.  Each connection carries one operation (an exec
 * today; files, PTYs and port forwards later), so operations run concurrently without a
 * multiplexer and a dropped connection cancels exactly one operation.
 *
 * Frame: a 12-byte header followed by `len` payload bytes.
 *     u32 len      payload length, little-endian, at most SBX_PROTO_MAX_PAYLOAD
 *     u16 type     SBX_MSG_*
 *     u16 flags    reserved, 0
 *     u32 stream   reserved for multiplexing, 0
 * Payload: a sequence of fields, each
 *     u16 tag      SBX_TAG_*
 *     u32 len      field length, little-endian
 *     len bytes    value: strings are raw bytes (no NUL), integers are 8-byte
 *                  little-endian two's complement
 * A tag may repeat (argv, env).  Unknown tags are skipped, so both sides can grow.
 * Decoding is bounds-checked: every length is validated against the bytes present, and
 * the daemon treats every byte from an agent as hostile. */
#ifndef SBX_PROTO_PROTO_H
#define SBX_PROTO_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SBX_PROTO_VERSION 1
#define SBX_PROTO_HDR_LEN 12
#define SBX_PROTO_MAX_PAYLOAD (1u << 20)

enum sbx_msg_type {
    /* daemon -> agent */
    SBX_MSG_EXEC = 1,      /* start a command: ARGV+, ENV*, CWD?, TIMEOUT_MS?, FLAGS? */
    SBX_MSG_STDIN = 2,     /* DATA: bytes for the command's stdin */
    SBX_MSG_STDIN_EOF = 3, /* close the command's stdin */
    SBX_MSG_SIGNAL = 4,    /* SIGNO: send a signal to the command's process group */
    SBX_MSG_PING = 5,      /* answered with PONG */
    SBX_MSG_KILL = 6,      /* PID, SIGNO: signal one process by its pid inside the sandbox;
                            * answered with EXIT (EXIT_CODE 0) or ERROR (ERRNO) */
    SBX_MSG_FS = 7,        /* a file operation: OP, PATH, ... (see "File operations" in
                            * docs/protocol.md); answered with RESULT or ERROR */
    SBX_MSG_DATA = 8,      /* DATA: file content, in either direction */
    SBX_MSG_END = 9,       /* the end of a DATA sequence (either direction) */
    /* agent -> daemon */
    SBX_MSG_STARTED = 64, /* PID: the command is running (pid inside the sandbox) */
    SBX_MSG_STDOUT = 65,  /* DATA */
    SBX_MSG_STDERR = 66,  /* DATA */
    SBX_MSG_EXIT = 67,    /* EXIT_CODE, SIGNO (0 if none), TIMED_OUT, DURATION_MS */
    SBX_MSG_ERROR = 68,   /* ERRNO?, MESSAGE: the operation failed before it started */
    SBX_MSG_RESULT = 70,  /* MESSAGE: the JSON result of a file operation */
    SBX_MSG_PONG = 69,    /* VERSION, PID */
};

enum sbx_tag {
    SBX_TAG_ARGV = 1,         /* string, repeated, at least one */
    SBX_TAG_ENV = 2,          /* string "K=V", repeated; the complete environment */
    SBX_TAG_CWD = 3,          /* string; absolute path inside the sandbox */
    SBX_TAG_TIMEOUT_MS = 4,   /* int; 0 or absent = no timeout */
    SBX_TAG_FLAGS = 5,        /* int; SBX_EXEC_F_* */
    SBX_TAG_DATA = 6,         /* bytes */
    SBX_TAG_SIGNO = 7,        /* int */
    SBX_TAG_PID = 8,          /* int */
    SBX_TAG_EXIT_CODE = 9,    /* int; 128+signo when killed by a signal, 124 on timeout */
    SBX_TAG_TIMED_OUT = 10,   /* int 0/1 */
    SBX_TAG_DURATION_MS = 11, /* int */
    SBX_TAG_ERRNO = 12,       /* int */
    SBX_TAG_MESSAGE = 13,     /* string */
    SBX_TAG_VERSION = 14,     /* int */
    SBX_TAG_UID = 15,         /* int; run the command as this uid (default 0) */
    SBX_TAG_GID = 16,         /* int */
    SBX_TAG_OP = 17,          /* string: stat ls mkdir rm rmdir mv chmod read write search grep sed */
    SBX_TAG_PATH = 18,        /* string: an absolute path inside the sandbox */
    SBX_TAG_PATH2 = 19,       /* string: the destination of mv */
    SBX_TAG_MODE = 20,        /* int: permission bits for mkdir / a new file */
    SBX_TAG_TEXT = 21,        /* string: chmod mode (octal or symbolic), glob, or pattern */
    SBX_TAG_TEXT2 = 22,       /* string: sed replacement */
    SBX_TAG_OFFSET = 23,      /* int: read from this byte */
    SBX_TAG_LENGTH = 24,      /* int: read at most this many bytes (-1 = to the end); result caps */
    SBX_TAG_FS_FLAGS = 25,    /* int: SBX_FS_* */
};

/* Flags of file operations. */
enum {
    SBX_FS_RECURSIVE = 1,    /* rm, rmdir, chmod, ls, search, grep, sed: descend into directories */
    SBX_FS_PARENTS = 2,      /* mkdir, write: create missing parent directories */
    SBX_FS_APPEND = 4,       /* write: append to the file instead of replacing it */
    SBX_FS_IN_PLACE = 8,     /* write: truncate and write the file itself, not a temporary + rename */
    SBX_FS_REGEX = 16,       /* grep, sed: TEXT is a POSIX extended regex, not a literal string */
    SBX_FS_ICASE = 32,       /* grep, sed: ignore case */
    SBX_FS_FORCE = 64,       /* rm: a missing path is not an error */
    SBX_FS_NO_CLOBBER = 128, /* mv: fail with EEXIST rather than replace the destination */
    SBX_FS_EXCLUSIVE = 256,  /* write, mkdir: fail with EEXIST if the path exists */
};

/* No exec flags are defined yet; the field exists so that PTY and detached modes can be added. */
enum { SBX_EXEC_F_NONE = 0 };

typedef struct {
    uint32_t len;
    uint16_t type;
    uint16_t flags;
    uint32_t stream;
} sbx_frame_hdr_t;

/* A growable buffer used to build one frame (header included). */
typedef struct {
    uint8_t *buf;
    size_t len;
    size_t cap;
} sbx_msg_t;

/* Starts a new frame of the given type in `m` (reuses m's buffer if any). */
void sbx_msg_begin(sbx_msg_t *m, uint16_t type);
void sbx_msg_add_bytes(sbx_msg_t *m, uint16_t tag, const void *data, size_t len);
void sbx_msg_add_str(sbx_msg_t *m, uint16_t tag, const char *s);
void sbx_msg_add_int(sbx_msg_t *m, uint16_t tag, int64_t v);
/* Finishes the frame (fills in the length) and returns its total size in bytes. */
size_t sbx_msg_end(sbx_msg_t *m);
void sbx_msg_release(sbx_msg_t *m);
/* sbx_msg_send finishes m (sbx_msg_end) and sends it.  The others build and send a whole
 * frame with no fields / one DATA field.  Each returns 0, or -1 with errno (EMSGSIZE for
 * a payload over the maximum).  Sockets are written with MSG_NOSIGNAL; a non-blocking fd
 * is waited on, so a frame is always sent whole. */
int sbx_msg_send(int fd, sbx_msg_t *m);
int sbx_proto_send_empty(int fd, uint16_t type);
int sbx_proto_send_data(int fd, uint16_t type, const void *data, size_t len);

/* Parses a 12-byte header. Returns -1 (errno = EPROTO) if len exceeds the maximum or
 * the reserved fields are not zero. */
int sbx_frame_hdr_decode(const uint8_t raw[SBX_PROTO_HDR_LEN], sbx_frame_hdr_t *hdr);

/* Reads one frame, blocking.  On success returns 1 and sets *hdr and *payload (heap,
 * caller frees, NUL-terminated for convenience); returns 0 on clean EOF before a header,
 * -1 on error (errno; EPROTO for a malformed frame). */
int sbx_frame_read(int fd, sbx_frame_hdr_t *hdr, uint8_t **payload);

/* Iterates over a payload's fields. */
typedef struct {
    const uint8_t *p;
    size_t left;
} sbx_field_iter_t;

typedef struct {
    uint16_t tag;
    uint32_t len;
    const uint8_t *val;
} sbx_field_t;

void sbx_field_iter_init(sbx_field_iter_t *it, const uint8_t *payload, size_t len);
/* Returns 1 and fills *f for the next field, 0 at the end, -1 if the payload is
 * malformed (a truncated field header or a length past the end). */
int sbx_field_next(sbx_field_iter_t *it, sbx_field_t *f);
/* Decodes an integer field; -1 if its length is not 8. */
int sbx_field_int(const sbx_field_t *f, int64_t *out);

/* The fields of an EXEC request, decoded.  Pointers point into the payload buffer
 * (strings are copied into NUL-terminated heap strings in argv/env/cwd). */
typedef struct {
    char **argv; /* NULL-terminated */
    size_t argc;
    char **env; /* NULL-terminated */
    size_t envc;
    char *cwd; /* may be NULL */
    int64_t timeout_ms;
    int64_t flags;
    int64_t uid, gid; /* -1 = absent: the command keeps the agent's identity */
} sbx_exec_req_t;

/* Empties *req: no strings, no timeout, uid = gid = -1.  Call before filling a request
 * by hand; sbx_exec_req_encode omits negative uid/gid and a zero timeout. */
void sbx_exec_req_init(sbx_exec_req_t *req);

/* Decodes an EXEC payload.  Rejects (returns -1, errno = EPROTO, *req left empty) a
 * malformed payload, one without argv, with an empty argv[0], with a string containing a
 * NUL byte, with more than 65536 argv/env entries, with a repeated CWD/TIMEOUT_MS/FLAGS/
 * UID/GID, an integer field not 8 bytes long, a negative timeout, or a uid/gid outside
 * 0..2^32-2.  Absent UID/GID decode as -1.  On success release with
 * sbx_exec_req_release. */
int sbx_exec_req_decode(const uint8_t *payload, size_t len, sbx_exec_req_t *req);
void sbx_exec_req_release(sbx_exec_req_t *req);
/* Encodes an EXEC request into m (a whole frame, ready for sbx_msg_send).  argv/env are
 * taken from argc/envc, or walked up to their NULL terminator when the count is 0. */
void sbx_exec_req_encode(sbx_msg_t *m, const sbx_exec_req_t *req);

/* The fields of an EXIT message. */
typedef struct {
    int64_t exit_code;
    int64_t signo;
    bool timed_out;
    int64_t duration_ms;
} sbx_exit_info_t;

/* Decodes an EXIT payload.  Returns -1 (errno = EPROTO) if the payload is malformed,
 * EXIT_CODE is missing or outside 0..255, SIGNO is outside 0..127, or an integer field is
 * not 8 bytes long.  Absent optional fields are 0; a negative duration reads as 0. */
int sbx_exit_decode(const uint8_t *payload, size_t len, sbx_exit_info_t *out);
void sbx_exit_encode(sbx_msg_t *m, const sbx_exit_info_t *info);

#endif
