/*
 * parity agent: the guest side of the xvs/IPVS decision-parity check (scripts/ipvs-guest/).
 *
 * Built statically by build.sh and run inside the QEMU guest:
 *   agent serve PORT...       backend listener (one process per port): on every accepted
 *                             connection it writes
 *                             "backend ADDR:PORT\n" (the accepted socket's local address, i.e.
 *                             the backend IPVS chose after its DNAT), then closes its side as
 *                             soon as the client has closed its own (FIN exchange). On UDP PORT
 *                             it answers every datagram with the same line, sent from the
 *                             datagram's destination address (IP_PKTINFO) so IPVS un-NATs it.
 *   agent client FILE [HOLD [NETNS]]
 *                             replays FILE, lines `proto src_ip src_port dst_ip dst_port
 *                             [open|close]` as `xvs simulate` reads them (src/simulate.rs), in
 *                             order: `open` is a real TCP connection from src_ip:src_port, kept
 *                             ESTABLISHED; `close` shuts down the write side (FIN) and waits for
 *                             the backend's FIN. A udp line (open or close alike, as xvs
 *                             simulate treats them) sends one datagram from src_ip:src_port and
 *                             waits for the answer. One line per flow:
 *                             "flow N open|close SRC DST => ADDR:PORT" or "=> error: WHY".
 *                             With HOLD (a path) it prints "flows done" after the last flow and
 *                             keeps the remaining connections open until HOLD exists (max 60 s),
 *                             so the caller can read IPVS's counters first.
 *                             With NETNS (a /run/netns path) it opens /proc/net/ip_vs_conn of
 *                             the namespace it starts in (the director's), then enters NETNS to
 *                             make its connections, and answers with the destination of each
 *                             flow's IPVS connection entry: the only way to tell backends apart
 *                             in direct routing, where every backend answers from the VIP. Where
 *                             the backend names another address (NAT), the two must agree.
 * Every step is bounded by socket timeouts; nothing here loops forever.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#define MAX_CONNS 4096

static void timeouts(int fd, int secs) {
	struct timeval tv = {.tv_sec = secs, .tv_usec = 0};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

/* One datagram in, "backend ADDR:PORT\n" back from the address it was sent to. */
static void udp_answer(int u) {
	char buf[512], cbuf[256], line[64], ip[INET_ADDRSTRLEN];
	struct sockaddr_in from;
	struct iovec iov = {.iov_base = buf, .iov_len = sizeof buf};
	struct msghdr m = {.msg_name = &from, .msg_namelen = sizeof from, .msg_iov = &iov,
			   .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf};
	if (recvmsg(u, &m, MSG_DONTWAIT) < 0)
		return;
	struct in_pktinfo *pi = NULL;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c))
		if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO)
			pi = (struct in_pktinfo *)CMSG_DATA(c);
	if (!pi)
		return;
	struct sockaddr_in me;
	socklen_t len = sizeof me;
	getsockname(u, (struct sockaddr *)&me, &len);
	inet_ntop(AF_INET, &pi->ipi_addr, ip, sizeof ip);
	int k = snprintf(line, sizeof line, "backend %s:%d\n", ip, ntohs(me.sin_port));
	/* Reply from the address the datagram was sent to. */
	char rbuf[CMSG_SPACE(sizeof(struct in_pktinfo))];
	memset(rbuf, 0, sizeof rbuf);
	struct iovec riov = {.iov_base = line, .iov_len = (size_t)k};
	struct msghdr r = {.msg_name = &from, .msg_namelen = sizeof from, .msg_iov = &riov,
			   .msg_iovlen = 1, .msg_control = rbuf, .msg_controllen = sizeof rbuf};
	struct cmsghdr *c = CMSG_FIRSTHDR(&r);
	c->cmsg_level = IPPROTO_IP;
	c->cmsg_type = IP_PKTINFO;
	c->cmsg_len = CMSG_LEN(sizeof(struct in_pktinfo));
	struct in_pktinfo out = {.ipi_ifindex = 0, .ipi_spec_dst = pi->ipi_addr};
	memcpy(CMSG_DATA(c), &out, sizeof out);
	sendmsg(u, &r, 0);
}

static int serve(int port) {
	int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 1024)) {
		perror("agent serve");
		return 1;
	}
	int u = socket(AF_INET, SOCK_DGRAM, 0);
	if (u < 0 || setsockopt(u, IPPROTO_IP, IP_PKTINFO, &one, sizeof one) ||
	    bind(u, (struct sockaddr *)&a, sizeof a)) {
		perror("agent serve udp");
		return 1;
	}
	static struct pollfd p[MAX_CONNS + 2];
	int n = 2;
	p[0].fd = l;
	p[0].events = POLLIN;
	p[1].fd = u;
	p[1].events = POLLIN;
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
		if (p[1].revents & POLLIN)
			udp_answer(u);
		for (int i = 2; i < n; i++) {
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
	char backend[160];
	int fd;
};
static struct conn conns[MAX_CONNS];
static int nconns;

/* The destination "ADDR:PORT" of IPVS's entry for proto src -> dst, from /proc/net/ip_vs_conn
 * ("%-3s %08X %04X %08X %04X %08X %04X %-11s %7u..." per line). 0 when found. */
static int ipvs_dest(int procfd, const char *proto, const struct sockaddr_in *src,
		     const struct sockaddr_in *dst, char *out, size_t cap) {
	static char buf[1 << 22];
	size_t n = 0;
	ssize_t r;
	if (lseek(procfd, 0, SEEK_SET) < 0)
		return -1;
	while (n + 1 < sizeof buf && (r = read(procfd, buf + n, sizeof buf - 1 - n)) > 0)
		n += (size_t)r;
	buf[n] = 0;
	for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
		char pro[8];
		unsigned ca, cp, va, vp, da, dp;
		if (sscanf(line, "%7s %x %x %x %x %x %x", pro, &ca, &cp, &va, &vp, &da, &dp) != 7)
			continue;
		if (strcasecmp(pro, proto) != 0 || ca != ntohl(src->sin_addr.s_addr) ||
		    cp != ntohs(src->sin_port) || va != ntohl(dst->sin_addr.s_addr) ||
		    vp != ntohs(dst->sin_port))
			continue;
		struct in_addr a = {.s_addr = htonl(da)};
		char ip[INET_ADDRSTRLEN];
		inet_ntop(AF_INET, &a, ip, sizeof ip);
		snprintf(out, cap, "%s:%u", ip, dp);
		return 0;
	}
	return -1;
}

/* The answer for a flow: IPVS's entry when /proc is at hand, checked against what the backend
 * said (unless it said the VIP, as in direct routing); else the backend's word. */
static void answer(int procfd, const char *proto, const struct sockaddr_in *src,
		   const struct sockaddr_in *dst, const char *said, char *out, size_t cap) {
	char ipvs[64], vip[64], ip[INET_ADDRSTRLEN];
	if (procfd < 0) {
		snprintf(out, cap, "%s", said);
		return;
	}
	if (ipvs_dest(procfd, proto, src, dst, ipvs, sizeof ipvs)) {
		snprintf(out, cap, "error: no IPVS entry (backend said %s)", said);
		return;
	}
	inet_ntop(AF_INET, &dst->sin_addr, ip, sizeof ip);
	snprintf(vip, sizeof vip, "%s:%u", ip, ntohs(dst->sin_port));
	if (strcmp(said, ipvs) != 0 && strcmp(said, vip) != 0)
		snprintf(out, cap, "error: IPVS entry says %s, backend says %s", ipvs, said);
	else
		snprintf(out, cap, "%s", ipvs);
}

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

static int client(const char *file, const char *hold, const char *netns) {
	int procfd = -1;
	if (netns) {
		procfd = open("/proc/self/net/ip_vs_conn", O_RDONLY);
		int ns = open(netns, O_RDONLY);
		if (procfd < 0 || ns < 0 || setns(ns, CLONE_NEWNET)) {
			perror("agent client: ip_vs_conn / setns");
			return 1;
		}
		close(ns);
	}
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
		int udp = strcmp(proto, "udp") == 0;
		if (got < 5 || (!udp && strcmp(proto, "tcp") != 0)) {
			printf("error: only tcp and udp flow lines are replayed in the guest\n");
			fflush(stdout);
			continue;
		}

		if (!udp && strcmp(what, "close") == 0) {
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
		int fd = socket(AF_INET, udp ? SOCK_DGRAM : SOCK_STREAM, 0), one = 1;
		char reply[64];
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
		timeouts(fd, 10);
		if (udp) {
			ssize_t r = -1;
			if (fd >= 0 && bind(fd, (struct sockaddr *)&s, sizeof s) == 0 &&
			    connect(fd, (struct sockaddr *)&d, sizeof d) == 0 && send(fd, "x", 1, 0) == 1)
				r = recv(fd, reply, sizeof reply - 1, 0);
			if (r > 8 && strncmp(reply, "backend ", 8) == 0) {
				char got[160];
				reply[r] = 0;
				reply[strcspn(reply, "\n")] = 0;
				answer(procfd, "UDP", &s, &d, reply + 8, got, sizeof got);
				printf("%s\n", got);
			} else {
				printf("error: no answer from a backend\n");
			}
			if (fd >= 0)
				close(fd);
			fflush(stdout);
			continue;
		}
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
			answer(procfd, "TCP", &s, &d, reply + 8, c->backend, sizeof c->backend);
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
	if (argc >= 3 && strcmp(argv[1], "serve") == 0) {
		for (int i = 3; i < argc; i++)
			if (fork() == 0)
				return serve(atoi(argv[i]));
		return serve(atoi(argv[2]));
	}
	if (argc >= 3 && strcmp(argv[1], "client") == 0)
		return client(argv[2], argc >= 4 ? argv[3] : NULL, argc >= 5 ? argv[4] : NULL);
	fprintf(stderr, "usage: agent serve PORT... | agent client FLOWS [HOLD [NETNS]]\n");
	return 2;
}
