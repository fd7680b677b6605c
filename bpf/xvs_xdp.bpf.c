// SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause)
/*
 * xvs's XDP program: the door between the NIC queue and the director's AF_XDP sockets.
 *
 * It redirects to the AF_XDP socket of the frame's (interface, rx queue) only what the director
 * must see, and passes everything else to the kernel untouched (ARP, IPv6 neighbour discovery,
 * ICMP echo, the host's own SSH, routing protocols):
 *   - IPv4/IPv6 frames whose destination is a configured VIP or VIP prefix (LPM trie xvs_vips:
 *     host entries for address services, shorter prefixes for fwmark rules on networks) or a
 *     FullNAT local address (xvs_locals);
 *   - tracked return traffic: frames whose source is a backend (xvs_backends), i.e. NAT replies,
 *     unless they are addressed to one of the director's own addresses (xvs_host: health-check
 *     replies and other traffic of the host's stack);
 *   - for ICMP/ICMPv6 only errors are redirected (destination unreachable, time exceeded,
 *     parameter problem, packet too big, source quench): echo and neighbour discovery stay with
 *     the kernel, which owns the VIP address and answers ARP/ND and ping for it.
 * Addresses are map keys of 16 bytes in network byte order, IPv4 as ::ffff:a.b.c.d.
 * The socket slot is xvs_ifaces[ifindex] + rx_queue_index in xvs_xsks; a missing slot falls back
 * to XDP_PASS (bpf_redirect_map's default-action flag). Parsing follows the kernel's
 * samples/bpf/xdp_fwd_kern.c and xdp-tutorial's packet parsing: every header is bounds-checked
 * against data_end before it is read. One 802.1Q/802.1ad tag (or two) is skipped.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct addr16 {
	__u8 b[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u32);
} xvs_xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);   /* ifindex */
	__type(value, __u32); /* first xvs_xsks slot of that interface */
} xvs_ifaces SEC(".maps");

struct lpm_key {
	__u32 prefixlen; /* over the 16-byte form: IPv4 /n is 96 + n */
	struct addr16 addr;
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm_key);
	__type(value, __u8);
} xvs_vips SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct addr16);
	__type(value, __u8);
} xvs_backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct addr16);
	__type(value, __u8);
} xvs_locals SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct addr16);
	__type(value, __u8);
} xvs_host SEC(".maps");

struct vlan_hdr {
	__be16 tci;
	__be16 proto;
};

static __always_inline void v4_key(struct addr16 *k, __be32 a)
{
	__builtin_memset(k, 0, sizeof(*k));
	k->b[10] = 0xff;
	k->b[11] = 0xff;
	__builtin_memcpy(&k->b[12], &a, 4);
}

/* 1 if an ICMPv4 type is an error the director must see. */
static __always_inline int icmp4_is_error(__u8 type)
{
	return type == 3 || type == 4 || type == 11 || type == 12;
}

SEC("xdp")
int xvs_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct addr16 src, dst;
	__u8 l4proto;
	void *l4;

	if ((void *)(eth + 1) > data_end)
		return XDP_PASS;
	__be16 proto = eth->h_proto;
	void *cur = eth + 1;
#pragma unroll
	for (int i = 0; i < 2; i++) {
		if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
			struct vlan_hdr *vh = cur;
			if ((void *)(vh + 1) > data_end)
				return XDP_PASS;
			proto = vh->proto;
			cur = vh + 1;
		}
	}

	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *iph = cur;
		if ((void *)(iph + 1) > data_end || iph->ihl < 5)
			return XDP_PASS;
		v4_key(&src, iph->saddr);
		v4_key(&dst, iph->daddr);
		l4proto = iph->protocol;
		l4 = (void *)iph + iph->ihl * 4;
		if (l4proto == IPPROTO_ICMP) {
			/* Non-first fragments carry no ICMP header: let the director judge them. */
			if ((iph->frag_off & bpf_htons(0x1fff)) == 0) {
				__u8 *type = l4;
				if ((void *)(type + 1) > data_end || !icmp4_is_error(*type))
					return XDP_PASS;
			}
		}
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = cur;
		if ((void *)(ip6 + 1) > data_end)
			return XDP_PASS;
		__builtin_memcpy(src.b, &ip6->saddr, 16);
		__builtin_memcpy(dst.b, &ip6->daddr, 16);
		l4proto = ip6->nexthdr;
		l4 = ip6 + 1;
		if (l4proto == IPPROTO_ICMPV6) {
			__u8 *type = l4;
			/* Types < 128 are errors; 128+ are informational (echo, ND, MLD). */
			if ((void *)(type + 1) > data_end || *type >= 128)
				return XDP_PASS;
		}
	} else {
		return XDP_PASS; /* ARP, LLDP, ... */
	}

	struct lpm_key vk = { .prefixlen = 128, .addr = dst };
	if (!bpf_map_lookup_elem(&xvs_vips, &vk) && !bpf_map_lookup_elem(&xvs_locals, &dst) &&
	    (!bpf_map_lookup_elem(&xvs_backends, &src) || bpf_map_lookup_elem(&xvs_host, &dst)))
		return XDP_PASS;

	__u32 ifindex = ctx->ingress_ifindex;
	__u32 *base = bpf_map_lookup_elem(&xvs_ifaces, &ifindex);
	if (!base)
		return XDP_PASS;
	return bpf_redirect_map(&xvs_xsks, *base + ctx->rx_queue_index, XDP_PASS);
}

char _license[] SEC("license") = "Dual BSD/GPL";
