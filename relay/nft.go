package relay

import (
	"encoding/binary"
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// NFTTable is the nftables table (family inet) the relay installs for
// transparent listens and source: client.
const NFTTable = "falg_relay"

// tproxyRules builds the prerouting chain of table inet falg_relay:
//
//	meta l4proto tcp socket transparent 1 meta mark set mark | MARK accept
//	meta l4proto udp socket transparent 1 meta mark set mark | MARK accept
//	meta nfproto ipv4 meta l4proto tcp tcp dport PORT tproxy ip to :PORT meta mark set mark | MARK accept
//	meta nfproto ipv6 meta l4proto tcp tcp dport PORT tproxy ip6 to :PORT meta mark set mark | MARK accept
//
// The socket rules are the shortcut for packets of connections that
// already have a transparent socket here (accepted ones and those the
// relay opened from a client's address); the tproxy rules hand new
// connections to a "*:port" listen to the relay's socket on that port.
func installNFT(mark uint32, ports []uint16) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("relay: nft: %w", err)
	}
	t := &nftables.Table{Family: nftables.TableFamilyINet, Name: NFTTable}
	// Replace a table a killed relay left, in the same transaction.
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)
	ch := c.AddChain(&nftables.Chain{
		Name: "prerouting", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityMangle,
	})
	for _, proto := range []byte{unix.IPPROTO_TCP, unix.IPPROTO_UDP} {
		e := l4proto(proto)
		e = append(e,
			&expr.Socket{Key: expr.SocketKeyTransparent, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{1}},
		)
		e = append(e, setMark(mark)...)
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: append(e, &expr.Verdict{Kind: expr.VerdictAccept})})
	}
	for _, port := range ports {
		for _, fam := range []byte{unix.NFPROTO_IPV4, unix.NFPROTO_IPV6} {
			e := []expr.Any{
				&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{fam}},
			}
			e = append(e, l4proto(unix.IPPROTO_TCP)...)
			e = append(e,
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
				&expr.Immediate{Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
				&expr.TProxy{Family: fam, TableFamily: byte(nftables.TableFamilyINet), RegPort: 1},
			)
			e = append(e, setMark(mark)...)
			c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: append(e, &expr.Verdict{Kind: expr.VerdictAccept})})
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("relay: nft: install table inet %s: %w", NFTTable, err)
	}
	return nil
}

// removeNFT deletes the relay's table; a missing table is not an error.
func removeNFT() error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("relay: nft: %w", err)
	}
	t := &nftables.Table{Family: nftables.TableFamilyINet, Name: NFTTable}
	c.AddTable(t)
	c.DelTable(t)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("relay: nft: remove table inet %s: %w", NFTTable, err)
	}
	return nil
}

func l4proto(p byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p}},
	}
}

// setMark is "meta mark set meta mark | mark": other users' bits stay.
func setMark(mark uint32) []expr.Any {
	mask := make([]byte, 4)
	xor := make([]byte, 4)
	binary.NativeEndian.PutUint32(mask, ^mark)
	binary.NativeEndian.PutUint32(xor, mark)
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: xor},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
	}
}
