/*
 * parity agent: the guest side of the xvs/IPVS decision-parity check (scripts/ipvs-guest/).
 *
 * Built statically by build.sh and run inside the QEMU guest:
 *   agent serve PORT          backend listener: on every accepted connection it writes
 *                             "backend ADDR:PORT\n" (the accepted socket's local address, i.e.
 *                             the backend IPVS chose after its DNAT), then closes its side as
 *                             soon as the client has closed its own (FIN exchange).
 *   agent client FILE [HOLD]  replays FILE, lines `proto src_ip src_port dst_ip dst_port
 *                             [open|close]` as `xvs simulate` reads them (src/simulate.rs), in
 *                             order: `open` is a real TCP connection from src_ip:src_port, kept
 *                             ESTABLISHED; `close` shuts down the write side (FIN) and waits for
 *                             the backend's FIN. One line per flow on stdout:
 *                             "flow N open|close SRC DST => ADDR:PORT" or "=> error: WHY".
 *                             With HOLD (a path) it prints "flows done" after the last flow and
 *                             keeps the remaining connections open until HOLD exists (max 60 s),
 *                             so the caller can read IPVS's counters first.
 * Every step is bounded by socket timeouts; nothing here loops forever.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#define MAX_CONNS 4096

static void timeouts(int fd, int secs) {
	struct timeval tv = {.tv_sec = secs, .tv_usec = 0};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

static int serve(int port) {
	int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 1024)) {
		perror("agent serve");
		return 1;
	}
	static struct pollfd p[MAX_CONNS + 1];
	int n = 1;
	p[0].fd = l;
	p[0].events = POLLIN;
	for (;;) {
		if (poll(p, n, -1) < 0) {
			if (errno == EINTR)
				continue;
			perror("poll");
			return 1;
		}
		if (p[0].revents & POLLIN) {
			int c = accept(l, NULL, NULL);
			if (c >= 0 && n > MAX_CONNS) {
				close(c);
			} else if (c >= 0) {
				struct sockaddr_in me;
				socklen_t len = sizeof me;
				char line[64], ip[INET_ADDRSTRLEN];
				getsockname(c, (struct sockaddr *)&me, &len);
				inet_ntop(AF_INET, &me.sin_addr, ip, sizeof ip);
				int k = snprintf(line, sizeof line, "backend %s:%d\n", ip, ntohs(me.sin_port));
				timeouts(c, 5);
				if (write(c, line, k) != k) {
					close(c);
				} else {
					p[n].fd = c;
					p[n].events = POLLIN;
					p[n].revents = 0;
					n++;
				}
			}
		}
		for (int i = 1; i < n; i++) {
			if (!p[i].revents)
				continue;
			char buf[256];
			ssize_t r = read(p[i].fd, buf, sizeof buf);
			if (r <= 0) { /* client's FIN (or error): close ours */
				close(p[i].fd);
				p[i] = p[--n];
				i--;
			}
		}
	}
}

struct conn {
	char key[160];
	char backend[64];
	int fd;
};
static struct conn conns[MAX_CONNS];
static int nconns;

static int read_line(int fd, char *out, size_t cap) {
	size_t n = 0;
	while (n + 1 < cap) {
		ssize_t r = read(fd, out + n, 1);
		if (r <= 0)
			return -1;
		if (out[n] == '\n')
			break;
		n++;
	}
	out[n] = 0;
	return 0;
}

static int client(const char *file, const char *hold) {
	FILE *f = fopen(file, "r");
	if (!f) {
		perror(file);
		return 1;
	}
	char line[512];
	int flow = 0;
	while (fgets(line, sizeof line, f)) {
		char *hash = strchr(line, '#');
		if (hash)
			*hash = 0;
		char proto[8], src[64], dst[64], what[16] = "open";
		unsigned sport, dport;
		int got = sscanf(line, "%7s %63s %u %63s %u %15s", proto, src, &sport, dst, &dport, what);
		if (got <= 0)
			continue;
		flow++;
		char key[160];
		snprintf(key, sizeof key, "%s:%u %s:%u", src, sport, dst, dport);
		printf("flow %d %s %s => ", flow, what, key);
		if (got < 5 || strcmp(proto, "tcp") != 0) {
			printf("error: only tcp flow lines are replayed in the guest\n");
			fflush(stdout);
			continue;
		}
		if (strcmp(what, "close") == 0) {
			int i;
			for (i = 0; i < nconns && strcmp(conns[i].key, key) != 0; i++)
				;
			if (i == nconns) {
				printf("error: no open connection\n");
			} else {
				char buf[256];
				shutdown(conns[i].fd, SHUT_WR);
				while (read(conns[i].fd, buf, sizeof buf) > 0)
					;
				close(conns[i].fd);
				printf("%s\n", conns[i].backend);
				conns[i] = conns[--nconns];
			}
			fflush(stdout);
			continue;
		}
		struct sockaddr_in s = {.sin_family = AF_INET, .sin_port = htons(sport)};
		struct sockaddr_in d = {.sin_family = AF_INET, .sin_port = htons(dport)};
		if (inet_pton(AF_INET, src, &s.sin_addr) != 1 || inet_pton(AF_INET, dst, &d.sin_addr) != 1) {
			printf("error: only IPv4 is replayed in the guest\n");
			fflush(stdout);
			continue;
		}
		int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
		char reply[64];
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
		timeouts(fd, 10);
		if (fd < 0 || nconns >= MAX_CONNS) {
			printf("error: no socket\n");
		} else if (bind(fd, (struct sockaddr *)&s, sizeof s)) {
			printf("error: bind: %s\n", strerror(errno));
			close(fd);
		} else if (connect(fd, (struct sockaddr *)&d, sizeof d)) {
			printf("error: connect: %s\n", strerror(errno));
			close(fd);
		} else if (read_line(fd, reply, sizeof reply) || strncmp(reply, "backend ", 8) != 0) {
			printf("error: no answer from a backend\n");
			close(fd);
		} else {
			struct conn *c = &conns[nconns++];
			snprintf(c->key, sizeof c->key, "%s", key);
			snprintf(c->backend, sizeof c->backend, "%s", reply + 8);
			c->fd = fd;
			printf("%s\n", c->backend);
		}
		fflush(stdout);
	}
	fclose(f);
	if (hold) {
		struct stat st;
		printf("flows done\n");
		fflush(stdout);
		for (int i = 0; i < 1200 && stat(hold, &st) != 0; i++)
			usleep(50000);
	}
	for (int i = 0; i < nconns; i++)
		close(conns[i].fd);
	return 0;
}

int main(int argc, char **argv) {
	if (argc >= 3 && strcmp(argv[1], "serve") == 0)
		return serve(atoi(argv[2]));
	if (argc >= 3 && strcmp(argv[1], "client") == 0)
		return client(argv[2], argc >= 4 ? argv[3] : NULL);
	fprintf(stderr, "usage: agent serve PORT | agent client FLOWS [HOLD]\n");
	return 2;
}
