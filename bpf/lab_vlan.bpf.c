// SPDX-License-Identifier: (GPL-2.0-only OR MIT)
/*
 * Test-lab only: tag and untag frames with tc, because the lab kernel has
 * neither 8021q VLAN devices nor the tc vlan action.
 *
 * iproute2 6.1 (Debian 12, libbpf backend) selects a program by its ELF
 * SECTION name only (no program-name option; `sec vlan_push` or `sec tc`
 * fail with "object file doesn't contain sec ..."), and a section may not
 * share its name with the function, so each program has its own "tc/NAME"
 * section. Working commands (checked on veths in a namespace):
 *
 *   ethtool -K DEV txvlan off tx-vlan-stag-hw-insert off   # tags go in-band on the wire
 *   tc qdisc add dev DEV clsact
 *   tc filter add dev DEV egress bpf da obj build/lab_vlan.bpf.o sec tc/vlan_push       # 802.1Q VID 100
 *   tc filter add dev DEV egress bpf da obj build/lab_vlan.bpf.o sec tc/vlan_push_200   # 802.1Q VID 200
 *   tc filter add dev DEV egress bpf da obj build/lab_vlan.bpf.o sec tc/qinq_push       # 802.1ad 200 outside 802.1Q 100
 *   tc filter add dev DEV egress bpf da obj build/lab_vlan.bpf.o sec tc/vlan_pop        # strip the outer tag
 *
 * Without the ethtool line a pushed tag stays in skb metadata (hardware
 * offload) on a veth and the peer's XDP program never sees it in the frame.
 * On ingress the stack has already moved the outer tag to metadata before
 * tc runs; vlan_pop removes it there too.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "Dual MIT/GPL";

#define LAB_VID_A 100
#define LAB_VID_B 200

/* A failed push leaves the frame untagged; the lab's assertions catch that. */
SEC("tc/vlan_push")
int vlan_push(struct __sk_buff *skb)
{
	bpf_skb_vlan_push(skb, bpf_htons(ETH_P_8021Q), LAB_VID_A);
	return TC_ACT_OK;
}

SEC("tc/vlan_push_200")
int vlan_push_200(struct __sk_buff *skb)
{
	bpf_skb_vlan_push(skb, bpf_htons(ETH_P_8021Q), LAB_VID_B);
	return TC_ACT_OK;
}

/* The second push moves the first tag in-band: outer 802.1ad 200, inner 802.1Q 100. */
SEC("tc/qinq_push")
int qinq_push(struct __sk_buff *skb)
{
	if (bpf_skb_vlan_push(skb, bpf_htons(ETH_P_8021Q), LAB_VID_A) == 0)
		bpf_skb_vlan_push(skb, bpf_htons(ETH_P_8021AD), LAB_VID_B);
	return TC_ACT_OK;
}

/* Pops the offloaded tag, or the outermost in-band one; untagged frames pass as they are. */
SEC("tc/vlan_pop")
int vlan_pop(struct __sk_buff *skb)
{
	if (skb->vlan_present || skb->protocol == bpf_htons(ETH_P_8021Q) ||
	    skb->protocol == bpf_htons(ETH_P_8021AD))
		bpf_skb_vlan_pop(skb);
	return TC_ACT_OK;
}

/*
 * [lab] Access port of VLAN 100 (the lab's layer-2 reset port): pops an
 * 802.1Q tag of VID 100 and drops every other frame, untagged ones included,
 * so a frame reaches the bridge only if its sender pushed the right tag.
 * On ingress the stack has already moved the outer tag into skb metadata.
 */
SEC("tc/vlan_pop_strict")
int vlan_pop_strict(struct __sk_buff *skb)
{
	if (!skb->vlan_present || skb->vlan_proto != bpf_htons(ETH_P_8021Q) ||
	    (skb->vlan_tci & 0x0fff) != LAB_VID_A)
		return TC_ACT_SHOT;
	bpf_skb_vlan_pop(skb);
	return TC_ACT_OK;
}

/*
 * [lab] An endpoint that refuses RSTs (a positive control for verification):
 * on its ingress, drops every IPv4 TCP segment with RST set, so its socket
 * outlives our resets and keeps answering probes with ACKs.
 *   tc filter add dev eth0 ingress bpf da obj build/lab_vlan.bpf.o sec tc/drop_rst
 */
SEC("tc/drop_rst")
int drop_rst(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct tcphdr *th;

	if ((void *)(ip + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP) || ip->protocol != IPPROTO_TCP)
		return TC_ACT_OK;
	th = (void *)ip + ip->ihl * 4;
	if ((void *)(th + 1) > end)
		return TC_ACT_OK;
	return th->rst ? TC_ACT_SHOT : TC_ACT_OK;
}

/*
 * [lab] An endpoint that takes no TCP at all (a positive control for
 * verification): on its ingress, drops every IPv4 TCP segment, so its socket
 * neither dies of our RSTs nor answers our probes.
 *   tc filter add dev eth0 ingress bpf da obj build/lab_vlan.bpf.o sec tc/drop_tcp
 */
SEC("tc/drop_tcp")
int drop_tcp(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);

	if ((void *)(ip + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP) || ip->protocol != IPPROTO_TCP)
		return TC_ACT_OK;
	return TC_ACT_SHOT;
}
