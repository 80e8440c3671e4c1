/* eTSF benchmark UDP sink: receives datagrams on ADDR:PORT and counts them.
 *
 *   sink ADDR PORT SECONDS
 *
 * recvmmsg in batches of 64 with a 4 MB receive buffer; nothing is answered, so what a
 * flood costs the receiver is its delivery to the socket and this read, not a reply.
 * Bounded: exits after SECONDS, or on SIGTERM/SIGINT, after draining what is queued.
 * Prints one JSON line: {"received": n, "bytes": n}.
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
#include <time.h>
#include <unistd.h>

#define BATCH 64
#define MSGSZ 2048

static volatile sig_atomic_t stop;

static void on_signal(int sig) {
	(void)sig;
	stop = 1;
}

static double now(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
	if (argc != 4) {
		fprintf(stderr, "usage: sink ADDR PORT SECONDS\n");
		return 2;
	}
	double secs = atof(argv[3]);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
	if (inet_pton(AF_INET, argv[1], &sa.sin_addr) != 1 || secs <= 0 || secs > 3600) {
		fprintf(stderr, "sink: bad arguments\n");
		return 2;
	}
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	int rcvbuf = 4 << 20;
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		fprintf(stderr, "sink: bind: %s\n", strerror(errno));
		return 1;
	}
	/* a short receive timeout: the loop sees the deadline and the stop flag */
	struct timeval tv = {0, 100000};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	struct sigaction act = {.sa_handler = on_signal};
	sigaction(SIGTERM, &act, NULL);
	sigaction(SIGINT, &act, NULL);
	printf("{\"ready\": true}\n");
	fflush(stdout);

	static char bufs[BATCH][MSGSZ];
	struct mmsghdr msgs[BATCH];
	struct iovec iov[BATCH];
	for (int i = 0; i < BATCH; i++) {
		iov[i].iov_base = bufs[i];
		iov[i].iov_len = MSGSZ;
		memset(&msgs[i], 0, sizeof(msgs[i]));
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
	}
	uint64_t received = 0, bytes = 0;
	double end = now() + secs;
	int draining = 0;
	for (;;) {
		if (!draining && (stop || now() > end))
			draining = 1;
		int n = recvmmsg(fd, msgs, BATCH, draining ? MSG_DONTWAIT : MSG_WAITFORONE, NULL);
		if (n > 0) {
			received += n;
			for (int i = 0; i < n; i++)
				bytes += msgs[i].msg_len;
			continue;
		}
		if (draining)
			break; /* nothing left queued */
	}
	printf("{\"received\": %llu, \"bytes\": %llu}\n", (unsigned long long)received,
	       (unsigned long long)bytes);
	return 0;
}
