package dump

import (
	"errors"
	"fmt"
	"net/netip"
	"os"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// TableName is the nftables table (family inet) OpenLive installs.
const TableName = "falg_dump"

// DumpPriority is the priority of the table's base chains: raw - 10, so
// they see packets before falg's own raw-priority rules queue them.
const DumpPriority = -310

// table returns the dump table object.
func table() *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyINet, Name: TableName}
}

// installTable replaces any falg_dump table with a fresh one logging to
// group g, in one transaction. Each logging rule ends in accept, which ends
// only this table's chain: a packet is logged once per hook, and every other
// chain still sees it.
func installTable(c *nftables.Conn, o LiveOptions) error {
	t := table()
	c.AddTable(t) // add, delete, add: replaces a stale table, fine when none exists
	c.DelTable(t)
	c.AddTable(t)
	policy := nftables.ChainPolicyAccept
	pre := c.AddChain(&nftables.Chain{
		Name: "prerouting", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRef(DumpPriority), Policy: &policy,
	})
	out := c.AddChain(&nftables.Chain{
		Name: "output", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityRef(DumpPriority), Policy: &policy,
	})
	log := []expr.Any{
		&expr.Log{Key: 1 << unix.NFTA_LOG_GROUP, Group: o.Group},
		&expr.Verdict{Kind: expr.VerdictAccept},
	}
	var matches [][]expr.Any
	if len(o.Listens) == 0 {
		for _, p := range []uint8{ProtoTCP, ProtoUDP} {
			matches = append(matches, l4proto(p))
		}
	}
	for _, l := range o.Listens {
		protos := []uint8{l.Proto}
		if l.Proto == 0 {
			protos = []uint8{ProtoTCP, ProtoUDP}
		}
		for _, p := range protos {
			matches = append(matches, listenMatch(l, p, false), listenMatch(l, p, true))
		}
	}
	for _, m := range matches {
		for _, ch := range []*nftables.Chain{pre, out} {
			c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: append(m[:len(m):len(m)], log...)})
		}
	}
	if o.Mark != 0 {
		c.AddRule(&nftables.Rule{Table: t, Chain: out, Exprs: append([]expr.Any{
			&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
				Mask: binaryutil.NativeEndian.PutUint32(o.Mark), Xor: make([]byte, 4)},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
		}, log...)})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("dump: install nftables table inet %s: %w", TableName, err)
	}
	return nil
}

// removeTable deletes the dump table; a table already gone is no error.
func removeTable(c *nftables.Conn) error {
	c.DelTable(table())
	if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("dump: remove nftables table inet %s: %w", TableName, err)
	}
	return nil
}

// l4proto matches the transport protocol p (after IPv6 extension headers).
func l4proto(p uint8) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p}},
	}
}

// listenMatch matches protocol p packets to the listen l, or from it when
// from is set.
func listenMatch(l Listen, p uint8, from bool) []expr.Any {
	var e []expr.Any
	if a := l.Addr.Unmap(); a.IsValid() {
		nfproto, off, size := byte(unix.NFPROTO_IPV4), uint32(16), uint32(4) // ip daddr
		if a.Is6() {
			nfproto, off, size = unix.NFPROTO_IPV6, 24, 16 // ip6 daddr
		}
		if from {
			off -= size // saddr precedes daddr in both headers
		}
		e = append(e,
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{nfproto}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: size},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: addrBytes(a)},
		)
	}
	e = append(e, l4proto(p)...)
	if l.Port != 0 {
		off := uint32(2) // th dport
		if from {
			off = 0 // th sport
		}
		e = append(e,
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: off, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(l.Port)},
		)
	}
	return e
}

func addrBytes(a netip.Addr) []byte {
	if a.Is4() {
		b := a.As4()
		return b[:]
	}
	b := a.As16()
	return b[:]
}
