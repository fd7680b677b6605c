/*
 * agent: the guest side of the xvs/IPVS decision-parity check and of the interactive guest
 * (scripts/ipvs-guest/; init picks the role).
 *
 * Built statically by build.sh and run inside the QEMU guest:
 *   agent serve PORT...       backend listener (one process per port, IPv4 and IPv6): on every
 *                             accepted connection it writes "backend ADDR:PORT\n" (the accepted
 *                             socket's local address, i.e. the backend IPVS chose after its
 *                             DNAT; IPv6 as [ADDR]:PORT), then closes its side as soon as the
 *                             client has closed its own (FIN exchange). On UDP PORT it answers
 *                             every datagram with the same line, sent from the datagram's
 *                             destination address (IP_PKTINFO / IPV6_PKTINFO) so IPVS un-NATs it.
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
 *                             A line `ctl ARGS...` runs `ipvsadm ARGS...` in the namespace the
 *                             agent started in (the director's) between the flows around it,
 *                             as `xvs simulate` runs it through `xvs ctl`, and prints
 *                             "ctl N ARGS => ok" or "=> error: ..." (ipvsadm's own messages
 *                             before it). Lines are numbered as xvs simulate numbers them:
 *                             flows and ctl lines alike, blank lines and comments skipped.
 *                             With NETNS (a /run/netns path) it opens /proc/net/ip_vs_conn of
 *                             the namespace it starts in (the director's), then enters NETNS to
 *                             make its connections, and answers with the destination of each
 *                             flow's IPVS connection entry: the only way to tell backends apart
 *                             in direct routing, where every backend answers from the VIP. Where
 *                             the backend names another address (NAT), the two must agree.
 *   agent ctl DEVICE          the command channel of an interactive guest (init's agent mode):
 *                             puts the tty DEVICE (a serial port QEMU connects to a host socket)
 *                             in raw mode, says "@@ ready\n", then answers one request per line.
 *                             A request is words separated by single spaces, each word
 *                             percent-encoded (%XX for a space, '%', a control byte or any byte
 *                             the sender chooses), no shell involved:
 *                               run PATH ARG...   runs PATH with the args (stdin /dev/null,
 *                                                 stdout and stderr together, 30 s alarm);
 *                               quit              answers, then the agent exits (init powers
 *                                                 the guest off).
 *                             Every answer is "@@ STATUS LEN\n" followed by LEN bytes of output:
 *                             STATUS is the exit code, "sigN" when a signal ended the program,
 *                             or "err" (the output says why) when the request was not run.
 * Every step is bounded by socket timeouts; nothing here loops forever (ctl waits for requests
 * until told to quit, each bounded).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#define MAX_CONNS 4096

typedef struct sockaddr_storage addr_t;

static void timeouts(int fd, int secs) {
	struct timeval tv = {.tv_sec = secs, .tv_usec = 0};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

static socklen_t addr_len(const addr_t *a) {
	return a->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
}

static unsigned addr_port(const addr_t *a) {
	return a->ss_family == AF_INET6 ? ntohs(((const struct sockaddr_in6 *)a)->sin6_port)
					: ntohs(((const struct sockaddr_in *)a)->sin_port);
}

/* "ADDR:PORT" or "[ADDR]:PORT", as Rust's SocketAddr prints them. */
static void addr_text(const addr_t *a, char *out, size_t cap) {
	char ip[INET6_ADDRSTRLEN];
	if (a->ss_family == AF_INET6) {
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)a)->sin6_addr, ip, sizeof ip);
		snprintf(out, cap, "[%s]:%u", ip, addr_port(a));
	} else {
		inet_ntop(AF_INET, &((const struct sockaddr_in *)a)->sin_addr, ip, sizeof ip);
		snprintf(out, cap, "%s:%u", ip, addr_port(a));
	}
}

/* Address text + port into a; 0 on success. */
static int addr_parse(const char *ip, unsigned port, addr_t *a) {
	memset(a, 0, sizeof *a);
	struct sockaddr_in *v4 = (struct sockaddr_in *)a;
	struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)a;
	if (inet_pton(AF_INET, ip, &v4->sin_addr) == 1) {
		v4->sin_family = AF_INET;
		v4->sin_port = htons(port);
		return 0;
	}
	if (inet_pton(AF_INET6, ip, &v6->sin6_addr) == 1) {
		v6->sin6_family = AF_INET6;
		v6->sin6_port = htons(port);
		return 0;
	}
	return -1;
}

/* One datagram in, "backend ADDR:PORT\n" back from the address it was sent to. */
static void udp_answer(int u, int family) {
	char buf[512], cbuf[256], line[96];
	addr_t from, me;
	struct iovec iov = {.iov_base = buf, .iov_len = sizeof buf};
	struct msghdr m = {.msg_name = &from, .msg_namelen = sizeof from, .msg_iov = &iov,
			   .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf};
	if (recvmsg(u, &m, MSG_DONTWAIT) < 0)
		return;
	socklen_t len = sizeof me;
	getsockname(u, (struct sockaddr *)&me, &len);
	char rbuf[CMSG_SPACE(sizeof(struct in6_pktinfo))];
	memset(rbuf, 0, sizeof rbuf);
	struct msghdr r = {.msg_name = &from, .msg_namelen = m.msg_namelen, .msg_iovlen = 1,
			   .msg_control = rbuf};
	struct cmsghdr *out = (struct cmsghdr *)rbuf;
	int found = 0;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
		if (family == AF_INET && c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) {
			struct in_pktinfo pi;
			memcpy(&pi, CMSG_DATA(c), sizeof pi);
			((struct sockaddr_in *)&me)->sin_addr = pi.ipi_addr;
			struct in_pktinfo o = {.ipi_ifindex = 0, .ipi_spec_dst = pi.ipi_addr};
			out->cmsg_level = IPPROTO_IP;
			out->cmsg_type = IP_PKTINFO;
			out->cmsg_len = CMSG_LEN(sizeof o);
			memcpy(CMSG_DATA(out), &o, sizeof o);
			r.msg_controllen = CMSG_SPACE(sizeof o);
			found = 1;
		} else if (family == AF_INET6 && c->cmsg_level == IPPROTO_IPV6 &&
			   c->cmsg_type == IPV6_PKTINFO) {
			struct in6_pktinfo pi;
			memcpy(&pi, CMSG_DATA(c), sizeof pi);
			((struct sockaddr_in6 *)&me)->sin6_addr = pi.ipi6_addr;
			struct in6_pktinfo o = {.ipi6_ifindex = 0, .ipi6_addr = pi.ipi6_addr};
			out->cmsg_level = IPPROTO_IPV6;
			out->cmsg_type = IPV6_PKTINFO;
			out->cmsg_len = CMSG_LEN(sizeof o);
			memcpy(CMSG_DATA(out), &o, sizeof o);
			r.msg_controllen = CMSG_SPACE(sizeof o);
			found = 1;
		}
	}
	if (!found)
		return;
	char who[80];
	addr_text(&me, who, sizeof who);
	int k = snprintf(line, sizeof line, "backend %s\n", who);
	struct iovec riov = {.iov_base = line, .iov_len = (size_t)k};
	r.msg_iov = &riov;
	sendmsg(u, &r, 0);
}

static int open_server(int family, int type, int port) {
	int fd = socket(family, type, 0), one = 1;
	addr_t a;
	memset(&a, 0, sizeof a);
	if (family == AF_INET6) {
		struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&a;
		v6->sin6_family = AF_INET6;
		v6->sin6_port = htons(port);
		v6->sin6_addr = in6addr_any;
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
		if (type == SOCK_DGRAM)
			setsockopt(fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, &one, sizeof one);
	} else {
		struct sockaddr_in *v4 = (struct sockaddr_in *)&a;
		v4->sin_family = AF_INET;
		v4->sin_port = htons(port);
		if (type == SOCK_DGRAM)
			setsockopt(fd, IPPROTO_IP, IP_PKTINFO, &one, sizeof one);
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, addr_len(&a)) ||
	    (type == SOCK_STREAM && listen(fd, 1024))) {
		perror("agent serve");
		exit(1);
	}
	return fd;
}

static int serve(int port) {
	/* 0, 1: TCP listeners (v4, v6); 2, 3: UDP sockets (v4, v6); then connections. */
	static struct pollfd p[MAX_CONNS + 4];
	p[0].fd = open_server(AF_INET, SOCK_STREAM, port);
	p[1].fd = open_server(AF_INET6, SOCK_STREAM, port);
	p[2].fd = open_server(AF_INET, SOCK_DGRAM, port);
	p[3].fd = open_server(AF_INET6, SOCK_DGRAM, port);
	int n = 4;
	for (int i = 0; i < n; i++)
		p[i].events = POLLIN;
	for (;;) {
		if (poll(p, n, -1) < 0) {
			if (errno == EINTR)
				continue;
			perror("poll");
			return 1;
		}
		for (int l = 0; l < 2; l++) {
			if (!(p[l].revents & POLLIN))
				continue;
			int c = accept(p[l].fd, NULL, NULL);
			if (c >= 0 && n >= MAX_CONNS + 4) {
				close(c);
			} else if (c >= 0) {
				addr_t me;
				socklen_t len = sizeof me;
				char line[96], who[80];
				getsockname(c, (struct sockaddr *)&me, &len);
				addr_text(&me, who, sizeof who);
				int k = snprintf(line, sizeof line, "backend %s\n", who);
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
		if (p[2].revents & POLLIN)
			udp_answer(p[2].fd, AF_INET);
		if (p[3].revents & POLLIN)
			udp_answer(p[3].fd, AF_INET6);
		for (int i = 4; i < n; i++) {
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
	char key[256];
	char backend[256];
	int fd;
};
static struct conn conns[MAX_CONNS];
static int nconns;

/* One address of /proc/net/ip_vs_conn: 8 hex digits (IPv4, host order) or %pI6 text. */
static int proc_addr(const char *text, addr_t *a) {
	memset(a, 0, sizeof *a);
	if (strchr(text, ':')) {
		struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)a;
		v6->sin6_family = AF_INET6;
		return inet_pton(AF_INET6, text, &v6->sin6_addr) == 1 ? 0 : -1;
	}
	struct sockaddr_in *v4 = (struct sockaddr_in *)a;
	v4->sin_family = AF_INET;
	v4->sin_addr.s_addr = htonl((uint32_t)strtoul(text, NULL, 16));
	return 0;
}

static int same_ip(const addr_t *a, const addr_t *b) {
	if (a->ss_family != b->ss_family)
		return 0;
	if (a->ss_family == AF_INET6)
		return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
			      &((const struct sockaddr_in6 *)b)->sin6_addr, 16) == 0;
	return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
	       ((const struct sockaddr_in *)b)->sin_addr.s_addr;
}

/* The destination "ADDR:PORT" of IPVS's entry for proto src -> dst, from /proc/net/ip_vs_conn
 * ("%-3s %08X %04X %08X %04X %08X %04X ..." per IPv4 line, %pI6 addresses for IPv6). 0 when
 * found. */
static int ipvs_dest(int procfd, const char *proto, const addr_t *src, const addr_t *dst,
		     char *out, size_t cap) {
	static char buf[1 << 22];
	size_t n = 0;
	ssize_t r;
	if (lseek(procfd, 0, SEEK_SET) < 0)
		return -1;
	while (n + 1 < sizeof buf && (r = read(procfd, buf + n, sizeof buf - 1 - n)) > 0)
		n += (size_t)r;
	buf[n] = 0;
	for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
		char pro[8], cs[64], vs[64], ds[64];
		unsigned cp, vp, dp;
		addr_t c, v, d;
		if (sscanf(line, "%7s %63s %x %63s %x %63s %x", pro, cs, &cp, vs, &vp, ds, &dp) != 7)
			continue;
		if (strcasecmp(pro, proto) != 0 || proc_addr(cs, &c) || proc_addr(vs, &v) ||
		    proc_addr(ds, &d))
			continue;
		if (!same_ip(&c, src) || cp != addr_port(src) || !same_ip(&v, dst) ||
		    vp != addr_port(dst))
			continue;
		if (d.ss_family == AF_INET6)
			((struct sockaddr_in6 *)&d)->sin6_port = htons(dp);
		else
			((struct sockaddr_in *)&d)->sin_port = htons(dp);
		addr_text(&d, out, cap);
		return 0;
	}
	return -1;
}

/* The answer for a flow: IPVS's entry when /proc is at hand, checked against what the backend
 * said (unless it said the VIP, as in direct routing); else the backend's word. */
static void answer(int procfd, const char *proto, const addr_t *src, const addr_t *dst,
		   const char *said, char *out, size_t cap) {
	char ipvs[96], vip[96];
	if (procfd < 0) {
		snprintf(out, cap, "%s", said);
		return;
	}
	if (ipvs_dest(procfd, proto, src, dst, ipvs, sizeof ipvs)) {
		snprintf(out, cap, "error: no IPVS entry (backend said %s)", said);
		return;
	}
	addr_text(dst, vip, sizeof vip);
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

/* `ipvsadm ARGS...` (the words of a ctl line after "ctl") in the namespace homens (the
 * director's; -1: the current one), bounded by a 20 s alarm; prints the verdict line. */
static void run_ctl(int n, char *args, int homens) {
	char *argv[64], text[512] = "";
	int argc = 0;
	argv[argc++] = "ipvsadm";
	for (char *w = strtok(args, " \t\r\n"); w && argc < 63; w = strtok(NULL, " \t\r\n")) {
		argv[argc++] = w;
		size_t k = strlen(text);
		snprintf(text + k, sizeof text - k, "%s%s", k ? " " : "", w);
	}
	argv[argc] = NULL;
	fflush(stdout);
	pid_t pid = fork();
	if (pid == 0) {
		if (homens >= 0 && setns(homens, CLONE_NEWNET)) {
			perror("ctl: setns");
			_exit(126);
		}
		dup2(1, 2);
		alarm(20);
		execv("/sbin/ipvsadm", argv);
		perror("ctl: exec /sbin/ipvsadm");
		_exit(127);
	}
	int st = 0;
	if (pid < 0 || waitpid(pid, &st, 0) != pid)
		printf("ctl %d %s => error: cannot run ipvsadm\n", n, text);
	else if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
		printf("ctl %d %s => ok\n", n, text);
	else if (WIFEXITED(st))
		printf("ctl %d %s => error: exit %d\n", n, text, WEXITSTATUS(st));
	else
		printf("ctl %d %s => error: signal %d\n", n, text, WTERMSIG(st));
	fflush(stdout);
}

static int client(const char *file, const char *hold, const char *netns) {
	int procfd = -1, homens = -1;
	if (netns) {
		homens = open("/proc/self/ns/net", O_RDONLY);
		procfd = open("/proc/self/net/ip_vs_conn", O_RDONLY);
		int ns = open(netns, O_RDONLY);
		if (homens < 0 || procfd < 0 || ns < 0 || setns(ns, CLONE_NEWNET)) {
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
		if (strcmp(proto, "ctl") == 0) {
			run_ctl(flow, line + strspn(line, " \t") + 3, homens);
			continue;
		}
		addr_t s, d;
		char key[256], stext[96], dtext[96];
		int bad = got < 5 || addr_parse(src, sport, &s) || addr_parse(dst, dport, &d) ||
			  s.ss_family != d.ss_family;
		if (!bad) {
			addr_text(&s, stext, sizeof stext);
			addr_text(&d, dtext, sizeof dtext);
			snprintf(key, sizeof key, "%s %s", stext, dtext);
		} else {
			snprintf(key, sizeof key, "%s %s", src, dst);
		}
		printf("flow %d %s %s => ", flow, what, key);
		int udp = strcmp(proto, "udp") == 0;
		if (bad || (!udp && strcmp(proto, "tcp") != 0)) {
			printf("error: not a tcp or udp flow line this agent can replay\n");
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
		int fd = socket(s.ss_family, udp ? SOCK_DGRAM : SOCK_STREAM, 0), one = 1;
		char reply[128];
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
		/* Client sources come from a local route (AnyIP); IPv6 binds them only with FREEBIND. */
		setsockopt(fd, IPPROTO_IP, IP_FREEBIND, &one, sizeof one);
		timeouts(fd, 10);
		if (udp) {
			ssize_t r = -1;
			if (fd >= 0 && bind(fd, (struct sockaddr *)&s, addr_len(&s)) == 0 &&
			    connect(fd, (struct sockaddr *)&d, addr_len(&d)) == 0 &&
			    send(fd, "x", 1, 0) == 1)
				r = recv(fd, reply, sizeof reply - 1, 0);
			if (r > 8 && strncmp(reply, "backend ", 8) == 0) {
				char got_[256];
				reply[r] = 0;
				reply[strcspn(reply, "\n")] = 0;
				answer(procfd, "UDP", &s, &d, reply + 8, got_, sizeof got_);
				printf("%s\n", got_);
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
		} else if (bind(fd, (struct sockaddr *)&s, addr_len(&s))) {
			printf("error: bind: %s\n", strerror(errno));
			close(fd);
		} else if (connect(fd, (struct sockaddr *)&d, addr_len(&d))) {
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

/* ---- agent ctl: the request/answer channel of an interactive guest ---- */

static int ctl_fd = -1;

static void ctl_write(const char *buf, size_t len) {
	while (len > 0) {
		ssize_t w = write(ctl_fd, buf, len);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			exit(3); /* the channel is gone: nothing left to serve */
		buf += w;
		len -= (size_t)w;
	}
}

static void ctl_answer(const char *status, const char *out, size_t len) {
	char head[64];
	int k = snprintf(head, sizeof head, "@@ %s %zu\n", status, len);
	ctl_write(head, (size_t)k);
	ctl_write(out, len);
}

static int hexval(int c) {
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Percent-decodes w in place; -1 on a malformed escape. */
static int unescape(char *w) {
	char *o = w;
	for (char *i = w; *i; i++) {
		if (*i != '%') {
			*o++ = *i;
			continue;
		}
		int h = hexval((unsigned char)i[1]), l = h < 0 ? -1 : hexval((unsigned char)i[2]);
		if (h < 0 || l < 0)
			return -1;
		*o++ = (char)(h * 16 + l);
		i += 2;
	}
	*o = 0;
	return 0;
}

/* Runs argv[0] with argv, output (stdout + stderr) into a growing buffer, then answers. */
static void ctl_run(char **argv) {
	static char out[1 << 20];
	size_t n = 0;
	int p[2];
	if (pipe(p)) {
		const char *m = "pipe failed\n";
		ctl_answer("err", m, strlen(m));
		return;
	}
	pid_t pid = fork();
	if (pid == 0) {
		int null = open("/dev/null", O_RDONLY);
		dup2(null, 0);
		dup2(p[1], 1);
		dup2(p[1], 2);
		close(p[0]);
		close(p[1]);
		close(ctl_fd);
		alarm(30);
		execv(argv[0], argv);
		fprintf(stderr, "agent ctl: exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	close(p[1]);
	if (pid < 0) {
		close(p[0]);
		const char *m = "fork failed\n";
		ctl_answer("err", m, strlen(m));
		return;
	}
	for (;;) {
		ssize_t r = read(p[0], out + n, sizeof out - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		n += (size_t)r;
		if (n == sizeof out) { /* keep draining so the child never blocks; keep the head */
			char sink[4096];
			while (read(p[0], sink, sizeof sink) > 0)
				;
			break;
		}
	}
	close(p[0]);
	int st = 0;
	char status[16];
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	if (WIFEXITED(st))
		snprintf(status, sizeof status, "%d", WEXITSTATUS(st));
	else
		snprintf(status, sizeof status, "sig%d", WTERMSIG(st));
	ctl_answer(status, out, n);
}

static int ctl(const char *dev) {
	ctl_fd = open(dev, O_RDWR | O_NOCTTY);
	if (ctl_fd < 0) {
		perror(dev);
		return 1;
	}
	struct termios t;
	if (tcgetattr(ctl_fd, &t) == 0) {
		cfmakeraw(&t);
		tcsetattr(ctl_fd, TCSANOW, &t);
	}
	tcflush(ctl_fd, TCIOFLUSH);
	signal(SIGCHLD, SIG_DFL);
	ctl_write("@@ ready\n", 9);
	static char line[65536];
	for (;;) {
		size_t n = 0;
		int too_long = 0;
		for (;;) {
			char c;
			ssize_t r = read(ctl_fd, &c, 1);
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0)
				return 3;
			if (c == '\n')
				break;
			if (c == '\r')
				continue;
			if (n + 1 < sizeof line)
				line[n++] = c;
			else
				too_long = 1;
		}
		line[n] = 0;
		if (too_long) {
			const char *m = "request line too long\n";
			ctl_answer("err", m, strlen(m));
			continue;
		}
		char *argv[256];
		int argc = 0, bad = 0;
		for (char *w = strtok(line, " "); w; w = strtok(NULL, " ")) {
			if (argc == 255 || unescape(w)) {
				bad = 1;
				break;
			}
			argv[argc++] = w;
		}
		argv[argc] = NULL;
		if (bad) {
			const char *m = "malformed request (too many words or a bad %XX escape)\n";
			ctl_answer("err", m, strlen(m));
		} else if (argc == 0) {
			ctl_answer("err", "empty request\n", 14);
		} else if (strcmp(argv[0], "quit") == 0) {
			ctl_answer("0", "", 0);
			return 0;
		} else if (strcmp(argv[0], "run") == 0 && argc >= 2) {
			ctl_run(argv + 1);
		} else {
			const char *m = "unknown request (run PATH ARG... | quit)\n";
			ctl_answer("err", m, strlen(m));
		}
	}
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
	if (argc == 3 && strcmp(argv[1], "ctl") == 0)
		return ctl(argv[2]);
	fprintf(stderr, "usage: agent serve PORT... | agent client FLOWS [HOLD [NETNS]] | agent ctl TTY\n");
	return 2;
}
