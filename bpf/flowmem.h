/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * Flow memory: the TCP connections a watched sniff interface has carried,
 * with the last segment each end sent, so that a job can reset a session
 * the moment it is created, even one that sends nothing (issue 9).
 *
 * Included by tcpreset.bpf.c after struct pkt_info; the program calls
 * tr_flowmem_note() once per parsed TCP segment, before target matching.
 *
 * The table is a 2-way set-associative cache in an mmapable array, not a
 * BPF LRU hash: measured with bench/flowmem.bench.ts, an LRU hash insert
 * with eviction cost 0.8-1.7 us per new connection on the lab machine (its
 * free-list refill and shrink take locks and walk lists), and it evicts
 * without telling anyone. Here a segment costs one hash over the key and
 * two array slots whatever happens; a new connection takes the empty slot
 * of its set, else the closed one, else the one least recently seen (LRU
 * within the set), and displacing an open connection is counted
 * (fm_evicted). User space reads the table by mmap, without a syscall per
 * entry (src/dataplane/flow-memory.ts).
 *
 * Concurrency: no locks. The two directions of one connection may be seen
 * on two CPUs at once; each writes only its own tr_fm_dir. Two CPUs taking
 * the same slot for two new connections at the same instant can leave a
 * mixed entry; readers use an entry only when its key and both directions
 * agree with the key's hash (tr_fm_dir.key_hash), and whatever they send
 * from it is verified by probes.
 */
#ifndef TR_FLOWMEM_H
#define TR_FLOWMEM_H

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, TR_FLOWMEM_DEFAULT);
	__type(key, __u32);
	__type(value, struct tr_fm_entry);
} flowmem SEC(".maps");

/*
 * Slots - 1 (slots a power of two); set with max_entries before load
 * (src/bpf/object.ts). 0 = flow memory off (config flowMemory 0): the
 * verifier sees the constant and drops the code below.
 */
const volatile __u32 tr_fm_mask SEC(".rodata.flowmem") = TR_FLOWMEM_DEFAULT - 1;

static __always_inline void fm_fill_dir(struct tr_fm_dir *d, const struct pkt_info *pi, __u64 now, __u32 h)
{
	d->last_ns = now;
	d->seq = pi->seq;
	d->ack = pi->ack;
	d->payload_len = pi->payload_len;
	d->flow_label = pi->flow_label;
	d->vlan_tpid[0] = pi->vlan_tpid[0];
	d->vlan_tpid[1] = pi->vlan_tpid[1];
	d->vlan_tci[0] = pi->vlan_tci[0];
	d->vlan_tci[1] = pi->vlan_tci[1];
	__builtin_memcpy(d->smac, pi->smac, 6);
	__builtin_memcpy(d->dmac, pi->dmac, 6);
	d->tcp_flags = pi->tcp_flags;
	d->ttl = pi->ttl;
	d->tos = pi->tos;
	d->vlan_count = pi->vlan_count;
	d->key_hash = h;
	d->encap = pi->encap;
	d->encap_flags = pi->encap_flags;
}

static __always_inline int fm_key_eq(const struct tr_fm_key *a, const struct tr_fm_key *b)
{
	const __u32 *x = (const __u32 *)a, *y = (const __u32 *)b;
	__u32 diff = 0;
	int i;

#pragma unroll
	for (i = 0; i < (int)(sizeof(*a) / 4); i++)
		diff |= x[i] ^ y[i];
	return diff == 0;
}

static __always_inline __u64 fm_last_seen(const struct tr_fm_entry *e)
{
	__u64 a = e->dir[0].last_ns, b = e->dir[1].last_ns;

	return a > b ? a : b;
}

/*
 * Merge what this segment showed of MPTCP (pi->mp_*, endpoint 0 = source)
 * into its subflow's entry (endpoint 0 = A); `dir` is 0 when the source is
 * A. Only segments that carry an MPTCP option come here, and the entry is
 * written only when something changed (keys come in the handshake only).
 */
static __always_inline void fm_note_mptcp(struct tr_fm_mptcp *m, const struct pkt_info *pi, int dir)
{
	__u8 pf = pi->mp_flags;
	__u8 f = m->flags;
	__u8 nf = f | (pf & (TR_MP_SEEN | TR_MP_CAPABLE | TR_MP_JOIN));

	if (pf & TR_MP_KEY0) {
		m->key[dir & 1] = pi->mp_key_src;
		nf |= dir ? TR_MP_KEY1 : TR_MP_KEY0;
	}
	if (pf & TR_MP_KEY1) {
		m->key[(dir ^ 1) & 1] = pi->mp_key_dst;
		nf |= dir ? TR_MP_KEY0 : TR_MP_KEY1;
	}
	if (pf & TR_MP_TOKEN1) {
		m->token = pi->mp_token;
		nf = (nf & ~(TR_MP_TOKEN0 | TR_MP_TOKEN1)) | (dir ? TR_MP_TOKEN0 : TR_MP_TOKEN1);
	}
	if (nf != f)
		m->flags = nf;
}

/*
 * The subflow's MPTCP state in the segment's orientation (endpoint 0 =
 * source), into pi for the event: called only when an event is emitted.
 */
static __always_inline void tr_fm_mptcp_out(const struct tr_fm_entry *e, struct pkt_info *pi)
{
	const struct tr_fm_mptcp *m = &e->mp;
	__u8 f = m->flags;
	int dir = pi->fm_dir;
	__u8 out;

	if (!f)
		return;
	out = f & (TR_MP_SEEN | TR_MP_CAPABLE | TR_MP_JOIN);
	if (f & (dir ? TR_MP_KEY1 : TR_MP_KEY0)) {
		pi->mp_key_src = m->key[dir & 1];
		out |= TR_MP_KEY0;
	}
	if (f & (dir ? TR_MP_KEY0 : TR_MP_KEY1)) {
		pi->mp_key_dst = m->key[(dir ^ 1) & 1];
		out |= TR_MP_KEY1;
	}
	if (f & (TR_MP_TOKEN0 | TR_MP_TOKEN1)) {
		pi->mp_token = m->token;
		out |= (f & (dir ? TR_MP_TOKEN1 : TR_MP_TOKEN0)) ? TR_MP_TOKEN0 : TR_MP_TOKEN1;
	}
	pi->mp_flags = out;
}

/* Remember one parsed TCP segment; returns its entry (NULL: none kept), with pi->fm_dir set. */
static __always_inline struct tr_fm_entry *tr_flowmem_note(struct pkt_info *pi, struct tr_counters *cnt)
{
	struct tr_fm_key key __attribute__((aligned(8)));
	struct tr_fm_entry *e0, *e1, *e;
	__u8 flags = pi->tcp_flags;
	__u32 h, idx;
	__u64 now;
	int a, dir;

	if (!tr_fm_mask)
		return NULL;
	a = tr_fm_src_is_a(pi->flow.saddr, pi->flow.sport, pi->flow.daddr, pi->flow.dport);
	dir = a ? 0 : 1;
	pi->fm_dir = dir;
	key.ifindex = pi->flow.ifindex;
	key.family = pi->flow.family;
	key.pad[0] = 0;
	key.pad[1] = 0;
	key.pad[2] = 0;
	if (a) {
		key.port_a = pi->flow.sport;
		key.port_b = pi->flow.dport;
		__builtin_memcpy(key.addr_a, pi->flow.saddr, 16);
		__builtin_memcpy(key.addr_b, pi->flow.daddr, 16);
	} else {
		key.port_a = pi->flow.dport;
		key.port_b = pi->flow.sport;
		__builtin_memcpy(key.addr_a, pi->flow.daddr, 16);
		__builtin_memcpy(key.addr_b, pi->flow.saddr, 16);
	}
	h = tr_fm_hash(&key);
	idx = h & tr_fm_mask & ~1u;
	e0 = bpf_map_lookup_elem(&flowmem, &idx);
	idx |= 1;
	e1 = bpf_map_lookup_elem(&flowmem, &idx);
	if (!e0 || !e1)
		return NULL;

	if (fm_key_eq(&e0->key, &key))
		e = e0;
	else if (fm_key_eq(&e1->key, &key))
		e = e1;
	else
		e = NULL;
	/* Coarse clock (a tick, a few ms): last-seen needs no more, and it costs a fraction of ktime_get_ns. */
	now = bpf_ktime_get_coarse_ns();

	if (e) {
		if (flags & TR_TCP_RST) {
			/* Kept as that end's last segment: user space tells a dead socket's answer to a
			 * probe (seq = the probe's ack, SND.NXT + 1) from our own RST (seq = SND.NXT). */
			e->state |= TR_FM_RST;
			fm_fill_dir(&e->dir[dir & 1], pi, now, h);
			return e;
		}
		if ((flags & (TR_TCP_SYN | TR_TCP_ACK)) == TR_TCP_SYN) {
			/* A SYN without ACK opens a new connection on the tuple: forget the old one. */
			e->first_ns = now;
			e->state = 0;
			e->dir[(dir ^ 1) & 1].last_ns = 0;
			if (e->mp.flags)
				e->mp.flags = 0;
		} else if (pi->payload_len && (e->state & TR_FM_RST)) {
			/* Data after a RST: the RST was refused (e.g. RFC 5961 out of window), the flow lives. */
			e->state &= ~TR_FM_RST;
		}
		if (flags & TR_TCP_FIN)
			e->state |= dir ? TR_FM_FIN_B : TR_FM_FIN_A;
		fm_fill_dir(&e->dir[dir & 1], pi, now, h);
		if (pi->mp_flags)
			fm_note_mptcp(&e->mp, pi, dir);
		return e;
	}
	/* A flow first seen dying leaves nothing to replay: no entry (an RST flood displaces nothing). */
	if (flags & TR_TCP_RST)
		return NULL;

	/* Victim: an empty slot, else a closed connection, else the one least recently seen. */
	if (!e0->key.family)
		e = e0;
	else if (!e1->key.family)
		e = e1;
	else if (tr_fm_closed(e0->state))
		e = e0;
	else if (tr_fm_closed(e1->state))
		e = e1;
	else
		e = fm_last_seen(e0) <= fm_last_seen(e1) ? e0 : e1;
	if (e->key.family && !tr_fm_closed(e->state))
		cnt->fm_evicted++;
	cnt->fm_new++;

	e->key = key;
	e->state = (flags & TR_TCP_FIN) ? (dir ? TR_FM_FIN_B : TR_FM_FIN_A) : 0;
	e->first_ns = now;
	e->dir[(dir ^ 1) & 1].last_ns = 0;
	e->dir[(dir ^ 1) & 1].key_hash = 0;
	fm_fill_dir(&e->dir[dir & 1], pi, now, h);
	__builtin_memset(&e->mp, 0, sizeof(e->mp));
	if (pi->mp_flags)
		fm_note_mptcp(&e->mp, pi, dir);
	return e;
}

#endif /* TR_FLOWMEM_H */
