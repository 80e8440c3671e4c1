/* eTSF keep-alive benchmark generator: OPTIONS pings from many sources, and their answers.
 *
 *   kagen DST_IP DST_PORT RURI_HOST RATE_PPS SECONDS SRC_BASE NSRC LPORT WAIT_S [BATCH_N]
 *
 * Sends out-of-dialog OPTIONS to DST_IP:DST_PORT, Request-URI sip:RURI_HOST, from the NSRC
 * source addresses SRC_BASE + 0..NSRC-1 in turn (all local to the namespace), port LPORT,
 * paced to RATE_PPS with sendmmsg batches of BATCH_N (default 32, at most 32; one socket:
 * IP_PKTINFO picks each message's source address).  BATCH_N 1 spaces every datagram evenly,
 * as independent devices would send them; 32 reaches the highest rates.  The same socket receives the responses: each one is matched
 * to its request by the Call-ID ("ka-<seq>-<send time in us>@kagen"), so answered requests
 * are counted, not assumed: distinct requests answered 200, duplicate 200s, other status
 * codes, datagrams that match no request, and the request->response time.
 * Bounded: sends exactly RATE_PPS * SECONDS requests (the count is what the run is judged by),
 * or fewer when sending takes more than SECONDS + SEND_GRACE_S (a generator that cannot keep
 * up, or one descheduled on a busy VM: a late last batch is still sent), then waits at most
 * WAIT_S for late answers.  Prints one JSON line (own CPU and context
 * switches included, from getrusage).
 */
#define _GNU_SOURCE
/* how far past SECONDS sending may go before it stops short of the count */
#define SEND_GRACE_S 1.0
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 32
#define MAXSRC 65536
#define HIST_US 20000 /* 1 us buckets below 20 ms, then 1 ms buckets up to 20 s */
#define HIST_MS 20000

static double now(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint64_t hist[HIST_US + HIST_MS + 1];
static uint64_t answered, dup200, other, unmatched, codes[7], recv_dgrams;
static uint8_t *seen;
static uint64_t max_pkts;
static double t0;

static void record_latency(double us) {
	uint64_t b;
	if (us < 0)
		us = 0;
	if (us < HIST_US)
		b = (uint64_t)us;
	else if (us / 1000 < HIST_US / 1000 + HIST_MS)
		b = HIST_US + (uint64_t)(us / 1000) - HIST_US / 1000;
	else
		b = HIST_US + HIST_MS;
	hist[b]++;
}

static double hist_q(double q) {
	uint64_t n = 0, k, acc = 0;
	for (size_t i = 0; i <= HIST_US + HIST_MS; i++)
		n += hist[i];
	if (!n)
		return -1;
	k = (uint64_t)(q * n);
	if (k >= n)
		k = n - 1;
	for (size_t i = 0; i <= HIST_US + HIST_MS; i++) {
		acc += hist[i];
		if (acc > k)
			return i < HIST_US ? (double)i : (double)(i - HIST_US + HIST_US / 1000) * 1000;
	}
	return -1;
}

/* Call-ID value of a SIP message (long or compact form), or NULL */
static const char *call_id(const char *m, size_t len, size_t *vlen) {
	const char *p = m, *end = m + len;
	while (p < end) {
		const char *eol = memchr(p, '\n', end - p);
		if (!eol)
			eol = end;
		const char *v = NULL;
		if (eol - p > 8 && !strncasecmp(p, "Call-ID:", 8))
			v = p + 8;
		else if (eol - p > 2 && (p[0] == 'i' || p[0] == 'I') && p[1] == ':')
			v = p + 2;
		else if (eol - p > 2 && (p[0] == 'i' || p[0] == 'I') && p[1] == ' ') {
			const char *c = p + 1;
			while (c < eol && *c == ' ')
				c++;
			if (c < eol && *c == ':')
				v = c + 1;
		}
		if (v) {
			while (v < eol && (*v == ' ' || *v == '\t'))
				v++;
			const char *e = eol;
			while (e > v && (e[-1] == '\r' || e[-1] == ' '))
				e--;
			*vlen = e - v;
			return v;
		}
		p = eol + 1;
	}
	return NULL;
}

static void on_response(char *m, size_t len, double t) {
	recv_dgrams++;
	if (len < 12 || strncmp(m, "SIP/2.0 ", 8)) {
		unmatched++;
		return;
	}
	int code = atoi(m + 8);
	size_t vl = 0;
	const char *cid = call_id(m, len, &vl);
	unsigned long long seq, sent_us;
	char buf[96];
	if (!cid || vl >= sizeof(buf)) {
		unmatched++;
		return;
	}
	memcpy(buf, cid, vl);
	buf[vl] = 0;
	if (sscanf(buf, "ka-%llu-%llu@", &seq, &sent_us) != 2 || seq >= max_pkts) {
		unmatched++;
		return;
	}
	if (code >= 100 && code < 700)
		codes[code / 100]++;
	if (code != 200) {
		other++;
		return;
	}
	if (seen[seq >> 3] & (1u << (seq & 7))) {
		dup200++;
		return;
	}
	seen[seq >> 3] |= 1u << (seq & 7);
	answered++;
	record_latency((t - t0) * 1e6 - (double)sent_us);
}

static int sock;

static void drain(void) {
	static char bufs[BATCH][2048];
	struct mmsghdr msgs[BATCH];
	struct iovec iov[BATCH];
	for (;;) {
		for (int i = 0; i < BATCH; i++) {
			iov[i].iov_base = bufs[i];
			iov[i].iov_len = sizeof(bufs[i]) - 1;
			memset(&msgs[i], 0, sizeof(msgs[i]));
			msgs[i].msg_hdr.msg_iov = &iov[i];
			msgs[i].msg_hdr.msg_iovlen = 1;
		}
		int r = recvmmsg(sock, msgs, BATCH, MSG_DONTWAIT, NULL);
		if (r <= 0)
			return;
		double t = now();
		for (int i = 0; i < r; i++) {
			bufs[i][msgs[i].msg_len] = 0;
			on_response(bufs[i], msgs[i].msg_len, t);
		}
	}
}

static void wait_readable(double until) {
	double t = now();
	if (until <= t)
		return;
	struct pollfd pfd = {.fd = sock, .events = POLLIN};
	struct timespec ts = {(time_t)(until - t), (long)((until - t - (time_t)(until - t)) * 1e9)};
	if (ppoll(&pfd, 1, &ts, NULL) > 0)
		drain();
}

int main(int argc, char **argv) {
	if (argc != 10 && argc != 11) {
		fprintf(stderr, "usage: kagen DST_IP DST_PORT RURI_HOST RATE_PPS SECONDS SRC_BASE NSRC LPORT WAIT_S "
				"[BATCH_N]\n");
		return 2;
	}
	const char *dst = argv[1], *ruri = argv[3];
	int dport = atoi(argv[2]), nsrc = atoi(argv[7]), lport = atoi(argv[8]);
	double rate = atof(argv[4]), secs = atof(argv[5]), wait_s = atof(argv[9]);
	int batch = argc == 11 ? atoi(argv[10]) : BATCH;
	struct in_addr base;
	struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(dport)};
	if (inet_pton(AF_INET, argv[6], &base) != 1 || inet_pton(AF_INET, dst, &to.sin_addr) != 1 || nsrc < 1 ||
	    nsrc > MAXSRC || rate <= 0 || rate > 1e6 || secs <= 0 || secs > 600 || dport < 1 || dport > 65535 ||
	    lport < 1 || lport > 65535 || wait_s < 0 || wait_s > 60 || strlen(ruri) > 100 || batch < 1 ||
	    batch > BATCH) {
		fprintf(stderr, "kagen: bad arguments\n");
		return 2;
	}
	max_pkts = (uint64_t)(rate * secs);
	seen = calloc(max_pkts / 8 + 1, 1);
	if (!seen) {
		fprintf(stderr, "kagen: out of memory\n");
		return 1;
	}
	sock = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in me = {.sin_family = AF_INET, .sin_port = htons(lport)};
	int big = 32 << 20;
	if (sock < 0 || bind(sock, (struct sockaddr *)&me, sizeof(me)) < 0) {
		fprintf(stderr, "kagen: bind port %d: %s\n", lport, strerror(errno));
		return 1;
	}
	/* a generous receive buffer: answers lost at our own socket would look like the node's loss */
	if (setsockopt(sock, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof(big)) < 0)
		setsockopt(sock, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
	setsockopt(sock, SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));

	static char bufs[BATCH][640];
	static char cbufs[BATCH][CMSG_SPACE(sizeof(struct in_pktinfo))];
	struct mmsghdr msgs[BATCH];
	struct iovec iov[BATCH];
	uint64_t sent = 0, errors = 0, seq = 0;
	double interval = batch / rate;
	uint32_t src = 0;
	t0 = now();
	double next = t0;
	while (sent + errors < max_pkts) {
		double t = now();
		if (t - t0 > secs + SEND_GRACE_S)
			break;
		if (t < next) {
			wait_readable(next);
			continue;
		}
		next += interval;
		if (next < t - 1.0)
			next = t; /* cannot keep up: do not burst to catch up */
		int n = 0;
		for (; n < batch && seq < max_pkts; n++, seq++) {
			struct in_addr a = {.s_addr = htonl(ntohl(base.s_addr) + src)};
			char ip[INET_ADDRSTRLEN];
			inet_ntop(AF_INET, &a, ip, sizeof(ip));
			unsigned long long us = (unsigned long long)((now() - t0) * 1e6);
			int len = snprintf(bufs[n], sizeof(bufs[n]),
			    "OPTIONS sip:%s SIP/2.0\r\n"
			    "Via: SIP/2.0/UDP %s:%d;branch=z9hG4bKka%llu;rport\r\n"
			    "Max-Forwards: 70\r\n"
			    "From: <sip:dev%u@%s>;tag=k%llu\r\n"
			    "To: <sip:%s>\r\n"
			    "Call-ID: ka-%llu-%llu@kagen\r\n"
			    "CSeq: 1 OPTIONS\r\n"
			    "Contact: <sip:dev%u@%s:%d>\r\n"
			    "User-Agent: kagen-device/1.0\r\n"
			    "Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, NOTIFY, REFER, INFO, MESSAGE, UPDATE\r\n"
			    "Supported: replaces, timer, path\r\n"
			    "Accept: application/sdp\r\n"
			    "Content-Length: 0\r\n\r\n",
			    ruri, ip, lport, (unsigned long long)seq, src, ip, (unsigned long long)seq, ruri,
			    (unsigned long long)seq, us, src, ip, lport);
			iov[n].iov_base = bufs[n];
			iov[n].iov_len = len;
			memset(&msgs[n], 0, sizeof(msgs[n]));
			msgs[n].msg_hdr.msg_name = &to;
			msgs[n].msg_hdr.msg_namelen = sizeof(to);
			msgs[n].msg_hdr.msg_iov = &iov[n];
			msgs[n].msg_hdr.msg_iovlen = 1;
			msgs[n].msg_hdr.msg_control = cbufs[n];
			msgs[n].msg_hdr.msg_controllen = sizeof(cbufs[n]);
			struct cmsghdr *c = CMSG_FIRSTHDR(&msgs[n].msg_hdr);
			c->cmsg_level = IPPROTO_IP;
			c->cmsg_type = IP_PKTINFO;
			c->cmsg_len = CMSG_LEN(sizeof(struct in_pktinfo));
			struct in_pktinfo *pi = (struct in_pktinfo *)CMSG_DATA(c);
			memset(pi, 0, sizeof(*pi));
			pi->ipi_spec_dst = a;
			src = (src + 1) % (uint32_t)nsrc;
		}
		int done = 0;
		while (done < n) {
			int r = sendmmsg(sock, msgs + done, n - done, 0);
			if (r <= 0) {
				errors += n - done; /* counted, never retried: the pacing stays honest */
				break;
			}
			done += r;
			sent += r;
		}
		drain();
	}
	double t_send = now() - t0;
	double until = now() + wait_s;
	while (answered < sent && now() < until)
		wait_readable(now() + 0.05 < until ? now() + 0.05 : until);
	drain();
	double el = now() - t0;
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	printf("{\"sent\": %llu, \"send_errors\": %llu, \"answered_200\": %llu, \"duplicate_200\": %llu, "
	       "\"other_responses\": %llu, \"responses_by_class\": {\"1xx\": %llu, \"2xx\": %llu, \"3xx\": %llu, "
	       "\"4xx\": %llu, \"5xx\": %llu, \"6xx\": %llu}, \"unmatched\": %llu, \"datagrams_received\": %llu, "
	       "\"send_seconds\": %.3f, \"seconds\": %.3f, \"pps\": %.1f, \"sources\": %d, "
	       "\"latency_us\": {\"p50\": %.0f, \"p90\": %.0f, \"p99\": %.0f, \"max\": %.0f}, "
	       "\"cpu_s\": {\"user\": %.4f, \"sys\": %.4f}, \"ctx\": {\"voluntary\": %ld, \"involuntary\": %ld}}\n",
	       (unsigned long long)sent, (unsigned long long)errors, (unsigned long long)answered,
	       (unsigned long long)dup200, (unsigned long long)other, (unsigned long long)codes[1],
	       (unsigned long long)codes[2], (unsigned long long)codes[3], (unsigned long long)codes[4],
	       (unsigned long long)codes[5], (unsigned long long)codes[6], (unsigned long long)unmatched,
	       (unsigned long long)recv_dgrams, t_send, el, t_send > 0 ? sent / t_send : 0.0, nsrc, hist_q(0.5),
	       hist_q(0.9), hist_q(0.99), hist_q(1.0), ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6,
	       ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6, ru.ru_nvcsw, ru.ru_nivcsw);
	return 0;
}
