package seqnat

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/mdlayher/netlink"
)

// decodeEntry decodes a ctnetlink message body (nfgenmsg + attributes).
func decodeEntry(b []byte) (Entry, error) {
	var e Entry
	if len(b) < 4 {
		return e, fmt.Errorf("short ctnetlink message: %d bytes", len(b))
	}
	ad, err := netlink.NewAttributeDecoder(b[4:])
	if err != nil {
		return e, err
	}
	ad.ByteOrder = binary.BigEndian
	for ad.Next() {
		switch ad.Type() {
		case ctaTupleOrig:
			ad.Nested(func(nad *netlink.AttributeDecoder) error {
				return decodeTuple(nad, &e.Orig, &e.Proto)
			})
		case ctaTupleReply:
			ad.Nested(func(nad *netlink.AttributeDecoder) error {
				var p uint8
				return decodeTuple(nad, &e.Reply, &p)
			})
		case ctaZone:
			e.Zone = ad.Uint16()
		case ctaStatus:
			e.Status = ad.Uint32()
		case ctaTimeout:
			e.Timeout = ad.Uint32()
		case ctaMark:
			e.Mark = ad.Uint32()
		case ctaID:
			e.ID = ad.Uint32()
		case ctaUse:
			e.Use = ad.Uint32()
		case ctaProtoinfo:
			ad.Nested(func(nad *netlink.AttributeDecoder) error {
				for nad.Next() {
					if nad.Type() == ctaProtoinfoTCP {
						e.TCP = new(TCPInfo)
						nad.Nested(func(tad *netlink.AttributeDecoder) error {
							return decodeTCP(tad, e.TCP)
						})
					}
				}
				return nil
			})
		case ctaCountersOrg:
			ad.Nested(func(nad *netlink.AttributeDecoder) error {
				return decodeCounters(nad, &e.CountersOrig)
			})
		case ctaCountersRpl:
			ad.Nested(func(nad *netlink.AttributeDecoder) error {
				return decodeCounters(nad, &e.CountersReply)
			})
		case ctaSeqAdjOrig:
			e.SeqAdjOrig = new(SeqAdj)
			ad.Nested(func(nad *netlink.AttributeDecoder) error {
				return decodeSeqAdj(nad, e.SeqAdjOrig)
			})
		case ctaSeqAdjReply:
			e.SeqAdjReply = new(SeqAdj)
			ad.Nested(func(nad *netlink.AttributeDecoder) error {
				return decodeSeqAdj(nad, e.SeqAdjReply)
			})
		}
	}
	return e, ad.Err()
}

func decodeTuple(ad *netlink.AttributeDecoder, t *Tuple, proto *uint8) error {
	var src, dst netip.Addr
	var sport, dport uint16
	for ad.Next() {
		switch ad.Type() {
		case ctaTupleIP:
			ad.Nested(func(nad *netlink.AttributeDecoder) error {
				for nad.Next() {
					a, ok := netip.AddrFromSlice(nad.Bytes())
					if !ok {
						return fmt.Errorf("bad address attribute of %d bytes", nad.Len())
					}
					switch nad.Type() {
					case ctaIPv4Src, ctaIPv6Src:
						src = a
					case ctaIPv4Dst, ctaIPv6Dst:
						dst = a
					}
				}
				return nil
			})
		case ctaTupleProto:
			ad.Nested(func(nad *netlink.AttributeDecoder) error {
				for nad.Next() {
					switch nad.Type() {
					case ctaProtoNum:
						*proto = nad.Uint8()
					case ctaProtoSrcPort:
						sport = nad.Uint16()
					case ctaProtoDstPort:
						dport = nad.Uint16()
					}
				}
				return nil
			})
		}
	}
	t.Src = netip.AddrPortFrom(src, sport)
	t.Dst = netip.AddrPortFrom(dst, dport)
	return nil
}

func decodeTCP(ad *netlink.AttributeDecoder, t *TCPInfo) error {
	for ad.Next() {
		switch ad.Type() {
		case ctaTCPState:
			t.State = ad.Uint8()
		case ctaTCPWScaleOrig:
			t.WScaleOrig = ad.Uint8()
		case ctaTCPWScaleReply:
			t.WScaleReply = ad.Uint8()
		case ctaTCPFlagsOrig, ctaTCPFlagsReply:
			b := ad.Bytes()
			if len(b) < 1 {
				return fmt.Errorf("short TCP flags attribute")
			}
			if ad.Type() == ctaTCPFlagsOrig {
				t.FlagsOrig = b[0]
			} else {
				t.FlagsReply = b[0]
			}
		}
	}
	return nil
}

func decodeCounters(ad *netlink.AttributeDecoder, c *Counters) error {
	for ad.Next() {
		switch ad.Type() {
		case ctaCountersPackets:
			c.Packets = ad.Uint64()
		case ctaCountersBytes:
			c.Bytes = ad.Uint64()
		}
	}
	return nil
}

func decodeSeqAdj(ad *netlink.AttributeDecoder, s *SeqAdj) error {
	for ad.Next() {
		switch ad.Type() {
		case ctaSeqAdjCorrectionPos:
			s.CorrectionPos = ad.Uint32()
		case ctaSeqAdjOffsetBefore:
			s.OffsetBefore = ad.Uint32()
		case ctaSeqAdjOffsetAfter:
			s.OffsetAfter = ad.Uint32()
		}
	}
	return nil
}
