/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * tcpreset kernel/user contract.
 *
 * Every struct that crosses the boundary between the XDP program and user
 * space lives here, with fixed-width types, explicit padding and size
 * asserts. src/contract.ts mirrors it; test/contract.test.ts checks that
 * mirror against the BTF of the built object, so the two cannot drift.
 *
 * Byte order: addresses and MACs are in network order (as on the wire);
 * every other integer is in host order (converted by the program), so user
 * space reads them with little-endian DataView accessors.
 */
#ifndef TCPRESET_H
#define TCPRESET_H

#ifndef __KERNEL__
#include <linux/types.h>
#endif

/* Names shared by the program and its loader. */
#define TR_PROG_NAME      "tcpreset_xdp"
#define TR_MAP_TARGETS    "targets"
#define TR_MAP_FLOWS      "flows"
#define TR_MAP_EVENTS     "events"
#define TR_MAP_EVENT_RINGS "event_rings"
#define TR_MAP_COUNTERS   "counters"
#define TR_MAP_PREFILTER  "prefilter"
#define TR_MAP_UDP_TUNNELS "udp_tunnels"
#define TR_MAP_IF_COUNTERS "if_counters"
#define TR_MAP_FLOWMEM    "flowmem"

/* Capacities. The targets map is a plain hash: at least 100,000 targets. */
#define TR_MAX_TARGETS    131072
#define TR_MAX_FLOWS      65536
#define TR_RINGBUF_BYTES  (8u << 20)
/*
 * Events are spread over up to TR_RING_SLOTS ring buffers by a symmetric
 * hash of the flow (both directions of a connection land in one ring, so
 * one consumer sees a flow in order). User space fills slot i with ring
 * i % N for N consumers; an empty slot means the "events" ring (N = 1).
 */
#define TR_RING_SLOTS     8
#define TR_MAX_VLANS      2
/*
 * Flow memory slots (a power of two) compiled in; the daemon sets its
 * configured `flowMemory` before load. One slot is a tr_fm_entry (192
 * bytes) of an array map, so this default is 48 MiB of kernel memory.
 */
#define TR_FLOWMEM_DEFAULT 262144

/*
 * Address prefilter: one bit per hash of (ifindex, family, address), set by
 * user space for every address that has a target (refcounted there). A
 * packet whose source and destination bits are both clear cannot match, so
 * non-matching traffic costs two reads of a 1 MiB bitmap instead of four
 * hash-table lookups whose chains, with 100,000 targets, miss the cache.
 * A set bit only means "look in targets"; an address without a target
 * whose bit is set (a false positive, about targets / bits of them) pays
 * two cold lookups. Size, measured with BPF_PROG_TEST_RUN (bench/targets.ts,
 * non-matching new flows, 100,000 targets against 1): 2^21 bits passed
 * 8.8 % of packets, 1.14x the cost; 2^23 passes 2.3 %, 1.05x; 2^24 1.1 %,
 * 1.00x (issue 13's goal is 1.1x).
 */
#define TR_PREFILTER_BITS  (1u << 23)
#define TR_PREFILTER_WORDS (TR_PREFILTER_BITS / 64)

/*
 * An event that carries no new sequence information for its flow (same
 * seq, ack and flags as the last one emitted) is emitted again at most
 * once per this interval: enough to re-fire after a lost RST, cheap under
 * a flood. Events whose seq, ack or flags moved are never suppressed.
 */
#define TR_DUP_INTERVAL_NS (10ull * 1000 * 1000)

/*
 * Tunnelled mirrors (bpf/encap.h): one level of encapsulation is removed
 * and the inner frame parsed as a plain one. tr_event.encap names it.
 * VXLAN and Geneve are recognised on their IANA ports and on any UDP port
 * whose udp_tunnels entry (index = port, host order) holds the kind.
 */
#define TR_ENCAP_NONE       0
#define TR_ENCAP_VXLAN      1   /* RFC 7348, UDP 4789 */
#define TR_ENCAP_GENEVE     2   /* RFC 8926, UDP 6081 */
#define TR_ENCAP_GRE        3   /* RFC 2784/2890, transparent Ethernet bridging (0x6558) */
#define TR_ENCAP_ERSPAN1    4   /* GRE 0x88BE without sequence number: no ERSPAN header */
#define TR_ENCAP_ERSPAN2    5   /* GRE 0x88BE, ERSPAN version 1 (type II) */
#define TR_ENCAP_ERSPAN3    6   /* GRE 0x22EB, ERSPAN version 2 (type III) */
#define TR_VXLAN_PORT       4789
#define TR_GENEVE_PORT      6081
#define TR_UDP_PORTS        65536
/* tr_event.encap_flags: the inner packet had no Ethernet header (Geneve or
 * ERSPAN III carrying bare IP), so its MACs and VLAN tags are unknown. */
#define TR_ENCAP_F_NO_L2    0x01

/*
 * Per-interface counters (if_counters, PERCPU_ARRAY): slot ifindex mod
 * TR_IF_SLOTS; the slot names its owner and is zeroed when another
 * interface takes it, so user space only sums slots whose ifindex is the
 * one it asks about (two attached interfaces sharing a slot is detected
 * there).
 */
#define TR_IF_SLOTS       1024

#define TR_FAMILY_V4      4
#define TR_FAMILY_V6      6
#define TR_PORT_ANY       0

/*
 * MPTCP (RFC 8684): TCP option kind 30, its subtype in the high nibble of
 * the option's third byte. The program reads MP_CAPABLE (§3.1) for the
 * 64-bit keys of both ends and the SYN of MP_JOIN (§3.2) for the token of
 * the connection it joins; any MPTCP option marks the subflow as MPTCP.
 * Keys and tokens are stored in host order (read big-endian off the wire).
 * The token (SHA-256 of a key, upper 32 bits, §3.2) is computed in user
 * space, which ties JOIN subflows to their connection.
 */
#define TR_TCPOPT_MPTCP     30
#define TR_MPTCP_CAPABLE    0
#define TR_MPTCP_JOIN       1
#define TR_MPTCP_FASTCLOSE  7
/* Option kinds walked per segment at most (NOPs count): a SYN carries 6-7, a data segment 3-4. */
#define TR_MAX_TCP_OPTS     10

/*
 * tr_fm_mptcp.flags and tr_event.mp_flags. Endpoint 0/1 is A/B of the flow
 * memory key in tr_fm_mptcp, the segment's source/destination in tr_event.
 */
#define TR_MP_SEEN          0x01  /* some MPTCP option was seen on this subflow */
#define TR_MP_CAPABLE       0x02  /* an MP_CAPABLE handshake: the connection's first subflow */
#define TR_MP_JOIN          0x04  /* an MP_JOIN SYN: a further subflow; token set */
#define TR_MP_KEY0          0x08  /* key[0] (endpoint 0's key) is known */
#define TR_MP_KEY1          0x10  /* key[1] is known */
#define TR_MP_TOKEN0        0x20  /* token is endpoint 0's (it received the MP_JOIN SYN) */
#define TR_MP_TOKEN1        0x40  /* token is endpoint 1's */

/* Which address of the packet matched the target (tr_event.match). */
#define TR_MATCH_SRC      1
#define TR_MATCH_DST      2

/* TCP flag bits as in the TCP header (tr_event.tcp_flags). */
#define TR_TCP_FIN        0x01
#define TR_TCP_SYN        0x02
#define TR_TCP_RST        0x04
#define TR_TCP_PSH        0x08
#define TR_TCP_ACK        0x10

/*
 * Targets map key. A packet matches when (ifindex, src, ANY),
 * (ifindex, src, dport), (ifindex, dst, ANY) or (ifindex, dst, sport) is
 * present: at most four hash lookups whatever the number of targets.
 */
struct tr_target_key {
	__u32 ifindex;   /* sniff interface the packet arrived on */
	__u16 port;      /* remote TCP port; TR_PORT_ANY for the whole host */
	__u8  family;    /* TR_FAMILY_V4 or TR_FAMILY_V6 */
	__u8  pad;       /* must be zero */
	__u8  addr[16];  /* IPv4 in the first 4 bytes, the rest zero */
};

struct tr_target_value {
	__u32 target_id;   /* user-space handle, copied into events */
	__u32 pad;         /* must be zero */
	__u64 expires_ns;  /* bpf_ktime_get_ns() deadline; 0 = none */
};

/* One matching TCP segment, as seen on the sniff interface. */
struct tr_event {
	__u64 ts_ns;          /* bpf_ktime_get_ns() at match (CLOCK_MONOTONIC) */
	__u32 target_id;      /* tr_target_value.target_id of the match */
	__u32 ifindex;        /* sniff interface */
	__u32 seq;
	__u32 ack;
	__u32 payload_len;    /* TCP payload bytes (GSO super-packets: all of it) */
	__u32 flow_label;     /* IPv6 flow label (20 bits); 0 for IPv4 */
	__u16 sport;
	__u16 dport;
	__u16 vlan_tpid[TR_MAX_VLANS]; /* outermost first */
	__u16 vlan_tci[TR_MAX_VLANS];
	__u8  family;         /* TR_FAMILY_V4 or TR_FAMILY_V6 */
	__u8  vlan_count;     /* 0..TR_MAX_VLANS */
	__u8  tcp_flags;      /* TR_TCP_* */
	__u8  ttl;            /* IPv4 TTL or IPv6 hop limit */
	__u8  tos;            /* IPv4 TOS or IPv6 traffic class */
	__u8  match;          /* TR_MATCH_SRC or TR_MATCH_DST */
	__u8  smac[6];
	__u8  dmac[6];        /* of the inner frame when tunnelled; zero with TR_ENCAP_F_NO_L2 */
	__u8  encap;          /* TR_ENCAP_*: the tunnel the segment arrived in */
	__u8  encap_flags;    /* TR_ENCAP_F_* */
	__u8  saddr[16];      /* IPv4 in the first 4 bytes, the rest zero */
	__u8  daddr[16];
	/* MPTCP, from the flow memory entry of the subflow (zero when flow memory is off or none was seen). */
	__u64 mp_key_src;     /* the source's MPTCP key (with TR_MP_KEY0) */
	__u64 mp_key_dst;     /* the destination's MPTCP key (with TR_MP_KEY1) */
	__u32 mp_token;       /* MP_JOIN token (with TR_MP_TOKEN0: the source's, TR_MP_TOKEN1: the destination's) */
	__u8  mp_flags;       /* TR_MP_*; endpoint 0 = source */
	__u8  mp_pad[3];
};

/* Per-flow (directional) suppression state, LRU map. */
struct tr_flow_key {
	__u32 ifindex;
	__u16 sport;
	__u16 dport;
	__u8  family;
	__u8  pad[3];
	__u8  saddr[16];
	__u8  daddr[16];
};

struct tr_flow_state {
	__u64 last_ns;   /* when the last event of this flow was emitted */
	__u32 seq;
	__u32 ack;
	__u8  flags;
	__u8  pad[7];
};

/*
 * Flow memory (bpf/flowmem.h): every TCP segment on a watched interface,
 * matching or not, updates the entry of its connection in a 2-way
 * set-associative table (an mmapable array of tr_fm_entry; set = the key's
 * tr_fm_hash with the low bit cleared, masked to the table size).
 *
 * Key: the 4-tuple in canonical order, so both directions share one entry.
 * Endpoint A is the one whose (address, port) sorts first, comparing the
 * address as four host-order 32-bit words (IPv4: first word only, the rest
 * zero), then the port (tr_fm_src_is_a; src/contract.ts srcIsA).
 */
struct tr_fm_key {
	__u32 ifindex;    /* sniff interface */
	__u16 port_a;
	__u16 port_b;
	__u8  family;     /* TR_FAMILY_V4 or TR_FAMILY_V6; 0 = empty slot */
	__u8  pad[3];     /* must be zero */
	__u8  addr_a[16]; /* IPv4 in the first 4 bytes, the rest zero */
	__u8  addr_b[16];
};

/* The last segment one endpoint sent (RSTs only set tr_fm_entry.state). */
struct tr_fm_dir {
	__u64 last_ns;      /* bpf_ktime_get_coarse_ns() when seen (CLOCK_MONOTONIC, tick resolution); 0 = never */
	__u32 seq;
	__u32 ack;
	__u32 payload_len;
	__u32 flow_label;   /* IPv6 flow label; 0 for IPv4 */
	__u16 vlan_tpid[TR_MAX_VLANS]; /* outermost first */
	__u16 vlan_tci[TR_MAX_VLANS];
	__u8  smac[6];
	__u8  dmac[6];
	__u8  tcp_flags;    /* TR_TCP_* */
	__u8  ttl;          /* IPv4 TTL or IPv6 hop limit */
	__u8  tos;          /* IPv4 TOS or IPv6 traffic class */
	__u8  vlan_count;
	__u32 key_hash;     /* tr_fm_hash of the key it was written for: a torn entry shows */
	__u8  encap;        /* TR_ENCAP_*: the tunnel the segment arrived in */
	__u8  encap_flags;  /* TR_ENCAP_F_* (no inner Ethernet: MACs zero) */
	__u8  pad[2];
};

/* tr_fm_entry.state bits. Closed = RST, or FIN from both ends. */
#define TR_FM_FIN_A 0x01
#define TR_FM_FIN_B 0x02
#define TR_FM_RST   0x04

/* What the subflow showed of MPTCP (TR_MP_*; endpoint 0 = A). Cleared by a SYN that reuses the tuple. */
struct tr_fm_mptcp {
	__u64 key[2];            /* [0] A's key, [1] B's (valid with TR_MP_KEY0 / TR_MP_KEY1) */
	__u32 token;             /* MP_JOIN SYN: the receiver's token (TR_MP_TOKEN0 / TR_MP_TOKEN1 say whose) */
	__u8  flags;             /* TR_MP_* */
	__u8  pad[3];
};

struct tr_fm_entry {
	struct tr_fm_key key;
	__u8  state;             /* TR_FM_* */
	__u8  pad[3];
	__u64 first_ns;          /* when the entry was made (or a new SYN reused the tuple) */
	struct tr_fm_dir dir[2]; /* [0] sent by A (addr_a, port_a), [1] by B */
	struct tr_fm_mptcp mp;
};

/* Per-CPU counters, one slot (key 0) of a PERCPU_ARRAY. */
struct tr_counters {
	__u64 packets;     /* frames seen */
	__u64 tcp;         /* TCP segments parsed */
	__u64 matched;     /* segments that matched a live target */
	__u64 events;      /* events submitted to the ring */
	__u64 lost;        /* events dropped: ring full */
	__u64 suppressed;  /* events suppressed: no new sequence information */
	__u64 rst_seen;    /* matched segments carrying RST: nothing to answer */
	__u64 expired;     /* matched a target past its deadline: ignored */
	__u64 fm_new;      /* flow memory entries made (connections not in the table) */
	__u64 fm_evicted;  /* open connections displaced from the flow memory by new ones */
};

/* Per-CPU, per-interface traffic (see TR_IF_SLOTS). */
struct tr_if_counters {
	__u32 ifindex;     /* owner of the slot */
	__u32 pad;
	__u64 packets;     /* frames seen */
	__u64 tcp;         /* TCP segments parsed (plain or tunnelled) */
	__u64 decap;       /* frames whose tunnel header was removed */
};

/*
 * The prefilter hash. Addresses are read as four host-order 32-bit words,
 * as user space reads them (src/contract.ts prefilterHash, checked against
 * this function by test/contract.test.ts).
 */
static __inline __u32 tr_mix32(__u32 h, __u32 w)
{
	h ^= w;
	h *= 0x9e3779b1u;
	return h ^ (h >> 15);
}

static __inline __u32 tr_prefilter_hash(__u32 ifindex, __u8 family, const __u8 *addr16)
{
	__u32 w[4];
	__u32 h;

	__builtin_memcpy(w, addr16, sizeof(w));
	h = tr_mix32(0x74727374u ^ family, ifindex);
	h = tr_mix32(h, w[0]);
	h = tr_mix32(h, w[1]);
	h = tr_mix32(h, w[2]);
	h = tr_mix32(h, w[3]);
	h ^= h >> 16;
	h *= 0x85ebca6bu;
	h ^= h >> 13;
	h *= 0xc2b2ae35u;
	return h ^ (h >> 16);
}

/*
 * Canonical order of a flow's endpoints: is (saddr, sport) endpoint A?
 * Addresses compared as four host-order 32-bit words, then ports; equal
 * endpoints (a socket talking to itself) make the source A.
 */
static __inline int tr_fm_src_is_a(const __u8 *saddr16, __u16 sport, const __u8 *daddr16, __u16 dport)
{
	__u32 s[4], d[4];
	int i;

	__builtin_memcpy(s, saddr16, sizeof(s));
	__builtin_memcpy(d, daddr16, sizeof(d));
	for (i = 0; i < 4; i++) {
		if (s[i] != d[i])
			return s[i] < d[i];
	}
	return sport <= dport;
}

/*
 * The flow memory's hash of a canonical key (src/contract.ts fmHash, checked by test/contract.test.ts).
 * An IPv4 key hashes only the words that can be non-zero (ifindex, ports, family, the two addresses:
 * words 0-3 and 7): its other 24 address bytes are zero, and mixing them cost 4-6 ns per segment
 * (bench/flowmem.bench.ts, known connection 52-55 -> 46-50 ns on a 2-vCPU EPYC). IPv6 keys hash all 11 words.
 */
static __inline __u32 tr_fm_hash(const struct tr_fm_key *k)
{
	const __u32 *w = (const __u32 *)k;
	__u32 h = 0x666c6f77u; /* "flow" */
	int i;

	if (k->family == TR_FAMILY_V4) {
		h = tr_mix32(h, w[0]);
		h = tr_mix32(h, w[1]);
		h = tr_mix32(h, w[2]);
		h = tr_mix32(h, w[3]);
		h = tr_mix32(h, w[7]);
	} else {
		for (i = 0; i < (int)(sizeof(*k) / 4); i++)
			h = tr_mix32(h, w[i]);
	}
	h ^= h >> 16;
	h *= 0x85ebca6bu;
	h ^= h >> 13;
	return h;
}

static __inline int tr_fm_closed(__u8 state)
{
	return (state & TR_FM_RST) || (state & (TR_FM_FIN_A | TR_FM_FIN_B)) == (TR_FM_FIN_A | TR_FM_FIN_B);
}

_Static_assert(sizeof(struct tr_target_key) == 24, "tr_target_key layout");
_Static_assert(sizeof(struct tr_target_value) == 16, "tr_target_value layout");
_Static_assert(sizeof(struct tr_event) == 120, "tr_event layout");
_Static_assert(sizeof(struct tr_flow_key) == 44, "tr_flow_key layout");
_Static_assert(sizeof(struct tr_flow_state) == 24, "tr_flow_state layout");
_Static_assert(sizeof(struct tr_counters) == 80, "tr_counters layout");
_Static_assert(sizeof(struct tr_if_counters) == 32, "tr_if_counters layout");
_Static_assert(sizeof(struct tr_fm_key) == 44, "tr_fm_key layout");
_Static_assert(sizeof(struct tr_fm_dir) == 56, "tr_fm_dir layout");
_Static_assert(sizeof(struct tr_fm_mptcp) == 24, "tr_fm_mptcp layout");
_Static_assert(sizeof(struct tr_fm_entry) == 192, "tr_fm_entry layout");

#endif /* TCPRESET_H */
