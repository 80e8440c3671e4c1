/* Light SIP responder for the path benchmark: the "pod" of `make bench-path`.
 *
 * Answers INVITE with 100, 180 and 200, ACK silently, BYE, OPTIONS (and any other request)
 * with 200, each response built from the request's own Via, From, To (a To tag added when
 * missing), Call-ID and CSeq headers, sent back to the datagram's source address (as rport
 * would).  recvmmsg/sendmmsg in batches, so the per-call application cost stays a few
 * microseconds and the node's path, not the application, is what the benchmark sees.
 *
 * Bounded lifetime: exits after MAX_REQUESTS requests or MAX_SECONDS seconds, whichever
 * comes first, and on SIGTERM/SIGINT; prints one JSON line of counters on the way out.
 *
 *   responder ADDR PORT MAX_SECONDS MAX_REQUESTS
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 32
#define BUFSZ 4096
#define OUTSZ 2048

static volatile sig_atomic_t stop;
static char contact[128];           /* "Contact: <sip:responder@ADDR:PORT>\r\n" */
static size_t contact_len;

static void on_signal(int sig) { (void)sig; stop = 1; }

/* header value of `name` (or its compact form) in the request head; returns its line */
static int header(const char *msg, size_t len, const char *name, char cname,
                  const char **line, size_t *line_len)
{
    const char *p = memchr(msg, '\n', len), *end = msg + len;
    size_t nl = strlen(name);
    while (p && p + 1 < end) {
        const char *s = p + 1, *e = memchr(s, '\n', (size_t)(end - s));
        if (!e || e == s || (e == s + 1 && *s == '\r'))
            return 0;                               /* end of head */
        size_t l = (size_t)(e - s);
        if ((l > nl && strncasecmp(s, name, nl) == 0 && (s[nl] == ':' || s[nl] == ' '))
            || (cname && l > 1 && (s[0] == cname || s[0] == (cname ^ 0x20))
                && (s[1] == ':' || s[1] == ' '))) {
            *line = s;
            *line_len = (l && s[l - 1] == '\r') ? l - 1 : l;
            return 1;
        }
        p = e;
    }
    return 0;
}

static size_t put(char *out, size_t off, const char *s, size_t n)
{
    if (off + n >= OUTSZ)
        return OUTSZ;
    memcpy(out + off, s, n);
    return off + n;
}

/* a response with `status` to `req`, or 0 when the request lacks a header we echo */
static size_t response(const char *req, size_t len, const char *status, char *out)
{
    static const char *names[] = {"Via", "From", "To", "Call-ID", "CSeq"};
    static const char cnames[] = {'v', 'f', 't', 'i', 0};
    size_t off = put(out, 0, "SIP/2.0 ", 8);
    off = put(out, off, status, strlen(status));
    off = put(out, off, "\r\n", 2);
    for (int i = 0; i < 5; i++) {
        const char *l;
        size_t ll;
        if (!header(req, len, names[i], cnames[i], &l, &ll))
            return 0;
        off = put(out, off, l, ll);
        if (i == 2 && !memmem(l, ll, ";tag=", 5))
            off = put(out, off, ";tag=etsfbench1", 15);
        off = put(out, off, "\r\n", 2);
    }
    off = put(out, off, contact, contact_len);
    off = put(out, off, "Content-Length: 0\r\n\r\n", 21);
    return off >= OUTSZ ? 0 : off;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: %s ADDR PORT MAX_SECONDS MAX_REQUESTS\n", argv[0]);
        return 2;
    }
    double limit = atof(argv[3]);
    long max_req = atol(argv[4]);
    if (limit <= 0 || max_req <= 0) {
        fprintf(stderr, "responder: MAX_SECONDS and MAX_REQUESTS must be > 0\n");
        return 2;
    }
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[2]))};
    if (inet_pton(AF_INET, argv[1], &a.sin_addr) != 1) {
        fprintf(stderr, "responder: bad ADDR %s\n", argv[1]);
        return 2;
    }
    contact_len = (size_t)snprintf(contact, sizeof(contact), "Contact: <sip:responder@%s:%s>\r\n",
                                   argv[1], argv[2]);
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    int rcv = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof(rcv));
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
        perror("responder: bind");
        return 1;
    }
    struct timeval tv = {.tv_sec = 0, .tv_usec = 200000};   /* wake to check the deadline */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);

    static char in[BATCH][BUFSZ];
    static char out[BATCH * 3][OUTSZ];
    struct mmsghdr rm[BATCH], sm[BATCH * 3];
    struct iovec riov[BATCH], siov[BATCH * 3];
    struct sockaddr_in src[BATCH];
    long n_req = 0, n_resp = 0, n_ack = 0, n_bad = 0, n_send_err = 0;
    double t_end = now() + limit;

    while (!stop && n_req < max_req && now() < t_end) {
        for (int i = 0; i < BATCH; i++) {
            riov[i] = (struct iovec){in[i], BUFSZ - 1};
            rm[i].msg_hdr = (struct msghdr){.msg_name = &src[i], .msg_namelen = sizeof(src[i]),
                                            .msg_iov = &riov[i], .msg_iovlen = 1};
        }
        int n = recvmmsg(fd, rm, BATCH, MSG_WAITFORONE, NULL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                continue;
            perror("responder: recvmmsg");
            break;
        }
        int ns = 0;
        for (int i = 0; i < n; i++) {
            const char *m = in[i];
            size_t len = rm[i].msg_len;
            n_req++;
            if (len < 8 || memcmp(m, "SIP/2.0 ", 8) == 0) {
                n_bad++;                            /* responses and runts: not ours */
                continue;
            }
            if (memcmp(m, "ACK ", 4) == 0) {
                n_ack++;
                continue;
            }
            static const char *inv[] = {"100 Trying", "180 Ringing", "200 OK"};
            static const char *ok[] = {"200 OK"};
            const char **st = memcmp(m, "INVITE ", 7) == 0 ? inv : ok;
            int cnt = st == inv ? 3 : 1;
            for (int k = 0; k < cnt; k++) {
                size_t l = response(m, len, st[k], out[ns]);
                if (!l) {
                    n_bad++;
                    break;
                }
                siov[ns] = (struct iovec){out[ns], l};
                sm[ns].msg_hdr = (struct msghdr){.msg_name = &src[i], .msg_namelen = sizeof(src[i]),
                                                 .msg_iov = &siov[ns], .msg_iovlen = 1};
                ns++;
            }
        }
        for (int off = 0; off < ns;) {
            int r = sendmmsg(fd, sm + off, (unsigned)(ns - off), 0);
            if (r <= 0) {
                n_send_err += ns - off;
                break;
            }
            n_resp += r;
            off += r;
        }
    }
    printf("{\"requests\": %ld, \"responses\": %ld, \"acks\": %ld, \"ignored\": %ld, \"send_errors\": %ld}\n",
           n_req, n_resp, n_ack, n_bad, n_send_err);
    return 0;
}
