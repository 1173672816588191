package nft

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"
)

// queueProc lists the queues that have a reader in the current network
// namespace.
const queueProc = "/proc/net/netfilter/nfnetlink_queue"

// BoundQueues returns the queue numbers some program reads, with the
// netlink port id of each reader.
func BoundQueues() (map[uint16]uint32, error) {
	f, err := os.Open(queueProc)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil // no queue was ever bound in this namespace
	}
	if err != nil {
		return nil, fmt.Errorf("nft: %w", err)
	}
	defer f.Close()
	out := map[uint16]uint32{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 2 {
			continue
		}
		q, err1 := strconv.ParseUint(fs[0], 10, 16)
		port, err2 := strconv.ParseUint(fs[1], 10, 32)
		if err1 == nil && err2 == nil {
			out[uint16(q)] = uint32(port)
		}
	}
	return out, sc.Err()
}

// Owner checks, before falg touches the kernel, that no running program
// owns what r would take: its queues, or an existing falg table whose
// queues are read. A table whose queues nobody reads was left by a killed
// falg, and Install replaces it.
func (r *Ruleset) Owner(c *nftables.Conn) error {
	bound, err := BoundQueues()
	if err != nil {
		return err
	}
	for q := r.QueueNum; q < r.QueueNum+r.QueueTotal; q++ {
		if port, ok := bound[q]; ok {
			return fmt.Errorf("nft: queue %d is read by netlink port %d: another falg, or another program, owns it", q, port)
		}
	}
	t := &nftables.Table{Name: Table, Family: nftables.TableFamilyINet}
	rules, err := c.GetRules(t, &nftables.Chain{Name: ChainPrerouting, Table: t})
	if err != nil {
		return nil // no falg table (or no prerouting chain in it): nothing to own
	}
	for _, ru := range rules {
		for _, q := range queuesOf(ru) {
			if port, ok := bound[q]; ok {
				return fmt.Errorf("nft: table inet %s belongs to a running falg (its queue %d is read by netlink port %d)", Table, q, port)
			}
		}
	}
	return nil
}

// queuesOf returns the queue numbers a rule's verdict sends to.
func queuesOf(ru *nftables.Rule) []uint16 {
	var first, total uint16
	for _, e := range ru.Exprs {
		switch q := e.(type) {
		case *expr.Queue:
			first, total = q.Num, max(q.Total, 1)
		case *expr.Target:
			info, ok := q.Info.(*xt.Unknown)
			if q.Name != "NFQUEUE" || !ok || len(*info) < 4 {
				continue
			}
			first = binary.NativeEndian.Uint16((*info)[0:])
			total = max(binary.NativeEndian.Uint16((*info)[2:]), 1)
		}
	}
	var qs []uint16
	for i := range total {
		qs = append(qs, first+i)
	}
	return qs
}
