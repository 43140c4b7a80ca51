/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * One level of tunnel decapsulation for tunnelled mirrors, included by
 * tcpreset.bpf.c after its hdr_cursor. Cloud and remote-SPAN mirrors
 * arrive wrapped: AWS VPC Traffic Mirroring and Azure vTAP in VXLAN
 * (RFC 7348), AWS Gateway Load Balancer in Geneve (RFC 8926), Cisco and
 * Arista remote SPAN in GRE/ERSPAN (RFC 2784, RFC 2890,
 * draft-foschiano-erspan-03). The outer IP header has been parsed by the
 * caller; tr_decap() reads the UDP or GRE header at the cursor, moves the
 * cursor to the inner frame and says what it is.
 *
 * Everything here is off the plain-TCP path: the caller only comes here
 * when the outer IP protocol is UDP or GRE. Every read is bounded by
 * data_end; every variable length (Geneve options, GRE optional words,
 * ERSPAN III subheader) has a fixed upper bound.
 */
#ifndef TR_ENCAP_H
#define TR_ENCAP_H

#include <linux/udp.h>
#include "tcpreset.h"

#ifndef IPPROTO_GRE
#define IPPROTO_GRE 47
#endif
#define TR_ETH_P_TEB        0x6558  /* transparent Ethernet bridging */
#define TR_ETH_P_ERSPAN     0x88BE  /* ERSPAN type I and II */
#define TR_ETH_P_ERSPAN3    0x22EB  /* ERSPAN type III */

/* Extra VXLAN/Geneve ports from the configuration: value TR_ENCAP_*, index = port. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TR_UDP_PORTS);
	__type(key, __u32);
	__type(value, __u32);
} udp_tunnels SEC(".maps");

/* Traffic per sniff interface: lets user space tell "no TCP" from "TCP we cannot read". */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TR_IF_SLOTS);
	__type(key, __u32);
	__type(value, struct tr_if_counters);
} if_counters SEC(".maps");

/* What tr_decap() found: the inner frame starts with an Ethernet header (TR_INNER_ETH) or bare IP. */
#define TR_INNER_ETH (-2)

struct tr_vxlanhdr {
	__u8  flags;      /* I (0x08): the VNI is valid; the rest is reserved */
	__u8  rsvd[3];
	__u8  vni[3];
	__u8  rsvd2;
};
#define TR_VXLAN_I 0x08

struct tr_genevehdr {
	__u8   ver_optlen; /* version (2 bits, 0) | options length in 4-byte words (6 bits) */
	__u8   flags;      /* O (0x80): control message, not data; C (0x40) */
	__be16 proto;      /* EtherType of the payload */
	__u8   vni[3];
	__u8   rsvd;
};
#define TR_GENEVE_O 0x80

#define TR_GRE_C      0x8000
#define TR_GRE_R      0x4000
#define TR_GRE_K      0x2000
#define TR_GRE_S      0x1000
#define TR_GRE_VER    0x0007

struct tr_grehdr {
	__be16 flags;
	__be16 proto;
};

/* Bare IP (Geneve with an IP EtherType, ERSPAN III frame type 2): the version nibble says which. */
static __always_inline int tr_bare_ip(struct hdr_cursor *nh, void *data_end)
{
	__u8 *v = nh->pos;

	if ((void *)(v + 1) > data_end)
		return -1;
	if ((*v >> 4) == 4)
		return bpf_htons(ETH_P_IP);
	if ((*v >> 4) == 6)
		return bpf_htons(ETH_P_IPV6);
	return -1;
}

/* UDP: VXLAN or Geneve on the IANA ports or a configured one. */
static __always_inline int tr_decap_udp(struct hdr_cursor *nh, void *data_end, __u8 *kind, __u8 *flags)
{
	struct udphdr *uh = nh->pos;
	struct tr_genevehdr *gh;
	struct tr_vxlanhdr *vh;
	__u32 port, *k;
	int optlen;

	if ((void *)(uh + 1) > data_end)
		return -1;
	if (uh->dest == bpf_htons(TR_VXLAN_PORT)) {
		*kind = TR_ENCAP_VXLAN;
	} else if (uh->dest == bpf_htons(TR_GENEVE_PORT)) {
		*kind = TR_ENCAP_GENEVE;
	} else {
		port = bpf_ntohs(uh->dest);
		k = bpf_map_lookup_elem(&udp_tunnels, &port);
		if (!k || (*k != TR_ENCAP_VXLAN && *k != TR_ENCAP_GENEVE))
			return -1;
		*kind = *k;
	}
	nh->pos = uh + 1;

	if (*kind == TR_ENCAP_VXLAN) {
		vh = nh->pos;
		if ((void *)(vh + 1) > data_end)
			return -1;
		if (!(vh->flags & TR_VXLAN_I))
			return -1;
		nh->pos = vh + 1;
		return TR_INNER_ETH;
	}

	gh = nh->pos;
	if ((void *)(gh + 1) > data_end)
		return -1;
	if ((gh->ver_optlen >> 6) != 0 || (gh->flags & TR_GENEVE_O))
		return -1;
	optlen = (gh->ver_optlen & 0x3f) * 4; /* at most 252 */
	nh->pos = gh + 1;
	if (nh->pos + optlen > data_end)
		return -1;
	nh->pos += optlen;
	if (gh->proto == bpf_htons(TR_ETH_P_TEB))
		return TR_INNER_ETH;
	if (gh->proto == bpf_htons(ETH_P_IP) || gh->proto == bpf_htons(ETH_P_IPV6)) {
		*flags |= TR_ENCAP_F_NO_L2;
		/* The EtherType and the version nibble must agree, as for a plain frame. */
		return tr_bare_ip(nh, data_end) == gh->proto ? gh->proto : -1;
	}
	return -1;
}

/* GRE version 0: Ethernet (TEB), ERSPAN type I/II (0x88BE), type III (0x22EB). */
static __always_inline int tr_decap_gre(struct hdr_cursor *nh, void *data_end, __u8 *kind, __u8 *flags)
{
	struct tr_grehdr *gre = nh->pos;
	__u16 gflags;
	__u8 *e;
	int len;

	if ((void *)(gre + 1) > data_end)
		return -1;
	gflags = bpf_ntohs(gre->flags);
	/* Version 1 is PPTP; source routing (R) was deprecated by RFC 2784. */
	if ((gflags & TR_GRE_VER) || (gflags & TR_GRE_R))
		return -1;
	len = sizeof(*gre);
	if (gflags & TR_GRE_C)
		len += 4; /* checksum + reserved */
	if (gflags & TR_GRE_K)
		len += 4;
	if (gflags & TR_GRE_S)
		len += 4;
	if (nh->pos + len > data_end)
		return -1;
	nh->pos += len;

	if (gre->proto == bpf_htons(TR_ETH_P_TEB)) {
		*kind = TR_ENCAP_GRE;
		return TR_INNER_ETH;
	}
	if (gre->proto == bpf_htons(TR_ETH_P_ERSPAN)) {
		/* Type I has no sequence number and no ERSPAN header (draft-foschiano-erspan-03 §4.1). */
		if (!(gflags & TR_GRE_S)) {
			*kind = TR_ENCAP_ERSPAN1;
			return TR_INNER_ETH;
		}
		/* Type II: 8 bytes, version 1 in the top nibble. */
		e = nh->pos;
		if ((void *)(e + 8) > data_end)
			return -1;
		if ((e[0] >> 4) != 1)
			return -1;
		*kind = TR_ENCAP_ERSPAN2;
		nh->pos += 8;
		return TR_INNER_ETH;
	}
	if (gre->proto == bpf_htons(TR_ETH_P_ERSPAN3)) {
		/*
		 * Type III: 12 bytes, version 2; byte 10 holds P and the frame
		 * type FT (bits 6..2: 0 Ethernet, 2 IP), byte 11 bit 0 is O: an
		 * 8-byte platform-specific subheader follows.
		 */
		__u8 ft;

		e = nh->pos;
		if ((void *)(e + 12) > data_end)
			return -1;
		if ((e[0] >> 4) != 2)
			return -1;
		ft = (e[10] >> 2) & 0x1f;
		len = (e[11] & 0x01) ? 20 : 12;
		if (nh->pos + len > data_end)
			return -1;
		nh->pos += len;
		*kind = TR_ENCAP_ERSPAN3;
		if (ft == 0)
			return TR_INNER_ETH;
		if (ft == 2) {
			*flags |= TR_ENCAP_F_NO_L2;
			return tr_bare_ip(nh, data_end);
		}
		return -1;
	}
	return -1;
}

/*
 * The cursor is at the outer IP payload of protocol l4_proto. Returns
 * TR_INNER_ETH (cursor at the inner Ethernet header), the inner EtherType
 * in network order for bare IP (cursor at the IP header), or -1: not a
 * tunnel we read, or malformed or truncated. Sets *kind to TR_ENCAP_* and
 * *flags to TR_ENCAP_F_*.
 */
static __always_inline int tr_decap(struct hdr_cursor *nh, void *data_end, __u8 l4_proto,
				    __u8 *kind, __u8 *flags)
{
	if (l4_proto == IPPROTO_UDP)
		return tr_decap_udp(nh, data_end, kind, flags);
	if (l4_proto == IPPROTO_GRE)
		return tr_decap_gre(nh, data_end, kind, flags);
	return -1;
}

/*
 * The outer packet at byte `off` of the frame is the UDP or GRE payload of
 * protocol pi->l4_proto. Removes one tunnel level and parses the inner
 * frame (Ethernet, two VLAN tags, IP, TCP) exactly as a plain one, into
 * *pi (cleared first, ifindex kept; encap and encap_flags set once the
 * tunnel header was read). Returns 0 when a TCP segment was parsed, else -1.
 *
 * A global function on purpose: the verifier checks it once with `off`
 * unknown, instead of once per path through the outer headers (VLANs, IP
 * options, extension headers) times every path through the inner ones;
 * inlined, that product took 514k verifier steps and 33 s to load, against
 * 3.5k for the plain parser. The plain path never calls it.
 */
__noinline int tr_parse_tunnelled(struct xdp_md *ctx, __u32 off, struct pkt_info *pi)
{
	void *data_end = (void *)(long)ctx->data_end;
	void *data = (void *)(long)ctx->data;
	struct hdr_cursor nh;
	__u8 kind = TR_ENCAP_NONE, flags = 0;
	__u32 ifindex;
	int proto, ip_len;
	__u8 l4;

	if (!pi)
		return -1;
	/* Outer Ethernet (2 tags) + IPv4 with options or IPv6 with 3 extension headers fit in 512 bytes. */
	if (off > 511)
		return -1;
	/* Again where the verifier sees it: clang may keep only a 32-bit compare. */
	asm volatile("%0 &= 511" : "+r"(off));
	nh.pos = data + off;
	l4 = pi->l4_proto;
	ifindex = pi->flow.ifindex;
	proto = tr_decap(&nh, data_end, l4, &kind, &flags);
	if (proto == -1)
		return -1;
	/* Nothing of the outer packet may reach the inner one's event. */
	__builtin_memset(pi, 0, sizeof(*pi));
	pi->flow.ifindex = ifindex;
	pi->encap = kind;
	pi->encap_flags = flags;
	if (proto == TR_INNER_ETH)
		proto = parse_ethhdr(&nh, data_end, pi);
	ip_len = parse_ip(&nh, data_end, proto, pi);
	if (ip_len < 0)
		return -1;
	return parse_tcp(&nh, data_end, ip_len, pi);
}

/* The slot of this interface's counters, taken over (zeroed) if another interface held it. */
static __always_inline struct tr_if_counters *tr_if_slot(__u32 ifindex)
{
	__u32 slot = ifindex & (TR_IF_SLOTS - 1);
	struct tr_if_counters *c = bpf_map_lookup_elem(&if_counters, &slot);

	if (c && c->ifindex != ifindex) {
		c->ifindex = ifindex;
		c->packets = 0;
		c->tcp = 0;
		c->decap = 0;
	}
	return c;
}

#endif /* TR_ENCAP_H */
