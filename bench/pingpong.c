/* eTSF pinned ping-pong: one SIP request, one answer, back to back, timed at the client.
 *
 *   pingpong server ADDR PORT SECONDS REQ_FILE REQ_OFF RESP_FILE RESP_OFF
 *   pingpong client SRC_A DST_A SRC_B DST_B PORT SECONDS REQ_FILE REQ_OFF RESP_FILE RESP_OFF
 *
 * REQ_FILE and RESP_FILE hold the request and the answer (bench/pingpong.py writes them: a 1 KB
 * INVITE and a 350-byte 200 OK of the same Call-ID); at REQ_OFF / RESP_OFF each carries a
 * 14-character field (in its Call-ID) that the client sets to the exchange's number and the
 * server copies from request to answer, so every exchange is a call of its own and a late
 * answer is never taken for the current one.
 *
 * The client keeps two sockets for its whole life, one per path (a: to server A, b: to server B),
 * and runs on command: for each line "COUNT WARMUP" on stdin it makes WARMUP untimed and then
 * COUNT timed exchanges on each path, the paths taking turns exchange by exchange; an exchange
 * sends a request, waits for its answer (1 s at most) and is timed with CLOCK_MONOTONIC.  One
 * JSON line per run: per path, counts, lost and stale answers, min / p50 / p90 / p99 / mean in ns.  The server answers every request
 * whose length and field are as expected, and prints one JSON line of counts when it stops.
 *
 * Bounded: each run stops after COUNT + WARMUP exchanges; the client exits at the end of stdin or
 * after SECONDS, the server after SECONDS or on SIGTERM/SIGINT.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define FIELD 14
#define MSGMAX 2048
#define COUNT_MAX 1000000

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

/* a message file and the offset of its field; 0 on success */
static int load(const char *path, const char *off_s, char *buf, size_t *len, size_t *off)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		fprintf(stderr, "pingpong: %s: %s\n", path, strerror(errno));
		return -1;
	}
	*len = fread(buf, 1, MSGMAX, f);
	fclose(f);
	char *end;
	long o = strtol(off_s, &end, 10);
	if (*end || o < 0 || (size_t)o + FIELD > *len || *len == 0 || *len >= MSGMAX) {
		fprintf(stderr, "pingpong: %s: field offset %s outside the message (%zu bytes)\n", path, off_s, *len);
		return -1;
	}
	*off = (size_t)o;
	return 0;
}

static int udp_socket(const char *addr, int port, struct sockaddr_in *sa)
{
	memset(sa, 0, sizeof(*sa));
	sa->sin_family = AF_INET;
	sa->sin_port = htons(port);
	if (inet_pton(AF_INET, addr, &sa->sin_addr) != 1) {
		fprintf(stderr, "pingpong: bad address %s\n", addr);
		return -1;
	}
	return socket(AF_INET, SOCK_DGRAM, 0);
}

static int server(char **argv)
{
	char req[MSGMAX], resp[MSGMAX], buf[MSGMAX];
	size_t req_len, req_off, resp_len, resp_off;
	struct sockaddr_in sa;
	double secs = atof(argv[2]);
	if (secs <= 0 || secs > 3600 || load(argv[3], argv[4], req, &req_len, &req_off) ||
	    load(argv[5], argv[6], resp, &resp_len, &resp_off))
		return 2;
	int fd = udp_socket(argv[0], atoi(argv[1]), &sa);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		fprintf(stderr, "pingpong server: bind %s:%s: %s\n", argv[0], argv[1], strerror(errno));
		return 1;
	}
	struct timeval tv = {.tv_sec = 1, .tv_usec = 0};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	printf("ready\n");
	fflush(stdout);
	uint64_t answered = 0, ignored = 0, deadline = now_ns() + (uint64_t)(secs * 1e9);
	while (!stop && now_ns() < deadline) {
		struct sockaddr_in from;
		socklen_t fl = sizeof(from);
		ssize_t n = recvfrom(fd, buf, sizeof(buf), 0, (struct sockaddr *)&from, &fl);
		if (n < 0)
			continue;
		if ((size_t)n != req_len) {
			ignored++;
			continue;
		}
		memcpy(resp + resp_off, buf + req_off, FIELD);
		if (sendto(fd, resp, resp_len, 0, (struct sockaddr *)&from, fl) == (ssize_t)resp_len)
			answered++;
	}
	printf("{\"answered\": %llu, \"ignored\": %llu}\n", (unsigned long long)answered, (unsigned long long)ignored);
	return 0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

struct path {
	int fd;
	long done, lost, stale, sent;
	uint64_t *rtt;
};

/* one exchange on one path: send the request, wait for its own answer; the round trip in ns, 0 when lost */
static uint64_t exchange(struct path *p, char *req, size_t req_len, size_t req_off, size_t resp_len, size_t resp_off,
			 uint64_t seq)
{
	char buf[MSGMAX], want[FIELD + 1];
	snprintf(want, sizeof(want), "%014llx", (unsigned long long)(seq & 0xffffffffffffffull));
	memcpy(req + req_off, want, FIELD);
	uint64_t t0 = now_ns();
	if (send(p->fd, req, req_len, 0) != (ssize_t)req_len) {
		p->lost++;
		return 0;
	}
	p->sent++;
	for (;;) {
		ssize_t n = recv(p->fd, buf, sizeof(buf), 0);
		if (n < 0) {
			p->lost++;
			return 0;
		}
		if ((size_t)n == resp_len && !memcmp(buf + resp_off, want, FIELD))
			return now_ns() - t0;
		p->stale++;
	}
}

static void report(const char *name, struct path *p)
{
	long done = p->done;
	uint64_t *rtt = p->rtt;
	qsort(rtt, done, sizeof(*rtt), cmp_u64);
	double sum = 0;
	for (long i = 0; i < done; i++)
		sum += rtt[i];
#define Q(q) (done ? (unsigned long long)rtt[(long)((q) * (done - 1) + 0.5)] : 0ull)
	printf("\"%s\": {\"sent\": %ld, \"timed\": %ld, \"lost\": %ld, \"stale\": %ld, \"min_ns\": %llu, "
	       "\"p50_ns\": %llu, \"p90_ns\": %llu, \"p99_ns\": %llu, \"mean_ns\": %.1f}",
	       name, p->sent, done, p->lost, p->stale, Q(0.0), Q(0.5), Q(0.9), Q(0.99), done ? sum / done : 0.0);
}

/* one run: WARMUP untimed exchanges on each path, then COUNT timed ones on each, the paths
 * taking turns exchange by exchange (a, b, b, a, a, b, ...: each follows the other as often);
 * its JSON line on stdout */
static void run(struct path *paths, char *req, size_t req_len, size_t req_off, size_t resp_len, size_t resp_off,
		long count, long warmup, uint64_t deadline)
{
	static uint64_t next;
	/* exchange numbers start from the clock and only grow: no two exchanges share a Call-ID */
	if (!next)
		next = now_ns() / 1000;
	for (int k = 0; k < 2; k++)
		paths[k].done = paths[k].lost = paths[k].stale = paths[k].sent = 0;
	for (long i = 0; i < 2 * (warmup + count) && now_ns() < deadline; i++) {
		struct path *p = &paths[((i + 1) >> 1) & 1];
		uint64_t t = exchange(p, req, req_len, req_off, resp_len, resp_off, next++);
		if (t && i >= 2 * warmup)
			p->rtt[p->done++] = t;
	}
	printf("{");
	report("a", &paths[0]);
	printf(", ");
	report("b", &paths[1]);
	printf("}\n");
	fflush(stdout);
}

static int open_path(struct path *p, const char *src_s, const char *dst_s, int port)
{
	struct sockaddr_in src, dst;
	p->fd = udp_socket(src_s, 0, &src);
	if (p->fd < 0 || udp_socket(dst_s, port, &dst) < 0 || bind(p->fd, (struct sockaddr *)&src, sizeof(src)) ||
	    connect(p->fd, (struct sockaddr *)&dst, sizeof(dst))) {
		fprintf(stderr, "pingpong client: %s -> %s:%d: %s\n", src_s, dst_s, port, strerror(errno));
		return -1;
	}
	struct timeval tv = {.tv_sec = 1, .tv_usec = 0};
	setsockopt(p->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	p->rtt = calloc(COUNT_MAX, sizeof(*p->rtt));
	return p->rtt ? 0 : -1;
}

/* two sockets (paths a and b) for the client's whole life: every run (a line "COUNT WARMUP" on
 * stdin) alternates between them, so the two paths are measured in the same moments */
static int client(char **argv)
{
	char req[MSGMAX], resp[MSGMAX], line[128];
	size_t req_len, req_off, resp_len, resp_off;
	struct path paths[2] = {0};
	int port = atoi(argv[4]);
	double secs = atof(argv[5]);
	if (secs <= 0 || secs > 7200 || load(argv[6], argv[7], req, &req_len, &req_off) ||
	    load(argv[8], argv[9], resp, &resp_len, &resp_off)) {
		fprintf(stderr, "pingpong client: bad arguments\n");
		return 2;
	}
	if (open_path(&paths[0], argv[0], argv[1], port) || open_path(&paths[1], argv[2], argv[3], port))
		return 1;
	uint64_t deadline = now_ns() + (uint64_t)(secs * 1e9);
	printf("ready\n");
	fflush(stdout);
	while (now_ns() < deadline && fgets(line, sizeof(line), stdin)) {
		long count, warmup;
		if (sscanf(line, "%ld %ld", &count, &warmup) != 2 || count < 1 || count > COUNT_MAX || warmup < 0 ||
		    warmup > COUNT_MAX) {
			printf("{\"error\": \"a line is COUNT WARMUP, COUNT 1..%d\"}\n", COUNT_MAX);
			fflush(stdout);
			continue;
		}
		run(paths, req, req_len, req_off, resp_len, resp_off, count, warmup, deadline);
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 9 && !strcmp(argv[1], "server"))
		return server(argv + 2);
	if (argc == 12 && !strcmp(argv[1], "client"))
		return client(argv + 2);
	fprintf(stderr, "usage: pingpong server ADDR PORT SECONDS REQ_FILE REQ_OFF RESP_FILE RESP_OFF\n"
			"       pingpong client SRC_A DST_A SRC_B DST_B PORT SECONDS REQ_FILE REQ_OFF RESP_FILE RESP_OFF   (stdin: COUNT WARMUP lines)\n");
	return 2;
}
