// SPDX-License-Identifier: (GPL-2.0-only OR MIT)
/*
 * tcpreset XDP filter for the sniff (mirror) interface.
 *
 * Parses Ethernet, up to TR_MAX_VLANS 802.1Q/802.1ad tags, IPv4/IPv6 (with
 * hop-by-hop, routing and destination-options headers) and TCP, also inside
 * one level of VXLAN, Geneve, GRE or ERSPAN (bpf/encap.h); looks the
 * packet's addresses up in the targets map (at most four hash lookups) and,
 * on a live hit, reserves an event in the ring buffer for user space to
 * forge RSTs from. Every frame is passed on untouched: the port may have
 * other consumers, and the program only observes.
 *
 * Style after xdp-tutorial's parsing_helpers.h: a header cursor and
 * always-inline parse helpers that return the next protocol or -1.
 *
 * Section "xdp.frags": the program is multi-buffer aware (it reads headers
 * only through data/data_end, which cover the first buffer), so native XDP
 * attaches to a veth whose peer runs a 9000-byte MTU (without the flag the
 * kernel refuses with ERANGE). Kernels older than 5.18 do not know the flag:
 * a loader for them clears it with bpf_program__set_flags() before load.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "tcpreset.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TR_MAX_TARGETS);
	__type(key, struct tr_target_key);
	__type(value, struct tr_target_value);
} targets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, TR_MAX_FLOWS);
	__type(key, struct tr_flow_key);
	__type(value, struct tr_flow_state);
} flows SEC(".maps");

struct tr_ring {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, TR_RINGBUF_BYTES);
};

struct tr_ring events SEC(".maps");

/* Slots of the consumers' rings (see TR_RING_SLOTS); filled by user space. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, TR_RING_SLOTS);
	__type(key, __u32);
	__array(values, struct tr_ring);
} event_rings SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tr_counters);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TR_PREFILTER_WORDS);
	__type(key, __u32);
	__type(value, __u64);
} prefilter SEC(".maps");

/* IPv6 extension headers we walk through before TCP (more is not TCP we parse). */
#define TR_MAX_EXT_HDRS 3
#define IP_OFFSET_MASK 0x1fff

struct hdr_cursor {
	void *pos;
};

struct vlan_hdr {
	__be16 h_vlan_TCI;
	__be16 h_vlan_encapsulated_proto;
};

/* What the parser learned from one frame; addresses live in the flow key. */
struct pkt_info {
	struct tr_flow_key flow;   /* ifindex, ports, family, addresses: zero padded */
	__u32 seq;
	__u32 ack;
	__u32 payload_len;
	__u32 flow_label;
	__u16 vlan_tpid[TR_MAX_VLANS];
	__u16 vlan_tci[TR_MAX_VLANS];
	__u8 vlan_count;
	__u8 tcp_flags;
	__u8 ttl;
	__u8 tos;
	__u8 smac[ETH_ALEN];
	__u8 dmac[ETH_ALEN];
	__u8 l4_proto;     /* the IP protocol when it was not TCP (a tunnel may follow) */
	__u8 encap;        /* TR_ENCAP_* */
	__u8 encap_flags;  /* TR_ENCAP_F_* */
	__u8 mp_flags;     /* TR_MP_*, endpoint 0 = source: of this segment, then (flowmem.h) of its subflow */
	__u8 fm_dir;       /* flowmem.h: 0 when the source is endpoint A of the entry */
	__u32 mp_token;
	__u64 mp_key_src;
	__u64 mp_key_dst;
};

#include "flowmem.h"

static __always_inline int proto_is_vlan(__u16 h_proto)
{
	return h_proto == bpf_htons(ETH_P_8021Q) || h_proto == bpf_htons(ETH_P_8021AD);
}

/* Ethernet plus up to TR_MAX_VLANS tags; returns the inner EtherType (network order) or -1. */
static __always_inline int parse_ethhdr(struct hdr_cursor *nh, void *data_end, struct pkt_info *pi)
{
	struct ethhdr *eth = nh->pos;
	struct vlan_hdr *vlh;
	__u16 h_proto;
	int i;

	if ((void *)(eth + 1) > data_end)
		return -1;
	__builtin_memcpy(pi->smac, eth->h_source, ETH_ALEN);
	__builtin_memcpy(pi->dmac, eth->h_dest, ETH_ALEN);
	nh->pos = eth + 1;
	h_proto = eth->h_proto;

#pragma unroll
	for (i = 0; i < TR_MAX_VLANS; i++) {
		if (!proto_is_vlan(h_proto))
			break;
		vlh = nh->pos;
		if ((void *)(vlh + 1) > data_end)
			return -1;
		pi->vlan_tpid[i] = bpf_ntohs(h_proto);
		pi->vlan_tci[i] = bpf_ntohs(vlh->h_vlan_TCI);
		pi->vlan_count = i + 1;
		h_proto = vlh->h_vlan_encapsulated_proto;
		nh->pos = vlh + 1;
	}
	return h_proto; /* a third tag is returned as such: not IP, no event */
}

/*
 * IPv4: returns the IP payload length left for TCP (tot_len - header) or -1
 * when the header is bad, truncated, not TCP, or a non-first fragment.
 */
static __always_inline int parse_ipv4(struct hdr_cursor *nh, void *data_end, struct pkt_info *pi)
{
	struct iphdr *iph = nh->pos;
	int hdrsize, tot_len;

	if ((void *)(iph + 1) > data_end)
		return -1;
	/* The endpoints' stacks drop any other version: a frame no host takes gets no event. */
	if (iph->version != 4)
		return -1;
	hdrsize = iph->ihl * 4;
	if (hdrsize < (int)sizeof(*iph))
		return -1;
	if (nh->pos + hdrsize > data_end)
		return -1;
	/* Later fragments carry no TCP header; first ones (MF, offset 0) do. */
	if (iph->frag_off & bpf_htons(IP_OFFSET_MASK))
		return -1;
	if (iph->protocol != IPPROTO_TCP) {
		/* UDP or GRE may carry a mirrored frame: the caller decides. */
		pi->l4_proto = iph->protocol;
		nh->pos += hdrsize;
		return -1;
	}
	tot_len = bpf_ntohs(iph->tot_len);
	if (tot_len < hdrsize)
		return -1;

	pi->flow.family = TR_FAMILY_V4;
	__builtin_memcpy(pi->flow.saddr, &iph->saddr, 4);
	__builtin_memcpy(pi->flow.daddr, &iph->daddr, 4);
	pi->ttl = iph->ttl;
	pi->tos = iph->tos;
	nh->pos += hdrsize;
	return tot_len - hdrsize;
}

/*
 * IPv6: walks hop-by-hop, routing and destination-options headers; returns
 * the length left for TCP (payload_len - extension headers) or -1.
 */
static __always_inline int parse_ipv6(struct hdr_cursor *nh, void *data_end, struct pkt_info *pi)
{
	struct ipv6hdr *ip6h = nh->pos;
	struct ipv6_opt_hdr *opt;
	int len, hdrsize, i;
	__u8 nexthdr;

	if ((void *)(ip6h + 1) > data_end)
		return -1;
	if (ip6h->version != 6)
		return -1;
	pi->flow.family = TR_FAMILY_V6;
	__builtin_memcpy(pi->flow.saddr, &ip6h->saddr, 16);
	__builtin_memcpy(pi->flow.daddr, &ip6h->daddr, 16);
	pi->ttl = ip6h->hop_limit;
	pi->tos = (ip6h->priority << 4) | (ip6h->flow_lbl[0] >> 4);
	pi->flow_label = ((__u32)(ip6h->flow_lbl[0] & 0x0f) << 16) |
			 ((__u32)ip6h->flow_lbl[1] << 8) | ip6h->flow_lbl[2];
	len = bpf_ntohs(ip6h->payload_len); /* 0 (jumbogram) ends as a lying length */
	nexthdr = ip6h->nexthdr;
	nh->pos = ip6h + 1;

#pragma unroll
	for (i = 0; i < TR_MAX_EXT_HDRS; i++) {
		if (nexthdr != IPPROTO_HOPOPTS && nexthdr != IPPROTO_ROUTING &&
		    nexthdr != IPPROTO_DSTOPTS)
			break;
		opt = nh->pos;
		if ((void *)(opt + 1) > data_end)
			return -1;
		hdrsize = (opt->hdrlen + 1) * 8;
		if (nh->pos + hdrsize > data_end)
			return -1;
		nexthdr = opt->nexthdr;
		nh->pos += hdrsize;
		len -= hdrsize;
	}
	/* Fragments (44) and anything else end here without an event (UDP and GRE may be a tunnel). */
	if (nexthdr != IPPROTO_TCP) {
		pi->l4_proto = nexthdr;
		return -1;
	}
	if (len < 0)
		return -1;
	return len;
}

static __always_inline int parse_ip(struct hdr_cursor *nh, void *data_end, int proto, struct pkt_info *pi)
{
	if (proto == bpf_htons(ETH_P_IP))
		return parse_ipv4(nh, data_end, pi);
	if (proto == bpf_htons(ETH_P_IPV6))
		return parse_ipv6(nh, data_end, pi);
	return -1;
}

static __always_inline __u64 read_be64(const __u8 *p)
{
	__u64 v;

	__builtin_memcpy(&v, p, 8);
	return bpf_be64_to_cpu(v);
}

static __always_inline __u32 read_be32(const __u8 *p)
{
	__u32 v;

	__builtin_memcpy(&v, p, 4);
	return bpf_ntohl(v);
}

/*
 * Offset of the first MPTCP option (kind 30) in the `optlen` bytes of TCP
 * options at `opts`, or -1. At most TR_MAX_TCP_OPTS options are walked, and
 * the loop carries only a scalar offset (nothing is written per option), so
 * the verifier's states stay few: writing what was found inside the loop
 * made it explore every combination (over its 1M-instruction limit).
 */
static __always_inline int find_mptcp(__u8 *opts, int optlen, void *data_end)
{
	__u8 *p;
	int off = 0, i;
	__u8 len;

	for (i = 0; i < TR_MAX_TCP_OPTS; i++) {
		p = opts + off;
		if ((void *)(p + 2) > data_end)
			return -1; /* a last one-byte option (NOP, EOL) carries nothing we read */
		if (p[0] == 0)
			return -1; /* end of option list */
		if (p[0] == TR_TCPOPT_MPTCP)
			return off;
		len = p[0] == 1 ? 1 : p[1];
		if (len < 1 || (p[0] != 1 && len < 2))
			return -1; /* malformed: the kernel stops here too */
		off += len;
		if (off >= optlen)
			return -1;
		/* Every path leaves off in [0, 63], so the verifier prunes instead of exploring each one. */
		off &= 63;
	}
	return -1;
}

/*
 * The MPTCP option of a segment (RFC 8684 §3). What it keeps (pi->mp_*;
 * endpoint 0 = the segment's source):
 * - any kind 30: TR_MP_SEEN (a subflow whose keys may never show: the job
 *   came after the handshake);
 * - MP_CAPABLE (§3.1) of 12 bytes or more: the sender's key at offset 4 (the
 *   SYN-ACK; the SYN too in version 0); of 20 or more (the third ACK, or the
 *   first data segment when that ACK was lost): the receiver's key at 12;
 * - MP_JOIN on a SYN (§3.2, 12 bytes): the receiver's token at offset 4.
 * One MPTCP option per segment is read: MP_CAPABLE and an MP_JOIN SYN come
 * alone, and a later DSS only says "MPTCP", which the first one did.
 */
static __always_inline void parse_mptcp(__u8 *opts, int optlen, void *data_end, struct pkt_info *pi)
{
	int off = find_mptcp(opts, optlen, data_end);
	__u8 *p, len, sub;

	if (off < 0)
		return;
	p = opts + (off & 63);
	if ((void *)(p + 3) > data_end)
		return;
	len = p[1];
	if (len < 3 || off + len > optlen)
		return;
	sub = p[2] >> 4;
	pi->mp_flags = TR_MP_SEEN;
	if (sub == TR_MPTCP_CAPABLE) {
		pi->mp_flags |= TR_MP_CAPABLE;
		if (len < 12 || (void *)(p + 12) > data_end)
			return;
		pi->mp_key_src = read_be64(p + 4);
		pi->mp_flags |= TR_MP_KEY0;
		if (len < 20 || (void *)(p + 20) > data_end)
			return;
		pi->mp_key_dst = read_be64(p + 12);
		pi->mp_flags |= TR_MP_KEY1;
	} else if (sub == TR_MPTCP_JOIN && len == 12 && (pi->tcp_flags & (TR_TCP_SYN | TR_TCP_ACK)) == TR_TCP_SYN) {
		if ((void *)(p + 12) > data_end)
			return;
		pi->mp_token = read_be32(p + 4);
		pi->mp_flags |= TR_MP_JOIN | TR_MP_TOKEN1;
	}
}

/* TCP with the whole header (options included) in the frame; ip_len is what IP says is left. */
static __always_inline int parse_tcp(struct hdr_cursor *nh, void *data_end, int ip_len, struct pkt_info *pi)
{
	struct tcphdr *th = nh->pos;
	int hdrsize;

	if ((void *)(th + 1) > data_end)
		return -1;
	hdrsize = th->doff * 4;
	if (hdrsize < (int)sizeof(*th))
		return -1;
	if (nh->pos + hdrsize > data_end)
		return -1;
	/* The IP length field, not data_end: generic XDP sees GSO super-packets. */
	if (ip_len < hdrsize)
		return -1;

	pi->flow.sport = bpf_ntohs(th->source);
	pi->flow.dport = bpf_ntohs(th->dest);
	pi->seq = bpf_ntohl(th->seq);
	pi->ack = bpf_ntohl(th->ack_seq);
	pi->tcp_flags = ((__u8 *)th)[13]; /* FIN SYN RST PSH ACK URG ECE CWR */
	pi->payload_len = ip_len - hdrsize;
	if (hdrsize > (int)sizeof(*th))
		parse_mptcp((__u8 *)(th + 1), hdrsize - (int)sizeof(*th), data_end, pi);
	nh->pos += hdrsize;
	return 0;
}

#include "encap.h"

/* A target that is present and not past its deadline; *expired notes one that was. */
static __always_inline struct tr_target_value *
live_target(struct tr_target_key *key, __u64 *now, int *expired)
{
	struct tr_target_value *v = bpf_map_lookup_elem(&targets, key);
	__u64 expires;

	if (!v)
		return NULL;
	expires = v->expires_ns;
	if (expires) {
		if (!*now)
			*now = bpf_ktime_get_ns();
		if (*now >= expires) {
			*expired = 1;
			return NULL;
		}
	}
	return v;
}

/* May `addr` have a target on this interface? A clear bit says no for sure. */
static __always_inline int prefilter_hit(struct pkt_info *pi, const __u8 *addr)
{
	__u32 bit = tr_prefilter_hash(pi->flow.ifindex, pi->flow.family, addr) & (TR_PREFILTER_BITS - 1);
	__u32 word = bit >> 6;
	__u64 *w = bpf_map_lookup_elem(&prefilter, &word);

	return w && (*w & (1ull << (bit & 63)));
}

/* Same seq, ack and flags as the last event of this flow, within the interval. */
static __always_inline int is_duplicate(struct tr_flow_state *st, struct pkt_info *pi, __u64 now)
{
	return st && st->seq == pi->seq && st->ack == pi->ack && st->flags == pi->tcp_flags &&
	       now - st->last_ns < TR_DUP_INTERVAL_NS;
}

/*
 * Not inlined on purpose: a subprogram's prototype puts struct tr_event in
 * the object's BTF (reached only through a local pointer it would leave
 * none), which test/contract.test.ts checks against src/contract.ts. A
 * global anchor variable would do it too, but costs an extra .bss map.
 * One call per emitted event is noise next to the ring reservation.
 */
static __noinline void fill_event(struct tr_event *e, struct pkt_info *pi, __u32 target_id,
				  __u8 match, __u64 now)
{
	int i;

	e->ts_ns = now;
	e->target_id = target_id;
	e->ifindex = pi->flow.ifindex;
	e->seq = pi->seq;
	e->ack = pi->ack;
	e->payload_len = pi->payload_len;
	e->flow_label = pi->flow_label;
	e->sport = pi->flow.sport;
	e->dport = pi->flow.dport;
#pragma unroll
	for (i = 0; i < TR_MAX_VLANS; i++) {
		e->vlan_tpid[i] = pi->vlan_tpid[i];
		e->vlan_tci[i] = pi->vlan_tci[i];
	}
	e->family = pi->flow.family;
	e->vlan_count = pi->vlan_count;
	e->tcp_flags = pi->tcp_flags;
	e->ttl = pi->ttl;
	e->tos = pi->tos;
	e->match = match;
	__builtin_memcpy(e->smac, pi->smac, ETH_ALEN);
	__builtin_memcpy(e->dmac, pi->dmac, ETH_ALEN);
	e->encap = pi->encap;
	e->encap_flags = pi->encap_flags;
	__builtin_memcpy(e->saddr, pi->flow.saddr, 16);
	__builtin_memcpy(e->daddr, pi->flow.daddr, 16);
	e->mp_key_src = pi->mp_key_src;
	e->mp_key_dst = pi->mp_key_dst;
	e->mp_token = pi->mp_token;
	e->mp_flags = pi->mp_flags;
	e->mp_pad[0] = 0;
	e->mp_pad[1] = 0;
	e->mp_pad[2] = 0;
}

/*
 * Which ring slot a flow's events go to: a hash that is the same for both
 * directions (XOR of the endpoints), so one consumer sees a flow in order.
 */
static __always_inline __u32 ring_slot(struct pkt_info *pi)
{
	__u32 h = (__u32)pi->flow.sport ^ (__u32)pi->flow.dport;
	__u32 w;
	int i;

#pragma unroll
	for (i = 0; i < 16; i += 4) {
		__builtin_memcpy(&w, pi->flow.saddr + i, 4);
		h ^= w;
		__builtin_memcpy(&w, pi->flow.daddr + i, 4);
		h ^= w;
	}
	h *= 0x9e3779b1u;
	return h >> 29; /* top 3 bits: TR_RING_SLOTS = 8 */
}

/* Everything after the parse: match, suppress, emit. */
static __always_inline void handle_tcp(struct pkt_info *pi, struct tr_counters *cnt, const struct tr_fm_entry *fm)
{
	struct tr_target_key key;
	struct tr_target_value *tv;
	struct tr_flow_state *st;
	struct tr_event *e;
	void *ring;
	__u64 now = 0;
	int expired = 0;
	__u32 target_id;
	__u8 match = TR_MATCH_SRC;
	int src_hit, dst_hit;

	src_hit = prefilter_hit(pi, pi->flow.saddr);
	dst_hit = prefilter_hit(pi, pi->flow.daddr);
	if (!src_hit && !dst_hit)
		return; /* the common case on a busy link: two cached bit tests */

	__builtin_memset(&key, 0, sizeof(key));
	key.ifindex = pi->flow.ifindex;
	key.family = pi->flow.family;
	tv = NULL;
	if (src_hit) {
		__builtin_memcpy(key.addr, pi->flow.saddr, 16);
		key.port = TR_PORT_ANY;
		tv = live_target(&key, &now, &expired);
		if (!tv) {
			key.port = pi->flow.dport;
			tv = live_target(&key, &now, &expired);
		}
	}
	if (!tv && dst_hit) {
		match = TR_MATCH_DST;
		__builtin_memcpy(key.addr, pi->flow.daddr, 16);
		key.port = TR_PORT_ANY;
		tv = live_target(&key, &now, &expired);
		if (!tv) {
			key.port = pi->flow.sport;
			tv = live_target(&key, &now, &expired);
		}
	}
	if (!tv) {
		if (expired)
			cnt->expired++;
		return;
	}
	target_id = tv->target_id;
	cnt->matched++;

	/* Never answer a RST: the flow is already dead, and it may be ours. */
	if (pi->tcp_flags & TR_TCP_RST) {
		cnt->rst_seen++;
		return;
	}

	if (!now)
		now = bpf_ktime_get_ns();
	st = bpf_map_lookup_elem(&flows, &pi->flow);
	if (is_duplicate(st, pi, now)) {
		cnt->suppressed++;
		return;
	}

	ring = bpf_map_lookup_elem(&event_rings, &(__u32){ ring_slot(pi) });
	if (ring)
		e = bpf_ringbuf_reserve(ring, sizeof(*e), 0);
	else
		e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		cnt->lost++; /* never block; the flow state stays so the next copy retries */
		return;
	}
	/* The subflow's MPTCP keys and token as remembered (the segment itself rarely carries them). */
	if (fm)
		tr_fm_mptcp_out(fm, pi);
	fill_event(e, pi, target_id, match, now);
	bpf_ringbuf_submit(e, 0);
	cnt->events++;

	if (st) {
		st->last_ns = now;
		st->seq = pi->seq;
		st->ack = pi->ack;
		st->flags = pi->tcp_flags;
	} else {
		struct tr_flow_state ns;

		__builtin_memset(&ns, 0, sizeof(ns));
		ns.last_ns = now;
		ns.seq = pi->seq;
		ns.ack = pi->ack;
		ns.flags = pi->tcp_flags;
		bpf_map_update_elem(&flows, &pi->flow, &ns, BPF_ANY);
	}
}

/*
 * libxdp's run configuration (xdp/xdp_helpers.h XDP_RUN_CONFIG, spelled out
 * so the build does not need libxdp-dev): when tcpreset joins libxdp's
 * multi-program dispatcher (issue 11; the convention of xdp-tools and
 * bpfman), it runs at priority 5, before xdp-filter's 10 and libxdp's
 * default 50, so it observes every frame before a filter may drop it, and
 * the dispatcher goes on to the next program after its XDP_PASS (the only
 * action it returns). libbpf skips the section; libxdp reads it from BTF.
 */
struct {
	__uint(priority, 5);
	__uint(XDP_PASS, 1);
} _tcpreset_xdp SEC(".xdp_run_config");

SEC("xdp.frags")
int tcpreset_xdp(struct xdp_md *ctx)
{
	void *data_end = (void *)(long)ctx->data_end;
	void *data = (void *)(long)ctx->data;
	struct hdr_cursor nh = { .pos = data };
	struct tr_counters *cnt;
	struct tr_if_counters *ifc;
	struct pkt_info pi;
	__u32 zero = 0;
	int proto, ip_len;

	cnt = bpf_map_lookup_elem(&counters, &zero);
	if (!cnt)
		goto out;
	cnt->packets++;
	ifc = tr_if_slot(ctx->ingress_ifindex);
	if (ifc)
		ifc->packets++;

	__builtin_memset(&pi, 0, sizeof(pi));
	pi.flow.ifindex = ctx->ingress_ifindex;

	proto = parse_ethhdr(&nh, data_end, &pi);
	ip_len = parse_ip(&nh, data_end, proto, &pi);
	if (ip_len < 0) {
		/* Not TCP: UDP or GRE may be a tunnelled mirror (encap.h). */
		if (pi.l4_proto != IPPROTO_UDP && pi.l4_proto != IPPROTO_GRE)
			goto out;
		ip_len = tr_parse_tunnelled(ctx, (__u32)(nh.pos - data), &pi);
		if (pi.encap && ifc)
			ifc->decap++;
		if (ip_len < 0)
			goto out;
	} else if (parse_tcp(&nh, data_end, ip_len, &pi) < 0) {
		goto out;
	}
	cnt->tcp++;
	if (ifc)
		ifc->tcp++;

	handle_tcp(&pi, cnt, tr_flowmem_note(&pi, cnt));
out:
	return XDP_PASS;
}
