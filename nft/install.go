package nft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"
	"golang.org/x/sys/unix"
)

// QueueKind says how rules hand packets to nfqueue.
type QueueKind int

// Ways to queue.
const (
	// QueueNative is nft's own queue expression.
	QueueNative QueueKind = iota
	// QueueXT is the xtables NFQUEUE target, run through nft_compat, for
	// kernels built without the native expression.
	QueueXT
)

func (k QueueKind) String() string {
	if k == QueueXT {
		return "xt NFQUEUE target (nft_compat)"
	}
	return "native queue expression"
}

const probeTable = "falg_probe"

// DetectQueue finds out whether the kernel has the native queue
// expression, by committing a rule that uses it into a scratch table. The
// kernel refuses an unknown expression with ENOENT; then the xt target is
// what falg must use.
func DetectQueue(c *nftables.Conn) (QueueKind, error) {
	t := &nftables.Table{Name: probeTable, Family: nftables.TableFamilyINet}
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)
	ch := c.AddChain(&nftables.Chain{Name: "probe", Table: t})
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{&expr.Queue{Num: 0}}})
	err := c.Flush()
	switch {
	case err == nil:
		c.DelTable(t)
		if err := c.Flush(); err != nil {
			return 0, fmt.Errorf("nft: remove probe table: %w", err)
		}
		return QueueNative, nil
	case errors.Is(err, unix.ENOENT):
		// The batch failed whole: no probe table is left behind.
		return QueueXT, nil
	default:
		return 0, fmt.Errorf("nft: probe queue expression: %w", err)
	}
}

// Install replaces falg's table with r in one transaction: a table left by
// a killed falg is removed in the same commit that adds the new one, so there
// is no moment without rules and nothing else in the ruleset is touched.
func (r *Ruleset) Install(c *nftables.Conn, kind QueueKind) error {
	t := &nftables.Table{Name: Table, Family: nftables.TableFamilyINet}
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)
	if err := r.add(c, t, kind); err != nil {
		return err
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nft: install table inet %s: %w", Table, err)
	}
	return nil
}

// Update makes the installed table r in one transaction without touching
// the pending sets: every chain is emptied and refilled, every other set
// deleted and made anew, so flows in setup keep being queued. It is how a
// reload changes listens and backends.
func (r *Ruleset) Update(c *nftables.Conn, kind QueueKind) error {
	t := &nftables.Table{Name: Table, Family: nftables.TableFamilyINet}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return fmt.Errorf("nft: update: list chains: %w", err)
	}
	sets, err := c.GetSets(t)
	if err != nil {
		return fmt.Errorf("nft: update: list sets: %w", err)
	}
	for _, ch := range chains {
		if ch.Table.Name == Table {
			c.FlushChain(ch)
		}
	}
	for _, s := range sets {
		if s.Name != SetPending4 && s.Name != SetPending6 {
			c.DelSet(s)
		}
	}
	if err := r.add(c, t, kind); err != nil {
		return err
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nft: update table inet %s: %w", Table, err)
	}
	return nil
}

// add queues the sets, chains and rules of r in t, for one Flush.
func (r *Ruleset) add(c *nftables.Conn, t *nftables.Table, kind QueueKind) error {
	sets := map[string]*nftables.Set{}
	for _, s := range []struct {
		name string
		v6   bool
	}{{SetPending4, false}, {SetPending6, true}} {
		addr := nftables.TypeIPAddr
		if s.v6 {
			addr = nftables.TypeIP6Addr
		}
		set := &nftables.Set{
			Table:         t,
			Name:          s.name,
			KeyType:       nftables.MustConcatSetType(addr, nftables.TypeInetService, addr, nftables.TypeInetService),
			Concatenation: true,
			Dynamic:       true,
			HasTimeout:    true,
			Timeout:       r.PendingTimeout,
			Size:          r.PendingSize,
		}
		if err := c.AddSet(set, nil); err != nil {
			return fmt.Errorf("nft: add set %s: %w", s.name, err)
		}
		sets[s.name] = set
	}
	for _, s := range []struct {
		name   string
		family byte
	}{{SetBackends4, nfproto4}, {SetBackends6, nfproto6}} {
		addr := nftables.TypeIPAddr
		if s.family == nfproto6 {
			addr = nftables.TypeIP6Addr
		}
		set := &nftables.Set{
			Table:         t,
			Name:          s.name,
			KeyType:       nftables.MustConcatSetType(addr, nftables.TypeInetService),
			Concatenation: true,
		}
		var elems []nftables.SetElement
		for _, b := range r.backends(s.family) {
			elems = append(elems, nftables.SetElement{Key: addrPortKey(b)})
		}
		if err := c.AddSet(set, elems); err != nil {
			return fmt.Errorf("nft: add set %s: %w", s.name, err)
		}
		sets[s.name] = set
	}

	chain := func(name string, typ nftables.ChainType, hook *nftables.ChainHook, prio *nftables.ChainPriority) *nftables.Chain {
		accept := nftables.ChainPolicyAccept
		return c.AddChain(&nftables.Chain{Name: name, Table: t, Type: typ, Hooknum: hook, Priority: prio, Policy: &accept})
	}
	pre := chain(ChainPrerouting, nftables.ChainTypeFilter, nftables.ChainHookPrerouting, nftables.ChainPriorityRaw)
	back := chain(ChainBackends, nftables.ChainTypeFilter, nftables.ChainHookPrerouting, nftables.ChainPriorityMangle)
	out := chain(ChainOutput, nftables.ChainTypeFilter, nftables.ChainHookOutput, nftables.ChainPriorityRaw)
	fwd := chain(ChainForward, nftables.ChainTypeFilter, nftables.ChainHookForward, nftables.ChainPriorityFilter)
	natPre := chain(ChainNATPrerouting, nftables.ChainTypeNAT, nftables.ChainHookPrerouting, nftables.ChainPriorityNATDest)
	natPost := chain(ChainNATPostrouting, nftables.ChainTypeNAT, nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource)
	r.addUDPRules(c, t, natPre, natPost, kind, chain)

	for _, ru := range r.preroutingRules() {
		c.AddRule(&nftables.Rule{Table: t, Chain: pre, Exprs: r.exprs(ru, sets, kind)})
	}
	for _, ru := range r.backendRules() {
		c.AddRule(&nftables.Rule{Table: t, Chain: back, Exprs: r.exprs(ru, sets, kind)})
	}
	c.AddRule(&nftables.Rule{Table: t, Chain: out, Exprs: r.exprs(rule{notrack: r.InjectMark}, sets, kind)})
	c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: r.exprs(rule{ctMark: r.FlowMark}, sets, kind)})
	return nil
}

// Remove deletes falg's table, if there is one, and nothing else.
func Remove(c *nftables.Conn) error {
	c.DelTable(&nftables.Table{Name: Table, Family: nftables.TableFamilyINet})
	if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("nft: remove table inet %s: %w", Table, err)
	}
	return nil
}

// exprs compiles one rule into nftables expressions.
func (r *Ruleset) exprs(ru rule, sets map[string]*nftables.Set, kind QueueKind) []expr.Any {
	switch {
	case ru.notrack != 0:
		return append(markMatch(&expr.Meta{Key: expr.MetaKeyMARK, Register: 1}, ru.notrack), &expr.Notrack{})
	case ru.ctMark != 0:
		return append(markMatch(&expr.Ct{Key: expr.CtKeyMARK, Register: 1}, ru.ctMark), &expr.Counter{})
	}
	var e []expr.Any
	v6 := ru.family == nfproto6
	if ru.invalid {
		e = append(e, ctState(expr.CtStateBitINVALID)...)
	}
	e = append(e, familyProto(ru.family, byte(ru.proto))...)
	if ru.daddr.IsValid() {
		off, n := uint32(16), uint32(4)
		if v6 {
			off, n = 24, 16
		}
		e = append(e,
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ru.daddr.AsSlice()},
		)
	}
	if ru.inSet != "" {
		e = append(e, loadTuple(v6)...)
		e = append(e, &expr.Lookup{SourceRegister: 1, SetName: ru.inSet, SetID: sets[ru.inSet].ID})
	}
	if ru.srcInSet != "" {
		off, n, portReg := uint32(12), uint32(4), uint32(9)
		if v6 {
			off, n, portReg = 8, 16, 12
		}
		e = append(e,
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
			&expr.Payload{DestRegister: portReg, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 2},
			&expr.Lookup{SourceRegister: 1, SetName: ru.srcInSet, SetID: sets[ru.srcInSet].ID},
		)
	}
	if ru.dport != 0 {
		e = append(e,
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(ru.dport)},
		)
	}
	if ru.pureAck != 0 {
		// The IP length is headers and nothing more: IPv4's total length
		// (an IPv4 header without options, as a longer one would leave
		// the TCP header less room), IPv6's payload length.
		off, n := uint32(2), 20+ru.pureAck
		if v6 {
			off, n = 4, ru.pureAck
		}
		e = append(e,
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0, n}},
		)
		if ru.pureAck != 20 {
			// The data offset: a header this long, not a shorter one with data.
			e = append(e,
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 12, Len: 1},
				&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{0xf0}, Xor: []byte{0}},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{ru.pureAck / 4 << 4}},
			)
		}
		e = append(e,
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{tcpACK}},
		)
	}
	if ru.synOnly || ru.synAck {
		want := byte(tcpSYN)
		if ru.synAck {
			want = tcpSYN | tcpACK
		}
		e = append(e,
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{tcpFIN | tcpSYN | tcpRST | tcpACK}, Xor: []byte{0}},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{want}},
		)
	}
	if ru.rst {
		e = append(e,
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{tcpRST}, Xor: []byte{0}},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{tcpRST}},
		)
	}
	if ru.addSet != "" {
		e = append(e, loadTuple(v6)...)
		e = append(e, &expr.Dynset{SrcRegKey: 1, SetName: ru.addSet, SetID: sets[ru.addSet].ID, Operation: uint32(unix.NFT_DYNSET_OP_ADD)})
	}
	e = append(e, &expr.Counter{})
	if ru.drop {
		e = append(e, &expr.Verdict{Kind: expr.VerdictDrop})
	}
	if ru.queue {
		e = append(e, r.queueExpr(kind))
	}
	return e
}

// TCP flag bits in byte 13 of the header.
const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10
)

// loadTuple loads saddr . sport . daddr . dport into registers from 1 on,
// each part padded to 32 bits as concatenated set keys are.
func loadTuple(v6 bool) []expr.Any {
	if !v6 {
		return []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
			&expr.Payload{DestRegister: 9, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 2},
			&expr.Payload{DestRegister: 10, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			&expr.Payload{DestRegister: 11, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		}
	}
	// 32-bit registers 8..11 hold the source, 12 the port, 13..16 the
	// destination, 17 the port (NFT_REG_1 is NFT_REG32_00 = 8).
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 8, Len: 16},
		&expr.Payload{DestRegister: 12, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 2},
		&expr.Payload{DestRegister: 13, Base: expr.PayloadBaseNetworkHeader, Offset: 24, Len: 16},
		&expr.Payload{DestRegister: 17, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
	}
}

// ctState matches packets whose conntrack state has bit.
func ctState(bit uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATE, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(bit), Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0, 0, 0, 0}},
	}
}

// familyProto matches the network family (nfproto4 or nfproto6) and the
// transport protocol: the dependencies nft lists implicitly.
func familyProto(family, proto byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{family}},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
	}
}

func markMatch(load expr.Any, mark uint32) []expr.Any {
	m := binaryutil.NativeEndian.PutUint32(mark)
	return []expr.Any{
		load,
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: m, Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: m},
	}
}

// queueExpr is the verdict that sends a packet to falg's queues.
func (r *Ruleset) queueExpr(kind QueueKind) expr.Any {
	return QueueVerdict(kind, r.QueueNum, r.QueueTotal, r.Bypass)
}

// QueueVerdict is the expression that queues a packet to queues num ..
// num+total-1 (flows spread by address hash), with the native queue
// expression or the xt NFQUEUE target as kind says. With bypass the
// kernel accepts packets when no program reads the queues.
func QueueVerdict(kind QueueKind, num, total uint16, bypass bool) expr.Any {
	if kind == QueueNative {
		q := &expr.Queue{Num: num, Total: total}
		if bypass {
			q.Flag = expr.QueueFlagBypass
		}
		return q
	}
	// struct xt_NFQ_info_v3 { __u16 queuenum; __u16 queues_total; __u16 flags; },
	// in host byte order, padded to 8 bytes. Flag 1 is bypass. Without
	// the CPU fanout flag (2) the kernel spreads flows by address hash.
	info := make(xt.Unknown, 8)
	binary.NativeEndian.PutUint16(info[0:], num)
	binary.NativeEndian.PutUint16(info[2:], total)
	if bypass {
		binary.NativeEndian.PutUint16(info[4:], 1)
	}
	return &expr.Target{Name: "NFQUEUE", Rev: 3, Info: &info}
}

// addrPortKey encodes addr . port as a concatenated set key.
func addrPortKey(ap netip.AddrPort) []byte {
	k := append([]byte(nil), ap.Addr().AsSlice()...)
	return append(k, byte(ap.Port()>>8), byte(ap.Port()), 0, 0)
}
