package seqnat

// Netlink and ctnetlink constants from linux/netfilter/nfnetlink.h and
// linux/netfilter/nfnetlink_conntrack.h.

const (
	nfnlSubsysCTNetlink = 1 // NFNL_SUBSYS_CTNETLINK
	nfnetlinkV0         = 0 // NFNETLINK_V0

	// Multicast groups (enum nfnetlink_groups).
	groupCTNew     = 1 // NFNLGRP_CONNTRACK_NEW
	groupCTUpdate  = 2 // NFNLGRP_CONNTRACK_UPDATE
	groupCTDestroy = 3 // NFNLGRP_CONNTRACK_DESTROY
)

// enum cntl_msg_types
const (
	ctMsgNew    = 0 // IPCTNL_MSG_CT_NEW
	ctMsgGet    = 1 // IPCTNL_MSG_CT_GET
	ctMsgDelete = 2 // IPCTNL_MSG_CT_DELETE
)

// enum ctattr_type
const (
	ctaTupleOrig   = 1
	ctaTupleReply  = 2
	ctaStatus      = 3
	ctaProtoinfo   = 4
	ctaNATSrc      = 6
	ctaTimeout     = 7
	ctaMark        = 8
	ctaCountersOrg = 9
	ctaCountersRpl = 10
	ctaUse         = 11
	ctaID          = 12
	ctaNATDst      = 13
	ctaSeqAdjOrig  = 15
	ctaSeqAdjReply = 16
	ctaZone        = 18
	ctaMarkMask    = 21
)

// enum ctattr_tuple, ctattr_ip, ctattr_l4proto
const (
	ctaTupleIP    = 1
	ctaTupleProto = 2
	ctaTupleZone  = 3

	ctaIPv4Src = 1
	ctaIPv4Dst = 2
	ctaIPv6Src = 3
	ctaIPv6Dst = 4

	ctaProtoNum     = 1
	ctaProtoSrcPort = 2
	ctaProtoDstPort = 3
)

// enum ctattr_protoinfo, ctattr_protoinfo_tcp
const (
	ctaProtoinfoTCP = 1

	ctaTCPState       = 1
	ctaTCPWScaleOrig  = 2
	ctaTCPWScaleReply = 3
	ctaTCPFlagsOrig   = 4
	ctaTCPFlagsReply  = 5
)

// enum ctattr_counters
const (
	ctaCountersPackets = 1
	ctaCountersBytes   = 2
)

// enum ctattr_nat, ctattr_protonat
const (
	ctaNATv4MinIP = 1
	ctaNATv4MaxIP = 2
	ctaNATProto   = 3
	ctaNATv6MinIP = 4
	ctaNATv6MaxIP = 5

	ctaProtoNATPortMin = 1
	ctaProtoNATPortMax = 2
)

// enum ctattr_seqadj
const (
	ctaSeqAdjCorrectionPos = 1
	ctaSeqAdjOffsetBefore  = 2
	ctaSeqAdjOffsetAfter   = 3
)

// Conntrack status bits (enum ip_conntrack_status).
const (
	StatusExpected   = 1 << 0  // IPS_EXPECTED
	StatusSeenReply  = 1 << 1  // IPS_SEEN_REPLY
	StatusAssured    = 1 << 2  // IPS_ASSURED
	StatusConfirmed  = 1 << 3  // IPS_CONFIRMED
	StatusSrcNAT     = 1 << 4  // IPS_SRC_NAT
	StatusDstNAT     = 1 << 5  // IPS_DST_NAT
	StatusSeqAdjust  = 1 << 6  // IPS_SEQ_ADJUST
	StatusSrcNATDone = 1 << 7  // IPS_SRC_NAT_DONE
	StatusDstNATDone = 1 << 8  // IPS_DST_NAT_DONE
	StatusDying      = 1 << 9  // IPS_DYING
	StatusFixedTO    = 1 << 10 // IPS_FIXED_TIMEOUT
)

// createStatus is what Create asks for: CONFIRMED|SEEN_REPLY|ASSURED.
// Without CONFIRMED the kernel answers EBUSY (DESIGN.md step 5).
const createStatus = StatusConfirmed | StatusSeenReply | StatusAssured

// TCP conntrack states (enum tcp_conntrack).
const (
	TCPStateNone        = 0
	TCPStateSynSent     = 1
	TCPStateSynRecv     = 2
	TCPStateEstablished = 3
	TCPStateFinWait     = 4
	TCPStateCloseWait   = 5
	TCPStateLastAck     = 6
	TCPStateTimeWait    = 7
	TCPStateClose       = 8
)

// TCP conntrack flags (IP_CT_TCP_FLAG_*). Create sets TCPFlagsDefault in
// both directions.
const (
	TCPFlagWindowScale = 0x01 // IP_CT_TCP_FLAG_WINDOW_SCALE
	TCPFlagSACKPerm    = 0x02 // IP_CT_TCP_FLAG_SACK_PERM
	TCPFlagBeLiberal   = 0x08 // IP_CT_TCP_FLAG_BE_LIBERAL

	TCPFlagsDefault = TCPFlagWindowScale | TCPFlagSACKPerm | TCPFlagBeLiberal
)
