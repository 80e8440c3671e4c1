/* eTSF benchmark flood generator: REGISTER/OPTIONS from many sources.
 *
 *   flood DST_IP DST_PORT RATE_PPS SECONDS SRC_BASE NSRC [mix|register]
 *
 * SRC_BASE is the first source address (a.b.c.d); sources are SRC_BASE + 0..NSRC-1
 * (they must be configured on an interface of the namespace).  Every packet is a
 * complete SIP request (alternating REGISTER / OPTIONS, or REGISTER only with
 * "register"; a new Call-ID each) sent
 * with sendmmsg in batches of 32, paced to RATE_PPS.  Bounded: stops after SECONDS
 * or RATE_PPS*SECONDS packets, whichever comes first.  Prints one JSON line.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 32
#define MAXSRC 1024

static double now(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
	if (argc != 7 && argc != 8) {
		fprintf(stderr, "usage: flood DST_IP DST_PORT RATE_PPS SECONDS SRC_BASE NSRC [mix|register]\n");
		return 2;
	}
	const char *dst = argv[1];
	int dport = atoi(argv[2]);
	double rate = atof(argv[3]), secs = atof(argv[4]);
	struct in_addr base;
	int nsrc = atoi(argv[6]);
	int register_only = argc == 8 && strcmp(argv[7], "register") == 0;
	if ((argc == 8 && !register_only && strcmp(argv[7], "mix") != 0) || inet_pton(AF_INET, argv[5], &base) != 1 || nsrc < 1 || nsrc > MAXSRC || rate <= 0 ||
	    secs <= 0 || secs > 600) {
		fprintf(stderr, "flood: bad arguments\n");
		return 2;
	}
	int fds[MAXSRC], lports[MAXSRC];
	for (int i = 0; i < nsrc; i++) {
		struct sockaddr_in sa = {.sin_family = AF_INET};
		sa.sin_addr.s_addr = htonl(ntohl(base.s_addr) + i);
		fds[i] = socket(AF_INET, SOCK_DGRAM, 0);
		if (fds[i] < 0 || bind(fds[i], (struct sockaddr *)&sa, sizeof(sa)) < 0) {
			fprintf(stderr, "flood: bind source %d: %s\n", i, strerror(errno));
			return 1;
		}
		int one = 1 << 20;
		setsockopt(fds[i], SOL_SOCKET, SO_SNDBUF, &one, sizeof(one));
		socklen_t l = sizeof(sa);
		getsockname(fds[i], (struct sockaddr *)&sa, &l);
		lports[i] = ntohs(sa.sin_port);
	}
	struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(dport)};
	inet_pton(AF_INET, dst, &to.sin_addr);

	static char bufs[BATCH][768];
	struct mmsghdr msgs[BATCH];
	struct iovec iov[BATCH];
	uint64_t max_pkts = (uint64_t)(rate * secs), sent = 0, errors = 0, seq = 0;
	double t0 = now(), interval = BATCH / rate;
	double next = t0;
	int src = 0;
	while (sent < max_pkts) {
		double t = now();
		if (t - t0 > secs)
			break;
		if (t < next) {
			struct timespec ts = {0, (long)((next - t) * 1e9)};
			nanosleep(&ts, NULL);
			continue;
		}
		next += interval;
		if (next < t - 1.0)
			next = t; /* cannot keep up: do not burst to catch up */
		int fd = fds[src];
		char ip[INET_ADDRSTRLEN];
		struct in_addr a = {.s_addr = htonl(ntohl(base.s_addr) + src)};
		inet_ntop(AF_INET, &a, ip, sizeof(ip));
		int n = 0;
		for (; n < BATCH && sent + n < max_pkts; n++, seq++) {
			const char *m = (seq & 1) && !register_only ? "OPTIONS" : "REGISTER";
			int len = snprintf(bufs[n], sizeof(bufs[n]),
			    "%s sip:%s:%d SIP/2.0\r\n"
			    "Via: SIP/2.0/UDP %s:%d;branch=z9hG4bKfl%llu\r\n"
			    "From: <sip:flood%d@bench.invalid>;tag=f%llu\r\n"
			    "To: <sip:flood%d@bench.invalid>\r\n"
			    "Call-ID: flood-%llu-%d@%s\r\n"
			    "CSeq: 1 %s\r\n"
			    "Contact: <sip:flood%d@%s:%d>\r\n"
			    "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
			    m, dst, dport, ip, lports[src], (unsigned long long)seq, src,
			    (unsigned long long)seq, src, (unsigned long long)seq, src, ip, m, src, ip,
			    lports[src]);
			iov[n].iov_base = bufs[n];
			iov[n].iov_len = len;
			memset(&msgs[n], 0, sizeof(msgs[n]));
			msgs[n].msg_hdr.msg_name = &to;
			msgs[n].msg_hdr.msg_namelen = sizeof(to);
			msgs[n].msg_hdr.msg_iov = &iov[n];
			msgs[n].msg_hdr.msg_iovlen = 1;
		}
		int r = sendmmsg(fd, msgs, n, 0);
		if (r < 0) {
			errors += n;
		} else {
			sent += r;
			errors += n - r;
		}
		src = (src + 1) % nsrc;
	}
	double el = now() - t0;
	printf("{\"sent\": %llu, \"errors\": %llu, \"seconds\": %.3f, \"pps\": %.1f, \"sources\": %d}\n",
	       (unsigned long long)sent, (unsigned long long)errors, el, el > 0 ? sent / el : 0.0, nsrc);
	return 0;
}
